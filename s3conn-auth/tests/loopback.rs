//! The connection check and credential renewal against the loopback S3 server (s3s-fs in
//! process), which checks SigV4 signatures as S3 does.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AwsCredential};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use s3conn_auth::check::{CHECK_FOLDER, Probe, ProbeStatus, check};
use s3conn_auth::credentials::{CredentialSource, RefreshingProvider, TemporaryCredential};
use s3conn_auth::policy::Role;
use s3conn_auth::{ConnectionConfig, RefreshOnExpiry, Secret};
use s3conn_testkit::S3Server;

fn config(server: &S3Server, secret: &str, prefix: &str) -> ConnectionConfig {
    ConnectionConfig::s3(server.bucket())
        .with_prefix(prefix)
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .with_max_retries(0)
        .with_static_credentials(server.access_key(), secret, None)
}

/// Every file under a folder, with its bytes.
fn snapshot(dir: &FsPath) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                files.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

#[tokio::test]
async fn correct_keys_pass_every_probe_and_the_sink_check_cleans_up() {
    let logs = common::logs();
    let server = S3Server::start().await;
    let raw = server.store(server.bucket());
    raw.put(&"exports/events/a.jsonl".into(), "{\"a\": 1}\n".into())
        .await
        .unwrap();
    let connection = config(&server, server.secret_key(), "exports")
        .connect()
        .unwrap();

    let before = snapshot(&server.bucket_dir(server.bucket()));
    let source = check(&connection, Role::Source).await;
    assert!(source.passed(), "{source}");
    let probes: Vec<Probe> = source.probes().iter().map(|p| p.probe).collect();
    assert_eq!(probes, [Probe::Bucket, Probe::List, Probe::Get]);
    assert_eq!(
        snapshot(&server.bucket_dir(server.bucket())),
        before,
        "a source check never writes"
    );

    let sink = connection.check(Role::Sink).await;
    assert!(sink.passed(), "{sink}");
    assert_eq!(sink.probes().len(), 7);
    assert!(
        sink.probes()
            .iter()
            .all(|p| p.status == ProbeStatus::Ok && p.fix.is_none()),
        "{sink}"
    );
    let left: Vec<_> = raw
        .list(Some(&Path::from(format!("exports/{CHECK_FOLDER}"))))
        .try_collect()
        .await
        .unwrap();
    assert!(
        left.is_empty(),
        "the sink check removes its test objects: {left:?}"
    );
    assert_eq!(
        snapshot(&server.bucket_dir(server.bucket()))
            .keys()
            .filter(|k| !k.contains(CHECK_FOLDER))
            .count(),
        before.len()
    );

    let table = sink.to_string();
    assert!(table.contains("result: ok"), "{table}");
    let json = serde_json::to_string(&sink).unwrap();
    common::assert_no_secret(
        "passing checks",
        &[
            table,
            json,
            format!("{connection:?}"),
            source.to_string(),
            logs.text(),
        ],
        &[server.secret_key().to_owned()],
    );
}

