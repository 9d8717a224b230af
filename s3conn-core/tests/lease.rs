//! One run per pipeline, with real processes: a second `s3conn sync` of a pipeline that is
//! running fails at once with the lease error; a run that was killed does not block the
//! next; a run that stalls past its lease loses it to the next run and then commits
//! nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    clippy::indexing_slicing
)]

mod host;

use std::time::{Duration, Instant};

use host::{Case, Output, Scenario, Target, signal, wait_for};

fn case(target: Target) -> Case {
    Case {
        target,
        output: Output::ParquetByDate,
        full_refresh: false,
        unique_keys: false,
        first_objects: 4,
        later_objects: 2,
        rows: 300,
        chunk_objects: 0,
    }
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_process_fails_at_once_and_a_killed_one_does_not_block() {
    for target in [Target::Local, Target::S3] {
        let mut s = Scenario::new(case(target)).await;
        s.land(4).await;
        // The first run holds the lease, stopped in the middle of writing files.
        let mut first = s.spawn(&[("S3CONN_FAILPOINT", "sink.file.before_put@2")]);
        let (reached, _, _) =
            blocking(|| wait_for(&mut first, "s3conn-failpoint: sink.file.before_put #2"));
        assert!(reached, "the first run reached the point");

        // A second process of the same pipeline: refused at once, naming the holder.
        let started = Instant::now();
        let second = blocking(|| s.run());
        assert!(
            !second.success,
            "a second run of a running pipeline must fail"
        );
        assert!(
            second.stderr.contains("pipeline `kill` is already running")
                && second.stderr.contains(&format!("(pid {})", first.id()))
                && second.stderr.contains("holds its lease until"),
            "the error names the holder and the expiry: {}",
            second.stderr
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the second run did not wait for the lease"
        );
        assert!(
            s.committed_view().await.manifests == 0,
            "the refused run committed nothing"
        );

        // The holder is killed: the next run sees its process is gone and takes over.
        let _ = first.kill();
        let _ = first.wait();
        let next = blocking(|| {
            let out = s.command().env("RUST_LOG", "info").output().unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        });
        assert!(next.0, "the run after the kill succeeds: {}", next.1);
        assert!(
            next.1.contains("the run holding the lease is gone"),
            "it took the lease over from the dead process: {}",
            next.1
        );
        s.check_exact().await;
    }
}

/// The first run stops whole (SIGSTOP) at `point`: alive, but no longer renewing its
/// lease. The next run is refused while the lease is valid, takes over once it expires and
/// commits everything; the stalled run, woken up, must not commit.
async fn stalled_at(target: Target, point: &str, says: &[&str]) {
    let mut s = Scenario::new(case(target)).await;
    s.set_lease_ttl(2);
    s.land(4).await;
    let marker = point.split('@').next().unwrap_or(point).to_owned();
    let mut stalled = s.spawn(&[("S3CONN_FAILPOINT", &format!("{point}:stop"))]);
    let (reached, _, rest) =
        blocking(|| wait_for(&mut stalled, &format!("s3conn-failpoint: {marker}")));
    assert!(reached, "the first run reached {point}");

    // Its lease is still valid: refused.
    let refused = blocking(|| s.run());
    assert!(!refused.success);
    assert!(
        refused.stderr.contains("is already running"),
        "{}",
        refused.stderr
    );

    // Once it expires, the next run takes over and commits everything.
    std::thread::sleep(Duration::from_millis(2_500));
    let took_over = blocking(|| s.run());
    assert!(took_over.success, "{}", took_over.stderr);
    assert_eq!(took_over.report()["rows"], 1_200);
    s.check_exact().await;

    // The stalled run wakes up: it has lost its lease and must not commit.
    signal(&stalled, "CONT");
    let out = blocking(|| stalled.wait_with_output().unwrap());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "[{point}] the stalled run must fail, it printed: {stdout}"
    );
    let said = rest.join().unwrap().join("\n");
    assert!(
        says.iter().any(|s| said.contains(s)),
        "[{point}] the stalled run says why it stopped ({says:?}): {said}"
    );
    let view = s.committed_view().await;
    assert_eq!(
        view.manifests, 1,
        "[{point}] only the run that took over committed"
    );
    // What the stalled run wrote is cleaned up (by itself, or by the next run).
    let next = blocking(|| s.run_until_success(2));
    assert_eq!(next.report()["rows"], 0);
    s.check_exact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_that_stalls_past_its_lease_loses_it_and_commits_nothing() {
    const LOST: &str = "another run took over its lease; nothing of this run was committed";
    for target in [Target::Local, Target::S3] {
        // The most dangerous moment: every file written, the manifest next. The fence the
        // pipeline hands the sink renews the lease right before the manifest put.
        stalled_at(target, "sink.commit.before_manifest@1", &[LOST]).await;
        // In the middle of writing files: the run that took over cleaned up its files and
        // uploads, so the stalled run fails on the lease or on its next write.
        stalled_at(target, "sink.file.before_put@3", &[LOST, "failed"]).await;
    }
}
