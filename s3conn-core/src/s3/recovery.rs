//! Finishing or undoing what an earlier attempt of a pipeline left, from its journal; and the
//! retirement of the generations a full refresh replaced.
//!
//! For every leftover attempt of the pipeline (one journal folder each):
//!
//! 1. **Did it commit?** A `commit` entry names each dump id it tried to claim; if one of
//!    those manifests exists and carries the attempt's sync id, it committed, and the files
//!    that manifest lists are kept.
//! 2. **Abort its uploads**: every recorded upload id, and, for an upload that was being
//!    started when the process died (no id recorded yet), the open uploads of that key that
//!    began after the journal said so (where the store can list them).
//! 3. **Delete what it provably created and no manifest lists.** The proof is one of:
//!    - the key carries the attempt's sync id or a UUID it drew (`unique_keys`);
//!    - a `created` entry, and the object still has the ETag recorded there;
//!    - the object's metadata names the attempt (S3: every data file carries
//!      `x-amz-meta-s3conn-attempt`);
//!    - on a local folder, the attempt's upload is still linked to the file (a completed
//!      upload's staging file stays until the `created` entry is durable).
//!
//!    Nothing else counts — equal bytes are not a proof: two pipelines can write the same
//!    bytes to one key. A file that changed since the attempt wrote it is left and reported.
//!    Every deletion goes through the [`Guard`], which refuses files a committed manifest
//!    lists.
//! 4. **Finish a full refresh** it committed: retire the earlier generations.
//! 5. Delete the journal.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{Attribute, GetOptions, ObjectMeta, ObjectStoreExt};
use s3conn_auth::Connection;
use s3conn_layout::Manifest;
use s3conn_layout::manifest::{MANIFEST_DIR, manifest_file_name, parse_manifest_file_name};

use crate::error::{Error, Result};
use crate::s3::deletion::{Committed, Guard, Outcome, Why};
use crate::s3::journal::{self, Entry, Journal};
use crate::s3::retry;

/// The folder of s3conn's own bookkeeping under the sink's root.
pub(crate) const INTERNAL_DIR: &str = "_s3conn";

/// `_s3conn/attempts/<pipeline>` under the root.
pub(crate) fn attempts_dir(conn: &Connection, pipeline_id: &str) -> Result<Path> {
    Ok(conn.key(&format!("{INTERNAL_DIR}/attempts/{pipeline_id}"))?)
}

pub(crate) fn manifest_path(conn: &Connection, dump_id: u64) -> Result<Path> {
    Ok(conn.key(&format!("{MANIFEST_DIR}/{}", manifest_file_name(dump_id)))?)
}

/// The manifests under the root, by dump id, ascending.
pub(crate) async fn list_manifests(conn: &Connection) -> Result<Vec<(u64, Path)>> {
    let dir = conn.key(MANIFEST_DIR)?;
    let depth = dir.parts().count() + 1;
    let metas: Vec<ObjectMeta> = conn
        .store()
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(|e| Error::store("list", conn.uri(&dir), e))?;
    let mut found: Vec<(u64, Path)> = metas
        .into_iter()
        .filter(|m| m.location.parts().count() == depth)
        .filter_map(|m| {
            let id = parse_manifest_file_name(m.location.filename()?)?;
            Some((id, m.location))
        })
        .collect();
    found.sort_by_key(|(id, _)| *id);
    Ok(found)
}

pub(crate) async fn get_bytes(conn: &Connection, path: &Path) -> Result<Option<bytes::Bytes>> {
    let got = retry::send("get", || async {
        conn.store().get(path).await?.bytes().await
    })
    .await;
    match got {
        Ok(bytes) => Ok(Some(bytes)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Error::store("get", conn.uri(path), e)),
    }
}

pub(crate) async fn read_manifest(conn: &Connection, dump_id: u64) -> Result<Option<Manifest>> {
    let path = manifest_path(conn, dump_id)?;
    match get_bytes(conn, &path).await? {
        None => Ok(None),
        Some(bytes) => Manifest::from_json(&bytes)
            .map(Some)
            .map_err(|e| Error::State {
                key: conn.uri(&path),
                reason: e.to_string(),
            }),
    }
}

/// Every manifest under the root, ascending.
pub(crate) async fn read_manifests(conn: &Connection) -> Result<Vec<(u64, Manifest)>> {
    let mut all = Vec::new();
    for (id, _) in list_manifests(conn).await? {
        if let Some(m) = read_manifest(conn, id).await? {
            all.push((id, m));
        }
    }
    Ok(all)
}

