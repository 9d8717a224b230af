//! CSV, and its relatives TSV and PSV: one plugin, any separator.
//!
//! # Reading
//!
//! The decoder is push-style: it is fed the file in chunks of any size and hands out batches
//! of at most `batch_size` rows, so memory is bounded by the batch, never by the file.
//! Single-byte separators are tokenized by `csv-core` (the engine of the `csv` crate);
//! a separator of several bytes (`||`, `~|~`, `¦`) by a quote-aware splitter of this module.
//!
//! - **Separator, quote, escape**: any separator ([`CsvOptions::with_delimiter`] takes `,`
//!   `\t` `tab` `|` `;` `\x1f` or any string); quoted fields with doubled quotes (`""`) and
//!   optionally an escape character; quoting can be turned off.
//! - **Header**: present (names from the first row, deduplicated, blanks named `column_N`),
//!   absent (`column_1`, `column_2`, …), or names given by the host, which replace the
//!   file's own. Rows before the header can be skipped ([`CsvOptions::with_skip_rows`]);
//!   comment lines are skipped; a UTF-8 byte-order mark is dropped.
//! - **Values**: null words (default: the empty field), true and false words, and type
//!   inference from a bounded sample (see [`crate::infer`]), or a schema given by the host
//!   (matched to the header by name, or by position without a header).
//! - **Bad rows**: a value that does not fit its column, a row with too many or too few
//!   fields ([`RaggedRows`]), or invalid UTF-8, is handled by the stream's [`ErrorPolicy`]:
//!   fail with the line number, skip and count, or rescue (keep the row, put what does not
//!   fit into the rescue column as a JSON object).
//!
//! # Writing
//!
//! Fields are quoted when they must be (separator, quote, newline inside), so quoting is
//! always correct; nested values (structs, lists, maps) are written as JSON; timestamps as
//! RFC 3339. The header row is written when [`CsvOptions::with_header`] is on, also for a
//! file with no rows. Whole-file compression comes from [`EncodeOptions`]'s codec. CSV cannot
//! tell a null from an empty string: both are written as an empty field.
//!
//! ```
//! use s3conn_formats::csv::CsvFormat;
//! use s3conn_formats::{Decoder, DecodeInput, DecodeOptions, FormatPlugin};
//!
//! let format = CsvFormat::csv().with_option("delimiter", "||")?;
//! let Decoder::Stream(mut decoder) = format.decoder(&DecodeInput::default(), &DecodeOptions::default())?
//! else { unreachable!() };
//! decoder.decode(b"id||name||joined\n1||\"Zo\xc3\xab, the first\"||2024-11-27\n2||Bo||\n")?;
//! decoder.finish()?;
//! let batch = decoder.next_batch().unwrap();
//! assert_eq!(batch.num_rows(), 2);
//! assert_eq!(batch.schema().field(0).data_type(), &arrow_schema::DataType::Int64);
//! assert_eq!(batch.schema().field(2).data_type(), &arrow_schema::DataType::Date32);
//! # Ok::<(), s3conn_formats::Error>(())
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::io::Write;
use std::sync::Arc;

use arrow_array::ArrowPrimitiveType;
use arrow_array::builder::{BooleanBufferBuilder, BooleanBuilder, PrimitiveBuilder, StringBuilder};
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray};
use arrow_buffer::{Buffer, NullBuffer, OffsetBuffer};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Field, FieldRef, Schema, SchemaRef};
use bytes::Bytes;

use crate::compression::CompressingWriter;
use crate::error::{Error, Result};
use crate::infer::{BoolWords, ColumnInference};
use crate::plugin::{
    DecodeInput, DecodeOptions, Decoder, EncodeOptions, Encoder, ErrorPolicy, FormatPlugin,
    StreamDecoder,
};

const FORMAT: &str = "csv";

/// What to do with a row that has more or fewer fields than the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RaggedRows {
    /// The row is bad: the stream's error policy decides (fail, skip, or rescue, which keeps
    /// the row with its missing fields null and its extra fields rescued).
    #[default]
    Error,
    /// Missing fields are null and extra fields are dropped (rescued under the rescue
    /// policy), without counting the row as bad.
    Lenient,
}

/// When the writer quotes a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum QuoteStyle {
    /// Only when the field needs it (the separator, a quote or a line break inside).
    #[default]
    Necessary,
    /// Every field.
    Always,
    /// Every field that is not a number.
    NonNumeric,
}

/// The settings of a CSV plugin: how its files are read and written.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CsvOptions {
    /// The field separator (one byte or several).
    pub delimiter: Vec<u8>,
    /// The quote character; `None` reads quotes as ordinary characters.
    pub quote: Option<u8>,
    /// An escape character inside quoted fields (`\"`), besides doubled quotes.
    pub escape: Option<u8>,
    /// Whether a doubled quote inside a quoted field is a literal quote.
    pub double_quote: bool,
    /// Whether the first row (after the skipped rows) names the columns; the writer writes
    /// one when on.
    pub header: bool,
    /// Column names given by the host; they replace the header's.
    pub column_names: Option<Vec<String>>,
    /// Lines to skip before the header (or the first row).
    pub skip_rows: usize,
    /// Field values read as null (default: the empty field).
    pub null_values: Vec<String>,
    /// The words read as true and false.
    pub bools: BoolWords,
    /// Lines starting with this byte are comments.
    pub comment: Option<u8>,
    /// Rows whose field count differs from the header's.
    pub ragged_rows: RaggedRows,
    /// Whether column types are inferred (otherwise every column is a string).
    pub infer_types: bool,
    /// When the writer quotes.
    pub quote_style: QuoteStyle,
    /// Whether the writer ends lines with `\r\n` instead of `\n`.
    pub crlf: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            delimiter: b",".to_vec(),
            quote: Some(b'"'),
            escape: None,
            double_quote: true,
            header: true,
            column_names: None,
            skip_rows: 0,
            null_values: vec![String::new()],
            bools: BoolWords::default(),
            comment: None,
            ragged_rows: RaggedRows::Error,
            infer_types: true,
            quote_style: QuoteStyle::Necessary,
            crlf: false,
        }
    }
}

fn invalid(option: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidOption {
        option,
        reason: reason.into(),
    }
}

/// A separator or quote as written in a config: `\t`, `tab`, `\x1f`, `\u{2502}`, or itself.
fn parse_chars(text: &str, option: &'static str) -> Result<Vec<u8>> {
    let named = match text.to_ascii_lowercase().as_str() {
        "tab" | "\\t" => Some("\t"),
        "comma" => Some(","),
        "pipe" => Some("|"),
        "semicolon" => Some(";"),
        "space" => Some(" "),
        _ => None,
    };
    if let Some(s) = named {
        return Ok(s.as_bytes().to_vec());
    }
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                let byte = u8::from_str_radix(&hex, 16).map_err(|_| {
                    invalid(option, format!("`{text}`: `\\x` needs two hex digits"))
                })?;
                out.push(char::from(byte));
            }
            Some('u') => {
                let rest: String = chars.by_ref().take_while(|c| *c != '}').collect();
                let code = rest.trim_start_matches('{');
                let c = u32::from_str_radix(code, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| invalid(option, format!("`{text}`: bad `\\u{{…}}` escape")))?;
                out.push(c);
            }
            other => {
                return Err(invalid(
                    option,
                    format!(
                        "`{text}`: unknown escape `\\{}`",
                        other.map(String::from).unwrap_or_default()
                    ),
                ));
            }
        }
    }
    Ok(out.into_bytes())
}

