//! A fault-injecting HTTP/1.1 proxy to put in front of [`S3Server`](crate::S3Server) (or any
//! plain-HTTP S3 endpoint): it forwards requests verbatim and, by a seeded draw, answers some
//! of them with a 500 or a 503, drops the connection (cleanly or with an RST), holds it until
//! the client times out, or loses the answer to a write that really happened.
//!
//! [`FaultProxy`]'s documentation says what object_store's `AmazonS3` does with each fault.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use object_store::aws::AmazonS3Builder;
use object_store::{BackoffConfig, ClientOptions, RetryConfig};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::S3Server;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A kind of fault the proxy injects into one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// Answer HTTP 500 with an S3 `InternalError` body; the request is not forwarded.
    InternalError,
    /// Answer HTTP 503 with an S3 `SlowDown` body; the request is not forwarded.
    SlowDown,
    /// Close the connection without any response (a clean close, FIN); the request is not
    /// forwarded. The client sees a transport error ("connection closed before message
    /// completed"), not a status.
    Reset,
    /// Abort the connection with a TCP RST (`SO_LINGER` 0) without any response; the request
    /// is not forwarded. The client sees "connection reset by peer", which object_store
    /// treats differently from [`Fault::Reset`] (see the module documentation).
    HardReset,
    /// Do not forward; hold the connection open without answering for [`FaultPlan::hold`],
    /// then close it. The client's own request timeout fires first.
    Timeout,
    /// Forward the request (the write really happens), then close the connection instead of
    /// returning the upstream's answer. Only for PUT, POST and DELETE; other methods get
    /// [`Fault::InternalError`] instead.
    LostResponse,
    /// Forward the request (the write really happens), then abort the connection with a TCP
    /// RST instead of returning the upstream's answer. Only for PUT, POST and DELETE; other
    /// methods get [`Fault::InternalError`] instead.
    LostResponseHardReset,
    /// Forward the request (the write really happens), then answer 500 `InternalError` instead
    /// of the upstream's answer: the client retries and meets its own write. Only for PUT,
    /// POST and DELETE; other methods get [`Fault::InternalError`] instead.
    LostResponse500,
}

impl Fault {
    /// Every kind.
    pub const ALL: [Fault; 8] = [
        Fault::InternalError,
        Fault::SlowDown,
        Fault::Reset,
        Fault::HardReset,
        Fault::Timeout,
        Fault::LostResponse,
        Fault::LostResponseHardReset,
        Fault::LostResponse500,
    ];

    /// Whether this kind forwards the request to the upstream before failing.
    pub fn forwards(self) -> bool {
        matches!(
            self,
            Fault::LostResponse | Fault::LostResponseHardReset | Fault::LostResponse500
        )
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Where, how often and which faults the proxy injects.
///
/// Each request that passes the filters ([`only_methods`](Self::only_methods),
/// [`path_contains`](Self::path_contains)) while the plan is [`enabled`](Self::enabled) and
/// [`max_faults`](Self::max_faults) is not reached fails with probability
/// [`rate`](Self::rate), with a kind drawn uniformly from [`kinds`](Self::kinds). The draws
/// come from one `StdRng` seeded with [`seed`](Self::seed), in the order requests arrive (so
/// sequential clients see the same faults on every run).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    /// Probability, from 0 to 1, that an eligible request fails.
    pub rate: f64,
    /// The kinds to draw from (none: no faults).
    pub kinds: Vec<Fault>,
    /// Seed of the random draws.
    pub seed: u64,
    /// How long [`Fault::Timeout`] holds a connection before closing it (default 3 s).
    pub hold: Duration,
    /// Only requests with one of these methods may fail (`None`: every method).
    pub only_methods: Option<Vec<Method>>,
    /// Only requests whose path and query contain this may fail (`None`: every path).
    pub path_contains: Option<String>,
    /// Stop injecting after this many faults (`None`: no limit).
    pub max_faults: Option<u64>,
    /// Whether faults are injected at all (default `true`).
    pub enabled: bool,
}

impl Default for FaultPlan {
    fn default() -> Self {
        Self {
            rate: 0.0,
            kinds: Vec::new(),
            seed: 0,
            hold: Duration::from_secs(3),
            only_methods: None,
            path_contains: None,
            max_faults: None,
            enabled: true,
        }
    }
}

impl FaultPlan {
    /// No faults: the proxy only forwards (and counts).
    pub fn none() -> Self {
        Self::default()
    }

