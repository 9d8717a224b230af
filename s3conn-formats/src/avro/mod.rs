//! Apache Avro object container files (`.avro`).
//!
//! The plugin frames the container itself (header, blocks, sync markers) and runs the block
//! codecs itself, so that every limit is its own; the datums inside a block are encoded and
//! decoded by [arrow-avro](https://docs.rs/arrow-avro), straight between Avro bytes and Arrow
//! columns (chosen over apache-avro by measurement: see the `avro` benchmark).
//!
//! # Read
//!
//! The decoder is push-style: feed the file's bytes in chunks of any size. It reads the header
//! (schema, codec, sync marker), then one block at a time: the block's bytes are buffered,
//! checked against the sync marker, decompressed and decoded into batches of at most
//! [`DecodeOptions::batch_size`] rows. Memory is bounded by one block (compressed and
//! decompressed) plus the batch in progress, never by the file:
//!
//! - a block that declares more than [`AvroFormat::with_max_block_bytes`] bytes (64 MiB by
//!   default) is refused as soon as its head is read, before its bytes are buffered;
//! - decompression reads at most [`AvroFormat::with_max_decompressed_block_bytes`] bytes
//!   (256 MiB by default) and refuses the block beyond that, so a decompression bomb cannot
//!   allocate more;
//! - a block may not declare more rows than its bytes can hold, and schemas the decoder
//!   cannot bound are refused: recursive types, and arrays whose items take no bytes;
//! - calls into arrow-avro run under `catch_unwind`: if corrupt data makes it panic, the
//!   panic becomes [`Error::InvalidFile`] and the decoder refuses further use.
//!
//! The Avro schema becomes the Arrow schema: unions of `null` and one type are nullable
//! fields, other unions are Arrow dense unions, records are structs, arrays lists, maps
//! maps, enums dictionaries; `timestamp-*` has the zone `+00:00`, `local-timestamp-*` none;
//! decimals are `Decimal128` (or `Decimal256` beyond 38 digits). With
//! [`DecodeOptions::schema`] the columns are read by name in that schema's order, cast where
//! the types differ, and a nullable field the file lacks is all nulls.
//!
//! **Errors.** A record that cannot be decoded is [`Error::Decode`] with its 1-based row
//! number in the file. A corrupt header, a block not followed by the sync marker, an unknown
//! codec, a block over the limits, or a file that ends inside a block is
//! [`Error::InvalidFile`].
//!
//! **[`ErrorPolicy::Skip`].** Avro has no record separators: once a datum fails to decode, the
//! rest of its block cannot be found again. Under `Skip`, the rows of a block before the bad
//! one are kept, the bad row and the rest of its block are counted as skipped, and decoding
//! goes on at the next block (whose sync marker is checked as usual). A block whose
//! compressed data is corrupt is skipped whole. A row that decodes but cannot be part of a
//! batch (a string that is not UTF-8, found when the batch is built) is skipped alone. A
//! broken frame (sync marker, truncation, limits) always fails.
//!
//! # Write
//!
//! The encoder writes the header at once, then buffers encoded rows until a block holds
//! [`AvroFormat::with_block_bytes`] (1 MiB by default) of uncompressed datums, compresses
//! it and appends it to the output the caller drains. [`Encoder::buffered_bytes`] is the
//! block in progress; [`Encoder::bytes_written`] counts bytes after compression.
//!
//! | Arrow | Avro |
//! |---|---|
//! | nullable field | `["null", T]` with default `null` |
//! | Boolean; Int8/16/32, UInt8/16; Int64, UInt32 | `boolean`; `int`; `long` |
//! | Float16/32; Float64 | `float`; `double` |
//! | Utf8, LargeUtf8, Utf8View; Binary, LargeBinary, BinaryView | `string`; `bytes` |
//! | FixedSizeBinary(n) | `fixed` of size n |
//! | Date32 | `int` + `date` |
//! | Time32(ms); Time64(µs) | `int` + `time-millis`; `long` + `time-micros` |
//! | Timestamp(ms/µs/ns, zone) | `long` + `timestamp-millis`/`-micros`/`-nanos` (UTC) |
//! | Timestamp(ms/µs/ns, no zone) | `long` + `local-timestamp-millis`/`-micros`/`-nanos` |
//! | Decimal32/64/128/256(p, s) | `bytes` + `decimal` (precision p, scale s) |
//! | Struct | `record` (names unique in the file) |
//! | List, LargeList | `array` |
//! | Map with string keys | `map` |
//! | Dictionary(_, V) | as V |
//!
//! Nanosecond timestamps use the `timestamp-nanos` logical types of Avro 1.12; a reader that
//! does not know them reads the `long` (nanoseconds since the epoch), so nothing is lost.
//! Other types (intervals, durations, unions, seconds) are refused with [`Error::Schema`]
//! naming the field, as are field names that are not Avro names.
//!
//! **Codecs**: `null`, `deflate` (levels 0–9), `snappy`, `bzip2` (1–9), `xz` (0–9) and
//! `zstandard` (-7–22), by [`EncodeOptions::codec`] or [`AvroFormat::with_codec`]. The
//! default is deflate level 6: the Avro specification requires every reader to support
//! `null` and `deflate` only, so a deflate file opens everywhere (on the benchmark's events
//! it is a sixth of the uncompressed size). When every reader supports it, `zstandard` is
//! the better choice: smaller still (an eighth) and about three times faster to write;
//! `snappy` is a little faster again but twice the size.
//!
//! ```
//! use std::sync::Arc;
//! use arrow_array::{Int64Array, RecordBatch, StringArray};
//! use s3conn_formats::avro::{AvroCodec, AvroFormat};
//! use s3conn_formats::{DecodeInput, DecodeOptions, Decoder, EncodeOptions, FormatPlugin};
//!
//! let batch = RecordBatch::try_from_iter([
//!     ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as _),
//!     ("name", Arc::new(StringArray::from(vec![Some("ana"), None, Some("zoë")])) as _),
//! ]).unwrap();
//!
//! // Write a file with zstandard blocks.
//! let format = AvroFormat::default().with_codec(AvroCodec::Zstandard);
//! let mut encoder = format.encoder(batch.schema(), &EncodeOptions::default())?;
//! encoder.write(&batch)?;
//! let mut file = encoder.take_output().to_vec();
//! file.extend_from_slice(&encoder.finish()?);
//! assert_eq!(&file[..4], b"Obj\x01");
//!
//! // Read it back, fed a few bytes at a time.
//! let Decoder::Stream(mut decoder) =
//!     format.decoder(&DecodeInput::default(), &DecodeOptions::default())?
//! else { unreachable!("Avro is a stream format") };
//! let mut rows = 0;
//! for chunk in file.chunks(7) {
//!     decoder.decode(chunk)?;
//!     while let Some(b) = decoder.next_batch() { rows += b.num_rows(); }
//! }
//! decoder.finish()?;
//! while let Some(b) = decoder.next_batch() { rows += b.num_rows(); }
//! assert_eq!(rows, 3);
//! # Ok::<(), s3conn_formats::Error>(())
//! ```
//!
//! [`Encoder::buffered_bytes`]: crate::Encoder::buffered_bytes
//! [`Encoder::bytes_written`]: crate::Encoder::bytes_written
//! [`Error::InvalidFile`]: crate::Error::InvalidFile
//! [`Error::Decode`]: crate::Error::Decode
//! [`Error::Schema`]: crate::Error::Schema
//! [`ErrorPolicy::Skip`]: crate::ErrorPolicy::Skip
//! [`DecodeOptions::batch_size`]: crate::DecodeOptions::batch_size
//! [`DecodeOptions::schema`]: crate::DecodeOptions::schema
//! [`EncodeOptions::codec`]: crate::EncodeOptions::codec

