//! The coordinator: shard sync, lease scans, taking and stealing, renewal of each held lease on
//! its own, lease cleanup and graceful shutdown.

use super::*;

impl<F: ProcessorFactory> Inner<F> {
    pub(super) fn me(&self) -> &str {
        &self.config.worker_id
    }

    /// Lists shards and creates missing leases. Returns the stream's lineage.
    pub(super) async fn shard_sync(&self) -> Result<Arc<Lineage>, WorkerError> {
        let shards = list_shards(&self.kinesis, &self.config.stream_name).await?;
        let scan = self.store.scan().await?;
        for lease in plan_shard_sync(&shards, &scan.leases, self.config.initial_position) {
            if self.store.create_if_absent(&lease).await? {
                info!(shard = %lease.lease_key, checkpoint = %lease.checkpoint,
                      parents = ?lease.parent_shard_ids, "lease created");
            }
        }
        Ok(Arc::new(lineage_of(&shards)))
    }

    pub(super) async fn coordinate(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut observer = LeaseObserver::default();
        let mut last_sync = Instant::now();
        let mut last_cleanup = Instant::now();
        let mut listed: Option<Arc<Lineage>> = self.snapshot.borrow().listed.clone();
        let policy = self.config.balance_policy();
        loop {
            if *stop.borrow() {
                return;
            }
            if last_sync.elapsed() >= self.config.shard_sync_interval {
                match self.shard_sync().await {
                    Ok(lineage) => listed = Some(lineage),
                    Err(e) => warn!(error = %e, "shard sync failed"),
                }
                last_sync = Instant::now();
            }
            match self.store.scan().await {
                Ok(scan) => {
                    let now = Instant::now();
                    observer.observe(&scan.leases, now);
                    let unreadable: BTreeSet<String> = scan
                        .unreadable
                        .iter()
                        .filter_map(|(k, _)| k.clone())
                        .collect();
                    for (key, err) in &scan.unreadable {
                        warn!(lease = ?key, error = %err, "unreadable lease row ignored");
                    }
                    let held: std::collections::HashSet<String> = {
                        let mut map = lock(&self.held);
                        map.retain(|_, h| h.task.as_ref().is_some_and(|t| !t.is_finished()));
                        if let Some(m) = &self.config.metrics {
                            m.leases_held(map.len());
                        }
                        map.keys().cloned().collect()
                    };
                    // An AT_TIMESTAMP lease can be read only with the application's instant
                    // (KCL stores none); without it, leave it to workers that have it.
                    let at_timestamp = self.config.at_timestamp();
                    let candidates: Vec<Lease> = scan
                        .leases
                        .iter()
                        .filter(|l| !unreadable.contains(&l.lease_key))
                        .filter(|l| {
                            let readable = at_timestamp.is_some()
                                || l.checkpoint != Checkpoint::AtTimestamp;
                            if !readable {
                                warn!(shard = %l.lease_key,
                                      "lease starts AT_TIMESTAMP but this worker has no initial timestamp (InitialPosition::AtTimestamp); not taking it");
                            }
                            readable
                        })
                        .cloned()
                        .collect();
                    if let (Some(every), Some(lineage)) =
                        (self.config.lease_cleanup_interval, listed.as_deref())
                        && last_cleanup.elapsed() >= every
                    {
                        last_cleanup = Instant::now();
                        self.clean_up_finished(&scan.leases, &unreadable, lineage)
                            .await;
                    }
                    let plan =
                        plan_acquisitions(self.me(), &candidates, &held, &observer, now, &policy);
                    self.snapshot.send_replace(Arc::new(Snapshot {
                        leases: scan.leases,
                        unreadable,
                        listed: listed.clone(),
                    }));
                    for acq in plan {
                        let sent = Instant::now();
                        let result = self.store.acquire(&acq, self.me()).await;
                        match result {
                            Ok(counter) => {
                                info!(shard = %acq.lease_key, kind = ?acq.kind,
                                      from = ?acq.previous_owner, "lease acquired");
                                if let (Some(m), AcquireKind::Steal) =
                                    (&self.config.metrics, acq.kind)
                                {
                                    m.stole();
                                }
                                let tenure =
                                    Tenure::acquired(counter, sent, self.config.failover, acq.kind);
                                self.spawn_shard(acq.lease_key, tenure, acq.kind);
                            }
                            Err(e) if e.is_condition_failed() => {
                                debug!(shard = %acq.lease_key, "lost the race for a lease");
                            }
                            Err(e) => {
                                warn!(shard = %acq.lease_key, error = %e, "taking lease failed");
                            }
                        }
                    }
                }
                Err(e) => warn!(error = %e, "lease scan failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.take_interval()) => {}
                _ = self.sync_now.notified() => { last_sync = Instant::now() - self.config.shard_sync_interval; }
                _ = stop.changed() => {}
            }
        }
    }

    /// Deletes the finished leases that KCL's lease cleanup would delete (see
    /// [`shardctl_lease::DrainView::may_delete`]); the drain rule reads them as drained after.
    async fn clean_up_finished(
        &self,
        leases: &[Lease],
        unreadable: &BTreeSet<String>,
        lineage: &Lineage,
    ) {
        let rows = ScannedRows::new(leases, unreadable);
        let view = shardctl_lease::DrainView::new(lineage, &rows);
        for lease in leases.iter().filter(|l| view.may_delete(l)) {
            match self.store.delete_finished(&lease.lease_key).await {
                Ok(true) => {
                    info!(shard = %lease.lease_key, "finished lease cleaned up")
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(shard = %lease.lease_key, error = %e, "lease cleanup failed")
                }
            }
        }
    }

    pub(super) fn spawn_shard(self: &Arc<Self>, key: String, tenure: Tenure, kind: AcquireKind) {
        let cell = Arc::new(Mutex::new(LeaseCell {
            tenure,
            lost: false,
            handoff: false,
            awaiting_handoff: kind == AcquireKind::Steal,
            checkpoint: Checkpoint::TrimHorizon,
        }));
        let (signal, signal_rx) = watch::channel(Signal::Run);
        let span = info_span!(parent: &self.span, "shard", shard = %key);
        let task = tokio::spawn(
            Arc::clone(self)
                .run_shard(key.clone(), Arc::clone(&cell), signal_rx)
                .instrument(span.clone()),
        );
        let renewer = tokio::spawn(
            Arc::clone(self)
                .renew_lease(key.clone(), Arc::clone(&cell), signal.clone())
                .instrument(span),
        );
        let mut held = lock(&self.held);
        held.insert(
            key,
            Held {
                cell,
                signal,
                task: Some(task),
                renewer: Some(renewer),
            },
        );
        if let Some(m) = &self.config.metrics {
            m.leases_held(held.len());
        }
    }

    /// Renews one lease every third of the failover time until it is lost, handed off or
    /// released. Each call is bounded ([`WorkerConfig::lease_call_timeout`]), and each lease has
    /// its own renewer, so one hung call costs one attempt on one lease.
    async fn renew_lease(
        self: Arc<Self>,
        key: String,
        cell: SharedLease,
        signal: watch::Sender<Signal>,
    ) {
        let every = self.config.renew_interval();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When the checkpoint last moved, as seen at renewals (for the checkpoint-age metric).
        let mut last_checkpoint: Option<(Checkpoint, Instant)> = None;
        loop {
            tick.tick().await;
            {
                let c = cell.lock().await;
                if c.lost || c.handoff {
                    return;
                }
                if let Some(m) = &self.config.metrics {
                    let now = Instant::now();
                    let since = match &last_checkpoint {
                        Some((seen, since)) if *seen == c.checkpoint => *since,
                        _ => now,
                    };
                    last_checkpoint = Some((c.checkpoint.clone(), since));
                    m.checkpoint_age(&key, now.saturating_duration_since(since));
                }
            }
            self.renew_one(&key, &cell, &signal).await;
        }
    }

    async fn renew_one(&self, key: &str, cell: &SharedLease, signal: &watch::Sender<Signal>) {
        let mut cell = cell.lock().await;
        if cell.lost || cell.handoff || cell.awaiting_handoff {
            return;
        }
        let sent = Instant::now();
        if cell.tenure.is_lapsed(sent) {
            warn!("lease tenure lapsed before renewal");
            cell.lost = true;
            let _ = signal.send(Signal::LeaseLost);
            return;
        }
        match self.store.renew(key, cell.tenure.counter, self.me()).await {
            Ok(counter) => cell.tenure.renewed(counter, sent, self.config.failover),
            Err(e) if e.is_condition_failed() => match self.store.get(key).await {
                Ok(Some(row)) if row.checkpoint_owner.as_deref() == Some(self.me()) => {
                    info!(to = ?row.lease_owner, "lease stolen; handing off");
                    cell.handoff = true;
                    let _ = signal.send(Signal::Handoff);
                }
                Ok(Some(row))
                    if row.lease_owner.as_deref() == Some(self.me())
                        && row.checkpoint_owner.is_none()
                        && row.lease_counter > cell.tenure.counter =>
                {
                    // Still ours: an earlier renewal that timed out was applied after all. Adopt
                    // its counter (without counting its unknown time) and renew on it now.
                    debug!(
                        counter = row.lease_counter,
                        "a renewal that timed out had been applied"
                    );
                    cell.tenure.counter = row.lease_counter;
                    let sent = Instant::now();
                    match self.store.renew(key, row.lease_counter, self.me()).await {
                        Ok(counter) => cell.tenure.renewed(counter, sent, self.config.failover),
                        Err(e) => {
                            warn!(error = %e, "lease renewal failed")
                        }
                    }
                }
                Err(e) if !e.is_condition_failed() && !cell.tenure.is_lapsed(Instant::now()) => {
                    // Unknown: keep the tenure we have and ask again next time.
                    warn!(error = %e, "reading a lease after a failed renewal failed");
                }
                _ => {
                    info!("lease lost on renewal");
                    cell.lost = true;
                    let _ = signal.send(Signal::LeaseLost);
                }
            },
            Err(e) => warn!(error = %e, "lease renewal failed"),
        }
    }

    /// Releases a held lease if that is safe, and forgets it.
    pub(super) async fn release(&self, key: &str, cell: &SharedLease) {
        let mut c = cell.lock().await;
        if c.lost {
            return;
        }
        if c.handoff {
            // Stolen: we are not the owner any more; let the new owner start now.
            match self
                .store
                .end_handoff(key, self.me(), c.tenure.counter)
                .await
            {
                Ok(()) => info!("lease handed off"),
                Err(e) if e.is_condition_failed() => {
                    debug!("handoff already ended by the new owner");
                }
                Err(e) => {
                    warn!(error = %e, "ending handoff failed; the new owner will time out");
                }
            }
        } else if c.tenure.may_release(Instant::now()) {
            match self.store.release(key, c.tenure.counter, self.me()).await {
                Ok(_) => info!("lease released"),
                Err(e) => {
                    warn!(error = %e, "lease release failed")
                }
            }
        }
        c.lost = true;
    }

    pub(super) async fn graceful_shutdown(self: Arc<Self>) {
        let tasks: Vec<(String, SharedLease, Option<JoinHandle<()>>)> = {
            let mut map = lock(&self.held);
            map.values().for_each(|h| {
                let _ = h.signal.send(Signal::Shutdown);
            });
            map.iter_mut()
                .map(|(k, h)| (k.clone(), Arc::clone(&h.cell), h.task.take()))
                .collect()
        };
        // Processors get one failover time (together) to checkpoint; leases cannot be trusted
        // longer. One that overruns is stopped before its lease is released, so the next owner
        // never runs alongside it (it resumes at the last checkpoint instead).
        // A failover too long to add is as good as "no deadline" (about 30 years from now).
        let now = tokio::time::Instant::now();
        let deadline = now
            .checked_add(self.config.failover)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30));
        for (key, cell, task) in tasks {
            if let Some(mut task) = task
                && tokio::time::timeout_at(deadline, &mut task).await.is_err()
            {
                warn!(shard = %key, "processor did not stop in time; aborting it");
                task.abort();
                let _ = task.await;
            }
            self.release(&key, &cell)
                .instrument(info_span!("shard", shard = %key))
                .await;
        }
        lock(&self.held).clear();
    }
}
