//! The round-trip matrix: every format × every codec × a dataset with nulls, unicode,
//! nested values, zoned and naive timestamps, decimals, long strings, and empty and
//! header-only files.
//!
//! - pyarrow writes the truth table (`roundtrip/generate.py`), and the same data in every
//!   format and codec with independent writers (pyarrow, fastavro, the standard library);
//! - s3conn reads the truth, writes it in every format and codec, and reads every file the
//!   independent writers made (re-written as Parquet so that they can be compared);
//! - pyarrow, fastavro and duckdb read everything s3conn wrote, and everything is compared
//!   with the truth value by value (`roundtrip/check.py`, `roundtrip/common.py`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use s3conn_formats::compression::{self, Compression, MAGIC_LEN};
use s3conn_formats::{
    DecodeInput, DecodeOptions, Decoder, EncodeOptions, FormatPlugin, RangedStep, RecordBatch,
    Registry, SchemaRef, file_extension,
};
use serde_json::json;
use tokio::io::AsyncReadExt;

const COMMON: &str = include_str!("roundtrip/common.py");
const GENERATE: &str = include_str!("roundtrip/generate.py");
const CHECK: &str = include_str!("roundtrip/check.py");

const ROWS: usize = 500;

/// Every format s3conn writes, with every codec it offers for it.
fn matrix(registry: &Registry) -> Vec<(&'static str, Vec<&'static str>)> {
    let text = vec!["none", "gzip", "zstd", "bzip2", "xz", "deflate"];
    let mut out = vec![
        ("csv", text.clone()),
        ("tsv", vec!["none", "gzip"]),
        ("ndjson", text.clone()),
        ("json", text),
        (
            "parquet",
            vec!["uncompressed", "snappy", "gzip", "lz4", "zstd", "brotli"],
        ),
    ];
    if registry.get("avro").is_ok() {
        out.push((
            "avro",
            vec!["null", "deflate", "bzip2", "xz", "zstandard", "snappy"],
        ));
    }
    out
}

/// Read a whole local file through a plugin, decompressing what its content says.
async fn read_file(registry: &Registry, path: &Path) -> (Vec<RecordBatch>, Option<SchemaRef>) {
    let name = path.to_str().unwrap();
    let plugin = registry
        .for_path(name)
        .unwrap_or_else(|| panic!("no plugin for {name}"))
        .plugin;
    let bytes = std::fs::read(path).unwrap();
    let input = DecodeInput::with_size(bytes.len() as u64);
    let options = DecodeOptions::default().with_batch_size(97);
    let mut batches = Vec::new();
    match plugin.decoder(&input, &options).unwrap() {
        Decoder::Stream(mut decoder) => {
            let head = bytes.get(..MAGIC_LEN.min(bytes.len())).unwrap();
            let codec = if plugin.is_self_compressing() {
                Compression::None
            } else {
                compression::detect(head, None, Some(name)).unwrap()
            };
            let mut reader = compression::decompress(codec, std::io::Cursor::new(bytes));
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = reader.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                decoder
                    .decode(&buf[..n])
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                while let Some(b) = decoder.next_batch() {
                    batches.push(b);
                }
            }
            decoder.finish().unwrap_or_else(|e| panic!("{name}: {e}"));
            while let Some(b) = decoder.next_batch() {
                batches.push(b);
            }
            let schema = decoder.schema();
            (batches, schema)
        }
        Decoder::Ranged(mut decoder) => loop {
            match decoder
                .try_decode()
                .unwrap_or_else(|e| panic!("{name}: {e}"))
            {
                RangedStep::NeedsData(ranges) => {
                    let data = ranges
                        .iter()
                        .map(|r| Bytes::copy_from_slice(&bytes[r.start as usize..r.end as usize]))
                        .collect();
                    decoder.push_ranges(ranges, data).unwrap();
                }
                RangedStep::Batch(b) => batches.push(b),
                RangedStep::Finished => {
                    let schema = batches.first().map(RecordBatch::schema);
                    break (batches, schema);
                }
            }
        },
    }
}

/// Write `batches` (of `schema`) to `path` with a plugin.
fn write_file(
    plugin: &dyn FormatPlugin,
    options: &EncodeOptions,
    schema: SchemaRef,
    batches: &[RecordBatch],
    path: &Path,
) {
    let mut encoder = s3conn_formats::shape::encoder(plugin, schema, options).unwrap();
    let mut out = Vec::new();
    for b in batches {
        encoder.write(b).unwrap();
        out.extend_from_slice(&encoder.take_output());
    }
    out.extend_from_slice(&encoder.finish().unwrap());
    assert_eq!(
        encoder.bytes_written(),
        out.len() as u64,
        "{}",
        path.display()
    );
    std::fs::write(path, out).unwrap();
}

fn python_dir(dir: &Path) -> PathBuf {
    let scripts = dir.join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::write(scripts.join("common.py"), COMMON).unwrap();
    std::fs::write(scripts.join("generate.py"), GENERATE).unwrap();
    std::fs::write(scripts.join("check.py"), CHECK).unwrap();
    scripts
}