use arrow_schema::SchemaRef;

mod codec;
mod decode;
mod encode;
mod ocf;
mod schema;

#[cfg(test)]
mod tests;

pub use codec::AvroCodec;

use crate::error::Result;
use crate::plugin::{DecodeInput, DecodeOptions, Decoder, EncodeOptions, Encoder, FormatPlugin};

const FORMAT: &str = "avro";

/// Limits on what one block of a file being read may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_block_bytes: u64,
    pub(crate) max_decompressed_bytes: u64,
}

/// The Avro plugin (`.avro`). Its settings apply to the files it writes (codec, level,
/// block size) and the limits to the files it reads.
///
/// ```
/// use s3conn_formats::avro::{AvroCodec, AvroFormat};
/// let format = AvroFormat::default()
///     .with_codec(AvroCodec::Zstandard)
///     .with_compression_level(9)
///     .with_zstd_checksum(true)
///     .with_block_bytes(4 << 20)
///     .with_max_block_bytes(128 << 20);
/// # let _ = format;
/// ```
#[derive(Debug, Clone)]
pub struct AvroFormat {
    codec: AvroCodec,
    level: Option<i32>,
    zstd_checksum: bool,
    block_bytes: usize,
    limits: Limits,
}

impl Default for AvroFormat {
    fn default() -> Self {
        Self {
            codec: AvroCodec::Deflate,
            level: None,
            zstd_checksum: false,
            block_bytes: 1 << 20,
            limits: Limits {
                max_block_bytes: 64 << 20,
                max_decompressed_bytes: 256 << 20,
            },
        }
    }
}