    /// Fail eligible requests with probability `rate`, with a kind drawn from `kinds`.
    pub fn new(rate: f64, kinds: impl IntoIterator<Item = Fault>) -> Self {
        Self {
            rate,
            kinds: kinds.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Fail the first `n` eligible requests with `kind` (rate 1, then no more faults).
    pub fn first(n: u64, kind: Fault) -> Self {
        Self::new(1.0, [kind]).max_faults(n)
    }

    /// Seed the random draws.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// How long [`Fault::Timeout`] holds a connection.
    pub fn hold(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self
    }

    /// Only fail requests with one of these methods.
    pub fn only_methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.only_methods = Some(methods.into_iter().collect());
        self
    }

    /// Only fail requests whose path and query (`/bucket/key?uploads`) contain `part`.
    pub fn path_contains(mut self, part: impl Into<String>) -> Self {
        self.path_contains = Some(part.into());
        self
    }

    /// Stop injecting after `n` faults.
    pub fn max_faults(mut self, n: u64) -> Self {
        self.max_faults = Some(n);
        self
    }

    /// Inject faults or not.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }
}

/// What the proxy has seen: a snapshot taken by [`FaultProxy::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Requests received (whole request read).
    pub requests: u64,
    /// Requests forwarded to the upstream, including those of the lost-response faults
    /// ([`Fault::forwards`]).
    pub forwarded: u64,
    /// Forwarded requests the upstream did not answer (the proxy answered 502, or the fault
    /// went ahead).
    pub upstream_errors: u64,
    /// [`Fault::InternalError`] injected (including lost-response faults that fell back to it).
    pub internal_error: u64,
    /// [`Fault::SlowDown`] injected.
    pub slow_down: u64,
    /// [`Fault::Reset`] injected.
    pub reset: u64,
    /// [`Fault::HardReset`] injected.
    pub hard_reset: u64,
    /// [`Fault::Timeout`] injected.
    pub timeout: u64,
    /// [`Fault::LostResponse`] injected.
    pub lost_response: u64,
    /// [`Fault::LostResponseHardReset`] injected.
    pub lost_response_hard_reset: u64,
    /// [`Fault::LostResponse500`] injected.
    pub lost_response_500: u64,
    /// Requests received, by method (`"GET"`, `"PUT"`, ...).
    pub by_method: BTreeMap<String, u64>,
}

impl ProxyStats {
    /// How many faults of `kind` were injected.
    pub fn count(&self, kind: Fault) -> u64 {
        match kind {
            Fault::InternalError => self.internal_error,
            Fault::SlowDown => self.slow_down,
            Fault::Reset => self.reset,
            Fault::HardReset => self.hard_reset,
            Fault::Timeout => self.timeout,
            Fault::LostResponse => self.lost_response,
            Fault::LostResponseHardReset => self.lost_response_hard_reset,
            Fault::LostResponse500 => self.lost_response_500,
        }
    }

    /// How many faults were injected, of every kind.
    pub fn faults(&self) -> u64 {
        Fault::ALL.iter().map(|k| self.count(*k)).sum()
    }

    /// How many requests with `method` were received.
    pub fn method(&self, method: &str) -> u64 {
        self.by_method.get(method).copied().unwrap_or(0)
    }

