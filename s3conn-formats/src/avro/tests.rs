//! Tests of the Avro plugin: round trips, chunking, corrupt input, limits, skip policy.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use arrow_array::builder::{Int32Builder, ListBuilder, MapBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, DictionaryArray,
    FixedSizeBinaryArray, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, StructArray, Time32MillisecondArray, Time64MicrosecondArray,
    TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
    types::Int32Type,
};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use super::ocf;
use super::*;
use crate::error::Error;
use crate::plugin::{ErrorPolicy, StreamDecoder};

const UTC: &str = "+00:00";

/// Every supported kind of column, with nulls, unicode, a string over 64 KiB, nesting.
fn dataset(n: usize) -> RecordBatch {
    let long = "ü".repeat(40_000); // 80,000 bytes
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..n as i64));
    let small: ArrayRef = Arc::new(Int32Array::from_iter(
        (0..n).map(|i| (i % 5 != 0).then_some(i as i32 - 50)),
    ));
    let names: ArrayRef = Arc::new(StringArray::from_iter((0..n).map(|i| match i % 4 {
        0 => None,
        1 => Some(format!("Zoë 李雷 {i} 🎉")),
        2 if i % 8 == 2 => Some(long.clone()),
        _ => Some(String::new()),
    })));
    let flag: ArrayRef = Arc::new(BooleanArray::from_iter(
        (0..n).map(|i| (i % 3 != 0).then_some(i % 2 == 0)),
    ));
    let f32s: ArrayRef = Arc::new(Float32Array::from_iter_values(
        (0..n).map(|i| i as f32 / 3.0),
    ));
    let f64s: ArrayRef = Arc::new(Float64Array::from_iter(
        (0..n).map(|i| (i % 7 != 0).then_some(i as f64 * 1.5e10)),
    ));
    let bin: ArrayRef = Arc::new(BinaryArray::from_iter(
        (0..n).map(|i| (i % 6 != 0).then(|| vec![i as u8; i % 9])),
    ));
    let fixed: ArrayRef = Arc::new(
        FixedSizeBinaryArray::try_from_sparse_iter_with_size(
            (0..n).map(|i| (i % 4 != 1).then_some([i as u8, 1, 2, 3])),
            4,
        )
        .unwrap(),
    );
    let date: ArrayRef = Arc::new(Date32Array::from_iter(
        (0..n).map(|i| (i % 5 != 3).then_some(19_000 + i as i32)),
    ));
    let t_ms: ArrayRef = Arc::new(Time32MillisecondArray::from_iter_values(
        (0..n).map(|i| (i as i32 * 1234) % 86_400_000),
    ));
    let t_us: ArrayRef =
        Arc::new(Time64MicrosecondArray::from_iter((0..n).map(|i| {
            (i % 2 == 0).then_some(i as i64 * 1_234_567 % 86_400_000_000)
        })));
    let base = 1_732_700_000_000i64;
    let ts_ms_utc: ArrayRef = Arc::new(
        TimestampMillisecondArray::from_iter(
            (0..n).map(|i| (i % 9 != 0).then_some(base + i as i64)),
        )
        .with_timezone(UTC),
    );
    let ts_us_utc: ArrayRef = Arc::new(
        TimestampMicrosecondArray::from_iter_values((0..n).map(|i| base * 1000 - i as i64 * 7))
            .with_timezone(UTC),
    );
    let ts_ms_local: ArrayRef = Arc::new(TimestampMillisecondArray::from_iter_values(
        (0..n).map(|i| -base + i as i64),
    ));
    let ts_us_local: ArrayRef = Arc::new(TimestampMicrosecondArray::from_iter(
        (0..n).map(|i| (i % 4 != 2).then_some(base * 1000 + i as i64)),
    ));
    let ts_ns: ArrayRef = Arc::new(
        TimestampNanosecondArray::from_iter_values((0..n).map(|i| base * 1_000_000 + i as i64))
            .with_timezone(UTC),
    );
    let dec: ArrayRef = Arc::new(
        Decimal128Array::from_iter((0..n).map(|i| {
            (i % 10 != 4).then_some(if i % 2 == 0 {
                i as i128 * 12_345_678_901_234 + 1
            } else {
                -(i as i128) * 99_999_999_999_999_999
            })
        }))
        .with_precision_and_scale(20, 4)
        .unwrap(),
    );
    let inner = Fields::from(vec![
        Field::new("page", DataType::Utf8, true),
        Field::new("n", DataType::Int32, false),
    ]);
    let props: ArrayRef = Arc::new(StructArray::new(
        inner.clone(),
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
        } else {
            for j in 0..i % 4 {
                if j == 2 {
                    tags.values().append_null();
                } else {
                    tags.values().append_value(format!("t{j}"));
                }
            }
            tags.append(true);
        }
    }
    let tags: ArrayRef = Arc::new(tags.finish());
    let mut nested = ListBuilder::new(ListBuilder::new(Int32Builder::new()));
    for i in 0..n {
        for j in 0..i % 3 {
            for k in 0..j {
                nested.values().values().append_value(k as i32);
            }
            nested.values().append(true);
        }
        nested.append(true);
    }
    let nested: ArrayRef = Arc::new(nested.finish());
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
    let map: ArrayRef = Arc::new(map.finish());
    let dict: ArrayRef = Arc::new(
        (0..n)
            .map(|i| ["a", "b", "c"].get(i % 4).copied())
            .collect::<DictionaryArray<Int32Type>>(),
    );
    let deep: ArrayRef = Arc::new(StructArray::new(
        Fields::from(vec![Field::new("props", DataType::Struct(inner), true)]),
        vec![props.clone()],
        None,
    ));
    RecordBatch::try_from_iter_with_nullable([
        ("id", ids, false),
        ("small", small, true),
        ("name", names, true),
        ("flag", flag, true),
        ("f32", f32s, false),
        ("f64", f64s, true),
        ("bin", bin, true),
        ("fixed", fixed, true),
        ("date", date, true),
        ("t_ms", t_ms, false),
        ("t_us", t_us, true),
        ("ts_ms_utc", ts_ms_utc, true),
        ("ts_us_utc", ts_us_utc, false),
        ("ts_ms_local", ts_ms_local, false),
        ("ts_us_local", ts_us_local, true),
        ("ts_ns", ts_ns, false),
        ("amount", dec, true),
        ("props", props, true),
        ("tags", tags, true),
        ("nested", nested, false),
        ("attrs", map, true),
        ("dict", dict, true),
        ("deep", deep, false),
    ])
    .unwrap()
}

