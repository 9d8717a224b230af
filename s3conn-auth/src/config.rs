//! Connection configuration: where the data lives and how to reach it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredential, AwsCredentialProvider};
use object_store::local::LocalFileSystem;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{
    ClientOptions, ObjectStore, PutMultipartOptions, RetryConfig, StaticCredentialProvider,
};
use serde::Deserialize;

use crate::check::CheckReport;
use crate::credentials::{
    AssumeRole, Clock, DEFAULT_REFRESH_MARGIN, RefreshingProvider, SystemClock,
};
use crate::error::{Error, Result};
use crate::http::{RequestCounts, RequestStats, S3Connector};
use crate::policy::{Role, Scope};
use crate::profile::{self, ProfileCredentials, ProfileFiles};
use crate::refresh::RefreshOnExpiry;
use crate::secret::Secret;
use crate::uploads::{OpenUpload, S3Lister, StartedUpload, Uploads};

/// A setting of a [`ConnectionConfig`], by name: for hosts that configure connections from
/// text (environment variables, key-value files, command lines).
///
/// [`FromStr`] accepts the canonical name (the TOML key, [`AsRef<str>`]), the AWS
/// environment variable's name in lower case where there is one, and the `s3conn_` prefixed
/// name; [`ConnectionConfig::from_env`] reads both `AWS_*` and `S3CONN_*` variables.
///
/// | key | aliases |
/// |---|---|
/// | `url` | `s3_url` |
/// | `bucket` | `bucket_name`, `aws_bucket`, `aws_bucket_name` |
/// | `prefix` | `root`, `root_path` |
/// | `local_path` | |
/// | `region` | `aws_region`, `aws_default_region` |
/// | `endpoint` | `endpoint_url`, `aws_endpoint`, `aws_endpoint_url`, `aws_endpoint_url_s3` |
/// | `access_key_id` | `aws_access_key_id` |
/// | `secret_access_key` | `aws_secret_access_key` |
/// | `session_token` | `token`, `aws_session_token`, `aws_token` |
/// | `profile` | `aws_profile` |
/// | `role_arn` | `assume_role_arn`, `aws_assume_role_arn` |
/// | `external_id` | `aws_external_id`, `aws_assume_role_external_id` |
/// | `session_name` | `role_session_name`, `aws_assume_role_session_name` |
/// | `duration_secs` | `duration_seconds` |
/// | `sts_endpoint` | `endpoint_url_sts`, `aws_endpoint_url_sts` |
/// | `refresh_margin_secs` | |
/// | `allow_http` | `aws_allow_http` |
/// | `virtual_hosted_style` | `virtual_hosted_style_request`, `aws_virtual_hosted_style_request` |
/// | `timeout_secs` | `request_timeout_secs` |
/// | `connect_timeout_secs` | |
/// | `max_retries` | |
/// | `retry_timeout_secs` | |
/// | `shared_credentials_file` | `aws_shared_credentials_file` |
/// | `shared_config_file` | `aws_config_file` |
/// | `disable_bulk_delete` | `aws_disable_bulk_delete` |
///
/// `AWS_ROLE_ARN` and `AWS_ROLE_SESSION_NAME` are not aliases: in the environment they belong
/// to web identity (`AWS_WEB_IDENTITY_TOKEN_FILE`), which the default chain handles.
///
/// ```
/// use s3conn_auth::ConnectionConfigKey;
/// let key: ConnectionConfigKey = "AWS_DEFAULT_REGION".parse()?;
/// assert_eq!(key, ConnectionConfigKey::Region);
/// assert_eq!(key.as_ref(), "region");
/// assert_eq!("s3conn_external_id".parse::<ConnectionConfigKey>()?, ConnectionConfigKey::ExternalId);
/// # Ok::<(), s3conn_auth::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ConnectionConfigKey {
    /// `s3://bucket/prefix`, `file:///path` or a local path.
    Url,
    /// The bucket.
    Bucket,
    /// The root path inside the bucket.
    Prefix,
    /// A local folder standing in for a bucket.
    LocalPath,
    /// The bucket's region.
    Region,
    /// An S3-compatible endpoint (MinIO, R2, Ceph): `https://host[:port]`.
    Endpoint,
    /// Static access key id.
    AccessKeyId,
    /// Static secret access key.
    SecretAccessKey,
    /// Session token of temporary static keys.
    SessionToken,
    /// A named profile of `~/.aws/credentials` / `~/.aws/config`.
    Profile,
    /// A role to assume on top of the other credentials.
    RoleArn,
    /// The External ID the role's trust policy requires.
    ExternalId,
    /// The AssumeRole session name.
    SessionName,
    /// How long assumed-role credentials last, in seconds.
    DurationSecs,
    /// Another STS endpoint.
    StsEndpoint,
    /// Refresh temporary credentials this many seconds before they expire.
    RefreshMarginSecs,
    /// Allow plain-http endpoints.
    AllowHttp,
    /// Virtual-hosted-style addressing (`bucket.host`) instead of path style (`host/bucket`).
    VirtualHostedStyle,
    /// Per-request timeout, in seconds.
    TimeoutSecs,
    /// Connection timeout, in seconds.
    ConnectTimeoutSecs,
    /// How many times a failed request is retried.
    MaxRetries,
    /// How long retries of one request may go on, in seconds.
    RetryTimeoutSecs,
    /// The shared credentials file (default `~/.aws/credentials`).
    SharedCredentialsFile,
    /// The shared config file (default `~/.aws/config`).
    SharedConfigFile,
    /// Delete objects one request each instead of with `DeleteObjects` (stores without the
    /// bulk API).
    DisableBulkDelete,
}

