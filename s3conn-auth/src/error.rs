//! The error type of this crate.

/// A specialized `Result` for connection operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while turning a configuration into a connection.
///
/// No message ever contains a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is missing or malformed.
    #[error("invalid connection setting `{field}`: {reason}")]
    InvalidConfig {
        /// The setting, as named in configuration.
        field: &'static str,
        /// What is wrong, and what to write instead.
        reason: String,
    },

    /// A key or prefix is not a valid object key (an empty segment, `.` or `..`, a control
    /// character).
    #[error("`{key}` is not a valid object key: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// What is wrong.
        reason: String,
    },

    /// The endpoint is plain http and plain http was not allowed.
    #[error(
        "the endpoint `{endpoint}` is plain http, which sends requests unencrypted; use https, or set `allow_http = true` for a trusted local server"
    )]
    PlainHttp {
        /// The endpoint as configured.
        endpoint: String,
    },

    /// The object store could not be built.
    #[error("cannot set up the {backend} connection: {source}")]
    Build {
        /// `s3` or `local`.
        backend: &'static str,
        /// The underlying error.
        #[source]
        source: object_store::Error,
    },
}

impl Error {
    /// Whether retrying could succeed: configuration errors never fix themselves.
    pub fn is_retryable(&self) -> bool {
        false
    }
}