fn parse_bool(key: &'static str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        other => Err(invalid(key, format!("`{other}`: use true or false"))),
    }
}

/// A list option: a JSON array (`["", "NULL"]`) or comma-separated words.
fn parse_list(value: &str) -> Vec<String> {
    if let Ok(list) = serde_json_list(value) {
        return list;
    }
    value.split(',').map(|s| s.trim().to_owned()).collect()
}

#[cfg(feature = "json")]
fn serde_json_list(value: &str) -> std::result::Result<Vec<String>, ()> {
    serde_json::from_str::<Vec<String>>(value).map_err(|_| ())
}

#[cfg(not(feature = "json"))]
fn serde_json_list(_value: &str) -> std::result::Result<Vec<String>, ()> {
    Err(())
}

fn single_byte(option: &'static str, text: &str) -> Result<Option<u8>> {
    if text.is_empty() || text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    match parse_chars(text, option)?.as_slice() {
        [b] if b.is_ascii() => Ok(Some(*b)),
        _ => Err(invalid(
            option,
            format!("`{text}` must be one ASCII character"),
        )),
    }
}

impl CsvOptions {
    /// Set the separator: `,`, `\t` or `tab`, `|`, `;`, `\x1f`, or any string of one or more
    /// characters (`||`, `~|~`).
    pub fn with_delimiter(mut self, delimiter: &str) -> Result<Self> {
        let bytes = parse_chars(delimiter, "delimiter")?;
        if bytes.is_empty() {
            return Err(invalid("delimiter", "the separator is empty"));
        }
        if bytes.iter().any(|b| *b == b'\n' || *b == b'\r') {
            return Err(invalid("delimiter", "the separator contains a line break"));
        }
        if self.quote.is_some_and(|q| bytes.contains(&q)) {
            return Err(invalid(
                "delimiter",
                "the separator contains the quote character; change the quote first",
            ));
        }
        self.delimiter = bytes;
        Ok(self)
    }

    /// Set the quote character (`None`: no quoting).
    pub fn with_quote(mut self, quote: Option<u8>) -> Self {
        self.quote = quote;
        self
    }

    /// Set an escape character inside quoted fields.
    pub fn with_escape(mut self, escape: Option<u8>) -> Self {
        self.escape = escape;
        self
    }

    /// Whether `""` inside quotes is a literal quote (default on).
    pub fn with_double_quote(mut self, on: bool) -> Self {
        self.double_quote = on;
        self
    }

    /// Whether the first row is a header (default on).
    pub fn with_header(mut self, header: bool) -> Self {
        self.header = header;
        self
    }

    /// Name the columns (replacing the header's names, if the file has a header).
    pub fn with_column_names(mut self, names: Vec<String>) -> Self {
        self.column_names = Some(names);
        self
    }

    /// Skip this many lines before the header.
    pub fn with_skip_rows(mut self, rows: usize) -> Self {
        self.skip_rows = rows;
        self
    }

    /// Read these field values as null.
    pub fn with_null_values(mut self, values: Vec<String>) -> Self {
        self.null_values = values;
        self
    }

    /// Read these words as true and false (compared without regard to case).
    pub fn with_bool_words(mut self, true_words: Vec<String>, false_words: Vec<String>) -> Self {
        self.bools = BoolWords {
            true_words,
            false_words,
        };
        self
    }

    /// Lines starting with `comment` are skipped.
    pub fn with_comment(mut self, comment: Option<u8>) -> Self {
        self.comment = comment;
        self
    }

    /// What to do with rows whose field count differs from the header's.
    pub fn with_ragged_rows(mut self, ragged: RaggedRows) -> Self {
        self.ragged_rows = ragged;
        self
    }

    /// Whether column types are inferred (default on; off reads every column as a string).
    pub fn with_infer_types(mut self, on: bool) -> Self {
        self.infer_types = on;
        self
    }

    /// When the writer quotes fields.
    pub fn with_quote_style(mut self, style: QuoteStyle) -> Self {
        self.quote_style = style;
        self
    }

    /// End written lines with `\r\n`.
    pub fn with_crlf(mut self, crlf: bool) -> Self {
        self.crlf = crlf;
        self
    }

    /// Change one setting by name (see [`CsvFormat::with_option`] for the keys).
    pub fn with_option(self, key: &str, value: &str) -> Result<Self> {
        Ok(match key.to_ascii_lowercase().replace('-', "_").as_str() {
            "delimiter" | "separator" | "sep" => self.with_delimiter(value)?,
            "quote" => self.with_quote(single_byte("quote", value)?),
            "escape" => self.with_escape(single_byte("escape", value)?),
            "double_quote" => self.with_double_quote(parse_bool("double_quote", value)?),
            "header" => self.with_header(parse_bool("header", value)?),
            "columns" | "column_names" => self.with_column_names(parse_list(value)),
            "skip_rows" => {
                self.with_skip_rows(value.trim().parse().map_err(|_| {
                    invalid("skip_rows", format!("`{value}`: give a number of lines"))
                })?)
            }
            "null_values" | "null_value" => self.with_null_values(parse_list(value)),
            "true_values" => {
                let false_words = self.bools.false_words.clone();
                self.with_bool_words(parse_list(value), false_words)
            }
            "false_values" => {
                let true_words = self.bools.true_words.clone();
                self.with_bool_words(true_words, parse_list(value))
            }
            "comment" => self.with_comment(single_byte("comment", value)?),
            "ragged_rows" => self.with_ragged_rows(match value.to_ascii_lowercase().as_str() {
                "error" | "fail" => RaggedRows::Error,
                "lenient" | "pad" => RaggedRows::Lenient,
                other => {
                    return Err(invalid(
                        "ragged_rows",
                        format!("`{other}`: use error or lenient"),
                    ));
                }
            }),
            "infer_types" => self.with_infer_types(parse_bool("infer_types", value)?),
            "quote_style" => self.with_quote_style(match value.to_ascii_lowercase().as_str() {
                "necessary" => QuoteStyle::Necessary,
                "always" => QuoteStyle::Always,
                "non_numeric" | "nonnumeric" => QuoteStyle::NonNumeric,
                other => {
                    return Err(invalid(
                        "quote_style",
                        format!("`{other}`: use necessary, always or non_numeric"),
                    ));
                }
            }),
            "crlf" => self.with_crlf(parse_bool("crlf", value)?),
            other => {
                return Err(invalid(
                    "format option",
                    format!(
                        "the csv format has no option `{other}` (delimiter, quote, escape, double_quote, header, columns, skip_rows, null_values, true_values, false_values, comment, ragged_rows, infer_types, quote_style, crlf)"
                    ),
                ));
            }
        })
    }
}