    fn add(&mut self, kind: Fault) {
        let n = match kind {
            Fault::InternalError => &mut self.internal_error,
            Fault::SlowDown => &mut self.slow_down,
            Fault::Reset => &mut self.reset,
            Fault::HardReset => &mut self.hard_reset,
            Fault::Timeout => &mut self.timeout,
            Fault::LostResponse => &mut self.lost_response,
            Fault::LostResponseHardReset => &mut self.lost_response_hard_reset,
            Fault::LostResponse500 => &mut self.lost_response_500,
        };
        *n += 1;
    }
}

#[derive(Debug)]
struct Draws {
    plan: FaultPlan,
    rng: StdRng,
    injected: u64,
}

#[derive(Debug)]
struct Shared {
    /// `host:port` of the upstream.
    upstream: String,
    draws: Mutex<Draws>,
    stats: Mutex<ProxyStats>,
}

/// The error a connection ends with when a fault drops it.
#[derive(Debug)]
struct Dropped(Fault);

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fault injected: {} (connection dropped)", self.0)
    }
}

impl std::error::Error for Dropped {}

impl Shared {
    /// Count the request and draw its fault, if any.
    fn decide(&self, method: &Method, path_and_query: &str) -> Option<(Fault, Duration)> {
        let fault = {
            let mut draws = self.draws.lock().expect("proxy draws lock");
            let Draws {
                plan,
                rng,
                injected,
            } = &mut *draws;
            let eligible = plan.enabled
                && plan.rate > 0.0
                && plan.max_faults.is_none_or(|max| *injected < max)
                && plan
                    .only_methods
                    .as_ref()
                    .is_none_or(|methods| methods.contains(method))
                && plan
                    .path_contains
                    .as_ref()
                    .is_none_or(|part| path_and_query.contains(part.as_str()));
            let drawn = if eligible && rng.random_bool(plan.rate.clamp(0.0, 1.0)) {
                plan.kinds.choose(rng).copied()
            } else {
                None
            };
            drawn.map(|kind| {
                *injected += 1;
                let mutating = matches!(*method, Method::PUT | Method::POST | Method::DELETE);
                let kind = if kind.forwards() && !mutating {
                    Fault::InternalError
                } else {
                    kind
                };
                (kind, plan.hold)
            })
        };
        let mut stats = self.stats.lock().expect("proxy stats lock");
        stats.requests += 1;
        *stats
            .by_method
            .entry(method.as_str().to_owned())
            .or_default() += 1;
        if let Some((kind, _)) = fault {
            stats.add(kind);
        }
        fault
    }

    /// Send the request to the upstream on a new connection and read the whole answer.
    async fn forward(&self, parts: &Parts, body: Bytes) -> Result<Response<Full<Bytes>>, BoxError> {
        self.stats.lock().expect("proxy stats lock").forwarded += 1;
        let stream = TcpStream::connect(&self.upstream).await?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let conn = tokio::spawn(conn);
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        *request.headers_mut() = parts.headers.clone();
        let answer = async {
            let (head, body) = sender.send_request(request).await?.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, BoxError>(Response::from_parts(head, Full::new(body)))
        }
        .await;
        drop(sender);
        if answer.is_err() {
            conn.abort();
        }
        answer
    }

    /// Forward a request whose answer a fault then loses.
    async fn forward_lost(&self, parts: &Parts, body: Bytes) {
        if self.forward(parts, body).await.is_err() {
            self.stats.lock().expect("proxy stats lock").upstream_errors += 1;
        }
    }

