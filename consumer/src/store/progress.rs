//! Writes by the lease's holder: renew, checkpoint, release, each conditional on the lease
//! counter and owner.

use super::*;

impl LeaseStore {
    /// Renews a held lease: increments the counter if owner and counter are unchanged.
    ///
    /// ```no_run
    /// # async fn demo(store: shardctl_consumer::store::LeaseStore) -> Result<(), shardctl_consumer::store::LeaseStoreError> {
    /// let counter = store.renew("shardId-000000000000", 1, "worker-a").await?;
    /// assert_eq!(counter, 2);
    /// # Ok(()) }
    /// ```
    pub async fn renew(
        &self,
        lease_key: &str,
        counter: u64,
        me: &str,
    ) -> Result<u64, LeaseStoreError> {
        self.update(
            "renew",
            lease_key,
            "SET #counter = :next",
            "#counter = :expected AND #owner = :me",
            &[
                ("#owner", attr::LEASE_OWNER),
                ("#counter", attr::LEASE_COUNTER),
            ],
            vec![
                (":me", AttributeValue::S(me.to_owned())),
                (":next", n(counter + 1)),
                (":expected", n(counter)),
            ],
        )
        .await?;
        Ok(counter + 1)
    }

    /// Writes a checkpoint on a held lease (and the child shard ids when the shard ended).
    /// Resets `ownerSwitchesSinceCheckpoint`. Returns the new counter.
    ///
    /// ```no_run
    /// # async fn demo(store: shardctl_consumer::store::LeaseStore) -> Result<(), shardctl_consumer::store::LeaseStoreError> {
    /// use shardctl_consumer::Checkpoint;
    /// store.checkpoint("shardId-000000000000", 2, "worker-a", &Checkpoint::ShardEnd, &Default::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn checkpoint(
        &self,
        lease_key: &str,
        counter: u64,
        me: &str,
        checkpoint: &Checkpoint,
        child_shard_ids: &BTreeSet<String>,
    ) -> Result<u64, LeaseStoreError> {
        let mut names = vec![
            ("#owner", attr::LEASE_OWNER),
            ("#counter", attr::LEASE_COUNTER),
            ("#cp", attr::CHECKPOINT),
            ("#sub", attr::CHECKPOINT_SUB_SEQUENCE_NUMBER),
            ("#switches", attr::OWNER_SWITCHES_SINCE_CHECKPOINT),
        ];
        let mut values = vec![
            (":me", AttributeValue::S(me.to_owned())),
            (":next", n(counter + 1)),
            (":expected", n(counter)),
            (":cp", AttributeValue::S(checkpoint.as_str().to_owned())),
            (":sub", n(checkpoint.sub_sequence_number())),
            (":zero", n(0)),
        ];
        let mut update =
            String::from("SET #counter = :next, #cp = :cp, #sub = :sub, #switches = :zero");
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
            "checkpoint",
            lease_key,
            &update,
            "#counter = :expected AND #owner = :me",
            &names,
            values,
        )
        .await?;
        Ok(counter + 1)
    }

    /// Releases a held lease (removes `leaseOwner`) so another worker can take it at once.
    ///
    /// ```no_run
    /// # async fn demo(store: shardctl_consumer::store::LeaseStore) -> Result<(), shardctl_consumer::store::LeaseStoreError> {
    /// store.release("shardId-000000000000", 3, "worker-a").await?;
    /// # Ok(()) }
    /// ```
    pub async fn release(
        &self,
        lease_key: &str,
        counter: u64,
        me: &str,
    ) -> Result<u64, LeaseStoreError> {
        self.update(
            "release",
            lease_key,
            "REMOVE #owner SET #counter = :next",
            "#counter = :expected AND #owner = :me",
            &[
                ("#owner", attr::LEASE_OWNER),
                ("#counter", attr::LEASE_COUNTER),
            ],
            vec![
                (":me", AttributeValue::S(me.to_owned())),
                (":next", n(counter + 1)),
                (":expected", n(counter)),
            ],
        )
        .await?;
        Ok(counter + 1)
    }
}
