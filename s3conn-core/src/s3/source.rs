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
//! # State that stays small
//!
//! Per stream the state keeps a **settled watermark** and a **frontier**, not every object
//! ever read:
//!
//! - the watermark is a last-modified time below which every object has been read. After a
//!   run it moves up to the earliest of: now minus the settle lag, the oldest object listed
//!   but not read (it changed between listing and reading), and the start of the oldest
//!   multipart upload still open under the prefix (where the store lists them: S3's
//!   `ListMultipartUploads`). An object's last-modified time is when its upload *started*,
//!   so an upload that takes hours completes above the watermark and is read as new;
//! - the frontier is `(key, ETag, size, last-modified)` of the objects read whose
//!   last-modified time is at most the late window below the watermark.
//!
//! A listed object is then: in the frontier with the same ETag (read already, skipped);
//! in the frontier with another ETag (rewritten: read again, reported as an overwrite);
//! absent and at or above the watermark (new); absent and below the watermark but within the
//! late window (a **late arrival**: reported, and read, skipped or refused after the
//! stream's [`LatePolicy`]); absent and older than that (settled: read long ago, or there
//! before the first read). Keys that a complete listing no longer finds leave the frontier;
//! the others age out of it with the late window. Equal timestamps lose nothing: the
//! comparisons include the watermark itself.
//!
//! The state grows with the objects of the late window, never with the history. Full
//! refresh reads every object again and starts the stream's state afresh. A state written by
//! an earlier version (every key and ETag read) is read once and replaced.
//!
//! # Streams written by a key template
//!
//! A stream whose objects were named by a key template (the sink's, or any layout of
//! [`s3conn_layout::layouts`]) says so with [`S3StreamConfig::with_template`]. Keys are then
//! read back with the template, relative to the stream's prefix:
//!
//! - only keys the template could have rendered are read, and when the template names the
//!   stream (`${STREAM_NAME}`, `${NAMESPACE}`), only this stream's keys;
//! - every Hive-style folder (`year=2024`, `date=2024-11-27`, `country=FR`) becomes a string
//!   column of every record read from that object (Hive's null folder
//!   `__HIVE_DEFAULT_PARTITION__` gives a null), unless the file has a column of that name;
//! - with a start date, a template whose leading folders hold the time (`date=${DATE}`,
//!   `${YEAR}/${MONTH}`) is listed folder by folder from the start date on, instead of listing
//!   the whole prefix: a historical backfill of the last month of a ten-year bucket lists one
//!   month. A folder's time is then its objects' time: a folder before the start date is not
//!   read, whenever its objects were written.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, FieldRef, Schema, SchemaRef};
use chrono::{DateTime, TimeDelta, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{Attribute, GetOptions, GetRange, ObjectMeta, ObjectStore};
use s3conn_auth::Connection;
use s3conn_auth::credentials::{Clock, SystemClock};
use s3conn_formats::compression::{self, Compression, MAGIC_LEN};
use s3conn_formats::infer::{conform, merge_schemas};
use s3conn_formats::{
    DecodeInput, DecodeOptions, Decoder, FormatPlugin, RangedDecoder, RangedStep, Registry,
    StreamDecoder,
};
use s3conn_layout::template::{KeyMatcher, ParsedKey, RenderContext, Template};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::record::{Batch, Position, StreamId, SyncMode};
use crate::source::{
    CheckpointSignal, Notice, ReadRequest, Source, SourceMessage, SourceState, SourceStream,
    StreamInfo,
};

/// Bytes read from a decompressed object per decoder call.
const READ_CHUNK: usize = 256 << 10;

/// The most time folders a stream lists one by one; a longer range lists the whole prefix.
const MAX_PLANNED_PREFIXES: usize = 2_000;

/// Folder listings in flight at once.
const LIST_CONCURRENCY: usize = 8;

/// The largest object read ahead of its turn (it is fetched whole before it is decoded);
/// larger ones are streamed when their turn comes.
const READ_AHEAD_MAX_BYTES: u64 = 16 << 20;

/// How far below now the watermark stays unless configured: objects last modified in the
/// last five minutes are not yet taken as settled (clock skew between the store and this
/// host, and uploads on stores that cannot list them).
pub const DEFAULT_SETTLE_LAG: Duration = Duration::from_secs(5 * 60);

/// How far below the watermark the frontier reaches unless configured: an object that
/// appears up to a day below the watermark is recognised as a late arrival.
pub const DEFAULT_LATE_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// How often a stream whose keys are ordered is listed whole unless configured: daily.
pub const DEFAULT_FULL_LISTING_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// What a stream does with a late arrival: an object that appears below its settled
/// watermark, within the late window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LatePolicy {
    /// Read it, and report it (the default).
    #[default]
    Read,
    /// Report it and do not read it; it is not reported again.
    Skip,
    /// Fail the sync, naming the object.
    Fail,
}

impl std::str::FromStr for LatePolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "read" => Ok(Self::Read),
            "skip" => Ok(Self::Skip),
            "fail" => Ok(Self::Fail),
            other => Err(Error::Config {
                reason: format!(
                    "unknown late-arrival policy `{other}`: expected `read`, `skip` or `fail`"
                ),
            }),
        }
    }
}

/// One stream of an [`S3Source`]: the objects under a prefix, in one format.
#[derive(Debug, Clone)]
pub struct S3StreamConfig {
    id: StreamId,
    prefix: String,
    format: Option<String>,
    plugin: Option<Arc<dyn FormatPlugin>>,
    options: DecodeOptions,
    template: Option<Template>,
    merge_schemas: bool,
    keys_ordered: bool,
}

