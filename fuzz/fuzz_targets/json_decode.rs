//! Any bytes, fed in any chunking, under any error policy, with nested values typed or
//! kept as text: the JSON decoder (arrays and NDJSON) returns batches or an error, never
//! panics, and never yields a batch larger than asked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3conn_formats::json::JsonFormat;
use s3conn_formats::{DecodeInput, DecodeOptions, Decoder, ErrorPolicy, FormatPlugin};

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(control & 0x1f) + 1;
    let policy = match (control >> 5) & 0x03 {
        0 => ErrorPolicy::Fail,
        1 => ErrorPolicy::Skip,
        _ => ErrorPolicy::Rescue,
    };
    let options = DecodeOptions::default()
        .with_batch_size(7)
        .with_infer_rows(5)
        .with_max_line_bytes(4096)
        .with_nested_as_json(control & 0x80 != 0)
        .with_error_policy(policy);
    let Ok(Decoder::Stream(mut decoder)) = JsonFormat.decoder(&DecodeInput::default(), &options)
    else {
        return;
    };
    for piece in input.chunks(chunk) {
        if decoder.decode(piece).is_err() {
            return;
        }
        while let Some(batch) = decoder.next_batch() {
            assert!(batch.num_rows() <= 7);
        }
    }
    if decoder.finish().is_ok() {
        while let Some(batch) = decoder.next_batch() {
            assert!(batch.num_rows() <= 7);
        }
    }
});
