//! Fuzz target `json_decode`: its body and what it checks are `s3conn_fuzz::json_decode`
//! (`fuzz/src/lib.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    s3conn_fuzz::json_decode(data);
});
