//! The connection check: probe, permission by permission, what a connector needs, and say
//! what is missing and how to fix it.
//!
//! ```text
//!  bucket ─▶ list ─▶ get                                   (source: reads only)
//!  bucket ─▶ list ─▶ put ─▶ get ─▶ conditional_put ─▶ multipart ─▶ delete   (sink)
//! ```
//!
//! - **bucket**: the first request (a listing of the root path) reaches the endpoint, the
//!   bucket exists, the region is right and the credentials are accepted
//!   (`SignatureDoesNotMatch`, `InvalidAccessKeyId`, `ExpiredToken`, `NoSuchBucket`,
//!   `PermanentRedirect`/`AuthorizationHeaderMalformed` for a wrong region). When it fails,
//!   the probes after it are `skipped`: they would fail the same way.
//! - **list**: `s3:ListBucket` under the root path.
//! - **get**: `s3:GetObject` on the first object listed (one byte of it), or on a key that
//!   does not exist when there is none (S3 answers 404 when reading is allowed, 403 when not).
//! - **put**, **conditional_put** (`If-None-Match: *`: a second create of the same key must
//!   fail with 412), **multipart** (create, one part, complete), **delete**: on test objects
//!   under `<root>/_s3conn_check/<uuid>/`. The delete probe removes every test object the check
//!   wrote, also when an earlier probe failed; the report names any it could not remove.
//!
//! A source check only lists and reads: it never writes.
//!
//! Each probe is `ok`, `missing` (the store refused: a permission to add), `unsupported`
//! (the store does not implement what the connector needs), `failed` (something else: the
//! endpoint, the credentials, the bucket, the region) or `skipped`. A missing permission comes
//! with the S3 error code and a one-line fix: `add s3:PutObject on
//! arn:aws:s3:::bucket/prefix/*`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> s3conn_auth::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! use s3conn_auth::ConnectionConfig;
//! use s3conn_auth::check::{check, ProbeStatus};
//! use s3conn_auth::policy::Role;
//!
//! let connection = ConnectionConfig::local(dir.path()).with_prefix("exports").connect()?;
//! let report = check(&connection, Role::Sink).await;
//! assert!(report.passed(), "{report}");
//! assert!(report.probes().iter().all(|p| p.status == ProbeStatus::Ok));
//! println!("{report}"); // a table; `serde_json::to_string(&report)` for JSON
//! # Ok(())
//! # }
//! ```

use std::fmt;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::Serialize;

use crate::config::Connection;
use crate::credentials::xml_value;
use crate::policy::{Role, Scope};

/// The folder, under the root path, where the sink check writes its test objects.
pub const CHECK_FOLDER: &str = "_s3conn_check";

/// What a probe checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Probe {
    /// Endpoint reachable, bucket exists, region right, credentials accepted.
    Bucket,
    /// Listing the root path.
    List,
    /// Reading an object.
    Get,
    /// Writing an object.
    Put,
    /// A create that fails when the key exists (`If-None-Match: *`).
    ConditionalPut,
    /// A multipart upload.
    Multipart,
    /// Deleting objects (the check's own).
    Delete,
}

impl Probe {
    /// The probe's name in reports: `bucket`, `list`, `get`, `put`, `conditional_put`,
    /// `multipart`, `delete`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Bucket => "bucket",
            Self::List => "list",
            Self::Get => "get",
            Self::Put => "put",
            Self::ConditionalPut => "conditional_put",
            Self::Multipart => "multipart",
            Self::Delete => "delete",
        }
    }

    /// The probes a role needs, in the order they run.
    pub fn for_role(role: Role) -> &'static [Probe] {
        match role {
            Role::Source => &[Self::Bucket, Self::List, Self::Get],
            Role::Sink => &[
                Self::Bucket,
                Self::List,
                Self::Put,
                Self::Get,
                Self::ConditionalPut,
                Self::Multipart,
                Self::Delete,
            ],
        }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a probe went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProbeStatus {
    /// Allowed and working.
    Ok,
    /// Refused: a permission is missing.
    Missing,
    /// The store does not implement it.
    Unsupported,
    /// Something else went wrong (endpoint, credentials, bucket, region…).
    Failed,
    /// Not tried, because an earlier probe failed in a way this one would too.
    Skipped,
}

