//! `s3conn convert INPUT OUTPUT`: convert a local file from one format to another through the
//! codec plugins, so that anyone can check s3conn's codecs against other tools.
//!
//! ```text
//!  INPUT ─read 256 KiB─▶ decompress (detected from the content) ─▶ StreamDecoder ─┐
//!  INPUT ─ranges the decoder asks for (Parquet)──────────────────▶ RangedDecoder ─┤
//!                                                                                 ▼
//!  OUTPUT ◀─rename─ .OUTPUT.*.tmp ◀─take_output() after every batch─ Encoder (shape::encoder)
//! ```
//!
//! - Formats come from the file names (`Registry::for_path`: `.csv.gz`, `.jsonl.zst`,
//!   `.parquet`…) or from `--from` / `--to`. The input's compression is detected from its
//!   first bytes, never taken from the extension alone. The output's codec is `--codec`
//!   (whole-file for text formats, internal for Parquet and Avro), or else the compression
//!   extension of OUTPUT (`out.jsonl.gz`).
//! - Format settings: `--separator` and `--no-header` set `delimiter` and `header` on each
//!   side whose plugin knows them (CSV-like formats); `--option KEY=VALUE` likewise, and it is
//!   an error when neither side knows it. `--input-option` / `--output-option` set one side
//!   only, and the plugin must know the key.
//! - Memory stays bounded: one read buffer, the decoder's batch in progress, the encoder's
//!   open row group. The output goes to a temporary file next to OUTPUT, renamed at the end,
//!   so a failed conversion never leaves a partial file under OUTPUT's name.
//! - One JSON line on stdout says what was done; a progress bar on stderr for inputs over
//!   4 MiB.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use clap::Args;
use futures::TryStreamExt;
use s3conn_core::formats::compression::{self, Compression, MAGIC_LEN};
use s3conn_core::formats::shape::{self, RecordShape};
use s3conn_core::formats::{
    DecodeInput, DecodeOptions, Decoder, EncodeOptions, Encoder, FormatPlugin, RangedDecoder,
    RangedStep, RecordBatch, Registry, Schema, StreamDecoder,
};
use serde::Serialize;
use tokio::io::AsyncReadExt;

use crate::progress;

/// Bytes read from the (decompressed) input per decoder call.
const CHUNK: usize = 256 << 10;

/// Inputs larger than this get a progress bar.
const PROGRESS_ABOVE: u64 = 4 << 20;

/// Arguments of `s3conn convert`.
#[derive(Debug, Args)]
pub(crate) struct ConvertArgs {
    /// The file to read; its format comes from its extension unless --from is given, its
    /// compression from its content.
    input: PathBuf,
    /// The file to write; its format comes from its extension unless --to is given. It is
    /// written to a temporary file next to it and renamed at the end.
    output: PathBuf,
    /// The input's format (a plugin name: ndjson, parquet, csv, tsv, psv, json, avro…).
    #[arg(long, value_name = "FMT")]
    from: Option<String>,
    /// The output's format (a plugin name).
    #[arg(long, value_name = "FMT")]
    to: Option<String>,
    /// The output's codec: whole-file for text formats (gzip, zstd, bzip2, xz, deflate),
    /// internal for Parquet (snappy, gzip, lz4, zstd, brotli, uncompressed) and Avro.
    /// Default: the compression extension of OUTPUT, else the format's default.
    #[arg(long, value_name = "NAME")]
    codec: Option<String>,
    /// The codec's compression level.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    level: Option<i32>,
    /// The field separator of CSV-like formats, on both sides (`,` `;` `|`, `tab` or `\t`).
    #[arg(long, value_name = "S")]
    separator: Option<String>,
    /// CSV-like files have no header line, on both sides.
    #[arg(long)]
    no_header: bool,
    /// A format setting for both sides (repeatable); each side whose plugin knows the key
    /// takes it, and it is an error when neither does.
    #[arg(long = "option", value_name = "KEY=VALUE")]
    options: Vec<String>,
    /// A format setting for the input's plugin only (repeatable).
    #[arg(long = "input-option", value_name = "KEY=VALUE")]
    input_options: Vec<String>,
    /// A format setting for the output's plugin only (repeatable).
    #[arg(long = "output-option", value_name = "KEY=VALUE")]
    output_options: Vec<String>,
    /// How records are laid out in the output: as_is, flattened (record id + emitted-at time
    /// + fields) or envelope (id, time, record as JSON).
    #[arg(long, default_value = "as_is")]
    shape: String,
    /// Rows per batch.
    #[arg(long, value_name = "N", default_value_t = 8192)]
    batch_size: usize,
}

/// Why a conversion did not happen.
#[derive(Debug)]
pub(crate) enum ConvertError {
    /// The command line asks for something that cannot be done (exit 2).
    Usage(String),
    /// The conversion failed on the data or the files (exit 1).
    Failed(String),
}

/// What a conversion did: printed as one JSON line.
#[derive(Debug, Serialize)]
pub(crate) struct ConvertReport {
    /// The file read.
    pub(crate) input: String,
    /// The file written.
    pub(crate) output: String,
    /// The input's format.
    pub(crate) from: String,
    /// The output's format.
    pub(crate) to: String,
    /// The input's whole-file compression, as detected from its content.
    pub(crate) input_compression: String,
    /// The output's codec (`null`: the format's default).
    pub(crate) codec: Option<String>,
    /// Format settings the input took, as `key=value`.
    pub(crate) input_options: Vec<String>,
    /// Format settings the output took, as `key=value`.
    pub(crate) output_options: Vec<String>,
    /// Rows converted.
    pub(crate) rows: u64,
    /// Batches decoded.
    pub(crate) batches: u64,
    /// Size of the input file.
    pub(crate) bytes_in: u64,
    /// Size of the output file.
    pub(crate) bytes_out: u64,
    /// Wall-clock time.
    pub(crate) seconds: f64,
}

