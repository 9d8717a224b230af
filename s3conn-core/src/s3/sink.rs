//! [`S3Sink`]: push records into a bucket as files, one delivery per sync, with a manifest
//! that is the commit.
//!
//! ```text
//!  begin ─▶ clean the orphans of this pipeline's earlier attempts
//!    │
//!  write* ─▶ per stream, an open file: encode ─▶ stream to S3 (one PUT, or a multipart
//!    │       upload once it passes the part size); roll at the target file size.
//!    │       Every key is recorded in the attempt's intent log before a byte is sent.
//!    │
//!  commit ─▶ close the files ─▶ delete this attempt's orphans ─▶ claim the next dump_id
//!    │       with a conditional put of manifests/<dump_id>.json (the commit point)
//!    │       ─▶ drop the intent log ─▶ full refresh: delete the previous generation
//!    │
//!  write_report ─▶ sync_reports/<start>_<sync>.json
//! ```
//!
//! Keys come from a [`Template`]; a key that already exists is never overwritten (single-PUT
//! files use `PutMode::Create`; a multipart file's key is checked before its upload starts)
//! and the part number moves on instead. An attempt that dies leaves files that no manifest
//! lists, recorded in its intent log under `_s3conn/attempts/<pipeline>/`; the next `begin`
//! of the same pipeline deletes them, keeping those a manifest committed.
//!
//! Readers that follow manifests see every committed row exactly once; readers that list
//! the prefix can see an attempt's files between its crash and the next run.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_schema::SchemaRef;
use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions,
    PutPayload, WriteMultipart,
};
use s3conn_auth::Connection;
use s3conn_formats::{EncodeOptions, Encoder, FormatPlugin, file_extension};
use s3conn_layout::manifest::{
    COMMIT_RECORD_VERSION, CommitRecord, MANIFEST_DIR, manifest_file_name, parse_manifest_file_name,
};
use s3conn_layout::report::{REPORT_DIR, StreamReport};
use s3conn_layout::{FileRecord, Manifest, RenderContext, SyncReport, TableDelivery, Template};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::record::{Batch, StreamId, SyncMode};
use crate::s3::partition::{PartitionKey, Partitioner, time_range};
use crate::sink::{CommitReceipt, CommitRequest, Sink, SyncContext};

/// The smallest multipart part S3 accepts (except the last).
const MIN_PART_SIZE: usize = 5 << 20;
/// How many times a taken key or dump id is skipped before giving up.
const MAX_KEY_ATTEMPTS: u64 = 1000;
/// The folder of s3conn's own bookkeeping under the sink's root.
const INTERNAL_DIR: &str = "_s3conn";

/// Builds an [`S3Sink`].
#[derive(Debug, Clone)]
pub struct S3SinkBuilder {
    connection: Connection,
    format: Option<Arc<dyn FormatPlugin>>,
    encode: EncodeOptions,
    template: Template,
    target_file_size: u64,
    part_size: usize,
    max_concurrent_uploads: usize,
    memory_budget: usize,
    max_open_files: usize,
    property_definitions: Option<String>,
}

impl S3SinkBuilder {
    /// The format files are written in (default: Parquet).
    pub fn with_format(mut self, format: Arc<dyn FormatPlugin>) -> Self {
        self.format = Some(format);
        self
    }

    /// Whole-file compression and level (row formats; Parquet maps gzip/zstd to its codec).
    pub fn with_encode_options(mut self, options: EncodeOptions) -> Self {
        self.encode = options;
        self
    }

    /// The key template (default [`s3conn_layout::template::DEFAULT_TEMPLATE`]).
    pub fn with_template(mut self, template: Template) -> Self {
        self.template = template;
        self
    }

    /// Roll to a new file once a file reaches this many bytes after compression (default
    /// 200 MiB).
    pub fn with_target_file_size(mut self, bytes: u64) -> Self {
        self.target_file_size = bytes;
        self
    }

    /// Size of a multipart upload part, at least 5 MiB (default 8 MiB). A file smaller than
    /// this is written with one PUT.
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes;
        self
    }

    /// Parts uploaded at once per file (default 4).
    pub fn with_max_concurrent_uploads(mut self, uploads: usize) -> Self {
        self.max_concurrent_uploads = uploads.max(1);
        self
    }

    /// Bytes the open files may hold in encoders before the largest is flushed (default
    /// 256 MiB).
    pub fn with_memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// Files open at once across streams and partitions (default 64): opening one more
    /// closes the one written least recently.
    pub fn with_max_open_files(mut self, files: usize) -> Self {
        self.max_open_files = files.max(1);
        self
    }

    /// The URI of a property definitions file, recorded in every manifest.
    pub fn with_property_definitions(mut self, uri: impl Into<String>) -> Self {
        self.property_definitions = Some(uri.into());
        self
    }

    /// Check the configuration and build the sink.
    pub fn build(self) -> Result<S3Sink> {
        if !self.template.is_unique_per_file() {
            return Err(Error::Config {
                reason: format!(
                    "the path template `{}` gives every file of a stream the same key; add `{{part_number}}` or `${{UUID}}`",
                    self.template
                ),
            });
        }
        if self.part_size < MIN_PART_SIZE {
            return Err(Error::Config {
                reason: format!(
                    "part size {} is below S3's minimum of {MIN_PART_SIZE} bytes",
                    self.part_size
                ),
            });
        }
        if self.target_file_size == 0 {
            return Err(Error::Config {
                reason: "the target file size must be above zero".into(),
            });
        }
        let format = match self.format {
            Some(f) => f,
            None => s3conn_formats::Registry::default().get("parquet")?,
        };
        format.check_encode_options(&self.encode)?;
        let extension = file_extension(format.as_ref(), &self.encode);
        let partitioner = Partitioner::new(&self.template);
        let time_column = self.template.time_column().map(str::to_owned);
        Ok(S3Sink {
            cfg: Arc::new(Config {
                partitioner,
                time_column,
                max_open_files: self.max_open_files,
                connection: self.connection,
                content_type: format.content_type().to_owned(),
                format,
                extension,
                encode: self.encode,
                template: self.template,
                target_file_size: self.target_file_size,
                part_size: self.part_size,
                max_concurrent_uploads: self.max_concurrent_uploads,
                memory_budget: self.memory_budget,
                property_definitions: self.property_definitions,
                attributes_supported: AtomicBool::new(true),
            }),
            sync: None,
            last_dump_id: None,
        })
    }
}

