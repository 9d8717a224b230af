//! A randomized model test of the S3 source's incremental discovery: thousands of seeds of
//! puts (with equal timestamps, and late ones whose last-modified time lies in the past),
//! uploads that stay open for up to 80 minutes and complete with their start time as their
//! last modification (as S3's multipart uploads do; longer than the late window), overwrites,
//! deletes and syncs that commit or crash between read and commit, against a ground truth
//! kept by the test.
//!
//! The bucket is a local folder whose files get the modification times the model chooses
//! (an open upload is a staging file `key#<digits>`, which the local connection lists as an
//! open upload, started at its modification time); the source tells the time with the
//! model's clock. After every committed sync:
//!
//! - no version of an object was committed twice (0 silently re-read);
//! - every version present in the bucket is committed (0 missed);
//! - late arrivals and overwrites are reported exactly where the model expects them;
//! - the state keeps no deleted key and nothing older than the late window below its
//!   watermark.
//!
//! `S3CONN_MODEL_SEEDS=N` runs more seeds (default 2,000).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use s3conn_core::auth::ConnectionConfig;
use s3conn_core::auth::credentials::Clock;
use s3conn_core::s3::{S3Source, S3StreamConfig};
use s3conn_core::{Notice, ReadRequest, Source, SourceMessage, SourceState};

const LAG: i64 = 60;
const WINDOW: i64 = 3_600;
/// The latest a late object's last-modified time lies below now: within the late window.
const MAX_LATE: i64 = 1_800;
/// The longest an upload stays open: longer than the late window (it holds the watermark).
const MAX_UPLOAD: i64 = 4_800;

#[derive(Debug)]
struct ModelClock(Mutex<DateTime<Utc>>);

impl Clock for ModelClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One version of an object, as the model knows it.
#[derive(Debug, Clone)]
struct Version {
    id: i64,
    modified: DateTime<Utc>,
}

struct Model {
    dir: tempfile::TempDir,
    clock: Arc<ModelClock>,
    source: S3Source,
    /// The objects in the bucket: key → its version.
    present: BTreeMap<String, Version>,
    /// Uploads in progress: key → the version it completes with (last modified at its start).
    uploads: BTreeMap<String, Version>,
    /// Every version committed, with the key it was committed under.
    committed: BTreeMap<i64, String>,
    /// The last version of each key that a sync committed.
    last_committed: BTreeMap<String, Version>,
    state: Option<SourceState>,
    /// The watermark as the model derives it: the latest committed sync's now minus the lag.
    watermark: Option<DateTime<Utc>>,
    next_key: u64,
    next_version: i64,
    seed: u64,
}

/// What one read gave.
#[derive(Default)]
struct Read {
    versions: Vec<(String, i64)>,
    late: BTreeSet<String>,
    overwritten: BTreeSet<String>,
    out_of_order: BTreeSet<String>,
    checkpoint: Option<SourceState>,
}

