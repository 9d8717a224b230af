//! The journal of one sink attempt: what it was about to do and what it did, written to the
//! bucket before and after every step that creates an object, so that a later run can
//! finish or undo the work of an attempt that was killed.
//!
//! ```text
//!  _s3conn/attempts/<pipeline>/<sync_id>/0000000000.json   {"version":2,"sync_id":…,"entries":[…]}
//!                                        0000000001.json   …
//! ```
//!
//! Records are created with `PutMode::Create` and never rewritten: appending costs one small
//! PUT, however many files the attempt has written (the intent log before this one was one
//! object rewritten whole for every key, its bytes growing with the square of the file
//! count). Entries that must be durable before a step (an intent to create an object, an
//! upload id, the dump id being claimed) are written at once; entries that only make the
//! clean-up cheaper (`Created`, on S3) ride along with the next record.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::failpoint;
use crate::s3::retry;

/// The layout version of journal records.
pub(crate) const JOURNAL_VERSION: u32 = 2;

/// One thing an attempt records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Entry {
    /// The attempt started. `unique_keys`: its keys carry the sync id or a fresh UUID, so
    /// no other writer can have created them.
    Begin {
        pipeline_id: String,
        unique_keys: bool,
    },
    /// About to create `key` with one PUT (carrying this attempt's id as metadata, where
    /// the store keeps metadata).
    Put { key: String },
    /// About to start a multipart upload of `key`.
    UploadStart { key: String },
    /// The multipart upload of `key` has this id.
    Upload { key: String, id: String },
    /// `key` was created by this attempt and had `e_tag`.
    Created { key: String, e_tag: Option<String> },
    /// About to claim manifest `dump_id`.
    Commit { dump_id: u64 },
    /// Written by the clean-up of an attempt: the upload of `key` completed into a file of
    /// the attempt, which the clean-up is about to delete (a later clean-up must not try to
    /// abort that upload).
    UploadDone { key: String },
}

