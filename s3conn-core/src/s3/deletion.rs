//! The one place where the sink deletes data files, and the invariant it enforces:
//!
//! > No object that a committed manifest lists is deleted, except a file of an earlier
//! > generation of a table that a later full refresh of the same pipeline replaced.
//!
//! Every deletion of a data file goes through [`Guard::delete`], which reads what the
//! manifests under the sink's root list ([`Committed`]) and refuses anything the reason
//! given does not allow. Callers still have to prove that a file is theirs before they ask
//! (the clean-up's proofs live in `recovery`); the guard is the last word, so that a wrong
//! proof can leak a file but never lose a committed one.

use std::collections::HashMap;

use object_store::ObjectStoreExt;
use object_store::path::Path;
use s3conn_auth::Connection;
use s3conn_layout::Manifest;
use s3conn_layout::manifest::MANIFEST_DIR;

use crate::error::{Error, Result};
use crate::failpoint;
use crate::s3::retry;

/// Why a data file is to be deleted.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Why<'a> {
    /// An attempt that did not commit created it (proven by the caller).
    Orphan,
    /// A file of an earlier generation of a table that the full refresh committed as
    /// manifest `dump_id` by `pipeline_id` replaced.
    Retired { pipeline_id: &'a str, dump_id: u64 },
}

/// What happened to a file the guard was asked to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Deleted.
    Deleted,
    /// Not there (deleted before).
    Gone,
    /// Left in place, for this reason.
    Left(String),
}

/// One listing of a key by a manifest.
#[derive(Debug, Clone)]
struct Listing {
    dump_id: u64,
    pipeline: Option<String>,
    /// The ETag the manifest recorded for the file (none for files listed only by URI).
    e_tag: Option<String>,
}

/// Who lists a key: the manifests' dump ids, pipelines and the ETags they recorded.
#[derive(Debug, Default)]
pub(crate) struct Committed {
    by_key: HashMap<String, Vec<Listing>>,
}

impl Committed {
    /// What `manifests` list.
    pub(crate) fn load(conn: &Connection, manifests: &[(u64, Manifest)]) -> Self {
        let mut committed = Self::default();
        for (dump_id, manifest) in manifests {
            committed.add(conn, *dump_id, manifest);
        }
        committed
    }

    /// Count `manifest`'s files as committed.
    pub(crate) fn add(&mut self, conn: &Connection, dump_id: u64, manifest: &Manifest) {
        let pipeline = manifest.s3conn.as_ref().and_then(|r| r.pipeline_id.clone());
        let mut files: HashMap<String, Option<String>> = HashMap::new();
        for f in manifest.s3conn.iter().flat_map(|r| r.files.iter()) {
            files.insert(f.key.clone(), f.e_tag.clone());
        }
        for table in &manifest.tables {
            for uri in &table.files {
                if let Some(key) = key_of_uri(conn, uri) {
                    files.entry(key).or_insert(None);
                }
            }
        }
        for (key, e_tag) in files {
            self.by_key.entry(key).or_default().push(Listing {
                dump_id,
                pipeline: pipeline.clone(),
                e_tag,
            });
        }
    }

    /// Whether a committed manifest lists `key` as the object it holds now (`e_tag`): an
    /// earlier file under the same key that was since deleted does not count.
    pub(crate) fn lists(&self, key: &str, e_tag: Option<&str>) -> bool {
        self.by_key
            .get(key)
            .is_some_and(|listed| listed.iter().any(|l| same_object(l, e_tag)))
    }

