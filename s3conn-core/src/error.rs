//! The error type of this crate.

use crate::record::StreamId;

/// A specialized `Result` for s3conn-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong. Every variant says what and where: the object URI, the stream, the
/// state key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An object could not be decoded (a malformed file or record).
    #[error("cannot read {uri}: {source}")]
    Read {
        /// The object's URI (`s3://bucket/key`).
        uri: String,
        /// The decoder's error, with its line or row.
        #[source]
        source: s3conn_formats::Error,
    },

    /// Batches could not be encoded into a file.
    #[error("cannot write {uri}: {source}")]
    Write {
        /// The file being written.
        uri: String,
        /// The encoder's error.
        #[source]
        source: s3conn_formats::Error,
    },

    /// A call to the object store failed.
    #[error("{operation} {uri} failed: {source}")]
    Store {
        /// What was being done (`list`, `get`, `put`, `delete`, `upload`).
        operation: &'static str,
        /// The object or prefix.
        uri: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },

    /// Another writer saved state `key` first: this run's view of the state is stale.
    #[error(
        "state `{key}` was changed by another writer (expected version {expected:?}); another run of this pipeline is active or finished first"
    )]
    StateConflict {
        /// The state key.
        key: String,
        /// The version this writer expected to replace.
        expected: Option<u64>,
    },

    /// Stored state could not be understood.
    #[error("state `{key}` is unreadable: {reason}")]
    State {
        /// The state key.
        key: String,
        /// What is wrong.
        reason: String,
    },

    /// A stream was configured or used wrongly.
    #[error("stream `{stream}`: {reason}")]
    Stream {
        /// The stream.
        stream: StreamId,
        /// What is wrong.
        reason: String,
    },

    /// The configuration of a source, sink or pipeline is invalid.
    #[error("invalid configuration: {reason}")]
    Config {
        /// What is wrong, and what to write instead.
        reason: String,
    },

    /// A call came at the wrong point of a sync (a write before `begin`, …).
    #[error("{0}")]
    Protocol(String),

    /// A codec plugin failed outside of a particular object.
    #[error(transparent)]
    Format(#[from] s3conn_formats::Error),

    /// A template or manifest problem.
    #[error(transparent)]
    Layout(#[from] s3conn_layout::Error),

    /// A connection problem.
    #[error(transparent)]
    Auth(#[from] s3conn_auth::Error),

    /// Another run of the same pipeline holds its lease: two runs of one pipeline at once
    /// could deliver the same rows twice, so this one did not start.
    #[error(
        "pipeline `{pipeline}` is already running: {holder} holds its lease until {expires_at} (renewed while it runs); try again after that"
    )]
    Leased {
        /// The pipeline.
        pipeline: String,
        /// Who holds the lease: its sync id, host and process id.
        holder: String,
        /// When the lease expires unless its holder renews it (RFC 3339).
        expires_at: String,
    },

    /// This run lost its pipeline's lease (it could not renew it in time, and another run
    /// may have taken over): it stopped before committing.
    #[error("pipeline `{pipeline}`: {reason}; nothing of this run was committed")]
    LeaseLost {
        /// The pipeline.
        pipeline: String,
        /// What happened.
        reason: String,
    },

    /// An object changed while it was being read (its ETag no longer matched the one it
    /// was listed with): the rows read from it are not committed, and the next run reads
    /// the new version whole.
    #[error(
        "{uri} changed while it was read (its ETag is no longer {e_tag}): none of its rows are committed; the next run reads the new version"
    )]
    ObjectChanged {
        /// The object's URI.
        uri: String,
        /// The ETag it was listed (and partly read) with.
        e_tag: String,
    },

    /// A host-defined source or sink failed.
    #[error("{context}: {source}")]
    External {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl Error {
    /// Whether running the same sync again could succeed without changing anything: a
    /// transient store failure, not a malformed file, a conflict or a configuration mistake.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store { source, .. } => matches!(
                source,
                object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
            ),
            Self::Read { source, .. } | Self::Write { source, .. } => source.is_retryable(),
            Self::Format(e) => e.is_retryable(),
            Self::Leased { .. } | Self::LeaseLost { .. } | Self::ObjectChanged { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn store(
        operation: &'static str,
        uri: impl Into<String>,
        source: object_store::Error,
    ) -> Self {
        Self::Store {
            operation,
            uri: uri.into(),
            source,
        }
    }
}
