//! Where pipelines keep their state, with compare-and-swap.
//!
//! A [`StateStore`] keeps versioned values under keys. [`StateStore::save`] names the
//! version it expects to replace; if another writer got there first it fails with
//! [`Error::StateConflict`] and changes nothing, so of two runs racing on the same state only
//! one wins.
//!
//! [`ObjectStoreStateStore`] works on any object store that supports `PutMode::Create`
//! (S3 with `If-None-Match`, local folders, memory): each version is a new object
//! `<prefix>/<key>/<version>.json`, created only if absent. A stale writer that slips in below
//! pruned versions is caught by a check after the write. It keeps the two newest versions.

use std::collections::HashMap;
use std::fmt;
use std::path::Path as FsPath;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};

/// A version of a stored value: 1 for the first save, then increasing by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StateVersion(u64);

impl StateVersion {
    /// The version number.
    pub fn get(&self) -> u64 {
        self.0
    }

    fn next(current: Option<Self>) -> Self {
        Self(current.map_or(1, |v| v.0 + 1))
    }
}

/// A stored value and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The value.
    pub value: Bytes,
    /// Its version.
    pub version: StateVersion,
}

/// Versioned values with compare-and-swap.
#[async_trait]
pub trait StateStore: Send + Sync + fmt::Debug {
    /// The current value of `key`, if any.
    async fn load(&self, key: &str) -> Result<Option<Versioned>>;

    /// Replace the value of `key` if its current version is `expected` (`None`: the key must
    /// not exist). Returns the new version, or [`Error::StateConflict`] and no change.
    async fn save(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<StateVersion>,
    ) -> Result<StateVersion>;
}

/// `Arc<S>` and `Box<S>` are state stores too.
macro_rules! forward_state_store {
    ($($pointer:ident),*) => {$(
        #[async_trait]
        impl<T: StateStore + ?Sized> StateStore for $pointer<T> {
            async fn load(&self, key: &str) -> Result<Option<Versioned>> {
                (**self).load(key).await
            }

            async fn save(
                &self,
                key: &str,
                value: Bytes,
                expected: Option<StateVersion>,
            ) -> Result<StateVersion> {
                (**self).save(key, value, expected).await
            }
        }
    )*};
}

forward_state_store!(Arc, Box);

/// State keys name objects and folders: letters, digits, `.`, `_` and `-`, at most 255.
pub fn validate_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 255
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config {
            reason: format!(
                "state key `{key}`: use 1 to 255 letters, digits, `.`, `_` or `-` (it names a folder)"
            ),
        })
    }
}

/// State in memory: for tests and for hosts that keep state elsewhere.
#[derive(Debug, Default)]
pub struct MemoryStateStore {
    values: Mutex<HashMap<String, Versioned>>,
}

impl MemoryStateStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl StateStore for MemoryStateStore {
    async fn load(&self, key: &str) -> Result<Option<Versioned>> {
        validate_key(key)?;
        let values = self
            .values
            .lock()
            .map_err(|_| Error::Protocol("state store lock poisoned".into()))?;
        Ok(values.get(key).cloned())
    }

    async fn save(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<StateVersion>,
    ) -> Result<StateVersion> {
        validate_key(key)?;
        let mut values = self
            .values
            .lock()
            .map_err(|_| Error::Protocol("state store lock poisoned".into()))?;
        let current = values.get(key).map(|v| v.version);
        if current != expected {
            return Err(Error::StateConflict {
                key: key.to_owned(),
                expected: expected.map(|v| v.0),
            });
        }
        let version = StateVersion::next(current);
        values.insert(key.to_owned(), Versioned { value, version });
        Ok(version)
    }
}

/// State in an object store (S3, a local folder, memory), one object per version, written
/// with `PutMode::Create`.
#[derive(Debug, Clone)]
pub struct ObjectStoreStateStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    keep: u64,
}

