//! `s3conn demo`: the library end to end, on a local folder standing in for a bucket.
//!
//! 1. **Push**: generate sample events and write them with an `S3Sink` as gzip NDJSON under
//!    `bucket/exports/events/YYYY/MM/DD/`, with a manifest and a sync report.
//! 2. **Pull**: a `Pipeline` of `S3Source` (the exported NDJSON) into an `S3Sink` (Parquet
//!    under `bucket/warehouse/`), with its state in `state/`. Only objects it has not read
//!    before move; the pull's sync report is printed.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use chrono::Utc;
use rand::Rng;
use s3conn_core::auth::ConnectionConfig;
use s3conn_core::formats::EncodeOptions;
use s3conn_core::formats::compression::Compression;
use s3conn_core::formats::ndjson::NdjsonFormat;
use s3conn_core::layout::{SyncReport, SyncStatus, Template};
use s3conn_core::s3::{S3Sink, S3Source, S3StreamConfig};
use s3conn_core::state::LocalFileStateStore;
use s3conn_core::{
    Batch, CommitRequest, Pipeline, Position, Sink, StreamId, SyncContext, SyncMode,
};

use crate::{Failure, progress};

const BATCH: usize = 5_000;
const COUNTRIES: [&str; 8] = ["US", "DE", "FR", "BR", "IN", "JP", "NG", "ES"];
const EVENTS: [&str; 5] = ["page_view", "page_view", "click", "signup", "purchase"];
const PAGES: [&str; 6] = [
    "/",
    "/pricing",
    "/docs",
    "/blog/launch",
    "/signup",
    "/checkout",
];

/// Sample product events: `n` rows that happened in the hour before now.
fn generate(n: usize, first: usize) -> Result<RecordBatch, s3conn_core::Error> {
    let mut rng = rand::rng();
    let now = Utc::now().timestamp_millis();
    let pick = |rng: &mut rand::rngs::ThreadRng, items: &[&'static str]| {
        items
            .get(rng.random_range(0..items.len()))
            .copied()
            .unwrap_or_default()
    };
    let mut ids = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    let mut users = Vec::with_capacity(n);
    let mut emails = Vec::with_capacity(n);
    let mut countries = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut amounts = Vec::with_capacity(n);
    let mut pages = Vec::with_capacity(n);
    for i in 0..n {
        let user = rng.random_range(1..5_000i64);
        let kind = pick(&mut rng, &EVENTS);
        ids.push(format!(
            "evt_{}_{:08}",
            uuid::Uuid::new_v4().simple(),
            first + i
        ));
        times.push(now - rng.random_range(0..3_600_000));
        users.push(user);
        emails.push(format!("user{user}@example.com"));
        countries.push(pick(&mut rng, &COUNTRIES));
        kinds.push(kind);
        amounts
            .push((kind == "purchase").then(|| f64::from(rng.random_range(500..50_000)) / 100.0));
        pages.push(pick(&mut rng, &PAGES));
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("event_id", Arc::new(StringArray::from(ids))),
        (
            "occurred_at",
            Arc::new(TimestampMillisecondArray::from(times).with_timezone("+00:00")),
        ),
        ("user_id", Arc::new(Int64Array::from(users))),
        ("email", Arc::new(StringArray::from(emails))),
        ("country", Arc::new(StringArray::from(countries))),
        ("event", Arc::new(StringArray::from(kinds))),
        ("amount", Arc::new(Float64Array::from(amounts))),
        ("page", Arc::new(StringArray::from(pages))),
    ];
    RecordBatch::try_from_iter(columns).map_err(|e| s3conn_core::Error::External {
        context: "generating sample events".into(),
        source: Box::new(e),
    })
}

