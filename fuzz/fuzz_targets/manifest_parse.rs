//! Any bytes as a manifest: parsing answers or errors; a parsed manifest replays into a
//! delivery log and serializes back to a manifest that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3conn_layout::{DeliveryLog, Manifest};

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = Manifest::from_json(data) else {
        return;
    };
    let mut log = DeliveryLog::default();
    let _ = log.apply(&manifest);
    let json = manifest.to_json().expect("a parsed manifest serializes");
    let back = Manifest::from_json(&json).expect("a serialized manifest parses");
    assert_eq!(back, manifest);
});
