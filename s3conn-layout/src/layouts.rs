//! Ready-made layouts users already know, each one line to select.
//!
//! | layout | keys |
//! |---|---|
//! | [`stream_folders`] (the default) | `<namespace>/<stream>/<yyyy>_<MM>_<dd>_<epoch>_<part>.<ext>` (no namespace: no folder) |
//! | [`export`] | `<stream>/date=<yyyy-MM-dd>/part-<00000>.<format>[.<compression>]` |
//! | [`hive_job`] | `<destination prefix>_<database>_<schema>_<stream>/year=<yyyy>/month=<MM>/day=<dd>/job_id=<sync>/part-<00000>.<ext>` |
//!
//! The connection's root path comes before every key. A [`Layout`] names one, for
//! configuration files (`layout = "export"`).
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use s3conn_layout::layouts;
//! use s3conn_layout::template::RenderContext;
//!
//! let time = Utc.with_ymd_and_hms(2024, 11, 27, 8, 30, 0).unwrap();
//! let ctx = RenderContext::new("table_1", time)
//!     .with_sync_id("d12d74f4-d647-4929-a5a6-d329afd916f4")
//!     .with_format_extension(".csv.gz");
//! let template = layouts::hive_job("s3_1", "db1", "public")?;
//! assert_eq!(
//!     template.render(&ctx)?,
//!     "s3_1_db1_public_table_1/year=2024/month=11/day=27/job_id=d12d74f4-d647-4929-a5a6-d329afd916f4/part-00000.csv.gz"
//! );
//! # Ok::<(), s3conn_layout::Error>(())
//! ```

use std::str::FromStr;

use crate::error::{Error, Result};
use crate::template::{DEFAULT_TEMPLATE, Template, TemplateOptions};

const STREAM_FOLDERS: &str = DEFAULT_TEMPLATE;
const EXPORT: &str = "${STREAM_NAME}/date=${DATE}/part-{part_number:05}{format_extension}";
const HIVE_JOB: &str = "${destination_prefix}_${database}_${schema}_${STREAM_NAME}/${YEAR}/${MONTH}/${DAY}/${JOB_ID}/part-{part_number:05}{format_extension}";

/// A folder per stream with `<date>_<epoch>_<part>.<ext>` file names; the optional
/// namespace folder disappears when the stream has none.
pub fn stream_folders() -> Template {
    parse_builtin(STREAM_FOLDERS, &TemplateOptions::default())
}

/// The export layout: a folder per table, a `date=YYYY-MM-DD` folder per sync date, and
/// numbered parts (`part-00000.parquet`, `part-00001.jsonl.gz`). Parts of a later sync on the
/// same date take the next free numbers.
pub fn export() -> Template {
    parse_builtin(EXPORT, &TemplateOptions::default())
}

/// Hive partitions by sync date and job under a folder named
/// `<destination_prefix>_<database>_<schema>_<stream>`.
pub fn hive_job(destination_prefix: &str, database: &str, schema: &str) -> Result<Template> {
    Layout::HiveJob {
        destination_prefix: destination_prefix.into(),
        database: database.into(),
        schema: schema.into(),
    }
    .template_with(TemplateOptions::default())
}

/// The built-in templates are constants covered by tests; parsing them cannot fail.
fn parse_builtin(source: &str, options: &TemplateOptions) -> Template {
    match Template::parse_with(source, options) {
        Ok(t) => t,
        Err(e) => unreachable!("built-in template `{source}` does not parse: {e}"),
    }
}

/// A ready-made layout, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Layout {
    /// [`stream_folders`]: `stream_folders`.
    StreamFolders,
    /// [`export`]: `export`.
    Export,
    /// [`hive_job`]: `hive_job`.
    HiveJob {
        /// The destination prefix.
        destination_prefix: String,
        /// The database name.
        database: String,
        /// The schema name.
        schema: String,
    },
}

impl Layout {
    /// The layout's template.
    pub fn template(&self) -> Result<Template> {
        self.template_with(TemplateOptions::default())
    }

    /// The layout's template, read with `options` (a time zone, a time column, a character
    /// policy); the layout adds what it needs itself (Hive mode and static values).
    pub fn template_with(&self, options: TemplateOptions) -> Result<Template> {
        match self {
            Self::StreamFolders => Template::parse_with(STREAM_FOLDERS, &options),
            Self::Export => Template::parse_with(EXPORT, &options),
            Self::HiveJob {
                destination_prefix,
                database,
                schema,
            } => Template::parse_with(
                HIVE_JOB,
                &options
                    .with_hive(true)
                    .with_static("destination_prefix", destination_prefix.as_str())
                    .with_static("database", database.as_str())
                    .with_static("schema", schema.as_str()),
            ),
        }
    }
}

impl FromStr for Layout {
    type Err = Error;

    /// `stream_folders`, `export`, or `hive_job:<destination prefix>:<database>:<schema>`.
    fn from_str(s: &str) -> Result<Self> {
        let mut parts = s.split(':');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("stream_folders"), None, ..) => Ok(Self::StreamFolders),
            (Some("export"), None, ..) => Ok(Self::Export),
            (Some("hive_job"), Some(p), Some(d), Some(sc), None) => Ok(Self::HiveJob {
                destination_prefix: p.into(),
                database: d.into(),
                schema: sc.into(),
            }),
            _ => Err(Error::Unsuitable {
                template: String::new(),
                reason: format!(
                    "layout `{s}`: use stream_folders, export or hive_job:<destination prefix>:<database>:<schema>"
                ),
            }),
        }
    }
}
