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
    /// Left in place, for this reason.
    Left(String),
}

/// Who lists a key: the manifests' dump ids and pipelines.
#[derive(Debug, Default)]
pub(crate) struct Committed {
    by_key: HashMap<String, Vec<(u64, Option<String>)>>,
}

impl Committed {
    /// Read every manifest under the root.
    pub(crate) async fn load(conn: &Connection, manifests: &[(u64, Manifest)]) -> Self {
        let mut committed = Self::default();
        for (dump_id, manifest) in manifests {
            committed.add(conn, *dump_id, manifest);
        }
        committed
    }

    /// Count `manifest`'s files as committed.
    pub(crate) fn add(&mut self, conn: &Connection, dump_id: u64, manifest: &Manifest) {
        let pipeline = manifest.s3conn.as_ref().and_then(|r| r.pipeline_id.clone());
        let mut keys: Vec<String> = manifest
            .s3conn
            .iter()
            .flat_map(|r| r.files.iter().map(|f| f.key.clone()))
            .collect();
        for table in &manifest.tables {
            for uri in &table.files {
                if let Some(key) = key_of_uri(conn, uri) {
                    keys.push(key);
                }
            }
        }
        keys.sort();
        keys.dedup();
        for key in keys {
            self.by_key
                .entry(key)
                .or_default()
                .push((dump_id, pipeline.clone()));
        }
    }

    /// Whether `why` allows deleting `key`; the reason when it does not.
    fn refusal(&self, key: &str, why: Why<'_>) -> Option<String> {
        let listed = self.by_key.get(key)?;
        match why {
            Why::Orphan => listed
                .first()
                .map(|(id, _)| format!("manifest {id} lists it")),
            Why::Retired {
                pipeline_id,
                dump_id,
            } => listed.iter().find_map(|(id, pipeline)| {
                if *id >= dump_id {
                    Some(format!(
                        "manifest {id} (not older than the new generation {dump_id}) lists it"
                    ))
                } else if pipeline.as_deref() != Some(pipeline_id) {
                    Some(format!(
                        "manifest {id} of {} lists it",
                        pipeline
                            .as_deref()
                            .map(|p| format!("pipeline `{p}`"))
                            .unwrap_or_else(|| "another writer".into())
                    ))
                } else {
                    None
                }
            }),
        }
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
        if let Some(reason) = self.committed.refusal(key, why) {
            tracing::warn!(%key, %reason, "a file that was to be deleted is left in place");
            self.left.push((key.to_owned(), reason.clone()));
            return Ok(Outcome::Left(reason));
        }
        let path = Path::parse(key)
            .map_err(|e| Error::Protocol(format!("the key `{key}` is invalid: {e}")))?;
        match self.conn.store().delete(&path).await {
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
    use std::sync::Arc;

    fn manifest(dump_id: u64, pipeline: &str, keys: &[&str]) -> Manifest {
        let mut m = Manifest::new(
            dump_id,
            vec![TableDelivery::new(
                "t",
                keys.iter().map(|k| format!("memory:///{k}")).collect(),
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
            files: keys
                .iter()
                .map(|k| FileRecord::new("t", *k, 1, 1))
                .collect(),
        });
        m
    }

    #[tokio::test]
    async fn committed_files_are_never_orphans_and_only_own_older_generations_retire() {
        let store = Arc::new(object_store::memory::InMemory::new());
        let conn = Connection::new(store.clone(), Path::default(), "memory://");
        let manifests = vec![
            (1, manifest(1, "p", &["t/a", "t/b"])),
            (2, manifest(2, "q", &["t/c"])),
            (3, manifest(3, "p", &["t/b", "t/d"])),
        ];
        let committed = Committed::load(&conn, &manifests).await;
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
    }
}