/// The CSV plugin. [`CsvFormat::csv`], [`CsvFormat::tsv`] and [`CsvFormat::psv`] are
/// registered by default, for `.csv`, `.tsv`/`.tab` and `.psv` files.
#[derive(Debug, Clone)]
pub struct CsvFormat {
    name: &'static str,
    extensions: &'static [&'static str],
    content_type: &'static str,
    options: CsvOptions,
}

impl Default for CsvFormat {
    fn default() -> Self {
        Self::csv()
    }
}

impl CsvFormat {
    /// Comma-separated values (`.csv`).
    pub fn csv() -> Self {
        Self {
            name: "csv",
            extensions: &["csv"],
            content_type: "text/csv",
            options: CsvOptions::default(),
        }
    }

    /// Tab-separated values (`.tsv`, `.tab`).
    pub fn tsv() -> Self {
        Self {
            name: "tsv",
            extensions: &["tsv", "tab"],
            content_type: "text/tab-separated-values",
            options: CsvOptions {
                delimiter: b"\t".to_vec(),
                ..CsvOptions::default()
            },
        }
    }

    /// Pipe-separated values (`.psv`).
    pub fn psv() -> Self {
        Self {
            name: "psv",
            extensions: &["psv"],
            content_type: "text/csv",
            options: CsvOptions {
                delimiter: b"|".to_vec(),
                ..CsvOptions::default()
            },
        }
    }

    /// This plugin with `options`.
    pub fn with_options(mut self, options: CsvOptions) -> Self {
        self.options = options;
        self
    }

    /// The settings.
    pub fn options(&self) -> &CsvOptions {
        &self.options
    }
}

impl FormatPlugin for CsvFormat {
    fn name(&self) -> &str {
        self.name
    }

    fn extensions(&self) -> &[&str] {
        self.extensions
    }

    fn content_type(&self) -> &str {
        self.content_type
    }

    /// Keys: `delimiter` (`separator`), `quote`, `escape`, `double_quote`, `header`,
    /// `columns`, `skip_rows`, `null_values`, `true_values`, `false_values`, `comment`,
    /// `ragged_rows` (`error`, `lenient`), `infer_types`, `quote_style` (`necessary`,
    /// `always`, `non_numeric`), `crlf`. Lists are a JSON array or comma-separated.
    fn with_option(&self, key: &str, value: &str) -> Result<Arc<dyn FormatPlugin>> {
        let mut next = self.clone();
        next.options = self.options.clone().with_option(key, value)?;
        Ok(Arc::new(next))
    }

    fn decoder(&self, _input: &DecodeInput, options: &DecodeOptions) -> Result<Decoder> {
        Ok(Decoder::Stream(Box::new(CsvDecoder::new(
            self.options.clone(),
            options.clone(),
        ))))
    }

    fn check_encode_options(&self, options: &EncodeOptions) -> Result<()> {
        options.whole_file_compression()?;
        writer_builder(&self.options).map(|_| ())
    }

    fn encoder(&self, schema: SchemaRef, options: &EncodeOptions) -> Result<Box<dyn Encoder>> {
        let out =
            CompressingWriter::new(options.whole_file_compression()?, options.compression_level)?;
        let mut writer = RecordWriter {
            core: writer_builder(&self.options)?.build(),
            out,
            line: Vec::new(),
            fields_in_record: 0,
        };
        if self.options.header && !schema.fields().is_empty() {
            for field in schema.fields() {
                writer.field(field.name().as_bytes());
            }
            writer.end_record()?;
        }
        Ok(Box::new(CsvEncoder {
            writer,
            schema,
            value: Vec::new(),
        }))
    }
}

// ---------------------------------------------------------------------------------------
// Tokenizing
// ---------------------------------------------------------------------------------------

/// Complete records, as field bytes, with the line each starts on.
#[derive(Debug, Default)]
struct Rows {
    /// Every field's bytes, back to back.
    data: Vec<u8>,
    /// The end of each field in `data`.
    field_ends: Vec<usize>,
    /// The end of each row in `field_ends`.
    row_ends: Vec<usize>,
    /// The 1-based line each row starts on.
    lines: Vec<u64>,
}

impl Rows {
    fn len(&self) -> usize {
        self.row_ends.len()
    }

    fn push(&mut self, fields: &[u8], ends: &[usize], line: u64) {
        let base = self.data.len();
        self.data.extend_from_slice(fields);
        self.field_ends.extend(ends.iter().map(|e| base + e));
        self.row_ends.push(self.field_ends.len());
        self.lines.push(line);
    }

    /// The fields of row `i`.
    fn row(&self, i: usize) -> RowFields<'_> {
        let first = if i == 0 {
            0
        } else {
            self.row_ends.get(i - 1).copied().unwrap_or(0)
        };
        let last = self.row_ends.get(i).copied().unwrap_or(first);
        RowFields {
            rows: self,
            first,
            count: last.saturating_sub(first),
        }
    }

    /// Rows `range` of these.
    fn range(&self, range: std::ops::Range<usize>) -> RowRange<'_> {
        RowRange {
            rows: self,
            start: range.start,
            len: range.len(),
        }
    }

    /// Drop the first `n` rows, moving the rest to the front in place.
    fn drain_front(&mut self, n: usize) {
        let n = n.min(self.len());
        if n == 0 {
            return;
        }
        let fields = self.row_ends.get(n - 1).copied().unwrap_or(0);
        let bytes = fields
            .checked_sub(1)
            .and_then(|k| self.field_ends.get(k).copied())
            .unwrap_or(0);
        self.data.drain(..bytes.min(self.data.len()));
        self.field_ends.drain(..fields.min(self.field_ends.len()));
        for end in &mut self.field_ends {
            *end -= bytes;
        }
        self.row_ends.drain(..n);
        for end in &mut self.row_ends {
            *end -= fields;
        }
        self.lines.drain(..n);
    }
}

/// Some consecutive rows of a [`Rows`].
#[derive(Clone, Copy)]
struct RowRange<'a> {
    rows: &'a Rows,
    start: usize,
    len: usize,
}

impl<'a> RowRange<'a> {
    fn len(&self) -> usize {
        self.len
    }

    fn row(&self, i: usize) -> RowFields<'a> {
        self.rows.row(self.start + i)
    }

    fn line(&self, i: usize) -> Option<u64> {
        self.rows.lines.get(self.start + i).copied()
    }

    /// The widest row of the range.
    fn width(&self) -> usize {
        (0..self.len).map(|i| self.row(i).count).max().unwrap_or(0)
    }

    /// About how many bytes of field data the range holds.
    fn data_len(&self) -> usize {
        let total = self.rows.len().max(1);
        self.rows.data.len() / total * self.len
    }
}

#[derive(Clone, Copy)]
struct RowFields<'a> {
    rows: &'a Rows,
    first: usize,
    count: usize,
}

