//! Conformance suites: public async functions that every [`Source`], [`Sink`] and
//! [`StateStore`] implementation runs in its tests, like object_store's `integration`
//! module. Enable the `conformance` feature in `[dev-dependencies]`.
//!
//! They panic with a message that names the broken promise.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use s3conn_layout::SyncReport;

use crate::error::Error;
use crate::record::{Batch, Position, StreamId, SyncMode};
use crate::sink::{CommitRequest, Sink, SyncContext};
use crate::source::{ReadRequest, Source, SourceExt, SourceMessage};
use crate::state::StateStore;

/// A small batch of `n` rows starting at `start`: `id` (Int64) and `name` (Utf8, with
/// nulls and non-ASCII text).
pub fn sample_batch(start: i64, n: i64) -> RecordBatch {
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(start..start + n));
    let names: ArrayRef = Arc::new(StringArray::from_iter(
        (start..start + n).map(|i| (i % 5 != 0).then(|| format!("nom-{i}-é"))),
    ));
    RecordBatch::try_from_iter([("id", ids), ("name", names)]).unwrap()
}

fn batch(stream: &StreamId, start: i64, n: i64) -> Batch {
    Batch::new(
        stream.clone(),
        sample_batch(start, n),
        Position::new("conformance", start as u64),
    )
}

/// The promises of a [`StateStore`]: versions start at 1 and increase, a stale or
/// duplicate first save is a [`Error::StateConflict`] that changes nothing, keys are
/// independent, values round-trip byte for byte.
pub async fn state_store(store: &dyn StateStore) {
    let key = format!("conformance-{}", uuid::Uuid::new_v4().simple());
    assert!(
        store.load(&key).await.unwrap().is_none(),
        "a new key must load as None"
    );
    let v1 = store
        .save(&key, Bytes::from_static(b"one"), None)
        .await
        .unwrap();
    assert_eq!(v1.get(), 1, "the first version is 1");
    let loaded = store.load(&key).await.unwrap().unwrap();
    assert_eq!(&loaded.value[..], b"one");
    assert_eq!(loaded.version, v1);

    let v2 = store
        .save(&key, Bytes::from_static(b"two"), Some(v1))
        .await
        .unwrap();
    assert!(v2 > v1, "versions increase");

    let stale = store
        .save(&key, Bytes::from_static(b"stale"), Some(v1))
        .await;
    assert!(
        matches!(stale, Err(Error::StateConflict { .. })),
        "a save with a stale version must be a conflict, got {stale:?}"
    );
    let again = store.save(&key, Bytes::from_static(b"again"), None).await;
    assert!(
        matches!(again, Err(Error::StateConflict { .. })),
        "a first save of an existing key must be a conflict, got {again:?}"
    );
    let loaded = store.load(&key).await.unwrap().unwrap();
    assert_eq!(&loaded.value[..], b"two", "a conflict changes nothing");
    assert_eq!(loaded.version, v2);

    let other = format!("{key}-other");
    assert!(
        store.load(&other).await.unwrap().is_none(),
        "keys are independent"
    );

    let big: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i % 251) as u8).collect();
    let v3 = store
        .save(&key, Bytes::from(big.clone()), Some(v2))
        .await
        .unwrap();
    let loaded = store.load(&key).await.unwrap().unwrap();
    assert_eq!(loaded.version, v3);
    assert_eq!(loaded.value.len(), big.len());
    assert!(loaded.value[..] == big[..], "large values round-trip");
}

/// Writers racing on one state: of `writers` saves that expect the same version, exactly
/// one wins and every other gets a [`Error::StateConflict`]. Run this only on stores whose
/// conditional writes are atomic.
pub async fn state_store_race(store: Arc<dyn StateStore>, writers: usize) {
    let key = format!("race-{}", uuid::Uuid::new_v4().simple());
    let base = store
        .save(&key, Bytes::from_static(b"base"), None)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..writers)
        .map(|i| {
            let store = Arc::clone(&store);
            let key = key.clone();
            tokio::spawn(async move {
                store
                    .save(&key, Bytes::from(format!("writer-{i}")), Some(base))
                    .await
            })
        })
        .collect();
    let mut wins = Vec::new();
    let mut conflicts = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(v) => wins.push((i, v)),
            Err(Error::StateConflict { .. }) => conflicts += 1,
            Err(e) => panic!("a racing save failed with something other than a conflict: {e}"),
        }
    }
    assert_eq!(
        wins.len(),
        1,
        "exactly one racing writer wins, got {wins:?}"
    );
    assert_eq!(conflicts, writers - 1);
    let (winner, version) = wins[0];
    let loaded = store.load(&key).await.unwrap().unwrap();
    assert_eq!(loaded.version, version);
    assert_eq!(loaded.value, Bytes::from(format!("writer-{winner}")));
}