fn encode_with(format: &AvroFormat, options: &EncodeOptions, batches: &[RecordBatch]) -> Vec<u8> {
    let mut enc = format.encoder(batches[0].schema(), options).unwrap();
    let mut out = enc.take_output().to_vec();
    for b in batches {
        enc.write(b).unwrap();
        out.extend_from_slice(&enc.take_output());
    }
    out.extend_from_slice(&enc.finish().unwrap());
    assert_eq!(enc.bytes_written(), out.len() as u64);
    out
}

fn encode(codec: AvroCodec, batches: &[RecordBatch]) -> Vec<u8> {
    encode_with(
        &AvroFormat::default().with_block_bytes(64 << 10),
        &EncodeOptions::default().with_codec(codec.name()),
        batches,
    )
}

fn decoder_for(format: &AvroFormat, options: DecodeOptions) -> Box<dyn StreamDecoder> {
    match format.decoder(&DecodeInput::default(), &options).unwrap() {
        Decoder::Stream(d) => d,
        Decoder::Ranged(_) => panic!("avro is a stream format"),
    }
}

/// Decode `file` fed in chunks of `chunk` bytes; returns the batches and skipped rows.
fn decode_with(
    format: &AvroFormat,
    file: &[u8],
    chunk: usize,
    options: DecodeOptions,
) -> crate::Result<(Vec<RecordBatch>, u64)> {
    crate::testing::decode_chunked(format, &options, file, chunk)
}

fn decode(file: &[u8], chunk: usize, options: DecodeOptions) -> crate::Result<Vec<RecordBatch>> {
    decode_with(&AvroFormat::default(), file, chunk, options).map(|(b, _)| b)
}

/// Rows as text, column by column: independent of batch boundaries and of the names Arrow
/// gives map entries.
fn rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("∅");
    let mut out = Vec::new();
    for b in batches {
        let formatters: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..b.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    out
}

