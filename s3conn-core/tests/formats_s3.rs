//! Formats end to end on the loopback S3 server: the source reads CSV with a separator of
//! two bytes (gzip), a JSON array, TSV and NDJSON objects; the sink writes gzip CSV with the
//! flattened record shape and NDJSON with the envelope shape; duckdb and Python's json
//! module read what the sink wrote, value by value.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;

use object_store::path::Path;
use s3conn_core::formats::shape::{EnvelopeColumns, RecordShape};
use s3conn_core::formats::{EncodeOptions, FormatPlugin, Registry};
use s3conn_core::s3::{S3Sink, S3Source, S3StreamConfig};
use s3conn_core::state::ObjectStoreStateStore;
use s3conn_core::{Pipeline, SyncMode};
use s3conn_testkit::S3Server;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_json_tsv_in_csv_and_envelopes_out() {
    let server = S3Server::start().await;
    let raw = server.store(server.bucket());
    // Orders: CSV separated by `||`, gzip, with a quoted separator and a line break.
    let mut orders = String::from("id||customer||total\n");
    for i in 0..300 {
        orders.push_str(&format!("{i}||\"Zoë || {i}\nsecond line\"||{}.25\n", i * 3));
    }
    put(
        &raw,
        "landing/orders/2024-11-27.csv.gz",
        gzip(orders.as_bytes()),
    )
    .await;
    // Events: a JSON array, a TSV file and NDJSON, all in one stream.
    let array: Vec<serde_json::Value> = (0..200).map(event).collect();
    put(
        &raw,
        "landing/events/a.json",
        serde_json::to_vec_pretty(&array).unwrap(),
    )
    .await;
    put(&raw, "landing/events/b.jsonl", ndjson(200, 100)).await;
    let mut tsv = String::from("id\tname\temail\n");
    for i in 300..310 {
        tsv.push_str(&format!("{i}\tTab, Person\tuser{i}@example.com\n"));
    }
    put(&raw, "landing/events/c.tsv", tsv).await;

    let pipes = Registry::default()
        .get("csv")
        .unwrap()
        .with_option("delimiter", "||")
        .unwrap();
    let source = S3Source::builder(connection(&server, "landing"))
        .with_stream(S3StreamConfig::new("orders", "orders").with_plugin(pipes))
        .with_stream(S3StreamConfig::new("events", "events").with_schema_merging(true))
        .build()
        .unwrap();
    let shape =
        RecordShape::Flattened(EnvelopeColumns::with_prefix("_airbyte_").with_id("_airbyte_ab_id"));
    let sink = S3Sink::builder(connection(&server, "out-csv"))
        .with_format(Registry::default().get("csv").unwrap())
        .with_encode_options(
            EncodeOptions::default()
                .with_codec("gzip")
                .with_shape(shape),
        )
        .build()
        .unwrap();
    let state = ObjectStoreStateStore::new(Arc::clone(&raw), Path::from("state/csv"));
    let mut pipeline = Pipeline::new("csv-out", source, sink, state).unwrap();
    let report = pipeline.run().await.unwrap();
    assert_eq!(report.rows, 610);

    let written = keys(&raw, "out-csv").await;
    let data: Vec<&String> = written.iter().filter(|k| k.ends_with(".csv.gz")).collect();
    assert_eq!(data.len(), 2, "{written:?}");
    let root = server.bucket_dir(server.bucket());
    let out = s3conn_testkit::run_python(
        r#"
import sys, json, duckdb, uuid
result = {}
for path in sys.argv[1:]:
    rel = duckdb.sql(f"SELECT * FROM read_csv('{path}', header=true, all_varchar=true)")
    cols = [d[0] for d in rel.description]
    rows = [dict(zip(cols, r)) for r in rel.fetchall()]
    for r in rows:
        uuid.UUID(r["_airbyte_ab_id"])
    name = "orders" if "/orders/" in path else "events"
    result[name] = {"cols": cols, "rows": rows}
print(json.dumps(result))
"#,
        &data
            .iter()
            .map(|k| root.join(k.as_str()).to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let seen: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let order_cols: Vec<&str> = seen["orders"]["cols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(
        order_cols,
        [
            "_airbyte_ab_id",
            "_airbyte_emitted_at",
            "id",
            "customer",
            "total"
        ]
    );
    let orders = seen["orders"]["rows"].as_array().unwrap();
    assert_eq!(orders.len(), 300);
    let row = orders.iter().find(|r| r["id"] == "7").unwrap();
    assert_eq!(row["customer"], "Zoë || 7\nsecond line");
    assert_eq!(row["total"], "21.25");
    let events = seen["events"]["rows"].as_array().unwrap();
    assert_eq!(events.len(), 310);
    let mut ids: Vec<u64> = events
        .iter()
        .map(|r| r["id"].as_str().unwrap().parse().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..310).collect::<Vec<_>>());
    let t = events.iter().find(|r| r["id"] == "305").unwrap();
    assert_eq!(t["name"], "Tab, Person");
    assert!(t["props"].is_null(), "columns a TSV file lacks are null");
    let e = events.iter().find(|r| r["id"] == "5").unwrap();
    let props: serde_json::Value = serde_json::from_str(e["props"].as_str().unwrap()).unwrap();
    assert_eq!(props, event(5)["props"], "nested values are JSON in CSV");
    assert_eq!(e["name"], event(5)["name"]);

    // The envelope shape: NDJSON whose data column holds each record as JSON.
    let source = S3Source::builder(connection(&server, "landing"))
        .with_stream(S3StreamConfig::new("events", "events"))
        .build()
        .unwrap();
    let sink = S3Sink::builder(connection(&server, "out-envelope"))
        .with_format(Registry::default().get("ndjson").unwrap())
        .with_encode_options(
            EncodeOptions::default().with_shape(RecordShape::Envelope(EnvelopeColumns::default())),
        )
        .build()
        .unwrap();
    let state = ObjectStoreStateStore::new(Arc::clone(&raw), Path::from("state/envelope"));
    let mut pipeline = Pipeline::new("envelope", source, sink, state)
        .unwrap()
        .with_mode("events", SyncMode::FullRefresh);
    assert_eq!(pipeline.run().await.unwrap().rows, 310);
    let mut records = Vec::new();
    for key in keys(&raw, "out-envelope/events").await {
        let key: String = key;
        for line in String::from_utf8(get(&raw, &key).await.to_vec())
            .unwrap()
            .lines()
        {
            let envelope: serde_json::Value = serde_json::from_str(line).unwrap();
            let names: Vec<&String> = envelope.as_object().unwrap().keys().collect();
            assert_eq!(names, ["_s3conn_id", "_s3conn_emitted_at", "_s3conn_data"]);
            let data: serde_json::Value =
                serde_json::from_str(envelope["_s3conn_data"].as_str().unwrap()).unwrap();
            records.push(data);
        }
    }
    records.sort_by_key(|r| r["id"].as_u64());
    assert_eq!(records.len(), 310);
    assert_eq!(records[42]["email"], event(42)["email"]);
    assert_eq!(records[42]["tags"], event(42)["tags"]);
}
