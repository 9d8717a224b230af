//! The S3 sink's protocol overhead: every request it sends besides the data files it
//! writes, counted per committed file.
//!
//! [`measure`] runs one sync of a [`Pipeline`] from a [`MemorySource`] into an [`S3Sink`] on
//! the in-process loopback S3 server ([`S3Server`]), with a target file size so small that
//! every batch becomes a file of its own, so that one sync commits exactly `files` files.
//! The sink's object store is wrapped in a [`CountingStore`], which counts the calls of
//! every operation and the payload bytes they carry, by what the key is for ([`Kind`]):
//! the data files, the journal (`_s3conn/`), the manifests (`manifests/`) and the sync
//! reports (`sync_reports/`). Everything but the requests that create the data files is
//! overhead (a listing, HEAD or delete of data keys too).
//!
//! Counting requests is deterministic (no clocks, no retries on loopback), so a test can
//! assert that the overhead per file stays flat as the file count grows.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};
use s3conn_core::auth::{Connection, ConnectionConfig};
use s3conn_core::formats::ndjson::NdjsonFormat;
use s3conn_core::layout::{SyncStatus, Template};
use s3conn_core::memory::MemorySource;
use s3conn_core::s3::S3Sink;
use s3conn_core::state::MemoryStateStore;
use s3conn_core::{Pipeline, StreamId};
use s3conn_testkit::S3Server;

/// Keys S3 returns per `ListObjectsV2` page, and deletes per `DeleteObjects` request: a
/// listing costs one request per page.
pub const LIST_PAGE: u64 = 1000;

/// Rows in each committed file.
pub const ROWS_PER_FILE: usize = 10;

/// The sink's root inside the bucket.
const ROOT: &str = "out";

/// The pipeline id (the journal lives under `_s3conn/attempts/<pipeline>/`).
const PIPELINE: &str = "protocol-cost";

/// What an object key is for, from its first segment under the sink's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A data file (one the manifest lists; [`measure`] checks it), or a listing of the
    /// data folders.
    Data,
    /// A journal record, under `_s3conn/`.
    Journal,
    /// A manifest, under `manifests/`.
    Manifest,
    /// A sync report, under `sync_reports/`.
    Report,
    /// Anything else: a key outside the root, or a listing of the root itself.
    Other,
}

impl Kind {
    /// Every kind, in table order.
    pub const ALL: [Kind; 5] = [
        Kind::Data,
        Kind::Journal,
        Kind::Manifest,
        Kind::Report,
        Kind::Other,
    ];

    /// The kind of `path` for a sink rooted at `root`.
    pub fn of(path: &Path, root: &Path) -> Self {
        let Some(mut parts) = path.prefix_match(root) else {
            return Kind::Other;
        };
        match parts.next().as_ref().map(|p| p.as_ref()) {
            Some("_s3conn") => Kind::Journal,
            Some("manifests") => Kind::Manifest,
            Some("sync_reports") => Kind::Report,
            Some(_) => Kind::Data,
            None => Kind::Other,
        }
    }

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Data => "data",
            Kind::Journal => "journal",
            Kind::Manifest => "manifest",
            Kind::Report => "report",
            Kind::Other => "other",
        }
    }
}

/// An object store operation, as S3 requests go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// `PutObject` (bytes: the body).
    Put,
    /// `GetObject` (bytes: the body returned).
    Get,
    /// `HeadObject`.
    Head,
    /// `ListObjectsV2`, one per page of [`LIST_PAGE`] keys.
    List,
    /// `DeleteObjects` (S3's bulk delete, which object_store uses for a single key too): one
    /// request per 1000 keys of one `delete_stream` call, one per `delete`.
    Delete,
    /// `CreateMultipartUpload`.
    MultipartCreate,
    /// `UploadPart` (bytes: the part).
    MultipartPart,
    /// `CompleteMultipartUpload`.
    MultipartComplete,
    /// `AbortMultipartUpload`.
    MultipartAbort,
    /// `CopyObject`.
    Copy,
    /// A rename (a copy and a delete on S3).
    Rename,
}

impl Op {
    /// Whether the operation writes an object's bytes: what a data file costs by itself.
    pub fn creates(self) -> bool {
        matches!(
            self,
            Op::Put | Op::MultipartCreate | Op::MultipartPart | Op::MultipartComplete
        )
    }