impl S3StreamConfig {
    /// The stream `name` reads the objects under `prefix` (relative to the connection's
    /// root), in whatever registered format their extensions name.
    pub fn new(name: impl AsRef<str>, prefix: impl Into<String>) -> Self {
        Self {
            id: StreamId::new(name),
            prefix: prefix.into(),
            format: None,
            plugin: None,
            options: DecodeOptions::default(),
            template: None,
            merge_schemas: false,
            keys_ordered: false,
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

    /// The key template the stream's objects were written with, relative to the prefix: it
    /// selects the stream's objects, adds its Hive-style folders as columns, and lets a start
    /// date skip whole folders (see the module documentation).
    ///
    /// ```
    /// use s3conn_core::s3::S3StreamConfig;
    /// use s3conn_core::layout::template::{Template, TemplateOptions};
    /// let options = TemplateOptions::default().with_hive(true).with_column("country");
    /// let template = Template::parse_with(
    ///     "${STREAM_NAME}/${DATE}/${country}/part-{part_number}{format_extension}",
    ///     &options,
    /// )?;
    /// // Reads users/date=2024-11-27/country=FR/part-0.parquet with columns `date` and `country`.
    /// let stream = S3StreamConfig::new("users", "exports").with_template(template);
    /// # Ok::<(), s3conn_core::Error>(())
    /// ```
    pub fn with_template(mut self, template: Template) -> Self {
        self.template = Some(template);
        self
    }

    /// Merge the schemas of the stream's objects into one and give every batch that schema:
    /// int64 widens to float64, a date to a timestamp, any other conflict to a string, and a
    /// column some objects lack is null there. The merged schema is kept in the source's
    /// state, so it only ever widens: later runs read new objects into it too.
    pub fn with_schema_merging(mut self, merge: bool) -> Self {
        self.merge_schemas = merge;
        self
    }

    /// Declare that the stream's keys sort in the order its objects are written (a
    /// zero-padded time or sequence number leads them). A run then lists only the keys after
    /// the last one it read (S3's `start-after`): its LIST requests follow the new objects,
    /// not the stream. A full listing still runs every
    /// [`with_full_listing_interval`](S3SourceBuilder::with_full_listing_interval) (a day by
    /// default) and reports a key that arrived out of order ([`Notice::OutOfOrder`]).
    pub fn with_keys_ordered(mut self, ordered: bool) -> Self {
        self.keys_ordered = ordered;
        self
    }

    /// Read only this plugin's format, with this plugin as it is configured (a CSV plugin
    /// with its own separator, say): objects with its extensions, and objects without an
    /// extension.
    ///
    /// ```
    /// use s3conn_core::formats::{csv::CsvFormat, FormatPlugin};
    /// use s3conn_core::s3::S3StreamConfig;
    /// let pipes = CsvFormat::csv().with_option("delimiter", "||")?;
    /// let stream = S3StreamConfig::new("orders", "exports/orders").with_plugin(pipes);
    /// # Ok::<(), s3conn_core::formats::Error>(())
    /// ```
    pub fn with_plugin(mut self, plugin: Arc<dyn FormatPlugin>) -> Self {
        self.format = Some(plugin.name().to_owned());
        self.plugin = Some(plugin);
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
    discovery: Discovery,
    read_concurrency: usize,
}

/// How a source tells new objects from those it read (see the module documentation).
#[derive(Debug, Clone)]
struct Discovery {
    settle_lag: TimeDelta,
    late_window: TimeDelta,
    late_policy: LatePolicy,
    full_listing_every: TimeDelta,
    clock: Arc<dyn Clock>,
}

impl Default for Discovery {
    fn default() -> Self {
        Self {
            settle_lag: delta(DEFAULT_SETTLE_LAG),
            late_window: delta(DEFAULT_LATE_WINDOW),
            late_policy: LatePolicy::default(),
            full_listing_every: delta(DEFAULT_FULL_LISTING_INTERVAL),
            clock: Arc::new(SystemClock),
        }
    }
}

impl Discovery {
    /// How often an ordered stream is listed whole: as configured, but never so rarely that
    /// a key that arrived out of order just after a listing falls below the late window
    /// before the next one finds it.
    fn full_listing_interval(&self) -> TimeDelta {
        let bound = self.late_window - self.settle_lag - TimeDelta::minutes(10);
        self.full_listing_every.min(bound).max(TimeDelta::zero())
    }

    /// The watermark after a run at `now`: up to now minus the settle lag, held at the oldest
    /// object left unread and the oldest open upload, never lower than before. An upload open
    /// for longer than the late window no longer holds it (an abandoned upload would hold it
    /// forever); if it completes, its object is older than the window and is not read.
    fn next_watermark(
        &self,
        before: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        oldest_unread: Option<DateTime<Utc>>,
        oldest_upload: Option<DateTime<Utc>>,
        stream: &StreamId,
    ) -> DateTime<Utc> {
        let settled = now - self.settle_lag;
        let mut bound = settled;
        if let Some(t) = oldest_unread {
            bound = bound.min(t);
        }
        if let Some(t) = oldest_upload {
            let limit = settled - self.late_window;
            if t < limit {
                tracing::warn!(%stream, started = %t.to_rfc3339(), "an upload open for longer than the late window no longer holds the watermark: abort it, or raise the late window");
            }
            bound = bound.min(t.max(limit));
        }
        before.map_or(bound, |w| w.max(bound))
    }
}

/// A duration as a chrono delta (a century at most: beyond is no different in practice).
fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d.min(Duration::from_secs(100 * 365 * 24 * 3600))).unwrap_or(TimeDelta::MAX)
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

    /// How long after its last-modified time an object counts as settled (default
    /// [`DEFAULT_SETTLE_LAG`]). The watermark never comes closer to now than this.
    pub fn with_settle_lag(mut self, lag: Duration) -> Self {
        self.discovery.settle_lag = delta(lag);
        self
    }

    /// How far below the watermark an object that appears is still recognised as a late
    /// arrival (default [`DEFAULT_LATE_WINDOW`]). The state keeps the objects read within
    /// it, so a longer window costs state; an object that appears further below is taken as
    /// settled and not read.
    pub fn with_late_window(mut self, window: Duration) -> Self {
        self.discovery.late_window = delta(window);
        self
    }

    /// What to do with a late arrival (default [`LatePolicy::Read`]).
    pub fn with_late_policy(mut self, policy: LatePolicy) -> Self {
        self.discovery.late_policy = policy;
        self
    }

    /// How often a stream with ordered keys ([`S3StreamConfig::with_keys_ordered`], or a
    /// template whose time folders lead) is listed whole to find keys that arrived out of
    /// order (default [`DEFAULT_FULL_LISTING_INTERVAL`]).
    ///
    /// A key that arrives out of order must be found while it is still within the late
    /// window, or it would be taken as settled: the listing comes at least every late window
    /// minus the settle lag and ten minutes of clock skew, whatever is set here.
    pub fn with_full_listing_interval(mut self, every: Duration) -> Self {
        self.discovery.full_listing_every = delta(every);
        self
    }

    /// Tell the time with this clock (tests move it).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.discovery.clock = clock;
        self
    }

    /// How many objects are read at once (default [`default_read_concurrency`]; at least
    /// one). Each runs in its own task, so decoding uses every core; batches still come out
    /// object by object, in the order a sequential read would give, and every read stays
    /// pinned to the ETag its object was listed with.
    pub fn with_read_concurrency(mut self, objects: usize) -> Self {
        self.read_concurrency = objects.max(1);
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
            let plugin = match (&config.plugin, &config.format) {
                (Some(plugin), _) => Some(Arc::clone(plugin)),
                (None, Some(name)) => Some(self.registry.get(name).map_err(|e| Error::Stream {
                    stream: config.id.clone(),
                    reason: e.to_string(),
                })?),
                (None, None) => None,
            };
            let layout = match &config.template {
                Some(template) => Some(StreamLayout {
                    matcher: template.matcher()?,
                    time_depth: time_depth(template, &config.id),
                    template: template.clone(),
                }),
                None => None,
            };
            streams.push(ResolvedStream {
                prefix: self.connection.key(&config.prefix)?,
                config,
                plugin,
                layout,
            });
        }
        Ok(S3Source {
            inner: Arc::new(Inner {
                connection: self.connection,
                registry: self.registry,
                streams,
                start_date: self.start_date,
                discovery: self.discovery,
                read_concurrency: self.read_concurrency,
            }),
        })
    }
}

#[derive(Debug)]
struct ResolvedStream {
    config: S3StreamConfig,
    prefix: Path,
    plugin: Option<Arc<dyn FormatPlugin>>,
    layout: Option<StreamLayout>,
}

/// What a stream lists to find its objects.
#[derive(Debug)]
enum Listing {
    /// Everything under its prefix.
    Whole(Path),
    /// Everything under `prefix` that sorts after `offset` (S3's start-after): from an
    /// ordered stream's resume point (`resumed`), or from the first folder of a start date.
    After {
        prefix: Path,
        offset: Path,
        resumed: bool,
    },
    /// Each of these folders.
    Folders(Vec<Path>),
}

