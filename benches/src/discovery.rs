//! The S3 source's state and discovery cost for a stream of many objects.
//!
//! [`Synthetic`] is an object store that holds `n` objects it makes up on demand (no
//! bytes stored): object `i` is `landing/<i:08>.jsonl`, one NDJSON row `{"v": i}`, last
//! modified at an even spacing over a span of days that ends an hour ago, ETag `"<i:x>"`.
//! It answers listings (counted as S3 would bill them: one `LIST` per 1,000 keys), pinned
//! GETs (counted) and `HEAD`s; anything else is refused. More objects can be added after a
//! first read ([`Synthetic::add`]); they are last modified now.
//!
//! [`measure`] reads every object with an [`S3Source`] (the whole backfill), then adds a
//! few objects and runs an incremental read from the state the first one left, and reports
//! the state's size after each and what each read cost.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
    PutResult,
};
use s3conn_core::auth::Connection;
use s3conn_core::s3::{S3Source, S3StreamConfig};
use s3conn_core::{ReadRequest, Source, SourceMessage, SourceState};

/// Keys per listing page, as S3 returns them.
const PAGE: u64 = 1000;

/// A store of `n` made-up objects; see the module documentation.
#[derive(Debug)]
pub struct Synthetic {
    n: u64,
    added: AtomicU64,
    first: DateTime<Utc>,
    spacing: TimeDelta,
    added_at: DateTime<Utc>,
    lists: AtomicU64,
    gets: AtomicU64,
    unpinned: AtomicU64,
    latency: Duration,
    in_flight: AtomicU64,
    most_in_flight: AtomicU64,
}

impl fmt::Display for Synthetic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Synthetic({} objects)", self.n)
    }
}

fn refused(what: &'static str) -> object_store::Error {
    object_store::Error::NotSupported {
        source: format!("the synthetic store does not {what}").into(),
    }
}

impl Synthetic {
    /// `n` objects last modified evenly over `days` days that end an hour ago.
    pub fn new(n: u64, days: i64) -> Self {
        let end = Utc::now() - TimeDelta::hours(1);
        let span = TimeDelta::days(days);
        let spacing = span / i32::try_from(n.max(1)).unwrap_or(i32::MAX);
        Self {
            n,
            added: AtomicU64::new(0),
            first: end - span,
            spacing,
            added_at: Utc::now(),
            lists: AtomicU64::new(0),
            gets: AtomicU64::new(0),
            unpinned: AtomicU64::new(0),
            latency: Duration::ZERO,
            in_flight: AtomicU64::new(0),
            most_in_flight: AtomicU64::new(0),
        }
    }

    /// Answer each GET only after `latency`, as a remote store would.
    pub fn with_get_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// The most GETs that were waiting for their answer at once.
    pub fn most_in_flight(&self) -> u64 {
        self.most_in_flight.load(Ordering::SeqCst)
    }

    /// GETs that did not carry the ETag the object was listed with.
    pub fn unpinned(&self) -> u64 {
        self.unpinned.load(Ordering::SeqCst)
    }

    /// Make `count` more objects appear, last modified now.
    pub fn add(&self, count: u64) {
        self.added.fetch_add(count, Ordering::SeqCst);
    }

    /// `LIST` requests so far (one per page of 1,000 keys).
    pub fn lists(&self) -> u64 {
        self.lists.load(Ordering::SeqCst)
    }

    /// Object GETs so far.
    pub fn gets(&self) -> u64 {
        self.gets.load(Ordering::SeqCst)
    }

    fn total(&self) -> u64 {
        self.n + self.added.load(Ordering::SeqCst)
    }

    fn body(i: u64) -> Bytes {
        Bytes::from(format!("{{\"v\":{i}}}\n"))
    }

    fn lister(&self) -> SyntheticList {
        SyntheticList {
            first: self.first,
            spacing: self.spacing,
            n: self.n,
            added_at: self.added_at,
        }
    }

    fn meta(&self, i: u64) -> ObjectMeta {
        self.lister().meta(i)
    }

    fn index(&self, location: &Path) -> Option<u64> {
        let name = location.as_ref().strip_prefix("landing/")?;
        let i: u64 = name.strip_suffix(".jsonl")?.parse().ok()?;
        (i < self.total()).then_some(i)
    }
}

