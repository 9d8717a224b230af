//! Fuzz target `manifest_parse`: its body and what it checks are `s3conn_fuzz::manifest_parse`
//! (`fuzz/src/lib.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    s3conn_fuzz::manifest_parse(data);
});