    /// Every operation, in table order.
    pub const ALL: [Op; 11] = [
        Op::Put,
        Op::Get,
        Op::Head,
        Op::List,
        Op::Delete,
        Op::MultipartCreate,
        Op::MultipartPart,
        Op::MultipartComplete,
        Op::MultipartAbort,
        Op::Copy,
        Op::Rename,
    ];

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::Head => "head",
            Op::List => "list",
            Op::Delete => "delete",
            Op::MultipartCreate => "multipart create",
            Op::MultipartPart => "multipart part",
            Op::MultipartComplete => "multipart complete",
            Op::MultipartAbort => "multipart abort",
            Op::Copy => "copy",
            Op::Rename => "rename",
        }
    }
}

/// Requests and payload bytes of one kind and operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Requests.
    pub requests: u64,
    /// Payload bytes: bodies sent (put, part) or received (get).
    pub bytes: u64,
}

/// What a [`CountingStore`] has counted, by kind and operation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// The tallies.
    pub by: BTreeMap<(Kind, Op), Tally>,
}

impl Counts {
    /// The sum of the tallies that `keep` selects.
    pub fn sum(&self, keep: impl Fn(Kind, Op) -> bool) -> Tally {
        self.by
            .iter()
            .filter(|((k, o), _)| keep(*k, *o))
            .fold(Tally::default(), |acc, (_, t)| Tally {
                requests: acc.requests + t.requests,
                bytes: acc.bytes + t.bytes,
            })
    }

    /// One kind and operation.
    pub fn get(&self, kind: Kind, op: Op) -> Tally {
        self.by.get(&(kind, op)).copied().unwrap_or_default()
    }
}

#[derive(Debug, Default)]
struct Shared {
    counts: Counts,
    /// Data keys created (put or completed), to compare with the manifest.
    data_keys: BTreeSet<String>,
}

fn record(shared: &Mutex<Shared>, kind: Kind, op: Op, bytes: u64) {
    if let Ok(mut s) = shared.lock() {
        let t = s.counts.by.entry((kind, op)).or_default();
        t.requests += 1;
        t.bytes += bytes;
    }
}

fn record_data_key(shared: &Mutex<Shared>, path: &Path) {
    if let Ok(mut s) = shared.lock() {
        s.data_keys.insert(path.to_string());
    }
}

/// An [`ObjectStore`] that counts what passes through it, by [`Kind`] and [`Op`], and
/// forwards everything to the store it wraps.
#[derive(Debug, Clone)]
pub struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    root: Path,
    shared: Arc<Mutex<Shared>>,
}

impl CountingStore {
    /// Wrap `inner`; keys are classified relative to `root`, the sink's root.
    pub fn new(inner: Arc<dyn ObjectStore>, root: Path) -> Self {
        Self {
            inner,
            root,
            shared: Arc::default(),
        }
    }

    /// What has been counted so far.
    pub fn counts(&self) -> Counts {
        self.shared
            .lock()
            .map(|s| s.counts.clone())
            .unwrap_or_default()
    }

    /// The data keys created so far.
    pub fn data_keys(&self) -> BTreeSet<String> {
        self.shared
            .lock()
            .map(|s| s.data_keys.clone())
            .unwrap_or_default()
    }

    fn kind(&self, path: &Path) -> Kind {
        Kind::of(path, &self.root)
    }

    fn kind_of_prefix(&self, prefix: Option<&Path>) -> Kind {
        prefix.map_or(Kind::Other, |p| self.kind(p))
    }