fn range_of(range: Option<&GetRange>, len: u64) -> Range<u64> {
    match range {
        None => 0..len,
        Some(GetRange::Bounded(r)) => r.start.min(len)..r.end.min(len),
        Some(GetRange::Offset(o)) => (*o).min(len)..len,
        Some(GetRange::Suffix(s)) => len.saturating_sub(*s)..len,
    }
}

#[async_trait]
impl ObjectStore for Synthetic {
    async fn put_opts(
        &self,
        _location: &Path,
        _payload: PutPayload,
        _opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        Err(refused("take puts"))
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(refused("take uploads"))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let Some(i) = self.index(location) else {
            return Err(object_store::Error::NotFound {
                path: location.to_string(),
                source: "no such object".into(),
            });
        };
        let meta = self.meta(i);
        if options.if_match.is_none() {
            self.unpinned.fetch_add(1, Ordering::SeqCst);
        }
        if !self.latency.is_zero() {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.latency).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        if let Some(wanted) = &options.if_match
            && Some(wanted) != meta.e_tag.as_ref()
        {
            return Err(object_store::Error::Precondition {
                path: location.to_string(),
                source: "the ETag differs".into(),
            });
        }
        let body = Self::body(i);
        let range = range_of(options.range.as_ref(), body.len() as u64);
        if !options.head {
            self.gets.fetch_add(1, Ordering::SeqCst);
        }
        let bytes = body.slice(range.start as usize..range.end as usize);
        Ok(GetResult {
            payload: GetResultPayload::Stream(
                futures::stream::once(async move { Ok(bytes) }).boxed(),
            ),
            meta,
            range,
            attributes: Attributes::default(),
            extensions: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        _locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        futures::stream::once(async { Err(refused("delete")) }).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let inside = prefix.is_none_or(|p| p.as_ref().is_empty() || p.as_ref() == "landing");
        let total = if inside { self.total() } else { 0 };
        self.lists
            .fetch_add(total.div_ceil(PAGE).max(1), Ordering::SeqCst);
        let lister = self.lister();
        futures::stream::iter((0..total).map(move |i| Ok(lister.meta(i)))).boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let inside = prefix.is_none_or(|p| p.as_ref().is_empty() || p.as_ref() == "landing");
        let total = if inside { self.total() } else { 0 };
        // The first index whose key sorts after the offset (keys are zero-padded).
        let first = (0..total)
            .find(|i| format!("landing/{i:08}.jsonl").as_str() > offset.as_ref())
            .unwrap_or(total);
        self.lists
            .fetch_add((total - first).div_ceil(PAGE).max(1), Ordering::SeqCst);
        let lister = self.lister();
        futures::stream::iter((first..total).map(move |i| Ok(lister.meta(i)))).boxed()
    }

    async fn list_with_delimiter(
        &self,
        _prefix: Option<&Path>,
    ) -> object_store::Result<ListResult> {
        Err(refused("list folders"))
    }

    async fn copy_opts(
        &self,
        _from: &Path,
        _to: &Path,
        _options: CopyOptions,
    ) -> object_store::Result<()> {
        Err(refused("copy"))
    }
}

/// What a listing needs to make up metadata without borrowing the store.
#[derive(Debug, Clone, Copy)]
struct SyntheticList {
    first: DateTime<Utc>,
    spacing: TimeDelta,
    n: u64,
    added_at: DateTime<Utc>,
}

impl SyntheticList {
    fn meta(&self, i: u64) -> ObjectMeta {
        let last_modified = if i < self.n {
            self.first + self.spacing * i32::try_from(i).unwrap_or(i32::MAX)
        } else {
            self.added_at
        };
        ObjectMeta {
            location: Path::from(format!("landing/{i:08}.jsonl")),
            last_modified,
            size: Synthetic::body(i).len() as u64,
            e_tag: Some(format!("\"{i:x}\"")),
            version: None,
        }
    }
}

/// One read of the stream.
#[derive(Debug, Clone)]
pub struct ReadFigures {
    /// Rows read (one per object read).
    pub rows: u64,
    /// The state's JSON size after the read, in bytes: what a sync saves.
    pub state_bytes: usize,
    /// Objects the state's frontier keeps.
    pub frontier: usize,
    /// `LIST` requests of the read.
    pub lists: u64,
    /// Object GETs of the read.
    pub gets: u64,
    /// How long it took.
    pub took: Duration,
}

/// What [`measure`] found.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Objects in the stream before the incremental read.
    pub objects: u64,
    /// The backfill: every object read.
    pub backfill: ReadFigures,
    /// The incremental read after `added` objects appeared.
    pub incremental: ReadFigures,
    /// Objects added before the incremental read.
    pub added: u64,
    /// The size the earlier state (every key and ETag read) would have for as many objects.
    pub whole_history_bytes: usize,
    /// The state the backfill left (what [`poll`] starts from).
    pub backfill_state: SourceState,
}

async fn read_once(
    source: &S3Source,
    store: &Synthetic,
    state: Option<SourceState>,
) -> Result<(ReadFigures, SourceState), s3conn_core::Error> {
    let started = Instant::now();
    let (lists, gets) = (store.lists(), store.gets());
    let mut messages = source.read(ReadRequest::from_state(state)).await?;
    let mut rows = 0;
    let mut last = None;
    while let Some(message) = messages.next().await {
        match message? {
            SourceMessage::Batch(batch) => rows += batch.num_rows() as u64,
            SourceMessage::Checkpoint(state) => last = Some(state),
            _ => {}
        }
    }
    let state = last.ok_or_else(|| s3conn_core::Error::Protocol("no checkpoint".into()))?;
    let state_bytes = serde_json::to_vec(&state.0).map(|v| v.len()).unwrap_or(0);
    let frontier = state
        .0
        .pointer("/streams/events/frontier")
        .and_then(|f| f.as_object())
        .map_or(0, |f| f.len());
    Ok((
        ReadFigures {
            rows,
            state_bytes,
            frontier,
            lists: store.lists() - lists,
            gets: store.gets() - gets,
            took: started.elapsed(),
        },
        state,
    ))
}

/// The process's peak resident set so far, in bytes (Linux `VmHWM`; 0 elsewhere).
pub fn peak_resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// A synthetic store of `objects` objects over `days` days, and a source with the one
/// stream `events` over it (keys declared ordered when `ordered`), with its defaults.
fn synthetic_stream(
    objects: u64,
    days: i64,
    ordered: bool,
) -> Result<(Arc<Synthetic>, S3Source), s3conn_core::Error> {
    let store = Arc::new(Synthetic::new(objects, days));
    let connection = Connection::new(
        Arc::clone(&store) as Arc<dyn ObjectStore>,
        Path::default(),
        "s3://synthetic",
    );
    let source = S3Source::builder(connection)
        .with_stream(
            S3StreamConfig::new("events", "landing")
                .with_format("ndjson")
                .with_keys_ordered(ordered),
        )
        .build()?;
    Ok((store, source))
}

/// Read a stream of `objects` objects spread over `days` days whole, then add `added` and
/// read again from the state; with the source's defaults (a settle lag of five minutes, a
/// late window of a day), and keys declared ordered when `ordered`.
pub async fn measure(
    objects: u64,
    days: i64,
    added: u64,
    ordered: bool,
) -> Result<Figures, s3conn_core::Error> {
    let (store, source) = synthetic_stream(objects, days, ordered)?;
    let (backfill, state) = read_once(&source, &store, None).await?;
    store.add(added);
    let (incremental, _) = read_once(&source, &store, Some(state.clone())).await?;

    // The earlier state: `{"key": "etag", …}` for every object read.
    let whole_history_bytes = (0..objects)
        .map(|i| format!("\"landing/{i:08}.jsonl\":\"\\\"{i:x}\\\"\",").len())
        .sum::<usize>();
    Ok(Figures {
        objects,
        backfill,
        incremental,
        added,
        whole_history_bytes,
        backfill_state: state,
    })
}

/// The incremental read of [`measure`] alone, from the state a backfill left: run in a
/// process of its own, its peak resident set is what a poll of the stream costs.
pub async fn poll(
    objects: u64,
    days: i64,
    added: u64,
    ordered: bool,
    state: SourceState,
) -> Result<ReadFigures, s3conn_core::Error> {
    let (store, source) = synthetic_stream(objects, days, ordered)?;
    store.add(added);
    Ok(read_once(&source, &store, Some(state)).await?.0)
}
