//! One task per held shard: wait for the parents and the handoff, read the shard in order, hand
//! each batch to the processor after checking the tenure, and finish the shard.
//!
//! Over 500 lines by choice: the read loop is one sequence of checks (signal, tenure, handoff,
//! read, de-aggregate, resume filter, tenure again, dispatch) whose order is the guarantee;
//! spreading it over files would hide that order. The retrieval modes are the `Source` at the
//! end.

use super::*;
use crate::reader::ResumeFilter;

impl<F: ProcessorFactory> Inner<F> {
    /// Whether every parent of `key` is drained according to the latest snapshot (see
    /// [`crate::drain::readiness`]).
    fn parents_ready(&self, key: &str) -> Readiness {
        let snap = Arc::clone(&self.snapshot.borrow());
        readiness(key, &snap.leases, &snap.unreadable, snap.listed.as_deref())
    }

    /// Whether the latest listing shows children of `key` (it was split or merged).
    fn has_children(&self, key: &str) -> bool {
        let snap = Arc::clone(&self.snapshot.borrow());
        snap.listed
            .as_ref()
            .is_some_and(|l| !l.descendants(key).is_empty())
    }

    /// Reads the row after an acquisition. For a steal, waits until the previous owner wrote its
    /// last checkpoint and cleared `checkpointOwner` (graceful handoff), or until the failover time
    /// since the steal passed (then it fences the previous owner off by clearing the marker).
    /// Returns the checkpoint to start from, or `None` if the lease is gone or a signal arrived.
    async fn await_handoff(
        &self,
        key: &str,
        cell: &SharedLease,
        signal: &mut watch::Receiver<Signal>,
    ) -> Option<Checkpoint> {
        let valid_from = cell.lock().await.tenure.valid_from();
        let mut attempt = 0;
        // After a fence, a previous owner that renewed on the counter alone (KCL 2.x knows no
        // checkpointOwner; KCL 3 renews while it is the checkpoint owner) may act until its own
        // lease times out: one failover time after the fence.
        let mut fenced_until: Option<Instant> = None;
        loop {
            match self.store.get(key).await {
                Ok(Some(row)) if row.lease_owner.as_deref() != Some(self.me()) => return None,
                Ok(Some(row)) => match row.checkpoint_owner.as_deref() {
                    None if fenced_until.is_some_and(|t| Instant::now() < t) => {}
                    None => {
                        // The previous owner (or our fence) cleared the marker and bumped the
                        // counter. Our tenure starts with a renewal of that counter: the others
                        // time our lease's expiry from that write, not from the handoff.
                        let sent = Instant::now();
                        match self.store.renew(key, row.lease_counter, self.me()).await {
                            Ok(counter) => {
                                let mut c = cell.lock().await;
                                c.tenure.renewed(counter, sent, self.config.failover);
                                c.tenure.handed_over(Instant::now());
                                c.awaiting_handoff = false;
                                return Some(row.checkpoint);
                            }
                            Err(e) if e.is_condition_failed() => return None,
                            Err(e) => {
                                attempt += 1;
                                warn!(error = %e, attempt, "renewing a handed-over lease failed");
                            }
                        }
                    }
                    Some(previous) if Instant::now() >= valid_from => {
                        // The fence bumps leaseCounter, so a previous owner that still renews
                        // (a KCL 3 worker renews while it is the checkpoint owner) loses it.
                        warn!(previous = %previous,
                              "previous owner did not hand off in time; fencing it off");
                        let sent = Instant::now();
                        match self
                            .store
                            .end_handoff(key, previous, row.lease_counter)
                            .await
                        {
                            Ok(()) => fenced_until = Some(sent + self.config.failover),
                            Err(e) if e.is_condition_failed() => {}
                            Err(e) => {
                                warn!(error = %e, "clearing handoff failed")
                            }
                        }
                        continue;
                    }
                    Some(_) => {}
                },
                Ok(None) => return None,
                Err(e) => {
                    attempt += 1;
                    warn!(error = %e, attempt, "reading lease failed");
                }
            }
            let until = tokio::time::Instant::now() + Duration::from_millis(200);
            if wait_or_signal(signal, until).await.is_some() {
                return None;
            }
        }
    }

