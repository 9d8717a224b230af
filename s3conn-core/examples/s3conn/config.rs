//! `s3conn sync CONFIG`: a pipeline described by a TOML file.
//!
//! ```toml
//! [pipeline]
//! id = "events-to-warehouse"      # names the state; letters, digits, . _ -
//! mode = "incremental"            # or "full_refresh"; per stream: [pipeline.modes]
//! commit_every_objects = 1000     # optional: a long sync commits in chunks (objects, MiB, secs)
//!
//! [source]
//! type = "s3"
//! start_date = "2024-01-01T00:00:00Z"   # optional: backfill from here
//! settle_lag_secs = 300           # optional: objects this recent are not yet settled
//! late_window_secs = 86400        # optional: how far below the watermark a late arrival is seen
//! late_arrivals = "read"          # optional: or "skip", "fail"
//! full_listing_interval_secs = 86400   # optional: streams with keys_ordered = true
//! read_concurrency = 3            # optional: objects read at once
//! [source.connection]
//! url = "s3://customer-bucket/landing"
//! [[source.streams]]
//! name = "events"
//! prefix = "events"
//! format = "ndjson"
//!
//! [sink]
//! type = "s3"
//! format = "parquet"
//! [sink.connection]
//! url = "s3://warehouse/exports"
//!
//! [state]
//! type = "local"
//! path = "state"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use s3conn_core::auth::ConnectionConfig;
use s3conn_core::formats::shape::RecordShape;
use s3conn_core::formats::{DecodeOptions, EncodeOptions, ErrorPolicy, FormatPlugin, Registry};
use s3conn_core::layout::layouts::Layout;
use s3conn_core::layout::template::{CharacterPolicy, Clock, TemplateOptions};
use s3conn_core::layout::{SyncReport, Template};
use s3conn_core::s3::{S3Sink, S3Source, S3StreamConfig};
use s3conn_core::state::{LocalFileStateStore, ObjectStoreStateStore, StateStore};
use s3conn_core::{CommitEvery, Pipeline, SyncMode};
use serde::Deserialize;

use crate::{Failure, progress};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HostConfig {
    pub(crate) pipeline: PipelineSection,
    pub(crate) source: SourceSection,
    pub(crate) sink: SinkSection,
    #[serde(default)]
    pub(crate) state: Option<StateSection>,
}

/// `[pipeline]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PipelineSection {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) mode: SyncMode,
    #[serde(default)]
    pub(crate) modes: BTreeMap<String, SyncMode>,
    #[serde(default)]
    pub(crate) next_sync_in_minutes: Option<i64>,
    /// How long the pipeline's lease lasts unless renewed (default 60).
    #[serde(default)]
    pub(crate) lease_ttl_secs: Option<u64>,
    /// A long sync commits once this many objects were read since its last commit
    /// (default 1000; 0: no such limit).
    #[serde(default)]
    pub(crate) commit_every_objects: Option<u64>,
    /// … or once they hold this many MiB (default 1024; 0: no such limit).
    #[serde(default)]
    pub(crate) commit_every_mb: Option<u64>,
    /// … or this many seconds after it (default 600; 0: no such limit).
    #[serde(default)]
    pub(crate) commit_every_secs: Option<u64>,
}

/// `[source]`
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum SourceSection {
    S3 {
        connection: ConnectionConfig,
        #[serde(default)]
        start_date: Option<DateTime<Utc>>,
        #[serde(default)]
        settle_lag_secs: Option<u64>,
        #[serde(default)]
        late_window_secs: Option<u64>,
        #[serde(default)]
        late_arrivals: Option<String>,
        #[serde(default)]
        full_listing_interval_secs: Option<u64>,
        /// Objects read at once (default: one more than the cores, at most 4).
        #[serde(default)]
        read_concurrency: Option<usize>,
        streams: Vec<StreamSection>,
    },
}

/// `[[source.streams]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamSection {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    prefix: String,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    on_error: OnError,
    #[serde(default)]
    batch_size: Option<usize>,
    /// Settings of the format plugin, by name (CSV: delimiter, header, quote…).
    #[serde(default)]
    format_options: BTreeMap<String, String>,
    #[serde(default)]
    merge_schemas: bool,
    #[serde(default)]
    nested_as_json: bool,
    /// The keys sort in the order objects are written: list after the last key read.
    #[serde(default)]
    keys_ordered: bool,
    /// The key template the stream's objects were written with (relative to `prefix`).
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    layout: Option<String>,
    #[serde(default)]
    hive: bool,
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    partition_columns: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum OnError {
    #[default]
    Fail,
    Skip,
    Rescue,
}

