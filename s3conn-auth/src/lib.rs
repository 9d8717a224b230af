//! Connections for s3conn: where the data lives, and how to reach it.
//!
//! A [`ConnectionConfig`] names an S3 (or S3-compatible) bucket and prefix, or a local folder
//! standing in for one, with the credentials to use. [`ConnectionConfig::connect`] checks it
//! and returns a [`Connection`]: an `Arc<dyn ObjectStore>` built with object_store's
//! `AmazonS3Builder` (or `LocalFileSystem`), and the root path inside it.
//!
//! Secrets never print: [`Secret`] redacts itself in `Debug` and `Display`, and no error
//! message contains one. A plain-http endpoint is refused unless explicitly allowed.
//!
//! # Connect to a bucket
//!
//! ```
//! use s3conn_auth::ConnectionConfig;
//!
//! let connection = ConnectionConfig::s3("customer-data")
//!     .with_prefix("exports/v1")
//!     .with_region("eu-central-1")
//!     .connect()?;
//! assert_eq!(connection.url(), "s3://customer-data/exports/v1");
//! assert_eq!(connection.key("users/part-0.parquet")?.as_ref(), "exports/v1/users/part-0.parquet");
//! # Ok::<(), s3conn_auth::Error>(())
//! ```
//!
//! # Use a local folder as the bucket
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! use s3conn_auth::ConnectionConfig;
//! let connection = ConnectionConfig::local(dir.path().join("bucket")).connect()?;
//! assert!(connection.url().starts_with("file:///"));
//! # Ok::<(), s3conn_auth::Error>(())
//! ```

#![deny(rustdoc::broken_intra_doc_links)]

mod config;
mod error;

pub use config::{Connection, ConnectionConfig, Secret};
pub use error::{Error, Result};
