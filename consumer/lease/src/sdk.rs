//! Conversion between the DynamoDB SDK's items and [`Item`] (feature `dynamodb`).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

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
