//! `s3conn render TEMPLATE`: print the key a template renders, or its parse error with a
//! caret under the position.

use chrono::{DateTime, Utc};
use clap::Args;
use s3conn_core::layout::layouts::Layout;
use s3conn_core::layout::template::{
    CharacterPolicy, Clock, RenderContext, Template, TemplateOptions,
};

/// Arguments of `s3conn render`.
#[derive(Debug, Args)]
pub(crate) struct RenderArgs {
    /// The key template (or give --layout).
    template: Option<String>,
    /// A ready-made layout instead of a template: stream_folders, export or
    /// hive_job:<destination prefix>:<database>:<schema>.
    #[arg(long, conflicts_with = "template")]
    layout: Option<String>,
    /// A host variable and its value (repeatable): NAME=VALUE.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// The sync's start time (default: now), RFC 3339.
    #[arg(long)]
    time: Option<DateTime<Utc>>,
    /// The record's time, for variables on the record clock, RFC 3339.
    #[arg(long)]
    record_time: Option<DateTime<Utc>>,
    /// The file's creation time, for variables on the file clock, RFC 3339 (default: now).
    #[arg(long)]
    file_time: Option<DateTime<Utc>>,
    /// Render folders made of one variable as name=value.
    #[arg(long)]
    hive: bool,
    /// The time zone of time variables: UTC, +02:00, Europe/Paris.
    #[arg(long, default_value = "UTC")]
    tz: String,
    /// The template's clock: sync, record or file.
    #[arg(long, default_value = "sync")]
    clock: String,
    /// What to do with characters S3 advises against in values: escape, refuse or allow.
    #[arg(long, default_value = "escape")]
    characters: String,
    /// The stream name.
    #[arg(long, default_value = "events")]
    stream: String,
    /// The stream's namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// The part number.
    #[arg(long, default_value_t = 0)]
    part: u64,
    /// The file extension, with its dot.
    #[arg(long, default_value = ".parquet")]
    ext: String,
    /// The sync id.
    #[arg(long, default_value = "01936b7a-4c1d-7000-8000-000000000000")]
    sync_id: String,
}

/// A message for stderr, and whether it is about the user's input (exit 2).
pub(crate) struct RenderError(pub(crate) String);

fn caret(template: &str, position: usize) -> String {
    let column = template
        .char_indices()
        .take_while(|(i, _)| *i < position)
        .count();
    format!("  {template}\n  {}^", " ".repeat(column))
}

/// Render as the arguments say: the key, or an error message for stderr.
pub(crate) fn run(args: RenderArgs) -> Result<String, RenderError> {
    let err = |e: s3conn_core::layout::Error| RenderError(e.to_string());
    let mut options = TemplateOptions::default()
        .with_hive(args.hive)
        .with_clock(args.clock.parse::<Clock>().map_err(err)?)
        .with_time_zone(&args.tz)
        .map_err(err)?
        .with_characters(args.characters.parse::<CharacterPolicy>().map_err(err)?);
    if args.record_time.is_some() {
        options = options.with_time_column("record_time");
    }
    let mut values = Vec::new();
    for var in &args.vars {
        let Some((name, value)) = var.split_once('=') else {
            return Err(RenderError(format!("--var `{var}`: write NAME=VALUE")));
        };
        options = options.with_static(name, value);
        values.push((name.to_owned(), value.to_owned()));
    }
    let template = match (&args.template, &args.layout) {
        (Some(source), _) => Template::parse_with(source, &options).map_err(|e| match &e {
            s3conn_core::layout::Error::TemplateParse { position, .. } => {
                RenderError(format!("{e}\n{}", caret(source, *position)))
            }
            _ => RenderError(e.to_string()),
        })?,
        (None, Some(layout)) => layout
            .parse::<Layout>()
            .and_then(|l| l.template_with(options))
            .map_err(err)?,
        (None, None) => {
            return Err(RenderError(
                "give a template, or --layout with a ready-made layout".into(),
            ));
        }
    };
    let mut ctx = RenderContext::new(&args.stream, args.time.unwrap_or_else(Utc::now))
        .with_optional_namespace(args.namespace)
        .with_part_number(args.part)
        .with_format_extension(&args.ext)
        .with_sync_id(&args.sync_id);
    if let Some(t) = args.record_time {
        ctx = ctx.with_record_time(t);
    }
    if let Some(t) = args.file_time {
        ctx = ctx.with_file_time(t);
    }
    for (name, value) in values {
        ctx = ctx.with_value(name, value);
    }
    template.render(&ctx).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: RenderArgs,
    }

    fn render(argv: &[&str]) -> Result<String, String> {
        let mut all = vec!["render"];
        all.extend_from_slice(argv);
        run(Cli::try_parse_from(all).map_err(|e| e.to_string())?.args).map_err(|e| e.0)
    }

    #[test]
    fn renders_templates_layouts_and_errors() {
        assert_eq!(
            render(&[
                "${YEAR}/${MONTH}/${DAY}/${JOB_ID}/{part_number}{format_extension}",
                "--hive",
                "--time",
                "2024-11-27T10:00:00Z",
                "--sync-id",
                "d12d74f4",
                "--ext",
                ".csv.gz",
            ])
            .unwrap(),
            "year=2024/month=11/day=27/job_id=d12d74f4/0.csv.gz"
        );
        assert_eq!(
            render(&[
                "--layout",
                "export",
                "--stream",
                "users",
                "--part",
                "3",
                "--time",
                "2024-11-27T10:00:00Z",
            ])
            .unwrap(),
            "users/date=2024-11-27/part-00003.parquet"
        );
        assert_eq!(
            render(&[
                "${tenant}/${DATE@record}/x",
                "--var",
                "tenant=acme",
                "--record-time",
                "2020-02-29T23:00:00-02:00",
            ])
            .unwrap(),
            "acme/2020-03-01/x"
        );
        let err = render(&["data/${STREAM}/x"]).unwrap_err();
        assert!(err.contains("did you mean `${STREAM_NAME}`"), "{err}");
        assert!(err.ends_with("  data/${STREAM}/x\n       ^"), "{err}");
        let err = render(&["${STREAM_NAME}/", "--stream", "s"]).unwrap_err();
        assert!(err.contains("ends with `/`"), "{err}");
        let err = render(&["x/{part_number}", "--tz", "Mars/Base"]).unwrap_err();
        assert!(err.contains("IANA"), "{err}");
    }
}