#[tokio::test]
async fn a_wrong_secret_is_named_as_a_signature_problem() {
    let logs = common::logs();
    let server = S3Server::start().await;
    let wrong = "not-the-secret-0123456789";
    let connection = config(&server, wrong, "exports").connect().unwrap();

    let report = check(&connection, Role::Sink).await;
    assert!(!report.passed());
    let bucket = report.probe(Probe::Bucket).unwrap();
    assert_eq!(bucket.status, ProbeStatus::Failed, "{report}");
    assert_eq!(
        bucket.code.as_deref(),
        Some("SignatureDoesNotMatch"),
        "{report}"
    );
    assert!(
        bucket.fix.as_deref().unwrap().contains("secret_access_key"),
        "{report}"
    );
    assert!(
        report
            .probes()
            .iter()
            .skip(1)
            .all(|p| p.status == ProbeStatus::Skipped),
        "{report}"
    );

    // The same problem, as a plain store call reports it.
    let err = connection
        .store()
        .get(&"exports/x".into())
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("SignatureDoesNotMatch"), "{message}");
    assert_eq!(
        s3conn_auth::check::error_code(&err).as_deref(),
        Some("SignatureDoesNotMatch")
    );

    // An unknown key id, and a bucket that does not exist.
    let unknown = ConnectionConfig::s3(server.bucket())
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .with_max_retries(0)
        .with_static_credentials("AKIAUNKNOWN000000000", server.secret_key(), None)
        .connect()
        .unwrap();
    let unknown_report = check(&unknown, Role::Source).await;
    let probe = unknown_report.probe(Probe::Bucket).unwrap();
    assert_eq!(
        probe.code.as_deref(),
        Some("InvalidAccessKeyId"),
        "{unknown_report}"
    );
    assert!(probe.fix.as_deref().unwrap().contains("access_key_id"));

    let missing = ConnectionConfig::s3("no-such-bucket")
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .with_max_retries(0)
        .with_static_credentials(server.access_key(), server.secret_key(), None)
        .connect()
        .unwrap();
    let missing_report = check(&missing, Role::Source).await;
    let probe = missing_report.probe(Probe::Bucket).unwrap();
    assert_eq!(
        probe.code.as_deref(),
        Some("NoSuchBucket"),
        "{missing_report}"
    );
    assert!(probe.fix.as_deref().unwrap().contains("no-such-bucket"));

    common::assert_no_secret(
        "failing checks",
        &[
            report.to_string(),
            serde_json::to_string(&report).unwrap(),
            unknown_report.to_string(),
            missing_report.to_string(),
            message,
            format!("{err:?}"),
            format!("{connection:?} {unknown:?}"),
            logs.text(),
        ],
        &[wrong.to_owned(), server.secret_key().to_owned()],
    );
}

/// Hands out the server's key pairs one after the other, as STS hands out temporary
/// credentials: each fetch gets the next pair and a new session token. Its derived `Debug`
/// shows the secrets: the provider must never print it.
#[derive(Debug)]
struct Rotating {
    keys: Vec<(String, String)>,
    next: AtomicUsize,
}

#[async_trait]
impl CredentialSource for Rotating {
    async fn fetch(&self) -> s3conn_auth::Result<TemporaryCredential> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let (key_id, secret_key) = self.keys[n.min(self.keys.len() - 1)].clone();
        Ok(TemporaryCredential {
            credential: Arc::new(AwsCredential {
                key_id,
                secret_key,
                token: Some(format!("session-token-{n}-abcdefgh")),
            }),
            expiry: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
        })
    }
}

fn renewing_store(
    server: &S3Server,
    keys: Vec<(String, String)>,
) -> (
    RefreshOnExpiry<object_store::aws::AmazonS3>,
    Arc<RefreshingProvider>,
) {
    for (key, secret) in &keys {
        server.add_credentials(key, secret);
    }
    let provider = Arc::new(RefreshingProvider::new(Arc::new(Rotating {
        keys,
        next: AtomicUsize::new(0),
    })));
    let s3 = AmazonS3Builder::new()
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(server.bucket())
        .with_credentials(Arc::clone(&provider) as _)
        .build()
        .unwrap();
    (RefreshOnExpiry::new(s3, Arc::clone(&provider)), provider)
}

