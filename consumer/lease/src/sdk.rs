//! Conversion between the DynamoDB SDK's items and [`Item`] (feature `dynamodb`).

use std::collections::HashMap;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{BuildError, SdkError};
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};

use crate::row::{Item, Value};

/// Reads an SDK item.
///
/// ```
/// use std::collections::HashMap;
/// use aws_sdk_dynamodb::types::AttributeValue;
/// use shardctl_lease::{sdk, Row};
/// let item = HashMap::from([
///     ("leaseKey".to_string(), AttributeValue::S("shardId-000000000000".into())),
///     ("leaseCounter".to_string(), AttributeValue::N("3".into())),
///     ("checkpoint".to_string(), AttributeValue::S("SHARD_END".into())),
/// ]);
/// assert!(matches!(Row::read(&sdk::from_sdk(&item)), Row::Lease(_)));
/// ```
pub fn from_sdk(item: &HashMap<String, AttributeValue>) -> Item {
    item.iter()
        .map(|(name, value)| {
            let value = match value {
                AttributeValue::S(s) => Value::S(s.clone()),
                AttributeValue::N(n) => Value::N(n.clone()),
                AttributeValue::Ss(ss) => Value::Ss(ss.clone()),
                AttributeValue::Null(_) => Value::Null,
                AttributeValue::B(_) => Value::Other("B"),
                AttributeValue::Bool(_) => Value::Other("BOOL"),
                AttributeValue::Bs(_) => Value::Other("BS"),
                AttributeValue::L(_) => Value::Other("L"),
                AttributeValue::M(_) => Value::Other("M"),
                AttributeValue::Ns(_) => Value::Other("NS"),
                _ => Value::Other("unknown"),
            };
            (name.clone(), value)
        })
        .collect()
}

/// Writes an SDK item. [`Value::Other`] cannot be written back and is left out.
pub fn to_sdk(item: &Item) -> HashMap<String, AttributeValue> {
    item.iter()
        .filter_map(|(name, value)| {
            let value = match value {
                Value::S(s) => AttributeValue::S(s.clone()),
                Value::N(n) => AttributeValue::N(n.clone()),
                Value::Ss(ss) => AttributeValue::Ss(ss.clone()),
                Value::Null => AttributeValue::Null(true),
                Value::Other(_) => return None,
            };
            Some((name.clone(), value))
        })
        .collect()
}

/// The shape of every table shardctl creates (the lease table, the dedup table, the
/// controller's state table): string keys, billed on demand. One definition, so the three
/// `CreateTable` paths cannot drift apart.
///
/// ```
/// use shardctl_lease::sdk::TableSpec;
/// let lease_table = TableSpec { hash_key: "leaseKey", range_key: None };
/// assert_eq!(lease_table.key_names(), vec!["leaseKey"]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSpec<'a> {
    /// The partition (HASH) key attribute, a string.
    pub hash_key: &'a str,
    /// The sort (RANGE) key attribute, a string, if the table has one.
    pub range_key: Option<&'a str>,
}

impl TableSpec<'_> {
    /// The key attributes, partition key first.
    pub fn key_names(&self) -> Vec<&str> {
        std::iter::once(self.hash_key)
            .chain(self.range_key)
            .collect()
    }

    /// The `CreateTable` request for `table` with this shape; send it, then treat
    /// [`TableSpec::already_exists`] as success (another process created it first).
    ///
    /// ```no_run
    /// # async fn demo(client: aws_sdk_dynamodb::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use shardctl_lease::sdk::TableSpec;
    /// let spec = TableSpec { hash_key: "eventId", range_key: None };
    /// match spec.create_request(&client, "dedup")?.send().await {
    ///     Ok(_) => println!("created"),
    ///     Err(e) if TableSpec::already_exists(&e) => println!("exists"),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn create_request(
        &self,
        client: &aws_sdk_dynamodb::Client,
        table: &str,
    ) -> Result<CreateTableFluentBuilder, BuildError> {
        let mut request = client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest);
        for (name, key_type) in [
            (Some(self.hash_key), KeyType::Hash),
            (self.range_key, KeyType::Range),
        ] {
            let Some(name) = name else { continue };
            request = request
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(name)
                        .attribute_type(ScalarAttributeType::S)
                        .build()?,
                )
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(name)
                        .key_type(key_type)
                        .build()?,
                );
        }
        Ok(request)
    }

    /// Whether a `CreateTable` failure means the table exists already (`ResourceInUseException`).
    pub fn already_exists(error: &SdkError<CreateTableError, HttpResponse>) -> bool {
        error
            .as_service_error()
            .is_some_and(|e| e.is_resource_in_use_exception())
    }
}