impl ObjectStoreStateStore {
    /// State under `prefix` in `store`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: impl Into<Path>) -> Self {
        Self {
            store,
            prefix: prefix.into(),
            keep: 2,
        }
    }

    /// How many versions to keep (at least 1; default 2).
    pub fn with_versions_kept(mut self, keep: u64) -> Self {
        self.keep = keep.max(1);
        self
    }

    fn folder(&self, key: &str) -> Path {
        self.prefix.clone().join(key)
    }

    fn version_path(&self, key: &str, version: StateVersion) -> Path {
        self.folder(key).join(format!("{:020}.json", version.0))
    }

    /// Every stored version of `key`, ascending.
    async fn versions(&self, key: &str) -> Result<Vec<StateVersion>> {
        let folder = self.folder(key);
        let depth = folder.parts().count() + 1;
        let metas: Vec<_> = self
            .store
            .list(Some(&folder))
            .try_collect()
            .await
            .map_err(|e| Error::store("list", folder.to_string(), e))?;
        let mut versions: Vec<StateVersion> = metas
            .iter()
            .filter(|m| m.location.parts().count() == depth)
            .filter_map(|m| {
                let name = m.location.filename()?;
                let digits = name.strip_suffix(".json")?;
                (digits.len() == 20)
                    .then(|| digits.parse().ok())
                    .flatten()
                    .map(StateVersion)
            })
            .collect();
        versions.sort();
        Ok(versions)
    }
}

#[async_trait]
impl StateStore for ObjectStoreStateStore {
    async fn load(&self, key: &str) -> Result<Option<Versioned>> {
        validate_key(key)?;
        let Some(version) = self.versions(key).await?.last().copied() else {
            return Ok(None);
        };
        let path = self.version_path(key, version);
        let value = self
            .store
            .get(&path)
            .await
            .map_err(|e| Error::store("get", path.to_string(), e))?
            .bytes()
            .await
            .map_err(|e| Error::store("get", path.to_string(), e))?;
        Ok(Some(Versioned { value, version }))
    }

    async fn save(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<StateVersion>,
    ) -> Result<StateVersion> {
        validate_key(key)?;
        let conflict = || Error::StateConflict {
            key: key.to_owned(),
            expected: expected.map(|v| v.0),
        };
        let version = StateVersion::next(expected);
        let path = self.version_path(key, version);
        match self
            .store
            .put_opts(
                &path,
                PutPayload::from_bytes(value),
                PutOptions::from(PutMode::Create),
            )
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => return Err(conflict()),
            Err(e) => return Err(Error::store("put", path.to_string(), e)),
        }
        // A writer whose expected version was pruned long ago can create a version below
        // the newest: it lost the race all the same.
        let versions = self.versions(key).await?;
        if versions.last().is_some_and(|newest| *newest > version) {
            let _ = self.store.delete(&path).await;
            return Err(conflict());
        }
        for old in versions.iter().filter(|v| v.0 + self.keep <= version.0) {
            let old_path = self.version_path(key, *old);
            if let Err(e) = self.store.delete(&old_path).await {
                tracing::debug!(path = %old_path, error = %e, "could not prune an old state version");
            }
        }
        Ok(version)
    }
}

/// State in a local folder: the object-store state store over the local file system, where
/// `PutMode::Create` is an atomic hard link.
#[derive(Debug, Clone)]
pub struct LocalFileStateStore {
    inner: ObjectStoreStateStore,
}

impl LocalFileStateStore {
    /// State in `dir` (created if missing).
    pub fn new(dir: impl AsRef<FsPath>) -> Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::Config {
            reason: format!("cannot create the state folder `{}`: {e}", dir.display()),
        })?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| Error::store("open", dir.display().to_string(), e))?
            .with_automatic_cleanup(true);
        Ok(Self {
            inner: ObjectStoreStateStore::new(Arc::new(store), Path::default()),
        })
    }
}

#[async_trait]
impl StateStore for LocalFileStateStore {
    async fn load(&self, key: &str) -> Result<Option<Versioned>> {
        self.inner.load(key).await
    }

    async fn save(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<StateVersion>,
    ) -> Result<StateVersion> {
        self.inner.save(key, value, expected).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        for good in ["p", "pipeline-1", "a.b_c"] {
            validate_key(good).unwrap();
        }
        for bad in ["", "a/b", "..", "sp ace", &"x".repeat(256)] {
            assert!(validate_key(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_stale_writer_below_pruned_versions_still_loses() {
        let store = ObjectStoreStateStore::new(
            Arc::new(object_store::memory::InMemory::new()),
            Path::from("state"),
        );
        let mut v = None;
        for i in 0..5u8 {
            v = Some(store.save("k", Bytes::from(vec![i]), v).await.unwrap());
        }
        // Version 1 was pruned; a writer that still expects "nothing" creates it again...
        let err = store.save("k", Bytes::from_static(b"stale"), None).await;
        assert!(matches!(err, Err(Error::StateConflict { .. })), "{err:?}");
        // ...and the newest value is untouched.
        let loaded = store.load("k").await.unwrap().unwrap();
        assert_eq!(loaded.version.get(), 5);
        assert_eq!(&loaded.value[..], &[4]);
    }
}
