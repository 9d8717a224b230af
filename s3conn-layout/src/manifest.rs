//! Delivery manifests: the record of which files make up each delivery.
//!
//! A manifest is what a consumer reads to know exactly which files to load: files in the
//! bucket that no manifest lists are not part of any delivery and must be ignored. Its
//! consumer-facing fields follow the layout consumers already depend on:
//!
//! ```json
//! {
//!   "dump_id": 1234,
//!   "tables": [
//!     { "name": "users", "files": ["s3://bucket/users/…parquet"], "columns": ["user_id"], "incremental": true }
//!   ],
//!   "property_definitions": "s3://bucket/property_definitions.json"
//! }
//! ```
//!
//! `incremental: false` marks a full resync of that table: every file of earlier deliveries of
//! that table is invalid. [`DeliveryLog`] replays a sequence of manifests and answers which
//! files are live.
//!
//! s3conn adds its own commit record under the `s3conn` key (per-file sizes, row counts,
//! ETags and the pipeline checkpoint the delivery commits). Readers ignore fields they do not
//! know, in both directions.
//!
//! ```
//! use s3conn_layout::manifest::{DeliveryLog, Manifest, TableDelivery};
//!
//! let first = Manifest::new(1, vec![TableDelivery::new("users", vec!["s3://b/u/1.parquet".into()], true)]);
//! let resync = Manifest::new(2, vec![TableDelivery::new("users", vec!["s3://b/u/2.parquet".into()], false)]);
//! let mut log = DeliveryLog::default();
//! log.apply(&first)?;
//! log.apply(&resync)?;
//! assert_eq!(log.files("users"), ["s3://b/u/2.parquet"]);
//! # Ok::<(), s3conn_layout::Error>(())
//! ```

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The folder, under a sink's root, that holds the manifests.
pub const MANIFEST_DIR: &str = "manifests";

/// The version of the `s3conn` commit record this crate writes.
pub const COMMIT_RECORD_VERSION: u32 = 1;

/// One delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// A monotonically increasing sequence number of deliveries.
    pub dump_id: u64,
    /// The tables (streams) this delivery carries.
    pub tables: Vec<TableDelivery>,
    /// URI of the property definitions file, when the host provides one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_definitions: Option<String>,
    /// s3conn's own commit record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3conn: Option<CommitRecord>,
}

/// The files of one table in one delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDelivery {
    /// The table (stream) name.
    pub name: String,
    /// The stream's namespace, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Full URIs (`s3://bucket/key`) of the files of this delivery.
    pub files: Vec<String>,
    /// The columns the files contain.
    #[serde(default)]
    pub columns: Vec<String>,
    /// `false` means a full resync: all earlier data of this table is invalid.
    pub incremental: bool,
}

/// s3conn's record of what a delivery committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitRecord {
    /// Version of this record's layout ([`COMMIT_RECORD_VERSION`]).
    pub version: u32,
    /// The pipeline that committed the delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<String>,
    /// The pipeline checkpoint sequence number this delivery commits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<u64>,
    /// The sync that wrote the delivery.
    pub sync_id: String,
    /// The attempt of the sync that wrote the delivery.
    pub attempt_id: String,
    /// When the manifest was committed, in epoch milliseconds.
    pub committed_at: i64,
    /// Every file of the delivery.
    pub files: Vec<FileRecord>,
}

/// One committed file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    /// The table (stream) the file belongs to.
    pub table: String,
    /// The object key, relative to the bucket.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Number of rows.
    pub rows: u64,
    /// The ETag the store returned when the file was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_tag: Option<String>,
    /// A fingerprint of the file's schema: files with equal fingerprints have equal schemas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_fingerprint: Option<String>,
    /// The checksum of the file's bytes, as `<algorithm>:<value>`: `crc64nvme:` with the
    /// base64 of the big-endian CRC-64/NVME, the form S3 reports for full-object checksums.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// The earliest record time in the file (epoch milliseconds), when a time column is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_min: Option<i64>,
    /// The latest record time in the file (epoch milliseconds), when a time column is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_max: Option<i64>,
}