impl Model {
    fn new(seed: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bucket/landing")).unwrap();
        std::fs::create_dir_all(dir.path().join("staging")).unwrap();
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = Arc::new(ModelClock(Mutex::new(start)));
        let connection = ConnectionConfig::local(dir.path().join("bucket"))
            .connect()
            .unwrap();
        let source = S3Source::builder(connection)
            .with_stream(S3StreamConfig::new("events", "landing").with_format("ndjson"))
            .with_settle_lag(Duration::from_secs(LAG as u64))
            .with_late_window(Duration::from_secs(WINDOW as u64))
            .with_clock(Arc::clone(&clock) as Arc<dyn Clock>)
            .build()
            .unwrap();
        Self {
            dir,
            clock,
            source,
            present: BTreeMap::new(),
            uploads: BTreeMap::new(),
            committed: BTreeMap::new(),
            last_committed: BTreeMap::new(),
            state: None,
            watermark: None,
            next_key: 0,
            next_version: 0,
            seed,
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn advance(&self, seconds: i64) {
        *self.clock.0.lock().unwrap() += TimeDelta::seconds(seconds);
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.path().join("bucket").join(key)
    }

    /// Write a new version of `key` as an upload does (a new file moved into place), last
    /// modified at `modified`.
    fn write(&mut self, key: &str, modified: DateTime<Utc>) {
        let id = self.next_version;
        self.next_version += 1;
        let staging = self.dir.path().join("staging").join(format!("{id}"));
        std::fs::write(&staging, format!("{{\"v\":{id}}}\n")).unwrap();
        set_mtime(&staging, modified);
        std::fs::rename(&staging, self.path(key)).unwrap();
        self.present
            .insert(key.to_owned(), Version { id, modified });
    }

    /// Start an upload of a new key: a staging file the local connection lists as open.
    fn start_upload(&mut self) {
        let key = format!("landing/k{:05}.jsonl", self.next_key);
        self.next_key += 1;
        let id = self.next_version;
        self.next_version += 1;
        let staging = self.path(&format!("{key}#{id}"));
        std::fs::write(&staging, format!("{{\"v\":{id}}}\n")).unwrap();
        let modified = self.now();
        set_mtime(&staging, modified);
        self.uploads.insert(key, Version { id, modified });
    }

    /// Complete an upload: its object appears, last modified when the upload started.
    fn complete_upload(&mut self, key: &str) {
        let version = self.uploads.remove(key).unwrap();
        let staging = self.path(&format!("{key}#{}", version.id));
        std::fs::rename(&staging, self.path(key)).unwrap();
        self.present.insert(key.to_owned(), version);
    }

    fn put_new(&mut self, modified: DateTime<Utc>) {
        let key = format!("landing/k{:05}.jsonl", self.next_key);
        self.next_key += 1;
        self.write(&key, modified);
    }

    async fn read(&self, stop_after: Option<usize>) -> Read {
        let request = ReadRequest::from_state(self.state.clone());
        let mut messages = self.source.read(request).await.unwrap();
        let mut read = Read::default();
        let mut seen = 0;
        while let Some(message) = messages.next().await {
            if stop_after.is_some_and(|n| seen >= n) {
                break;
            }
            seen += 1;
            match message.unwrap_or_else(|e| panic!("seed {}: read failed: {e}", self.seed)) {
                SourceMessage::Batch(batch) => {
                    let key = batch
                        .position
                        .origin
                        .rsplit_once("landing/")
                        .map(|(_, k)| format!("landing/{k}"))
                        .unwrap();
                    let column = batch.records.column_by_name("v").unwrap();
                    let values = column.as_primitive::<Int64Type>();
                    for i in 0..values.len() {
                        read.versions.push((key.clone(), values.value(i)));
                    }
                }
                SourceMessage::Checkpoint(state) => read.checkpoint = Some(state),
                SourceMessage::Notice(Notice::LateArrival { uri, .. }) => {
                    read.late.insert(key_of(&uri));
                }
                SourceMessage::Notice(Notice::Overwritten { uri, .. }) => {
                    read.overwritten.insert(key_of(&uri));
                }
                SourceMessage::Notice(Notice::OutOfOrder { uri, .. }) => {
                    read.out_of_order.insert(key_of(&uri));
                }
                SourceMessage::Notice(_) => {}
                other => panic!("unexpected message {other:?}"),
            }
        }
        read
    }

    /// A sync that commits: check it against the model.
    async fn sync(&mut self, step: usize) {
        let at = format!("seed {} step {step}", self.seed);
        let read = self.read(None).await;
        let now = self.now();
        // Which reads the model expects to be reported as late and as overwrites.
        let mut expect_late = BTreeSet::new();
        let mut expect_overwritten = BTreeSet::new();
        for (key, id) in &read.versions {
            let version = self
                .present
                .get(key)
                .filter(|v| v.id == *id)
                .unwrap_or_else(|| panic!("{at}: read {key} version {id}, which is not there"));
            let previous = self.last_committed.get(key);
            if let Some(previous) = previous {
                let window_floor = self.watermark.map(|w| w - TimeDelta::seconds(WINDOW));
                if window_floor.is_none_or(|f| previous.modified >= f) {
                    expect_overwritten.insert(key.clone());
                }
            } else if self.watermark.is_some_and(|w| version.modified < w) {
                expect_late.insert(key.clone());
            }
        }
        for (key, id) in &read.versions {
            if let Some(first) = self.committed.insert(*id, key.clone()) {
                panic!("{at}: version {id} of {first} committed twice");
            }
            self.last_committed
                .insert(key.clone(), self.present[key].clone());
        }
        for (key, version) in &self.present {
            assert!(
                self.committed.contains_key(&version.id),
                "{at}: {key} version {} (last modified {}) is in the bucket and was never committed (now {now}, watermark {:?})",
                version.id,
                version.modified,
                self.watermark
            );
        }
        assert_eq!(read.late, expect_late, "{at}: late arrivals");
        assert_eq!(
            read.overwritten, expect_overwritten,
            "{at}: overwrites reported"
        );
        let state = read.checkpoint.expect("a checkpoint");
        self.check_state(&state, &at);
        self.state = Some(state);
        // The watermark: now minus the lag, held at the oldest open upload's start unless
        // that is more than the late window below.
        let settled = now - TimeDelta::seconds(LAG);
        let mut w = settled;
        if let Some(start) = self.uploads.values().map(|v| v.modified).min() {
            w = w.min(start.max(settled - TimeDelta::seconds(WINDOW)));
        }
        self.watermark = Some(self.watermark.map_or(w, |m| m.max(w)));
    }

    fn check_state(&self, state: &SourceState, at: &str) {
        let stream = &state.0["streams"]["events"];
        let watermark = stream["watermark"].as_i64().expect("a watermark");
        let floor = watermark - WINDOW * 1_000_000_000;
        let frontier = stream["frontier"].as_object().cloned().unwrap_or_default();
        for (key, seen) in &frontier {
            assert!(
                self.present.contains_key(key),
                "{at}: the state keeps {key}, which is gone"
            );
            let t = seen["t"].as_i64().unwrap();
            assert!(
                t >= floor,
                "{at}: the state keeps {key}, older than the late window"
            );
        }
        assert!(
            stream.get("seen").is_none(),
            "{at}: the state still has the whole history"
        );
    }
}

fn key_of(uri: &str) -> String {
    uri.rsplit_once("landing/")
        .map(|(_, k)| format!("landing/{k}"))
        .unwrap()
}

fn set_mtime(path: &FsPath, at: DateTime<Utc>) {
    let when =
        SystemTime::UNIX_EPOCH + Duration::from_nanos(at.timestamp_nanos_opt().unwrap() as u64);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

async fn run_seed(seed: u64) {
    let mut rng = Rng::new(seed);
    let mut m = Model::new(seed);
    let steps = 30 + rng.below(40) as usize;
    for step in 0..steps {
        // Often no time passes: equal timestamps.
        let pause = match rng.below(4) {
            0 => 0,
            1 => rng.below(5) as i64,
            2 => rng.below(120) as i64,
            _ => rng.below(900) as i64,
        };
        m.advance(pause);
        let now = m.now();
        let overdue: Vec<String> = m
            .uploads
            .iter()
            .filter(|(_, v)| (now - v.modified).num_seconds() >= MAX_UPLOAD)
            .map(|(k, _)| k.clone())
            .collect();
        for key in overdue {
            m.complete_upload(&key);
        }
        match rng.below(100) {
            0..=34 => m.put_new(now),
            35..=44 => {
                // Visible only now, last modified in the past: a long multipart upload.
                let back = 1 + rng.below(MAX_LATE as u64) as i64;
                m.put_new(now - TimeDelta::seconds(back));
            }
            45..=56 => {
                if let Some(key) = pick(&mut rng, &m.present) {
                    m.write(&key, now);
                }
            }
            57..=62 => {
                if let Some(key) = pick(&mut rng, &m.present) {
                    std::fs::remove_file(m.path(&key)).unwrap();
                    m.present.remove(&key);
                }
            }
            63..=65 => m.start_upload(),
            66..=68 => {
                if let Some(key) = pick(&mut rng, &m.uploads) {
                    m.complete_upload(&key);
                }
            }
            69..=73 => {
                // A crash between read and commit, after some or all of the read.
                let stop = (rng.below(2) == 0).then(|| rng.below(6) as usize);
                let _ = m.read(stop).await;
            }
            _ => m.sync(step).await,
        }
    }
    m.advance(LAG + 1);
    m.sync(steps).await;
    m.sync(steps + 1).await;
}

fn pick(rng: &mut Rng, present: &BTreeMap<String, Version>) -> Option<String> {
    if present.is_empty() {
        return None;
    }
    let i = rng.below(present.len() as u64) as usize;
    present.keys().nth(i).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_matches_the_model_over_thousands_of_seeds() {
    let seeds: u64 = std::env::var("S3CONN_MODEL_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let mut tasks = futures::stream::iter(1..=seeds)
        .map(|seed| tokio::spawn(run_seed(seed)))
        .buffer_unordered(4);
    let mut failures = Vec::new();
    while let Some(outcome) = tasks.next().await {
        if let Err(e) = outcome {
            failures.push(e.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {seeds} seeds failed; the first: {}",
        failures.len(),
        failures[0]
    );
}

/// A model whose one stream is declared with ordered keys, listed whole at most every
/// `full_listing_secs` seconds.
fn ordered_model(full_listing_secs: u64) -> Model {
    let m = Model::new(0);
    let connection = ConnectionConfig::local(m.dir.path().join("bucket"))
        .connect()
        .unwrap();
    let source = S3Source::builder(connection)
        .with_stream(
            S3StreamConfig::new("events", "landing")
                .with_format("ndjson")
                .with_keys_ordered(true),
        )
        .with_settle_lag(Duration::from_secs(LAG as u64))
        .with_late_window(Duration::from_secs(WINDOW as u64))
        .with_full_listing_interval(Duration::from_secs(full_listing_secs))
        .with_clock(Arc::clone(&m.clock) as Arc<dyn Clock>)
        .build()
        .unwrap();
    Model { source, ..m }
}

/// A stream whose keys are ordered lists from the last key it read; a key that arrives out
/// of order is found by the next full listing, and reported.
#[tokio::test]
async fn ordered_keys_are_listed_from_the_last_key_read_and_a_full_listing_finds_the_rest() {
    let mut m = ordered_model(3_600);
    for _ in 0..5 {
        m.advance(10);
        m.put_new(m.now());
    }
    let first = m.read(None).await;
    assert_eq!(first.versions.len(), 5);
    m.state = first.checkpoint;
    assert_eq!(
        m.state.as_ref().unwrap().0["streams"]["events"]["high_water"],
        "landing/k00004.jsonl"
    );

    // A key after the last one, and one that sorts before it.
    m.advance(10);
    m.put_new(m.now());
    let early = "landing/k00002a.jsonl";
    m.write(early, m.now());
    let second = m.read(None).await;
    let keys: Vec<&str> = second.versions.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["landing/k00005.jsonl"]);
    assert!(second.out_of_order.is_empty());
    m.state = second.checkpoint;

    // An hour on, the full listing finds it.
    m.advance(3_600);
    let third = m.read(None).await;
    let keys: Vec<&str> = third.versions.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, [early]);
    assert_eq!(third.out_of_order, BTreeSet::from([early.to_owned()]));
    m.state = third.checkpoint;
    m.advance(10);
    assert!(m.read(None).await.versions.is_empty());
}

/// A key that arrives out of order just after a full listing is found by the next one while
/// it is still within the late window, even when the configured interval is longer than the
/// window (the source lists whole at least every window minus the lag and a margin); at a
/// poll every 20 minutes, a listing two hours apart would find it settled and never read it.
#[tokio::test]
async fn an_out_of_order_key_is_found_before_it_leaves_the_late_window() {
    let mut m = ordered_model(2 * WINDOW as u64);
    for _ in 0..3 {
        m.advance(10);
        m.put_new(m.now());
    }
    let first = m.read(None).await;
    assert_eq!(first.versions.len(), 3);
    m.state = first.checkpoint;
    // Right after that full listing, a key that sorts before the last one read.
    m.advance(5);
    let early = "landing/k00000a.jsonl";
    m.write(early, m.now());
    let mut found = Vec::new();
    for _ in 0..9 {
        m.advance(20 * 60);
        let read = m.read(None).await;
        found.extend(read.versions.into_iter().map(|(k, _)| k));
        m.state = read.checkpoint;
    }
    assert_eq!(found, [early]);
}
