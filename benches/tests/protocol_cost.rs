//! The S3 sink's protocol overhead per committed file stays flat as the file count grows:
//! a sync of 200 files costs, per file, what a sync of 20 does (the journal appends one
//! small record per file and deletes it at commit). A journal rewritten whole for every
//! new file (the design before it) costs bytes that grow with the square of the file count,
//! and fails here. Requests are counted, not timed: the assertions are deterministic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use s3conn_benches::protocol::{Kind, Measurement, measure_blocking};

fn show(m: &Measurement) {
    eprintln!(
        "{} files: data {} requests; overhead {} requests ({:.2}/file), {} bytes ({:.1}/file); journal {} manifest {} report {} other {} (listing {}); HTTP {} ({} retried)",
        m.files,
        m.data().requests,
        m.overhead().requests,
        m.overhead_requests_per_file(),
        m.overhead().bytes,
        m.overhead_bytes_per_file(),
        m.of(Kind::Journal).requests,
        m.of(Kind::Manifest).requests,
        m.of(Kind::Report).requests,
        m.of(Kind::Data).requests + m.of(Kind::Other).requests,
        m.listing().requests,
        m.http_requests,
        m.http_failed,
    );
}

/// What every measurement must show, whatever the file count.
fn check_one(m: &Measurement, files: u64) {
    assert_eq!(m.files, files);
    assert_eq!(
        m.data().requests,
        files,
        "one PUT per data file: {:?}",
        m.counts
    );
    assert_eq!(
        m.http_requests - m.http_failed,
        m.total_requests(),
        "the counting wrapper saw every request the S3 client sent"
    );
    assert_eq!(m.journal_left, 0, "the journal is deleted at commit");
    assert!(
        m.overhead_requests_per_file() <= 3.0,
        "{files} files: {:.2} overhead requests per file: {:?}",
        m.overhead_requests_per_file(),
        m.counts
    );
}

#[test]
fn overhead_per_file_does_not_grow_with_the_file_count() {
    let small = measure_blocking(20).unwrap();
    show(&small);
    check_one(&small, 20);
    let large = measure_blocking(200).unwrap();
    show(&large);
    check_one(&large, 200);

    // Per file, 200 files cost at most 1.2× what 20 do, plus a small constant.
    let requests = (
        small.overhead_requests_per_file(),
        large.overhead_requests_per_file(),
    );
    assert!(
        requests.1 <= 1.2 * requests.0 + 0.1,
        "overhead requests per file grew from {:.2} (20 files) to {:.2} (200 files)",
        requests.0,
        requests.1
    );
    let bytes = (
        small.overhead_bytes_per_file(),
        large.overhead_bytes_per_file(),
    );
    assert!(
        bytes.1 <= 1.2 * bytes.0 + 64.0,
        "overhead bytes per file grew from {:.1} (20 files) to {:.1} (200 files)",
        bytes.0,
        bytes.1
    );

    // The same at the margin: each of the 180 files more costs no more than a file of the
    // small sync did on average (constant costs excluded).
    let extra_files = (large.files - small.files) as f64;
    let extra_requests =
        (large.overhead().requests - small.overhead().requests) as f64 / extra_files;
    let extra_bytes = (large.overhead().bytes - small.overhead().bytes) as f64 / extra_files;
    assert!(
        extra_requests <= requests.0,
        "{extra_requests:.2} overhead requests per extra file"
    );
    assert!(
        extra_bytes <= 1.2 * bytes.0,
        "{extra_bytes:.1} overhead bytes per extra file"
    );
}
