//! A sync in progress is not interrupted when S3 answers that its temporary credentials
//! expired: the connection (s3conn-auth's `RefreshOnExpiry` over a `RefreshingProvider`)
//! renews them and the call is made again. The loopback server checks signatures and is
//! told, in the middle of the sync, to answer `ExpiredToken`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AwsCredential};
use object_store::path::Path;
use s3conn_core::Pipeline;
use s3conn_core::auth::credentials::{CredentialSource, RefreshingProvider, TemporaryCredential};
use s3conn_core::auth::{Connection, RefreshOnExpiry};
use s3conn_core::layout::SyncStatus;
use s3conn_core::s3::{S3Sink, S3Source, S3StreamConfig};
use s3conn_core::state::ObjectStoreStateStore;
use s3conn_testkit::S3Server;

use common::*;

const KEY_ID: &str = "ASIASYNC000000000000";
const SECRET: &str = "temporary-sync-secret-0123";

/// Temporary credentials as STS gives them: the same key id here (s3s-fs ties multipart
/// uploads to it), a new session token on every fetch.
#[derive(Debug)]
struct Sts {
    fetches: AtomicUsize,
}

#[async_trait]
impl CredentialSource for Sts {
    async fn fetch(&self) -> s3conn_core::auth::Result<TemporaryCredential> {
        let n = self.fetches.fetch_add(1, Ordering::SeqCst);
        Ok(TemporaryCredential {
            credential: Arc::new(AwsCredential {
                key_id: KEY_ID.into(),
                secret_key: SECRET.into(),
                token: Some(format!("session-token-{n}")),
            }),
            expiry: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_in_the_middle_of_a_sync_is_renewed_and_the_sync_completes() {
    let server = Arc::new(S3Server::start().await);
    server.add_credentials(KEY_ID, SECRET);
    let raw = server.store(server.bucket());
    for o in 0..4u64 {
        put(
            &raw,
            &format!("landing/events/part-{o}.jsonl"),
            ndjson(o * 1000, 1000),
        )
        .await;
    }

    let provider = Arc::new(RefreshingProvider::new(Arc::new(Sts {
        fetches: AtomicUsize::new(0),
    })));
    let s3 = AmazonS3Builder::new()
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(server.bucket())
        .with_credentials(Arc::clone(&provider) as _)
        .build()
        .unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(RefreshOnExpiry::new(s3, Arc::clone(&provider)));
    let bucket_url = format!("s3://{}", server.bucket());
    let source = S3Source::builder(Connection::new(
        Arc::clone(&store),
        Path::from("landing"),
        &bucket_url,
    ))
    .with_stream(S3StreamConfig::new("events", "events").with_format("ndjson"))
    .build()
    .unwrap();
    let sink = S3Sink::builder(Connection::new(
        Arc::clone(&store),
        Path::from("warehouse"),
        &bucket_url,
    ))
    .build()
    .unwrap();
    let state = ObjectStoreStateStore::new(Arc::clone(&store), Path::from("state"));

    // After the first object is read, the server starts refusing the session: the next
    // request (a read, a part, a manifest…) is answered ExpiredToken.
    let expired = Arc::new(AtomicBool::new(false));
    let on_progress = {
        let server = Arc::clone(&server);
        let expired = Arc::clone(&expired);
        move |p: &s3conn_core::Progress| {
            if p.objects >= 1 && !expired.swap(true, Ordering::SeqCst) {
                server.expire_next_requests(KEY_ID, 1);
            }
        }
    };
    let mut pipeline = Pipeline::new("renewal", source, sink, state)
        .unwrap()
        .with_progress(on_progress);
    let report = pipeline.run().await.unwrap();
    assert_eq!(report.status, SyncStatus::Succeeded);
    assert_eq!(report.rows, 4000);
    assert!(expired.load(Ordering::SeqCst));
    assert_eq!(
        provider.generation(),
        2,
        "one renewal, after the ExpiredToken answer"
    );
    let rows = committed_rows(&raw, server.bucket(), "warehouse", "events").await;
    assert_eq!(rows.len(), 4000);
    assert_eq!(
        rows.keys().copied().collect::<Vec<_>>(),
        (0..4000).collect::<Vec<u64>>()
    );
}
