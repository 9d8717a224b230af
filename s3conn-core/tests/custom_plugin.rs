//! Hosts extend s3conn with formats of their own: a fixed-width text format, written here in
//! the test as a host would write it, goes through the S3 sink into a real S3 server on
//! loopback (SigV4 checked) and comes back through the S3 source, with nothing in s3conn
//! knowing it.
//!
//! The plugin (`fixed`, files `.fwf`) has a schema of `(name, width)` columns, strings or
//! integers: the encoder pads every value to its column's width (strings to the left,
//! integers to the right, a null is all spaces), the push-style decoder cuts each line by the
//! widths and reports a bad line with its line number.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::VecDeque;
use std::sync::Arc;

use arrow_array::builder::{Int64Builder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use object_store::ObjectStoreExt;
use s3conn_core::formats::{
    DecodeInput, DecodeOptions, Decoder, EncodeOptions, Encoder, Error as FormatError,
    FormatPlugin, Registry, Result as FormatResult, StreamDecoder,
};
use s3conn_core::s3::{S3Sink, S3Source, S3StreamConfig};
use s3conn_core::{
    Batch, CommitRequest, Notice, Position, ReadRequest, Sink, SourceExt, StreamId, SyncContext,
    SyncMode,
};
use s3conn_testkit::S3Server;

use common::*;

// ---------------------------------------------------------------------------------------
// The host's plugin.
// ---------------------------------------------------------------------------------------

const FORMAT: &str = "fixed";

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Text, left-aligned. An empty string cannot be told from a null (both all spaces).
    Text,
    /// A 64-bit integer, right-aligned.
    Integer,
}

#[derive(Debug, Clone)]
struct Column {
    name: String,
    width: usize,
    kind: Kind,
}

/// Fixed-width text: one record per line, every field exactly its column's width in
/// characters.
#[derive(Debug, Clone)]
struct FixedWidth {
    columns: Arc<Vec<Column>>,
}

impl FixedWidth {
    fn new(columns: &[(&str, usize, Kind)]) -> Self {
        Self {
            columns: Arc::new(
                columns
                    .iter()
                    .map(|(name, width, kind)| Column {
                        name: (*name).to_owned(),
                        width: *width,
                        kind: *kind,
                    })
                    .collect(),
            ),
        }
    }

    fn schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| {
                let ty = match c.kind {
                    Kind::Text => DataType::Utf8,
                    Kind::Integer => DataType::Int64,
                };
                Field::new(&c.name, ty, true)
            })
            .collect();
        Arc::new(Schema::new(fields))
    }

    fn line_width(&self) -> usize {
        self.columns.iter().map(|c| c.width).sum()
    }
}

impl FormatPlugin for FixedWidth {
    fn name(&self) -> &str {
        FORMAT
    }

    fn extensions(&self) -> &[&str] {
        &["fwf"]
    }

    fn content_type(&self) -> &str {
        "text/plain; charset=utf-8"
    }

    fn check_encode_options(&self, options: &EncodeOptions) -> FormatResult<()> {
        match &options.codec {
            None => Ok(()),
            Some(codec) => Err(FormatError::Unsupported {
                what: format!("the `fixed` format is written uncompressed, not `{codec}`"),
            }),
        }
    }

    fn decoder(&self, _input: &DecodeInput, options: &DecodeOptions) -> FormatResult<Decoder> {
        Ok(Decoder::Stream(Box::new(FixedDecoder {
            format: self.clone(),
            batch_size: options.batch_size,
            carry: Vec::new(),
            line: 0,
            text: self.columns.iter().map(|_| StringBuilder::new()).collect(),
            integers: self.columns.iter().map(|_| Int64Builder::new()).collect(),
            rows: 0,
            ready: VecDeque::new(),
        })))
    }

    fn encoder(
        &self,
        schema: SchemaRef,
        options: &EncodeOptions,
    ) -> FormatResult<Box<dyn Encoder>> {
        self.check_encode_options(options)?;
        // Every column of the format must be in the records, with a type it can write.
        let mut positions = Vec::with_capacity(self.columns.len());
        for c in self.columns.iter() {
            let (i, field) =
                schema
                    .column_with_name(&c.name)
                    .ok_or_else(|| FormatError::Schema {
                        format: FORMAT,
                        message: format!("the records have no column `{}`", c.name),
                    })?;
            let fits = matches!(
                (c.kind, field.data_type()),
                (Kind::Text, DataType::Utf8) | (Kind::Integer, DataType::Int64)
            );
            if !fits {
                return Err(FormatError::Schema {
                    format: FORMAT,
                    message: format!(
                        "column `{}` is {}, not {:?}",
                        c.name,
                        field.data_type(),
                        c.kind
                    ),
                });
            }
            positions.push(i);
        }
        Ok(Box::new(FixedEncoder {
            format: self.clone(),
            positions,
            out: Vec::new(),
            written: 0,
            rows: 0,
        }))
    }
}