impl Listing {
    /// Whether the listing would have found `key` had it been there.
    fn covers(&self, key: &str) -> bool {
        let under = |prefix: &Path, key: &str| {
            let prefix = prefix.as_ref();
            prefix.is_empty()
                || key
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        match self {
            Listing::Whole(prefix) => under(prefix, key),
            Listing::After { prefix, offset, .. } => under(prefix, key) && key > offset.as_ref(),
            Listing::Folders(folders) => folders.iter().any(|f| under(f, key)),
        }
    }
}

/// The uploads open under a stream's prefix.
#[derive(Debug, Default)]
struct OpenUploads {
    oldest: Option<DateTime<Utc>>,
    first_key: Option<String>,
}

/// What a stream's listing found.
#[derive(Debug)]
struct Plan {
    /// The objects to read, oldest first, with what each is.
    todo: Vec<(ObjectMeta, Verdict)>,
    /// Objects read before that are still there, in the same version, as the frontier
    /// keeps them.
    known: BTreeMap<String, Seen>,
    /// What was listed.
    listing: Listing,
    /// The greatest key listed that is the stream's and sorts before every open upload.
    last_key: Option<String>,
}

/// The template a stream's keys were written with, compiled for reading keys back.
#[derive(Debug)]
struct StreamLayout {
    template: Template,
    matcher: KeyMatcher,
    /// When the template's leading folders hold its time fields zero-padded, most
    /// significant first, keys sort in time order by their first `time_depth` folders (the
    /// stream then lists from the folder of the last key read).
    time_depth: Option<usize>,
}

/// Whether `template`'s leading folders sort in time order, and how many folders that
/// takes: rendered over three spans where a field that is not zero-padded, or that comes
/// before a coarser one, sorts out of order (a new year, month 9 to 10, day 9 to 10 with
/// every hour between), the folders must come out strictly ascending.
fn time_depth(template: &Template, stream: &StreamId) -> Option<usize> {
    // Folders of record times are written in any order: only the sync's or the file's
    // clock puts keys in the order they are written.
    let record_clock = template.variables().any(|v| match v {
        s3conn_layout::template::Variable::Time { clock, .. } => {
            clock.unwrap_or(template.options().clock()) == s3conn_layout::template::Clock::Record
        }
        _ => false,
    });
    if record_clock {
        return None;
    }
    let ctx = RenderContext::new(stream.name(), DateTime::<Utc>::UNIX_EPOCH)
        .with_optional_namespace(stream.namespace().map(str::to_owned));
    let at = |y, mo, d, h| {
        chrono::NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|d| d.and_hms_opt(h, 0, 0))
            .map(|t| t.and_utc())
    };
    let spans = [
        (at(2023, 12, 30, 0)?, at(2024, 1, 2, 0)?),
        (at(2024, 9, 29, 0)?, at(2024, 10, 2, 0)?),
        (at(2024, 1, 8, 20)?, at(2024, 1, 11, 4)?),
    ];
    let mut depth = None;
    for (from, to) in spans {
        let prefixes = template.prefixes(&ctx, from, to).ok()?;
        let ascending = prefixes.len() > 1
            && prefixes
                .windows(2)
                .all(|w| matches!(w, [a, b] if a < b && !b.starts_with(a.as_str())));
        if !ascending {
            return None;
        }
        depth = prefixes
            .first()
            .map(|p| p.trim_end_matches('/').split('/').count());
    }
    depth
}

impl ResolvedStream {
    /// The key relative to the stream's prefix.
    fn relative<'a>(&self, key: &'a Path) -> &'a str {
        let prefix = self.prefix.as_ref();
        let key = key.as_ref();
        if prefix.is_empty() {
            key
        } else {
            key.strip_prefix(prefix)
                .and_then(|k| k.strip_prefix('/'))
                .unwrap_or(key)
        }
    }

    /// What the stream's template reads out of `key`, when it has a template: `None` when
    /// the key is not one of this stream's (the template could not have rendered it, or it
    /// names another stream).
    fn parse_key(&self, key: &Path) -> Option<ParsedKey> {
        let layout = self.layout.as_ref()?;
        let parsed = layout.matcher.parse(self.relative(key))?;
        let id = &self.config.id;
        let stream_ok = parsed.get("STREAM_NAME").is_none_or(|s| s == id.name());
        let namespace_ok = layout
            .template
            .variables()
            .all(|v| *v != s3conn_layout::template::Variable::Namespace)
            || parsed.get("NAMESPACE") == id.namespace();
        (stream_ok && namespace_ok).then_some(parsed)
    }

    /// Whether the stream's keys sort in time order: declared, or read off its template.
    fn ordered(&self) -> bool {
        self.config.keys_ordered || self.layout.as_ref().is_some_and(|l| l.time_depth.is_some())
    }

    /// Where an ordered listing resumes: after the high-water key itself when the keys are
    /// declared ordered; when the order comes from the template, after the time folder the
    /// high-water key left last (keys inside one folder come in any order, and a writer that
    /// uploads late lands in the folder just left), else its own.
    fn resume_point(&self, state: &StreamState) -> Option<String> {
        let high_water = state.high_water.as_deref()?;
        if self.config.keys_ordered {
            return Some(high_water.to_owned());
        }
        Some(
            state
                .resume_from
                .clone()
                .unwrap_or_else(|| self.folder_of(high_water)),
        )
    }

    /// The time folder that holds `key`, for a stream whose order comes from its template
    /// (`key` itself otherwise).
    fn folder_of(&self, key: &str) -> String {
        let high_water = key;
        match self.layout.as_ref().and_then(|l| l.time_depth) {
            Some(depth) => {
                let base = self.prefix.as_ref();
                let relative = high_water
                    .strip_prefix(base)
                    .map(|k| k.trim_start_matches('/'))
                    .unwrap_or(high_water);
                let folders: Vec<&str> = relative.split('/').take(depth).collect();
                match (base.is_empty(), folders.join("/")) {
                    (true, folder) => folder,
                    (false, folder) => format!("{base}/{folder}"),
                }
            }
            _ => high_water.to_owned(),
        }
    }

    /// Whether `key` belongs to this stream (always, without a template).
    fn owns(&self, key: &Path) -> bool {
        self.layout.is_none() || self.parse_key(key).is_some()
    }
}

#[derive(Debug)]
struct Inner {
    connection: Connection,
    registry: Registry,
    streams: Vec<ResolvedStream>,
    start_date: Option<DateTime<Utc>>,
    discovery: Discovery,
    read_concurrency: usize,
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
            discovery: Discovery::default(),
            read_concurrency: default_read_concurrency(),
        }
    }
}

/// The memory a source's reads may hold at once, by default: with
/// [`READ_MEMORY_PER_OBJECT`] it bounds how many objects are read at a time.
pub const DEFAULT_READ_MEMORY: usize = 256 << 20;

/// What one object's read may hold (a Parquet row group's column chunks, or a row
/// format's read buffer, batch in progress and two batches waiting), as the default read
/// concurrency assumes it.
pub const READ_MEMORY_PER_OBJECT: usize = 64 << 20;

/// How many objects a source reads at once unless told
/// ([`S3SourceBuilder::with_read_concurrency`]): one more than the cores, so that a core
/// decodes while a request waits, and no more than [`DEFAULT_READ_MEMORY`] holds.
pub fn default_read_concurrency() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    // Both bounds are constants, the upper one above 1: clamp cannot panic.
    (cores + 1).clamp(1, (DEFAULT_READ_MEMORY / READ_MEMORY_PER_OBJECT).max(1))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    version: u32,
    #[serde(default)]
    streams: BTreeMap<String, StreamState>,
}

/// The version of the state this source writes.
const STATE_VERSION: u32 = 2;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StreamState {
    /// Every object last modified before this time has been read (or is settled).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "chrono::serde::ts_nanoseconds_option"
    )]
    watermark: Option<DateTime<Utc>>,
    /// The objects read that were last modified at most the late window below the watermark.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    frontier: BTreeMap<String, Seen>,
    /// With ordered keys: every listed key up to this one has been read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    high_water: Option<String>,
    /// With the order read off the template: the time folder of the high-water key before
    /// it last moved to a later folder. Listing resumes there, so that a file that lands in
    /// the folder just left (a writer that uploads a little late) is still found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resume_from: Option<String>,
    /// With ordered keys: when the stream was last listed whole.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "chrono::serde::ts_nanoseconds_option"
    )]
    listed_whole_at: Option<DateTime<Utc>>,
    /// Version 1's objects read (key → ETag): read once, then replaced by the frontier. Kept
    /// in a checkpoint taken before the stream is read (a chunk committed part-way).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    seen: BTreeMap<String, String>,
    /// The stream's merged schema, when schemas are merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schema: Option<Schema>,
}

/// An object read, as the frontier keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    /// Its ETag (empty when the store gives none).
    #[serde(rename = "e", default, skip_serializing_if = "String::is_empty")]
    e_tag: String,
    /// Its size.
    #[serde(rename = "s")]
    size: u64,
    /// Its last-modified time.
    #[serde(rename = "t", with = "chrono::serde::ts_nanoseconds")]
    modified: DateTime<Utc>,
}

impl Seen {
    fn of(meta: &ObjectMeta) -> Self {
        Self {
            e_tag: meta.e_tag.clone().unwrap_or_default(),
            size: meta.size,
            modified: meta.last_modified,
        }
    }
}

