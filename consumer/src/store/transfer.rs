//! Writes that move a lease between owners or create and delete rows: create, take, steal,
//! the handoff's last checkpoint and its end, deleting a finished lease.

use super::*;

impl LeaseStore {
    /// Creates `lease` unless a row with its key exists. Returns whether it was created.
    ///
    /// ```no_run
    /// # async fn demo(store: shardctl_consumer::store::LeaseStore) -> Result<(), shardctl_consumer::store::LeaseStoreError> {
    /// use shardctl_consumer::{Checkpoint, Lease};
    /// store.create_if_absent(&Lease::new("shardId-000000000000", Checkpoint::TrimHorizon)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_if_absent(&self, lease: &Lease) -> Result<bool, LeaseStoreError> {
        let result = self
            .bounded(
                "PutItem",
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(lease_to_item(lease)))
                    .condition_expression("attribute_not_exists(#k)")
                    .expression_attribute_names("#k", attr::LEASE_KEY)
                    .send(),
            )
            .await?;
        applied("PutItem", result)
    }

    /// Carries out an [`Acquisition`] (take or steal): one conditional write, applied only if
    /// the row is still as the scan saw it (counter, owner and handoff marker; see
    /// [`Acquisition::applies_to`], the same rule in pure form). A take sets the owner, bumps the
    /// counter, clears a stale handoff marker and counts an owner switch; a steal is KCL 3's
    /// graceful handoff: owner to `me`, `checkpointOwner` to the victim, counter unchanged. The
    /// victim stays the real owner until it wrote its last checkpoint and cleared the marker.
    /// Returns the counter after the write.
    ///
    /// ```no_run
    /// # async fn demo(store: shardctl_consumer::store::LeaseStore) -> Result<(), shardctl_consumer::store::LeaseStoreError> {
    /// use shardctl_consumer::{Checkpoint, Lease};
    /// use shardctl_consumer::ownership::{AcquireKind, Acquisition};
    /// let scanned = Lease::new("shardId-000000000000", Checkpoint::TrimHorizon);
    /// let counter = store.acquire(&Acquisition::of(&scanned, AcquireKind::Take), "worker-a").await?;
    /// assert_eq!(counter, 1);
    /// # Ok(()) }
    /// ```
    pub async fn acquire(&self, acq: &Acquisition, me: &str) -> Result<u64, LeaseStoreError> {
        let mut names = vec![
            ("#owner", attr::LEASE_OWNER),
            ("#counter", attr::LEASE_COUNTER),
            ("#cpowner", attr::CHECKPOINT_OWNER),
        ];
        let mut values = vec![
            (":me", AttributeValue::S(me.to_owned())),
            (":expected", n(acq.expected_counter)),
        ];
        let mut condition = String::from("#counter = :expected");
        match &acq.previous_owner {
            Some(owner) => {
                condition.push_str(" AND #owner = :previous");
                values.push((":previous", AttributeValue::S(owner.clone())));
            }
            None => condition.push_str(" AND attribute_not_exists(#owner)"),
        }
        match &acq.expected_checkpoint_owner {
            Some(marker) => {
                condition.push_str(" AND #cpowner = :marker");
                values.push((":marker", AttributeValue::S(marker.clone())));
            }
            None => condition.push_str(" AND attribute_not_exists(#cpowner)"),
        }
        let update = match acq.kind {
            AcquireKind::Take => {
                values.push((":next", n(acq.expected_counter + 1)));
                if acq.switches_owner(me) {
                    names.push(("#switches", attr::OWNER_SWITCHES_SINCE_CHECKPOINT));
                    values.push((":zero", n(0)));
                    values.push((":one", n(1)));
                    "SET #owner = :me, #counter = :next, #switches = if_not_exists(#switches, :zero) + :one REMOVE #cpowner"
                } else {
                    "SET #owner = :me, #counter = :next REMOVE #cpowner"
                }
            }
            AcquireKind::Steal => {
                let Some(victim) = &acq.previous_owner else {
                    // Nothing to steal from: the condition could never hold.
                    return Err(LeaseStoreError::ConditionFailed {
                        lease_key: acq.lease_key.clone(),
                    });
                };
                if acq.expected_checkpoint_owner.is_some() {
                    return Err(LeaseStoreError::ConditionFailed {
                        lease_key: acq.lease_key.clone(),
                    });
                }
                values.push((":victim", AttributeValue::S(victim.clone())));
                "SET #owner = :me, #cpowner = :victim"
            }
        };
        let op = match acq.kind {
            AcquireKind::Take => "take",
            AcquireKind::Steal => "steal",
        };
        self.update(op, &acq.lease_key, update, &condition, &names, values)
            .await?;
        Ok(acq.counter_after())
    }

    /// Takes a lease scanned with `expected_counter`, `previous_owner` and no handoff marker
    /// (an [`AcquireKind::Take`] through [`LeaseStore::acquire`]). Returns the new counter.
    ///
    /// ```no_run
    /// # async fn demo(store: shardctl_consumer::store::LeaseStore) -> Result<(), shardctl_consumer::store::LeaseStoreError> {
    /// let counter = store.take("shardId-000000000000", 0, None, "worker-a").await?;
    /// assert_eq!(counter, 1);
    /// # Ok(()) }
    /// ```
    pub async fn take(
        &self,
        lease_key: &str,
        expected_counter: u64,
        previous_owner: Option<&str>,
        me: &str,
    ) -> Result<u64, LeaseStoreError> {
        let acq = Acquisition {
            lease_key: lease_key.to_owned(),
            expected_counter,
            previous_owner: previous_owner.map(str::to_owned),
            expected_checkpoint_owner: None,
            kind: AcquireKind::Take,
        };
        self.acquire(&acq, me).await
    }

    /// Steals a lease from a live `victim` (an [`AcquireKind::Steal`] through
    /// [`LeaseStore::acquire`]); refused while another handoff is under way. Returns the
    /// (unchanged) counter.
    ///
    /// ```no_run
    /// # async fn demo(store: shardctl_consumer::store::LeaseStore) -> Result<(), shardctl_consumer::store::LeaseStoreError> {
    /// store.steal("shardId-000000000000", 7, "worker-b", "worker-a").await?;
    /// # Ok(()) }
    /// ```
    pub async fn steal(
        &self,
        lease_key: &str,
        expected_counter: u64,
        me: &str,
        victim: &str,
    ) -> Result<u64, LeaseStoreError> {
        let acq = Acquisition {
            lease_key: lease_key.to_owned(),
            expected_counter,
            previous_owner: Some(victim.to_owned()),
            expected_checkpoint_owner: None,
            kind: AcquireKind::Steal,
        };
        self.acquire(&acq, me).await
    }

    /// The handed-off checkpoint: the previous owner of a stolen lease records where it stopped.
    /// Conditional on `checkpointOwner = me` and on `leaseCounter` still being the counter it
    /// last wrote (a steal leaves the counter alone; any other change means its view is stale).
    /// Does not touch the counter.
    ///
    /// ```no_run
    /// # async fn demo(store: shardctl_consumer::store::LeaseStore) -> Result<(), shardctl_consumer::store::LeaseStoreError> {
    /// use shardctl_consumer::Checkpoint;
    /// store.handoff_checkpoint("shardId-000000000000", "worker-a", 7, &Checkpoint::Latest, &Default::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn handoff_checkpoint(
        &self,
        lease_key: &str,
        me: &str,
        expected_counter: u64,
        checkpoint: &Checkpoint,
        child_shard_ids: &BTreeSet<String>,
    ) -> Result<(), LeaseStoreError> {
        let mut names = vec![
            ("#cpowner", attr::CHECKPOINT_OWNER),
            ("#counter", attr::LEASE_COUNTER),
            ("#cp", attr::CHECKPOINT),
            ("#sub", attr::CHECKPOINT_SUB_SEQUENCE_NUMBER),
            ("#switches", attr::OWNER_SWITCHES_SINCE_CHECKPOINT),
        ];
        let mut values = vec![
            (":me", AttributeValue::S(me.to_owned())),
            (":expected", n(expected_counter)),
            (":cp", AttributeValue::S(checkpoint.as_str().to_owned())),
            (":sub", n(checkpoint.sub_sequence_number())),
            (":zero", n(0)),
        ];
        let mut update = String::from("SET #cp = :cp, #sub = :sub, #switches = :zero");
        if !child_shard_ids.is_empty() {
            update.push_str(", #children = :children");
            names.push(("#children", attr::CHILD_SHARD_IDS));
            values.push((
                ":children",
                AttributeValue::Ss(child_shard_ids.iter().cloned().collect()),
            ));
        }
        // A checkpoint commits: KCL's prepared (pending) checkpoint is gone with it.
        update.push_str(" REMOVE #pcp, #pcpsub, #pcpstate");
        names.extend([
            ("#pcp", attr::PENDING_CHECKPOINT),
            ("#pcpsub", attr::PENDING_CHECKPOINT_SUB_SEQUENCE_NUMBER),
            ("#pcpstate", attr::PENDING_CHECKPOINT_STATE),
        ]);
        self.update(
            "handoff_checkpoint",
            lease_key,
            &update,
            "#cpowner = :me AND #counter = :expected",
            &names,
            values,
        )
        .await
    }

    /// Ends a handoff: removes `checkpointOwner` if it is `who` and `leaseCounter` is still
    /// `expected_counter`, and bumps the counter (KCL 3's lease transfer). The previous owner
    /// calls it when it stopped; the new owner calls it when the previous owner did not answer
    /// within the failover time, and the bump fences off a previous owner that still renews.
    ///
    /// ```no_run
    /// # async fn demo(store: shardctl_consumer::store::LeaseStore) -> Result<(), shardctl_consumer::store::LeaseStoreError> {
    /// store.end_handoff("shardId-000000000000", "worker-a", 7).await?;
    /// # Ok(()) }
    /// ```
    pub async fn end_handoff(
        &self,
        lease_key: &str,
        who: &str,
        expected_counter: u64,
    ) -> Result<(), LeaseStoreError> {
        self.update(
            "end_handoff",
            lease_key,
            "REMOVE #cpowner SET #counter = :next",
            "#cpowner = :who AND #counter = :expected",
            &[
                ("#cpowner", attr::CHECKPOINT_OWNER),
                ("#counter", attr::LEASE_COUNTER),
            ],
            vec![
                (":who", AttributeValue::S(who.to_owned())),
                (":expected", n(expected_counter)),
                (":next", n(expected_counter + 1)),
            ],
        )
        .await
    }

    /// Deletes a finished lease, only while its checkpoint is still `SHARD_END`. Returns whether
    /// it deleted a row. Callers decide with
    /// [`shardctl_lease::DrainView::may_delete`] (KCL's cleanup precondition).
    ///
    /// ```no_run
    /// # async fn demo(store: shardctl_consumer::store::LeaseStore) -> Result<(), shardctl_consumer::store::LeaseStoreError> {
    /// store.delete_finished("shardId-000000000000").await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_finished(&self, lease_key: &str) -> Result<bool, LeaseStoreError> {
        let result = self
            .bounded(
                "DeleteItem",
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .key(attr::LEASE_KEY, AttributeValue::S(lease_key.to_owned()))
                    .condition_expression("#cp = :end")
                    .expression_attribute_names("#cp", attr::CHECKPOINT)
                    .expression_attribute_values(
                        ":end",
                        AttributeValue::S(Checkpoint::SHARD_END.into()),
                    )
                    .send(),
            )
            .await?;
        applied("DeleteItem", result)
    }
}
