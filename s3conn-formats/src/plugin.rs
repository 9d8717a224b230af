//! The codec-plugin traits: what a format must provide to be read and written by s3conn.
//!
//! A [`FormatPlugin`] names a format (name, file extensions, content type) and makes
//! decoders and encoders for it. Decoders come in two shapes, because formats do:
//!
//! - a [`StreamDecoder`] is fed the bytes of a file in order, in chunks of any size, and hands
//!   out `RecordBatch`es of bounded size as it goes (NDJSON, CSV, Avro). Memory is bounded by
//!   the batch size, never by the file size.
//! - a [`RangedDecoder`] says which byte ranges it needs next and is given them (Parquet, whose
//!   footer comes last). The caller fetches ranges from wherever the file lives.
//!
//! An [`Encoder`] turns batches into bytes that the caller drains with
//! [`Encoder::take_output`] and ships wherever it likes; it never does I/O itself, so the
//! same encoder writes to a multipart upload, a local file or memory.
//!
//! # Write a plugin
//!
//! ```
//! use std::sync::Arc;
//! use arrow_array::RecordBatch;
//! use arrow_schema::SchemaRef;
//! use s3conn_formats::{Decoder, DecodeInput, DecodeOptions, FormatPlugin, Registry, Result};
//!
//! /// A read-only plugin that recognises `.log` files and decodes them as NDJSON.
//! #[derive(Debug)]
//! struct Logs;
//!
//! impl FormatPlugin for Logs {
//!     fn name(&self) -> &str { "logs" }
//!     fn extensions(&self) -> &[&str] { &["log"] }
//!     fn content_type(&self) -> &str { "text/plain" }
//!     fn decoder(&self, input: &DecodeInput, options: &DecodeOptions) -> Result<Decoder> {
//!         s3conn_formats::ndjson::NdjsonFormat.decoder(input, options)
//!     }
//! }
//!
//! let mut registry = Registry::default();
//! registry.register(Arc::new(Logs));
//! let found = registry.for_path("app/2024/01/01/a.log.gz").unwrap();
//! assert_eq!(found.plugin.name(), "logs");
//! ```

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;

use crate::compression::Compression;
use crate::error::{Error, Result};

/// A file format s3conn can read and/or write.
///
/// Only [`name`](Self::name), [`extensions`](Self::extensions) and
/// [`content_type`](Self::content_type) are required: a read-only plugin implements
/// [`decoder`](Self::decoder), a write-only plugin [`encoder`](Self::encoder).
pub trait FormatPlugin: Send + Sync + fmt::Debug + 'static {
    /// The format's name, used in configuration (`ndjson`, `parquet`).
    fn name(&self) -> &str;

    /// File extensions without the dot, lower case; the first is used when writing.
    fn extensions(&self) -> &[&str];

    /// The MIME content type of a file of this format.
    fn content_type(&self) -> &str;

    /// Whether the format compresses its own content (Parquet, Avro). Such formats are never
    /// wrapped in whole-file compression, and their files are never decompressed first.
    fn is_self_compressing(&self) -> bool {
        false
    }

    /// A decoder for one file.
    fn decoder(&self, input: &DecodeInput, options: &DecodeOptions) -> Result<Decoder> {
        let _ = (input, options);
        Err(Error::Unsupported {
            what: format!("the `{}` plugin cannot read", self.name()),
        })
    }

    /// This plugin with one of its settings changed, by name: how hosts configure formats
    /// from text (a config file, a command line). Each plugin documents its keys (CSV:
    /// `delimiter`, `header`, `quote`…). The default knows no keys.
    fn with_option(&self, key: &str, value: &str) -> Result<Arc<dyn FormatPlugin>> {
        let _ = value;
        Err(Error::InvalidOption {
            option: "format option",
            reason: format!("the `{}` format has no option `{key}`", self.name()),
        })
    }

    /// Check that this plugin can write with `options` (its codec and level), before any
    /// file is opened. The default accepts the whole-file codecs of text formats.
    fn check_encode_options(&self, options: &EncodeOptions) -> Result<()> {
        options.whole_file_compression().map(|_| ())
    }

    /// An encoder for one file of `schema`.
    fn encoder(&self, schema: SchemaRef, options: &EncodeOptions) -> Result<Box<dyn Encoder>> {
        let _ = (schema, options);
        Err(Error::Unsupported {
            what: format!("the `{}` plugin cannot write", self.name()),
        })
    }
}

