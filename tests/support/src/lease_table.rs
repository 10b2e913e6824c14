//! DynamoDB tables shaped as KCL's lease tables.

use crate::Clients;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};

/// Creates an on-demand table keyed by the string attribute `hash_key` only, as KCL does.
pub async fn create_hash_table(dynamodb: &aws_sdk_dynamodb::Client, table: &str, hash_key: &str) {
    let definition = AttributeDefinition::builder()
        .attribute_name(hash_key)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .unwrap_or_else(|e| panic!("attribute definition: {e}"));
    let key = KeySchemaElement::builder()
        .attribute_name(hash_key)
        .key_type(KeyType::Hash)
        .build()
        .unwrap_or_else(|e| panic!("key schema: {e}"));
    dynamodb
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(definition)
        .key_schema(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateTable {table}: {}", DisplayErrorContext(&e)));
}

/// Creates a KCL lease table (key `leaseKey`) with a lease per (shard id, checkpoint) row.
pub async fn lease_table(c: &Clients, table: &str, rows: &[(&str, &str)]) {
    create_hash_table(&c.dynamodb, table, "leaseKey").await;
    for (shard, checkpoint) in rows {
        set_checkpoint(c, table, shard, checkpoint).await;
    }
}

/// Writes the lease of `shard`, owned by `worker-1`, at `checkpoint` (a sequence number,
/// `TRIM_HORIZON`, `SHARD_END`, ...), as KCL 2.x writes it.
pub async fn set_checkpoint(c: &Clients, table: &str, shard: &str, checkpoint: &str) {
    c.dynamodb
        .put_item()
        .table_name(table)
        .item("leaseKey", AttributeValue::S(shard.to_string()))
        .item("leaseOwner", AttributeValue::S("worker-1".into()))
        .item("leaseCounter", AttributeValue::N("7".into()))
        .item("checkpoint", AttributeValue::S(checkpoint.to_string()))
        .item("checkpointSubSequenceNumber", AttributeValue::N("0".into()))
        .item(
            "ownerSwitchesSinceCheckpoint",
            AttributeValue::N("0".into()),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutItem {table}: {}", DisplayErrorContext(&e)));
}

/// Whether the table exists.
pub async fn table_exists(c: &Clients, table: &str) -> bool {
    c.dynamodb
        .describe_table()
        .table_name(table)
        .send()
        .await
        .is_ok()
}