/// What a clean-up did, for the sync report.
#[derive(Debug, Default, Clone)]
pub(crate) struct Cleanup {
    /// Attempts whose journals were finished.
    pub(crate) attempts: u64,
    /// Data files deleted (orphans, and retired generations).
    pub(crate) deleted: u64,
    /// Uploads aborted.
    pub(crate) aborted: u64,
    /// Files left in place, with the reason.
    pub(crate) left: Vec<(String, String)>,
    /// Something could not be finished (an upload that would not abort): the journal stays
    /// for the next run to try again.
    pub(crate) unfinished: bool,
}

impl Cleanup {
    fn absorb(&mut self, guard: &Guard<'_>) {
        self.deleted += guard.deleted;
        self.left.extend(guard.left.iter().cloned());
    }
}

/// Finish every leftover attempt of `pipeline_id`. The caller guarantees that no attempt of
/// this pipeline is running (the pipeline's lease).
pub(crate) async fn clean_attempts(conn: &Connection, pipeline_id: &str) -> Result<Cleanup> {
    let dir = attempts_dir(conn, pipeline_id)?;
    let found = journal::list(conn, &dir).await?;
    let mut report = Cleanup::default();
    for path in &found.foreign {
        tracing::warn!(path = %path, "an intent log of an earlier s3conn version is left in place: the keys it names were recorded before they were known to be free, so they are not deleted");
        report.left.push((
            path.to_string(),
            "an intent log of an earlier layout".into(),
        ));
    }
    // A local folder's writes go through staging files (`name#digits`): a process killed
    // in the middle of writing a journal record leaves one, even before its first record.
    if conn.is_local_folder() {
        sweep_staging(conn, &dir, &mut report).await?;
    }
    if found.attempts.is_empty() {
        return Ok(report);
    }
    let manifests = read_manifests(conn).await?;
    let mut committed = Committed::load(conn, &manifests);
    for (sync_id, records) in &found.attempts {
        let entries = match journal::read(conn, sync_id, records).await {
            Ok(entries) => entries,
            Err(e @ Error::State { .. }) => {
                tracing::warn!(%sync_id, error = %e, "an unreadable journal is left in place; nothing it names is deleted");
                report.left.push((dir.to_string(), e.to_string()));
                continue;
            }
            Err(e) => return Err(e),
        };
        let next = records
            .iter()
            .filter_map(|(p, _)| p.filename()?.strip_suffix(".json")?.parse::<u64>().ok())
            .max()
            .map_or(0, |n| n + 1);
        let mut journal = Journal::resume(dir.clone().join(sync_id.as_str()), sync_id, next);
        let outcome = clean_attempt(
            conn,
            pipeline_id,
            sync_id,
            &entries,
            &mut journal,
            &manifests,
            &mut committed,
        )
        .await?;
        // Records the clean-up appended go with the rest.
        let mut records: Vec<Path> = records.iter().map(|(p, _)| p.clone()).collect();
        records.extend(journal.written());
        report.attempts += 1;
        report.deleted += outcome.deleted;
        report.aborted += outcome.aborted;
        report.left.extend(outcome.left);
        if outcome.unfinished {
            tracing::warn!(%sync_id, "the journal stays until what it names is finished");
            continue;
        }
        delete_journal(conn, records).await?;
    }
    Ok(report)
}

/// Remove the staging files of unfinished local writes under `prefix`.
async fn sweep_staging(conn: &Connection, prefix: &Path, report: &mut Cleanup) -> Result<()> {
    let open = conn
        .open_uploads(prefix)
        .await
        .map_err(|e| Error::store("list uploads", conn.uri(prefix), e))?;
    for upload in open.unwrap_or_default() {
        conn.abort_upload(&upload.key, &upload.id)
            .await
            .map_err(|e| Error::store("abort upload", conn.uri(&upload.key), e))?;
        report.aborted += 1;
    }
    Ok(())
}

/// Abort upload `id` of `path`. A failure is final only when the upload is still there:
/// some servers answer an unknown upload id with 403 rather than 404, so a store that can
/// list its open uploads is asked. One that cannot is taken at its word: the reason is
/// returned for the caller to report (unless a completion still running shows up first),
/// without keeping the journal forever.
async fn abort(
    conn: &Connection,
    path: &Path,
    id: &str,
    report: &mut Cleanup,
    guard: &mut Guard<'_>,
) -> Option<String> {
    let Err(e) = retry::send("abort upload", || conn.abort_upload(path, id)).await else {
        report.aborted += 1;
        return None;
    };
    match conn.open_uploads(path).await {
        Ok(Some(open)) if !open.iter().any(|u| u.key == *path && u.id == id) => {
            tracing::debug!(key = %path, %id, "the upload to abort is already gone");
        }
        Ok(Some(_)) | Err(_) => {
            report.unfinished = true;
            guard.leave(
                path.as_ref(),
                format!("its upload {id} could not be aborted: {e}"),
            );
        }
        Ok(None) => {
            return Some(format!(
                "its upload {id} could not be aborted ({e}); if it is still open, a lifecycle rule (AbortIncompleteMultipartUpload) removes it"
            ));
        }
    }
    None
}