    /// Answer one request of a connection; setting `rst` makes the connection end with an
    /// RST when it is dropped.
    async fn handle(
        self: Arc<Self>,
        rst: Arc<AtomicBool>,
        request: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, BoxError> {
        let (parts, body) = request.into_parts();
        // Read the whole request first, so closing the connection sends a FIN (a close with
        // unread data would send an RST), and so lost-response faults forward all of it.
        let body = body.collect().await?.to_bytes();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        match self.decide(&parts.method, path) {
            None => match self.forward(&parts, body).await {
                Ok(answer) => Ok(answer),
                Err(e) => {
                    self.stats.lock().expect("proxy stats lock").upstream_errors += 1;
                    Ok(text(
                        StatusCode::BAD_GATEWAY,
                        format!("fault proxy: upstream failed: {e}"),
                    ))
                }
            },
            Some((Fault::InternalError, _)) => Ok(s3_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "We encountered an internal error. Please try again. (fault proxy)",
            )),
            Some((Fault::SlowDown, _)) => Ok(s3_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "SlowDown",
                "Please reduce your request rate. (fault proxy)",
            )),
            Some((Fault::Reset, _)) => Err(Dropped(Fault::Reset).into()),
            Some((Fault::HardReset, _)) => {
                rst.store(true, Ordering::SeqCst);
                Err(Dropped(Fault::HardReset).into())
            }
            Some((Fault::Timeout, hold)) => {
                tokio::time::sleep(hold).await;
                Err(Dropped(Fault::Timeout).into())
            }
            Some((Fault::LostResponse, _)) => {
                self.forward_lost(&parts, body).await;
                Err(Dropped(Fault::LostResponse).into())
            }
            Some((Fault::LostResponseHardReset, _)) => {
                self.forward_lost(&parts, body).await;
                rst.store(true, Ordering::SeqCst);
                Err(Dropped(Fault::LostResponseHardReset).into())
            }
            Some((Fault::LostResponse500, _)) => {
                self.forward_lost(&parts, body).await;
                Ok(s3_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "We encountered an internal error. Please try again. (fault proxy, after the write)",
                ))
            }
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    response
}

fn s3_error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
    );
    let mut response = text(status, body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/xml"),
    );
    response
}