impl ProbeStatus {
    /// `ok`, `missing`, `unsupported`, `failed`, `skipped`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Missing => "missing",
            Self::Unsupported => "unsupported",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

impl fmt::Display for ProbeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ProbeResult {
    /// What was probed.
    pub probe: Probe,
    /// How it went.
    pub status: ProbeStatus,
    /// The S3 error code of the answer (`AccessDenied`, `SignatureDoesNotMatch`…).
    pub code: Option<String>,
    /// What happened, in one line.
    pub message: String,
    /// What to change, in one line.
    pub fix: Option<String>,
}

/// The outcome of a connection check: one [`ProbeResult`] per probe the role needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    url: String,
    role: Role,
    passed: bool,
    probes: Vec<ProbeResult>,
}

impl CheckReport {
    /// The connection's root (`s3://bucket/prefix`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The role checked for.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether every probe the role needs is ok.
    pub fn passed(&self) -> bool {
        self.passed
    }

    /// The probes, in the order they ran.
    pub fn probes(&self) -> &[ProbeResult] {
        &self.probes
    }

    /// The result of one probe.
    pub fn probe(&self, probe: Probe) -> Option<&ProbeResult> {
        self.probes.iter().find(|p| p.probe == probe)
    }
}

impl fmt::Display for CheckReport {
    /// A table: probe, status, code, message, and the fix on the line below.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "connection check: {} as a {}", self.url, self.role)?;
        let code_width = self
            .probes
            .iter()
            .filter_map(|p| p.code.as_ref().map(|c| c.len()))
            .max()
            .unwrap_or(0)
            .max(4);
        writeln!(
            f,
            "{:<16} {:<12} {:<code_width$} DETAIL",
            "PROBE", "STATUS", "CODE"
        )?;
        for p in &self.probes {
            writeln!(
                f,
                "{:<16} {:<12} {:<code_width$} {}",
                p.probe.as_str(),
                p.status.as_str(),
                p.code.as_deref().unwrap_or("-"),
                p.message
            )?;
            if let Some(fix) = &p.fix {
                writeln!(f, "{:<16} {:<12} {:<code_width$} fix: {fix}", "", "", "")?;
            }
        }
        let bad = self
            .probes
            .iter()
            .filter(|p| p.status != ProbeStatus::Ok)
            .count();
        if bad == 0 {
            write!(f, "result: ok, everything a {} needs works", self.role)
        } else {
            write!(
                f,
                "result: {bad} of {} probes not ok; the connection cannot work as a {} until fixed",
                self.probes.len(),
                self.role
            )
        }
    }
}

/// The S3 error code an object_store error carries, found by walking its source chain: the
/// `<Code>` of the answer's XML body (`AccessDenied`, `SignatureDoesNotMatch`, `NoSuchBucket`,
/// `ExpiredToken`…), else one inferred from the HTTP status or the error's kind (403 →
/// `AccessDenied`, 404 → `NotFound`, 412 → `PreconditionFailed`, 501 → `NotImplemented`, a
/// redirect → `PermanentRedirect`).
pub fn error_code(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut texts = Vec::new();
    let mut current = Some(error);
    while let Some(e) = current {
        texts.push(e.to_string());
        current = e.source();
    }
    for text in &texts {
        if let Some(code) = xml_value(text, "Code").or_else(|| delete_error_code(text)) {
            return Some(code);
        }
    }
    for text in &texts {
        if text.contains("incorrectly configured region") {
            return Some("PermanentRedirect".into());
        }
        if let Some(status) = http_status(text) {
            let code = match status {
                301 | 307 => "PermanentRedirect",
                400 => "BadRequest",
                401 => "Unauthorized",
                403 => "AccessDenied",
                404 => "NotFound",
                405 => "MethodNotAllowed",
                409 => "Conflict",
                412 => "PreconditionFailed",
                501 => "NotImplemented",
                _ => continue,
            };
            return Some(code.into());
        }
    }
    let inferred = error
        .downcast_ref::<object_store::Error>()
        .and_then(|e| match e {
            object_store::Error::NotFound { .. } => Some("NotFound"),
            object_store::Error::PermissionDenied { .. } => Some("AccessDenied"),
            object_store::Error::Unauthenticated { .. } => Some("Unauthorized"),
            object_store::Error::Precondition { .. }
            | object_store::Error::AlreadyExists { .. } => Some("PreconditionFailed"),
            object_store::Error::NotImplemented { .. }
            | object_store::Error::NotSupported { .. } => Some("NotImplemented"),
            _ => None,
        });
    inferred.map(str::to_owned)
}