    /// A listing stream that counts one more request for every page S3 would return.
    fn counted_list(
        &self,
        kind: Kind,
        stream: BoxStream<'static, object_store::Result<ObjectMeta>>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        record(&self.shared, kind, Op::List, 0);
        let shared = Arc::clone(&self.shared);
        let mut seen = 0u64;
        stream
            .inspect(move |item| {
                if item.is_ok() {
                    seen += 1;
                    if seen > 1 && (seen - 1).is_multiple_of(LIST_PAGE) {
                        record(&shared, kind, Op::List, 0);
                    }
                }
            })
            .boxed()
    }
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let kind = self.kind(location);
        record(&self.shared, kind, Op::Put, payload.content_length() as u64);
        let result = self.inner.put_opts(location, payload, opts).await;
        if kind == Kind::Data && result.is_ok() {
            record_data_key(&self.shared, location);
        }
        result
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let kind = self.kind(location);
        record(&self.shared, kind, Op::MultipartCreate, 0);
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(CountingUpload {
            inner,
            kind,
            location: location.clone(),
            shared: Arc::clone(&self.shared),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let kind = self.kind(location);
        let head = options.head;
        let result = self.inner.get_opts(location, options).await;
        let bytes = match (&result, head) {
            (Ok(r), false) => r.range.end.saturating_sub(r.range.start),
            _ => 0,
        };
        record(
            &self.shared,
            kind,
            if head { Op::Head } else { Op::Get },
            bytes,
        );
        result
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let shared = Arc::clone(&self.shared);
        let root = self.root.clone();
        let mut seen = 0u64;
        // object_store's S3 store sends the keys of one call in `DeleteObjects` requests
        // of up to 1000 keys (classified by the first key of each).
        let counted = locations
            .inspect(move |item| {
                if let Ok(path) = item {
                    if seen.is_multiple_of(LIST_PAGE) {
                        record(&shared, Kind::of(path, &root), Op::Delete, 0);
                    }
                    seen += 1;
                }
            })
            .boxed();
        self.inner.delete_stream(counted)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let kind = self.kind_of_prefix(prefix);
        self.counted_list(kind, self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let kind = self.kind_of_prefix(prefix);
        self.counted_list(kind, self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let kind = self.kind_of_prefix(prefix);
        let result = self.inner.list_with_delimiter(prefix).await;
        let entries = result
            .as_ref()
            .map(|r| (r.objects.len() + r.common_prefixes.len()) as u64)
            .unwrap_or_default();
        for _ in 0..entries.saturating_sub(1) / LIST_PAGE + 1 {
            record(&self.shared, kind, Op::List, 0);
        }
        result
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        record(&self.shared, self.kind(to), Op::Copy, 0);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        record(&self.shared, self.kind(to), Op::Rename, 0);
        self.inner.rename_opts(from, to, options).await
    }
}

/// A multipart upload whose parts, completion and abort are counted.
#[derive(Debug)]
struct CountingUpload {
    inner: Box<dyn MultipartUpload>,
    kind: Kind,
    location: Path,
    shared: Arc<Mutex<Shared>>,
}

#[async_trait]
impl MultipartUpload for CountingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        record(
            &self.shared,
            self.kind,
            Op::MultipartPart,
            data.content_length() as u64,
        );
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        record(&self.shared, self.kind, Op::MultipartComplete, 0);
        let result = self.inner.complete().await;
        if self.kind == Kind::Data && result.is_ok() {
            record_data_key(&self.shared, &self.location);
        }
        result
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        record(&self.shared, self.kind, Op::MultipartAbort, 0);
        self.inner.abort().await
    }
}

/// Why a measurement failed.
#[derive(Debug)]
pub struct MeasureError(String);

impl fmt::Display for MeasureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MeasureError {}

fn fail(what: &str, e: impl fmt::Display) -> MeasureError {
    MeasureError(format!("{what}: {e}"))
}

/// The requests of one sync that committed [`files`](Self::files) files.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Files the sync committed (the sync report's `files`).
    pub files: u64,
    /// Rows the sync committed.
    pub rows: u64,
    /// The sink's requests, counted by its store's wrapper, from `begin` to the report.
    pub counts: Counts,
    /// Requests the S3 client below the wrapper sent (s3conn-auth's counters), as a check
    /// on the wrapper's count.
    pub http_requests: u64,
    /// Bytes of request bodies the S3 client sent.
    pub http_body_bytes: u64,
    /// Of [`http_requests`](Self::http_requests), those that failed and were retried (each
    /// retry is one more request the wrapper does not see).
    pub http_failed: u64,
    /// The sync report's `requests` (0: the report counts the requests of connections
    /// made by s3conn-auth, and the sink's connection here is made over the wrapper).
    pub report_requests: u64,
    /// The sync report's `retries`.
    pub report_retries: u64,
    /// Objects left under `_s3conn/` after the sync (the journal is deleted at commit).
    pub journal_left: usize,
}

impl Measurement {
    /// The requests that create the data files (put, multipart create, part, complete).
    pub fn data(&self) -> Tally {
        self.counts.sum(|k, o| k == Kind::Data && o.creates())
    }

    /// Every other request: journal, manifests, report, listings, and any HEAD, GET or
    /// delete of data keys.
    pub fn overhead(&self) -> Tally {
        self.counts.sum(|k, o| !(k == Kind::Data && o.creates()))
    }

    /// The requests for keys of one kind (for [`Kind::Data`], only those of the overhead).
    pub fn of(&self, kind: Kind) -> Tally {
        self.counts
            .sum(|k, o| k == kind && !(k == Kind::Data && o.creates()))
    }

    /// The listing requests (of every kind).
    pub fn listing(&self) -> Tally {
        self.counts.sum(|_, o| o == Op::List)
    }

