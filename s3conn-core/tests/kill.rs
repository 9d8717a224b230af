//! Committed data is never lost: the reference host, killed with SIGKILL at every named
//! step of the commit protocol and at random moments, on a local folder and on the loopback
//! S3 server, in incremental and full-refresh syncs, first and later deliveries, with keys
//! that two attempts can share (`part-{part_number}`) and keys that carry the sync id.
//!
//! After every kill, the state must not name an object whose rows are not all committed;
//! after the next successful run, every source row is in the committed view exactly once,
//! every listed file exists with the ETag and size its manifest recorded, nothing else is
//! left in the bucket (no orphan, no staging file, no journal) and no upload is open.
//!
//! `S3CONN_KILL_SEEDS=N` runs N random seeds instead of 50 (the long mode).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    clippy::indexing_slicing
)]

mod host;

use std::sync::Arc;
use std::time::Duration;

use host::{Case, Output, Rng, Scenario, Target};
use s3conn_core::failpoint::POINTS;

/// Run a blocking step (a host process) without stalling the runtime that serves the
/// loopback S3 server.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn case(target: Target, output: Output, full_refresh: bool, unique_keys: bool) -> Case {
    let (objects, rows) = match output {
        Output::ParquetByDate => (3, 400),
        // Four objects of 500 long rows: about 8 MB, a 7 MiB file (multipart, two 5 MiB
        // parts) and a small one.
        Output::NdjsonMultipart => (4, 500),
    };
    Case {
        target,
        output,
        full_refresh,
        unique_keys,
        first_objects: objects,
        // A full refresh rewrites everything each time: one new object keeps the runs short.
        later_objects: if full_refresh { 1 } else { objects },
        rows,
        // Incremental Parquet syncs commit every two objects: kills land in a chunk after
        // another chunk of the same run committed. (Multipart files need whole syncs.)
        chunk_objects: if output == Output::ParquetByDate && !full_refresh {
            2
        } else {
            0
        },
    }
}

/// The points worth killing at in `case`, and at which passes.
fn plan(case: &Case) -> Vec<(&'static str, u64)> {
    let mut steps = Vec::new();
    for &point in POINTS {
        let applies = match point {
            // Killed after S3 made an upload and before its id is recorded, the next run
            // finds it with ListMultipartUploads, which s3s-fs does not implement: this
            // step runs on moto (below).
            "sink.upload.started" => {
                case.output == Output::NdjsonMultipart && case.target != Target::S3
            }
            p if p.starts_with("sink.upload.") => case.output == Output::NdjsonMultipart,
            _ if case.target == Target::Moto => false,
            "sink.retire.step" => case.full_refresh,
            // Reached only after a crash: covered by the clean-up chain below.
            "sink.cleanup.step" => false,
            _ => true,
        };
        if !applies {
            continue;
        }
        steps.push((point, 1));
        match point {
            "sink.journal.after_write" => steps.extend([(point, 2), (point, 7)]),
            "sink.file.before_put" | "sink.file.after_put" => steps.push((point, 5)),
            "sink.retire.step" => steps.push((point, 4)),
            _ => {}
        }
    }
    steps
}

async fn named_steps(case: Case) {
    named_steps_of(case.clone(), plan(&case)).await;
}

