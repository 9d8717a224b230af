//! Connections for s3conn: where the data lives, how to reach it, which permissions it needs,
//! and whether it has them.
//!
//! A [`ConnectionConfig`] names an S3 (or S3-compatible) bucket and prefix, or a local folder
//! standing in for one, with the credentials to use. [`ConnectionConfig::connect`] checks it
//! and returns a [`Connection`]: an `Arc<dyn ObjectStore>` built with object_store's
//! `AmazonS3Builder` (or `LocalFileSystem`), and the root path inside it.
//!
//! - [`credentials`]: what object_store lacks: AssumeRole with an External ID, temporary
//!   credentials renewed before they expire (and on an `ExpiredToken` answer, through
//!   [`RefreshOnExpiry`]), named profiles of the shared AWS files;
//! - [`policy`]: the least-privilege IAM policy of a source or a sink, and the trust policy
//!   of a role assumed with an External ID;
//! - [`check`]: probe a connection permission by permission and say what is missing.
//!
//! Secrets never print: [`Secret`] redacts itself in `Debug` and `Display`, credential types
//! redact keys and tokens, and no error or log message contains one. A plain-http endpoint is
//! refused unless explicitly allowed.
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
//! # Assume a customer's role with an External ID
//!
//! ```
//! use s3conn_auth::ConnectionConfig;
//!
//! // The base credentials come from the default chain (environment, ~/.aws, web identity,
//! // container, instance profile); STS is called at the first request, and again before
//! // the temporary credentials expire.
//! let connection = ConnectionConfig::from_url("s3://customer-data/landing")?
//!     .with_region("eu-west-1")
//!     .with_role_arn("arn:aws:iam::123456789012:role/s3conn-reader")
//!     .with_external_id("tenant-42")
//!     .with_session_name("s3conn-sync")
//!     .connect()?;
//! # Ok::<(), s3conn_auth::Error>(())
//! ```
//!
//! # Generate the policies to give the customer
//!
//! ```
//! use s3conn_auth::ConnectionConfig;
//! use s3conn_auth::policy::{trust_policy, Role};
//!
//! let scope = ConnectionConfig::from_url("s3://customer-data/landing")?.scope()?;
//! let policy = scope.policy(Role::Source); // List on landing/, Get on landing/*
//! let trust = trust_policy("arn:aws:iam::210987654321:role/our-connector", "tenant-42")?;
//! println!("{}", serde_json::to_string_pretty(&policy).unwrap_or_default());
//! # Ok::<(), s3conn_auth::Error>(())
//! ```
//!
//! # Check what a connection can do
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> s3conn_auth::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! use s3conn_auth::ConnectionConfig;
//! use s3conn_auth::policy::Role;
//! let connection = ConnectionConfig::local(dir.path().join("bucket")).connect()?;
//! let report = connection.check(Role::Sink).await;
//! assert!(report.passed(), "{report}");
//! # Ok(())
//! # }
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

pub mod check;
mod config;
pub mod credentials;
mod error;
pub mod http;
pub mod policy;
mod profile;
mod refresh;
mod secret;
pub mod uploads;

pub use config::{Connection, ConnectionConfig, ConnectionConfigKey};
pub use error::{Error, Result};
pub use refresh::{EXPIRED_TOKEN_CODES, RefreshOnExpiry, is_expired_token};
pub use secret::Secret;