#[tokio::test]
async fn an_expired_token_mid_upload_renews_credentials_and_the_upload_goes_on() {
    let logs = common::logs();
    let server = S3Server::start().await;
    // s3s-fs ties an upload to its access key id: the renewed credential keeps the id (new
    // secret is not possible then, new session token is).
    let key_pair = (
        "ASIAUPLOAD0000000000".to_owned(),
        "upload-secret-xyzxyz".to_owned(),
    );
    let (store, provider) = renewing_store(&server, vec![key_pair.clone()]);

    let key = Path::from("out/big.bin");
    let first = vec![7u8; 5 * 1024 * 1024];
    let mut upload = store.put_multipart(&key).await.unwrap();
    upload
        .put_part(PutPayload::from(first.clone()))
        .await
        .unwrap();
    assert_eq!(provider.generation(), 1);
    server.expire_next_requests(&key_pair.0, 1);
    upload
        .put_part(PutPayload::from_static(b"the last part"))
        .await
        .unwrap();
    assert_eq!(
        provider.generation(),
        2,
        "the part was sent again with renewed credentials"
    );
    server.expire_next_requests(&key_pair.0, 1);
    upload.complete().await.unwrap();
    assert_eq!(provider.generation(), 3);
    let got = server
        .store(server.bucket())
        .get(&key)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.len(), first.len() + 13);
    assert_eq!(&got[first.len()..], b"the last part");

    let mut secrets = vec![key_pair.1.clone()];
    secrets.extend((0..3).map(|n| format!("session-token-{n}-abcdefgh")));
    common::assert_no_secret(
        "renewals during an upload",
        &[format!("{store:?}"), format!("{provider:?}"), logs.text()],
        &secrets,
    );
}

#[tokio::test]
async fn expired_credentials_are_renewed_for_single_calls_listings_and_deletes() {
    let logs = common::logs();
    let server = S3Server::start().await;
    let keys: Vec<(String, String)> = (0..5)
        .map(|i| {
            (
                format!("ASIATEMP{i:012}"),
                format!("temporary-secret-{i}-xyzxyz"),
            )
        })
        .collect();
    let (store, provider) = renewing_store(&server, keys.clone());

    store.put(&"out/a.txt".into(), "a".into()).await.unwrap();
    assert_eq!(provider.generation(), 1);
    server.expire_credentials(&keys[0].0);
    store.put(&"out/b.txt".into(), "b".into()).await.unwrap();
    assert_eq!(provider.generation(), 2);
    server.expire_credentials(&keys[1].0);
    let listed: Vec<_> = store.list(Some(&"out".into())).try_collect().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(provider.generation(), 3);
    server.expire_credentials(&keys[2].0);
    let deleted: Vec<_> = store
        .delete_stream(futures::stream::iter([Ok(Path::from("out/a.txt"))]).boxed())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(deleted, [Path::from("out/a.txt")]);
    assert_eq!(provider.generation(), 4);
    server.expire_credentials(&keys[3].0);
    let got = store
        .get(&"out/b.txt".into())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&got[..], b"b");
    assert_eq!(provider.generation(), 5);

    // Without the wrapper, the same answer is an error that names the expired token.
    server.expire_credentials(&keys[4].0);
    let err = store.get_ref().get(&"out/b.txt".into()).await.unwrap_err();
    assert!(s3conn_auth::is_expired_token(&err), "{err}");
    assert!(err.to_string().contains("ExpiredToken"), "{err}");

    assert!(
        logs.text().contains("credentials expired"),
        "renewals are logged (and the capture works)"
    );
    let mut secrets: Vec<String> = keys.iter().map(|(_, s)| s.clone()).collect();
    secrets.extend((0..5).map(|n| format!("session-token-{n}-abcdefgh")));
    common::assert_no_secret(
        "renewals",
        &[
            err.to_string(),
            format!("{err:?}"),
            format!("{store:?}"),
            format!("{provider:?}"),
            logs.text(),
        ],
        &secrets,
    );
}

#[tokio::test]
async fn static_keys_with_a_session_token_connect() {
    // Temporary static keys carry their token in x-amz-security-token, signed along.
    let server = S3Server::start().await;
    let connection = ConnectionConfig::s3(server.bucket())
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .with_max_retries(0)
        .with_static_credentials(
            server.access_key(),
            server.secret_key(),
            Some(Secret::new("a-session-token-value")),
        )
        .connect()
        .unwrap();
    let report = connection.check(Role::Source).await;
    assert!(report.passed(), "{report}");
}