#[derive(Debug)]
struct Config {
    partitioner: Partitioner,
    /// The column of record times, for each file's time range.
    time_column: Option<String>,
    max_open_files: usize,
    connection: Connection,
    format: Arc<dyn FormatPlugin>,
    content_type: String,
    extension: String,
    encode: EncodeOptions,
    template: Template,
    target_file_size: u64,
    part_size: usize,
    max_concurrent_uploads: usize,
    memory_budget: usize,
    property_definitions: Option<String>,
    /// Whether the store takes object attributes (Content-Type); local folders do not.
    attributes_supported: AtomicBool,
}

impl Config {
    fn attributes(&self, content_type: &str) -> Attributes {
        let mut attributes = Attributes::new();
        if self.attributes_supported.load(Ordering::Relaxed) {
            attributes.insert(Attribute::ContentType, content_type.to_owned().into());
        }
        attributes
    }

    /// Note that the store refused attributes, when `error` says so.
    fn refused_attributes(&self, error: &object_store::Error, attributes: &Attributes) -> bool {
        let refused = !attributes.is_empty()
            && matches!(error, object_store::Error::NotImplemented { operation, .. } if operation.contains("attributes"));
        if refused {
            self.attributes_supported.store(false, Ordering::Relaxed);
        }
        refused
    }
}

/// Put `payload` at `path`, with a Content-Type where the store takes one.
async fn put_object(
    cfg: &Config,
    path: &Path,
    payload: PutPayload,
    mode: PutMode,
    content_type: &str,
) -> object_store::Result<object_store::PutResult> {
    loop {
        let attributes = cfg.attributes(content_type);
        let options = PutOptions {
            mode: mode.clone(),
            attributes: attributes.clone(),
            ..PutOptions::default()
        };
        match store(cfg).put_opts(path, payload.clone(), options).await {
            Err(e) if cfg.refused_attributes(&e, &attributes) => continue,
            other => return other,
        }
    }
}

/// Writes records into a bucket; see the module documentation.
///
/// ```
/// use std::sync::Arc;
/// use s3conn_core::auth::ConnectionConfig;
/// use s3conn_core::formats::ndjson::NdjsonFormat;
/// use s3conn_core::formats::{compression::Compression, EncodeOptions};
/// use s3conn_core::s3::S3Sink;
/// # let dir = tempfile::tempdir().unwrap();
/// let connection = ConnectionConfig::local(dir.path()).with_prefix("exports").connect()?;
/// let sink = S3Sink::builder(connection)
///     .with_format(Arc::new(NdjsonFormat))
///     .with_encode_options(EncodeOptions::default().with_compression(Compression::Gzip))
///     .with_template("${STREAM_NAME}/date=${DATE}/part-{part_number:05}-{sync_id}{format_extension}".parse()?)
///     .build()?;
/// # let _ = sink;
/// # Ok::<(), s3conn_core::Error>(())
/// ```
pub struct S3Sink {
    cfg: Arc<Config>,
    sync: Option<InProgress>,
    last_dump_id: Option<u64>,
}

impl fmt::Debug for S3Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Sink")
            .field("root", &self.cfg.connection.url())
            .field("format", &self.cfg.format.name())
            .field("template", &self.cfg.template)
            .field("in_sync", &self.sync.is_some())
            .finish()
    }
}

/// The intent log of one attempt: every key it may have written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Intent {
    version: u32,
    sync_id: String,
    keys: Vec<String>,
    /// The dump id the attempt was committing, set before each try.
    #[serde(default)]
    committing_dump_id: Option<u64>,
}

enum Upload {
    Buffered { chunks: Vec<Bytes>, len: usize },
    Multipart(WriteMultipart),
}

struct OpenFile {
    stream: StreamId,
    partition: PartitionKey,
    /// The file clock of the key template.
    opened_at: DateTime<Utc>,
    key: Path,
    encoder: Box<dyn Encoder>,
    upload: Upload,
    rows: u64,
    /// The schema of the records written to it.
    schema: SchemaRef,
    /// The schema of the file's columns (the records' schema, shaped).
    file_schema: SchemaRef,
    checksum: crc_fast::Digest,
    time_range: Option<(i64, i64)>,
    /// When it was last written, in writes since `begin` (to close the least recent).
    last_write: u64,
}

