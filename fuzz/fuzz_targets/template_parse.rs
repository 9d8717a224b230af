//! Any text as a path template, under any options: parsing answers or reports a position
//! inside the text; rendering gives a valid key or an error; a rendered key can be read back
//! by the template's matcher without a panic.
#![no_main]

use chrono::TimeZone;
use libfuzzer_sys::fuzz_target;
use s3conn_layout::Error;
use s3conn_layout::template::{Clock, RenderContext, Template, TemplateOptions};

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let clock = match control % 3 {
        0 => Clock::Sync,
        1 => Clock::Record,
        _ => Clock::File,
    };
    let mut options = TemplateOptions::default()
        .with_hive(control & 0x04 != 0)
        .with_clock(clock)
        .with_static("tenant", "a/b=c#")
        .with_column("country");
    if control & 0x08 != 0 {
        options = options.with_time_column("ts");
    }
    if control & 0x10 != 0 {
        let Ok(o) = options.with_time_zone("Europe/Paris") else {
            return;
        };
        options = o;
    }
    match Template::parse_with(text, &options) {
        Ok(template) => {
            let Some(time) = chrono::Utc.timestamp_millis_opt(1_732_665_600_042).single() else {
                return;
            };
            let mut ctx = RenderContext::new("stream", time)
                .with_part_number(7)
                .with_record_time(time)
                .with_value("country", "F R")
                .with_format_extension(".parquet");
            if control & 0x20 != 0 {
                ctx = ctx.with_namespace("ns");
            }
            if let Ok(key) = template.render(&ctx) {
                assert!(!key.is_empty() && key.len() <= 1024);
                assert!(!key.starts_with('/') && !key.contains("//"));
                assert!(!key.split('/').any(|s| s == ".." || s == "."));
                if let Ok(matcher) = template.matcher() {
                    let columns = matcher.partition_columns();
                    if let Some(parsed) = matcher.parse(&key) {
                        // Every Hive-style folder the template declares is read back, once.
                        let read: Vec<&str> =
                            parsed.partitions().iter().map(|(c, _)| c.as_str()).collect();
                        assert_eq!(read, columns);
                        let _ = (parsed.date(), parsed.time());
                    }
                    let _ = template.prefixes(&ctx, time, time + chrono::TimeDelta::days(3));
                }
            }
        }
        Err(Error::TemplateParse { position, .. }) => assert!(position <= text.len()),
        Err(_) => {}
    }
});
