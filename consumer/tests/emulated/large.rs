//! Records above 1 MiB: a stream whose maximum record size was raised takes them from the
//! producer, and the worker delivers them whole.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardctl_consumer::Worker;
use shardctl_consumer::producer::{Event, ProduceError, Producer};

use crate::common::{aws, create_stream, eventually, stream_arn, test_config, unique};
use crate::kpl::KplRecorder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_above_one_mib_go_through_once_the_stream_takes_them() {
    let Some(aws) = aws().await else { return };
    let stream = unique("large-records");
    create_stream(&aws.kinesis, &stream, 1).await;
    let arn = stream_arn(&aws.kinesis, &stream).await;
    aws.kinesis
        .update_max_record_size()
        .stream_arn(&arn)
        .max_record_size_in_kib(4096)
        .send()
        .await
        .unwrap();
    let big = format!("big:{}", "x".repeat(3 * 1024 * 1024));
    let events = || {
        vec![
            Event::new("org-a", "small:1"),
            Event::new("org-b", big.clone()),
            Event::new("org-a", "small:2"),
        ]
    };

    // A producer that still assumes 1 MiB refuses the event before sending anything.
    let refused = Producer::new(aws.kinesis.clone(), &stream)
        .send(events())
        .await
        .expect_err("3 MiB is above 1 MiB");
    assert!(
        matches!(refused, ProduceError::TooLarge { limit, .. } if limit == 1 << 20),
        "{refused}"
    );
    assert!(matches!(
        Producer::new(aws.kinesis.clone(), &stream).with_max_record_size_kib(10_241),
        Err(ProduceError::MaxRecordSize { kib: 10_241 })
    ));

    let report = Producer::new(aws.kinesis.clone(), &stream)
        .with_max_record_size_kib(4096)
        .unwrap()
        .send(events())
        .await
        .unwrap();
    assert_eq!(report.acknowledged, 3);

    let seen = Arc::new(Mutex::new(Vec::new()));
    let worker = Worker::start(
        test_config(&stream),
        aws.kinesis.clone(),
        aws.dynamodb.clone(),
        KplRecorder::factory(&seen, None),
    )
    .await
    .unwrap();
    eventually("three records", Duration::from_secs(30), || async {
        (seen.lock().unwrap().len() >= 3).then_some(())
    })
    .await;
    worker.shutdown().await;
    let seen = seen.lock().unwrap();
    let keys: Vec<&str> = seen.iter().map(|s| s.partition_key.as_str()).collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
    let whole = seen
        .iter()
        .filter(|s| s.partition_key == "org-b" && s.data.ends_with(&big))
        .count();
    assert_eq!(whole, 1, "the 3 MiB event arrives once and whole");
    let small: Vec<bool> = seen
        .iter()
        .filter(|s| s.partition_key == "org-a")
        .map(|s| s.data.ends_with("small:1"))
        .collect();
    assert_eq!(small, [true, false], "org-a's events in order");
}
