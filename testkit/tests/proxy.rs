//! The fault proxy in front of the loopback S3 server, and what object_store 0.14's `AmazonS3`
//! client does with each fault (1 s request timeout, 10 retries with 10–100 ms backoff).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};
use s3conn_testkit::{Fault, FaultPlan, FaultProxy, S3Server};

/// A server, a proxy with `plan` in front of it, and a store that goes through the proxy.
async fn setup(plan: FaultPlan) -> (S3Server, FaultProxy, Arc<dyn ObjectStore>) {
    let server = S3Server::start().await;
    let proxy = FaultProxy::start(server.endpoint(), plan).await;
    let store = Arc::new(
        proxy
            .store_builder(&server, server.bucket())
            .build()
            .unwrap(),
    );
    (server, proxy, store)
}

fn create() -> PutOptions {
    PutOptions::from(PutMode::Create)
}

async fn read(store: &dyn ObjectStore, key: &Path) -> Bytes {
    store.get(key).await.unwrap().bytes().await.unwrap()
}

#[tokio::test]
async fn without_faults_everything_is_forwarded_verbatim_and_counted() {
    let (server, proxy, store) = setup(FaultPlan::none()).await;
    let key = Path::from("a/b.txt");
    store.put(&key, "hello".into()).await.unwrap();
    assert_eq!(&read(store.as_ref(), &key).await[..], b"hello");
    assert_eq!(store.head(&key).await.unwrap().size, 5);
    let listed: Vec<_> = futures::TryStreamExt::try_collect(store.list(None))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    store.delete(&key).await.unwrap();
    // Conditional headers reach the server: a second create is refused.
    store.put_opts(&key, "x".into(), create()).await.unwrap();
    let err = store
        .put_opts(&key, "y".into(), create())
        .await
        .unwrap_err();
    assert!(
        matches!(err, object_store::Error::AlreadyExists { .. }),
        "{err}"
    );

    // The server still checks signatures through the proxy (Host is forwarded as signed).
    let wrong = proxy
        .store_builder(&server, server.bucket())
        .with_secret_access_key("not-the-secret")
        .build()
        .unwrap();
    let err = wrong.get(&key).await.unwrap_err().to_string();
    assert!(err.contains("SignatureDoesNotMatch"), "{err}");

    let stats = proxy.stats();
    assert_eq!(stats.requests, 8, "{stats:?}");
    assert_eq!(stats.forwarded, 8, "{stats:?}");
    assert_eq!(stats.faults(), 0);
    assert_eq!(stats.upstream_errors, 0);
    assert_eq!(stats.method("PUT"), 3);
    assert_eq!(stats.method("GET"), 3); // get, list, the wrongly signed get
    assert_eq!(stats.method("HEAD"), 1, "{stats:?}");
    // object_store 0.14 deletes with the bulk API, `POST /bucket?delete`, even one key.
    assert_eq!(stats.method("POST"), 1, "{stats:?}");
    assert_eq!(stats.method("DELETE"), 0, "{stats:?}");
}

#[tokio::test]
async fn server_errors_at_a_rate_of_30_percent_are_retried() {
    let plan = FaultPlan::new(0.3, [Fault::InternalError, Fault::SlowDown]).seed(7);
    let (_server, proxy, store) = setup(plan).await;
    for i in 0..50 {
        let key = Path::from(format!("many/{i}.txt"));
        store
            .put(&key, format!("object {i}").into_bytes().into())
            .await
            .unwrap();
        assert_eq!(read(store.as_ref(), &key).await, format!("object {i}"));
    }
    let stats = proxy.stats();
    assert!(stats.internal_error > 0 && stats.slow_down > 0, "{stats:?}");
    assert_eq!(stats.forwarded, 100, "{stats:?}");
    assert_eq!(stats.requests, 100 + stats.faults(), "{stats:?}");
    assert_eq!(stats.reset + stats.timeout, 0);

    // Healed: nothing more fails.
    proxy.set_rate(0.0);
    let before = stats.faults();
    for i in 0..10 {
        let key = Path::from(format!("healed/{i}.txt"));
        store.put(&key, "ok".into()).await.unwrap();
    }
    assert_eq!(proxy.stats().faults(), before);
}