fn ids(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("id")
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

/// Types equal but for field metadata (arrow-avro names records in it), the names of map
/// entries, and dictionaries read back as their values.
fn same_type(want: &DataType, got: &DataType) -> bool {
    match (want, got) {
        (DataType::Map(..), DataType::Map(..)) => true,
        (DataType::Dictionary(_, v), other) => v.as_ref() == other,
        (DataType::Struct(a), DataType::Struct(b)) => {
            a.len() == b.len()
                && a.iter().zip(b.iter()).all(|(a, b)| {
                    a.name() == b.name()
                        && a.is_nullable() == b.is_nullable()
                        && same_type(a.data_type(), b.data_type())
                })
        }
        (DataType::List(a), DataType::List(b)) => {
            a.is_nullable() == b.is_nullable() && same_type(a.data_type(), b.data_type())
        }
        (a, b) => a == b,
    }
}

#[test]
fn every_codec_roundtrips_every_type() {
    let input = [dataset(300), dataset(77)];
    let expected = rows(&input);
    for codec in AvroCodec::ALL {
        let file = encode(codec, &input);
        let out = decode(
            &file,
            64 << 10,
            DecodeOptions::default().with_batch_size(128),
        )
        .unwrap();
        assert!(out.iter().all(|b| b.num_rows() <= 128), "{codec}");
        assert_eq!(rows(&out), expected, "{codec}");
        let schema = out[0].schema();
        for (want, got) in input[0].schema().fields().iter().zip(schema.fields()) {
            assert_eq!(want.name(), got.name());
            assert_eq!(want.is_nullable(), got.is_nullable(), "{}", want.name());
            assert!(
                same_type(want.data_type(), got.data_type()),
                "{}: {} became {}",
                want.name(),
                want.data_type(),
                got.data_type()
            );
        }
    }
}

#[test]
fn levels_and_checksums_write_readable_files() {
    let input = [dataset(50)];
    let expected = rows(&input);
    for (codec, level) in [
        ("deflate", 0),
        ("deflate", 9),
        ("xz", 0),
        ("xz", 9),
        ("zstd", -7),
        ("zstandard", 22),
        ("bzip2", 1),
    ] {
        let format = AvroFormat::default().with_zstd_checksum(true);
        let options = EncodeOptions::default()
            .with_codec(codec)
            .with_compression_level(level);
        format.check_encode_options(&options).unwrap();
        let file = encode_with(&format, &options, &input);
        let out = decode(&file, 1 << 20, DecodeOptions::default()).unwrap();
        assert_eq!(rows(&out), expected, "{codec} {level}");
    }
    // The format's own codec and level apply when the options name none.
    let format = AvroFormat::default()
        .with_codec(AvroCodec::Bzip2)
        .with_compression_level(3);
    let file = encode_with(&format, &EncodeOptions::default(), &input);
    assert!(
        file.windows(5).any(|w| w == b"bzip2"),
        "the header names the codec"
    );
    assert!(
        AvroFormat::default()
            .with_codec(AvroCodec::Snappy)
            .with_compression_level(3)
            .encoder(input[0].schema(), &EncodeOptions::default())
            .is_err()
    );
}

#[test]
fn the_default_codec_is_deflate() {
    let file = encode_with(
        &AvroFormat::default(),
        &EncodeOptions::default(),
        &[dataset(3)],
    );
    let (header, _) = ocf::parse_header(&file).unwrap().unwrap();
    assert_eq!(header.codec, AvroCodec::Deflate);
}

#[test]
fn bad_codecs_and_levels_are_refused_before_writing() {
    let format = AvroFormat::default();
    for (codec, level, needle) in [
        ("gzip", None, "not an Avro codec"),
        ("lz4", None, "null, deflate, snappy, bzip2, xz or zstandard"),
        ("deflate", Some(10), "outside the Avro deflate levels 0..=9"),
        ("xz", Some(-1), "outside"),
        ("zstd", Some(23), "outside"),
        ("snappy", Some(1), "has no levels"),
        ("null", Some(0), "has no levels"),
    ] {
        let mut options = EncodeOptions::default().with_codec(codec);
        if let Some(l) = level {
            options = options.with_compression_level(l);
        }
        let err = format.check_encode_options(&options).unwrap_err();
        assert!(
            matches!(err, Error::InvalidOption { .. }),
            "{codec}: {err:?}"
        );
        assert!(err.to_string().contains(needle), "{codec}: {err}");
        assert!(format.encoder(dataset(1).schema(), &options).is_err());
    }
    for ok in ["none", "uncompressed", "NULL", "zstd", "Snappy"] {
        format
            .check_encode_options(&EncodeOptions::default().with_codec(ok))
            .unwrap();
    }
}

#[test]
fn an_empty_file_is_a_header_and_reads_as_no_rows() {
    let schema = dataset(1).schema();
    for codec in AvroCodec::ALL {
        let mut enc = AvroFormat::default()
            .encoder(
                schema.clone(),
                &EncodeOptions::default().with_codec(codec.name()),
            )
            .unwrap();
        let file = enc.finish().unwrap();
        let (_, header_len) = ocf::parse_header(&file).unwrap().unwrap();
        assert_eq!(header_len, file.len(), "{codec}: header only");
        assert_eq!(enc.bytes_written(), file.len() as u64);
        for chunk in [1, 5, 1 << 20] {
            let out = decode(&file, chunk, DecodeOptions::default()).unwrap();
            assert!(out.is_empty(), "{codec}");
        }
    }
    let err = decode(b"", 1, DecodeOptions::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidFile { .. }), "{err}");
    assert!(err.to_string().contains("empty"), "{err}");
}

