//! [`Secret`]: a value that never prints.

use std::fmt;

use serde::Deserialize;

/// A secret value (secret access key, session token). `Debug` and `Display` print `***`.
///
/// ```
/// use s3conn_auth::Secret;
/// let secret = Secret::new("wJalrXUtnFEMI");
/// assert_eq!(format!("{secret} {secret:?}"), "*** \"***\"");
/// assert_eq!(secret.expose(), "wJalrXUtnFEMI");
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Call this only to hand it to whatever needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}
