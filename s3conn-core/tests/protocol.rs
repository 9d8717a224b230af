//! The sink's commit protocol and the source's version pinning, against real stores: the
//! in-process loopback S3 server (s3s-fs over HTTP, SigV4 checked), a local folder (atomic
//! conditional writes through hard links) and moto (atomic conditional writes, conditional
//! GETs honoured).
//!
//! - A full refresh retires only the files its own pipeline's earlier manifests listed,
//!   never those of another pipeline writing the same table under the same root.
//! - An object rewritten between two of its ranged reads fails the sync with
//!   `Error::ObjectChanged` and commits none of its rows; one rewritten between the listing
//!   and its first read is skipped and read whole on the next run.
//! - Two pipelines writing one table at once, with keys they both can take, lose and
//!   duplicate nothing and overwrite no file.
//! - A second run of a running pipeline stops at once on its lease.
//!
//! Everything committed is read back independently: the manifests as JSON, the files with the
//! parquet crate's own reader or line by line, their ETags and sizes with HEAD.
//!
//! - Two pipelines that write equal bytes to one key at once keep their own files: equal
//!   bytes are no proof of authorship (the file's attempt id is), so neither takes the
//!   other's file and neither's abort deletes it.
//! - A full refresh whose object changes between its listing and its first read fails
//!   rather than commit (and retire the previous generation) without it.
//! - A run of a pipeline over the S3 source and sink can be spawned on a runtime.
//!
//! (The tests of the two pipelines writing equal bytes, and of the full refresh, found
//! losses that are fixed: an adopted file deleted by the abort of either pipeline, and a
//! table left with neither version's rows.)
//!
//! The variants on moto need its Python environment (`S3CONN_PYTHON`, or the workspace's
//! `.venv`). s3s-fs ignores conditional GETs, so version pinning is tested on a local folder
//! and on moto, not on the in-process server; and its conditional PUTs are not atomic, so
//! races run on a local folder and on moto.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::{Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload,
    PutResult,
};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::ParquetMetaDataReader;
use parquet::file::properties::WriterProperties;
use s3conn_core::auth::{Connection, ConnectionConfig};
use s3conn_core::formats::DecodeOptions;
use s3conn_core::formats::ndjson::NdjsonFormat;
use s3conn_core::layout::{FileRecord, Manifest, SyncReport, SyncStatus, Template};
use s3conn_core::s3::{S3Sink, S3Source, S3StreamConfig};
use s3conn_core::state::{ObjectStoreStateStore, StateStore};
use s3conn_core::{
    Batch, Error, Pipeline, Position, ReadRequest, Source, SourceMessage, SourceState,
    SourceStream, StreamId, StreamInfo, SyncMode,
};
use s3conn_testkit::{MotoServer, S3Server};
use serde_json::Value;

use common::*;

const WAREHOUSE: &str = "warehouse";
/// Keys two pipelines (and two attempts) can both name: no sync id, no UUID.
const SHARED_TEMPLATE: &str = "${STREAM_NAME}/part-{part_number}{format_extension}";

fn shared_template() -> Template {
    SHARED_TEMPLATE.parse().unwrap()
}

// ---------------------------------------------------------------------------------------
// Reading back what was committed, independently of the sink.
// ---------------------------------------------------------------------------------------

/// Every manifest under the warehouse with its commit record, in dump order.
async fn committed(store: &Arc<dyn ObjectStore>) -> Vec<Manifest> {
    let all = manifests(store, WAREHOUSE).await;
    for m in &all {
        assert!(
            m.s3conn.is_some(),
            "manifest {} has a commit record",
            m.dump_id
        );
    }
    all
}

/// The file records of `manifest`.
fn files(manifest: &Manifest) -> &[FileRecord] {
    &manifest.s3conn.as_ref().unwrap().files
}

fn pipeline_of(manifest: &Manifest) -> &str {
    manifest
        .s3conn
        .as_ref()
        .unwrap()
        .pipeline_id
        .as_deref()
        .unwrap()
}

/// HEAD `key`: its ETag and size, or `None` when it is gone.
async fn head(store: &Arc<dyn ObjectStore>, key: &str) -> Option<(Option<String>, u64)> {
    match store.head(&Path::from(key)).await {
        Ok(meta) => Some((meta.e_tag, meta.size)),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => panic!("HEAD {key}: {e}"),
    }
}

/// Check that `file` exists exactly as its manifest recorded it (ETag, size, rows), and
/// return its rows, read with the parquet crate's own reader.
async fn parquet_file_as_recorded(
    store: &Arc<dyn ObjectStore>,
    file: &FileRecord,
) -> BTreeMap<u64, Value> {
    let (e_tag, size) = head(store, &file.key)
        .await
        .unwrap_or_else(|| panic!("{} is listed but gone", file.key));
    assert!(file.e_tag.is_some(), "{} has a recorded ETag", file.key);
    assert_eq!(
        e_tag, file.e_tag,
        "{} still holds the file committed",
        file.key
    );
    assert_eq!(size, file.size, "{}", file.key);
    let batches = read_parquet(store, &file.key).await;
    let rows = rows_by_id(&batches);
    assert_eq!(
        rows.len() as u64,
        file.rows,
        "{} holds its recorded rows",
        file.key
    );
    rows
}

/// Add `rows` to `all`, failing on any row seen before.
fn add_once(all: &mut BTreeMap<u64, Value>, rows: BTreeMap<u64, Value>, from: &str) {
    for (id, row) in rows {
        assert!(
            all.insert(id, row).is_none(),
            "row {id} (in {from}) is committed twice"
        );
    }
}

/// The part number of a key written with [`SHARED_TEMPLATE`].
fn part_number(key: &str) -> u64 {
    let name = key.rsplit('/').next().unwrap();
    let digits = name
        .strip_prefix("part-")
        .and_then(|n| n.split('.').next())
        .unwrap();
    digits.parse().unwrap()
}

// ---------------------------------------------------------------------------------------
// 1. A full refresh retires only its own pipeline's files.
// ---------------------------------------------------------------------------------------

struct Loopback {
    server: S3Server,
    raw: Arc<dyn ObjectStore>,
}

impl Loopback {
    async fn start() -> Self {
        let server = S3Server::start().await;
        let raw = server.store(server.bucket());
        Self { server, raw }
    }

    fn source(&self, landing: &str) -> S3Source {
        S3Source::builder(connection(&self.server, landing))
            .with_stream(S3StreamConfig::new("events", "events").with_format("ndjson"))
            .build()
            .unwrap()
    }

