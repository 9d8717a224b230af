//! The Avro plugin against an independent implementation, fastavro, in both directions:
//! files the plugin writes with every codec are read by fastavro, and files fastavro writes
//! with every codec are read by the plugin; values are compared one by one.
//!
//! Both sides turn each row into the same plain JSON: timestamps, dates and times as the
//! integers Avro stores, decimals as strings, bytes as hex. Needs the Python environment with
//! fastavro, cramjam and backports.zstd (`S3CONN_PYTHON`, or the workspace's `.venv`).

#![cfg(feature = "avro")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Int32Builder, ListBuilder, MapBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray,
    Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, StructArray,
    Time32MillisecondArray, Time64MicrosecondArray, TimestampMicrosecondArray,
    TimestampMillisecondArray, TimestampNanosecondArray,
};
use arrow_schema::{DataType, Field, Fields, TimeUnit};
use s3conn_formats::{DecodeInput, DecodeOptions, Decoder, EncodeOptions, Registry};
use serde_json::{Value, json};

const CODECS: [&str; 6] = ["null", "deflate", "snappy", "bzip2", "xz", "zstandard"];

/// Turns fastavro's values into the plain JSON both sides compare, walking the schema.
const CONVERT: &str = r#"
import datetime, json
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
NAIVE_EPOCH = datetime.datetime(1970, 1, 1)
NAMED = {}

def conv(s, v):
    if isinstance(s, list):
        if v is None:
            return None
        branches = [b for b in s if b != 'null']
        assert len(branches) == 1, s
        return conv(branches[0], v)
    if isinstance(s, str):
        if s in NAMED:
            return conv(NAMED[s], v)
        s = {'type': s}
    t = s['type']
    if isinstance(t, (dict, list)):
        return conv(t, v)
    if v is None:
        return None
    if 'name' in s and t in ('record', 'fixed', 'enum'):
        NAMED[s['name']] = s
    lt = s.get('logicalType')
    if lt in ('timestamp-millis', 'local-timestamp-millis', 'timestamp-micros', 'local-timestamp-micros'):
        unit = datetime.timedelta(milliseconds=1) if 'millis' in lt else datetime.timedelta(microseconds=1)
        base = EPOCH if lt.startswith('timestamp') else NAIVE_EPOCH
        return (v - base) // unit
    if lt == 'date':
        return (v - datetime.date(1970, 1, 1)).days
    if lt == 'time-millis':
        return ((v.hour * 60 + v.minute) * 60 + v.second) * 1000 + v.microsecond // 1000
    if lt == 'time-micros':
        return ((v.hour * 60 + v.minute) * 60 + v.second) * 1000000 + v.microsecond
    if lt == 'decimal':
        return format(v, 'f')
    if t in ('bytes', 'fixed'):
        return v.hex()
    if t == 'record':
        return {f['name']: conv(f['type'], v[f['name']]) for f in s['fields']}
    if t == 'array':
        return [conv(s['items'], x) for x in v]
    if t == 'map':
        return {k: conv(s['values'], x) for k, x in v.items()}
    return v
"#;

/// Reads every file named on the command line with fastavro; prints one JSON line per row,
/// after a line with the file's codec.
const READ: &str = r#"
import sys, fastavro
for path in sys.argv[1:]:
    with open(path, 'rb') as fo:
        r = fastavro.reader(fo)
        print(json.dumps({'file': path, 'codec': r.codec}))
        for rec in r:
            print(json.dumps(conv(r.writer_schema, rec)))