/// An HTTP/1.1 proxy on 127.0.0.1 that forwards every request verbatim (method, path and
/// query, every header including `Host`, so SigV4 signatures still match) to an upstream and
/// injects the faults of a [`FaultPlan`]. Each forwarded request uses its own upstream
/// connection; TCP_NODELAY is set on both sides. Stops when dropped (its open connections
/// too).
///
/// What object_store 0.14's `AmazonS3` client does with each fault, as observed in
/// `testkit/tests/proxy.rs` (1 s request timeout, 10 retries). object_store retries a 5xx
/// always; a transport error by its kind: `Request` ("request not sent": hyper's
/// `IncompleteMessage`, i.e. the connection closed before an answer) always, `Timeout` and
/// `Interrupted` (connection reset by peer) only for idempotent requests. GET, HEAD and
/// overwriting PUTs are idempotent; a `PutMode::Create` (or `Update`) PUT is not.
///
/// The lost-response kinds only hit PUT, POST and DELETE; a GET or HEAD drawn for one gets
/// [`Fault::InternalError`] (and is retried).
///
/// | fault | GET / HEAD / overwrite PUT | `PutMode::Create` PUT |
/// |---|---|---|
/// | [`Fault::InternalError`], [`Fault::SlowDown`] | retried | retried |
/// | [`Fault::Reset`] (kind `Request`) | retried | retried, then created |
/// | [`Fault::HardReset`] (kind `Interrupted`) | retried | surfaces: `Error::Generic`, "Connection reset by peer"; nothing written |
/// | [`Fault::Timeout`] (kind `Timeout`) | retried after the client timeout | surfaces after the timeout: `Error::Generic`, `TimedOut`; nothing written |
/// | [`Fault::LostResponse`] (kind `Request`) | retried (rewrites its own write), `Ok` | retried, meets its own write: `Error::AlreadyExists` although the object is the caller's |
/// | [`Fault::LostResponseHardReset`] (kind `Interrupted`) | retried (rewrites its own write), `Ok` | surfaces: `Error::Generic`, "Connection reset by peer", although the object was written |
/// | [`Fault::LostResponse500`] | retried (rewrites its own write), `Ok` | retried, meets its own write: `Error::AlreadyExists` although the object is the caller's |
///
/// object_store 0.14 deletes even one key with the bulk API (`POST /bucket?delete`), so the
/// lost-response faults hit deletes through their POST.
#[derive(Debug)]
pub struct FaultProxy {
    endpoint: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Start a proxy in front of `upstream` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str, plan: FaultPlan) -> Self {
        let uri: Uri = upstream
            .parse()
            .unwrap_or_else(|e| panic!("upstream {upstream:?} is not a URL: {e}"));
        assert!(
            uri.scheme_str() == Some("http"),
            "the fault proxy forwards plain HTTP only, not {upstream:?}"
        );
        let authority = uri
            .authority()
            .unwrap_or_else(|| panic!("upstream {upstream:?} has no host:port"));
        let upstream = match authority.port_u16() {
            Some(_) => authority.to_string(),
            None => format!("{}:80", authority.host()),
        };
        let shared = Arc::new(Shared {
            upstream,
            draws: Mutex::new(Draws {
                rng: StdRng::seed_from_u64(plan.seed),
                plan,
                injected: 0,
            }),
            stats: Mutex::new(ProxyStats::default()),
        });
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind 127.0.0.1:0 for the fault proxy");
        let addr = listener.local_addr().expect("local address");
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Self {
            endpoint: format!("http://{addr}"),
            shared,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`: where clients send their requests.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// What the proxy has seen so far.
    pub fn stats(&self) -> ProxyStats {
        self.shared.stats.lock().expect("proxy stats lock").clone()
    }

    /// Change the fault rate (0 heals the proxy).
    pub fn set_rate(&self, rate: f64) {
        self.shared
            .draws
            .lock()
            .expect("proxy draws lock")
            .plan
            .rate = rate;
    }

    /// Turn fault injection on or off.
    pub fn set_enabled(&self, enabled: bool) {
        self.shared
            .draws
            .lock()
            .expect("proxy draws lock")
            .plan
            .enabled = enabled;
    }

    /// Replace the plan: reseeds the draws and restarts the [`FaultPlan::max_faults`] count
    /// (the stats are kept).
    pub fn set_plan(&self, plan: FaultPlan) {
        let mut draws = self.shared.draws.lock().expect("proxy draws lock");
        draws.rng = StdRng::seed_from_u64(plan.seed);
        draws.plan = plan;
        draws.injected = 0;
    }

    /// The plan in force.
    pub fn plan(&self) -> FaultPlan {
        self.shared
            .draws
            .lock()
            .expect("proxy draws lock")
            .plan
            .clone()
    }

    /// An `AmazonS3` builder for `bucket` on `server` that goes through this proxy, with a
    /// 1 s request timeout and retries with short backoff (10 ms up to 100 ms, 10 retries).
    /// Plain HTTP is allowed in its client options: a later `with_client_options` replaces
    /// them, so allow HTTP again there.
    pub fn store_builder(&self, server: &S3Server, bucket: &str) -> AmazonS3Builder {
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id(server.access_key())
            .with_secret_access_key(server.secret_key())
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(true)
                    .with_timeout(Duration::from_secs(1)),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(10),
                    max_backoff: Duration::from_millis(100),
                    base: 2.0,
                },
                max_retries: 10,
                retry_timeout: Duration::from_secs(30),
            })
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accept connections until aborted; aborting drops the `JoinSet`, which ends every
/// connection (held ones included).
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let _ = socket.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let rst = Arc::new(AtomicBool::new(false));
        let socket = Accepted {
            stream: socket,
            rst: Arc::clone(&rst),
        };
        let service =
            service_fn(move |request| Arc::clone(&shared).handle(Arc::clone(&rst), request));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .serve_connection(TokioIo::new(socket), service);
        connections.spawn(async move {
            let _ = conn.await;
        });
    }
}

/// An accepted socket that, once `rst` is set, is closed with an RST (zero linger) when
/// dropped instead of the usual FIN.
#[derive(Debug)]
struct Accepted {
    stream: TcpStream,
    rst: Arc<AtomicBool>,
}

impl Drop for Accepted {
    fn drop(&mut self) {
        if self.rst.load(Ordering::SeqCst) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for Accepted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
