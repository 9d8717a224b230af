//! Any text as a path template: parsing answers or reports a position inside the text, and
//! rendering a parsed template gives a valid key or an error.
#![no_main]

use chrono::TimeZone;
use libfuzzer_sys::fuzz_target;
use s3conn_layout::template::{RenderContext, Template};
use s3conn_layout::Error;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Template::parse(text) {
        Ok(template) => {
            let Some(time) = chrono::Utc.timestamp_millis_opt(1_732_665_600_042).single() else {
                return;
            };
            let ctx = RenderContext::new("stream", time)
                .with_namespace("ns")
                .with_part_number(7)
                .with_format_extension(".parquet");
            if let Ok(key) = template.render(&ctx) {
                assert!(!key.is_empty() && key.len() <= 1024);
                assert!(!key.starts_with('/') && !key.contains("//"));
                assert!(!key.split('/').any(|s| s == ".."));
            }
        }
        Err(Error::TemplateParse { position, .. }) => assert!(position <= text.len()),
        Err(_) => {}
    }
});