/// The code of a failed key in a bulk delete: object_store words it
/// "DeleteObjects request failed for key K: MESSAGE (code: CODE)".
fn delete_error_code(text: &str) -> Option<String> {
    let rest = text.rsplit_once("(code: ")?.1;
    let code = rest.split_once(')')?.0.trim();
    (!code.is_empty() && code.chars().all(|c| c.is_ascii_alphanumeric())).then(|| code.to_owned())
}

/// `NNN` from object_store's "status code: NNN …" wording.
fn http_status(text: &str) -> Option<u16> {
    let rest = text.split("status code: ").nth(1)?;
    rest.get(..3)?.parse().ok()
}

/// What kind of failure an error is, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// The credentials themselves could not be had (STS refused the role, no base
    /// credentials): the message says why.
    Credentials(Option<String>),
    Denied,
    Unsupported,
    Signature,
    UnknownKey,
    Token,
    NoBucket,
    Region,
    Unreachable,
    Other,
}

/// The credential error in `error`'s chain, if getting credentials is what failed.
fn credential_failure(error: &object_store::Error) -> Option<&crate::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(
            found @ (crate::Error::AssumeRole { .. }
            | crate::Error::Credentials { .. }
            | crate::Error::Profile { .. }),
        ) = e.downcast_ref::<crate::Error>()
        {
            return Some(found);
        }
        current = e.source();
    }
    None
}

fn classify(code: Option<&str>, error: &object_store::Error) -> Failure {
    if let Some(found) = credential_failure(error) {
        return Failure::Credentials(match found {
            crate::Error::AssumeRole { code, .. } => code.clone(),
            _ => None,
        });
    }
    match code {
        Some("AccessDenied" | "AllAccessDisabled" | "Forbidden") => Failure::Denied,
        Some("NotImplemented" | "MethodNotAllowed") => Failure::Unsupported,
        Some("SignatureDoesNotMatch" | "IncompleteSignature") => Failure::Signature,
        Some("InvalidAccessKeyId" | "InvalidClientTokenId") => Failure::UnknownKey,
        Some(c) if crate::refresh::EXPIRED_TOKEN_CODES.contains(&c) => Failure::Token,
        Some("NoSuchBucket") => Failure::NoBucket,
        Some(
            "PermanentRedirect"
            | "AuthorizationHeaderMalformed"
            | "IllegalLocationConstraintException",
        ) => Failure::Region,
        _ => match error {
            object_store::Error::PermissionDenied { .. } => Failure::Denied,
            object_store::Error::NotImplemented { .. }
            | object_store::Error::NotSupported { .. } => Failure::Unsupported,
            _ if is_unreachable(error) => Failure::Unreachable,
            _ => Failure::Other,
        },
    }
}

fn is_unreachable(error: &object_store::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        let text = e.to_string().to_ascii_lowercase();
        if text.contains("error sending request")
            || text.contains("connection refused")
            || text.contains("dns error")
            || text.contains("timed out")
            || text.contains("tcp connect")
        {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::PermissionDenied
        {
            return false;
        }
        current = e.source();
    }
    false
}

