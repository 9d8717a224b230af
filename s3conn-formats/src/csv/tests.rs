#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_schema::TimeUnit;

use super::*;
use crate::compression::Compression;

fn format(options: &[(&str, &str)]) -> Arc<dyn FormatPlugin> {
    let mut plugin: Arc<dyn FormatPlugin> = Arc::new(CsvFormat::csv());
    for (k, v) in options {
        plugin = plugin.with_option(k, v).unwrap();
    }
    plugin
}

fn decoder(plugin: &dyn FormatPlugin, options: &DecodeOptions) -> Box<dyn StreamDecoder> {
    crate::testing::stream_decoder(plugin, options)
}

use crate::testing::decode_chunked;

fn decode(plugin: &dyn FormatPlugin, data: &str) -> RecordBatch {
    decode_with(plugin, &DecodeOptions::default(), data)
}

fn decode_with(plugin: &dyn FormatPlugin, options: &DecodeOptions, data: &str) -> RecordBatch {
    let (batches, _) = decode_chunked(plugin, options, data.as_bytes(), usize::MAX).unwrap();
    let schema = batches[0].schema();
    arrow_select::concat::concat_batches(&schema, &batches).unwrap()
}

fn strings(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
    let c = batch.column_by_name(column).unwrap();
    c.as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_owned))
        .collect()
}

