//! Apache Parquet.
//!
//! Reading uses the parquet crate's push decoders: the decoder asks for the byte ranges it
//! needs (the footer first, then each row group's column chunks) and the caller fetches them,
//! so a file is never held in memory whole. Untrusted files are held to their own size:
//!
//! - every call into the parquet crate is guarded: a corrupt file that makes it panic becomes
//!   an [`Error::InvalidFile`], and the decoder refuses further use;
//! - a request for bytes past the end of the file is refused;
//! - before a column chunk's bytes reach the decoder, its page headers are read and checked
//!   (see [`ParquetFormat::with_max_page_bytes`]), so that a few bytes of file cannot make
//!   the parquet crate allocate gigabytes.
//!
//! Writing uses `ArrowWriter` into an in-memory output that the caller drains; row groups are
//! closed at [`ParquetFormat::with_row_group_bytes`] (estimated encoded size) or
//! [`ParquetFormat::with_max_row_group_rows`], whichever comes first, which bounds the memory a
//! file being written holds.

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use parquet::DecodeResult;
use parquet::arrow::ArrowWriter;
use parquet::arrow::push_decoder::{ParquetPushDecoder, ParquetPushDecoderBuilder};
use parquet::basic::{BrotliLevel, Compression as ParquetCodec, GzipLevel, ZstdLevel};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataPushDecoder};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

mod pages;

use crate::compression::OutputBuffer;
use crate::error::{Error, Result};
use crate::plugin::{
    DecodeInput, DecodeOptions, Decoder, EncodeOptions, Encoder, FormatPlugin, RangedDecoder,
    RangedStep,
};

const FORMAT: &str = "parquet";

/// The Parquet plugin (`.parquet`). Its settings apply to the files it writes.
///
/// ```
/// use s3conn_formats::parquet::ParquetFormat;
/// use parquet::basic::{Compression, ZstdLevel};
/// let format = ParquetFormat::default()
///     .with_compression(Compression::ZSTD(ZstdLevel::try_new(6).unwrap()))
///     .with_row_group_bytes(32 << 20)
///     .with_dictionary(true);
/// # let _ = format;
/// ```
#[derive(Debug, Clone)]
pub struct ParquetFormat {
    compression: ParquetCodec,
    row_group_bytes: usize,
    max_row_group_rows: usize,
    data_page_size: usize,
    dictionary_page_size: usize,
    dictionary: bool,
    statistics: EnabledStatistics,
    max_page_bytes: u64,
}

impl Default for ParquetFormat {
    fn default() -> Self {
        Self {
            compression: ParquetCodec::ZSTD(ZstdLevel::default()),
            row_group_bytes: 64 << 20,
            max_row_group_rows: 1 << 20,
            data_page_size: 1 << 20,
            dictionary_page_size: 1 << 20,
            dictionary: true,
            statistics: EnabledStatistics::Page,
            max_page_bytes: 256 << 20,
        }
    }
}

impl ParquetFormat {
    /// The codec column chunks are compressed with (default: zstd level 1).
    pub fn with_compression(mut self, compression: ParquetCodec) -> Self {
        self.compression = compression;
        self
    }

    /// Close a row group once its estimated encoded size reaches this many bytes (default
    /// 64 MiB). This bounds the memory of a file being written.
    pub fn with_row_group_bytes(mut self, bytes: usize) -> Self {
        self.row_group_bytes = bytes.max(1);
        self
    }

    /// Close a row group at this many rows (default 1 Mi rows).
    pub fn with_max_row_group_rows(mut self, rows: usize) -> Self {
        self.max_row_group_rows = rows.max(1);
        self
    }

    /// Target size of a data page (default 1 MiB).
    pub fn with_data_page_size(mut self, bytes: usize) -> Self {
        self.data_page_size = bytes.max(1);
        self
    }

    /// Largest dictionary page before a column falls back to plain encoding (default 1 MiB).
    pub fn with_dictionary_page_size(mut self, bytes: usize) -> Self {
        self.dictionary_page_size = bytes.max(1);
        self
    }

    /// Whether columns are dictionary encoded (default on).
    pub fn with_dictionary(mut self, enabled: bool) -> Self {
        self.dictionary = enabled;
        self
    }

