//! The error type of this crate.

/// A specialized `Result` for connection operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while turning a configuration into a connection, or while getting
/// credentials for it.
///
/// No message ever contains a secret: keys, tokens and the bodies of credential answers are
/// never formatted into one.
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

    /// A named profile of the shared AWS files could not be used.
    #[error("AWS profile `{profile}`: {reason}")]
    Profile {
        /// The profile's name.
        profile: String,
        /// What is wrong, and where to look.
        reason: String,
    },

    /// STS refused or failed an AssumeRole call.
    #[error("cannot assume role `{role_arn}`: {}{message}{}", code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default(), hint(code.as_deref()))]
    AssumeRole {
        /// The role that was to be assumed.
        role_arn: String,
        /// STS's error code (`AccessDenied`, `InvalidClientTokenId`…), when it gave one.
        code: Option<String>,
        /// STS's message, or what failed on the way (never a credential).
        message: String,
        /// Whether trying again later could succeed (throttling, a server or network error).
        retryable: bool,
    },

    /// Base credentials (static, profile, environment, instance profile…) could not be had.
    #[error("cannot get {what}: {source}")]
    Credentials {
        /// Which credentials.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: object_store::Error,
    },
}

fn hint(code: Option<&str>) -> &'static str {
    match code {
        Some("AccessDenied") => {
            " (the role's trust policy must allow this principal with this External ID: see `s3conn policy --external-id … --principal …`; the caller also needs sts:AssumeRole on the role)"
        }
        Some("InvalidClientTokenId" | "SignatureDoesNotMatch" | "IncompleteSignature") => {
            " (the base credentials used to call STS are wrong)"
        }
        Some("ExpiredToken" | "ExpiredTokenException") => {
            " (the base credentials used to call STS have expired)"
        }
        _ => "",
    }
}

impl Error {
    /// Whether retrying could succeed: configuration errors never fix themselves; a throttled
    /// or failed STS call, or a credential endpoint that did not answer, may.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::AssumeRole { retryable, .. } => *retryable,
            Self::Credentials { source, .. } => {
                matches!(source, object_store::Error::Generic { .. })
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assume_role_errors_say_what_to_fix() {
        let e = Error::AssumeRole {
            role_arn: "arn:aws:iam::123456789012:role/r".into(),
            code: Some("AccessDenied".into()),
            message: "not authorized".into(),
            retryable: false,
        };
        let text = e.to_string();
        assert!(text.contains("AccessDenied: not authorized"), "{text}");
        assert!(text.contains("External ID"), "{text}");
        assert!(!e.is_retryable());
    }
}
