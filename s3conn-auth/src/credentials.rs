//! Credentials object_store does not provide by itself: AssumeRole with an External ID,
//! temporary credentials that refresh before they expire, and the clock that decides when.
//!
//! object_store's `AmazonS3Builder` already covers static keys, web identity
//! (`AWS_WEB_IDENTITY_TOKEN_FILE`), ECS/EKS container credentials and the EC2 instance
//! profile over IMDSv2. This module adds:
//!
//! - [`AssumeRole`]: STS `AssumeRole` with role ARN, External ID, session name and duration,
//!   on top of any base [`AwsCredentialProvider`]. The request is signed with object_store's
//!   own SigV4 signer ([`AwsAuthorizer`]) and sent with object_store's HTTP client; the
//!   answer is parsed with quick-xml, also already in object_store's tree.
//! - [`RefreshingProvider`]: a [`CredentialProvider`] that caches what a
//!   [`CredentialSource`] fetched with its expiry, fetches again a margin before the expiry
//!   (five minutes by default, at most half the credential's lifetime), measured on a
//!   [`Clock`] that tests control, and fetches again on demand when S3 answers
//!   `ExpiredToken` (see [`RefreshOnExpiry`](crate::RefreshOnExpiry)).
//!
//! ```
//! use std::sync::Arc;
//! use object_store::StaticCredentialProvider;
//! use object_store::aws::AwsCredential;
//! use s3conn_auth::credentials::{AssumeRole, RefreshingProvider};
//!
//! let base = Arc::new(StaticCredentialProvider::new(AwsCredential {
//!     key_id: "AKIAEXAMPLE".into(),
//!     secret_key: "wJalrXUtnFEMI-EXAMPLE".into(),
//!     token: None,
//! }));
//! let role = AssumeRole::new(base, "arn:aws:iam::123456789012:role/connector")
//!     .with_external_id("tenant-42")
//!     .with_session_name("s3conn-sync")
//!     .with_duration(std::time::Duration::from_secs(3600))
//!     .with_region("eu-west-1");
//! let provider = RefreshingProvider::new(Arc::new(role));
//! assert!(!format!("{provider:?}").contains("wJalr"));
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use object_store::aws::{AwsAuthorizer, AwsCredential, AwsCredentialProvider};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::{ClientOptions, CredentialProvider};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::error::{Error, Result};

/// The refresh margin used unless configured: fetch new credentials five minutes before the
/// old ones expire.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// A source of the current time, so that tests can move time forward.
pub trait Clock: fmt::Debug + Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A credential and the time it stops working (`None`: it does not expire).
#[derive(Clone)]
pub struct TemporaryCredential {
    /// The keys (and session token).
    pub credential: Arc<AwsCredential>,
    /// When they expire.
    pub expiry: Option<DateTime<Utc>>,
}

impl fmt::Debug for TemporaryCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemporaryCredential")
            .field("key_id", &self.credential.key_id)
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}

/// Something that fetches temporary credentials: STS, a vault, a token broker.
#[async_trait]
pub trait CredentialSource: fmt::Debug + Send + Sync {
    /// Fetch a fresh credential.
    async fn fetch(&self) -> Result<TemporaryCredential>;

    /// What to call this source in `Debug` output and logs. [`RefreshingProvider`] prints
    /// this, never the source's own `Debug` (which could show a secret it holds).
    fn describe(&self) -> String {
        "a credential source".into()
    }
}

#[derive(Debug, Default)]
struct Cached {
    current: Option<TemporaryCredential>,
    fetched_at: Option<DateTime<Utc>>,
    stale: bool,
}

/// A [`CredentialProvider`] over a [`CredentialSource`]: caches the credential, fetches a
/// new one [a margin](RefreshingProvider::with_refresh_margin) before the old one expires,
/// and again after [`invalidate`](RefreshingProvider::invalidate).
///
/// One fetch at a time: concurrent requests wait for it instead of each calling the source.
/// When a refresh fails while the cached credential has not expired yet, the cached one is
/// used and the next request tries again, so a flaky STS does not interrupt a sync.
pub struct RefreshingProvider {
    source: Arc<dyn CredentialSource>,
    clock: Arc<dyn Clock>,
    margin: Duration,
    cached: Mutex<Cached>,
    generation: AtomicU64,
    last_fetch: std::sync::Mutex<Option<Instant>>,
    min_refetch_interval: Duration,
}

