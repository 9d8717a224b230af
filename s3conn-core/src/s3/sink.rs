//! [`S3Sink`]: push records into a bucket as files, one delivery per sync, with a manifest
//! that is the commit.
//!
//! ```text
//!  begin ─▶ finish or undo the earlier attempts of this pipeline (their journals)
//!    │      ─▶ journal: begin
//!  write* ─▶ per stream and partition, an open file: encode ─▶ stream to the store
//!    │       (one conditional PUT, or a multipart upload once it passes the part size)
//!    │       ─▶ roll at the target file size. Before a step creates an object the
//!    │       journal says so (key, exact size and CRC-64, upload id); after, it records
//!    │       the ETag it got.
//!  commit ─▶ close the files ─▶ journal: commit <dump_id> ─▶ claim manifests/<dump_id>.json
//!    │       with a conditional put (the commit point) ─▶ full refresh: retire the
//!    │       generations it replaced ─▶ delete the journal
//!  write_report ─▶ sync_reports/<start>_<sync>.json
//! ```
//!
//! Nothing is ever overwritten: a single-PUT file is created with `PutMode::Create` and
//! moves to the next part number when its key is taken; a multipart upload completes only
//! if its key is still free ([`Connection::start_upload`]). The clean-up of an attempt that
//! died deletes only what its journal proves it created, and every deletion of a data file
//! goes through one guard that refuses files a committed manifest lists (`deletion`).
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
use s3conn_auth::http::RequestStats;
use s3conn_formats::{EncodeOptions, Encoder, FormatPlugin, file_extension};
use s3conn_layout::manifest::{COMMIT_RECORD_VERSION, CommitRecord};
use s3conn_layout::report::{REPORT_DIR, StreamReport};
use s3conn_layout::template::Variable;
use s3conn_layout::{FileRecord, Manifest, RenderContext, SyncReport, TableDelivery, Template};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::failpoint;
use crate::record::{Batch, StreamId, SyncMode};
use crate::s3::deletion::Committed;
use crate::s3::journal::{Entry, Journal};
use crate::s3::partition::{PartitionKey, Partitioner, time_range};
use crate::s3::recovery::{
    self, ATTEMPT_METADATA, Cleanup, inspect, list_manifests, manifest_path, read_manifest,
};
use crate::s3::retry;
use crate::sink::{CommitReceipt, CommitRequest, Sink, SyncContext};

/// The smallest multipart part S3 accepts (except the last).
const MIN_PART_SIZE: usize = 5 << 20;
/// How many times a taken key or dump id is skipped before giving up.
const MAX_KEY_ATTEMPTS: u64 = 1000;

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
        let unique_keys = self
            .template
            .variables()
            .any(|v| matches!(v, Variable::Uuid | Variable::SyncId));
        Ok(S3Sink {
            cfg: Arc::new(Config {
                partitioner,
                unique_keys,
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
            recovery: None,
        })
    }
}

