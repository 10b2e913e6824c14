//! The policy file, re-read while the controller runs: an edit is validated first and swapped
//! in only if valid; an invalid edit keeps the previous policy in force, is logged with its
//! location, and counted in `shardctl_policy_reload_errors_total`.

use crate::files::read_policy;
use crate::telemetry::Telemetry;
use shardctl_policies::PolicyFile;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Watches a policy file by content (Kubernetes updates mounted ConfigMaps by swapping a
/// symlink, which modification times do not reliably show).
pub struct PolicySource {
    path: PathBuf,
    last: String,
}

impl PolicySource {
    /// Loads the policy at start-up; an invalid file is an error (nothing to fall back to).
    pub fn load(path: PathBuf) -> anyhow::Result<(Self, PolicyFile)> {
        let policy = read_policy(&path)?;
        let last = std::fs::read_to_string(&path).unwrap_or_default();
        Ok((PolicySource { path, last }, policy))
    }

    /// Re-reads the file: `Some(policy)` when it changed and is valid, `None` when unchanged or
    /// invalid (logged and counted).
    pub fn poll(&mut self, telemetry: &Telemetry) -> Option<PolicyFile> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(error) => {
                tracing::error!(path = %self.path.display(), %error, "cannot re-read the policy file; keeping the current policy");
                telemetry.policy_reload_errors.inc();
                return None;
            }
        };
        if text == self.last {
            return None;
        }
        self.last = text.clone();
        match shardctl_policies::load_policy(&text, &self.path.display().to_string()) {
            Ok(policy) => {
                tracing::info!(path = %self.path.display(), "policy reloaded");
                Some(policy)
            }
            Err(error) => {
                tracing::error!(%error, "policy edit rejected; keeping the current policy");
                telemetry.policy_reload_errors.inc();
                None
            }
        }
    }

    /// Polls every `every` and publishes valid changes until `stop` turns true.
    pub async fn watch(
        mut self,
        every: Duration,
        telemetry: Telemetry,
        tx: watch::Sender<Arc<PolicyFile>>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if let Some(policy) = self.poll(&telemetry) {
                tx.send_replace(Arc::new(policy));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn invalid_edits_keep_the_old_policy_and_are_counted() {
        let dir = std::env::temp_dir().join(format!("shardctl-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.yaml");
        let good = "apiVersion: shardctl.io/v1alpha1\nkind: ScalingPolicy\nspec:\n  streams:\n    - name: a\n";
        std::fs::write(&path, good).unwrap();
        let telemetry = Telemetry::new();
        let (mut source, policy) = PolicySource::load(path.clone()).unwrap();
        assert_eq!(policy.spec.streams[0].name, "a");
        assert!(source.poll(&telemetry).is_none(), "unchanged");
        std::fs::write(&path, good.replace("name: a", "name: a\n      maxShard: 3")).unwrap();
        assert!(source.poll(&telemetry).is_none(), "invalid edit rejected");
        assert_eq!(telemetry.policy_reload_errors.get(), 1);
        std::fs::write(&path, good.replace("name: a", "name: b")).unwrap();
        assert_eq!(source.poll(&telemetry).unwrap().spec.streams[0].name, "b");
    }
}