    fn sink(&self) -> S3Sink {
        S3Sink::builder(connection(&self.server, WAREHOUSE))
            .with_template(shared_template())
            .build()
            .unwrap()
    }

    fn state(&self) -> ObjectStoreStateStore {
        ObjectStoreStateStore::new(Arc::clone(&self.raw), Path::from("state"))
    }

    /// One NDJSON object of events `start..start + n` in `landing`'s events folder.
    async fn land(&self, landing: &str, start: u64, n: u64) {
        put(
            &self.raw,
            &format!("{landing}/events/part-{start:08}.jsonl"),
            ndjson(start, n),
        )
        .await;
    }

    fn pipeline(
        &self,
        id: &str,
        landing: &str,
        mode: SyncMode,
    ) -> Pipeline<S3Source, S3Sink, ObjectStoreStateStore> {
        Pipeline::new(id, self.source(landing), self.sink(), self.state())
            .unwrap()
            .with_default_mode(mode)
    }
}

/// What one pipeline's manifests list: key → (ETag, size, rows read back).
type Snapshot = BTreeMap<String, (Option<String>, u64, BTreeMap<u64, Value>)>;

async fn snapshot(
    store: &Arc<dyn ObjectStore>,
    manifests: &[Manifest],
    pipeline: &str,
) -> Snapshot {
    let mut out = Snapshot::new();
    for m in manifests.iter().filter(|m| pipeline_of(m) == pipeline) {
        for f in files(m) {
            let rows = parquet_file_as_recorded(store, f).await;
            out.insert(f.key.clone(), (f.e_tag.clone(), f.size, rows));
        }
    }
    out
}

/// Every file of `before` is still there, byte for byte the file that was committed.
async fn unchanged(store: &Arc<dyn ObjectStore>, before: &Snapshot, whose: &str) {
    for (key, (e_tag, size, rows)) in before {
        let now = head(store, key)
            .await
            .unwrap_or_else(|| panic!("{whose}'s committed file {key} was deleted"));
        assert_eq!(
            &now,
            &(e_tag.clone(), *size),
            "{whose}'s file {key} changed"
        );
        assert_eq!(
            &rows_by_id(&read_parquet(store, key).await),
            rows,
            "{whose}'s file {key} holds other rows"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_refresh_retires_only_its_own_pipelines_files() {
    let s = Loopback::start().await;
    let (a, b) = ("landing-a", "landing-b");

    // Two incremental deliveries each, interleaved, into one table under one root.
    s.land(a, 0, 500).await;
    s.land(a, 500, 500).await;
    s.land(b, 100_000, 400).await;
    let report = s
        .pipeline("a", a, SyncMode::Incremental)
        .run()
        .await
        .unwrap();
    assert_eq!((report.rows, report.dump_id), (1_000, Some(1)));
    let report = s
        .pipeline("b", b, SyncMode::Incremental)
        .run()
        .await
        .unwrap();
    assert_eq!((report.rows, report.dump_id), (400, Some(2)));
    s.land(a, 1_000, 300).await;
    s.land(b, 100_400, 300).await;
    let report = s
        .pipeline("a", a, SyncMode::Incremental)
        .run()
        .await
        .unwrap();
    assert_eq!((report.rows, report.dump_id), (300, Some(3)));
    let report = s
        .pipeline("b", b, SyncMode::Incremental)
        .run()
        .await
        .unwrap();
    assert_eq!((report.rows, report.dump_id), (300, Some(4)));

    let before = committed(&s.raw).await;
    assert_eq!(before.len(), 4);
    let a_before = snapshot(&s.raw, &before, "a").await;
    let b_before = snapshot(&s.raw, &before, "b").await;
    // The two pipelines share one key space: b moved past the part number a took.
    assert_eq!(
        files(&before[0])[0].key,
        format!("{WAREHOUSE}/events/part-0.parquet")
    );
    assert_eq!(
        files(&before[1])[0].key,
        format!("{WAREHOUSE}/events/part-1.parquet")
    );
    assert_eq!(a_before.len() + b_before.len(), 4);

    // Pipeline a replaces its generation.
    s.land(a, 1_300, 100).await;
    let report = s
        .pipeline("a", a, SyncMode::FullRefresh)
        .run()
        .await
        .unwrap();
    assert_eq!(report.status, SyncStatus::Succeeded);
    assert_eq!((report.rows, report.dump_id), (1_400, Some(5)));

    let after = committed(&s.raw).await;
    assert_eq!(after.len(), 5);
    let refresh = &after[4];
    assert_eq!(pipeline_of(refresh), "a");
    assert!(
        !refresh.tables[0].incremental,
        "a full refresh replaces the table"
    );

    // Every file b's manifests list is the very file b committed.
    unchanged(&s.raw, &b_before, "b").await;
    // a's earlier generation is gone.
    for key in a_before.keys() {
        assert_eq!(
            head(&s.raw, key).await,
            None,
            "a's retired file {key} is still there"
        );
    }
    // The new generation is intact and holds every row of a's source once.
    let mut a_rows = BTreeMap::new();
    for f in files(refresh) {
        assert!(!a_before.contains_key(&f.key), "{} is a new file", f.key);
        add_once(
            &mut a_rows,
            parquet_file_as_recorded(&s.raw, f).await,
            &f.key,
        );
    }
    assert_eq!(a_rows, expected_rows(0..1_400));
    // Nothing else under the table: b's files and a's new generation.
    let mut expected: BTreeSet<String> = b_before.keys().cloned().collect();
    expected.extend(files(refresh).iter().map(|f| f.key.clone()));
    let found: BTreeSet<String> = keys(&s.raw, &format!("{WAREHOUSE}/events"))
        .await
        .into_iter()
        .collect();
    assert_eq!(found, expected);
    assert!(
        keys(&s.raw, &format!("{WAREHOUSE}/_s3conn"))
            .await
            .is_empty()
    );

    // And the other way round: b's full refresh leaves a's new generation alone.
    let a_generation = snapshot(&s.raw, &after[4..], "a").await;
    s.land(b, 100_700, 100).await;
    let report = s
        .pipeline("b", b, SyncMode::FullRefresh)
        .run()
        .await
        .unwrap();
    assert_eq!((report.rows, report.dump_id), (800, Some(6)));
    let last = committed(&s.raw).await;
    unchanged(&s.raw, &a_generation, "a").await;
    for key in b_before.keys() {
        assert_eq!(
            head(&s.raw, key).await,
            None,
            "b's retired file {key} is still there"
        );
    }
    let mut b_rows = BTreeMap::new();
    for f in files(&last[5]) {
        add_once(
            &mut b_rows,
            parquet_file_as_recorded(&s.raw, f).await,
            &f.key,
        );
    }
    assert_eq!(b_rows, expected_rows(100_000..100_800));
}

// ---------------------------------------------------------------------------------------
// Stores for the tests that need conditional GETs or atomic conditional writes.
// ---------------------------------------------------------------------------------------

const MOTO_BUCKET: &str = "protocol";

#[derive(Debug)]
enum Backend {
    Local(tempfile::TempDir),
    Moto(MotoServer),
}

/// A local folder or a moto bucket, with a raw store on its root for fixtures and checks.
#[derive(Debug)]
struct Store {
    backend: Backend,
    raw: Arc<dyn ObjectStore>,
    /// The URI of the root (`file:///…`, `s3://bucket`).
    base: String,
}

impl Store {
    fn local() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::Local(dir);
        Self::over(backend)
    }

    async fn moto() -> Self {
        let moto = tokio::task::block_in_place(MotoServer::start);
        create_moto_bucket(moto.endpoint(), MOTO_BUCKET).await;
        Self::over(Backend::Moto(moto))
    }

    fn over(backend: Backend) -> Self {
        let root = Self::config(&backend, "").connect().unwrap();
        Self {
            raw: Arc::clone(root.store()),
            base: root.url().to_owned(),
            backend,
        }
    }

    fn config(backend: &Backend, prefix: &str) -> ConnectionConfig {
        match backend {
            Backend::Local(dir) => ConnectionConfig::local(dir.path()).with_prefix(prefix),
            Backend::Moto(moto) => ConnectionConfig::s3(MOTO_BUCKET)
                .with_endpoint(moto.endpoint())
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_static_credentials("testing", "testing", None)
                .with_prefix(prefix),
        }
    }

    /// A connection to `prefix`, made the way a host makes it.
    fn connection(&self, prefix: &str) -> Connection {
        Self::config(&self.backend, prefix).connect().unwrap()
    }

    /// A connection to `prefix` through another store (a wrapper of `raw`).
    fn connection_over(&self, store: Arc<dyn ObjectStore>, prefix: &str) -> Connection {
        Connection::new(store, Path::from(prefix), self.base.clone())
    }

    fn state(&self) -> ObjectStoreStateStore {
        ObjectStoreStateStore::new(Arc::clone(&self.raw), Path::from("state"))
    }

    fn uri(&self, key: &str) -> String {
        format!("{}/{key}", self.base)
    }
}

/// Create a bucket on moto with a plain HTTP PUT (moto does not check signatures).
async fn create_moto_bucket(endpoint: &str, bucket: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = endpoint.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

// ---------------------------------------------------------------------------------------
// 2. An object rewritten while it is read.
// ---------------------------------------------------------------------------------------

/// A Parquet file of rows `(id, version)` for `ids`, in row groups of `group` rows, written
/// with the parquet crate's own writer.
fn parquet_file(ids: Range<i64>, version: &str, group: usize) -> Bytes {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("version", DataType::Utf8, false),
    ]));
    let n = (ids.end - ids.start) as usize;
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from_iter_values(ids)),
            Arc::new(StringArray::from(vec![version; n])),
        ],
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(group))
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    Bytes::from(out)
}