impl fmt::Debug for RefreshingProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshingProvider")
            .field("source", &self.source.describe())
            .field("clock", &self.clock)
            .field("margin", &self.margin)
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RefreshingProvider {
    /// Cache what `source` fetches, on the system clock, with the default margin.
    pub fn new(source: Arc<dyn CredentialSource>) -> Self {
        Self {
            source,
            clock: Arc::new(SystemClock),
            margin: DEFAULT_REFRESH_MARGIN,
            cached: Mutex::new(Cached::default()),
            generation: AtomicU64::new(0),
            last_fetch: std::sync::Mutex::new(None),
            min_refetch_interval: Duration::from_secs(5),
        }
    }

    /// Decide expiry on this clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Refresh this long before the credential expires (at most half its lifetime, so that
    /// a short-lived credential is still used).
    pub fn with_refresh_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// How many credentials have been fetched so far (0 before the first request).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The credential to sign with: the cached one while it is fresh, else a new one.
    pub async fn credential(&self) -> Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        let now = self.clock.now();
        if let Some(current) = &cached.current
            && !cached.stale
            && self.is_fresh(current, cached.fetched_at, now)
        {
            return Ok(Arc::clone(&current.credential));
        }
        match self.source.fetch().await {
            Ok(fresh) => {
                let credential = Arc::clone(&fresh.credential);
                let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
                tracing::debug!(
                    generation,
                    key_id = %fresh.credential.key_id,
                    expiry = ?fresh.expiry,
                    "fetched temporary credentials"
                );
                cached.current = Some(fresh);
                cached.fetched_at = Some(now);
                cached.stale = false;
                if let Ok(mut last) = self.last_fetch.lock() {
                    *last = Some(Instant::now());
                }
                Ok(credential)
            }
            Err(error) => match &cached.current {
                Some(current) if current.expiry.is_none_or(|expiry| now < expiry) => {
                    tracing::warn!(
                        error = %error,
                        "refreshing credentials failed; the current ones are still valid and stay in use"
                    );
                    Ok(Arc::clone(&current.credential))
                }
                _ => Err(error),
            },
        }
    }

    /// Fresh: not expired, and not within the margin (capped at half the lifetime).
    fn is_fresh(
        &self,
        current: &TemporaryCredential,
        fetched_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> bool {
        let Some(expiry) = current.expiry else {
            return true;
        };
        let lifetime = fetched_at
            .map(|at| (expiry - at).to_std().unwrap_or_default())
            .unwrap_or_default();
        let margin = self.margin.min(lifetime / 2);
        let margin =
            chrono::Duration::from_std(margin).unwrap_or_else(|_| chrono::Duration::zero());
        now + margin < expiry
    }

    /// The generation of the credential the next request will be signed with (fetching it
    /// now if needed): what [`invalidate_generation`](Self::invalidate_generation) takes when
    /// that request fails. `None` when no credential can be had.
    pub async fn current_generation(&self) -> Option<u64> {
        self.credential().await.ok().map(|_| self.generation())
    }

    /// Forget the cached credential: the next request fetches a new one. Called when S3
    /// answers `ExpiredToken`/`InvalidToken`. Invalidations that arrive within a few seconds
    /// of a fetch are ignored, so that many requests failing at once cause one fetch.
    pub async fn invalidate(&self) {
        let recent = self
            .last_fetch
            .lock()
            .ok()
            .and_then(|last| *last)
            .is_some_and(|at| at.elapsed() < self.min_refetch_interval);
        if recent {
            return;
        }
        let mut cached = self.cached.lock().await;
        if cached.current.is_some() {
            tracing::debug!("credentials invalidated; the next request fetches new ones");
            cached.stale = true;
        }
    }

    /// Like [`invalidate`](Self::invalidate), unless a credential newer than `generation`
    /// was fetched since (another request already refreshed).
    pub async fn invalidate_generation(&self, generation: u64) {
        if self.generation() <= generation {
            let mut cached = self.cached.lock().await;
            if cached.current.is_some() && self.generation() <= generation {
                tracing::debug!(
                    generation,
                    "credentials invalidated after an expired-token answer"
                );
                cached.stale = true;
            }
        }
    }
}

#[async_trait]
impl CredentialProvider for RefreshingProvider {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        self.credential()
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })
    }
}

