//! The push-style Avro decoder: frames the container file itself, decompresses each block
//! within its limits and hands the datums to arrow-avro's datum decoder.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};

use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions, new_null_array};
use arrow_avro::reader::{Decoder as DatumDecoder, DecoderMode, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, SchemaStore};
use arrow_schema::{Schema, SchemaRef};
use bytes::{Buf, Bytes, BytesMut};

use super::codec::{self, AvroCodec};
use super::ocf::{self, SYNC_LEN};
use super::schema::{ReadChecks, check_file_schema};
use super::{FORMAT, Limits};
use crate::error::{Error, Result};
use crate::plugin::{DecodeOptions, ErrorPolicy, StreamDecoder};

/// A block of a schema whose datums can take no bytes may still not declare more rows
/// than this.
const MAX_ZERO_WIDTH_ROWS: u64 = 1 << 24;

fn invalid(message: String) -> Error {
    Error::InvalidFile {
        format: FORMAT,
        message,
    }
}

/// Where the decoder is in the file.
#[derive(Debug)]
enum State {
    /// Reading the header; parse again once this many bytes are buffered.
    Header { next_attempt: usize },
    /// Reading blocks.
    Blocks(Box<Active>),
    /// `finish` succeeded.
    Finished,
    /// A previous call failed; the decoder's state is unknown.
    Failed,
}

/// The Avro decoder (see the module docs of [`crate::avro`]).
#[derive(Debug)]
pub(crate) struct AvroDecoder {
    options: DecodeOptions,
    limits: Limits,
    /// Bytes fed and not yet consumed.
    buf: BytesMut,
    /// The file offset of `buf[0]`.
    offset: u64,
    state: State,
    ready: VecDeque<RecordBatch>,
    skipped: u64,
}

/// Rows of one decompressed block that sit in the batch in progress. Kept so that a batch
/// that fails as a whole (a string that is not UTF-8 is only found when the batch is built)
/// can be decoded again row by row, to name the bad row or skip it.
struct Segment {
    data: Bytes,
    start: usize,
    end: usize,
    rows: usize,
    /// 0-based row number in the file of the first row.
    first_row: u64,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("bytes", &(self.start..self.end))
            .field("rows", &self.rows)
            .field("first_row", &self.first_row)
            .finish()
    }
}

/// The state of a file whose header has been read.
#[derive(Debug)]
struct Active {
    codec: AvroCodec,
    sync: [u8; SYNC_LEN],
    schema_json: String,
    checks: ReadChecks,
    batch_size: usize,
    datums: DatumDecoder,
    segments: Vec<Segment>,
    /// Rows in the blocks read so far (decoded or skipped).
    rows: u64,
    /// Blocks read so far.
    blocks: u64,
    adapter: Option<Adapter>,
}

fn build_datums(schema_json: &str, batch_size: usize) -> std::result::Result<DatumDecoder, String> {
    let mut store = SchemaStore::new();
    let fingerprint = store
        .register(AvroSchema::new(schema_json.to_owned()))
        .map_err(|e| e.to_string())?;
    ReaderBuilder::new()
        .with_batch_size(batch_size)
        .with_writer_schema_store(store)
        .with_active_fingerprint(fingerprint)
        .with_decoder_mode(DecoderMode::UnframedDatum)
        .build_decoder()
        .map_err(|e| e.to_string())
}

/// Run a call into arrow-avro, turning a panic into an error message.
fn guard<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".into());
            Err(invalid(format!(
                "the file is corrupt (the Avro datum decoder failed: {message})"
            )))
        }
    }
}

impl AvroDecoder {
    pub(crate) fn new(options: DecodeOptions, limits: Limits) -> Self {
        Self {
            options,
            limits,
            buf: BytesMut::new(),
            offset: 0,
            state: State::Header {
                next_attempt: ocf::MAGIC.len(),
            },
            ready: VecDeque::new(),
            skipped: 0,
        }
    }

