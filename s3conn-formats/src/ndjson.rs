//! NDJSON / JSON Lines: one JSON object per line.
//!
//! The decoder frames lines itself, feeds whole lines to arrow-json's push decoder and keeps
//! the bytes of the batch in progress, so that a bad record is reported with its exact line
//! number (or skipped and counted, under [`ErrorPolicy::Skip`]) without slowing the good
//! path. The schema is inferred from the first [`DecodeOptions::infer_rows`] lines (at most
//! [`DecodeOptions::infer_bytes`]) unless one is given; a field outside the schema is an
//! error that names its line, never dropped silently.
//!
//! The encoder writes one object per line, optionally compressed as a whole
//! ([`EncodeOptions::codec`]).

use std::collections::VecDeque;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_json::reader::{Decoder as JsonDecoder, ReaderBuilder};
use arrow_json::writer::LineDelimitedWriter;
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use bytes::Bytes;

use crate::compression::CompressingWriter;
use crate::error::{Error, Result};
use crate::plugin::{
    DecodeInput, DecodeOptions, Decoder, EncodeOptions, Encoder, ErrorPolicy, FormatPlugin,
    StreamDecoder,
};

const FORMAT: &str = "ndjson";

/// The NDJSON / JSON Lines plugin (`.jsonl`, `.ndjson`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NdjsonFormat;

impl FormatPlugin for NdjsonFormat {
    fn name(&self) -> &str {
        FORMAT
    }

    fn extensions(&self) -> &[&str] {
        &["jsonl", "ndjson"]
    }

    fn content_type(&self) -> &str {
        "application/x-ndjson"
    }

    fn decoder(&self, _input: &DecodeInput, options: &DecodeOptions) -> Result<Decoder> {
        Ok(Decoder::Stream(Box::new(NdjsonDecoder::new(
            options.clone(),
        ))))
    }

    fn encoder(&self, schema: SchemaRef, options: &EncodeOptions) -> Result<Box<dyn Encoder>> {
        let out =
            CompressingWriter::new(options.whole_file_compression()?, options.compression_level)?;
        let _ = schema;
        Ok(Box::new(NdjsonEncoder {
            writer: LineDelimitedWriter::new(out),
        }))
    }
}

/// Push-style NDJSON decoder (see the module docs).
#[derive(Debug)]
struct NdjsonDecoder {
    options: DecodeOptions,
    /// Bytes buffered for schema inference, before the inner decoder exists.
    sample: Vec<u8>,
    sample_lines: usize,
    schema: Option<SchemaRef>,
    inner: Option<InnerDecoder>,
    /// The unterminated last line seen so far.
    carry: Vec<u8>,
    /// Bytes fed to the inner decoder since its last flush.
    batch_bytes: Vec<u8>,
    /// Newlines before the first byte of `batch_bytes`.
    batch_start_line: u64,
    ready: VecDeque<RecordBatch>,
    skipped: u64,
}

/// arrow-json's decoder, with a Debug that does not dump its tape.
struct InnerDecoder(JsonDecoder);

impl std::fmt::Debug for InnerDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("arrow_json::Decoder")
    }
}

impl NdjsonDecoder {
    fn new(options: DecodeOptions) -> Self {
        Self {
            schema: options.schema.clone(),
            options,
            sample: Vec::new(),
            sample_lines: 0,
            inner: None,
            carry: Vec::new(),
            batch_bytes: Vec::new(),
            batch_start_line: 0,
            ready: VecDeque::new(),
            skipped: 0,
        }
    }

    fn build(&self, schema: &SchemaRef, batch_size: usize) -> Result<JsonDecoder> {
        ReaderBuilder::new(schema.clone())
            .with_batch_size(batch_size)
            .with_strict_mode(true)
            .with_coerce_primitive(true)
            .build_decoder()
            .map_err(|e| Error::Schema {
                format: FORMAT,
                message: e.to_string(),
            })
    }