#[derive(Debug)]
struct FixedEncoder {
    format: FixedWidth,
    /// Where each of the format's columns is in the records.
    positions: Vec<usize>,
    out: Vec<u8>,
    written: u64,
    rows: u64,
}

impl FixedEncoder {
    fn field(&mut self, column: &Column, value: Option<String>) -> FormatResult<()> {
        let value = value.unwrap_or_default();
        let chars = value.chars().count();
        if chars > column.width || value.contains(['\n', '\r']) {
            return Err(FormatError::Encode {
                format: FORMAT,
                message: format!(
                    "row {}, column `{}`: {value:?} does not fit in {} characters on one line",
                    self.rows + 1,
                    column.name,
                    column.width
                ),
            });
        }
        let pad = " ".repeat(column.width - chars);
        let padded = match column.kind {
            Kind::Text => format!("{value}{pad}"),
            Kind::Integer => format!("{pad}{value}"),
        };
        self.out.extend_from_slice(padded.as_bytes());
        Ok(())
    }
}

impl Encoder for FixedEncoder {
    fn write(&mut self, batch: &RecordBatch) -> FormatResult<()> {
        let columns = Arc::clone(&self.format.columns);
        for row in 0..batch.num_rows() {
            let positions = self.positions.clone();
            for (column, i) in columns.iter().zip(positions) {
                let array = batch.column(i);
                let value = (!array.is_null(row)).then(|| match column.kind {
                    Kind::Text => array.as_string::<i32>().value(row).to_owned(),
                    Kind::Integer => array.as_primitive::<Int64Type>().value(row).to_string(),
                });
                self.field(column, value)?;
            }
            self.out.push(b'\n');
            self.rows += 1;
        }
        Ok(())
    }

    fn take_output(&mut self) -> Bytes {
        let out = Bytes::from(std::mem::take(&mut self.out));
        self.written += out.len() as u64;
        out
    }

    fn finish(&mut self) -> FormatResult<Bytes> {
        Ok(self.take_output())
    }

    fn bytes_written(&self) -> u64 {
        self.written + self.out.len() as u64
    }
}

#[derive(Debug)]
struct FixedDecoder {
    format: FixedWidth,
    batch_size: usize,
    /// The unterminated last line so far.
    carry: Vec<u8>,
    /// Lines seen.
    line: u64,
    /// One builder of each kind per column; only the column's kind is used.
    text: Vec<StringBuilder>,
    integers: Vec<Int64Builder>,
    rows: usize,
    ready: VecDeque<RecordBatch>,
}

impl FixedDecoder {
    fn bad(&self, message: String) -> FormatError {
        FormatError::Decode {
            format: FORMAT,
            line: Some(self.line),
            message,
        }
    }

    fn parse_line(&mut self, bytes: &[u8]) -> FormatResult<()> {
        self.line += 1;
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let text =
            std::str::from_utf8(bytes).map_err(|e| self.bad(format!("not UTF-8 text: {e}")))?;
        let chars = text.chars().count();
        if chars != self.format.line_width() {
            return Err(self.bad(format!(
                "{chars} characters, expected {} (the sum of the column widths)",
                self.format.line_width()
            )));
        }
        let columns = Arc::clone(&self.format.columns);
        let mut rest = text;
        for (i, column) in columns.iter().enumerate() {
            let cut = rest
                .char_indices()
                .nth(column.width)
                .map_or(rest.len(), |(at, _)| at);
            let (field, tail) = rest.split_at(cut);
            rest = tail;
            let value = field.trim();
            match column.kind {
                Kind::Text => self.text[i].append_option((!value.is_empty()).then_some(value)),
                Kind::Integer if value.is_empty() => self.integers[i].append_null(),
                Kind::Integer => {
                    let n = value.parse::<i64>().map_err(|e| {
                        self.bad(format!(
                            "column `{}`: {value:?} is not an integer ({e})",
                            column.name
                        ))
                    })?;
                    self.integers[i].append_value(n);
                }
            }
        }
        self.rows += 1;
        if self.rows >= self.batch_size {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> FormatResult<()> {
        if self.rows == 0 {
            return Ok(());
        }
        self.rows = 0;
        let arrays: Vec<ArrayRef> = self
            .format
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| match c.kind {
                Kind::Text => Arc::new(self.text[i].finish()) as ArrayRef,
                Kind::Integer => Arc::new(self.integers[i].finish()) as ArrayRef,
            })
            .collect();
        let batch = RecordBatch::try_new(self.format.schema(), arrays).map_err(|e| {
            FormatError::Decode {
                format: FORMAT,
                line: Some(self.line),
                message: e.to_string(),
            }
        })?;
        self.ready.push_back(batch);
        Ok(())
    }
}

impl StreamDecoder for FixedDecoder {
    fn decode(&mut self, buf: &[u8]) -> FormatResult<()> {
        let mut rest = buf;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            let (line, tail) = rest.split_at(i);
            rest = &tail[1..];
            if self.carry.is_empty() {
                self.parse_line(line)?;
            } else {
                let mut whole = std::mem::take(&mut self.carry);
                whole.extend_from_slice(line);
                self.parse_line(&whole)?;
            }
        }
        self.carry.extend_from_slice(rest);
        if self.carry.len() > 4 * self.format.line_width() + 2 {
            return Err(FormatError::Decode {
                format: FORMAT,
                line: Some(self.line + 1),
                message: "the line is far longer than a record; is this a fixed-width file?".into(),
            });
        }
        Ok(())
    }