impl<'a> RowFields<'a> {
    fn field(&self, j: usize) -> Option<&'a [u8]> {
        if j >= self.count {
            return None;
        }
        let k = self.first + j;
        let start = if k == 0 {
            0
        } else {
            self.rows.field_ends.get(k - 1).copied().unwrap_or(0)
        };
        let end = self.rows.field_ends.get(k).copied().unwrap_or(start);
        self.rows.data.get(start..end)
    }
}

/// Turns bytes into records.
enum Tokenizer {
    /// csv-core, for one-byte separators.
    Core(Box<CoreTokenizer>),
    /// The quote-aware splitter, for separators of several bytes.
    Multi(MultiTokenizer),
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Core(_) => "Tokenizer::Core",
            Self::Multi(_) => "Tokenizer::Multi",
        })
    }
}

impl Tokenizer {
    fn new(options: &CsvOptions, first_line: u64) -> Self {
        match options.delimiter.as_slice() {
            [d] => {
                let mut builder = csv_core::ReaderBuilder::new();
                builder
                    .delimiter(*d)
                    .quoting(options.quote.is_some())
                    .quote(options.quote.unwrap_or(b'"'))
                    .escape(options.escape)
                    .double_quote(options.double_quote)
                    .comment(options.comment);
                let mut reader = builder.build();
                reader.set_line(first_line);
                Self::Core(Box::new(CoreTokenizer {
                    reader,
                    out: vec![0; 4096],
                    out_len: 0,
                    ends: vec![0; 64],
                    ends_len: 0,
                }))
            }
            delimiter => Self::Multi(MultiTokenizer::new(options, delimiter, first_line)),
        }
    }

    /// Tokenize `input` (all of it; `input` empty means the end of the file), pushing
    /// complete records to `rows`.
    fn feed(&mut self, input: &[u8], at_end: bool, rows: &mut Rows) -> Result<()> {
        match self {
            Self::Core(t) => t.feed(input, at_end, rows),
            Self::Multi(t) => t.feed(input, at_end, rows),
        }
    }

    /// Bytes of the record in progress.
    fn pending(&self) -> usize {
        match self {
            Self::Core(t) => t.out_len,
            Self::Multi(t) => t.out.len() + t.carry.len(),
        }
    }
}

struct CoreTokenizer {
    reader: csv_core::Reader,
    out: Vec<u8>,
    out_len: usize,
    ends: Vec<usize>,
    ends_len: usize,
}

impl CoreTokenizer {
    fn feed(&mut self, mut input: &[u8], at_end: bool, rows: &mut Rows) -> Result<()> {
        use csv_core::ReadRecordResult as R;
        // An empty input tells csv-core the file is over: only at the end.
        if input.is_empty() && !at_end {
            return Ok(());
        }
        let mut idle = 0;
        loop {
            let (result, nin, nout, nend) = self.reader.read_record(
                input,
                self.out.get_mut(self.out_len..).unwrap_or_default(),
                self.ends.get_mut(self.ends_len..).unwrap_or_default(),
            );
            let consumed = input.get(..nin).unwrap_or_default();
            input = input.get(nin..).unwrap_or_default();
            self.out_len += nout;
            self.ends_len += nend;
            match result {
                R::InputEmpty => {
                    if !at_end {
                        return Ok(());
                    }
                    // At the end, csv-core is asked again with no input for the last record.
                    idle += usize::from(nin == 0);
                    if idle > 2 {
                        return Ok(());
                    }
                }
                R::OutputFull => {
                    let len = self.out.len().max(1) * 2;
                    self.out.resize(len, 0);
                }
                R::OutputEndsFull => {
                    let len = self.ends.len().max(1) * 2;
                    self.ends.resize(len, 0);
                }
                R::Record => {
                    let fields = self.out.get(..self.out_len).unwrap_or_default();
                    let ends = self.ends.get(..self.ends_len).unwrap_or_default();
                    // The line the record started on: csv-core counts the newlines it has
                    // consumed, which include the record's own quoted line breaks and, with
                    // `\n` endings, its terminator.
                    let inside = memchr::memchr_iter(b'\n', fields).count() as u64;
                    let terminator = u64::from(consumed.last() == Some(&b'\n'));
                    let line = self
                        .reader
                        .line()
                        .saturating_sub(inside + terminator)
                        .max(1);
                    rows.push(fields, ends, line);
                    self.out_len = 0;
                    self.ends_len = 0;
                }
                R::End => return Ok(()),
            }
        }
    }
}

/// A quote-aware tokenizer for separators of several bytes, with csv-core's rules: a quote
/// opens a quoted field only at the start of a field, blank lines are skipped, `\n`,
/// `\r\n` and `\r` end records.
struct MultiTokenizer {
    delimiter: Vec<u8>,
    quote: Option<u8>,
    escape: Option<u8>,
    double_quote: bool,
    comment: Option<u8>,
    /// Bytes held back from the last call: a possible start of the separator, or a quote
    /// that may be doubled.
    carry: Vec<u8>,
    /// The record in progress.
    out: Vec<u8>,
    ends: Vec<usize>,
    in_quotes: bool,
    escaped: bool,
    in_comment: bool,
    at_record_start: bool,
    field_start: bool,
    /// Newlines seen so far, plus one: the current line.
    line: u64,
    /// The line the record in progress started on.
    record_line: u64,
}

impl MultiTokenizer {
    fn new(options: &CsvOptions, delimiter: &[u8], first_line: u64) -> Self {
        Self {
            delimiter: delimiter.to_vec(),
            quote: options.quote,
            escape: options.escape,
            double_quote: options.double_quote,
            comment: options.comment,
            carry: Vec::new(),
            out: Vec::new(),
            ends: Vec::new(),
            in_quotes: false,
            escaped: false,
            in_comment: false,
            at_record_start: true,
            field_start: true,
            line: first_line,
            record_line: first_line,
        }
    }

    fn end_record(&mut self, rows: &mut Rows) {
        self.ends.push(self.out.len());
        rows.push(&self.out, &self.ends, self.record_line);
        self.out.clear();
        self.ends.clear();
        self.at_record_start = true;
        self.field_start = true;
        self.in_quotes = false;
        self.escaped = false;
    }