    /// Leave the inference phase: settle the schema, build the decoder, replay the sample.
    fn start(&mut self, at_end: bool) -> Result<()> {
        let schema = match &self.schema {
            Some(s) => s.clone(),
            None => {
                let inferred = self.infer(at_end)?;
                self.schema = Some(inferred.clone());
                inferred
            }
        };
        self.inner = Some(InnerDecoder(self.build(&schema, self.options.batch_size)?));
        let sample = std::mem::take(&mut self.sample);
        self.push_bytes(&sample)
    }

    fn infer(&self, at_end: bool) -> Result<SchemaRef> {
        let mut pieces: Vec<&[u8]> = self.sample.split(|b| *b == b'\n').collect();
        if !at_end {
            // The last piece may be a line cut in the middle.
            pieces.pop();
        }
        let values: Vec<serde_json::Value> = pieces
            .into_iter()
            .filter(|p| !is_blank(p))
            .take(self.options.infer_rows)
            .filter_map(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
            .filter(serde_json::Value::is_object)
            .collect();
        let schema = arrow_json::reader::infer_json_schema_from_iterator(values.iter().map(Ok))
            .map_err(|e| Error::Schema {
                format: FORMAT,
                message: format!("cannot infer a schema from the first lines: {e}"),
            })?;
        // Columns come in the order the data first shows them (serde_json keeps object
        // order with its `preserve_order` feature, which this crate enables).
        Ok(Arc::new(settle_nulls(&schema)))
    }

    fn push_bytes(&mut self, mut buf: &[u8]) -> Result<()> {
        if !self.carry.is_empty() {
            match memchr::memchr(b'\n', buf) {
                None => {
                    self.carry.extend_from_slice(buf);
                    return self.check_carry();
                }
                Some(i) => {
                    let (head, tail) = buf.split_at(i + 1);
                    self.carry.extend_from_slice(head);
                    let line = std::mem::take(&mut self.carry);
                    self.feed(&line)?;
                    buf = tail;
                }
            }
        }
        match memchr::memrchr(b'\n', buf) {
            Some(i) => {
                let (lines, tail) = buf.split_at(i + 1);
                self.feed(lines)?;
                self.carry.extend_from_slice(tail);
            }
            None => self.carry.extend_from_slice(buf),
        }
        self.check_carry()
    }

    fn check_carry(&self) -> Result<()> {
        if self.carry.len() > self.options.max_line_bytes {
            return Err(Error::Decode {
                format: FORMAT,
                line: Some(self.batch_start_line + count_lines(&self.batch_bytes) + 1),
                message: format!(
                    "the line is longer than {} bytes without a newline; is this really NDJSON?",
                    self.options.max_line_bytes
                ),
            });
        }
        Ok(())
    }

    /// Feed whole lines (`lines` ends with a newline) to the inner decoder.
    fn feed(&mut self, lines: &[u8]) -> Result<()> {
        let mut rest = lines;
        let mut stalled = false;
        while !rest.is_empty() {
            let Some(inner) = self.inner.as_mut() else {
                return Ok(());
            };
            match inner.0.decode(rest) {
                Ok(n) => {
                    let (done, tail) = rest.split_at(n.min(rest.len()));
                    self.batch_bytes.extend_from_slice(done);
                    rest = tail;
                    if !rest.is_empty() {
                        // The batch is full.
                        if n == 0 && stalled {
                            return Err(Error::Decode {
                                format: FORMAT,
                                line: Some(self.batch_start_line + 1),
                                message: "the decoder made no progress".into(),
                            });
                        }
                        stalled = n == 0;
                        self.flush_batch()?;
                    }
                }
                Err(e) => {
                    let mut pending = std::mem::take(&mut self.batch_bytes);
                    pending.extend_from_slice(rest);
                    return self.recover(pending, &e.to_string());
                }
            }
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<()> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(());
        };
        match inner.0.flush() {
            Ok(batch) => {
                if let Some(batch) = batch.filter(|b| b.num_rows() > 0) {
                    self.ready.push_back(batch);
                }
                self.batch_start_line += count_lines(&self.batch_bytes);
                self.batch_bytes.clear();
                Ok(())
            }
            Err(e) => {
                let pending = std::mem::take(&mut self.batch_bytes);
                self.recover(pending, &e.to_string())
            }
        }
    }

    /// The inner decoder failed somewhere in `pending` (whole lines, the batch in progress).
    /// Find the bad lines one by one; fail on the first, or skip them and keep the rest.
    fn recover(&mut self, pending: Vec<u8>, batch_error: &str) -> Result<()> {
        let schema = self.schema.clone().ok_or_else(|| Error::Schema {
            format: FORMAT,
            message: "no schema".into(),
        })?;
        let mut good = Vec::with_capacity(pending.len());
        let mut bad = 0u64;
        for (i, piece) in pending.split(|b| *b == b'\n').enumerate() {
            if is_blank(piece) {
                continue;
            }
            let line = self.batch_start_line + 1 + i as u64;
            match self.decode_one(&schema, piece) {
                Ok(()) => {
                    good.extend_from_slice(piece);
                    good.push(b'\n');
                }
                Err(message) => {
                    bad += 1;
                    if self.options.on_error == ErrorPolicy::Fail {
                        return Err(Error::Decode {
                            format: FORMAT,
                            line: Some(line),
                            message: explain(&message),
                        });
                    }
                }
            }
        }
        if bad == 0 {
            // No single line fails on its own: report the batch as a whole.
            return Err(Error::Decode {
                format: FORMAT,
                line: Some(self.batch_start_line + 1),
                message: format!(
                    "{} (in the {} lines from here)",
                    explain(batch_error),
                    count_lines(&pending)
                ),
            });
        }
        self.skipped += bad;
        self.batch_start_line += count_lines(&pending);
        // Decode the good lines with a fresh decoder and flush them at once, so that the
        // decoder is empty again and a later failure cannot lose these rows.
        let mut fresh = self.build(&schema, self.options.batch_size)?;
        let mut rest = &good[..];
        while !rest.is_empty() {
            let n = fresh.decode(rest).map_err(|e| Error::Decode {
                format: FORMAT,
                line: None,
                message: e.to_string(),
            })?;
            rest = rest.get(n..).unwrap_or(&[]);
            let flushed = fresh.flush().map_err(|e| Error::Decode {
                format: FORMAT,
                line: None,
                message: e.to_string(),
            })?;
            if let Some(b) = flushed.filter(|b| b.num_rows() > 0) {
                self.ready.push_back(b);
            }
            if n == 0 && !rest.is_empty() {
                break;
            }
        }
        self.inner = Some(InnerDecoder(fresh));
        Ok(())
    }

    fn decode_one(&self, schema: &SchemaRef, line: &[u8]) -> std::result::Result<(), String> {
        let mut d = self.build(schema, 1).map_err(|e| e.to_string())?;
        let n = d.decode(line).map_err(|e| e.to_string())?;
        if n < line.len() && !is_blank(line.get(n..).unwrap_or(&[])) {
            return Err("more than one JSON value on the line".into());
        }
        if d.has_partial_record() {
            return Err("the JSON object is not closed on this line".into());
        }
        d.flush().map(|_| ()).map_err(|e| e.to_string())
    }
}

impl StreamDecoder for NdjsonDecoder {
    fn decode(&mut self, buf: &[u8]) -> Result<()> {
        if self.inner.is_none() {
            self.sample.extend_from_slice(buf);
            self.sample_lines += memchr::memchr_iter(b'\n', buf).count();
            if self.schema.is_some()
                || self.sample_lines >= self.options.infer_rows
                || self.sample.len() >= self.options.infer_bytes
            {
                self.start(false)?;
            }
            return Ok(());
        }
        self.push_bytes(buf)
    }