#[tokio::test]
async fn a_lost_answer_to_a_create_makes_its_retry_meet_its_own_write() {
    let plan = FaultPlan::first(1, Fault::LostResponse500).only_methods([Method::PUT]);
    let (server, proxy, store) = setup(plan).await;
    let direct = server.store(server.bucket());

    // 500 after the write: object_store retries the create, which finds the object.
    let key = Path::from("lost/500.txt");
    let err = store
        .put_opts(&key, "mine".into(), create())
        .await
        .unwrap_err();
    assert!(
        matches!(err, object_store::Error::AlreadyExists { .. }),
        "{err}"
    );
    assert_eq!(&read(direct.as_ref(), &key).await[..], b"mine");
    let stats = proxy.stats();
    assert_eq!(stats.lost_response_500, 1, "{stats:?}");
    assert_eq!((stats.method("PUT"), stats.forwarded), (2, 2), "{stats:?}");

    // Connection dropped after the write: the same (hyper's "connection closed before
    // message completed" is retried even for a create).
    proxy.set_plan(FaultPlan::first(1, Fault::LostResponse).only_methods([Method::PUT]));
    let key = Path::from("lost/dropped.txt");
    let err = store
        .put_opts(&key, "mine".into(), create())
        .await
        .unwrap_err();
    assert!(
        matches!(err, object_store::Error::AlreadyExists { .. }),
        "{err}"
    );
    assert_eq!(&read(direct.as_ref(), &key).await[..], b"mine");
    assert_eq!(proxy.stats().lost_response, 1);

    // Connection reset by peer after the write: not retried for a create, so the caller gets
    // an error although its object was written.
    proxy.set_plan(FaultPlan::first(1, Fault::LostResponseHardReset).only_methods([Method::PUT]));
    let key = Path::from("lost/reset.txt");
    let err = store
        .put_opts(&key, "mine".into(), create())
        .await
        .unwrap_err();
    assert!(
        matches!(err, object_store::Error::Generic { .. }),
        "{err:?}"
    );
    assert!(format!("{err:?}").contains("ConnectionReset"), "{err:?}");
    assert_eq!(&read(direct.as_ref(), &key).await[..], b"mine");
    assert_eq!(proxy.stats().lost_response_hard_reset, 1);

    // An overwrite retries and overwrites its own write: no error (here after two lost
    // answers in a row).
    proxy
        .set_plan(FaultPlan::new(1.0, [Fault::LostResponse, Fault::LostResponse500]).max_faults(2));
    let key = Path::from("lost/overwrite.txt");
    store.put(&key, "mine".into()).await.unwrap();
    assert_eq!(&read(direct.as_ref(), &key).await[..], b"mine");
    assert_eq!(proxy.stats().method("PUT"), 5 + 3);
    // The same after a connection reset by peer (an overwrite is idempotent).
    proxy.set_plan(FaultPlan::first(1, Fault::LostResponseHardReset));
    store.put(&key, "again".into()).await.unwrap();
    assert_eq!(&read(direct.as_ref(), &key).await[..], b"again");
    assert_eq!(proxy.stats().lost_response_hard_reset, 2);

    // Lost-answer kinds only hit writes: a GET gets InternalError instead (and is retried).
    proxy.set_plan(FaultPlan::first(1, Fault::LostResponse));
    assert_eq!(&read(store.as_ref(), &key).await[..], b"again");
    let stats = proxy.stats();
    assert_eq!(stats.internal_error, 1, "{stats:?}");
    assert_eq!(
        stats.lost_response + stats.lost_response_500,
        4,
        "{stats:?}"
    );
}