#[test]
fn any_chunking_gives_the_same_rows() {
    let input = [dataset(40)];
    let expected = rows(&input);
    let mut file = Vec::new();
    // Small blocks: many block boundaries inside a small file.
    let format = AvroFormat::default().with_block_bytes(300);
    for codec in [AvroCodec::Null, AvroCodec::Snappy] {
        file = encode_with(
            &format,
            &EncodeOptions::default().with_codec(codec.name()),
            &[input[0].slice(3, 6)],
        );
        let small = rows(&[input[0].slice(3, 6)]);
        for chunk in 1..=file.len() {
            let out = decode(&file, chunk, DecodeOptions::default().with_batch_size(5)).unwrap();
            assert_eq!(rows(&out), small, "{codec}, chunks of {chunk}");
        }
    }
    assert!(file.len() > 100);
    let file = encode(AvroCodec::Deflate, &input);
    for chunk in [1, 2, 3, 7, 100, 4096] {
        let out = decode(&file, chunk, DecodeOptions::default().with_batch_size(7)).unwrap();
        assert_eq!(rows(&out), expected, "chunks of {chunk}");
    }
}

#[test]
fn blocks_are_bounded_and_buffered_bytes_reported() {
    let format = AvroFormat::default().with_block_bytes(16 << 10);
    let batch = dataset(2000);
    let mut enc = format
        .encoder(batch.schema(), &EncodeOptions::default().with_codec("null"))
        .unwrap();
    let mut max_buffered = 0;
    let mut file = enc.take_output().to_vec();
    for i in 0..20 {
        enc.write(&batch.slice(i * 100, 100)).unwrap();
        max_buffered = max_buffered.max(enc.buffered_bytes());
        file.extend_from_slice(&enc.take_output());
    }
    // One row can hold the 80 KB string: a block closes at the row that crosses the mark.
    assert!(max_buffered < 16 << 10, "buffered {max_buffered}");
    enc.flush().unwrap();
    assert_eq!(enc.buffered_bytes(), 0);
    file.extend_from_slice(&enc.finish().unwrap());
    assert_eq!(enc.bytes_written(), file.len() as u64);
    assert!(enc.write(&batch).is_err(), "finished");
    let out = decode(&file, 1 << 16, DecodeOptions::default()).unwrap();
    assert_eq!(ids(&out), (0..2000).collect::<Vec<_>>());
}

#[test]
fn a_corrupt_header_is_an_invalid_file() {
    let file = encode(AvroCodec::Null, &[dataset(5)]);
    let (_, header_len) = ocf::parse_header(&file).unwrap().unwrap();
    let mut cases: Vec<(Vec<u8>, &str)> = vec![
        (b"PAR1not avro".to_vec(), "magic"),
        (b"Obj\x02".to_vec(), "magic"),
    ];
    // A schema that is not JSON.
    let mut bad = file.clone();
    let at = file.windows(8).position(|w| w == b"\"fields\"").unwrap();
    bad[at] = b'{';
    cases.push((bad, "schema"));
    // A codec nobody knows.
    let mut unknown = ocf::MAGIC.to_vec();
    ocf::write_long(&mut unknown, 2);
    ocf::write_bytes(&mut unknown, b"avro.schema");
    ocf::write_bytes(
        &mut unknown,
        br#"{"type":"record","name":"r","fields":[{"name":"a","type":"int"}]}"#,
    );
    ocf::write_bytes(&mut unknown, b"avro.codec");
    ocf::write_bytes(&mut unknown, b"lzo");
    ocf::write_long(&mut unknown, 0);
    unknown.extend_from_slice(&[0; 16]);
    cases.push((unknown, "codec `lzo`"));
    // No schema at all.
    let mut none = ocf::MAGIC.to_vec();
    ocf::write_long(&mut none, 0);
    none.extend_from_slice(&[0; 16]);
    cases.push((none, "no schema"));
    for (case, needle) in cases {
        for chunk in [1, 3, 1 << 20] {
            let err = decode(&case, chunk, DecodeOptions::default()).unwrap_err();
            assert!(
                matches!(err, Error::InvalidFile { .. } | Error::Schema { .. }),
                "{err:?}"
            );
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
    }
    assert!(header_len < file.len());
}

#[test]
fn a_bad_sync_marker_is_an_invalid_file() {
    let file = encode(AvroCodec::Deflate, &[dataset(50)]);
    let mut bad = file.clone();
    let last = bad.len() - 3;
    bad[last] ^= 0x55;
    let err = decode(&bad, 1000, DecodeOptions::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidFile { .. }), "{err:?}");
    assert!(err.to_string().contains("sync marker"), "{err}");
    // The decoder refuses further use after an error.
    let mut d = decoder_for(&AvroFormat::default(), DecodeOptions::default());
    assert!(d.decode(&bad).is_err() || d.finish().is_err());
    let err = d.decode(b"more").unwrap_err();
    assert!(err.to_string().contains("already failed"), "{err}");
    // Two files joined: the second header is not a block.
    let mut joined = file.clone();
    joined.extend_from_slice(&file);
    assert!(decode(&joined, 4096, DecodeOptions::default()).is_err());
}

