//! [`S3Source`]: pull files from a bucket, incrementally.
//!
//! Each stream is a prefix and a format. A read lists the prefix, keeps the objects whose
//! format matches (by extension, or any extension-less object when the stream names its
//! format), skips hidden paths (a segment starting with `_` or `.`), and reads every object
//! whose `(key, ETag)` it has not read before, oldest first. Reads are pinned to the ETag
//! seen in the listing, so an object rewritten mid-read is not mixed with its new version;
//! such an object is left for the next run.
//!
//! Row formats are streamed (one GET, decompressed on the fly, fed to the decoder in
//! chunks); Parquet is read with ranged GETs driven by its decoder. Memory is bounded by
//! the batch size and the read buffer, never by the object size.
//!
//! The state is the set of `(key, ETag)` pairs read, per stream. Full refresh reads every
//! object again and starts the stream's state afresh.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{Attribute, GetOptions, GetRange, ObjectMeta, ObjectStore};
use s3conn_auth::Connection;
use s3conn_formats::compression::{self, Compression, MAGIC_LEN};
use s3conn_formats::{
    DecodeInput, DecodeOptions, Decoder, FormatPlugin, RangedDecoder, RangedStep, Registry,
    StreamDecoder,
};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::record::{Batch, Position, StreamId, SyncMode};
use crate::source::{
    Notice, ReadRequest, Source, SourceMessage, SourceState, SourceStream, StreamInfo,
};

/// Bytes read from a decompressed object per decoder call.
const READ_CHUNK: usize = 256 << 10;

/// One stream of an [`S3Source`]: the objects under a prefix, in one format.
#[derive(Debug, Clone)]
pub struct S3StreamConfig {
    id: StreamId,
    prefix: String,
    format: Option<String>,
    options: DecodeOptions,
}

impl S3StreamConfig {
    /// The stream `name` reads the objects under `prefix` (relative to the connection's
    /// root), in whatever registered format their extensions name.
    pub fn new(name: impl AsRef<str>, prefix: impl Into<String>) -> Self {
        Self {
            id: StreamId::new(name),
            prefix: prefix.into(),
            format: None,
            options: DecodeOptions::default(),
        }
    }

    /// Set the stream's namespace.
    pub fn with_namespace(mut self, namespace: impl AsRef<str>) -> Self {
        self.id = self.id.with_namespace(namespace);
        self
    }

    /// Read only this format (a registered plugin name): objects with its extensions, and
    /// objects without an extension.
    pub fn with_format(mut self, format: impl Into<String>) -> Self {
        self.format = Some(format.into());
        self
    }

    /// Set the decode options (batch size, schema, error policy…).
    pub fn with_decode_options(mut self, options: DecodeOptions) -> Self {
        self.options = options;
        self
    }

    /// The stream.
    pub fn id(&self) -> &StreamId {
        &self.id
    }
}

/// Builds an [`S3Source`].
#[derive(Debug, Clone)]
pub struct S3SourceBuilder {
    connection: Connection,
    registry: Registry,
    streams: Vec<S3StreamConfig>,
    start_date: Option<DateTime<Utc>>,
}

impl S3SourceBuilder {
    /// Add a stream.
    pub fn with_stream(mut self, stream: S3StreamConfig) -> Self {
        self.streams.push(stream);
        self
    }

    /// Use this registry of format plugins (default: the built-ins).
    pub fn with_registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Ignore objects last modified before `start` (the start of a historical backfill).
    pub fn with_start_date(mut self, start: DateTime<Utc>) -> Self {
        self.start_date = Some(start);
        self
    }

