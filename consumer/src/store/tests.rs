#![allow(clippy::unwrap_used)]
use super::*;

fn item(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

#[test]
fn row_without_checkpoint_is_unreadable_not_a_fresh_lease() {
    let row = item(&[
        ("leaseKey", AttributeValue::S("s".into())),
        ("leaseCounter", AttributeValue::N("1".into())),
    ]);
    assert_eq!(
        lease_from_item(&row),
        Err(LeaseRowError::Missing(attr::CHECKPOINT))
    );
}

#[test]
fn wrongly_typed_counter_is_malformed() {
    let row = item(&[
        ("leaseKey", AttributeValue::S("s".into())),
        ("leaseCounter", AttributeValue::S("1".into())),
        ("checkpoint", AttributeValue::S("LATEST".into())),
    ]);
    assert!(matches!(
        lease_from_item(&row),
        Err(LeaseRowError::Malformed {
            name: "leaseCounter",
            ..
        })
    ));
}

#[test]
fn kcl_row_with_every_attribute_round_trips() {
    let row = item(&[
        ("leaseKey", AttributeValue::S("shardId-000000000004".into())),
        ("leaseOwner", AttributeValue::S("w1".into())),
        ("leaseCounter", AttributeValue::N("42".into())),
        ("checkpoint", AttributeValue::S("4968".into())),
        ("checkpointSubSequenceNumber", AttributeValue::N("3".into())),
        (
            "ownerSwitchesSinceCheckpoint",
            AttributeValue::N("2".into()),
        ),
        (
            "parentShardId",
            AttributeValue::Ss(vec![
                "shardId-000000000001".into(),
                "shardId-000000000002".into(),
            ]),
        ),
        (
            "childShardIds",
            AttributeValue::Ss(vec!["shardId-000000000007".into()]),
        ),
        ("startingHashKey", AttributeValue::S("0".into())),
        (
            "endingHashKey",
            AttributeValue::S("170141183460469231731687303715884105727".into()),
        ),
    ]);
    let lease = lease_from_item(&row).unwrap();
    assert_eq!(
        lease.checkpoint,
        Checkpoint::Sequence {
            sequence_number: "4968".into(),
            sub_sequence_number: 3
        }
    );
    assert_eq!(lease.parent_shard_ids.len(), 2);
    assert_eq!(lease_to_item(&lease), row);
}