#[tokio::test]
async fn closes_are_retried_and_resets_and_timeouts_only_for_idempotent_requests() {
    let (server, proxy, store) = setup(FaultPlan::none()).await;
    let direct = server.store(server.bucket());
    let key = Path::from("t/x.txt");
    direct.put(&key, "there".into()).await.unwrap();

    // Reset on a GET: retried.
    proxy.set_plan(FaultPlan::first(1, Fault::Reset).only_methods([Method::GET]));
    assert_eq!(&read(store.as_ref(), &key).await[..], b"there");
    let stats = proxy.stats();
    assert_eq!((stats.reset, stats.method("GET")), (1, 2), "{stats:?}");

    // Reset on a create: retried too (nothing was written), the create succeeds.
    proxy.set_plan(FaultPlan::first(1, Fault::Reset).only_methods([Method::PUT]));
    let created = Path::from("t/reset-create.txt");
    store
        .put_opts(&created, "new".into(), create())
        .await
        .unwrap();
    assert_eq!(&read(direct.as_ref(), &created).await[..], b"new");
    assert_eq!(proxy.stats().reset, 2);

    // Connection reset by peer on a GET: retried.
    proxy.set_plan(FaultPlan::first(1, Fault::HardReset).only_methods([Method::GET]));
    assert_eq!(&read(store.as_ref(), &key).await[..], b"there");
    assert_eq!(proxy.stats().hard_reset, 1);

    // Connection reset by peer on a create: surfaces, nothing is written.
    proxy.set_plan(FaultPlan::first(1, Fault::HardReset).only_methods([Method::PUT]));
    let refused = Path::from("t/hard-reset-create.txt");
    let err = store
        .put_opts(&refused, "new".into(), create())
        .await
        .unwrap_err();
    assert!(
        matches!(err, object_store::Error::Generic { .. }),
        "{err:?}"
    );
    assert!(format!("{err:?}").contains("ConnectionReset"), "{err:?}");
    assert!(matches!(
        direct.head(&refused).await,
        Err(object_store::Error::NotFound { .. })
    ));
    assert_eq!(proxy.stats().hard_reset, 2);

    // Timeout on a GET: retried after the client's 1 s timeout.
    proxy.set_plan(
        FaultPlan::first(1, Fault::Timeout)
            .only_methods([Method::GET])
            .hold(Duration::from_secs(2)),
    );
    let started = Instant::now();
    assert_eq!(&read(store.as_ref(), &key).await[..], b"there");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(proxy.stats().timeout, 1);

    // Timeout on an overwrite PUT (idempotent): retried.
    proxy.set_plan(
        FaultPlan::first(1, Fault::Timeout)
            .only_methods([Method::PUT])
            .hold(Duration::from_secs(2)),
    );
    store.put(&key, "again".into()).await.unwrap();
    assert_eq!(&read(direct.as_ref(), &key).await[..], b"again");
    assert_eq!(proxy.stats().timeout, 2);

    // Timeout on a create (not idempotent): surfaces, nothing is written.
    proxy.set_plan(
        FaultPlan::first(1, Fault::Timeout)
            .only_methods([Method::PUT])
            .hold(Duration::from_secs(2)),
    );
    let timed_out = Path::from("t/timeout-create.txt");
    let err = store
        .put_opts(&timed_out, "new".into(), create())
        .await
        .unwrap_err();
    assert!(
        matches!(err, object_store::Error::Generic { .. }),
        "{err:?}"
    );
    let chain = format!("{err:?}");
    assert!(
        chain.contains("TimedOut") || chain.contains("timed out"),
        "{chain}"
    );
    assert!(matches!(
        direct.head(&timed_out).await,
        Err(object_store::Error::NotFound { .. })
    ));
    let stats = proxy.stats();
    assert_eq!(stats.timeout, 3, "{stats:?}");
}

#[tokio::test]
async fn faults_follow_the_path_and_method_filters_and_can_be_switched_off() {
    let plan = FaultPlan::new(1.0, [Fault::InternalError])
        .path_contains("/fail/")
        .only_methods([Method::PUT]);
    let (_server, proxy, store) = setup(plan).await;
    store.put(&Path::from("ok/a"), "a".into()).await.unwrap();
    let fail = Path::from("fail/a");
    assert!(
        store.get(&fail).await.is_err(),
        "GET is not faulted: a plain 404"
    );
    assert_eq!(proxy.stats().faults(), 0);

    // Every try fails: the error surfaces once the retries are spent (1 + 10 tries).
    let err = store.put(&fail, "a".into()).await.unwrap_err().to_string();
    assert!(err.contains("InternalError"), "{err}");
    assert_eq!(proxy.stats().internal_error, 11);

    proxy.set_enabled(false);
    store.put(&fail, "a".into()).await.unwrap();
    assert!(!proxy.plan().enabled);
    assert_eq!(proxy.stats().internal_error, 11);
}

