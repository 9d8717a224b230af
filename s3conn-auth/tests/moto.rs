//! Against moto (S3, IAM, STS): the generated policies are valid IAM documents, AssumeRole
//! with an External ID gives credentials that work for S3 and are renewed before they expire,
//! and with IAM enforced, a prefix without write access shows Put as missing.
//!
//! moto enforces signatures and IAM policies once `/moto-api/reset-auth` says so (the setup
//! runs before that). What it does not evaluate: `StringLike` conditions (the `s3:prefix`
//! condition on `s3:ListBucket` is ignored, listing is allowed bucket-wide), and a missing
//! External ID (an AssumeRole without one passes a trust policy that requires one; a wrong
//! one is refused). And it authorizes a bulk `DeleteObjects` against the bucket's ARN where
//! S3 checks `s3:DeleteObject` on each key, so these connections delete one key per request
//! (`disable_bulk_delete`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AwsCredential};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, StaticCredentialProvider};
use s3conn_auth::check::{Probe, ProbeStatus, check};
use s3conn_auth::credentials::{
    AssumeRole, Clock, CredentialSource, RefreshingProvider, TemporaryCredential,
};
use s3conn_auth::policy::{Role, Scope, trust_policy};
use s3conn_auth::{ConnectionConfig, RefreshOnExpiry};
use s3conn_testkit::{MotoServer, run_python};

const ACCOUNT: &str = "123456789012";
const EXTERNAL_ID: &str = "tenant-42";

/// Creates the bucket, a fixture object, the users and the role; prints their keys as JSON.
const SETUP: &str = r#"
import boto3, json, sys
endpoint, bucket, source_policy, sink_policy, trust_policy = sys.argv[1:6]
kw = dict(endpoint_url=endpoint, region_name="us-east-1",
          aws_access_key_id="AKIASETUP00000000000", aws_secret_access_key="setup")
iam = boto3.client("iam", **kw)
s3 = boto3.client("s3", **kw)
s3.create_bucket(Bucket=bucket)
s3.put_object(Bucket=bucket, Key="landing/events/a.jsonl", Body=b'{"a": 1}\n')
source = iam.create_policy(PolicyName="s3conn-source", PolicyDocument=source_policy)["Policy"]["Arn"]
sink = iam.create_policy(PolicyName="s3conn-sink", PolicyDocument=sink_policy)["Policy"]["Arn"]
for user in ["connector", "reader", "writer"]:
    iam.create_user(UserName=user)
iam.attach_user_policy(UserName="reader", PolicyArn=source)
iam.attach_user_policy(UserName="writer", PolicyArn=sink)
role = iam.create_role(RoleName="s3conn-sink", AssumeRolePolicyDocument=trust_policy)["Role"]["Arn"]
iam.attach_role_policy(RoleName="s3conn-sink", PolicyArn=sink)
iam.put_user_policy(UserName="connector", PolicyName="assume", PolicyDocument=json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role}]}))
keys = {}
for user in ["connector", "reader", "writer"]:
    k = iam.create_access_key(UserName=user)["AccessKey"]
    keys[user] = [k["AccessKeyId"], k["SecretAccessKey"]]
print(json.dumps({"role": role, "keys": keys}))
"#;

struct Setup {
    moto: MotoServer,
    bucket: String,
    role: String,
    keys: HashMap<String, (String, String)>,
}

impl Setup {
    /// moto with IAM enforced after the setup; the source policy covers `landing/events`,
    /// the sink policy (users `writer` and the role) covers `exports`.
    fn start() -> Self {
        let moto = MotoServer::start_with_auth(1_000_000);
        let bucket = "customer-data".to_owned();
        let source = Scope::new(&bucket, "landing/events")
            .unwrap()
            .policy(Role::Source);
        let sink = Scope::new(&bucket, "exports").unwrap().policy(Role::Sink);
        let trust = trust_policy(
            &format!("arn:aws:iam::{ACCOUNT}:user/connector"),
            EXTERNAL_ID,
        )
        .unwrap();
        let out = run_python(
            SETUP,
            &[
                moto.endpoint(),
                &bucket,
                &source.to_string(),
                &sink.to_string(),
                &trust.to_string(),
            ],
        );
        let parsed: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let keys = parsed["keys"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(user, k)| {
                (
                    user.clone(),
                    (
                        k[0].as_str().unwrap().to_owned(),
                        k[1].as_str().unwrap().to_owned(),
                    ),
                )
            })
            .collect();
        moto.reset_auth(0);
        Self {
            role: parsed["role"].as_str().unwrap().to_owned(),
            moto,
            bucket,
            keys,
        }
    }