    /// Whether `why` allows deleting `key`, which now holds `e_tag`; the reason when not.
    fn refusal(&self, key: &str, e_tag: Option<&str>, why: Why<'_>) -> Option<String> {
        let listed = self.by_key.get(key).map(Vec::as_slice).unwrap_or_default();
        match why {
            Why::Orphan => listed
                .iter()
                .find(|l| same_object(l, e_tag))
                .map(|l| format!("manifest {} lists it", l.dump_id)),
            Why::Retired {
                pipeline_id,
                dump_id,
            } => {
                if let Some(l) = listed.iter().find(|l| {
                    same_object(l, e_tag)
                        && (l.dump_id >= dump_id || l.pipeline.as_deref() != Some(pipeline_id))
                }) {
                    return Some(if l.dump_id >= dump_id {
                        format!(
                            "manifest {} (not older than the new generation {dump_id}) lists it",
                            l.dump_id
                        )
                    } else {
                        format!(
                            "manifest {} of {} lists it",
                            l.dump_id,
                            l.pipeline
                                .as_deref()
                                .map(|p| format!("pipeline `{p}`"))
                                .unwrap_or_else(|| "another writer".into())
                        )
                    });
                }
                // Only the very file an earlier generation committed: the key may hold a
                // newer one by now.
                let retired = listed.iter().any(|l| {
                    l.dump_id < dump_id
                        && l.pipeline.as_deref() == Some(pipeline_id)
                        && l.e_tag.is_some()
                        && l.e_tag.as_deref() == e_tag
                });
                (!retired).then(|| {
                    "it is not the file the replaced generation committed (its ETag differs)".into()
                })
            }
        }
    }
}

/// Whether listing `l` is of the object that now has `e_tag` (unknown ETags count as the
/// same: the guard errs towards keeping).
fn same_object(l: &Listing, e_tag: Option<&str>) -> bool {
    match (l.e_tag.as_deref(), e_tag) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// The bucket-relative key of a URI under `conn`'s root, if it is one.
pub(crate) fn key_of_uri(conn: &Connection, uri: &str) -> Option<String> {
    let relative = uri.strip_prefix(conn.url())?.strip_prefix('/')?;
    let root = conn.root().as_ref();
    Some(if root.is_empty() {
        relative.to_owned()
    } else {
        format!("{root}/{relative}")
    })
}

/// Deletes data files, only when the manifests allow it.
#[derive(Debug)]
pub(crate) struct Guard<'a> {
    conn: &'a Connection,
    committed: &'a Committed,
    /// Files deleted and files left, for the report.
    pub(crate) deleted: u64,
    pub(crate) left: Vec<(String, String)>,
}

impl<'a> Guard<'a> {
    pub(crate) fn new(conn: &'a Connection, committed: &'a Committed) -> Self {
        Self {
            conn,
            committed,
            deleted: 0,
            left: Vec::new(),
        }
    }