impl Entry {
    /// The data key the entry is about, if any.
    pub(crate) fn key(&self) -> Option<&str> {
        match self {
            Self::Put { key }
            | Self::UploadStart { key }
            | Self::Upload { key, .. }
            | Self::Created { key, .. }
            | Self::UploadDone { key } => Some(key),
            Self::Begin { .. } | Self::Commit { .. } => None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    version: u32,
    sync_id: String,
    entries: Vec<Entry>,
}

/// The journal an attempt appends to.
#[derive(Debug)]
pub(crate) struct Journal {
    dir: Path,
    sync_id: String,
    /// The first record this object wrote, and the next one it writes.
    first: u64,
    next: u64,
    pending: Vec<Entry>,
    /// Everything recorded or pending, in order (what an in-process abort undoes).
    all: Vec<Entry>,
    /// Records written and their bytes (protocol overhead, for the report and benches).
    pub(crate) records: u64,
    pub(crate) bytes: u64,
}

impl Journal {
    pub(crate) fn new(dir: Path, sync_id: &str) -> Self {
        Self::resume(dir, sync_id, 0)
    }

    /// Append to the journal of an attempt that has `next` records already.
    pub(crate) fn resume(dir: Path, sync_id: &str, next: u64) -> Self {
        Self {
            dir,
            sync_id: sync_id.to_owned(),
            first: next,
            next,
            pending: Vec::new(),
            all: Vec::new(),
            records: 0,
            bytes: 0,
        }
    }

    /// The records this journal object wrote.
    pub(crate) fn written(&self) -> Vec<Path> {
        (self.first..self.next)
            .map(|n| self.dir.clone().join(format!("{n:010}.json")))
            .collect()
    }

    /// Every entry so far, written or not.
    pub(crate) fn entries(&self) -> &[Entry] {
        &self.all
    }

    /// Add `entry` to the next record, without writing it now.
    pub(crate) fn push(&mut self, entry: Entry) {
        self.all.push(entry.clone());
        self.pending.push(entry);
    }

    /// Add `entry` and write every pending entry now.
    pub(crate) async fn write(
        &mut self,
        conn: &s3conn_auth::Connection,
        entry: Entry,
    ) -> Result<()> {
        self.push(entry);
        self.flush(conn).await
    }

    /// Write the pending entries as one record.
    pub(crate) async fn flush(&mut self, conn: &s3conn_auth::Connection) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let record = Record {
            version: JOURNAL_VERSION,
            sync_id: self.sync_id.clone(),
            entries: std::mem::take(&mut self.pending),
        };
        let path = self.dir.clone().join(format!("{:010}.json", self.next));
        let json = serde_json::to_vec(&record).map_err(|e| Error::State {
            key: conn.uri(&path),
            reason: e.to_string(),
        })?;
        let len = json.len() as u64;
        let payload = PutPayload::from(Bytes::from(json));
        match retry::send("put journal record", || {
            conn.store()
                .put_opts(&path, payload.clone(), PutOptions::from(PutMode::Create))
        })
        .await
        {
            // Only this attempt writes under its sync id: a record that exists is this one,
            // landed by a retry whose first answer was lost.
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => {
                // Keep the entries for the next try.
                self.pending = record.entries;
                return Err(Error::store("put", conn.uri(&path), e));
            }
        }
        self.next += 1;
        self.records += 1;
        self.bytes += len;
        failpoint::hit("sink.journal.after_write");
        Ok(())
    }
}

/// The journals under `attempts_dir` (one folder per attempt), and objects there that are
/// not journal records (logs of an earlier layout), by sync id.
pub(crate) struct Found {
    pub(crate) attempts: BTreeMap<String, Vec<(Path, DateTime<Utc>)>>,
    pub(crate) foreign: Vec<Path>,
}

/// List the attempts' records under `dir` (`_s3conn/attempts/<pipeline>`).
pub(crate) async fn list(conn: &s3conn_auth::Connection, dir: &Path) -> Result<Found> {
    let depth = dir.parts().count();
    let metas: Vec<_> = conn
        .store()
        .list(Some(dir))
        .try_collect()
        .await
        .map_err(|e| Error::store("list", conn.uri(dir), e))?;
    let mut found = Found {
        attempts: BTreeMap::new(),
        foreign: Vec::new(),
    };
    for meta in metas {
        let parts: Vec<String> = meta
            .location
            .parts()
            .skip(depth)
            .map(|p| p.as_ref().to_owned())
            .collect();
        match parts.as_slice() {
            [sync_id, name] if is_record_name(name) => {
                found
                    .attempts
                    .entry(sync_id.clone())
                    .or_default()
                    .push((meta.location, meta.last_modified));
            }
            _ => found.foreign.push(meta.location),
        }
    }
    for records in found.attempts.values_mut() {
        records.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
    }
    Ok(found)
}

fn is_record_name(name: &str) -> bool {
    name.strip_suffix(".json")
        .is_some_and(|n| n.len() == 10 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Read the entries of one attempt's records, in order. A record that cannot be read as a
/// journal record is an error: the clean-up must not guess.
pub(crate) async fn read(
    conn: &s3conn_auth::Connection,
    sync_id: &str,
    records: &[(Path, DateTime<Utc>)],
) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for (path, _) in records {
        let got = retry::send("get journal record", || async {
            conn.store().get(path).await?.bytes().await
        })
        .await;
        let bytes = match got {
            Ok(bytes) => bytes,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(Error::store("get", conn.uri(path), e)),
        };
        let record: Record = serde_json::from_slice(&bytes).map_err(|e| Error::State {
            key: conn.uri(path),
            reason: format!("not a journal record: {e}"),
        })?;
        if record.version != JOURNAL_VERSION || record.sync_id != sync_id {
            return Err(Error::State {
                key: conn.uri(path),
                reason: format!(
                    "journal record of version {} for sync `{}` in the folder of sync `{sync_id}`",
                    record.version, record.sync_id
                ),
            });
        }
        entries.extend(record.entries);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_as_written() {
        let entries = vec![
            Entry::Begin {
                pipeline_id: "p".into(),
                unique_keys: false,
            },
            Entry::Put {
                key: "t/part-0.parquet".into(),
            },
            Entry::Created {
                key: "t/part-0.parquet".into(),
                e_tag: Some("\"abc\"".into()),
            },
            Entry::UploadStart { key: "t/1".into() },
            Entry::Upload {
                key: "t/1".into(),
                id: "u".into(),
            },
            Entry::UploadDone { key: "t/1".into() },
            Entry::Commit { dump_id: 3 },
        ];
        let json = serde_json::to_string(&Record {
            version: JOURNAL_VERSION,
            sync_id: "s".into(),
            entries: entries.clone(),
        })
        .unwrap();
        assert!(json.contains(r#""op":"upload_start""#), "{json}");
        let back: Record = serde_json::from_str(&json).unwrap();
        assert_eq!(back.entries, entries);
        assert!(is_record_name("0000000012.json"));
        assert!(!is_record_name("12.json"));
    }
}
