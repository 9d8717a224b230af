//! End-to-end: NDJSON objects in a real S3 server on loopback (SigV4 checked) pulled by
//! `S3Source`, pushed as Parquet by `S3Sink`, through `Pipeline`, and read back
//! independently (the parquet crate's own reader, and pyarrow).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path;
use s3conn_core::formats::{DecodeOptions, ErrorPolicy};
use s3conn_core::layout::SyncStatus;
use s3conn_core::s3::{S3Sink, S3Source, S3StreamConfig};
use s3conn_core::state::{ObjectStoreStateStore, StateStore, StateVersion, Versioned};
use s3conn_core::{Error, Pipeline, SyncMode};
use s3conn_testkit::{FaultKind, FaultyStore, Op, S3Server};

use common::*;

const LANDING: &str = "landing";
const WAREHOUSE: &str = "warehouse";

struct Setup {
    server: S3Server,
    raw: Arc<dyn ObjectStore>,
}

impl Setup {
    async fn new() -> Self {
        let server = S3Server::start().await;
        let raw = server.store(server.bucket());
        Self { server, raw }
    }

    fn source(&self) -> S3Source {
        S3Source::builder(connection(&self.server, LANDING))
            .with_stream(
                S3StreamConfig::new("events", "events")
                    .with_format("ndjson")
                    .with_decode_options(DecodeOptions::default().with_batch_size(4096)),
            )
            .build()
            .unwrap()
    }

    fn sink_over(&self, store: Arc<dyn ObjectStore>) -> S3Sink {
        S3Sink::builder(connection_over(store, &self.server, WAREHOUSE))
            .build()
            .unwrap()
    }

    fn sink(&self) -> S3Sink {
        S3Sink::builder(connection(&self.server, WAREHOUSE))
            .build()
            .unwrap()
    }

    /// Parquet with small, uncompressed row groups and a 5 MiB part size, so that files
    /// above the part size go up as multipart uploads, rolling at `target`.
    fn multipart_sink(&self, store: Arc<dyn ObjectStore>, target: u64) -> S3Sink {
        S3Sink::builder(connection_over(store, &self.server, WAREHOUSE))
            .with_format(Arc::new(
                s3conn_core::formats::parquet::ParquetFormat::default()
                    .with_max_row_group_rows(5_000)
                    .with_compression(parquet::basic::Compression::UNCOMPRESSED)
                    .with_dictionary(false),
            ))
            .with_part_size(5 << 20)
            .with_target_file_size(target)
            .build()
            .unwrap()
    }

    fn state(&self) -> ObjectStoreStateStore {
        ObjectStoreStateStore::new(Arc::clone(&self.raw), Path::from("state"))
    }

    /// Land `objects` NDJSON objects of `per` events each, starting at event `first`;
    /// every other object gzip-compressed.
    async fn land(&self, first: u64, objects: u64, per: u64) {
        for o in 0..objects {
            let start = first + o * per;
            let text = ndjson(start, per);
            if o % 2 == 0 {
                put(
                    &self.raw,
                    &format!("{LANDING}/events/part-{start:08}.jsonl"),
                    text,
                )
                .await;
            } else {
                put(
                    &self.raw,
                    &format!("{LANDING}/events/part-{start:08}.jsonl.gz"),
                    gzip(text.as_bytes()),
                )
                .await;
            }
        }
    }

    async fn committed(&self) -> std::collections::BTreeMap<u64, serde_json::Value> {
        committed_rows(&self.raw, self.server.bucket(), WAREHOUSE, "events").await
    }

