//! Shared inputs for s3conn's benchmarks: realistic events as NDJSON, CSV-like text and JSON
//! arrays, as Arrow batches, and as an endless stream of bytes ([`Generated`]) for
//! measurements on inputs too large to hold; and the counting of the S3 sink's protocol
//! requests ([`protocol`]).

use std::io::Read;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

pub mod discovery;
pub mod protocol;

/// Events per criterion input: 100,000 when measuring (`cargo bench` passes `--bench`),
/// 2,000 when `cargo test` runs each benchmark once to check that it works (in a debug
/// build the full inputs take minutes).
pub fn bench_events() -> u64 {
    static EVENTS: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
        if std::env::args().any(|a| a == "--bench") {
            100_000
        } else {
            2_000
        }
    });
    *EVENTS
}

/// One event as NDJSON: nested values, a list, nulls, unicode.
pub fn event_line(i: u64) -> String {
    let names = ["Zoë", "Ana", "Björn", "李雷", "Olu", "Émile"];
    let kinds = ["page_view", "click", "signup", "purchase", "logout"];
    let name = names.get((i % 6) as usize).copied().unwrap_or_default();
    let kind = kinds.get((i % 5) as usize).copied().unwrap_or_default();
    let amount = if i.is_multiple_of(7) {
        "null".to_owned()
    } else {
        format!("{}", (i % 1000) as f64 / 4.0)
    };
    format!(
        "{{\"id\":{i},\"user_id\":{},\"email\":\"user{}@example.com\",\"name\":\"{name}\",\"event\":\"{kind}\",\"amount\":{amount},\"ts\":\"2024-11-{:02}T{:02}:{:02}:00Z\",\"props\":{{\"page\":\"/p/{}\",\"ref\":\"ads\"}},\"tags\":[\"a\",\"b\"]}}\n",
        i % 997,
        i % 997,
        1 + i % 28,
        i % 24,
        i % 60,
        i % 50
    )
}

/// `n` events as NDJSON.
pub fn ndjson(n: u64) -> Vec<u8> {
    (0..n).flat_map(|i| event_line(i).into_bytes()).collect()
}

/// The schema arrow-json infers for the events.
pub fn schema(data: &[u8]) -> SchemaRef {
    let values = data
        .split(|b| *b == b'\n')
        .take(1000)
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok());
    let schema = arrow_json::reader::infer_json_schema_from_iterator(values.map(Ok))
        .unwrap_or_else(|_| arrow_schema::Schema::empty());
    Arc::new(schema)
}

/// Decode NDJSON with arrow-json directly (the reference path).
pub fn batches(data: &[u8], schema: &SchemaRef, batch_size: usize) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let Ok(mut decoder) = arrow_json::ReaderBuilder::new(schema.clone())
        .with_batch_size(batch_size)
        .build_decoder()
    else {
        return out;
    };
    let mut rest = data;
    while !rest.is_empty() {
        let Ok(n) = decoder.decode(rest) else { break };
        rest = rest.get(n..).unwrap_or_default();
        if let Ok(Some(b)) = decoder.flush() {
            out.push(b);
        }
    }
    if let Ok(Some(b)) = decoder.flush() {
        out.push(b);
    }
    out
}

/// The columns of [`delimited_line`], in order.
pub const DELIMITED_COLUMNS: [&str; 9] = [
    "id", "user_id", "email", "name", "event", "amount", "ts", "page", "note",
];

