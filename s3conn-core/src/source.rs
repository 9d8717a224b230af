//! The [`Source`] trait: where records come from.
//!
//! A source lists its streams and reads what is new since a state it handed out earlier.
//! Reading yields a stream of [`SourceMessage`]s: batches of records, and checkpoints. A
//! checkpoint is the source's state after every batch before it; the pipeline persists a
//! checkpoint only once the sink has durably committed those batches, then hands it back on
//! the next read. A source never needs to know whether its data was committed.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_schema::SchemaRef;
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use s3conn_auth::http::RequestStats;

use crate::error::Result;
use crate::record::{Batch, StreamId, SyncMode};

/// A source's opaque state, as JSON. Only the source that made it reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SourceState(pub serde_json::Value);

/// What a source says about one of its streams.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StreamInfo {
    /// The stream.
    pub id: StreamId,
    /// The schema, when the source knows it before reading.
    pub schema: Option<SchemaRef>,
}

impl StreamInfo {
    /// A stream whose schema is known only once it is read.
    pub fn new(id: StreamId) -> Self {
        Self { id, schema: None }
    }

    /// Set the schema.
    pub fn with_schema(mut self, schema: SchemaRef) -> Self {
        self.schema = Some(schema);
        self
    }
}

/// What to read.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ReadRequest {
    /// The state to continue from (the last committed checkpoint), or `None` for a first read.
    pub state: Option<SourceState>,
    /// The sync mode per stream; streams not listed are incremental.
    pub modes: HashMap<StreamId, SyncMode>,
    /// Raised by the reader (the [`Pipeline`](crate::Pipeline)) when it wants a checkpoint
    /// soon, to commit what it has so far; see [`CheckpointSignal`].
    pub checkpoint_wanted: CheckpointSignal,
}

/// A reader's request for a checkpoint in the middle of a read.
///
/// A long read (a backfill of many objects) is committed in chunks: when the
/// [`Pipeline`](crate::Pipeline) has taken enough since its last commit, it raises the
/// signal; a source that can describe a partial read checks it at its safe points (after
/// each object, for the S3 source), lowers it and yields a [`SourceMessage::Checkpoint`].
/// A source that ignores it still yields its checkpoints where it always does, and the
/// pipeline commits at the first one that comes.
///
/// ```
/// use s3conn_core::CheckpointSignal;
///
/// let signal = CheckpointSignal::default();
/// assert!(!signal.take());
/// signal.raise();
/// assert!(signal.take());
/// assert!(!signal.take(), "taking lowers it");
/// ```
#[derive(Debug, Clone, Default)]
pub struct CheckpointSignal(Arc<AtomicBool>);

impl CheckpointSignal {
    /// Ask for a checkpoint.
    pub fn raise(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether a checkpoint was asked for since the last call; lowers the signal.
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }
}

impl ReadRequest {
    /// Continue from `state`.
    pub fn from_state(state: Option<SourceState>) -> Self {
        Self {
            state,
            modes: HashMap::new(),
            checkpoint_wanted: CheckpointSignal::default(),
        }
    }

    /// Set a stream's mode.
    pub fn with_mode(mut self, stream: StreamId, mode: SyncMode) -> Self {
        self.modes.insert(stream, mode);
        self
    }

    /// The mode of `stream`.
    pub fn mode(&self, stream: &StreamId) -> SyncMode {
        self.modes.get(stream).copied().unwrap_or_default()
    }
}

/// Something a source reports while reading that is not data.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// An object was read completely.
    ObjectRead {
        /// The stream.
        stream: StreamId,
        /// The object's URI.
        uri: String,
        /// Rows read.
        rows: u64,
        /// Bytes of the object.
        bytes: u64,
    },
    /// Rows were skipped under the stream's error policy.
    SkippedRows {
        /// The stream.
        stream: StreamId,
        /// The object's URI.
        uri: String,
        /// How many rows.
        rows: u64,
    },
    /// An object appeared that the source's watermark says should already have been seen.
    LateArrival {
        /// The stream.
        stream: StreamId,
        /// The object's URI.
        uri: String,
    },
    /// A stream whose keys are ordered found, in its periodic full listing, a new object
    /// whose key sorts before keys it had already read.
    OutOfOrder {
        /// The stream.
        stream: StreamId,
        /// The object's URI.
        uri: String,
    },
    /// An object already read came back with a new version (a new ETag); it is read again.
    Overwritten {
        /// The stream.
        stream: StreamId,
        /// The object's URI.
        uri: String,
    },
}

/// One item of a read.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SourceMessage {
    /// Records.
    Batch(Batch),
    /// The source's state after every batch before this message.
    Checkpoint(SourceState),
    /// Something worth reporting.
    Notice(Notice),
}

/// The messages of one read.
pub type SourceStream = BoxStream<'static, Result<SourceMessage>>;

/// Where records come from. Implement [`streams`](Self::streams) and [`read`](Self::read);
/// conveniences are on [`SourceExt`].
#[async_trait]
pub trait Source: Send + Sync + fmt::Debug {
    /// The streams this source offers.
    async fn streams(&self) -> Result<Vec<StreamInfo>>;

    /// Read what is new since `request.state` (everything, for full-refresh streams).
    ///
    /// The stream ends with a [`SourceMessage::Checkpoint`] covering everything read. A
    /// source with nothing new yields no batches (and may still yield a checkpoint).
    async fn read(&self, request: ReadRequest) -> Result<SourceStream>;

    /// The request counters of the source's connection, if it has one: the pipeline reports
    /// the requests and retries of each run.
    fn request_stats(&self) -> Option<Arc<RequestStats>> {
        None
    }
}

/// `Arc<S>` and `Box<S>` are sources too.
macro_rules! forward_source {
    ($($pointer:ident),*) => {$(
        #[async_trait]
        impl<T: Source + ?Sized> Source for $pointer<T> {
            async fn streams(&self) -> Result<Vec<StreamInfo>> {
                (**self).streams().await
            }

            async fn read(&self, request: ReadRequest) -> Result<SourceStream> {
                (**self).read(request).await
            }

            fn request_stats(&self) -> Option<Arc<RequestStats>> {
                (**self).request_stats()
            }
        }
    )*};
}

forward_source!(Arc, Box);

/// Everything one read produced, collected.
#[derive(Debug, Clone, Default)]
pub struct ReadAll {
    /// The batches, in order.
    pub batches: Vec<Batch>,
    /// The last checkpoint.
    pub checkpoint: Option<SourceState>,
    /// The notices, in order.
    pub notices: Vec<Notice>,
}

impl ReadAll {
    /// Total rows.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(Batch::num_rows).sum()
    }
}

/// Conveniences for every [`Source`].
#[async_trait]
pub trait SourceExt: Source {
    /// Read and collect everything in memory (tests, previews, small sources).
    async fn read_all(&self, request: ReadRequest) -> Result<ReadAll> {
        let mut stream = self.read(request).await?;
        let mut out = ReadAll::default();
        while let Some(message) = stream.next().await {
            match message? {
                SourceMessage::Batch(b) => out.batches.push(b),
                SourceMessage::Checkpoint(c) => out.checkpoint = Some(c),
                SourceMessage::Notice(n) => out.notices.push(n),
            }
        }
        Ok(out)
    }
}

impl<T: Source + ?Sized> SourceExt for T {}
