//! The Avro plugin beside the two Avro engines used directly, on the same data in the same
//! run: arrow-avro (Arrow-native) and apache-avro (value by value, converted to and from
//! Arrow columns, which is the work the plugin does).
//!
//! `cargo bench -p s3conn-benches --bench avro`. Throughput is over the Avro file's size.
//! Every engine reads the same file (written by the plugin, one per codec).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::print_stderr
)]

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use apache_avro::types::Value;
use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, ListArray, RecordBatch, StructArray};
use arrow_avro::compression::CompressionCodec;
use arrow_avro::reader::ReaderBuilder;
use arrow_avro::writer::WriterBuilder;
use arrow_avro::writer::format::AvroOcfFormat;
use arrow_schema::{DataType, SchemaRef};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use s3conn_formats::avro::AvroFormat;
use s3conn_formats::{DecodeOptions, EncodeOptions};

/// Events per input (see [`s3conn_benches::bench_events`]).
fn events() -> u64 {
    s3conn_benches::bench_events()
}
const CHUNK: usize = 256 << 10;
const BATCH: usize = 8192;
const CODECS: [&str; 2] = ["null", "deflate"];

struct Data {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

fn data() -> Data {
    let ndjson = s3conn_benches::ndjson(events());
    let schema = s3conn_benches::schema(&ndjson);
    let batches = s3conn_benches::batches(&ndjson, &schema, BATCH);
    Data { schema, batches }
}

fn plugin_encode(data: &Data, codec: &str) -> Vec<u8> {
    let options = EncodeOptions::default().with_codec(codec);
    s3conn_benches::encode_all(&AvroFormat::default(), &options, &data.batches)
}

fn plugin_decode(file: &[u8]) -> usize {
    let options = DecodeOptions::default().with_batch_size(BATCH);
    s3conn_benches::decode_all(&AvroFormat::default(), &options, file, CHUNK)
}

fn arrow_avro_codec(codec: &str) -> Option<CompressionCodec> {
    match codec {
        "deflate" => Some(CompressionCodec::Deflate),
        _ => None,
    }
}

fn apache_codec(codec: &str) -> apache_avro::Codec {
    match codec {
        "deflate" => apache_avro::Codec::Deflate(apache_avro::DeflateSettings::default()),
        _ => apache_avro::Codec::Null,
    }
}

// ---- apache-avro: Avro values to Arrow columns and back -------------------------------

fn unwrap_union(v: &Value) -> &Value {
    match v {
        Value::Union(_, inner) => inner,
        other => other,
    }
}

/// A column of `dt` from the values of one field of many rows.
fn to_array(dt: &DataType, values: &[&Value]) -> ArrayRef {
    match dt {
        DataType::Int64 => {
            let mut b = Int64Builder::with_capacity(values.len());
            for v in values {
                match unwrap_union(v) {
                    Value::Long(x) => b.append_value(*x),
                    Value::Int(x) => b.append_value(i64::from(*x)),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Float64 => {
            let mut b = Float64Builder::with_capacity(values.len());
            for v in values {
                match unwrap_union(v) {
                    Value::Double(x) => b.append_value(*x),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(values.len());
            for v in values {
                match unwrap_union(v) {
                    Value::Boolean(x) => b.append_value(*x),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Utf8 => {
            let mut b = StringBuilder::with_capacity(values.len(), values.len() * 16);
            for v in values {
                match unwrap_union(v) {
                    Value::String(s) => b.append_value(s),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Struct(fields) => {
            let nulls: Vec<bool> = values
                .iter()
                .map(|v| matches!(unwrap_union(v), Value::Record(_)))
                .collect();
            let children = fields
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let child: Vec<&Value> = values
                        .iter()
                        .map(|v| match unwrap_union(v) {
                            Value::Record(fs) => &fs[i].1,
                            _ => &Value::Null,
                        })
                        .collect();
                    to_array(f.data_type(), &child)
                })
                .collect();
            Arc::new(StructArray::new(
                fields.clone(),
                children,
                Some(nulls.into()),
            ))
        }
        DataType::List(item) => {
            let mut lengths = Vec::with_capacity(values.len());
            let mut valid = Vec::with_capacity(values.len());
            let mut items = Vec::new();
            for v in values {
                match unwrap_union(v) {
                    Value::Array(xs) => {
                        lengths.push(xs.len());
                        valid.push(true);
                        items.extend(xs.iter());
                    }
                    _ => {
                        lengths.push(0);
                        valid.push(false);
                    }
                }
            }
            let child = to_array(item.data_type(), &items);
            Arc::new(ListArray::new(
                item.clone(),
                arrow_buffer::OffsetBuffer::from_lengths(lengths),
                child,
                Some(valid.into()),
            ))
        }
        other => panic!("the bench's converter does not handle {other}"),
    }
}

fn apache_decode(file: &[u8], schema: &SchemaRef) -> usize {
    let reader = apache_avro::Reader::new(file).unwrap();
    let mut rows = 0;
    let mut pending: Vec<Value> = Vec::with_capacity(BATCH);
    let flush = |pending: &mut Vec<Value>| {
        let columns = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let column: Vec<&Value> = pending
                    .iter()
                    .map(|v| match v {
                        Value::Record(fs) => &fs[i].1,
                        _ => &Value::Null,
                    })
                    .collect();
                to_array(f.data_type(), &column)
            })
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        pending.clear();
        batch.num_rows()
    };
    for value in reader {
        pending.push(value.unwrap());
        if pending.len() == BATCH {
            rows += flush(&mut pending);
        }
    }
    if !pending.is_empty() {
        rows += flush(&mut pending);
    }
    rows
}

/// One value of `array` at `row`, as the plugin's Avro schema types it (nullable fields
/// are `["null", T]` unions).
fn to_value(array: &dyn Array, row: usize, nullable: bool) -> Value {
    if nullable {
        return if array.is_null(row) {
            Value::Union(0, Box::new(Value::Null))
        } else {
            Value::Union(1, Box::new(to_value(array, row, false)))
        };
    }
    match array.data_type() {
        DataType::Int64 => Value::Long(array.as_primitive::<Int64Type>().value(row)),
        DataType::Float64 => Value::Double(array.as_primitive::<Float64Type>().value(row)),
        DataType::Boolean => Value::Boolean(array.as_boolean().value(row)),
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_owned()),
        DataType::Struct(fields) => {
            let s = array.as_struct();
            Value::Record(
                fields
                    .iter()
                    .zip(s.columns())
                    .map(|(f, c)| (f.name().clone(), to_value(c, row, f.is_nullable())))
                    .collect(),
            )
        }
        DataType::List(item) => {
            let list = array.as_list::<i32>();
            let values = list.value(row);
            Value::Array(
                (0..values.len())
                    .map(|i| to_value(&values, i, item.is_nullable()))
                    .collect(),
            )
        }
        other => panic!("the bench's converter does not handle {other}"),
    }
}

fn apache_encode(data: &Data, schema: &apache_avro::Schema, codec: &str) -> usize {
    let mut w = apache_avro::Writer::with_codec(schema, Vec::new(), apache_codec(codec)).unwrap();
    for batch in &data.batches {
        let fields = batch.schema_ref().fields().clone();
        for row in 0..batch.num_rows() {
            let record = Value::Record(
                fields
                    .iter()
                    .zip(batch.columns())
                    .map(|(f, c)| (f.name().clone(), to_value(c, row, f.is_nullable())))
                    .collect(),
            );
            w.append_value(record).unwrap();
        }
    }
    w.into_inner().unwrap().len()
}

// ---- the benchmarks -----------------------------------------------------------------------

fn avro_decode(c: &mut Criterion) {
    let data = data();
    for codec in CODECS {
        let file = plugin_encode(&data, codec);
        let mut group = c.benchmark_group(format!("avro_decode/{codec}"));
        group.throughput(Throughput::Bytes(file.len() as u64));
        group.bench_function(BenchmarkId::new("s3conn", events()), |b| {
            b.iter(|| assert_eq!(plugin_decode(&file) as u64, events()))
        });
        group.bench_function(BenchmarkId::new("arrow-avro", events()), |b| {
            b.iter(|| {
                let reader = ReaderBuilder::new()
                    .with_batch_size(BATCH)
                    .build(Cursor::new(&file[..]))
                    .unwrap();
                let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
                assert_eq!(rows as u64, events());
            })
        });
        group.bench_function(BenchmarkId::new("apache-avro", events()), |b| {
            b.iter(|| assert_eq!(apache_decode(&file, &data.schema) as u64, events()))
        });
        group.finish();
    }
}

fn avro_encode(c: &mut Criterion) {
    let data = data();
    for codec in CODECS {
        let file = plugin_encode(&data, codec);
        let schema = apache_avro::Reader::new(&file[..])
            .unwrap()
            .writer_schema()
            .clone();
        let mut group = c.benchmark_group(format!("avro_encode/{codec}"));
        group.throughput(Throughput::Bytes(file.len() as u64));
        group.bench_function(BenchmarkId::new("s3conn", events()), |b| {
            b.iter(|| plugin_encode(&data, codec).len())
        });
        group.bench_function(BenchmarkId::new("arrow-avro", events()), |b| {
            b.iter(|| {
                let mut w = WriterBuilder::new(data.schema.as_ref().clone())
                    .with_compression(arrow_avro_codec(codec))
                    .build::<_, AvroOcfFormat>(Vec::new())
                    .unwrap();
                for batch in &data.batches {
                    w.write(batch).unwrap();
                }
                w.finish().unwrap();
                w.into_inner().len()
            })
        });
        group.bench_function(BenchmarkId::new("apache-avro", events()), |b| {
            b.iter(|| apache_encode(&data, &schema, codec))
        });
        group.finish();
    }
}

/// The plugin alone with every codec, to choose its default: throughput over the size of the
/// uncompressed file, so that the codecs compare on the same scale.
fn avro_codecs(c: &mut Criterion) {
    let data = data();
    let plain = plugin_encode(&data, "null").len() as u64;
    for (direction, codecs) in [("encode", ALL_CODECS), ("decode", ALL_CODECS)] {
        let mut group = c.benchmark_group(format!("avro_codecs_{direction}"));
        group.throughput(Throughput::Bytes(plain));
        for codec in codecs {
            let file = plugin_encode(&data, codec);
            eprintln!(
                "{codec}: {} bytes ({:.1}% of null)",
                file.len(),
                100.0 * file.len() as f64 / plain as f64
            );
            group.bench_function(BenchmarkId::new(codec, events()), |b| match direction {
                "encode" => b.iter(|| plugin_encode(&data, codec).len()),
                _ => b.iter(|| assert_eq!(plugin_decode(&file) as u64, events())),
            });
        }
        group.finish();
    }
}

const ALL_CODECS: [&str; 6] = ["null", "deflate", "snappy", "zstandard", "bzip2", "xz"];

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = avro_decode, avro_encode, avro_codecs
}
criterion_main!(benches);