    fn finish(&mut self) -> FormatResult<()> {
        if !self.carry.is_empty() {
            let line = std::mem::take(&mut self.carry);
            self.parse_line(&line)?;
        }
        self.flush()
    }

    fn next_batch(&mut self) -> Option<RecordBatch> {
        self.ready.pop_front()
    }
}

// ---------------------------------------------------------------------------------------
// The host uses it through the S3 sink and the S3 source.
// ---------------------------------------------------------------------------------------

const ROOT: &str = "exports";

fn plugin() -> FixedWidth {
    FixedWidth::new(&[
        ("id", 6, Kind::Integer),
        ("user", 10, Kind::Text),
        ("country", 2, Kind::Text),
        ("amount", 9, Kind::Integer),
    ])
}

fn registry() -> Registry {
    Registry::default().with(Arc::new(plugin()))
}

/// `n` records from `start`: unicode names, nulls in every column but the id.
fn records(start: i64, n: i64) -> RecordBatch {
    let names = ["Zoë", "Ana", "Björn", "李雷", "Olu", "Émile-Jean"];
    let countries = ["FR", "BR", "SE", "CN", "NG"];
    let ids = Int64Array::from_iter_values(start..start + n);
    let users: StringArray = (start..start + n)
        .map(|i| (i % 11 != 0).then(|| names[(i % 6) as usize]))
        .collect();
    let country: StringArray = (start..start + n)
        .map(|i| (i % 13 != 0).then(|| countries[(i % 5) as usize]))
        .collect();
    let amount: Int64Array = (start..start + n)
        .map(|i| (i % 7 != 0).then_some((i * 37) % 1_000_000 - 500_000))
        .collect();
    // The records may hold more columns than the format writes, in any order.
    let extra: StringArray = (start..start + n).map(|i| Some(format!("x{i}"))).collect();
    RecordBatch::try_from_iter([
        ("note", Arc::new(extra) as ArrayRef),
        ("amount", Arc::new(amount) as ArrayRef),
        ("country", Arc::new(country) as ArrayRef),
        ("user", Arc::new(users) as ArrayRef),
        ("id", Arc::new(ids) as ArrayRef),
    ])
    .unwrap()
}

type Row = (i64, Option<String>, Option<String>, Option<i64>);

fn rows(batches: &[RecordBatch]) -> Vec<Row> {
    let mut out = Vec::new();
    for b in batches {
        let id = b.column_by_name("id").unwrap().as_primitive::<Int64Type>();
        let user = b.column_by_name("user").unwrap().as_string::<i32>();
        let country = b.column_by_name("country").unwrap().as_string::<i32>();
        let amount = b
            .column_by_name("amount")
            .unwrap()
            .as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            out.push((
                id.value(i),
                user.is_valid(i).then(|| user.value(i).to_owned()),
                country.is_valid(i).then(|| country.value(i).to_owned()),
                amount.is_valid(i).then(|| amount.value(i)),
            ));
        }
    }
    out.sort();
    out
}

