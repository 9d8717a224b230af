//! The bodies of the fuzz targets, one function each: `fuzz_targets/*.rs` run them under
//! libFuzzer (`cargo fuzz run <target>`), and the workspace's test run replays every seed
//! of `fuzz/seeds/<target>/` through them (`benches/tests/fuzz_seeds.rs`), so a seed that
//! once crashed a target stays fixed without building the fuzzer.

use std::sync::Once;

static QUIET_PANICS: Once = Once::new();

/// Silence the panic hook. libfuzzer-sys aborts on every panic, even one the formats catch
/// by design (calls into arrow-avro and the parquet crate run under `catch_unwind`): with
/// this hook only a panic that escapes s3conn's API counts as a crash.
pub fn quiet_panics() {
    QUIET_PANICS.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}

/// Feed `input` to `plugin`'s stream decoder in pieces of `chunk` bytes: it returns batches
/// of at most `batch` rows or an error, and never panics; with `refuses_after_error`, a
/// decoder that failed refuses further input.
fn decode_in_chunks(
    plugin: &dyn s3conn_formats::FormatPlugin,
    options: &s3conn_formats::DecodeOptions,
    input: &[u8],
    (chunk, batch): (usize, usize),
    refuses_after_error: bool,
) {
    use s3conn_formats::{DecodeInput, Decoder};
    let Ok(Decoder::Stream(mut decoder)) = plugin.decoder(&DecodeInput::default(), options) else {
        return;
    };
    for piece in input.chunks(chunk) {
        if decoder.decode(piece).is_err() {
            assert!(!refuses_after_error || decoder.decode(b"x").is_err());
            return;
        }
        while let Some(b) = decoder.next_batch() {
            assert!(b.num_rows() <= batch);
        }
    }
    if decoder.finish().is_ok() {
        while let Some(b) = decoder.next_batch() {
            assert!(b.num_rows() <= batch);
        }
    }
}