    pub(super) async fn run_shard(
        self: Arc<Self>,
        key: String,
        cell: SharedLease,
        mut signal: watch::Receiver<Signal>,
    ) {
        let outcome = self.drive_shard(&key, &cell, &mut signal).await;
        if let Some(m) = &self.config.metrics {
            match outcome {
                ShardExit::HandedOff => m.handed_off(),
                ShardExit::LeaseLost => m.lost(),
                ShardExit::Finished | ShardExit::Shutdown => {}
            }
            m.forget(&key);
        }
        match outcome {
            ShardExit::Finished | ShardExit::Shutdown | ShardExit::HandedOff => {
                self.release(&key, &cell).await;
            }
            ShardExit::LeaseLost => {
                cell.lock().await.lost = true;
            }
        }
        debug!(exit = ?outcome, "shard task ended");
        let mut held = lock(&self.held);
        held.remove(&key);
        if let Some(m) = &self.config.metrics {
            m.leases_held(held.len());
        }
    }

    async fn drive_shard(
        &self,
        key: &str,
        cell: &SharedLease,
        signal: &mut watch::Receiver<Signal>,
    ) -> ShardExit {
        let config = &self.config;
        let Some(checkpoint) = self.await_handoff(key, cell, signal).await else {
            let current = *signal.borrow();
            return match current {
                Signal::Shutdown => ShardExit::Shutdown,
                Signal::Handoff => ShardExit::HandedOff,
                Signal::Run | Signal::LeaseLost => ShardExit::LeaseLost,
            };
        };
        cell.lock().await.checkpoint = checkpoint.clone();
        if checkpoint.is_shard_end() {
            return ShardExit::Finished;
        }
        // Parent before child.
        let mut snapshots = self.snapshot.subscribe();
        let mut waited = false;
        let mut warned_missing = false;
        let mut synced_for_unknown = false;
        loop {
            match self.parents_ready(key) {
                Readiness::Ready => break,
                Readiness::Waiting => {}
                Readiness::Unknown {
                    parents,
                    shard_listed,
                } => {
                    if !shard_listed && !synced_for_unknown {
                        // The listing predates this shard: a fresh one can tell whether the
                        // parents left retention, and shard sync creates their rows if not.
                        self.sync_now.notify_one();
                        synced_for_unknown = true;
                    }
                    if !warned_missing {
                        // Unlike KCL, a parent without a row and without evidence that it was
                        // drained is unknown, not drained: the child waits.
                        warn!(parents = ?parents, shard_listed,
                              "parent lease rows missing and no evidence that the parents were drained; child waits");
                        warned_missing = true;
                    }
                }
            }
            if !waited {
                debug!("waiting for parent shards to reach SHARD_END");
                waited = true;
            }
            tokio::select! {
                r = snapshots.changed() => if r.is_err() { return ShardExit::LeaseLost; },
                r = signal.changed() => match (r.is_ok(), *signal.borrow()) {
                    (false, _) | (_, Signal::LeaseLost) => return ShardExit::LeaseLost,
                    (_, Signal::Shutdown) => return ShardExit::Shutdown,
                    (_, Signal::Handoff) => return ShardExit::HandedOff,
                    (_, Signal::Run) => {}
                },
            }
        }

        let mut processor = self.factory.create(key);
        let Some(start) = StartPosition::from_checkpoint(&checkpoint, config.at_timestamp()) else {
            warn!(checkpoint = %checkpoint, "unsupported checkpoint; not processing");
            return ShardExit::Shutdown;
        };
        processor
            .initialize(InitInput {
                shard_id: key.to_owned(),
                checkpoint: checkpoint.clone(),
            })
            .await;
        info!(checkpoint = %checkpoint, "processing shard");

        let mut checkpointer = Checkpointer {
            store: Some(self.store.clone()),
            lease_key: key.to_owned(),
            worker_id: self.me().to_owned(),
            failover: config.failover,
            cell: Arc::clone(cell),
            last_delivered: Arc::default(),
            ended_children: None,
        };
        let pacer = ReadPacer {
            idle_interval: config.idle_poll_interval,
        };
        let mut position = start;
        // Reading resumes at the checkpoint's record: drop what the checkpoint covers.
        let mut resume = ResumeFilter::from_checkpoint(&checkpoint);
        let mut source = match &self.consumer_arn {
            Some(arn) => Source::FanOut(Box::new(Subscription::new(
                self.kinesis.clone(),
                arn.clone(),
                key.to_owned(),
                position.clone(),
            ))),
            None => Source::Polling { iterator: None },
        };
        let mut attempt = 0u32;
        let mut next_call = tokio::time::Instant::now();

        loop {
            let current = *signal.borrow();
            match current {
                Signal::LeaseLost => {
                    processor.lease_lost().await;
                    return ShardExit::LeaseLost;
                }
                Signal::Shutdown => {
                    processor.shutdown_requested(&checkpointer).await;
                    return ShardExit::Shutdown;
                }
                Signal::Handoff => {
                    processor.shutdown_requested(&checkpointer).await;
                    return ShardExit::HandedOff;
                }
                Signal::Run => {}
            }
            let (lost, handoff) = {
                let c = cell.lock().await;
                (c.lost || !c.tenure.is_valid(Instant::now()), c.handoff)
            };
            if lost {
                processor.lease_lost().await;
                return ShardExit::LeaseLost;
            }
            if handoff {
                // A checkpoint found the lease stolen (before the renewer did): hand off now.
                processor.shutdown_requested(&checkpointer).await;
                return ShardExit::HandedOff;
            }
            match wait_or_signal(signal, next_call).await {
                None => {}
                Some(exit @ (ShardExit::Shutdown | ShardExit::HandedOff)) => {
                    processor.shutdown_requested(&checkpointer).await;
                    return exit;
                }
                Some(_) => {
                    processor.lease_lost().await;
                    return ShardExit::LeaseLost;
                }
            }
            let call_started = Instant::now();
            // A subscription waits for the service's next event; a signal must not wait for it.
            let fetched = tokio::select! {
                r = source.fetch(&self.kinesis, &config.stream_name, key, &position, config.max_records_per_call) => r,
                _ = signal.changed() => {
                    source.interrupt();
                    continue;
                }
            };
            match fetched {
                Ok(fetched) => {
                    attempt = 0;
                    let caught_up =
                        fetched.records.is_empty() || fetched.millis_behind_latest == Some(0);
                    if matches!(source, Source::FanOut(_))
                        && fetched.records.is_empty()
                        && fetched.next_iterator.is_some()
                        && self.has_children(key)
                    {
                        // Kinesis ends a subscription to a closed shard with an event that
                        // carries the children. Should a caught-up subscription stay quiet
                        // instead (kinesis-local's does), the listing's word that the shard has
                        // children is enough to read its tail once with GetRecords, which
                        // finds the end (or the records still left).
                        debug!(
                            "shard has children and its subscription is caught up; reading the rest with GetRecords"
                        );
                        source = Source::Polling { iterator: None };
                    }
                    next_call = match source {
                        // Kinesis pushes events as records arrive: ask for the next at once.
                        Source::FanOut(_) => tokio::time::Instant::now(),
                        Source::Polling { .. } => tokio::time::Instant::from_std(pacer.next_call(
                            call_started,
                            fetched.bytes,
                            caught_up && fetched.next_iterator.is_some(),
                        )),
                    };
                    // Where reading goes on: after the last Kinesis record, whether or not any
                    // of it is delivered.
                    if let Some(last) = fetched.records.last() {
                        position = StartPosition::After(last.sequence_number.clone());
                    }
                    let mut records = if config.deaggregate {
                        reader::deaggregate(fetched.records)
                    } else {
                        fetched.records
                    };
                    if let Some(filter) = &resume
                        && filter.apply(&mut records)
                    {
                        resume = None;
                    }
                    if !records.is_empty() {
                        // The wait and the call took time: check again right before dispatch,
                        // so no batch reaches the processor after the lease may have moved on.
                        match self.may_dispatch(cell, signal).await {
                            Dispatch::Go => {}
                            Dispatch::Lost => {
                                debug!(
                                    records = records.len(),
                                    "lease lost while reading; batch not dispatched"
                                );
                                processor.lease_lost().await;
                                return ShardExit::LeaseLost;
                            }
                            Dispatch::Stop(exit) => {
                                processor.shutdown_requested(&checkpointer).await;
                                return exit;
                            }
                        }
                    }
                    if let Some(last) = records.last() {
                        checkpointer
                            .set_batch_end(last.sequence_number.clone(), last.sub_sequence_number);
                        if let Some(m) = &config.metrics {
                            let bytes = records.iter().map(|r| r.data.len() as u64).sum();
                            m.batch(key, records.len(), bytes, fetched.millis_behind_latest);
                        }
                        processor
                            .process_records(
                                RecordBatch {
                                    shard_id: key.to_owned(),
                                    records,
                                    millis_behind_latest: fetched.millis_behind_latest,
                                },
                                &checkpointer,
                            )
                            .await;
                    }
                    if fetched.next_iterator.is_none() {
                        return self
                            .finish_shard(
                                key,
                                fetched.child_shards,
                                &mut processor,
                                &mut checkpointer,
                                signal,
                            )
                            .await;
                    }
                }
                Err(e @ ReadError::Throttled { .. }) => {
                    attempt += 1;
                    debug!(error = %e, attempt, "read throttled; backing off");
                    next_call = tokio::time::Instant::now()
                        + backoff(attempt, Duration::from_millis(500), Duration::from_secs(10));
                }
                Err(e) => {
                    // Expired or invalid iterator, or a transport error: resume after the last
                    // record handed to the processor (not the last checkpoint), so nothing is
                    // skipped and nothing is delivered twice by this worker.
                    attempt += 1;
                    warn!(error = %e, attempt, "reading failed; renewing iterator");
                    source.interrupt();
                    next_call = tokio::time::Instant::now()
                        + backoff(attempt, Duration::from_millis(200), Duration::from_secs(5));
                }
            }
        }
    }