    /// Consume as much of `buf` as makes whole units (the header, blocks).
    fn step(&mut self, at_end: bool) -> Result<()> {
        loop {
            match &mut self.state {
                State::Header { next_attempt } => {
                    let over_limit = self.buf.len() as u64 > self.limits.max_block_bytes;
                    if self.buf.len() < *next_attempt && !at_end && !over_limit {
                        return Ok(());
                    }
                    let parsed = ocf::parse_header(&self.buf)
                        .map_err(|m| invalid(format!("the header is corrupt: {m}")))?;
                    let Some((header, len)) = parsed else {
                        if over_limit {
                            return Err(invalid(format!(
                                "the header is longer than {} bytes (the block limit); is this \
                                 really an Avro file?",
                                self.limits.max_block_bytes
                            )));
                        }
                        // Parse again once twice as many bytes are here: linear work
                        // however the file is chunked.
                        *next_attempt = self.buf.len().saturating_mul(2).max(64);
                        return Ok(());
                    };
                    let active = guard(|| Active::new(header, &self.options))?;
                    self.buf.advance(len);
                    self.offset += len as u64;
                    self.state = State::Blocks(Box::new(active));
                }
                State::Blocks(active) => {
                    let Some((count, size, head)) =
                        ocf::parse_block_head(&self.buf).map_err(|m| {
                            invalid(format!(
                                "block {} at byte {}: {m}",
                                active.blocks + 1,
                                self.offset
                            ))
                        })?
                    else {
                        return Ok(());
                    };
                    let (count, size) =
                        active.check_head(count, size, self.offset, &self.limits)?;
                    let need = head + size + SYNC_LEN;
                    if self.buf.len() < need {
                        self.buf.reserve(need - self.buf.len());
                        return Ok(());
                    }
                    let block_offset = self.offset;
                    self.buf.advance(head);
                    let data = self.buf.split_to(size).freeze();
                    let sync = self.buf.split_to(SYNC_LEN);
                    self.offset += need as u64;
                    if sync[..] != active.sync[..] {
                        return Err(invalid(format!(
                            "block {} at byte {block_offset} is not followed by the file's sync \
                             marker: the file is corrupt or was cut and joined",
                            active.blocks + 1
                        )));
                    }
                    let policy = self.options.on_error;
                    let limits = self.limits;
                    let (ready, skipped) = (&mut self.ready, &mut self.skipped);
                    guard(|| {
                        active.block(count, data, block_offset, &limits, policy, ready, skipped)
                    })?;
                }
                State::Finished => {
                    if self.buf.is_empty() {
                        return Ok(());
                    }
                    return Err(invalid("bytes were fed after the end of the file".into()));
                }
                State::Failed => {
                    return Err(invalid("the decoder already failed on this file".into()));
                }
            }
        }
    }

    fn finish_inner(&mut self) -> Result<()> {
        self.step(true)?;
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Header { .. } if self.offset == 0 && self.buf.is_empty() => Err(invalid(
                "the file is empty (an Avro file starts with `Obj\\x01` and a header)".into(),
            )),
            State::Header { .. } => Err(invalid(format!(
                "the file ends inside its header, after {} bytes: it is truncated",
                self.buf.len()
            ))),
            State::Blocks(mut active) => {
                if !self.buf.is_empty() {
                    return Err(invalid(format!(
                        "the file ends inside block {} (at byte {}, {} bytes of it): it is \
                         truncated",
                        active.blocks + 1,
                        self.offset,
                        self.buf.len()
                    )));
                }
                let policy = self.options.on_error;
                let (ready, skipped) = (&mut self.ready, &mut self.skipped);
                guard(|| active.flush(policy, ready, skipped))
            }
            State::Finished => Ok(()),
            State::Failed => Err(invalid("the decoder already failed on this file".into())),
        }
    }
}

impl StreamDecoder for AvroDecoder {
    fn decode(&mut self, buf: &[u8]) -> Result<()> {
        if matches!(self.state, State::Failed) {
            return Err(invalid("the decoder already failed on this file".into()));
        }
        self.buf.extend_from_slice(buf);
        let result = self.step(false);
        if result.is_err() {
            self.state = State::Failed;
            self.buf = BytesMut::new();
        }
        result
    }

