//! Fuzz target `csv_decode`: its body and what it checks are `s3conn_fuzz::csv_decode`
//! (`fuzz/src/lib.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    s3conn_fuzz::csv_decode(data);
});