/// `[sink]`
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum SinkSection {
    S3 {
        connection: ConnectionConfig,
        #[serde(default = "default_format")]
        format: String,
        #[serde(default)]
        compression: Option<String>,
        #[serde(default)]
        compression_level: Option<i32>,
        #[serde(default)]
        shape: Option<String>,
        #[serde(default)]
        format_options: BTreeMap<String, String>,
        #[serde(default)]
        template: Option<String>,
        #[serde(default)]
        layout: Option<String>,
        #[serde(default)]
        hive: bool,
        #[serde(default)]
        clock: Option<String>,
        #[serde(default)]
        time_zone: Option<String>,
        #[serde(default)]
        time_column: Option<String>,
        #[serde(default)]
        partition_columns: Vec<String>,
        #[serde(default)]
        variables: BTreeMap<String, String>,
        #[serde(default)]
        characters: Option<String>,
        #[serde(default)]
        target_file_size_mb: Option<u64>,
        #[serde(default)]
        part_size_mb: Option<u64>,
        #[serde(default)]
        max_open_files: Option<usize>,
        #[serde(default)]
        property_definitions: Option<String>,
    },
}

fn default_format() -> String {
    "parquet".into()
}

/// `[state]`
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum StateSection {
    Local {
        path: PathBuf,
    },
    S3 {
        connection: Box<ConnectionConfig>,
        #[serde(default)]
        prefix: Option<String>,
    },
}

fn config_error(path: &Path, message: impl std::fmt::Display) -> Failure {
    Failure::Config(format!("{}: {message}", path.display()))
}

/// Parse a config file's text.
pub(crate) fn parse(text: &str) -> Result<HostConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

pub(crate) fn build_source(section: SourceSection) -> Result<S3Source, s3conn_core::Error> {
    let SourceSection::S3 {
        connection,
        start_date,
        settle_lag_secs,
        late_window_secs,
        late_arrivals,
        full_listing_interval_secs,
        read_concurrency,
        streams,
    } = section;
    let mut builder = S3Source::builder(connection.connect()?);
    if let Some(start) = start_date {
        builder = builder.with_start_date(start);
    }
    if let Some(secs) = settle_lag_secs {
        builder = builder.with_settle_lag(std::time::Duration::from_secs(secs));
    }
    if let Some(secs) = late_window_secs {
        builder = builder.with_late_window(std::time::Duration::from_secs(secs));
    }
    if let Some(policy) = late_arrivals {
        builder = builder.with_late_policy(policy.parse()?);
    }
    if let Some(secs) = full_listing_interval_secs {
        builder = builder.with_full_listing_interval(std::time::Duration::from_secs(secs));
    }
    if let Some(n) = read_concurrency {
        builder = builder.with_read_concurrency(n);
    }
    for s in streams {
        let mut options = DecodeOptions::default()
            .with_error_policy(match s.on_error {
                OnError::Fail => ErrorPolicy::Fail,
                OnError::Skip => ErrorPolicy::Skip,
                OnError::Rescue => ErrorPolicy::Rescue,
            })
            .with_nested_as_json(s.nested_as_json);
        if let Some(n) = s.batch_size {
            options = options.with_batch_size(n);
        }
        let mut stream = S3StreamConfig::new(&s.name, s.prefix)
            .with_decode_options(options)
            .with_schema_merging(s.merge_schemas)
            .with_keys_ordered(s.keys_ordered);
        if let Some(ns) = s.namespace {
            stream = stream.with_namespace(ns);
        }
        match (s.format, s.format_options.is_empty()) {
            (Some(format), true) => stream = stream.with_format(format),
            (Some(format), false) => {
                let section = format!("[[source.streams]] `{}`", s.name);
                let plugin = configure(
                    Registry::default().get(&format)?,
                    &s.format_options,
                    &section,
                )?;
                stream = stream.with_plugin(plugin);
            }
            (None, true) => {}
            (None, false) => {
                return Err(s3conn_core::Error::Config {
                    reason: format!(
                        "[[source.streams]] `{}` gives format_options without a format; name the format",
                        s.name
                    ),
                });
            }
        }
        let mut options = TemplateOptions::default().with_hive(s.hive);
        if let Some(zone) = s.time_zone {
            options = options.with_time_zone(&zone)?;
        }
        for column in s.partition_columns {
            options = options.with_column(column);
        }
        for (name, value) in s.variables {
            options = options.with_static(name, value);
        }
        let section = format!("[[source.streams]] `{}`", s.name);
        if let Some(template) = template(s.template, s.layout, options, &section)? {
            stream = stream.with_template(template);
        }
        builder = builder.with_stream(stream);
    }
    builder.build()
}

