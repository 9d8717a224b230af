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
use s3conn_formats::ndjson::NdjsonFormat;
use s3conn_formats::parquet::ParquetFormat;
use s3conn_formats::{
    DecodeInput, DecodeOptions, Decoder, EncodeOptions, FormatPlugin, RangedStep,
};

const EVENTS: u64 = 100_000;
const CHUNK: usize = 256 << 10;
const BATCH: usize = 8192;

fn ndjson_decode(c: &mut Criterion) {
    let data = s3conn_benches::ndjson(EVENTS);
    let schema = s3conn_benches::schema(&data);
    let mut group = c.benchmark_group("ndjson_decode");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function(BenchmarkId::new("arrow-json", EVENTS), |b| {
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
            assert_eq!(rows as u64, EVENTS);
        })
    });
    for (name, options) in [
        (
            "s3conn",
            DecodeOptions::default().with_schema(schema.clone()),
        ),
        ("s3conn-inferred", DecodeOptions::default()),
    ] {
        group.bench_function(BenchmarkId::new(name, EVENTS), |b| {
            b.iter(|| {
                let Decoder::Stream(mut decoder) = NdjsonFormat
                    .decoder(
                        &DecodeInput::default(),
                        &options.clone().with_batch_size(BATCH),
                    )
                    .unwrap()
                else {
                    unreachable!()
                };
                let mut rows = 0;
                for chunk in data.chunks(CHUNK) {
                    decoder.decode(chunk).unwrap();
                    while let Some(b) = decoder.next_batch() {
                        rows += b.num_rows();
                    }
                }
                decoder.finish().unwrap();
                while let Some(b) = decoder.next_batch() {
                    rows += b.num_rows();
                }
                assert_eq!(rows as u64, EVENTS);
            })
        });
    }
    group.finish();
}

fn ndjson_encode(c: &mut Criterion) {
    let data = s3conn_benches::ndjson(EVENTS);
    let schema = s3conn_benches::schema(&data);
    let batches = s3conn_benches::batches(&data, &schema, BATCH);
    let mut group = c.benchmark_group("ndjson_encode");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function(BenchmarkId::new("arrow-json", EVENTS), |b| {
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
        group.bench_function(BenchmarkId::new(name, EVENTS), |b| {
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
    let data = s3conn_benches::ndjson(EVENTS);
    let schema = s3conn_benches::schema(&data);
    let batches = s3conn_benches::batches(&data, &schema, BATCH);
    let mut group = c.benchmark_group("parquet_encode");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function(BenchmarkId::new("arrow-rs", EVENTS), |b| {
        b.iter(|| {
            let mut w =
                ArrowWriter::try_new(Vec::new(), schema.clone(), Some(parquet_props())).unwrap();
            for batch in &batches {
                w.write(batch).unwrap();
            }
            w.into_inner().unwrap().len()
        })
    });
    group.bench_function(BenchmarkId::new("s3conn", EVENTS), |b| {
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
    let data = s3conn_benches::ndjson(EVENTS);
    let schema = s3conn_benches::schema(&data);
    let batches = s3conn_benches::batches(&data, &schema, BATCH);
    let mut w = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(parquet_props())).unwrap();
    for batch in &batches {
        w.write(batch).unwrap();
    }
    let file = Bytes::from(w.into_inner().unwrap());
    let mut group = c.benchmark_group("parquet_decode");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function(BenchmarkId::new("arrow-rs", EVENTS), |b| {
        b.iter(|| {
            let reader = ParquetRecordBatchReaderBuilder::try_new(file.clone())
                .unwrap()
                .with_batch_size(BATCH)
                .build()
                .unwrap();
            let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
            assert_eq!(rows as u64, EVENTS);
        })
    });
    group.bench_function(BenchmarkId::new("s3conn", EVENTS), |b| {
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
            assert_eq!(rows as u64, EVENTS);
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = ndjson_decode, ndjson_encode, parquet_encode, parquet_decode
}
criterion_main!(benches);