impl ConnectionConfigKey {
    /// Every key.
    pub const ALL: &'static [Self] = &[
        Self::Url,
        Self::Bucket,
        Self::Prefix,
        Self::LocalPath,
        Self::Region,
        Self::Endpoint,
        Self::AccessKeyId,
        Self::SecretAccessKey,
        Self::SessionToken,
        Self::Profile,
        Self::RoleArn,
        Self::ExternalId,
        Self::SessionName,
        Self::DurationSecs,
        Self::StsEndpoint,
        Self::RefreshMarginSecs,
        Self::AllowHttp,
        Self::VirtualHostedStyle,
        Self::TimeoutSecs,
        Self::ConnectTimeoutSecs,
        Self::MaxRetries,
        Self::RetryTimeoutSecs,
        Self::SharedCredentialsFile,
        Self::SharedConfigFile,
        Self::DisableBulkDelete,
    ];

    /// The canonical name: the TOML key.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Url => "url",
            Self::Bucket => "bucket",
            Self::Prefix => "prefix",
            Self::LocalPath => "local_path",
            Self::Region => "region",
            Self::Endpoint => "endpoint",
            Self::AccessKeyId => "access_key_id",
            Self::SecretAccessKey => "secret_access_key",
            Self::SessionToken => "session_token",
            Self::Profile => "profile",
            Self::RoleArn => "role_arn",
            Self::ExternalId => "external_id",
            Self::SessionName => "session_name",
            Self::DurationSecs => "duration_secs",
            Self::StsEndpoint => "sts_endpoint",
            Self::RefreshMarginSecs => "refresh_margin_secs",
            Self::AllowHttp => "allow_http",
            Self::VirtualHostedStyle => "virtual_hosted_style",
            Self::TimeoutSecs => "timeout_secs",
            Self::ConnectTimeoutSecs => "connect_timeout_secs",
            Self::MaxRetries => "max_retries",
            Self::RetryTimeoutSecs => "retry_timeout_secs",
            Self::SharedCredentialsFile => "shared_credentials_file",
            Self::SharedConfigFile => "shared_config_file",
            Self::DisableBulkDelete => "disable_bulk_delete",
        }
    }

    /// Whether the value is a secret (never printed).
    pub fn is_secret(&self) -> bool {
        matches!(self, Self::SecretAccessKey | Self::SessionToken)
    }
}

impl AsRef<str> for ConnectionConfigKey {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for ConnectionConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_ref())
    }
}

impl FromStr for ConnectionConfigKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let name = lower.strip_prefix("s3conn_").unwrap_or(&lower);
        if let Some(key) = Self::ALL.iter().find(|k| k.as_ref() == name) {
            return Ok(*key);
        }
        Ok(match name {
            "s3_url" => Self::Url,
            "bucket_name" | "aws_bucket" | "aws_bucket_name" => Self::Bucket,
            "root" | "root_path" => Self::Prefix,
            "aws_region" | "aws_default_region" => Self::Region,
            "endpoint_url" | "aws_endpoint" | "aws_endpoint_url" | "aws_endpoint_url_s3" => {
                Self::Endpoint
            }
            "aws_access_key_id" => Self::AccessKeyId,
            "aws_secret_access_key" => Self::SecretAccessKey,
            "token" | "aws_session_token" | "aws_token" => Self::SessionToken,
            "aws_profile" => Self::Profile,
            "assume_role_arn" | "aws_assume_role_arn" => Self::RoleArn,
            "aws_external_id" | "aws_assume_role_external_id" => Self::ExternalId,
            "role_session_name" | "aws_assume_role_session_name" => Self::SessionName,
            "duration_seconds" => Self::DurationSecs,
            "endpoint_url_sts" | "aws_endpoint_url_sts" => Self::StsEndpoint,
            "aws_allow_http" => Self::AllowHttp,
            "virtual_hosted_style_request" | "aws_virtual_hosted_style_request" => {
                Self::VirtualHostedStyle
            }
            "request_timeout_secs" => Self::TimeoutSecs,
            "aws_shared_credentials_file" => Self::SharedCredentialsFile,
            "aws_config_file" => Self::SharedConfigFile,
            "aws_disable_bulk_delete" => Self::DisableBulkDelete,
            _ => {
                return Err(Error::InvalidConfig {
                    field: "key",
                    reason: format!("`{s}` is not a connection setting"),
                });
            }
        })
    }
}

/// A clock, compared by identity (for `ConnectionConfig`'s `PartialEq`).
#[derive(Clone)]
struct ClockHandle(Arc<dyn Clock>);

impl PartialEq for ClockHandle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for ClockHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A host's own base credential provider, compared by identity.
#[derive(Clone)]
struct ProviderHandle(AwsCredentialProvider);

impl PartialEq for ProviderHandle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for ProviderHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where the data lives and how to reach it: an S3 (or S3-compatible) bucket, or a local
/// folder standing in for one.
///
/// Build it in code, from a URL, from the environment ([`from_env`](Self::from_env):
/// `AWS_*` and `S3CONN_*` variables), from settings by name
/// ([`with_config`](Self::with_config)), or deserialize it from a host's configuration
/// (TOML, JSON); the keys are the names of [`ConnectionConfigKey`]:
///
/// ```toml
/// url = "s3://my-bucket/exports"        # or bucket = "my-bucket" + prefix = "exports"
/// region = "eu-west-1"
/// endpoint = "https://minio.internal:9000"   # S3-compatible stores
/// virtual_hosted_style = false                # bucket.host instead of host/bucket
/// allow_http = false                          # plain-http endpoints need this set
/// timeout_secs = 30                           # per request; connect_timeout_secs too
/// max_retries = 10                            # retry_timeout_secs bounds the retries
///
/// # Credentials, one of:
/// access_key_id = "AKIA…"                     # static keys…
/// secret_access_key = "…"                     # …never printed
/// session_token = "…"                         # optional
/// # profile = "prod"                          # a named profile of ~/.aws/{credentials,config}
/// # nothing: the default chain (environment, shared files, web identity, container
/// #          credentials, EC2 instance profile over IMDSv2)
///
/// # And on top of any of them, a role to assume:
/// role_arn = "arn:aws:iam::123456789012:role/s3conn"
/// external_id = "tenant-42"
/// session_name = "s3conn"
/// duration_secs = 3600
/// # sts_endpoint = "https://sts.eu-west-1.amazonaws.com"
/// # refresh_margin_secs = 300                 # renew temporary credentials this early
/// # disable_bulk_delete = false               # one DELETE per object instead of DeleteObjects
/// ```
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
    profile: Option<String>,
    #[serde(default)]
    role_arn: Option<String>,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    session_name: Option<String>,
    #[serde(default)]
    duration_secs: Option<u64>,
    #[serde(default)]
    sts_endpoint: Option<String>,
    #[serde(default)]
    refresh_margin_secs: Option<u64>,
    #[serde(default)]
    allow_http: bool,
    #[serde(default)]
    virtual_hosted_style: bool,
    #[serde(default)]
    timeout_secs: Option<u64>,
    #[serde(default)]
    connect_timeout_secs: Option<u64>,
    #[serde(default)]
    max_retries: Option<usize>,
    #[serde(default)]
    retry_timeout_secs: Option<u64>,
    #[serde(default)]
    shared_credentials_file: Option<PathBuf>,
    #[serde(default)]
    shared_config_file: Option<PathBuf>,
    #[serde(default)]
    disable_bulk_delete: bool,
    /// `None`: the system clock.
    #[serde(skip)]
    clock: Option<ClockHandle>,
    #[serde(skip)]
    credentials: Option<ProviderHandle>,
    /// Values `with_config` could not parse: reported by `connect`.
    #[serde(skip)]
    invalid: Vec<(ConnectionConfigKey, String)>,
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
            .field("profile", &self.profile)
            .field("role_arn", &self.role_arn)
            .field("external_id", &self.external_id)
            .field("session_name", &self.session_name)
            .field("duration_secs", &self.duration_secs)
            .field("sts_endpoint", &self.sts_endpoint)
            .field("refresh_margin_secs", &self.refresh_margin_secs)
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("timeout_secs", &self.timeout_secs)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("max_retries", &self.max_retries)
            .field("retry_timeout_secs", &self.retry_timeout_secs)
            .field("shared_credentials_file", &self.shared_credentials_file)
            .field("shared_config_file", &self.shared_config_file)
            .field("disable_bulk_delete", &self.disable_bulk_delete)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// A snapshot of the environment variables the default chain reads.
