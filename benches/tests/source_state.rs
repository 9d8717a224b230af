//! The S3 source's state follows the late window, not the history: after a backfill of
//! 20,000 objects spread over 100 days, the state keeps about the last day's objects (a
//! state of every key read, the design before it, keeps all 20,000 and fails here), and an
//! incremental read with 100 new objects GETs exactly those 100; with keys declared ordered,
//! it costs one LIST request. Sizes and requests are counted, not timed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use s3conn_benches::discovery::{Synthetic, measure};
use s3conn_core::auth::Connection;
use s3conn_core::s3::{S3Source, S3StreamConfig};
use s3conn_core::{ReadRequest, Source, SourceMessage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_keeps_the_late_window_not_the_history() {
    let f = measure(20_000, 100, 100, false).await.unwrap();
    eprintln!("{f:?}");
    assert_eq!(f.backfill.rows, 20_000);
    assert_eq!(f.backfill.gets, 20_000);
    // 200 objects a day; the frontier reaches a day below a watermark five minutes ago,
    // and the newest hour of the span is still within it.
    assert!(
        (150..=300).contains(&f.backfill.frontier),
        "frontier after the backfill: {}",
        f.backfill.frontier
    );
    assert!(f.backfill.state_bytes * 20 < f.whole_history_bytes);
    assert_eq!(f.incremental.rows, 100);
    assert_eq!(f.incremental.gets, 100);
    assert!(f.incremental.frontier <= f.backfill.frontier + 100);
    // Keys in any order: the whole prefix is listed, 21 pages of 1,000 keys.
    assert_eq!(f.incremental.lists, 21);
}

/// With keys declared ordered, an incremental poll of a 100,000-object stream with 100 new
/// objects costs one LIST request (after the last key read), and reads the 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_poll_lists_only_after_the_last_key_read() {
    let f = measure(100_000, 100, 100, true).await.unwrap();
    eprintln!("{f:?}");
    assert_eq!(f.backfill.rows, 100_000);
    assert_eq!(f.backfill.lists, 100);
    assert_eq!(f.incremental.rows, 100);
    assert_eq!(f.incremental.gets, 100);
    assert_eq!(f.incremental.lists, 1);
}

/// Read every object of a synthetic stream whose GETs take `latency`, `concurrency` at a
/// time: the values in the order they came, and the most GETs in flight at once.
async fn read_with(concurrency: usize, latency: Duration) -> (Vec<String>, u64, u64) {
    let store = Arc::new(Synthetic::new(48, 2).with_get_latency(latency));
    let connection = Connection::new(
        Arc::clone(&store) as Arc<dyn ObjectStore>,
        Path::default(),
        "s3://synthetic",
    );
    let source = S3Source::builder(connection)
        .with_stream(S3StreamConfig::new("events", "landing").with_format("ndjson"))
        .with_read_concurrency(concurrency)
        .build()
        .unwrap();
    let mut messages = source.read(ReadRequest::from_state(None)).await.unwrap();
    let mut seen = Vec::new();
    while let Some(message) = messages.next().await {
        if let SourceMessage::Batch(batch) = message.unwrap() {
            let origin = batch.position.origin.clone();
            let values = batch
                .records
                .column(0)
                .as_primitive::<arrow_array::types::Int64Type>();
            for v in values.iter() {
                seen.push(format!("{origin}:{v:?}"));
            }
        }
    }
    (seen, store.most_in_flight(), store.unpinned())
}

/// Several objects are read at once (GETs overlap), every GET is pinned to the listed
/// ETag, and the batches come out exactly as a read of one object at a time gives them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_are_read_at_once_and_come_out_in_order() {
    let latency = Duration::from_millis(15);
    let (one_by_one, most_sequential, unpinned_sequential) = read_with(1, latency).await;
    let (parallel, most_parallel, unpinned_parallel) = read_with(4, latency).await;
    assert_eq!(one_by_one.len(), 48);
    assert_eq!(
        parallel, one_by_one,
        "parallel reads changed the order or the values"
    );
    assert_eq!(most_sequential, 1);
    assert!(
        most_parallel >= 3,
        "at most {most_parallel} GETs were in flight at once with a concurrency of 4"
    );
    assert_eq!(unpinned_sequential + unpinned_parallel, 0);
}