    fn user(&self, name: &str, prefix: &str) -> ConnectionConfig {
        let (id, secret) = &self.keys[name];
        ConnectionConfig::s3(&self.bucket)
            .with_prefix(prefix)
            .with_endpoint(self.moto.endpoint())
            .with_allow_http(true)
            .with_max_retries(0)
            .with_bulk_delete_disabled(true)
            .with_static_credentials(id, secret.as_str(), None)
    }

    fn secrets(&self) -> Vec<String> {
        self.keys.values().map(|(_, s)| s.clone()).collect()
    }
}

/// A clock the test moves.
#[derive(Debug)]
struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(Utc::now())))
    }
    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += chrono::Duration::from_std(by).unwrap();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

#[test]
fn every_generated_policy_is_accepted_by_iam() {
    let moto = MotoServer::start();
    let mut documents = Vec::new();
    for (bucket, prefix) in [("customer-data", "landing/events"), ("customer-data", "/")] {
        for role in [Role::Source, Role::Sink] {
            let scope = Scope::new(bucket, prefix).unwrap();
            documents.push((format!("{role}-{}", documents.len()), scope.policy(role)));
        }
    }
    let cn = Scope::new("b-cn", "x")
        .unwrap()
        .with_partition(Scope::partition_of_region("cn-north-1"))
        .policy(Role::Sink);
    documents.push(("sink-cn".into(), cn));
    let trusts = [
        trust_policy(
            &format!("arn:aws:iam::{ACCOUNT}:role/connector"),
            EXTERNAL_ID,
        )
        .unwrap(),
        trust_policy("393309748692", "ws/42=x").unwrap(),
    ];
    let script = r#"
import boto3, json, sys
endpoint = sys.argv[1]
policies = json.loads(sys.argv[2])
trusts = json.loads(sys.argv[3])
iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id="AKIASETUP00000000000", aws_secret_access_key="setup")
out = {"policies": {}, "roles": [], "refused": None}
for name, document in policies:
    arn = iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(document))["Policy"]["Arn"]
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    stored = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
    if isinstance(stored, str):
        stored = json.loads(stored)
    out["policies"][name] = stored