    fn feed(&mut self, input: &[u8], at_end: bool, rows: &mut Rows) -> Result<()> {
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(input);
        let first_delimiter = self.delimiter.first().copied();
        let mut i = 0;
        while let Some(&b) = buf.get(i) {
            if self.in_comment {
                if b == b'\n' {
                    self.in_comment = false;
                    self.line += 1;
                    self.record_line = self.line;
                }
                i += 1;
                continue;
            }
            if self.in_quotes {
                if self.escaped {
                    self.out.push(b);
                    self.escaped = false;
                } else if Some(b) == self.escape {
                    self.escaped = true;
                } else if Some(b) == self.quote {
                    match buf.get(i + 1) {
                        None if !at_end && self.double_quote => break,
                        Some(&next) if self.double_quote && Some(next) == self.quote => {
                            self.out.push(b);
                            i += 1;
                        }
                        _ => self.in_quotes = false,
                    }
                } else {
                    if b == b'\n' {
                        self.line += 1;
                    }
                    self.out.push(b);
                }
                i += 1;
                continue;
            }
            if self.at_record_start {
                if b == b'\n' || b == b'\r' {
                    if b == b'\n' {
                        self.line += 1;
                        self.record_line = self.line;
                    }
                    i += 1;
                    continue;
                }
                self.at_record_start = false;
                if Some(b) == self.comment {
                    self.in_comment = true;
                    self.at_record_start = true;
                    i += 1;
                    continue;
                }
                self.record_line = self.line;
            }
            if b == b'\n' || b == b'\r' {
                self.end_record(rows);
                continue;
            }
            if Some(b) == first_delimiter {
                let rest = buf.get(i..).unwrap_or_default();
                if rest.starts_with(&self.delimiter) {
                    self.ends.push(self.out.len());
                    self.field_start = true;
                    i += self.delimiter.len();
                    continue;
                }
                if !at_end && self.delimiter.starts_with(rest) {
                    // Perhaps a separator cut by the end of this chunk.
                    break;
                }
            }
            if self.field_start && Some(b) == self.quote {
                self.in_quotes = true;
                self.field_start = false;
                i += 1;
                continue;
            }
            self.field_start = false;
            self.out.push(b);
            i += 1;
        }
        self.carry = buf.get(i..).unwrap_or_default().to_vec();
        if at_end && !self.at_record_start {
            self.end_record(rows);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------

/// Where the decoder is in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Dropping the lines before the header; how many are left.
    Skipping(usize),
    /// Tokenizing; the header and the sample are still to come.
    Reading,
}

/// One output column: where its values come from in a row, and its type.
#[derive(Debug, Clone)]
struct Column {
    /// The field index in a row, or `None` for a schema column the file does not have.
    source: Option<usize>,
    field: FieldRef,
}

#[derive(Debug)]
struct Layout {
    schema: SchemaRef,
    columns: Vec<Column>,
    /// The number of fields a row should have.
    width: usize,
    /// File columns outside the schema (with their names), rescued under the rescue policy.
    extra: Vec<(usize, String)>,
    rescue: Option<String>,
}

#[derive(Debug)]
struct CsvDecoder {
    csv: CsvOptions,
    options: DecodeOptions,
    phase: Phase,
    /// Bytes of the line being skipped, or of a possible byte-order mark.
    head: Vec<u8>,
    started: bool,
    tokenizer: Option<Tokenizer>,
    line: u64,
    rows: Rows,
    header: Option<Vec<String>>,
    layout: Option<Layout>,
    ready: VecDeque<RecordBatch>,
    skipped: u64,
}

fn decode_error(line: Option<u64>, message: impl Into<String>) -> Error {
    Error::Decode {
        format: FORMAT,
        line,
        message: message.into(),
    }
}

/// Column names from a header row: blanks named `column_N`, duplicates numbered.
fn header_names(raw: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for (i, name) in raw.into_iter().enumerate() {
        let base = if name.trim().is_empty() {
            format!("column_{}", i + 1)
        } else {
            name
        };
        let mut candidate = base.clone();
        let mut n = 2;
        while out.contains(&candidate) {
            candidate = format!("{base}_{n}");
            n += 1;
        }
        out.push(candidate);
    }
    out
}

impl CsvDecoder {
    fn new(csv: CsvOptions, options: DecodeOptions) -> Self {
        Self {
            phase: Phase::Skipping(csv.skip_rows),
            csv,
            options,
            head: Vec::new(),
            started: false,
            tokenizer: None,
            line: 1,
            rows: Rows::default(),
            header: None,
            layout: None,
            ready: VecDeque::new(),
            skipped: 0,
        }
    }

    fn push(&mut self, buf: &[u8], at_end: bool) -> Result<()> {
        let owned;
        let mut data: &[u8] = buf;
        if !self.started {
            // Wait for three bytes to tell a byte-order mark.
            self.head.extend_from_slice(buf);
            if self.head.len() < 3 && !at_end {
                return Ok(());
            }
            self.started = true;
            owned = std::mem::take(&mut self.head);
            data = owned
                .strip_prefix(b"\xef\xbb\xbf".as_slice())
                .unwrap_or(&owned);
        }
        while let Phase::Skipping(left) = self.phase {
            if left == 0 {
                self.phase = Phase::Reading;
                break;
            }
            match memchr::memchr(b'\n', data) {
                Some(i) => {
                    data = data.get(i + 1..).unwrap_or_default();
                    self.line += 1;
                    self.phase = Phase::Skipping(left - 1);
                }
                None if at_end => {
                    data = &[];
                    self.phase = Phase::Reading;
                }
                None => return Ok(()),
            }
        }
        if self.tokenizer.is_none() {
            self.tokenizer = Some(Tokenizer::new(&self.csv, self.line));
        }
        // Tokenize in slices, so that rows become batches as they fill: memory is bounded
        // by the batch, whatever the size of `buf`.
        let step = self
            .options
            .batch_size
            .max(1)
            .saturating_mul(64)
            .max(64 << 10);
        let mut at: usize = 0;
        loop {
            let end = at.saturating_add(step).min(data.len());
            let last = end == data.len();
            let slice = data.get(at..end).unwrap_or_default();
            let pending = match self.tokenizer.as_mut() {
                Some(t) => {
                    t.feed(slice, at_end && last, &mut self.rows)?;
                    t.pending()
                }
                None => 0,
            };
            if pending > self.options.max_line_bytes {
                return Err(decode_error(
                    self.rows.lines.last().map(|l| l + 1),
                    format!(
                        "a record is longer than {} bytes; is the quote or the separator right?",
                        self.options.max_line_bytes
                    ),
                ));
            }
            self.drain_rows(at_end && last)?;
            if last {
                return Ok(());
            }
            at = end;
        }
    }

    /// Turn tokenized rows into batches: settle the header and the layout first.
    fn drain_rows(&mut self, at_end: bool) -> Result<()> {
        if self.header.is_none() && self.csv.header {
            if self.rows.len() == 0 {
                return Ok(());
            }
            let row = self.rows.row(0);
            let names = (0..row.count)
                .map(|j| String::from_utf8_lossy(row.field(j).unwrap_or_default()).into_owned())
                .collect();
            self.rows.drain_front(1);
            self.header = Some(header_names(names));
        }
        if self.layout.is_none() {
            let sample_full = self.rows.len() >= self.options.infer_rows
                || self.rows.data.len() >= self.options.infer_bytes;
            if !(at_end || sample_full || self.options.schema.is_some() || !self.csv.infer_types) {
                return Ok(());
            }
            if self.rows.len() == 0 && self.header.is_none() {
                return Ok(());
            }
            self.layout = Some(self.settle_layout()?);
        }
        let batch_size = self.options.batch_size.max(1);
        let rows = std::mem::take(&mut self.rows);
        let mut start = 0;
        let mut outcome = Ok(());
        while rows.len() - start >= batch_size || (at_end && rows.len() > start) {
            let end = (start + batch_size).min(rows.len());
            match self.build_batch(rows.range(start..end)) {
                Ok(Some(batch)) => self.ready.push_back(batch),
                Ok(None) => {}
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
            start = end;
        }
        self.rows = rows;
        if start == self.rows.len() {
            self.rows = Rows::default();
        } else if start > 0 {
            self.rows.drain_front(start);
        }
        outcome
    }

    fn names(&self, width: usize) -> Vec<String> {
        let mut names = match (&self.csv.column_names, &self.header) {
            (Some(given), _) => given.clone(),
            (None, Some(header)) => header.clone(),
            (None, None) => Vec::new(),
        };
        for i in names.len()..width {
            names.push(format!("column_{}", i + 1));
        }
        header_names(names)
    }

    /// The schema and where each column comes from: given, or inferred from the sample.
    /// How many of the buffered rows make the sample: the first `infer_rows`, as far as
    /// `infer_bytes` goes (at least one). It does not depend on how the file was chunked.
    fn sample_len(&self) -> usize {
        let mut bytes = 0;
        let mut n = 0;
        for i in 0..self.rows.len().min(self.options.infer_rows) {
            let row = self.rows.row(i);
            bytes += (0..row.count)
                .map(|j| row.field(j).map_or(0, <[u8]>::len))
                .sum::<usize>();
            if n > 0 && bytes > self.options.infer_bytes {
                break;
            }
            n += 1;
        }
        n
    }

    fn settle_layout(&self) -> Result<Layout> {
        let sample_width = (0..self.sample_len())
            .map(|i| self.rows.row(i).count)
            .max()
            .unwrap_or(0);
        let header_width = self
            .csv
            .column_names
            .as_ref()
            .map(Vec::len)
            .or(self.header.as_ref().map(Vec::len));
        let width = header_width.unwrap_or(sample_width);
        let names = self.names(width);
        let rescue = (self.options.on_error == ErrorPolicy::Rescue)
            .then(|| self.options.rescue_column.clone());
        let (mut columns, extra) = match &self.options.schema {
            Some(schema) => {
                let by_name = self.header.is_some() || self.csv.column_names.is_some();
                let columns: Vec<Column> = schema
                    .fields()
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| Some(f.name()) != rescue.as_ref())
                    .map(|(i, f)| Column {
                        source: if by_name {
                            names.iter().position(|n| n == f.name()).or_else(|| {
                                names.iter().position(|n| n.eq_ignore_ascii_case(f.name()))
                            })
                        } else {
                            (i < width).then_some(i)
                        },
                        field: Arc::clone(f),
                    })
                    .collect();
                let extra = names
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !columns.iter().any(|c| c.source == Some(*i)))
                    .map(|(i, n)| (i, n.clone()))
                    .collect();
                (columns, extra)
            }
            None => {
                let columns = names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| {
                        let data_type = if self.csv.infer_types {
                            self.infer_column(i)
                        } else {
                            DataType::Utf8
                        };
                        Column {
                            source: Some(i),
                            field: Arc::new(Field::new(name, data_type, true)),
                        }
                    })
                    .collect();
                (columns, Vec::new())
            }
        };
        let mut fields: Vec<FieldRef> = columns.iter().map(|c| Arc::clone(&c.field)).collect();
        if let Some(name) = &rescue {
            if columns.iter().any(|c| c.field.name() == name) {
                return Err(Error::Schema {
                    format: FORMAT,
                    message: format!(
                        "the file has a column `{name}`, the name of the rescue column; name the rescue column otherwise"
                    ),
                });
            }
            fields.push(Arc::new(Field::new(name, DataType::Utf8, true)));
        }
        columns.shrink_to_fit();
        Ok(Layout {
            schema: Arc::new(Schema::new(fields)),
            columns,
            width,
            extra,
            rescue,
        })
    }