pub(crate) type Env = BTreeMap<String, String>;

fn process_env() -> Env {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// The environment variables that object_store's own credential providers read (web
/// identity, ECS/EKS container credentials, the instance metadata endpoint).
const PLATFORM_CREDENTIAL_VARS: &[&str] = &[
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_ENDPOINT_URL_STS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_METADATA_ENDPOINT",
    "AWS_IMDSV1_FALLBACK",
];

/// The base credentials, before any role is assumed.
enum Base {
    Static(AwsCredential),
    /// A provider, and the refreshing provider behind it when it renews temporary
    /// credentials (so that the store can be wrapped to renew on `ExpiredToken`).
    Provider(AwsCredentialProvider, Option<Arc<RefreshingProvider>>),
    /// object_store's own chain: web identity, container credentials, instance profile.
    Platform(Vec<(AmazonS3ConfigKey, String)>),
}

/// The HTTP settings shared by S3, STS and the credential endpoints.
struct Http {
    client: ClientOptions,
    retry: RetryConfig,
    region: String,
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

    /// From the environment: every `AWS_*` variable that names a setting (see
    /// [`ConnectionConfigKey`]), then every `S3CONN_*` one (which win). Variables that name
    /// no setting are ignored; values that do not parse are reported by
    /// [`connect`](Self::connect).
    ///
    /// ```no_run
    /// // S3CONN_URL=s3://bucket/prefix AWS_REGION=eu-west-1 S3CONN_ROLE_ARN=arn:… S3CONN_EXTERNAL_ID=…
    /// let connection = s3conn_auth::ConnectionConfig::from_env().connect()?;
    /// # Ok::<(), s3conn_auth::Error>(())
    /// ```
    pub fn from_env() -> Self {
        Self::default().with_env_vars(process_env())
    }

    /// Like [`from_env`](Self::from_env), from the given variables, on top of this
    /// configuration.
    ///
    /// ```
    /// use s3conn_auth::ConnectionConfig;
    /// let config = ConnectionConfig::default().with_env_vars([
    ///     ("S3CONN_URL", "s3://bucket/landing"),
    ///     ("AWS_DEFAULT_REGION", "eu-west-3"),
    ///     ("S3CONN_ROLE_ARN", "arn:aws:iam::123456789012:role/reader"),
    ///     ("AWS_ASSUME_ROLE_EXTERNAL_ID", "tenant-42"),
    ///     ("HOME", "/home/me"),
    /// ]);
    /// let connection = config.connect()?;
    /// assert_eq!(connection.region(), Some("eu-west-3"));
    /// # Ok::<(), s3conn_auth::Error>(())
    /// ```
    pub fn with_env_vars<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: AsRef<str>,
        V: Into<String>,
    {
        let mut aws = BTreeMap::new();
        let mut ours = BTreeMap::new();
        for (name, value) in vars {
            let name = name.as_ref();
            let upper = name.to_ascii_uppercase();
            if PLATFORM_CREDENTIAL_VARS.contains(&upper.as_str()) && upper != "AWS_ENDPOINT_URL_STS"
            {
                continue;
            }
            if let Ok(key) = name.parse::<ConnectionConfigKey>() {
                if upper.starts_with("AWS_") {
                    aws.insert(upper, (key, value.into()));
                } else if upper.starts_with("S3CONN_") {
                    ours.insert(upper, (key, value.into()));
                }
            }
        }
        for (_, (key, value)) in aws.into_iter().chain(ours) {
            self = self.with_config(key, value);
        }
        self
    }

    /// Set one setting from text. A value that does not parse (a number, a boolean) is
    /// reported by [`connect`](Self::connect), with the setting's name.
    ///
    /// ```
    /// use s3conn_auth::{ConnectionConfig, ConnectionConfigKey};
    /// let config = ConnectionConfig::s3("b")
    ///     .with_config(ConnectionConfigKey::Endpoint, "http://127.0.0.1:9000")
    ///     .with_config("allow_http".parse()?, "true")
    ///     .with_config(ConnectionConfigKey::TimeoutSecs, "soon");
    /// let err = config.connect().unwrap_err();
    /// assert!(err.to_string().contains("timeout_secs"), "{err}");
    /// # Ok::<(), s3conn_auth::Error>(())
    /// ```
    pub fn with_config(mut self, key: ConnectionConfigKey, value: impl Into<String>) -> Self {
        let value = value.into();
        let text = || Some(value.clone());
        let number =
            |invalid: &mut Vec<(ConnectionConfigKey, String)>| match value.trim().parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    invalid.push((key, "expected a whole number".into()));
                    None
                }
            };
        let boolean = |invalid: &mut Vec<(ConnectionConfigKey, String)>| match value
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" | "" => false,
            _ => {
                invalid.push((key, "expected true or false".into()));
                false
            }
        };
        match key {
            ConnectionConfigKey::Url => self.url = text(),
            ConnectionConfigKey::Bucket => self.bucket = text(),
            ConnectionConfigKey::Prefix => self.prefix = text(),
            ConnectionConfigKey::LocalPath => self.local_path = Some(PathBuf::from(&value)),
            ConnectionConfigKey::Region => self.region = text(),
            ConnectionConfigKey::Endpoint => self.endpoint = text(),
            ConnectionConfigKey::AccessKeyId => self.access_key_id = text(),
            ConnectionConfigKey::SecretAccessKey => {
                self.secret_access_key = Some(Secret::new(value))
            }
            ConnectionConfigKey::SessionToken => self.session_token = Some(Secret::new(value)),
            ConnectionConfigKey::Profile => self.profile = text(),
            ConnectionConfigKey::RoleArn => self.role_arn = text(),
            ConnectionConfigKey::ExternalId => self.external_id = text(),
            ConnectionConfigKey::SessionName => self.session_name = text(),
            ConnectionConfigKey::DurationSecs => self.duration_secs = number(&mut self.invalid),
            ConnectionConfigKey::StsEndpoint => self.sts_endpoint = text(),
            ConnectionConfigKey::RefreshMarginSecs => {
                self.refresh_margin_secs = number(&mut self.invalid)
            }
            ConnectionConfigKey::AllowHttp => self.allow_http = boolean(&mut self.invalid),
            ConnectionConfigKey::VirtualHostedStyle => {
                self.virtual_hosted_style = boolean(&mut self.invalid)
            }
            ConnectionConfigKey::TimeoutSecs => self.timeout_secs = number(&mut self.invalid),
            ConnectionConfigKey::ConnectTimeoutSecs => {
                self.connect_timeout_secs = number(&mut self.invalid)
            }
            ConnectionConfigKey::MaxRetries => {
                self.max_retries = number(&mut self.invalid).map(|n| n as usize)
            }
            ConnectionConfigKey::RetryTimeoutSecs => {
                self.retry_timeout_secs = number(&mut self.invalid)
            }
            ConnectionConfigKey::SharedCredentialsFile => {
                self.shared_credentials_file = Some(PathBuf::from(&value))
            }
            ConnectionConfigKey::SharedConfigFile => {
                self.shared_config_file = Some(PathBuf::from(&value))
            }
            ConnectionConfigKey::DisableBulkDelete => {
                self.disable_bulk_delete = boolean(&mut self.invalid)
            }
        }
        self
    }

    /// Set `s3://bucket/prefix`, `file:///path` or a local path (read at
    /// [`connect`](Self::connect)).
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Set the key prefix (root path) inside the bucket.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Set the region (default: the profile's, else `us-east-1`).
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

    /// Use a named profile of the shared AWS files (`~/.aws/credentials`, `~/.aws/config`):
    /// its keys, or the role it assumes from a `source_profile`, and its region.
    pub fn with_profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = Some(profile.into());
        self
    }

    /// The shared files to read profiles from (default `~/.aws/credentials` and
    /// `~/.aws/config`, or `AWS_SHARED_CREDENTIALS_FILE` / `AWS_CONFIG_FILE`).
    pub fn with_profile_files(
        mut self,
        credentials: Option<PathBuf>,
        config: Option<PathBuf>,
    ) -> Self {
        self.shared_credentials_file = credentials;
        self.shared_config_file = config;
        self
    }

    /// Assume this role (STS AssumeRole) with the other credentials (static keys, a profile,
    /// or the default chain). Its temporary credentials are renewed before they expire.
    pub fn with_role_arn(mut self, role_arn: impl Into<String>) -> Self {
        self.role_arn = Some(role_arn.into());
        self
    }

    /// The External ID the role's trust policy requires.
    pub fn with_external_id(mut self, external_id: impl Into<String>) -> Self {
        self.external_id = Some(external_id.into());
        self
    }

    /// The AssumeRole session name (default `s3conn`), as CloudTrail shows it.
    pub fn with_session_name(mut self, session_name: impl Into<String>) -> Self {
        self.session_name = Some(session_name.into());
        self
    }

    /// How long assumed-role credentials last (STS: 15 minutes to the role's maximum;
    /// default one hour).
    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration_secs = Some(duration.as_secs());
        self
    }

    /// Another STS endpoint (a VPC endpoint, a test server).
    pub fn with_sts_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.sts_endpoint = Some(endpoint.into());
        self
    }

    /// Renew temporary credentials this long before they expire (default five minutes, at
    /// most half their lifetime).
    pub fn with_refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin_secs = Some(margin.as_secs());
        self
    }

    /// Decide credential expiry on this clock (tests move it forward).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(ClockHandle(clock));
        self
    }

    /// Use the host's own base credentials instead of keys, a profile or the default chain
    /// (a role in `role_arn` is still assumed on top of them).
    pub fn with_credential_provider(mut self, provider: AwsCredentialProvider) -> Self {
        self.credentials = Some(ProviderHandle(provider));
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

    /// The connection timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout_secs = Some(timeout.as_secs().max(1));
        self
    }

    /// How many times a failed request is retried.
    pub fn with_max_retries(mut self, retries: usize) -> Self {
        self.max_retries = Some(retries);
        self
    }

    /// How long the retries of one request may go on.
    pub fn with_retry_timeout(mut self, timeout: Duration) -> Self {
        self.retry_timeout_secs = Some(timeout.as_secs().max(1));
        self
    }

    /// Delete objects with one `DELETE` each instead of `DeleteObjects` (for stores that
    /// lack the bulk API, or authorize it against the bucket instead of each key).
    pub fn with_bulk_delete_disabled(mut self, disabled: bool) -> Self {
        self.disable_bulk_delete = disabled;
        self
    }

    /// The bucket and root path, for [`policy`](crate::policy) documents.
    ///
    /// ```
    /// use s3conn_auth::ConnectionConfig;
    /// use s3conn_auth::policy::Role;
    /// let scope = ConnectionConfig::from_url("s3://customer-data/landing")?.scope()?;
    /// let policy = scope.policy(Role::Source);
    /// assert_eq!(policy["Statement"][1]["Resource"], "arn:aws:s3:::customer-data/landing/*");
    /// # Ok::<(), s3conn_auth::Error>(())
    /// ```
    pub fn scope(&self) -> Result<Scope> {
        let mut config = self.clone();
        config.resolve_url()?;
        let Some(bucket) = &config.bucket else {
            return Err(Error::InvalidConfig {
                field: "bucket",
                reason:
                    "a policy needs a bucket: `url = \"s3://bucket/prefix\"` or `bucket = \"…\"`"
                        .into(),
            });
        };
        let scope = Scope::new(bucket, config.prefix.as_deref().unwrap_or(""))?;
        Ok(match &config.region {
            Some(region) => scope.with_partition(Scope::partition_of_region(region)),
            None => scope,
        })
    }

    fn clock(&self) -> Arc<dyn Clock> {
        match &self.clock {
            Some(handle) => Arc::clone(&handle.0),
            None => Arc::new(SystemClock),
        }
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
                if self.prefix.as_deref().is_some_and(|p| p != prefix) {
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

    /// Check the configuration and build the connection. Nothing is sent: credentials are
    /// fetched (and roles assumed) at the first request.
    pub fn connect(&self) -> Result<Connection> {
        self.connect_with_env(&process_env())
    }

    pub(crate) fn connect_with_env(&self, env: &Env) -> Result<Connection> {
        if let Some((key, reason)) = self.invalid.first() {
            return Err(Error::InvalidConfig {
                field: key.as_str(),
                reason: reason.clone(),
            });
        }
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
            (Some(bucket), None) => config.connect_s3(bucket, root, env),
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
        let mut connection = Connection::new(Arc::new(store), root, base);
        connection.uploads = Uploads::Local { root: absolute };
        Ok(connection)
    }

    fn check_endpoint(&self, field: &'static str, endpoint: &str) -> Result<()> {
        let lower = endpoint.to_ascii_lowercase();
        if lower.starts_with("http://") && !self.allow_http {
            return Err(Error::PlainHttp {
                endpoint: endpoint.to_owned(),
            });
        }
        if !lower.starts_with("http://") && !lower.starts_with("https://") {
            return Err(Error::InvalidConfig {
                field,
                reason: format!("`{endpoint}` must start with https:// (or http://)"),
            });
        }
        Ok(())
    }

    fn connect_s3(&self, bucket: &str, root: Path, env: &Env) -> Result<Connection> {
        if let Some(endpoint) = &self.endpoint {
            self.check_endpoint("endpoint", endpoint)?;
        }
        if let Some(endpoint) = &self.sts_endpoint {
            self.check_endpoint("sts_endpoint", endpoint)?;
        }
        if self.role_arn.is_none() {
            for (field, set) in [
                ("external_id", self.external_id.is_some()),
                ("session_name", self.session_name.is_some()),
                ("duration_secs", self.duration_secs.is_some()),
            ] {
                if set {
                    return Err(Error::InvalidConfig {
                        field,
                        reason: "only applies to an assumed role: set `role_arn` too".into(),
                    });
                }
            }
        }
        let (base, profile_region) = self.base_credentials(env)?;
        let region = self
            .region
            .clone()
            .or(profile_region)
            .unwrap_or_else(|| "us-east-1".into());
        let mut client = ClientOptions::new().with_allow_http(self.allow_http);
        if let Some(secs) = self.timeout_secs {
            client = client.with_timeout(Duration::from_secs(secs));
        }
        if let Some(secs) = self.connect_timeout_secs {
            client = client.with_connect_timeout(Duration::from_secs(secs));
        }
        let mut retry = RetryConfig::default();
        if let Some(max_retries) = self.max_retries {
            retry.max_retries = max_retries;
        }
        if let Some(secs) = self.retry_timeout_secs {
            retry.retry_timeout = Duration::from_secs(secs);
        }
        let http = Http {
            client,
            retry,
            region,
        };

        let stats = Arc::new(RequestStats::default());
        let mut builder = AmazonS3Builder::new()
            .with_http_connector(S3Connector {
                stats: Arc::clone(&stats),
            })
            .with_bucket_name(bucket)
            .with_region(&http.region)
            .with_allow_http(self.allow_http)
            .with_virtual_hosted_style_request(self.virtual_hosted_style)
            .with_client_options(http.client.clone())
            .with_retry(http.retry.clone());
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(self.bucket_endpoint(bucket, endpoint)?);
        }
        if self.disable_bulk_delete {
            builder = builder.with_config(AmazonS3ConfigKey::DisableBulkDelete, "true");
        }

        let refreshing = match (&self.role_arn, base) {
            (None, Base::Static(credential)) => {
                builder =
                    builder.with_credentials(Arc::new(StaticCredentialProvider::new(credential)));
                None
            }
            (None, Base::Provider(provider, refreshing)) => {
                builder = builder.with_credentials(provider);
                refreshing
            }
            (None, Base::Platform(settings)) => {
                for (key, value) in settings {
                    builder = builder.with_config(key, value);
                }
                None
            }
            (Some(role_arn), base) => {
                let base = provider_of(base, &http)?;
                let mut source = AssumeRole::new(base, role_arn)
                    .with_region(&http.region)
                    .with_client_options(http.client.clone())
                    .with_session_name(self.session_name.as_deref().unwrap_or("s3conn"));
                if let Some(id) = &self.external_id {
                    source = source.with_external_id(id);
                }
                if let Some(secs) = self.duration_secs {
                    source = source.with_duration(Duration::from_secs(secs));
                }
                if let Some(endpoint) = &self.sts_endpoint {
                    source = source.with_endpoint(endpoint);
                }
                let provider = Arc::new(
                    RefreshingProvider::new(Arc::new(source))
                        .with_clock(self.clock())
                        .with_refresh_margin(
                            self.refresh_margin_secs
                                .map(Duration::from_secs)
                                .unwrap_or(DEFAULT_REFRESH_MARGIN),
                        ),
                );
                builder = builder.with_credentials(Arc::clone(&provider) as _);
                Some(provider)
            }
        };
        let store = builder.build().map_err(|source| Error::Build {
            backend: "s3",
            source,
        })?;
        let lister = Arc::new(S3Lister {
            client: crate::http::client(&http.client, &stats).map_err(|source| Error::Build {
                backend: "s3",
                source,
            })?,
            credentials: Arc::clone(store.credentials()),
            refreshing: refreshing.clone(),
            region: http.region.clone(),
            bucket_url: self.bucket_url(bucket, &http.region)?,
        });
        let (store, multipart): (Arc<dyn ObjectStore>, Arc<dyn MultipartStore>) = match &refreshing
        {
            Some(provider) => {
                let store = Arc::new(RefreshOnExpiry::new(store, Arc::clone(provider)));
                (Arc::clone(&store) as _, store as _)
            }
            None => {
                let store = Arc::new(store);
                (Arc::clone(&store) as _, store as _)
            }
        };
        let mut connection = Connection::new(store, root, format!("s3://{bucket}"));
        connection.uploads = Uploads::S3 { multipart, lister };
        connection.stats = stats;
        connection.refreshing = refreshing;
        connection.bucket = Some(bucket.to_owned());
        connection.region = Some(http.region);
        connection.endpoint = self.endpoint.clone();
        Ok(connection)
    }

    /// The URL of the bucket itself, for requests object_store does not make.
    fn bucket_url(&self, bucket: &str, region: &str) -> Result<String> {
        Ok(match (&self.endpoint, self.virtual_hosted_style) {
            (Some(endpoint), true) => self.bucket_endpoint(bucket, endpoint)?,
            (Some(endpoint), false) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        })
    }

    /// With virtual-hosted style, object_store expects the bucket in the endpoint's host.
    fn bucket_endpoint(&self, bucket: &str, endpoint: &str) -> Result<String> {
        if !self.virtual_hosted_style {
            return Ok(endpoint.to_owned());
        }
        let mut url = url::Url::parse(endpoint).map_err(|e| Error::InvalidConfig {
            field: "endpoint",
            reason: format!("`{endpoint}`: {e}"),
        })?;
        let host = url.host_str().unwrap_or_default().to_owned();
        if host.starts_with(&format!("{bucket}.")) {
            return Ok(endpoint.to_owned());
        }
        url.set_host(Some(&format!("{bucket}.{host}")))
            .map_err(|e| Error::InvalidConfig {
                field: "endpoint",
                reason: format!("`{endpoint}` with the bucket in its host: {e}"),
            })?;
        Ok(url.as_str().trim_end_matches('/').to_owned())
    }

    /// Keys, a host's provider, a profile, or the default chain; and a profile's region.
    fn base_credentials(&self, env: &Env) -> Result<(Base, Option<String>)> {
        if let Some(provider) = &self.credentials {
            return Ok((Base::Provider(Arc::clone(&provider.0), None), None));
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(id), Some(secret)) => {
                if self.profile.is_some() {
                    return Err(Error::InvalidConfig {
                        field: "profile",
                        reason: "given together with static keys; keep one".into(),
                    });
                }
                return Ok((
                    Base::Static(AwsCredential {
                        key_id: id.clone(),
                        secret_key: secret.expose().to_owned(),
                        token: self.session_token.as_ref().map(|t| t.expose().to_owned()),
                    }),
                    None,
                ));
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
        if self.session_token.is_some() {
            return Err(Error::InvalidConfig {
                field: "session_token",
                reason: "a session token needs `access_key_id` and `secret_access_key`".into(),
            });
        }
        let files = ProfileFiles::resolve(
            self.shared_credentials_file
                .clone()
                .or_else(|| env.get("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from)),
            self.shared_config_file
                .clone()
                .or_else(|| env.get("AWS_CONFIG_FILE").map(PathBuf::from)),
            env.get("HOME")
                .or_else(|| env.get("USERPROFILE"))
                .map(PathBuf::from),
        );
        if let Some(name) = &self.profile {
            let Some(profile) = profile::resolve(&files, name)? else {
                return Err(Error::Profile {
                    profile: name.clone(),
                    reason: format!(
                        "no such profile in the shared files ({}); add it or set `shared_credentials_file`/`shared_config_file`",
                        describe_files(&files)
                    ),
                });
            };
            return Ok((self.profile_base(profile.credentials, env)?, profile.region));
        }
        // The default chain: environment, shared files, then object_store's providers.
        if let Some(credential) = env_credential(env) {
            return Ok((Base::Static(credential), None));
        }
        let Some(name) = env.get("AWS_PROFILE").filter(|p| !p.is_empty()) else {
            // The `default` profile, when it is usable; one that is not (no keys, a
            // credential_process…) is passed over, as nobody asked for it by name.
            return match profile::resolve(&files, "default").and_then(|p| {
                p.map(|p| Ok((self.profile_base(p.credentials, env)?, p.region)))
                    .transpose()
            }) {
                Ok(Some(found)) => Ok(found),
                Ok(None) => Ok((Base::Platform(platform_settings(env)), None)),
                Err(e) => {
                    tracing::warn!(error = %e, "the `default` profile cannot be used; going on with the rest of the default chain");
                    Ok((Base::Platform(platform_settings(env)), None))
                }
            };
        };
        match profile::resolve(&files, name)? {
            Some(profile) => Ok((self.profile_base(profile.credentials, env)?, profile.region)),
            None => Err(Error::Profile {
                profile: name.to_owned(),
                reason: format!(
                    "AWS_PROFILE names it, but the shared files ({}) do not have it",
                    describe_files(&files)
                ),
            }),
        }
    }

    fn profile_base(&self, credentials: ProfileCredentials, env: &Env) -> Result<Base> {
        Ok(match credentials {
            ProfileCredentials::Static {
                key_id,
                secret_key,
                token,
            } => Base::Static(AwsCredential {
                key_id,
                secret_key,
                token,
            }),
            ProfileCredentials::Environment => match env_credential(env) {
                Some(credential) => Base::Static(credential),
                None => {
                    return Err(Error::Profile {
                        profile: self.profile.clone().unwrap_or_default(),
                        reason: "`credential_source = Environment` but AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set".into(),
                    });
                }
            },
            ProfileCredentials::Platform => Base::Platform(platform_settings(env)),
            ProfileCredentials::AssumeRole {
                base,
                role_arn,
                external_id,
                session_name,
                duration_secs,
            } => {
                let base = self.profile_base(*base, env)?;
                // The profile's STS calls use the connection's region and HTTP settings.
                let http = Http {
                    client: ClientOptions::new().with_allow_http(self.allow_http),
                    retry: RetryConfig::default(),
                    region: self.region.clone().unwrap_or_else(|| "us-east-1".into()),
                };
                let mut source = AssumeRole::new(provider_of(base, &http)?, role_arn)
                    .with_region(&http.region)
                    .with_client_options(http.client.clone())
                    .with_session_name(session_name.unwrap_or_else(|| "s3conn".into()));
                if let Some(id) = external_id {
                    source = source.with_external_id(id);
                }
                if let Some(secs) = duration_secs {
                    source = source.with_duration(Duration::from_secs(secs));
                }
                if let Some(endpoint) = &self.sts_endpoint {
                    source = source.with_endpoint(endpoint);
                }
                let provider =
                    Arc::new(RefreshingProvider::new(Arc::new(source)).with_clock(self.clock()));
                Base::Provider(Arc::clone(&provider) as _, Some(provider))
            }
        })
    }
}

fn describe_files(files: &ProfileFiles) -> String {
    [&files.credentials, &files.config]
        .iter()
        .filter_map(|p| p.as_ref().map(|p| format!("`{}`", p.display())))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`).
fn env_credential(env: &Env) -> Option<AwsCredential> {
    let key_id = env.get("AWS_ACCESS_KEY_ID").filter(|v| !v.is_empty())?;
    let secret_key = env.get("AWS_SECRET_ACCESS_KEY").filter(|v| !v.is_empty())?;
    Some(AwsCredential {
        key_id: key_id.clone(),
        secret_key: secret_key.clone(),
        token: env
            .get("AWS_SESSION_TOKEN")
            .filter(|v| !v.is_empty())
            .cloned(),
    })
}

/// The settings object_store's own providers need, from the environment.
fn platform_settings(env: &Env) -> Vec<(AmazonS3ConfigKey, String)> {
    PLATFORM_CREDENTIAL_VARS
        .iter()
        .filter_map(|name| {
            let value = env.get(*name)?;
            let key = name
                .to_ascii_lowercase()
                .parse::<AmazonS3ConfigKey>()
                .ok()?;
            Some((key, value.clone()))
        })
        .collect()
}

/// A provider for base credentials: static keys, a provider as is, or object_store's chain
/// (taken from a store built only for it).
fn provider_of(base: Base, http: &Http) -> Result<AwsCredentialProvider> {
    Ok(match base {
        Base::Static(credential) => Arc::new(StaticCredentialProvider::new(credential)),
        Base::Provider(provider, _) => provider,
        Base::Platform(settings) => {
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name("s3conn-credentials")
                .with_region(&http.region)
                .with_client_options(http.client.clone())
                .with_retry(http.retry.clone());
            for (key, value) in settings {
                builder = builder.with_config(key, value);
            }
            let store = builder.build().map_err(|source| Error::Build {
                backend: "s3",
                source,
            })?;
            Arc::clone(store.credentials())
        }
    })
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
    bucket: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    refreshing: Option<Arc<RefreshingProvider>>,
    uploads: Uploads,
    stats: Arc<RequestStats>,
}

impl Connection {
    /// A connection over any object store (tests, custom backends). `base_url` names the
    /// store's root in URIs (`s3://bucket`, `memory://`).
    pub fn new(store: Arc<dyn ObjectStore>, root: Path, base_url: impl Into<String>) -> Self {
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        let bucket = base_url
            .strip_prefix("s3://")
            .map(|rest| rest.split('/').next().unwrap_or(rest).to_owned())
            .filter(|b| !b.is_empty());
        let base_url = if root.as_ref().is_empty() {
            base_url
        } else {
            format!("{base_url}/{root}")
        };
        Self {
            store,
            root,
            base_url,
            bucket,
            region: None,
            endpoint: None,
            refreshing: None,
            uploads: Uploads::Store,
            stats: Arc::default(),
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

    /// The bucket, for an S3 connection.
    pub fn bucket(&self) -> Option<&str> {
        self.bucket.as_deref()
    }

    /// The region, for an S3 connection made by [`ConnectionConfig::connect`].
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The S3-compatible endpoint, when one was configured.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// The provider of this connection's temporary credentials, when it renews them (an
    /// assumed role): to see how many were fetched, or to renew them now.
    pub fn credential_provider(&self) -> Option<&Arc<RefreshingProvider>> {
        self.refreshing.as_ref()
    }

    /// The requests this connection has made, the bytes it sent and the failures its client
    /// retried (S3 connections; other stores count nothing).
    pub fn request_stats(&self) -> RequestCounts {
        self.stats.snapshot()
    }

    /// The shared counters behind [`request_stats`](Self::request_stats): clones of a
    /// connection share them, so two handles that are the same `Arc` count the same requests.
    pub fn request_stats_handle(&self) -> Arc<RequestStats> {
        Arc::clone(&self.stats)
    }

    /// Start a multipart upload of `key`, with an id to record before any part is sent (see
    /// [`uploads`](crate::uploads)). On S3 and local connections the upload completes only
    /// if `key` is still free: its `complete` fails with `AlreadyExists` otherwise.
    pub async fn start_upload(
        &self,
        key: &Path,
        options: PutMultipartOptions,
    ) -> object_store::Result<StartedUpload> {
        self.uploads.start(&self.store, key, options).await
    }

    /// Whether this connection is a local folder.
    pub fn is_local_folder(&self) -> bool {
        matches!(self.uploads, Uploads::Local { .. })
    }

    /// Whether uploads started with [`start_upload`](Self::start_upload) complete only if
    /// their key is free (S3 and local connections), rather than replacing what is there.
    pub fn uploads_are_conditional(&self) -> bool {
        self.uploads.conditional()
    }

    /// The uploads started and neither completed nor aborted whose key starts with
    /// `prefix`; `None` when this store cannot list them (a custom store, an S3-compatible
    /// server without `ListMultipartUploads`).
    pub async fn open_uploads(
        &self,
        prefix: &Path,
    ) -> object_store::Result<Option<Vec<OpenUpload>>> {
        self.uploads.open(prefix).await
    }

    /// Whether upload `id` (started with [`start_upload`](Self::start_upload)) created the
    /// object now at `key`: `Some` where the store can tell — a local folder keeps a
    /// completed upload's staging file linked to the new file until
    /// [`abort_upload`](Self::abort_upload) releases it — `None` elsewhere.
    pub async fn upload_created(&self, key: &Path, id: &str) -> object_store::Result<Option<bool>> {
        self.uploads.completed(key, id).await
    }

    /// Abort the upload `id` of `key` (one that is gone already is not an error); for a
    /// completed upload on a local folder, release its staging file.
    pub async fn abort_upload(&self, key: &Path, id: &str) -> object_store::Result<()> {
        self.uploads.abort(key, id).await
    }

    /// The bucket and root path, for [`policy`](crate::policy) documents (`None` for a local
    /// folder).
    pub fn scope(&self) -> Option<Scope> {
        let scope = Scope::new(self.bucket()?, self.root.as_ref()).ok()?;
        Some(scope.with_partition(Scope::partition_of_region(
            self.region().unwrap_or("us-east-1"),
        )))
    }

    /// Probe what a connector in `role` needs: see [`check`](crate::check).
    pub async fn check(&self, role: Role) -> CheckReport {
        crate::check::check(self, role).await
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
        assert_eq!(c.bucket(), Some("b"));
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
        assert_eq!(c.bucket(), None);
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
        let err = ConnectionConfig::s3("b")
            .with_role_arn("arn:aws:iam::123456789012:role/r")
            .with_sts_endpoint("http://127.0.0.1:5000")
            .connect()
            .unwrap_err();
        assert!(matches!(err, Error::PlainHttp { .. }), "{err}");
    }

    #[test]
    fn half_credentials_are_refused() {
        let mut c = ConnectionConfig::s3("b");
        c.access_key_id = Some("AKIA".into());
        let err = c.connect().unwrap_err();
        assert!(err.to_string().contains("secret access key"), "{err}");
        let err = ConnectionConfig::s3("b")
            .with_external_id("x")
            .connect()
            .unwrap_err();
        assert!(err.to_string().contains("role_arn"), "{err}");
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
        let role = config
            .clone()
            .with_role_arn("arn:aws:iam::123456789012:role/r")
            .with_external_id("ext");
        let printed = format!("{role:?} {:?}", role.connect().unwrap());
        assert!(
            !printed.contains(secret) && !printed.contains(token),
            "{printed}"
        );
        assert!(printed.contains("RefreshOnExpiry"), "{printed}");
        let toml_config: ConnectionConfig = toml::from_str(&format!(
            "bucket = \"b\"\naccess_key_id = \"AKIA\"\nsecret_access_key = \"{secret}\"\n"
        ))
        .unwrap();
        assert!(!format!("{toml_config:?}").contains(secret));
        assert_eq!(Secret::new(secret).to_string(), "***");
    }

    #[test]
    fn equal_settings_are_equal() {
        assert_eq!(ConnectionConfig::default(), ConnectionConfig::default());
        assert_eq!(
            ConnectionConfig::s3("b").with_region("r"),
            ConnectionConfig::s3("b").with_region("r")
        );
        assert_ne!(ConnectionConfig::s3("b"), ConnectionConfig::s3("c"));
    }

    #[test]
    fn unknown_settings_are_refused_by_name() {
        let err = toml::from_str::<ConnectionConfig>("buckt = \"b\"").unwrap_err();
        assert!(err.to_string().contains("buckt"), "{err}");
        let err = "bukcet".parse::<ConnectionConfigKey>().unwrap_err();
        assert!(err.to_string().contains("bukcet"), "{err}");
    }

    #[test]
    fn every_key_parses_back_from_its_name() {
        for key in ConnectionConfigKey::ALL {
            assert_eq!(key.as_ref().parse::<ConnectionConfigKey>().unwrap(), *key);
            assert_eq!(key.as_str(), key.as_ref());
            let upper = format!("S3CONN_{}", key.as_ref().to_ascii_uppercase());
            assert_eq!(upper.parse::<ConnectionConfigKey>().unwrap(), *key);
        }
    }

    #[test]
    fn the_environment_fills_settings_and_s3conn_wins() {
        let config = ConnectionConfig::default().with_env_vars([
            ("AWS_DEFAULT_REGION", "us-west-1"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/web-identity"),
            ("S3CONN_URL", "s3://bucket/landing"),
            ("S3CONN_ENDPOINT", "http://127.0.0.1:10"),
            ("S3CONN_ROLE_ARN", "arn:aws:iam::123456789012:role/r"),
            ("AWS_ASSUME_ROLE_EXTERNAL_ID", "tenant-42"),
            ("S3CONN_DURATION_SECS", "900"),
            ("S3CONN_PYTHON", "/usr/bin/python3"),
            ("PATH", "/bin"),
        ]);
        assert_eq!(config.region.as_deref(), Some("eu-west-1"));
        assert_eq!(config.endpoint.as_deref(), Some("http://127.0.0.1:10"));
        assert_eq!(
            config.role_arn.as_deref(),
            Some("arn:aws:iam::123456789012:role/r")
        );
        assert_eq!(config.external_id.as_deref(), Some("tenant-42"));
        assert_eq!(config.duration_secs, Some(900));
        assert!(config.allow_http);
        let c = config.connect_with_env(&Env::new()).unwrap();
        assert_eq!(c.url(), "s3://bucket/landing");
        assert_eq!(c.region(), Some("eu-west-1"));

        let err = ConnectionConfig::s3("b")
            .with_env_vars([("S3CONN_MAX_RETRIES", "many")])
            .connect()
            .unwrap_err();
        assert!(err.to_string().contains("max_retries"), "{err}");
    }

    #[test]
    fn the_default_chain_reads_env_keys_then_profiles() {
        let env: Env = [
            ("AWS_ACCESS_KEY_ID", "AKIAENV"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let (base, _) = ConnectionConfig::s3("b").base_credentials(&env).unwrap();
        assert!(matches!(base, Base::Static(ref c) if c.key_id == "AKIAENV"));

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".aws")).unwrap();
        std::fs::write(
            dir.path().join(".aws/credentials"),
            "[default]\naws_access_key_id = AKIAFILE\naws_secret_access_key = file-secret\n[other]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = other-secret\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join(".aws/config"),
            "[profile other]\nregion = ap-south-1\n",
        )
        .unwrap();
        let home: Env = [("HOME".to_owned(), dir.path().display().to_string())].into();
        let (base, region) = ConnectionConfig::s3("b").base_credentials(&home).unwrap();
        assert!(matches!(base, Base::Static(ref c) if c.key_id == "AKIAFILE"));
        assert_eq!(region, None);

        let mut named = home.clone();
        named.insert("AWS_PROFILE".into(), "other".into());
        let (base, region) = ConnectionConfig::s3("b").base_credentials(&named).unwrap();
        assert!(matches!(base, Base::Static(ref c) if c.key_id == "AKIAOTHER"));
        assert_eq!(region.as_deref(), Some("ap-south-1"));
        let c = ConnectionConfig::s3("b").connect_with_env(&named).unwrap();
        assert_eq!(c.region(), Some("ap-south-1"));

        named.insert("AWS_PROFILE".into(), "nope".into());
        let err = ConnectionConfig::s3("b")
            .connect_with_env(&named)
            .unwrap_err();
        assert!(err.to_string().contains("AWS_PROFILE"), "{err}");

        let err = ConnectionConfig::s3("b")
            .with_profile("missing")
            .connect_with_env(&home)
            .unwrap_err();
        assert!(err.to_string().contains("no such profile"), "{err}");

        let (base, _) = ConnectionConfig::s3("b")
            .base_credentials(&Env::new())
            .unwrap();
        assert!(matches!(base, Base::Platform(ref s) if s.is_empty()));

        // An unusable `default` profile nobody asked for is passed over; by name, it fails.
        std::fs::write(
            dir.path().join(".aws/credentials"),
            "[default]\ncredential_process = /bin/false\n",
        )
        .unwrap();
        let (base, _) = ConnectionConfig::s3("b").base_credentials(&home).unwrap();
        assert!(matches!(base, Base::Platform(_)));
        let err = ConnectionConfig::s3("b")
            .with_profile("default")
            .connect_with_env(&home)
            .unwrap_err();
        assert!(err.to_string().contains("credential_process"), "{err}");
        let web: Env = [
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE".to_owned(),
                "/var/run/token".to_owned(),
            ),
            (
                "AWS_ROLE_ARN".to_owned(),
                "arn:aws:iam::1:role/w".to_owned(),
            ),
        ]
        .into();
        let (base, _) = ConnectionConfig::s3("b").base_credentials(&web).unwrap();
        assert!(matches!(base, Base::Platform(ref s) if s.len() == 2));
        ConnectionConfig::s3("b").connect_with_env(&web).unwrap();
    }

    #[test]
    fn virtual_hosted_style_puts_the_bucket_in_the_host() {
        let config = ConnectionConfig::s3("data")
            .with_endpoint("https://minio.internal:9000")
            .with_virtual_hosted_style(true);
        assert_eq!(
            config
                .bucket_endpoint("data", "https://minio.internal:9000")
                .unwrap(),
            "https://data.minio.internal:9000"
        );
        config.connect().unwrap();
    }
}