/// The bytes of row group `group` of a Parquet file (all its column chunks).
fn row_group_bytes(file: &Bytes, group: usize) -> (usize, Range<u64>) {
    let meta = ParquetMetaDataReader::new().parse_and_finish(file).unwrap();
    let columns = meta.row_group(group).columns();
    let start = columns.iter().map(|c| c.byte_range().0).min().unwrap();
    let end = columns
        .iter()
        .map(|c| c.byte_range().0 + c.byte_range().1)
        .max()
        .unwrap();
    (meta.num_row_groups(), start..end)
}

/// `(id, version)` of every row of `batches`.
fn id_versions(batches: &[RecordBatch]) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for b in batches {
        let ids = b
            .column_by_name("id")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let versions = b
            .column_by_name("version")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(ids.null_count() + versions.null_count(), 0);
        out.extend(
            ids.values()
                .iter()
                .zip(versions.iter())
                .map(|(i, v)| (*i, v.unwrap().to_owned())),
        );
    }
    out
}

fn rows_of(ids: Range<i64>, version: &str) -> Vec<(i64, String)> {
    ids.map(|i| (i, version.to_owned())).collect()
}

/// When [`RewriteOnRead`] replaces its object.
#[derive(Debug, Clone)]
enum Trigger {
    /// Before the first GET of the object reaches the store (after the listing).
    BeforeFirstGet,
    /// Right after the first GET of a range overlapping these bytes was answered by the
    /// store, before its answer is handed back.
    AfterGetOf(Range<u64>),
}

/// One GET of the watched object, as the store answered it.
#[derive(Debug, Clone, PartialEq)]
struct Get {
    range: Option<Range<u64>>,
    if_match: Option<String>,
    /// `ok`, or the store's error kind.
    answer: String,
}

/// An object store that delegates everything to `inner`, except that it overwrites `target`
/// with `replacement` once, at the moment `trigger` names, and records the GETs of `target`.
#[derive(Debug)]
struct RewriteOnRead {
    inner: Arc<dyn ObjectStore>,
    target: Path,
    replacement: Bytes,
    trigger: Trigger,
    fired: AtomicBool,
    gets: Mutex<Vec<Get>>,
}