#[derive(Debug, Clone)]
struct ClosedFile {
    stream: StreamId,
    key: Path,
    size: u64,
    rows: u64,
    e_tag: Option<String>,
    schema: SchemaRef,
    checksum: String,
    time_range: Option<(i64, i64)>,
}

struct InProgress {
    ctx: SyncContext,
    open: Vec<OpenFile>,
    closed: Vec<ClosedFile>,
    next_part: HashMap<(StreamId, PartitionKey), u64>,
    writes: u64,
    intent: Intent,
    intent_path: Path,
}

impl S3Sink {
    /// Start building a sink whose root is `connection`'s root.
    pub fn builder(connection: Connection) -> S3SinkBuilder {
        S3SinkBuilder {
            connection,
            format: None,
            encode: EncodeOptions::default(),
            template: Template::default(),
            target_file_size: 200 << 20,
            part_size: 8 << 20,
            max_concurrent_uploads: 4,
            memory_budget: 256 << 20,
            max_open_files: 64,
            property_definitions: None,
        }
    }

    /// The manifests under the root, by dump id, ascending.
    pub async fn manifests(&self) -> Result<Vec<(u64, Path)>> {
        list_manifests(&self.cfg).await
    }

    /// Read one manifest.
    pub async fn read_manifest(&self, dump_id: u64) -> Result<Option<Manifest>> {
        read_manifest(&self.cfg, dump_id).await
    }
}

fn too_many_attempts(cfg: &Config) -> Error {
    Error::Config {
        reason: format!(
            "the key template `{}` named {MAX_KEY_ATTEMPTS} keys in a row that are taken; give it a part number or a sync id",
            cfg.template
        ),
    }
}

/// Whether the object at `key` holds exactly `payload` (size and CRC-64/NVME): our own
/// write, landed by a retry whose first answer was lost. Returns its ETag.
async fn holds(
    cfg: &Config,
    key: &Path,
    payload: &PutPayload,
    checksum: u64,
) -> Result<Option<Option<String>>> {
    let existing = match store(cfg).get(key).await {
        Ok(r) => r,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(Error::store("get", cfg.connection.uri(key), e)),
    };
    let e_tag = existing.meta.e_tag.clone();
    if existing.meta.size != payload.content_length() as u64 {
        return Ok(None);
    }
    let bytes = existing
        .bytes()
        .await
        .map_err(|e| Error::store("get", cfg.connection.uri(key), e))?;
    let same = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, &bytes) == checksum;
    Ok(same.then_some(e_tag))
}

/// A key this sink rendered itself, as a path (exactly, without re-encoding).
fn own_key(key: &str) -> Result<Path> {
    Path::parse(key).map_err(|e| Error::Protocol(format!("the key `{key}` is invalid: {e}")))
}

fn store(cfg: &Config) -> &Arc<dyn ObjectStore> {
    cfg.connection.store()
}

fn manifest_path(cfg: &Config, dump_id: u64) -> Result<Path> {
    Ok(cfg
        .connection
        .key(&format!("{MANIFEST_DIR}/{}", manifest_file_name(dump_id)))?)
}

fn attempts_dir(cfg: &Config, pipeline_id: &str) -> Result<Path> {
    Ok(cfg
        .connection
        .key(&format!("{INTERNAL_DIR}/attempts/{pipeline_id}"))?)
}

async fn list_manifests(cfg: &Config) -> Result<Vec<(u64, Path)>> {
    let dir = cfg.connection.key(MANIFEST_DIR)?;
    let depth = dir.parts().count() + 1;
    let metas: Vec<_> = store(cfg)
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(|e| Error::store("list", cfg.connection.uri(&dir), e))?;
    let mut found: Vec<(u64, Path)> = metas
        .into_iter()
        .filter(|m| m.location.parts().count() == depth)
        .filter_map(|m| {
            let id = parse_manifest_file_name(m.location.filename()?)?;
            Some((id, m.location))
        })
        .collect();
    found.sort_by_key(|(id, _)| *id);
    Ok(found)
}

async fn get_bytes(cfg: &Config, path: &Path) -> Result<Option<Bytes>> {
    match store(cfg).get(path).await {
        Ok(r) => {
            Ok(Some(r.bytes().await.map_err(|e| {
                Error::store("get", cfg.connection.uri(path), e)
            })?))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Error::store("get", cfg.connection.uri(path), e)),
    }
}

async fn read_manifest(cfg: &Config, dump_id: u64) -> Result<Option<Manifest>> {
    let path = manifest_path(cfg, dump_id)?;
    match get_bytes(cfg, &path).await? {
        None => Ok(None),
        Some(bytes) => Manifest::from_json(&bytes)
            .map(Some)
            .map_err(|e| Error::State {
                key: cfg.connection.uri(&path),
                reason: e.to_string(),
            }),
    }
}

async fn delete_if_exists(cfg: &Config, path: &Path) -> Result<()> {
    match store(cfg).delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(Error::store("delete", cfg.connection.uri(path), e)),
    }
}