    /// Requests the wrapper counted, in all.
    pub fn total_requests(&self) -> u64 {
        self.counts.sum(|_, _| true).requests
    }

    /// Overhead requests per committed file.
    pub fn overhead_requests_per_file(&self) -> f64 {
        self.overhead().requests as f64 / self.files.max(1) as f64
    }

    /// Overhead payload bytes per committed file.
    pub fn overhead_bytes_per_file(&self) -> f64 {
        self.overhead().bytes as f64 / self.files.max(1) as f64
    }
}

/// Run one sync that commits `files` NDJSON files of [`ROWS_PER_FILE`] events each into a
/// fresh loopback S3 server, and count the sink's requests.
///
/// It fails when the sync does, when it commits another number of files, or when the data
/// files the wrapper saw created are not exactly those the manifest lists.
pub async fn measure(files: usize) -> Result<Measurement, MeasureError> {
    let server = S3Server::start().await;
    let raw: Connection = ConnectionConfig::s3(server.bucket())
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .with_static_credentials(server.access_key(), server.secret_key(), None)
        .with_prefix(ROOT)
        .connect()
        .map_err(|e| fail("connecting to the loopback server", e))?;
    let root = raw.root().clone();
    let counting = CountingStore::new(Arc::clone(raw.store()), root.clone());
    let connection = Connection::new(
        Arc::new(counting.clone()),
        root.clone(),
        format!("s3://{}", server.bucket()),
    );

    let template: Template = "${STREAM_NAME}/part-{part_number:05}{format_extension}"
        .parse()
        .map_err(|e| fail("the key template", e))?;
    let sink = S3Sink::builder(connection)
        .with_format(Arc::new(NdjsonFormat))
        .with_template(template)
        // Every batch closes its file: one file per batch.
        .with_target_file_size(1)
        .build()
        .map_err(|e| fail("building the sink", e))?;

    let text = crate::ndjson((files * ROWS_PER_FILE) as u64);
    let schema = crate::schema(&text);
    let batches = crate::batches(&text, &schema, ROWS_PER_FILE);
    if batches.len() != files {
        return Err(MeasureError(format!(
            "{} batches of events for {files} files",
            batches.len()
        )));
    }
    let source = MemorySource::new();
    for batch in batches {
        source.push(StreamId::new("events"), batch);
    }

    let mut pipeline = Pipeline::new(PIPELINE, source, sink, MemoryStateStore::new())
        .map_err(|e| fail("the pipeline", e))?;
    let before_http = raw.request_stats();
    let report = pipeline.run().await.map_err(|e| fail("the sync", e))?;
    let counts = counting.counts();
    let http = raw.request_stats().since(&before_http);

    if report.status != SyncStatus::Succeeded || report.files != files as u64 {
        return Err(MeasureError(format!(
            "the sync committed {} files of {files} ({:?})",
            report.files, report.status
        )));
    }
    let dump_id = report
        .dump_id
        .ok_or_else(|| MeasureError("the sync wrote no manifest".into()))?;
    let manifest = pipeline
        .sink()
        .read_manifest(dump_id)
        .await
        .map_err(|e| fail("reading the manifest", e))?
        .and_then(|m| m.s3conn)
        .ok_or_else(|| MeasureError(format!("manifest {dump_id} has no commit record")))?;
    let listed: BTreeSet<String> = manifest.files.iter().map(|f| f.key.clone()).collect();
    let created = counting.data_keys();
    if listed != created || listed.len() != files {
        return Err(MeasureError(format!(
            "the manifest lists {} files; the sink created {} data objects; they differ: {:?}",
            listed.len(),
            created.len(),
            listed
                .symmetric_difference(&created)
                .take(5)
                .collect::<Vec<_>>()
        )));
    }
    let journal_dir = raw
        .key("_s3conn")
        .map_err(|e| fail("the journal folder", e))?;
    let journal_left = raw
        .store()
        .list(Some(&journal_dir))
        .collect::<Vec<_>>()
        .await
        .len();

    Ok(Measurement {
        files: report.files,
        rows: report.rows,
        counts,
        http_requests: http.requests,
        http_body_bytes: http.body_bytes,
        http_failed: http.failed,
        report_requests: report.requests,
        report_retries: report.retries,
        journal_left,
    })
}

/// [`measure`] on a runtime of its own (two worker threads).
pub fn measure_blocking(files: usize) -> Result<Measurement, MeasureError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| fail("starting a runtime", e))?
        .block_on(measure(files))
}
