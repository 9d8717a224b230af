//! Fault injection: an object store that fails chosen calls, to prove crash safety.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
};

/// A kind of store call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `put_opts`.
    Put,
    /// `put_multipart_opts` (starting an upload).
    PutMultipart,
    /// Completing a multipart upload.
    CompleteMultipart,
    /// `get_opts` and `get_ranges`.
    Get,
    /// Deleting.
    Delete,
    /// Listing.
    List,
    /// Copying.
    Copy,
}

/// How an injected fault behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Fail before the call reaches the store: nothing happens.
    Before,
    /// Let the call succeed in the store, then report an error: the answer was lost.
    AnswerLost,
    /// Make the call twice and return the second answer: a client retry after a lost answer
    /// (a conditional create then meets its own first write).
    Retried,
}

#[derive(Debug)]
struct Rule {
    op: Op,
    path_contains: String,
    kind: FaultKind,
    skip: usize,
    times: usize,
}

#[derive(Debug, Default)]
struct Shared {
    rules: Vec<Rule>,
    calls: Vec<(Op, String)>,
    fired: usize,
}

impl Shared {
    fn check(&mut self, op: Op, path: &str) -> Option<FaultKind> {
        self.calls.push((op, path.to_owned()));
        for rule in &mut self.rules {
            if rule.op != op || !path.contains(&rule.path_contains) {
                continue;
            }
            if rule.skip > 0 {
                rule.skip -= 1;
                continue;
            }
            if rule.times > 0 {
                rule.times -= 1;
                self.fired += 1;
                return Some(rule.kind);
            }
        }
        None
    }
}

fn injected(op: Op, path: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyStore",
        source: format!("injected fault on {op:?} {path}").into(),
    }
}

async fn run<T, F, Fut>(shared: &Mutex<Shared>, op: Op, path: &str, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let decision = shared.lock().unwrap().check(op, path);
    match decision {
        Some(FaultKind::Before) => Err(injected(op, path)),
        Some(FaultKind::AnswerLost) => {
            call().await?;
            Err(injected(op, path))
        }
        Some(FaultKind::Retried) => {
            let _ = call().await;
            call().await
        }
        None => call().await,
    }
}

/// Wraps a store and fails the calls that match its rules.
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    shared: Arc<Mutex<Shared>>,
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyStore")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

impl FaultyStore {
    /// Wrap `inner`; no faults until a rule is added.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            shared: Arc::default(),
        })
    }

    /// Fail `times` calls of `op` on paths containing `path_contains`, after letting `skip`
    /// such calls through.
    pub fn fail(&self, op: Op, path_contains: &str, kind: FaultKind, skip: usize, times: usize) {
        self.shared.lock().unwrap().rules.push(Rule {
            op,
            path_contains: path_contains.to_owned(),
            kind,
            skip,
            times,
        });
    }

    /// Remove every rule.
    pub fn heal(&self) {
        self.shared.lock().unwrap().rules.clear();
    }

    /// How many faults were injected.
    pub fn fired(&self) -> usize {
        self.shared.lock().unwrap().fired
    }

    /// Every call seen, in order.
    pub fn calls(&self) -> Vec<(Op, String)> {
        self.shared.lock().unwrap().calls.clone()
    }

    fn list_checked(
        &self,
        prefix: Option<&Path>,
        list: impl FnOnce() -> BoxStream<'static, Result<ObjectMeta>>,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let p = prefix.map(|p| p.to_string()).unwrap_or_default();
        let decision = self.shared.lock().unwrap().check(Op::List, &p);
        if decision.is_some() {
            let err = injected(Op::List, &p);
            return futures::stream::once(async move { Err(err) }).boxed();
        }
        list()
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        run(&self.shared, Op::Put, location.as_ref(), || {
            self.inner.put_opts(location, payload.clone(), opts.clone())
        })
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let inner = run(&self.shared, Op::PutMultipart, location.as_ref(), || {
            self.inner.put_multipart_opts(location, opts.clone())
        })
        .await?;
        Ok(Box::new(FaultyUpload {
            inner,
            shared: Arc::clone(&self.shared),
            path: location.to_string(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        run(&self.shared, Op::Get, location.as_ref(), || {
            self.inner.get_opts(location, options.clone())
        })
        .await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        run(&self.shared, Op::Get, location.as_ref(), || {
            self.inner.get_ranges(location, ranges)
        })
        .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let shared = Arc::clone(&self.shared);
        let checked = locations
            .map(move |r| match r {
                Ok(p) => match shared.lock().unwrap().check(Op::Delete, p.as_ref()) {
                    Some(_) => Err(injected(Op::Delete, p.as_ref())),
                    None => Ok(p),
                },
                Err(e) => Err(e),
            })
            .boxed();
        self.inner.delete_stream(checked)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.list_checked(prefix, || self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let shown = Path::from(format!(
            "{} after {offset}",
            prefix.map(|p| p.to_string()).unwrap_or_default()
        ));
        self.list_checked(Some(&shown), || self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let p = prefix.map(|p| p.to_string()).unwrap_or_default();
        run(&self.shared, Op::List, &p, || {
            self.inner.list_with_delimiter(prefix)
        })
        .await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        run(&self.shared, Op::Copy, to.as_ref(), || {
            self.inner.copy_opts(from, to, options.clone())
        })
        .await
    }
}

#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    shared: Arc<Mutex<Shared>>,
    path: String,
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let shared = Arc::clone(&self.shared);
        let path = self.path.clone();
        let decision = shared.lock().unwrap().check(Op::CompleteMultipart, &path);
        match decision {
            Some(FaultKind::Before) => Err(injected(Op::CompleteMultipart, &path)),
            Some(FaultKind::AnswerLost) => {
                self.inner.complete().await?;
                Err(injected(Op::CompleteMultipart, &path))
            }
            Some(FaultKind::Retried) | None => self.inner.complete().await,
        }
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}