/// STS `AssumeRole` on top of base credentials, as a [`CredentialSource`].
///
/// Defaults: region `us-east-1`, endpoint `https://sts.{region}.amazonaws.com`, session name
/// `s3conn`, the role's default duration (STS: one hour), no External ID.
pub struct AssumeRole {
    base: AwsCredentialProvider,
    role_arn: String,
    external_id: Option<String>,
    session_name: String,
    duration: Option<Duration>,
    region: String,
    endpoint: Option<String>,
    client_options: ClientOptions,
    max_attempts: usize,
}

impl fmt::Debug for AssumeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssumeRole")
            .field("role_arn", &self.role_arn)
            .field("external_id", &self.external_id)
            .field("session_name", &self.session_name)
            .field("duration", &self.duration)
            .field("endpoint", &self.endpoint())
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AssumeRoleResponse {
    assume_role_result: AssumeRoleResult,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AssumeRoleResult {
    credentials: StsCredentials,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: DateTime<Utc>,
}

impl fmt::Debug for StsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

impl AssumeRole {
    /// Assume `role_arn` with the credentials `base` gives.
    pub fn new(base: AwsCredentialProvider, role_arn: impl Into<String>) -> Self {
        Self {
            base,
            role_arn: role_arn.into(),
            external_id: None,
            session_name: "s3conn".into(),
            duration: None,
            region: "us-east-1".into(),
            endpoint: None,
            client_options: ClientOptions::new(),
            max_attempts: 3,
        }
    }

    /// The External ID the role's trust policy requires.
    pub fn with_external_id(mut self, external_id: impl Into<String>) -> Self {
        self.external_id = Some(external_id.into());
        self
    }

    /// The session name, as it appears in CloudTrail (2–64 characters of `[\w+=,.@-]`).
    pub fn with_session_name(mut self, session_name: impl Into<String>) -> Self {
        self.session_name = session_name.into();
        self
    }

    /// How long the credentials last (STS accepts 15 minutes up to the role's maximum).
    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration = Some(duration);
        self
    }

    /// The region whose STS endpoint is called (and that signs the request).
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// Another STS endpoint (a VPC endpoint, a test server): `https://host[:port]`.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// HTTP settings for the STS calls (timeouts, proxy, `allow_http` for a test server).
    pub fn with_client_options(mut self, options: ClientOptions) -> Self {
        self.client_options = options;
        self
    }

    /// The role.
    pub fn role_arn(&self) -> &str {
        &self.role_arn
    }

    /// The STS endpoint that is called.
    pub fn endpoint(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| format!("https://sts.{}.amazonaws.com", self.region))
    }

    fn error(&self, code: Option<String>, message: impl Into<String>, retryable: bool) -> Error {
        Error::AssumeRole {
            role_arn: self.role_arn.clone(),
            code,
            message: message.into(),
            retryable,
        }
    }

    fn body(&self) -> String {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("Action", "AssumeRole")
            .append_pair("Version", "2011-06-15")
            .append_pair("RoleArn", &self.role_arn)
            .append_pair("RoleSessionName", &self.session_name);
        if let Some(duration) = self.duration {
            form.append_pair("DurationSeconds", &duration.as_secs().to_string());
        }
        if let Some(external_id) = &self.external_id {
            form.append_pair("ExternalId", external_id);
        }
        form.finish()
    }

    async fn call(&self, client: &HttpClient) -> Result<TemporaryCredential> {
        let base = self
            .base
            .get_credential()
            .await
            .map_err(|source| Error::Credentials {
                what: "the base credentials to call STS with",
                source,
            })?;
        let endpoint = self.endpoint();
        let mut request = http::Request::builder()
            .method(http::Method::POST)
            .uri(&endpoint)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(HttpRequestBody::from(self.body()))
            .map_err(|e| self.error(None, format!("bad STS endpoint `{endpoint}`: {e}"), false))?;
        AwsAuthorizer::new(&base, "sts", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| self.error(None, format!("cannot sign the STS request: {e}"), false))?;
        let response = client.execute(request).await.map_err(|e| {
            self.error(
                None,
                format!("STS at `{endpoint}` did not answer: {e}"),
                true,
            )
        })?;
        let status = response.status();
        let body = response
            .into_body()
            .bytes()
            .await
            .map_err(|e| self.error(None, format!("reading STS's answer failed: {e}"), true))?;
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            let code = xml_value(&text, "Code");
            let message =
                xml_value(&text, "Message").unwrap_or_else(|| format!("STS answered {status}"));
            let retryable = status.is_server_error()
                || matches!(
                    code.as_deref(),
                    Some("Throttling" | "RequestLimitExceeded" | "ServiceUnavailable")
                );
            return Err(self.error(code, message, retryable));
        }
        // Never put the parser's message in an error: it may quote the answer, which holds
        // the new secret key and session token.
        let parsed: AssumeRoleResponse = quick_xml::de::from_str(&text).map_err(|_| {
            self.error(
                None,
                format!("STS at `{endpoint}` answered {status} with something that is not an AssumeRole response"),
                false,
            )
        })?;
        let creds = parsed.assume_role_result.credentials;
        tracing::debug!(
            role_arn = %self.role_arn,
            key_id = %creds.access_key_id,
            expiration = %creds.expiration,
            "assumed role"
        );
        Ok(TemporaryCredential {
            credential: Arc::new(AwsCredential {
                key_id: creds.access_key_id,
                secret_key: creds.secret_access_key,
                token: Some(creds.session_token),
            }),
            expiry: Some(creds.expiration),
        })
    }
}

