//! [`Tenure`]: how long a worker may believe it holds a lease; why that is safe is argued in
//! the [`ownership`](super) module docs.

use std::time::{Duration, Instant};

use super::{AcquireKind, saturating_after};

/// How long a worker may believe it holds a lease, and the counter its next write is conditional on.
///
/// ```
/// use std::time::{Duration, Instant};
/// use shardctl_consumer::ownership::{AcquireKind, Tenure};
/// let failover = Duration::from_secs(9);
/// let t0 = Instant::now();
/// let mut tenure = Tenure::acquired(5, t0, failover, AcquireKind::Take);
/// assert!(tenure.is_valid(t0));
/// tenure.renewed(6, t0 + Duration::from_secs(3), failover);
/// assert!(tenure.is_valid(t0 + Duration::from_secs(11)));
/// assert!(!tenure.is_valid(t0 + Duration::from_secs(12)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tenure {
    /// `leaseCounter` after our last successful write.
    pub counter: u64,
    valid_from: Instant,
    valid_until: Instant,
}

impl Tenure {
    /// Tenure after a successful take or steal that was *sent* at `sent` and wrote `counter`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use shardctl_consumer::ownership::{AcquireKind, Tenure};
    /// let t0 = Instant::now();
    /// let stolen = Tenure::acquired(1, t0, Duration::from_secs(3), AcquireKind::Steal);
    /// assert!(!stolen.is_valid(t0));
    /// ```
    pub fn acquired(counter: u64, sent: Instant, failover: Duration, kind: AcquireKind) -> Self {
        let valid_until = saturating_after(sent, failover);
        let valid_from = match kind {
            AcquireKind::Take => sent,
            AcquireKind::Steal => valid_until,
        };
        Self {
            counter,
            valid_from,
            valid_until,
        }
    }

    /// Records a successful renewal (or checkpoint) sent at `sent` that wrote `counter`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use shardctl_consumer::ownership::{AcquireKind, Tenure};
    /// let t0 = Instant::now();
    /// let mut t = Tenure::acquired(1, t0, Duration::from_secs(3), AcquireKind::Take);
    /// t.renewed(2, t0 + Duration::from_secs(1), Duration::from_secs(3));
    /// assert_eq!(t.counter, 2);
    /// ```
    pub fn renewed(&mut self, counter: u64, sent: Instant, failover: Duration) {
        self.counter = counter;
        self.valid_until = self.valid_until.max(saturating_after(sent, failover));
    }

    /// True while the worker may act on the lease (process records, checkpoint).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use shardctl_consumer::ownership::{AcquireKind, Tenure};
    /// let t0 = Instant::now();
    /// let t = Tenure::acquired(1, t0, Duration::from_secs(3), AcquireKind::Take);
    /// assert!(!t.is_valid(t0 + Duration::from_secs(3)));
    /// ```
    pub fn is_valid(&self, now: Instant) -> bool {
        self.valid_from <= now && now < self.valid_until
    }

    /// True once the tenure can no longer become valid without a renewal.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use shardctl_consumer::ownership::{AcquireKind, Tenure};
    /// let t0 = Instant::now();
    /// let t = Tenure::acquired(1, t0, Duration::from_secs(3), AcquireKind::Take);
    /// assert!(t.is_lapsed(t0 + Duration::from_secs(3)));
    /// ```
    pub fn is_lapsed(&self, now: Instant) -> bool {
        now >= self.valid_until
    }

    /// The previous owner of a stolen lease confirmed it stopped (graceful handoff), so the tenure
    /// may start now instead of one failover time after the steal.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use shardctl_consumer::ownership::{AcquireKind, Tenure};
    /// let t0 = Instant::now();
    /// let mut t = Tenure::acquired(1, t0, Duration::from_secs(3), AcquireKind::Steal);
    /// t.handed_over(t0 + Duration::from_millis(500));
    /// assert!(t.is_valid(t0 + Duration::from_millis(500)));
    /// ```
    pub fn handed_over(&mut self, now: Instant) {
        self.valid_from = self.valid_from.min(now);
    }

    /// True when releasing the lease (removing `leaseOwner`) is safe: the tenure has started, so no
    /// previous owner can still believe it holds the lease. A stolen lease released earlier would
    /// look free to everyone while its victim may still be processing.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use shardctl_consumer::ownership::{AcquireKind, Tenure};
    /// let t0 = Instant::now();
    /// let t = Tenure::acquired(1, t0, Duration::from_secs(3), AcquireKind::Steal);
    /// assert!(!t.may_release(t0));
    /// assert!(t.may_release(t0 + Duration::from_secs(3)));
    /// ```
    pub fn may_release(&self, now: Instant) -> bool {
        now >= self.valid_from
    }

    /// When the belief ends unless a renewal extends it.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use shardctl_consumer::ownership::{AcquireKind, Tenure};
    /// let t0 = Instant::now();
    /// let t = Tenure::acquired(1, t0, Duration::from_secs(3), AcquireKind::Take);
    /// assert_eq!(t.valid_until(), t0 + Duration::from_secs(3));
    /// ```
    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }

    /// When processing may start (later than the acquisition for a steal).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use shardctl_consumer::ownership::{AcquireKind, Tenure};
    /// let t0 = Instant::now();
    /// let t = Tenure::acquired(1, t0, Duration::from_secs(3), AcquireKind::Steal);
    /// assert_eq!(t.valid_from(), t0 + Duration::from_secs(3));
    /// ```
    pub fn valid_from(&self) -> Instant {
        self.valid_from
    }
}