/// What a listed object is to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Read before, same version.
    Known,
    /// Not read before.
    New,
    /// Read before in another version.
    Overwritten,
    /// Not read before, and below the watermark within the late window.
    Late,
    /// Below the late window: read long ago, or settled before the first read.
    Settled,
}

impl StreamState {
    fn verdict(&self, meta: &ObjectMeta, late_window: TimeDelta) -> Verdict {
        let e_tag = meta.e_tag.as_deref().unwrap_or("");
        let key = meta.location.as_ref();
        let known = self
            .frontier
            .get(key)
            .map(|s| s.e_tag.as_str())
            .or_else(|| self.seen.get(key).map(String::as_str));
        match (known, self.watermark) {
            (Some(t), _) if t == e_tag => Verdict::Known,
            (Some(_), _) => Verdict::Overwritten,
            (None, Some(w)) if meta.last_modified < w => {
                if meta.last_modified >= w - late_window {
                    Verdict::Late
                } else {
                    Verdict::Settled
                }
            }
            (None, _) => Verdict::New,
        }
    }
}

#[async_trait::async_trait]
impl Source for S3Source {
    fn request_stats(&self) -> Option<Arc<s3conn_auth::http::RequestStats>> {
        Some(self.inner.connection.request_stats_handle())
    }

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
            if let Err(e) = Inner::read_all(&inner, &request, state, &out).await {
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

/// Where a read stands, for a checkpoint part-way through a stream: the state of the
/// streams before it, the stream's key in it, and the reader's signal.
struct Interim<'a> {
    state: &'a State,
    key: &'a str,
    wanted: &'a CheckpointSignal,
}

impl Interim<'_> {
    /// The source's state with the stream at `partial`.
    fn checkpoint(&self, partial: StreamState) -> Result<SourceState> {
        let mut state = self.state.clone();
        state.streams.insert(self.key.to_owned(), partial);
        state.version = STATE_VERSION;
        serde_json::to_value(&state)
            .map(SourceState)
            .map_err(|e| Error::State {
                key: "s3 source".into(),
                reason: e.to_string(),
            })
    }
}

impl Inner {
    async fn read_all(
        self: &Arc<Self>,
        request: &ReadRequest,
        mut state: State,
        out: &Emitter,
    ) -> Result<()> {
        for (index, stream) in self.streams.iter().enumerate() {
            let id = &stream.config.id;
            let key = id.to_string();
            let full_refresh = request.mode(id) == SyncMode::FullRefresh;
            let previous = if full_refresh {
                StreamState::default()
            } else {
                state.streams.get(&key).cloned().unwrap_or_default()
            };
            let at = Interim {
                state: &state,
                key: &key,
                wanted: &request.checkpoint_wanted,
            };
            let next = self
                .read_stream(index, previous, full_refresh, &at, out)
                .await?;
            state.streams.insert(key, next);
            state.version = STATE_VERSION;
            let value = serde_json::to_value(&state).map_err(|e| Error::State {
                key: "s3 source".into(),
                reason: e.to_string(),
            })?;
            out.emit(SourceMessage::Checkpoint(SourceState(value)))
                .await?;
        }
        Ok(())
    }

    /// How to list a stream's objects: its whole prefix, or, with a start date and a
    /// template whose leading folders hold the time, only what lies from the start date on.
    fn listing(&self, stream: &ResolvedStream, state: &StreamState) -> Result<Listing> {
        if stream.ordered()
            && let Some(high_water) = &state.high_water
        {
            let now = self.discovery.clock.now();
            let due = state
                .listed_whole_at
                .is_none_or(|t| now - t >= self.discovery.full_listing_interval());
            if !due {
                let point = stream
                    .resume_point(state)
                    .unwrap_or_else(|| high_water.clone());
                let offset = Path::parse(&point).map_err(|e| Error::State {
                    key: "s3 source".into(),
                    reason: format!("the stream's resume point `{point}` is not a key: {e}"),
                })?;
                return Ok(Listing::After {
                    prefix: stream.prefix.clone(),
                    offset,
                    resumed: true,
                });
            }
        }
        let whole = Listing::Whole(stream.prefix.clone());
        let (Some(layout), Some(start)) = (&stream.layout, self.start_date) else {
            return Ok(whole);
        };
        let id = &stream.config.id;
        let now = self.discovery.clock.now();
        let ctx = RenderContext::new(id.name(), now)
            .with_optional_namespace(id.namespace().map(str::to_owned));
        // A day past now: a writer whose clock runs ahead, or a zone ahead of UTC.
        let to = now + chrono::TimeDelta::days(1);
        let prefixes = match layout.template.prefixes(&ctx, start, to) {
            Ok(p) if !p.is_empty() => p,
            Ok(_) => return Ok(whole),
            Err(e) => {
                tracing::debug!(stream = %id, error = %e, "listing the whole prefix");
                return Ok(whole);
            }
        };
        let key = |relative: &str| -> Result<Path> {
            let relative = relative.trim_end_matches('/');
            let base = stream.prefix.as_ref();
            let key = match (base.is_empty(), relative.is_empty()) {
                (_, true) => base.to_owned(),
                (true, false) => relative.to_owned(),
                (false, false) => format!("{base}/{relative}"),
            };
            Path::parse(&key).map_err(|e| Error::Stream {
                stream: id.clone(),
                reason: format!(
                    "the template gives the folder `{key}`, which is not a valid key: {e}"
                ),
            })
        };
        // Folders that sort in time order (zero-padded fields, most significant first) are
        // listed in one go from the first one on, with S3's start-after: the cost grows with
        // the objects after the start date, not with the bucket.
        let in_time_order = prefixes
            .windows(2)
            .all(|w| matches!(w, [a, b] if a < b && !b.starts_with(a.as_str())));
        if let (true, Some(first), Some(last)) = (in_time_order, prefixes.first(), prefixes.last())
        {
            let common = first
                .char_indices()
                .zip(last.chars())
                .take_while(|((_, a), b)| a == b)
                .filter(|((_, a), _)| *a == '/')
                .last()
                .map_or("", |((i, _), _)| first.get(..i).unwrap_or(""));
            return Ok(Listing::After {
                prefix: key(common)?,
                offset: key(first)?,
                resumed: false,
            });
        }
        if prefixes.len() > MAX_PLANNED_PREFIXES {
            tracing::debug!(stream = %id, prefixes = prefixes.len(), "listing the whole prefix");
            return Ok(whole);
        }
        Ok(Listing::Folders(
            prefixes.iter().map(|p| key(p)).collect::<Result<_>>()?,
        ))
    }

