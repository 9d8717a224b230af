//! Any bytes, under any separator (one byte or several), header, error policy and
//! chunking: the CSV decoder returns batches or an error, never panics, never yields a
//! batch larger than asked, and gives the same rows (or the same error line) whether the
//! file comes in one piece or in chunks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3conn_formats::csv::CsvFormat;
use s3conn_formats::{DecodeInput, DecodeOptions, Decoder, ErrorPolicy, FormatPlugin};

fn run(
    plugin: &dyn FormatPlugin,
    options: &DecodeOptions,
    input: &[u8],
    chunk: usize,
) -> Result<usize, Option<u64>> {
    let Ok(Decoder::Stream(mut decoder)) = plugin.decoder(&DecodeInput::default(), options) else {
        return Err(None);
    };
    let mut rows = 0;
    for piece in input.chunks(chunk) {
        decoder.decode(piece).map_err(|e| e.line())?;
        while let Some(batch) = decoder.next_batch() {
            assert!(batch.num_rows() <= 7);
            rows += batch.num_rows();
        }
    }
    decoder.finish().map_err(|e| e.line())?;
    while let Some(batch) = decoder.next_batch() {
        assert!(batch.num_rows() <= 7);
        rows += batch.num_rows();
    }
    Ok(rows)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let Some((&more, input)) = rest.split_first() else {
        return;
    };
    let separators = [",", "\t", "||", "::", "¦", ";"];
    let mut plugin: std::sync::Arc<dyn FormatPlugin> = std::sync::Arc::new(CsvFormat::csv());
    let settings = [
        ("delimiter", separators[usize::from(control & 0x07) % separators.len()]),
        ("header", if control & 0x08 == 0 { "true" } else { "false" }),
        ("ragged_rows", if control & 0x10 == 0 { "error" } else { "lenient" }),
        ("escape", if more & 0x01 == 0 { "none" } else { "\\\\" }),
        ("comment", if more & 0x02 == 0 { "none" } else { "#" }),
        ("skip_rows", if more & 0x04 == 0 { "0" } else { "2" }),
    ];
    for (key, value) in settings {
        let Ok(next) = plugin.with_option(key, value) else {
            return;
        };
        plugin = next;
    }
    let policy = match (control >> 5) & 0x03 {
        0 => ErrorPolicy::Fail,
        1 => ErrorPolicy::Skip,
        _ => ErrorPolicy::Rescue,
    };
    let options = DecodeOptions::default()
        .with_batch_size(7)
        .with_infer_rows(5)
        .with_max_line_bytes(4096)
        .with_error_policy(policy);
    let chunk = usize::from(more >> 3) + 1;
    let whole = run(plugin.as_ref(), &options, input, input.len().max(1));
    let pieces = run(plugin.as_ref(), &options, input, chunk);
    match (&whole, &pieces) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a, b),
        // A record longer than the line limit can be caught earlier or later.
        _ => {}
    }
});
