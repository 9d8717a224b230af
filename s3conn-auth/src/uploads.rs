//! Uploads of large objects that never replace an existing one, with ids that let a later
//! run find and abort what a crashed process left open.
//!
//! object_store's `put_multipart` hides the upload's id and completes unconditionally. A
//! connector that must never overwrite a committed file, and must abort the uploads of a
//! process that was killed, needs both: [`Connection::start_upload`] returns the id before
//! a byte is sent, and completes only if the key is free (the object store answers
//! `AlreadyExists`, or `Precondition` on S3, when it is taken).
//!
//! | connection | id | completion | open uploads |
//! |---|---|---|---|
//! | S3 | S3's upload id | `If-None-Match: *` (see the HTTP layer) | `ListMultipartUploads` |
//! | local folder | the staging file's suffix (`key#<digits>`) | hard link: fails if the file exists; the staging file stays linked until released, proving whose file it is | the staging files |
//! | any other store ([`Connection::new`]) | none | object_store's own (unconditional) | not listed |
//!
//! [`Connection::new`]: crate::Connection::new
//! [`Connection::start_upload`]: crate::Connection::start_upload

use std::fmt;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use object_store::aws::{AwsAuthorizer, AwsCredentialProvider};
use object_store::client::{HttpClient, HttpRequestBody};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    MultipartId, MultipartUpload, ObjectStore, PutMultipartOptions, PutPayload, PutResult,
    UploadPart,
};
use serde::Deserialize;

use crate::credentials::RefreshingProvider;
use crate::http::is_retried_status;

/// An upload that was started: its id (when the store has one a later run can use) and
/// the upload to feed, for example through object_store's `WriteMultipart`.
#[non_exhaustive]
pub struct StartedUpload {
    /// The id to record before sending parts, to abort the upload after a crash
    /// ([`Connection::abort_upload`](crate::Connection::abort_upload)).
    pub id: Option<String>,
    /// The upload. Its `complete` fails with `AlreadyExists` (or `Precondition`) when the
    /// key was taken in the meantime, on S3 and local connections.
    pub upload: Box<dyn MultipartUpload>,
}

impl fmt::Debug for StartedUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StartedUpload")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// An upload that was started and neither completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenUpload {
    /// The key the upload would create.
    pub key: Path,
    /// Its id.
    pub id: String,
    /// When it was started, when the store says.
    pub initiated: Option<DateTime<Utc>>,
}

/// How a connection uploads large objects.
#[derive(Clone)]
pub(crate) enum Uploads {
    /// S3: object_store's multipart calls, and `ListMultipartUploads` of our own.
    S3 {
        multipart: Arc<dyn MultipartStore>,
        lister: Arc<S3Lister>,
    },
    /// A local folder: staging files hard-linked into place.
    Local { root: PathBuf },
    /// Any other store: object_store's `put_multipart`.
    Store,
}

impl fmt::Debug for Uploads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::S3 { .. } => f.write_str("Uploads::S3"),
            Self::Local { root } => write!(f, "Uploads::Local({})", root.display()),
            Self::Store => f.write_str("Uploads::Store"),
        }
    }
}

fn generic(message: impl Into<String>) -> object_store::Error {
    object_store::Error::Generic {
        store: "s3conn",
        source: message.into().into(),
    }
}

impl Uploads {
    pub(crate) async fn start(
        &self,
        store: &Arc<dyn ObjectStore>,
        key: &Path,
        options: PutMultipartOptions,
    ) -> object_store::Result<StartedUpload> {
        match self {
            Self::S3 { multipart, .. } => {
                let id = multipart.create_multipart_opts(key, options).await?;
                Ok(StartedUpload {
                    id: Some(id.clone()),
                    upload: Box::new(StoreUpload {
                        shared: Arc::new(StoreUploadShared {
                            store: Arc::clone(multipart),
                            key: key.clone(),
                            id,
                            parts: Mutex::new(Vec::new()),
                        }),
                        next_part: 0,
                    }),
                })
            }
            Self::Local { root } => {
                if !options.attributes.is_empty() {
                    return Err(object_store::Error::NotImplemented {
                        operation: "`put_multipart_opts` with `opts.attributes` specified".into(),
                        implementer: "a local folder".into(),
                    });
                }
                let root = root.clone();
                let key = key.clone();
                let upload = tokio::task::spawn_blocking(move || LocalUpload::start(&root, &key))
                    .await
                    .map_err(|e| generic(format!("starting a local upload failed: {e}")))??;
                Ok(StartedUpload {
                    id: Some(upload.id.clone()),
                    upload: Box::new(upload),
                })
            }
            Self::Store => Ok(StartedUpload {
                id: None,
                upload: store.put_multipart_opts(key, options).await?,
            }),
        }
    }

