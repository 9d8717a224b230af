//! The error type of this crate.

/// A specialized `Result` for layout operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while parsing a template, rendering a key or reading a manifest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A path template could not be parsed.
    #[error(
        "invalid path template `{template}` at byte {position}: {message}{}",
        hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    TemplateParse {
        /// The template as written.
        template: String,
        /// Byte offset of the problem in `template`.
        position: usize,
        /// What is wrong.
        message: String,
        /// How to fix it, when there is an obvious fix.
        hint: Option<String>,
    },

    /// A template rendered to a key that S3 (or this crate) does not accept.
    #[error("path template `{template}` rendered the invalid key `{key}`: {reason}")]
    InvalidKey {
        /// The template that produced the key.
        template: String,
        /// The offending key.
        key: String,
        /// Why the key is refused.
        reason: String,
    },

    /// A template cannot be used the way it was asked to be used.
    #[error("path template `{template}` cannot be used here: {reason}")]
    Unsuitable {
        /// The template.
        template: String,
        /// Why it is unsuitable.
        reason: String,
    },

    /// A manifest or report document could not be parsed or serialized.
    #[error("invalid {what} document: {source}")]
    Document {
        /// What kind of document (`manifest`, `sync report`).
        what: &'static str,
        /// The underlying JSON error, with its line and column.
        #[source]
        source: serde_json::Error,
    },

    /// A sequence of manifests is not consistent (for example a `dump_id` that goes backwards).
    #[error("manifest sequence is inconsistent: {reason}")]
    ManifestSequence {
        /// What is inconsistent.
        reason: String,
    },
}

impl Error {
    /// Whether retrying the same operation could succeed. Layout errors are never transient.
    pub fn is_retryable(&self) -> bool {
        false
    }
}