    /// Check the configuration and build the source.
    pub fn build(self) -> Result<S3Source> {
        if self.streams.is_empty() {
            return Err(Error::Config {
                reason: "an S3 source needs at least one stream".into(),
            });
        }
        let mut names = HashSet::new();
        let mut streams = Vec::with_capacity(self.streams.len());
        for config in self.streams {
            if !names.insert(config.id.to_string()) {
                return Err(Error::Config {
                    reason: format!("the stream `{}` is configured twice", config.id),
                });
            }
            let plugin = match &config.format {
                Some(name) => Some(self.registry.get(name).map_err(|e| Error::Stream {
                    stream: config.id.clone(),
                    reason: e.to_string(),
                })?),
                None => None,
            };
            streams.push(ResolvedStream {
                prefix: self.connection.key(&config.prefix)?,
                config,
                plugin,
            });
        }
        Ok(S3Source {
            inner: Arc::new(Inner {
                connection: self.connection,
                registry: self.registry,
                streams,
                start_date: self.start_date,
            }),
        })
    }
}

#[derive(Debug)]
struct ResolvedStream {
    config: S3StreamConfig,
    prefix: Path,
    plugin: Option<Arc<dyn FormatPlugin>>,
}

#[derive(Debug)]
struct Inner {
    connection: Connection,
    registry: Registry,
    streams: Vec<ResolvedStream>,
    start_date: Option<DateTime<Utc>>,
}

/// Pulls files from a bucket; see the module documentation.
///
/// ```
/// # use std::sync::Arc;
/// use s3conn_core::auth::{Connection, ConnectionConfig};
/// use s3conn_core::s3::{S3Source, S3StreamConfig};
/// # let dir = tempfile::tempdir().unwrap();
/// let connection = ConnectionConfig::local(dir.path()).connect()?;
/// let source = S3Source::builder(connection)
///     .with_stream(S3StreamConfig::new("events", "landing/events").with_format("ndjson"))
///     .build()?;
/// # let _ = source;
/// # Ok::<(), s3conn_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct S3Source {
    inner: Arc<Inner>,
}

