//! JSON documents (`.json`): a top-level array of objects, streamed element by element, or
//! objects one after another (NDJSON written with a `.json` name).
//!
//! The decoder looks at the first byte that is not white space: `[` starts an array, whose
//! elements are framed one by one (tracking strings, escapes and nesting) and decoded like
//! NDJSON lines, so a 10 GB array needs no more memory than a batch of its elements.
//! Anything else is read as NDJSON. Errors carry a line: for a pretty-printed array, the
//! line the element starts on; for an array on one line, the element's number.
//!
//! The encoder writes one array, an element per line: `[\n{…},\n{…}\n]\n`; an empty file is
//! `[]`.
//!
//! ```
//! use s3conn_formats::json::JsonFormat;
//! use s3conn_formats::{Decoder, DecodeInput, DecodeOptions, FormatPlugin};
//!
//! let Decoder::Stream(mut decoder) = JsonFormat.decoder(&DecodeInput::default(), &DecodeOptions::default())?
//! else { unreachable!() };
//! decoder.decode(br#"[{"id": 1, "tags": ["a"]}, {"id": 2, "tags": []}]"#)?;
//! decoder.finish()?;
//! assert_eq!(decoder.next_batch().unwrap().num_rows(), 2);
//! # Ok::<(), s3conn_formats::Error>(())
//! ```

use std::io::Write;

use arrow_array::RecordBatch;
use arrow_json::writer::{JsonFormat as ArrowJsonFormat, Writer as JsonWriter};
use arrow_schema::{ArrowError, SchemaRef};
use bytes::Bytes;

use crate::compression::CompressingWriter;
use crate::error::{Error, Result};
use crate::ndjson::NdjsonDecoder;
use crate::plugin::{
    DecodeInput, DecodeOptions, Decoder, EncodeOptions, Encoder, FormatPlugin, StreamDecoder,
};

const FORMAT: &str = "json";

/// The JSON plugin (`.json`): arrays of objects, or NDJSON named `.json`.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonFormat;

impl FormatPlugin for JsonFormat {
    fn name(&self) -> &str {
        FORMAT
    }

    fn extensions(&self) -> &[&str] {
        &["json"]
    }

    fn content_type(&self) -> &str {
        "application/json"
    }

    fn decoder(&self, _input: &DecodeInput, options: &DecodeOptions) -> Result<Decoder> {
        Ok(Decoder::Stream(Box::new(JsonDecoder {
            inner: NdjsonDecoder::new(options.clone(), FORMAT),
            mode: Mode::Unknown,
            framer: Framer::default(),
            out: Vec::new(),
        })))
    }

