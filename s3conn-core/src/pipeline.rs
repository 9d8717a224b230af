//! The [`Pipeline`]: one sync from a source to a sink, committing source state only after
//! the sink has made the data durable.
//!
//! ```text
//!  load state ─▶ recover pending ─▶ sink.begin ─▶ source.read ─▶ sink.write* ─┐
//!                                                                             │
//!  ┌──────────────────────────────────────────────────────────────────────────┘
//!  ▼
//!  save {committed: N, pending: N+1} ─▶ sink.commit(checkpoint N+1) ─▶ save {committed: N+1}
//!                                                                    ─▶ sink.write_report
//! ```
//!
//! The state is saved twice around the sink's commit. If the process dies after the sink
//! committed but before the second save, the next run finds checkpoint N+1 pending, asks the
//! sink whether it committed it ([`Sink::committed_checkpoint`]), and promotes it: the data is
//! neither lost nor written twice. If the sink had not committed, the pending checkpoint is
//! dropped and the data is read again. Any failure before the commit aborts the sink, so
//! nothing of the failed attempt becomes visible.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use s3conn_auth::http::{RequestCounts, RequestStats};
use s3conn_layout::{SyncReport, SyncStatus};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::failpoint;
use crate::lease::{DEFAULT_LEASE_TTL, Lease};
use crate::record::{StreamId, SyncMode};
use crate::sink::{CommitReceipt, CommitRequest, Fence, Sink, SyncContext};
use crate::source::{Notice, ReadRequest, Source, SourceMessage, SourceState};
use crate::state::{StateStore, StateVersion, validate_key};

/// Progress of a running sync, handed to the callback set with
/// [`Pipeline::with_progress`] after every batch and every object.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Progress {
    /// The stream of the latest batch.
    pub stream: Option<StreamId>,
    /// Rows read so far in this sync.
    pub rows: u64,
    /// Objects read completely so far.
    pub objects: u64,
    /// Bytes of the objects read completely so far.
    pub bytes: u64,
}

/// The longest pipeline id (its lease is kept under `<id>.lease`).
const MAX_PIPELINE_ID: usize = 200;

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// When a long sync commits what it has read so far, so that a crash late in a large
/// backfill redoes one chunk, not the whole sync.
///
/// Once the objects read since the last commit reach `objects`, or their bytes reach
/// `bytes`, or `interval` has passed, the pipeline asks the source for a checkpoint
/// ([`CheckpointSignal`](crate::CheckpointSignal)) and commits at the first one that
/// comes: the sink's delivery (its own manifest and attempt), then the source's state.
/// The run's report sums the deliveries (`deliveries` lists their dump ids). A run with a
/// full-refresh stream commits once, at its end: committing part of a new generation would
/// show readers a table with rows missing.
///
/// ```
/// use std::time::Duration;
/// use s3conn_core::CommitEvery;
///
/// let every = CommitEvery::default();
/// assert_eq!(every.objects, Some(1_000));
/// let small = CommitEvery::never().with_objects(100).with_interval(Duration::from_secs(60));
/// assert_eq!((small.objects, small.bytes), (Some(100), None));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitEvery {
    /// Objects (source files) read.
    pub objects: Option<u64>,
    /// Bytes of the objects read (as stored, before decompression).
    pub bytes: Option<u64>,
    /// Time since the chunk began.
    pub interval: Option<std::time::Duration>,
}

impl Default for CommitEvery {
    /// 1,000 objects, 1 GiB or 10 minutes, whichever comes first.
    fn default() -> Self {
        Self {
            objects: Some(1_000),
            bytes: Some(1 << 30),
            interval: Some(std::time::Duration::from_secs(600)),
        }
    }
}

impl CommitEvery {
    /// One commit per sync, at its end, however long it runs.
    pub const fn never() -> Self {
        Self {
            objects: None,
            bytes: None,
            interval: None,
        }
    }

    /// Commit once this many objects were read since the last commit (0: no such limit).
    pub fn with_objects(mut self, objects: u64) -> Self {
        self.objects = (objects > 0).then_some(objects);
        self
    }