impl S3Source {
    /// Start building a source on `connection`.
    pub fn builder(connection: Connection) -> S3SourceBuilder {
        S3SourceBuilder {
            connection,
            registry: Registry::default(),
            streams: Vec::new(),
            start_date: None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    version: u32,
    #[serde(default)]
    streams: BTreeMap<String, StreamState>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StreamState {
    /// Objects read: key → ETag (empty when the store gives none).
    #[serde(default)]
    seen: BTreeMap<String, String>,
}

#[async_trait::async_trait]
impl Source for S3Source {
    async fn streams(&self) -> Result<Vec<StreamInfo>> {
        Ok(self
            .inner
            .streams
            .iter()
            .map(|s| StreamInfo::new(s.config.id.clone()))
            .collect())
    }

    async fn read(&self, request: ReadRequest) -> Result<SourceStream> {
        let state: State = match &request.state {
            None => State::default(),
            Some(SourceState(v)) => {
                serde_json::from_value(v.clone()).map_err(|e| Error::State {
                    key: "s3 source".into(),
                    reason: e.to_string(),
                })?
            }
        };
        let (tx, rx) = mpsc::channel(2);
        let inner = Arc::clone(&self.inner);
        let task = tokio::spawn(async move {
            let out = Emitter { tx };
            if let Err(e) = inner.read_all(&request, state, &out).await {
                let _ = out.tx.send(Err(e)).await;
            }
        });
        let guard = AbortOnDrop(task);
        let stream = futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
            rx.recv().await.map(|m| (m, (rx, guard)))
        });
        Ok(stream.boxed())
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Emitter {
    tx: mpsc::Sender<Result<SourceMessage>>,
}

impl Emitter {
    async fn emit(&self, message: SourceMessage) -> Result<()> {
        self.tx
            .send(Ok(message))
            .await
            .map_err(|_| Error::Protocol("the reader of the source went away".into()))
    }
}

impl Inner {
    async fn read_all(&self, request: &ReadRequest, mut state: State, out: &Emitter) -> Result<()> {
        for stream in &self.streams {
            let id = &stream.config.id;
            let key = id.to_string();
            let previous = match request.mode(id) {
                SyncMode::FullRefresh => StreamState::default(),
                _ => state.streams.get(&key).cloned().unwrap_or_default(),
            };
            let next = self.read_stream(stream, previous, out).await?;
            state.streams.insert(key, next);
            let value = serde_json::to_value(&state).map_err(|e| Error::State {
                key: "s3 source".into(),
                reason: e.to_string(),
            })?;
            out.emit(SourceMessage::Checkpoint(SourceState(value)))
                .await?;
        }
        Ok(())
    }

    /// The objects of a stream to read now, oldest first.
    async fn plan(&self, stream: &ResolvedStream, seen: &StreamState) -> Result<Vec<ObjectMeta>> {
        let store = self.connection.store();
        let metas: Vec<ObjectMeta> = store
            .list(Some(&stream.prefix))
            .try_collect()
            .await
            .map_err(|e| Error::store("list", self.connection.uri(&stream.prefix), e))?;
        let depth = stream.prefix.parts().count();
        let mut todo: Vec<ObjectMeta> = metas
            .into_iter()
            .filter(|m| {
                !m.location.parts().skip(depth).any(|p| {
                    let p = p.as_ref();
                    p.starts_with('_') || p.starts_with('.')
                })
            })
            .filter(|m| self.plugin_for(stream, &m.location).is_some())
            .filter(|m| self.start_date.is_none_or(|start| m.last_modified >= start))
            .filter(|m| {
                seen.seen.get(m.location.as_ref()).map(String::as_str)
                    != Some(m.e_tag.as_deref().unwrap_or(""))
            })
            .collect();
        todo.sort_by(|a, b| {
            (a.last_modified, a.location.as_ref()).cmp(&(b.last_modified, b.location.as_ref()))
        });
        Ok(todo)
    }

    fn plugin_for(&self, stream: &ResolvedStream, key: &Path) -> Option<Arc<dyn FormatPlugin>> {
        let found = self.registry.for_path(key.as_ref());
        match &stream.plugin {
            None => found.map(|m| m.plugin),
            Some(wanted) => match found {
                Some(m) if m.plugin.name() == wanted.name() => Some(Arc::clone(wanted)),
                Some(_) => None,
                None => {
                    // No registered extension: accept a bare name (`data`, `data.gz`).
                    let name = key.filename().unwrap_or_default();
                    let stem = match name.rsplit_once('.') {
                        Some((stem, ext)) if Compression::from_extension(ext).is_some() => stem,
                        _ => name,
                    };
                    (!stem.contains('.')).then(|| Arc::clone(wanted))
                }
            },
        }
    }

    async fn read_stream(
        &self,
        stream: &ResolvedStream,
        mut state: StreamState,
        out: &Emitter,
    ) -> Result<StreamState> {
        let id = &stream.config.id;
        let todo = self.plan(stream, &state).await?;
        tracing::info!(stream = %id, objects = todo.len(), "reading new objects");
        for meta in todo {
            let Some(plugin) = self.plugin_for(stream, &meta.location) else {
                continue;
            };
            let uri = self.connection.uri(&meta.location);
            let span = tracing::debug_span!("object", %uri, size = meta.size);
            let _enter = span.enter();
            match self
                .read_object(id, &plugin, &stream.config.options, &meta, &uri, out)
                .await
            {
                Ok(outcome) => {
                    if outcome.skipped > 0 {
                        out.emit(SourceMessage::Notice(Notice::SkippedRows {
                            stream: id.clone(),
                            uri: uri.clone(),
                            rows: outcome.skipped,
                        }))
                        .await?;
                    }
                    out.emit(SourceMessage::Notice(Notice::ObjectRead {
                        stream: id.clone(),
                        uri,
                        rows: outcome.rows,
                        bytes: meta.size,
                    }))
                    .await?;
                    state.seen.insert(
                        meta.location.to_string(),
                        meta.e_tag.clone().unwrap_or_default(),
                    );
                }
                Err(Error::Store {
                    source: object_store::Error::Precondition { .. },
                    ..
                }) => {
                    tracing::info!(%uri, "the object changed after it was listed; it is read on the next run");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(state)
    }

    async fn read_object(
        &self,
        stream: &StreamId,
        plugin: &Arc<dyn FormatPlugin>,
        options: &DecodeOptions,
        meta: &ObjectMeta,
        uri: &str,
        out: &Emitter,
    ) -> Result<Outcome> {
        let read_err = |source| Error::Read {
            uri: uri.to_owned(),
            source,
        };
        let decoder = plugin
            .decoder(&DecodeInput::with_size(meta.size), options)
            .map_err(read_err)?;
        let mut tag = Tagger {
            stream: stream.clone(),
            origin: uri,
            version: meta.e_tag.as_deref(),
            rows: 0,
        };
        let skipped = match decoder {
            Decoder::Stream(mut decoder) => {
                self.read_streamed(
                    &mut *decoder,
                    plugin.is_self_compressing(),
                    meta,
                    uri,
                    &mut tag,
                    out,
                )
                .await?
            }
            Decoder::Ranged(mut decoder) => {
                self.read_ranged(&mut *decoder, meta, uri, &mut tag, out)
                    .await?;
                0
            }
        };
        Ok(Outcome {
            rows: tag.rows,
            skipped,
        })
    }

    fn pinned(meta: &ObjectMeta) -> GetOptions {
        GetOptions {
            if_match: meta.e_tag.clone(),
            ..GetOptions::default()
        }
    }

    async fn read_streamed(
        &self,
        decoder: &mut dyn StreamDecoder,
        self_compressing: bool,
        meta: &ObjectMeta,
        uri: &str,
        tag: &mut Tagger<'_>,
        out: &Emitter,
    ) -> Result<u64> {
        let read_err = |source| Error::Read {
            uri: uri.to_owned(),
            source,
        };
        let store = self.connection.store();
        let result = store
            .get_opts(&meta.location, Self::pinned(meta))
            .await
            .map_err(|e| Error::store("get", uri, e))?;
        let encoding = result
            .attributes
            .get(&Attribute::ContentEncoding)
            .map(|v| v.to_string());
        let mut body = result.into_stream();

        // Peek at the first bytes to detect compression.
        let mut head = Vec::new();
        let mut head_len = 0;
        while head_len < MAGIC_LEN {
            match body.next().await {
                Some(Ok(chunk)) => {
                    head_len += chunk.len();
                    head.push(chunk);
                }
                Some(Err(e)) => return Err(Error::store("get", uri, e)),
                None => break,
            }
        }
        let magic: Vec<u8> = head
            .iter()
            .flat_map(|c| c.iter().copied())
            .take(MAGIC_LEN)
            .collect();
        let codec = if self_compressing {
            Compression::None
        } else {
            compression::detect(&magic, encoding.as_deref(), Some(meta.location.as_ref()))
                .map_err(read_err)?
        };
        let chained = futures::stream::iter(head.into_iter().map(Ok))
            .chain(body)
            .map_err(std::io::Error::other);
        let reader = tokio_util::io::StreamReader::new(chained);
        let mut reader = compression::decompress(codec, reader);

        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|e| read_err(s3conn_formats::Error::from(e)))?;
            if n == 0 {
                break;
            }
            decoder
                .decode(buf.get(..n).unwrap_or_default())
                .map_err(read_err)?;
            while let Some(batch) = decoder.next_batch() {
                out.emit(SourceMessage::Batch(tag.batch(batch))).await?;
            }
        }
        decoder.finish().map_err(read_err)?;
        while let Some(batch) = decoder.next_batch() {
            out.emit(SourceMessage::Batch(tag.batch(batch))).await?;
        }
        Ok(decoder.skipped_rows())
    }

    async fn read_ranged(
        &self,
        decoder: &mut dyn RangedDecoder,
        meta: &ObjectMeta,
        uri: &str,
        tag: &mut Tagger<'_>,
        out: &Emitter,
    ) -> Result<()> {
        let read_err = |source| Error::Read {
            uri: uri.to_owned(),
            source,
        };
        let store: &Arc<dyn ObjectStore> = self.connection.store();
        loop {
            match decoder.try_decode().map_err(read_err)? {
                RangedStep::NeedsData(ranges) => {
                    let data = object_store::coalesce_ranges(
                        &ranges,
                        |range| async move {
                            let options = GetOptions {
                                range: Some(GetRange::Bounded(range)),
                                ..Self::pinned(meta)
                            };
                            store.get_opts(&meta.location, options).await?.bytes().await
                        },
                        object_store::OBJECT_STORE_COALESCE_DEFAULT,
                    )
                    .await
                    .map_err(|e| Error::store("get", uri, e))?;
                    decoder.push_ranges(ranges, data).map_err(read_err)?;
                }
                RangedStep::Batch(batch) => {
                    out.emit(SourceMessage::Batch(tag.batch(batch))).await?;
                }
                RangedStep::Finished => return Ok(()),
            }
        }
    }
}

struct Outcome {
    rows: u64,
    skipped: u64,
}

/// Tags the batches of one object with their stream and position, counting rows.
struct Tagger<'a> {
    stream: StreamId,
    origin: &'a str,
    version: Option<&'a str>,
    rows: u64,
}

impl Tagger<'_> {
    fn batch(&mut self, records: arrow_array::RecordBatch) -> Batch {
        let mut position = Position::new(self.origin, self.rows);
        if let Some(v) = self.version {
            position = position.with_version(v);
        }
        self.rows += records.num_rows() as u64;
        Batch::new(self.stream.clone(), records, position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceExt;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    fn source(store: Arc<InMemory>) -> S3Source {
        let connection = Connection::new(store, Path::default(), "memory://bucket");
        S3Source::builder(connection)
            .with_stream(S3StreamConfig::new("events", "in").with_format("ndjson"))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn hidden_and_foreign_files_are_skipped() {
        let store = Arc::new(InMemory::new());
        for key in [
            "in/a.jsonl",
            "in/b",
            "in/c.ndjson.gz",
            "in/_s3conn/x.jsonl",
            "in/.hidden.jsonl",
            "in/manifest.json",
            "in/d.parquet",
        ] {
            store
                .put(&Path::from(key), "{\"a\": 1}\n".into())
                .await
                .unwrap();
        }
        let read = source(store)
            .read_all(ReadRequest::default())
            .await
            .unwrap();
        let uris: Vec<String> = read
            .notices
            .iter()
            .filter_map(|n| match n {
                Notice::ObjectRead { uri, .. } => Some(uri.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            uris,
            [
                "memory://bucket/in/a.jsonl",
                "memory://bucket/in/b",
                "memory://bucket/in/c.ndjson.gz"
            ]
        );
        assert_eq!(read.rows(), 3);
    }

    #[tokio::test]
    async fn a_rewritten_object_is_read_again_as_a_new_version() {
        let store = Arc::new(InMemory::new());
        let key = Path::from("in/a.jsonl");
        store.put(&key, "{\"a\": 1}\n".into()).await.unwrap();
        let source = source(Arc::clone(&store));
        let first = source.read_all(ReadRequest::default()).await.unwrap();
        assert_eq!(first.rows(), 1);
        let again = source
            .read_all(ReadRequest::from_state(first.checkpoint.clone()))
            .await
            .unwrap();
        assert_eq!(again.rows(), 0);
        store
            .put(&key, "{\"a\": 1}\n{\"a\": 2}\n".into())
            .await
            .unwrap();
        let changed = source
            .read_all(ReadRequest::from_state(first.checkpoint))
            .await
            .unwrap();
        assert_eq!(changed.rows(), 2);
    }

    #[tokio::test]
    async fn a_malformed_state_is_a_clear_error() {
        let store = Arc::new(InMemory::new());
        let err = source(store)
            .read(ReadRequest::from_state(Some(SourceState(
                serde_json::json!({"streams": 5}),
            ))))
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("s3 source"), "{err}");
    }
}