    /// The check right before a batch is dispatched: the tenure is valid now, and no signal says
    /// otherwise.
    async fn may_dispatch(&self, cell: &SharedLease, signal: &watch::Receiver<Signal>) -> Dispatch {
        let current = *signal.borrow();
        match current {
            Signal::LeaseLost => return Dispatch::Lost,
            Signal::Shutdown => return Dispatch::Stop(ShardExit::Shutdown),
            Signal::Handoff => return Dispatch::Stop(ShardExit::HandedOff),
            Signal::Run => {}
        }
        let c = cell.lock().await;
        if c.lost || !c.tenure.is_valid(Instant::now()) {
            Dispatch::Lost
        } else if c.handoff {
            Dispatch::Stop(ShardExit::HandedOff)
        } else {
            Dispatch::Go
        }
    }

    async fn finish_shard(
        &self,
        key: &str,
        children: Vec<reader::ChildShardInfo>,
        processor: &mut F::Processor,
        checkpointer: &mut Checkpointer,
        signal: &mut watch::Receiver<Signal>,
    ) -> ShardExit {
        info!(children = ?children.iter().map(|c| &c.shard_id).collect::<Vec<_>>(), "shard ended");
        // Children's leases right away (KCL does the same), so they do not wait for a shard sync.
        let mut has_row = std::collections::HashSet::new();
        for parent in children.iter().flat_map(|c| c.parents.iter()) {
            if parent != key && !has_row.contains(parent) {
                match self.store.get(parent).await {
                    Ok(Some(_)) => {
                        has_row.insert(parent.clone());
                    }
                    Ok(None) => {}
                    Err(e) => {
                        warn!(shard = %parent, error = %e, "reading a co-parent's lease failed");
                    }
                }
            }
        }
        let rows = child_rows(key, &children, |p| p == key || has_row.contains(p));
        for lease in &rows.create {
            if let Err(e) = self.store.create_if_absent(lease).await {
                warn!(shard = %lease.lease_key, error = %e, "creating child lease failed; shard sync will retry");
                self.sync_now.notify_one();
            }
        }
        if !rows.deferred.is_empty() {
            info!(children = ?rows.deferred,
                  "children left to shard sync: another parent has no lease row yet");
            self.sync_now.notify_one();
        }
        checkpointer.ended_children = Some(children.into_iter().map(|c| c.shard_id).collect());
        let mut attempt = 0;
        loop {
            processor.shard_ended(checkpointer).await;
            let c = checkpointer.cell.lock().await;
            if c.checkpoint.is_shard_end() {
                return ShardExit::Finished;
            }
            if c.lost {
                drop(c);
                processor.lease_lost().await;
                return ShardExit::LeaseLost;
            }
            drop(c);
            attempt += 1;
            error!(
                attempt,
                "processor returned from shard_ended without checkpointing SHARD_END; children stay blocked; retrying"
            );
            let until = tokio::time::Instant::now()
                + backoff(attempt, Duration::from_millis(500), Duration::from_secs(30));
            match wait_or_signal(signal, until).await {
                None => {}
                Some(exit @ (ShardExit::Shutdown | ShardExit::HandedOff)) => {
                    processor.shutdown_requested(checkpointer).await;
                    return exit;
                }
                Some(exit) => {
                    processor.lease_lost().await;
                    return exit;
                }
            }
        }
    }
}