/// How long the clean-up waits for a completion that a killed attempt sent: the server
/// goes on with a request whose client died, so an upload that cannot be aborted may be
/// turning into its file right now.
const COMPLETION_WAITS: [Duration; 4] = [
    Duration::from_millis(100),
    Duration::from_millis(300),
    Duration::from_millis(900),
    Duration::from_millis(2_700),
];

/// Wait for `path` to appear (see [`COMPLETION_WAITS`]); what it holds then.
async fn wait_for_completion(
    conn: &Connection,
    path: &Path,
) -> Result<Option<(ObjectMeta, Option<String>)>> {
    for wait in COMPLETION_WAITS {
        tokio::time::sleep(wait).await;
        if let Some(found) = inspect(conn, path).await? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Delete an attempt's journal records, in bulk (S3's `DeleteObjects`, 1,000 keys a request).
pub(crate) async fn delete_journal(conn: &Connection, records: Vec<Path>) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let outcome = retry::send("delete journal", || async {
        let paths = futures::stream::iter(records.clone().into_iter().map(Ok)).boxed();
        let results: Vec<object_store::Result<Path>> =
            conn.store().delete_stream(paths).collect().await;
        for result in results {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
    .await;
    outcome.map_err(|e| {
        let at = records.first().map(|p| conn.uri(p)).unwrap_or_default();
        Error::store("delete", at, e)
    })
}

/// Everything an attempt's journal says about one key.
#[derive(Debug, Default)]
struct Facts {
    /// A `put` or `upload_start`: the attempt was about to create the key.
    intended: bool,
    created: Vec<Option<String>>,
    upload_started: bool,
    upload_ids: Vec<String>,
    /// A clean-up found the upload completed into this attempt's file.
    upload_done: bool,
}

/// The metadata key that names the attempt that wrote a data file.
pub(crate) const ATTEMPT_METADATA: &str = "s3conn-attempt";

/// What the object at `path` is: its metadata and the attempt it names, if any.
pub(crate) async fn inspect(
    conn: &Connection,
    path: &Path,
) -> Result<Option<(ObjectMeta, Option<String>)>> {
    let options = GetOptions {
        head: true,
        ..GetOptions::default()
    };
    match retry::send("head", || conn.store().get_opts(path, options.clone())).await {
        Ok(got) => {
            let attempt = got
                .attributes
                .get(&Attribute::Metadata(ATTEMPT_METADATA.into()))
                .map(|v| v.to_string());
            Ok(Some((got.meta, attempt)))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Error::store("head", conn.uri(path), e)),
    }
}

/// Delete `key`, a file an attempt that did not commit provably created, unless a committed
/// manifest lists it. With `upload_done`, the journal first records that its upload
/// completed: once the file is gone, nothing else shows it on S3 (and some servers refuse
/// to abort a completed upload).
async fn delete_orphan(
    conn: &Connection,
    journal: &mut Journal,
    guard: &mut Guard<'_>,
    key: &str,
    upload_done: bool,
) -> Result<()> {
    if upload_done {
        journal
            .write(
                conn,
                Entry::UploadDone {
                    key: key.to_owned(),
                },
            )
            .await?;
    }
    if guard.delete(key, Why::Orphan).await? == Outcome::Deleted {
        tracing::debug!(%key, "deleted a file of an attempt that did not commit");
    }
    Ok(())
}

/// Finish one attempt, from its entries (read back, or an in-process abort's own).
pub(crate) async fn clean_attempt(
    conn: &Connection,
    pipeline_id: &str,
    sync_id: &str,
    entries: &[Entry],
    journal: &mut Journal,
    manifests: &[(u64, Manifest)],
    committed: &mut Committed,
) -> Result<Cleanup> {
    let mut report = Cleanup::default();
    let unique_keys = entries.iter().any(|r| {
        matches!(
            &r,
            Entry::Begin {
                unique_keys: true,
                ..
            }
        )
    });

    // 1. Did it commit?
    let mut own: Option<(u64, Manifest)> = None;
    for r in entries.iter().rev() {
        if let Entry::Commit { dump_id } = *r {
            let manifest = match manifests.iter().find(|(id, _)| *id == dump_id) {
                Some((_, m)) => Some(m.clone()),
                None => read_manifest(conn, dump_id).await?,
            };
            if let Some(m) = manifest
                && m.s3conn.as_ref().is_some_and(|c| c.sync_id == sync_id)
            {
                committed.add(conn, dump_id, &m);
                own = Some((dump_id, m));
                break;
            }
        }
    }
    let keep: HashSet<String> = own
        .iter()
        .flat_map(|(_, m)| {
            m.s3conn
                .iter()
                .flat_map(|c| c.files.iter().map(|f| f.key.clone()))
        })
        .collect();

    let mut order: Vec<String> = Vec::new();
    let mut facts: HashMap<String, Facts> = HashMap::new();
    for r in entries {
        let Some(key) = r.key() else { continue };
        let f = facts.entry(key.to_owned()).or_insert_with(|| {
            order.push(key.to_owned());
            Facts::default()
        });
        match &r {
            Entry::Put { .. } => f.intended = true,
            Entry::Created { e_tag, .. } => f.created.push(e_tag.clone()),
            Entry::UploadStart { .. } => {
                f.intended = true;
                f.upload_started = true;
            }
            Entry::Upload { id, .. } => f.upload_ids.push(id.clone()),
            Entry::UploadDone { .. } => f.upload_done = true,
            Entry::Begin { .. } | Entry::Commit { .. } => {}
        }
    }

    // A local folder's manifest put killed half-way leaves a staging file beside it.
    if conn.is_local_folder() {
        for r in entries {
            if let Entry::Commit { dump_id } = *r {
                sweep_staging(conn, &manifest_path(conn, dump_id)?, &mut report).await?;
            }
        }
    }
    let mut guard = Guard::new(conn, committed);
    for key in &order {
        let Some(f) = facts.get(key) else { continue };
        let path = Path::parse(key).map_err(|e| {
            Error::Protocol(format!("a journal names the invalid key `{key}`: {e}"))
        })?;

        // What the key holds now, and whether it is provably this attempt's.
        let found = inspect(conn, &path).await?;
        let mut linked = false;
        if found.is_some() {
            for id in &f.upload_ids {
                if conn
                    .upload_created(&path, id)
                    .await
                    .map_err(|e| Error::store("inspect upload", conn.uri(&path), e))?
                    == Some(true)
                {
                    linked = true;
                }
            }
        }
        let proven = found.as_ref().is_some_and(|(meta, attempt)| {
            unique_keys
                || f.created.iter().any(|t| t.is_some() && *t == meta.e_tag)
                || attempt.as_deref() == Some(sync_id)
                || linked
        });
        let completed = f.upload_done || (proven && !f.upload_ids.is_empty());

        // 2. Delete what it provably created and no manifest lists (before its uploads: on
        // a local folder the upload is the proof).
        if let Some((meta, _)) = &found
            && !keep.contains(key)
            // Committed (by another delivery): not an orphan.
            && !committed.lists(key, meta.e_tag.as_deref())
        {
            if proven {
                // On S3, once the file is gone nothing shows that its upload completed (and
                // some servers refuse to abort a completed upload): say so first.
                let upload_done = completed && !f.upload_done && !conn.is_local_folder();
                delete_orphan(conn, journal, &mut guard, key, upload_done).await?;
            } else if !f.created.is_empty() {
                guard.leave(
                    key,
                    "it changed after an attempt that did not commit wrote it",
                );
            } else if f.intended {
                // Another writer's file, or this attempt's on a store that keeps no user
                // metadata: either way not provably this attempt's, so it stays, reported.
                guard.leave(
                    key,
                    "an attempt that did not commit was writing this key and nothing proves the file is its own (no s3conn-attempt metadata naming it): if no other writer uses this key, delete it by hand",
                );
            }
        }

        // 3. Uploads: a recorded one (on a local folder also a completed one, whose staging
        // file is released), then any open one of the key (an id not recorded yet, a local
        // folder's staging files).
        if !completed || conn.is_local_folder() {
            for id in &f.upload_ids {
                let Some(reason) = abort(conn, &path, id, &mut report, &mut guard).await else {
                    continue;
                };
                // Not there when looked at, and its upload will not abort: a completion the
                // killed attempt sent may be finishing. If the file comes and is provably
                // this attempt's, it goes like any other.
                let arrived = if found.is_none() {
                    wait_for_completion(conn, &path).await?
                } else {
                    None
                };
                match arrived {
                    Some((meta, attempt))
                        if (unique_keys || attempt.as_deref() == Some(sync_id))
                            && !keep.contains(key)
                            && !committed.lists(key, meta.e_tag.as_deref()) =>
                    {
                        delete_orphan(conn, journal, &mut guard, key, true).await?;
                    }
                    _ => guard.leave(path.as_ref(), reason),
                }
            }
        }
        if f.intended && (f.upload_started || conn.is_local_folder()) {
            // Any open upload of this key goes: an upload is never part of committed data,
            // and if another writer's went too, its completion fails and it tries again.
            // (Start times are not compared: some servers report fixed ones.)
            match retry::send("list uploads", || conn.open_uploads(&path)).await {
                Ok(Some(open)) => {
                    for upload in open {
                        if upload.key != path || f.upload_ids.contains(&upload.id) {
                            continue;
                        }
                        if let Some(reason) =
                            abort(conn, &path, &upload.id, &mut report, &mut guard).await
                        {
                            guard.leave(path.as_ref(), reason);
                        }
                    }
                }
                Ok(None) => {
                    if f.upload_started && f.upload_ids.is_empty() {
                        tracing::warn!(%key, "an upload was being started when the attempt stopped and this store cannot list open uploads: abort it with a lifecycle rule (AbortIncompleteMultipartUpload)");
                    }
                }
                Err(e) => {
                    report.unfinished = true;
                    guard.leave(key, format!("its open uploads could not be listed: {e}"));
                }
            }
        }
    }
    report.absorb(&guard);

    // 4. A full refresh it committed: retire what it replaced.
    if let Some((dump_id, manifest)) = &own {
        let retired = retire(conn, committed, manifests, pipeline_id, *dump_id, manifest).await?;
        report.deleted += retired.deleted;
        report.left.extend(retired.left);
    }
    Ok(report)
}

/// Delete the files of every table that `manifest` (dump `dump_id`) replaced (its tables with
/// `incremental: false`) which earlier manifests of `pipeline_id` listed. Another pipeline's
/// files are never touched.
pub(crate) async fn retire(
    conn: &Connection,
    committed: &Committed,
    manifests: &[(u64, Manifest)],
    pipeline_id: &str,
    dump_id: u64,
    manifest: &Manifest,
) -> Result<Cleanup> {
    let mut guard = Guard::new(conn, committed);
    for table in manifest.tables.iter().filter(|t| !t.incremental) {
        let keep: HashSet<String> = manifest
            .s3conn
            .iter()
            .flat_map(|c| c.files.iter())
            .filter(|f| f.table == table.name)
            .map(|f| f.key.clone())
            .collect();
        let mut retired = 0u64;
        for (_, earlier) in manifests.iter().filter(|(id, _)| *id < dump_id) {
            let Some(record) = &earlier.s3conn else {
                continue;
            };
            if record.pipeline_id.as_deref() != Some(pipeline_id) {
                continue;
            }
            let Some(t) = earlier
                .tables
                .iter()
                .find(|t| t.name == table.name && t.namespace == table.namespace)
            else {
                continue;
            };
            let listed: HashSet<String> = t
                .files
                .iter()
                .filter_map(|uri| crate::s3::deletion::key_of_uri(conn, uri))
                .collect();
            for key in record
                .files
                .iter()
                .map(|f| &f.key)
                .filter(|k| listed.contains(*k) && !keep.contains(*k))
            {
                if guard
                    .delete(
                        key,
                        Why::Retired {
                            pipeline_id,
                            dump_id,
                        },
                    )
                    .await?
                    == Outcome::Deleted
                {
                    retired += 1;
                }
            }
        }
        tracing::info!(table = %table.name, retired, "earlier generations retired");
        let mut others: Vec<&str> = manifests
            .iter()
            .filter(|(id, m)| {
                *id < dump_id
                    && m.tables
                        .iter()
                        .any(|t| t.name == table.name && t.namespace == table.namespace)
            })
            .filter_map(|(_, m)| m.s3conn.as_ref()?.pipeline_id.as_deref())
            .filter(|p| *p != pipeline_id)
            .collect();
        others.sort_unstable();
        others.dedup();
        if !others.is_empty() {
            tracing::warn!(
                table = %table.name,
                pipelines = ?others,
                "other pipelines also write this table: their files stay, but readers that follow manifests take this full refresh as replacing the whole table"
            );
        }
    }
    let mut report = Cleanup::default();
    report.absorb(&guard);
    Ok(report)
}
