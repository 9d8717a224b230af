//! Format plugins beside arrow-rs used directly, on the same data in the same run.
//!
//! `cargo bench -p s3conn-benches --bench formats`; see BENCHMARKS.md for the table and how
//! it is read.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use s3conn_formats::compression::Compression as FileCompression;
use s3conn_formats::csv::CsvFormat;
use s3conn_formats::json::JsonFormat;
use s3conn_formats::ndjson::NdjsonFormat;
use s3conn_formats::parquet::ParquetFormat;
use s3conn_formats::{
    DecodeInput, DecodeOptions, Decoder, EncodeOptions, FormatPlugin, RangedStep,
};

/// Events per input (see [`s3conn_benches::bench_events`]).
fn events() -> u64 {
    s3conn_benches::bench_events()
}
const CHUNK: usize = 256 << 10;
const BATCH: usize = 8192;

fn ndjson_decode(c: &mut Criterion) {
    let data = s3conn_benches::ndjson(events());
    let schema = s3conn_benches::schema(&data);
    let mut group = c.benchmark_group("ndjson_decode");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function(BenchmarkId::new("arrow-json", events()), |b| {
        b.iter(|| {
            let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
                .with_batch_size(BATCH)
                .build_decoder()
                .unwrap();
            let mut rows = 0;
            for chunk in data.chunks(CHUNK) {
                let mut rest = chunk;
                while !rest.is_empty() {
                    let n = decoder.decode(rest).unwrap();
                    rest = &rest[n..];
                    if !rest.is_empty() {
                        rows += decoder.flush().unwrap().map_or(0, |b| b.num_rows());
                    }
                }
            }
            rows += decoder.flush().unwrap().map_or(0, |b| b.num_rows());
            assert_eq!(rows as u64, events());
        })
    });
    for (name, options) in [
        (
            "s3conn",
            DecodeOptions::default().with_schema(schema.clone()),
        ),
        ("s3conn-inferred", DecodeOptions::default()),
    ] {
        group.bench_function(BenchmarkId::new(name, events()), |b| {
            b.iter(|| assert_eq!(decode_all(&NdjsonFormat, &options, &data) as u64, events()))
        });
    }
    group.finish();
}

fn ndjson_encode(c: &mut Criterion) {
    let data = s3conn_benches::ndjson(events());
    let schema = s3conn_benches::schema(&data);
    let batches = s3conn_benches::batches(&data, &schema, BATCH);
    let mut group = c.benchmark_group("ndjson_encode");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function(BenchmarkId::new("arrow-json", events()), |b| {
        b.iter(|| {
            let mut w = arrow_json::LineDelimitedWriter::new(Vec::with_capacity(data.len()));
            for batch in &batches {
                w.write(batch).unwrap();
            }
            w.finish().unwrap();
            w.into_inner().len()
        })
    });
    for (name, compression) in [
        ("s3conn", FileCompression::None),
        ("s3conn-gzip", FileCompression::Gzip),
        ("s3conn-zstd", FileCompression::Zstd),
    ] {
        group.bench_function(BenchmarkId::new(name, events()), |b| {
            b.iter(|| {
                let mut enc = NdjsonFormat
                    .encoder(
                        schema.clone(),
                        &EncodeOptions::default().with_compression(compression),
                    )
                    .unwrap();
                let mut total = 0;
                for batch in &batches {
                    enc.write(batch).unwrap();
                    total += enc.take_output().len();
                }
                total + enc.finish().unwrap().len()
            })
        });
    }
    group.finish();
}

fn parquet_props() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_bytes(Some(64 << 20))
        .set_max_row_group_row_count(Some(1 << 20))
        .build()
}

fn parquet_encode(c: &mut Criterion) {
    let data = s3conn_benches::ndjson(events());
    let schema = s3conn_benches::schema(&data);
    let batches = s3conn_benches::batches(&data, &schema, BATCH);
    let mut group = c.benchmark_group("parquet_encode");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function(BenchmarkId::new("arrow-rs", events()), |b| {
        b.iter(|| {
            let mut w =
                ArrowWriter::try_new(Vec::new(), schema.clone(), Some(parquet_props())).unwrap();
            for batch in &batches {
                w.write(batch).unwrap();
            }
            w.into_inner().unwrap().len()
        })
    });
    group.bench_function(BenchmarkId::new("s3conn", events()), |b| {
        b.iter(|| {
            let mut enc = ParquetFormat::default()
                .encoder(schema.clone(), &EncodeOptions::default())
                .unwrap();
            let mut total = 0;
            for batch in &batches {
                enc.write(batch).unwrap();
                total += enc.take_output().len();
            }
            total + enc.finish().unwrap().len()
        })
    });
    group.finish();
}

