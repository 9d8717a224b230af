//! `peak_memory` runs end to end on a small generated input for every stream format that is
//! registered and has a generator, plain and gzip, and prints its figures; a format that is
//! not registered yet is a clear error. The 1 GB runs are documented in BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::process::Command;

use s3conn_benches::RowFormat;
use s3conn_formats::Registry;
use serde_json::Value;

fn peak_memory(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_peak_memory"))
        .args(args)
        .output()
        .unwrap()
}

fn measure(args: &[&str]) -> Value {
    let out = peak_memory(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "peak_memory {args:?}: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines = stdout.lines();
    let line = lines.next().unwrap();
    assert!(lines.next().is_none(), "one JSON line: {stdout}");
    eprintln!("peak_memory {}: {line}", args.join(" "));
    serde_json::from_str(line).unwrap()
}

#[test]
fn every_registered_stream_format_is_measured_on_20_mb() {
    let registry = Registry::default();
    let mut measured = 0;
    for name in RowFormat::NAMES {
        let registered = registry.get(name).is_ok_and(|p| p.name() == name);
        if !registered {
            let out = peak_memory(&[name, "1MB"]);
            assert_eq!(out.status.code(), Some(2), "{name}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains(&format!("no format plugin for `{name}`")),
                "{stderr}"
            );
            continue;
        }
        for codec in ["none", "gzip"] {
            let v = measure(&[name, "20MB", codec, "--batch-size", "4096"]);
            assert_eq!(v["format"], name);
            assert_eq!(v["codec"], codec);
            let rows = v["rows"].as_u64().unwrap();
            assert!(rows > 50_000, "{v}");
            assert_eq!(
                v["generated_rows"].as_u64(),
                Some(rows),
                "every row decoded"
            );
            assert!(v["batches"].as_u64().unwrap() >= rows / 4096);
            let input = v["input_bytes"].as_u64().unwrap();
            let compressed = v["compressed_bytes"].as_u64().unwrap();
            assert!(input >= 20_000_000, "{v}");
            if codec == "gzip" {
                assert!(compressed < input / 3, "{v}");
            } else {
                assert_eq!(compressed, input);
            }
            if cfg!(target_os = "linux") {
                let baseline = v["baseline_rss_mb"].as_f64().unwrap();
                let peak = v["peak_rss_mb"].as_f64().unwrap();
                assert!(baseline > 0.0 && peak >= baseline, "{v}");
            }
            measured += 1;
        }
    }
    assert!(measured >= 2, "NDJSON at least");
}

#[test]
fn a_ranged_format_or_a_bad_command_line_is_refused() {
    let out = peak_memory(&["parquet", "1MB"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no generator for the `parquet` format"));
    let out = peak_memory(&["ndjson", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SIZE `lots`"));
    let out = peak_memory(&["ndjson", "1MB", "lzo"]);
    assert_eq!(out.status.code(), Some(2));
}
