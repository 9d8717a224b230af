//! The HTTP layer under an S3 connection: object_store's own client (reqwest), with two
//! things added on the way out.
//!
//! - **Completions never replace an object.** A `CompleteMultipartUpload` request
//!   (`POST …?uploadId=…`) that carries no precondition gets `If-None-Match: *`, the header
//!   S3 has honoured on completions since 2024 and object_store already sends for its own
//!   copy-if-not-exists. object_store's `complete_multipart` is always unconditional; with
//!   this layer a multipart upload is a conditional create, like `PutMode::Create` for a
//!   single PUT: when the key is taken the store answers `412 Precondition Failed` and
//!   object_store reports `Error::Precondition`. (The header is added after signing, as
//!   object_store itself does: SigV4 does not require it to be signed.)
//! - **Counts.** Every request, the bytes of every request body, and every answer that
//!   object_store retries (a 5xx, 429 or 408 status, or a transport error) are counted in
//!   [`RequestStats`], which the connection exposes ([`Connection::request_stats`]).
//!
//! [`Connection::request_stats`]: crate::Connection::request_stats

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};

/// Counters of the HTTP requests a connection made. Shared by every clone of the
/// connection; read them with [`RequestStats::snapshot`].
#[derive(Debug, Default)]
pub struct RequestStats {
    requests: AtomicU64,
    body_bytes: AtomicU64,
    failed: AtomicU64,
}

/// The counts of [`RequestStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestCounts {
    /// Requests sent, retries included.
    pub requests: u64,
    /// Bytes of request bodies sent.
    pub body_bytes: u64,
    /// Requests that failed in a way the client retries: a 5xx other than 501, 429 (SlowDown) or 408
    /// status, or a transport error (reset, timeout). Each was followed by a retry unless
    /// the retry budget was spent.
    pub failed: u64,
}

impl RequestCounts {
    /// The counts between `earlier` and `self`.
    pub fn since(&self, earlier: &RequestCounts) -> RequestCounts {
        RequestCounts {
            requests: self.requests.saturating_sub(earlier.requests),
            body_bytes: self.body_bytes.saturating_sub(earlier.body_bytes),
            failed: self.failed.saturating_sub(earlier.failed),
        }
    }
}

impl RequestStats {
    /// The counts now.
    pub fn snapshot(&self) -> RequestCounts {
        RequestCounts {
            requests: self.requests.load(Ordering::Relaxed),
            body_bytes: self.body_bytes.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Count one request of `bytes` body bytes.
    pub(crate) fn request(&self, bytes: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.body_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Count one failure that the client retries.
    pub(crate) fn failure(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether a status is one a client retries (object_store also retries 501; s3conn does not).
pub(crate) fn is_retried_status(status: http::StatusCode) -> bool {
    // 501 says the server lacks the feature (s3s-fs answers ListMultipartUploads so):
    // asking again cannot help, and it is not counted as a retried failure.
    (status.is_server_error() && status != http::StatusCode::NOT_IMPLEMENTED)
        || status == http::StatusCode::TOO_MANY_REQUESTS
        || status == http::StatusCode::REQUEST_TIMEOUT
}

/// The connector handed to `AmazonS3Builder::with_http_connector`.
#[derive(Debug)]
pub(crate) struct S3Connector {
    pub(crate) stats: Arc<RequestStats>,
}

impl HttpConnector for S3Connector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(S3Http {
            inner,
            stats: Arc::clone(&self.stats),
        }))
    }
}

#[derive(Debug)]
struct S3Http {
    inner: HttpClient,
    stats: Arc<RequestStats>,
}

/// Whether `request` completes a multipart upload: `POST` with an `uploadId` in the query.
fn is_completion(request: &HttpRequest) -> bool {
    request.method() == http::Method::POST
        && request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|pair| pair.starts_with("uploadId=")))
}

#[async_trait]
impl HttpService for S3Http {
    async fn call(&self, mut request: HttpRequest) -> Result<HttpResponse, HttpError> {
        if is_completion(&request) {
            let headers = request.headers_mut();
            if !headers.contains_key(http::header::IF_NONE_MATCH)
                && !headers.contains_key(http::header::IF_MATCH)
            {
                headers.insert(
                    http::header::IF_NONE_MATCH,
                    http::HeaderValue::from_static("*"),
                );
            }
        }
        self.stats.request(request.body().content_length());
        match self.inner.execute(request).await {
            Ok(response) => {
                if is_retried_status(response.status()) {
                    self.stats.failure();
                }
                Ok(response)
            }
            Err(e) => {
                self.stats.failure();
                Err(e)
            }
        }
    }
}

/// A client for requests object_store does not make itself (listing open uploads), with
/// the same counting.
pub(crate) fn client(
    options: &ClientOptions,
    stats: &Arc<RequestStats>,
) -> object_store::Result<HttpClient> {
    S3Connector {
        stats: Arc::clone(stats),
    }
    .connect(options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::client::HttpRequestBody;

    fn request(method: http::Method, uri: &str) -> HttpRequest {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .body(HttpRequestBody::from(Vec::new()))
            .unwrap()
    }

    #[test]
    fn only_completions_are_recognised() {
        let complete = request(http::Method::POST, "http://h/b/k?uploadId=abc");
        assert!(is_completion(&complete));
        for (method, uri) in [
            (http::Method::POST, "http://h/b/k?uploads"),
            (http::Method::PUT, "http://h/b/k?partNumber=1&uploadId=abc"),
            (http::Method::DELETE, "http://h/b/k?uploadId=abc"),
            (http::Method::POST, "http://h/b?delete"),
            (http::Method::GET, "http://h/b?uploads&prefix=k"),
        ] {
            assert!(
                !is_completion(&request(method.clone(), uri)),
                "{method} {uri}"
            );
        }
    }

    #[test]
    fn counts_subtract() {
        let stats = RequestStats::default();
        stats.request(10);
        let before = stats.snapshot();
        stats.request(5);
        stats.failure();
        let delta = stats.snapshot().since(&before);
        assert_eq!(
            delta,
            RequestCounts {
                requests: 1,
                body_bytes: 5,
                failed: 1
            }
        );
    }
}
