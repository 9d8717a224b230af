//! Sync reports: one JSON document per run, under `sync_reports/`.
//!
//! The consumer-facing fields (`start_time`, `finish_time`, `next_sync_at` in epoch
//! milliseconds, `status`, `error`) follow the layout consumers already read; s3conn adds the
//! counts of what the run moved.
//!
//! ```
//! use s3conn_layout::report::{SyncReport, SyncStatus};
//! let report = SyncReport::new("sync-1", 1566968405225);
//! let json = String::from_utf8(report.to_json()?).unwrap();
//! assert!(json.contains("\"start_time\": 1566968405225"));
//! assert!(json.contains("\"error\": null"));
//! # Ok::<(), s3conn_layout::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The folder, under a sink's root, that holds the sync reports.
pub const REPORT_DIR: &str = "sync_reports";

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SyncStatus {
    /// Everything the run set out to move was committed.
    Succeeded,
    /// Nothing of the run was committed.
    Failed,
    /// Some of the run was committed and some was not (see `error`).
    Partial,
}

/// The report of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncReport {
    /// When the run started, in epoch milliseconds.
    pub start_time: i64,
    /// When the run finished, in epoch milliseconds.
    pub finish_time: i64,
    /// How the run ended.
    pub status: SyncStatus,
    /// When the host plans the next run, in epoch milliseconds.
    pub next_sync_at: Option<i64>,
    /// What went wrong, or `null`.
    pub error: Option<String>,
    /// Rows committed.
    pub rows: u64,
    /// Bytes committed (file sizes, after compression).
    pub bytes: u64,
    /// Files committed.
    pub files: u64,
    /// Rows the source skipped under its error policy.
    #[serde(default)]
    pub skipped_rows: u64,
    /// Objects that appeared below the source's settled watermark.
    #[serde(default)]
    pub late_arrivals: u64,
    /// Objects read again because they were rewritten (a new ETag for a key already read).
    #[serde(default)]
    pub overwrites: u64,
    /// Objects of a stream with ordered keys found out of order by a periodic full listing.
    #[serde(default)]
    pub out_of_order: u64,
    /// The id of the run.
    #[serde(default)]
    pub sync_id: String,
    /// The manifest the run committed last, when it committed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_id: Option<u64>,
    /// Every manifest the run committed, in order: a long sync commits in chunks, each a
    /// delivery of its own; the counts above sum them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<u64>,
    /// Per-stream counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<StreamReport>,
    /// Requests the run sent to the stores of its source and sink, retries included.
    #[serde(default)]
    pub requests: u64,
    /// Requests that failed in a way the client retries (a 5xx or SlowDown answer, a reset
    /// connection, a timeout): each was sent again, or ended the run when retries ran out.
    #[serde(default)]
    pub retries: u64,
    /// What the run finished or undid of earlier attempts of its pipeline before it began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryReport>,
}

/// What a run finished or undid of the earlier attempts of its pipeline (a sync killed or
/// failed part-way).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryReport {
    /// Earlier attempts finished.
    pub attempts: u64,
    /// Files deleted: what those attempts wrote and did not commit, and generations a full
    /// refresh they committed replaced.
    pub deleted: u64,
    /// Multipart uploads aborted.
    pub aborted_uploads: u64,
    /// Files left in place because nothing proved they could go, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left: Vec<LeftFile>,
}

/// A file the clean-up left in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftFile {
    /// The object key.
    pub key: String,
    /// Why it was left.
    pub reason: String,
}

/// What one stream moved in a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamReport {
    /// The stream name.
    pub name: String,
    /// The stream namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Rows committed.
    pub rows: u64,
    /// Bytes committed.
    pub bytes: u64,
    /// Files committed.
    pub files: u64,
}

impl SyncReport {
    /// An empty, successful report for a run that started at `start_time` (epoch ms).
    pub fn new(sync_id: impl Into<String>, start_time: i64) -> Self {
        Self {
            start_time,
            finish_time: start_time,
            status: SyncStatus::Succeeded,
            next_sync_at: None,
            error: None,
            rows: 0,
            bytes: 0,
            files: 0,
            skipped_rows: 0,
            late_arrivals: 0,
            overwrites: 0,
            out_of_order: 0,
            sync_id: sync_id.into(),
            dump_id: None,
            deliveries: Vec::new(),
            streams: Vec::new(),
            requests: 0,
            retries: 0,
            recovery: None,
        }
    }

    /// Serialize as pretty JSON.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(|source| Error::Document {
            what: "sync report",
            source,
        })
    }

    /// Parse a report. Unknown fields are ignored.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|source| Error::Document {
            what: "sync report",
            source,
        })
    }

    /// The file name of this report within [`REPORT_DIR`]: sorts by start time.
    pub fn file_name(&self) -> String {
        format!("{:013}_{}.json", self.start_time, self.sync_id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_the_consumer_example() {
        let json = r#"{"start_time":1566968405225,"finish_time":1566968649169,"status":"succeeded","next_sync_at":1567054800000,"error":null}"#;
        let r: SyncReport = serde_json::from_str(&json.replace(
            "\"error\":null",
            "\"error\":null,\"rows\":0,\"bytes\":0,\"files\":0",
        ))
        .unwrap();
        assert_eq!(r.start_time, 1566968405225);
        assert_eq!(r.next_sync_at, Some(1567054800000));
        assert_eq!(r.status, SyncStatus::Succeeded);
        assert_eq!(r.error, None);
    }

    #[test]
    fn status_and_error_serialize_as_consumers_expect() {
        let mut r = SyncReport::new("s", 5);
        r.status = SyncStatus::Failed;
        r.error = Some("boom".into());
        let v: serde_json::Value = serde_json::from_slice(&r.to_json().unwrap()).unwrap();
        assert_eq!(v["status"], "failed");
        assert_eq!(v["error"], "boom");
        assert_eq!(v["next_sync_at"], serde_json::Value::Null);
        assert_eq!(SyncReport::from_json(&r.to_json().unwrap()).unwrap(), r);
        assert_eq!(r.file_name(), "0000000000005_s.json");
    }
}