    /// Commit once the objects read since the last commit hold this many bytes (0: no such
    /// limit).
    pub fn with_bytes(mut self, bytes: u64) -> Self {
        self.bytes = (bytes > 0).then_some(bytes);
        self
    }

    /// Commit once this long has passed since the last commit (zero: no such limit).
    pub fn with_interval(mut self, interval: std::time::Duration) -> Self {
        self.interval = (!interval.is_zero()).then_some(interval);
        self
    }

    fn reached(&self, objects: u64, bytes: u64, elapsed: std::time::Duration) -> bool {
        self.objects.is_some_and(|n| objects >= n)
            || self.bytes.is_some_and(|n| bytes >= n)
            || self.interval.is_some_and(|t| elapsed >= t)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StoredState {
    version: u32,
    #[serde(default)]
    committed: Option<Checkpoint>,
    #[serde(default)]
    pending: Option<Checkpoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    seq: u64,
    sync_id: String,
    at: i64,
    #[serde(default)]
    source: Option<SourceState>,
}

/// A source, a sink and a state store, run one sync at a time.
///
/// ```
/// use std::sync::Arc;
/// use arrow_array::{Int64Array, RecordBatch};
/// use s3conn_core::memory::{MemorySink, MemorySource};
/// use s3conn_core::state::MemoryStateStore;
/// use s3conn_core::{Pipeline, StreamId};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> s3conn_core::Result<()> {
/// let source = MemorySource::new();
/// let batch = RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from(vec![1, 2, 3])) as _)]).unwrap();
/// source.push(StreamId::new("numbers"), batch);
///
/// let sink = MemorySink::new();
/// let mut pipeline = Pipeline::new("demo", source.clone(), sink.clone(), MemoryStateStore::new())?;
/// let report = pipeline.run().await?;
/// assert_eq!(report.rows, 3);
/// // Nothing new: the next run moves nothing.
/// assert_eq!(pipeline.run().await?.rows, 0);
/// assert_eq!(sink.committed_rows(), 3);
/// # Ok(())
/// # }
/// ```
pub struct Pipeline<S, K, T> {
    id: String,
    source: S,
    sink: K,
    state: T,
    default_mode: SyncMode,
    modes: HashMap<String, SyncMode>,
    next_sync_in: Option<chrono::Duration>,
    progress: Option<ProgressFn>,
    lease_ttl: std::time::Duration,
    commit_every: CommitEvery,
}

impl<S: fmt::Debug, K: fmt::Debug, T: fmt::Debug> fmt::Debug for Pipeline<S, K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("id", &self.id)
            .field("source", &self.source)
            .field("sink", &self.sink)
            .field("state", &self.state)
            .field("default_mode", &self.default_mode)
            .field("modes", &self.modes)
            .field("commit_every", &self.commit_every)
            .finish_non_exhaustive()
    }
}

impl<S: Source, K: Sink, T: StateStore> Pipeline<S, K, T> {
    /// A pipeline named `id` (its state key: letters, digits, `.`, `_`, `-`).
    pub fn new(id: impl Into<String>, source: S, sink: K, state: T) -> Result<Self> {
        let id = id.into();
        validate_key(&id)?;
        if id.len() > MAX_PIPELINE_ID {
            return Err(Error::Config {
                reason: format!("pipeline id `{id}` is longer than {MAX_PIPELINE_ID} characters"),
            });
        }
        Ok(Self {
            id,
            source,
            sink,
            state,
            default_mode: SyncMode::Incremental,
            modes: HashMap::new(),
            next_sync_in: None,
            progress: None,
            lease_ttl: DEFAULT_LEASE_TTL,
            commit_every: CommitEvery::default(),
        })
    }

    /// The mode of streams without their own (default: incremental).
    pub fn with_default_mode(mut self, mode: SyncMode) -> Self {
        self.default_mode = mode;
        self
    }