impl FileRecord {
    /// A record of a file with no checksum, fingerprint or time range.
    pub fn new(table: impl Into<String>, key: impl Into<String>, size: u64, rows: u64) -> Self {
        Self {
            table: table.into(),
            key: key.into(),
            size,
            rows,
            e_tag: None,
            schema_fingerprint: None,
            checksum: None,
            time_min: None,
            time_max: None,
        }
    }
}

impl Manifest {
    /// A manifest with the given id and tables, and no s3conn commit record.
    pub fn new(dump_id: u64, tables: Vec<TableDelivery>) -> Self {
        Self {
            dump_id,
            tables,
            property_definitions: None,
            s3conn: None,
        }
    }

    /// Parse a manifest. Unknown fields are ignored.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|source| Error::Document {
            what: "manifest",
            source,
        })
    }

    /// Serialize the manifest as pretty JSON.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(|source| Error::Document {
            what: "manifest",
            source,
        })
    }

    /// The file name of this manifest within [`MANIFEST_DIR`].
    pub fn file_name(&self) -> String {
        manifest_file_name(self.dump_id)
    }
}

impl TableDelivery {
    /// A table entry with no namespace and no column list.
    pub fn new(name: impl Into<String>, files: Vec<String>, incremental: bool) -> Self {
        Self {
            name: name.into(),
            namespace: None,
            files,
            columns: Vec::new(),
            incremental,
        }
    }
}

/// The file name of manifest `dump_id`: zero-padded so that names sort like numbers.
pub fn manifest_file_name(dump_id: u64) -> String {
    format!("{dump_id:020}.json")
}

/// The dump id in a manifest file name written by [`manifest_file_name`].
pub fn parse_manifest_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The live files of every table after a sequence of manifests.
///
/// Apply manifests in `dump_id` order: an incremental table entry adds its files, a full
/// resync (`incremental: false`) replaces every earlier file of that table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryLog {
    last_dump_id: Option<u64>,
    tables: BTreeMap<String, Vec<String>>,
    superseded: BTreeMap<String, Vec<String>>,
}

/// What a consumer does with the files it finds under a prefix: [`DeliveryLog::plan`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadPlan {
    /// Live files, in delivery order: read these.
    pub read: Vec<String>,
    /// Files that are there but in no live delivery (superseded by a full resync, or never
    /// committed): ignore these.
    pub ignore: Vec<String>,
    /// Live files that are not there: a delivery is incomplete in this listing.
    pub missing: Vec<String>,
}

impl DeliveryLog {
    /// Apply the next manifest. Its `dump_id` must be greater than every one applied before.
    pub fn apply(&mut self, manifest: &Manifest) -> Result<()> {
        if let Some(last) = self.last_dump_id
            && manifest.dump_id <= last
        {
            return Err(Error::ManifestSequence {
                reason: format!(
                    "dump_id {} does not follow dump_id {last}; apply manifests in increasing dump_id order",
                    manifest.dump_id
                ),
            });
        }
        for table in &manifest.tables {
            let files = self.tables.entry(table.name.clone()).or_default();
            if !table.incremental {
                self.superseded
                    .entry(table.name.clone())
                    .or_default()
                    .append(files);
            }
            let mut known: HashSet<String> = files.iter().cloned().collect();
            for file in &table.files {
                if known.insert(file.clone()) {
                    files.push(file.clone());
                }
            }
        }
        self.last_dump_id = Some(manifest.dump_id);
        Ok(())
    }