/// The promises of a [`Sink`]: a commit makes exactly what was written since `begin`
/// visible, an abort makes nothing visible and leaves nothing for the next sync, calls out
/// of order are errors, a recorded checkpoint is the one committed.
///
/// `committed_rows` reads back how many rows the sink's committed view holds (through the
/// sink's own storage, not through the sink).
pub async fn sink<K, F>(sink: &mut K, mut committed_rows: F)
where
    K: Sink,
    F: FnMut() -> BoxFuture<'static, usize>,
{
    let pipeline = format!("conformance-{}", uuid::Uuid::new_v4().simple());
    let a = StreamId::new("alpha");
    let b = StreamId::new("beta").with_namespace("ns");
    let before = committed_rows().await;

    let err = sink.write(batch(&a, 0, 1)).await;
    assert!(err.is_err(), "write before begin must fail");
    let err = sink.commit(&CommitRequest::default()).await;
    assert!(err.is_err(), "commit before begin must fail");

    let ctx = SyncContext::new(&pipeline)
        .with_stream(a.clone(), SyncMode::Incremental)
        .with_stream(b.clone(), SyncMode::Incremental);
    sink.begin(&ctx).await.unwrap();
    assert!(
        sink.begin(&ctx).await.is_err(),
        "begin during a sync must fail"
    );
    sink.write(batch(&a, 0, 100)).await.unwrap();
    sink.write(batch(&b, 0, 10)).await.unwrap();
    sink.write(batch(&a, 100, 50)).await.unwrap();
    sink.write(batch(&a, 150, 0)).await.unwrap();
    let receipt = sink.commit(&CommitRequest::checkpoint(1)).await.unwrap();
    assert_eq!(receipt.rows(), 160, "the receipt counts every row written");
    let alpha = receipt.streams.iter().find(|s| s.name == "alpha").unwrap();
    assert_eq!(alpha.rows, 150);
    assert_eq!(
        committed_rows().await,
        before + 160,
        "committed rows are visible"
    );
    let seq = sink.committed_checkpoint(&pipeline).await.unwrap();
    assert!(
        seq.is_none() || seq == Some(1),
        "a sink that records checkpoints returns the committed one, got {seq:?}"
    );

    let ctx = SyncContext::new(&pipeline).with_stream(a.clone(), SyncMode::Incremental);
    sink.begin(&ctx).await.unwrap();
    sink.write(batch(&a, 1000, 70)).await.unwrap();
    sink.abort().await.unwrap();
    assert_eq!(
        committed_rows().await,
        before + 160,
        "an aborted sync makes nothing visible"
    );

    sink.begin(&ctx).await.unwrap();
    let receipt = sink.commit(&CommitRequest::checkpoint(2)).await.unwrap();
    assert_eq!(
        receipt.rows(),
        0,
        "an aborted sync leaves nothing to the next"
    );
    assert_eq!(committed_rows().await, before + 160);
    let seq = sink.committed_checkpoint(&pipeline).await.unwrap();
    assert!(
        seq.is_none() || seq == Some(1) || seq == Some(2),
        "a checkpoint never goes back, got {seq:?}"
    );

    sink.write_report(&SyncReport::new("conformance", 0))
        .await
        .unwrap();
}

/// The promises of a [`Source`] holding `expected_rows` rows: a first read yields them all
/// and ends with a checkpoint; reading from that checkpoint yields nothing; a full refresh
/// yields them all again; every batch belongs to a listed stream and names its origin.
pub async fn source<S: Source>(source: &S, expected_rows: usize) {
    let streams = source.streams().await.unwrap();
    assert!(!streams.is_empty(), "a source lists its streams");

    let mut messages = source.read(ReadRequest::default()).await.unwrap();
    let mut rows = 0;
    let mut last_is_checkpoint = false;
    let mut checkpoint = None;
    while let Some(m) = messages.next().await {
        match m.unwrap() {
            SourceMessage::Batch(b) => {
                assert!(
                    streams.iter().any(|s| s.id == b.stream),
                    "batch of unlisted stream {}",
                    b.stream
                );
                assert!(!b.position.origin.is_empty(), "a batch names its origin");
                rows += b.num_rows();
                last_is_checkpoint = false;
            }
            SourceMessage::Checkpoint(c) => {
                checkpoint = Some(c);
                last_is_checkpoint = true;
            }
            SourceMessage::Notice(_) => {}
        }
    }
    assert_eq!(rows, expected_rows, "a first read yields every row");
    assert!(last_is_checkpoint, "a read ends with a checkpoint");

    let again = source
        .read_all(ReadRequest::from_state(checkpoint.clone()))
        .await
        .unwrap();
    assert_eq!(again.rows(), 0, "nothing is read twice");
    assert!(
        again.checkpoint.is_some(),
        "a read with nothing new still checkpoints"
    );

    let mut full = ReadRequest::from_state(checkpoint);
    for s in &streams {
        full = full.with_mode(s.id.clone(), SyncMode::FullRefresh);
    }
    let all = source.read_all(full).await.unwrap();
    assert_eq!(
        all.rows(),
        expected_rows,
        "a full refresh reads everything again"
    );
}
