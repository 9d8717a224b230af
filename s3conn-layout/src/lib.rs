//! Object key layouts for s3conn: path templates, delivery manifests and sync reports.
//!
//! This crate is pure: it parses and renders, it serializes and parses, and it never does I/O.
//! `s3conn-core`'s sink uses it to name the files it writes and to record what it committed;
//! hosts use it to read manifests back.
//!
//! # Name the files of a stream
//!
//! ```
//! use s3conn_layout::template::{RenderContext, Template};
//! use chrono::{TimeZone, Utc};
//!
//! let template: Template = "exports/${STREAM_NAME}/date=${DATE}/part-{part_number:05}{format_extension}".parse()?;
//! let time = Utc.with_ymd_and_hms(2024, 11, 27, 0, 0, 0).unwrap();
//! let ctx = RenderContext::new("users", time).with_part_number(1).with_format_extension(".parquet");
//! assert_eq!(template.render(&ctx)?, "exports/users/date=2024-11-27/part-00001.parquet");
//! # Ok::<(), s3conn_layout::Error>(())
//! ```
//!
//! # Follow deliveries
//!
//! See [`manifest::DeliveryLog`]: replay manifests in order to learn exactly which files of each
//! table are live.

#![deny(rustdoc::broken_intra_doc_links)]

mod error;
pub mod layouts;
pub mod manifest;
pub mod report;
pub mod template;

pub use error::{Error, Result};
pub use layouts::Layout;
pub use manifest::{DeliveryLog, FileRecord, Manifest, ReadPlan, TableDelivery};
pub use report::{SyncReport, SyncStatus};
pub use template::{RenderContext, Template, TemplateOptions};
