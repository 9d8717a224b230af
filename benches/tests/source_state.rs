//! The S3 source's state follows the late window, not the history: after a backfill of
//! 20,000 objects spread over 100 days, the state keeps about the last day's objects (a
//! state of every key read, the design before it, keeps all 20,000 and fails here), and an
//! incremental read with 100 new objects GETs exactly those 100; with keys declared ordered,
//! it costs one LIST request. Sizes and requests are counted, not timed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use s3conn_benches::discovery::measure;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_keeps_the_late_window_not_the_history() {
    let f = measure(20_000, 100, 100, false).await.unwrap();
    eprintln!("{f:?}");
    assert_eq!(f.backfill.rows, 20_000);
    assert_eq!(f.backfill.gets, 20_000);
    // 200 objects a day; the frontier reaches a day below a watermark five minutes ago,
    // and the newest hour of the span is still within it.
    assert!(
        (150..=300).contains(&f.backfill.frontier),
        "frontier after the backfill: {}",
        f.backfill.frontier
    );
    assert!(f.backfill.state_bytes * 20 < f.whole_history_bytes);
    assert_eq!(f.incremental.rows, 100);
    assert_eq!(f.incremental.gets, 100);
    assert!(f.incremental.frontier <= f.backfill.frontier + 100);
    // Keys in any order: the whole prefix is listed, 21 pages of 1,000 keys.
    assert_eq!(f.incremental.lists, 21);
}

/// With keys declared ordered, an incremental poll of a 100,000-object stream with 100 new
/// objects costs one LIST request (after the last key read), and reads the 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_poll_lists_only_after_the_last_key_read() {
    let f = measure(100_000, 100, 100, true).await.unwrap();
    eprintln!("{f:?}");
    assert_eq!(f.backfill.rows, 100_000);
    assert_eq!(f.backfill.lists, 100);
    assert_eq!(f.incremental.rows, 100);
    assert_eq!(f.incremental.gets, 100);
    assert_eq!(f.incremental.lists, 1);
}