pub(crate) fn build_sink(section: SinkSection) -> Result<S3Sink, s3conn_core::Error> {
    let SinkSection::S3 {
        connection,
        format,
        compression,
        compression_level,
        shape,
        format_options,
        template,
        layout,
        hive,
        clock,
        time_zone,
        time_column,
        partition_columns,
        variables,
        characters,
        target_file_size_mb,
        part_size_mb,
        max_open_files,
        property_definitions,
    } = section;
    let mut builder = S3Sink::builder(connection.connect()?);
    let mut encode = EncodeOptions::default();
    if let Some(codec) = compression {
        encode = encode.with_codec(codec);
    }
    if let Some(level) = compression_level {
        encode = encode.with_compression_level(level);
    }
    if let Some(shape) = shape {
        encode = encode.with_shape(shape.parse::<RecordShape>()?);
    }
    let plugin = configure(Registry::default().get(&format)?, &format_options, "[sink]")?;
    builder = builder.with_format(plugin).with_encode_options(encode);
    let mut options = TemplateOptions::default().with_hive(hive);
    if let Some(clock) = clock {
        options = options.with_clock(clock.parse::<Clock>()?);
    }
    if let Some(zone) = time_zone {
        options = options.with_time_zone(&zone)?;
    }
    if let Some(column) = time_column {
        options = options.with_time_column(column);
    }
    for column in partition_columns {
        options = options.with_column(column);
    }
    for (name, value) in variables {
        options = options.with_static(name, value);
    }
    if let Some(policy) = characters {
        options = options.with_characters(policy.parse::<CharacterPolicy>()?);
    }
    let template = match self::template(template, layout, options.clone(), "[sink]")? {
        Some(template) => template,
        None => Layout::StreamFolders.template_with(options)?,
    };
    builder = builder.with_template(template);
    if let Some(files) = max_open_files {
        builder = builder.with_max_open_files(files);
    }
    if let Some(mb) = target_file_size_mb {
        builder = builder.with_target_file_size(mb.saturating_mul(1 << 20));
    }
    if let Some(mb) = part_size_mb {
        builder = builder
            .with_part_size(usize::try_from(mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX));
    }
    if let Some(uri) = property_definitions {
        builder = builder.with_property_definitions(uri);
    }
    builder.build()
}

/// `plugin` with the settings of a `format_options` table.
fn configure(
    mut plugin: Arc<dyn FormatPlugin>,
    options: &BTreeMap<String, String>,
    section: &str,
) -> Result<Arc<dyn FormatPlugin>, s3conn_core::Error> {
    for (key, value) in options {
        plugin = plugin
            .with_option(key, value)
            .map_err(|e| s3conn_core::Error::Config {
                reason: format!("{section} format_options: {e}"),
            })?;
    }
    Ok(plugin)
}

/// The template a section gives, by `template` or by `layout` (not both).
fn template(
    template: Option<String>,
    layout: Option<String>,
    options: TemplateOptions,
    section: &str,
) -> Result<Option<Template>, s3conn_core::Error> {
    Ok(match (template, layout) {
        (Some(_), Some(_)) => {
            return Err(s3conn_core::Error::Config {
                reason: format!("{section} gives both `template` and `layout`; keep one"),
            });
        }
        (Some(t), None) => Some(Template::parse_with(&t, &options)?),
        (None, Some(l)) => Some(l.parse::<Layout>()?.template_with(options)?),
        (None, None) => None,
    })
}

pub(crate) fn build_state(
    section: Option<StateSection>,
) -> Result<Box<dyn StateStore>, s3conn_core::Error> {
    Ok(match section {
        None => Box::new(LocalFileStateStore::new("s3conn-state")?),
        Some(StateSection::Local { path }) => Box::new(LocalFileStateStore::new(path)?),
        Some(StateSection::S3 { connection, prefix }) => {
            let conn = connection.connect()?;
            let root = conn.key(prefix.as_deref().unwrap_or("_s3conn_state"))?;
            Box::new(ObjectStoreStateStore::new(Arc::clone(conn.store()), root))
        }
    })
}

