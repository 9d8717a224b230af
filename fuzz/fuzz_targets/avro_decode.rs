//! Any bytes as an Avro file, fed in any chunking, under either error policy: the decoder
//! returns batches or an error, never panics, never yields a batch larger than asked, and
//! never allocates past its block limits.
//!
//! libfuzzer-sys aborts on every panic, even one the plugin catches by design (calls into
//! arrow-avro run under `catch_unwind`). This target installs a hook that does not abort, so
//! only a panic that escapes s3conn's API (and reaches libfuzzer-sys's own `catch_unwind`)
//! counts as a crash.
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use s3conn_formats::avro::AvroFormat;
use s3conn_formats::{DecodeInput, DecodeOptions, Decoder, ErrorPolicy, FormatPlugin};

static QUIET_PANICS: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    QUIET_PANICS.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    // Chunks of 1..=64 bytes, or the whole input at once.
    let chunk = match control & 0x3f {
        0 => input.len().max(1),
        n => usize::from(n),
    };
    let policy = if control & 0x40 == 0 { ErrorPolicy::Fail } else { ErrorPolicy::Skip };
    let batch = if control & 0x80 == 0 { 7 } else { 1000 };
    let format = AvroFormat::default()
        .with_max_block_bytes(1 << 20)
        .with_max_decompressed_block_bytes(16 << 20);
    let options = DecodeOptions::default()
        .with_batch_size(batch)
        .with_error_policy(policy);
    let Ok(Decoder::Stream(mut decoder)) = format.decoder(&DecodeInput::default(), &options) else {
        return;
    };
    for piece in input.chunks(chunk) {
        if decoder.decode(piece).is_err() {
            // A failed decoder refuses further input.
            assert!(decoder.decode(b"x").is_err());
            return;
        }
        while let Some(b) = decoder.next_batch() {
            assert!(b.num_rows() <= batch);
        }
    }
    if decoder.finish().is_ok() {
        while let Some(b) = decoder.next_batch() {
            assert!(b.num_rows() <= batch);
        }
    }
});
