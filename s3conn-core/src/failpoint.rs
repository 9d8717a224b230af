//! Named points in the commit protocol where a test can stop the process, to kill it there
//! with SIGKILL (feature `failpoints`; without it every point compiles to nothing).
//!
//! A test harness runs a host process with
//!
//! - `S3CONN_FAILPOINT=name` (or `name@N`, the N-th time the point is reached, from 1): at
//!   that point the process prints `s3conn-failpoint: name #N` on stderr and stops there
//!   (the thread sleeps; the rest of the process goes on) until the harness kills it;
//!   with `name@N:stop` it sends itself SIGSTOP instead (the whole process pauses, as a
//!   process does when its machine stalls) and goes on when it gets SIGCONT;
//! - `S3CONN_FAILPOINT_TRACE=1`: every point reached is printed as
//!   `s3conn-failpoint-pass: name #N`, so a harness learns how often each is reached.
//!
//! The points, in protocol order: `lease.acquired`, `sink.cleanup.step`,
//! `sink.journal.after_write`, `sink.file.before_put`, `sink.file.after_put`,
//! `sink.upload.started` (the store made the upload; its id is not recorded yet),
//! `sink.upload.after_start`, `sink.upload.after_part`, `sink.upload.before_complete`,
//! `sink.upload.after_complete`, `pipeline.before_commit`, `sink.commit.before_manifest`,
//! `sink.commit.after_manifest`, `sink.retire.step`, `pipeline.after_commit`,
//! `pipeline.after_state_save`.

/// Every point's name, in protocol order.
pub const POINTS: &[&str] = &[
    "lease.acquired",
    "sink.cleanup.step",
    "sink.journal.after_write",
    "sink.file.before_put",
    "sink.file.after_put",
    "sink.upload.started",
    "sink.upload.after_start",
    "sink.upload.after_part",
    "sink.upload.before_complete",
    "sink.upload.after_complete",
    "pipeline.before_commit",
    "sink.commit.before_manifest",
    "sink.commit.after_manifest",
    "sink.retire.step",
    "pipeline.after_commit",
    "pipeline.after_state_save",
];

#[cfg(feature = "failpoints")]
mod enabled {
    #![allow(clippy::print_stderr)]

    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    struct Config {
        stop: Option<(String, u64, bool)>,
        trace: bool,
        counts: Mutex<HashMap<&'static str, u64>>,
    }

    fn config() -> &'static Config {
        static CONFIG: OnceLock<Config> = OnceLock::new();
        CONFIG.get_or_init(|| {
            let stop = std::env::var("S3CONN_FAILPOINT").ok().and_then(|spec| {
                let spec = spec.trim();
                if spec.is_empty() {
                    return None;
                }
                let (spec, pause) = match spec.strip_suffix(":stop") {
                    Some(spec) => (spec, true),
                    None => (spec, false),
                };
                Some(match spec.split_once('@') {
                    Some((name, n)) => (name.to_owned(), n.parse().unwrap_or(1), pause),
                    None => (spec.to_owned(), 1, pause),
                })
            });
            Config {
                stop,
                trace: std::env::var("S3CONN_FAILPOINT_TRACE").is_ok_and(|v| v == "1"),
                counts: Mutex::new(HashMap::new()),
            }
        })
    }

    pub(crate) fn hit(name: &'static str) {
        let config = config();
        if config.stop.is_none() && !config.trace {
            return;
        }
        let n = match config.counts.lock() {
            Ok(mut counts) => {
                let n = counts.entry(name).or_insert(0);
                *n += 1;
                *n
            }
            Err(_) => return,
        };
        if config.trace {
            eprintln!("s3conn-failpoint-pass: {name} #{n}");
        }
        if let Some((stop, at, pause)) = &config.stop
            && stop == name
            && *at == n
        {
            eprintln!("s3conn-failpoint: {name} #{n}");
            if *pause {
                // The whole process stops until SIGCONT (no unsafe code: `kill` does it).
                let _ = std::process::Command::new("kill")
                    .arg("-STOP")
                    .arg(std::process::id().to_string())
                    .status();
                return;
            }
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }
}

/// Reach the point `name`.
#[cfg(feature = "failpoints")]
pub(crate) fn hit(name: &'static str) {
    enabled::hit(name);
}

/// Reach the point `name` (nothing happens without the `failpoints` feature).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn hit(name: &'static str) {
    let _ = name;
}
