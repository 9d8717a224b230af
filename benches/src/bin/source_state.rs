//! `source_state [OBJECTS] [DAYS]`: the S3 source's state and discovery cost for a stream of
//! OBJECTS objects (default 1,000,000) last modified over DAYS days (default 100).
//!
//! One read takes the whole backfill; then 100 objects appear and an incremental read runs
//! from the state the first one left; once with the keys in any order, once declared ordered
//! (`S3StreamConfig::with_keys_ordered`). It prints, for both: rows read, the state's size (what
//! a sync saves), the objects its frontier keeps, LIST and GET requests, time; then what the
//! earlier state (every key and ETag ever read) would weigh for the same stream, and the
//! process's peak resident set. See
//! [`s3conn_benches::discovery`].
//!
//! `cargo run -p s3conn-benches --release --bin source_state` (see BENCHMARKS.md).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use s3conn_benches::discovery::{ReadFigures, measure, peak_resident_bytes};

const USAGE: &str = "usage: source_state [OBJECTS] [DAYS]   (default 1000000 100)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: u64| -> Option<u64> {
        match args.get(i) {
            None => Some(default),
            Some(a) => a.parse().ok().filter(|n| *n > 0),
        }
    };
    let (Some(objects), Some(days)) = (number(0, 1_000_000), number(1, 100)) else {
        eprintln!("error: arguments must be positive numbers\n{USAGE}");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut runs = Vec::new();
    for ordered in [false, true] {
        match runtime.block_on(measure(objects, days as i64, 100, ordered)) {
            Ok(f) => runs.push((ordered, f)),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let mb = |b: u64| b as f64 / 1e6;
    println!("stream of {objects} objects over {days} days; settle lag 5 min, late window 1 day\n");
    println!("| keys | read | rows | state saved | frontier objects | LIST | GET | time |");
    println!("|---|---|---|---|---|---|---|---|");
    let row = |keys: &str, name: &str, r: &ReadFigures| {
        println!(
            "| {keys} | {name} | {} | {:.3} MB | {} | {} | {} | {:.1} s |",
            r.rows,
            mb(r.state_bytes as u64),
            r.frontier,
            r.lists,
            r.gets,
            r.took.as_secs_f64()
        );
    };
    for (ordered, f) in &runs {
        let keys = if *ordered { "ordered" } else { "any order" };
        row(keys, "backfill", &f.backfill);
        row(
            keys,
            &format!("incremental, {} new", f.added),
            &f.incremental,
        );
    }
    println!();
    if let Some((_, f)) = runs.first() {
        println!(
            "the earlier state (every key and ETag read) for the same stream: {:.1} MB ({:.0}x)",
            mb(f.whole_history_bytes as u64),
            f.whole_history_bytes as f64 / f.incremental.state_bytes.max(1) as f64
        );
    }
    println!(
        "process peak resident set: {:.0} MiB (the whole listing is held before reading)",
        peak_resident_bytes() as f64 / (1 << 20) as f64
    );
    ExitCode::SUCCESS
}