    fn is_null(&self, value: &[u8]) -> bool {
        self.csv.null_values.iter().any(|n| n.as_bytes() == value)
    }

    fn infer_column(&self, j: usize) -> DataType {
        let mut inference = ColumnInference::with_bools(self.csv.bools.clone());
        for i in 0..self.sample_len() {
            if let Some(value) = self.rows.row(i).field(j)
                && !self.is_null(value)
                && let Ok(text) = std::str::from_utf8(value)
            {
                inference.observe(text);
            }
        }
        inference.data_type()
    }

    /// A batch of `rows` under the layout, applying the error policy to bad rows.
    fn build_batch(&mut self, rows: RowRange<'_>) -> Result<Option<RecordBatch>> {
        let Some(layout) = &self.layout else {
            return Ok(None);
        };
        let n = rows.len();
        // Problems per row: the message of the first, and what to rescue.
        let mut problems: Vec<Option<String>> = vec![None; n];
        let mut rescued: Vec<Vec<(String, String)>> = vec![Vec::new(); n];
        let note = |problems: &mut Vec<Option<String>>, i: usize, message: String| {
            if let Some(slot) = problems.get_mut(i)
                && slot.is_none()
            {
                *slot = Some(message);
            }
        };
        let lenient = self.csv.ragged_rows == RaggedRows::Lenient;
        for i in 0..n {
            let count = rows.row(i).count;
            if count != layout.width {
                if count > layout.width
                    && let Some(r) = rescued.get_mut(i)
                {
                    for j in layout.width..count {
                        let value = rows.row(i).field(j).unwrap_or_default();
                        r.push((
                            format!("_extra_{}", j + 1),
                            String::from_utf8_lossy(value).into_owned(),
                        ));
                    }
                }
                if !lenient {
                    note(
                        &mut problems,
                        i,
                        format!(
                            "the row has {count} fields where the header has {}",
                            layout.width
                        ),
                    );
                }
            }
            for (j, name) in &layout.extra {
                if let Some(value) = rows.row(i).field(*j)
                    && !self.is_null(value)
                    && let Some(r) = rescued.get_mut(i)
                {
                    r.push((name.clone(), String::from_utf8_lossy(value).into_owned()));
                }
            }
        }
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(layout.columns.len() + 1);
        for column in &layout.columns {
            let (array, misfits) = self.build_column(column, rows)?;
            for (i, raw, reason) in misfits {
                note(
                    &mut problems,
                    i,
                    format!(
                        "column `{}`: `{}` {reason}",
                        column.field.name(),
                        shorten(&raw)
                    ),
                );
                if let Some(r) = rescued.get_mut(i) {
                    r.push((column.field.name().clone(), raw));
                }
            }
            if !column.field.is_nullable() && array.null_count() > 0 {
                for i in (0..n).filter(|&i| array.is_null(i)) {
                    note(
                        &mut problems,
                        i,
                        format!("column `{}` may not be null", column.field.name()),
                    );
                }
            }
            arrays.push(array);
        }
        if layout.rescue.is_some() {
            let values: StringArray = rescued
                .iter()
                .map(|r| (!r.is_empty()).then(|| rescue_json(r)))
                .collect();
            arrays.push(Arc::new(values));
        }
        let bad: Vec<usize> = problems
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|_| i))
            .collect();
        let policy = self.options.on_error;
        if let (ErrorPolicy::Fail, Some(&first)) = (policy, bad.first()) {
            let message = problems.get(first).cloned().flatten().unwrap_or_default();
            return Err(decode_error(rows.line(first), message));
        }
        let mut batch = RecordBatch::try_new(Arc::clone(&layout.schema), arrays).map_err(|e| {
            Error::Schema {
                format: FORMAT,
                message: e.to_string(),
            }
        })?;
        match policy {
            ErrorPolicy::Skip if !bad.is_empty() => {
                let keep: BooleanArray = problems.iter().map(|p| Some(p.is_none())).collect();
                batch = arrow_select::filter::filter_record_batch(&batch, &keep).map_err(|e| {
                    Error::Schema {
                        format: FORMAT,
                        message: e.to_string(),
                    }
                })?;
                self.skipped += bad.len() as u64;
            }
            ErrorPolicy::Rescue => {
                // A row kept under the rescue policy must still fit non-null columns.
                if let Some(&i) = bad.iter().find(|&&i| {
                    problems
                        .get(i)
                        .and_then(Option::as_deref)
                        .is_some_and(|p| p.ends_with("may not be null"))
                }) {
                    let message = problems.get(i).cloned().flatten().unwrap_or_default();
                    return Err(decode_error(rows.line(i), message));
                }
            }
            _ => {}
        }
        Ok((batch.num_rows() > 0).then_some(batch))
    }
}