    pub(crate) fn conditional(&self) -> bool {
        !matches!(self, Self::Store)
    }

    pub(crate) async fn open(
        &self,
        prefix: &Path,
    ) -> object_store::Result<Option<Vec<OpenUpload>>> {
        match self {
            Self::S3 { lister, .. } => lister.list(prefix).await,
            Self::Local { root } => {
                let root = root.clone();
                let prefix = prefix.clone();
                tokio::task::spawn_blocking(move || local_open_uploads(&root, &prefix).map(Some))
                    .await
                    .map_err(|e| generic(format!("listing local uploads failed: {e}")))?
            }
            Self::Store => Ok(None),
        }
    }

    /// Whether upload `id` created the object at `key`: `Some` where the store can tell (a
    /// local folder, until the upload is released), `None` elsewhere.
    pub(crate) async fn completed(
        &self,
        key: &Path,
        id: &str,
    ) -> object_store::Result<Option<bool>> {
        match self {
            Self::Local { root } => {
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(generic(format!("`{id}` is not a local upload id")));
                }
                let staging = staging_path(root, key, id);
                let dest = root.join(key.as_ref());
                Ok(Some(same_file(&staging, &dest)))
            }
            Self::S3 { .. } | Self::Store => Ok(None),
        }
    }

    pub(crate) async fn abort(&self, key: &Path, id: &str) -> object_store::Result<()> {
        match self {
            Self::S3 { multipart, .. } => {
                match multipart.abort_multipart(key, &id.to_owned()).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Self::Local { root } => {
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(generic(format!("`{id}` is not a local upload id")));
                }
                let staging = staging_path(root, key, id);
                match std::fs::remove_file(&staging) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(generic(format!(
                        "cannot remove the staging file `{}`: {e}",
                        staging.display()
                    ))),
                }
            }
            Self::Store => Err(object_store::Error::NotSupported {
                source: "this store does not name its uploads".into(),
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------
// S3: an upload driven through MultipartStore calls, so its id is known.

struct StoreUploadShared {
    store: Arc<dyn MultipartStore>,
    key: Path,
    id: MultipartId,
    parts: Mutex<Vec<(usize, PartId)>>,
}

struct StoreUpload {
    shared: Arc<StoreUploadShared>,
    next_part: usize,
}

impl fmt::Debug for StoreUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreUpload")
            .field("key", &self.shared.key)
            .field("id", &self.shared.id)
            .field("next_part", &self.next_part)
            .finish()
    }
}

#[async_trait]
impl MultipartUpload for StoreUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let index = self.next_part;
        self.next_part += 1;
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let part = shared
                .store
                .put_part(&shared.key, &shared.id, index, data)
                .await?;
            if let Ok(mut parts) = shared.parts.lock() {
                parts.push((index, part));
            }
            Ok(())
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let mut parts = self
            .shared
            .parts
            .lock()
            .map(|parts| parts.clone())
            .unwrap_or_default();
        if parts.len() != self.next_part {
            return Err(generic(format!(
                "cannot complete the upload of `{}`: {} of {} parts were uploaded",
                self.shared.key,
                parts.len(),
                self.next_part
            )));
        }
        parts.sort_by_key(|(index, _)| *index);
        let parts = parts.into_iter().map(|(_, part)| part).collect();
        match self
            .shared
            .store
            .complete_multipart(&self.shared.key, &self.shared.id, parts)
            .await
        {
            Err(object_store::Error::Precondition { path, source }) => {
                Err(object_store::Error::AlreadyExists { path, source })
            }
            other => other,
        }
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.shared
            .store
            .abort_multipart(&self.shared.key, &self.shared.id)
            .await
    }
}