async fn put_json(cfg: &Config, path: &Path, json: Vec<u8>, mode: PutMode) -> Result<()> {
    put_object(cfg, path, PutPayload::from(json), mode, "application/json")
        .await
        .map(|_| ())
        .map_err(|e| Error::store("put", cfg.connection.uri(path), e))
}

async fn save_intent(cfg: &Config, path: &Path, intent: &Intent) -> Result<()> {
    let json = serde_json::to_vec(intent).map_err(|e| Error::State {
        key: cfg.connection.uri(path),
        reason: e.to_string(),
    })?;
    put_json(cfg, path, json, PutMode::Overwrite).await
}

/// Delete what earlier attempts of `pipeline_id` left behind.
async fn clean_orphans(cfg: &Config, pipeline_id: &str) -> Result<()> {
    let dir = attempts_dir(cfg, pipeline_id)?;
    let logs: Vec<_> = store(cfg)
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(|e| Error::store("list", cfg.connection.uri(&dir), e))?;
    for log in logs {
        let Some(bytes) = get_bytes(cfg, &log.location).await? else {
            continue;
        };
        let intent: Intent = match serde_json::from_slice(&bytes) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(log = %log.location, error = %e, "an unreadable intent log is left in place");
                continue;
            }
        };
        let mut keep: HashSet<String> = HashSet::new();
        if let Some(dump_id) = intent.committing_dump_id
            && let Some(manifest) = read_manifest(cfg, dump_id).await?
            && let Some(record) = manifest.s3conn
            && record.sync_id == intent.sync_id
        {
            keep.extend(record.files.into_iter().map(|f| f.key));
        }
        let mut deleted = 0;
        for key in intent.keys.iter().filter(|k| !keep.contains(*k)) {
            match Path::parse(key) {
                Ok(path) => delete_if_exists(cfg, &path).await?,
                Err(e) => {
                    tracing::warn!(%key, error = %e, "an intent log names an invalid key; it is left alone");
                    continue;
                }
            }
            deleted += 1;
        }
        delete_if_exists(cfg, &log.location).await?;
        tracing::info!(sync_id = %intent.sync_id, deleted, kept = keep.len(), "cleaned up after an earlier attempt");
    }
    Ok(())
}

impl InProgress {
    fn render(
        &self,
        cfg: &Config,
        stream: &StreamId,
        partition: &PartitionKey,
        opened_at: DateTime<Utc>,
        part: u64,
    ) -> Result<Path> {
        let mut ctx = RenderContext::new(stream.name(), self.ctx.started_at)
            .with_optional_namespace(stream.namespace().map(str::to_owned))
            .with_sync_id(&self.ctx.sync_id)
            .with_part_number(part)
            .with_format_extension(&cfg.extension)
            .with_file_time(opened_at);
        if let Some(t) = partition.record_time {
            ctx = ctx.with_record_time(t);
        }
        for (name, value) in &partition.values {
            ctx = ctx.with_value(name, value);
        }
        let key = cfg.template.render(&ctx)?;
        Ok(cfg.connection.key(&key)?)
    }

    /// Take the next part number of a stream's partition and record the key in the intent
    /// log.
    async fn claim_key(
        &mut self,
        cfg: &Config,
        stream: &StreamId,
        partition: &PartitionKey,
        opened_at: DateTime<Utc>,
    ) -> Result<Path> {
        for _ in 0..MAX_KEY_ATTEMPTS {
            let part = self
                .next_part
                .entry((stream.clone(), partition.clone()))
                .or_insert(0);
            let number = *part;
            *part += 1;
            let key = self.render(cfg, stream, partition, opened_at, number)?;
            // Two partitions can render one key (streams of two namespaces and a template
            // without the namespace, an hour that repeats when the clock goes back): a key
            // belongs to one file of the sync.
            if self.intent.keys.iter().any(|k| k == key.as_ref()) {
                continue;
            }
            self.intent.keys.push(key.to_string());
            save_intent(cfg, &self.intent_path, &self.intent).await?;
            return Ok(key);
        }
        Err(too_many_attempts(cfg))
    }

    /// A key found taken is someone else's: it leaves the intent log, so that nothing of
    /// this sync ever deletes it.
    async fn release_key(&mut self, cfg: &Config, key: &Path) -> Result<()> {
        self.intent.keys.retain(|k| k != key.as_ref());
        save_intent(cfg, &self.intent_path, &self.intent).await
    }

    /// `key`, or the next free key after it: an object that exists is never overwritten.
    async fn free_key(
        &mut self,
        cfg: &Config,
        stream: &StreamId,
        partition: &PartitionKey,
        opened_at: DateTime<Utc>,
        mut key: Path,
    ) -> Result<Path> {
        for _ in 0..MAX_KEY_ATTEMPTS {
            match store(cfg).head(&key).await {
                Err(object_store::Error::NotFound { .. }) => return Ok(key),
                Ok(_) => {
                    tracing::info!(key = %key, "key taken; moving to the next part number");
                    self.release_key(cfg, &key).await?;
                    key = self.claim_key(cfg, stream, partition, opened_at).await?;
                }
                Err(e) => return Err(Error::store("head", cfg.connection.uri(&key), e)),
            }
        }
        Err(too_many_attempts(cfg))
    }