    /// Which statistics are written (default: per page).
    pub fn with_statistics(mut self, statistics: EnabledStatistics) -> Self {
        self.statistics = statistics;
        self
    }

    /// When reading: refuse a page that declares more than this many bytes once
    /// decompressed (default 256 MiB). Independently of this cap, a page may expand at most
    /// 1024 times its compressed size (beyond its first MiB), and a dictionary may not
    /// declare more values than its bytes can hold: memory stays in proportion to the file.
    pub fn with_max_page_bytes(mut self, bytes: u64) -> Self {
        self.max_page_bytes = bytes.max(1 << 20);
        self
    }

    fn limits(&self) -> pages::Limits {
        pages::Limits {
            max_page_bytes: self.max_page_bytes,
            free_page_bytes: 1 << 20,
            max_expansion: 1024,
        }
    }

    /// The codec `options` name, or the plugin's own.
    fn codec(&self, options: &EncodeOptions) -> Result<ParquetCodec> {
        let Some(name) = options.codec.as_deref() else {
            return Ok(self.compression);
        };
        let level = options.compression_level;
        let bad_level = |e: parquet::errors::ParquetError| Error::Encode {
            format: FORMAT,
            message: format!("{name} level: {e}"),
        };
        Ok(match name.to_ascii_lowercase().as_str() {
            "uncompressed" | "none" => ParquetCodec::UNCOMPRESSED,
            "snappy" => ParquetCodec::SNAPPY,
            "lz4" | "lz4_raw" => ParquetCodec::LZ4_RAW,
            "gzip" => ParquetCodec::GZIP(
                GzipLevel::try_new(level.map_or(6, |l| l.max(0).unsigned_abs()))
                    .map_err(bad_level)?,
            ),
            "zstd" => {
                ParquetCodec::ZSTD(ZstdLevel::try_new(level.unwrap_or(3)).map_err(bad_level)?)
            }
            "brotli" => ParquetCodec::BROTLI(
                BrotliLevel::try_new(level.map_or(4, |l| l.max(0).unsigned_abs()))
                    .map_err(bad_level)?,
            ),
            other => {
                return Err(Error::Unsupported {
                    what: format!(
                        "Parquet codec `{other}`: use uncompressed, snappy, gzip, lz4, zstd or brotli"
                    ),
                });
            }
        })
    }

    fn properties(&self, options: &EncodeOptions) -> Result<WriterProperties> {
        let codec = self.codec(options)?;
        Ok(WriterProperties::builder()
            .set_compression(codec)
            .set_max_row_group_bytes(Some(self.row_group_bytes))
            .set_max_row_group_row_count(Some(self.max_row_group_rows))
            .set_data_page_size_limit(self.data_page_size)
            .set_dictionary_page_size_limit(self.dictionary_page_size)
            .set_dictionary_enabled(self.dictionary)
            .set_statistics_enabled(self.statistics)
            .set_created_by(concat!("s3conn ", env!("CARGO_PKG_VERSION")).to_owned())
            .build())
    }
}

impl FormatPlugin for ParquetFormat {
    fn name(&self) -> &str {
        FORMAT
    }

    fn extensions(&self) -> &[&str] {
        &["parquet", "pq"]
    }

    fn content_type(&self) -> &str {
        "application/vnd.apache.parquet"
    }

    fn is_self_compressing(&self) -> bool {
        true
    }

    fn check_encode_options(&self, options: &EncodeOptions) -> Result<()> {
        self.codec(options).map(|_| ())
    }