/// Why a request failed, in one short line: the S3 answer's `<Message>` when there is one
/// (`Access Denied`), else the first line of the error, shortened.
fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        if let Some(message) = xml_value(&text, "Message") {
            return message;
        }
        if let Some((_, rest)) = text.split_once("DeleteObjects request failed for key ")
            && let Some((_, message)) = rest.split_once(": ")
        {
            return message.to_owned();
        }
        current = e.source();
    }
    let text = error.to_string();
    let line = text.lines().next().unwrap_or("").trim();
    let mut short: String = line.chars().take(240).collect();
    if short.len() < line.len() {
        short.push('…');
    }
    short
}

/// What the check knows about the connection, to word fixes.
struct Context<'a> {
    connection: &'a Connection,
    scope: Option<Scope>,
}

impl Context<'_> {
    fn on_objects(&self, action: &str) -> String {
        match &self.scope {
            Some(scope) => format!("add {action} on {}", scope.objects_arn()),
            None => format!(
                "allow this process to {} files under `{}`",
                match action {
                    "s3:GetObject" => "read",
                    "s3:DeleteObject" => "delete",
                    _ => "create and write",
                },
                self.connection.url()
            ),
        }
    }

    fn list_fix(&self) -> String {
        match &self.scope {
            Some(scope) => {
                let prefixes = scope.list_prefixes();
                if prefixes.is_empty() {
                    format!("add s3:ListBucket on {}", scope.bucket_arn())
                } else {
                    format!(
                        "add s3:ListBucket on {} with condition StringLike s3:prefix = {:?}",
                        scope.bucket_arn(),
                        prefixes
                    )
                }
            }
            None => format!(
                "allow this process to list the folder `{}`",
                self.connection.url()
            ),
        }
    }

    /// The fix for a failure that concerns the connection, not one permission.
    fn connection_fix(&self, failure: &Failure) -> String {
        let endpoint = self
            .connection
            .endpoint()
            .map(|e| format!("`{e}`"))
            .unwrap_or_else(|| "the S3 endpoint".into());
        match failure {
            Failure::Credentials(Some(code)) if code == "AccessDenied" => "STS refused to let these credentials assume the role: its trust policy must name this principal and the configured `external_id` (`s3conn policy --external-id … --principal …` prints one), and the principal needs sts:AssumeRole on the role".into(),
            Failure::Credentials(_) => "get working base credentials (keys, `profile`, or the default chain) and check `role_arn`, `external_id` and `sts_endpoint`".into(),
            Failure::Signature => "the secret access key does not match the access key id: check `secret_access_key` (no extra spaces or line breaks), or the clock if it is far off".into(),
            Failure::UnknownKey => format!("the access key id is not known to {endpoint}: check `access_key_id`, and `endpoint` for S3-compatible stores"),
            Failure::Token => "the session token expired or is invalid: renew `session_token`, or configure `role_arn` so that s3conn renews credentials itself".into(),
            Failure::NoBucket => format!(
                "create the bucket `{}`, or correct `bucket`",
                self.connection.bucket().unwrap_or("")
            ),
            Failure::Region => match self.connection.region() {
                Some(region) => format!("the bucket is not in `{region}`: set `region` to the bucket's region (S3 console → bucket → Properties)"),
                None => "set `region` to the bucket's region (S3 console → bucket → Properties)".into(),
            },
            Failure::Unreachable => format!("{endpoint} did not answer: check `endpoint`, DNS, proxies, firewalls and VPC endpoints"),
            Failure::Denied => self.list_fix(),
            Failure::Unsupported | Failure::Other => format!("check the connection settings and that {endpoint} is an S3 API"),
        }
    }
}

fn result(
    probe: Probe,
    status: ProbeStatus,
    code: Option<String>,
    message: impl Into<String>,
    fix: Option<String>,
) -> ProbeResult {
    ProbeResult {
        probe,
        status,
        code,
        message: message.into(),
        fix,
    }
}