    async fn open_file(
        &mut self,
        cfg: &Config,
        stream: &StreamId,
        partition: PartitionKey,
        schema: SchemaRef,
    ) -> Result<()> {
        if self.open.len() >= cfg.max_open_files
            && let Some(index) = self
                .open
                .iter()
                .enumerate()
                .min_by_key(|(_, f)| f.last_write)
                .map(|(i, _)| i)
        {
            self.close_file(cfg, index).await?;
        }
        let opened_at = Utc::now();
        let key = self.claim_key(cfg, stream, &partition, opened_at).await?;
        let encoder =
            s3conn_formats::shape::encoder(cfg.format.as_ref(), schema.clone(), &cfg.encode)
                .map_err(|source| Error::Write {
                    uri: cfg.connection.uri(&key),
                    source,
                })?;
        tracing::debug!(key = %key, "opening file");
        self.open.push(OpenFile {
            stream: stream.clone(),
            partition,
            opened_at,
            key,
            encoder,
            upload: Upload::Buffered {
                chunks: Vec::new(),
                len: 0,
            },
            rows: 0,
            file_schema: Arc::clone(
                s3conn_formats::shape::Shaper::new(cfg.encode.shape.clone(), schema.clone())?
                    .schema(),
            ),
            schema,
            checksum: crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme),
            time_range: None,
            last_write: 0,
        });
        Ok(())
    }

    /// Write the rows of one partition of a batch to its file.
    async fn write_part(
        &mut self,
        cfg: &Config,
        stream: &StreamId,
        partition: PartitionKey,
        records: &arrow_array::RecordBatch,
    ) -> Result<()> {
        let schema = records.schema();
        let mut index = self
            .open
            .iter()
            .position(|f| &f.stream == stream && f.partition == partition);
        if let Some(i) = index
            && self.open.get(i).is_some_and(|f| f.schema != schema)
        {
            self.close_file(cfg, i).await?;
            index = None;
        }
        let index = match index {
            Some(i) => i,
            None => {
                self.open_file(cfg, stream, partition, schema).await?;
                self.open.len() - 1
            }
        };
        let range = match &cfg.time_column {
            Some(column) => time_range(records, column, stream)?,
            None => None,
        };
        self.writes += 1;
        let writes = self.writes;
        let Some(file) = self.open.get_mut(index) else {
            return Err(Error::Protocol("lost track of an open file".into()));
        };
        file.encoder.write(records).map_err(|source| Error::Write {
            uri: cfg.connection.uri(&file.key),
            source,
        })?;
        file.rows += records.num_rows() as u64;
        file.last_write = writes;
        if let Some((lo, hi)) = range {
            file.time_range = Some(match file.time_range {
                None => (lo, hi),
                Some((a, b)) => (a.min(lo), b.max(hi)),
            });
        }
        self.drain(cfg, index).await?;
        let full = self.open.get(index).is_some_and(|f| {
            f.encoder.bytes_written() + f.encoder.buffered_bytes() as u64 >= cfg.target_file_size
        });
        if full {
            self.close_file(cfg, index).await?;
        }
        Ok(())
    }

    /// Send the encoder's output; switch to a multipart upload past the part size.
    async fn drain(&mut self, cfg: &Config, index: usize) -> Result<()> {
        let Some(file) = self.open.get_mut(index) else {
            return Ok(());
        };
        let bytes = file.encoder.take_output();
        if bytes.is_empty() {
            return Ok(());
        }
        file.checksum.update(&bytes);
        match &mut file.upload {
            Upload::Multipart(upload) => {
                upload.put(bytes);
                upload
                    .wait_for_capacity(cfg.max_concurrent_uploads)
                    .await
                    .map_err(|e| Error::store("upload", cfg.connection.uri(&file.key), e))?;
            }
            Upload::Buffered { chunks, len } => {
                *len += bytes.len();
                chunks.push(bytes);
                if *len >= cfg.part_size {
                    self.start_multipart(cfg, index).await?;
                }
            }
        }
        Ok(())
    }

    async fn start_multipart(&mut self, cfg: &Config, index: usize) -> Result<()> {
        let Some((stream, partition, opened_at)) = self
            .open
            .get(index)
            .map(|f| (f.stream.clone(), f.partition.clone(), f.opened_at))
        else {
            return Ok(());
        };
        // A multipart upload cannot be conditional: make sure the key is free first.
        let current = self
            .open
            .get(index)
            .map(|f| f.key.clone())
            .unwrap_or_default();
        let key = self
            .free_key(cfg, &stream, &partition, opened_at, current)
            .await?;
        let upload = loop {
            let attributes = cfg.attributes(&cfg.content_type);
            let options = PutMultipartOptions {
                attributes: attributes.clone(),
                ..PutMultipartOptions::default()
            };
            match store(cfg).put_multipart_opts(&key, options).await {
                Ok(upload) => break upload,
                Err(e) if cfg.refused_attributes(&e, &attributes) => continue,
                Err(e) => return Err(Error::store("upload", cfg.connection.uri(&key), e)),
            }
        };
        let mut writer = WriteMultipart::new_with_chunk_size(upload, cfg.part_size);
        let Some(file) = self.open.get_mut(index) else {
            return Ok(());
        };
        file.key = key;
        if let Upload::Buffered { chunks, .. } = std::mem::replace(
            &mut file.upload,
            Upload::Buffered {
                chunks: Vec::new(),
                len: 0,
            },
        ) {
            for chunk in chunks {
                writer.put(chunk);
            }
        }
        if let Err(e) = writer.wait_for_capacity(cfg.max_concurrent_uploads).await {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(key = %file.key, error = %abort, "could not abort a multipart upload");
            }
            return Err(Error::store("upload", cfg.connection.uri(&file.key), e));
        }
        file.upload = Upload::Multipart(writer);
        Ok(())
    }

    /// Finish the file at `index` and upload what is left.
    async fn close_file(&mut self, cfg: &Config, index: usize) -> Result<()> {
        if index >= self.open.len() {
            return Ok(());
        }
        let mut file = self.open.remove(index);
        let tail = file.encoder.finish().map_err(|source| Error::Write {
            uri: cfg.connection.uri(&file.key),
            source,
        })?;
        let size = file.encoder.bytes_written();
        file.checksum.update(&tail);
        let checksum = format!(
            "crc64nvme:{}",
            base64::engine::general_purpose::STANDARD
                .encode(file.checksum.finalize().to_be_bytes())
        );
        let e_tag = match file.upload {
            Upload::Multipart(mut upload) => {
                upload.put(tail);
                // Upload every part while the upload can still be aborted.
                if let Err(e) = upload.wait_for_capacity(0).await {
                    if let Err(abort) = upload.abort().await {
                        tracing::warn!(key = %file.key, error = %abort, "could not abort a multipart upload");
                    }
                    return Err(Error::store("upload", cfg.connection.uri(&file.key), e));
                }
                upload
                    .finish()
                    .await
                    .map_err(|e| Error::store("upload", cfg.connection.uri(&file.key), e))?
                    .e_tag
            }
            Upload::Buffered { mut chunks, .. } => {
                chunks.push(tail);
                let payload: PutPayload = chunks.into_iter().collect();
                let crc = file.checksum.finalize();
                let mut key = self
                    .free_key(cfg, &file.stream, &file.partition, file.opened_at, file.key)
                    .await?;
                let mut attempt = 0;
                let e_tag = loop {
                    match put_object(
                        cfg,
                        &key,
                        payload.clone(),
                        PutMode::Create,
                        &cfg.content_type,
                    )
                    .await
                    {
                        Ok(result) => break result.e_tag,
                        Err(object_store::Error::AlreadyExists { .. })
                            if attempt < MAX_KEY_ATTEMPTS =>
                        {
                            attempt += 1;
                            // The key was free a moment ago: a retry of this very PUT whose
                            // first answer was lost landed it, or another writer took it.
                            if let Some(e_tag) = holds(cfg, &key, &payload, crc).await? {
                                break e_tag;
                            }
                            self.release_key(cfg, &key).await?;
                            let next = self
                                .claim_key(cfg, &file.stream, &file.partition, file.opened_at)
                                .await?;
                            key = self
                                .free_key(cfg, &file.stream, &file.partition, file.opened_at, next)
                                .await?;
                        }
                        Err(e) => {
                            return Err(Error::store("put", cfg.connection.uri(&key), e));
                        }
                    }
                };
                file.key = key;
                e_tag
            }
        };
        tracing::debug!(key = %file.key, rows = file.rows, size, "file written");
        self.closed.push(ClosedFile {
            stream: file.stream,
            key: file.key,
            size,
            rows: file.rows,
            e_tag,
            schema: file.file_schema,
            checksum,
            time_range: file.time_range,
        });
        Ok(())
    }

    /// Keep the bytes held by encoders under the budget: flush the fullest, or close it.
    async fn enforce_budget(&mut self, cfg: &Config) -> Result<()> {
        let held: usize = self.open.iter().map(|f| f.encoder.buffered_bytes()).sum();
        if held <= cfg.memory_budget {
            return Ok(());
        }
        let Some(index) = self
            .open
            .iter()
            .enumerate()
            .max_by_key(|(_, f)| f.encoder.buffered_bytes())
            .map(|(i, _)| i)
        else {
            return Ok(());
        };
        if let Some(file) = self.open.get_mut(index) {
            file.encoder.flush().map_err(|source| Error::Write {
                uri: cfg.connection.uri(&file.key),
                source,
            })?;
        }
        self.drain(cfg, index).await
    }
}