/// Run the sync a config file describes.
pub(crate) async fn run(path: &Path) -> Result<SyncReport, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| config_error(path, e))?;
    let config = parse(&text).map_err(|e| config_error(path, e))?;
    let with_file = |e: s3conn_core::Error| match Failure::from(e) {
        Failure::Config(m) => config_error(path, m),
        run => run,
    };
    let source = build_source(config.source).map_err(with_file)?;
    let sink = build_sink(config.sink).map_err(with_file)?;
    let state = build_state(config.state).map_err(with_file)?;
    let mut pipeline = Pipeline::new(config.pipeline.id, source, sink, state)
        .map_err(with_file)?
        .with_default_mode(config.pipeline.mode);
    for (stream, mode) in config.pipeline.modes {
        pipeline = pipeline.with_mode(stream, mode);
    }
    if let Some(minutes) = config.pipeline.next_sync_in_minutes {
        pipeline = pipeline.with_next_sync_in(chrono::Duration::minutes(minutes));
    }
    if let Some(secs) = config.pipeline.lease_ttl_secs {
        pipeline = pipeline.with_lease_ttl(std::time::Duration::from_secs(secs));
    }
    let mut every = CommitEvery::default();
    if let Some(n) = config.pipeline.commit_every_objects {
        every = every.with_objects(n);
    }
    if let Some(mb) = config.pipeline.commit_every_mb {
        every = every.with_bytes(mb.saturating_mul(1 << 20));
    }
    if let Some(secs) = config.pipeline.commit_every_secs {
        every = every.with_interval(std::time::Duration::from_secs(secs));
    }
    pipeline = pipeline.with_commit_every(every);
    let bar = progress::bar("sync");
    let shown = bar.clone();
    let mut pipeline = pipeline.with_progress(move |p| progress::show(&shown, p));
    let outcome = pipeline.run().await;
    bar.finish_and_clear();
    Ok(outcome?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config example in the README is complete and valid.
    #[test]
    fn the_readme_example_parses_and_builds() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("```toml\n# s3conn sync")
            .expect("the README has a sync config example");
        let body = &readme[start + "```toml\n".len()..];
        let end = body.find("```").expect("the example is closed");
        let config = parse(&body[..end]).unwrap_or_else(|e| panic!("README example: {e}"));
        assert_eq!(config.pipeline.id, "events-to-warehouse");
        build_source(config.source).unwrap();
        build_sink(config.sink).unwrap();
    }

    #[test]
    fn unknown_settings_are_named() {
        let err = parse(
            "[pipeline]\nid = \"p\"\n[source]\ntype = \"s3\"\nstreams = []\n[source.connection]\nurl = \"s3://b\"\n[sink]\ntype = \"s3\"\nformt = \"x\"\n[sink.connection]\nurl = \"s3://b\"\n",
        )
        .unwrap_err();
        assert!(err.contains("formt"), "{err}");
        let err = parse("[pipeline]\nid = \"p\"\nmode = \"sometimes\"\n").unwrap_err();
        assert!(err.contains("sometimes"), "{err}");
    }

    #[test]
    fn bad_values_are_config_errors() {
        let sink = |extra: &str| {
            let text = format!(
                "[pipeline]\nid = \"p\"\n[source]\ntype = \"s3\"\nstreams = []\n[source.connection]\nurl = \"s3://b\"\n[sink]\ntype = \"s3\"\n{extra}\n[sink.connection]\nurl = \"s3://b\"\n"
            );
            let config = parse(&text).unwrap();
            build_sink(config.sink).unwrap_err().to_string()
        };
        assert!(sink("format = \"xml\"").contains("no format plugin for `xml`"));
        assert!(sink("compression = \"lzo\"").contains("Parquet codec `lzo`"));
        assert!(sink("template = \"${NOPE}/x\"").contains("unknown variable"));
        assert!(sink("template = \"${STREAM_NAME}/x\"").contains("{part_number}"));
        assert!(sink("layout = \"export\"\ntemplate = \"x/{part_number}\"").contains("keep one"));
        assert!(sink("layout = \"sideways\"").contains("stream_folders, export or hive_job"));
        assert!(sink("time_zone = \"Mars/Base\"").contains("IANA"));
        assert!(sink("template = \"${DATE@record}/{part_number}\"").contains("no time column"));

        let source = |extra: &str| {
            let text = format!(
                "[pipeline]\nid = \"p\"\n[source]\ntype = \"s3\"\n[source.connection]\nurl = \"s3://b\"\n[[source.streams]]\nname = \"s\"\nprefix = \"p\"\n{extra}\n[sink]\ntype = \"s3\"\n[sink.connection]\nurl = \"s3://b\"\n"
            );
            let config = parse(&text).unwrap();
            build_source(config.source).unwrap_err().to_string()
        };
        assert!(source("template = \"${country}/x\"").contains("unknown variable"));
        let late = "[pipeline]\nid = \"p\"\n[source]\ntype = \"s3\"\nlate_arrivals = \"sometimes\"\nstreams = []\n[source.connection]\nurl = \"s3://b\"\n[sink]\ntype = \"s3\"\n[sink.connection]\nurl = \"s3://b\"\n";
        let late = build_source(parse(late).unwrap().source).unwrap_err();
        assert!(
            late.to_string()
                .contains("unknown late-arrival policy `sometimes`"),
            "{late}"
        );
        assert!(
            source("format = \"csv\"\nformat_options = { delimeter = \";\" }")
                .contains("`delimeter`")
        );
        assert!(source("format_options = { header = \"false\" }").contains("without a format"));
        assert!(source("layout = \"export\"\ntemplate = \"x\"").contains("[[source.streams]] `s`"));
    }

    fn config_text(server: &s3conn_testkit::S3Server, secret: &str, state: &Path) -> String {
        format!(
            r#"
[pipeline]
id = "cfg-test"

[source]
type = "s3"
[source.connection]
url = "s3://{bucket}/landing"
endpoint = "{endpoint}"
allow_http = true
access_key_id = "{key}"
secret_access_key = "{secret}"
[[source.streams]]
name = "events"
prefix = "events"

[sink]
type = "s3"
format = "ndjson"
compression = "gzip"
template = "${{STREAM_NAME}}/part-{{part_number:05}}-{{sync_id}}{{format_extension}}"
[sink.connection]
url = "s3://{bucket}/out"
endpoint = "{endpoint}"
allow_http = true
access_key_id = "{key}"
secret_access_key = "{secret}"

[state]
type = "local"
path = "{state}"
"#,
            bucket = server.bucket(),
            endpoint = server.endpoint(),
            key = server.access_key(),
            state = state.display(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sync_runs_a_config_against_a_real_s3_server() {
        use object_store::ObjectStoreExt;
        let server = s3conn_testkit::S3Server::start().await;
        let raw = server.store(server.bucket());
        let lines: String = (0..500).map(|i| format!("{{\"id\": {i}}}\n")).collect();
        raw.put(&"landing/events/a.jsonl".into(), lines.into())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sync.toml");

        std::fs::write(
            &path,
            config_text(&server, server.secret_key(), &dir.path().join("state")),
        )
        .unwrap();
        let report = match run(&path).await {
            Ok(r) => r,
            Err(Failure::Run(e)) => panic!("{}", crate::chain(&e)),
            Err(Failure::Config(m) | Failure::Failed(m) | Failure::Report(m)) => panic!("{m}"),
        };
        assert_eq!(report.rows, 500);
        let report = run(&path).await.ok().unwrap();
        assert_eq!(report.rows, 0, "a second run moves only what is new");

        raw.put(
            &"landing/events/b.jsonl".into(),
            "{\"id\": 1}\n{\"id\": }\n".into(),
        )
        .await
        .unwrap();
        let Err(Failure::Run(e)) = run(&path).await else {
            panic!("a malformed object fails the run");
        };
        let text = crate::chain(&e);
        assert!(
            text.contains("landing/events/b.jsonl") && text.contains("line 2"),
            "{text}"
        );

        let secret = "definitely-not-the-secret";
        std::fs::write(
            &path,
            config_text(&server, secret, &dir.path().join("state")),
        )
        .unwrap();
        let Err(Failure::Run(e)) = run(&path).await else {
            panic!("a wrong secret fails the run");
        };
        let text = crate::chain(&e);
        assert!(
            text.contains("SignatureDoesNotMatch") || text.contains("403"),
            "the signature problem is named: {text}"
        );
        assert!(!text.contains(secret), "the secret is never printed");
    }
}
