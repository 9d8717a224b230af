//! `peak_memory FORMAT SIZE [CODEC]`: the peak memory of decoding a large file with a format
//! plugin, in a process that does nothing else.
//!
//! The file is never materialised, in memory or on disk: rows of realistic events are
//! generated as they are read ([`s3conn_benches::Generated`], a generator per format:
//! `ndjson`, `csv`, `tsv`, `psv`, `json`), compressed on the fly when a codec is given, and
//! fed in 256 KiB chunks through s3conn's own decompression (`compression::detect` on the
//! first bytes, then `compression::decompress`, as the S3 source does) into the plugin's
//! stream decoder, found by name in `Registry::default()`. Batches are counted and dropped.
//!
//! It prints one JSON line: the format, codec, bytes (uncompressed and compressed), rows,
//! batches, seconds, and the peak resident set size (`VmHWM` in `/proc/self/status`) before
//! decoding (the baseline: runtime, generator, compressor) and after. MB are 10^6 bytes.
//!
//! ```text
//! peak_memory FORMAT SIZE [CODEC] [--batch-size N] [--size-of uncompressed|compressed]
//!
//!   FORMAT   a registered stream format with a generator: ndjson, csv, tsv, psv, json
//!   SIZE     20MB, 1GB, 1GiB…: of the uncompressed text, or of the compressed bytes with
//!            --size-of compressed (approximate: the ratio is measured on a first 8 MB)
//!   CODEC    none (default), gzip or zstd
//! ```
//!
//! `cargo build --release -p s3conn-benches --bin peak_memory` and then
//! `target/release/peak_memory ndjson 1GB` (see BENCHMARKS.md).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use s3conn_benches::{Generated, RowFormat, parse_size};
use s3conn_formats::compression::{self, Compression, MAGIC_LEN};
use s3conn_formats::{DecodeInput, DecodeOptions, Decoder, Registry, StreamDecoder};
use tokio::io::AsyncReadExt;

/// Bytes per read, as the S3 source reads objects.
const CHUNK: usize = 256 << 10;

/// Uncompressed bytes compressed to estimate the ratio for `--size-of compressed`.
const PILOT: u64 = 8_000_000;

const USAGE: &str = "usage: peak_memory FORMAT SIZE [none|gzip|zstd] [--batch-size N] [--size-of uncompressed|compressed]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Run(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    /// The command line is wrong (exit 2).
    Usage(String),
    /// The measurement failed (exit 1).
    Run(String),
}

struct Args {
    format: String,
    size: u64,
    codec: Compression,
    batch_size: usize,
    compressed_size: bool,
}

fn parse_args(args: &[String]) -> Result<Args, Failure> {
    let mut positional = Vec::new();
    let mut batch_size = DecodeOptions::default().batch_size;
    let mut compressed_size = false;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--batch-size" => {
                batch_size = rest
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| Failure::Usage("--batch-size takes a number of rows".into()))?;
            }
            "--size-of" => {
                compressed_size = match rest.next().map(String::as_str) {
                    Some("compressed") => true,
                    Some("uncompressed") => false,
                    _ => {
                        return Err(Failure::Usage(
                            "--size-of takes uncompressed or compressed".into(),
                        ));
                    }
                };
            }
            "-h" | "--help" => return Err(Failure::Usage("help".into())),
            other if other.starts_with("--") => {
                return Err(Failure::Usage(format!("unknown option {other}")));
            }
            other => positional.push(other.to_owned()),
        }
    }
    let (format, size, codec) = match positional.as_slice() {
        [format, size] => (format, size, "none"),
        [format, size, codec] => (format, size, codec.as_str()),
        _ => return Err(Failure::Usage("give FORMAT and SIZE".into())),
    };
    let size = parse_size(size)
        .ok_or_else(|| Failure::Usage(format!("SIZE `{size}`: write 20MB, 1GB, 1GiB…")))?;
    let codec = match codec.parse::<Compression>() {
        Ok(c @ (Compression::None | Compression::Gzip | Compression::Zstd)) => c,
        _ => {
            return Err(Failure::Usage(format!(
                "CODEC `{codec}`: use none, gzip or zstd"
            )));
        }
    };
    if compressed_size && codec == Compression::None {
        return Err(Failure::Usage("--size-of compressed needs a codec".into()));
    }
    Ok(Args {
        format: format.clone(),
        size,
        codec,
        batch_size,
        compressed_size,
    })
}

