//! The S3 source and sink: the project's own implementations of [`Source`](crate::Source)
//! and [`Sink`](crate::Sink), over any object store a [`Connection`](s3conn_auth::Connection)
//! gives (S3, S3-compatible stores, local folders, memory).

mod deletion;
mod journal;
mod partition;
mod recovery;
mod retry;
mod sink;
mod source;

pub use sink::{S3Sink, S3SinkBuilder};
pub use source::{
    DEFAULT_FULL_LISTING_INTERVAL, DEFAULT_LATE_WINDOW, DEFAULT_READ_MEMORY, DEFAULT_SETTLE_LAG,
    LatePolicy, READ_MEMORY_PER_OBJECT, S3Source, S3SourceBuilder, S3StreamConfig,
    default_read_concurrency,
};
