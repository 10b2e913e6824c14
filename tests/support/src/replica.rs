//! `shardctl run` processes, their files, and what they serve over HTTP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `SHARDCTL_BIN`, or the `shardctl` binary of this build: `target/<profile>/shardctl`, next to
/// the `deps/` directory of the running test. Panics when it does not exist.
pub fn shardctl_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("SHARDCTL_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.exists(),
            "SHARDCTL_BIN={} does not exist",
            bin.display()
        );
        return bin;
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("the test's own path: {e}"));
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("shardctl"))
        .unwrap_or_else(|| panic!("{} has no grandparent directory", exe.display()));
    assert!(
        bin.exists(),
        "{} is missing: `cargo build --release -p shardctl --bin shardctl` first (`scripts/test.sh` \
         builds it with the whole workspace), or set SHARDCTL_BIN",
        bin.display()
    );
    bin
}

/// The command line of one `shardctl run` replica: `run --policy <policy> --state-table
/// <state_table> --identity <identity> --leader-lease <leader_lease> --listen 127.0.0.1:<port>`
/// (port 0: any free port). The caller adds output, environment and further flags, and spawns.
pub fn shardctl_run(
    bin: &Path,
    policy: &Path,
    state_table: &str,
    identity: &str,
    leader_lease: Duration,
    port: u16,
) -> Command {
    let lease = if leader_lease.subsec_nanos() == 0 {
        format!("{}s", leader_lease.as_secs())
    } else {
        format!("{}ms", leader_lease.as_millis())
    };
    let mut command = Command::new(bin);
    command
        .args(["run", "--policy"])
        .arg(policy)
        .args(["--state-table", state_table, "--identity", identity])
        .args(["--leader-lease", &lease])
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    command
}

/// A port nobody listens on right now (a replica binds it a moment later).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
        .port()
}

/// A plain HTTP/1.1 `GET path` on 127.0.0.1:`port`: (status, body), or `None` when nothing
/// answers within `timeout` (a stopped process accepts the connection in the kernel but never
/// answers).
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// The `shardctl_leader` gauge of a `/metrics` body: whether the replica leads.
pub fn leader_gauge(metrics: &str) -> Option<bool> {
    metrics.lines().find_map(|l| {
        l.strip_prefix("shardctl_leader ")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v >= 1.0)
    })
}

/// A new directory for one test's files (policy, logs, outputs) under the system's temporary
/// directory, named by [`unique`](crate::unique) from `prefix`.
pub fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(crate::unique(prefix));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Writes `yaml` to `policy.yaml` in `dir` and returns the file's path.
pub fn write_policy(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("policy.yaml");
    std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}