    /// The live files of `table`, in delivery order.
    pub fn files(&self, table: &str) -> &[String] {
        self.tables.get(table).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The files of `table` that a full resync invalidated (their deletion may still be
    /// pending).
    pub fn superseded(&self, table: &str) -> &[String] {
        self.superseded.get(table).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether `uri` is a live file of any table.
    pub fn is_live(&self, uri: &str) -> bool {
        self.tables
            .values()
            .any(|files| files.iter().any(|f| f == uri))
    }

    /// Split the files found under a table's prefix into what to read and what to ignore.
    pub fn plan<'a>(&self, table: &str, listed: impl IntoIterator<Item = &'a str>) -> ReadPlan {
        let listed: HashSet<&str> = listed.into_iter().collect();
        let live = self.files(table);
        let live_set: HashSet<&str> = live.iter().map(String::as_str).collect();
        let mut ignore: Vec<String> = listed
            .iter()
            .filter(|f| !live_set.contains(*f))
            .map(|f| (*f).to_owned())
            .collect();
        ignore.sort();
        ReadPlan {
            read: live
                .iter()
                .filter(|f| listed.contains(f.as_str()))
                .cloned()
                .collect(),
            ignore,
            missing: live
                .iter()
                .filter(|f| !listed.contains(f.as_str()))
                .cloned()
                .collect(),
        }
    }

    /// Every table and its live files.
    pub fn tables(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.tables.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// The last applied `dump_id`.
    pub fn last_dump_id(&self) -> Option<u64> {
        self.last_dump_id
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn table(name: &str, files: &[&str], incremental: bool) -> TableDelivery {
        TableDelivery::new(
            name,
            files.iter().map(|f| f.to_string()).collect(),
            incremental,
        )
    }

    #[test]
    fn reads_the_consumer_example_and_ignores_unknown_fields() {
        let json = r#"{
          "dump_id": 1234,
          "tables": [
            {"name": "users", "files": ["s3://customer/sync_1234/users/a.avro"],
             "columns": ["user_id", "last_modified"], "incremental": true, "extra": 1},
            {"name": "user_migrations", "files": [], "columns": [], "incremental": false}
          ],
          "property_definitions": "s3://customer/sync_1234/property_definitions.json",
          "future_field": {"x": 1}
        }"#;
        let m = Manifest::from_json(json.as_bytes()).unwrap();
        assert_eq!(m.dump_id, 1234);
        assert_eq!(m.tables.len(), 2);
        assert_eq!(m.tables[0].columns, ["user_id", "last_modified"]);
        assert!(!m.tables[1].incremental);
        assert_eq!(
            m.property_definitions.as_deref(),
            Some("s3://customer/sync_1234/property_definitions.json")
        );
        let back = Manifest::from_json(&m.to_json().unwrap()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn malformed_manifest_names_the_line() {
        let err = Manifest::from_json(b"{\n \"dump_id\": \"x\"\n}").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn replay_incremental_full_incremental() {
        let mut log = DeliveryLog::default();
        log.apply(&Manifest::new(1, vec![table("t", &["a", "b"], true)]))
            .unwrap();
        log.apply(&Manifest::new(
            2,
            vec![table("t", &["c"], true), table("u", &["x"], true)],
        ))
        .unwrap();
        assert_eq!(log.files("t"), ["a", "b", "c"]);
        log.apply(&Manifest::new(3, vec![table("t", &["d"], false)]))
            .unwrap();
        assert_eq!(log.files("t"), ["d"]);
        assert_eq!(log.superseded("t"), ["a", "b", "c"]);
        assert_eq!(log.files("u"), ["x"], "a resync of t leaves u alone");
        log.apply(&Manifest::new(4, vec![table("t", &["e"], true)]))
            .unwrap();
        assert_eq!(log.files("t"), ["d", "e"]);
        assert!(log.is_live("e") && !log.is_live("a"));
        // A consumer lists the prefix: the old generation, an orphan of a crashed attempt,
        // and the live files; one live file has not appeared yet.
        let plan = log.plan("t", ["a", "orphan", "d", "c"]);
        assert_eq!(plan.read, ["d"]);
        assert_eq!(plan.ignore, ["a", "c", "orphan"]);
        assert_eq!(plan.missing, ["e"]);
        let err = log
            .apply(&Manifest::new(4, vec![table("t", &["f"], true)]))
            .unwrap_err();
        assert!(err.to_string().contains("does not follow"), "{err}");
        assert_eq!(log.last_dump_id(), Some(4));
    }

    #[test]
    fn manifest_file_names_sort_numerically() {
        assert_eq!(manifest_file_name(7), "00000000000000000007.json");
        assert_eq!(
            parse_manifest_file_name(&manifest_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_manifest_file_name("7.json"), None);
        assert_eq!(parse_manifest_file_name("0000000000000000000x.json"), None);
        assert!(manifest_file_name(9) < manifest_file_name(10));
    }
}