/// `ListMultipartUploads`, which object_store does not have: a signed GET on the bucket.
pub(crate) struct S3Lister {
    pub(crate) client: HttpClient,
    pub(crate) credentials: AwsCredentialProvider,
    pub(crate) refreshing: Option<Arc<RefreshingProvider>>,
    pub(crate) region: String,
    /// `https://host/bucket` (path style) or `https://bucket.host` (virtual-hosted style).
    pub(crate) bucket_url: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListUploadsResult {
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    next_key_marker: Option<String>,
    #[serde(default)]
    next_upload_id_marker: Option<String>,
    #[serde(default, rename = "Upload")]
    uploads: Vec<ListedUpload>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedUpload {
    key: String,
    upload_id: String,
    #[serde(default)]
    initiated: Option<String>,
}

impl S3Lister {
    /// Every open upload whose key starts with `prefix`; `None` when the server does not
    /// implement the call.
    async fn list(&self, prefix: &Path) -> object_store::Result<Option<Vec<OpenUpload>>> {
        let mut found = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let query = {
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                query.append_pair("prefix", prefix.as_ref());
                if let Some((key, id)) = &markers {
                    query.append_pair("key-marker", key);
                    query.append_pair("upload-id-marker", id);
                }
                query.finish()
            };
            let url = format!("{}?uploads&{query}", self.bucket_url);
            let Some(body) = self.get(&url).await? else {
                return Ok(None);
            };
            let page: ListUploadsResult = quick_xml::de::from_str(&body).map_err(|e| {
                generic(format!(
                    "ListMultipartUploads answered something unreadable: {e}"
                ))
            })?;
            for upload in page.uploads {
                let key = Path::parse(&upload.key).map_err(|e| {
                    generic(format!("an open upload has the key `{}`: {e}", upload.key))
                })?;
                found.push(OpenUpload {
                    key,
                    id: upload.upload_id,
                    initiated: upload
                        .initiated
                        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                        .map(|t| t.with_timezone(&Utc)),
                });
            }
            match (
                page.is_truncated,
                page.next_key_marker,
                page.next_upload_id_marker,
            ) {
                (true, Some(key), Some(id)) => markers = Some((key, id)),
                _ => return Ok(Some(found)),
            }
        }
    }

    /// GET `url` signed, retried on throttling, server and network errors, and once after
    /// an expired token. `None` when the server says it does not implement the call.
    async fn get(&self, url: &str) -> object_store::Result<Option<String>> {
        let mut attempt = 0u32;
        let mut renewed = false;
        loop {
            attempt += 1;
            let generation = match &self.refreshing {
                Some(p) => p.current_generation().await,
                None => None,
            };
            let credential = self.credentials.get_credential().await?;
            let mut request = http::Request::builder()
                .method(http::Method::GET)
                .uri(url)
                .body(HttpRequestBody::from(Vec::new()))
                .map_err(|e| generic(format!("bad ListMultipartUploads URL `{url}`: {e}")))?;
            AwsAuthorizer::new(&credential, "s3", &self.region)
                .try_authorize(&mut request, None)
                .map_err(|e| generic(format!("cannot sign ListMultipartUploads: {e}")))?;
            let outcome = match self.client.execute(request).await {
                Ok(response) => {
                    let status = response.status();
                    match response.into_body().bytes().await {
                        Ok(body) => Ok((status, String::from_utf8_lossy(&body).into_owned())),
                        Err(e) => Err(format!("reading the answer failed: {e}")),
                    }
                }
                Err(e) => Err(e.to_string()),
            };
            let retry = match &outcome {
                Ok((status, _)) => is_retried_status(*status),
                Err(_) => true,
            };
            if retry && attempt < 4 {
                tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt))).await;
                continue;
            }
            let (status, body) =
                outcome.map_err(|e| generic(format!("ListMultipartUploads: {e}")))?;
            if status.is_success() {
                return Ok(Some(body));
            }
            let code = crate::credentials::xml_value(&body, "Code");
            if status == http::StatusCode::NOT_IMPLEMENTED
                || code.as_deref() == Some("NotImplemented")
            {
                return Ok(None);
            }
            let error = generic(format!(
                "ListMultipartUploads answered {status}{}",
                code.as_deref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default()
            ));
            if let (false, Some(provider), Some(generation)) =
                (renewed, &self.refreshing, generation)
                && code
                    .as_deref()
                    .is_some_and(|c| crate::EXPIRED_TOKEN_CODES.contains(&c))
            {
                provider.invalidate_generation(generation).await;
                renewed = true;
                continue;
            }
            return Err(error);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Local folders: a staging file beside the destination, hard-linked into place.

/// `root/key#id`: object_store's local store hides `name#digits` files from listings.
fn staging_path(root: &std::path::Path, key: &Path, id: &str) -> PathBuf {
    let mut path = root.join(key.as_ref()).into_os_string();
    path.push("#");
    path.push(id);
    PathBuf::from(path)
}

#[derive(Debug)]
struct LocalUpload {
    id: String,
    staging: PathBuf,
    dest: PathBuf,
    file: Arc<File>,
    offset: u64,
}

impl LocalUpload {
    fn start(root: &std::path::Path, key: &Path) -> object_store::Result<Self> {
        let dest = root.join(key.as_ref());
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                generic(format!(
                    "cannot create the folder `{}`: {e}",
                    parent.display()
                ))
            })?;
        }
        for _ in 0..16 {
            let id = format!("{}", rand_u64());
            let staging = staging_path(root, key, &id);
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&staging)
            {
                Ok(file) => {
                    return Ok(Self {
                        id,
                        staging,
                        dest,
                        file: Arc::new(file),
                        offset: 0,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(generic(format!(
                        "cannot create the staging file `{}`: {e}",
                        staging.display()
                    )));
                }
            }
        }
        Err(generic("no free staging file name after 16 tries"))
    }
}