    /// Keys: `row_group_bytes`, `max_row_group_rows`, `data_page_size`,
    /// `dictionary_page_size`, `dictionary` (true/false), `statistics` (`none`, `chunk`,
    /// `page`), `max_page_bytes`. Sizes are bytes, or with a unit: `64MiB`, `1MB`.
    fn with_option(&self, key: &str, value: &str) -> Result<Arc<dyn FormatPlugin>> {
        let invalid = |reason: String| Error::InvalidOption {
            option: "parquet option",
            reason: format!("`{key}` = `{value}`: {reason}"),
        };
        let size = || {
            parse_size(value).ok_or_else(|| invalid("give a size such as 67108864 or 64MiB".into()))
        };
        let next = self.clone();
        let next = match key.to_ascii_lowercase().replace('-', "_").as_str() {
            "row_group_bytes" | "row_group_size" => next.with_row_group_bytes(size()?),
            "max_row_group_rows" => next.with_max_row_group_rows(size()?),
            "data_page_size" => next.with_data_page_size(size()?),
            "dictionary_page_size" => next.with_dictionary_page_size(size()?),
            "max_page_bytes" => next.with_max_page_bytes(size()? as u64),
            "dictionary" => next.with_dictionary(match value.to_ascii_lowercase().as_str() {
                "true" | "on" | "yes" => true,
                "false" | "off" | "no" => false,
                _ => return Err(invalid("use true or false".into())),
            }),
            "statistics" => next.with_statistics(match value.to_ascii_lowercase().as_str() {
                "none" | "false" | "off" => EnabledStatistics::None,
                "chunk" => EnabledStatistics::Chunk,
                "page" | "true" | "on" => EnabledStatistics::Page,
                _ => return Err(invalid("use none, chunk or page".into())),
            }),
            other => {
                return Err(Error::InvalidOption {
                    option: "format option",
                    reason: format!(
                        "the parquet format has no option `{other}` (row_group_bytes, max_row_group_rows, data_page_size, dictionary_page_size, dictionary, statistics, max_page_bytes)"
                    ),
                });
            }
        };
        Ok(Arc::new(next))
    }

    fn decoder(&self, input: &DecodeInput, options: &DecodeOptions) -> Result<Decoder> {
        let size = input.size.ok_or_else(|| Error::Unsupported {
            what: "reading Parquet without knowing the file size".into(),
        })?;
        let metadata = guard(|| ParquetMetaDataPushDecoder::try_new(size))?
            .with_page_index_policy(PageIndexPolicy::Skip);
        Ok(Decoder::Ranged(Box::new(ParquetDecoder {
            state: State::Metadata(Box::new(metadata)),
            batch_size: options.batch_size,
            size,
            limits: self.limits(),
            chunks: Vec::new(),
            schema: None,
        })))
    }

    fn encoder(&self, schema: SchemaRef, options: &EncodeOptions) -> Result<Box<dyn Encoder>> {
        let props = self.properties(options)?;
        let writer =
            ArrowWriter::try_new(OutputBuffer::default(), schema, Some(props)).map_err(|e| {
                Error::Schema {
                    format: FORMAT,
                    message: e.to_string(),
                }
            })?;
        Ok(Box::new(ParquetEncoder {
            writer,
            finished: false,
        }))
    }
}

/// Run a call into the parquet crate, turning a panic into an error.
fn guard<T>(f: impl FnOnce() -> parquet::errors::Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::InvalidFile {
            format: FORMAT,
            message: e.to_string(),
        }),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".into());
            Err(Error::InvalidFile {
                format: FORMAT,
                message: format!("the file is corrupt (the parquet reader failed: {message})"),
            })
        }
    }
}

/// A size in bytes: a number, or a number with `KB`/`KiB`/`MB`/`MiB`/`GB`/`GiB`.
fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: usize = number.parse().ok()?;
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

enum State {
    Metadata(Box<ParquetMetaDataPushDecoder>),
    Data(Box<ParquetPushDecoder>),
    Finished,
    /// A previous call failed; the decoder's state is unknown.
    Failed,
}

struct ParquetDecoder {
    state: State,
    batch_size: usize,
    /// The file's size: a corrupt footer can point past it.
    size: u64,
    limits: pages::Limits,
    /// Every column chunk, from the footer; each is checked when its bytes arrive.
    chunks: Vec<pages::Chunk>,
    /// The file's schema, once the footer is read.
    schema: Option<SchemaRef>,
}

impl std::fmt::Debug for ParquetDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Metadata(_) => "metadata",
            State::Data(_) => "data",
            State::Finished => "finished",
            State::Failed => "failed",
        };
        f.debug_struct("ParquetDecoder")
            .field("state", &state)
            .field("batch_size", &self.batch_size)
            .field("size", &self.size)
            .finish()
    }
}

