//! Key layouts end to end on the loopback S3 server: Hive partitions by a column and by each
//! record's own time, read back by key parse-back, by the parquet crate, and by pyarrow's
//! Hive dataset discovery; per-file checksums and time ranges in the manifest.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use base64::Engine as _;
use chrono::{TimeZone, Utc};
use object_store::ObjectStore;
use object_store::path::Path;
use s3conn_core::layout::template::{Template, TemplateOptions};
use s3conn_core::memory::MemorySource;
use s3conn_core::s3::{S3Sink, S3Source, S3StreamConfig};
use s3conn_core::state::ObjectStoreStateStore;
use s3conn_core::{Pipeline, StreamId};
use s3conn_core::{ReadRequest, SourceExt};
use s3conn_testkit::S3Server;
use s3conn_testkit::{FaultyStore, Op};

use common::*;

const TEMPLATE: &str =
    "${STREAM_NAME}/${DATE@record}/${event}/part-{part_number:05}-{sync_id}{format_extension}";

fn hive_template() -> Template {
    let options = TemplateOptions::default()
        .with_hive(true)
        .with_column("event")
        .with_time_column("ts");
    Template::parse_with(TEMPLATE, &options).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hive_partitions_by_column_and_record_day() {
    let server = S3Server::start().await;
    let raw = server.store(server.bucket());
    put(&raw, "landing/events/a.jsonl", ndjson(0, 7_000)).await;
    put(
        &raw,
        "landing/events/b.jsonl.gz",
        gzip(ndjson(7_000, 7_000).as_bytes()),
    )
    .await;

    let source = S3Source::builder(connection(&server, "landing"))
        .with_stream(S3StreamConfig::new("events", "events").with_format("ndjson"))
        .build()
        .unwrap();
    // Enough open files for every partition: one file each.
    let sink = S3Sink::builder(connection(&server, "warehouse"))
        .with_template(hive_template())
        .with_max_open_files(200)
        .build()
        .unwrap();
    let state = ObjectStoreStateStore::new(Arc::clone(&raw), Path::from("state"));
    let mut pipeline = Pipeline::new("hive", source, sink, state).unwrap();
    let report = pipeline.run().await.unwrap();
    assert_eq!(report.rows, 14_000);
    assert_eq!(report.files, 140, "28 days × 5 event kinds");

    // Every file holds exactly the rows of the partition its key names.
    let matcher = hive_template().matcher().unwrap();
    let manifests = manifests(&raw, "warehouse").await;
    let records = &manifests[0].s3conn.as_ref().unwrap().files;
    let mut all = Vec::new();
    for file in records {
        let relative = file.key.strip_prefix("warehouse/").unwrap();
        let parsed = matcher
            .parse(relative)
            .unwrap_or_else(|| panic!("{relative} does not match the template"));
        assert!(
            relative.contains("/date=") && relative.contains("/event="),
            "{relative}"
        );
        let batches = read_parquet(&raw, &file.key).await;
        let rows = rows_by_id(&batches);
        assert_eq!(rows.len() as u64, file.rows);
        let date = parsed.get("DATE").unwrap();
        let event = parsed.get("event").unwrap();
        let mut lo = i64::MAX;
        let mut hi = i64::MIN;
        for row in rows.values() {
            let ts = row["ts"].as_str().unwrap();
            assert!(ts.starts_with(date), "{ts} in {relative}");
            assert_eq!(row["event"], event, "{relative}");
            let ms = chrono::DateTime::parse_from_rfc3339(ts)
                .unwrap()
                .timestamp_millis();
            lo = lo.min(ms);
            hi = hi.max(ms);
        }
        assert_eq!(
            (file.time_min, file.time_max),
            (Some(lo), Some(hi)),
            "{relative}"
        );
        // The checksum is the CRC-64/NVME of the stored bytes.
        let bytes = get(&raw, &file.key).await;
        let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, &bytes);
        let expected = format!(
            "crc64nvme:{}",
            base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
        );
        assert_eq!(file.checksum.as_deref(), Some(expected.as_str()));
        all.extend(batches);
    }
    assert_eq!(rows_by_id(&all), expected_rows(0..14_000));

    // pyarrow discovers the Hive partitions on its own and agrees with the data.
    let dir = server.bucket_dir(server.bucket()).join("warehouse/events");
    let out = s3conn_testkit::run_python(
        r#"
import sys, json, collections
import pyarrow.dataset as ds
table = ds.dataset(sys.argv[1], format="parquet", partitioning="hive").to_table()
rows = table.to_pylist()
bad = [r for r in rows if not (str(r["date"]) == r["ts"].strftime("%Y-%m-%d"))]
counts = collections.Counter(str(r["date"]) + "|" + str(r["event"]) for r in rows)
print(json.dumps({"rows": len(rows), "bad": len(bad), "partitions": len(counts)}))
"#,
        &[dir.to_str().unwrap()],
    );
    let seen: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(seen["rows"], 14_000);
    assert_eq!(
        seen["bad"], 0,
        "pyarrow's date partition matches every row's time"
    );
    assert_eq!(seen["partitions"], 140);

    // And back through the source, with the same template: a start date lists only the
    // folders from that date on (every file was written just now, so no object timestamp
    // could have told them apart), and the folders come back as columns.
    let faulty = FaultyStore::new(Arc::clone(&raw));
    let start = Utc.with_ymd_and_hms(2024, 11, 20, 0, 0, 0).unwrap();
    let source = S3Source::builder(connection_over(
        faulty.clone() as Arc<dyn ObjectStore>,
        &server,
        "warehouse",
    ))
    .with_stream(S3StreamConfig::new("events", "").with_template(hive_template()))
    .with_stream(S3StreamConfig::new("users", "").with_template(hive_template()))
    .with_start_date(start)
    .build()
    .unwrap();
    let read = source.read_all(ReadRequest::default()).await.unwrap();
    let mut ids = Vec::new();
    for batch in &read.batches {
        assert_eq!(
            batch.stream.name(),
            "events",
            "no key names the stream `users`"
        );
        let records = &batch.records;
        // As text: `ts` was inferred as a timestamp from the events' strings.
        let column = |name: &str| {
            let column = records
                .column_by_name(name)
                .unwrap_or_else(|| panic!("no column {name}"));
            arrow_cast::cast(column, &arrow_schema::DataType::Utf8)
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone()
        };
        let (date, event, ts) = (column("date"), column("event"), column("ts"));
        let id = records
            .column_by_name("id")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        for row in 0..records.num_rows() {
            assert_eq!(
                &ts.value(row)[..10],
                date.value(row),
                "the date folder is a column"
            );
            assert!(!event.is_null(row));
            ids.push(id.value(row));
        }
        assert_eq!(
            records
                .schema()
                .fields()
                .iter()
                .filter(|f| f.name() == "event")
                .count(),
            1,
            "a partition column the file already has is not added twice"
        );
    }
    ids.sort_unstable();
    let expected: Vec<i64> = (0..14_000).filter(|i| i % 28 >= 19).collect();
    assert_eq!(ids, expected, "exactly the rows of 2024-11-20 and after");
    let lists: Vec<String> = faulty
        .calls()
        .into_iter()
        .filter(|(op, _)| *op == Op::List)
        .map(|(_, path)| path)
        .collect();
    assert_eq!(
        lists,
        [
            "warehouse/events after warehouse/events/date=2024-11-20",
            "warehouse/users after warehouse/users/date=2024-11-20",
        ],
        "one listing per stream, from the start date's folder on"
    );
}