fn ok(probe: Probe, message: impl Into<String>) -> ProbeResult {
    result(probe, ProbeStatus::Ok, None, message, None)
}

/// A refused or failed permission probe.
fn refused(
    probe: Probe,
    error: &object_store::Error,
    what: &str,
    fix: String,
    ctx: &Context<'_>,
) -> ProbeResult {
    let code = error_code(error);
    let failure = classify(code.as_deref(), error);
    match failure {
        Failure::Denied => result(
            probe,
            ProbeStatus::Missing,
            code.or_else(|| Some("AccessDenied".into())),
            format!("{what} was refused: {}", one_line(error)),
            Some(fix),
        ),
        Failure::Unsupported => result(
            probe,
            ProbeStatus::Unsupported,
            code,
            format!("{what} is not supported by this store: {}", one_line(error)),
            Some(
                "use a store that supports it (AWS S3, MinIO, R2, Ceph RGW, a local folder)".into(),
            ),
        ),
        other => result(
            probe,
            ProbeStatus::Failed,
            code,
            format!("{what} failed: {}", one_line(error)),
            Some(ctx.connection_fix(&other)),
        ),
    }
}

/// Check `connection` for `role`: every probe the role needs, in order. Never fails: what
/// went wrong is in the report. A source check never writes.
pub async fn check(connection: &Connection, role: Role) -> CheckReport {
    let scope = connection
        .bucket()
        .and_then(|bucket| Scope::new(bucket, connection.root().as_ref()).ok())
        .map(|scope| {
            scope.with_partition(Scope::partition_of_region(
                connection.region().unwrap_or("us-east-1"),
            ))
        });
    let ctx = Context { connection, scope };
    let store = connection.store().as_ref();
    let root = connection.root().clone();
    let prefix = (!root.as_ref().is_empty()).then_some(&root);
    let mut probes = Vec::new();

    // bucket + list: one listing of the root path.
    let first = store.list(prefix).next().await;
    let first_object = match first {
        None => {
            probes.push(ok(Probe::Bucket, bucket_ok_message(connection)));
            probes.push(ok(Probe::List, "listing the root path works (it is empty)"));
            None
        }
        Some(Ok(meta)) => {
            probes.push(ok(Probe::Bucket, bucket_ok_message(connection)));
            probes.push(ok(Probe::List, "listing the root path works"));
            Some(meta)
        }
        Some(Err(error)) => {
            let code = error_code(&error);
            match classify(code.as_deref(), &error) {
                Failure::Denied => {
                    probes.push(ok(
                        Probe::Bucket,
                        "the endpoint answered and accepted the credentials",
                    ));
                    probes.push(result(
                        Probe::List,
                        ProbeStatus::Missing,
                        code.or_else(|| Some("AccessDenied".into())),
                        format!(
                            "listing `{}` was refused: {}",
                            connection.url(),
                            one_line(&error)
                        ),
                        Some(ctx.list_fix()),
                    ));
                    None
                }
                failure => {
                    let code = match &failure {
                        Failure::Credentials(Some(sts_code)) => Some(sts_code.clone()),
                        _ => code,
                    };
                    probes.push(result(
                        Probe::Bucket,
                        ProbeStatus::Failed,
                        code,
                        one_line(&error),
                        Some(ctx.connection_fix(&failure)),
                    ));
                    for probe in Probe::for_role(role).iter().skip(1) {
                        probes.push(result(
                            *probe,
                            ProbeStatus::Skipped,
                            None,
                            "not tried: the bucket check failed",
                            None,
                        ));
                    }
                    return finish(connection, role, probes);
                }
            }
        }
    };

    let run_id = unique_id();
    let test_dir = match connection.key(&format!("{CHECK_FOLDER}/{run_id}")) {
        Ok(dir) => dir,
        Err(e) => {
            probes.push(result(
                Probe::Get,
                ProbeStatus::Failed,
                None,
                format!("cannot name a test key: {e}"),
                None,
            ));
            return finish(connection, role, probes);
        }
    };
    let key = |name: &str| test_dir.clone().join(name);

    match role {
        Role::Source => {
            probes.push(probe_read(store, first_object.as_ref(), &key("absent"), &ctx).await);
        }
        Role::Sink => {
            let mut written: Vec<Path> = Vec::new();
            let object = key("object.txt");
            let body = Bytes::from_static(b"s3conn connection check: safe to delete\n");
            let put = store
                .put_opts(
                    &object,
                    PutPayload::from(body.clone()),
                    PutOptions::default(),
                )
                .await;
            match put {
                Ok(_) => {
                    written.push(object.clone());
                    probes.push(ok(
                        Probe::Put,
                        format!("wrote `{}`", connection.uri(&object)),
                    ));
                    probes.push(probe_read_back(store, &object, &body, &ctx).await);
                }
                Err(error) => {
                    probes.push(refused(
                        Probe::Put,
                        &error,
                        &format!("writing `{}`", connection.uri(&object)),
                        ctx.on_objects("s3:PutObject"),
                        &ctx,
                    ));
                    probes.push(probe_read(store, None, &key("absent"), &ctx).await);
                }
            }
            probes.push(probe_conditional(store, &key("create.txt"), &mut written, &ctx).await);
            probes.push(probe_multipart(store, &key("multipart.txt"), &mut written, &ctx).await);
            probes.push(probe_delete(store, &written, &key("absent"), &ctx).await);
        }
    }
    finish(connection, role, probes)
}

