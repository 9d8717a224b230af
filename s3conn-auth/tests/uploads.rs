//! Multipart uploads through a connection, against real servers: a completion never replaces
//! an object (S3 is sent `If-None-Match: *`), and an upload a crashed process left open is
//! found by `ListMultipartUploads` and aborted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMultipartOptions, WriteMultipart};
use s3conn_auth::{Connection, ConnectionConfig};
use s3conn_testkit::{MotoServer, S3Server, run_python};

fn s3(endpoint: &str, bucket: &str, key: &str, secret: &str) -> Connection {
    ConnectionConfig::s3(bucket)
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_static_credentials(key, secret, None)
        .connect()
        .unwrap()
}

/// 5 MiB and a bit: two parts, the first of S3's minimum size.
fn body() -> Vec<Bytes> {
    vec![
        Bytes::from(vec![b'a'; 5 << 20]),
        Bytes::from_static(b"tail"),
    ]
}

async fn upload(conn: &Connection, key: &Path) -> object_store::Result<object_store::PutResult> {
    let started = conn
        .start_upload(key, PutMultipartOptions::default())
        .await?;
    assert!(started.id.is_some(), "S3 uploads name their id");
    let mut writer = WriteMultipart::new_with_chunk_size(started.upload, 5 << 20);
    for chunk in body() {
        writer.put(chunk);
    }
    writer.finish().await
}

async fn completion_never_replaces(conn: &Connection) {
    assert!(conn.uploads_are_conditional());
    let key = Path::from("t/part-0.csv");
    conn.store()
        .put(&key, Bytes::from_static(b"committed").into())
        .await
        .unwrap();
    let err = upload(conn, &key).await.unwrap_err();
    assert!(
        matches!(err, object_store::Error::AlreadyExists { .. }),
        "a completion over an existing key fails: {err}"
    );
    let kept = conn.store().get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(&kept[..], b"committed", "the existing object is untouched");

    let free = Path::from("t/part-1.csv");
    let done = upload(conn, &free).await.unwrap();
    let meta = conn.store().head(&free).await.unwrap();
    assert_eq!(meta.size, (5 << 20) + 4);
    assert_eq!(meta.e_tag, done.e_tag);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_never_replaces_an_object_on_loopback_s3() {
    let server = S3Server::start().await;
    let conn = s3(
        server.endpoint(),
        server.bucket(),
        server.access_key(),
        server.secret_key(),
    );
    completion_never_replaces(&conn).await;
    // s3s-fs does not implement ListMultipartUploads: the connection says it cannot list.
    assert_eq!(conn.open_uploads(&Path::from("t")).await.unwrap(), None);
    let stats = conn.request_stats();
    assert!(
        stats.requests >= 8 && stats.body_bytes > 5 << 20,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_a_crash_left_open_are_listed_and_aborted_on_moto() {
    let moto = MotoServer::start();
    run_python(
        r#"
import boto3, sys
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id="AKIAMOTO", aws_secret_access_key="moto")
s3.create_bucket(Bucket="uploads-bucket")
"#,
        &[moto.endpoint()],
    );
    let conn = s3(moto.endpoint(), "uploads-bucket", "AKIAMOTO", "moto");
    completion_never_replaces(&conn).await;

    // Two uploads "crash" before anything records their ids; one of another prefix.
    let mut ids = Vec::new();
    for key in [
        "t/date=2024-01-01/part-2.csv",
        "t/date=2024-01-01/part-3.csv",
        "u/x.csv",
    ] {
        let started = conn
            .start_upload(&Path::from(key), PutMultipartOptions::default())
            .await
            .unwrap();
        ids.push((key, started.id.unwrap()));
    }
    let open = conn
        .open_uploads(&Path::from("t/date=2024-01-01/part-3"))
        .await
        .unwrap()
        .expect("moto lists open uploads");
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].key.as_ref(), "t/date=2024-01-01/part-3.csv");
    assert_eq!(open[0].id, ids[1].1);
    assert!(open[0].initiated.is_some());

    let open = conn.open_uploads(&Path::from("t/")).await.unwrap().unwrap();
    assert_eq!(open.len(), 2, "{open:?}");
    for upload in &open {
        conn.abort_upload(&upload.key, &upload.id).await.unwrap();
        // Aborting again is not an error.
        conn.abort_upload(&upload.key, &upload.id).await.unwrap();
    }
    assert!(
        conn.open_uploads(&Path::from("t/"))
            .await
            .unwrap()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        conn.open_uploads(&Path::from("u/"))
            .await
            .unwrap()
            .unwrap()
            .len(),
        1
    );
}
