//! Connection configuration: where the data lives and how to reach it.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use serde::Deserialize;

use crate::error::{Error, Result};

/// A secret value (secret access key, session token). `Debug` and `Display` print `***`.
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

/// Where the data lives and how to reach it: an S3 (or S3-compatible) bucket, or a local
/// folder standing in for one.
///
/// Build it in code, from a URL, or deserialize it from a host's configuration (TOML, JSON):
///
/// ```toml
/// url = "s3://my-bucket/exports"        # or bucket = "my-bucket" + prefix = "exports"
/// region = "eu-west-1"
/// endpoint = "https://minio.internal:9000"   # S3-compatible stores
/// access_key_id = "AKIA…"
/// secret_access_key = "…"                     # never printed
/// allow_http = false                          # plain-http endpoints need this set
/// ```
///
/// Without keys, the AWS default chain is used (environment, web identity, container
/// credentials, instance profile).
///
/// ```
/// use s3conn_auth::ConnectionConfig;
/// let config = ConnectionConfig::from_url("s3://my-bucket/exports/")?
///     .with_region("eu-west-1")
///     .with_static_credentials("AKIAEXAMPLE", "wJalrXUtnFEMI/K7MDENG", None);
/// assert!(!format!("{config:?}").contains("wJalr"));
/// let connection = config.connect()?;
/// assert_eq!(connection.url(), "s3://my-bucket/exports");
/// # Ok::<(), s3conn_auth::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    bucket: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    local_path: Option<PathBuf>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    access_key_id: Option<String>,
    #[serde(default)]
    secret_access_key: Option<Secret>,
    #[serde(default)]
    session_token: Option<Secret>,
    #[serde(default)]
    allow_http: bool,
    #[serde(default)]
    virtual_hosted_style: bool,
    #[serde(default)]
    timeout_secs: Option<u64>,
    #[serde(default)]
    max_retries: Option<usize>,
}

impl fmt::Debug for ConnectionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionConfig")
            .field("url", &self.url)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("local_path", &self.local_path)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field("session_token", &self.session_token)
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("timeout_secs", &self.timeout_secs)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

impl ConnectionConfig {
    /// An S3 bucket, with the AWS default credential chain.
    pub fn s3(bucket: impl Into<String>) -> Self {
        Self {
            bucket: Some(bucket.into()),
            ..Self::default()
        }
    }

    /// A local folder that stands in for a bucket (demos, tests, local pipelines).
    pub fn local(path: impl Into<PathBuf>) -> Self {
        Self {
            local_path: Some(path.into()),
            ..Self::default()
        }
    }

    /// From `s3://bucket/prefix`, `file:///path` or a local path.
    pub fn from_url(url: &str) -> Result<Self> {
        let mut config = Self {
            url: Some(url.to_owned()),
            ..Self::default()
        };
        config.resolve_url()?;
        Ok(config)
    }