    fn finish(&mut self) -> Result<()> {
        if self.inner.is_none() {
            if self.schema.is_none() && is_blank(&self.sample) {
                // An empty file: no rows, no schema.
                return Ok(());
            }
            self.start(true)?;
        }
        if !self.carry.is_empty() {
            let mut line = std::mem::take(&mut self.carry);
            line.push(b'\n');
            self.feed(&line)?;
        }
        let partial = self
            .inner
            .as_ref()
            .is_some_and(|d| d.0.has_partial_record());
        if partial {
            return Err(Error::Decode {
                format: FORMAT,
                line: Some(self.batch_start_line + count_lines(&self.batch_bytes)),
                message: "the file ends in the middle of a JSON object".into(),
            });
        }
        self.flush_batch()
    }

    fn next_batch(&mut self) -> Option<RecordBatch> {
        self.ready.pop_front()
    }

    fn skipped_rows(&self) -> u64 {
        self.skipped
    }
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

fn count_lines(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

/// Make arrow-json's messages say what to do.
fn explain(message: &str) -> String {
    if message.contains("missing from schema") {
        format!(
            "{message}: the record has a field that is not in the schema; give a schema that includes it, or infer from more rows"
        )
    } else {
        message.to_owned()
    }
}

/// Inference types a field that is only ever `null` as Null; read it as a nullable string.
fn settle_nulls(schema: &Schema) -> Schema {
    fn settle(dt: &DataType) -> DataType {
        match dt {
            DataType::Null => DataType::Utf8,
            DataType::List(f) => DataType::List(Arc::new(settle_field(f))),
            DataType::Struct(fields) => {
                DataType::Struct(fields.iter().map(|f| settle_field(f)).collect::<Fields>())
            }
            other => other.clone(),
        }
    }
    fn settle_field(f: &Field) -> Field {
        f.clone().with_data_type(settle(f.data_type()))
    }
    Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| settle_field(f))
            .collect::<Fields>(),
    )
}

/// NDJSON encoder over a compressing in-memory output.
struct NdjsonEncoder {
    writer: LineDelimitedWriter<CompressingWriter>,
}

impl std::fmt::Debug for NdjsonEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NdjsonEncoder")
            .field("output", self.writer.get_ref())
            .finish()
    }
}