    /// Delete `key` if `why` allows it; otherwise leave it and say why.
    pub(crate) async fn delete(&mut self, key: &str, why: Why<'_>) -> Result<Outcome> {
        let internal = [format!("{}/", MANIFEST_DIR), "_s3conn/".to_owned()];
        let relative = key
            .strip_prefix(self.conn.root().as_ref())
            .map(|r| r.trim_start_matches('/'))
            .unwrap_or(key);
        if internal.iter().any(|p| relative.starts_with(p.as_str())) {
            return Err(Error::Protocol(format!(
                "refusing to delete `{key}` as a data file: it is the sink's own bookkeeping"
            )));
        }
        let path = Path::parse(key)
            .map_err(|e| Error::Protocol(format!("the key `{key}` is invalid: {e}")))?;
        // Which object the key holds now: the manifests name files by key and ETag.
        let e_tag = match retry::send("head", || self.conn.store().head(&path)).await {
            Ok(meta) => meta.e_tag,
            Err(object_store::Error::NotFound { .. }) => return Ok(Outcome::Gone),
            Err(e) => return Err(Error::store("head", self.conn.uri(&path), e)),
        };
        if let Some(reason) = self.committed.refusal(key, e_tag.as_deref(), why) {
            tracing::warn!(%key, %reason, "a file that was to be deleted is left in place");
            self.left.push((key.to_owned(), reason.clone()));
            return Ok(Outcome::Left(reason));
        }
        match retry::send("delete", || self.conn.store().delete(&path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(Error::store("delete", self.conn.uri(&path), e)),
        }
        self.deleted += 1;
        match why {
            Why::Orphan => failpoint::hit("sink.cleanup.step"),
            Why::Retired { .. } => failpoint::hit("sink.retire.step"),
        }
        Ok(Outcome::Deleted)
    }

    /// Note a file left in place for a reason found before asking the guard.
    pub(crate) fn leave(&mut self, key: &str, reason: impl Into<String>) {
        let reason = reason.into();
        tracing::warn!(%key, %reason, "a file an earlier attempt may have written is left in place");
        self.left.push((key.to_owned(), reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3conn_layout::manifest::{COMMIT_RECORD_VERSION, CommitRecord};
    use s3conn_layout::{FileRecord, TableDelivery};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn manifest(dump_id: u64, pipeline: &str, files: &[(&str, Option<String>)]) -> Manifest {
        let mut m = Manifest::new(
            dump_id,
            vec![TableDelivery::new(
                "t",
                files
                    .iter()
                    .map(|(k, _)| format!("memory:///{k}"))
                    .collect(),
                true,
            )],
        );
        m.s3conn = Some(CommitRecord {
            version: COMMIT_RECORD_VERSION,
            pipeline_id: Some(pipeline.into()),
            checkpoint: None,
            sync_id: "s".into(),
            attempt_id: "s".into(),
            committed_at: 0,
            files: files
                .iter()
                .map(|(k, e_tag)| {
                    let mut f = FileRecord::new("t", *k, 1, 1);
                    f.e_tag = e_tag.clone();
                    f
                })
                .collect(),
        });
        m
    }

    #[tokio::test]
    async fn committed_files_are_never_orphans_and_only_own_older_generations_retire() {
        let store = Arc::new(object_store::memory::InMemory::new());
        let conn = Connection::new(store.clone(), Path::default(), "memory://");
        let mut tags = BTreeMap::new();
        for key in [
            "t/a",
            "t/b",
            "t/c",
            "t/d",
            "t/z",
            "manifests/00000000000000000001.json",
            "_s3conn/attempts/p/x",
        ] {
            let put = store
                .put(&Path::from(key), bytes::Bytes::from_static(b"x").into())
                .await
                .unwrap();
            tags.insert(key, put.e_tag);
        }
        let f = |k: &'static str| (k, tags[k].clone());
        let manifests = vec![
            (1, manifest(1, "p", &[f("t/a"), f("t/b")])),
            (2, manifest(2, "q", &[f("t/c")])),
            (3, manifest(3, "p", &[f("t/b"), f("t/d")])),
        ];
        let committed = Committed::load(&conn, &manifests);
        let mut guard = Guard::new(&conn, &committed);
        for key in ["t/a", "t/b", "t/c", "t/d"] {
            assert!(matches!(
                guard.delete(key, Why::Orphan).await.unwrap(),
                Outcome::Left(_)
            ));
        }
        assert_eq!(
            guard.delete("t/z", Why::Orphan).await.unwrap(),
            Outcome::Deleted
        );
        assert_eq!(
            guard.delete("t/z", Why::Orphan).await.unwrap(),
            Outcome::Gone
        );
        let retired = Why::Retired {
            pipeline_id: "p",
            dump_id: 3,
        };
        assert_eq!(
            guard.delete("t/a", retired).await.unwrap(),
            Outcome::Deleted
        );
        // Listed by the new generation, by another pipeline: left.
        assert!(matches!(
            guard.delete("t/b", retired).await.unwrap(),
            Outcome::Left(_)
        ));
        assert!(matches!(
            guard.delete("t/c", retired).await.unwrap(),
            Outcome::Left(_)
        ));
        assert!(
            guard
                .delete("manifests/00000000000000000001.json", Why::Orphan)
                .await
                .is_err()
        );
        assert!(
            guard
                .delete("_s3conn/attempts/p/x", Why::Orphan)
                .await
                .is_err()
        );
        assert_eq!(guard.deleted, 2);
        assert_eq!(guard.left.len(), 6);

        // A key that an earlier generation listed and that now holds another file: an
        // orphan under it can go, and retiring the old generation leaves the new file.
        let put = store
            .put(&Path::from("t/a"), bytes::Bytes::from_static(b"new").into())
            .await
            .unwrap();
        assert_ne!(put.e_tag, tags["t/a"]);
        assert!(matches!(
            guard.delete("t/a", retired).await.unwrap(),
            Outcome::Left(_)
        ));
        assert_eq!(
            guard.delete("t/a", Why::Orphan).await.unwrap(),
            Outcome::Deleted
        );
    }
}