    /// Everything under `prefix`: its first level of folders from one delimiter listing,
    /// then every folder listed at once, up to [`LIST_CONCURRENCY`] at a time. Folders
    /// whose name starts with `_` or `.` hold nothing a stream reads and are passed over. A
    /// store without delimiter listings is listed in one go.
    async fn list_whole(&self, prefix: &Path) -> Result<BoxStream<'static, Result<ObjectMeta>>> {
        let store = self.connection.store();
        let top = match store.list_with_delimiter(Some(prefix)).await {
            Ok(top) => top,
            Err(
                object_store::Error::NotSupported { .. }
                | object_store::Error::NotImplemented { .. },
            ) => {
                let uri = self.connection.uri(prefix);
                return Ok(store
                    .list(Some(prefix))
                    .map_err(move |e| Error::store("list", uri.clone(), e))
                    .boxed());
            }
            Err(e) => return Err(self.list_error(prefix, e)),
        };
        let folders: Vec<Path> = top
            .common_prefixes
            .into_iter()
            .filter(|folder| {
                folder
                    .filename()
                    .is_none_or(|name| !name.starts_with('_') && !name.starts_with('.'))
            })
            .collect();
        Ok(futures::stream::iter(top.objects.into_iter().map(Ok))
            .chain(self.list_folders(folders))
            .boxed())
    }

    /// Everything under each of `folders`, [`LIST_CONCURRENCY`] folders at a time.
    fn list_folders(&self, folders: Vec<Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let store = Arc::clone(self.connection.store());
        let connection = self.connection.clone();
        futures::stream::iter(folders)
            .map(move |folder| {
                let uri = connection.uri(&folder);
                store
                    .list(Some(&folder))
                    .map_err(move |e| Error::store("list", uri.clone(), e))
            })
            .flatten_unordered(LIST_CONCURRENCY)
            .boxed()
    }

    fn list_error(&self, prefix: &Path, source: object_store::Error) -> Error {
        Error::store("list", self.connection.uri(prefix), source)
    }

    /// What a stream's listing finds: the objects to read now, oldest first, and those
    /// read before that are still there.
    async fn plan(
        &self,
        stream: &ResolvedStream,
        state: &StreamState,
        uploads: &OpenUploads,
    ) -> Result<Plan> {
        let store = self.connection.store();
        let listing = self.listing(stream, state)?;
        tracing::debug!(stream = %stream.config.id, ?listing, "listing");
        // Taken object by object as the pages come: only what is to read and what the
        // frontier keeps stays in memory, not the whole listing.
        let mut listed: BoxStream<'static, Result<ObjectMeta>> = match &listing {
            Listing::Whole(prefix) => self.list_whole(prefix).await?,
            Listing::After { prefix, offset, .. } => {
                let uri = self.connection.uri(prefix);
                store
                    .list_with_offset(Some(prefix), offset)
                    .map_err(move |e| Error::store("list", uri.clone(), e))
                    .boxed()
            }
            Listing::Folders(folders) => self.list_folders(folders.clone()),
        };
        // Stores that ignore start-after are held to it here.
        let after = match &listing {
            Listing::After { offset, .. } => Some(offset.as_ref().to_owned()),
            _ => None,
        };
        let depth = stream.prefix.parts().count();
        let late_window = self.discovery.late_window;
        let mut plan = Plan {
            todo: Vec::new(),
            known: BTreeMap::new(),
            listing,
            last_key: None,
        };
        while let Some(meta) = listed.try_next().await? {
            let wanted = after
                .as_deref()
                .is_none_or(|offset| meta.location.as_ref() > offset)
                && !meta.location.parts().skip(depth).any(|p| {
                    let p = p.as_ref();
                    p.starts_with('_') || p.starts_with('.')
                })
                && self.plugin_for(stream, &meta.location).is_some()
                && stream.owns(&meta.location)
                && self
                    .start_date
                    .is_none_or(|start| meta.last_modified >= start);
            if !wanted {
                continue;
            }
            let before_uploads = uploads
                .first_key
                .as_deref()
                .is_none_or(|first| meta.location.as_ref() < first);
            if before_uploads && plan.last_key.as_deref() < Some(meta.location.as_ref()) {
                plan.last_key = Some(meta.location.to_string());
            }
            match state.verdict(&meta, late_window) {
                Verdict::Known => {
                    plan.known
                        .insert(meta.location.to_string(), Seen::of(&meta));
                }
                Verdict::Settled => {}
                verdict => plan.todo.push((meta, verdict)),
            }
        }
        plan.todo.sort_by(|(a, _), (b, _)| {
            (a.last_modified, a.location.as_ref()).cmp(&(b.last_modified, b.location.as_ref()))
        });
        Ok(plan)
    }

    /// The multipart uploads still open under the stream's prefix, where the store lists
    /// them: when the oldest started (its object, once complete, carries that time as its
    /// last modification: the watermark waits for it) and the first key (a high-water key
    /// does not pass it).
    async fn open_uploads(&self, stream: &ResolvedStream) -> OpenUploads {
        match self.connection.open_uploads(&stream.prefix).await {
            Ok(Some(open)) => {
                let open: Vec<_> = open
                    .iter()
                    .filter(|u| stream.owns(&u.key) && self.plugin_for(stream, &u.key).is_some())
                    .collect();
                OpenUploads {
                    oldest: open.iter().filter_map(|u| u.initiated).min(),
                    first_key: open.iter().map(|u| u.key.to_string()).min(),
                }
            }
            Ok(None) => OpenUploads::default(),
            Err(e) => {
                tracing::warn!(stream = %stream.config.id, error = %e, "open uploads could not be listed; an upload that completes later than the settle lag is found as a late arrival");
                OpenUploads::default()
            }
        }
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
        self: &Arc<Self>,
        index: usize,
        mut state: StreamState,
        full_refresh: bool,
        at: &Interim<'_>,
        out: &Emitter,
    ) -> Result<StreamState> {
        let Some(stream) = self.streams.get(index) else {
            return Err(Error::Protocol(format!("no stream {index}")));
        };
        let id = &stream.config.id;
        let discovery = &self.discovery;
        let now = discovery.clock.now();
        // Open uploads first: one that completes after this finds its object in the listing.
        let uploads = self.open_uploads(stream).await;
        let mut plan = self.plan(stream, &state, &uploads).await?;
        // The next frontier: what is read now, what was read and is still there, and what
        // the listing could not have seen (a listing from a start key).
        let mut frontier: BTreeMap<String, Seen> = std::mem::take(&mut plan.known);
        for (key, seen) in &state.frontier {
            if !frontier.contains_key(key) && !plan.listing.covers(key) {
                frontier.insert(key.clone(), seen.clone());
            }
        }
        let mut merged: Option<SchemaRef> = state.schema.take().map(Arc::new);
        let mut oldest_unread: Option<DateTime<Utc>> = None;
        // A key at or below the high-water mark found by a whole listing came out of order.
        let ordered_whole =
            stream.ordered() && !matches!(plan.listing, Listing::After { resumed: true, .. });
        // (With the order from the template: in a folder before the one listing resumes at.)
        let resume_after = stream.resume_point(&state);
        let out_of_order = |meta: &ObjectMeta| {
            ordered_whole
                && resume_after
                    .as_deref()
                    .is_some_and(|after| meta.location.as_ref() <= after)
        };
        tracing::info!(stream = %id, objects = plan.todo.len(), frontier = frontier.len(), "reading new objects");
        let todo = plan.todo;
        // Reads run ahead in their own tasks, up to the read concurrency; their batches are
        // taken object by object, in this order.
        let mut ahead: VecDeque<(usize, Ahead)> = VecDeque::new();
        let mut next_start = 0;
        for (i, (meta, verdict)) in todo.iter().enumerate() {
            let (meta, verdict) = (meta, *verdict);
            while next_start < todo.len() && next_start < i + self.read_concurrency {
                // A large object starts only once it is next: a body left unread while the
                // objects before it are taken would time out.
                if next_start > i
                    && todo
                        .get(next_start)
                        .is_some_and(|(m, _)| m.size > READ_AHEAD_MAX_BYTES)
                {
                    break;
                }
                if let Some((m, v)) = todo.get(next_start)
                    && let Some(plugin) = self.plugin_for(stream, &m.location)
                    && (*v != Verdict::Late || discovery.late_policy == LatePolicy::Read)
                {
                    ahead.push_back((next_start, self.start_read(index, plugin, m.clone())));
                }
                next_start += 1;
            }
            if self.plugin_for(stream, &meta.location).is_none() {
                continue;
            }
            let uri = self.connection.uri(&meta.location);
            if verdict == Verdict::Late {
                match discovery.late_policy {
                    LatePolicy::Read => {}
                    LatePolicy::Skip => {
                        tracing::warn!(stream = %id, %uri, "a late arrival is skipped by the stream's policy");
                        out.emit(SourceMessage::Notice(Notice::LateArrival {
                            stream: id.clone(),
                            uri,
                        }))
                        .await?;
                        frontier.insert(meta.location.to_string(), Seen::of(meta));
                        continue;
                    }
                    LatePolicy::Fail => {
                        return Err(Error::Stream {
                            stream: id.clone(),
                            reason: format!(
                                "{uri} appeared below the stream's settled watermark (last modified {}, watermark {}) and the late-arrival policy is `fail`",
                                meta.last_modified.to_rfc3339(),
                                state.watermark.map(|w| w.to_rfc3339()).unwrap_or_default()
                            ),
                        });
                    }
                }
            }
            let span = tracing::debug_span!("object", %uri, size = meta.size);
            let _enter = span.enter();
            let read = match ahead.front() {
                Some((at, _)) if *at == i => ahead.pop_front().map(|(_, read)| read),
                _ => None,
            };
            let Some(read) = read else {
                return Err(Error::Protocol(format!("{uri} was not started")));
            };
            match self
                .take_object(stream, read, meta, &uri, &mut merged, out)
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
                    match verdict {
                        Verdict::Late => {
                            out.emit(SourceMessage::Notice(Notice::LateArrival {
                                stream: id.clone(),
                                uri: uri.clone(),
                            }))
                            .await?;
                        }
                        Verdict::Overwritten => {
                            out.emit(SourceMessage::Notice(Notice::Overwritten {
                                stream: id.clone(),
                                uri: uri.clone(),
                            }))
                            .await?;
                        }
                        Verdict::New | Verdict::Known | Verdict::Settled => {}
                    }
                    if verdict != Verdict::Overwritten && out_of_order(meta) {
                        tracing::warn!(stream = %id, %uri, "a key below the stream's high-water key arrived out of order; found by the periodic full listing");
                        out.emit(SourceMessage::Notice(Notice::OutOfOrder {
                            stream: id.clone(),
                            uri: uri.clone(),
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
                    frontier.insert(meta.location.to_string(), Seen::of(meta));
                    // The reader wants to commit what it has: describe the read so far.
                    if !full_refresh && at.wanted.take() {
                        let rest = todo.get(i + 1..).unwrap_or_default();
                        let partial = self.partial_state(
                            stream,
                            &state,
                            &frontier,
                            merged.as_deref(),
                            rest,
                            oldest_unread,
                            uploads.oldest,
                            now,
                        );
                        out.emit(SourceMessage::Checkpoint(at.checkpoint(partial)?))
                            .await?;
                    }
                }
                // A full refresh replaces the whole table: committed without this object,
                // it would drop the rows the previous generation had of it.
                Err(Error::Store {
                    source: object_store::Error::Precondition { .. },
                    ..
                }) if full_refresh => {
                    return Err(Error::ObjectChanged {
                        uri,
                        e_tag: meta.e_tag.clone().unwrap_or_default(),
                    });
                }
                Err(Error::Store {
                    source: object_store::Error::Precondition { .. },
                    ..
                }) => {
                    tracing::info!(%uri, "the object changed after it was listed; it is read on the next run");
                    oldest_unread = Some(
                        oldest_unread.map_or(meta.last_modified, |t| t.min(meta.last_modified)),
                    );
                }
                Err(e) => return Err(e),
            }
        }
        state.schema = merged.map(|s| s.as_ref().clone());
        state.watermark =
            Some(discovery.next_watermark(state.watermark, now, oldest_unread, uploads.oldest, id));
        let floor = state
            .watermark
            .map(|w| w - discovery.late_window)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        frontier.retain(|_, seen| seen.modified >= floor);
        state.frontier = frontier;
        if stream.ordered() {
            // Every key listed up to the last one is read, unless one was left unread: then
            // the next run lists from the same place again.
            if oldest_unread.is_none() && plan.last_key > state.high_water {
                // The folder left behind stays listed until the high-water key moves on again.
                let left = state.high_water.as_deref().map(|hw| stream.folder_of(hw));
                let to = plan.last_key.as_deref().map(|hw| stream.folder_of(hw));
                if left.is_some() && left != to {
                    state.resume_from = left;
                }
                state.high_water = plan.last_key;
            }
            if ordered_whole {
                state.listed_whole_at = Some(now);
            }
        }
        state.seen.clear();
        Ok(state)
    }

    /// The stream's state part-way through a read: `frontier` holds what was read so far,
    /// `rest` is what is still to read (oldest first). The watermark moves no higher than
    /// the oldest object of `rest`, so that the next run finds every one of them again; an
    /// overwritten object not yet read keeps its earlier version in the frontier, so that it
    /// is still reported as an overwrite. The high-water key does not move.
    #[allow(clippy::too_many_arguments)]
    fn partial_state(
        &self,
        stream: &ResolvedStream,
        state: &StreamState,
        frontier: &BTreeMap<String, Seen>,
        merged: Option<&Schema>,
        rest: &[(ObjectMeta, Verdict)],
        oldest_unread: Option<DateTime<Utc>>,
        oldest_upload: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StreamState {
        let discovery = &self.discovery;
        let next = rest.iter().map(|(m, _)| m.last_modified).min();
        let unread = match (oldest_unread, next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let watermark = discovery.next_watermark(
            state.watermark,
            now,
            unread,
            oldest_upload,
            &stream.config.id,
        );
        let mut frontier = frontier.clone();
        for (meta, verdict) in rest {
            if *verdict == Verdict::Overwritten
                && let Some(earlier) = state.frontier.get(meta.location.as_ref())
            {
                frontier.insert(meta.location.to_string(), earlier.clone());
            }
        }
        let floor = watermark - discovery.late_window;
        frontier.retain(|_, seen| seen.modified >= floor);
        StreamState {
            watermark: Some(watermark),
            frontier,
            high_water: state.high_water.clone(),
            resume_from: state.resume_from.clone(),
            listed_whole_at: state.listed_whole_at,
            seen: BTreeMap::new(),
            schema: merged.cloned(),
        }
    }

    /// Start reading `meta` in a task of its own: its batches wait in a small channel until
    /// [`take_object`](Self::take_object) takes them.
    fn start_read(
        self: &Arc<Self>,
        index: usize,
        plugin: Arc<dyn FormatPlugin>,
        meta: ObjectMeta,
    ) -> Ahead {
        let (tx, rx) = mpsc::channel(2);
        let inner = Arc::clone(self);
        let task = tokio::spawn(async move {
            let uri = inner.connection.uri(&meta.location);
            let decoded = inner.decode_object(index, &plugin, &meta, &uri, &tx).await;
            let _ = tx
                .send(decoded.map(|skipped| Piece::Done { skipped }))
                .await;
        });
        Ahead {
            rx,
            _task: AbortOnDrop(task),
        }
    }

    /// Decode one object into `tx`; returns the rows skipped under the error policy.
    async fn decode_object(
        &self,
        index: usize,
        plugin: &Arc<dyn FormatPlugin>,
        meta: &ObjectMeta,
        uri: &str,
        tx: &PieceTx,
    ) -> Result<u64> {
        let Some(stream) = self.streams.get(index) else {
            return Err(Error::Protocol(format!("no stream {index}")));
        };
        let read_err = |source| Error::Read {
            uri: uri.to_owned(),
            source,
        };
        let decoder = plugin
            .decoder(&DecodeInput::with_size(meta.size), &stream.config.options)
            .map_err(read_err)?;
        match decoder {
            Decoder::Stream(mut decoder) => {
                self.read_streamed(&mut *decoder, plugin.is_self_compressing(), meta, uri, tx)
                    .await
            }
            Decoder::Ranged(mut decoder) => self
                .read_ranged(&mut *decoder, meta, uri, tx)
                .await
                .map(|()| 0),
        }
    }

    /// Take the batches of an object read ahead, in order, tagged with the stream, their
    /// position and the partition columns of the key.
    async fn take_object(
        &self,
        stream: &ResolvedStream,
        mut read: Ahead,
        meta: &ObjectMeta,
        uri: &str,
        merged: &mut Option<SchemaRef>,
        out: &Emitter,
    ) -> Result<Outcome> {
        let partitions = stream
            .parse_key(&meta.location)
            .map(|k| k.partitions().to_vec())
            .unwrap_or_default();
        let mut tag = Tagger {
            stream: stream.config.id.clone(),
            origin: uri,
            version: meta.e_tag.as_deref(),
            partitions: &partitions,
            merged: stream.config.merge_schemas.then_some(merged),
            rows: 0,
        };
        loop {
            match read.rx.recv().await {
                Some(Ok(Piece::Batch(batch))) => {
                    out.emit(SourceMessage::Batch(tag.batch(batch)?)).await?;
                }
                Some(Ok(Piece::Done { skipped })) => {
                    return Ok(Outcome {
                        rows: tag.rows,
                        skipped,
                    });
                }
                // Rows of the version that was listed already went downstream: committing
                // them with the rest of the sync would mix two versions, and the next run
                // reads the new one whole. The sync fails; nothing of it is committed.
                Some(Err(Error::Store {
                    source: object_store::Error::Precondition { .. },
                    ..
                })) if tag.rows > 0 => {
                    return Err(Error::ObjectChanged {
                        uri: uri.to_owned(),
                        e_tag: meta.e_tag.clone().unwrap_or_default(),
                    });
                }
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(Error::Protocol(format!(
                        "the read of {uri} ended without a word"
                    )));
                }
            }
        }
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
        tx: &PieceTx,
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
        // An object small enough to be read ahead comes whole in one go, so that no answer
        // waits half-read while the objects before it are taken.
        let mut body = if meta.size <= READ_AHEAD_MAX_BYTES {
            futures::stream::once(result.bytes()).boxed()
        } else {
            result.into_stream()
        };

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
                hand_over(tx, batch).await?;
            }
        }
        decoder.finish().map_err(read_err)?;
        while let Some(batch) = decoder.next_batch() {
            hand_over(tx, batch).await?;
        }
        Ok(decoder.skipped_rows())
    }

    async fn read_ranged(
        &self,
        decoder: &mut dyn RangedDecoder,
        meta: &ObjectMeta,
        uri: &str,
        tx: &PieceTx,
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
                RangedStep::Batch(batch) => hand_over(tx, batch).await?,
                RangedStep::Finished => return Ok(()),
            }
        }
    }
}