fn source(server: &S3Server, batch_size: usize) -> S3Source {
    S3Source::builder(connection(server, ROOT))
        .with_registry(registry())
        .with_stream(
            S3StreamConfig::new("users", "users")
                .with_format(FORMAT)
                .with_decode_options(DecodeOptions::default().with_batch_size(batch_size)),
        )
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_own_format_goes_through_the_s3_sink_and_comes_back_through_the_source() {
    let server = S3Server::start().await;
    let raw = server.store(server.bucket());
    let registry = registry();

    // Write 5,000 records through the sink in the host's format, rolling files at ~40 kB.
    let mut sink = S3Sink::builder(connection(&server, ROOT))
        .with_format(registry.get("fixed").unwrap())
        .with_template(
            "${STREAM_NAME}/part-{part_number:05}{format_extension}"
                .parse()
                .unwrap(),
        )
        .with_target_file_size(40_000)
        .build()
        .unwrap();
    let stream = StreamId::new("users");
    let ctx = SyncContext::new("fixed-width").with_stream(stream.clone(), SyncMode::Incremental);
    sink.begin(&ctx).await.unwrap();
    let mut written = Vec::new();
    for start in (0..5_000).step_by(1_000) {
        let batch = records(start, 1_000);
        written.push(batch.clone());
        sink.write(Batch::new(
            stream.clone(),
            batch,
            Position::new("generator", start as u64),
        ))
        .await
        .unwrap();
    }
    let receipt = sink.commit(&CommitRequest::default()).await.unwrap();
    assert_eq!(receipt.rows(), 5_000);
    assert!(
        receipt.files.len() >= 3,
        "rolled at the target size: {receipt:?}"
    );

    // The keys carry the plugin's extension, and the manifest lists exactly them.
    let data = keys(&raw, &format!("{ROOT}/users")).await;
    assert_eq!(data.len(), receipt.files.len());
    assert!(data.iter().all(|k| k.ends_with(".fwf")), "{data:?}");
    let listed = live_files(&raw, server.bucket(), ROOT, "users").await;
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(
        listed_sorted, data,
        "the manifest lists every file and nothing else"
    );
    let manifest = manifests(&raw, ROOT).await.pop().unwrap();
    assert_eq!(
        manifest.tables[0].columns,
        ["note", "amount", "country", "user", "id"]
    );

    // Each file is fixed-width text in the plugin's column order.
    let first = String::from_utf8(get(&raw, &data[0]).await.to_vec()).unwrap();
    let line = first.lines().nth(1).unwrap();
    assert_eq!(line, "     1Ana       BR  -499963");
    assert!(first.lines().all(|l| l.chars().count() == 27));

    // Read back through the source, with the host's registry and the stream's format.
    let read = source(&server, 700)
        .read_all(ReadRequest::default())
        .await
        .unwrap();
    assert_eq!(read.rows(), 5_000);
    assert!(read.batches.iter().all(|b| b.num_rows() <= 700));
    let objects = read
        .notices
        .iter()
        .filter(|n| matches!(n, Notice::ObjectRead { .. }))
        .count();
    assert_eq!(objects, data.len());
    let back: Vec<RecordBatch> = read.batches.iter().map(|b| b.records.clone()).collect();
    assert_eq!(
        rows(&back),
        rows(&written),
        "row for row, nulls and unicode included"
    );

    // Another run reads nothing new.
    let again = source(&server, 700)
        .read_all(ReadRequest::from_state(read.checkpoint))
        .await
        .unwrap();
    assert_eq!(again.rows(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_line_in_an_uploaded_object_names_the_object_and_the_line() {
    let server = S3Server::start().await;
    let raw = server.store(server.bucket());
    // Lines as a host's other tools write them: widths 6, 10, 2 and 9.
    let line = |id: &str, user: &str, country: &str, amount: &str| {
        format!("{id:>6}{user:<10}{country:<2}{amount:>9}\n")
    };
    let good = line("1", "Ana", "BR", "-499963") + &line("2", "Björn", "SE", "100");
    put(
        &raw,
        &format!("{ROOT}/users/bad.fwf"),
        format!(
            "{good}{}{}",
            line("3", "Olu", "NG", "12x4567"),
            line("4", "Zoë", "FR", "1")
        ),
    )
    .await;
    let err = source(&server, 100)
        .read_all(ReadRequest::default())
        .await
        .unwrap_err()
        .to_string();
    let uri = format!("s3://{}/{ROOT}/users/bad.fwf", server.bucket());
    assert!(err.contains(&uri), "names the object: {err}");
    assert!(err.contains("fixed line 3"), "names the line: {err}");
    assert!(
        err.contains("\"12x4567\" is not an integer"),
        "says why: {err}"
    );

    // A line of the wrong width, in a gzip-compressed object: found after decompression.
    raw.delete(&object_store::path::Path::from(format!(
        "{ROOT}/users/bad.fwf"
    )))
    .await
    .unwrap();
    put(
        &raw,
        &format!("{ROOT}/users/short.fwf.gz"),
        gzip(format!("{good}     3Olu\n").as_bytes()),
    )
    .await;
    let err = source(&server, 100)
        .read_all(ReadRequest::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("users/short.fwf.gz"), "{err}");
    assert!(
        err.contains("fixed line 3: 9 characters, expected 27"),
        "{err}"
    );
}
