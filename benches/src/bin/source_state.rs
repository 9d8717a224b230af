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

use s3conn_benches::discovery::{ReadFigures, measure, peak_resident_bytes, poll};
use s3conn_core::SourceState;

const USAGE: &str = "usage: source_state [OBJECTS] [DAYS]   (default 1000000 100)";

/// `source_state --poll OBJECTS DAYS ORDERED STATE_FILE`: the incremental read alone, in
/// this process; prints `rows lists gets state_bytes peak_rss_bytes`.
fn poll_alone(runtime: &tokio::runtime::Runtime, args: &[String]) -> Result<String, String> {
    let [objects, days, ordered, file] = args else {
        return Err("--poll takes OBJECTS DAYS ORDERED STATE_FILE".into());
    };
    let objects: u64 = objects.parse().map_err(|e| format!("OBJECTS: {e}"))?;
    let days: i64 = days.parse().map_err(|e| format!("DAYS: {e}"))?;
    let ordered: bool = ordered.parse().map_err(|e| format!("ORDERED: {e}"))?;
    let text = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
    let state = SourceState(serde_json::from_slice(&text).map_err(|e| format!("{file}: {e}"))?);
    drop(text);
    let r = runtime
        .block_on(poll(objects, days, 100, ordered, state))
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "{} {} {} {} {}",
        r.rows,
        r.lists,
        r.gets,
        r.state_bytes,
        peak_resident_bytes()
    ))
}

/// Run the incremental read of `state` in a child process; its figures and peak RSS.
fn poll_in_child(
    objects: u64,
    days: u64,
    ordered: bool,
    state: &SourceState,
) -> Result<(u64, u64, u64), String> {
    let file = std::env::temp_dir().join(format!(
        "s3conn-source-state-{}-{ordered}.json",
        std::process::id()
    ));
    std::fs::write(
        &file,
        serde_json::to_vec(&state.0).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(me)
        .arg("--poll")
        .arg(objects.to_string())
        .arg(days.to_string())
        .arg(ordered.to_string())
        .arg(&file)
        .output()
        .map_err(|e| e.to_string());
    let _ = std::fs::remove_file(&file);
    let out = out?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let numbers: Vec<u64> = text
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    match numbers.as_slice() {
        [rows, lists, _gets, _bytes, rss] => Ok((*rows, *lists, *rss)),
        _ => Err(format!("the poll printed `{text}`")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
    if args.first().map(String::as_str) == Some("--poll") {
        return match poll_alone(&runtime, args.get(1..).unwrap_or_default()) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
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
        "peak resident set of this process (backfills of every object, both runs): {:.0} MiB",
        peak_resident_bytes() as f64 / (1 << 20) as f64
    );
    for (ordered, f) in &runs {
        let keys = if *ordered { "ordered" } else { "any order" };
        match poll_in_child(objects, days, *ordered, &f.backfill_state) {
            Ok((rows, lists, rss)) => println!(
                "incremental poll alone ({keys}, from the backfill's state, in its own process): {rows} rows, {lists} LIST, peak resident set {:.0} MiB",
                rss as f64 / (1 << 20) as f64
            ),
            Err(e) => {
                eprintln!("error: the poll in its own process failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