/// Peak and current resident set size, in bytes, from `/proc/self/status`.
fn rss() -> (Option<u64>, Option<u64>) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return (None, None);
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn mb(bytes: Option<u64>) -> Option<f64> {
    bytes.map(|b| (b as f64 / 1e6 * 10.0).round() / 10.0)
}

/// Counts what passes through a reader.
struct Counted<R> {
    inner: R,
    bytes: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The generator, publishing its row count.
struct Tracked {
    rows: Generated,
    count: Arc<AtomicU64>,
}

impl Read for Tracked {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.rows.read(buf)?;
        self.count.store(self.rows.rows(), Ordering::Relaxed);
        Ok(n)
    }
}

/// `reader` compressed with `codec`, as a reader.
fn compressed(
    codec: Compression,
    reader: impl Read + Send + 'static,
) -> Result<Box<dyn Read + Send>, Failure> {
    Ok(match codec {
        Compression::Gzip => Box::new(flate2::read::GzEncoder::new(
            reader,
            flate2::Compression::default(),
        )),
        Compression::Zstd => Box::new(
            zstd::stream::read::Encoder::new(reader, 3)
                .map_err(|e| Failure::Run(format!("zstd: {e}")))?,
        ),
        _ => Box::new(reader),
    })
}

/// The uncompressed size that compresses to about `target` bytes, from a first `PILOT`
/// bytes of the same rows.
fn uncompressed_for(format: RowFormat, codec: Compression, target: u64) -> Result<u64, Failure> {
    let mut pilot = compressed(codec, Generated::new(format, PILOT))?;
    let mut sink = [0u8; 64 << 10];
    let mut out = 0u64;
    loop {
        let n = pilot
            .read(&mut sink)
            .map_err(|e| Failure::Run(e.to_string()))?;
        if n == 0 {
            break;
        }
        out += n as u64;
    }
    let ratio = PILOT as f64 / out.max(1) as f64;
    Ok((target as f64 * ratio) as u64)
}

fn run(args: &[String]) -> Result<String, Failure> {
    let args = parse_args(args)?;
    let registry = Registry::default();
    let plugin = registry
        .get(&args.format)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let rows_format = RowFormat::for_format(plugin.name()).ok_or_else(|| {
        Failure::Usage(format!(
            "no generator for the `{}` format (there are generators for {})",
            plugin.name(),
            RowFormat::NAMES.join(", ")
        ))
    })?;
    let options = DecodeOptions::default().with_batch_size(args.batch_size);
    let decoder = match plugin.decoder(&DecodeInput::default(), &options) {
        Ok(Decoder::Stream(d)) => d,
        Ok(Decoder::Ranged(_)) => {
            return Err(Failure::Usage(format!(
                "the `{}` plugin reads byte ranges; this measures stream decoders",
                plugin.name()
            )));
        }
        Err(e) => return Err(Failure::Run(e.to_string())),
    };
    let target = if args.compressed_size {
        uncompressed_for(rows_format, args.codec, args.size)?
    } else {
        args.size
    };

    let generated_rows = Arc::new(AtomicU64::new(0));
    let input_bytes = Arc::new(AtomicU64::new(0));
    let compressed_bytes = Arc::new(AtomicU64::new(0));
    let text = Counted {
        inner: Tracked {
            rows: Generated::new(rows_format, target),
            count: Arc::clone(&generated_rows),
        },
        bytes: Arc::clone(&input_bytes),
    };
    let file = Counted {
        inner: compressed(args.codec, text)?,
        bytes: Arc::clone(&compressed_bytes),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| Failure::Run(format!("cannot start a runtime: {e}")))?;
    let outcome = runtime.block_on(decode(file, decoder))?;

    let (peak, _) = rss();
    let generated = generated_rows.load(Ordering::Relaxed);
    let line = serde_json::json!({
        "format": plugin.name(),
        "codec": args.codec.name(),
        "batch_size": args.batch_size,
        "input_bytes": input_bytes.load(Ordering::Relaxed),
        "compressed_bytes": compressed_bytes.load(Ordering::Relaxed),
        "rows": outcome.rows,
        "generated_rows": generated,
        "batches": outcome.batches,
        "seconds": round(outcome.total.as_secs_f64()),
        "decoder_seconds": round(outcome.decoding.as_secs_f64()),
        "baseline_rss_mb": mb(outcome.baseline),
        "peak_rss_mb": mb(peak),
        "decoder_rss_mb": mb(peak.zip(outcome.baseline).map(|(p, b)| p.saturating_sub(b))),
    })
    .to_string();
    if outcome.rows != generated {
        return Err(Failure::Run(format!(
            "the decoder gave {} rows of the {generated} generated: {line}",
            outcome.rows
        )));
    }
    Ok(line)
}