#[async_trait]
impl Sink for S3Sink {
    async fn begin(&mut self, ctx: &SyncContext) -> Result<()> {
        if self.sync.is_some() {
            return Err(Error::Protocol(
                "begin called while a sync is in progress: commit or abort it first".into(),
            ));
        }
        crate::state::validate_key(&ctx.pipeline_id)?;
        clean_orphans(&self.cfg, &ctx.pipeline_id).await?;
        self.last_dump_id = list_manifests(&self.cfg).await?.last().map(|(id, _)| *id);
        let intent_path =
            attempts_dir(&self.cfg, &ctx.pipeline_id)?.join(format!("{}.json", ctx.sync_id));
        self.sync = Some(InProgress {
            ctx: ctx.clone(),
            open: Vec::new(),
            closed: Vec::new(),
            next_part: HashMap::new(),
            writes: 0,
            intent: Intent {
                version: 1,
                sync_id: ctx.sync_id.clone(),
                keys: Vec::new(),
                committing_dump_id: None,
            },
            intent_path,
        });
        Ok(())
    }

    async fn write(&mut self, batch: Batch) -> Result<()> {
        let cfg = Arc::clone(&self.cfg);
        let sync = self
            .sync
            .as_mut()
            .ok_or_else(|| Error::Protocol("write called before begin".into()))?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let parts = cfg
            .partitioner
            .split(&batch.records, &batch.stream, &batch.position.origin)?;
        for (partition, records) in parts {
            sync.write_part(&cfg, &batch.stream, partition, &records)
                .await?;
        }
        sync.enforce_budget(&cfg).await
    }