    /// The mode of one stream, by name (`name` or `namespace.name`).
    pub fn with_mode(mut self, stream: impl Into<String>, mode: SyncMode) -> Self {
        self.modes.insert(stream.into(), mode);
        self
    }

    /// Report the next planned sync this long after each run's start (`next_sync_at`).
    pub fn with_next_sync_in(mut self, interval: chrono::Duration) -> Self {
        self.next_sync_in = Some(interval);
        self
    }

    /// How long the pipeline's lease lasts unless renewed (default one minute; renewed every
    /// third of it while a run goes on). A run killed without releasing it blocks other
    /// runs of the pipeline for at most this long (on Linux, a run on the same machine sees
    /// at once that the holder's process is gone).
    pub fn with_lease_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.lease_ttl = ttl.max(std::time::Duration::from_millis(300));
        self
    }

    /// When a long sync commits part-way (default: every 1,000 objects, 1 GiB or 10
    /// minutes); see [`CommitEvery`].
    pub fn with_commit_every(mut self, every: CommitEvery) -> Self {
        self.commit_every = every;
        self
    }

    /// Call `progress` after every batch.
    pub fn with_progress(mut self, progress: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(progress));
        self
    }

    /// The pipeline's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The sink.
    pub fn sink(&self) -> &K {
        &self.sink
    }

    /// The state store.
    pub fn state_store(&self) -> &T {
        &self.state
    }

    /// Run one sync. Returns the sync report, which the sink has also recorded.
    ///
    /// The run first takes the pipeline's lease (see [`with_lease_ttl`](Self::with_lease_ttl)):
    /// while another run of the same pipeline holds it, this one fails at once with
    /// [`Error::Leased`] and changes nothing.
    ///
    /// On error, nothing of this run is visible in the sink and the state has not moved
    /// (or, if the failure came after the sink's commit, the next run completes the commit).
    pub async fn run(&mut self) -> Result<SyncReport> {
        let started = Utc::now();
        let sync_id = uuid::Uuid::now_v7().to_string();
        let span = tracing::info_span!("sync", pipeline = %self.id, sync_id = %sync_id);
        async move {
            let lease = Lease::acquire(&self.state, &self.id, &sync_id, self.lease_ttl).await?;
            failpoint::hit("lease.acquired");
            let lease = tokio::sync::Mutex::new(lease);
            let counters = self.request_counters();
            let before: Vec<RequestCounts> = counters.iter().map(|c| c.snapshot()).collect();
            let mut report = SyncReport::new(&sync_id, started.timestamp_millis());
            let mut attempt = Attempt::default();
            let outcome = {
                let Self {
                    id,
                    source,
                    sink,
                    state,
                    default_mode,
                    modes,
                    progress,
                    commit_every,
                    ..
                } = &mut *self;
                let (confirms, requests) = tokio::sync::mpsc::channel(1);
                let run = Run {
                    id,
                    source,
                    sink,
                    state,
                    default_mode: *default_mode,
                    modes,
                    progress: progress.as_ref(),
                    commit_every: *commit_every,
                    lease: &lease,
                    fence: lease_fence(confirms, id.clone()),
                };
                let sync = run.sync(&sync_id, started, &mut report, &mut attempt);
                let renew = keep_renewed(&lease, &*state, requests);
                tokio::pin!(sync);
                tokio::pin!(renew);
                tokio::select! {
                    outcome = &mut sync => outcome,
                    lost = &mut renew => Err(lost),
                }
            };
            report.finish_time = Utc::now().timestamp_millis();
            report.next_sync_at = self
                .next_sync_in
                .map(|d| (started + d).timestamp_millis());
            let outcome = match outcome {
                Ok(()) => {
                    report.status = SyncStatus::Succeeded;
                    self.finish_report(&mut report, &counters, &before);
                    match self.sink.write_report(&report).await {
                        Ok(()) => {
                            tracing::info!(rows = report.rows, files = report.files, bytes = report.bytes, retries = report.retries, "sync succeeded");
                            Ok(report)
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(error) => {
                    if attempt.open && let Err(e) = self.sink.abort().await {
                        tracing::warn!(error = %e, "aborting the sink failed; the next run cleans up");
                    }
                    report.status = if attempt.committed {
                        SyncStatus::Partial
                    } else {
                        SyncStatus::Failed
                    };
                    report.error = Some(error.to_string());
                    self.finish_report(&mut report, &counters, &before);
                    if let Err(e) = self.sink.write_report(&report).await {
                        tracing::warn!(error = %e, "the failed sync's report could not be written");
                    }
                    tracing::error!(error = %error, "sync failed");
                    Err(error)
                }
            };
            if let Err(e) = lease.into_inner().release(&self.state).await {
                tracing::warn!(error = %e, "the lease could not be released; it expires by itself");
            }
            outcome
        }
        .instrument(span)
        .await
    }

    /// The distinct request counters of the source's and the sink's connections.
    fn request_counters(&self) -> Vec<Arc<RequestStats>> {
        let mut all: Vec<Arc<RequestStats>> = Vec::new();
        for c in [self.source.request_stats(), self.sink.request_stats()]
            .into_iter()
            .flatten()
        {
            if !all.iter().any(|a| Arc::ptr_eq(a, &c)) {
                all.push(c);
            }
        }
        all
    }

    fn finish_report(
        &mut self,
        report: &mut SyncReport,
        counters: &[Arc<RequestStats>],
        before: &[RequestCounts],
    ) {
        for (c, b) in counters.iter().zip(before) {
            let delta = c.snapshot().since(b);
            report.requests += delta.requests;
            report.retries += delta.failed;
        }
        self.sink.annotate(report);
    }
}

/// A request to confirm the lease now, and where to answer.
type Confirm = tokio::sync::oneshot::Sender<Result<()>>;

/// Renew `lease` until it is lost (returns why), and confirm it on request.
async fn keep_renewed<T: StateStore + ?Sized>(
    lease: &tokio::sync::Mutex<Lease>,
    state: &T,
    mut confirms: tokio::sync::mpsc::Receiver<Confirm>,
) -> Error {
    loop {
        let every = lease.lock().await.renew_every();
        tokio::select! {
            () = tokio::time::sleep(every) => {
                let mut held = lease.lock().await;
                match held.renew(state).await {
                    Ok(()) => {}
                    Err(e @ Error::LeaseLost { .. }) => return e,
                    // The check before the commit refuses to commit on a lease that went
                    // stale.
                    Err(e) => tracing::warn!(error = %e, "could not renew the lease; trying again"),
                }
            }
            Some(reply) = confirms.recv() => {
                let outcome = lease.lock().await.confirm(state).await;
                let _ = reply.send(outcome);
            }
        }
    }
}

/// A fence that asks the renewal loop to confirm the lease.
fn lease_fence(confirms: tokio::sync::mpsc::Sender<Confirm>, pipeline: String) -> Fence {
    Fence::new(move || {
        let confirms = confirms.clone();
        let pipeline = pipeline.clone();
        Box::pin(async move {
            let gone = || Error::LeaseLost {
                pipeline: pipeline.clone(),
                reason: "the run's lease keeper stopped".into(),
            };
            let (reply, answer) = tokio::sync::oneshot::channel();
            confirms.send(reply).await.map_err(|_| gone())?;
            answer.await.map_err(|_| gone())?
        })
    })
}

/// The pipeline's stored state and its version.
async fn load_state<T: StateStore + ?Sized>(
    state: &T,
    id: &str,
) -> Result<(StoredState, Option<StateVersion>)> {
    match state.load(id).await? {
        None => Ok((StoredState::default(), None)),
        Some(v) => {
            let stored = serde_json::from_slice(&v.value).map_err(|e| Error::State {
                key: id.to_owned(),
                reason: e.to_string(),
            })?;
            Ok((stored, Some(v.version)))
        }
    }
}

/// Save the pipeline's state over version `expected`.
async fn save_state<T: StateStore + ?Sized>(
    state: &T,
    id: &str,
    stored: &StoredState,
    expected: Option<StateVersion>,
) -> Result<StateVersion> {
    let mut stored = stored.clone();
    stored.version = 1;
    let bytes = serde_json::to_vec(&stored).map_err(|e| Error::State {
        key: id.to_owned(),
        reason: e.to_string(),
    })?;
    state.save(id, Bytes::from(bytes), expected).await
}

/// Where a run stands with its sink.
#[derive(Debug, Default)]
struct Attempt {
    /// The sink has an attempt begun and not committed: a failure aborts it.
    open: bool,
    /// A delivery of the run committed: a later failure makes the run partial.
    committed: bool,
}

/// What the run took since its last commit.
struct Chunk {
    objects: u64,
    bytes: u64,
    rows: u64,
    started: std::time::Instant,
    /// A limit was reached and the source was asked for a checkpoint.
    due: bool,
}

impl Chunk {
    fn new() -> Self {
        Self {
            objects: 0,
            bytes: 0,
            rows: 0,
            started: std::time::Instant::now(),
            due: false,
        }
    }
}

/// Add a committed delivery to the run's report.
fn add_delivery(report: &mut SyncReport, receipt: CommitReceipt) {
    report.rows += receipt.rows();
    report.bytes += receipt.bytes();
    report.files += receipt.files.len() as u64;
    if let Some(dump_id) = receipt.dump_id {
        report.dump_id = Some(dump_id);
        report.deliveries.push(dump_id);
    }
    for stream in receipt.streams {
        match report
            .streams
            .iter_mut()
            .find(|s| s.name == stream.name && s.namespace == stream.namespace)
        {
            Some(known) => {
                known.rows += stream.rows;
                known.bytes += stream.bytes;
                known.files += stream.files;
            }
            None => report.streams.push(stream),
        }
    }
}

/// One run's borrowed parts.
struct Run<'a, S, K, T: ?Sized> {
    id: &'a str,
    source: &'a mut S,
    sink: &'a mut K,
    state: &'a T,
    default_mode: SyncMode,
    modes: &'a HashMap<String, SyncMode>,
    progress: Option<&'a ProgressFn>,
    commit_every: CommitEvery,
    lease: &'a tokio::sync::Mutex<Lease>,
    /// Confirms the lease right before the sink makes the delivery visible.
    fence: Fence,
}

impl<S: Source, K: Sink, T: StateStore + ?Sized> Run<'_, S, K, T> {
    fn mode_of(&self, stream: &StreamId) -> SyncMode {
        self.modes
            .get(&stream.to_string())
            .or_else(|| self.modes.get(stream.name()))
            .copied()
            .unwrap_or(self.default_mode)
    }

    async fn sync(
        mut self,
        sync_id: &str,
        started: DateTime<Utc>,
        report: &mut SyncReport,
        attempt: &mut Attempt,
    ) -> Result<()> {
        let (mut stored, mut version) = load_state(self.state, self.id).await?;

        if let Some(pending) = stored.pending.take() {
            let done = self.sink.committed_checkpoint(self.id).await?;
            if done.is_some_and(|seq| seq >= pending.seq) {
                tracing::info!(
                    seq = pending.seq,
                    "the sink committed checkpoint {} before a crash; promoting it",
                    pending.seq
                );
                stored.committed = Some(pending);
            } else {
                tracing::info!(
                    seq = pending.seq,
                    "checkpoint {} was never committed; its data is read again",
                    pending.seq
                );
            }
            version = Some(save_state(self.state, self.id, &stored, version).await?);
        }

        let mut ctx = SyncContext::new(self.id).with_started_at(started);
        ctx.sync_id = sync_id.to_owned();
        let mut request =
            ReadRequest::from_state(stored.committed.as_ref().and_then(|c| c.source.clone()));
        for info in self.source.streams().await? {
            let mode = self.mode_of(&info.id);
            ctx = ctx.with_stream(info.id.clone(), mode);
            request = request.with_mode(info.id, mode);
        }
        // A full refresh is one delivery: part of a new generation would hide rows.
        let chunked = self.commit_every != CommitEvery::never()
            && ctx.streams.iter().all(|(_, m)| *m == SyncMode::Incremental);
        let wanted = request.checkpoint_wanted.clone();

        self.sink.begin(&ctx).await?;
        attempt.open = true;
        let mut messages = self.source.read(request).await?;
        let mut latest: Option<SourceState> = None;
        let mut progress = Progress::default();
        let mut chunk = Chunk::new();
        while let Some(message) = messages.next().await {
            match message? {
                SourceMessage::Batch(batch) => {
                    if batch.num_rows() == 0 {
                        continue;
                    }
                    progress.rows += batch.num_rows() as u64;
                    progress.stream = Some(batch.stream.clone());
                    chunk.rows += batch.num_rows() as u64;
                    self.sink.write(batch).await?;
                    if let Some(f) = self.progress {
                        f(&progress);
                    }
                }
                SourceMessage::Checkpoint(state) => {
                    if chunk.due && (chunk.objects > 0 || chunk.rows > 0) {
                        // Commit the chunk, then go on in a new attempt of the sink.
                        self.commit(
                            &mut stored,
                            &mut version,
                            sync_id,
                            Some(state),
                            report,
                            attempt,
                        )
                        .await?;
                        // What came before is committed: a checkpoint kept from earlier
                        // (another stream's end) must not become the state again, and a
                        // request the source has not answered yet is void.
                        latest = None;
                        wanted.take();
                        ctx.sync_id = uuid::Uuid::now_v7().to_string();
                        tracing::info!(objects = chunk.objects, bytes = chunk.bytes, next = %ctx.sync_id, "chunk committed; the sync goes on");
                        self.sink.begin(&ctx).await?;
                        attempt.open = true;
                        chunk = Chunk::new();
                    } else {
                        latest = Some(state);
                    }
                }
                SourceMessage::Notice(notice) => match notice {
                    Notice::ObjectRead { bytes, .. } => {
                        progress.objects += 1;
                        progress.bytes += bytes;
                        chunk.objects += 1;
                        chunk.bytes += bytes;
                        if let Some(f) = self.progress {
                            f(&progress);
                        }
                    }
                    Notice::SkippedRows { rows, stream, uri } => {
                        tracing::warn!(%stream, %uri, rows, "rows skipped under the error policy");
                        report.skipped_rows += rows;
                    }
                    Notice::LateArrival { stream, uri } => {
                        tracing::warn!(%stream, %uri, "late arrival: an object appeared below the stream's settled watermark");
                        report.late_arrivals += 1;
                    }
                    Notice::OutOfOrder { stream, uri } => {
                        tracing::warn!(%stream, %uri, "a key arrived out of order");
                        report.out_of_order += 1;
                    }
                    Notice::Overwritten { stream, uri } => {
                        tracing::info!(%stream, %uri, "an object already read was rewritten; it is read again");
                        report.overwrites += 1;
                    }
                },
            }
            if chunked
                && !chunk.due
                && self
                    .commit_every
                    .reached(chunk.objects, chunk.bytes, chunk.started.elapsed())
            {
                chunk.due = true;
                wanted.raise();
            }
        }
        drop(messages);

        // The last chunk; with nothing new since a chunk's commit, it only moves the state.
        self.commit(&mut stored, &mut version, sync_id, latest, report, attempt)
            .await
    }

    /// Commit what the sink holds with the source's checkpoint `source` (or the committed
    /// one, when the source gave none), and add the delivery to the report.
    async fn commit(
        &mut self,
        stored: &mut StoredState,
        version: &mut Option<StateVersion>,
        sync_id: &str,
        source: Option<SourceState>,
        report: &mut SyncReport,
        attempt: &mut Attempt,
    ) -> Result<()> {
        let seq = stored.committed.as_ref().map_or(1, |c| c.seq + 1);
        // Before anything becomes visible: make sure this run still holds the lease.
        self.lease.lock().await.confirm(self.state).await?;
        let checkpoint = Checkpoint {
            seq,
            sync_id: sync_id.to_owned(),
            at: Utc::now().timestamp_millis(),
            source: source.or_else(|| stored.committed.as_ref().and_then(|c| c.source.clone())),
        };
        stored.pending = Some(checkpoint.clone());
        let pending = save_state(self.state, self.id, stored, *version).await?;
        *version = Some(pending);
        failpoint::hit("pipeline.before_commit");

        let receipt = self
            .sink
            .commit(&CommitRequest::checkpoint(seq).with_fence(self.fence.clone()))
            .await?;
        attempt.open = false;
        attempt.committed = true;
        failpoint::hit("pipeline.after_commit");
        add_delivery(report, receipt);

        stored.committed = Some(checkpoint);
        stored.pending = None;
        *version = Some(save_state(self.state, self.id, stored, Some(pending)).await?);
        failpoint::hit("pipeline.after_state_save");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemorySink;
    use crate::record::{Batch, Position};
    use crate::source::{SourceStream, StreamInfo};
    use crate::state::MemoryStateStore;
    use arrow_array::{Int64Array, RecordBatch};
    use async_trait::async_trait;

    /// A source that says what it is told, in order.
    #[derive(Debug, Clone)]
    struct Scripted(Vec<SourceMessage>);

    #[async_trait]
    impl Source for Scripted {
        async fn streams(&self) -> Result<Vec<StreamInfo>> {
            Ok(vec![
                StreamInfo::new(StreamId::new("a")),
                StreamInfo::new(StreamId::new("b")),
            ])
        }

        async fn read(&self, _request: ReadRequest) -> Result<SourceStream> {
            Ok(futures::stream::iter(self.0.clone().into_iter().map(Ok)).boxed())
        }
    }

    fn batch(stream: &str, n: i64) -> SourceMessage {
        let records = RecordBatch::try_from_iter([(
            "n",
            Arc::new(Int64Array::from(vec![n])) as arrow_array::ArrayRef,
        )])
        .unwrap_or_else(|e| unreachable!("a one-column batch: {e}"));
        SourceMessage::Batch(Batch::new(
            StreamId::new(stream),
            records,
            Position::new(format!("mem://{stream}/{n}"), 0),
        ))
    }

    fn read(stream: &str, n: i64) -> SourceMessage {
        SourceMessage::Notice(Notice::ObjectRead {
            stream: StreamId::new(stream),
            uri: format!("mem://{stream}/{n}"),
            rows: 1,
            bytes: 1,
        })
    }

    fn checkpoint(tag: &str) -> SourceMessage {
        SourceMessage::Checkpoint(SourceState(serde_json::json!({ "at": tag })))
    }

    /// A checkpoint kept from an earlier stream's end must not become the state after a
    /// chunk committed a later one: the run's state is the last checkpoint committed.
    #[tokio::test]
    async fn a_chunk_commit_leaves_no_older_checkpoint_behind() {
        let source = Scripted(vec![
            batch("a", 1),
            read("a", 1),
            checkpoint("a done"),
            batch("b", 2),
            read("b", 2),
            batch("b", 3),
            read("b", 3),
            checkpoint("b done"),
        ]);
        let sink = MemorySink::new();
        let mut pipeline = Pipeline::new("p", source, sink.clone(), MemoryStateStore::new())
            .unwrap_or_else(|e| unreachable!("a valid id: {e}"))
            .with_commit_every(CommitEvery::never().with_objects(2));
        let report = pipeline
            .run()
            .await
            .unwrap_or_else(|e| unreachable!("the run fails: {e}"));
        assert_eq!(report.rows, 3);
        assert_eq!(sink.committed_rows(), 3);
        let (stored, _) = load_state(pipeline.state_store(), "p")
            .await
            .unwrap_or_else(|e| unreachable!("the state loads: {e}"));
        let source = stored.committed.and_then(|c| c.source);
        assert_eq!(
            source,
            Some(SourceState(serde_json::json!({ "at": "b done" }))),
            "the committed state went back to an older checkpoint"
        );
    }
}