/// Whether a fetched batch may go to the processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dispatch {
    Go,
    /// The tenure lapsed or the lease was lost.
    Lost,
    /// Asked to stop (shutdown or handoff): the batch is not delivered, the checkpoint stays at
    /// what was, so the next owner reads it.
    Stop(ShardExit),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShardExit {
    Finished,
    LeaseLost,
    Shutdown,
    HandedOff,
}

/// Sleeps until `until` unless a signal other than `Run` arrives first.
async fn wait_or_signal(
    signal: &mut watch::Receiver<Signal>,
    until: tokio::time::Instant,
) -> Option<ShardExit> {
    loop {
        let current = *signal.borrow();
        match current {
            Signal::LeaseLost => return Some(ShardExit::LeaseLost),
            Signal::Shutdown => return Some(ShardExit::Shutdown),
            Signal::Handoff => return Some(ShardExit::HandedOff),
            Signal::Run => {}
        }
        if tokio::time::Instant::now() >= until {
            return None;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return None,
            r = signal.changed() => if r.is_err() { return Some(ShardExit::LeaseLost); },
        }
    }
}

/// Where a shard task's records come from, as KCL's retrieval modes.
enum Source {
    /// `GetRecords` with a shard iterator (renewed from the read position when lost).
    Polling { iterator: Option<String> },
    /// `SubscribeToShard` events.
    FanOut(Box<Subscription>),
}