    async fn commit(&mut self, request: &CommitRequest) -> Result<CommitReceipt> {
        let cfg = Arc::clone(&self.cfg);
        let span = tracing::info_span!("commit", root = %cfg.connection.url());
        let _enter = span.enter();
        let in_progress = self
            .sync
            .as_mut()
            .ok_or_else(|| Error::Protocol("commit called before begin".into()))?;
        // Until the manifest put starts, a failure leaves the sync to `abort`.
        while !in_progress.open.is_empty() {
            in_progress.close_file(&cfg, 0).await?;
        }
        let written: HashSet<String> = in_progress
            .closed
            .iter()
            .map(|f| f.key.to_string())
            .collect();
        for key in in_progress
            .intent
            .keys
            .iter()
            .filter(|k| !written.contains(*k))
        {
            delete_if_exists(&cfg, &own_key(key)?).await?;
        }
        // From here on a failure may hide a manifest that landed: the attempt is left to
        // the next begin's clean-up, which reads the manifest before deleting anything.
        let Some(mut sync) = self.sync.take() else {
            return Err(Error::Protocol("lost track of the sync".into()));
        };

        let full_refresh: Vec<StreamId> = sync
            .ctx
            .streams
            .iter()
            .filter(|(_, m)| *m == SyncMode::FullRefresh)
            .map(|(s, _)| s.clone())
            .collect();
        let receipt_streams = stream_reports(&sync.closed);
        if sync.closed.is_empty() && full_refresh.is_empty() {
            delete_if_exists(&cfg, &sync.intent_path).await?;
            return Ok(CommitReceipt {
                dump_id: None,
                files: Vec::new(),
                streams: receipt_streams,
            });
        }

        let files: Vec<FileRecord> = sync
            .closed
            .iter()
            .map(|f| FileRecord {
                table: f.stream.name().to_owned(),
                key: f.key.to_string(),
                size: f.size,
                rows: f.rows,
                e_tag: f.e_tag.clone(),
                schema_fingerprint: Some(fingerprint(&f.schema)),
                checksum: Some(f.checksum.clone()),
                time_min: f.time_range.map(|(lo, _)| lo),
                time_max: f.time_range.map(|(_, hi)| hi),
            })
            .collect();
        let mut manifest = Manifest::new(0, tables(&cfg, &sync, &full_refresh));
        manifest.property_definitions = cfg.property_definitions.clone();
        manifest.s3conn = Some(CommitRecord {
            version: COMMIT_RECORD_VERSION,
            pipeline_id: Some(sync.ctx.pipeline_id.clone()),
            checkpoint: request.checkpoint,
            sync_id: sync.ctx.sync_id.clone(),
            attempt_id: sync.ctx.sync_id.clone(),
            committed_at: Utc::now().timestamp_millis(),
            files: files.clone(),
        });

        let mut dump_id = self.last_dump_id.map_or(1, |d| d + 1);
        let mut attempts = 0;
        loop {
            manifest.dump_id = dump_id;
            sync.intent.committing_dump_id = Some(dump_id);
            save_intent(&cfg, &sync.intent_path, &sync.intent).await?;
            let path = manifest_path(&cfg, dump_id)?;
            match put_json(&cfg, &path, manifest.to_json()?, PutMode::Create).await {
                Ok(()) => break,
                Err(Error::Store {
                    source: object_store::Error::AlreadyExists { .. },
                    ..
                }) if attempts < MAX_KEY_ATTEMPTS => {
                    // Ours, if a retried put whose first answer was lost already landed.
                    let existing = read_manifest(&cfg, dump_id).await?;
                    if existing
                        .and_then(|m| m.s3conn)
                        .is_some_and(|r| r.sync_id == sync.ctx.sync_id)
                    {
                        break;
                    }
                    attempts += 1;
                    dump_id += 1;
                }
                Err(e) => return Err(e),
            }
        }
        self.last_dump_id = Some(dump_id);
        tracing::info!(dump_id, files = files.len(), "delivery committed");
        if let Err(e) = delete_if_exists(&cfg, &sync.intent_path).await {
            tracing::warn!(error = %e, "the intent log stays until the next sync; the delivery is committed");
        }

        for stream in &full_refresh {
            let keep: HashSet<&str> = sync
                .closed
                .iter()
                .filter(|f| &f.stream == stream)
                .map(|f| f.key.as_ref())
                .collect();
            if let Err(e) = delete_previous_generations(&cfg, stream, dump_id, &keep).await {
                tracing::warn!(%stream, error = %e, "the previous generation could not be deleted now; the next full refresh deletes it");
            }
        }

        Ok(CommitReceipt {
            dump_id: Some(dump_id),
            files,
            streams: receipt_streams,
        })
    }