/// `Arc<P>` and `Box<P>` are plugins too.
macro_rules! forward_plugin {
    ($($pointer:ident),*) => {$(
        impl<T: FormatPlugin + ?Sized> FormatPlugin for $pointer<T> {
            fn name(&self) -> &str {
                (**self).name()
            }
            fn extensions(&self) -> &[&str] {
                (**self).extensions()
            }
            fn content_type(&self) -> &str {
                (**self).content_type()
            }
            fn is_self_compressing(&self) -> bool {
                (**self).is_self_compressing()
            }
            fn check_encode_options(&self, options: &EncodeOptions) -> Result<()> {
                (**self).check_encode_options(options)
            }
            fn with_option(&self, key: &str, value: &str) -> Result<Arc<dyn FormatPlugin>> {
                (**self).with_option(key, value)
            }
            fn decoder(&self, input: &DecodeInput, options: &DecodeOptions) -> Result<Decoder> {
                (**self).decoder(input, options)
            }
            fn encoder(
                &self,
                schema: SchemaRef,
                options: &EncodeOptions,
            ) -> Result<Box<dyn Encoder>> {
                (**self).encoder(schema, options)
            }
        }
    )*};
}

forward_plugin!(Arc, Box);

/// What a decoder may know about the file before reading it.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DecodeInput {
    /// The file's size in bytes (required by ranged decoders).
    pub size: Option<u64>,
}

impl DecodeInput {
    /// An input of known size.
    pub fn with_size(size: u64) -> Self {
        Self { size: Some(size) }
    }
}

/// A decoder of one file, in the shape the format needs.
#[derive(Debug)]
pub enum Decoder {
    /// Feed the file's bytes in order.
    Stream(Box<dyn StreamDecoder>),
    /// Answer the decoder's requests for byte ranges.
    Ranged(Box<dyn RangedDecoder>),
}

/// A push-style decoder: feed chunks of the file in order, take batches out.
///
/// ```
/// use s3conn_formats::{ndjson::NdjsonFormat, DecodeInput, DecodeOptions, Decoder, FormatPlugin};
///
/// let Decoder::Stream(mut decoder) =
///     NdjsonFormat.decoder(&DecodeInput::default(), &DecodeOptions::default())?
/// else { unreachable!() };
/// let mut rows = 0;
/// for chunk in [&b"{\"a\": 1}\n{\"a\""[..], &b": 2}\n"[..]] {
///     decoder.decode(chunk)?;
///     while let Some(batch) = decoder.next_batch() { rows += batch.num_rows(); }
/// }
/// decoder.finish()?;
/// while let Some(batch) = decoder.next_batch() { rows += batch.num_rows(); }
/// assert_eq!(rows, 2);
/// # Ok::<(), s3conn_formats::Error>(())
/// ```
pub trait StreamDecoder: Send + fmt::Debug {
    /// Feed the next bytes of the file. Every byte is taken; complete batches become
    /// available from [`next_batch`](Self::next_batch). A chunk can hold any number of
    /// records, or part of one.
    fn decode(&mut self, buf: &[u8]) -> Result<()>;

    /// The file has ended: decode whatever is still buffered (an error if the file ends in
    /// the middle of a record). Then drain [`next_batch`](Self::next_batch).
    fn finish(&mut self) -> Result<()>;

    /// The next complete batch, if one is ready.
    fn next_batch(&mut self) -> Option<RecordBatch>;

    /// Rows skipped so far under [`ErrorPolicy::Skip`].
    fn skipped_rows(&self) -> u64 {
        0
    }

    /// The schema of the batches, once the decoder knows it (after inference, or from a
    /// header). A file with a header and no rows has a schema and no batch.
    fn schema(&self) -> Option<SchemaRef> {
        None
    }
}