async fn named_steps_of(case: Case, steps: Vec<(&'static str, u64)>) {
    if let Ok(only) = std::env::var("S3CONN_KILL_CASE")
        && !case.name().contains(&only)
    {
        return;
    }
    let mut s = Scenario::new(case.clone()).await;
    let mut reached = 0;
    for (i, (point, n)) in steps.iter().enumerate() {
        // Something new for every sync (the first kill hits the first delivery).
        s.land(if i == 0 {
            case.first_objects
        } else {
            case.later_objects
        })
        .await;
        s.set_step(format!("kill at {point} #{n}"));
        let hit = blocking(|| s.kill_at(point, *n));
        if hit {
            reached += 1;
            s.check_state_not_ahead().await;
        }
        blocking(|| s.run_until_success(3));
        s.check_exact().await;
    }
    // The clean-up and the retirement, killed in their turn: leave orphans, kill the run
    // that cleans them up in the middle, then let a run finish.
    let (orphan_point, n) = match case.output {
        Output::ParquetByDate => ("sink.file.after_put", 2),
        Output::NdjsonMultipart => ("sink.upload.after_complete", 1),
    };
    s.land(case.later_objects).await;
    s.set_step(format!("kill at {orphan_point} #{n}, then at the clean-up"));
    assert!(
        blocking(|| s.kill_at(orphan_point, n)),
        "[{}] {orphan_point} #{n} not reached:\n{}",
        case.name(),
        s.last_stderr()
    );
    let cleanup_hit = blocking(|| s.kill_at("sink.cleanup.step", 1));
    assert!(
        cleanup_hit,
        "[{}] the clean-up was not reached:\n{}",
        case.name(),
        s.last_stderr()
    );
    s.check_state_not_ahead().await;
    blocking(|| s.run_until_success(3));
    s.check_exact().await;
    eprintln!(
        "[{}] killed at {reached} of {} named steps (+ clean-up), {} rows exact",
        case.name(),
        steps.len(),
        s.landed * case.rows
    );
    assert!(
        reached * 10 >= steps.len() * 7,
        "[{}] only {reached} of {} named steps were reached",
        case.name(),
        steps.len()
    );
}

async fn random_seed(seed: u64) {
    let mut rng = Rng::new(seed);
    let target = if rng.below(2) == 0 {
        Target::Local
    } else {
        Target::S3
    };
    let output = if rng.below(4) == 0 {
        Output::NdjsonMultipart
    } else {
        Output::ParquetByDate
    };
    let case = case(target, output, rng.below(3) == 0, rng.below(2) == 0);
    if let Ok(only) = std::env::var("S3CONN_KILL_CASE")
        && !case.name().contains(&only)
    {
        return;
    }
    let mut s = Scenario::new(case.clone()).await;
    s.set_step(format!("seed {seed}"));
    s.land(case.first_objects).await;
    let later = rng.below(3) != 0;
    // A clean run first tells how long a sync takes here.
    let clean = blocking(|| s.run_until_success(2));
    s.check_exact().await;
    if later {
        s.land(case.later_objects).await;
    } else {
        // Start over: the killed sync is the pipeline's first delivery.
        s = Scenario::new(case.clone()).await;
        s.set_step(format!("seed {seed}, first delivery"));
        s.land(case.first_objects).await;
    }
    let span = clean.took.as_millis().max(200) as u64;
    let kills = 1 + rng.below(3);
    for _ in 0..kills {
        let after = Duration::from_millis(rng.below(span));
        if blocking(|| s.kill_after(after)) {
            s.check_state_not_ahead().await;
        }
    }
    blocking(|| s.run_until_success(3));
    s.check_exact().await;
}

fn seeds() -> u64 {
    std::env::var("S3CONN_KILL_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

/// Run `jobs` two at a time, each in its own task.
async fn two_at_a_time<F>(jobs: Vec<F>)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(2));
    let mut handles = Vec::new();
    for job in jobs {
        let permits = Arc::clone(&permits);
        handles.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.unwrap();
            job.await;
        }));
    }
    let mut failures = Vec::new();
    for handle in handles {
        if let Err(e) = handle.await {
            failures.push(e.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{} jobs failed: {failures:?}",
        failures.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn killed_at_every_named_step_on_a_local_folder() {
    two_at_a_time(vec![
        named_steps(case(Target::Local, Output::ParquetByDate, false, false)),
        named_steps(case(Target::Local, Output::ParquetByDate, true, false)),
        named_steps(case(Target::Local, Output::NdjsonMultipart, false, false)),
        named_steps(case(Target::Local, Output::NdjsonMultipart, true, true)),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn killed_at_every_named_step_on_loopback_s3() {
    two_at_a_time(vec![
        named_steps(case(Target::S3, Output::ParquetByDate, false, false)),
        named_steps(case(Target::S3, Output::ParquetByDate, true, true)),
        named_steps(case(Target::S3, Output::NdjsonMultipart, false, false)),
    ])
    .await;
}

/// A backfill of many objects commits in chunks: killed at any chunk's commit, or in the
/// middle of a chunk, it keeps every chunk committed before, and the next run reads only
/// what is not committed: at most one chunk is read twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn a_killed_backfill_redoes_at_most_one_chunk() {
    const CHUNK: u64 = 4;
    // The source reads on while the pipeline commits: a chunk may take an object or two
    // more than asked before the source sees the request for a checkpoint.
    const READ_AHEAD: u64 = 2;
    let case = Case {
        first_objects: 24,
        later_objects: 0,
        rows: 50,
        chunk_objects: CHUNK,
        ..case(Target::Local, Output::ParquetByDate, false, false)
    };
    let kills = [
        ("pipeline.before_commit", 2),
        ("sink.commit.before_manifest", 3),
        ("pipeline.after_commit", 2),
        ("sink.file.after_put", 9),
        ("pipeline.before_commit", 5),
    ];
    for (point, n) in kills {
        let mut s = Scenario::new(case.clone()).await;
        s.land(case.first_objects).await;
        s.set_step(format!("backfill killed at {point} #{n}"));
        assert!(
            blocking(|| s.kill_at(point, n)),
            "[{}] {point} #{n} not reached:\n{}",
            s.label(),
            s.last_stderr()
        );
        s.check_state_not_ahead().await;
        let committed = s.committed_objects().len() as u64;
        let pending = s.pending_objects();
        // Every chunk before the kill is kept: the state moved at each of them.
        let chunks_before = match point {
            "pipeline.before_commit" | "sink.commit.before_manifest" => n - 1,
            "pipeline.after_commit" => n - 1,
            _ => 0,
        };
        assert!(
            committed >= chunks_before * CHUNK,
            "[{}] {committed} objects committed, {chunks_before} chunks of {CHUNK} expected",
            s.label()
        );
        if !pending.is_empty() {
            let at_risk = pending.len() as u64 - committed;
            assert!(
                at_risk <= CHUNK + READ_AHEAD,
                "[{}] the chunk being committed held {at_risk} objects",
                s.label()
            );
        }
        let rerun = blocking(|| s.run_until_success(3));
        s.check_exact().await;
        let report = rerun.report();
        // After a kill past the manifest, the next run promotes the pending checkpoint.
        let promoted = if point == "pipeline.after_commit" {
            pending.len() as u64
        } else {
            committed
        };
        let read_again = report["rows"].as_u64().unwrap() / case.rows;
        assert_eq!(
            read_again,
            case.first_objects - promoted,
            "[{}] the next run read {read_again} objects: {report}",
            s.label()
        );
        let deliveries = report["deliveries"].as_array().map_or(0, Vec::len) as u64;
        assert!(
            deliveries * (CHUNK + READ_AHEAD) >= read_again,
            "[{}] the next run committed {read_again} objects in {deliveries} deliveries",
            s.label()
        );
        eprintln!(
            "[{}] {committed} objects committed before the kill, {read_again} read after it in {deliveries} deliveries",
            s.label()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn killed_at_random_moments() {
    let jobs: Vec<_> = (1..=seeds()).map(random_seed).collect();
    two_at_a_time(jobs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn killed_while_uploading_on_moto() {
    // moto lists open uploads: an upload whose id was never recorded is found and aborted.
    two_at_a_time(vec![named_steps(case(
        Target::Moto,
        Output::NdjsonMultipart,
        false,
        false,
    ))])
    .await;
}