    fn encoder(&self, schema: SchemaRef, options: &EncodeOptions) -> Result<Box<dyn Encoder>> {
        let out =
            CompressingWriter::new(options.whole_file_compression()?, options.compression_level)?;
        let _ = schema;
        Ok(Box::new(JsonArrayEncoder {
            // Nulls are written: every element has every column, as consumers expect.
            writer: arrow_json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, LinesArray>(out),
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Only white space so far.
    Unknown,
    /// A top-level array.
    Array,
    /// Objects one after another.
    Lines,
}

/// Where the framer is in a top-level array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Before the `[`.
    #[default]
    Start,
    /// Between elements: white space and commas.
    Between,
    /// Inside an element.
    Element,
    /// After the `]`: only white space may follow.
    Done,
}

/// Turns a top-level array into one element per line, each on the line it starts on in
/// the file when it can (blank lines pad, and count as lines).
#[derive(Debug, Default)]
struct Framer {
    state: State,
    /// Nesting depth inside the element (0 for a scalar).
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// Lines of the file seen so far (the current line is `file_line + 1`).
    file_line: u64,
    /// Lines written to the output so far.
    out_lines: u64,
    /// Elements seen.
    elements: u64,
    /// Where the element being scanned has line breaks outside strings (reused).
    breaks: Vec<usize>,
}

impl Framer {
    fn error(&self, message: String) -> Error {
        Error::Decode {
            format: FORMAT,
            line: Some(self.file_line + 1),
            message,
        }
    }

    fn start_element(&mut self, out: &mut Vec<u8>) {
        // Put the element on the line it starts on in the file, when the output is behind.
        while self.out_lines < self.file_line {
            out.push(b'\n');
            self.out_lines += 1;
        }
        self.state = State::Element;
        self.elements += 1;
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
    }

    fn end_element(&mut self, out: &mut Vec<u8>) {
        out.push(b'\n');
        self.out_lines += 1;
        self.state = State::Between;
    }

    /// Scan an element from `input[start..]` to its end or the end of the input, tracking
    /// strings, escapes and nesting; copy what was scanned to `out` in one piece, with raw
    /// line breaks outside strings made spaces. Returns where the scan stopped.
    fn scan_element(&mut self, input: &[u8], start: usize, out: &mut Vec<u8>) -> usize {
        let mut breaks = std::mem::take(&mut self.breaks);
        breaks.clear();
        let mut ended = None;
        let mut j = start;
        while let Some(&b) = input.get(j) {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                    if self.depth == 0 {
                        ended = Some(j + 1);
                        break;
                    }
                } else if b == b'\n' {
                    // A raw line break inside a string is invalid JSON: it is kept, so the
                    // decoder reports it, and counted.
                    self.file_line += 1;
                }
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' if self.depth > 0 => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            ended = Some(j + 1);
                            break;
                        }
                    }
                    // The end of a scalar element: the separator is not part of it.
                    b',' | b']' if self.depth == 0 => {
                        ended = Some(j);
                        break;
                    }
                    b'\n' => {
                        self.file_line += 1;
                        breaks.push(j - start);
                    }
                    b'\r' => breaks.push(j - start),
                    _ => {}
                }
            }
            j += 1;
        }
        let stop = ended.unwrap_or(input.len());
        let from = out.len();
        out.extend_from_slice(input.get(start..stop).unwrap_or_default());
        for &p in &breaks {
            if let Some(byte) = out.get_mut(from + p) {
                *byte = b' ';
            }
        }
        self.breaks = breaks;
        if ended.is_some() {
            self.end_element(out);
        }
        stop
    }

    /// Frame `input`, appending NDJSON to `out`.
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let mut i = 0;
        while let Some(&b) = input.get(i) {
            match self.state {
                State::Start => match b {
                    b'[' => self.state = State::Between,
                    b'\n' => self.file_line += 1,
                    b if b.is_ascii_whitespace() => {}
                    other => {
                        return Err(self.error(format!(
                            "expected `[` to start the array, found `{}`",
                            char::from(other).escape_default()
                        )));
                    }
                },
                State::Between => match b {
                    b']' => self.state = State::Done,
                    b',' => {}
                    b'\n' => self.file_line += 1,
                    b if b.is_ascii_whitespace() => {}
                    _ => {
                        self.start_element(out);
                        continue;
                    }
                },
                State::Element => {
                    i = self.scan_element(input, i, out);
                    continue;
                }
                State::Done => match b {
                    b'\n' => self.file_line += 1,
                    b if b.is_ascii_whitespace() => {}
                    other => {
                        return Err(self.error(format!(
                            "data after the end of the array: `{}`",
                            char::from(other).escape_default()
                        )));
                    }
                },
            }
            i += 1;
        }
        Ok(())
    }

    fn finish(&self) -> Result<()> {
        match self.state {
            State::Done => Ok(()),
            _ => Err(self.error(format!(
                "the file ends before the array is closed with `]` (after {} elements)",
                self.elements
            ))),
        }
    }
}

/// A JSON document decoder: an array framed into NDJSON, or NDJSON itself.
#[derive(Debug)]
struct JsonDecoder {
    inner: NdjsonDecoder,
    mode: Mode,
    framer: Framer,
    out: Vec<u8>,
}

impl JsonDecoder {
    fn push(&mut self, buf: &[u8], at_end: bool) -> Result<()> {
        if self.mode == Mode::Unknown {
            // Decide on the first byte that is not white space or a byte-order mark.
            self.out.extend_from_slice(buf);
            let held = std::mem::take(&mut self.out);
            let partial_bom = held.len() < 3 && b"\xef\xbb\xbf".starts_with(&held);
            let trimmed = strip_bom_and_space(&held);
            if (trimmed.is_empty() || partial_bom) && !at_end {
                self.out = held;
                return Ok(());
            }
            let body = held
                .strip_prefix(b"\xef\xbb\xbf".as_slice())
                .unwrap_or(&held);
            if trimmed.first() == Some(&b'[') {
                self.mode = Mode::Array;
                let before = body.len() - trimmed.len();
                self.framer.file_line +=
                    memchr::memchr_iter(b'\n', body.get(..before).unwrap_or_default()).count()
                        as u64;
                return self.frame(trimmed);
            }
            if trimmed.is_empty() {
                return Ok(());
            }
            self.mode = Mode::Lines;
            return self.inner.decode(body);
        }
        match self.mode {
            Mode::Array => self.frame(buf),
            _ => self.inner.decode(buf),
        }
    }

    fn frame(&mut self, buf: &[u8]) -> Result<()> {
        let mut framed = Vec::with_capacity(buf.len() + 16);
        self.framer.feed(buf, &mut framed)?;
        self.inner.decode(&framed)
    }
}

fn strip_bom_and_space(buf: &[u8]) -> &[u8] {
    let buf = buf.strip_prefix(b"\xef\xbb\xbf".as_slice()).unwrap_or(buf);
    let start = buf
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(buf.len());
    buf.get(start..).unwrap_or_default()
}

