//! The Avro encoder: arrow-avro encodes the datums, this module frames them in blocks of
//! bounded size and compresses each block.

use std::io::Write;
use std::sync::{Arc, Mutex};

use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_avro::writer::format::AvroOcfFormat;
use arrow_avro::writer::{Writer as DatumWriter, WriterBuilder};
use arrow_schema::{Schema, SchemaRef};
use bytes::Bytes;

use super::FORMAT;
use super::codec::BlockCompressor;
use super::ocf::{self, SYNC_LEN};
use super::schema::WriteSchema;
use crate::error::{Error, Result};
use crate::plugin::Encoder;

/// A block is closed at this many rows whatever its size (rows of null-only schemas take
/// no bytes).
const MAX_BLOCK_ROWS: usize = 1 << 20;

fn encode_error(message: impl std::fmt::Display) -> Error {
    Error::Encode {
        format: FORMAT,
        message: message.to_string(),
    }
}

/// Writes one Avro object container file into an in-memory output the caller drains.
pub(crate) struct AvroEncoder {
    /// The schema batches come in with.
    input: SchemaRef,
    write: WriteSchema,
    /// arrow-avro's container writer, uncompressed, into a scratch buffer: each `write` of a
    /// slice of rows appends one block there, whose datums are moved to `block`. (Its
    /// row-wise `Encoder` is about half as fast, measured.)
    datums: DatumWriter<Scratch, AvroOcfFormat>,
    scratch: Scratch,
    compressor: BlockCompressor,
    sync: [u8; SYNC_LEN],
    /// Encoded datums of the block in progress.
    block: Vec<u8>,
    block_rows: usize,
    /// Close a block at this many uncompressed bytes.
    block_bytes: usize,
    /// Rows encoded at a time, adapted to the rows' size so one slice stays well under a
    /// block.
    slice_rows: usize,
    /// Output not yet taken.
    out: Vec<u8>,
    total: u64,
    finished: bool,
}

impl std::fmt::Debug for AvroEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroEncoder")
            .field("codec", &self.compressor.codec())
            .field("block_rows", &self.block_rows)
            .field("buffered_bytes", &self.block.len())
            .field("bytes_written", &self.total)
            .field("finished", &self.finished)
            .finish()
    }
}

impl AvroEncoder {
    pub(crate) fn new(
        input: SchemaRef,
        compressor: BlockCompressor,
        block_bytes: usize,
    ) -> Result<Self> {
        let write = super::schema::to_avro(&input)?;
        let scratch = Scratch::default();
        let datums = WriterBuilder::new(Schema::clone(&write.arrow))
            .with_capacity(block_bytes.clamp(1024, 1 << 20))
            .build::<_, AvroOcfFormat>(scratch.clone())
            .map_err(|e| Error::Schema {
                format: FORMAT,
                message: e.to_string(),
            })?;
        // Its header is not used: this encoder writes its own.
        scratch.with(Vec::clear)?;
        let sync = *uuid::Uuid::new_v4().as_bytes();
        let mut out = Vec::new();
        out.extend_from_slice(ocf::MAGIC);
        ocf::write_long(&mut out, 2);
        ocf::write_bytes(&mut out, b"avro.schema");
        ocf::write_bytes(&mut out, write.avro.as_bytes());
        ocf::write_bytes(&mut out, b"avro.codec");
        ocf::write_bytes(&mut out, compressor.codec().name().as_bytes());
        ocf::write_long(&mut out, 0);
        out.extend_from_slice(&sync);
        let total = out.len() as u64;
        Ok(Self {
            input,
            write,
            datums,
            scratch,
            compressor,
            sync,
            block: Vec::new(),
            block_rows: 0,
            block_bytes: block_bytes.max(1),
            slice_rows: 64,
            out,
            total,
            finished: false,
        })
    }

    /// The Avro schema written in the header.
    #[cfg(test)]
    pub(crate) fn avro_schema(&self) -> &str {
        &self.write.avro
    }

    fn check_open(&self) -> Result<()> {
        if self.finished {
            return Err(encode_error("the file is already finished"));
        }
        Ok(())
    }

