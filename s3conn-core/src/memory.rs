//! In-memory [`Source`] and [`Sink`]: for tests, previews and hosts that hand records over
//! directly. Both are cheap to clone; clones share their contents.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use arrow_array::RecordBatch;
use async_trait::async_trait;
use futures::StreamExt;
use s3conn_layout::report::StreamReport;
use s3conn_layout::{FileRecord, SyncReport};
use serde_json::json;

use crate::error::{Error, Result};
use crate::record::{Batch, Position, StreamId, SyncMode};
use crate::sink::{CommitReceipt, CommitRequest, Sink, SyncContext};
use crate::source::{ReadRequest, Source, SourceMessage, SourceState, SourceStream, StreamInfo};

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| Error::Protocol("a memory source or sink lock is poisoned".into()))
}

/// A source over an append-only list of batches. Its state is how many batches were read.
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    log: Arc<Mutex<Vec<(StreamId, RecordBatch)>>>,
}

impl MemorySource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a batch to `stream`.
    pub fn push(&self, stream: StreamId, batch: RecordBatch) {
        if let Ok(mut log) = self.log.lock() {
            log.push((stream, batch));
        }
    }
}

#[async_trait]
impl Source for MemorySource {
    async fn streams(&self) -> Result<Vec<StreamInfo>> {
        let log = lock(&self.log)?;
        let mut seen: Vec<StreamInfo> = Vec::new();
        for (stream, batch) in log.iter() {
            if !seen.iter().any(|s| &s.id == stream) {
                seen.push(StreamInfo::new(stream.clone()).with_schema(batch.schema()));
            }
        }
        Ok(seen)
    }

    async fn read(&self, request: ReadRequest) -> Result<SourceStream> {
        let offset = match &request.state {
            None => 0,
            Some(SourceState(v)) => v
                .get("offset")
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| Error::State {
                    key: "memory source".into(),
                    reason: format!("expected {{\"offset\": n}}, found {v}"),
                })? as usize,
        };
        let log = lock(&self.log)?.clone();
        let end = log.len();
        let mut messages: Vec<Result<SourceMessage>> = log
            .into_iter()
            .enumerate()
            .filter(|(i, (stream, _))| {
                *i >= offset || request.mode(stream) == SyncMode::FullRefresh
            })
            .map(|(i, (stream, records))| {
                Ok(SourceMessage::Batch(Batch::new(
                    stream,
                    records,
                    Position::new(format!("memory:{i}"), 0),
                )))
            })
            .collect();
        messages.push(Ok(SourceMessage::Checkpoint(SourceState(
            json!({ "offset": end }),
        ))));
        Ok(futures::stream::iter(messages).boxed())
    }
}

#[derive(Debug, Default)]
struct SinkInner {
    staged: Option<(SyncContext, Vec<Batch>)>,
    committed: HashMap<StreamId, Vec<RecordBatch>>,
    checkpoints: HashMap<String, u64>,
    reports: Vec<SyncReport>,
    deliveries: u64,
}

/// A sink that keeps committed batches in memory, by stream. Full refresh replaces a
/// stream's batches at commit.
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    inner: Arc<Mutex<SinkInner>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// The committed batches of `stream`.
    pub fn committed(&self, stream: &StreamId) -> Vec<RecordBatch> {
        self.inner
            .lock()
            .map(|i| i.committed.get(stream).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Committed rows across streams.
    pub fn committed_rows(&self) -> usize {
        self.inner
            .lock()
            .map(|i| {
                i.committed
                    .values()
                    .flatten()
                    .map(RecordBatch::num_rows)
                    .sum()
            })
            .unwrap_or_default()
    }

    /// The reports written so far.
    pub fn reports(&self) -> Vec<SyncReport> {
        self.inner
            .lock()
            .map(|i| i.reports.clone())
            .unwrap_or_default()
    }
}

#[async_trait]
impl Sink for MemorySink {
    async fn begin(&mut self, ctx: &SyncContext) -> Result<()> {
        let mut inner = lock(&self.inner)?;
        if inner.staged.is_some() {
            return Err(Error::Protocol(
                "begin called while a sync is in progress: commit or abort it first".into(),
            ));
        }
        inner.staged = Some((ctx.clone(), Vec::new()));
        Ok(())
    }

    async fn write(&mut self, batch: Batch) -> Result<()> {
        let mut inner = lock(&self.inner)?;
        let (_, staged) = inner
            .staged
            .as_mut()
            .ok_or_else(|| Error::Protocol("write called before begin".into()))?;
        staged.push(batch);
        Ok(())
    }

    async fn commit(&mut self, request: &CommitRequest) -> Result<CommitReceipt> {
        request.check_fence().await?;
        let mut inner = lock(&self.inner)?;
        let (ctx, staged) = inner
            .staged
            .take()
            .ok_or_else(|| Error::Protocol("commit called before begin".into()))?;
        for (stream, mode) in &ctx.streams {
            if *mode == SyncMode::FullRefresh {
                inner.committed.insert(stream.clone(), Vec::new());
            }
        }
        let mut per_stream: HashMap<StreamId, u64> = HashMap::new();
        for batch in staged {
            *per_stream.entry(batch.stream.clone()).or_default() += batch.num_rows() as u64;
            inner
                .committed
                .entry(batch.stream)
                .or_default()
                .push(batch.records);
        }
        if let Some(seq) = request.checkpoint {
            inner.checkpoints.insert(ctx.pipeline_id.clone(), seq);
        }
        inner.deliveries += 1;
        let delivery = inner.deliveries;
        let files = per_stream
            .iter()
            .map(|(stream, rows)| {
                FileRecord::new(
                    stream.to_string(),
                    format!("memory/{delivery}/{stream}"),
                    0,
                    *rows,
                )
            })
            .collect();
        let streams = per_stream
            .into_iter()
            .map(|(stream, rows)| StreamReport {
                name: stream.name().to_owned(),
                namespace: stream.namespace().map(str::to_owned),
                rows,
                bytes: 0,
                files: 1,
            })
            .collect();
        Ok(CommitReceipt {
            dump_id: Some(delivery),
            files,
            streams,
        })
    }

    async fn abort(&mut self) -> Result<()> {
        lock(&self.inner)?.staged = None;
        Ok(())
    }

    async fn committed_checkpoint(&mut self, pipeline_id: &str) -> Result<Option<u64>> {
        Ok(lock(&self.inner)?.checkpoints.get(pipeline_id).copied())
    }

    async fn write_report(&mut self, report: &SyncReport) -> Result<()> {
        lock(&self.inner)?.reports.push(report.clone());
        Ok(())
    }
}
