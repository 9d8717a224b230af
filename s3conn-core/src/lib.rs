//! s3conn: move data between applications and S3, without losing or repeating a file.
//!
//! A host embeds this crate to **pull** files from a customer's bucket incrementally
//! ([`s3::S3Source`]), to **push** records into a bucket as files with a manifest per
//! delivery and a report per run ([`s3::S3Sink`]), or to connect its own sources and sinks
//! through the same [`Pipeline`]. The three leaf crates are re-exported: [`formats`] (codec
//! plugins), [`layout`] (key templates, manifests, reports) and [`auth`] (connections,
//! credentials, IAM policies, connection checks).
//!
//! Records travel as Arrow `RecordBatch`es tagged with their stream and origin ([`Batch`]).
//! The pipeline saves the source's checkpoint only after the sink has committed the data,
//! and the sink's commit records the checkpoint, so a crash anywhere replays and never skips
//! or duplicates.
//!
//! # Move new NDJSON files from a bucket into Parquet files in another
//!
//! ```
//! use s3conn_core::auth::ConnectionConfig;
//! use s3conn_core::s3::{S3Sink, S3Source, S3StreamConfig};
//! use s3conn_core::state::LocalFileStateStore;
//! use s3conn_core::Pipeline;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> s3conn_core::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let landing = dir.path().join("bucket/landing/events");
//! # std::fs::create_dir_all(&landing).unwrap();
//! # std::fs::write(landing.join("a.jsonl"), "{\"user\": \"ana\", \"n\": 1}\n{\"user\": \"bo\", \"n\": 2}\n").unwrap();
//! // In production: ConnectionConfig::from_url("s3://customer-bucket/landing")?.with_region(…)
//! let from = ConnectionConfig::local(dir.path().join("bucket")).with_prefix("landing").connect()?;
//! let to = ConnectionConfig::local(dir.path().join("bucket")).with_prefix("warehouse").connect()?;
//!
//! let source = S3Source::builder(from)
//!     .with_stream(S3StreamConfig::new("events", "events").with_format("ndjson"))
//!     .build()?;
//! let sink = S3Sink::builder(to).build()?; // Parquet, default key template
//! let state = LocalFileStateStore::new(dir.path().join("state"))?;
//!
//! let mut pipeline = s3conn_core::Pipeline::new("events-to-warehouse", source, sink, state)?;
//! let report = pipeline.run().await?;
//! assert_eq!(report.rows, 2);
//! assert_eq!(pipeline.run().await?.rows, 0, "a second run moves only what is new");
//! # Ok(())
//! # }
//! ```
//!
//! # Write your own source or sink
//!
//! Implement [`Source`] (`streams`, `read`) or [`Sink`] (`begin`, `write`, `commit`), and
//! run the conformance suites of `s3conn_core::conformance` (feature `conformance`) in your
//! tests.

#![deny(rustdoc::broken_intra_doc_links)]

#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
pub mod failpoint;
mod lease;
pub mod memory;
mod pipeline;
mod record;
pub mod s3;
mod sink;
mod source;
pub mod state;

pub use error::{Error, Result};
pub use lease::DEFAULT_LEASE_TTL;
pub use pipeline::{CommitEvery, Pipeline, Progress, ProgressFn};
pub use record::{Batch, Position, StreamId, SyncMode};
pub use sink::{CommitReceipt, CommitRequest, Fence, Sink, SinkExt, SyncContext};
pub use source::{
    CheckpointSignal, Notice, ReadAll, ReadRequest, Source, SourceExt, SourceMessage, SourceState,
    SourceStream, StreamInfo,
};
pub use state::{StateStore, StateVersion, Versioned};

/// Connections: `s3conn-auth`.
pub use s3conn_auth as auth;
/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// Codec plugins: `s3conn-formats`.
pub use s3conn_formats as formats;
/// Key templates, manifests and reports: `s3conn-layout`.
pub use s3conn_layout as layout;