/// What a [`RangedDecoder`] wants next.
#[derive(Debug)]
pub enum RangedStep {
    /// Fetch these byte ranges and give them to [`RangedDecoder::push_ranges`].
    NeedsData(Vec<Range<u64>>),
    /// A decoded batch.
    Batch(RecordBatch),
    /// The file is fully decoded.
    Finished,
}

/// A decoder that asks for byte ranges of the file (for formats with a footer, like Parquet).
pub trait RangedDecoder: Send + fmt::Debug {
    /// Decode the next batch, or say which bytes are needed to make progress.
    fn try_decode(&mut self) -> Result<RangedStep>;

    /// Give the decoder the bytes of the ranges it asked for.
    fn push_ranges(&mut self, ranges: Vec<Range<u64>>, data: Vec<Bytes>) -> Result<()>;

    /// The schema of the batches, once the decoder knows it (Parquet: after the footer). A
    /// file with no rows still has one.
    fn schema(&self) -> Option<SchemaRef> {
        None
    }
}

/// An encoder of one file.
///
/// Bytes are produced into an internal buffer; the caller drains it with
/// [`take_output`](Self::take_output) after each write and ships the bytes. Size accounting
/// is after compression, so a caller can roll files on their real size.
pub trait Encoder: Send + fmt::Debug {
    /// Encode a batch. It must have the schema the encoder was made for.
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;

    /// Push rows buffered inside the encoder (a Parquet row group in progress) into the
    /// output, where the format allows it.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    /// Take the bytes produced so far.
    fn take_output(&mut self) -> Bytes;

    /// End the file: returns the last bytes (footer, compression trailer).
    fn finish(&mut self) -> Result<Bytes>;

    /// Bytes produced so far, after compression, including bytes already taken.
    fn bytes_written(&self) -> u64;

    /// Bytes held in memory that are not yet output (an open row group).
    fn buffered_bytes(&self) -> usize {
        0
    }
}

/// What to do with a record that cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ErrorPolicy {
    /// Stop with an error that names the line (the default: nothing is dropped silently).
    #[default]
    Fail,
    /// Skip the record and count it (see [`StreamDecoder::skipped_rows`]).
    Skip,
    /// Keep the record: values that do not fit the schema (and fields the schema does not
    /// have) are set aside, as a JSON object, in the rescue column
    /// ([`DecodeOptions::rescue_column`]), and the record's other values are kept.
    Rescue,
}

impl std::str::FromStr for ErrorPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "fail" => Ok(Self::Fail),
            "skip" => Ok(Self::Skip),
            "rescue" => Ok(Self::Rescue),
            other => Err(Error::InvalidOption {
                option: "error policy",
                reason: format!("`{other}`: use fail, skip or rescue"),
            }),
        }
    }
}

/// Options for decoding.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DecodeOptions {
    /// Rows per batch.
    pub batch_size: usize,
    /// The schema to decode with; inferred from a sample of the file when absent.
    pub schema: Option<SchemaRef>,
    /// The most rows inference looks at.
    pub infer_rows: usize,
    /// The most bytes inference buffers.
    pub infer_bytes: usize,
    /// What to do with a bad record.
    pub on_error: ErrorPolicy,
    /// The longest line a text decoder buffers before it gives up.
    pub max_line_bytes: usize,
    /// The column that holds rescued values under [`ErrorPolicy::Rescue`].
    pub rescue_column: String,
    /// JSON: keep nested objects and arrays as JSON text in string columns, instead of
    /// structs and lists.
    pub nested_as_json: bool,
    /// Text formats: read strings that are all dates or all timestamps as dates and
    /// timestamps (default on).
    pub infer_temporal: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            batch_size: 8192,
            schema: None,
            infer_rows: 1000,
            infer_bytes: 1 << 20,
            on_error: ErrorPolicy::Fail,
            max_line_bytes: 64 << 20,
            rescue_column: "_rescued_data".into(),
            nested_as_json: false,
            infer_temporal: true,
        }
    }
}

impl DecodeOptions {
    /// Set the rows per batch (at least 1).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Decode with this schema instead of inferring one.
    pub fn with_schema(mut self, schema: SchemaRef) -> Self {
        self.schema = Some(schema);
        self
    }

    /// Set how many rows inference samples (at least 1).
    pub fn with_infer_rows(mut self, rows: usize) -> Self {
        self.infer_rows = rows.max(1);
        self
    }