/// Batches of at most 7 rows, types inferred from 5 rows, lines of at most 4 KiB: small
/// limits that a short input can reach.
fn small_batches(policy: s3conn_formats::ErrorPolicy) -> s3conn_formats::DecodeOptions {
    s3conn_formats::DecodeOptions::default()
        .with_batch_size(7)
        .with_infer_rows(5)
        .with_max_line_bytes(4096)
        .with_error_policy(policy)
}

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/seeds` and `cargo fuzz list` name them.
pub const TARGETS: &[(&str, Target)] = &[
    ("avro_decode", avro_decode),
    ("compression_detect", compression_detect),
    ("csv_decode", csv_decode),
    ("json_decode", json_decode),
    ("manifest_parse", manifest_parse),
    ("ndjson_decode", ndjson_decode),
    ("parquet_decode", parquet_decode),
    ("template_parse", template_parse),
];

/// Any bytes as an Avro file, fed in any chunking, under either error policy: the decoder
/// returns batches or an error, never panics, never yields a batch larger than asked, and
/// never allocates past its block limits.
///
/// libfuzzer-sys aborts on every panic, even one the plugin catches by design (calls into
/// arrow-avro run under `catch_unwind`). This target installs a hook that does not abort, so
/// only a panic that escapes s3conn's API (and reaches libfuzzer-sys's own `catch_unwind`)
/// counts as a crash.
pub fn avro_decode(data: &[u8]) {
    use s3conn_formats::avro::AvroFormat;
    use s3conn_formats::{DecodeOptions, ErrorPolicy};

    let Some((&control, input)) = data.split_first() else {
        return;
    };
    // Chunks of 1..=64 bytes, or the whole input at once.
    let chunk = match control & 0x3f {
        0 => input.len().max(1),
        n => usize::from(n),
    };
    let policy = if control & 0x40 == 0 {
        ErrorPolicy::Fail
    } else {
        ErrorPolicy::Skip
    };
    let batch = if control & 0x80 == 0 { 7 } else { 1000 };
    let format = AvroFormat::default()
        .with_max_block_bytes(1 << 20)
        .with_max_decompressed_block_bytes(16 << 20);
    let options = DecodeOptions::default()
        .with_batch_size(batch)
        .with_error_policy(policy);
    decode_in_chunks(&format, &options, input, (chunk, batch), true);
}

/// Any bytes, content encoding and key: detection answers or refuses, and decompressing
/// whatever it detected returns data or an error (read at most 1 MiB, whatever the ratio).
pub fn compression_detect(data: &[u8]) {
    use s3conn_formats::compression::{decompress, detect};
    use tokio::io::AsyncReadExt;

    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let encodings = [
        None,
        Some("gzip"),
        Some("deflate"),
        Some("zstd"),
        Some("br"),
    ];
    let keys = [
        None,
        Some("a.gz"),
        Some("a.zz"),
        Some("a.jsonl.zst"),
        Some("a.csv"),
    ];
    let encoding = encodings[usize::from(control) % encodings.len()];
    let key = keys[usize::from(control / 8) % keys.len()];
    let Ok(codec) = detect(input, encoding, key) else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    runtime.block_on(async {
        let mut reader = decompress(codec, std::io::Cursor::new(input.to_vec())).take(1 << 20);
        let mut out = Vec::new();
        let _ = reader.read_to_end(&mut out).await;
    });
}

/// The rows `plugin` decodes from `input` fed in pieces of `chunk` bytes, or the line of
/// its error.
fn csv_run(
    plugin: &dyn s3conn_formats::FormatPlugin,
    options: &s3conn_formats::DecodeOptions,
    input: &[u8],
    chunk: usize,
) -> Result<usize, Option<u64>> {
    use s3conn_formats::{DecodeInput, Decoder};
    let Ok(Decoder::Stream(mut decoder)) = plugin.decoder(&DecodeInput::default(), options) else {
        return Err(None);
    };
    let mut rows = 0;
    for piece in input.chunks(chunk) {
        decoder.decode(piece).map_err(|e| e.line())?;
        while let Some(batch) = decoder.next_batch() {
            assert!(batch.num_rows() <= 7);
            rows += batch.num_rows();
        }
    }
    decoder.finish().map_err(|e| e.line())?;
    while let Some(batch) = decoder.next_batch() {
        assert!(batch.num_rows() <= 7);
        rows += batch.num_rows();
    }
    Ok(rows)
}

/// Any bytes, under any separator (one byte or several), header, error policy and
/// chunking: the CSV decoder returns batches or an error, never panics, never yields a
/// batch larger than asked, and gives the same rows (or the same error line) whether the
/// file comes in one piece or in chunks.
pub fn csv_decode(data: &[u8]) {
    use s3conn_formats::csv::CsvFormat;
    use s3conn_formats::{ErrorPolicy, FormatPlugin};

    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let Some((&more, input)) = rest.split_first() else {
        return;
    };
    let separators = [",", "\t", "||", "::", "¦", ";"];
    let mut plugin: std::sync::Arc<dyn FormatPlugin> = std::sync::Arc::new(CsvFormat::csv());
    let settings = [
        (
            "delimiter",
            separators[usize::from(control & 0x07) % separators.len()],
        ),
        ("header", if control & 0x08 == 0 { "true" } else { "false" }),
        (
            "ragged_rows",
            if control & 0x10 == 0 {
                "error"
            } else {
                "lenient"
            },
        ),
        ("escape", if more & 0x01 == 0 { "none" } else { "\\\\" }),
        ("comment", if more & 0x02 == 0 { "none" } else { "#" }),
        ("skip_rows", if more & 0x04 == 0 { "0" } else { "2" }),
    ];
    for (key, value) in settings {
        let Ok(next) = plugin.with_option(key, value) else {
            return;
        };
        plugin = next;
    }
    let options = small_batches(match (control >> 5) & 0x03 {
        0 => ErrorPolicy::Fail,
        1 => ErrorPolicy::Skip,
        _ => ErrorPolicy::Rescue,
    });
    let chunk = usize::from(more >> 3) + 1;
    let whole = csv_run(plugin.as_ref(), &options, input, input.len().max(1));
    let pieces = csv_run(plugin.as_ref(), &options, input, chunk);
    match (&whole, &pieces) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a, b),
        // A record longer than the line limit can be caught earlier or later.
        _ => {}
    }
}

/// Any bytes, fed in any chunking, under any error policy, with nested values typed or
/// kept as text: the JSON decoder (arrays and NDJSON) returns batches or an error, never
/// panics, and never yields a batch larger than asked.
pub fn json_decode(data: &[u8]) {
    use s3conn_formats::ErrorPolicy;
    use s3conn_formats::json::JsonFormat;

    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(control & 0x1f) + 1;
    let options = small_batches(match (control >> 5) & 0x03 {
        0 => ErrorPolicy::Fail,
        1 => ErrorPolicy::Skip,
        _ => ErrorPolicy::Rescue,
    })
    .with_nested_as_json(control & 0x80 != 0);
    decode_in_chunks(&JsonFormat, &options, input, (chunk, 7), false);
}

/// Any bytes as a manifest: parsing answers or errors; a parsed manifest replays into a
/// delivery log and serializes back to a manifest that parses to the same value.
pub fn manifest_parse(data: &[u8]) {
    use s3conn_layout::{DeliveryLog, Manifest};

    let Ok(manifest) = Manifest::from_json(data) else {
        return;
    };
    let mut log = DeliveryLog::default();
    let _ = log.apply(&manifest);
    let json = manifest.to_json().expect("a parsed manifest serializes");
    let back = Manifest::from_json(&json).expect("a serialized manifest parses");
    assert_eq!(back, manifest);
}

/// Any bytes, fed in any chunking, under either error policy: the NDJSON decoder returns
/// batches or an error, never panics, and never yields a batch larger than asked.
pub fn ndjson_decode(data: &[u8]) {
    use s3conn_formats::ErrorPolicy;
    use s3conn_formats::ndjson::NdjsonFormat;

    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(control & 0x3f) + 1;
    let policy = if control & 0x40 == 0 {
        ErrorPolicy::Fail
    } else {
        ErrorPolicy::Skip
    };
    let options = small_batches(policy);
    decode_in_chunks(&NdjsonFormat, &options, input, (chunk, 7), false);
}

/// Any bytes as a Parquet file: the ranged decoder asks only for ranges inside the file and
/// returns batches or an error; a panic inside the parquet crate must become an error.
///
/// libfuzzer-sys aborts on every panic, even one the plugin catches by design. This target
/// installs a hook that does not abort, so only a panic that escapes s3conn's API (and
/// reaches libfuzzer-sys's own `catch_unwind`) counts as a crash.
pub fn parquet_decode(data: &[u8]) {
    use s3conn_formats::parquet::ParquetFormat;
    use s3conn_formats::{DecodeInput, DecodeOptions, Decoder, FormatPlugin, RangedStep};

    let file = bytes::Bytes::copy_from_slice(data);
    let size = file.len() as u64;
    let Ok(Decoder::Ranged(mut decoder)) = ParquetFormat::default().decoder(
        &DecodeInput::with_size(size),
        &DecodeOptions::default().with_batch_size(64),
    ) else {
        return;
    };
    for _ in 0..10_000 {
        match decoder.try_decode() {
            Ok(RangedStep::NeedsData(ranges)) => {
                let mut parts = Vec::with_capacity(ranges.len());
                for r in &ranges {
                    assert!(
                        r.start <= r.end && r.end <= size,
                        "range {r:?} outside the file"
                    );
                    parts.push(file.slice(r.start as usize..r.end as usize));
                }
                if decoder.push_ranges(ranges, parts).is_err() {
                    return;
                }
            }
            Ok(RangedStep::Batch(_)) => {}
            Ok(RangedStep::Finished) | Err(_) => return,
        }
    }
}

/// Any text as a path template, under any options: parsing answers or reports a position
/// inside the text; rendering gives a valid key or an error; a rendered key can be read back
/// by the template's matcher without a panic.
pub fn template_parse(data: &[u8]) {
    use chrono::TimeZone;
    use s3conn_layout::Error;
    use s3conn_layout::template::{Clock, RenderContext, Template, TemplateOptions};

    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let clock = match control % 3 {
        0 => Clock::Sync,
        1 => Clock::Record,
        _ => Clock::File,
    };
    let mut options = TemplateOptions::default()
        .with_hive(control & 0x04 != 0)
        .with_clock(clock)
        .with_static("tenant", "a/b=c#")
        .with_column("country");
    if control & 0x08 != 0 {
        options = options.with_time_column("ts");
    }
    if control & 0x10 != 0 {
        let Ok(o) = options.with_time_zone("Europe/Paris") else {
            return;
        };
        options = o;
    }
    match Template::parse_with(text, &options) {
        Ok(template) => {
            let Some(time) = chrono::Utc.timestamp_millis_opt(1_732_665_600_042).single() else {
                return;
            };
            let mut ctx = RenderContext::new("stream", time)
                .with_part_number(7)
                .with_record_time(time)
                .with_value("country", "F R")
                .with_format_extension(".parquet");
            if control & 0x20 != 0 {
                ctx = ctx.with_namespace("ns");
            }
            if let Ok(key) = template.render(&ctx) {
                assert!(!key.is_empty() && key.len() <= 1024);
                assert!(!key.starts_with('/') && !key.contains("//"));
                assert!(!key.split('/').any(|s| s == ".." || s == "."));
                if let Ok(matcher) = template.matcher() {
                    let columns = matcher.partition_columns();
                    if let Some(parsed) = matcher.parse(&key) {
                        // Every Hive-style folder the template declares is read back, once.
                        let read: Vec<&str> = parsed
                            .partitions()
                            .iter()
                            .map(|(c, _)| c.as_str())
                            .collect();
                        assert_eq!(read, columns);
                        let _ = (parsed.date(), parsed.time());
                    }
                    let _ = template.prefixes(&ctx, time, time + chrono::TimeDelta::days(3));
                }
            }
        }
        Err(Error::TemplateParse { position, .. }) => assert!(position <= text.len()),
        Err(_) => {}
    }
}
