//! Shared inputs for s3conn's benchmarks: realistic events as NDJSON and as Arrow batches.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

/// One event as NDJSON: nested values, a list, nulls, unicode.
pub fn event_line(i: u64) -> String {
    let names = ["Zoë", "Ana", "Björn", "李雷", "Olu", "Émile"];
    let kinds = ["page_view", "click", "signup", "purchase", "logout"];
    let name = names.get((i % 6) as usize).copied().unwrap_or_default();
    let kind = kinds.get((i % 5) as usize).copied().unwrap_or_default();
    let amount = if i.is_multiple_of(7) {
        "null".to_owned()
    } else {
        format!("{}", (i % 1000) as f64 / 4.0)
    };
    format!(
        "{{\"id\":{i},\"user_id\":{},\"email\":\"user{}@example.com\",\"name\":\"{name}\",\"event\":\"{kind}\",\"amount\":{amount},\"ts\":\"2024-11-{:02}T{:02}:{:02}:00Z\",\"props\":{{\"page\":\"/p/{}\",\"ref\":\"ads\"}},\"tags\":[\"a\",\"b\"]}}\n",
        i % 997,
        i % 997,
        1 + i % 28,
        i % 24,
        i % 60,
        i % 50
    )
}

/// `n` events as NDJSON.
pub fn ndjson(n: u64) -> Vec<u8> {
    (0..n).flat_map(|i| event_line(i).into_bytes()).collect()
}

/// The schema arrow-json infers for the events.
pub fn schema(data: &[u8]) -> SchemaRef {
    let values = data
        .split(|b| *b == b'\n')
        .take(1000)
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok());
    let schema = arrow_json::reader::infer_json_schema_from_iterator(values.map(Ok))
        .unwrap_or_else(|_| arrow_schema::Schema::empty());
    Arc::new(schema)
}

/// Decode NDJSON with arrow-json directly (the reference path).
pub fn batches(data: &[u8], schema: &SchemaRef, batch_size: usize) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let Ok(mut decoder) = arrow_json::ReaderBuilder::new(schema.clone())
        .with_batch_size(batch_size)
        .build_decoder()
    else {
        return out;
    };
    let mut rest = data;
    while !rest.is_empty() {
        let Ok(n) = decoder.decode(rest) else { break };
        rest = rest.get(n..).unwrap_or_default();
        if let Ok(Some(b)) = decoder.flush() {
            out.push(b);
        }
    }
    if let Ok(Some(b)) = decoder.flush() {
        out.push(b);
    }
    out
}