"#;

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("s3conn-avro-readers-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The rows of the plugin's test data: every kind of column the writer maps.
fn dataset(n: usize) -> RecordBatch {
    let long = "ü".repeat(40_000);
    let base = 1_732_700_000_000i64;
    let inner = Fields::from(vec![
        Field::new("page", DataType::Utf8, true),
        Field::new("n", DataType::Int32, false),
    ]);
    let props: ArrayRef = Arc::new(StructArray::new(
        inner,
        vec![
            Arc::new(StringArray::from_iter(
                (0..n).map(|i| (i % 3 != 1).then(|| format!("/p/{i}"))),
            )),
            Arc::new(Int32Array::from_iter_values((0..n).map(|i| i as i32))),
        ],
        Some((0..n).map(|i| i % 11 != 5).collect()),
    ));
    let mut tags = ListBuilder::new(StringBuilder::new());
    for i in 0..n {
        if i % 13 == 6 {
            tags.append_null();
            continue;
        }
        for j in 0..i % 4 {
            if j == 2 {
                tags.values().append_null();
            } else {
                tags.values().append_value(format!("t{j}"));
            }
        }
        tags.append(true);
    }
    let mut map = MapBuilder::new(None, StringBuilder::new(), Int32Builder::new());
    for i in 0..n {
        if i % 8 == 3 {
            map.append(false).unwrap();
            continue;
        }
        for j in 0..i % 3 {
            map.keys().append_value(format!("k{j}"));
            if j == 1 {
                map.values().append_null();
            } else {
                map.values().append_value(j as i32);
            }
        }
        map.append(true).unwrap();
    }
    let columns: Vec<(&str, ArrayRef, bool)> = vec![
        (
            "id",
            Arc::new(Int64Array::from_iter_values(0..n as i64)),
            false,
        ),
        (
            "small",
            Arc::new(Int32Array::from_iter(
                (0..n).map(|i| (i % 5 != 0).then_some(i as i32 - 50)),
            )),
            true,
        ),
        (
            "name",
            Arc::new(StringArray::from_iter((0..n).map(|i| match i % 4 {
                0 => None,
                1 => Some(format!("Zoë 李雷 {i} 🎉")),
                2 if i % 8 == 2 => Some(long.clone()),
                _ => Some(String::new()),
            }))),
            true,
        ),
        (
            "flag",
            Arc::new(BooleanArray::from_iter(
                (0..n).map(|i| (i % 3 != 0).then_some(i % 2 == 0)),
            )),
            true,
        ),
        (
            "f32",
            Arc::new(Float32Array::from_iter_values(
                (0..n).map(|i| i as f32 / 3.0),
            )),
            false,
        ),
        (
            "f64",
            Arc::new(Float64Array::from_iter(
                (0..n).map(|i| (i % 7 != 0).then_some(i as f64 * 1.5e10 + 0.25)),
            )),
            true,
        ),
        (
            "bin",
            Arc::new(BinaryArray::from_iter(
                (0..n).map(|i| (i % 6 != 0).then(|| vec![i as u8; i % 9])),
            )),
            true,
        ),
        (
            "fixed",
            Arc::new(
                FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                    (0..n).map(|i| (i % 4 != 1).then_some([i as u8, 1, 2, 3])),
                    4,
                )
                .unwrap(),
            ),
            true,
        ),
        (
            "date",
            Arc::new(Date32Array::from_iter((0..n).map(|i| {
                (i % 5 != 3).then_some(19_000 + i as i32 * 37 - 40_000)
            }))),
            true,
        ),
        (
            "t_ms",
            Arc::new(Time32MillisecondArray::from_iter_values(
                (0..n).map(|i| (i as i32 * 1234) % 86_400_000),
            )),
            false,
        ),
        (
            "t_us",
            Arc::new(Time64MicrosecondArray::from_iter((0..n).map(|i| {
                (i % 2 == 0).then_some(i as i64 * 1_234_567 % 86_400_000_000)
            }))),
            true,
        ),
        (
            "ts_ms_utc",
            Arc::new(
                TimestampMillisecondArray::from_iter(
                    (0..n).map(|i| (i % 9 != 0).then_some(base + i as i64 * 999_983)),
                )
                .with_timezone("+00:00"),
            ),
            true,
        ),
        (
            "ts_us_utc",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    (0..n).map(|i| base * 1000 - i as i64 * 7_777_777),
                )
                .with_timezone("+00:00"),
            ),
            false,
        ),
        (
            "ts_ms_local",
            Arc::new(TimestampMillisecondArray::from_iter_values(
                (0..n).map(|i| -base + i as i64),
            )),
            false,
        ),
        (
            "ts_us_local",
            Arc::new(TimestampMicrosecondArray::from_iter(
                (0..n).map(|i| (i % 4 != 2).then_some(base * 1000 + i as i64)),
            )),
            true,
        ),
        (
            "ts_ns",
            Arc::new(
                TimestampNanosecondArray::from_iter_values(
                    (0..n).map(|i| base * 1_000_000 + i as i64),
                )
                .with_timezone("+00:00"),
            ),
            false,
        ),
        (
            "amount",
            Arc::new(
                Decimal128Array::from_iter((0..n).map(|i| {
                    (i % 10 != 4).then_some(if i % 2 == 0 {
                        i as i128 * 12_345_678_901_234 + 1
                    } else {
                        -(i as i128) * 99_999_999_999_999_999
                    })
                }))
                .with_precision_and_scale(20, 4)
                .unwrap(),
            ),
            true,
        ),
        ("props", props, true),
        ("tags", Arc::new(tags.finish()), true),
        ("attrs", Arc::new(map.finish()), true),
    ];
    RecordBatch::try_from_iter_with_nullable(columns).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One value as plain JSON (the same conventions as the Python side).