/// One event as a line of delimiter-separated text (CSV with `,`, TSV with a tab, PSV with
/// `|`): unicode, an empty field for a null amount, and a free-text note that needs RFC 4180
/// quoting now and then (delimiters, doubled quotes).
pub fn delimited_line(i: u64, delimiter: u8) -> String {
    let names = ["Zoë", "Ana", "Björn", "李雷", "Olu", "Émile"];
    let kinds = ["page_view", "click", "signup", "purchase", "logout"];
    let notes = [
        "",
        "plain words",
        "said \"hi\", then left",
        "a, b and c",
        "naïve café | bar",
        "50% off; today only",
    ];
    let name = names.get((i % 6) as usize).copied().unwrap_or_default();
    let kind = kinds.get((i % 5) as usize).copied().unwrap_or_default();
    let note = notes.get((i % 6) as usize).copied().unwrap_or_default();
    let amount = if i.is_multiple_of(7) {
        String::new()
    } else {
        format!("{}", (i % 1000) as f64 / 4.0)
    };
    let fields = [
        i.to_string(),
        (i % 997).to_string(),
        format!("user{}@example.com", i % 997),
        name.to_owned(),
        kind.to_owned(),
        amount,
        format!("2024-11-{:02}T{:02}:{:02}:00Z", 1 + i % 28, i % 24, i % 60),
        format!("/p/{}", i % 50),
        note.to_owned(),
    ];
    let mut line = String::with_capacity(128);
    for (n, field) in fields.iter().enumerate() {
        if n > 0 {
            line.push(char::from(delimiter));
        }
        let needs_quotes = field
            .bytes()
            .any(|b| b == delimiter || b == b'"' || b == b'\n' || b == b'\r');
        if needs_quotes {
            line.push('"');
            line.push_str(&field.replace('"', "\"\""));
            line.push('"');
        } else {
            line.push_str(field);
        }
    }
    line.push('\n');
    line
}

/// How [`Generated`] lays rows out for one format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RowFormat {
    /// One JSON object per line ([`event_line`]).
    Ndjson,
    /// A header line, then [`delimited_line`]s with this delimiter.
    Delimited(u8),
    /// One JSON array of [`event_line`] objects, one per line.
    JsonArray,
}

impl RowFormat {
    /// The generator for a format plugin's name: `ndjson`, `csv`, `tsv`, `psv`, `json`.
    pub fn for_format(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "ndjson" | "jsonl" => Some(Self::Ndjson),
            "csv" => Some(Self::Delimited(b',')),
            "tsv" => Some(Self::Delimited(b'\t')),
            "psv" => Some(Self::Delimited(b'|')),
            "json" => Some(Self::JsonArray),
            _ => None,
        }
    }

    /// The formats there is a generator for.
    pub const NAMES: [&str; 5] = ["ndjson", "csv", "tsv", "psv", "json"];
}

/// Rows of realistic events as a [`Read`]er of bytes, generated as they are read and never
/// held whole: about `target` bytes, ending at a row boundary (and, for a JSON array, with
/// its closing bracket).
#[derive(Debug)]
pub struct Generated {
    format: RowFormat,
    target: u64,
    produced: u64,
    rows: u64,
    buf: Vec<u8>,
    pos: usize,
    state: GenState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GenState {
    Start,
    Rows,
    Done,
}

/// Refill the buffer to about this many bytes at a time.
const GEN_CHUNK: usize = 64 << 10;

impl Generated {
    /// About `target` bytes of `format`.
    pub fn new(format: RowFormat, target: u64) -> Self {
        Self {
            format,
            target,
            produced: 0,
            rows: 0,
            buf: Vec::with_capacity(GEN_CHUNK + 1024),
            pos: 0,
            state: GenState::Start,
        }
    }

    /// Rows generated so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes generated so far.
    pub fn bytes_generated(&self) -> u64 {
        self.produced
    }

    fn refill(&mut self) {
        self.buf.clear();
        self.pos = 0;
        if self.state == GenState::Start {
            match self.format {
                RowFormat::Delimited(d) => {
                    let sep = char::from(d).to_string();
                    self.buf
                        .extend_from_slice(DELIMITED_COLUMNS.join(&sep).as_bytes());
                    self.buf.push(b'\n');
                }
                RowFormat::JsonArray => self.buf.extend_from_slice(b"[\n"),
                RowFormat::Ndjson => {}
            }
            self.state = GenState::Rows;
        }
        while self.state == GenState::Rows && self.buf.len() < GEN_CHUNK {
            if self.produced + self.buf.len() as u64 >= self.target {
                if self.format == RowFormat::JsonArray {
                    self.buf.extend_from_slice(b"\n]\n");
                }
                self.state = GenState::Done;
                break;
            }
            let i = self.rows;
            match self.format {
                RowFormat::Ndjson => self.buf.extend_from_slice(event_line(i).as_bytes()),
                RowFormat::Delimited(d) => {
                    self.buf.extend_from_slice(delimited_line(i, d).as_bytes());
                }
                RowFormat::JsonArray => {
                    if i > 0 {
                        self.buf.extend_from_slice(b",\n");
                    }
                    let line = event_line(i);
                    self.buf.extend_from_slice(line.trim_end().as_bytes());
                }
            }
            self.rows += 1;
        }
        self.produced += self.buf.len() as u64;
    }
}

impl Read for Generated {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.buf.len() {
            if self.state == GenState::Done {
                return Ok(0);
            }
            self.refill();
        }
        let available = self.buf.get(self.pos..).unwrap_or_default();
        let n = available.len().min(out.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..n), available.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.pos += n;
        Ok(n)
    }
}

