//! `protocol_cost [N…]`: the requests and bytes of the S3 sink's protocol overhead per
//! committed file, for syncs that commit N files each (default 10, 100 and 1000).
//!
//! Each N is one sync of a `Pipeline` from a `MemorySource` into an `S3Sink` on a fresh
//! in-process loopback S3 server, with a target file size of one byte so that every batch
//! of ten events becomes its own NDJSON file. The sink's object store is wrapped in
//! [`CountingStore`](s3conn_benches::protocol::CountingStore), which counts every call and
//! its payload bytes by what the key is for: the data files, the journal (`_s3conn/`), the
//! manifests (`manifests/`) and the sync reports (`sync_reports/`); see
//! [`s3conn_benches::protocol`]. Everything but the requests that create the data files is
//! overhead.
//!
//! It prints two markdown tables: the totals and per-file figures for every N, then every
//! kind and operation for every N. Requests are counted, not timed: the figures are the
//! same on every run.
//!
//! `cargo run -p s3conn-benches --release --bin protocol_cost` (see BENCHMARKS.md).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use s3conn_benches::protocol::{Kind, Measurement, Op, measure_blocking};

const USAGE: &str = "usage: protocol_cost [N…]   (files per sync; default 10 100 1000)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut sizes = Vec::new();
    for arg in &args {
        match arg.parse::<usize>() {
            Ok(n) if n > 0 => sizes.push(n),
            _ => {
                eprintln!("error: `{arg}` is not a number of files\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    if sizes.is_empty() {
        sizes = vec![10, 100, 1000];
    }
    let mut runs = Vec::new();
    for n in sizes {
        match measure_blocking(n) {
            Ok(m) => runs.push(m),
            Err(e) => {
                eprintln!("error: {n} files: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    print!("{}", summary(&runs));
    println!();
    print!("{}", breakdown(&runs));
    ExitCode::SUCCESS
}

fn summary(runs: &[Measurement]) -> String {
    let mut out = String::from(
        "| files | data requests | overhead requests (journal + manifest + report + other) | of which listing | overhead bytes | overhead requests / file | overhead bytes / file | HTTP requests sent (all) | report `requests` / `retries` | journal objects left |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for m in runs {
        let overhead = m.overhead();
        out.push_str(&format!(
            "| {} | {} | {} ({} + {} + {} + {}) | {} | {} | {:.2} | {:.1} | {} | {} / {} | {} |\n",
            m.files,
            m.data().requests,
            overhead.requests,
            m.of(Kind::Journal).requests,
            m.of(Kind::Manifest).requests,
            m.of(Kind::Report).requests,
            m.of(Kind::Data).requests + m.of(Kind::Other).requests,
            m.listing().requests,
            overhead.bytes,
            m.overhead_requests_per_file(),
            m.overhead_bytes_per_file(),
            m.http_requests,
            m.report_requests,
            m.report_retries,
            m.journal_left,
        ));
    }
    out
}

fn breakdown(runs: &[Measurement]) -> String {
    let mut out = String::from("| kind | operation |");
    for m in runs {
        out.push_str(&format!(" N={} requests (bytes) |", m.files));
    }
    out.push_str("\n|---|---|");
    for _ in runs {
        out.push_str("---:|");
    }
    out.push('\n');
    for kind in Kind::ALL {
        for op in Op::ALL {
            if runs.iter().all(|m| m.counts.get(kind, op).requests == 0) {
                continue;
            }
            out.push_str(&format!("| {} | {} |", kind.name(), op.name()));
            for m in runs {
                let t = m.counts.get(kind, op);
                out.push_str(&format!(" {} ({}) |", t.requests, t.bytes));
            }
            out.push('\n');
        }
    }
    out
}