impl StreamDecoder for JsonDecoder {
    fn decode(&mut self, buf: &[u8]) -> Result<()> {
        self.push(buf, false)
    }

    fn finish(&mut self) -> Result<()> {
        if self.mode == Mode::Unknown {
            self.push(&[], true)?;
        }
        if self.mode == Mode::Array {
            self.framer.finish()?;
        }
        self.inner.finish()
    }

    fn next_batch(&mut self) -> Option<RecordBatch> {
        self.inner.next_batch()
    }

    fn skipped_rows(&self) -> u64 {
        self.inner.skipped_rows()
    }

    fn schema(&self) -> Option<SchemaRef> {
        self.inner.schema()
    }
}

/// An array with one element per line.
#[derive(Debug, Default)]
struct LinesArray;

impl ArrowJsonFormat for LinesArray {
    fn start_stream<W: Write>(&self, writer: &mut W) -> std::result::Result<(), ArrowError> {
        writer.write_all(b"[")?;
        Ok(())
    }

    fn start_row<W: Write>(
        &self,
        writer: &mut W,
        is_first_row: bool,
    ) -> std::result::Result<(), ArrowError> {
        writer.write_all(if is_first_row { b"\n" } else { b",\n" })?;
        Ok(())
    }

    fn end_stream<W: Write>(&self, writer: &mut W) -> std::result::Result<(), ArrowError> {
        writer.write_all(b"]\n")?;
        Ok(())
    }
}

struct JsonArrayEncoder {
    writer: JsonWriter<CompressingWriter, LinesArray>,
}

impl std::fmt::Debug for JsonArrayEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonArrayEncoder")
            .field("output", self.writer.get_ref())
            .finish()
    }
}

fn encode_error(e: ArrowError) -> Error {
    Error::Encode {
        format: FORMAT,
        message: e.to_string(),
    }
}