impl Source {
    /// The next answer: one `GetRecords` call (after getting an iterator at `position` if there
    /// is none), or the next `SubscribeToShard` event.
    async fn fetch(
        &mut self,
        kinesis: &aws_sdk_kinesis::Client,
        stream: &str,
        shard: &str,
        position: &StartPosition,
        limit: i32,
    ) -> Result<reader::Fetched, ReadError> {
        match self {
            Source::FanOut(subscription) => subscription.next().await,
            Source::Polling { iterator } => {
                let it = match iterator {
                    Some(it) => it.clone(),
                    None => {
                        let it = reader::shard_iterator(kinesis, stream, shard, position).await?;
                        debug!(from = ?position, "got shard iterator");
                        iterator.insert(it).clone()
                    }
                };
                let fetched = reader::get_records(kinesis, shard, &it, limit).await?;
                iterator.clone_from(&fetched.next_iterator);
                Ok(fetched)
            }
        }
    }

    /// Abandons the current iterator or subscription: the next fetch starts again from the
    /// position (polling: the last record delivered; fan-out: the last continuation, which
    /// only covers records this task already received).
    fn interrupt(&mut self) {
        match self {
            Source::Polling { iterator } => *iterator = None,
            Source::FanOut(subscription) => subscription.interrupt(),
        }
    }
}