/// Push `events` new sample events through an `S3Sink`, as a host that has data in hand
/// does: begin, write, commit, report.
async fn push(bucket: &Path, events: usize) -> Result<SyncReport, s3conn_core::Error> {
    let connection = ConnectionConfig::local(bucket)
        .with_prefix("exports")
        .connect()?;
    let mut sink = S3Sink::builder(connection)
        .with_format(Arc::new(NdjsonFormat))
        .with_encode_options(EncodeOptions::default().with_compression(Compression::Gzip))
        .with_template(Template::parse(
            "${STREAM_NAME}/${YEAR}/${MONTH}/${DAY}/${EPOCH}_{part_number}{format_extension}",
        )?)
        .with_target_file_size(2 << 20)
        .build()?;
    let stream = StreamId::new("events");
    let ctx = SyncContext::new("demo-push").with_stream(stream.clone(), SyncMode::Incremental);
    let mut report = SyncReport::new(&ctx.sync_id, ctx.started_at.timestamp_millis());
    sink.begin(&ctx).await?;
    let mut written = 0;
    while written < events {
        let n = BATCH.min(events - written);
        let batch = generate(n, written)?;
        sink.write(Batch::new(
            stream.clone(),
            batch,
            Position::new("demo-generator", written as u64),
        ))
        .await?;
        written += n;
    }
    let receipt = sink.commit(&CommitRequest::default()).await?;
    report.finish_time = Utc::now().timestamp_millis();
    report.status = SyncStatus::Succeeded;
    report.rows = receipt.rows();
    report.bytes = receipt.bytes();
    report.files = receipt.files.len() as u64;
    report.dump_id = receipt.dump_id;
    report.streams = receipt.streams;
    sink.write_report(&report).await?;
    Ok(report)
}

/// Pull what is new from the exports into Parquet.
async fn pull(dir: &Path, bucket: &Path) -> Result<SyncReport, s3conn_core::Error> {
    let exports = ConnectionConfig::local(bucket)
        .with_prefix("exports")
        .connect()?;
    let warehouse = ConnectionConfig::local(bucket)
        .with_prefix("warehouse")
        .connect()?;
    let source = S3Source::builder(exports)
        .with_stream(S3StreamConfig::new("events", "events").with_format("ndjson"))
        .build()?;
    let sink = S3Sink::builder(warehouse).build()?;
    let state = LocalFileStateStore::new(dir.join("state"))?;
    let bar = progress::bar("pull");
    let shown = bar.clone();
    let mut pipeline = Pipeline::new("demo-pull", source, sink, state)?
        .with_next_sync_in(chrono::Duration::hours(1))
        .with_progress(move |p| progress::show(&shown, p));
    let report = pipeline.run().await;
    bar.finish_and_clear();
    report
}

fn files(n: u64) -> String {
    if n == 1 {
        "1 file".into()
    } else {
        format!("{n} files")
    }
}

/// Run the demo in `dir`; returns the pull's sync report.
pub(crate) async fn run(dir: &Path, events: usize) -> Result<SyncReport, Failure> {
    let bucket = dir.join("bucket");
    let pushed = push(&bucket, events).await?;
    eprintln!(
        "pushed {} events as gzip NDJSON to {}/exports/events ({}, delivery {})",
        pushed.rows,
        bucket.display(),
        files(pushed.files),
        pushed.dump_id.map_or("-".into(), |d| d.to_string()),
    );
    let pulled = pull(dir, &bucket).await?;
    eprintln!(
        "pulled {} new rows into Parquet under {}/warehouse ({}, delivery {}); state in {}",
        pulled.rows,
        bucket.display(),
        files(pulled.files),
        pulled.dump_id.map_or("-".into(), |d| d.to_string()),
        dir.join("state").display(),
    );
    Ok(pulled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_run_moves_only_the_new_events() {
        let dir = tempfile::tempdir().unwrap();
        let first = run(dir.path(), 12_000).await.ok().unwrap();
        assert_eq!(first.rows, 12_000);
        assert_eq!(first.status, SyncStatus::Succeeded);
        let second = run(dir.path(), 3_000).await.ok().unwrap();
        assert_eq!(second.rows, 3_000, "only the new events move");
        assert_eq!(second.dump_id, Some(2));
        assert!(second.next_sync_at.is_some());
        let reports = std::fs::read_dir(dir.path().join("bucket/warehouse/sync_reports"))
            .unwrap()
            .count();
        assert_eq!(reports, 2);
    }
}
