//! Dispatch path: one `GetRecords` answer converted to our records and handed, in order, to a
//! no-op processor, on one thread. Reported as records per second per core.
//!
//! `cargo bench -p shardctl-consumer --bench dispatch`
#![allow(missing_docs)]

use std::hint::black_box;

use aws_sdk_kinesis::operation::get_records::GetRecordsOutput;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::Record as SdkRecord;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use shardctl_consumer::processor::{Checkpointer, InitInput, RecordBatch, ShardProcessor};
use shardctl_consumer::producer::{encode_event, event_id};
use shardctl_consumer::reader::Fetched;

struct Nop {
    seen: u64,
}

impl ShardProcessor for Nop {
    async fn initialize(&mut self, _: InitInput) {}
    async fn process_records(&mut self, batch: RecordBatch, _: &Checkpointer) {
        self.seen += batch.records.len() as u64;
        black_box(&batch);
    }
    async fn shard_ended(&mut self, _: &Checkpointer) {}
}

/// Reads each record's event id, like a processor feeding the dedup layer would.
struct ReadsIds {
    ids: u64,
}

impl ShardProcessor for ReadsIds {
    async fn initialize(&mut self, _: InitInput) {}
    async fn process_records(&mut self, batch: RecordBatch, _: &Checkpointer) {
        for r in &batch.records {
            if event_id(&r.data).is_some() {
                self.ids += 1;
            }
        }
    }
    async fn shard_ended(&mut self, _: &Checkpointer) {}
}

fn answer(records: usize, payload: usize) -> GetRecordsOutput {
    let body = vec![b'x'; payload];
    let mut out = GetRecordsOutput::builder()
        .next_shard_iterator("AAAAAAAAAAFakeIterator")
        .millis_behind_latest(0);
    for i in 0..records {
        let data = encode_event(uuid::Uuid::new_v4(), &body);
        out = out.records(
            SdkRecord::builder()
                .sequence_number(format!(
                    "4968060857654243474604933824945951682108388732390971{i:04}"
                ))
                .partition_key(format!("org-{:03}", i % 200))
                .data(Blob::new(data.to_vec()))
                .build()
                .expect("record"),
        );
    }
    out.build().expect("output")
}

/// Measured through the public API: the conversion of the answer and the call into the
/// processor. (The worker's own bookkeeping per batch, one string for the batch end and a tenure
/// check, is not reachable from outside the crate on purpose: an application must not be able
/// to declare records delivered.)
async fn dispatch<P: ShardProcessor>(p: &mut P, c: &Checkpointer, out: GetRecordsOutput) {
    let fetched = Fetched::from_output(out);
    p.process_records(
        RecordBatch {
            shard_id: "shardId-000000000000".into(),
            records: fetched.records,
            millis_behind_latest: fetched.millis_behind_latest,
        },
        c,
    )
    .await;
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("dispatch");
    for (records, payload) in [(1_000usize, 100usize), (10_000, 100), (1_000, 1_000)] {
        group.throughput(Throughput::Elements(records as u64));
        let template = answer(records, payload);
        group.bench_function(format!("nop/{records}x{payload}B"), |b| {
            let mut p = Nop { seen: 0 };
            let cp = Checkpointer::unleased("shardId-000000000000");
            b.iter_batched(
                || template.clone(),
                |out| rt.block_on(dispatch(&mut p, &cp, out)),
                BatchSize::LargeInput,
            );
        });
        group.bench_function(format!("event_ids/{records}x{payload}B"), |b| {
            let mut p = ReadsIds { ids: 0 };
            let cp = Checkpointer::unleased("shardId-000000000000");
            b.iter_batched(
                || template.clone(),
                |out| rt.block_on(dispatch(&mut p, &cp, out)),
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