struct Outcome {
    rows: u64,
    skipped: u64,
}

/// What an object read ahead hands over, in order: its batches, then how it ended.
enum Piece {
    Batch(RecordBatch),
    Done { skipped: u64 },
}

type PieceTx = mpsc::Sender<Result<Piece>>;

/// An object being read ahead.
struct Ahead {
    rx: mpsc::Receiver<Result<Piece>>,
    _task: AbortOnDrop,
}

/// Hand a decoded batch to the taker (which went away only if the read was given up).
async fn hand_over(tx: &PieceTx, batch: RecordBatch) -> Result<()> {
    tx.send(Ok(Piece::Batch(batch)))
        .await
        .map_err(|_| Error::Protocol("the read was given up".into()))
}

/// Tags the batches of one object with their stream, position and partition columns,
/// counting rows.
struct Tagger<'a> {
    stream: StreamId,
    origin: &'a str,
    version: Option<&'a str>,
    /// Hive-style folder values of the object's key, added as columns.
    partitions: &'a [(String, Option<String>)],
    /// The stream's merged schema, when schemas are merged.
    merged: Option<&'a mut Option<SchemaRef>>,
    rows: u64,
}

impl Tagger<'_> {
    fn batch(&mut self, records: RecordBatch) -> Result<Batch> {
        let mut position = Position::new(self.origin, self.rows);
        if let Some(v) = self.version {
            position = position.with_version(v);
        }
        self.rows += records.num_rows() as u64;
        let mut records =
            with_partition_columns(records, self.partitions).map_err(|e| Error::Stream {
                stream: self.stream.clone(),
                reason: format!("cannot add the partition columns of {}: {e}", self.origin),
            })?;
        if let Some(merged) = self.merged.as_deref_mut() {
            let schema = match merged.as_ref() {
                Some(m) if m.as_ref() == records.schema().as_ref() => Arc::clone(m),
                Some(m) => Arc::new(merge_schemas(m, &records.schema())),
                None => records.schema(),
            };
            records = conform(&records, &schema).map_err(|e| Error::Stream {
                stream: self.stream.clone(),
                reason: format!(
                    "the records of {} do not fit the stream's schema: {e}",
                    self.origin
                ),
            })?;
            *merged = Some(schema);
        }
        Ok(Batch::new(self.stream.clone(), records, position))
    }
}