/// A random number from the standard library's randomly seeded hasher (no extra crate).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish()
}

#[cfg(unix)]
fn write_at(file: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, data, offset)
}

#[cfg(not(unix))]
fn write_at(file: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut file = file;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(data)
}

/// Whether two paths name the same file (both exist, one inode).
#[cfg(unix)]
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &std::path::Path, _: &std::path::Path) -> bool {
    false
}

/// The ETag object_store's local store reports for a file.
fn local_e_tag(metadata: &std::fs::Metadata) -> String {
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(metadata);
    #[cfg(not(unix))]
    let inode = 0u64;
    let mtime = metadata
        .modified()
        .ok()
        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_micros();
    format!("\"{inode:x}-{mtime:x}-{:x}\"", metadata.len())
}

#[async_trait]
impl MultipartUpload for LocalUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let offset = self.offset;
        self.offset += data.content_length() as u64;
        let file = Arc::clone(&self.file);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut at = offset;
                for chunk in data.iter() {
                    write_at(&file, chunk, at)
                        .map_err(|e| generic(format!("writing a staging file failed: {e}")))?;
                    at += chunk.len() as u64;
                }
                Ok(())
            })
            .await
            .map_err(|e| generic(format!("writing a staging file failed: {e}")))?
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let staging = self.staging.clone();
        let dest = self.dest.clone();
        tokio::task::spawn_blocking(move || {
            // The staging file stays linked beside the new file until the caller releases
            // it (`abort_upload`): while both exist, `Uploads::completed` proves whose file
            // it is.
            match std::fs::hard_link(&staging, &dest) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let _ = std::fs::remove_file(&staging);
                    return Err(object_store::Error::AlreadyExists {
                        path: dest.display().to_string(),
                        source: Box::new(e),
                    });
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&staging);
                    return Err(generic(format!(
                        "cannot move the upload into `{}`: {e}",
                        dest.display()
                    )));
                }
            }
            let metadata = std::fs::metadata(&dest)
                .map_err(|e| generic(format!("cannot read `{}`: {e}", dest.display())))?;
            Ok(PutResult {
                e_tag: Some(local_e_tag(&metadata)),
                version: None,
                extensions: Default::default(),
            })
        })
        .await
        .map_err(|e| generic(format!("completing a local upload failed: {e}")))?
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        match std::fs::remove_file(&self.staging) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(generic(format!(
                "cannot remove `{}`: {e}",
                self.staging.display()
            ))),
        }
    }
}