/// Send one bare request to the proxy with hyper, on a connection of its own.
async fn raw(endpoint: &str) -> Result<(StatusCode, Bytes), hyper::Error> {
    let addr = endpoint.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::get("/test-bucket/k")
        .header("host", addr)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let (head, body) = sender.send_request(request).await?.into_parts();
    Ok((head.status, body.collect().await?.to_bytes()))
}

#[tokio::test]
async fn the_client_sees_a_transport_error_for_resets_and_timeout_and_xml_for_5xx() {
    let server = S3Server::start().await;
    let proxy = FaultProxy::start(server.endpoint(), FaultPlan::none()).await;

    // Forwarded verbatim: the unsigned request is refused by the server itself.
    let (status, body) = raw(proxy.endpoint()).await.unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{body:?}");

    proxy.set_plan(FaultPlan::first(1, Fault::InternalError));
    let (status, body) = raw(proxy.endpoint()).await.unwrap();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("<Code>InternalError</Code>"), "{body}");

    proxy.set_plan(FaultPlan::first(1, Fault::SlowDown));
    let (status, body) = raw(proxy.endpoint()).await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&body).contains("<Code>SlowDown</Code>"));

    proxy.set_plan(FaultPlan::first(1, Fault::Reset));
    let err = raw(proxy.endpoint()).await.unwrap_err();
    assert!(err.is_incomplete_message(), "{err:?}");

    proxy.set_plan(FaultPlan::first(1, Fault::HardReset));
    let err = raw(proxy.endpoint()).await.unwrap_err();
    let io = std::error::Error::source(&err)
        .and_then(|e| e.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    assert_eq!(io, Some(std::io::ErrorKind::ConnectionReset), "{err:?}");

    proxy.set_plan(FaultPlan::first(1, Fault::Timeout).hold(Duration::from_millis(300)));
    let started = Instant::now();
    let err = raw(proxy.endpoint()).await.unwrap_err();
    assert!(err.is_incomplete_message(), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(290));

    let stats = proxy.stats();
    assert_eq!((stats.requests, stats.forwarded, stats.faults()), (6, 1, 5));
}

#[tokio::test]
async fn a_dropped_proxy_stops_listening() {
    let server = S3Server::start().await;
    let proxy = FaultProxy::start(server.endpoint(), FaultPlan::none()).await;
    let addr = proxy.endpoint().trim_start_matches("http://").to_owned();
    drop(proxy);
    let deadline = Instant::now() + Duration::from_secs(2);
    while tokio::net::TcpStream::connect(&addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still listening on {addr}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// With retries off, how each fault reaches the caller: the kind of error object_store gives
/// it decides whether it is retried (`Request` always, `Timeout` and `Interrupted` only for
/// idempotent requests, 5xx always).
#[tokio::test]
async fn without_retries_each_fault_surfaces_as_the_kind_that_decides_its_retry() {
    let (server, proxy, _) = setup(FaultPlan::none()).await;
    let store = proxy
        .store_builder(&server, server.bucket())
        .with_retry(object_store::RetryConfig {
            max_retries: 0,
            ..Default::default()
        })
        .build()
        .unwrap();
    let key = Path::from("kinds/x");
    let expected = [
        (Fault::InternalError, "status: 500"),
        (Fault::SlowDown, "status: 503"),
        (Fault::Reset, "kind: Request"),
        (Fault::HardReset, "kind: Interrupted"),
        (Fault::Timeout, "kind: Timeout"),
        (Fault::LostResponse, "kind: Request"),
        (Fault::LostResponseHardReset, "kind: Interrupted"),
        (Fault::LostResponse500, "status: 500"),
    ];
    assert_eq!(expected.len(), Fault::ALL.len());
    for (kind, shows) in expected {
        proxy.set_plan(FaultPlan::first(1, kind).hold(Duration::from_millis(1500)));
        let err = store.put(&key, "x".into()).await.unwrap_err();
        assert!(
            matches!(err, object_store::Error::Generic { .. }),
            "{kind}: {err:?}"
        );
        let debug = format!("{err:?}");
        assert!(debug.contains(shows), "{kind}: {debug}");
        assert_eq!(proxy.stats().count(kind), 1, "{kind}");
    }
    let stats = proxy.stats();
    assert_eq!(
        stats.forwarded, 3,
        "the lost-response kinds forward: {stats:?}"
    );
}