fn to_json(array: &dyn Array, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Boolean => json!(array.as_boolean().value(row)),
        DataType::Int32 => json!(array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => json!(array.as_primitive::<Int64Type>().value(row)),
        DataType::Float32 => json!(f64::from(array.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => json!(array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => json!(array.as_string::<i32>().value(row)),
        DataType::Binary => json!(hex(array.as_binary::<i32>().value(row))),
        DataType::FixedSizeBinary(_) => json!(hex(array.as_fixed_size_binary().value(row))),
        DataType::Date32 => json!(array.as_primitive::<Date32Type>().value(row)),
        DataType::Time32(TimeUnit::Millisecond) => {
            json!(array.as_primitive::<Time32MillisecondType>().value(row))
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            json!(array.as_primitive::<Time64MicrosecondType>().value(row))
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            json!(array.as_primitive::<TimestampMillisecondType>().value(row))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            json!(array.as_primitive::<TimestampMicrosecondType>().value(row))
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            json!(array.as_primitive::<TimestampNanosecondType>().value(row))
        }
        DataType::Decimal128(..) => {
            json!(array.as_primitive::<Decimal128Type>().value_as_string(row))
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            Value::Object(
                fields
                    .iter()
                    .zip(s.columns())
                    .map(|(f, c)| (f.name().clone(), to_json(c, row)))
                    .collect(),
            )
        }
        DataType::List(_) => {
            let values = array.as_list::<i32>().value(row);
            Value::Array((0..values.len()).map(|i| to_json(&values, i)).collect())
        }
        DataType::Map(..) => {
            let entries = array.as_map().value(row);
            let keys = entries.column(0).as_string::<i32>();
            Value::Object(
                (0..entries.len())
                    .map(|i| (keys.value(i).to_owned(), to_json(entries.column(1), i)))
                    .collect(),
            )
        }
        DataType::Dictionary(..) => {
            let dict = array.as_any_dictionary();
            let key = dict.normalized_keys()[row];
            to_json(dict.values(), key)
        }
        other => panic!("the test does not compare {other}"),
    }
}

fn rows_json(batches: &[RecordBatch]) -> Vec<Value> {
    let mut out = Vec::new();
    for b in batches {
        for row in 0..b.num_rows() {
            out.push(Value::Object(
                b.schema()
                    .fields()
                    .iter()
                    .zip(b.columns())
                    .map(|(f, c)| (f.name().clone(), to_json(c, row)))
                    .collect(),
            ));
        }
    }
    out
}

/// JSON equality, except that floats may differ in their last bit: serde_json (without
/// `float_roundtrip`) does not parse every decimal float exactly.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn write_with_plugin(codec: &str, batches: &[RecordBatch], path: &Path) {
    let plugin = Registry::default().get("avro").unwrap();
    let options = EncodeOptions::default().with_codec(codec);
    plugin.check_encode_options(&options).unwrap();
    let mut enc = plugin.encoder(batches[0].schema(), &options).unwrap();
    let mut file = enc.take_output().to_vec();
    for b in batches {
        enc.write(b).unwrap();
        file.extend_from_slice(&enc.take_output());
    }
    file.extend_from_slice(&enc.finish().unwrap());
    std::fs::write(path, file).unwrap();
}

fn read_with_plugin(path: &Path) -> Vec<RecordBatch> {
    let plugin = Registry::default()
        .for_path(&path.to_string_lossy())
        .unwrap()
        .plugin;
    let Decoder::Stream(mut d) = plugin
        .decoder(
            &DecodeInput::default(),
            &DecodeOptions::default().with_batch_size(1000),
        )
        .unwrap()
    else {
        panic!("avro is a stream format")
    };
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    for chunk in bytes.chunks(65_536) {
        d.decode(chunk).unwrap();
        while let Some(b) = d.next_batch() {
            out.push(b);
        }
    }
    d.finish().unwrap();
    while let Some(b) = d.next_batch() {
        out.push(b);
    }
    out
}

/// fastavro's rows of each file, by file.
fn read_with_fastavro(paths: &[PathBuf]) -> Vec<(String, Vec<Value>)> {
    let args: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = s3conn_testkit::run_python(&format!("{CONVERT}\n{READ}"), &args);
    let mut files: Vec<(String, Vec<Value>)> = Vec::new();
    for line in out.lines() {
        let value: Value = serde_json::from_str(line).unwrap();
        if let Some(codec) = value.get("codec").and_then(Value::as_str)
            && value.get("file").is_some()
        {
            files.push((codec.to_owned(), Vec::new()));
        } else {
            files.last_mut().unwrap().1.push(value);
        }
    }
    files
}

#[test]
fn fastavro_reads_what_the_plugin_writes_with_every_codec() {
    let dir = scratch("plugin-writes");
    let input = vec![dataset(700), dataset(333)];
    let expected = rows_json(&input);
    let paths: Vec<PathBuf> = CODECS
        .iter()
        .map(|codec| {
            let path = dir.join(format!("{codec}.avro"));
            write_with_plugin(codec, &input, &path);
            path
        })
        .collect();
    let files = read_with_fastavro(&paths);
    assert_eq!(files.len(), CODECS.len());
    for ((codec, rows), want) in files.iter().zip(CODECS) {
        assert_eq!(codec, want);
        assert_eq!(rows.len(), expected.len(), "{codec}");
        for (i, (got, want)) in rows.iter().zip(&expected).enumerate() {
            assert!(same(got, want), "{codec}: row {i}:\n{got}\n{want}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Writes the same records with fastavro in every codec; prints the records as JSON.
const WRITE: &str = r#"
import sys, datetime, decimal, fastavro
out = sys.argv[1]
schema = {
  'type': 'record', 'name': 'Event', 'namespace': 'com.example',
  'fields': [
    {'name': 'id', 'type': 'long'},
    {'name': 'n', 'type': ['null', 'int'], 'default': None},
    {'name': 'ok', 'type': 'boolean'},
    {'name': 'ratio', 'type': 'float'},
    {'name': 'score', 'type': ['null', 'double']},
    {'name': 'name', 'type': ['null', 'string']},
    {'name': 'raw', 'type': 'bytes'},
    {'name': 'hash', 'type': {'type': 'fixed', 'name': 'Hash', 'size': 8}},
    {'name': 'kind', 'type': {'type': 'enum', 'name': 'Kind', 'symbols': ['VIEW', 'CLICK', 'BUY']}},
    {'name': 'day', 'type': {'type': 'int', 'logicalType': 'date'}},
    {'name': 'at_ms', 'type': ['null', {'type': 'long', 'logicalType': 'timestamp-millis'}]},
    {'name': 'at_us', 'type': {'type': 'long', 'logicalType': 'timestamp-micros'}},
    {'name': 'local_ms', 'type': {'type': 'long', 'logicalType': 'local-timestamp-millis'}},
    {'name': 'local_us', 'type': ['null', {'type': 'long', 'logicalType': 'local-timestamp-micros'}]},
    {'name': 'tod_ms', 'type': {'type': 'int', 'logicalType': 'time-millis'}},
    {'name': 'tod_us', 'type': {'type': 'long', 'logicalType': 'time-micros'}},
    {'name': 'price', 'type': ['null', {'type': 'bytes', 'logicalType': 'decimal', 'precision': 20, 'scale': 4}]},
    {'name': 'address', 'type': ['null', {'type': 'record', 'name': 'Address', 'fields': [
        {'name': 'city', 'type': 'string'},
        {'name': 'zip', 'type': ['null', 'string']},
        {'name': 'geo', 'type': {'type': 'record', 'name': 'Geo', 'fields': [
            {'name': 'lat', 'type': 'double'}, {'name': 'lon', 'type': 'double'}]}}]}]},
    {'name': 'tags', 'type': {'type': 'array', 'items': ['null', 'string']}},
    {'name': 'matrix', 'type': ['null', {'type': 'array', 'items': {'type': 'array', 'items': 'long'}}]},
    {'name': 'attrs', 'type': {'type': 'map', 'values': ['null', 'long']}},
    {'name': 'visits', 'type': {'type': 'array', 'items': {'type': 'record', 'name': 'Visit', 'fields': [
        {'name': 'page', 'type': 'string'}, {'name': 'ms', 'type': 'int'}]}}},
  ]}
UTC = datetime.timezone.utc
def record(i):
    return {
        'id': i,
        'n': None if i % 5 == 0 else i - 300,
        'ok': i % 2 == 0,
        'ratio': i / 8.0,
        'score': None if i % 7 == 3 else i * 1.25e-3,
        'name': None if i % 4 == 0 else ('Zoë 李雷 🎉 ' * (i % 3)) + str(i) if i % 50 else 'x' * 70000,
        'raw': bytes([i % 256]) * (i % 5),
        'hash': (i * 7919).to_bytes(8, 'big'),
        'kind': ['VIEW', 'CLICK', 'BUY'][i % 3],
        'day': datetime.date(1969, 12, 1) + datetime.timedelta(days=i * 13),
        'at_ms': None if i % 6 == 1 else datetime.datetime(2024, 11, 27, tzinfo=UTC) + datetime.timedelta(milliseconds=i * 1009),
        'at_us': datetime.datetime(1999, 1, 1, tzinfo=UTC) + datetime.timedelta(microseconds=i * 999983),
        'local_ms': datetime.datetime(2030, 6, 1, 12) + datetime.timedelta(milliseconds=i * 17),
        'local_us': None if i % 3 == 2 else datetime.datetime(1960, 2, 29) + datetime.timedelta(microseconds=i * 123457),
        'tod_ms': datetime.time(i % 24, i % 60, (i * 7) % 60, (i * 1000) % 1000000),
        'tod_us': datetime.time((i * 5) % 24, (i * 3) % 60, i % 60, (i * 4567) % 1000000),
        'price': None if i % 10 == 9 else decimal.Decimal(i * 12345678901 - 5 * 10**12).scaleb(-4),
        'address': None if i % 9 == 4 else {'city': 'Zürich %d' % i, 'zip': None if i % 2 else '80%02d' % (i % 100),
                                            'geo': {'lat': i / 3.0, 'lon': -i / 7.0}},
        'tags': [None if j == 1 else 't%d' % j for j in range(i % 4)],
        'matrix': None if i % 8 == 7 else [[j * k for k in range(j)] for j in range(i % 3)],
        'attrs': {('k%d' % j): (None if j == 2 else j * i) for j in range(i % 4)},
        'visits': [{'page': '/p/%d' % j, 'ms': j * i} for j in range(i % 3)],
    }
records = [record(i) for i in range(1200)]
for codec in ['null', 'deflate', 'snappy', 'bzip2', 'xz', 'zstandard']:
    with open('%s/%s.avro' % (out, codec), 'wb') as fo:
        fastavro.writer(fo, schema, records, codec=codec)
parsed = fastavro.parse_schema(schema)
for rec in records:
    print(json.dumps(conv(schema, rec)))
"#;

#[test]
fn the_plugin_reads_what_fastavro_writes_with_every_codec() {
    let dir = scratch("fastavro-writes");
    let out = s3conn_testkit::run_python(
        &format!("{CONVERT}\n{WRITE}"),
        &[&dir.display().to_string()],
    );
    let expected: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(expected.len(), 1200);
    for codec in CODECS {
        let batches = read_with_plugin(&dir.join(format!("{codec}.avro")));
        assert!(batches.len() > 1, "{codec}: several batches");
        let schema = batches[0].schema();
        let field = |name: &str| schema.field_with_name(name).unwrap().clone();
        assert!(!field("id").is_nullable());
        assert!(field("n").is_nullable());
        assert_eq!(
            field("at_ms").data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into()))
        );
        assert_eq!(
            field("local_us").data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, None)
        );
        assert_eq!(field("price").data_type(), &DataType::Decimal128(20, 4));
        assert_eq!(field("day").data_type(), &DataType::Date32);
        let got = rows_json(&batches);
        assert_eq!(got.len(), expected.len(), "{codec}");
        for (i, (got, want)) in got.iter().zip(&expected).enumerate() {
            assert!(same(got, want), "{codec}: row {i}:\n{got}\n{want}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
