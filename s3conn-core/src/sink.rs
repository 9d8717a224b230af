//! The [`Sink`] trait: where records go.
//!
//! A sync is a transaction on the sink:
//!
//! ```text
//!  begin(ctx) ──▶ write(batch)* ──▶ commit(request) ──▶ write_report(report)
//!       │               │
//!       └───────────────┴──▶ abort()   (on any failure: nothing of this sync is committed)
//! ```
//!
//! [`Sink::commit`] makes everything written since `begin` durable and visible as one
//! delivery, atomically. It records the pipeline checkpoint it commits, so that after a
//! crash between the sink's commit and the pipeline's state save, the pipeline can ask
//! [`Sink::committed_checkpoint`] and neither lose nor repeat data.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use s3conn_auth::http::RequestStats;
use s3conn_layout::report::StreamReport;
use s3conn_layout::{FileRecord, SyncReport};

use crate::error::Result;
use crate::record::{Batch, StreamId, SyncMode};

/// What a sink needs to know about the sync it takes part in.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SyncContext {
    /// The pipeline running the sync (names its state and its checkpoints).
    pub pipeline_id: String,
    /// This sync's id, unique per attempt.
    pub sync_id: String,
    /// When the sync started: the clock of time variables in key templates.
    pub started_at: DateTime<Utc>,
    /// The streams of the sync and their modes.
    pub streams: Vec<(StreamId, SyncMode)>,
}

impl SyncContext {
    /// A context for `pipeline_id` starting now, with a fresh sync id.
    pub fn new(pipeline_id: impl Into<String>) -> Self {
        Self {
            pipeline_id: pipeline_id.into(),
            sync_id: uuid::Uuid::now_v7().to_string(),
            started_at: Utc::now(),
            streams: Vec::new(),
        }
    }

    /// Add a stream with its mode.
    pub fn with_stream(mut self, stream: StreamId, mode: SyncMode) -> Self {
        self.streams.push((stream, mode));
        self
    }

    /// Set the start time.
    pub fn with_started_at(mut self, started_at: DateTime<Utc>) -> Self {
        self.started_at = started_at;
        self
    }

    /// The mode of `stream` (incremental when not listed).
    pub fn mode(&self, stream: &StreamId) -> SyncMode {
        self.streams
            .iter()
            .find(|(s, _)| s == stream)
            .map(|(_, m)| *m)
            .unwrap_or_default()
    }
}

/// What [`Sink::commit`] is asked to record.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CommitRequest {
    /// The pipeline checkpoint sequence number this delivery commits.
    pub checkpoint: Option<u64>,
    /// Checked by the sink right before it makes the delivery visible (the manifest put):
    /// an error stops the commit. The [`Pipeline`](crate::Pipeline) passes one that renews
    /// its lease, so that a run that lost its lease while closing files does not commit.
    pub fence: Option<Fence>,
}

impl CommitRequest {
    /// A commit of checkpoint `seq`.
    pub fn checkpoint(seq: u64) -> Self {
        Self {
            checkpoint: Some(seq),
            fence: None,
        }
    }

    /// With a fence to check right before the delivery becomes visible.
    pub fn with_fence(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
    }

    /// Check the fence, if any.
    pub async fn check_fence(&self) -> Result<()> {
        match &self.fence {
            Some(fence) => fence.check().await,
            None => Ok(()),
        }
    }
}

/// A check a sink runs right before it makes a delivery visible; see
/// [`CommitRequest::fence`].
#[derive(Clone)]
pub struct Fence(Arc<dyn Fn() -> BoxFuture<'static, Result<()>> + Send + Sync>);

impl Fence {
    /// A fence that runs `check`.
    pub fn new(check: impl Fn() -> BoxFuture<'static, Result<()>> + Send + Sync + 'static) -> Self {
        Self(Arc::new(check))
    }

    /// Run the check.
    pub async fn check(&self) -> Result<()> {
        (self.0)().await
    }
}

impl fmt::Debug for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fence")
    }
}

/// What a commit made durable.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CommitReceipt {
    /// The delivery's `dump_id`, when a manifest was written.
    pub dump_id: Option<u64>,
    /// The files of the delivery.
    pub files: Vec<FileRecord>,
    /// Per-stream counts.
    pub streams: Vec<StreamReport>,
}

impl CommitReceipt {
    /// Rows committed.
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    /// Bytes committed.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Where records go. Implement [`begin`](Self::begin), [`write`](Self::write) and
/// [`commit`](Self::commit); the rest have defaults.
#[async_trait]
pub trait Sink: Send + fmt::Debug {
    /// Start a sync.
    async fn begin(&mut self, ctx: &SyncContext) -> Result<()>;

    /// Take a batch. It need not be durable before [`commit`](Self::commit).
    async fn write(&mut self, batch: Batch) -> Result<()>;

    /// Make everything written since `begin` durable and visible, atomically.
    async fn commit(&mut self, request: &CommitRequest) -> Result<CommitReceipt>;

    /// Give up the sync: nothing written since `begin` may become visible.
    async fn abort(&mut self) -> Result<()> {
        Ok(())
    }

    /// The last checkpoint sequence number `pipeline_id` committed through this sink, if
    /// the sink records checkpoints. A sink that returns `None` gives at-least-once delivery
    /// across a crash between its commit and the pipeline's state save; one that records
    /// them gives exactly-once.
    async fn committed_checkpoint(&mut self, pipeline_id: &str) -> Result<Option<u64>> {
        let _ = pipeline_id;
        Ok(None)
    }

    /// Record the report of a run (successful or not).
    async fn write_report(&mut self, report: &SyncReport) -> Result<()> {
        let _ = report;
        Ok(())
    }

    /// Add what the sink knows to the run's report before it is written (what it finished
    /// or undid of earlier attempts, for the S3 sink).
    fn annotate(&mut self, report: &mut SyncReport) {
        let _ = report;
    }

    /// The request counters of the sink's connection, if it has one: the pipeline reports
    /// the requests and retries of each run.
    fn request_stats(&self) -> Option<Arc<RequestStats>> {
        None
    }
}

#[async_trait]
impl<T: Sink + ?Sized> Sink for Box<T> {
    async fn begin(&mut self, ctx: &SyncContext) -> Result<()> {
        (**self).begin(ctx).await
    }

    async fn write(&mut self, batch: Batch) -> Result<()> {
        (**self).write(batch).await
    }

    async fn commit(&mut self, request: &CommitRequest) -> Result<CommitReceipt> {
        (**self).commit(request).await
    }

    async fn abort(&mut self) -> Result<()> {
        (**self).abort().await
    }

    async fn committed_checkpoint(&mut self, pipeline_id: &str) -> Result<Option<u64>> {
        (**self).committed_checkpoint(pipeline_id).await
    }

    async fn write_report(&mut self, report: &SyncReport) -> Result<()> {
        (**self).write_report(report).await
    }

    fn annotate(&mut self, report: &mut SyncReport) {
        (**self).annotate(report);
    }

    fn request_stats(&self) -> Option<Arc<RequestStats>> {
        (**self).request_stats()
    }
}

/// Conveniences for every [`Sink`].
#[async_trait]
pub trait SinkExt: Sink {
    /// Write every batch of an iterator.
    async fn write_all<I>(&mut self, batches: I) -> Result<()>
    where
        I: IntoIterator<Item = Batch> + Send,
        I::IntoIter: Send,
    {
        for batch in batches {
            self.write(batch).await?;
        }
        Ok(())
    }
}

impl<T: Sink + ?Sized> SinkExt for T {}