/// 32 hex digits, unique per call: a per-process random hash key, the time, a counter.
fn unique_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    format!("{:016x}{:016x}", hasher.finish(), nanos as u64)
}

fn bucket_ok_message(connection: &Connection) -> String {
    match (connection.bucket(), connection.region()) {
        (Some(bucket), Some(region)) => {
            format!("bucket `{bucket}` answered in region `{region}`; credentials accepted")
        }
        (Some(bucket), None) => format!("bucket `{bucket}` answered; credentials accepted"),
        _ => format!("`{}` is reachable", connection.url()),
    }
}

fn finish(connection: &Connection, role: Role, probes: Vec<ProbeResult>) -> CheckReport {
    let passed = probes.iter().all(|p| p.status == ProbeStatus::Ok);
    let report = CheckReport {
        url: connection.url().to_owned(),
        role,
        passed,
        probes,
    };
    for p in &report.probes {
        tracing::debug!(probe = p.probe.as_str(), status = p.status.as_str(), code = ?p.code, "connection check");
    }
    report
}

/// Source `get`: one byte of an existing object, or a key that does not exist.
async fn probe_read(
    store: &dyn ObjectStore,
    existing: Option<&object_store::ObjectMeta>,
    absent: &Path,
    ctx: &Context<'_>,
) -> ProbeResult {
    let fix = ctx.on_objects("s3:GetObject");
    match existing {
        Some(meta) => {
            let options = GetOptions {
                range: (meta.size > 0).then_some((0..1).into()),
                ..GetOptions::default()
            };
            let what = format!("reading `{}`", ctx.connection.uri(&meta.location));
            match store.get_opts(&meta.location, options).await {
                Ok(got) => match got.bytes().await {
                    Ok(_) => ok(Probe::Get, format!("{what} works")),
                    Err(error) => refused(Probe::Get, &error, &what, fix, ctx),
                },
                Err(error) => refused(Probe::Get, &error, &what, fix, ctx),
            }
        }
        None => match store.get_opts(absent, GetOptions::default()).await {
            Err(object_store::Error::NotFound { .. }) => ok(
                Probe::Get,
                "reading is allowed (no object to read yet: a missing key answered 404)",
            ),
            Ok(_) => ok(Probe::Get, "reading works"),
            Err(error) => {
                let mut probe = refused(
                    Probe::Get,
                    &error,
                    &format!("reading `{}`", ctx.connection.uri(absent)),
                    fix,
                    ctx,
                );
                if probe.status == ProbeStatus::Missing {
                    probe.message.push_str(
                        " (S3 also answers 403 for a missing key when s3:ListBucket is missing)",
                    );
                }
                probe
            }
        },
    }
}