    /// The batch as the datum encoder expects it: dictionaries decoded, the encoder's own
    /// schema (arrow-avro compares fields exactly).
    fn prepare(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        if batch.schema().fields().len() != self.input.fields().len()
            || batch
                .schema()
                .fields()
                .iter()
                .zip(self.input.fields())
                .any(|(a, b)| a.name() != b.name() || a.data_type() != b.data_type())
        {
            return Err(Error::Schema {
                format: FORMAT,
                message: format!(
                    "the batch's schema {} differs from the file's {}: write each schema to its \
                     own file",
                    batch.schema(),
                    self.input
                ),
            });
        }
        let columns = if self.write.needs_cast {
            batch
                .columns()
                .iter()
                .zip(self.write.arrow.fields())
                .map(|(column, field)| -> Result<ArrayRef> {
                    if column.data_type() == field.data_type() {
                        Ok(column.clone())
                    } else {
                        arrow_cast::cast(column, field.data_type())
                            .map_err(|e| encode_error(format!("column `{}`: {e}", field.name())))
                    }
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            batch.columns().to_vec()
        };
        RecordBatch::try_new_with_options(
            self.write.arrow.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )
        .map_err(encode_error)
    }

    /// Compress the block in progress and append it to the output.
    fn write_block(&mut self) -> Result<()> {
        if self.block_rows == 0 {
            return Ok(());
        }
        let mut compressed = Vec::with_capacity(self.block.len() / 2 + 64);
        self.compressor.compress(&self.block, &mut compressed)?;
        let before = self.out.len();
        ocf::write_long(&mut self.out, self.block_rows as i64);
        ocf::write_long(&mut self.out, compressed.len() as i64);
        self.out.extend_from_slice(&compressed);
        self.out.extend_from_slice(&self.sync);
        self.total += (self.out.len() - before) as u64;
        self.block.clear();
        self.block_rows = 0;
        Ok(())
    }
}

/// The buffer arrow-avro's writer writes into (it owns its writer; this encoder keeps a
/// second handle to read the bytes back).
#[derive(Debug, Clone, Default)]
struct Scratch(Arc<Mutex<Vec<u8>>>);

impl Scratch {
    fn with<T>(&self, f: impl FnOnce(&mut Vec<u8>) -> T) -> Result<T> {
        let mut guard = self
            .0
            .lock()
            .map_err(|_| encode_error("the encoder failed earlier (poisoned buffer)"))?;
        Ok(f(&mut guard))
    }
}

impl Write for Scratch {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned buffer"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Move the datums of the one uncompressed block in `scratch` (row count, size, datums,
/// sync marker) to the end of `block`; returns their size.
fn take_datums(scratch: &mut Vec<u8>, rows: usize, block: &mut Vec<u8>) -> Result<usize> {
    let internal = || encode_error("arrow-avro wrote an unexpected block (internal error)");
    let (count, size, head) = ocf::parse_block_head(scratch)
        .map_err(|_| internal())?
        .ok_or_else(internal)?;
    let size = usize::try_from(size).map_err(|_| internal())?;
    let data = scratch
        .get(head..head.saturating_add(size))
        .filter(|_| count == rows as i64 && scratch.len() == head + size + SYNC_LEN)
        .ok_or_else(internal)?;
    block.extend_from_slice(data);
    scratch.clear();
    Ok(size)
}

impl Encoder for AvroEncoder {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.check_open()?;
        let batch = self.prepare(batch)?;
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = self.slice_rows.min(batch.num_rows() - offset);
            self.datums
                .write(&batch.slice(offset, len))
                .map_err(|e| encode_error(format!("rows {}..{}: {e}", offset, offset + len)))?;
            let block = &mut self.block;
            let encoded = self
                .scratch
                .with(|scratch| take_datums(scratch, len, block))??;
            self.block_rows += len;
            offset += len;
            // Aim for slices of a quarter of a block.
            let per_row = (encoded / len.max(1)).max(1);
            self.slice_rows = (self.block_bytes / 4 / per_row).clamp(1, 8192);
            if self.block.len() >= self.block_bytes || self.block_rows >= MAX_BLOCK_ROWS {
                self.write_block()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.check_open()?;
        self.write_block()
    }

    fn take_output(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.out))
    }

    fn finish(&mut self) -> Result<Bytes> {
        self.check_open()?;
        self.write_block()?;
        self.finished = true;
        Ok(self.take_output())
    }

    fn bytes_written(&self) -> u64 {
        self.total
    }

    fn buffered_bytes(&self) -> usize {
        self.block.len()
    }
}
