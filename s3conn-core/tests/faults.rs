//! Faults on the wire: the reference host syncs through a proxy in front of the loopback S3
//! server that fails about 10% of its requests — 500s, 503 SlowDown, connections closed or
//! reset before an answer, requests held past the client's timeout, and writes that
//! happened but whose answer was lost (closed, reset, or replaced by a 500). Every sync
//! completes on its first try with exactly the rows a clean run commits, nothing is left
//! behind, and the sync report counts the retries.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    clippy::indexing_slicing
)]

mod host;

use std::time::Duration;

use host::{Case, Output, Scenario, Target};
use s3conn_testkit::{Fault, FaultPlan};

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn case(output: Output, full_refresh: bool, unique_keys: bool) -> Case {
    let (objects, rows) = match output {
        Output::ParquetByDate => (3, 400),
        Output::NdjsonMultipart => (4, 500),
    };
    Case {
        target: Target::S3,
        output,
        full_refresh,
        unique_keys,
        first_objects: objects,
        later_objects: objects,
        rows,
        chunk_objects: 0,
    }
}

/// Three deliveries through the faulty proxy, each checked, against the same deliveries
/// made cleanly.
async fn faulty_matches_clean(case: Case, seed: u64) {
    let mut clean = Scenario::new(case.clone()).await;
    let mut faulty = Scenario::new(case.clone()).await;
    faulty
        .through_proxy(
            FaultPlan::new(0.1, Fault::ALL)
                .seed(seed)
                .hold(Duration::from_secs(5)),
        )
        .await;
    let mut retries = 0u64;
    for delivery in 0..3 {
        let n = if delivery == 0 {
            case.first_objects
        } else {
            case.later_objects
        };
        clean.land(n).await;
        faulty.land(n).await;
        let clean_run = blocking(|| clean.run());
        assert!(clean_run.success, "{}", clean_run.stderr);

        let proxy = faulty.proxy.as_ref().unwrap();
        let before = proxy.stats();
        let run = blocking(|| faulty.run());
        let after = proxy.stats();
        assert!(
            run.success,
            "[{} seed {seed}] delivery {delivery} failed under faults:\n{}",
            case.name(),
            run.stderr
        );
        let report = run.report();
        let (requests, faults) = (
            after.requests - before.requests,
            after.faults() - before.faults(),
        );
        let counted = report["retries"].as_u64().unwrap();
        eprintln!(
            "[{} seed {seed}] delivery {delivery}: {requests} requests, {faults} faults injected, report: {} requests, {counted} retries",
            case.name(),
            report["requests"]
        );
        // Every fault the proxy injected into the sync's requests is a failure the client
        // saw and retried (the report's own PUT comes after the counts are taken).
        assert!(
            counted <= faults && counted + 4 >= faults,
            "[{}] the report counts {counted} retries for {faults} injected faults",
            case.name()
        );
        assert!(report["requests"].as_u64().unwrap() <= requests);
        retries += counted;

        faulty.check_exact().await;
        clean.check_exact().await;
        let (a, b) = (clean.committed_view().await, faulty.committed_view().await);
        assert_eq!(
            a.ids,
            b.ids,
            "[{}] the faulty run committed other rows than the clean one",
            case.name()
        );
    }
    assert!(retries > 0, "[{}] no fault was injected", case.name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn syncs_through_ten_percent_faults_commit_what_a_clean_run_commits() {
    let jobs = vec![
        tokio::spawn(faulty_matches_clean(
            case(Output::ParquetByDate, false, false),
            1,
        )),
        tokio::spawn(faulty_matches_clean(
            case(Output::ParquetByDate, true, true),
            2,
        )),
        tokio::spawn(faulty_matches_clean(
            case(Output::NdjsonMultipart, false, false),
            3,
        )),
    ];
    let mut failures = Vec::new();
    for job in jobs {
        if let Err(e) = job.await {
            failures.push(e.to_string());
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}