fn parquet_decode(c: &mut Criterion) {
    let data = s3conn_benches::ndjson(events());
    let schema = s3conn_benches::schema(&data);
    let batches = s3conn_benches::batches(&data, &schema, BATCH);
    let mut w = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(parquet_props())).unwrap();
    for batch in &batches {
        w.write(batch).unwrap();
    }
    let file = Bytes::from(w.into_inner().unwrap());
    let mut group = c.benchmark_group("parquet_decode");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function(BenchmarkId::new("arrow-rs", events()), |b| {
        b.iter(|| {
            let reader = ParquetRecordBatchReaderBuilder::try_new(file.clone())
                .unwrap()
                .with_batch_size(BATCH)
                .build()
                .unwrap();
            let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
            assert_eq!(rows as u64, events());
        })
    });
    group.bench_function(BenchmarkId::new("s3conn", events()), |b| {
        b.iter(|| {
            let Decoder::Ranged(mut d) = ParquetFormat::default()
                .decoder(
                    &DecodeInput::with_size(file.len() as u64),
                    &DecodeOptions::default().with_batch_size(BATCH),
                )
                .unwrap()
            else {
                unreachable!()
            };
            let mut rows = 0;
            loop {
                match d.try_decode().unwrap() {
                    RangedStep::NeedsData(ranges) => {
                        let parts = ranges
                            .iter()
                            .map(|r| file.slice(r.start as usize..r.end as usize))
                            .collect();
                        d.push_ranges(ranges, parts).unwrap();
                    }
                    RangedStep::Batch(b) => rows += b.num_rows(),
                    RangedStep::Finished => break,
                }
            }
            assert_eq!(rows as u64, events());
        })
    });
    group.finish();
}

/// The events without their nested columns: what CSV carries natively.
fn flat(batches: &[arrow_array::RecordBatch]) -> Vec<arrow_array::RecordBatch> {
    batches
        .iter()
        .map(|b| {
            let keep: Vec<usize> = b
                .schema()
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| !f.data_type().is_nested())
                .map(|(i, _)| i)
                .collect();
            b.project(&keep).unwrap()
        })
        .collect()
}

fn encode_all(
    plugin: &dyn FormatPlugin,
    options: &EncodeOptions,
    batches: &[arrow_array::RecordBatch],
) -> Vec<u8> {
    s3conn_benches::encode_all(plugin, options, batches)
}

fn decode_all(plugin: &dyn FormatPlugin, options: &DecodeOptions, data: &[u8]) -> usize {
    s3conn_benches::decode_all(plugin, &options.clone().with_batch_size(BATCH), data, CHUNK)
}

fn csv_decode(c: &mut Criterion) {
    let data = s3conn_benches::ndjson(events());
    let schema = s3conn_benches::schema(&data);
    let batches = flat(&s3conn_benches::batches(&data, &schema, BATCH));
    let schema = batches[0].schema();
    let csv = CsvFormat::csv();
    let text = encode_all(&csv, &EncodeOptions::default(), &batches);
    let multi = CsvFormat::csv().with_option("delimiter", "||").unwrap();
    let multi_text = String::from_utf8(text.clone()).unwrap().replace(',', "||");
    let mut group = c.benchmark_group("csv_decode");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function(BenchmarkId::new("arrow-csv", events()), |b| {
        b.iter(|| {
            let mut decoder = arrow_csv::ReaderBuilder::new(schema.clone())
                .with_header(true)
                .with_batch_size(BATCH)
                .build_decoder();
            let mut rows = 0;
            for chunk in text.chunks(CHUNK) {
                let mut rest = chunk;
                while !rest.is_empty() {
                    let n = decoder.decode(rest).unwrap();
                    rest = &rest[n..];
                    if !rest.is_empty() {
                        rows += decoder.flush().unwrap().map_or(0, |b| b.num_rows());
                    }
                }
            }
            rows += decoder.flush().unwrap().map_or(0, |b| b.num_rows());
            assert_eq!(rows as u64, events());
        })
    });
    let given = DecodeOptions::default().with_schema(schema.clone());
    group.bench_function(BenchmarkId::new("s3conn", events()), |b| {
        b.iter(|| assert_eq!(decode_all(&csv, &given, &text) as u64, events()))
    });
    group.bench_function(BenchmarkId::new("s3conn-inferred", events()), |b| {
        b.iter(|| {
            assert_eq!(
                decode_all(&csv, &DecodeOptions::default(), &text) as u64,
                events()
            )
        })
    });
    group.bench_function(
        BenchmarkId::new("s3conn-separator-of-two-bytes", events()),
        |b| {
            b.iter(|| {
                assert_eq!(
                    decode_all(multi.as_ref(), &given, multi_text.as_bytes()) as u64,
                    events()
                )
            })
        },
    );
    group.finish();
}

fn csv_encode(c: &mut Criterion) {
    let data = s3conn_benches::ndjson(events());
    let schema = s3conn_benches::schema(&data);
    let batches = flat(&s3conn_benches::batches(&data, &schema, BATCH));
    let size = encode_all(&CsvFormat::csv(), &EncodeOptions::default(), &batches).len();
    let mut group = c.benchmark_group("csv_encode");
    group.throughput(Throughput::Bytes(size as u64));
    group.bench_function(BenchmarkId::new("arrow-csv", events()), |b| {
        b.iter(|| {
            let mut w = arrow_csv::WriterBuilder::new()
                .with_header(true)
                .build(Vec::with_capacity(size));
            for batch in &batches {
                w.write(batch).unwrap();
            }
            w.into_inner().len()
        })
    });
    for (name, codec) in [("s3conn", None), ("s3conn-gzip", Some("gzip"))] {
        let mut options = EncodeOptions::default();
        if let Some(codec) = codec {
            options = options.with_codec(codec);
        }
        group.bench_function(BenchmarkId::new(name, events()), |b| {
            b.iter(|| encode_all(&CsvFormat::csv(), &options, &batches).len())
        });
    }
    group.finish();
}