    fn finish(&mut self) -> Result<()> {
        let result = self.finish_inner();
        if result.is_err() {
            self.state = State::Failed;
            self.buf = BytesMut::new();
        }
        result
    }

    fn next_batch(&mut self) -> Option<RecordBatch> {
        self.ready.pop_front()
    }

    fn skipped_rows(&self) -> u64 {
        self.skipped
    }
}

impl Active {
    fn new(header: ocf::Header, options: &DecodeOptions) -> Result<Self> {
        let checks = check_file_schema(&header.schema).map_err(|m| Error::Schema {
            format: FORMAT,
            message: format!("the file's schema cannot be read: {m}"),
        })?;
        let batch_size = options.batch_size.max(1);
        let datums = build_datums(&header.schema, batch_size).map_err(|m| Error::Schema {
            format: FORMAT,
            message: format!("the file's schema cannot be read as Arrow: {m}"),
        })?;
        let adapter = match &options.schema {
            Some(target) => Some(Adapter::new(&datums.schema(), target.clone())?),
            None => None,
        };
        Ok(Self {
            codec: header.codec,
            sync: header.sync,
            schema_json: header.schema,
            checks,
            batch_size,
            datums,
            segments: Vec::new(),
            rows: 0,
            blocks: 0,
            adapter,
        })
    }

    /// Check a block's head before its bytes are buffered.
    fn check_head(
        &self,
        count: i64,
        size: i64,
        offset: u64,
        limits: &Limits,
    ) -> Result<(u64, usize)> {
        let block = self.blocks + 1;
        let (Ok(count), Ok(size)) = (u64::try_from(count), u64::try_from(size)) else {
            return Err(invalid(format!(
                "block {block} at byte {offset} declares {count} rows in {size} bytes"
            )));
        };
        if size > limits.max_block_bytes {
            return Err(invalid(format!(
                "block {block} at byte {offset} declares {size} bytes, more than the limit of {} \
                 (AvroFormat::with_max_block_bytes): the file is corrupt, or was written with \
                 very large blocks",
                limits.max_block_bytes
            )));
        }
        let max_rows = match self.checks.min_datum_bytes {
            0 => MAX_ZERO_WIDTH_ROWS,
            n => limits.max_decompressed_bytes / n,
        };
        if count > max_rows {
            return Err(invalid(format!(
                "block {block} at byte {offset} declares {count} rows, more than its data can \
                 hold ({max_rows} at most)"
            )));
        }
        let size = usize::try_from(size)
            .map_err(|_| invalid(format!("block {block} is too large for this machine")))?;
        Ok((count, size))
    }