    /// Every data file in the warehouse (what a reader listing the prefix sees).
    async fn data_files(&self) -> Vec<String> {
        keys(&self.raw, &format!("{WAREHOUSE}/events")).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_rows_then_only_new_objects() {
    let s = Setup::new().await;
    s.land(0, 10, 10_000).await;

    let mut pipeline =
        Pipeline::new("landing-to-warehouse", s.source(), s.sink(), s.state()).unwrap();
    let report = pipeline.run().await.unwrap();
    assert_eq!(report.status, SyncStatus::Succeeded);
    assert_eq!(report.rows, 100_000);
    assert_eq!(report.dump_id, Some(1));
    assert!(report.files >= 1 && report.bytes > 0);
    assert_eq!(
        s.committed().await,
        expected_rows(0..100_000),
        "row for row"
    );

    // A second run with nothing new commits nothing.
    let report = pipeline.run().await.unwrap();
    assert_eq!(report.rows, 0);
    assert_eq!(report.dump_id, None);

    // New objects: only they move, in a delivery of their own.
    s.land(100_000, 2, 5_000).await;
    let report = pipeline.run().await.unwrap();
    assert_eq!(report.rows, 10_000);
    assert_eq!(report.dump_id, Some(2));
    let manifests = manifests(&s.raw, WAREHOUSE).await;
    assert_eq!(manifests.len(), 2);
    let second: u64 = manifests[1]
        .s3conn
        .as_ref()
        .unwrap()
        .files
        .iter()
        .map(|f| f.rows)
        .sum();
    assert_eq!(
        second, 10_000,
        "the second delivery holds only the new rows"
    );
    assert_eq!(s.committed().await, expected_rows(0..110_000));
    assert_eq!(
        s.data_files().await.len(),
        manifests
            .iter()
            .map(|m| m.tables[0].files.len())
            .sum::<usize>(),
        "no file outside the manifests"
    );

    // One sync report per run, under sync_reports/.
    assert_eq!(
        keys(&s.raw, &format!("{WAREHOUSE}/sync_reports"))
            .await
            .len(),
        3
    );
    // The manifest lists the columns, in the order of the data.
    assert_eq!(
        manifests[0].tables[0].columns,
        [
            "id", "user_id", "email", "name", "event", "amount", "ts", "props", "tags"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_reads_what_the_sink_wrote_value_for_value() {
    let s = Setup::new().await;
    s.land(0, 2, 2_500).await;
    let mut pipeline = Pipeline::new("p", s.source(), s.sink(), s.state()).unwrap();
    pipeline.run().await.unwrap();

    let files: Vec<String> = live_files(&s.raw, s.server.bucket(), WAREHOUSE, "events")
        .await
        .into_iter()
        .map(|k| format!("{}/{k}", s.server.bucket()))
        .collect();
    let endpoint = s.server.endpoint().trim_start_matches("http://").to_owned();
    let mut args = vec![
        endpoint.as_str(),
        s.server.access_key(),
        s.server.secret_key(),
    ];
    args.extend(files.iter().map(String::as_str));
    let out = s3conn_testkit::run_python(
        r#"
import sys, json
import pyarrow.fs as pafs, pyarrow.parquet as pq
endpoint, key, secret, *paths = sys.argv[1:]
fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", access_key=key,
                       secret_key=secret, region="us-east-1")
def default(value):
    # Timestamps inferred from the events' strings come back as datetimes.
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")
for p in paths:
    for row in pq.read_table(p, filesystem=fs).to_pylist():
        print(json.dumps(row, ensure_ascii=False, default=default))
"#,
        &args,
    );
    let mut seen = std::collections::BTreeMap::new();
    for line in out.lines() {
        let v = strip_nulls(serde_json::from_str(line).unwrap());
        seen.insert(v["id"].as_u64().unwrap(), v);
    }
    assert_eq!(seen, expected_rows(0..5_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_manifest_loses_and_repeats_nothing() {
    let s = Setup::new().await;
    s.land(0, 4, 5_000).await;
    let faulty = FaultyStore::new(Arc::clone(&s.raw));
    // Every send of the manifest fails (the sink sends a failed put up to four times).
    faulty.fail(Op::Put, "/manifests/", FaultKind::Before, 0, 100);
    let state = s.state();

    let mut pipeline = Pipeline::new(
        "p",
        s.source(),
        s.sink_over(faulty.clone() as Arc<dyn ObjectStore>),
        state.clone(),
    )
    .unwrap();
    let err = pipeline.run().await.unwrap_err();
    assert!(err.to_string().contains("injected fault"), "{err}");
    assert_eq!(faulty.fired(), 4, "the manifest put was sent four times");
    assert!(
        manifests(&s.raw, WAREHOUSE).await.is_empty(),
        "nothing was committed"
    );
    // The failed run recorded its report.
    let reports = keys(&s.raw, &format!("{WAREHOUSE}/sync_reports")).await;
    assert_eq!(reports.len(), 1);
    // The state did not move past the uncommitted data: its checkpoint is only pending.
    let stored: serde_json::Value =
        serde_json::from_slice(&state.load("p").await.unwrap().unwrap().value).unwrap();
    assert!(stored["committed"].is_null(), "{stored}");

    // The next run (healthy) commits every row exactly once and leaves no orphan.
    faulty.heal();
    let report = pipeline.run().await.unwrap();
    assert_eq!(report.rows, 20_000);
    assert_eq!(s.committed().await, expected_rows(0..20_000));
    let listed: Vec<String> = live_files(&s.raw, s.server.bucket(), WAREHOUSE, "events").await;
    assert_eq!(
        s.data_files().await,
        listed,
        "the crashed attempt's parts are gone"
    );
    assert!(
        keys(&s.raw, &format!("{WAREHOUSE}/_s3conn"))
            .await
            .is_empty()
    );
}

/// A state store that fails its `n`th save of the pipeline's state (not of its lease): a
/// crash after the sink committed.
#[derive(Debug)]
struct FailingSave<T> {
    inner: T,
    fail_at: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl<T: StateStore> StateStore for FailingSave<T> {
    async fn load(&self, key: &str) -> s3conn_core::Result<Option<Versioned>> {
        self.inner.load(key).await
    }

    async fn save(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<StateVersion>,
    ) -> s3conn_core::Result<StateVersion> {
        if key.ends_with(".lease") {
            return self.inner.save(key, value, expected).await;
        }
        let left = self
            .fail_at
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        if left == 1 {
            return Err(Error::Protocol(
                "injected crash before the state save".into(),
            ));
        }
        self.inner.save(key, value, expected).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_manifest_neither_loses_nor_duplicates() {
    let s = Setup::new().await;
    s.land(0, 3, 3_000).await;
    // Save 1 records the pending checkpoint, the sink commits, save 2 "crashes".
    let state = FailingSave {
        inner: s.state(),
        fail_at: std::sync::atomic::AtomicUsize::new(2),
    };
    let mut pipeline = Pipeline::new("p", s.source(), s.sink(), state).unwrap();
    let err = pipeline.run().await.unwrap_err();
    assert!(err.to_string().contains("injected crash"), "{err}");
    assert_eq!(
        manifests(&s.raw, WAREHOUSE).await.len(),
        1,
        "the delivery was committed"
    );
    let reports = keys(&s.raw, &format!("{WAREHOUSE}/sync_reports")).await;
    let report: serde_json::Value =
        serde_json::from_slice(&get(&s.raw, &reports[0]).await).unwrap();
    assert_eq!(report["status"], "partial");

    // The next run sees the pending checkpoint, finds it in the manifest, and moves nothing.
    let report = pipeline.run().await.unwrap();
    assert_eq!(
        report.rows, 0,
        "the committed delivery is not written again"
    );
    assert_eq!(manifests(&s.raw, WAREHOUSE).await.len(), 1);
    assert_eq!(s.committed().await, expected_rows(0..9_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_part_or_manifest_put_is_not_duplicated() {
    let s = Setup::new().await;
    s.land(0, 2, 4_000).await;
    let faulty = FaultyStore::new(Arc::clone(&s.raw));
    // The client retries the part's conditional PUT after its first answer was lost, and
    // the same for the manifest.
    faulty.fail(Op::Put, "/events/", FaultKind::Retried, 0, 1);
    faulty.fail(Op::Put, "/manifests/", FaultKind::Retried, 0, 1);
    let mut pipeline = Pipeline::new(
        "p",
        s.source(),
        s.sink_over(faulty.clone() as Arc<dyn ObjectStore>),
        s.state(),
    )
    .unwrap();
    let report = pipeline.run().await.unwrap();
    assert_eq!(faulty.fired(), 2);
    assert_eq!(report.rows, 8_000);
    assert_eq!(
        report.dump_id,
        Some(1),
        "the replayed manifest is recognised as ours"
    );
    assert_eq!(manifests(&s.raw, WAREHOUSE).await.len(), 1);
    assert_eq!(s.committed().await, expected_rows(0..8_000));
    let listed = live_files(&s.raw, s.server.bucket(), WAREHOUSE, "events").await;
    assert_eq!(
        s.data_files().await,
        listed,
        "the replayed part left no second copy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_refresh_replaces_the_previous_generation_after_committing() {
    let s = Setup::new().await;
    s.land(0, 2, 1_000).await;
    let mut pipeline = Pipeline::new("p", s.source(), s.sink(), s.state())
        .unwrap()
        .with_default_mode(SyncMode::FullRefresh);
    pipeline.run().await.unwrap();
    let first_files = s.data_files().await;
    s.land(2_000, 1, 1_000).await;
    let report = pipeline.run().await.unwrap();
    assert_eq!(report.rows, 3_000, "full refresh reads everything again");
    let manifests = manifests(&s.raw, WAREHOUSE).await;
    assert_eq!(manifests.len(), 2);
    assert!(!manifests[1].tables[0].incremental);
    assert_eq!(s.committed().await, expected_rows(0..3_000));
    let now = s.data_files().await;
    assert!(
        first_files.iter().all(|f| !now.contains(f)),
        "the previous generation is deleted"
    );
    assert_eq!(
        now,
        live_files(&s.raw, s.server.bucket(), WAREHOUSE, "events").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_line_names_object_and_line_and_moves_nothing() {
    let s = Setup::new().await;
    s.land(0, 1, 100).await;
    let mut bad = ndjson(100, 41);
    bad.push_str("{\"id\": 141, \"user_id\": oops}\n");
    put(&s.raw, &format!("{LANDING}/events/part-bad.jsonl"), bad).await;
    let state = s.state();
    let mut pipeline = Pipeline::new("p", s.source(), s.sink(), state.clone()).unwrap();
    let err = pipeline.run().await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "s3://{}/{LANDING}/events/part-bad.jsonl",
            s.server.bucket()
        )),
        "{text}"
    );
    assert!(text.contains("line 42"), "{text}");
    assert!(manifests(&s.raw, WAREHOUSE).await.is_empty());
    assert!(
        s.data_files().await.is_empty(),
        "the aborted attempt's parts are deleted"
    );
    assert!(
        state.load("p").await.unwrap().is_none(),
        "the state did not move"
    );

    // Under the skip policy the same data goes through and the report counts the skip.
    let source = S3Source::builder(connection(&s.server, LANDING))
        .with_stream(
            S3StreamConfig::new("events", "events")
                .with_format("ndjson")
                .with_decode_options(DecodeOptions::default().with_error_policy(ErrorPolicy::Skip)),
        )
        .build()
        .unwrap();
    let mut pipeline = Pipeline::new("p", source, s.sink(), state).unwrap();
    let report = pipeline.run().await.unwrap();
    assert_eq!(report.rows, 141);
    assert_eq!(report.skipped_rows, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_multipart_files_and_parquet_sources() {
    let s = Setup::new().await;
    s.land(0, 3, 40_000).await;
    // A small target: several files, each over the 5 MiB part size, so they go up as
    // multipart uploads.
    let sink = s.multipart_sink(Arc::clone(&s.raw), 6 << 20);
    let mut pipeline = Pipeline::new("p", s.source(), sink, s.state()).unwrap();
    let report = pipeline.run().await.unwrap();
    assert_eq!(report.rows, 120_000);
    assert!(report.files >= 2, "rolled into {} files", report.files);
    assert_eq!(s.committed().await, expected_rows(0..120_000));

    // The Parquet files are themselves a source: read them back through S3Source.
    let source = S3Source::builder(connection(&s.server, WAREHOUSE))
        .with_stream(S3StreamConfig::new("events", "events").with_format("parquet"))
        .build()
        .unwrap();
    let all = s3conn_core::SourceExt::read_all(&source, Default::default())
        .await
        .unwrap();
    let batches: Vec<_> = all.batches.into_iter().map(|b| b.records).collect();
    assert_eq!(rows_by_id(&batches), expected_rows(0..120_000));
}

/// A multipart completion fails: while rolling (in `write`) or at `commit`. The sync is
/// aborted, nothing stays behind, and the rerun commits every row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_multipart_upload_is_aborted_and_the_rerun_is_exact() {
    for target in [6 << 20, 512 << 20] {
        failed_multipart_upload(target).await;
    }
}

async fn failed_multipart_upload(target_file_size: u64) {
    let s = Setup::new().await;
    s.land(0, 3, 20_000).await;
    let faulty = FaultyStore::new(Arc::clone(&s.raw));
    faulty.fail(Op::CompleteMultipart, "/events/", FaultKind::Before, 0, 1);
    let state = s.state();
    let mut pipeline = Pipeline::new(
        "p",
        s.source(),
        s.multipart_sink(faulty.clone() as Arc<dyn ObjectStore>, target_file_size),
        state.clone(),
    )
    .unwrap();
    let err = pipeline.run().await.unwrap_err();
    assert!(err.to_string().contains("injected fault"), "{err}");
    assert_eq!(faulty.fired(), 1);
    assert!(manifests(&s.raw, WAREHOUSE).await.is_empty());
    assert!(
        s.data_files().await.is_empty(),
        "the aborted sync leaves no data file (target {target_file_size})"
    );
    assert!(
        keys(&s.raw, &format!("{WAREHOUSE}/_s3conn"))
            .await
            .is_empty(),
        "abort removes the intent log (target {target_file_size})"
    );

    let mut pipeline = Pipeline::new(
        "p",
        s.source(),
        s.multipart_sink(Arc::clone(&s.raw), target_file_size),
        state,
    )
    .unwrap();
    let report = pipeline.run().await.unwrap();
    assert_eq!(report.rows, 60_000);
    assert_eq!(s.committed().await, expected_rows(0..60_000));
    assert_eq!(
        s.data_files().await,
        live_files(&s.raw, s.server.bucket(), WAREHOUSE, "events").await
    );
}