fn round(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

struct Outcome {
    rows: u64,
    batches: u64,
    total: Duration,
    decoding: Duration,
    baseline: Option<u64>,
}

/// Read the (compressed) bytes of `file` in chunks through detection and decompression
/// into `decoder`, counting and dropping the batches.
async fn decode(
    file: impl Read + Send + 'static,
    mut decoder: Box<dyn StreamDecoder>,
) -> Result<Outcome, Failure> {
    let chunks = futures::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match file.read(buf.get_mut(filled..).unwrap_or_default()) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => return Some((Err(e), file)),
            }
        }
        if filled == 0 {
            return None;
        }
        buf.truncate(filled);
        Some((Ok(Bytes::from(buf)), file))
    });
    let mut chunks = Box::pin(chunks);
    let first: Option<std::io::Result<Bytes>> = chunks.next().await;
    let head = match &first {
        Some(Ok(b)) => b.slice(..b.len().min(MAGIC_LEN)),
        Some(Err(e)) => return Err(Failure::Run(e.to_string())),
        None => Bytes::new(),
    };
    let codec = compression::detect(&head, None, None).map_err(|e| Failure::Run(e.to_string()))?;
    let body = futures::stream::iter(first).chain(chunks);
    let mut reader = compression::decompress(codec, tokio_util::io::StreamReader::new(body));

    let (baseline, _) = rss();
    let started = Instant::now();
    let mut decoding = Duration::ZERO;
    let mut buf = vec![0u8; CHUNK];
    let mut rows = 0u64;
    let mut batches = 0u64;
    let mut at = 0u64;
    let failed = |at: u64, e: &dyn std::fmt::Display| {
        Failure::Run(format!("decoding failed after {at} bytes: {e}"))
    };
    loop {
        let n = reader.read(&mut buf).await.map_err(|e| failed(at, &e))?;
        if n == 0 {
            break;
        }
        let t = Instant::now();
        decoder
            .decode(buf.get(..n).unwrap_or_default())
            .map_err(|e| failed(at, &e))?;
        while let Some(batch) = decoder.next_batch() {
            rows += batch.num_rows() as u64;
            batches += 1;
        }
        decoding += t.elapsed();
        at += n as u64;
    }
    let t = Instant::now();
    decoder.finish().map_err(|e| failed(at, &e))?;
    while let Some(batch) = decoder.next_batch() {
        rows += batch.num_rows() as u64;
        batches += 1;
    }
    decoding += t.elapsed();
    Ok(Outcome {
        rows,
        batches,
        total: started.elapsed(),
        decoding,
        baseline,
    })
}