fn json_array(c: &mut Criterion) {
    let data = s3conn_benches::ndjson(events());
    let schema = s3conn_benches::schema(&data);
    let batches = s3conn_benches::batches(&data, &schema, BATCH);
    let array = encode_all(&JsonFormat, &EncodeOptions::default(), &batches);
    let mut group = c.benchmark_group("json_array_decode");
    group.throughput(Throughput::Bytes(array.len() as u64));
    // The direct path reads the same records as NDJSON: arrow-json has no array reader.
    group.bench_function(BenchmarkId::new("arrow-json-lines", events()), |b| {
        b.iter(|| {
            let batches = s3conn_benches::batches(&data, &schema, BATCH).len() as u64;
            assert_eq!(batches, events().div_ceil(BATCH as u64))
        })
    });
    let given = DecodeOptions::default().with_schema(schema.clone());
    group.bench_function(BenchmarkId::new("s3conn", events()), |b| {
        b.iter(|| assert_eq!(decode_all(&JsonFormat, &given, &array) as u64, events()))
    });
    group.finish();
    let mut group = c.benchmark_group("json_array_encode");
    group.throughput(Throughput::Bytes(array.len() as u64));
    group.bench_function(BenchmarkId::new("arrow-json", events()), |b| {
        b.iter(|| {
            let mut w = arrow_json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow_json::writer::JsonArray>(Vec::with_capacity(array.len()));
            for batch in &batches {
                w.write(batch).unwrap();
            }
            w.finish().unwrap();
            w.into_inner().len()
        })
    });
    group.bench_function(BenchmarkId::new("s3conn", events()), |b| {
        b.iter(|| encode_all(&JsonFormat, &EncodeOptions::default(), &batches).len())
    });
    group.finish();
}

/// What each whole-file codec costs on top of plain NDJSON, at its default level.
fn text_codecs(c: &mut Criterion) {
    let data = s3conn_benches::ndjson(events());
    let schema = s3conn_benches::schema(&data);
    let batches = s3conn_benches::batches(&data, &schema, BATCH);
    let mut group = c.benchmark_group("ndjson_encode_codecs");
    group.throughput(Throughput::Bytes(data.len() as u64));
    for codec in ["none", "gzip", "zstd", "bzip2", "xz", "deflate"] {
        let options = EncodeOptions::default().with_codec(codec);
        group.bench_function(BenchmarkId::new(codec, events()), |b| {
            b.iter(|| encode_all(&NdjsonFormat, &options, &batches).len())
        });
    }
    group.finish();
}

/// Every Parquet codec, the plugin beside ArrowWriter with the same properties.
fn parquet_codecs(c: &mut Criterion) {
    use parquet::basic::{BrotliLevel, GzipLevel};
    let data = s3conn_benches::ndjson(events());
    let schema = s3conn_benches::schema(&data);
    let batches = s3conn_benches::batches(&data, &schema, BATCH);
    let mut group = c.benchmark_group("parquet_encode_codecs");
    group.throughput(Throughput::Bytes(data.len() as u64));
    for (name, codec) in [
        ("uncompressed", Compression::UNCOMPRESSED),
        ("snappy", Compression::SNAPPY),
        ("gzip", Compression::GZIP(GzipLevel::default())),
        ("lz4", Compression::LZ4_RAW),
        ("zstd", Compression::ZSTD(ZstdLevel::try_new(3).unwrap())),
        (
            "brotli",
            Compression::BROTLI(BrotliLevel::try_new(4).unwrap()),
        ),
    ] {
        let props = WriterProperties::builder()
            .set_compression(codec)
            .set_max_row_group_bytes(Some(64 << 20))
            .set_max_row_group_row_count(Some(1 << 20))
            .build();
        group.bench_function(
            BenchmarkId::new(format!("arrow-rs-{name}"), events()),
            |b| {
                b.iter(|| {
                    let mut w =
                        ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props.clone()))
                            .unwrap();
                    for batch in &batches {
                        w.write(batch).unwrap();
                    }
                    w.into_inner().unwrap().len()
                })
            },
        );
        let options = EncodeOptions::default().with_codec(name);
        group.bench_function(BenchmarkId::new(format!("s3conn-{name}"), events()), |b| {
            b.iter(|| encode_all(&ParquetFormat::default(), &options, &batches).len())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = ndjson_decode, ndjson_encode, parquet_encode, parquet_decode, csv_decode,
        csv_encode, json_array, text_codecs, parquet_codecs
}
criterion_main!(benches);