#[test]
fn the_checksum_is_crc64_nvme() {
    // The check value of the CRC-64/NVME catalogue entry.
    assert_eq!(
        crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, b"123456789"),
        0xae8b_1486_0a79_9888
    );
}

fn typed_batch(start: i64, n: i64) -> RecordBatch {
    let base = Utc
        .with_ymd_and_hms(2024, 3, 1, 0, 0, 0)
        .unwrap()
        .timestamp_millis();
    let id: ArrayRef = Arc::new(Int64Array::from_iter_values(start..start + n));
    let country: ArrayRef = Arc::new(StringArray::from_iter(
        (start..start + n).map(|i| ["FR", "DE", "JP"].get((i % 4) as usize).copied()),
    ));
    let at: ArrayRef = Arc::new(
        TimestampMillisecondArray::from_iter_values(
            (start..start + n).map(|i| base + (i % 5) * 3_600_000 + i),
        )
        .with_timezone("+00:00"),
    );
    RecordBatch::try_from_iter([("id", id), ("country", country), ("at", at)]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_partitions_typed_times_and_few_open_files() {
    let server = S3Server::start().await;
    let raw = server.store(server.bucket());
    let source = MemorySource::new();
    for i in 0..10 {
        source.push(StreamId::new("visits"), typed_batch(i * 1_000, 1_000));
    }
    let options = TemplateOptions::default()
        .with_hive(true)
        .with_column("country")
        .with_time_column("at")
        .with_time_zone("+01:00")
        .unwrap();
    let template = Template::parse_with(
        "${STREAM_NAME}/${country}/${HOUR@record}/{part_number}{format_extension}",
        &options,
    )
    .unwrap();
    let sink = S3Sink::builder(connection(&server, "out"))
        .with_template(template.clone())
        .with_max_open_files(2)
        .build()
        .unwrap();
    let state = ObjectStoreStateStore::new(Arc::clone(&raw), Path::from("state"));
    let mut pipeline = Pipeline::new("typed", source, sink, state).unwrap();
    let report = pipeline.run().await.unwrap();
    assert_eq!(report.rows, 10_000);
    // 4 countries (one null) × 5 hours = 20 partitions; two open files at a time means
    // a partition's file closes whenever two others are written after it.
    assert!(report.files > 20, "{} files", report.files);

    let matcher = template.matcher().unwrap();
    let mut per_partition: BTreeMap<(String, String), usize> = BTreeMap::new();
    for key in keys(&raw, "out/visits").await {
        let parsed = matcher.parse(key.strip_prefix("out/").unwrap()).unwrap();
        let country = parsed.get("country").unwrap().to_owned();
        let hour = parsed.get("HOUR").unwrap().to_owned();
        let batches = read_parquet(&raw, &key).await;
        for b in &batches {
            let countries = b
                .column_by_name("country")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            for i in 0..b.num_rows() {
                let want = if countries.is_valid(i) {
                    countries.value(i).to_owned()
                } else {
                    "__HIVE_DEFAULT_PARTITION__".to_owned()
                };
                assert_eq!(country, want, "{key}");
            }
            *per_partition
                .entry((country.clone(), hour.clone()))
                .or_default() += b.num_rows();
        }
    }
    assert_eq!(per_partition.len(), 20);
    assert_eq!(per_partition.values().sum::<usize>(), 10_000);
    assert!(
        per_partition
            .keys()
            .all(|(_, h)| ["01", "02", "03", "04", "05"].contains(&h.as_str())),
        "hours are rendered in the template's zone (+01:00): {per_partition:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_without_a_time_fails_the_sync_and_says_where() {
    let server = S3Server::start().await;
    let raw = server.store(server.bucket());
    let mut lines = ndjson(0, 10);
    lines.push_str("{\"id\": 10, \"event\": \"click\", \"ts\": null}\n");
    put(&raw, "landing/events/a.jsonl", lines).await;
    let source = S3Source::builder(connection(&server, "landing"))
        .with_stream(S3StreamConfig::new("events", "events").with_format("ndjson"))
        .build()
        .unwrap();
    let sink = S3Sink::builder(connection(&server, "warehouse"))
        .with_template(hive_template())
        .build()
        .unwrap();
    let state = ObjectStoreStateStore::new(Arc::clone(&raw), Path::from("state"));
    let mut pipeline = Pipeline::new("hive", source, sink, state).unwrap();
    let err = pipeline.run().await.unwrap_err().to_string();
    assert!(err.contains("`ts` is null in row 11"), "{err}");
    assert!(err.contains("landing/events/a.jsonl"), "{err}");
    assert!(
        keys(&raw, "warehouse/events").await.is_empty(),
        "nothing is left behind"
    );
}
