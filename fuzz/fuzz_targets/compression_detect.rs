//! Any bytes, content encoding and key: detection answers or refuses, and decompressing
//! whatever it detected returns data or an error (read at most 1 MiB, whatever the ratio).
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3conn_formats::compression::{decompress, detect};
use tokio::io::AsyncReadExt;

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let encodings = [None, Some("gzip"), Some("deflate"), Some("zstd"), Some("br")];
    let keys = [None, Some("a.gz"), Some("a.zz"), Some("a.jsonl.zst"), Some("a.csv")];
    let encoding = encodings[usize::from(control) % encodings.len()];
    let key = keys[usize::from(control / 8) % keys.len()];
    let Ok(codec) = detect(input, encoding, key) else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    runtime.block_on(async {
        let mut reader = decompress(codec, std::io::Cursor::new(input.to_vec())).take(1 << 20);
        let mut out = Vec::new();
        let _ = reader.read_to_end(&mut out).await;
    });
});