/// The rows of a column whose value did not fit: row, raw value, why.
type Misfits = Vec<(usize, String, String)>;

impl CsvDecoder {
    /// One column of a batch, built straight from the field bytes: integers, floats and
    /// booleans are parsed from the bytes, strings are validated as UTF-8 once for the whole
    /// column; other types go through strings and arrow-cast. A value that does not fit is
    /// null in the array and listed with its row.
    fn build_column(&self, column: &Column, rows: RowRange<'_>) -> Result<(ArrayRef, Misfits)> {
        let n = rows.len();
        let mut misfits: Misfits = Vec::new();
        let value = |i: usize| {
            column
                .source
                .and_then(|j| rows.row(i).field(j))
                .filter(|v| !self.is_null(v))
        };
        let data_type = column.field.data_type();
        let not_a = |v: &[u8]| {
            (
                String::from_utf8_lossy(v).into_owned(),
                format!("is not a valid {data_type}"),
            )
        };
        let array: ArrayRef = match data_type {
            DataType::Int64 => parse_column::<Int64Type>(n, value, &mut misfits, data_type),
            DataType::Float64 => parse_column::<Float64Type>(n, value, &mut misfits, data_type),
            DataType::Boolean => {
                let mut b = BooleanBuilder::with_capacity(n);
                for i in 0..n {
                    match value(i) {
                        None => b.append_null(),
                        Some(v) => match std::str::from_utf8(v)
                            .ok()
                            .and_then(|t| self.csv.bools.parse(t))
                        {
                            Some(x) => b.append_value(x),
                            None => {
                                b.append_null();
                                let (raw, why) = not_a(v);
                                misfits.push((i, raw, why));
                            }
                        },
                    }
                }
                Arc::new(b.finish())
            }
            DataType::Utf8 => {
                let mut offsets: Vec<i32> = Vec::with_capacity(n + 1);
                let mut bytes: Vec<u8> = Vec::with_capacity(rows.data_len() / rows.width().max(1));
                let mut valid = BooleanBufferBuilder::new(n);
                offsets.push(0);
                for i in 0..n {
                    match value(i) {
                        None => valid.append(false),
                        Some(v) => {
                            bytes.extend_from_slice(v);
                            valid.append(true);
                        }
                    }
                    offsets.push(i32::try_from(bytes.len()).map_err(|_| Error::Decode {
                        format: FORMAT,
                        line: rows.line(i),
                        message: format!(
                            "column `{}` holds more than 2 GiB in one batch; lower the batch size",
                            column.field.name()
                        ),
                    })?);
                }
                let nulls = NullBuffer::new(valid.finish());
                let nulls = (nulls.null_count() > 0).then_some(nulls);
                match StringArray::try_new(
                    OffsetBuffer::new(offsets.into()),
                    Buffer::from_vec(bytes),
                    nulls,
                ) {
                    Ok(array) => Arc::new(array),
                    // Invalid UTF-8 somewhere: find it value by value.
                    Err(_) => {
                        let mut b = StringBuilder::with_capacity(n, 0);
                        for i in 0..n {
                            match value(i) {
                                None => b.append_null(),
                                Some(v) => match std::str::from_utf8(v) {
                                    Ok(text) => b.append_value(text),
                                    Err(e) => {
                                        b.append_null();
                                        misfits.push((
                                            i,
                                            String::from_utf8_lossy(v).into_owned(),
                                            format!("is not valid UTF-8: {e}"),
                                        ));
                                    }
                                },
                            }
                        }
                        Arc::new(b.finish())
                    }
                }
            }
            other => {
                let mut strings = StringBuilder::with_capacity(n, 0);
                for i in 0..n {
                    match value(i).map(|v| (v, std::str::from_utf8(v))) {
                        None => strings.append_null(),
                        Some((_, Ok(text))) => strings.append_value(text),
                        Some((v, Err(e))) => {
                            strings.append_null();
                            misfits.push((
                                i,
                                String::from_utf8_lossy(v).into_owned(),
                                format!("is not valid UTF-8: {e}"),
                            ));
                        }
                    }
                }
                let strings = strings.finish();
                let typed =
                    convert(&strings, other, &self.csv.bools).map_err(|e| Error::Schema {
                        format: FORMAT,
                        message: format!("column `{}`: {e}", column.field.name()),
                    })?;
                for i in 0..n {
                    if strings.is_valid(i) && typed.is_null(i) {
                        misfits.push((
                            i,
                            strings.value(i).to_owned(),
                            format!("is not a valid {other}"),
                        ));
                    }
                }
                typed
            }
        };
        Ok((array, misfits))
    }
}

/// A column of numbers parsed straight from the field bytes (`value(i)` is row `i`'s field,
/// `None` for null); a value that does not parse is null and listed in `misfits`.
fn parse_column<'a, T>(
    n: usize,
    value: impl Fn(usize) -> Option<&'a [u8]>,
    misfits: &mut Misfits,
    data_type: &DataType,
) -> ArrayRef
where
    T: ArrowPrimitiveType,
    T::Native: lexical_core::FromLexical,
{
    let mut b = PrimitiveBuilder::<T>::with_capacity(n);
    for i in 0..n {
        match value(i) {
            None => b.append_null(),
            Some(v) => match lexical_core::parse::<T::Native>(v) {
                Ok(x) => b.append_value(x),
                Err(_) => {
                    b.append_null();
                    misfits.push((
                        i,
                        String::from_utf8_lossy(v).into_owned(),
                        format!("is not a valid {data_type}"),
                    ));
                }
            },
        }
    }
    Arc::new(b.finish())
}

/// A value cut for an error message.
fn shorten(value: &str) -> String {
    const MAX: usize = 60;
    if value.len() <= MAX {
        return value.to_owned();
    }
    let mut end = MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", value.get(..end).unwrap_or_default())
}

