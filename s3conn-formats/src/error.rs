//! The error type of this crate.

/// A specialized `Result` for codec operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while decoding or encoding.
///
/// Decoders do not know which object they read: the caller adds the object key (see
/// `s3conn-core`). A decode error carries the line (or row) where it happened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A record could not be decoded.
    #[error("{format}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Decode {
        /// The format being decoded (`ndjson`, `parquet`).
        format: &'static str,
        /// 1-based line (text formats) or row (binary formats), when known.
        line: Option<u64>,
        /// What is wrong with the record.
        message: String,
    },

    /// The input is not a valid file of the format (corrupt footer, truncated file, …).
    #[error("not a valid {format} file: {message}")]
    InvalidFile {
        /// The format being decoded.
        format: &'static str,
        /// What is wrong.
        message: String,
    },

    /// Records could not be encoded.
    #[error("cannot encode {format}: {message}")]
    Encode {
        /// The format being encoded.
        format: &'static str,
        /// What went wrong.
        message: String,
    },

    /// The schema is not usable for this operation.
    #[error("schema problem in {format}: {message}")]
    Schema {
        /// The format involved.
        format: &'static str,
        /// What is wrong.
        message: String,
    },

    /// An option has a value that cannot be used.
    #[error("invalid {option}: {reason}")]
    InvalidOption {
        /// The option (`delimiter`, `record shape`, `codec`).
        option: &'static str,
        /// What is wrong, and what to give instead.
        reason: String,
    },

    /// The operation or input is not supported.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What is unsupported, and what to do instead.
        what: String,
    },

    /// No plugin is registered under this name or extension.
    #[error("no format plugin for `{name}` (registered: {registered})")]
    UnknownFormat {
        /// The name or extension asked for.
        name: String,
        /// The registered plugin names.
        registered: String,
    },

    /// An I/O error while decompressing or writing.
    #[error("i/o error: {source}")]
    Io {
        /// The underlying error.
        #[from]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether retrying the same operation could succeed: only I/O errors can be transient;
    /// a malformed record stays malformed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Io { source } if matches!(
            source.kind(),
            std::io::ErrorKind::Interrupted
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::UnexpectedEof
        ))
    }

    /// The 1-based line or row of a decode error.
    pub fn line(&self) -> Option<u64> {
        match self {
            Self::Decode { line, .. } => *line,
            _ => None,
        }
    }
}