/// Sink `get`: read back the object the put probe wrote.
async fn probe_read_back(
    store: &dyn ObjectStore,
    object: &Path,
    expected: &Bytes,
    ctx: &Context<'_>,
) -> ProbeResult {
    let what = format!("reading back `{}`", ctx.connection.uri(object));
    let fix = ctx.on_objects("s3:GetObject");
    match store.get(object).await {
        Ok(got) => match got.bytes().await {
            Ok(bytes) if bytes == expected => ok(Probe::Get, format!("{what} works")),
            Ok(_) => result(
                Probe::Get,
                ProbeStatus::Failed,
                None,
                format!("{what} returned other bytes than were written"),
                Some("check that nothing rewrites objects under the root path".into()),
            ),
            Err(error) => refused(Probe::Get, &error, &what, fix, ctx),
        },
        Err(error) => refused(Probe::Get, &error, &what, fix, ctx),
    }
}

/// Create a key with `PutMode::Create` twice: the first must succeed, the second fail.
async fn probe_conditional(
    store: &dyn ObjectStore,
    key: &Path,
    written: &mut Vec<Path>,
    ctx: &Context<'_>,
) -> ProbeResult {
    let what = format!("a conditional create of `{}`", ctx.connection.uri(key));
    let create = || PutOptions::from(PutMode::Create);
    match store
        .put_opts(key, PutPayload::from_static(b"first"), create())
        .await
    {
        Ok(_) => written.push(key.clone()),
        Err(error) => {
            return refused(
                Probe::ConditionalPut,
                &error,
                &what,
                ctx.on_objects("s3:PutObject"),
                ctx,
            );
        }
    }
    match store
        .put_opts(key, PutPayload::from_static(b"second"), create())
        .await
    {
        Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => ok(
            Probe::ConditionalPut,
            "If-None-Match: * is honoured (a second create of the same key was refused)",
        ),
        Ok(_) => result(
            Probe::ConditionalPut,
            ProbeStatus::Unsupported,
            None,
            "the store ignored If-None-Match: a second create of the same key overwrote it",
            Some("use a store with conditional writes (AWS S3, MinIO, R2, Ceph RGW ≥ Squid): the sink claims each manifest with one".into()),
        ),
        Err(error) => refused(
            Probe::ConditionalPut,
            &error,
            &format!("a second conditional create of `{}`", ctx.connection.uri(key)),
            ctx.on_objects("s3:PutObject"),
            ctx,
        ),
    }
}

/// Create a multipart upload, send one part, complete it (abort it on failure).
async fn probe_multipart(
    store: &dyn ObjectStore,
    key: &Path,
    written: &mut Vec<Path>,
    ctx: &Context<'_>,
) -> ProbeResult {
    let what = format!("a multipart upload to `{}`", ctx.connection.uri(key));
    let fix = format!(
        "{} (multipart uploads need s3:PutObject; s3:AbortMultipartUpload to clean up)",
        ctx.on_objects("s3:PutObject")
    );
    let mut upload = match store.put_multipart(key).await {
        Ok(upload) => upload,
        Err(error) => return refused(Probe::Multipart, &error, &what, fix, ctx),
    };
    let sent = upload
        .put_part(PutPayload::from_static(b"s3conn multipart check\n"))
        .await;
    let outcome = match sent {
        Ok(()) => upload.complete().await.map(|_| ()),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => {
            written.push(key.clone());
            ok(Probe::Multipart, "create, upload a part, complete: works")
        }
        Err(error) => {
            if let Err(abort) = upload.abort().await {
                tracing::warn!(error = %abort, "aborting the check's multipart upload failed");
            }
            refused(Probe::Multipart, &error, &what, fix, ctx)
        }
    }
}