/// A human size (`20MB`, `1GB`, `1.5GiB`, `512KiB`, `1000000`) in bytes; decimal units for
/// `KB`/`MB`/`GB`, binary for `KiB`/`MiB`/`GiB`.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = number * scale;
    (0.0..1e18).contains(&bytes).then_some(bytes as u64)
}

/// Encode `batches` with a plugin: the whole file, as the caller would ship it.
pub fn encode_all(
    plugin: &dyn s3conn_formats::FormatPlugin,
    options: &s3conn_formats::EncodeOptions,
    batches: &[RecordBatch],
) -> Vec<u8> {
    let Some(first) = batches.first() else {
        return Vec::new();
    };
    let Ok(mut encoder) = plugin.encoder(first.schema(), options) else {
        return Vec::new();
    };
    let mut out = encoder.take_output().to_vec();
    for batch in batches {
        if encoder.write(batch).is_err() {
            return Vec::new();
        }
        out.extend_from_slice(&encoder.take_output());
    }
    if let Ok(last) = encoder.finish() {
        out.extend_from_slice(&last);
    }
    out
}

/// Decode a whole file with a plugin's stream decoder, fed in chunks of `chunk` bytes;
/// returns the rows (0 when the plugin has no stream decoder or the file does not decode).
pub fn decode_all(
    plugin: &dyn s3conn_formats::FormatPlugin,
    options: &s3conn_formats::DecodeOptions,
    data: &[u8],
    chunk: usize,
) -> usize {
    let Ok(s3conn_formats::Decoder::Stream(mut decoder)) =
        plugin.decoder(&s3conn_formats::DecodeInput::default(), options)
    else {
        return 0;
    };
    let mut rows = 0;
    for piece in data.chunks(chunk.max(1)) {
        if decoder.decode(piece).is_err() {
            return 0;
        }
        while let Some(b) = decoder.next_batch() {
            rows += b.num_rows();
        }
    }
    if decoder.finish().is_err() {
        return 0;
    }
    while let Some(b) = decoder.next_batch() {
        rows += b.num_rows();
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_rows_end_on_a_boundary_past_the_target() {
        for name in RowFormat::NAMES {
            let format = RowFormat::for_format(name).unwrap();
            let mut g = Generated::new(format, 200_000);
            let mut all = Vec::new();
            let mut chunk = [0u8; 7_001];
            loop {
                let n = g.read(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                all.extend_from_slice(&chunk[..n]);
            }
            assert_eq!(all.len() as u64, g.bytes_generated(), "{name}");
            assert!(all.len() >= 200_000 && all.len() < 200_000 + GEN_CHUNK + 1024);
            assert!(all.ends_with(b"\n"), "{name}");
            let text = String::from_utf8(all).unwrap();
            match format {
                RowFormat::Ndjson => {
                    for line in text.lines() {
                        serde_json::from_str::<serde_json::Value>(line).unwrap();
                    }
                    assert_eq!(text.lines().count() as u64, g.rows());
                }
                RowFormat::JsonArray => {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(v.as_array().unwrap().len() as u64, g.rows());
                }
                RowFormat::Delimited(_) => {
                    assert_eq!(text.lines().count() as u64, g.rows() + 1, "a header line");
                }
            }
        }
    }

    #[test]
    fn csv_fields_are_quoted_when_they_must_be() {
        let line = delimited_line(2, b',');
        assert!(
            line.ends_with(",\"said \"\"hi\"\", then left\"\n"),
            "{line}"
        );
        assert!(delimited_line(3, b'\t').ends_with("\ta, b and c\n"));
        assert!(
            delimited_line(7, b',').contains(",,"),
            "a null amount is empty"
        );
        assert_eq!(parse_size("20MB"), Some(20_000_000));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("1.5 GB"), Some(1_500_000_000));
        assert_eq!(parse_size("lots"), None);
    }
}