    /// Set how many bytes inference buffers at most.
    pub fn with_infer_bytes(mut self, bytes: usize) -> Self {
        self.infer_bytes = bytes.max(1);
        self
    }

    /// Set the bad-record policy.
    pub fn with_error_policy(mut self, policy: ErrorPolicy) -> Self {
        self.on_error = policy;
        self
    }

    /// Keep nested JSON objects and arrays as JSON text (default off: structs and lists).
    pub fn with_nested_as_json(mut self, on: bool) -> Self {
        self.nested_as_json = on;
        self
    }

    /// Read strings that look like dates and timestamps as such (default on).
    pub fn with_infer_temporal(mut self, on: bool) -> Self {
        self.infer_temporal = on;
        self
    }

    /// Name the rescue column (default `_rescued_data`).
    pub fn with_rescue_column(mut self, name: impl Into<String>) -> Self {
        self.rescue_column = name.into();
        self
    }

    /// Set the longest line a text decoder accepts.
    pub fn with_max_line_bytes(mut self, bytes: usize) -> Self {
        self.max_line_bytes = bytes.max(1);
        self
    }
}

/// Options for encoding.
///
/// The codec is named the same way for every format: for text formats (NDJSON, CSV, JSON)
/// it compresses the whole file (`gzip`, `zstd`, `bzip2`, `xz`, `deflate`); for formats that
/// compress their own content it is their internal codec (Parquet: `snappy`, `gzip`, `lz4`,
/// `zstd`, `brotli`, `uncompressed`; Avro: `null`, `deflate`, `bzip2`, `xz`, `zstandard`,
/// `snappy`). [`FormatPlugin::check_encode_options`] says whether a plugin takes it.
///
/// ```
/// use s3conn_formats::{compression::Compression, EncodeOptions};
/// let text = EncodeOptions::default().with_compression(Compression::Gzip).with_compression_level(9);
/// assert_eq!(text.whole_file_compression()?, Compression::Gzip);
/// let parquet = EncodeOptions::default().with_codec("brotli").with_compression_level(5);
/// assert_eq!(parquet.codec.as_deref(), Some("brotli"));
/// # Ok::<(), s3conn_formats::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct EncodeOptions {
    /// The codec by name; `None` is the plugin's default (no whole-file compression for text
    /// formats; the plugin's own setting for Parquet and Avro).
    pub codec: Option<String>,
    /// Compression level, when the codec has levels.
    pub compression_level: Option<i32>,
    /// How records are shaped into the file's columns.
    pub shape: crate::shape::RecordShape,
}

impl EncodeOptions {
    /// Compress the whole file with `compression` (text formats).
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.codec = match compression {
            Compression::None => None,
            other => Some(other.name().to_owned()),
        };
        self
    }

    /// Use the codec `name` (see the type's documentation for each format's codecs).
    pub fn with_codec(mut self, name: impl Into<String>) -> Self {
        self.codec = Some(name.into());
        self
    }

    /// Set the compression level.
    pub fn with_compression_level(mut self, level: i32) -> Self {
        self.compression_level = Some(level);
        self
    }

    /// Shape records as `shape` (default: flattened, one column per field).
    pub fn with_shape(mut self, shape: crate::shape::RecordShape) -> Self {
        self.shape = shape;
        self
    }

    /// The whole-file compression the codec names (text formats).
    pub fn whole_file_compression(&self) -> Result<Compression> {
        match &self.codec {
            None => Ok(Compression::None),
            Some(name) => name.parse(),
        }
    }
}

/// The extension a file of `plugin` written with `options` gets, with its leading dot
/// (`.parquet`, `.jsonl.gz`).
pub fn file_extension(plugin: &dyn FormatPlugin, options: &EncodeOptions) -> String {
    let mut ext = String::new();
    if let Some(first) = plugin.extensions().first() {
        ext.push('.');
        ext.push_str(first);
    }
    if !plugin.is_self_compressing()
        && let Some(c) = options
            .whole_file_compression()
            .ok()
            .and_then(|c| c.extension())
    {
        ext.push('.');
        ext.push_str(c);
    }
    ext
}
