//! The loopback server is real S3 over HTTP: signatures are checked, conditional puts work.

use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};
use s3conn_testkit::S3Server;

#[tokio::test]
async fn signatures_are_checked_and_create_is_conditional() {
    let server = S3Server::start().await;
    let store = server.store(server.bucket());
    let key = Path::from("a/b.txt");
    store.put(&key, "hello".into()).await.unwrap();
    let got = store.get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(&got[..], b"hello");

    let create = PutOptions::from(PutMode::Create);
    let err = store
        .put_opts(&key, "again".into(), create)
        .await
        .unwrap_err();
    assert!(
        matches!(err, object_store::Error::AlreadyExists { .. }),
        "{err}"
    );

    let wrong = AmazonS3Builder::new()
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(server.bucket())
        .with_access_key_id(server.access_key())
        .with_secret_access_key("not-the-secret")
        .build()
        .unwrap();
    let err = wrong.get(&key).await.unwrap_err().to_string();
    assert!(
        err.contains("SignatureDoesNotMatch") || err.contains("403"),
        "{err}"
    );
}
