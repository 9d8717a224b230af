//! The record model: Arrow batches tagged with their stream and where they came from.

use std::fmt;
use std::sync::Arc;

use arrow_array::RecordBatch;
use serde::{Deserialize, Serialize};

/// A stream: a table-like flow of records with one schema at a time. Optionally namespaced
/// (a database schema, a source folder).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    namespace: Option<Arc<str>>,
    name: Arc<str>,
}

impl StreamId {
    /// A stream without namespace.
    pub fn new(name: impl AsRef<str>) -> Self {
        Self {
            namespace: None,
            name: Arc::from(name.as_ref()),
        }
    }

    /// Set the namespace.
    pub fn with_namespace(mut self, namespace: impl AsRef<str>) -> Self {
        self.namespace = Some(Arc::from(namespace.as_ref()));
        self
    }

    /// The stream name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({self})")
    }
}

/// Where a batch came from: the object (or other origin), its version, and the index of the
/// batch's first row within it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The origin's URI (`s3://bucket/key`) or another name a source chooses.
    pub origin: Arc<str>,
    /// The origin's version (an ETag), when it has one.
    pub version: Option<Arc<str>>,
    /// The 0-based index of the batch's first row within the origin.
    pub first_row: u64,
}

impl Position {
    /// A position at row `first_row` of `origin`.
    pub fn new(origin: impl AsRef<str>, first_row: u64) -> Self {
        Self {
            origin: Arc::from(origin.as_ref()),
            version: None,
            first_row,
        }
    }

    /// Set the origin's version.
    pub fn with_version(mut self, version: impl AsRef<str>) -> Self {
        self.version = Some(Arc::from(version.as_ref()));
        self
    }
}

/// Records on their way from a source to a sink.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The stream the records belong to.
    pub stream: StreamId,
    /// The records.
    pub records: RecordBatch,
    /// Where they came from.
    pub position: Position,
}

impl Batch {
    /// A batch of `records` of `stream` from `position`.
    pub fn new(stream: StreamId, records: RecordBatch, position: Position) -> Self {
        Self {
            stream,
            records,
            position,
        }
    }

    /// The number of rows.
    pub fn num_rows(&self) -> usize {
        self.records.num_rows()
    }
}

/// How a stream is synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SyncMode {
    /// Read everything again and replace what the destination had: the new data is
    /// committed first, then the previous generation is deleted.
    FullRefresh,
    /// Read only what is new since the last sync and append it.
    #[default]
    #[serde(alias = "append", alias = "incremental_append")]
    Incremental,
}

impl fmt::Display for SyncMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::FullRefresh => "full_refresh",
            Self::Incremental => "incremental",
        })
    }
}

impl std::str::FromStr for SyncMode {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "full_refresh" | "full-refresh" | "full" => Ok(Self::FullRefresh),
            "incremental" | "append" | "incremental_append" => Ok(Self::Incremental),
            other => Err(crate::Error::Config {
                reason: format!("sync mode `{other}`: use `incremental` or `full_refresh`"),
            }),
        }
    }
}