fn names(batch: &RecordBatch) -> Vec<String> {
    batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

#[test]
fn separators_of_one_or_several_bytes_with_quotes() {
    let data = "id{s}name{s}note\n1{s}\"Zoë{s} the \"\"first\"\"\"{s}\"two\nlines\"\n2{s}Bo{s}\n";
    for sep in [",", "\t", "|", ";", "||", "~|~", "¦"] {
        let text = data.replace("{s}", sep);
        let plugin = format(&[("delimiter", sep)]);
        for chunk in [1, 2, 3, 7, usize::MAX] {
            let (batches, _) = decode_chunked(
                plugin.as_ref(),
                &DecodeOptions::default(),
                text.as_bytes(),
                chunk,
            )
            .unwrap();
            let b = arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap();
            assert_eq!(names(&b), ["id", "name", "note"], "{sep:?}");
            assert_eq!(
                strings(&b, "name"),
                [Some(format!("Zoë{sep} the \"first\"")), Some("Bo".into())],
                "{sep:?} chunk {chunk}"
            );
            assert_eq!(
                strings(&b, "note"),
                [Some("two\nlines".into()), None],
                "{sep:?} chunk {chunk}"
            );
            assert_eq!(b.column(0).as_primitive::<Int64Type>().values(), &[1, 2]);
        }
    }
    assert_eq!(
        format(&[("delimiter", "tab")]).name(),
        "csv",
        "a named separator"
    );
    assert!(CsvOptions::default().with_delimiter("").is_err());
    assert!(CsvOptions::default().with_delimiter("a\"b").is_err());
    assert!(CsvOptions::default().with_delimiter("\\q").is_err());
    assert_eq!(
        CsvOptions::default()
            .with_delimiter("\\x1f")
            .unwrap()
            .delimiter,
        [0x1f]
    );
}

#[test]
fn tsv_and_psv_are_csv_with_their_separators() {
    let registry = crate::Registry::default();
    let tsv = registry.for_path("a/b.tsv.gz").unwrap();
    assert_eq!(tsv.plugin.name(), "tsv");
    let b = decode(tsv.plugin.as_ref(), "a\tb\n1\tx,y\n");
    assert_eq!(strings(&b, "b"), [Some("x,y".into())]);
    let psv = registry.for_path("b.psv").unwrap();
    let b = decode(psv.plugin.as_ref(), "a|b\n1|x\n");
    assert_eq!(strings(&b, "b"), [Some("x".into())]);
}

#[test]
fn headers_present_absent_given_and_skipped_rows() {
    let data = "exported by a tool\n\n# a comment\n\u{feff}x,y\n1,2\n";
    // The byte-order mark only counts at the very start of the file.
    let plain = format(&[("skip_rows", "4"), ("comment", "#")]);
    let b = decode(plain.as_ref(), "\u{feff}x\nx\nx\nx\na,,a\n1,2,3\n");
    assert_eq!(names(&b), ["a", "column_2", "a_2"]);
    let b = decode(
        format(&[("skip_rows", "3"), ("comment", "#")]).as_ref(),
        data,
    );
    assert_eq!(names(&b), ["x", "y"]);
    let no_header = format(&[("header", "false")]);
    let b = decode(no_header.as_ref(), "1,x\n2,y\n");
    assert_eq!(names(&b), ["column_1", "column_2"]);
    assert_eq!(b.num_rows(), 2);
    let given = format(&[("columns", "id,label")]);
    let b = decode(given.as_ref(), "a,b\n1,x\n");
    assert_eq!(names(&b), ["id", "label"]);
    assert_eq!(b.num_rows(), 1);
    let given_no_header = format(&[("columns", "[\"id\", \"label\"]"), ("header", "false")]);
    let b = decode(given_no_header.as_ref(), "1,x\n");
    assert_eq!(names(&b), ["id", "label"]);
    // A BOM is dropped even when it arrives one byte at a time.
    let (batches, _) = decode_chunked(
        format(&[]).as_ref(),
        &DecodeOptions::default(),
        "\u{feff}id\n1\n".as_bytes(),
        1,
    )
    .unwrap();
    assert_eq!(names(&batches[0]), ["id"]);
}

#[test]
fn types_are_inferred_and_nulls_and_booleans_read() {
    let data = "i,f,d,ts,tz,b,s,z\n\
        1,1.5,2024-02-29,2024-01-01 10:00:00,2024-01-01T10:00:00+02:00,yes,x,007\n\
        NULL,2,,2024-01-01T11:00:00.25,2024-01-01T10:00:00Z,NO,,1\n";
    let plugin = format(&[
        ("null_values", "[\"\", \"NULL\"]"),
        ("true_values", "yes"),
        ("false_values", "no"),
    ]);
    let b = decode(plugin.as_ref(), data);
    let types: Vec<DataType> = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    assert_eq!(
        types,
        [
            DataType::Int64,
            DataType::Float64,
            DataType::Date32,
            DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            DataType::Boolean,
            DataType::Utf8,
            DataType::Utf8,
        ]
    );
    assert!(b.column(0).is_null(1));
    assert_eq!(b.column(1).as_primitive::<Float64Type>().value(1), 2.0);
    assert_eq!(
        b.column(2).as_primitive::<Date32Type>().value(0),
        19782,
        "2024-02-29"
    );
    assert!(b.column(2).is_null(1));
    let tz = b.column(4).as_primitive::<TimestampMicrosecondType>();
    assert_eq!(tz.value(0), 1_704_096_000_000_000, "08:00Z");
    assert_eq!(tz.value(1), 1_704_103_200_000_000);
    let bools = b.column(5).as_boolean();
    assert!(bools.value(0) && !bools.value(1));
    assert_eq!(strings(&b, "z"), [Some("007".into()), Some("1".into())]);
    let all_text = decode(format(&[("infer_types", "false")]).as_ref(), data);
    assert!(
        all_text
            .schema()
            .fields()
            .iter()
            .all(|f| f.data_type() == &DataType::Utf8)
    );
}

#[test]
fn bad_values_fail_skip_or_rescue_with_their_line() {
    // The sample holds the first two rows; the third does not fit.
    let data = "id,n,label\n1,10,a\n2,20,\"b\nb\"\n3,oops,c\n4,40,d\n";
    let plugin = format(&[]);
    let sample = DecodeOptions::default().with_infer_rows(2);
    let err = decode_chunked(plugin.as_ref(), &sample, data.as_bytes(), 5).unwrap_err();
    assert_eq!(err.line(), Some(5), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("column `n`") && text.contains("`oops`") && text.contains("Int64"),
        "{text}"
    );

    let skip = sample.clone().with_error_policy(ErrorPolicy::Skip);
    let (batches, skipped) = decode_chunked(plugin.as_ref(), &skip, data.as_bytes(), 5).unwrap();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!((rows, skipped), (3, 1));

    let rescue = sample.with_error_policy(ErrorPolicy::Rescue);
    let b = decode_with(plugin.as_ref(), &rescue, data);
    assert_eq!(b.num_rows(), 4);
    assert!(b.column(1).is_null(2));
    assert_eq!(
        strings(&b, "_rescued_data"),
        [None, None, Some(r#"{"n":"oops"}"#.into()), None]
    );
}

#[test]
fn ragged_rows_follow_the_policy() {
    let data = "a,b\n1,2\n3\n4,5,6\n7,8\n";
    let plugin = format(&[]);
    let err = decode_chunked(
        plugin.as_ref(),
        &DecodeOptions::default(),
        data.as_bytes(),
        3,
    )
    .unwrap_err();
    assert_eq!(err.line(), Some(3));
    assert!(
        err.to_string().contains("1 fields where the header has 2"),
        "{err}"
    );
    let skip = DecodeOptions::default().with_error_policy(ErrorPolicy::Skip);
    let (batches, skipped) = decode_chunked(plugin.as_ref(), &skip, data.as_bytes(), 3).unwrap();
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);
    assert_eq!(skipped, 2);
    let lenient = format(&[("ragged_rows", "lenient")]);
    let b = decode(lenient.as_ref(), data);
    assert_eq!(b.num_rows(), 4);
    assert!(b.column(1).is_null(1));
    let rescue = DecodeOptions::default().with_error_policy(ErrorPolicy::Rescue);
    let b = decode_with(plugin.as_ref(), &rescue, data);
    assert_eq!(
        strings(&b, "_rescued_data"),
        [None, None, Some(r#"{"_extra_3":"6"}"#.into()), None]
    );
}

#[test]
fn line_numbers_count_quoted_breaks_blank_lines_and_crlf() {
    for (data, line) in [
        ("a,b\n1,x\n\n\n2,y\n3,\"p\nq\"\nbad\n", 8),
        ("a,b\r\n1,x\r\n\r\n2,y\r\nbad\r\n", 5),
        ("skip\na,b\n1,\"x\ny\"\nbad\n", 5),
    ] {
        for sep in [",", "::"] {
            let text = data.replace(',', sep);
            let plugin = format(&[
                ("delimiter", sep),
                (
                    "skip_rows",
                    if data.starts_with("skip") { "1" } else { "0" },
                ),
            ]);
            for chunk in [1, 4, usize::MAX] {
                let err = decode_chunked(
                    plugin.as_ref(),
                    &DecodeOptions::default(),
                    text.as_bytes(),
                    chunk,
                )
                .unwrap_err();
                assert_eq!(err.line(), Some(line), "{text:?} {sep:?} {chunk}: {err}");
            }
        }
    }
}

#[test]
fn a_schema_is_matched_by_name_and_extra_columns_are_rescued() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("n", DataType::Float64, true),
        Field::new("id", DataType::Int64, false),
        Field::new("missing", DataType::Utf8, true),
    ]));
    let data = "id,extra,N\n1,e,2.5\n";
    let options = DecodeOptions::default()
        .with_schema(schema.clone())
        .with_error_policy(ErrorPolicy::Rescue);
    let b = decode_with(format(&[]).as_ref(), &options, data);
    assert_eq!(names(&b), ["n", "id", "missing", "_rescued_data"]);
    assert_eq!(b.column(0).as_primitive::<Float64Type>().value(0), 2.5);
    assert_eq!(b.column(1).as_primitive::<Int64Type>().value(0), 1);
    assert!(b.column(2).is_null(0));
    assert_eq!(
        strings(&b, "_rescued_data"),
        [Some(r#"{"extra":"e"}"#.into())]
    );
    // By position without a header; a null where none may be is an error.
    let positional = DecodeOptions::default().with_schema(Arc::new(Schema::new(vec![Field::new(
        "a",
        DataType::Int64,
        false,
    )])));
    let b = decode_with(format(&[("header", "false")]).as_ref(), &positional, "7\n");
    assert_eq!(b.column(0).as_primitive::<Int64Type>().value(0), 7);
    let err = decode_chunked(
        format(&[("header", "false")]).as_ref(),
        &positional,
        b"7\n\"\"\n",
        usize::MAX,
    )
    .unwrap_err();
    assert!(err.to_string().contains("may not be null"), "{err}");
}

#[test]
fn empty_and_header_only_files() {
    let mut d = decoder(format(&[]).as_ref(), &DecodeOptions::default());
    d.finish().unwrap();
    assert!(d.next_batch().is_none());
    assert!(d.schema().is_none());
    let mut d = decoder(format(&[]).as_ref(), &DecodeOptions::default());
    d.decode(b"a,b\n").unwrap();
    d.finish().unwrap();
    assert!(d.next_batch().is_none());
    let schema = d.schema().unwrap();
    assert_eq!(schema.fields().len(), 2);
    // No newline at the end of the header, or of the last row.
    let b = decode(format(&[]).as_ref(), "a,b\n1,2");
    assert_eq!(b.num_rows(), 1);
}

#[test]
fn batches_are_bounded_and_invalid_utf8_is_a_row_error() {
    let mut data = String::from("n,s\n");
    for i in 0..10_000 {
        data.push_str(&format!("{i},row {i}\n"));
    }
    let options = DecodeOptions::default().with_batch_size(1000);
    let (batches, _) =
        decode_chunked(format(&[]).as_ref(), &options, data.as_bytes(), 4096).unwrap();
    assert_eq!(batches.len(), 10);
    assert!(batches.iter().all(|b| b.num_rows() == 1000));
    let err = decode_chunked(
        format(&[]).as_ref(),
        &DecodeOptions::default(),
        b"s\nok\n\xff\xfe\n",
        usize::MAX,
    )
    .unwrap_err();
    assert_eq!(err.line(), Some(3));
    assert!(err.to_string().contains("UTF-8"), "{err}");
    let err = decode_chunked(
        format(&[]).as_ref(),
        &DecodeOptions::default().with_max_line_bytes(100),
        format!("a\n\"{}", "x".repeat(1000)).as_bytes(),
        10,
    )
    .unwrap_err();
    assert!(err.to_string().contains("longer than 100 bytes"), "{err}");
}

fn sample_batch() -> RecordBatch {
    use arrow_array::builder::{Int64Builder, ListBuilder};
    let mut tags = ListBuilder::new(StringBuilder::new());
    tags.values().append_value("a");
    tags.values().append_value("b,\"c\"");
    tags.append(true);
    tags.append(false);
    tags.append(true);
    let mut ids = Int64Builder::new();
    ids.append_value(1);
    ids.append_null();
    ids.append_value(-3);
    RecordBatch::try_from_iter([
        ("id", Arc::new(ids.finish()) as ArrayRef),
        (
            "text",
            Arc::new(StringArray::from(vec![
                Some("plain"),
                Some("with, comma and \"quote\"\nand a line"),
                None,
            ])) as ArrayRef,
        ),
        ("tags", Arc::new(tags.finish()) as ArrayRef),
    ])
    .unwrap()
}

fn encode(plugin: &dyn FormatPlugin, options: &EncodeOptions, batches: &[RecordBatch]) -> Vec<u8> {
    let schema = batches
        .first()
        .map_or_else(|| sample_batch().schema(), RecordBatch::schema);
    let mut e = plugin.encoder(schema, options).unwrap();
    let mut out = Vec::new();
    for b in batches {
        e.write(b).unwrap();
        out.extend_from_slice(&e.take_output());
    }
    out.extend_from_slice(&e.finish().unwrap());
    assert_eq!(e.bytes_written(), out.len() as u64);
    out
}

#[test]
fn quoting_is_always_right_and_nested_values_are_json() {
    let plugin = format(&[]);
    let text = String::from_utf8(encode(
        plugin.as_ref(),
        &EncodeOptions::default(),
        &[sample_batch()],
    ))
    .unwrap();
    assert_eq!(
        text,
        "id,text,tags\n1,plain,\"[\"\"a\"\",\"\"b,\\\"\"c\\\"\"\"\"]\"\n,\"with, comma and \"\"quote\"\"\nand a line\",\n-3,,[]\n"
    );
    // And back, equal.
    let b = decode(plugin.as_ref(), &text);
    assert_eq!(
        strings(&b, "text"),
        [
            Some("plain".into()),
            Some("with, comma and \"quote\"\nand a line".into()),
            None
        ]
    );
    assert_eq!(
        strings(&b, "tags")[0].as_deref(),
        Some(r#"["a","b,\"c\""]"#)
    );
    let tabs = format(&[("delimiter", "tab"), ("quote_style", "always")]);
    let text = String::from_utf8(encode(
        tabs.as_ref(),
        &EncodeOptions::default(),
        &[sample_batch()],
    ))
    .unwrap();
    assert!(
        text.starts_with("\"id\"\t\"text\"\t\"tags\"\n\"1\"\t"),
        "{text}"
    );
}

#[test]
fn every_codec_round_trips_and_a_header_only_file_is_written() {
    let plugin = format(&[]);
    for codec in Compression::ALL {
        let options = EncodeOptions::default().with_compression(codec);
        let bytes = encode(plugin.as_ref(), &options, &[sample_batch(), sample_batch()]);
        let plain = {
            use std::io::Read;
            let mut out = Vec::new();
            match codec {
                Compression::None => out = bytes.clone(),
                Compression::Gzip => {
                    flate2::read::MultiGzDecoder::new(&bytes[..])
                        .read_to_end(&mut out)
                        .unwrap();
                }
                Compression::Deflate => {
                    flate2::read::ZlibDecoder::new(&bytes[..])
                        .read_to_end(&mut out)
                        .unwrap();
                }
                Compression::Zstd => out = zstd::decode_all(&bytes[..]).unwrap(),
                Compression::Bzip2 => {
                    bzip2::read::MultiBzDecoder::new(&bytes[..])
                        .read_to_end(&mut out)
                        .unwrap();
                }
                Compression::Xz => {
                    liblzma::read::XzDecoder::new(&bytes[..])
                        .read_to_end(&mut out)
                        .unwrap();
                }
            }
            out
        };
        let b = decode(plugin.as_ref(), std::str::from_utf8(&plain).unwrap());
        assert_eq!(b.num_rows(), 6, "{codec}");
    }
    let header_only = encode(plugin.as_ref(), &EncodeOptions::default(), &[]);
    assert_eq!(header_only, b"id,text,tags\n");
    let err = format(&[("delimiter", "||")])
        .check_encode_options(&EncodeOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("several bytes"), "{err}");
    assert!(
        plugin
            .check_encode_options(&EncodeOptions::default().with_codec("lzo"))
            .is_err()
    );
}

#[test]
fn unknown_options_are_named() {
    let err = CsvFormat::csv().with_option("delimeter", ",").unwrap_err();
    assert!(err.to_string().contains("`delimeter`"), "{err}");
    assert!(CsvFormat::csv().with_option("header", "maybe").is_err());
    assert!(CsvFormat::csv().with_option("quote", "ab").is_err());
    let no_quotes = format(&[("quote", "none")]);
    let b = decode(no_quotes.as_ref(), "a\n\"x\n");
    assert_eq!(strings(&b, "a"), [Some("\"x".into())]);
}

proptest::proptest! {
    /// Any text, any separator, any chunking: never a panic, and the same result whatever
    /// the chunk size.
    #[test]
    fn any_input_decodes_the_same_in_any_chunks(
        data in proptest::collection::vec(proptest::prop_oneof![
            proptest::strategy::Just(b','), proptest::strategy::Just(b'"'), proptest::strategy::Just(b'\n'),
            proptest::strategy::Just(b'\r'), proptest::strategy::Just(b':'), proptest::strategy::Just(b'a'),
            proptest::strategy::Just(b'1'), proptest::num::u8::ANY
        ], 0..200),
        chunk in 1usize..17,
        multi in proptest::bool::ANY,
    ) {
        let plugin = format(&[("delimiter", if multi { "::" } else { "," })]);
        let options = DecodeOptions::default().with_error_policy(ErrorPolicy::Rescue).with_batch_size(3);
        let whole = decode_chunked(plugin.as_ref(), &options, &data, usize::MAX);
        let pieces = decode_chunked(plugin.as_ref(), &options, &data, chunk);
        match (whole, pieces) {
            (Ok((a, _)), Ok((b, _))) => {
                let rows = |v: &Vec<RecordBatch>| v.iter().map(RecordBatch::num_rows).sum::<usize>();
                proptest::prop_assert_eq!(rows(&a), rows(&b));
            }
            (Err(a), Err(b)) => proptest::prop_assert_eq!(a.line(), b.line()),
            (a, b) => proptest::prop_assert!(false, "{:?} vs {:?}", a.map(|_| ()), b.map(|_| ())),
        }
    }
}

#[test]
fn the_sample_does_not_depend_on_the_chunking() {
    // Found by fuzzing: the sample's width was taken from every row buffered, and more
    // rows are buffered when the file comes in one piece.
    let data = b"\x00\x00\x00\x00\x00\x00\x00\x9b0f\x00|\n$|q\n|\nf\x00|\"\xf7p|f\x00|\n$|q\n|||\xff\xff\xff\xff\xff\xff\n";
    let plugin = format(&[("delimiter", "||"), ("header", "false"), ("escape", "\\\\")]);
    let options = DecodeOptions::default()
        .with_batch_size(7)
        .with_infer_rows(5)
        .with_error_policy(ErrorPolicy::Skip);
    let outcome = |chunk| {
        let (batches, skipped) = decode_chunked(plugin.as_ref(), &options, data, chunk).unwrap();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        (rows, skipped, batches.first().map(|b| b.schema()))
    };
    assert_eq!(outcome(usize::MAX), outcome(1));
}