/// Delete what the check wrote (or a key that does not exist, when it wrote nothing).
async fn probe_delete(
    store: &dyn ObjectStore,
    written: &[Path],
    absent: &Path,
    ctx: &Context<'_>,
) -> ProbeResult {
    let fix = ctx.on_objects("s3:DeleteObject");
    let targets: Vec<&Path> = if written.is_empty() {
        vec![absent]
    } else {
        written.iter().collect()
    };
    let mut left = Vec::new();
    let mut first_error = None;
    for path in targets {
        match store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => {
                if !written.is_empty() {
                    left.push(ctx.connection.uri(path));
                }
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        None if written.is_empty() => ok(Probe::Delete, "deleting is allowed"),
        None => ok(
            Probe::Delete,
            format!("deleted the check's {} test object(s)", written.len()),
        ),
        Some(error) => {
            let mut probe = refused(
                Probe::Delete,
                &error,
                "deleting the check's test objects",
                fix,
                ctx,
            );
            if !left.is_empty() {
                probe
                    .message
                    .push_str(&format!("; left behind: {}", left.join(", ")));
            }
            probe
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Text(&'static str);
    impl fmt::Display for Text {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Text {}

    #[test]
    fn codes_come_from_bodies_statuses_and_kinds() {
        let aws_region = Text(
            "Error performing GET https://s3.us-east-1.amazonaws.com/b?list-type=2 in 20ms - Server returned non-2xx status code: 301 Moved Permanently: <?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint.</Message><Endpoint>b.s3.eu-west-1.amazonaws.com</Endpoint><Bucket>b</Bucket></Error>",
        );
        assert_eq!(
            error_code(&aws_region).as_deref(),
            Some("PermanentRedirect")
        );
        let header_region = Text(
            "Server returned non-2xx status code: 400 Bad Request: <Error><Code>AuthorizationHeaderMalformed</Code><Message>the region 'us-east-1' is wrong; expecting 'eu-west-1'</Message><Region>eu-west-1</Region></Error>",
        );
        assert_eq!(
            error_code(&header_region).as_deref(),
            Some("AuthorizationHeaderMalformed")
        );
        let bare = Text(
            "Received redirect without LOCATION, this normally indicates an incorrectly configured region",
        );
        assert_eq!(error_code(&bare).as_deref(), Some("PermanentRedirect"));
        let head = Text("Server returned non-2xx status code: 403 Forbidden: ");
        assert_eq!(error_code(&head).as_deref(), Some("AccessDenied"));
        let unsupported = Text("Server returned non-2xx status code: 501 Not Implemented: ");
        assert_eq!(error_code(&unsupported).as_deref(), Some("NotImplemented"));
        let nothing = Text("connection reset");
        assert_eq!(error_code(&nothing), None);
    }

    #[test]
    fn tables_put_fixes_under_their_probe() {
        let report = CheckReport {
            url: "s3://b/p".into(),
            role: Role::Sink,
            passed: false,
            probes: vec![
                ok(Probe::Bucket, "bucket `b` answered"),
                result(
                    Probe::Put,
                    ProbeStatus::Missing,
                    Some("AccessDenied".into()),
                    "writing was refused",
                    Some("add s3:PutObject on arn:aws:s3:::b/p/*".into()),
                ),
            ],
        };
        let table = report.to_string();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].starts_with("PROBE"), "{table}");
        assert!(
            lines[3].starts_with("put              missing      AccessDenied"),
            "{table}"
        );
        assert!(
            lines[4]
                .trim_start()
                .starts_with("fix: add s3:PutObject on arn:aws:s3:::b/p/*"),
            "{table}"
        );
        assert!(
            lines[5].starts_with("result: 1 of 2 probes not ok"),
            "{table}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["probes"][1]["status"], "missing");
        assert_eq!(json["probes"][1]["probe"], "put");
        assert_eq!(json["passed"], false);
    }
}