impl Encoder for JsonArrayEncoder {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer.write(batch).map_err(encode_error)
    }

    fn take_output(&mut self) -> Bytes {
        self.writer.get_mut().output().take()
    }

    fn finish(&mut self) -> Result<Bytes> {
        self.writer.finish().map_err(encode_error)?;
        self.writer.get_mut().finish()?;
        Ok(self.take_output())
    }

    fn bytes_written(&self) -> u64 {
        self.writer.get_ref().output_ref().total()
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )]
    use std::sync::Arc;

    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Date32Type, Int64Type};
    use arrow_schema::{DataType, TimeUnit};

    use super::*;
    use crate::ErrorPolicy;

    fn decode_chunked(
        data: &[u8],
        chunk: usize,
        options: &DecodeOptions,
    ) -> Result<Vec<RecordBatch>> {
        crate::testing::decode_chunked(&JsonFormat, options, data, chunk).map(|(b, _)| b)
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

    #[test]
    fn arrays_are_streamed_element_by_element_in_any_chunks() {
        let pretty = "\u{feff}\n[\n  {\"id\": 1, \"s\": \"a, ] } \\\" [\", \"n\": {\"x\": [1, 2]}},\n  {\n    \"id\": 2,\n    \"s\": \"b\"\n  }\n]\n";
        let compact = r#"[{"id":1,"s":"x"},{"id":2,"s":"y"},{"id":3,"s":"z"}]"#;
        for (data, expected) in [(pretty, vec![1, 2]), (compact, vec![1, 2, 3])] {
            for chunk in [1, 2, 5, usize::MAX] {
                let options = DecodeOptions::default().with_batch_size(2);
                let batches = decode_chunked(data.as_bytes(), chunk, &options).unwrap();
                assert_eq!(ids(&batches), expected, "chunk {chunk}");
                assert!(batches.iter().all(|b| b.num_rows() <= 2));
            }
        }
        // Empty arrays and empty files give no rows.
        assert!(
            decode_chunked(b" [ ] ", 1, &DecodeOptions::default())
                .unwrap()
                .is_empty()
        );
        assert!(
            decode_chunked(b"", 1, &DecodeOptions::default())
                .unwrap()
                .is_empty()
        );
        // NDJSON named .json reads as NDJSON.
        let lines =
            decode_chunked(b"{\"id\": 7}\n{\"id\": 8}\n", 3, &DecodeOptions::default()).unwrap();
        assert_eq!(ids(&lines), [7, 8]);
    }

    #[test]
    fn errors_name_the_line_the_element_starts_on() {
        let data = "[\n  {\"id\": 1},\n  {\"id\": 2},\n  {\"id\": \"x\"\n  },\n  {\"id\": 4}\n]";
        let err = decode_chunked(
            data.as_bytes(),
            3,
            &DecodeOptions::default().with_infer_rows(1),
        )
        .unwrap_err();
        assert_eq!(err.line(), Some(4), "{err}");
        let one_line = r#"[{"id":1},{"id":2},{"id":true}]"#;
        let err = decode_chunked(
            one_line.as_bytes(),
            4,
            &DecodeOptions::default().with_infer_rows(1),
        )
        .unwrap_err();
        assert_eq!(err.line(), Some(3), "the element's number: {err}");
        for (bad, line) in [
            ("[{\"id\": 1},\n{\"id\": 2}", 2),
            ("[{\"id\": 1}] x", 1),
            ("{\"id\": 1}\n\n{\"id\": ", 3),
            ("x", 1),
        ] {
            let err = decode_chunked(bad.as_bytes(), 2, &DecodeOptions::default()).unwrap_err();
            assert_eq!(err.line(), Some(line), "{bad:?}: {err}");
        }
        let skip = DecodeOptions::default()
            .with_infer_rows(1)
            .with_error_policy(ErrorPolicy::Skip);
        let batches = decode_chunked(data.as_bytes(), 7, &skip).unwrap();
        assert_eq!(ids(&batches), [1, 2, 4]);
    }

    #[test]
    fn dates_and_timestamps_are_inferred_from_strings() {
        let data = r#"[{"d": "2024-11-27", "t": "2024-11-27T10:00:00Z", "n": "2024-11-27 10:00:00", "s": "42"}]"#;
        let b = &decode_chunked(data.as_bytes(), 9, &DecodeOptions::default()).unwrap()[0];
        let schema = b.schema();
        let types: Vec<&DataType> = schema.fields().iter().map(|f| f.data_type()).collect();
        let expected = [
            DataType::Date32,
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Utf8,
        ];
        assert_eq!(types, expected.iter().collect::<Vec<_>>());
        assert_eq!(b.column(0).as_primitive::<Date32Type>().value(0), 20054);
        let off = DecodeOptions::default().with_infer_temporal(false);
        let b = &decode_chunked(data.as_bytes(), 9, &off).unwrap()[0];
        assert_eq!(b.schema().field(0).data_type(), &DataType::Utf8);
    }

    #[test]
    fn nested_values_can_be_kept_as_json_text() {
        let data = r#"[{"id": 1, "props": {"a": 1}}, {"id": 2, "props": {"b": [true]}}, {"id": 3, "props": null}]"#;
        let options = DecodeOptions::default().with_nested_as_json(true);
        let batches = decode_chunked(data.as_bytes(), 6, &options).unwrap();
        let props = batches[0]
            .column_by_name("props")
            .unwrap()
            .as_string::<i32>();
        assert_eq!(props.value(0), r#"{"a":1}"#);
        assert_eq!(props.value(1), r#"{"b":[true]}"#);
        assert!(props.is_null(2));
    }

    #[test]
    fn rescue_keeps_the_row_and_sets_aside_what_does_not_fit() {
        let data = "{\"id\": 1, \"n\": 2}\n{\"id\": 2, \"n\": \"two\", \"new\": [1]}\nnot json\n{\"id\": 4, \"n\": 5}\n";
        let options = DecodeOptions::default()
            .with_infer_rows(1)
            .with_error_policy(ErrorPolicy::Rescue);
        let batches = decode_chunked(data.as_bytes(), 5, &options).unwrap();
        let b = arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap();
        assert_eq!(b.num_rows(), 4);
        let rescued = b
            .column_by_name("_rescued_data")
            .unwrap()
            .as_string::<i32>();
        assert!(rescued.is_null(0));
        assert_eq!(rescued.value(1), r#"{"n":"two","new":[1]}"#);
        assert_eq!(rescued.value(2), r#"{"_line":"not json"}"#);
        let ids = b.column_by_name("id").unwrap().as_primitive::<Int64Type>();
        assert_eq!(ids.value(1), 2);
        assert!(ids.is_null(2));
    }

    #[test]
    fn the_encoder_writes_an_array_read_back_equal() {
        let batch = RecordBatch::try_from_iter([(
            "id",
            Arc::new(arrow_array::Int64Array::from(vec![1, 2, 3])) as _,
        )])
        .unwrap();
        let mut e = JsonFormat
            .encoder(batch.schema(), &EncodeOptions::default())
            .unwrap();
        e.write(&batch).unwrap();
        let mut bytes = e.take_output().to_vec();
        bytes.extend_from_slice(&e.finish().unwrap());
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "[\n{\"id\":1},\n{\"id\":2},\n{\"id\":3}]\n"
        );
        assert_eq!(
            ids(&decode_chunked(&bytes, 3, &DecodeOptions::default()).unwrap()),
            [1, 2, 3]
        );
        let mut empty = JsonFormat
            .encoder(batch.schema(), &EncodeOptions::default())
            .unwrap();
        assert_eq!(&empty.finish().unwrap()[..], b"[]\n");
    }
}
