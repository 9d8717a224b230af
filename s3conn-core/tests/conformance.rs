//! Every Source, Sink and StateStore implementation of the project runs the conformance
//! suites, against real backends: memory, a local folder, the SigV4-checking loopback S3
//! server, and moto for races (its conditional writes are atomic; s3s-fs's are not).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;

use futures::FutureExt;
use object_store::ObjectStoreExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use s3conn_core::StreamId;
use s3conn_core::conformance;
use s3conn_core::formats::FormatPlugin;
use s3conn_core::formats::parquet::ParquetFormat;
use s3conn_core::memory::{MemorySink, MemorySource};
use s3conn_core::s3::{S3Sink, S3Source, S3StreamConfig};
use s3conn_core::state::{
    LocalFileStateStore, MemoryStateStore, ObjectStoreStateStore, StateStore,
};
use s3conn_testkit::{MotoServer, S3Server};

use common::*;

#[tokio::test]
async fn memory_state_store() {
    conformance::state_store(&MemoryStateStore::new()).await;
    conformance::state_store_race(Arc::new(MemoryStateStore::new()), 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_file_state_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalFileStateStore::new(dir.path()).unwrap();
    conformance::state_store(&store).await;
    // Creating a version is an atomic hard link: a real race has one winner.
    conformance::state_store_race(Arc::new(store), 16).await;
}

#[tokio::test]
async fn object_store_state_store_in_memory() {
    let store = ObjectStoreStateStore::new(
        Arc::new(object_store::memory::InMemory::new()),
        Path::from("state"),
    );
    conformance::state_store(&store).await;
    conformance::state_store_race(Arc::new(store), 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_state_store_on_loopback_s3() {
    let server = S3Server::start().await;
    let conn = connection(&server, "");
    let store = ObjectStoreStateStore::new(Arc::clone(conn.store()), Path::from("state"));
    // Sequential promises only: s3s-fs's conditional put is check-then-rename.
    conformance::state_store(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_state_store_races_on_moto() {
    let moto = MotoServer::start();
    let s3 = AmazonS3Builder::new()
        .with_endpoint(moto.endpoint())
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name("state-bucket")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .unwrap();
    // moto needs the bucket to exist.
    assert!(
        create_moto_bucket(moto.endpoint(), "state-bucket").await,
        "create the moto bucket"
    );
    let store: Arc<dyn StateStore> = Arc::new(ObjectStoreStateStore::new(
        Arc::new(s3),
        Path::from("state"),
    ));
    conformance::state_store(store.as_ref()).await;
    conformance::state_store_race(store, 8).await;
}

/// Create a bucket on moto with a plain HTTP PUT (moto does not check signatures).
async fn create_moto_bucket(endpoint: &str, bucket: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = endpoint.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    response.starts_with("HTTP/1.1 200")
}

#[tokio::test]
async fn memory_sink() {
    let mut sink = MemorySink::new();
    let probe = sink.clone();
    conformance::sink(&mut sink, move || {
        let n = probe.committed_rows();
        async move { n }.boxed()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_sink_on_loopback_s3() {
    let server = S3Server::start().await;
    let raw = server.store(server.bucket());
    let mut sink = S3Sink::builder(connection(&server, "out")).build().unwrap();
    let bucket = server.bucket().to_owned();
    conformance::sink(&mut sink, move || {
        let raw = Arc::clone(&raw);
        let bucket = bucket.clone();
        async move {
            let mut rows = 0;
            for table in ["alpha", "beta"] {
                for key in live_files(&raw, &bucket, "out", table).await {
                    rows += read_parquet(&raw, &key)
                        .await
                        .iter()
                        .map(|b| b.num_rows())
                        .sum::<usize>();
                }
            }
            rows
        }
        .boxed()
    })
    .await;
}

#[tokio::test]
async fn memory_source() {
    let source = MemorySource::new();
    source.push(StreamId::new("a"), conformance::sample_batch(0, 10));
    source.push(StreamId::new("b"), conformance::sample_batch(10, 5));
    source.push(StreamId::new("a"), conformance::sample_batch(15, 7));
    conformance::source(&source, 22).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_source_on_loopback_s3() {
    let server = S3Server::start().await;
    let raw = server.store(server.bucket());
    put(&raw, "in/json/a.jsonl", ndjson(0, 100)).await;
    put(&raw, "in/json/b.jsonl.gz", gzip(ndjson(100, 50).as_bytes())).await;
    put(&raw, "in/json/sub/c", ndjson(150, 25)).await;
    // A Parquet file written by the plugin, as another stream.
    let mut enc = ParquetFormat::default()
        .encoder(
            conformance::sample_batch(0, 1).schema(),
            &Default::default(),
        )
        .unwrap();
    enc.write(&conformance::sample_batch(0, 333)).unwrap();
    let mut file = enc.take_output().to_vec();
    file.extend_from_slice(&enc.finish().unwrap());
    put(&raw, "in/pq/x.parquet", file).await;

    let source = S3Source::builder(connection(&server, "in"))
        .with_stream(S3StreamConfig::new("json", "json").with_format("ndjson"))
        .with_stream(S3StreamConfig::new("pq", "pq"))
        .build()
        .unwrap();
    conformance::source(&source, 175 + 333).await;
    assert!(raw.head(&Path::from("in/pq/x.parquet")).await.is_ok());
}