    /// Set the key prefix (root path) inside the bucket.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Set the region (default `us-east-1` when nothing else says).
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Use an S3-compatible endpoint (MinIO, R2, Ceph): `https://host:port`.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Use static keys, with an optional session token.
    pub fn with_static_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<Secret>,
        session_token: Option<Secret>,
    ) -> Self {
        self.access_key_id = Some(access_key_id.into());
        self.secret_access_key = Some(secret_access_key.into());
        self.session_token = session_token;
        self
    }

    /// Allow a plain-http endpoint (off by default: requests would travel unencrypted).
    pub fn with_allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Address the bucket as `bucket.host` instead of `host/bucket`.
    pub fn with_virtual_hosted_style(mut self, enabled: bool) -> Self {
        self.virtual_hosted_style = enabled;
        self
    }

    /// The per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout_secs = Some(timeout.as_secs().max(1));
        self
    }

    /// How many times a failed request is retried.
    pub fn with_max_retries(mut self, retries: usize) -> Self {
        self.max_retries = Some(retries);
        self
    }

    /// Fill bucket/prefix or local path from `url`, when one was given.
    fn resolve_url(&mut self) -> Result<()> {
        let Some(raw) = self.url.clone() else {
            return Ok(());
        };
        if let Some(rest) = raw
            .strip_prefix("s3://")
            .or_else(|| raw.strip_prefix("s3a://"))
        {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::InvalidConfig {
                    field: "url",
                    reason: format!("`{raw}` names no bucket; write `s3://bucket/prefix`"),
                });
            }
            self.set_once("bucket", bucket)?;
            if !prefix.trim_matches('/').is_empty() {
                if self.prefix.is_some() {
                    return Err(Error::InvalidConfig {
                        field: "prefix",
                        reason: "given both in `url` and as `prefix`; keep one".into(),
                    });
                }
                self.prefix = Some(prefix.to_owned());
            }
        } else if raw.starts_with("file:") {
            let url = url::Url::parse(&raw).map_err(|e| Error::InvalidConfig {
                field: "url",
                reason: format!("`{raw}`: {e}"),
            })?;
            let path = url.to_file_path().map_err(|()| Error::InvalidConfig {
                field: "url",
                reason: format!("`{raw}` is not an absolute local path"),
            })?;
            self.local_path = Some(path);
        } else if raw.contains("://") {
            return Err(Error::InvalidConfig {
                field: "url",
                reason: format!("`{raw}`: use `s3://bucket/prefix`, `file:///path` or a path"),
            });
        } else {
            self.local_path = Some(PathBuf::from(raw));
        }
        self.url = None;
        Ok(())
    }

    fn set_once(&mut self, field: &'static str, value: &str) -> Result<()> {
        match &self.bucket {
            Some(existing) if existing != value => Err(Error::InvalidConfig {
                field,
                reason: format!("given as `{existing}` and as `{value}` in `url`; keep one"),
            }),
            _ => {
                self.bucket = Some(value.to_owned());
                Ok(())
            }
        }
    }

    /// Check the configuration and build the connection.
    pub fn connect(&self) -> Result<Connection> {
        let mut config = self.clone();
        config.resolve_url()?;
        let prefix = config
            .prefix
            .as_deref()
            .map(|p| p.trim_matches('/'))
            .unwrap_or("");
        if prefix.split('/').any(|s| s == ".." || s == ".") {
            return Err(Error::InvalidConfig {
                field: "prefix",
                reason: format!("`{prefix}` has a `.` or `..` segment"),
            });
        }
        let root = parse_key(prefix).map_err(|e| Error::InvalidConfig {
            field: "prefix",
            reason: e.to_string(),
        })?;
        match (&config.bucket, &config.local_path) {
            (Some(_), Some(_)) => Err(Error::InvalidConfig {
                field: "bucket",
                reason: "a connection is either a bucket or a local folder, not both".into(),
            }),
            (None, None) => Err(Error::InvalidConfig {
                field: "url",
                reason: "say where the data lives: `url = \"s3://bucket/prefix\"`, `bucket = \"…\"` or `local_path = \"…\"`".into(),
            }),
            (None, Some(path)) => config.connect_local(path, root),
            (Some(bucket), None) => config.connect_s3(bucket, root),
        }
    }

    fn connect_local(&self, path: &std::path::Path, root: Path) -> Result<Connection> {
        std::fs::create_dir_all(path).map_err(|e| Error::InvalidConfig {
            field: "local_path",
            reason: format!("cannot create `{}`: {e}", path.display()),
        })?;
        let absolute = std::fs::canonicalize(path).map_err(|e| Error::InvalidConfig {
            field: "local_path",
            reason: format!("cannot resolve `{}`: {e}", path.display()),
        })?;
        let store = LocalFileSystem::new_with_prefix(&absolute)
            .map_err(|source| Error::Build {
                backend: "local",
                source,
            })?
            .with_automatic_cleanup(true);
        let base = url::Url::from_directory_path(&absolute)
            .map(|u| u.to_string().trim_end_matches('/').to_owned())
            .unwrap_or_else(|()| format!("file://{}", absolute.display()));
        Ok(Connection::new(Arc::new(store), root, base))
    }

    fn connect_s3(&self, bucket: &str, root: Path) -> Result<Connection> {
        if let Some(endpoint) = &self.endpoint {
            let lower = endpoint.to_ascii_lowercase();
            if lower.starts_with("http://") && !self.allow_http {
                return Err(Error::PlainHttp {
                    endpoint: endpoint.clone(),
                });
            }
            if !lower.starts_with("http://") && !lower.starts_with("https://") {
                return Err(Error::InvalidConfig {
                    field: "endpoint",
                    reason: format!("`{endpoint}` must start with https:// (or http://)"),
                });
            }
        }
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(self.region.as_deref().unwrap_or("us-east-1"))
            .with_allow_http(self.allow_http)
            .with_virtual_hosted_style_request(self.virtual_hosted_style);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(id), Some(secret)) => {
                builder = builder
                    .with_access_key_id(id)
                    .with_secret_access_key(secret.expose());
                if let Some(token) = &self.session_token {
                    builder = builder.with_token(token.expose());
                }
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(Error::InvalidConfig {
                    field: "secret_access_key",
                    reason: "an access key id needs its secret access key".into(),
                });
            }
            (None, Some(_)) => {
                return Err(Error::InvalidConfig {
                    field: "access_key_id",
                    reason: "a secret access key needs its access key id".into(),
                });
            }
        }
        let mut client = ClientOptions::new().with_allow_http(self.allow_http);
        if let Some(secs) = self.timeout_secs {
            client = client.with_timeout(Duration::from_secs(secs));
        }
        builder = builder.with_client_options(client);
        if let Some(max_retries) = self.max_retries {
            builder = builder.with_retry(RetryConfig {
                max_retries,
                ..RetryConfig::default()
            });
        }
        let store = builder.build().map_err(|source| Error::Build {
            backend: "s3",
            source,
        })?;
        Ok(Connection::new(
            Arc::new(store),
            root,
            format!("s3://{bucket}"),
        ))
    }
}