/// The staging files (`name#digits`) below `root` whose key starts with `prefix`: uploads
/// of this module and of object_store's own local store.
fn local_open_uploads(
    root: &std::path::Path,
    prefix: &Path,
) -> object_store::Result<Vec<OpenUpload>> {
    let prefix = prefix.as_ref();
    // The deepest folder that contains every key with this prefix.
    let folder = match prefix.rfind('/') {
        Some(at) => prefix.get(..at).unwrap_or_default(),
        None => "",
    };
    let mut found = Vec::new();
    let mut todo = vec![root.join(folder)];
    while let Some(dir) = todo.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(generic(format!("cannot read `{}`: {e}", dir.display())));
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                todo.push(path);
                continue;
            }
            let Some(relative) = path
                .strip_prefix(root)
                .ok()
                .and_then(|r| r.to_str())
                .map(|r| r.replace(std::path::MAIN_SEPARATOR, "/"))
            else {
                continue;
            };
            let Some((key, id)) = relative.rsplit_once('#') else {
                continue;
            };
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || !key.starts_with(prefix)
            {
                continue;
            }
            let Ok(key) = Path::parse(key) else { continue };
            let initiated = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .map(DateTime::<Utc>::from);
            found.push(OpenUpload {
                key,
                id: id.to_owned(),
                initiated,
            });
        }
    }
    found.sort_by(|a, b| (a.key.as_ref(), &a.id).cmp(&(b.key.as_ref(), &b.id)));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::local::LocalFileSystem;
    use object_store::{ObjectStoreExt, WriteMultipart};

    #[tokio::test]
    async fn a_local_upload_is_hidden_until_complete_and_never_replaces_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let uploads = Uploads::Local {
            root: dir.path().to_path_buf(),
        };
        let key = Path::from("t/date=2024-01-01/part-0.csv");
        let started = uploads
            .start(&store, &key, PutMultipartOptions::default())
            .await
            .unwrap();
        let id = started.id.clone().unwrap();
        let mut writer = WriteMultipart::new_with_chunk_size(started.upload, 4);
        writer.put(bytes::Bytes::from_static(b"hello "));
        writer.put(bytes::Bytes::from_static(b"world"));
        writer.wait_for_capacity(0).await.unwrap();

        // Open: found by the listing, invisible to object_store.
        let open = uploads.open(&Path::from("t/")).await.unwrap().unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(
            (open[0].key.as_ref(), open[0].id.as_str()),
            (key.as_ref(), id.as_str())
        );
        assert!(store.head(&key).await.is_err());

        let result = writer.finish().await.unwrap();
        let meta = store.head(&key).await.unwrap();
        assert_eq!(meta.e_tag, result.e_tag, "the ETag object_store reports");
        let body = store.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(&body[..], b"hello world");
        // Until released, the staging file proves the new file is this upload's.
        #[cfg(unix)]
        assert_eq!(uploads.completed(&key, &id).await.unwrap(), Some(true));
        uploads.abort(&key, &id).await.unwrap();
        assert_eq!(uploads.completed(&key, &id).await.unwrap(), Some(false));
        let body = store.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(&body[..], b"hello world", "releasing leaves the file");
        assert!(
            uploads
                .open(&Path::from("t"))
                .await
                .unwrap()
                .unwrap()
                .is_empty()
        );

        // A second upload to the same key fails at completion and leaves the file alone.
        let second = uploads
            .start(&store, &key, PutMultipartOptions::default())
            .await
            .unwrap();
        let mut writer = WriteMultipart::new_with_chunk_size(second.upload, 4);
        writer.put(bytes::Bytes::from_static(b"other"));
        let err = writer.finish().await.unwrap_err();
        assert!(
            matches!(err, object_store::Error::AlreadyExists { .. }),
            "{err}"
        );
        let body = store.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(&body[..], b"hello world");
        assert!(
            uploads
                .open(&Path::from(""))
                .await
                .unwrap()
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_left_local_upload_is_found_and_aborted() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let uploads = Uploads::Local {
            root: dir.path().to_path_buf(),
        };
        let key = Path::from("a/b%2Fc/x.parquet");
        let started = uploads
            .start(&store, &key, PutMultipartOptions::default())
            .await
            .unwrap();
        let id = started.id.clone().unwrap();
        drop(started); // a crash: nothing completes or aborts it
        let open = uploads
            .open(&Path::from("a/b%2Fc/x"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(open.len(), 1, "{open:?}");
        assert!(
            uploads
                .open(&Path::from("a/b%2Fc/y"))
                .await
                .unwrap()
                .unwrap()
                .is_empty()
        );
        uploads.abort(&key, &id).await.unwrap();
        uploads.abort(&key, &id).await.unwrap();
        assert!(
            uploads
                .open(&Path::from("a"))
                .await
                .unwrap()
                .unwrap()
                .is_empty()
        );
        assert!(uploads.abort(&key, "../x").await.is_err());
    }
}