#[derive(Debug)]
struct Config {
    partitioner: Partitioner,
    /// Whether every key carries the sync id or a fresh UUID: no other attempt can have
    /// created it.
    unique_keys: bool,
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
    /// A Content-Type and, for data files, the id of the attempt that writes them (the proof
    /// of authorship a clean-up reads back), where the store takes attributes.
    fn attributes(&self, content_type: &str, attempt: Option<&str>) -> Attributes {
        let mut attributes = Attributes::new();
        if self.attributes_supported.load(Ordering::Relaxed) {
            attributes.insert(Attribute::ContentType, content_type.to_owned().into());
            if let Some(attempt) = attempt {
                attributes.insert(
                    Attribute::Metadata(ATTEMPT_METADATA.into()),
                    attempt.to_owned().into(),
                );
            }
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

/// Put `payload` at `path`, with a Content-Type where the store takes one; sent again after
/// a failure on the way (a `Create` that landed the first time then answers
/// `AlreadyExists`, which the caller resolves).
async fn put_object(
    cfg: &Config,
    path: &Path,
    payload: PutPayload,
    mode: PutMode,
    content_type: &str,
    attempt: Option<&str>,
) -> object_store::Result<object_store::PutResult> {
    retry::send("put", || async {
        loop {
            let attributes = cfg.attributes(content_type, attempt);
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
    })
    .await
}

fn store(cfg: &Config) -> &Arc<dyn ObjectStore> {
    cfg.connection.store()
}

fn too_many_attempts(cfg: &Config) -> Error {
    Error::Config {
        reason: format!(
            "the key template `{}` named {MAX_KEY_ATTEMPTS} keys in a row that are taken; give it a part number or a sync id",
            cfg.template
        ),
    }
}

fn crc_text(crc: u64) -> String {
    format!(
        "crc64nvme:{}",
        base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
    )
}

/// The ETag of the object at `key` when this attempt wrote it: a write sent again after its
/// first answer was lost meets its own landing. Only the attempt id the object carries (or
/// a key that carries the sync id) says so: equal bytes could be another writer's.
async fn own_landing(cfg: &Config, key: &Path, sync_id: &str) -> Result<Option<Option<String>>> {
    Ok(match inspect(&cfg.connection, key).await? {
        Some((meta, attempt)) if cfg.unique_keys || attempt.as_deref() == Some(sync_id) => {
            Some(meta.e_tag)
        }
        _ => None,
    })
}

async fn put_json(cfg: &Config, path: &Path, json: Vec<u8>, mode: PutMode) -> Result<()> {
    put_object(
        cfg,
        path,
        PutPayload::from(json),
        mode,
        "application/json",
        None,
    )
    .await
    .map(|_| ())
    .map_err(|e| Error::store("put", cfg.connection.uri(path), e))
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
    /// What `begin` finished or undid of earlier attempts, for the report.
    recovery: Option<Cleanup>,
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

enum Upload {
    Buffered {
        chunks: Vec<Bytes>,
        len: usize,
    },
    /// A multipart upload, and its id when the store names it.
    Multipart(WriteMultipart, Option<String>),
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
    /// Bytes handed to the upload so far.
    sent: u64,
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
    /// Keys this attempt named for a file (each names one file).
    used: HashSet<String>,
    writes: u64,
    journal: Journal,
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
        list_manifests(&self.cfg.connection).await
    }

    /// Read one manifest.
    pub async fn read_manifest(&self, dump_id: u64) -> Result<Option<Manifest>> {
        read_manifest(&self.cfg.connection, dump_id).await
    }

    /// The connection the sink writes through.
    pub fn connection(&self) -> &Connection {
        &self.cfg.connection
    }
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

    /// The next key of a stream's partition that this attempt has not named yet.
    async fn next_key(
        &mut self,
        cfg: &Config,
        stream: &StreamId,
        partition: &PartitionKey,
        opened_at: DateTime<Utc>,
    ) -> Result<Path> {
        let slot = (stream.clone(), partition.clone());
        if !self.next_part.contains_key(&slot) {
            let first = self
                .first_free_part(cfg, stream, partition, opened_at)
                .await?;
            self.next_part.insert(slot.clone(), first);
        }
        for _ in 0..MAX_KEY_ATTEMPTS {
            let part = self.next_part.entry(slot.clone()).or_insert(0);
            let number = *part;
            *part += 1;
            let key = self.render(cfg, stream, partition, opened_at, number)?;
            // Two partitions can render one key (streams of two namespaces and a template
            // without the namespace, an hour that repeats when the clock goes back): a key
            // names one file of the sync.
            if self.used.insert(key.to_string()) {
                return Ok(key);
            }
        }
        Err(too_many_attempts(cfg))
    }

    /// The first part number of a partition whose key no object holds: one listing of the
    /// folder the keys share, instead of meeting every earlier delivery's file with a
    /// conditional put that fails. (The conditional puts still decide; this only saves
    /// requests.) Keys that carry the sync id or a fresh UUID start at 0.
    async fn first_free_part(
        &mut self,
        cfg: &Config,
        stream: &StreamId,
        partition: &PartitionKey,
        opened_at: DateTime<Utc>,
    ) -> Result<u64> {
        if cfg.unique_keys {
            return Ok(0);
        }
        let a = self.render(cfg, stream, partition, opened_at, 0)?;
        let b = self.render(cfg, stream, partition, opened_at, 1)?;
        let common: usize = a
            .as_ref()
            .bytes()
            .zip(b.as_ref().bytes())
            .take_while(|(x, y)| x == y)
            .count();
        let folder = a
            .as_ref()
            .get(..common)
            .and_then(|c| c.rfind('/'))
            .and_then(|at| a.as_ref().get(..at))
            .unwrap_or_default();
        let folder = Path::from(folder);
        let taken: HashSet<String> = retry::send("list", || {
            store(cfg)
                .list(Some(&folder))
                .map_ok(|m| m.location.to_string())
                .try_collect()
        })
        .await
        .map_err(|e| Error::store("list", cfg.connection.uri(&folder), e))?;
        let mut part = 0;
        while part <= taken.len() as u64 {
            if !taken.contains(
                self.render(cfg, stream, partition, opened_at, part)?
                    .as_ref(),
            ) {
                break;
            }
            part += 1;
        }
        Ok(part)
    }

    /// `key`, or the next key after it that no object holds (for a multipart upload, which
    /// cannot move to another key once its parts are sent). Keys that carry the sync id or
    /// a fresh UUID are free by construction.
    async fn free_key(
        &mut self,
        cfg: &Config,
        stream: &StreamId,
        partition: &PartitionKey,
        opened_at: DateTime<Utc>,
        mut key: Path,
    ) -> Result<Path> {
        if cfg.unique_keys {
            return Ok(key);
        }
        for _ in 0..MAX_KEY_ATTEMPTS {
            match retry::send("head", || store(cfg).head(&key)).await {
                Err(object_store::Error::NotFound { .. }) => return Ok(key),
                Ok(_) => {
                    tracing::info!(key = %key, "key taken; moving to the next part number");
                    key = self.next_key(cfg, stream, partition, opened_at).await?;
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
        let key = self.next_key(cfg, stream, &partition, opened_at).await?;
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
            sent: 0,
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
        file.sent += bytes.len() as u64;
        match &mut file.upload {
            Upload::Multipart(upload, _) => {
                upload.put(bytes);
                upload
                    .wait_for_capacity(cfg.max_concurrent_uploads)
                    .await
                    .map_err(|e| Error::store("upload", cfg.connection.uri(&file.key), e))?;
                failpoint::hit("sink.upload.after_part");
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
        let Some((stream, partition, opened_at, current)) = self.open.get(index).map(|f| {
            (
                f.stream.clone(),
                f.partition.clone(),
                f.opened_at,
                f.key.clone(),
            )
        }) else {
            return Ok(());
        };
        // Once parts are sent the upload cannot move to another key: take a free one now.
        let key = self
            .free_key(cfg, &stream, &partition, opened_at, current)
            .await?;
        self.journal
            .write(
                &cfg.connection,
                Entry::UploadStart {
                    key: key.to_string(),
                },
            )
            .await?;
        let started = loop {
            let attributes = cfg.attributes(&cfg.content_type, Some(&self.ctx.sync_id));
            let options = PutMultipartOptions {
                attributes: attributes.clone(),
                ..PutMultipartOptions::default()
            };
            match retry::send("start upload", || {
                cfg.connection.start_upload(&key, options.clone())
            })
            .await
            {
                Ok(started) => break started,
                Err(e) if cfg.refused_attributes(&e, &attributes) => continue,
                Err(e) => return Err(Error::store("upload", cfg.connection.uri(&key), e)),
            }
        };
        failpoint::hit("sink.upload.started");
        if let Some(id) = &started.id {
            self.journal
                .write(
                    &cfg.connection,
                    Entry::Upload {
                        key: key.to_string(),
                        id: id.clone(),
                    },
                )
                .await?;
        }
        failpoint::hit("sink.upload.after_start");
        let id = started.id.clone();
        let mut writer = WriteMultipart::new_with_chunk_size(started.upload, cfg.part_size);
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
        file.upload = Upload::Multipart(writer, id);
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
        file.sent += tail.len() as u64;
        let crc = file.checksum.finalize();
        if file.sent != size {
            return Err(Error::Protocol(format!(
                "the encoder of {} reported {size} bytes but produced {}",
                cfg.connection.uri(&file.key),
                file.sent
            )));
        }
        let e_tag = match file.upload {
            Upload::Multipart(mut upload, id) => {
                upload.put(tail);
                // Upload every part while the upload can still be aborted.
                if let Err(e) = upload.wait_for_capacity(0).await {
                    if let Err(abort) = upload.abort().await {
                        tracing::warn!(key = %file.key, error = %abort, "could not abort a multipart upload");
                    }
                    return Err(Error::store("upload", cfg.connection.uri(&file.key), e));
                }
                self.complete(cfg, upload, id.as_deref(), &file.key).await?
            }
            Upload::Buffered { mut chunks, .. } => {
                chunks.push(tail);
                let payload: PutPayload = chunks.into_iter().collect();
                let slot = (&file.stream, &file.partition, file.opened_at);
                let (key, e_tag) = if cfg.connection.is_local_folder() {
                    self.put_file_local(cfg, slot, file.key.clone(), payload)
                        .await?
                } else {
                    self.put_file(cfg, slot, file.key.clone(), payload).await?
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
            checksum: crc_text(crc),
            time_range: file.time_range,
        });
        Ok(())
    }

    /// Create a file of one PUT at its key, or the next free one.
    async fn put_file(
        &mut self,
        cfg: &Config,
        (stream, partition, opened_at): (&StreamId, &PartitionKey, DateTime<Utc>),
        mut key: Path,
        payload: PutPayload,
    ) -> Result<(Path, Option<String>)> {
        let attempt = self.ctx.sync_id.clone();
        for _ in 0..MAX_KEY_ATTEMPTS {
            self.journal
                .write(
                    &cfg.connection,
                    Entry::Put {
                        key: key.to_string(),
                    },
                )
                .await?;
            failpoint::hit("sink.file.before_put");
            let put = put_object(
                cfg,
                &key,
                payload.clone(),
                PutMode::Create,
                &cfg.content_type,
                Some(&attempt),
            )
            .await;
            let e_tag = match put {
                Ok(result) => result.e_tag,
                Err(object_store::Error::AlreadyExists { .. }) => {
                    // Taken, or this very PUT landed on a try whose answer was lost.
                    match own_landing(cfg, &key, &attempt).await? {
                        Some(e_tag) => e_tag,
                        None if cfg.unique_keys => {
                            return Err(Error::Protocol(format!(
                                "{} exists, though its key carries this sync's id",
                                cfg.connection.uri(&key)
                            )));
                        }
                        None => {
                            tracing::info!(key = %key, "key taken; moving to the next part number");
                            key = self.next_key(cfg, stream, partition, opened_at).await?;
                            continue;
                        }
                    }
                }
                Err(e) => return Err(Error::store("put", cfg.connection.uri(&key), e)),
            };
            self.journal.push(Entry::Created {
                key: key.to_string(),
                e_tag: e_tag.clone(),
            });
            failpoint::hit("sink.file.after_put");
            return Ok((key, e_tag));
        }
        Err(too_many_attempts(cfg))
    }

    /// Create a file on a local folder at its key, or the next free one: a staging file
    /// hard-linked into place (the link fails when the key is taken), left linked until
    /// the journal records the new file, so that a clean-up can tell it is this attempt's.
    async fn put_file_local(
        &mut self,
        cfg: &Config,
        (stream, partition, opened_at): (&StreamId, &PartitionKey, DateTime<Utc>),
        mut key: Path,
        payload: PutPayload,
    ) -> Result<(Path, Option<String>)> {
        for _ in 0..MAX_KEY_ATTEMPTS {
            let uri = cfg.connection.uri(&key);
            self.journal
                .write(
                    &cfg.connection,
                    Entry::UploadStart {
                        key: key.to_string(),
                    },
                )
                .await?;
            let started = cfg
                .connection
                .start_upload(&key, PutMultipartOptions::default())
                .await
                .map_err(|e| Error::store("put", uri.clone(), e))?;
            let Some(id) = started.id else {
                return Err(Error::Protocol(format!(
                    "the local upload of {uri} has no id"
                )));
            };
            self.journal
                .write(
                    &cfg.connection,
                    Entry::Upload {
                        key: key.to_string(),
                        id: id.clone(),
                    },
                )
                .await?;
            failpoint::hit("sink.file.before_put");
            let mut upload = started.upload;
            let written = match upload.put_part(payload.clone()).await {
                Ok(()) => upload.complete().await,
                Err(e) => Err(e),
            };
            match written {
                Ok(result) => {
                    failpoint::hit("sink.file.after_put");
                    self.release(cfg, &key, &id, result.e_tag.clone()).await?;
                    return Ok((key, result.e_tag));
                }
                Err(object_store::Error::AlreadyExists { .. }) => {
                    tracing::info!(key = %key, "key taken; moving to the next part number");
                    key = self.next_key(cfg, stream, partition, opened_at).await?;
                }
                Err(e) => {
                    let _ = cfg.connection.abort_upload(&key, &id).await;
                    return Err(Error::store("put", uri, e));
                }
            }
        }
        Err(too_many_attempts(cfg))
    }

    /// On a local folder: record the new file, then release the staging file that proved it
    /// was this attempt's.
    async fn release(
        &mut self,
        cfg: &Config,
        key: &Path,
        id: &str,
        e_tag: Option<String>,
    ) -> Result<()> {
        self.journal
            .write(
                &cfg.connection,
                Entry::Created {
                    key: key.to_string(),
                    e_tag,
                },
            )
            .await?;
        cfg.connection
            .abort_upload(key, id)
            .await
            .map_err(|e| Error::store("release", cfg.connection.uri(key), e))
    }

    /// Complete a multipart upload whose parts are all sent.
    async fn complete(
        &mut self,
        cfg: &Config,
        upload: WriteMultipart,
        id: Option<&str>,
        key: &Path,
    ) -> Result<Option<String>> {
        failpoint::hit("sink.upload.before_complete");
        let e_tag = match upload.finish().await {
            Ok(result) => result.e_tag,
            // A completion sent again after its first answer was lost finds the upload
            // gone (NotFound) or the key taken by itself (AlreadyExists). Another writer
            // that took the key in the meantime gets the whole sync failed: the parts are
            // sent and cannot move to another key, and nothing was overwritten.
            Err(
                e @ (object_store::Error::AlreadyExists { .. }
                | object_store::Error::NotFound { .. }
                | object_store::Error::Precondition { .. }),
            ) => match own_landing(cfg, key, &self.ctx.sync_id).await? {
                Some(e_tag) if !cfg.connection.is_local_folder() => e_tag,
                _ => {
                    return Err(Error::Store {
                        operation: "complete the upload of",
                        uri: cfg.connection.uri(key),
                        source: e,
                    });
                }
            },
            Err(e) => return Err(Error::store("upload", cfg.connection.uri(key), e)),
        };
        failpoint::hit("sink.upload.after_complete");
        match id {
            Some(id) if cfg.connection.is_local_folder() => {
                self.release(cfg, key, id, e_tag.clone()).await?;
            }
            _ => self.journal.push(Entry::Created {
                key: key.to_string(),
                e_tag: e_tag.clone(),
            }),
        }
        Ok(e_tag)
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
        crate::state::validate_key(&ctx.sync_id)?;
        let recovery = recovery::clean_attempts(&self.cfg.connection, &ctx.pipeline_id)
            .instrument(tracing::info_span!("recover", pipeline = %ctx.pipeline_id))
            .await?;
        if recovery.attempts > 0 || !recovery.left.is_empty() {
            tracing::info!(
                attempts = recovery.attempts,
                deleted = recovery.deleted,
                aborted = recovery.aborted,
                left = recovery.left.len(),
                "finished the earlier attempts of this pipeline"
            );
        }
        // A sync that commits in chunks begins once per chunk: the report tells all.
        self.recovery = Some(match self.recovery.take() {
            Some(mut earlier) => {
                earlier.attempts += recovery.attempts;
                earlier.deleted += recovery.deleted;
                earlier.aborted += recovery.aborted;
                earlier.left.extend(recovery.left);
                earlier.unfinished |= recovery.unfinished;
                earlier
            }
            None => recovery,
        });
        self.last_dump_id = list_manifests(&self.cfg.connection)
            .await?
            .last()
            .map(|(id, _)| *id);
        let dir = recovery::attempts_dir(&self.cfg.connection, &ctx.pipeline_id)?
            .join(ctx.sync_id.as_str());
        let mut journal = Journal::new(dir, &ctx.sync_id);
        journal.push(Entry::Begin {
            pipeline_id: ctx.pipeline_id.clone(),
            unique_keys: self.cfg.unique_keys,
        });
        self.sync = Some(InProgress {
            ctx: ctx.clone(),
            open: Vec::new(),
            closed: Vec::new(),
            next_part: HashMap::new(),
            used: HashSet::new(),
            writes: 0,
            journal,
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
            // Nothing was written: there is no journal to remove (the begin entry was never
            // flushed), or only records of files that were never created.
            if sync.journal.records > 0 {
                self.sync = Some(sync);
                self.abort().await?;
            }
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
            sync.journal
                .write(&cfg.connection, Entry::Commit { dump_id })
                .await?;
            failpoint::hit("sink.commit.before_manifest");
            // A run that lost its lease while closing files stops here.
            request.check_fence().await?;
            let path = manifest_path(&cfg.connection, dump_id)?;
            match put_json(&cfg, &path, manifest.to_json()?, PutMode::Create).await {
                Ok(()) => break,
                Err(Error::Store {
                    source: object_store::Error::AlreadyExists { .. },
                    ..
                }) if attempts < MAX_KEY_ATTEMPTS => {
                    // Ours, if a put sent again after its first answer was lost landed.
                    let existing = read_manifest(&cfg.connection, dump_id).await?;
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
        failpoint::hit("sink.commit.after_manifest");
        tracing::info!(dump_id, files = files.len(), "delivery committed");

        // The delivery is committed; what follows is tidying, which the next begin finishes
        // from the journal if it fails here.
        let (pipeline_id, sync_id) = (sync.ctx.pipeline_id.clone(), sync.ctx.sync_id.clone());
        drop(sync);
        if let Err(e) = finish(&cfg, &pipeline_id, &sync_id, dump_id, &manifest).await {
            tracing::warn!(error = %e, "the delivery is committed; the next sync finishes retiring and tidying");
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
        // Uploads with an id in the journal are aborted by the clean-up below; others here.
        let recorded: HashSet<String> = sync
            .journal
            .entries()
            .iter()
            .filter_map(|e| match e {
                Entry::Upload { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect();
        for file in sync.open.drain(..) {
            if let Upload::Multipart(upload, _) = file.upload
                && !recorded.contains(file.key.as_ref())
                && let Err(e) = upload.abort().await
            {
                tracing::warn!(key = %file.key, error = %e, "could not abort a multipart upload");
            }
        }
        // Nothing is created before the journal says so: without a record, nothing to undo.
        if sync.journal.records == 0 {
            return Ok(());
        }
        // Undo from the journal as this attempt knows it (written or not).
        let entries: Vec<Entry> = sync.journal.entries().to_vec();
        let manifests = recovery::read_manifests(&cfg.connection).await?;
        let mut committed = Committed::load(&cfg.connection, &manifests);
        let outcome = recovery::clean_attempt(
            &cfg.connection,
            &sync.ctx.pipeline_id,
            &sync.ctx.sync_id,
            &entries,
            &mut sync.journal,
            &manifests,
            &mut committed,
        )
        .await?;
        if !outcome.left.is_empty() {
            tracing::warn!(
                left = outcome.left.len(),
                "the aborted attempt left files in place"
            );
        }
        if outcome.unfinished {
            tracing::warn!("the aborted attempt's journal stays for the next sync to finish");
            return Ok(());
        }
        recovery::delete_journal(&cfg.connection, sync.journal.written()).await?;
        Ok(())
    }

    async fn committed_checkpoint(&mut self, pipeline_id: &str) -> Result<Option<u64>> {
        for (dump_id, _) in list_manifests(&self.cfg.connection)
            .await?
            .into_iter()
            .rev()
        {
            let Some(manifest) = read_manifest(&self.cfg.connection, dump_id).await? else {
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

    fn annotate(&mut self, report: &mut SyncReport) {
        if let Some(r) = self.recovery.take() {
            report.recovery = Some(s3conn_layout::report::RecoveryReport {
                attempts: r.attempts,
                deleted: r.deleted,
                aborted_uploads: r.aborted,
                left: r
                    .left
                    .into_iter()
                    .map(|(key, reason)| s3conn_layout::report::LeftFile { key, reason })
                    .collect(),
            });
        }
    }

    fn request_stats(&self) -> Option<Arc<RequestStats>> {
        Some(self.cfg.connection.request_stats_handle())
    }
}

/// After the manifest: retire what a full refresh replaced, then delete the journal.
async fn finish(
    cfg: &Config,
    pipeline_id: &str,
    sync_id: &str,
    dump_id: u64,
    manifest: &Manifest,
) -> Result<()> {
    if manifest.tables.iter().any(|t| !t.incremental) {
        let manifests = recovery::read_manifests(&cfg.connection).await?;
        let mut committed = Committed::load(&cfg.connection, &manifests);
        committed.add(&cfg.connection, dump_id, manifest);
        let retired = recovery::retire(
            &cfg.connection,
            &committed,
            &manifests,
            pipeline_id,
            dump_id,
            manifest,
        )
        .await?;
        tracing::info!(
            deleted = retired.deleted,
            left = retired.left.len(),
            "previous generations retired"
        );
    }
    let dir = recovery::attempts_dir(&cfg.connection, pipeline_id)?;
    let found = crate::s3::journal::list(&cfg.connection, &dir).await?;
    if let Some(records) = found.attempts.get(sync_id) {
        recovery::delete_journal(
            &cfg.connection,
            records.iter().map(|(p, _)| p.clone()).collect(),
        )
        .await?;
    }
    Ok(())
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