    /// Decompress and decode one block.
    #[allow(clippy::too_many_arguments)]
    fn block(
        &mut self,
        count: u64,
        data: Bytes,
        offset: u64,
        limits: &Limits,
        policy: ErrorPolicy,
        ready: &mut VecDeque<RecordBatch>,
        skipped: &mut u64,
    ) -> Result<()> {
        self.blocks += 1;
        let block = self.blocks;
        let first_row = self.rows;
        let data = match self.codec {
            AvroCodec::Null if data.len() as u64 > limits.max_decompressed_bytes => {
                return Err(invalid(format!(
                    "block {block} at byte {offset} holds {} bytes, more than {} bytes (the limit for a \
                     decompressed block; raise it with \
                     AvroFormat::with_max_decompressed_block_bytes if the file is trusted)",
                    data.len(),
                    limits.max_decompressed_bytes
                )));
            }
            AvroCodec::Null => data,
            codec => match codec::decompress(codec, &data, limits.max_decompressed_bytes) {
                Ok(plain) => Bytes::from(plain),
                Err(e) => {
                    let too_large = matches!(e, codec::DecompressError::TooLarge(_));
                    if policy == ErrorPolicy::Skip && !too_large {
                        // Corrupt compressed data: the whole block is lost.
                        self.rows += count;
                        *skipped += count;
                        return Ok(());
                    }
                    return Err(invalid(format!(
                        "block {block} at byte {offset} (rows {}..={}) cannot be decompressed: {e}",
                        first_row + 1,
                        first_row + count
                    )));
                }
            },
        };
        let min = self.checks.min_datum_bytes;
        if min > 0 && count.saturating_mul(min) > data.len() as u64 {
            return Err(invalid(format!(
                "block {block} at byte {offset} declares {count} rows but holds only {} bytes",
                data.len()
            )));
        }
        let mut pos = 0usize;
        let mut seg = Segment {
            data: data.clone(),
            start: 0,
            end: 0,
            rows: 0,
            first_row,
        };
        for i in 0..count {
            if self.datums.batch_is_full() {
                seg.end = pos;
                self.segments.push(seg);
                self.flush(policy, ready, skipped)?;
                seg = Segment {
                    data: data.clone(),
                    start: pos,
                    end: pos,
                    rows: 0,
                    first_row: first_row + i,
                };
            }
            let rest = data.get(pos..).unwrap_or_default();
            match self.datums.decode(rest) {
                Ok(n) => {
                    pos += n;
                    seg.rows += 1;
                }
                Err(e) => {
                    let row = first_row + i + 1;
                    if policy == ErrorPolicy::Fail {
                        return Err(Error::Decode {
                            format: FORMAT,
                            line: Some(row),
                            message: format!(
                                "{e} (block {block} at byte {offset}, byte {pos} of the block's \
                                 data); with the skip policy the rest of the block is skipped"
                            ),
                        });
                    }
                    // The datum decoder holds part of the bad row: start it afresh with the
                    // rows before it, and go on at the next block.
                    seg.end = pos;
                    self.segments.push(seg);
                    *skipped += count - i;
                    self.rows += count;
                    return self.rebuild();
                }
            }
        }
        seg.end = pos;
        self.segments.push(seg);
        self.rows += count;
        if pos != data.len() && policy == ErrorPolicy::Fail {
            return Err(invalid(format!(
                "block {block} at byte {offset} has {} bytes left after its {count} rows: the \
                 block is corrupt",
                data.len() - pos
            )));
        }
        Ok(())
    }

    /// A fresh datum decoder holding the rows of `segments` again.
    fn rebuild(&mut self) -> Result<()> {
        let mut fresh = self.build(self.batch_size)?;
        for seg in &self.segments {
            let mut pos = seg.start;
            for j in 0..seg.rows {
                let rest = seg.data.get(pos..seg.end).unwrap_or_default();
                pos += fresh.decode(rest).map_err(|e| Error::Decode {
                    format: FORMAT,
                    line: Some(seg.first_row + j as u64 + 1),
                    message: e.to_string(),
                })?;
            }
        }
        self.datums = fresh;
        Ok(())
    }

    fn build(&self, batch_size: usize) -> Result<DatumDecoder> {
        build_datums(&self.schema_json, batch_size).map_err(|m| Error::Schema {
            format: FORMAT,
            message: m,
        })
    }

    /// Move the batch in progress to `ready`.
    fn flush(
        &mut self,
        policy: ErrorPolicy,
        ready: &mut VecDeque<RecordBatch>,
        skipped: &mut u64,
    ) -> Result<()> {
        match self.datums.flush() {
            Ok(batch) => {
                self.segments.clear();
                if let Some(batch) = batch.filter(|b| b.num_rows() > 0) {
                    ready.push_back(self.adapt(batch)?);
                }
                Ok(())
            }
            Err(e) => self.recover(&e.to_string(), policy, ready, skipped),
        }
    }