/// Which plugin a setting goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Every side whose plugin knows the key; at least one must.
    Both,
    Input,
    Output,
}

/// A format setting from the command line.
#[derive(Debug)]
struct Setting {
    /// How the user wrote it, for messages.
    flag: String,
    key: String,
    value: String,
    side: Side,
}

/// The separator the user means: `tab` and `\t` are a tab, and a few names are allowed.
fn separator(value: &str) -> String {
    match value {
        "tab" | "\\t" | "TAB" => "\t".to_owned(),
        "comma" => ",".to_owned(),
        "semicolon" => ";".to_owned(),
        "pipe" => "|".to_owned(),
        "space" => " ".to_owned(),
        other => other.to_owned(),
    }
}

fn key_value(flag: &str, text: &str, side: Side) -> Result<Setting, ConvertError> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(ConvertError::Usage(format!(
            "{flag} `{text}`: write KEY=VALUE"
        )));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(ConvertError::Usage(format!(
            "{flag} `{text}`: the key is empty"
        )));
    }
    Ok(Setting {
        flag: format!("{flag} {text}"),
        key: key.to_owned(),
        value: value.to_owned(),
        side,
    })
}

fn settings(args: &ConvertArgs) -> Result<Vec<Setting>, ConvertError> {
    let mut out = Vec::new();
    if let Some(s) = &args.separator {
        out.push(Setting {
            flag: format!("--separator {s}"),
            key: "delimiter".into(),
            value: separator(s),
            side: Side::Both,
        });
    }
    if args.no_header {
        out.push(Setting {
            flag: "--no-header".into(),
            key: "header".into(),
            value: "false".into(),
            side: Side::Both,
        });
    }
    for text in &args.options {
        out.push(key_value("--option", text, Side::Both)?);
    }
    for text in &args.input_options {
        out.push(key_value("--input-option", text, Side::Input)?);
    }
    for text in &args.output_options {
        out.push(key_value("--output-option", text, Side::Output)?);
    }
    Ok(out)
}

/// The input and output plugins with the settings applied; and what each side took.
struct Configured {
    input: Arc<dyn FormatPlugin>,
    output: Arc<dyn FormatPlugin>,
    input_taken: Vec<String>,
    output_taken: Vec<String>,
}

fn configure(
    mut input: Arc<dyn FormatPlugin>,
    mut output: Arc<dyn FormatPlugin>,
    settings: &[Setting],
) -> Result<Configured, ConvertError> {
    let mut input_taken = Vec::new();
    let mut output_taken = Vec::new();
    for s in settings {
        let shown = format!("{}={}", s.key, s.value.escape_debug());
        let on_input =
            matches!(s.side, Side::Both | Side::Input).then(|| input.with_option(&s.key, &s.value));
        let on_output = matches!(s.side, Side::Both | Side::Output)
            .then(|| output.with_option(&s.key, &s.value));
        let input_error = match on_input {
            Some(Ok(p)) => {
                input = p;
                input_taken.push(shown.clone());
                None
            }
            Some(Err(e)) => Some(format!("input `{}`: {e}", input.name())),
            None => None,
        };
        let output_error = match on_output {
            Some(Ok(p)) => {
                output = p;
                output_taken.push(shown.clone());
                None
            }
            Some(Err(e)) => Some(format!("output `{}`: {e}", output.name())),
            None => None,
        };
        let refused = match s.side {
            Side::Input => input_error,
            Side::Output => output_error,
            Side::Both => match (input_error, output_error) {
                (Some(i), Some(o)) => Some(format!(
                    "neither format takes the option `{}` ({i}; {o})",
                    s.key
                )),
                _ => None,
            },
        };
        if let Some(reason) = refused {
            return Err(ConvertError::Usage(format!("{}: {reason}", s.flag)));
        }
    }
    Ok(Configured {
        input,
        output,
        input_taken,
        output_taken,
    })
}

/// The file name of `path`, for looking its format up.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The compression a file name's last extension names (`out.jsonl.gz`: gzip).
fn trailing_compression(name: &str) -> Compression {
    name.rsplit_once('.')
        .and_then(|(_, ext)| Compression::from_extension(ext))
        .unwrap_or_default()
}

fn plugin_for(
    registry: &Registry,
    flag: &str,
    named: Option<&str>,
    path: &Path,
) -> Result<Arc<dyn FormatPlugin>, ConvertError> {
    match named {
        Some(name) => registry
            .get(name)
            .map_err(|e| ConvertError::Usage(format!("{flag} {name}: {e}"))),
        None => registry
            .for_path(&file_name(path))
            .map(|m| m.plugin)
            .ok_or_else(|| {
                ConvertError::Usage(format!(
                    "cannot tell the format of {} from its name: give {flag} (registered: {})",
                    path.display(),
                    registry.names().join(", ")
                ))
            }),
    }
}

/// The output codec: `--codec`, else OUTPUT's compression extension.
fn output_codec(
    plugin: &dyn FormatPlugin,
    codec: Option<&str>,
    output: &Path,
) -> Result<Option<String>, ConvertError> {
    let declared = trailing_compression(&file_name(output));
    if declared == Compression::None {
        return Ok(codec.map(str::to_owned));
    }
    let ext = declared.extension().unwrap_or_default();
    if plugin.is_self_compressing() {
        return Err(ConvertError::Usage(format!(
            "{}: a {} file compresses its own content and is never wrapped in .{ext}; name it without .{ext} (and give --codec to choose its internal codec)",
            output.display(),
            plugin.name()
        )));
    }
    match codec {
        None => Ok(Some(declared.name().to_owned())),
        Some(c) if c.parse::<Compression>().ok() == Some(declared) => Ok(Some(c.to_owned())),
        Some(c) => Err(ConvertError::Usage(format!(
            "{} ends in .{ext} but --codec is `{c}`: drop --codec, or name the file for its codec",
            output.display()
        ))),
    }
}

