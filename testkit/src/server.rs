//! s3s-fs served in process on 127.0.0.1: real HTTP, real SigV4 checks, files on disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The keys the server accepts, and those it answers `ExpiredToken` for.
#[derive(Debug, Default)]
struct Keys {
    secrets: HashMap<String, String>,
    expired: Vec<String>,
    /// Keys whose next requests (this many) are answered `ExpiredToken`.
    expire_next: HashMap<String, usize>,
}

/// s3s authentication over [`Keys`]: an unknown key is `InvalidAccessKeyId`, an expired one
/// `ExpiredToken` (HTTP 400, as S3 answers for expired session credentials).
#[derive(Debug, Clone)]
struct TestAuth(Arc<Mutex<Keys>>);

#[async_trait::async_trait]
impl s3s::auth::S3Auth for TestAuth {
    async fn get_secret_key(&self, access_key: &str) -> s3s::S3Result<s3s::auth::SecretKey> {
        let mut keys = self.0.lock().expect("keys lock");
        let once = keys.expire_next.get_mut(access_key).filter(|n| **n > 0);
        if let Some(n) = once {
            *n -= 1;
            return Err(s3s::s3_error!(
                ExpiredToken,
                "The provided token has expired."
            ));
        }
        if keys.expired.iter().any(|k| k == access_key) {
            return Err(s3s::s3_error!(
                ExpiredToken,
                "The provided token has expired."
            ));
        }
        match keys.secrets.get(access_key) {
            Some(secret) => Ok(s3s::auth::SecretKey::from(secret.clone())),
            None => Err(s3s::s3_error!(InvalidAccessKeyId)),
        }
    }
}

/// Handles each request in a task of its own, so a request whose body has arrived runs to
/// its end when the client goes away, as it does on S3. Served directly, hyper drops the
/// handler with the connection: s3s-fs then can stop between moving an object's bytes into
/// place and writing its user metadata, leaving an object that S3 never shows (its bytes
/// without the metadata it was put with). A client killed right after sending a PUT would
/// find such objects; on S3 a put is applied whole or not at all.
#[derive(Clone)]
struct Detached(s3s::service::S3Service);

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Detached {
    type Response = s3s::HttpResponse;
    type Error = s3s::HttpError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let handling = hyper::service::Service::call(&self.0, req);
        let task = tokio::spawn(handling);
        Box::pin(async move {
            match task.await {
                Ok(answer) => answer,
                Err(e) => Err(s3s::HttpError::new(Box::new(e))),
            }
        })
    }
}

/// An S3 server on loopback, backed by a temporary folder. Stops when dropped.
#[derive(Debug)]
pub struct S3Server {
    endpoint: String,
    access_key: String,
    secret_key: String,
    bucket: String,
    root: tempfile::TempDir,
    keys: Arc<Mutex<Keys>>,
    task: JoinHandle<()>,
}

impl S3Server {
    /// Start a server with one bucket, `test-bucket`, and random keys.
    pub async fn start() -> Self {
        let root = tempfile::tempdir().expect("create a temporary folder for the S3 server");
        let bucket = "test-bucket".to_owned();
        std::fs::create_dir_all(root.path().join(&bucket)).expect("create the bucket folder");
        let access_key = format!("AKIA{:016}", std::process::id());
        let unique = root
            .path()
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "")
            })
            .unwrap_or_default();
        let secret_key = format!("secret-{}-{unique}", std::process::id());

        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs over the temporary folder");
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        let keys = Arc::new(Mutex::new(Keys::default()));
        keys.lock()
            .expect("keys lock")
            .secrets
            .insert(access_key.clone(), secret_key.clone());
        builder.set_auth(TestAuth(Arc::clone(&keys)));
        let service = builder.build();

        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                // Without it small answers wait for the peer's delayed ACK (~40 ms each).
                let _ = socket.set_nodelay(true);
                let conn = http
                    .serve_connection(TokioIo::new(socket), Detached(service.clone()))
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        Self {
            endpoint: format!("http://{addr}"),
            access_key,
            secret_key,
            bucket,
            root,
            keys,
            task,
        }
    }

    /// Accept another key pair too (temporary credentials a test hands out).
    pub fn add_credentials(&self, access_key: &str, secret_key: &str) {
        self.keys
            .lock()
            .expect("keys lock")
            .secrets
            .insert(access_key.to_owned(), secret_key.to_owned());
    }

    /// Answer `ExpiredToken` (HTTP 400) to the next `requests` requests signed with
    /// `access_key`, then accept it again. s3s-fs ties a multipart upload to the access key
    /// that started it (S3 does not), so a test that renews credentials in the middle of an
    /// upload keeps the key id and uses this.
    pub fn expire_next_requests(&self, access_key: &str, requests: usize) {
        self.keys
            .lock()
            .expect("keys lock")
            .expire_next
            .insert(access_key.to_owned(), requests);
    }

    /// From now on, answer `ExpiredToken` (HTTP 400) to requests signed with `access_key`,
    /// as S3 does once temporary credentials expire.
    pub fn expire_credentials(&self, access_key: &str) {
        self.keys
            .lock()
            .expect("keys lock")
            .expired
            .push(access_key.to_owned());
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The access key id the server accepts.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret key the server accepts.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The bucket that exists from the start.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The folder that holds `bucket`'s objects as plain files.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.path().join(bucket)
    }

    /// The server's data folder.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Create another bucket.
    pub fn create_bucket(&self, bucket: &str) {
        std::fs::create_dir_all(self.bucket_dir(bucket)).expect("create bucket folder");
    }

    /// An object store on `bucket`, built directly with object_store (independent of
    /// s3conn-auth), for putting fixtures in place and checking results.
    pub fn store(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(&self.endpoint)
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_bucket_name(bucket)
                .with_access_key_id(&self.access_key)
                .with_secret_access_key(&self.secret_key)
                .build()
                .expect("object store on the loopback server"),
        )
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}
