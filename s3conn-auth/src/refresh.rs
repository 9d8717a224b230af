//! [`RefreshOnExpiry`]: an object store wrapper that renews temporary credentials when S3
//! answers that they expired, and tries the call once more.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartId, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
    UploadPart,
};

use crate::check::error_code;
use crate::credentials::RefreshingProvider;

/// The S3 error codes that mean "these temporary credentials no longer work": renew them
/// and try again.
pub const EXPIRED_TOKEN_CODES: &[&str] = &[
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidToken",
    "TokenRefreshRequired",
];

/// Whether `error` is S3 saying the session token expired or is no longer valid.
pub fn is_expired_token(error: &(dyn std::error::Error + 'static)) -> bool {
    error_code(error).is_some_and(|code| EXPIRED_TOKEN_CODES.contains(&code.as_str()))
}

/// An object store whose temporary credentials come from a [`RefreshingProvider`]: when a
/// call fails because the credentials expired (`ExpiredToken`, `InvalidToken`…), the
/// provider is told to fetch new ones and the call is made once more, so a sync in progress
/// goes on.
///
/// - single calls (put, get, head, copy, rename, delimiter listings) are retried once;
/// - a listing that fails part-way resumes after the last object it returned;
/// - a bulk delete retries the paths that failed;
/// - a multipart upload is driven through the store's [`MultipartStore`] calls (the same
///   requests `put_multipart` makes on S3), so that each part, the completion and the abort
///   can be sent again with their own part numbers.
///
/// Credentials are also renewed before they expire (see [`RefreshingProvider`]): this is
/// the safety net for clock skew and revoked sessions.
///
/// ```
/// # use std::sync::Arc;
/// # use object_store::memory::InMemory;
/// # use object_store::StaticCredentialProvider;
/// # use object_store::aws::AwsCredential;
/// use s3conn_auth::RefreshOnExpiry;
/// use s3conn_auth::credentials::{AssumeRole, RefreshingProvider};
/// # let base = Arc::new(StaticCredentialProvider::new(AwsCredential { key_id: "AKIA".into(), secret_key: "s".into(), token: None }));
/// let provider = Arc::new(RefreshingProvider::new(Arc::new(AssumeRole::new(base, "arn:aws:iam::123456789012:role/r"))));
/// // In practice the inner store is an AmazonS3 built `with_credentials(provider.clone())`.
/// let store = RefreshOnExpiry::new(InMemory::new(), provider);
/// assert_eq!(store.get_ref().to_string(), "InMemory");
/// ```
pub struct RefreshOnExpiry<T: ObjectStore + MultipartStore> {
    inner: Arc<T>,
    provider: Arc<RefreshingProvider>,
}

impl<T: ObjectStore + MultipartStore> fmt::Debug for RefreshOnExpiry<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshOnExpiry")
            .field("inner", &self.inner)
            .field("provider", &self.provider)
            .finish()
    }
}

impl<T: ObjectStore + MultipartStore> fmt::Display for RefreshOnExpiry<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RefreshOnExpiry({})", self.inner)
    }
}

impl<T: ObjectStore + MultipartStore> RefreshOnExpiry<T> {
    /// Wrap `inner`, whose requests are signed with credentials from `provider`.
    pub fn new(inner: T, provider: Arc<RefreshingProvider>) -> Self {
        Self {
            inner: Arc::new(inner),
            provider,
        }
    }

    /// The wrapped store.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The wrapped store, mutably, when this wrapper holds the only reference to it (no
    /// listing or upload it started is still running).
    pub fn get_mut(&mut self) -> Option<&mut T> {
        Arc::get_mut(&mut self.inner)
    }

    /// The wrapped store (shared with listings still running, if any).
    pub fn into_inner(self) -> Arc<T> {
        self.inner
    }

    /// The credential provider.
    pub fn provider(&self) -> &Arc<RefreshingProvider> {
        &self.provider
    }

    /// Run `call`; when it fails with an expired token, renew and run it once more.
    async fn retry<R, F, Fut>(&self, what: &str, call: F) -> Result<R>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<R>>,
    {
        let generation = self.provider.current_generation().await;
        match (call().await, generation) {
            (Err(e), Some(generation)) if is_expired_token(&e) => {
                tracing::info!(
                    call = what,
                    "S3 answered that the credentials expired; renewing them and trying again"
                );
                self.provider.invalidate_generation(generation).await;
                call().await
            }
            (outcome, _) => outcome,
        }
    }
}

