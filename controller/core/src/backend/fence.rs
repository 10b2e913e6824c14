//! Leadership as the act phase sees it: the token a leader holds, the record it is stored as,
//! the fence every reshard call passes right before each attempt, and the journal entries
//! written under it.

use super::BackendError;
use chrono::{DateTime, Utc};
use shardctl_policies::history::OperationRecord;
use std::time::Duration;

/// Proof of leadership: the owner and the fencing token it holds. Writes that change shards or
/// the journal are conditional on the token still being current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderToken {
    /// This replica's identity.
    pub owner: String,
    /// Increases every time leadership changes hands.
    pub fence: u64,
    /// When the lease lapses unless renewed (wall clock, as stored; informational).
    pub expires_at: DateTime<Utc>,
    /// The lease length.
    pub ttl: Duration,
    /// When the lease lapses by this process's monotonic clock: when the acquiring or renewing
    /// call was *sent*, plus the lease. Other replicas take over only after they have seen the
    /// record unchanged for a whole lease on their own clocks, so no other replica acts before.
    pub local_deadline: tokio::time::Instant,
    /// When this replica's leadership under this fence began (the acquiring call was sent), by
    /// the monotonic clock.
    pub acquired_at: tokio::time::Instant,
}

impl LeaderToken {
    /// A token for leadership acquired (or renewed) by a call sent at `sent`, for `ttl`.
    pub fn new(
        owner: impl Into<String>,
        fence: u64,
        expires_at: DateTime<Utc>,
        ttl: Duration,
        sent: tokio::time::Instant,
    ) -> Self {
        LeaderToken {
            owner: owner.into(),
            fence,
            expires_at,
            ttl,
            local_deadline: sent.checked_add(ttl).unwrap_or(sent),
            acquired_at: sent,
        }
    }

    /// How long one reshard attempt may take: a third of the lease, at most 5 s.
    pub fn attempt_timeout(&self) -> Duration {
        (self.ttl / 3).min(Duration::from_secs(5))
    }

    /// Whether this token still allows starting a call that takes up to `call`, now: the local
    /// deadline lies beyond `call` plus a tenth of the lease.
    pub fn outlasts(&self, call: Duration) -> bool {
        tokio::time::Instant::now()
            .checked_add(call + self.ttl / 10)
            .is_some_and(|end| end < self.local_deadline)
    }
}

/// The check every reshard call passes right before each attempt: this replica still leads with
/// the fence it journalled the operation under, and its lease, by the local monotonic clock,
/// outlasts the attempt. The leader's latest token is read from the leadership task's channel,
/// so renewals during a long pass count.
#[derive(Debug, Clone)]
pub struct Fence {
    leader: tokio::sync::watch::Receiver<Option<LeaderToken>>,
    owner: String,
    fence: u64,
    attempt_timeout: Duration,
}

impl Fence {
    /// A fence over the leadership channel, for the operations journalled under `token`.
    pub fn new(
        leader: tokio::sync::watch::Receiver<Option<LeaderToken>>,
        token: &LeaderToken,
    ) -> Self {
        Fence {
            leader,
            owner: token.owner.clone(),
            fence: token.fence,
            attempt_timeout: token.attempt_timeout(),
        }
    }

    /// A fence over one token that is never renewed (a single pass, tests).
    pub fn fixed(token: &LeaderToken) -> Self {
        let (_tx, rx) = tokio::sync::watch::channel(Some(token.clone()));
        Fence::new(rx, token)
    }

    /// The leader the operation was journalled under: (owner, fence).
    pub fn holder(&self) -> (&str, u64) {
        (&self.owner, self.fence)
    }

    /// How long one attempt may take; the adapters enforce it (a timed-out attempt has an
    /// unknown outcome and is not sent again).
    pub fn attempt_timeout(&self) -> Duration {
        self.attempt_timeout
    }

    /// `Ok` when an attempt may be sent now.
    pub fn check(&self, api: &'static str) -> Result<(), BackendError> {
        let current = self.leader.borrow().clone();
        match current {
            Some(t) if t.owner == self.owner && t.fence == self.fence => {
                if t.outlasts(self.attempt_timeout) {
                    Ok(())
                } else {
                    Err(BackendError::Fenced {
                        api,
                        message: format!(
                            "the leader lease (fence {}) would lapse before a {:?} call ends",
                            self.fence, self.attempt_timeout
                        ),
                    })
                }
            }
            Some(t) => Err(BackendError::Fenced {
                api,
                message: format!(
                    "leadership changed from {} (fence {}) to {} (fence {})",
                    self.owner, self.fence, t.owner, t.fence
                ),
            }),
            None => Err(BackendError::Fenced {
                api,
                message: format!("{} (fence {}) no longer leads", self.owner, self.fence),
            }),
        }
    }
}

/// One journalled operation.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    /// Unique id of the entry.
    pub id: String,
    /// The operation and how it ended.
    pub record: OperationRecord,
    /// The fence of the leader that began it (`None` in entries written before fences were
    /// recorded).
    pub fence: Option<u64>,
}

/// The leader item as stored: who leads, under which fence, until when (wall clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderRecord {
    /// The leader's identity.
    pub owner: String,
    /// Its fence.
    pub fence: u64,
    /// Its wall-clock expiry (the Unix epoch once released).
    pub expires_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn token(owner: &str, fence: u64, ttl: Duration, sent: Instant) -> LeaderToken {
        LeaderToken::new(owner, fence, Utc::now(), ttl, sent)
    }

    #[test]
    fn a_fence_lets_a_call_through_only_while_the_lease_outlasts_it() {
        let ttl = Duration::from_secs(15);
        let (tx, rx) = tokio::sync::watch::channel(Some(token("a", 3, ttl, Instant::now())));
        let fence = Fence::new(rx, &token("a", 3, ttl, Instant::now()));
        assert_eq!(fence.attempt_timeout(), Duration::from_secs(5));
        assert!(fence.check("SplitShard").is_ok());
        // The last renewal was sent 9 s ago: 6 s left, less than 5 s + 1.5 s.
        let stale = Instant::now()
            .checked_sub(Duration::from_secs(9))
            .expect("a monotonic clock 9 s old");
        tx.send_replace(Some(token("a", 3, ttl, stale)));
        let error = fence.check("SplitShard").expect_err("lapsing");
        assert_eq!(error.label(), "fenced");
        assert!(error.is_definite_rejection());
        // Renewed: through again. Deposed, or another fence: never.
        tx.send_replace(Some(token("a", 3, ttl, Instant::now())));
        assert!(fence.check("SplitShard").is_ok());
        tx.send_replace(Some(token("b", 4, ttl, Instant::now())));
        assert!(fence.check("SplitShard").is_err());
        tx.send_replace(None);
        assert!(fence.check("SplitShard").is_err());
    }

    #[test]
    fn unknown_outcomes_are_not_definite_rejections() {
        let transient = BackendError::Transient {
            api: "SplitShard",
            message: "timed out".into(),
        };
        assert!(!transient.is_definite_rejection());
        let rejected = BackendError::LimitExceeded {
            api: "SplitShard",
            message: "no".into(),
        };
        assert!(rejected.is_definite_rejection());
    }
}