impl ParquetDecoder {
    /// Refuse ranges that a corrupt footer points outside the file.
    fn check(&self, ranges: &[Range<u64>]) -> Result<()> {
        match ranges.iter().find(|r| r.start > r.end || r.end > self.size) {
            Some(r) => Err(Error::InvalidFile {
                format: FORMAT,
                message: format!(
                    "the metadata points at bytes {}..{} of a {}-byte file",
                    r.start, r.end, self.size
                ),
            }),
            None => Ok(()),
        }
    }

    fn step(&mut self) -> Result<RangedStep> {
        loop {
            match &mut self.state {
                State::Metadata(d) => match guard(|| d.try_decode())? {
                    DecodeResult::NeedsData(ranges) => {
                        self.check(&ranges)?;
                        return Ok(RangedStep::NeedsData(ranges));
                    }
                    DecodeResult::Data(metadata) => {
                        self.chunks = pages::chunks(&metadata, self.size).map_err(|message| {
                            Error::InvalidFile {
                                format: FORMAT,
                                message,
                            }
                        })?;
                        let file = metadata.file_metadata();
                        self.schema = guard(|| {
                            parquet::arrow::parquet_to_arrow_schema(
                                file.schema_descr(),
                                file.key_value_metadata(),
                            )
                        })
                        .ok()
                        .map(Arc::new);
                        let batch_size = self.batch_size;
                        let data = guard(|| {
                            ParquetPushDecoderBuilder::try_new_decoder(Arc::new(metadata))?
                                .with_batch_size(batch_size)
                                .build()
                        })?;
                        self.state = State::Data(Box::new(data));
                    }
                    DecodeResult::Finished => {
                        return Err(Error::InvalidFile {
                            format: FORMAT,
                            message: "no metadata found".into(),
                        });
                    }
                },
                State::Data(d) => match guard(|| d.try_decode())? {
                    DecodeResult::NeedsData(ranges) => {
                        self.check(&ranges)?;
                        return Ok(RangedStep::NeedsData(ranges));
                    }
                    DecodeResult::Data(batch) => return Ok(RangedStep::Batch(batch)),
                    DecodeResult::Finished => {
                        self.state = State::Finished;
                        return Ok(RangedStep::Finished);
                    }
                },
                State::Finished => return Ok(RangedStep::Finished),
                State::Failed => {
                    return Err(Error::InvalidFile {
                        format: FORMAT,
                        message: "the decoder already failed on this file".into(),
                    });
                }
            }
        }
    }
}