fn run_script(script: &Path, args: &[&str]) -> serde_json::Value {
    let code = format!(
        "import runpy, sys; sys.argv = [{:?}] + sys.argv[1:]; runpy.run_path({:?}, run_name='__main__')",
        script.to_str().unwrap(),
        script.to_str().unwrap()
    );
    let out = s3conn_testkit::run_python(&code, args);
    serde_json::from_str(out.lines().last().unwrap_or_default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_and_codec_round_trips_through_independent_readers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let scripts = python_dir(dir);
    let generated = run_script(
        &scripts.join("generate.py"),
        &[dir.to_str().unwrap(), &ROWS.to_string()],
    );
    assert_eq!(generated["truth_rows"], ROWS);

    let registry = Registry::default();
    let (truth, schema) = read_file(&registry, &dir.join("truth.parquet")).await;
    let schema = schema.unwrap();
    assert_eq!(truth.iter().map(RecordBatch::num_rows).sum::<usize>(), ROWS);

    // s3conn writes the truth in every format and codec, and an empty file of each.
    let ours = dir.join("ours");
    std::fs::create_dir_all(&ours).unwrap();
    let mut written = Vec::new();
    for (format, codecs) in matrix(&registry) {
        let plugin = registry.get(format).unwrap();
        for codec in codecs {
            let options = EncodeOptions::default().with_codec(codec);
            plugin.check_encode_options(&options).unwrap();
            let name = format!(
                "{format}-{codec}{}",
                file_extension(plugin.as_ref(), &options)
            );
            let path = ours.join(&name);
            write_file(
                plugin.as_ref(),
                &options,
                Arc::clone(&schema),
                &truth,
                &path,
            );
            written.push(json!({"path": path, "format": format, "codec": codec, "rows": ROWS}));
        }
        let options = EncodeOptions::default();
        let path = ours.join(format!(
            "{format}-empty{}",
            file_extension(plugin.as_ref(), &options)
        ));
        write_file(plugin.as_ref(), &options, Arc::clone(&schema), &[], &path);
        written.push(json!({"path": path, "format": format, "codec": "empty", "rows": 0}));
    }
    std::fs::write(dir.join("ours.json"), serde_json::to_vec(&written).unwrap()).unwrap();

    // s3conn reads every file the independent writers made.
    let tools: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.join("tools.json")).unwrap()).unwrap();
    let read_dir = dir.join("read");
    std::fs::create_dir_all(&read_dir).unwrap();
    let parquet = registry.get("parquet").unwrap();
    let mut read = Vec::new();
    let mut formats_read = std::collections::BTreeSet::new();
    for entry in &tools {
        let path = PathBuf::from(entry["path"].as_str().unwrap());
        let format = entry["format"].as_str().unwrap();
        if registry.get(format).is_err() {
            continue;
        }
        let (batches, schema) = read_file(&registry, &path).await;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let expected = entry["rows"].as_u64().unwrap() as usize;
        assert_eq!(rows, expected, "{}", path.display());
        formats_read.insert(format.to_owned());
        if rows == 0 {
            if entry["codec"] == "header-only" {
                assert_eq!(
                    schema.map(|s| s.fields().len()),
                    Some(11),
                    "a header-only file still names its columns"
                );
            }
            continue;
        }
        let schema = batches[0].schema();
        let out = read_dir.join(format!(
            "{}.parquet",
            path.file_name().unwrap().to_str().unwrap()
        ));
        write_file(
            parquet.as_ref(),
            &EncodeOptions::default(),
            schema,
            &batches,
            &out,
        );
        read.push(json!({"path": out, "format": "parquet", "codec": entry["codec"], "rows": rows}));
    }
    std::fs::write(dir.join("read.json"), serde_json::to_vec(&read).unwrap()).unwrap();

    // The independent readers compare everything with the truth.
    let summary = run_script(&scripts.join("check.py"), &[dir.to_str().unwrap()]);
    let problems = summary["problems"].as_array().unwrap();
    assert!(
        problems.is_empty(),
        "{} mismatches:\n{}",
        problems.len(),
        problems
            .iter()
            .map(|p| p.as_str().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let checked = &summary["checked"];
    for (format, codecs) in matrix(&registry) {
        assert_eq!(
            checked[format!("written by s3conn:{format}")],
            codecs.len() + 1,
            "{format}: every codec and the empty file were read back"
        );
    }
    let expected_reads = tools
        .iter()
        .filter(|e| {
            e["rows"].as_u64() != Some(0) && registry.get(e["format"].as_str().unwrap()).is_ok()
        })
        .count();
    assert_eq!(checked["read by s3conn:parquet"], expected_reads);
    for format in ["csv", "json", "ndjson", "parquet"] {
        assert!(formats_read.contains(format), "{format} files were read");
    }
}
