//! Fuzz target `compression_detect`: its body and what it checks are `s3conn_fuzz::compression_detect`
//! (`fuzz/src/lib.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    s3conn_fuzz::compression_detect(data);
});