for i, trust in enumerate(trusts):
    role = iam.create_role(RoleName=f"r{i}", AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    out["roles"].append(role["AssumeRolePolicyDocument"])
try:
    iam.create_policy(PolicyName="broken", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3GetObject", "Resource": "*"}]}))
except iam.exceptions.MalformedPolicyDocumentException as e:
    out["refused"] = e.response["Error"]["Code"]
print(json.dumps(out))
"#;
    let policies: Vec<_> = documents
        .iter()
        .map(|(name, doc)| serde_json::json!([name, doc]))
        .collect();
    let out = run_python(
        script,
        &[
            moto.endpoint(),
            &serde_json::Value::from(policies).to_string(),
            &serde_json::Value::from(trusts.to_vec()).to_string(),
        ],
    );
    let out: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    for (name, document) in &documents {
        assert_eq!(
            &out["policies"][name], document,
            "IAM keeps {name} as written"
        );
    }
    assert_eq!(out["roles"].as_array().unwrap().len(), 2);
    for (stored, trust) in out["roles"].as_array().unwrap().iter().zip(&trusts) {
        let stored = match stored {
            serde_json::Value::String(text) => serde_json::from_str(text).unwrap(),
            other => other.clone(),
        };
        assert_eq!(&stored, trust);
    }
    assert_eq!(
        out["refused"], "MalformedPolicyDocument",
        "moto validates documents: a broken one is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assume_role_with_an_external_id_works_for_s3_and_renews_before_expiry() {
    let logs = common::logs();
    let setup = Setup::start();
    let clock = ManualClock::new();
    let config = setup
        .user("connector", "exports")
        .with_role_arn(&setup.role)
        .with_external_id(EXTERNAL_ID)
        .with_session_name("s3conn-test")
        .with_duration(Duration::from_secs(900))
        .with_sts_endpoint(setup.moto.endpoint())
        .with_clock(Arc::clone(&clock) as _);
    let connection = config.connect().unwrap();
    let provider = Arc::clone(connection.credential_provider().unwrap());
    assert_eq!(
        provider.generation(),
        0,
        "nothing is fetched before a request"
    );

    let store = connection.store();
    let key = connection.key("events/a.jsonl").unwrap();
    store.put(&key, "{\"a\": 1}\n".into()).await.unwrap();
    let got = store.get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(&got[..], b"{\"a\": 1}\n");
    assert_eq!(provider.generation(), 1);
    let first = provider.credential().await.unwrap();
    assert!(first.token.is_some());

    // 15-minute credentials, renewed 5 minutes before they expire.
    clock.advance(Duration::from_secs(9 * 60));
    store.head(&key).await.unwrap();
    assert_eq!(provider.generation(), 1, "still fresh after 9 minutes");
    clock.advance(Duration::from_secs(60 + 1));
    store.head(&key).await.unwrap();
    assert_eq!(provider.generation(), 2, "renewed within the margin");
    let second = provider.credential().await.unwrap();
    assert_ne!(first.key_id, second.key_id);

    // The role's sink policy covers exports/: every probe passes with its credentials.
    let report = connection.check(Role::Sink).await;
    assert!(report.passed(), "{report}");

    // A wrong External ID: STS refuses, and the message says what to fix.
    let wrong = config
        .clone()
        .with_external_id("someone-else")
        .connect()
        .unwrap();
    let err = wrong.store().head(&key).await.unwrap_err();
    let message = format!("{err}");
    assert!(
        message.contains(&setup.role) && message.contains("AccessDenied"),
        "{message}"
    );
    assert!(message.contains("External ID"), "{message}");
    let wrong_report = check(&wrong, Role::Sink).await;
    let bucket = wrong_report.probe(Probe::Bucket).unwrap();
    assert_eq!(bucket.status, ProbeStatus::Failed, "{wrong_report}");
    assert_eq!(
        bucket.code.as_deref(),
        Some("AccessDenied"),
        "{wrong_report}"
    );
    assert!(
        bucket.fix.as_deref().unwrap().contains("external_id"),
        "{wrong_report}"
    );

    let mut secrets = setup.secrets();
    for c in [&first, &second] {
        secrets.push(c.secret_key.clone());
        secrets.push(c.token.clone().unwrap());
    }
    common::assert_no_secret(
        "assume role",
        &[
            message,
            format!("{err:?}"),
            format!("{config:?}"),
            format!("{connection:?}"),
            format!("{provider:?}"),
            report.to_string(),
            serde_json::to_string(&report).unwrap(),
            wrong_report.to_string(),
            logs.text(),
        ],
        &secrets,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_without_write_access_shows_put_as_missing() {
    let logs = common::logs();
    let setup = Setup::start();

    // `reader` has the source policy of landing/events: a sink check there misses Put.
    let reader = setup.user("reader", "landing/events").connect().unwrap();
    let report = check(&reader, Role::Sink).await;
    assert!(!report.passed(), "{report}");
    let status =
        |report: &s3conn_auth::check::CheckReport, probe| report.probe(probe).map(|p| p.status);
    assert_eq!(
        status(&report, Probe::Bucket),
        Some(ProbeStatus::Ok),
        "{report}"
    );
    assert_eq!(
        status(&report, Probe::List),
        Some(ProbeStatus::Ok),
        "{report}"
    );
    assert_eq!(
        status(&report, Probe::Get),
        Some(ProbeStatus::Ok),
        "{report}"
    );
    let put = report.probe(Probe::Put).unwrap();
    assert_eq!(put.status, ProbeStatus::Missing, "{report}");
    assert_eq!(put.code.as_deref(), Some("AccessDenied"), "{report}");
    assert_eq!(
        put.fix.as_deref(),
        Some("add s3:PutObject on arn:aws:s3:::customer-data/landing/events/*"),
        "{report}"
    );
    for probe in [Probe::ConditionalPut, Probe::Multipart, Probe::Delete] {
        assert_eq!(
            status(&report, probe),
            Some(ProbeStatus::Missing),
            "{report}"
        );
    }
    assert_eq!(
        report.probe(Probe::Delete).unwrap().fix.as_deref(),
        Some("add s3:DeleteObject on arn:aws:s3:::customer-data/landing/events/*")
    );
    let table = report.to_string();
    println!("{table}");
    assert!(
        table.contains("fix: add s3:PutObject on arn:aws:s3:::customer-data/landing/events/*"),
        "{table}"
    );

    // The same user passes a source check there, reading the fixture object.
    let source = check(&reader, Role::Source).await;
    assert!(source.passed(), "{source}");
    assert!(
        source
            .probe(Probe::Get)
            .unwrap()
            .message
            .contains("a.jsonl"),
        "{source}"
    );

    // `writer` has the sink policy of exports: everything works there, nothing is left…
    let writer = setup.user("writer", "exports").connect().unwrap();
    let ok = check(&writer, Role::Sink).await;
    assert!(ok.passed(), "{ok}");
    let left: Vec<_> = writer
        .store()
        .list(Some(&Path::from("exports")))
        .try_collect()
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    // …and Put is missing outside it.
    let elsewhere = setup.user("writer", "landing").connect().unwrap();
    let outside = check(&elsewhere, Role::Sink).await;
    assert_eq!(
        outside.probe(Probe::Put).unwrap().status,
        ProbeStatus::Missing,
        "{outside}"
    );

    common::assert_no_secret(
        "checks under IAM",
        &[
            table,
            serde_json::to_string(&report).unwrap(),
            source.to_string(),
            ok.to_string(),
            outside.to_string(),
            format!("{reader:?} {writer:?}"),
            logs.text(),
        ],
        &setup.secrets(),
    );
}

/// AssumeRole through STS, but the first credential of every pair of fetches carries a
/// broken session token (as a token revoked or expired on the server side would be).
#[derive(Debug)]
struct BrokenEveryOther {
    inner: AssumeRole,
    fetches: AtomicUsize,
    handed_out: Mutex<Vec<Arc<AwsCredential>>>,
}

#[async_trait]
impl CredentialSource for BrokenEveryOther {
    async fn fetch(&self) -> s3conn_auth::Result<TemporaryCredential> {
        let mut fresh = self.inner.fetch().await?;
        if self
            .fetches
            .fetch_add(1, Ordering::SeqCst)
            .is_multiple_of(2)
        {
            fresh.credential = Arc::new(AwsCredential {
                key_id: fresh.credential.key_id.clone(),
                secret_key: fresh.credential.secret_key.clone(),
                token: Some("FwoGZXIvYXdzEPRETENDEDTOKENTHATMOTOREFUSES".into()),
            });
        }
        self.handed_out
            .lock()
            .unwrap()
            .push(Arc::clone(&fresh.credential));
        Ok(fresh)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_token_renews_credentials_and_the_calls_go_on() {
    let logs = common::logs();
    let setup = Setup::start();
    let (id, secret) = setup.keys["connector"].clone();
    let base = Arc::new(StaticCredentialProvider::new(AwsCredential {
        key_id: id,
        secret_key: secret,
        token: None,
    }));
    let source = Arc::new(BrokenEveryOther {
        inner: AssumeRole::new(base, &setup.role)
            .with_external_id(EXTERNAL_ID)
            .with_endpoint(setup.moto.endpoint())
            .with_client_options(object_store::ClientOptions::new().with_allow_http(true)),
        fetches: AtomicUsize::new(0),
        handed_out: Mutex::new(Vec::new()),
    });
    let provider = Arc::new(RefreshingProvider::new(Arc::clone(&source) as _));
    let s3 = AmazonS3Builder::new()
        .with_endpoint(setup.moto.endpoint())
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(&setup.bucket)
        .with_retry(object_store::RetryConfig {
            max_retries: 0,
            ..Default::default()
        })
        .with_credentials(Arc::clone(&provider) as _)
        .build()
        .unwrap();
    let store = RefreshOnExpiry::new(s3, Arc::clone(&provider));

    // moto answers InvalidToken; the wrapper renews and the put goes through.
    store
        .put(&"exports/a.txt".into(), "a".into())
        .await
        .unwrap();
    assert_eq!(provider.generation(), 2);

    // In the middle of a multipart upload.
    let key = Path::from("exports/big.bin");
    let mut upload = store.put_multipart(&key).await.unwrap();
    upload
        .put_part(PutPayload::from(vec![1u8; 5 * 1024 * 1024]))
        .await
        .unwrap();
    provider.invalidate_generation(provider.generation()).await;
    upload
        .put_part(PutPayload::from_static(b"end"))
        .await
        .unwrap();
    upload.complete().await.unwrap();
    assert_eq!(provider.generation(), 4, "a broken token, then a good one");
    let meta = store.head(&key).await.unwrap();
    assert_eq!(meta.size, 5 * 1024 * 1024 + 3);

    // Without the wrapper the answer is an error that names the token problem.
    provider.invalidate_generation(provider.generation()).await;
    let err = store.get_ref().head(&key).await.unwrap_err();
    let text = err.to_string();
    let mut secrets = setup.secrets();
    for c in source.handed_out.lock().unwrap().iter() {
        secrets.push(c.secret_key.clone());
        secrets.push(c.token.clone().unwrap());
    }
    common::assert_no_secret(
        "invalid tokens",
        &[
            text,
            format!("{err:?}"),
            format!("{store:?}"),
            format!("{provider:?}"),
            logs.text(),
        ],
        &secrets,
    );
}