    async fn abort(&mut self) -> Result<()> {
        let Some(mut sync) = self.sync.take() else {
            return Ok(());
        };
        let cfg = Arc::clone(&self.cfg);
        for file in sync.open.drain(..) {
            if let Upload::Multipart(upload) = file.upload
                && let Err(e) = upload.abort().await
            {
                tracing::warn!(key = %file.key, error = %e, "could not abort a multipart upload");
            }
        }
        for key in &sync.intent.keys {
            delete_if_exists(&cfg, &own_key(key)?).await?;
        }
        delete_if_exists(&cfg, &sync.intent_path).await
    }

    async fn committed_checkpoint(&mut self, pipeline_id: &str) -> Result<Option<u64>> {
        for (dump_id, _) in list_manifests(&self.cfg).await?.into_iter().rev() {
            let Some(manifest) = read_manifest(&self.cfg, dump_id).await? else {
                continue;
            };
            if let Some(record) = manifest.s3conn
                && record.pipeline_id.as_deref() == Some(pipeline_id)
            {
                return Ok(record.checkpoint);
            }
        }
        Ok(None)
    }

    async fn write_report(&mut self, report: &SyncReport) -> Result<()> {
        let path = self
            .cfg
            .connection
            .key(&format!("{REPORT_DIR}/{}", report.file_name()))?;
        put_json(&self.cfg, &path, report.to_json()?, PutMode::Overwrite).await
    }
}

/// The manifest's table entries: every stream with files, and every full-refresh stream.
fn tables(cfg: &Config, sync: &InProgress, full_refresh: &[StreamId]) -> Vec<TableDelivery> {
    let mut order: Vec<StreamId> = Vec::new();
    for (stream, _) in &sync.ctx.streams {
        if sync.closed.iter().any(|f| &f.stream == stream) || full_refresh.contains(stream) {
            order.push(stream.clone());
        }
    }
    for f in &sync.closed {
        if !order.contains(&f.stream) {
            order.push(f.stream.clone());
        }
    }
    order
        .into_iter()
        .map(|stream| {
            let files: Vec<&ClosedFile> =
                sync.closed.iter().filter(|f| f.stream == stream).collect();
            let mut columns: Vec<String> = Vec::new();
            for f in &files {
                for field in f.schema.fields() {
                    if !columns.iter().any(|c| c == field.name()) {
                        columns.push(field.name().clone());
                    }
                }
            }
            TableDelivery {
                name: stream.name().to_owned(),
                namespace: stream.namespace().map(str::to_owned),
                files: files.iter().map(|f| cfg.connection.uri(&f.key)).collect(),
                columns,
                incremental: !full_refresh.contains(&stream),
            }
        })
        .collect()
}

fn stream_reports(closed: &[ClosedFile]) -> Vec<StreamReport> {
    let mut reports: Vec<(StreamId, StreamReport)> = Vec::new();
    for f in closed {
        let at = match reports.iter().position(|(s, _)| s == &f.stream) {
            Some(at) => at,
            None => {
                reports.push((
                    f.stream.clone(),
                    StreamReport {
                        name: f.stream.name().to_owned(),
                        namespace: f.stream.namespace().map(str::to_owned),
                        rows: 0,
                        bytes: 0,
                        files: 0,
                    },
                ));
                reports.len() - 1
            }
        };
        if let Some((_, r)) = reports.get_mut(at) {
            r.rows += f.rows;
            r.bytes += f.size;
            r.files += 1;
        }
    }
    reports.into_iter().map(|(_, r)| r).collect()
}

/// Delete every file of `stream` that manifests before `dump_id` list, except `keep`.
async fn delete_previous_generations(
    cfg: &Config,
    stream: &StreamId,
    dump_id: u64,
    keep: &HashSet<&str>,
) -> Result<()> {
    let base = format!("{}/", cfg.connection.url());
    let root_prefix = if cfg.connection.root().as_ref().is_empty() {
        String::new()
    } else {
        format!("{}/", cfg.connection.root())
    };
    let mut deleted = 0;
    for (id, _) in list_manifests(cfg).await? {
        if id >= dump_id {
            break;
        }
        let Some(manifest) = read_manifest(cfg, id).await? else {
            continue;
        };
        for table in manifest
            .tables
            .iter()
            .filter(|t| t.name == stream.name() && t.namespace.as_deref() == stream.namespace())
        {
            for uri in &table.files {
                // Only files under this sink's root are ours to delete.
                let Some(relative) = uri.strip_prefix(&base) else {
                    continue;
                };
                let key = format!("{root_prefix}{relative}");
                if !keep.contains(key.as_str()) {
                    delete_if_exists(cfg, &own_key(&key)?).await?;
                    deleted += 1;
                }
            }
        }
    }
    tracing::info!(%stream, deleted, "previous generation deleted");
    Ok(())
}

/// A stable fingerprint of a schema: FNV-1a over names, types and nullability.
fn fingerprint(schema: &SchemaRef) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for field in schema.fields() {
        let text = format!(
            "{}:{}:{};",
            field.name(),
            field.data_type(),
            field.is_nullable()
        );
        for b in text.bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}