impl RewriteOnRead {
    fn new(
        inner: Arc<dyn ObjectStore>,
        target: &str,
        replacement: Bytes,
        trigger: Trigger,
    ) -> Arc<Self> {
        Arc::new(Self {
            inner,
            target: Path::from(target),
            replacement,
            trigger,
            fired: AtomicBool::new(false),
            gets: Mutex::new(Vec::new()),
        })
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    fn gets(&self) -> Vec<Get> {
        self.gets.lock().unwrap().clone()
    }

    async fn rewrite(&self) -> object_store::Result<()> {
        self.inner
            .put(&self.target, self.replacement.clone().into())
            .await
            .map(|_| ())
    }

    async fn watched_get(&self, options: GetOptions) -> object_store::Result<GetResult> {
        let range = match &options.range {
            Some(GetRange::Bounded(r)) => Some(r.clone()),
            Some(other) => panic!("the source asked for {other:?}; it knows the object's size"),
            None => None,
        };
        let if_match = options.if_match.clone();
        let log = |answer: &object_store::Result<GetResult>| {
            let answer = match answer {
                Ok(_) => "ok".to_owned(),
                Err(object_store::Error::Precondition { .. }) => "precondition".to_owned(),
                Err(e) => format!("error: {e}"),
            };
            self.gets.lock().unwrap().push(Get {
                range: range.clone(),
                if_match: if_match.clone(),
                answer,
            });
        };
        let armed = !self.fired();
        match &self.trigger {
            Trigger::BeforeFirstGet if armed => {
                self.fired.store(true, Ordering::SeqCst);
                self.rewrite().await?;
                let answer = self.inner.get_opts(&self.target, options).await;
                log(&answer);
                answer
            }
            Trigger::AfterGetOf(data)
                if armed
                    && range
                        .as_ref()
                        .is_some_and(|r| r.start < data.end && data.start < r.end) =>
            {
                let answer = self.inner.get_opts(&self.target, options).await;
                log(&answer);
                let answer = answer?;
                let (meta, range, attributes) = (
                    answer.meta.clone(),
                    answer.range.clone(),
                    answer.attributes.clone(),
                );
                // Read the old version's bytes whole, then replace the object, then answer.
                let bytes = answer.bytes().await?;
                self.fired.store(true, Ordering::SeqCst);
                self.rewrite().await?;
                Ok(GetResult {
                    payload: GetResultPayload::Stream(
                        futures::stream::once(async move { Ok(bytes) }).boxed(),
                    ),
                    meta,
                    range,
                    attributes,
                    extensions: Default::default(),
                })
            }
            _ => {
                let answer = self.inner.get_opts(&self.target, options).await;
                log(&answer);
                answer
            }
        }
    }
}

impl fmt::Display for RewriteOnRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RewriteOnRead({}, {})", self.inner, self.target)
    }
}