#[async_trait]
impl<T: ObjectStore + MultipartStore> ObjectStore for RefreshOnExpiry<T> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.retry("put", || {
            self.inner.put_opts(location, payload.clone(), opts.clone())
        })
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let id = self
            .retry("create multipart upload", || {
                self.inner.create_multipart_opts(location, opts.clone())
            })
            .await?;
        Ok(Box::new(RefreshingUpload {
            shared: Arc::new(UploadShared {
                inner: Arc::clone(&self.inner),
                provider: Arc::clone(&self.provider),
                location: location.clone(),
                id,
                parts: std::sync::Mutex::new(Vec::new()),
            }),
            next_part: 0,
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.retry("get", || self.inner.get_opts(location, options.clone()))
            .await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.retry("get ranges", || self.inner.get_ranges(location, ranges))
            .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let inner = Arc::clone(&self.inner);
        let provider = Arc::clone(&self.provider);
        // S3 deletes up to 1000 keys per request: retry per chunk, only the paths that failed.
        locations
            .chunks(1000)
            .then(move |chunk| {
                let inner = Arc::clone(&inner);
                let provider = Arc::clone(&provider);
                async move { delete_chunk(inner, provider, chunk).await }
            })
            .flat_map(stream::iter)
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        resuming_list(
            Arc::clone(&self.inner),
            Arc::clone(&self.provider),
            prefix.cloned(),
            None,
        )
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        resuming_list(
            Arc::clone(&self.inner),
            Arc::clone(&self.provider),
            prefix.cloned(),
            Some(offset.clone()),
        )
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.retry("list", || self.inner.list_with_delimiter(prefix))
            .await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.retry("copy", || self.inner.copy_opts(from, to, options.clone()))
            .await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.retry("rename", || {
            self.inner.rename_opts(from, to, options.clone())
        })
        .await
    }
}

async fn delete_chunk<T: ObjectStore + MultipartStore>(
    inner: Arc<T>,
    provider: Arc<RefreshingProvider>,
    chunk: Vec<Result<Path>>,
) -> Vec<Result<Path>> {
    let mut paths = Vec::with_capacity(chunk.len());
    let mut results = Vec::with_capacity(chunk.len());
    for item in chunk {
        match item {
            Ok(path) => paths.push(path),
            Err(e) => results.push(Err(e)),
        }
    }
    let generation = provider.current_generation().await;
    let first: Vec<Result<Path>> = inner
        .delete_stream(stream::iter(paths.clone().into_iter().map(Ok)).boxed())
        .collect()
        .await;
    let expired = first
        .iter()
        .any(|r| r.as_ref().is_err_and(|e| is_expired_token(e)));
    let Some(generation) = generation.filter(|_| expired) else {
        results.extend(first);
        return results;
    };
    provider.invalidate_generation(generation).await;
    let deleted: std::collections::HashSet<Path> =
        first.into_iter().filter_map(|r| r.ok()).collect();
    let failed: Vec<Path> = paths.into_iter().filter(|p| !deleted.contains(p)).collect();
    results.extend(deleted.into_iter().map(Ok));
    let again: Vec<Result<Path>> = inner
        .delete_stream(stream::iter(failed.into_iter().map(Ok)).boxed())
        .collect()
        .await;
    results.extend(again);
    results
}

/// A listing that, when the credentials expire part-way, renews them and goes on after the
/// last object it returned (S3 lists in key order). At most three renewals per listing.
fn resuming_list<T: ObjectStore + MultipartStore>(
    inner: Arc<T>,
    provider: Arc<RefreshingProvider>,
    prefix: Option<Path>,
    offset: Option<Path>,
) -> BoxStream<'static, Result<ObjectMeta>> {
    type Listing = BoxStream<'static, Result<ObjectMeta>>;
    struct State<T: ObjectStore> {
        inner: Arc<T>,
        provider: Arc<RefreshingProvider>,
        prefix: Option<Path>,
        after: Option<Path>,
        /// The listing in progress, and the generation of the credential it started with.
        current: Option<(Listing, Option<u64>)>,
        renewals: usize,
    }
    let state = State {
        inner,
        provider,
        prefix,
        after: offset,
        current: None,
        renewals: 0,
    };
    stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        loop {
            let (mut listing, generation) = match state.current.take() {
                Some(current) => current,
                None => {
                    let generation = state.provider.current_generation().await;
                    let listing = match &state.after {
                        Some(offset) => state.inner.list_with_offset(state.prefix.as_ref(), offset),
                        None => state.inner.list(state.prefix.as_ref()),
                    };
                    (listing, generation)
                }
            };
            match (listing.next().await, generation) {
                (None, _) => return None,
                (Some(Ok(meta)), _) => {
                    state.after = Some(meta.location.clone());
                    state.current = Some((listing, generation));
                    return Some((Ok(meta), Some(state)));
                }
                (Some(Err(e)), Some(generation)) if is_expired_token(&e) && state.renewals < 3 => {
                    tracing::info!(
                        "S3 answered that the credentials expired during a listing; renewing them and resuming"
                    );
                    state.provider.invalidate_generation(generation).await;
                    state.renewals += 1;
                }
                (Some(Err(e)), _) => return Some((Err(e), None)),
            }
        }
    })
    .boxed()
}