#[test]
fn truncation_at_every_offset_is_an_error_never_a_panic() {
    for codec in [AvroCodec::Null, AvroCodec::Deflate, AvroCodec::Snappy] {
        let file = encode_with(
            &AvroFormat::default().with_block_bytes(200),
            &EncodeOptions::default().with_codec(codec.name()),
            &[0, 2, 4].map(|i| dataset(10).slice(3 + i, 2)),
        );
        let whole = decode(&file, 1 << 20, DecodeOptions::default()).unwrap();
        assert_eq!(ids(&whole), (3..9).collect::<Vec<_>>());
        // Avro has no footer: a file cut right after its header or a block is a valid,
        // shorter file. Anywhere else it is an error.
        let (_, mut boundary) = ocf::parse_header(&file).unwrap().unwrap();
        let mut boundaries = vec![(boundary, 0)];
        let mut rows_before = 0;
        while boundary < file.len() {
            let (count, size, head) = ocf::parse_block_head(&file[boundary..]).unwrap().unwrap();
            boundary += head + size as usize + 16;
            rows_before += count;
            boundaries.push((boundary, rows_before));
        }
        assert!(boundaries.len() > 3, "{codec}: several blocks");
        for cut in 0..file.len() {
            for chunk in [1, 64, 1 << 20] {
                let result = decode(&file[..cut], chunk, DecodeOptions::default());
                match boundaries.iter().find(|(b, _)| *b == cut) {
                    Some((_, rows)) => {
                        let out = result.unwrap();
                        assert_eq!(ids(&out), (3..3 + *rows).collect::<Vec<_>>());
                    }
                    None => {
                        let Err(err) = result else {
                            panic!("{codec}: a file cut at {cut} decoded");
                        };
                        assert!(
                            matches!(err, Error::InvalidFile { .. }),
                            "{codec} cut at {cut}: {err:?}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn flipped_bytes_never_panic() {
    // Rows 3..9 of the dataset: every kind of column, no 80 KB string.
    let file = encode(AvroCodec::Null, &[dataset(10).slice(3, 6)]);
    for i in 0..file.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut f = file.clone();
            f[i] ^= flip;
            for policy in [ErrorPolicy::Fail, ErrorPolicy::Skip] {
                let _ = decode(
                    &f,
                    997,
                    DecodeOptions::default()
                        .with_batch_size(6)
                        .with_error_policy(policy),
                );
            }
        }
    }
}

/// The head of the first block, right after the header: a declared row count and size.
fn with_block_head(file: &[u8], count: i64, size: i64) -> Vec<u8> {
    let (_, header_len) = ocf::parse_header(file).unwrap().unwrap();
    let mut out = file[..header_len].to_vec();
    ocf::write_long(&mut out, count);
    ocf::write_long(&mut out, size);
    out.extend_from_slice(&[0; 64]);
    out
}

#[test]
fn a_block_bomb_is_refused_before_it_is_buffered() {
    let file = encode(AvroCodec::Null, &[dataset(3)]);
    for (count, size, needle) in [
        (1, i64::MAX, "more than the limit"),
        (1, 65 << 20, "more than the limit"),
        (i64::MAX, 10, "rows"),
        (-1, 10, "declares -1 rows"),
        (1, -5, "declares 1 rows in -5 bytes"),
    ] {
        let bomb = with_block_head(&file, count, size);
        let err = decode(&bomb, 1 << 20, DecodeOptions::default()).unwrap_err();
        assert!(matches!(err, Error::InvalidFile { .. }), "{err:?}");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
}

#[test]
fn a_decompression_bomb_stops_at_the_limit() {
    // 8 MiB of zeros in a small deflate block: over a 1 MiB decompression limit.
    let schema = Arc::new(Schema::new(vec![Field::new("b", DataType::Binary, false)]));
    let batch = RecordBatch::try_new(
        schema,
        vec![Arc::new(BinaryArray::from_iter_values([vec![
            0u8;
            8 << 20
        ]]))],
    )
    .unwrap();
    for codec in AvroCodec::ALL {
        let file = encode_with(
            &AvroFormat::default(),
            &EncodeOptions::default().with_codec(codec.name()),
            std::slice::from_ref(&batch),
        );
        let format = AvroFormat::default().with_max_decompressed_block_bytes(1 << 20);
        let Err(err) = decode_with(&format, &file, 1 << 20, DecodeOptions::default()) else {
            panic!("{codec}: a block over the limit was decoded");
        };
        assert!(
            err.to_string().contains("more than 1048576 bytes"),
            "{codec}: {err}"
        );
        let small = AvroFormat::default().with_max_block_bytes(4096);
        if file.len() > 8192 {
            let Err(err) = decode_with(&small, &file, 1 << 20, DecodeOptions::default()) else {
                panic!("{codec}: a block over the limit was decoded");
            };
            assert!(
                err.to_string().contains("more than the limit"),
                "{codec}: {err}"
            );
        }
    }
}

/// A file of `{"id": long, "s": string}` rows written by hand: blocks of `rows`, where
/// `corrupt` turns a row into a bad datum.
fn handmade(blocks: &[Vec<(i64, Vec<u8>)>]) -> Vec<u8> {
    let schema = br#"{"type":"record","name":"r","fields":[{"name":"id","type":"long"},{"name":"s","type":"string"}]}"#;
    let mut out = ocf::MAGIC.to_vec();
    ocf::write_long(&mut out, 1);
    ocf::write_bytes(&mut out, b"avro.schema");
    ocf::write_bytes(&mut out, schema);
    ocf::write_long(&mut out, 0);
    out.extend_from_slice(&[9; 16]);
    for block in blocks {
        let mut data = Vec::new();
        for (id, s) in block {
            ocf::write_long(&mut data, *id);
            ocf::write_bytes(&mut data, s);
        }
        ocf::write_long(&mut out, block.len() as i64);
        ocf::write_long(&mut out, data.len() as i64);
        out.extend_from_slice(&data);
        out.extend_from_slice(&[9; 16]);
    }
    out
}

fn block(ids: std::ops::Range<i64>) -> Vec<(i64, Vec<u8>)> {
    ids.map(|i| (i, format!("row {i}").into_bytes())).collect()
}

#[test]
fn a_bad_record_is_reported_with_its_row_number() {
    // Row 26 (id 25) is not UTF-8: found when its batch is built.
    let mut second = block(20..30);
    second[5].1 = vec![0xff, 0xfe];
    let file = handmade(&[block(0..20), second, block(30..40)]);
    for (chunk, batch) in [(1, 4), (7, 8), (1 << 20, 1000)] {
        let err = decode(
            &file,
            chunk,
            DecodeOptions::default().with_batch_size(batch),
        )
        .unwrap_err();
        assert_eq!(err.line(), Some(26), "{err}");
        assert!(matches!(err, Error::Decode { format: "avro", .. }));
    }
    // A string whose length runs past the block: row 13 cannot be decoded at all.
    let mut data = handmade(&[block(0..20)]);
    let at = data.windows(6).position(|w| w == b"row 12").unwrap();
    data[at - 1] = 0x7e; // length 63: past the rest of the block
    let err = decode(&data, 100, DecodeOptions::default()).unwrap_err();
    assert_eq!(err.line(), Some(13), "{err}");
}

#[test]
fn skip_keeps_good_rows_and_counts_the_rest_of_a_bad_block() {
    let mut utf8 = block(20..30);
    utf8[5].1 = vec![0xff];
    let mut file = handmade(&[
        block(0..20),
        utf8,
        block(30..40),
        block(40..50),
        block(50..60),
    ]);
    // Break row 46 (id 45): its string length points past the block.
    let at = file.windows(6).position(|w| w == b"row 45").unwrap();
    file[at - 1] = 0x7e;
    for (chunk, batch) in [(1, 3), (13, 8), (1 << 20, 1000)] {
        let format = AvroFormat::default();
        let (out, skipped) = decode_with(
            &format,
            &file,
            chunk,
            DecodeOptions::default()
                .with_batch_size(batch)
                .with_error_policy(ErrorPolicy::Skip),
        )
        .unwrap();
        let expected: Vec<i64> = (0..60)
            .filter(|i| *i != 25 && !(45..50).contains(i))
            .collect();
        assert_eq!(ids(&out), expected, "chunk {chunk}, batch {batch}");
        assert_eq!(skipped, 1 + 5, "chunk {chunk}, batch {batch}");
        assert!(out.iter().all(|b| b.num_rows() <= batch));
    }
}

#[test]
fn skip_drops_a_block_whose_compressed_data_is_corrupt() {
    let format = AvroFormat::default().with_block_bytes(200);
    let input = dataset(30);
    let pieces: Vec<RecordBatch> = (0..6).map(|i| input.slice(i * 5, 5)).collect();
    let file = encode_with(
        &format,
        &EncodeOptions::default().with_codec("snappy"),
        &pieces,
    );
    // Flip a byte in the middle of the second block's data (its CRC then fails).
    let (_, header_len) = ocf::parse_header(&file).unwrap().unwrap();
    let (count1, size1, head1) = ocf::parse_block_head(&file[header_len..]).unwrap().unwrap();
    let second = header_len + head1 + size1 as usize + 16;
    let (count2, size2, head2) = ocf::parse_block_head(&file[second..]).unwrap().unwrap();
    let mut bad = file.clone();
    bad[second + head2 + size2 as usize / 2] ^= 0xff;
    let err = decode(&bad, 1 << 20, DecodeOptions::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidFile { .. }), "{err}");
    assert!(err.to_string().contains("block 2"), "{err}");
    let (out, skipped) = decode_with(
        &format,
        &bad,
        1 << 20,
        DecodeOptions::default().with_error_policy(ErrorPolicy::Skip),
    )
    .unwrap();
    assert_eq!(skipped, count2 as u64);
    let expected: Vec<i64> = (0..30)
        .filter(|i| !(count1..count1 + count2).contains(i))
        .collect();
    assert_eq!(ids(&out), expected);
}

#[test]
fn a_given_schema_projects_reorders_casts_and_fills_nulls() {
    let file = encode(AvroCodec::Snappy, &[dataset(20)]);
    let target: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("name", DataType::LargeUtf8, true),
        Field::new("id", DataType::Utf8, false),
        Field::new("missing", DataType::Int32, true),
        Field::new("small", DataType::Int64, true),
    ]));
    let out = decode(
        &file,
        333,
        DecodeOptions::default().with_schema(target.clone()),
    )
    .unwrap();
    assert_eq!(out[0].schema(), target);
    let got = rows(&out);
    assert_eq!(got.len(), 20);
    assert_eq!(got[1][1], "1");
    assert_eq!(got[1][2], "∅");
    assert_eq!(got[5][3], "∅");
    assert_eq!(got[6][3], "-44");
    assert!(got[1][0].starts_with("Zoë"));
    let strict = Arc::new(Schema::new(vec![Field::new(
        "nope",
        DataType::Int32,
        false,
    )]));
    let err = decode(&file, 333, DecodeOptions::default().with_schema(strict)).unwrap_err();
    assert!(
        err.to_string().contains("`nope` is not in the file"),
        "{err}"
    );
    let wrong = Arc::new(Schema::new(vec![Field::new(
        "props",
        DataType::Date32,
        true,
    )]));
    let err = decode(&file, 333, DecodeOptions::default().with_schema(wrong)).unwrap_err();
    assert!(err.to_string().contains("`props`"), "{err}");
}

#[test]
fn unsupported_arrow_types_are_schema_errors_naming_the_field() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("ok", DataType::Int32, true),
        Field::new("span", DataType::Duration(TimeUnit::Second), true),
    ]));
    let err = AvroFormat::default()
        .encoder(schema, &EncodeOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::Schema { .. }), "{err:?}");
    assert!(err.to_string().contains("`span`"), "{err}");
}