/// Convert as the arguments say, with the built-in plugins.
pub(crate) async fn run(args: ConvertArgs) -> Result<ConvertReport, ConvertError> {
    run_with(&Registry::default(), args).await
}

/// Convert as the arguments say, with the plugins of `registry`.
pub(crate) async fn run_with(
    registry: &Registry,
    args: ConvertArgs,
) -> Result<ConvertReport, ConvertError> {
    let started = Instant::now();
    let from = plugin_for(registry, "--from", args.from.as_deref(), &args.input)?;
    let to = plugin_for(registry, "--to", args.to.as_deref(), &args.output)?;
    let Configured {
        input: from,
        output: to,
        input_taken,
        output_taken,
    } = configure(from, to, &settings(&args)?)?;

    let shape: RecordShape = args
        .shape
        .parse()
        .map_err(|e| ConvertError::Usage(format!("--shape: {e}")))?;
    let codec = output_codec(to.as_ref(), args.codec.as_deref(), &args.output)?;
    let mut encode = EncodeOptions::default().with_shape(shape);
    if let Some(c) = &codec {
        encode = encode.with_codec(c);
    }
    if let Some(level) = args.level {
        encode = encode.with_compression_level(level);
    }
    to.check_encode_options(&encode).map_err(|e| {
        ConvertError::Usage(format!(
            "cannot write {} as {}: {e}",
            args.output.display(),
            to.name()
        ))
    })?;

    let input = args.input.display().to_string();
    let read_err =
        |e: &dyn std::fmt::Display| ConvertError::Failed(format!("cannot read {input}: {e}"));
    let size = std::fs::metadata(&args.input)
        .map_err(|e| read_err(&e))?
        .len();
    let head = read_head(&args.input).map_err(|e| read_err(&e))?;
    let detected = compression::detect(&head, None, Some(&file_name(&args.input)))
        .map_err(|e| read_err(&e))?;
    // Formats that compress their own content are never wrapped in whole-file compression:
    // a Parquet file that starts like gzip was compressed by something else.
    if from.is_self_compressing() && detected != Compression::None {
        return Err(read_err(&format!(
            "it is {detected}-compressed as a whole, and a {} file is never wrapped in whole-file compression: decompress it first",
            from.name()
        )));
    }
    let codec_in = detected;

    let decode = DecodeOptions::default().with_batch_size(args.batch_size);
    let decoder = from
        .decoder(&DecodeInput::with_size(size), &decode)
        .map_err(|e| read_err(&e))?;
    let mut out = Output::create(&args.output, Arc::clone(&to), encode)?;
    let bar = (size > PROGRESS_ABOVE).then(|| progress::bytes("convert", size));
    let read = Arc::new(AtomicU64::new(0));
    let show = |out: &Output| {
        if let Some(bar) = &bar {
            bar.set_position(read.load(Ordering::Relaxed));
            bar.set_message(format!("{} rows", out.rows));
        }
    };
    let decoded = match decoder {
        Decoder::Stream(mut d) => {
            read_stream(&args.input, codec_in, d.as_mut(), &read, &mut out, &show).await
        }
        Decoder::Ranged(mut d) => {
            if codec_in != Compression::None {
                Err(Stop::Read(format!(
                    "it is {codec_in}-compressed, and the {} decoder reads byte ranges of the file: decompress it first",
                    from.name()
                )))
            } else {
                read_ranged(&args.input, d.as_mut(), &read, &mut out, &show)
            }
        }
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let batches = match decoded {
        Ok(batches) => batches,
        Err(Stop::Read(reason)) => return Err(read_err(&reason)),
        Err(Stop::Write(reason)) => return Err(ConvertError::Failed(reason)),
    };
    let rows = out.rows;
    let bytes_out = out.finish(&input)?;
    Ok(ConvertReport {
        input,
        output: args.output.display().to_string(),
        from: from.name().to_owned(),
        to: to.name().to_owned(),
        input_compression: codec_in.name().to_owned(),
        codec,
        input_options: input_taken,
        output_options: output_taken,
        rows,
        batches,
        bytes_in: size,
        bytes_out,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Where reading stopped: the input (its reason, without the file name) or the output (a
/// whole message).
enum Stop {
    Read(String),
    Write(String),
}

impl From<String> for Stop {
    fn from(reason: String) -> Self {
        Self::Read(reason)
    }
}

/// The first bytes of a file, for compression detection.
fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::with_capacity(MAGIC_LEN);
    File::open(path)?
        .take(MAGIC_LEN as u64)
        .read_to_end(&mut head)?;
    Ok(head)
}

/// Feed the file through the decompressor to a stream decoder, in chunks.
async fn read_stream(
    path: &Path,
    codec: Compression,
    decoder: &mut dyn StreamDecoder,
    read: &Arc<AtomicU64>,
    out: &mut Output,
    show: &impl Fn(&Output),
) -> Result<u64, Stop> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| e.to_string())?;
    let counter = Arc::clone(read);
    let body = tokio_util::io::ReaderStream::with_capacity(file, CHUNK).inspect_ok(move |chunk| {
        counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    });
    let mut reader = compression::decompress(codec, tokio_util::io::StreamReader::new(body));
    let mut buf = vec![0u8; CHUNK];
    let mut batches = 0;
    loop {
        let n = reader.read(&mut buf).await.map_err(|e| match codec {
            Compression::None => e.to_string(),
            c => format!("{c} decompression failed: {e}"),
        })?;
        if n == 0 {
            break;
        }
        decoder
            .decode(buf.get(..n).unwrap_or_default())
            .map_err(|e| e.to_string())?;
        while let Some(batch) = decoder.next_batch() {
            out.write(&batch).map_err(Stop::Write)?;
            batches += 1;
        }
        show(out);
    }
    decoder.finish().map_err(|e| e.to_string())?;
    while let Some(batch) = decoder.next_batch() {
        out.write(&batch).map_err(Stop::Write)?;
        batches += 1;
    }
    out.schema = decoder.schema();
    Ok(batches)
}

/// Answer a ranged decoder's requests with positioned reads of the file.
fn read_ranged(
    path: &Path,
    decoder: &mut dyn RangedDecoder,
    read: &Arc<AtomicU64>,
    out: &mut Output,
    show: &impl Fn(&Output),
) -> Result<u64, Stop> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut batches = 0;
    loop {
        match decoder.try_decode().map_err(|e| e.to_string())? {
            RangedStep::NeedsData(ranges) => {
                let mut data = Vec::with_capacity(ranges.len());
                for r in &ranges {
                    let len = usize::try_from(r.end.saturating_sub(r.start)).map_err(|_| {
                        format!("bytes {}..{} do not fit in memory", r.start, r.end)
                    })?;
                    let mut buf = vec![0u8; len];
                    read_at(&file, &mut buf, r.start)
                        .map_err(|e| format!("bytes {}..{}: {e}", r.start, r.end))?;
                    read.fetch_add(len as u64, Ordering::Relaxed);
                    data.push(Bytes::from(buf));
                }
                decoder
                    .push_ranges(ranges, data)
                    .map_err(|e| e.to_string())?;
            }
            RangedStep::Batch(batch) => {
                out.write(&batch).map_err(Stop::Write)?;
                batches += 1;
                show(out);
            }
            RangedStep::Finished => {
                out.schema = decoder.schema();
                return Ok(batches);
            }
        }
    }
}

/// Fill `buf` from `file` at `offset` (pread).
#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

/// Fill `buf` from `file` at `offset`.
#[cfg(not(unix))]
fn read_at(mut file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

/// The output: an encoder opened on the first batch, draining into a temporary file next
/// to the destination. Dropped without [`Output::finish`], the temporary file is removed.
struct Output {
    path: PathBuf,
    plugin: Arc<dyn FormatPlugin>,
    options: EncodeOptions,
    encoder: Option<Box<dyn Encoder>>,
    file: tempfile::NamedTempFile,
    rows: u64,
    bytes: u64,
    /// The input's schema as its decoder knows it, for an input with no rows.
    schema: Option<arrow_schema::SchemaRef>,
}

impl Output {
    fn create(
        path: &Path,
        plugin: Arc<dyn FormatPlugin>,
        options: EncodeOptions,
    ) -> Result<Self, ConvertError> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let prefix = format!(".{}.", file_name(path));
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".tmp");
        // The permissions of any new file (the umask applies), not a temporary file's 0600.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
        let file = builder.tempfile_in(&dir).map_err(|e| {
            ConvertError::Failed(format!(
                "cannot write {}: cannot create a temporary file in {}: {e}",
                path.display(),
                dir.display()
            ))
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            plugin,
            options,
            encoder: None,
            file,
            rows: 0,
            bytes: 0,
            schema: None,
        })
    }

    fn fail(&self, e: &dyn std::fmt::Display) -> String {
        format!("cannot write {}: {e}", self.path.display())
    }

    fn drain(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.file.write_all(bytes).map_err(|e| self.fail(&e))?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        let encoder = match &mut self.encoder {
            Some(e) => e,
            None => {
                let opened = shape::encoder(self.plugin.as_ref(), batch.schema(), &self.options)
                    .map_err(|e| self.fail(&e))?;
                self.encoder.insert(opened)
            }
        };
        let first = self.rows + 1;
        let n = batch.num_rows() as u64;
        if let Err(e) = encoder.write(batch) {
            return Err(format!(
                "cannot write {} (input rows {first}..{}): {e}",
                self.path.display(),
                first + n.saturating_sub(1)
            ));
        }
        let bytes = encoder.take_output();
        self.rows += n;
        self.drain(&bytes)
    }

    /// End the file and move it to its name; returns its size.
    fn finish(mut self, input: &str) -> Result<u64, ConvertError> {
        let failed = |e: String| ConvertError::Failed(e);
        let mut encoder = match (self.encoder.take(), self.schema.take()) {
            (Some(e), _) => e,
            // No rows, but the input names its columns (a header, a footer).
            (None, Some(schema)) => shape::encoder(self.plugin.as_ref(), schema, &self.options)
                .map_err(|e| failed(self.fail(&e)))?,
            (None, None) if self.plugin.is_self_compressing() => {
                return Err(ConvertError::Failed(format!(
                    "cannot write {}: {input} has no rows and no schema, and a {} file must declare its columns; nothing was written",
                    self.path.display(),
                    self.plugin.name()
                )));
            }
            (None, None) => shape::encoder(
                self.plugin.as_ref(),
                Arc::new(Schema::empty()),
                &self.options,
            )
            .map_err(|e| failed(self.fail(&e)))?,
        };
        let last = encoder.finish().map_err(|e| failed(self.fail(&e)))?;
        self.drain(&last).map_err(failed)?;
        self.file
            .as_file()
            .sync_all()
            .map_err(|e| failed(self.fail(&e)))?;
        let Self {
            path, file, bytes, ..
        } = self;
        file.persist(&path).map_err(|e| {
            ConvertError::Failed(format!("cannot write {}: {}", path.display(), e.error))
        })?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    use arrow_array::{ArrayRef, StringArray};
    use arrow_schema::{DataType, Field};
    use clap::Parser;
    use s3conn_core::formats::Error as FormatError;
    use serde_json::{Value, json};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ConvertArgs,
    }

    async fn convert_with(registry: &Registry, argv: &[&str]) -> Result<ConvertReport, String> {
        let mut all = vec!["convert"];
        all.extend_from_slice(argv);
        let args = Cli::try_parse_from(all).map_err(|e| e.to_string())?.args;
        run_with(registry, args).await.map_err(|e| match e {
            ConvertError::Usage(m) => format!("usage: {m}"),
            ConvertError::Failed(m) => format!("failed: {m}"),
        })
    }

    async fn convert(argv: &[&str]) -> Result<ConvertReport, String> {
        convert_with(&Registry::default(), argv).await
    }

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    /// One realistic event: unicode, nulls, a nested object, a list.
    fn event(i: u64) -> Value {
        let names = ["Zoë", "Ana", "Björn", "李雷", "Olu", "Émile"];
        json!({
            "id": i,
            "name": names[(i % 6) as usize],
            "amount": if i.is_multiple_of(7) { Value::Null } else { json!((i % 1000) as f64 / 4.0) },
            "active": i.is_multiple_of(2),
            "ts": format!("2024-11-{:02}T{:02}:{:02}:00Z", 1 + i % 28, i % 24, i % 60),
            "props": { "page": format!("/p/{}", i % 50), "ref": if i.is_multiple_of(3) { Value::Null } else { json!("ads \"quoted\", commas") } },
            "tags": ["a", if i.is_multiple_of(2) { "even" } else { "odd" }],
        })
    }

    fn ndjson(n: u64) -> String {
        (0..n).map(|i| format!("{}\n", event(i))).collect()
    }

    /// Nulls dropped (absent and null read the same), numbers as f64 (`1` and `1.0`).
    fn normal(v: Value) -> Value {
        match v {
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k, normal(v)))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.into_iter().map(normal).collect()),
            Value::Number(n) => json!(n.as_f64().unwrap()),
            other => other,
        }
    }

    fn rows(text: &str) -> Vec<Value> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| normal(serde_json::from_str(l).unwrap()))
            .collect()
    }

    /// A file's text, decompressed as its content says; and the codec found.
    async fn text_of(path: &Path) -> (String, Compression) {
        let bytes = std::fs::read(path).unwrap();
        let codec = compression::detect(&bytes, None, None).unwrap();
        let mut text = String::new();
        compression::decompress(codec, std::io::Cursor::new(bytes))
            .read_to_string(&mut text)
            .await
            .unwrap();
        (text, codec)
    }

    /// The directory holds exactly these names.
    fn assert_holds(dir: &Path, names: &[&str]) {
        let mut found: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        found.sort();
        let mut want: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        want.sort();
        assert_eq!(found, want, "no partial or temporary file is left behind");
    }

    #[tokio::test]
    async fn ndjson_parquet_ndjson_round_trips_through_every_codec() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("events.jsonl");
        let original = ndjson(5_000);
        std::fs::write(&plain, &original).unwrap();
        let expected = rows(&original);
        for (codec, ext, parquet_codec) in [
            ("gzip", "gz", "zstd"),
            ("zstd", "zst", "gzip"),
            ("bzip2", "bz2", "snappy"),
            ("xz", "xz", "brotli"),
        ] {
            // Plain NDJSON to compressed NDJSON: the codec from the output's extension.
            let packed = dir.path().join(format!("events.jsonl.{ext}"));
            let r = convert(&[s(&plain), s(&packed), "--level", "3"])
                .await
                .unwrap();
            assert_eq!((r.codec.as_deref(), r.rows), (Some(codec), 5_000));
            let (text, found) = text_of(&packed).await;
            assert_eq!(found.name(), codec);
            assert_eq!(rows(&text), expected, "{codec}: compressed NDJSON");

            // Compressed NDJSON to Parquet: the input's codec detected from its content.
            let parquet = dir.path().join(format!("events-{codec}.parquet"));
            let r = convert(&[
                s(&packed),
                s(&parquet),
                "--codec",
                parquet_codec,
                "--batch-size",
                "1000",
            ])
            .await
            .unwrap();
            assert_eq!(r.input_compression, codec);
            assert_eq!((r.from.as_str(), r.to.as_str()), ("ndjson", "parquet"));
            assert_eq!((r.rows, r.batches), (5_000, 5));
            assert_eq!(r.bytes_out, std::fs::metadata(&parquet).unwrap().len());
            // The parquet crate's own reader agrees.
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                File::open(&parquet).unwrap(),
            )
            .unwrap();
            assert_eq!(reader.metadata().file_metadata().num_rows(), 5_000);

            // And back to NDJSON, compressed with the same codec.
            let back = dir.path().join(format!("back.ndjson.{ext}"));
            let r = convert(&[s(&parquet), s(&back)]).await.unwrap();
            assert_eq!((r.from.as_str(), r.rows), ("parquet", 5_000));
            let (text, found) = text_of(&back).await;
            assert_eq!(found.name(), codec);
            assert_eq!(rows(&text), expected, "{codec}: row for row");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode();
            assert_eq!(
                mode(&dir.path().join("back.ndjson.xz")),
                mode(&plain),
                "an output file has the permissions of any new file"
            );
        }
    }

    #[tokio::test]
    async fn a_parquet_file_written_by_pyarrow_converts_and_reads_back() {
        const WRITE: &str = r#"
import datetime, json, sys
import pyarrow as pa, pyarrow.parquet as pq
names = ["Zoë", "Ana", "Björn", "李雷", "Olu", None]
schema = pa.schema([
    ("id", pa.int64()), ("name", pa.string()), ("amount", pa.float64()),
    ("active", pa.bool_()), ("day", pa.date32()),
    ("props", pa.struct([("page", pa.string()), ("ref", pa.string())])),
    ("tags", pa.list_(pa.string())),
])
rows = [{
    "id": i, "name": names[i % 6],
    "amount": None if i % 7 == 0 else (i % 1000) / 4,
    "active": i % 2 == 0, "day": datetime.date(2024, 11, 1 + i % 28),
    "props": {"page": f"/p/{i % 50}", "ref": None if i % 3 == 0 else "ads"},
    "tags": ["a", "even" if i % 2 == 0 else "odd"],
} for i in range(3000)]
table = pa.Table.from_pylist(rows, schema=schema)
pq.write_table(table, sys.argv[1], row_group_size=700, compression="snappy")
for r in table.to_pylist():
    print(json.dumps(r, default=lambda v: v.isoformat(), ensure_ascii=False))
"#;
        const READ: &str = r#"
import json, sys
import pyarrow.parquet as pq
for r in pq.read_table(sys.argv[1]).to_pylist():
    print(json.dumps(r, default=lambda v: v.isoformat(), ensure_ascii=False))
"#;
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("pyarrow.parquet");
        let expected = rows(&s3conn_testkit::run_python(WRITE, &[s(&theirs)]));
        assert_eq!(expected.len(), 3000);

        let jsonl = dir.path().join("from-pyarrow.jsonl");
        let r = convert(&[s(&theirs), s(&jsonl)]).await.unwrap();
        assert_eq!(r.rows, 3000);
        assert!(r.batches >= 5, "one batch per row group at least");
        let text = std::fs::read_to_string(&jsonl).unwrap();
        assert_eq!(rows(&text), expected, "pyarrow's rows, value for value");

        // And pyarrow reads the Parquet s3conn writes from that NDJSON.
        let ours = dir.path().join("ours.parquet");
        convert(&[s(&jsonl), s(&ours), "--codec", "zstd"])
            .await
            .unwrap();
        let back = rows(&s3conn_testkit::run_python(READ, &[s(&ours)]));
        assert_eq!(back, expected);
    }

    #[tokio::test]
    async fn a_bad_line_names_the_file_and_line_and_nothing_is_left_behind() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let mut text = ndjson(3_000);
        // Line 2500 (after the lines schema inference looks at) is cut short.
        let lines: Vec<&str> = text.lines().collect();
        let mut broken = lines.clone();
        broken[2499] = r#"{"id": 2499, "name": "Zoë", "#;
        text = broken.join("\n") + "\n";
        let input = dir.path().join("bad.jsonl.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text.as_bytes()).unwrap();
        std::fs::write(&input, gz.finish().unwrap()).unwrap();

        for output in ["out.parquet", "out.jsonl"] {
            let out = dir.path().join(output);
            let err = convert(&[s(&input), s(&out), "--batch-size", "500"])
                .await
                .unwrap_err();
            assert!(err.starts_with("failed: "), "{err}");
            assert!(err.contains(s(&input)), "names the file: {err}");
            assert!(err.contains("line 2500"), "names the line: {err}");
            assert!(!out.exists());
            assert_holds(dir.path(), &["bad.jsonl.gz"]);
        }
        // A truncated gzip stream is a read error too, and leaves nothing.
        let bytes = std::fs::read(&input).unwrap();
        let cut = dir.path().join("cut.jsonl.gz");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let err = convert(&[s(&cut), s(&dir.path().join("x.jsonl"))])
            .await
            .unwrap_err();
        assert!(err.contains(s(&cut)), "{err}");
        assert_holds(dir.path(), &["bad.jsonl.gz", "cut.jsonl.gz"]);
        // A Parquet file compressed as a whole is named as such.
        let wrapped = dir.path().join("wrapped.parquet");
        std::fs::write(&wrapped, &bytes).unwrap();
        let err = convert(&[s(&wrapped), s(&dir.path().join("x.jsonl"))])
            .await
            .unwrap_err();
        assert!(err.contains("gzip-compressed as a whole"), "{err}");
    }

    #[tokio::test]
    async fn unknown_options_formats_and_codecs_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        std::fs::write(&input, ndjson(10)).unwrap();
        let out = dir.path().join("out.parquet");
        let (i, o) = (s(&input), s(&out));
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (vec![i, o, "--option", "nope=1"], "option `nope`"),
            (vec![i, o, "--input-option", "nope=1"], "no option `nope`"),
            (vec![i, o, "--option", "nope"], "KEY=VALUE"),
            (vec![i, o, "--separator", ";"], "option `delimiter`"),
            (vec![i, o, "--to", "xml"], "no format plugin for `xml`"),
            (vec![i, "out.xml"], "give --to"),
            (vec![i, o, "--from", "yaml"], "no format plugin for `yaml`"),
            (vec![i, o, "--codec", "lzo"], "Parquet codec `lzo`"),
            (
                vec![i, "out.jsonl", "--codec", "snappy"],
                "compression `snappy`",
            ),
            (vec![i, "out.jsonl.gz", "--codec", "zstd"], "ends in .gz"),
            (vec![i, "out.parquet.gz"], "never wrapped in .gz"),
            (
                vec![i, o, "--shape", "sideways"],
                "as_is, flattened or envelope",
            ),
        ];
        for (argv, expected) in cases {
            let err = convert(&argv).await.unwrap_err();
            assert!(err.starts_with("usage: "), "{argv:?}: {err}");
            assert!(err.contains(expected), "{argv:?}: {err}");
        }
        assert_holds(dir.path(), &["in.jsonl"]);
        let err = convert(&[s(&dir.path().join("missing.jsonl")), o])
            .await
            .unwrap_err();
        assert!(err.contains("missing.jsonl"), "{err}");
    }

    #[tokio::test]
    async fn an_empty_input_gives_an_empty_file_or_says_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.jsonl");
        std::fs::write(&empty, "").unwrap();
        let gz = dir.path().join("empty.jsonl.gz");
        let r = convert(&[s(&empty), s(&gz)]).await.unwrap();
        assert_eq!((r.rows, r.bytes_in), (0, 0));
        let (text, codec) = text_of(&gz).await;
        assert_eq!((text.as_str(), codec), ("", Compression::Gzip));
        assert!(r.bytes_out > 0, "a valid, empty gzip stream");

        let parquet = dir.path().join("empty.parquet");
        let err = convert(&[s(&empty), s(&parquet)]).await.unwrap_err();
        assert!(err.contains("no rows and no schema"), "{err}");
        assert!(!parquet.exists());

        // A header names the columns: the Parquet file has them, and no rows; and back.
        let header = dir.path().join("header.csv");
        std::fs::write(&header, "id,name\n").unwrap();
        let r = convert(&[s(&header), s(&parquet)]).await.unwrap();
        assert_eq!(r.rows, 0);
        let out = s3conn_testkit::run_python(
            "import sys, pyarrow.parquet as pq; t = pq.read_table(sys.argv[1]); print(t.num_rows, t.column_names)",
            &[s(&parquet)],
        );
        assert_eq!(out.trim(), "0 ['id', 'name']");
        let back = dir.path().join("back.csv");
        convert(&[s(&parquet), s(&back)]).await.unwrap();
        assert_eq!(std::fs::read_to_string(&back).unwrap(), "id,name\n");
    }

    #[tokio::test]
    async fn a_shape_adds_the_envelope_columns() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        std::fs::write(&input, ndjson(3)).unwrap();
        let out = dir.path().join("out.jsonl");
        convert(&[s(&input), s(&out), "--shape", "envelope"])
            .await
            .unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let data: Value = serde_json::from_str(first["_s3conn_data"].as_str().unwrap()).unwrap();
        assert_eq!(normal(data), normal(event(0)));
        assert!(first["_s3conn_id"].is_string());
    }

    #[test]
    fn separators_by_name() {
        assert_eq!(separator("tab"), "\t");
        assert_eq!(separator("\\t"), "\t");
        assert_eq!(separator("\t"), "\t");
        assert_eq!(separator(";"), ";");
        assert_eq!(separator("pipe"), "|");
    }

    /// A small delimiter-separated plugin (strings only, no quoting) with the `delimiter` and
    /// `header` settings the CSV-like plugins have: it shows the settings reach both sides.
    #[derive(Debug, Clone, Copy)]
    struct Dsv {
        delimiter: u8,
        header: bool,
    }

    impl FormatPlugin for Dsv {
        fn name(&self) -> &str {
            "dsv"
        }
        fn extensions(&self) -> &[&str] {
            &["dsv"]
        }
        fn content_type(&self) -> &str {
            "text/plain"
        }
        fn with_option(
            &self,
            key: &str,
            value: &str,
        ) -> s3conn_core::formats::Result<Arc<dyn FormatPlugin>> {
            let mut next = *self;
            match key {
                "delimiter" => match value.as_bytes() {
                    [b] => next.delimiter = *b,
                    _ => {
                        return Err(FormatError::InvalidOption {
                            option: "delimiter",
                            reason: format!("`{value}` is not one character"),
                        });
                    }
                },
                "header" => next.header = value == "true",
                other => {
                    return Err(FormatError::InvalidOption {
                        option: "format option",
                        reason: format!("the `dsv` format has no option `{other}`"),
                    });
                }
            }
            Ok(Arc::new(next))
        }
        fn decoder(
            &self,
            _input: &DecodeInput,
            options: &DecodeOptions,
        ) -> s3conn_core::formats::Result<Decoder> {
            Ok(Decoder::Stream(Box::new(DsvDecoder {
                format: *self,
                batch_size: options.batch_size,
                carry: Vec::new(),
                names: None,
                rows: Vec::new(),
                line: 0,
                ready: VecDeque::new(),
            })))
        }
        fn encoder(
            &self,
            schema: arrow_schema::SchemaRef,
            _options: &EncodeOptions,
        ) -> s3conn_core::formats::Result<Box<dyn Encoder>> {
            let mut out = Vec::new();
            if self.header {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                out.extend_from_slice(names.join(&(self.delimiter as char).to_string()).as_bytes());
                out.push(b'\n');
            }
            Ok(Box::new(DsvEncoder {
                delimiter: self.delimiter,
                total: out.len() as u64,
                out,
            }))
        }
    }

    #[derive(Debug)]
    struct DsvDecoder {
        format: Dsv,
        batch_size: usize,
        carry: Vec<u8>,
        names: Option<Vec<String>>,
        rows: Vec<Vec<String>>,
        line: u64,
        ready: VecDeque<RecordBatch>,
    }

    impl DsvDecoder {
        fn line(&mut self, text: &[u8]) -> s3conn_core::formats::Result<()> {
            self.line += 1;
            let text = String::from_utf8_lossy(text);
            let fields: Vec<String> = text
                .split(self.format.delimiter as char)
                .map(str::to_owned)
                .collect();
            let Some(names) = &self.names else {
                self.names = Some(if self.format.header {
                    fields
                } else {
                    (1..=fields.len()).map(|i| format!("c{i}")).collect()
                });
                if self.format.header {
                    return Ok(());
                }
                return self.line_fields(
                    text.split(self.format.delimiter as char)
                        .map(str::to_owned)
                        .collect(),
                );
            };
            if fields.len() != names.len() {
                return Err(FormatError::Decode {
                    format: "dsv",
                    line: Some(self.line),
                    message: format!("{} fields, expected {}", fields.len(), names.len()),
                });
            }
            self.line_fields(fields)
        }

        fn line_fields(&mut self, fields: Vec<String>) -> s3conn_core::formats::Result<()> {
            self.rows.push(fields);
            if self.rows.len() >= self.batch_size {
                self.flush();
            }
            Ok(())
        }

        fn flush(&mut self) {
            let Some(names) = &self.names else { return };
            if self.rows.is_empty() {
                return;
            }
            let columns: Vec<(String, ArrayRef)> = names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let values: StringArray =
                        self.rows.iter().map(|r| Some(r[i].clone())).collect();
                    (n.clone(), Arc::new(values) as ArrayRef)
                })
                .collect();
            self.rows.clear();
            let fields: Vec<Field> = columns
                .iter()
                .map(|(n, _)| Field::new(n, DataType::Utf8, true))
                .collect();
            let batch = RecordBatch::try_new(
                Arc::new(Schema::new(fields)),
                columns.into_iter().map(|(_, c)| c).collect(),
            )
            .unwrap();
            self.ready.push_back(batch);
        }
    }

    impl StreamDecoder for DsvDecoder {
        fn decode(&mut self, buf: &[u8]) -> s3conn_core::formats::Result<()> {
            self.carry.extend_from_slice(buf);
            while let Some(i) = self.carry.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.carry.drain(..=i).take(i).collect();
                self.line(&line)?;
            }
            Ok(())
        }
        fn finish(&mut self) -> s3conn_core::formats::Result<()> {
            if !self.carry.is_empty() {
                let line = std::mem::take(&mut self.carry);
                self.line(&line)?;
            }
            self.flush();
            Ok(())
        }
        fn next_batch(&mut self) -> Option<RecordBatch> {
            self.ready.pop_front()
        }
    }

    #[derive(Debug)]
    struct DsvEncoder {
        delimiter: u8,
        out: Vec<u8>,
        total: u64,
    }

    impl Encoder for DsvEncoder {
        fn write(&mut self, batch: &RecordBatch) -> s3conn_core::formats::Result<()> {
            let options = arrow_cast::display::FormatOptions::default();
            let formatters: Vec<_> = batch
                .columns()
                .iter()
                .map(|c| {
                    arrow_cast::display::ArrayFormatter::try_new(c.as_ref(), &options).unwrap()
                })
                .collect();
            for row in 0..batch.num_rows() {
                let fields: Vec<String> = formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect();
                let line = fields.join(&(self.delimiter as char).to_string()) + "\n";
                self.total += line.len() as u64;
                self.out.extend_from_slice(line.as_bytes());
            }
            Ok(())
        }
        fn take_output(&mut self) -> Bytes {
            Bytes::from(std::mem::take(&mut self.out))
        }
        fn finish(&mut self) -> s3conn_core::formats::Result<Bytes> {
            Ok(self.take_output())
        }
        fn bytes_written(&self) -> u64 {
            self.total
        }
    }

    #[tokio::test]
    async fn separator_and_header_settings_reach_both_plugins() {
        let registry = Registry::default().with(Arc::new(Dsv {
            delimiter: b',',
            header: true,
        }));
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.dsv");
        std::fs::write(&input, "user\tcountry\nZoë\tFR\nAna\tBR\n").unwrap();
        for sep in ["tab", "\\t", "\t"] {
            let out = dir.path().join("out.jsonl");
            let r = convert_with(&registry, &[s(&input), s(&out), "--separator", sep])
                .await
                .unwrap();
            assert_eq!(r.input_options, ["delimiter=\\t"]);
            assert!(r.output_options.is_empty(), "NDJSON has no delimiter");
            assert_eq!(
                std::fs::read_to_string(&out).unwrap(),
                "{\"user\":\"Zoë\",\"country\":\"FR\"}\n{\"user\":\"Ana\",\"country\":\"BR\"}\n"
            );
        }
        // Both sides delimiter-separated: both take the settings.
        let out = dir.path().join("out.dsv");
        let headless = dir.path().join("headless.dsv");
        std::fs::write(&headless, "Zoë;FR\nAna;BR\n").unwrap();
        let r = convert_with(
            &registry,
            &[s(&headless), s(&out), "--separator", ";", "--no-header"],
        )
        .await
        .unwrap();
        assert_eq!(r.input_options, ["delimiter=;", "header=false"]);
        assert_eq!(r.output_options, r.input_options);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "Zoë;FR\nAna;BR\n");
        // A bad line names its line; a value neither side takes is refused.
        std::fs::write(&headless, "Zoë;FR\nAna\n").unwrap();
        let err = convert_with(
            &registry,
            &[s(&headless), s(&out), "--separator", ";", "--no-header"],
        )
        .await
        .unwrap_err();
        assert!(err.contains("dsv line 2: 1 fields, expected 2"), "{err}");
        let err = convert_with(&registry, &[s(&input), s(&out), "--separator", ";;"])
            .await
            .unwrap_err();
        assert!(err.contains("`;;` is not one character"), "{err}");
        let err = convert_with(
            &registry,
            &[s(&input), s(&out), "--output-option", "quote=\""],
        )
        .await
        .unwrap_err();
        assert!(err.contains("no option `quote`"), "{err}");
    }
}