#[async_trait]
impl CredentialSource for AssumeRole {
    fn describe(&self) -> String {
        match &self.external_id {
            Some(id) => format!(
                "AssumeRole {} (External ID {id}) at {}",
                self.role_arn,
                self.endpoint()
            ),
            None => format!("AssumeRole {} at {}", self.role_arn, self.endpoint()),
        }
    }

    async fn fetch(&self) -> Result<TemporaryCredential> {
        let client = ReqwestConnector::default()
            .connect(&self.client_options)
            .map_err(|e| self.error(None, format!("cannot set up the HTTP client: {e}"), false))?;
        let mut attempt = 1;
        loop {
            match self.call(&client).await {
                Err(e) if e.is_retryable() && attempt < self.max_attempts => {
                    let wait = Duration::from_millis(200 * 4u64.pow(attempt as u32 - 1));
                    tracing::info!(error = %e, attempt, "AssumeRole failed; trying again");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }
}

/// The text of the first `<tag>…</tag>` element in an XML document (S3 and STS error
/// answers: `Code`, `Message`).
pub(crate) fn xml_value(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml.get(start..)?.find(&close)? + start;
    let value = xml.get(start..end)?.trim();
    (!value.is_empty()).then(|| {
        value
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Debug)]
    struct TestClock(std::sync::Mutex<DateTime<Utc>>);

    impl Clock for TestClock {
        fn now(&self) -> DateTime<Utc> {
            *self.0.lock().unwrap()
        }
    }

    #[derive(Debug)]
    struct Counting {
        clock: Arc<TestClock>,
        fetches: AtomicUsize,
        lifetime: chrono::Duration,
        fail: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl CredentialSource for Counting {
        async fn fetch(&self) -> Result<TemporaryCredential> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(Error::AssumeRole {
                    role_arn: "r".into(),
                    code: Some("Throttling".into()),
                    message: "slow down".into(),
                    retryable: true,
                });
            }
            let n = self.fetches.fetch_add(1, Ordering::SeqCst);
            Ok(TemporaryCredential {
                credential: Arc::new(AwsCredential {
                    key_id: format!("ASIA{n}"),
                    secret_key: "s".into(),
                    token: Some("t".into()),
                }),
                expiry: Some(self.clock.now() + self.lifetime),
            })
        }
    }

    fn setup(lifetime_minutes: i64) -> (Arc<TestClock>, Arc<Counting>, RefreshingProvider) {
        let clock = Arc::new(TestClock(std::sync::Mutex::new(Utc::now())));
        let source = Arc::new(Counting {
            clock: Arc::clone(&clock),
            fetches: AtomicUsize::new(0),
            lifetime: chrono::Duration::minutes(lifetime_minutes),
            fail: Default::default(),
        });
        let provider =
            RefreshingProvider::new(Arc::clone(&source) as _).with_clock(Arc::clone(&clock) as _);
        (clock, source, provider)
    }

    fn advance(clock: &TestClock, minutes: i64) {
        *clock.0.lock().unwrap() += chrono::Duration::minutes(minutes);
    }

    #[tokio::test]
    async fn refreshes_a_margin_before_expiry() {
        let (clock, source, provider) = setup(60);
        assert_eq!(provider.credential().await.unwrap().key_id, "ASIA0");
        advance(&clock, 54);
        assert_eq!(provider.credential().await.unwrap().key_id, "ASIA0");
        advance(&clock, 2); // 4 minutes left: within the 5-minute margin
        assert_eq!(provider.credential().await.unwrap().key_id, "ASIA1");
        assert_eq!(source.fetches.load(Ordering::SeqCst), 2);
        assert_eq!(provider.generation(), 2);
    }

    #[tokio::test]
    async fn a_short_lifetime_caps_the_margin_at_half() {
        let (clock, _, provider) = setup(4);
        assert_eq!(provider.credential().await.unwrap().key_id, "ASIA0");
        advance(&clock, 1);
        assert_eq!(provider.credential().await.unwrap().key_id, "ASIA0");
        advance(&clock, 2);
        assert_eq!(provider.credential().await.unwrap().key_id, "ASIA1");
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_valid_credentials_in_use() {
        let (clock, source, provider) = setup(60);
        provider.credential().await.unwrap();
        source.fail.store(true, Ordering::SeqCst);
        advance(&clock, 57);
        assert_eq!(provider.credential().await.unwrap().key_id, "ASIA0");
        advance(&clock, 5); // expired now
        let err = provider.credential().await.unwrap_err();
        assert!(err.to_string().contains("Throttling"), "{err}");
        source.fail.store(false, Ordering::SeqCst);
        assert_eq!(provider.credential().await.unwrap().key_id, "ASIA1");
    }

    #[tokio::test]
    async fn invalidation_fetches_once() {
        let (_, source, provider) = setup(60);
        provider.credential().await.unwrap();
        let generation = provider.generation();
        provider.invalidate_generation(generation).await;
        assert_eq!(provider.credential().await.unwrap().key_id, "ASIA1");
        // A second failure seen by a request that started before the refresh is ignored.
        provider.invalidate_generation(generation).await;
        assert_eq!(provider.credential().await.unwrap().key_id, "ASIA1");
        assert_eq!(source.fetches.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn xml_values_are_found_and_unescaped() {
        let body = "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User: a &amp; b is not authorized</Message></Error></ErrorResponse>";
        assert_eq!(xml_value(body, "Code").as_deref(), Some("AccessDenied"));
        assert_eq!(
            xml_value(body, "Message").as_deref(),
            Some("User: a & b is not authorized")
        );
        assert_eq!(xml_value(body, "Nope"), None);
        assert_eq!(xml_value("<Code>", "Code"), None);
    }

    #[test]
    fn sts_answers_parse() {
        let body = r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <AssumedRoleUser><AssumedRoleId>AROA:s</AssumedRoleId><Arn>arn:aws:sts::123456789012:assumed-role/r/s</Arn></AssumedRoleUser>
    <Credentials>
      <AccessKeyId>ASIAEXAMPLE</AccessKeyId>
      <SecretAccessKey>secret</SecretAccessKey>
      <SessionToken>token</SessionToken>
      <Expiration>2030-01-01T00:00:00Z</Expiration>
    </Credentials>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>id</RequestId></ResponseMetadata>
</AssumeRoleResponse>"#;
        let parsed: AssumeRoleResponse = quick_xml::de::from_str(body).unwrap();
        let c = parsed.assume_role_result.credentials;
        assert_eq!(c.access_key_id, "ASIAEXAMPLE");
        assert_eq!(c.session_token, "token");
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn the_request_body_carries_every_setting() {
        let base: AwsCredentialProvider =
            Arc::new(object_store::StaticCredentialProvider::new(AwsCredential {
                key_id: "AKIA".into(),
                secret_key: "s".into(),
                token: None,
            }));
        let role = AssumeRole::new(base, "arn:aws:iam::123456789012:role/r")
            .with_external_id("ext/42=x")
            .with_session_name("sync")
            .with_duration(Duration::from_secs(900))
            .with_region("eu-west-3");
        assert_eq!(
            role.body(),
            "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fr&RoleSessionName=sync&DurationSeconds=900&ExternalId=ext%2F42%3Dx"
        );
        assert_eq!(role.endpoint(), "https://sts.eu-west-3.amazonaws.com");
    }
}