struct UploadShared<T: ObjectStore + MultipartStore> {
    inner: Arc<T>,
    provider: Arc<RefreshingProvider>,
    location: Path,
    id: MultipartId,
    parts: std::sync::Mutex<Vec<(usize, PartId)>>,
}

impl<T: ObjectStore + MultipartStore> UploadShared<T> {
    /// Run `call`; after an expired token, renew and run it once more.
    async fn retry<R, F, Fut>(&self, call: F) -> Result<R>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<R>>,
    {
        let generation = self.provider.current_generation().await;
        match (call().await, generation) {
            (Err(e), Some(generation)) if is_expired_token(&e) => {
                tracing::info!(
                    "S3 answered that the credentials expired during a multipart upload; renewing them and sending again"
                );
                self.provider.invalidate_generation(generation).await;
                call().await
            }
            (outcome, _) => outcome,
        }
    }
}

/// A multipart upload over [`MultipartStore`] calls, each retried once after an expired
/// token with the same part number.
struct RefreshingUpload<T: ObjectStore + MultipartStore> {
    shared: Arc<UploadShared<T>>,
    next_part: usize,
}

impl<T: ObjectStore + MultipartStore> fmt::Debug for RefreshingUpload<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshingUpload")
            .field("location", &self.shared.location)
            .field("next_part", &self.next_part)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<T: ObjectStore + MultipartStore> MultipartUpload for RefreshingUpload<T> {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let index = self.next_part;
        self.next_part += 1;
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let part = shared
                .retry(|| {
                    shared
                        .inner
                        .put_part(&shared.location, &shared.id, index, data.clone())
                })
                .await?;
            if let Ok(mut parts) = shared.parts.lock() {
                parts.push((index, part));
            }
            Ok(())
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let mut parts = self
            .shared
            .parts
            .lock()
            .map(|parts| parts.clone())
            .unwrap_or_default();
        if parts.len() != self.next_part {
            return Err(object_store::Error::Generic {
                store: "S3",
                source: format!(
                    "cannot complete the upload of `{}`: {} of {} parts were uploaded",
                    self.shared.location,
                    parts.len(),
                    self.next_part
                )
                .into(),
            });
        }
        parts.sort_by_key(|(index, _)| *index);
        let parts: Vec<PartId> = parts.into_iter().map(|(_, part)| part).collect();
        let shared = &self.shared;
        shared
            .retry(|| {
                shared
                    .inner
                    .complete_multipart(&shared.location, &shared.id, parts.clone())
            })
            .await
    }

    async fn abort(&mut self) -> Result<()> {
        let shared = &self.shared;
        shared
            .retry(|| shared.inner.abort_multipart(&shared.location, &shared.id))
            .await
    }
}

/// The low-level multipart calls, each retried once after an expired token.
#[async_trait]
impl<T: ObjectStore + MultipartStore> MultipartStore for RefreshOnExpiry<T> {
    async fn create_multipart(&self, path: &Path) -> Result<MultipartId> {
        self.retry("create multipart upload", || {
            self.inner.create_multipart(path)
        })
        .await
    }

    async fn create_multipart_opts(
        &self,
        path: &Path,
        opts: PutMultipartOptions,
    ) -> Result<MultipartId> {
        self.retry("create multipart upload", || {
            self.inner.create_multipart_opts(path, opts.clone())
        })
        .await
    }

    async fn put_part(
        &self,
        path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> Result<PartId> {
        self.retry("upload part", || {
            self.inner.put_part(path, id, part_idx, data.clone())
        })
        .await
    }

    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> Result<PutResult> {
        self.retry("complete multipart upload", || {
            self.inner.complete_multipart(path, id, parts.clone())
        })
        .await
    }

    async fn abort_multipart(&self, path: &Path, id: &MultipartId) -> Result<()> {
        self.retry("abort multipart upload", || {
            self.inner.abort_multipart(path, id)
        })
        .await
    }
}