/// The rescued values of a row as a JSON object.
fn rescue_json(values: &[(String, String)]) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(&mut out, name);
        out.push(':');
        json_string(&mut out, value);
    }
    out.push('}');
    out
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = std::fmt::Write::write_fmt(out, format_args!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Strings to `to`: a value that does not convert becomes null (the caller finds it).
fn convert(
    strings: &StringArray,
    to: &DataType,
    bools: &BoolWords,
) -> std::result::Result<ArrayRef, arrow_schema::ArrowError> {
    match to {
        DataType::Utf8 => Ok(Arc::new(strings.clone())),
        DataType::Boolean => {
            let mut out = BooleanBuilder::with_capacity(strings.len());
            for value in strings.iter() {
                out.append_option(value.and_then(|v| bools.parse(v)));
            }
            Ok(Arc::new(out.finish()))
        }
        other => arrow_cast::cast_with_options(
            strings,
            other,
            &arrow_cast::CastOptions {
                safe: true,
                ..Default::default()
            },
        ),
    }
}

impl StreamDecoder for CsvDecoder {
    fn decode(&mut self, buf: &[u8]) -> Result<()> {
        self.push(buf, false)
    }

    fn finish(&mut self) -> Result<()> {
        self.push(&[], true)
    }

    fn next_batch(&mut self) -> Option<RecordBatch> {
        self.ready.pop_front()
    }

    fn skipped_rows(&self) -> u64 {
        self.skipped
    }

    fn schema(&self) -> Option<SchemaRef> {
        self.layout.as_ref().map(|l| Arc::clone(&l.schema))
    }
}

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

fn encode_error(e: impl fmt::Display) -> Error {
    Error::Encode {
        format: FORMAT,
        message: e.to_string(),
    }
}

fn writer_builder(options: &CsvOptions) -> Result<csv_core::WriterBuilder> {
    let [delimiter] = options.delimiter.as_slice() else {
        return Err(Error::Unsupported {
            what: format!(
                "writing CSV with the separator `{}` of several bytes: choose a one-byte separator",
                String::from_utf8_lossy(&options.delimiter)
            ),
        });
    };
    let mut builder = csv_core::WriterBuilder::new();
    builder
        .delimiter(*delimiter)
        .quote(options.quote.unwrap_or(b'"'))
        .double_quote(options.double_quote)
        .escape(options.escape.unwrap_or(b'\\'))
        .quote_style(match (options.quote, options.quote_style) {
            (None, _) => csv_core::QuoteStyle::Never,
            (Some(_), QuoteStyle::Necessary) => csv_core::QuoteStyle::Necessary,
            (Some(_), QuoteStyle::Always) => csv_core::QuoteStyle::Always,
            (Some(_), QuoteStyle::NonNumeric) => csv_core::QuoteStyle::NonNumeric,
        })
        .terminator(if options.crlf {
            csv_core::Terminator::CRLF
        } else {
            csv_core::Terminator::Any(b'\n')
        });
    Ok(builder)
}

/// Writes records with csv-core's quoting into the compressing output.
struct RecordWriter {
    core: csv_core::Writer,
    out: CompressingWriter,
    /// The record being written.
    line: Vec<u8>,
    fields_in_record: usize,
}

impl RecordWriter {
    /// Run one csv-core step into `line`, with room for `need` bytes.
    fn step(
        line: &mut Vec<u8>,
        need: usize,
        mut f: impl FnMut(&mut [u8]) -> (csv_core::WriteResult, usize),
    ) {
        let start = line.len();
        line.resize(start + need, 0);
        let (_, n) = f(line.get_mut(start..).unwrap_or_default());
        line.truncate(start + n);
    }

    fn field(&mut self, value: &[u8]) {
        let core = &mut self.core;
        if self.fields_in_record > 0 {
            Self::step(&mut self.line, 4, |out| core.delimiter(out));
        }
        // csv-core needs at most 2 + 2 × the input for one field.
        Self::step(&mut self.line, 2 + 2 * value.len(), |out| {
            let (result, _, n) = core.field(value, out);
            (result, n)
        });
        self.fields_in_record += 1;
    }

    fn end_record(&mut self) -> Result<()> {
        let core = &mut self.core;
        if self.fields_in_record == 1 && self.line.is_empty() {
            // A record of one empty field must be quoted, or it reads as a blank line.
            self.line.extend_from_slice(b"\"\"");
        }
        Self::step(&mut self.line, 4, |out| core.terminator(out));
        self.out.write_all(&self.line)?;
        self.line.clear();
        self.fields_in_record = 0;
        Ok(())
    }
}

struct CsvEncoder {
    writer: RecordWriter,
    schema: SchemaRef,
    /// A reusable buffer for one value.
    value: Vec<u8>,
}

impl fmt::Debug for CsvEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsvEncoder")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

fn is_nested(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Struct(_)
            | DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(_, _)
            | DataType::Map(_, _)
    )
}

/// Writes one column's values as text.
enum FieldWriter<'a> {
    Display(ArrayFormatter<'a>),
    #[cfg(feature = "json")]
    Json(arrow_json::writer::NullableEncoder<'a>),
}

impl Encoder for CsvEncoder {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let options = FormatOptions::default().with_null("");
        #[cfg(feature = "json")]
        let json_options = arrow_json::writer::EncoderOptions::default();
        let fields: Vec<FieldRef> = batch.schema().fields().iter().cloned().collect();
        let mut writers = Vec::with_capacity(batch.num_columns());
        for (field, column) in fields.iter().zip(batch.columns()) {
            if is_nested(column.data_type()) {
                #[cfg(feature = "json")]
                {
                    writers.push(FieldWriter::Json(
                        arrow_json::writer::make_encoder(field, column.as_ref(), &json_options)
                            .map_err(encode_error)?,
                    ));
                    continue;
                }
                #[cfg(not(feature = "json"))]
                {
                    let _ = field;
                    return Err(Error::Unsupported {
                        what: "nested columns in CSV without the `json` feature".into(),
                    });
                }
            }
            writers.push(FieldWriter::Display(
                ArrayFormatter::try_new(column.as_ref(), &options).map_err(encode_error)?,
            ));
        }
        let columns = batch.columns();
        for row in 0..batch.num_rows() {
            for (writer, column) in writers.iter_mut().zip(columns) {
                self.value.clear();
                match writer {
                    FieldWriter::Display(f) => {
                        write!(self.value, "{}", f.value(row)).map_err(encode_error)?;
                    }
                    #[cfg(feature = "json")]
                    FieldWriter::Json(e) => {
                        if column.is_valid(row) {
                            e.encode(row, &mut self.value);
                        }
                    }
                }
                let _ = column;
                self.writer.field(&self.value);
            }
            self.writer.end_record()?;
        }
        Ok(())
    }

    fn take_output(&mut self) -> Bytes {
        self.writer.out.output().take()
    }

    fn finish(&mut self) -> Result<Bytes> {
        self.writer.out.finish()?;
        Ok(self.writer.out.output().take())
    }

    fn bytes_written(&self) -> u64 {
        self.writer.out.output_ref().total()
    }
}

#[cfg(test)]
mod tests;