    /// The batch failed as a whole: find its bad rows one by one. Fail on the first, or
    /// skip them and keep the rest.
    fn recover(
        &mut self,
        batch_error: &str,
        policy: ErrorPolicy,
        ready: &mut VecDeque<RecordBatch>,
        skipped: &mut u64,
    ) -> Result<()> {
        let segments = std::mem::take(&mut self.segments);
        let first = segments.first().map(|s| s.first_row + 1);
        let total: usize = segments.iter().map(|s| s.rows).sum();
        let mut good = self.build(self.batch_size)?;
        let mut probe = self.build(1)?;
        let mut bad = 0u64;
        for seg in &segments {
            let mut pos = seg.start;
            for j in 0..seg.rows {
                let line = seg.first_row + j as u64 + 1;
                let rest = seg.data.get(pos..seg.end).unwrap_or_default();
                let decode_error = |e: arrow_avro::errors::AvroError| Error::Decode {
                    format: FORMAT,
                    line: Some(line),
                    message: e.to_string(),
                };
                let n = probe.decode(rest).map_err(decode_error)?;
                let row = rest.get(..n).unwrap_or_default();
                pos += n;
                match probe.flush() {
                    Ok(_) => {
                        good.decode(row).map_err(decode_error)?;
                    }
                    Err(e) => {
                        if policy == ErrorPolicy::Fail {
                            return Err(Error::Decode {
                                format: FORMAT,
                                line: Some(line),
                                message: e.to_string(),
                            });
                        }
                        bad += 1;
                        probe = self.build(1)?;
                    }
                }
            }
        }
        if bad == 0 {
            return Err(Error::Decode {
                format: FORMAT,
                line: first,
                message: format!("{batch_error} (in the {total} rows from here)"),
            });
        }
        *skipped += bad;
        let batch = good.flush().map_err(|e| Error::Decode {
            format: FORMAT,
            line: first,
            message: e.to_string(),
        })?;
        self.datums = good;
        if let Some(batch) = batch.filter(|b| b.num_rows() > 0) {
            ready.push_back(self.adapt(batch)?);
        }
        Ok(())
    }

    fn adapt(&self, batch: RecordBatch) -> Result<RecordBatch> {
        match &self.adapter {
            Some(a) => a.apply(&batch),
            None => Ok(batch),
        }
    }
}

/// Reads a file's columns as the schema the caller asked for: by name, cast where the
/// types differ, nulls for nullable fields the file does not have.
#[derive(Debug)]
struct Adapter {
    target: SchemaRef,
    /// For each target field: the file's column index, if it has it.
    sources: Vec<Option<usize>>,
}

impl Adapter {
    fn new(file: &Schema, target: SchemaRef) -> Result<Self> {
        let mut sources = Vec::with_capacity(target.fields().len());
        for field in target.fields() {
            match file.index_of(field.name()) {
                Ok(i) => {
                    let from = file.field(i).data_type();
                    if from != field.data_type()
                        && !arrow_cast::can_cast_types(from, field.data_type())
                    {
                        return Err(Error::Schema {
                            format: FORMAT,
                            message: format!(
                                "field `{}` is {from} in the file and cannot be read as {}",
                                field.name(),
                                field.data_type()
                            ),
                        });
                    }
                    sources.push(Some(i));
                }
                Err(_) if field.is_nullable() => sources.push(None),
                Err(_) => {
                    return Err(Error::Schema {
                        format: FORMAT,
                        message: format!(
                            "field `{}` is not in the file and the schema says it cannot be null; \
                             make it nullable or read without it",
                            field.name()
                        ),
                    });
                }
            }
        }
        Ok(Self { target, sources })
    }

    fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        let columns = self
            .target
            .fields()
            .iter()
            .zip(&self.sources)
            .map(|(field, source)| -> Result<ArrayRef> {
                let Some(column) = source.and_then(|i| batch.columns().get(i)) else {
                    return Ok(new_null_array(field.data_type(), rows));
                };
                if column.data_type() == field.data_type() {
                    return Ok(column.clone());
                }
                let options = arrow_cast::CastOptions {
                    safe: false,
                    ..Default::default()
                };
                arrow_cast::cast_with_options(column, field.data_type(), &options).map_err(|e| {
                    Error::Schema {
                        format: FORMAT,
                        message: format!(
                            "field `{}` cannot be read as {}: {e}",
                            field.name(),
                            field.data_type()
                        ),
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        RecordBatch::try_new_with_options(
            self.target.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| Error::Schema {
            format: FORMAT,
            message: e.to_string(),
        })
    }
}