#[async_trait]
impl ObjectStore for RewriteOnRead {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if *location == self.target {
            return self.watched_get(options).await;
        }
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        assert_ne!(
            *location, self.target,
            "the source reads the watched object with get_opts (pinned)"
        );
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

const LANDING: &str = "landing";
const BIG: &str = "landing/events/big.parquet";
const OTHER: &str = "landing/events/other.parquet";

fn parquet_source(connection: Connection) -> S3Source {
    S3Source::builder(connection)
        .with_stream(S3StreamConfig::new("events", "events").with_format("parquet"))
        .build()
        .unwrap()
}

fn warehouse_sink(store: &Store) -> S3Sink {
    S3Sink::builder(store.connection(WAREHOUSE))
        .with_template(shared_template())
        .build()
        .unwrap()
}

/// Every committed row `(id, version)`, each file checked against its record; sorted.
async fn committed_id_versions(
    store: &Arc<dyn ObjectStore>,
    manifests: &[Manifest],
) -> Vec<(i64, String)> {
    let mut all = Vec::new();
    for m in manifests {
        for f in files(m) {
            let (e_tag, size) = head(store, &f.key).await.unwrap();
            assert_eq!((e_tag, size), (f.e_tag.clone(), f.size), "{}", f.key);
            let rows = id_versions(&read_parquet(store, &f.key).await);
            assert_eq!(rows.len() as u64, f.rows, "{}", f.key);
            all.extend(rows);
        }
    }
    all.sort();
    all
}

/// The sync reports under the warehouse, oldest first.
async fn reports(store: &Arc<dyn ObjectStore>) -> Vec<SyncReport> {
    let mut out = Vec::new();
    for key in keys(store, &format!("{WAREHOUSE}/sync_reports")).await {
        out.push(serde_json::from_slice(&get(store, &key).await).unwrap());
    }
    out.sort_by_key(|r: &SyncReport| r.start_time);
    out
}

async fn rewritten_between_row_groups(store: Store) {
    let state = store.state();
    // A first delivery, so that there is committed state that must not move.
    put(
        &store.raw,
        "landing/events/seed.parquet",
        parquet_file(0..5, "seed", 5),
    )
    .await;
    let mut pipeline = Pipeline::new(
        "p",
        parquet_source(store.connection(LANDING)),
        warehouse_sink(&store),
        state.clone(),
    )
    .unwrap();
    assert_eq!(pipeline.run().await.unwrap().rows, 5);
    let state_before = state.load("p").await.unwrap().unwrap();

    // Another object, then one of three row groups.
    put(&store.raw, OTHER, parquet_file(200..210, "other", 10)).await;
    let v1 = parquet_file(100..130, "v1", 10);
    let (groups, first_group) = row_group_bytes(&v1, 0);
    assert_eq!(groups, 3);
    put(&store.raw, BIG, v1).await;
    let listed_e_tag = store
        .raw
        .head(&Path::from(BIG))
        .await
        .unwrap()
        .e_tag
        .unwrap();

    // Right after the first row group's bytes are read, the object is replaced.
    let v2 = parquet_file(300..340, "v2", 10);
    let watcher = RewriteOnRead::new(
        Arc::clone(&store.raw),
        BIG,
        v2,
        Trigger::AfterGetOf(first_group.clone()),
    );
    let mut pipeline = Pipeline::new(
        "p",
        parquet_source(store.connection_over(watcher.clone(), LANDING)),
        warehouse_sink(&store),
        state.clone(),
    )
    .unwrap();
    let err = pipeline.run().await.unwrap_err();
    match &err {
        Error::ObjectChanged { uri, e_tag } => {
            assert_eq!(uri, &store.uri(BIG), "{err}");
            assert_eq!(e_tag, &listed_e_tag, "{err}");
        }
        other => panic!("expected ObjectChanged, got {other:?}"),
    }
    assert!(err.to_string().contains(&store.uri(BIG)), "{err}");
    assert!(watcher.fired());
    // The footer and the first row group were read from the listed version; the next
    // ranged GET, pinned to the listed ETag, met the new version and was refused.
    let gets = watcher.gets();
    assert!(gets.len() >= 3, "{gets:#?}");
    assert!(
        gets.iter()
            .all(|g| g.if_match.as_deref() == Some(listed_e_tag.as_str())),
        "{gets:#?}"
    );
    let (last, before_last) = (&gets[gets.len() - 1], &gets[..gets.len() - 1]);
    assert_eq!(last.answer, "precondition", "{gets:#?}");
    assert!(
        last.range.as_ref().unwrap().start >= first_group.end,
        "the refused GET is of a later row group: {gets:#?}"
    );
    assert!(before_last.iter().all(|g| g.answer == "ok"), "{gets:#?}");
    assert!(
        before_last.iter().any(|g| g
            .range
            .as_ref()
            .is_some_and(|r| r.start <= first_group.start && first_group.end <= r.end)),
        "the first row group was read: {gets:#?}"
    );

    // Nothing of that sync is committed, and the state did not move.
    let after = committed(&store.raw).await;
    assert_eq!(after.len(), 1, "no manifest was committed");
    assert_eq!(
        state.load("p").await.unwrap().unwrap(),
        state_before,
        "the state did not move"
    );
    let listed: BTreeSet<String> = files(&after[0]).iter().map(|f| f.key.clone()).collect();
    let found: BTreeSet<String> = keys(&store.raw, &format!("{WAREHOUSE}/events"))
        .await
        .into_iter()
        .collect();
    assert_eq!(found, listed, "the failed attempt's files are gone");
    assert!(
        keys(&store.raw, &format!("{WAREHOUSE}/_s3conn"))
            .await
            .is_empty()
    );
    let failed = reports(&store.raw).await;
    assert_eq!(failed.len(), 2);
    assert_eq!(failed[1].status, SyncStatus::Failed);
    assert!(
        failed[1]
            .error
            .as_deref()
            .unwrap()
            .contains("changed while it was read")
    );

    // Healed: the next run commits the new version whole and the other object, once.
    let mut pipeline = Pipeline::new(
        "p",
        parquet_source(store.connection(LANDING)),
        warehouse_sink(&store),
        state.clone(),
    )
    .unwrap();
    let report = pipeline.run().await.unwrap();
    assert_eq!((report.rows, report.dump_id), (50, Some(2)));
    let after = committed(&store.raw).await;
    assert_eq!(after.len(), 2);
    let mut expected = rows_of(300..340, "v2");
    expected.extend(rows_of(200..210, "other"));
    expected.sort();
    assert_eq!(
        committed_id_versions(&store.raw, &after[1..]).await,
        expected
    );
    let mut everything = expected;
    everything.extend(rows_of(0..5, "seed"));
    everything.sort();
    assert_eq!(
        committed_id_versions(&store.raw, &after).await,
        everything,
        "no row of the first version, every other row once"
    );
    assert_eq!(
        pipeline.run().await.unwrap().rows,
        0,
        "nothing is read twice"
    );
}

async fn rewritten_after_listing(store: Store) {
    let state = store.state();
    put(&store.raw, OTHER, parquet_file(200..210, "other", 10)).await;
    put(&store.raw, BIG, parquet_file(100..130, "v1", 10)).await;
    let listed_e_tag = store
        .raw
        .head(&Path::from(BIG))
        .await
        .unwrap()
        .e_tag
        .unwrap();
    let watcher = RewriteOnRead::new(
        Arc::clone(&store.raw),
        BIG,
        parquet_file(300..340, "v2", 10),
        Trigger::BeforeFirstGet,
    );
    let mut pipeline = Pipeline::new(
        "p",
        parquet_source(store.connection_over(watcher.clone(), LANDING)),
        warehouse_sink(&store),
        state.clone(),
    )
    .unwrap();
    let report = pipeline.run().await.unwrap();
    assert_eq!(report.status, SyncStatus::Succeeded);
    assert_eq!(
        (report.rows, report.dump_id),
        (10, Some(1)),
        "only the other object"
    );
    assert!(watcher.fired());
    assert_eq!(
        watcher.gets(),
        [Get {
            range: watcher.gets()[0].range.clone(),
            if_match: Some(listed_e_tag),
            answer: "precondition".into(),
        }],
        "its first read was pinned to the listed version and refused"
    );
    let after = committed(&store.raw).await;
    assert_eq!(
        committed_id_versions(&store.raw, &after).await,
        rows_of(200..210, "other")
    );

    // The next run reads the new version whole.
    let mut pipeline = Pipeline::new(
        "p",
        parquet_source(store.connection(LANDING)),
        warehouse_sink(&store),
        state,
    )
    .unwrap();
    let report = pipeline.run().await.unwrap();
    assert_eq!((report.rows, report.dump_id), (40, Some(2)));
    let after = committed(&store.raw).await;
    assert_eq!(
        committed_id_versions(&store.raw, &after[1..]).await,
        rows_of(300..340, "v2")
    );
    assert_eq!(pipeline.run().await.unwrap().rows, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_rewritten_between_row_groups_commits_none_of_its_rows() {
    rewritten_between_row_groups(Store::local()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_rewritten_between_row_groups_commits_none_of_its_rows_on_moto() {
    rewritten_between_row_groups(Store::moto().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_rewritten_after_listing_is_skipped_and_read_on_the_next_run() {
    rewritten_after_listing(Store::local()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_rewritten_after_listing_is_skipped_and_read_on_the_next_run_on_moto() {
    rewritten_after_listing(Store::moto().await).await;
}

// ---------------------------------------------------------------------------------------
// 3. Two pipelines writing one table at once.
// ---------------------------------------------------------------------------------------

const ROUNDS: u64 = 4;
const OBJECTS_PER_ROUND: u64 = 2;
const ROWS_PER_OBJECT: u64 = 60;

/// The events pipeline `p` (1 or 2) lands in `round`.
fn round_ids(p: u64, round: u64) -> Range<u64> {
    let first = p * 1_000_000 + round * 1_000;
    first..first + OBJECTS_PER_ROUND * ROWS_PER_OBJECT
}

/// NDJSON files of a few rows each: several files per sync, all on keys both pipelines use.
fn racing_sink(store: &Store) -> S3Sink {
    S3Sink::builder(store.connection(WAREHOUSE))
        .with_format(Arc::new(NdjsonFormat))
        .with_template(shared_template())
        .with_target_file_size(4 << 10)
        .build()
        .unwrap()
}

fn racing_source(store: &Store, p: u64) -> S3Source {
    S3Source::builder(store.connection(&format!("landing-{p}")))
        .with_stream(
            S3StreamConfig::new("events", "events")
                .with_format("ndjson")
                .with_decode_options(DecodeOptions::default().with_batch_size(20)),
        )
        .build()
        .unwrap()
}

/// The rows of an NDJSON file, read line by line.
fn ndjson_rows(bytes: &[u8]) -> BTreeMap<u64, Value> {
    let text = std::str::from_utf8(bytes).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let v = strip_nulls(serde_json::from_str(line).unwrap());
        let id = v["id"].as_u64().unwrap();
        assert!(out.insert(id, v).is_none(), "row {id} twice in one file");
    }
    out
}

async fn two_pipelines_at_once(store: Store) {
    let state = store.state();
    let mut pipelines = [1, 2].map(|p| {
        Pipeline::new(
            format!("p{p}"),
            racing_source(&store, p),
            racing_sink(&store),
            state.clone(),
        )
        .unwrap()
    });
    for round in 0..ROUNDS {
        for p in 1..=2 {
            for o in 0..OBJECTS_PER_ROUND {
                let start = round_ids(p, round).start + o * ROWS_PER_OBJECT;
                put(
                    &store.raw,
                    &format!("landing-{p}/events/{start:08}.jsonl"),
                    ndjson(start, ROWS_PER_OBJECT),
                )
                .await;
            }
        }
        // Both runs at once, in one task: the future of `Pipeline::run` over an `S3Sink` is
        // not `Send` (see the module documentation), so it cannot be spawned. Their store
        // calls still overlap: HTTP requests to moto, file operations on tokio's blocking
        // pool.
        let [one, two] = &mut pipelines;
        let (one, two) = tokio::join!(one.run(), two.run());
        for (p, report) in [(1, one), (2, two)] {
            let report = report.unwrap_or_else(|e| panic!("p{p} round {round}: {e}"));
            assert_eq!(report.status, SyncStatus::Succeeded);
            assert_eq!(report.rows, OBJECTS_PER_ROUND * ROWS_PER_OBJECT);
        }
    }

    let all = committed(&store.raw).await;
    assert_eq!(all.len() as u64, 2 * ROUNDS);
    let dump_ids: Vec<u64> = all.iter().map(|m| m.dump_id).collect();
    assert_eq!(
        dump_ids,
        (1..=2 * ROUNDS).collect::<Vec<_>>(),
        "each dump id claimed once"
    );

    let mut everything = BTreeMap::new();
    let mut listed = BTreeSet::new();
    for m in &all {
        let record = m.s3conn.as_ref().unwrap();
        let p: u64 = pipeline_of(m).strip_prefix('p').unwrap().parse().unwrap();
        let round = record.checkpoint.unwrap() - 1;
        assert!(round < ROUNDS);
        let files = files(m);
        assert!(files.len() > 1, "several files per delivery");
        let uris: Vec<String> = files.iter().map(|f| store.uri(&f.key)).collect();
        assert_eq!(m.tables.len(), 1);
        assert_eq!(
            m.tables[0].files, uris,
            "the table lists the recorded files"
        );
        let mut delivered = BTreeMap::new();
        for f in files {
            assert!(listed.insert(f.key.clone()), "{} is listed twice", f.key);
            if round > 0 {
                assert!(part_number(&f.key) > 0, "{} moved past taken keys", f.key);
            }
            let (e_tag, size) = head(&store.raw, &f.key)
                .await
                .unwrap_or_else(|| panic!("{} is listed but gone", f.key));
            assert!(f.e_tag.is_some());
            assert_eq!(
                (e_tag, size),
                (f.e_tag.clone(), f.size),
                "{} was overwritten",
                f.key
            );
            let bytes = get(&store.raw, &f.key).await;
            assert_eq!(bytes.len() as u64, f.size);
            let rows = ndjson_rows(&bytes);
            assert_eq!(rows.len() as u64, f.rows, "{}", f.key);
            add_once(&mut delivered, rows, &f.key);
        }
        // The files of a delivery hold exactly what its pipeline read in its round.
        assert_eq!(
            delivered,
            expected_rows(round_ids(p, round)),
            "manifest {} (p{p}, round {round})",
            m.dump_id
        );
        add_once(
            &mut everything,
            delivered,
            &format!("manifest {}", m.dump_id),
        );
    }
    let expected = expected_rows((0..ROUNDS).flat_map(|r| round_ids(1, r).chain(round_ids(2, r))));
    assert_eq!(everything, expected, "every row of both sources once");
    let found: BTreeSet<String> = keys(&store.raw, &format!("{WAREHOUSE}/events"))
        .await
        .into_iter()
        .collect();
    assert_eq!(found, listed, "no file outside the manifests");
    assert!(
        keys(&store.raw, &format!("{WAREHOUSE}/_s3conn"))
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pipelines_writing_one_table_at_once_lose_nothing() {
    two_pipelines_at_once(Store::local()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pipelines_writing_one_table_at_once_lose_nothing_on_moto() {
    two_pipelines_at_once(Store::moto().await).await;
}

// ---------------------------------------------------------------------------------------
// 4. One run per pipeline at a time.
// ---------------------------------------------------------------------------------------

/// A source whose `read` says that it was called, then waits until the gate lets it go.
#[derive(Debug, Clone)]
struct Gated<S> {
    inner: S,
    entered: Arc<tokio::sync::Notify>,
    gate: Arc<tokio::sync::Semaphore>,
}

#[async_trait]
impl<S: Source> Source for Gated<S> {
    async fn streams(&self) -> s3conn_core::Result<Vec<StreamInfo>> {
        self.inner.streams().await
    }

    async fn read(&self, request: ReadRequest) -> s3conn_core::Result<SourceStream> {
        self.entered.notify_one();
        self.gate
            .acquire()
            .await
            .map_err(|e| Error::Protocol(e.to_string()))?
            .forget();
        self.inner.read(request).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_of_one_pipeline_fails_at_once_with_the_lease_error() {
    let s = Loopback::start().await;
    let landing = "landing";
    s.land(landing, 0, 600).await;
    s.land(landing, 600, 400).await;
    let state = s.state();

    let entered = Arc::new(tokio::sync::Notify::new());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let slow = Gated {
        inner: s.source(landing),
        entered: Arc::clone(&entered),
        gate: Arc::clone(&gate),
    };
    let mut first = Pipeline::new("p", slow, s.sink(), state.clone()).unwrap();
    let mut second = Pipeline::new("p", s.source(landing), s.sink(), state.clone()).unwrap();
    let first_done = AtomicBool::new(false);

    // Both in one task (the future of `Pipeline::run` over an `S3Sink` is not `Send`): the
    // first runs until its source waits at the gate, holding the lease and renewing it; the
    // second starts then.
    let first_run = async {
        let report = first.run().await;
        first_done.store(true, Ordering::SeqCst);
        report
    };
    let second_run = async {
        tokio::time::timeout(Duration::from_secs(30), entered.notified())
            .await
            .expect("the first run reaches its source");
        // The first run holds the lease.
        let lease_before = state.load("p.lease").await.unwrap().unwrap();
        let lease: Value = serde_json::from_slice(&lease_before.value).unwrap();
        let holder = lease["holder"]["sync_id"].as_str().unwrap().to_owned();
        assert_eq!(
            lease["holder"]["pid"].as_u64(),
            Some(u64::from(std::process::id()))
        );

        let started = Instant::now();
        let err = second.run().await.unwrap_err();
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "the second run waited {took:?}"
        );
        let text = err.to_string();
        match &err {
            Error::Leased {
                pipeline,
                holder: who,
                expires_at,
            } => {
                assert_eq!(pipeline, "p");
                assert!(who.contains(&format!("sync {holder}")), "{text}");
                assert!(
                    who.contains(&format!("pid {}", std::process::id())),
                    "{text}"
                );
                assert!(
                    chrono::DateTime::parse_from_rfc3339(expires_at).is_ok(),
                    "{text}"
                );
            }
            other => panic!("expected Leased, got {other:?}"),
        }
        assert!(
            text.contains(&holder) && text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(err.is_retryable());
        // The second run changed nothing, and the first is still going.
        assert!(
            !first_done.load(Ordering::SeqCst),
            "the first run is still going"
        );
        assert_eq!(state.load("p.lease").await.unwrap().unwrap(), lease_before);
        assert!(state.load("p").await.unwrap().is_none());
        assert!(committed(&s.raw).await.is_empty());
        assert!(
            keys(&s.raw, &format!("{WAREHOUSE}/sync_reports"))
                .await
                .is_empty()
        );
        // Let the first run go on.
        gate.add_permits(1);
        holder
    };
    let (report, holder) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(first_run, second_run)
    })
    .await
    .expect("the first run finishes");

    // The first run finished, as the holder the error named.
    let report = report.unwrap();
    assert_eq!(report.status, SyncStatus::Succeeded);
    assert_eq!(report.sync_id, holder);
    assert_eq!((report.rows, report.dump_id), (1_000, Some(1)));

    // A third run takes the released lease.
    s.land(landing, 1_000, 200).await;
    let report = second.run().await.unwrap();
    assert_eq!(report.status, SyncStatus::Succeeded);
    assert_ne!(report.sync_id, holder);
    assert_eq!((report.rows, report.dump_id), (200, Some(2)));
    assert_eq!(
        committed_rows(&s.raw, s.server.bucket(), WAREHOUSE, "events").await,
        expected_rows(0..1_200)
    );
}

// ---------------------------------------------------------------------------------------
// 5. Two pipelines writing equal bytes to one key, one of which fails.
// ---------------------------------------------------------------------------------------

/// A source that yields one batch, then waits at a gate (saying so), then ends with a
/// checkpoint, or fails.
#[derive(Debug, Clone)]
struct Scripted {
    batch: RecordBatch,
    paused: Arc<tokio::sync::Notify>,
    go: Arc<tokio::sync::Semaphore>,
    fail: bool,
}

impl Scripted {
    fn new(batch: RecordBatch, fail: bool) -> Self {
        Self {
            batch,
            paused: Arc::new(tokio::sync::Notify::new()),
            go: Arc::new(tokio::sync::Semaphore::new(0)),
            fail,
        }
    }
}

#[async_trait]
impl Source for Scripted {
    async fn streams(&self) -> s3conn_core::Result<Vec<StreamInfo>> {
        Ok(vec![StreamInfo::new(StreamId::new("events"))])
    }

    async fn read(&self, _request: ReadRequest) -> s3conn_core::Result<SourceStream> {
        let batch = Batch::new(
            StreamId::new("events"),
            self.batch.clone(),
            Position::new("memory://scripted", 0),
        );
        let first = futures::stream::iter([Ok(SourceMessage::Batch(batch))]);
        let (paused, go, fail) = (Arc::clone(&self.paused), Arc::clone(&self.go), self.fail);
        // Polled once the pipeline has written the batch: its file is closed by then.
        let rest = futures::stream::once(async move {
            paused.notify_one();
            go.acquire()
                .await
                .map_err(|e| Error::Protocol(e.to_string()))?
                .forget();
            if fail {
                Err(Error::Protocol("the source failed (injected)".into()))
            } else {
                Ok(SourceMessage::Checkpoint(SourceState(
                    serde_json::json!({"read": true}),
                )))
            }
        });
        Ok(first.chain(rest).boxed())
    }
}

/// The same few rows, for two pipelines: their files are byte for byte the same.
fn same_rows() -> RecordBatch {
    RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from(vec![1, 2, 3])) as arrow_array::ArrayRef,
        ),
        (
            "name",
            Arc::new(StringArray::from(vec!["a", "b", "c"])) as arrow_array::ArrayRef,
        ),
    ])
    .unwrap()
}

/// An object store that delegates everything to `inner`, except that a PUT of a key ending
/// in `suffix` says that it arrived, then waits for a permit before it is sent.
#[derive(Debug)]
struct HoldPut {
    inner: Arc<dyn ObjectStore>,
    suffix: String,
    arrived: tokio::sync::Notify,
    release: tokio::sync::Semaphore,
}

impl HoldPut {
    fn new(inner: Arc<dyn ObjectStore>, suffix: &str) -> Arc<Self> {
        Arc::new(Self {
            inner,
            suffix: suffix.to_owned(),
            arrived: tokio::sync::Notify::new(),
            release: tokio::sync::Semaphore::new(0),
        })
    }
}

impl fmt::Display for HoldPut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HoldPut({}, {})", self.inner, self.suffix)
    }
}

#[async_trait]
impl ObjectStore for HoldPut {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if location.as_ref().ends_with(&self.suffix) {
            self.arrived.notify_one();
            self.release.acquire().await.unwrap().forget();
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

const PART_0: &str = "/events/part-0.jsonl";

/// NDJSON files closed after every batch, on keys both pipelines can take, through `store`.
fn one_file_per_batch_sink(s: &Loopback, store: Arc<dyn ObjectStore>) -> S3Sink {
    S3Sink::builder(connection_over(store, &s.server, WAREHOUSE))
        .with_format(Arc::new(NdjsonFormat))
        .with_template(shared_template())
        .with_target_file_size(1)
        .build()
        .unwrap()
}

/// Two pipelines write the same rows at once: both find `part-0` free, the writer creates
/// it, the other's conditional PUT of the same bytes then finds it taken. Equal bytes are
/// not a proof of authorship: the file carries the writer's attempt id, so the other moves
/// on to `part-1` (before this was fixed, it took `part-0` as its own). Both wait; the one
/// that fails (`writer_fails`: the writer) goes on first and aborts, then the other
/// commits. Returns the committed manifest.
async fn adoption(writer_fails: bool) -> (Loopback, Manifest) {
    let s = Loopback::start().await;
    let state = s.state();
    let writer = Scripted::new(same_rows(), writer_fails);
    let adopter = Scripted::new(same_rows(), !writer_fails);
    let (writer_paused, writer_go) = (Arc::clone(&writer.paused), Arc::clone(&writer.go));
    let (adopter_paused, adopter_go) = (Arc::clone(&adopter.paused), Arc::clone(&adopter.go));
    let writer_store = HoldPut::new(Arc::clone(&s.raw), PART_0);
    let adopter_store = HoldPut::new(Arc::clone(&s.raw), PART_0);
    let mut p1 = Pipeline::new(
        "writer",
        writer,
        one_file_per_batch_sink(&s, writer_store.clone()),
        state.clone(),
    )
    .unwrap();
    let mut p2 = Pipeline::new(
        "adopter",
        adopter,
        one_file_per_batch_sink(&s, adopter_store.clone()),
        state.clone(),
    )
    .unwrap();
    let (writer_done, adopter_done) = (tokio::sync::Notify::new(), tokio::sync::Notify::new());

    let writer_run = async {
        let r = p1.run().await;
        writer_done.notify_one();
        r
    };
    let adopter_run = async {
        let r = p2.run().await;
        adopter_done.notify_one();
        r
    };
    let driver = async {
        // Both chose part-0 (it was free when each looked).
        writer_store.arrived.notified().await;
        adopter_store.arrived.notified().await;
        writer_store.release.add_permits(1);
        writer_paused.notified().await;
        adopter_store.release.add_permits(1);
        adopter_paused.notified().await;
        // Both files are closed; the one that fails goes first, then the other commits.
        if writer_fails {
            writer_go.add_permits(1);
            writer_done.notified().await;
            adopter_go.add_permits(1);
        } else {
            adopter_go.add_permits(1);
            adopter_done.notified().await;
            writer_go.add_permits(1);
        }
    };
    let (w, a, ()) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(writer_run, adopter_run, driver)
    })
    .await
    .expect("both runs finish");
    let (failed, succeeded) = if writer_fails { (w, a) } else { (a, w) };
    let err = failed.unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    let report = succeeded.unwrap();
    assert_eq!((report.rows, report.dump_id), (3, Some(1)));
    let all = committed(&s.raw).await;
    assert_eq!(all.len(), 1);
    let manifest = all.into_iter().next().unwrap();
    let own = if writer_fails { "part-1" } else { "part-0" };
    assert_eq!(
        files(&manifest)
            .iter()
            .map(|f| f.key.as_str())
            .collect::<Vec<_>>(),
        [format!("{WAREHOUSE}/events/{own}.jsonl")],
        "the committing pipeline commits the file it wrote itself"
    );
    // The failed attempt's own file is gone; nothing else is left.
    let data: Vec<String> = s
        .raw
        .list(Some(&Path::from(format!("{WAREHOUSE}/events"))))
        .map(|m| m.unwrap().location.to_string())
        .collect()
        .await;
    assert_eq!(data, [format!("{WAREHOUSE}/events/{own}.jsonl")]);
    (s, manifest)
}

/// Every file `manifest` lists is there, as recorded, with its rows.
async fn intact(s: &Loopback, manifest: &Manifest) {
    for f in files(manifest) {
        let found = head(&s.raw, &f.key).await;
        assert_eq!(
            found,
            Some((f.e_tag.clone(), f.size)),
            "{} is listed by manifest {} (pipeline {}) but is gone",
            f.key,
            manifest.dump_id,
            pipeline_of(manifest)
        );
        let rows = ndjson_rows(&get(&s.raw, &f.key).await);
        assert_eq!(rows.len() as u64, f.rows);
    }
}

/// The attempt that created `part-0` fails: its abort deletes its own file, which the other
/// pipeline did not take (it wrote `part-1`), and the other's commit is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_bytes_of_two_pipelines_at_one_key_the_writer_fails() {
    let (s, manifest) = adoption(true).await;
    intact(&s, &manifest).await;
}

/// The attempt that met `part-0` taken fails: its abort leaves `part-0` (its journal's
/// intent to write the same bytes is no proof that it wrote them), which the pipeline that
/// wrote it then commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_bytes_of_two_pipelines_at_one_key_the_other_fails() {
    let (s, manifest) = adoption(false).await;
    intact(&s, &manifest).await;
}

// ---------------------------------------------------------------------------------------
// 6. A full refresh that skips an object changed after its listing.
// ---------------------------------------------------------------------------------------

/// A full refresh whose object changes between its listing and its first read fails
/// (`ObjectChanged`) rather than commit a generation without it, which would retire the
/// previous generation that held it (before this was fixed, the table had neither
/// version's rows until the next run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_refresh_that_skips_a_changed_object_keeps_its_rows() {
    let store = Store::local();
    let state = store.state();
    put(&store.raw, OTHER, parquet_file(200..210, "other", 10)).await;
    put(&store.raw, BIG, parquet_file(100..130, "v1", 10)).await;
    let pipeline = |connection| {
        Pipeline::new(
            "p",
            parquet_source(connection),
            warehouse_sink(&store),
            state.clone(),
        )
        .unwrap()
        .with_default_mode(SyncMode::FullRefresh)
    };
    assert_eq!(
        pipeline(store.connection(LANDING))
            .run()
            .await
            .unwrap()
            .rows,
        40
    );

    let watcher = RewriteOnRead::new(
        Arc::clone(&store.raw),
        BIG,
        parquet_file(300..340, "v2", 10),
        Trigger::BeforeFirstGet,
    );
    let result = pipeline(store.connection_over(watcher.clone(), LANDING))
        .run()
        .await;
    assert!(watcher.fired());
    // Either the refresh did not commit (and retired nothing), or the table it committed
    // holds one version of the changed object.
    let all = committed(&store.raw).await;
    let live = all.last().unwrap();
    let rows = committed_id_versions(&store.raw, std::slice::from_ref(live)).await;
    let has_big = rows.iter().any(|(_, v)| v == "v1" || v == "v2");
    assert!(
        has_big,
        "after the full refresh ({:?}), manifest {} is the whole table and holds only {rows:?}",
        result.map(|r| r.rows),
        live.dump_id
    );
}

/// A host can run a pipeline of the S3 source and sink in a task of its own.
#[test]
fn a_pipeline_run_can_be_spawned() {
    fn spawnable<T: Send + 'static>(_: &T) {}
    let dir = tempfile::tempdir().unwrap();
    let source = S3Source::builder(
        ConnectionConfig::local(dir.path().join("in"))
            .connect()
            .unwrap(),
    )
    .with_stream(S3StreamConfig::new("events", "events"))
    .build()
    .unwrap();
    let sink = S3Sink::builder(
        ConnectionConfig::local(dir.path().join("out"))
            .connect()
            .unwrap(),
    )
    .build()
    .unwrap();
    let state = s3conn_core::state::LocalFileStateStore::new(dir.path().join("state")).unwrap();
    let mut pipeline = Pipeline::new("p", source, sink, state).unwrap();
    let run = async move { pipeline.run().await };
    spawnable(&run);
}