/// An object key, exactly as written.
pub(crate) fn parse_key(key: &str) -> Result<Path> {
    Path::parse(key).map_err(|e| Error::InvalidKey {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// A ready connection: the object store, and the root path inside it.
#[derive(Debug, Clone)]
pub struct Connection {
    store: Arc<dyn ObjectStore>,
    root: Path,
    base_url: String,
}

impl Connection {
    /// A connection over any object store (tests, custom backends). `base_url` names the
    /// store's root in URIs (`s3://bucket`, `memory://`).
    pub fn new(store: Arc<dyn ObjectStore>, root: Path, base_url: impl Into<String>) -> Self {
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        let base_url = if root.as_ref().is_empty() {
            base_url
        } else {
            format!("{base_url}/{root}")
        };
        Self {
            store,
            root,
            base_url,
        }
    }

    /// The object store, addressed with bucket-relative keys.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The root path (prefix) inside the bucket; every key this connection uses is below it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The URI of the root: `s3://bucket/prefix`, `file:///path`.
    pub fn url(&self) -> &str {
        &self.base_url
    }

    /// The bucket-relative key of `relative` (a path below the root), exactly as written:
    /// nothing is re-encoded (`a%2Fb` stays `a%2Fb`).
    pub fn key(&self, relative: &str) -> Result<Path> {
        let relative = relative.trim_matches('/');
        if self.root.as_ref().is_empty() {
            parse_key(relative)
        } else if relative.is_empty() {
            Ok(self.root.clone())
        } else {
            parse_key(&format!("{}/{relative}", self.root))
        }
    }

    /// The full URI of a bucket-relative key.
    pub fn uri(&self, key: &Path) -> String {
        let relative = key
            .as_ref()
            .strip_prefix(self.root.as_ref())
            .map(|r| r.trim_start_matches('/'))
            .unwrap_or(key.as_ref());
        if relative.is_empty() {
            self.base_url.clone()
        } else {
            format!("{}/{relative}", self.base_url)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_understood() {
        let c = ConnectionConfig::from_url("s3://b/a/b/")
            .unwrap()
            .connect()
            .unwrap();
        assert_eq!(c.url(), "s3://b/a/b");
        assert_eq!(c.root().as_ref(), "a/b");
        assert_eq!(c.key("x/y.parquet").unwrap().as_ref(), "a/b/x/y.parquet");
        assert_eq!(
            c.uri(&c.key("x/y.parquet").unwrap()),
            "s3://b/a/b/x/y.parquet"
        );
        // Keys are taken as written: escapes made by a template are not escaped again.
        assert_eq!(
            c.key("t/country=a%2Fb#c/0.parquet").unwrap().as_ref(),
            "a/b/t/country=a%2Fb#c/0.parquet"
        );
        assert!(c.key("a//b").is_err());
        assert!(c.key("a/../b").is_err());

        let c = ConnectionConfig::from_url("s3://b")
            .unwrap()
            .connect()
            .unwrap();
        assert_eq!(c.url(), "s3://b");
        assert_eq!(c.key("k").unwrap().as_ref(), "k");

        let err = ConnectionConfig::from_url("s3:///x").unwrap_err();
        assert!(err.to_string().contains("names no bucket"), "{err}");
        let err = ConnectionConfig::from_url("gs://b/x").unwrap_err();
        assert!(err.to_string().contains("s3://bucket/prefix"), "{err}");
    }

    #[test]
    fn local_folders_stand_in_for_buckets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bucket");
        let c = ConnectionConfig::local(&path)
            .with_prefix("/root/")
            .connect()
            .unwrap();
        assert!(path.is_dir());
        assert!(c.url().starts_with("file:///"), "{}", c.url());
        assert!(c.url().ends_with("/bucket/root"), "{}", c.url());
        let c2 = ConnectionConfig::from_url(&format!("file://{}", path.display()))
            .unwrap()
            .connect()
            .unwrap();
        assert!(c2.url().ends_with("/bucket"), "{}", c2.url());
    }

    #[test]
    fn plain_http_needs_an_explicit_opt_in() {
        let config = ConnectionConfig::s3("b").with_endpoint("http://127.0.0.1:9000");
        let err = config.connect().unwrap_err();
        assert!(matches!(err, Error::PlainHttp { .. }), "{err}");
        assert!(err.to_string().contains("allow_http = true"), "{err}");
        config.with_allow_http(true).connect().unwrap();
        let err = ConnectionConfig::s3("b")
            .with_endpoint("minio:9000")
            .connect()
            .unwrap_err();
        assert!(err.to_string().contains("https://"), "{err}");
    }

    #[test]
    fn half_credentials_are_refused() {
        let mut c = ConnectionConfig::s3("b");
        c.access_key_id = Some("AKIA".into());
        let err = c.connect().unwrap_err();
        assert!(err.to_string().contains("secret access key"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";
        let token = "FwoGZXIvYXdzEXAMPLETOKEN";
        let config = ConnectionConfig::s3("b").with_static_credentials(
            "AKIAEXAMPLE",
            secret,
            Some(Secret::new(token)),
        );
        let printed = format!("{config:?} {:?}", config.connect().unwrap());
        assert!(
            !printed.contains(secret) && !printed.contains(token),
            "{printed}"
        );
        let toml_config: ConnectionConfig = toml::from_str(&format!(
            "bucket = \"b\"\naccess_key_id = \"AKIA\"\nsecret_access_key = \"{secret}\"\n"
        ))
        .unwrap();
        assert!(!format!("{toml_config:?}").contains(secret));
        assert_eq!(Secret::new(secret).to_string(), "***");
    }

    #[test]
    fn unknown_settings_are_refused_by_name() {
        let err = toml::from_str::<ConnectionConfig>("buckt = \"b\"").unwrap_err();
        assert!(err.to_string().contains("buckt"), "{err}");
    }
}