impl AvroFormat {
    /// The codec blocks are compressed with when [`EncodeOptions::codec`] names none
    /// (default: deflate).
    pub fn with_codec(mut self, codec: AvroCodec) -> Self {
        self.codec = codec;
        self
    }

    /// The level of this format's own codec (see [`AvroCodec::levels`]); checked when an
    /// encoder is made. [`EncodeOptions::compression_level`] overrides it.
    pub fn with_compression_level(mut self, level: i32) -> Self {
        self.level = Some(level);
        self
    }

    /// Whether zstandard blocks carry zstd's own checksum of their content (default off, as
    /// in Java's Avro).
    pub fn with_zstd_checksum(mut self, checksum: bool) -> Self {
        self.zstd_checksum = checksum;
        self
    }

    /// Close a block once its encoded rows reach this many bytes before compression
    /// (default 1 MiB). An encoder holds at most about one block in memory.
    pub fn with_block_bytes(mut self, bytes: usize) -> Self {
        self.block_bytes = bytes.max(1);
        self
    }

    /// When reading: refuse a block that declares more than this many bytes (default
    /// 64 MiB), before buffering it. The header is held to the same limit.
    pub fn with_max_block_bytes(mut self, bytes: u64) -> Self {
        self.limits.max_block_bytes = bytes.max(1024);
        self
    }

    /// When reading: refuse a block that decompresses to more than this many bytes (default
    /// 256 MiB); decompression stops there.
    pub fn with_max_decompressed_block_bytes(mut self, bytes: u64) -> Self {
        self.limits.max_decompressed_bytes = bytes.max(1024);
        self
    }

    /// The codec and level `options` ask for, or this format's own; checked.
    fn codec(&self, options: &EncodeOptions) -> Result<(AvroCodec, Option<i32>)> {
        let (codec, level) = match options.codec.as_deref() {
            Some(name) => (name.parse::<AvroCodec>()?, options.compression_level),
            None => (self.codec, options.compression_level.or(self.level)),
        };
        Ok((codec, codec.check_level(level)?))
    }
}

impl FormatPlugin for AvroFormat {
    fn name(&self) -> &str {
        FORMAT
    }

    fn extensions(&self) -> &[&str] {
        &["avro"]
    }

    fn content_type(&self) -> &str {
        "application/avro"
    }

    fn is_self_compressing(&self) -> bool {
        true
    }

    fn check_encode_options(&self, options: &EncodeOptions) -> Result<()> {
        self.codec(options).map(|_| ())
    }

    fn decoder(&self, _input: &DecodeInput, options: &DecodeOptions) -> Result<Decoder> {
        Ok(Decoder::Stream(Box::new(decode::AvroDecoder::new(
            options.clone(),
            self.limits,
        ))))
    }

    fn encoder(&self, schema: SchemaRef, options: &EncodeOptions) -> Result<Box<dyn Encoder>> {
        let (codec, level) = self.codec(options)?;
        let compressor = codec::BlockCompressor::new(codec, level, self.zstd_checksum)?;
        Ok(Box::new(encode::AvroEncoder::new(
            schema,
            compressor,
            self.block_bytes,
        )?))
    }
}