/// `batch` with a string column per partition folder it does not already have.
fn with_partition_columns(
    batch: RecordBatch,
    partitions: &[(String, Option<String>)],
) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    let schema = batch.schema();
    let missing: Vec<&(String, Option<String>)> = partitions
        .iter()
        .filter(|(name, _)| schema.column_with_name(name).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(batch);
    }
    let rows = batch.num_rows();
    let mut fields: Vec<FieldRef> = schema.fields().iter().cloned().collect();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    for (name, value) in missing {
        fields.push(Arc::new(Field::new(name, DataType::Utf8, true)));
        columns.push(Arc::new(StringArray::from(vec![value.as_deref(); rows])));
    }
    let schema = Schema::new_with_metadata(fields, schema.metadata().clone());
    RecordBatch::try_new(Arc::new(schema), columns)
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

    /// Keys under folders of the template's time fields, most significant first, sort in
    /// time order: the stream lists from the folder of the last key read (inside a folder
    /// keys come in any order), and a key in an earlier folder waits for the full listing.
    #[tokio::test]
    async fn a_template_with_leading_time_folders_lists_from_the_last_folder_read() {
        use s3conn_layout::template::Template;
        let store = Arc::new(InMemory::new());
        let put = |key: &'static str| {
            let store = Arc::clone(&store);
            async move {
                store
                    .put(&Path::parse(key).unwrap(), "{\"a\": 1}\n".into())
                    .await
                    .unwrap();
            }
        };
        put("in/2024/11/26/5.jsonl").await;
        put("in/2024/11/27/7.jsonl").await;
        let template =
            Template::parse("${YEAR}/${MONTH}/${DAY}/{part_number}{format_extension}").unwrap();
        let day_first =
            Template::parse("${DAY}/${MONTH}/${YEAR}/{part_number}{format_extension}").unwrap();
        let unpadded = Template::parse("${YEAR}/%-m/%-d/{part_number}{format_extension}").unwrap();
        let id = StreamId::new("events");
        assert_eq!(time_depth(&template, &id), Some(3));
        assert_eq!(time_depth(&day_first, &id), None);
        assert_eq!(time_depth(&unpadded, &id), None);

        let connection = Connection::new(
            Arc::clone(&store) as Arc<dyn ObjectStore>,
            Path::default(),
            "memory://bucket",
        );
        let source = S3Source::builder(connection)
            .with_stream(
                S3StreamConfig::new("events", "in")
                    .with_format("ndjson")
                    .with_template(template),
            )
            .build()
            .unwrap();
        let first = source.read_all(ReadRequest::default()).await.unwrap();
        assert_eq!(first.rows(), 2);
        let state: State = serde_json::from_value(first.checkpoint.clone().unwrap().0).unwrap();
        let stream = source.inner.streams.first().unwrap();
        let events = state.streams.get("events").unwrap();
        assert_eq!(events.high_water.as_deref(), Some("in/2024/11/27/7.jsonl"));
        let Listing::After { offset, .. } = source.inner.listing(stream, events).unwrap() else {
            panic!("an ordered stream lists after its high-water folder");
        };
        assert_eq!(offset.as_ref(), "in/2024/11/27");

        put("in/2024/11/27/3.jsonl").await;
        put("in/2024/11/28/0.jsonl").await;
        put("in/2024/11/25/9.jsonl").await;
        let second = source
            .read_all(ReadRequest::from_state(first.checkpoint))
            .await
            .unwrap();
        let mut read: Vec<&str> = second.batches.iter().map(|b| &*b.position.origin).collect();
        read.sort_unstable();
        assert_eq!(
            read,
            [
                "memory://bucket/in/2024/11/27/3.jsonl",
                "memory://bucket/in/2024/11/28/0.jsonl"
            ]
        );
        assert!(
            second
                .notices
                .iter()
                .all(|n| !matches!(n, Notice::OutOfOrder { .. }))
        );

        // The high-water key moved to the 28th: listing resumes at the folder it left, where a
        // writer that uploads a little late still lands.
        let state: State = serde_json::from_value(second.checkpoint.clone().unwrap().0).unwrap();
        let events = state.streams.get("events").unwrap();
        let Listing::After { offset, .. } = source.inner.listing(stream, events).unwrap() else {
            panic!("an ordered stream lists after its resume point");
        };
        assert_eq!(offset.as_ref(), "in/2024/11/27");
        put("in/2024/11/27/1.jsonl").await;
        let third = source
            .read_all(ReadRequest::from_state(second.checkpoint))
            .await
            .unwrap();
        let read: Vec<&str> = third.batches.iter().map(|b| &*b.position.origin).collect();
        assert_eq!(read, ["memory://bucket/in/2024/11/27/1.jsonl"]);

        // Folders of record times are written in any order: not ordered.
        let by_record = Template::parse_with(
            "${YEAR}/${MONTH}/${DAY}/{part_number}{format_extension}",
            &s3conn_layout::template::TemplateOptions::default()
                .with_clock(s3conn_layout::template::Clock::Record)
                .with_time_column("ts"),
        )
        .unwrap();
        assert_eq!(time_depth(&by_record, &id), None);
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

    fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
        let column = batch.column_by_name(name).unwrap();
        let strings = column.as_any().downcast_ref::<StringArray>().unwrap();
        strings.iter().map(|v| v.map(str::to_owned)).collect()
    }

    #[tokio::test]
    async fn a_template_selects_keys_adds_partition_columns_and_prunes_by_date() {
        use s3conn_layout::template::{Template, TemplateOptions};
        let store = Arc::new(InMemory::new());
        for key in [
            "out/crm/users/d=05-11-2024/country=FR/0.jsonl",
            "out/crm/users/d=06-11-2024/country=__HIVE_DEFAULT_PARTITION__/0.jsonl",
            "out/crm/users/d=06-11-2024/country=a%2Fb/1.jsonl",
            "out/crm/users/d=01-10-2024/country=FR/0.jsonl",
            "out/crm/orders/d=06-11-2024/country=FR/0.jsonl",
            "out/users/d=06-11-2024/country=FR/0.jsonl",
            "out/crm/users/loose.jsonl",
        ] {
            store
                .put(&Path::parse(key).unwrap(), "{\"a\": 1}\n".into())
                .await
                .unwrap();
        }
        // Day-first folders do not sort in time order: each day's folder is listed.
        let options = TemplateOptions::default()
            .with_hive(true)
            .with_column("country");
        let template = Template::parse_with(
            "${NAMESPACE}/${STREAM_NAME}/d=%d-%m-%Y/${country}/{part_number}{format_extension}",
            &options,
        )
        .unwrap();
        let start = chrono::TimeZone::with_ymd_and_hms(&Utc, 2024, 11, 1, 0, 0, 0).unwrap();
        let connection = Connection::new(store, Path::default(), "memory://bucket");
        let source = S3Source::builder(connection)
            .with_stream(
                S3StreamConfig::new("users", "out")
                    .with_namespace("crm")
                    .with_format("ndjson")
                    .with_template(template),
            )
            .with_start_date(start)
            .build()
            .unwrap();
        let stream = source.inner.streams.first().unwrap();
        let Listing::Folders(folders) = source
            .inner
            .listing(stream, &StreamState::default())
            .unwrap()
        else {
            panic!("day-first folders are listed one by one");
        };
        assert_eq!(
            folders.first().map(|f| f.as_ref()),
            Some("out/crm/users/d=01-11-2024")
        );
        let read = source.read_all(ReadRequest::default()).await.unwrap();
        let mut rows: Vec<(Option<String>, Option<String>)> = read
            .batches
            .iter()
            .flat_map(|b| {
                let d = strings(&b.records, "d");
                let c = strings(&b.records, "country");
                d.into_iter().zip(c)
            })
            .collect();
        rows.sort();
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            rows,
            [
                (some("05-11-2024"), some("FR")),
                (some("06-11-2024"), None),
                (some("06-11-2024"), some("a/b")),
            ],
            "October is pruned, other streams and namespaces and loose files are not this stream's"
        );
    }

    #[tokio::test]
    async fn schemas_merge_across_objects_and_runs() {
        let store = Arc::new(InMemory::new());
        for (key, body) in [
            ("in/1.jsonl", "{\"n\": 1}\n"),
            ("in/2.jsonl", "{\"n\": 1.5, \"s\": \"x\"}\n"),
        ] {
            store.put(&Path::from(key), body.into()).await.unwrap();
        }
        let connection = Connection::new(store.clone(), Path::default(), "memory://bucket");
        let source = S3Source::builder(connection)
            .with_stream(
                S3StreamConfig::new("events", "in")
                    .with_format("ndjson")
                    .with_schema_merging(true),
            )
            .build()
            .unwrap();
        let first = source.read_all(ReadRequest::default()).await.unwrap();
        let types: Vec<Vec<DataType>> = first
            .batches
            .iter()
            .map(|b| {
                b.records
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.data_type().clone())
                    .collect()
            })
            .collect();
        // The first object is read before the second widens the schema.
        assert_eq!(
            types,
            [
                vec![DataType::Int64],
                vec![DataType::Float64, DataType::Utf8]
            ]
        );
        store
            .put(&Path::from("in/3.jsonl"), "{\"n\": 2}\n".into())
            .await
            .unwrap();
        let second = source
            .read_all(ReadRequest::from_state(first.checkpoint))
            .await
            .unwrap();
        let batch = &second.batches.first().unwrap().records;
        assert_eq!(
            batch.schema().field(0).data_type(),
            &DataType::Float64,
            "the state keeps the merged schema"
        );
        assert_eq!(batch.schema().fields().len(), 2);
        assert!(batch.column(1).is_null(0));
    }

    /// A chunk committed part-way through the first stream keeps the version-1 state of
    /// the streams not read yet: the next run still knows what they read.
    #[tokio::test]
    async fn a_checkpoint_part_way_keeps_the_v1_state_of_streams_not_yet_read() {
        let store = Arc::new(InMemory::new());
        let mut etags = BTreeMap::new();
        for key in ["a/1.jsonl", "a/2.jsonl", "b/1.jsonl"] {
            let put = store
                .put(&Path::parse(key).unwrap(), "{\"n\": 1}\n".into())
                .await
                .unwrap();
            etags.insert(key, put.e_tag.unwrap());
        }
        let connection = Connection::new(
            Arc::clone(&store) as Arc<dyn ObjectStore>,
            Path::default(),
            "memory://bucket",
        );
        let source = S3Source::builder(connection)
            .with_stream(S3StreamConfig::new("a", "a").with_format("ndjson"))
            .with_stream(S3StreamConfig::new("b", "b").with_format("ndjson"))
            .with_read_concurrency(1)
            .build()
            .unwrap();
        // Version 1: every key read, with its ETag.
        let v1 = SourceState(serde_json::json!({
            "version": 1,
            "streams": {
                "a": {"seen": {}},
                "b": {"seen": {"b/1.jsonl": etags["b/1.jsonl"]}},
            }
        }));
        let request = ReadRequest::from_state(Some(v1));
        request.checkpoint_wanted.raise();
        let mut messages = source.read(request).await.unwrap();
        let mut first = None;
        while let Some(message) = messages.next().await {
            if let SourceMessage::Checkpoint(state) = message.unwrap() {
                first = Some(state);
                break;
            }
        }
        drop(messages);
        let first = first.unwrap();
        assert_eq!(
            first.0["streams"]["b"]["seen"]["b/1.jsonl"],
            serde_json::json!(etags["b/1.jsonl"]),
            "{}",
            first.0
        );
        // From that checkpoint: the second object of a, and nothing of b.
        let next = source
            .read_all(ReadRequest::from_state(Some(first)))
            .await
            .unwrap();
        let origins: Vec<&str> = next.batches.iter().map(|b| &*b.position.origin).collect();
        assert_eq!(origins, ["memory://bucket/a/2.jsonl"]);
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