impl Encoder for NdjsonEncoder {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer.write(batch).map_err(|e| Error::Encode {
            format: FORMAT,
            message: e.to_string(),
        })
    }

    fn take_output(&mut self) -> Bytes {
        self.writer.get_mut().output().take()
    }

    fn finish(&mut self) -> Result<Bytes> {
        self.writer.finish().map_err(|e| Error::Encode {
            format: FORMAT,
            message: e.to_string(),
        })?;
        self.writer.get_mut().finish()?;
        Ok(self.take_output())
    }

    fn bytes_written(&self) -> u64 {
        self.writer.get_ref().output_ref().total()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::compression::Compression;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;

    fn decoder(options: DecodeOptions) -> Box<dyn StreamDecoder> {
        match NdjsonFormat
            .decoder(&DecodeInput::default(), &options)
            .unwrap()
        {
            Decoder::Stream(d) => d,
            Decoder::Ranged(_) => panic!("ndjson is a stream format"),
        }
    }

    /// Decode `data` fed in chunks of `chunk` bytes.
    fn decode(data: &[u8], chunk: usize, options: DecodeOptions) -> Result<Vec<RecordBatch>> {
        let mut d = decoder(options);
        let mut out = Vec::new();
        for c in data.chunks(chunk.max(1)) {
            d.decode(c)?;
            while let Some(b) = d.next_batch() {
                out.push(b);
            }
        }
        d.finish()?;
        while let Some(b) = d.next_batch() {
            out.push(b);
        }
        Ok(out)
    }

    fn ids(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                b.column_by_name("id")
                    .unwrap()
                    .as_primitive::<Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    fn lines(n: i64) -> String {
        (0..n)
            .map(|i| format!("{{\"id\": {i}, \"name\": \"n{i}\", \"tags\": [\"a\"], \"o\": {{\"k\": {i}}}}}\n"))
            .collect()
    }

    #[test]
    fn any_chunking_gives_the_same_rows_in_bounded_batches() {
        let data = lines(1000);
        for chunk in [1, 7, 64, 1000, 1 << 20] {
            let batches = decode(
                data.as_bytes(),
                chunk,
                DecodeOptions::default()
                    .with_batch_size(100)
                    .with_infer_rows(10),
            )
            .unwrap();
            assert_eq!(
                ids(&batches),
                (0..1000).collect::<Vec<_>>(),
                "chunk {chunk}"
            );
            assert!(batches.iter().all(|b| b.num_rows() <= 100));
        }
    }

    #[test]
    fn nested_values_are_inferred_as_struct_and_list() {
        let batches = decode(lines(3).as_bytes(), 5, DecodeOptions::default()).unwrap();
        let schema = batches[0].schema();
        assert!(matches!(
            schema.field_with_name("o").unwrap().data_type(),
            DataType::Struct(_)
        ));
        assert!(matches!(
            schema.field_with_name("tags").unwrap().data_type(),
            DataType::List(_)
        ));
    }

    #[test]
    fn no_trailing_newline_blank_lines_and_crlf() {
        let data = "{\"id\": 1}\r\n\n   \n{\"id\": 2}";
        let batches = decode(data.as_bytes(), 3, DecodeOptions::default()).unwrap();
        assert_eq!(ids(&batches), [1, 2]);
    }

    #[test]
    fn empty_file_gives_no_batches() {
        assert!(
            decode(b"", 10, DecodeOptions::default())
                .unwrap()
                .is_empty()
        );
        assert!(
            decode(b"\n\n ", 10, DecodeOptions::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number() {
        let mut data = lines(500);
        data.push_str("{\"id\": 500, \"name\": oops}\n");
        data.push_str(&lines(10));
        for chunk in [1, 13, 4096, 1 << 20] {
            let err = decode(
                data.as_bytes(),
                chunk,
                DecodeOptions::default()
                    .with_batch_size(64)
                    .with_infer_rows(20),
            )
            .unwrap_err();
            assert_eq!(err.line(), Some(501), "chunk {chunk}: {err}");
        }
    }

    #[test]
    fn a_type_error_is_reported_with_its_number() {
        let mut data = lines(100);
        data.push_str("{\"id\": \"not a number\", \"name\": \"x\"}\n");
        let err = decode(
            data.as_bytes(),
            50,
            DecodeOptions::default()
                .with_batch_size(1000)
                .with_infer_rows(10),
        )
        .unwrap_err();
        assert_eq!(err.line(), Some(101), "{err}");
    }

    #[test]
    fn a_field_outside_the_schema_is_an_error_not_a_silent_drop() {
        let mut data = lines(30);
        data.push_str("{\"id\": 30, \"surprise\": true}\n");
        let err = decode(
            data.as_bytes(),
            100,
            DecodeOptions::default().with_infer_rows(10),
        )
        .unwrap_err();
        assert_eq!(err.line(), Some(31), "{err}");
        assert!(err.to_string().contains("not in the schema"), "{err}");
    }

    #[test]
    fn skip_policy_counts_and_keeps_every_good_row() {
        let mut data = String::new();
        for i in 0..300 {
            if i % 50 == 7 {
                data.push_str("{broken\n");
            } else {
                data.push_str(&format!("{{\"id\": {i}}}\n"));
            }
        }
        let mut d = decoder(
            DecodeOptions::default()
                .with_batch_size(32)
                .with_error_policy(ErrorPolicy::Skip),
        );
        let mut out = Vec::new();
        for c in data.as_bytes().chunks(37) {
            d.decode(c).unwrap();
            while let Some(b) = d.next_batch() {
                out.push(b);
            }
        }
        d.finish().unwrap();
        while let Some(b) = d.next_batch() {
            out.push(b);
        }
        let expected: Vec<i64> = (0..300).filter(|i| i % 50 != 7).collect();
        assert_eq!(ids(&out), expected);
        assert_eq!(d.skipped_rows(), 6);
    }

    #[test]
    fn truncated_object_at_end_is_an_error() {
        let err = decode(b"{\"id\": 1}\n{\"id\": 2", 4, DecodeOptions::default()).unwrap_err();
        assert_eq!(err.line(), Some(2), "{err}");
    }

    #[test]
    fn an_endless_line_is_refused() {
        let data = vec![b'a'; 10_000];
        let err = decode(
            &data,
            100,
            DecodeOptions::default()
                .with_max_line_bytes(1000)
                .with_infer_bytes(10),
        )
        .unwrap_err();
        assert!(err.to_string().contains("longer than 1000 bytes"), "{err}");
    }

    #[test]
    fn inferred_columns_keep_the_order_of_the_data() {
        let data = "{\"z\": 1, \"a\": {\"y\": 1, \"b\": 2}, \"m\": [{\"q\": 1, \"c\": 2}], \"k9\": 1, \"k8\": 1, \"k7\": 1, \"k6\": 1, \"k5\": 1, \"k4\": 1, \"k3\": 1}\n";
        for _ in 0..5 {
            let batches = decode(data.as_bytes(), 3, DecodeOptions::default()).unwrap();
            let schema = batches[0].schema();
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            assert_eq!(
                names,
                ["z", "a", "m", "k9", "k8", "k7", "k6", "k5", "k4", "k3"]
            );
            let DataType::Struct(inner) = schema.field(1).data_type() else {
                panic!()
            };
            let inner: Vec<&str> = inner.iter().map(|f| f.name().as_str()).collect();
            assert_eq!(inner, ["y", "b"]);
            let DataType::List(item) = schema.field(2).data_type() else {
                panic!()
            };
            let DataType::Struct(inner) = item.data_type() else {
                panic!()
            };
            let inner: Vec<&str> = inner.iter().map(|f| f.name().as_str()).collect();
            assert_eq!(inner, ["q", "c"]);
        }
    }

    #[test]
    fn only_nulls_become_nullable_strings() {
        let batches = decode(b"{\"id\": 1, \"x\": null}\n", 100, DecodeOptions::default()).unwrap();
        assert_eq!(
            batches[0]
                .schema()
                .field_with_name("x")
                .unwrap()
                .data_type(),
            &DataType::Utf8
        );
    }

    #[test]
    fn encoder_roundtrips_through_every_writable_codec() {
        let original = decode(lines(200).as_bytes(), 1 << 20, DecodeOptions::default()).unwrap();
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mut enc = NdjsonFormat
                .encoder(
                    original[0].schema(),
                    &EncodeOptions::default().with_compression(compression),
                )
                .unwrap();
            let mut bytes = Vec::new();
            for b in &original {
                enc.write(b).unwrap();
                bytes.extend_from_slice(&enc.take_output());
            }
            bytes.extend_from_slice(&enc.finish().unwrap());
            assert_eq!(enc.bytes_written(), bytes.len() as u64);
            let plain = match compression {
                Compression::None => bytes,
                Compression::Gzip => {
                    let mut out = Vec::new();
                    std::io::Read::read_to_end(
                        &mut flate2::read::MultiGzDecoder::new(&bytes[..]),
                        &mut out,
                    )
                    .unwrap();
                    out
                }
                _ => zstd::decode_all(&bytes[..]).unwrap(),
            };
            let back = decode(
                &plain,
                999,
                DecodeOptions::default().with_schema(original[0].schema()),
            )
            .unwrap();
            assert_eq!(ids(&back), (0..200).collect::<Vec<_>>(), "{compression}");
            assert_eq!(
                arrow_select_concat(&back),
                arrow_select_concat(&original),
                "{compression}"
            );
        }
    }

    fn arrow_select_concat(batches: &[RecordBatch]) -> Vec<String> {
        // Compare row-wise through JSON: independent of batch boundaries.
        let mut w = arrow_json::writer::LineDelimitedWriter::new(Vec::new());
        for b in batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
        String::from_utf8(w.into_inner())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}
