//! Any bytes as a Parquet file: the ranged decoder asks only for ranges inside the file and
//! returns batches or an error; a panic inside the parquet crate must become an error.
//!
//! libfuzzer-sys aborts on every panic, even one the plugin catches by design. This target
//! installs a hook that does not abort, so only a panic that escapes s3conn's API (and
//! reaches libfuzzer-sys's own `catch_unwind`) counts as a crash.
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;

static QUIET_PANICS: Once = Once::new();
use s3conn_formats::parquet::ParquetFormat;
use s3conn_formats::{DecodeInput, DecodeOptions, Decoder, FormatPlugin, RangedStep};

fuzz_target!(|data: &[u8]| {
    QUIET_PANICS.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let file = bytes::Bytes::copy_from_slice(data);
    let size = file.len() as u64;
    let Ok(Decoder::Ranged(mut decoder)) = ParquetFormat::default().decoder(
        &DecodeInput::with_size(size),
        &DecodeOptions::default().with_batch_size(64),
    ) else {
        return;
    };
    for _ in 0..10_000 {
        match decoder.try_decode() {
            Ok(RangedStep::NeedsData(ranges)) => {
                let mut parts = Vec::with_capacity(ranges.len());
                for r in &ranges {
                    assert!(r.start <= r.end && r.end <= size, "range {r:?} outside the file");
                    parts.push(file.slice(r.start as usize..r.end as usize));
                }
                if decoder.push_ranges(ranges, parts).is_err() {
                    return;
                }
            }
            Ok(RangedStep::Batch(_)) => {}
            Ok(RangedStep::Finished) | Err(_) => return,
        }
    }
});
