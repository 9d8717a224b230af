//! Helpers shared by the integration tests: connections to the loopback server, realistic
//! event data, and an independent read-back of what a sink committed.

#![allow(
    dead_code,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use s3conn_core::auth::{Connection, ConnectionConfig};
use s3conn_core::layout::manifest::parse_manifest_file_name;
use s3conn_core::layout::{DeliveryLog, Manifest};
use s3conn_testkit::S3Server;
use serde_json::Value;

/// A connection to `bucket/prefix` on the loopback server, through s3conn-auth.
pub(crate) fn connection(server: &S3Server, prefix: &str) -> Connection {
    ConnectionConfig::s3(server.bucket())
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .with_static_credentials(server.access_key(), server.secret_key(), None)
        .with_prefix(prefix)
        .connect()
        .unwrap()
}

/// The same, over another store (a fault-injecting wrapper).
pub(crate) fn connection_over(
    store: Arc<dyn ObjectStore>,
    server: &S3Server,
    prefix: &str,
) -> Connection {
    Connection::new(
        store,
        Path::from(prefix),
        format!("s3://{}", server.bucket()),
    )
}

/// One realistic event as a JSON object: nested values, lists, nulls, unicode.
pub(crate) fn event(i: u64) -> Value {
    let kinds = ["page_view", "click", "signup", "purchase", "logout"];
    let names = ["Zoë", "Ana", "Björn", "李雷", "Olu", "Émile"];
    serde_json::json!({
        "id": i,
        "user_id": i % 997,
        "email": format!("user{}@example.com", i % 997),
        "name": names[(i % 6) as usize],
        "event": kinds[(i % 5) as usize],
        "amount": if i.is_multiple_of(7) { Value::Null } else { serde_json::json!((i % 1000) as f64 / 4.0) },
        "ts": format!("2024-11-{:02}T{:02}:{:02}:{:02}Z", 1 + i % 28, i % 24, i % 60, (i * 7) % 60),
        "props": { "page": format!("/p/{}", i % 50), "ref": if i.is_multiple_of(3) { Value::Null } else { Value::from("ads") } },
        "tags": ["a", if i.is_multiple_of(2) { "even" } else { "odd" }],
    })
}

/// NDJSON text of events `start..start + n`.
pub(crate) fn ndjson(start: u64, n: u64) -> String {
    let mut s = String::new();
    for i in start..start + n {
        s.push_str(&event(i).to_string());
        s.push('\n');
    }
    s
}

/// Gzip `data`.
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Put an object.
pub(crate) async fn put(store: &Arc<dyn ObjectStore>, key: &str, data: impl Into<Bytes>) {
    store
        .put(&Path::from(key), data.into().into())
        .await
        .unwrap();
}

/// The bytes of an object.
pub(crate) async fn get(store: &Arc<dyn ObjectStore>, key: &str) -> Bytes {
    store
        .get(&Path::from(key))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
}

/// Every key under `prefix`.
pub(crate) async fn keys(store: &Arc<dyn ObjectStore>, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = store
        .list(Some(&Path::from(prefix)))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    keys.sort();
    keys
}

/// The manifests under `root`, in dump order, read straight from the store.
pub(crate) async fn manifests(store: &Arc<dyn ObjectStore>, root: &str) -> Vec<Manifest> {
    let mut out = Vec::new();
    for key in keys(store, &format!("{root}/manifests")).await {
        let name = key.rsplit('/').next().unwrap();
        if parse_manifest_file_name(name).is_none() {
            continue;
        }
        out.push(Manifest::from_json(&get(store, &key).await).unwrap());
    }
    out
}

/// The live files of `table` after replaying the manifests under `root`, as bucket keys.
pub(crate) async fn live_files(
    store: &Arc<dyn ObjectStore>,
    bucket: &str,
    root: &str,
    table: &str,
) -> Vec<String> {
    let mut log = DeliveryLog::default();
    for m in manifests(store, root).await {
        log.apply(&m).unwrap();
    }
    let base = format!("s3://{bucket}/");
    log.files(table)
        .iter()
        .map(|uri| uri.strip_prefix(&base).unwrap().to_owned())
        .collect()
}

/// Read a Parquet object with the parquet crate's own reader (not s3conn's decoder).
pub(crate) async fn read_parquet(store: &Arc<dyn ObjectStore>, key: &str) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(get(store, key).await)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// Rows as JSON objects keyed by `id`, nulls dropped (so that "absent" and "null" compare
/// equal, as they do in every reader).
pub(crate) fn rows_by_id(batches: &[RecordBatch]) -> BTreeMap<u64, Value> {
    let mut w = arrow_json::LineDelimitedWriter::new(Vec::new());
    for b in batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
    let text = String::from_utf8(w.into_inner()).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let v = strip_nulls(serde_json::from_str(line).unwrap());
        let id = v["id"].as_u64().unwrap();
        assert!(out.insert(id, v).is_none(), "row {id} appears twice");
    }
    out
}

/// Expected rows for events `ids`, in the same normal form as [`rows_by_id`].
pub(crate) fn expected_rows(ids: impl IntoIterator<Item = u64>) -> BTreeMap<u64, Value> {
    ids.into_iter()
        .map(|i| (i, strip_nulls(event(i))))
        .collect()
}

pub(crate) fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

/// Every committed row of `table` under `root`, read back independently.
pub(crate) async fn committed_rows(
    store: &Arc<dyn ObjectStore>,
    bucket: &str,
    root: &str,
    table: &str,
) -> BTreeMap<u64, Value> {
    let mut batches = Vec::new();
    for key in live_files(store, bucket, root, table).await {
        batches.extend(read_parquet(store, &key).await);
    }
    rows_by_id(&batches)
}
