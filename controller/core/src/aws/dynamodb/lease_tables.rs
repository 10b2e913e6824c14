//! Reading KCL lease tables, every page, through the one lease model.

use super::*;
use crate::aws::retry::{Idempotency, Retrier};
use crate::backend::{BackendError, LeaseTables};
use aws_config::SdkConfig;
use aws_sdk_dynamodb::Client;
use shardctl_lease::{StreamFilter, TableRows};

/// Reads KCL lease tables.
#[derive(Debug, Clone)]
pub struct DynamoLeaseTables {
    client: Client,
    retrier: Retrier,
    page_size: Option<i32>,
}

impl DynamoLeaseTables {
    /// An adapter over `config` (whose SDK retries should be disabled). `page_size` is the
    /// `Limit` of each `Scan` page (`None`: DynamoDB's 1 MB pages).
    pub fn new(config: &SdkConfig, retrier: Retrier, page_size: Option<i32>) -> Self {
        DynamoLeaseTables {
            client: Client::new(config),
            retrier,
            page_size,
        }
    }
}

impl LeaseTables for DynamoLeaseTables {
    async fn rows(&self, table: &str, stream: &StreamFilter) -> Result<TableRows, BackendError> {
        let mut rows = TableRows::new(stream.clone());
        let mut start_key: Option<Item> = None;
        loop {
            let start = start_key.take();
            let output = self
                .retrier
                .call(SCAN, Idempotency::Idempotent, || async {
                    self.client
                        .scan()
                        .table_name(table)
                        .consistent_read(true)
                        .set_limit(self.page_size)
                        .set_exclusive_start_key(start.clone())
                        .send()
                        .await
                        .map_err(|e| classify(SCAN, e))
                })
                .await
                .map_err(|error| match error {
                    BackendError::NotFound { api, message } => BackendError::NotFound {
                        api,
                        message: format!("lease table {table} does not exist: {message}"),
                    },
                    other => other,
                })?;
            for item in output.items() {
                rows.push(&shardctl_lease::sdk::from_sdk(item));
            }
            match output.last_evaluated_key() {
                Some(key) if !key.is_empty() => start_key = Some(key.clone()),
                _ => break,
            }
        }
        tracing::debug!(table, stream = %stream.name, summary = %rows.summary(), "read lease table");
        Ok(rows)
    }
}
