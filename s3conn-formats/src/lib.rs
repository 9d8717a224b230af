//! Codec plugins for s3conn: file bytes in, Arrow `RecordBatch`es out, and back.
//!
//! This crate knows bytes and Arrow, never storage: decoders are fed bytes (or asked for byte
//! ranges), encoders produce bytes for the caller to ship. `s3conn-core` connects them to
//! object stores; a host can use them on local files or memory just as well.
//!
//! - [`FormatPlugin`] is the trait a format implements; [`Registry`] finds plugins by name,
//!   extension or object key. Built in: [`ndjson::NdjsonFormat`] (feature `json`),
//!   [`parquet::ParquetFormat`] (feature `parquet`) and [`avro::AvroFormat`] (feature `avro`).
//! - [`compression`] detects whole-file compression from magic bytes, `Content-Encoding` and
//!   extension, and streams decompression.
//!
//! # Decode a file in chunks
//!
//! ```
//! use s3conn_formats::{Decoder, DecodeInput, DecodeOptions, Registry};
//!
//! let registry = Registry::default();
//! let found = registry.for_path("events/2024-11-27.jsonl").unwrap();
//! let Decoder::Stream(mut decoder) =
//!     found.plugin.decoder(&DecodeInput::default(), &DecodeOptions::default())?
//! else { unreachable!("NDJSON is a stream format") };
//!
//! let mut rows = 0;
//! for chunk in [&b"{\"user\": \"ana\", \"n\": 1}\n{\"user\": \"bo"[..], &b"b\", \"n\": 2}\n"[..]] {
//!     decoder.decode(chunk)?;
//!     while let Some(batch) = decoder.next_batch() { rows += batch.num_rows(); }
//! }
//! decoder.finish()?;
//! while let Some(batch) = decoder.next_batch() { rows += batch.num_rows(); }
//! assert_eq!(rows, 2);
//! # Ok::<(), s3conn_formats::Error>(())
//! ```
//!
//! # Encode batches to bytes
//!
//! ```
//! use std::sync::Arc;
//! use arrow_array::{Int64Array, RecordBatch};
//! use s3conn_formats::{compression::Compression, EncodeOptions, Registry};
//!
//! let batch = RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from(vec![1, 2])) as _)]).unwrap();
//! let plugin = Registry::default().get("ndjson")?;
//! let options = EncodeOptions::default().with_compression(Compression::Gzip);
//! let mut encoder = plugin.encoder(batch.schema(), &options)?;
//! encoder.write(&batch)?;
//! let mut file = encoder.take_output().to_vec();
//! file.extend_from_slice(&encoder.finish()?);
//! assert_eq!(&file[..2], b"\x1f\x8b");
//! assert_eq!(encoder.bytes_written(), file.len() as u64);
//! # Ok::<(), s3conn_formats::Error>(())
//! ```

#![deny(rustdoc::broken_intra_doc_links)]

#[cfg(feature = "avro")]
pub mod avro;
pub mod compression;
#[cfg(feature = "csv")]
pub mod csv;
mod error;
pub mod infer;
#[cfg(feature = "json")]
pub mod json;
#[cfg(feature = "json")]
pub mod ndjson;
#[cfg(feature = "parquet")]
pub mod parquet;
mod plugin;
mod registry;
pub mod shape;
#[cfg(test)]
mod testing;

pub use error::{Error, Result};
pub use plugin::{
    DecodeInput, DecodeOptions, Decoder, EncodeOptions, Encoder, ErrorPolicy, FormatPlugin,
    RangedDecoder, RangedStep, StreamDecoder, file_extension,
};
pub use registry::{PathMatch, Registry};

/// Re-exported so hosts and plugins name the same Arrow types.
pub use arrow_array::RecordBatch;
/// Re-exported so hosts and plugins name the same Arrow types.
pub use arrow_schema::{Schema, SchemaRef};