impl ParquetDecoder {
    /// Check the page headers of every column chunk these bytes hold, before the parquet
    /// crate sees them. A chunk that arrives in pieces is refused rather than trusted.
    fn check_pages(&mut self, ranges: &[Range<u64>], data: &[Bytes]) -> Result<()> {
        let limits = self.limits;
        for (range, bytes) in ranges.iter().zip(data) {
            if bytes.len() as u64 != range.end.saturating_sub(range.start) {
                return Err(Error::InvalidFile {
                    format: FORMAT,
                    message: format!(
                        "bytes {}..{} were asked for but {} arrived",
                        range.start,
                        range.end,
                        bytes.len()
                    ),
                });
            }
            for chunk in self.chunks.iter_mut().filter(|c| !c.checked) {
                let inside = range.start <= chunk.range.start && chunk.range.end <= range.end;
                let overlaps = range.start < chunk.range.end && chunk.range.start < range.end;
                if inside {
                    let from = (chunk.range.start - range.start) as usize;
                    let to = (chunk.range.end - range.start) as usize;
                    let slice = bytes.get(from..to).unwrap_or_default();
                    pages::check_chunk(chunk, slice, &limits).map_err(|message| {
                        Error::InvalidFile {
                            format: FORMAT,
                            message,
                        }
                    })?;
                    chunk.checked = true;
                } else if overlaps {
                    return Err(Error::InvalidFile {
                        format: FORMAT,
                        message: format!(
                            "{} was asked for in pieces and cannot be checked",
                            chunk.name
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

impl RangedDecoder for ParquetDecoder {
    fn try_decode(&mut self) -> Result<RangedStep> {
        let result = self.step();
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn push_ranges(&mut self, ranges: Vec<Range<u64>>, data: Vec<Bytes>) -> Result<()> {
        let checked = if matches!(self.state, State::Data(_)) {
            self.check_pages(&ranges, &data)
        } else {
            Ok(())
        };
        let result = checked.and_then(|()| match &mut self.state {
            State::Metadata(d) => guard(|| d.push_ranges(ranges, data)),
            State::Data(d) => guard(|| d.push_ranges(ranges, data)),
            State::Finished | State::Failed => Ok(()),
        });
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn schema(&self) -> Option<SchemaRef> {
        self.schema.clone()
    }
}

struct ParquetEncoder {
    writer: ArrowWriter<OutputBuffer>,
    finished: bool,
}

impl std::fmt::Debug for ParquetEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetEncoder")
            .field("bytes_written", &self.bytes_written())
            .field("buffered_bytes", &self.buffered_bytes())
            .field("finished", &self.finished)
            .finish()
    }
}

fn encode_error(e: parquet::errors::ParquetError) -> Error {
    Error::Encode {
        format: FORMAT,
        message: e.to_string(),
    }
}

impl ParquetEncoder {
    fn check_open(&self) -> Result<()> {
        if self.finished {
            return Err(Error::Encode {
                format: FORMAT,
                message: "the file is already finished".into(),
            });
        }
        Ok(())
    }
}

impl Encoder for ParquetEncoder {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.check_open()?;
        self.writer.write(batch).map_err(encode_error)
    }

    fn flush(&mut self) -> Result<()> {
        self.check_open()?;
        self.writer.flush().map_err(encode_error)
    }

    fn take_output(&mut self) -> Bytes {
        // Only drains bytes the writer has already accounted for; it never writes.
        self.writer.inner_mut().take()
    }

    fn finish(&mut self) -> Result<Bytes> {
        self.check_open()?;
        self.finished = true;
        self.writer.finish().map_err(encode_error)?;
        Ok(self.take_output())
    }

    fn bytes_written(&self) -> u64 {
        self.writer.bytes_written() as u64
    }

    fn buffered_bytes(&self) -> usize {
        if self.finished {
            0
        } else {
            self.writer.memory_size()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use arrow_array::{ArrayRef, Int64Array, StringArray};

    fn batch(start: i64, n: i64) -> RecordBatch {
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(start..start + n));
        let names: ArrayRef = Arc::new(StringArray::from_iter(
            (start..start + n).map(|i| (i % 3 != 0).then(|| format!("név-{i}"))),
        ));
        RecordBatch::try_from_iter([("id", ids), ("name", names)]).unwrap()
    }

    fn encode(format: &ParquetFormat, batches: &[RecordBatch]) -> Bytes {
        let mut enc = format
            .encoder(batches[0].schema(), &EncodeOptions::default())
            .unwrap();
        let mut out = Vec::new();
        for b in batches {
            enc.write(b).unwrap();
            out.extend_from_slice(&enc.take_output());
        }
        out.extend_from_slice(&enc.finish().unwrap());
        assert_eq!(enc.bytes_written(), out.len() as u64);
        Bytes::from(out)
    }

    /// Drive a ranged decoder over in-memory bytes.
    pub(crate) fn decode_all(file: &Bytes) -> Result<Vec<RecordBatch>> {
        let Decoder::Ranged(mut d) = ParquetFormat::default().decoder(
            &DecodeInput::with_size(file.len() as u64),
            &DecodeOptions::default().with_batch_size(1000),
        )?
        else {
            panic!("parquet is ranged")
        };
        let mut out = Vec::new();
        loop {
            match d.try_decode()? {
                RangedStep::NeedsData(ranges) => {
                    let data = ranges
                        .iter()
                        .map(|r| file.slice(r.start as usize..r.end as usize))
                        .collect();
                    d.push_ranges(ranges, data)?;
                }
                RangedStep::Batch(b) => out.push(b),
                RangedStep::Finished => return Ok(out),
            }
        }
    }

    /// Each setting, by name, shows in the file's own metadata.
    #[test]
    fn options_by_name_reach_the_file() {
        use parquet::basic::Compression as C;
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let input: Vec<RecordBatch> = (0..4).map(|i| batch(i * 2500, 2500)).collect();
        let metadata = |options: &[(&str, &str)], codec: Option<&str>| {
            let mut plugin: Arc<dyn FormatPlugin> = Arc::new(ParquetFormat::default());
            for (k, v) in options {
                plugin = plugin.with_option(k, v).unwrap();
            }
            let mut encode = EncodeOptions::default();
            if let Some(codec) = codec {
                encode = encode.with_codec(codec).with_compression_level(5);
            }
            let mut enc = plugin.encoder(input[0].schema(), &encode).unwrap();
            let mut out = Vec::new();
            for b in &input {
                enc.write(b).unwrap();
                out.extend_from_slice(&enc.take_output());
            }
            out.extend_from_slice(&enc.finish().unwrap());
            let reader = SerializedFileReader::new(Bytes::from(out)).unwrap();
            reader.metadata().clone()
        };
        let m = metadata(&[("max_row_group_rows", "3000")], None);
        assert_eq!(
            m.num_row_groups(),
            4,
            "10,000 rows in groups of at most 3,000"
        );
        let m = metadata(
            &[("dictionary", "false"), ("statistics", "none")],
            Some("brotli"),
        );
        let column = m.row_group(0).column(1);
        assert!(column.dictionary_page_offset().is_none(), "no dictionary");
        assert!(column.statistics().is_none(), "no statistics");
        // The file records the codec, not its level.
        let same = |a: C, b: C| std::mem::discriminant(&a) == std::mem::discriminant(&b);
        assert!(same(column.compression(), C::BROTLI(Default::default())));
        let m = metadata(
            &[("statistics", "chunk"), ("data_page_size", "1KiB")],
            Some("gzip"),
        );
        let column = m.row_group(0).column(1);
        assert!(column.dictionary_page_offset().is_some());
        assert!(column.statistics().is_some());
        for (codec, expected) in [
            ("uncompressed", C::UNCOMPRESSED),
            ("snappy", C::SNAPPY),
            ("lz4", C::LZ4_RAW),
            ("zstd", C::ZSTD(Default::default())),
            ("gzip", C::GZIP(Default::default())),
        ] {
            let m = metadata(&[], Some(codec));
            assert!(
                same(m.row_group(0).column(0).compression(), expected),
                "{codec}"
            );
        }
        let err = ParquetFormat::default()
            .with_option("dictionry", "true")
            .unwrap_err();
        assert!(err.to_string().contains("`dictionry`"), "{err}");
        assert!(
            ParquetFormat::default()
                .with_option("row_group_bytes", "lots")
                .is_err()
        );
        assert!(
            ParquetFormat::default()
                .check_encode_options(&EncodeOptions::default().with_codec("lzo"))
                .is_err()
        );
    }

    #[test]
    fn roundtrip_with_several_row_groups() {
        let format = ParquetFormat::default().with_max_row_group_rows(1000);
        let input: Vec<RecordBatch> = (0..5).map(|i| batch(i * 2000, 2000)).collect();
        let file = encode(&format, &input);
        let out = decode_all(&file).unwrap();
        assert_eq!(out.iter().map(|b| b.num_rows()).sum::<usize>(), 10_000);
        let all = arrow_select_concat(&out);
        assert_eq!(all, arrow_select_concat(&input));
    }

    fn arrow_select_concat(batches: &[RecordBatch]) -> Vec<(i64, Option<String>)> {
        batches
            .iter()
            .flat_map(|b| {
                let ids = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .clone();
                let names = b
                    .column(1)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap()
                    .clone();
                (0..b.num_rows())
                    .map(|i| {
                        (
                            ids.value(i),
                            (!arrow_array::Array::is_null(&names, i))
                                .then(|| names.value(i).to_owned()),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn corrupt_files_are_errors_not_panics() {
        let file = encode(&ParquetFormat::default(), &[batch(0, 100)]);
        // Truncations, flipped bytes in the footer, garbage.
        let mut cases: Vec<Vec<u8>> = vec![
            b"PAR1".to_vec(),
            b"PAR1PAR1".to_vec(),
            b"not a parquet file at all".to_vec(),
            file.slice(..file.len() / 2).to_vec(),
        ];
        for i in 1..64.min(file.len()) {
            let mut f = file.to_vec();
            let at = f.len() - 8 - i;
            f[at] ^= 0xff;
            cases.push(f);
        }
        for case in cases {
            let _ = decode_all(&Bytes::from(case));
        }
        let err = decode_all(&Bytes::from_static(b"tiny")).unwrap_err();
        assert!(matches!(err, Error::InvalidFile { .. }), "{err}");
    }

    /// Found by the `parquet_decode` fuzz target: corrupt metadata that points past the end
    /// of the file is an error, not a request for bytes that do not exist.
    #[test]
    fn metadata_pointing_past_the_end_is_an_error() {
        let file = Bytes::from_static(include_bytes!(
            "../../tests/data/parquet-range-past-end.bin"
        ));
        let err = decode_all(&file).unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");
    }

    /// Found by the `parquet_decode` fuzz target: a 3 KB file whose dictionary page declares
    /// hundreds of millions of values made the parquet crate zero-fill 5 GB.
    #[test]
    fn a_dictionary_bomb_is_refused_before_it_allocates() {
        let file = Bytes::from_static(include_bytes!(
            "../../tests/data/parquet-dictionary-bomb.bin"
        ));
        let err = decode_all(&file).unwrap_err();
        assert!(err.to_string().contains("cannot fit"), "{err}");
    }

    /// Files written by another writer (pyarrow: data pages v1 and v2, dictionaries, page
    /// indexes, nested and fixed-size columns) pass the page checks and decode whole.
    #[test]
    fn pyarrow_files_pass_the_checks() {
        let files: [&[u8]; 4] = [
            include_bytes!("../../tests/data/pyarrow-v1-dict-snappy.parquet"),
            include_bytes!("../../tests/data/pyarrow-v2-dict-zstd.parquet"),
            include_bytes!("../../tests/data/pyarrow-v2-plain-gzip.parquet"),
            include_bytes!("../../tests/data/pyarrow-v1-plain-none.parquet"),
        ];
        for file in files {
            let out = decode_all(&Bytes::from_static(file)).unwrap();
            let ids: Vec<i64> = out
                .iter()
                .flat_map(|b| {
                    b.column(0)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .unwrap()
                        .values()
                        .to_vec()
                })
                .collect();
            assert_eq!(ids, (0..3000).collect::<Vec<i64>>());
        }
    }

    /// Found by the `parquet_decode` fuzz target: a page header whose map claims 2^60 boolean
    /// entries kept the header reader busy for minutes. It is refused at once.
    #[test]
    fn a_page_header_that_claims_endless_elements_is_refused_at_once() {
        let file = Bytes::from_static(include_bytes!(
            "../../tests/data/parquet-endless-header.bin"
        ));
        let err = decode_all(&file).unwrap_err();
        assert!(
            err.to_string()
                .contains("elements; the header is cut short"),
            "{err}"
        );
    }

    /// Every page of files written by this plugin, with and without dictionaries, in many
    /// row groups and pages, passes the checks.
    #[test]
    fn every_chunk_of_a_good_file_is_checked_and_passes() {
        for dictionary in [true, false] {
            let format = ParquetFormat::default()
                .with_max_row_group_rows(700)
                .with_data_page_size(512)
                .with_dictionary(dictionary);
            let input: Vec<RecordBatch> = (0..3).map(|i| batch(i * 1000, 1000)).collect();
            let file = encode(&format, &input);
            let out = decode_all(&file).unwrap();
            assert_eq!(out.iter().map(|b| b.num_rows()).sum::<usize>(), 3000);
        }
    }

    #[test]
    fn row_group_bytes_bound_the_buffer() {
        let format = ParquetFormat::default()
            .with_row_group_bytes(256 << 10)
            .with_dictionary(false);
        let mut enc = format
            .encoder(batch(0, 1).schema(), &EncodeOptions::default())
            .unwrap();
        let mut max_buffered = 0;
        for i in 0..200 {
            enc.write(&batch(i * 1000, 1000)).unwrap();
            let _ = enc.take_output();
            max_buffered = max_buffered.max(enc.buffered_bytes());
        }
        enc.finish().unwrap();
        assert!(max_buffered < 4 << 20, "buffered {max_buffered} bytes");
    }
}