#[test]
fn a_batch_of_another_schema_is_refused() {
    let mut enc = AvroFormat::default()
        .encoder(dataset(1).schema(), &EncodeOptions::default())
        .unwrap();
    let other =
        RecordBatch::try_from_iter([("x", Arc::new(Int32Array::from(vec![1])) as ArrayRef)])
            .unwrap();
    let err = enc.write(&other).unwrap_err();
    assert!(err.to_string().contains("differs"), "{err}");
}

#[test]
fn the_header_carries_the_avro_schema() {
    let schema = dataset(1).schema();
    let enc = encode::AvroEncoder::new(
        schema,
        codec::BlockCompressor::new(AvroCodec::Null, None, false).unwrap(),
        1 << 20,
    )
    .unwrap();
    let avro: serde_json::Value = serde_json::from_str(enc.avro_schema()).unwrap();
    assert_eq!(avro["name"], "topLevelRecord");
    let field = |name: &str| {
        avro["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(field("ts_ns")["type"]["logicalType"], "timestamp-nanos");
    assert_eq!(
        field("ts_us_local")["type"][1]["logicalType"],
        "local-timestamp-micros"
    );
    assert_eq!(field("amount")["type"][1]["logicalType"], "decimal");
    assert_eq!(field("amount")["type"][1]["scale"], 4);
    assert_eq!(field("date")["type"][1]["logicalType"], "date");
    // Two structs of the same shape get different record names.
    let props = field("props")["type"][1]["name"].clone();
    let deep = field("deep")["type"]["fields"][0]["type"][1]["name"].clone();
    assert_ne!(props, deep);
}

/// Writes small files of every codec, written by this plugin, as seeds for the
/// `avro_decode` fuzz target (each prefixed with the target's control byte):
/// `cargo test -p s3conn-formats --lib write_fuzz_seeds -- --ignored`.
#[test]
#[ignore = "writes files into fuzz/seeds"]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/avro_decode");
    let format = AvroFormat::default().with_block_bytes(120);
    let pieces = [0, 2, 4].map(|i| dataset(10).slice(3 + i, 2));
    for (i, codec) in AvroCodec::ALL.iter().enumerate() {
        let file = encode_with(
            &format,
            &EncodeOptions::default().with_codec(codec.name()),
            &pieces,
        );
        let mut seed = vec![(i as u8 * 41) | 0x80];
        seed.extend_from_slice(&file);
        std::fs::write(dir.join(format!("s3conn-{codec}")), seed).unwrap();
    }
}

#[test]
fn a_union_of_several_types_reads_as_an_arrow_union() {
    let schema = br#"{"type":"record","name":"r","fields":[{"name":"id","type":"long"},{"name":"u","type":["null","int","string"]}]}"#;
    let mut file = ocf::MAGIC.to_vec();
    ocf::write_long(&mut file, 1);
    ocf::write_bytes(&mut file, b"avro.schema");
    ocf::write_bytes(&mut file, schema);
    ocf::write_long(&mut file, 0);
    file.extend_from_slice(&[3; 16]);
    let mut data = Vec::new();
    for i in 0..6i64 {
        ocf::write_long(&mut data, i);
        ocf::write_long(&mut data, i % 3);
        match i % 3 {
            1 => ocf::write_long(&mut data, i * 10),
            2 => ocf::write_bytes(&mut data, format!("s{i}").as_bytes()),
            _ => {}
        }
    }
    ocf::write_long(&mut file, 6);
    ocf::write_long(&mut file, data.len() as i64);
    file.extend_from_slice(&data);
    file.extend_from_slice(&[3; 16]);
    let out = decode(&file, 5, DecodeOptions::default()).unwrap();
    assert!(matches!(
        out[0].schema().field(1).data_type(),
        DataType::Union(..)
    ));
    assert_eq!(ids(&out), (0..6).collect::<Vec<_>>());
    let got = rows(&out);
    assert!(got[1][1].contains("10"), "{:?}", got[1]);
    assert!(got[2][1].contains("s2"), "{:?}", got[2]);
}

#[test]
fn a_header_over_the_block_limit_is_refused() {
    let mut file = ocf::MAGIC.to_vec();
    ocf::write_long(&mut file, 1);
    ocf::write_bytes(&mut file, b"big");
    ocf::write_bytes(&mut file, &[b'x'; 5000]);
    let format = AvroFormat::default().with_max_block_bytes(1024);
    for chunk in [1, 100, 1 << 20] {
        let Err(err) = decode_with(&format, &file, chunk, DecodeOptions::default()) else {
            panic!("a header over the limit was read");
        };
        assert!(
            err.to_string().contains("header is longer than 1024"),
            "{err}"
        );
    }
}
