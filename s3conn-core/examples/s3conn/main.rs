//! `s3conn`: the reference host. It assembles s3conn pipelines from a config file and
//! exposes each capability as a subcommand, so anyone can drive the library without writing
//! Rust.
//!
//! ```text
//! s3conn demo [--dir DIR] [--events N]   push sample events into a local-folder bucket, pull
//!                                        the new ones back, print the sync report
//! s3conn sync CONFIG.toml                run one sync described by a config file
//! s3conn render TEMPLATE [options]       print the key a template renders (or its error)
//! s3conn convert INPUT OUTPUT [options]  convert a local file between formats through the
//!                                        codec plugins (formats from the extensions or
//!                                        --from/--to, codec from --codec or the extension)
//! s3conn policy --role source|sink --bucket B [--prefix P] [--external-id X --principal ARN]
//!                                        print the least-privilege IAM policy (and the
//!                                        trust policy of a role assumed with an External ID)
//! s3conn check CONFIG [--json] [--role R] probe each connection of a config, permission by
//!                                        permission; exit 1 when something is missing
//! ```
//!
//! The sync report goes to stdout as JSON (`convert` prints one JSON line); progress and
//! errors go to stderr. A failure exits with status 1 (2 for a bad command line or config)
//! and says what failed and where: the config key, the object or file, the line.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod check;
mod config;
mod convert;
mod demo;
mod policy;
mod progress;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Move data between applications and S3.
#[derive(Debug, Parser)]
#[command(name = "s3conn", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Push sample events into a local folder used as a bucket, then pull what is new back
    /// through the S3 source into Parquet. Run it again: only the new events move.
    Demo {
        /// The folder that plays the bucket (and keeps the demo's state).
        #[arg(long, default_value = "s3conn-demo")]
        dir: PathBuf,
        /// How many events to generate on this run.
        #[arg(long, default_value_t = 20_000)]
        events: usize,
    },
    /// Run one sync described by a TOML config file (see README).
    Sync {
        /// The config file.
        config: PathBuf,
    },
    /// Print the key a path template renders, or its parse error with the position.
    Render(Box<render::RenderArgs>),
    /// Convert a local file from one format to another through the codec plugins (formats
    /// from the extensions or --from/--to; input compression detected from the content).
    Convert(Box<convert::ConvertArgs>),
    /// Print the least-privilege IAM policy of a source or a sink on a bucket and root path,
    /// and the trust policy of a role assumed with an External ID.
    Policy(Box<policy::PolicyArgs>),
    /// Probe the connections of a config (a sync config, or a connection alone) permission
    /// by permission; exit 1 when something a connector needs is missing.
    Check(Box<check::CheckArgs>),
}

/// A failure, with the exit status it maps to.
pub(crate) enum Failure {
    /// Bad configuration: exit 2.
    Config(String),
    /// The run failed: exit 1.
    Run(s3conn_core::Error),
    /// The run failed, with a message that says where: exit 1.
    Failed(String),
    /// A report that says something failed, for stdout: exit 1.
    Report(String),
}

impl From<convert::ConvertError> for Failure {
    fn from(e: convert::ConvertError) -> Self {
        match e {
            convert::ConvertError::Usage(m) => Self::Config(m),
            convert::ConvertError::Failed(m) => Self::Failed(m),
        }
    }
}

/// Pretty JSON for reports (one line for `convert`, whose output is read by scripts).
fn json<T: serde::Serialize>(value: &T, pretty: bool) -> Result<String, Failure> {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    text.map_err(|e| Failure::Failed(format!("cannot print the report: {e}")))
}

impl From<s3conn_core::Error> for Failure {
    fn from(e: s3conn_core::Error) -> Self {
        match e {
            s3conn_core::Error::Config { .. } | s3conn_core::Error::Auth(_) => {
                Self::Config(chain(&e))
            }
            other => Self::Run(other),
        }
    }
}

/// An error and its causes, one per line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str("\n  caused by: ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        Command::Render(args) => {
            return match render::run(*args) {
                Ok(key) => {
                    println!("{key}");
                    ExitCode::SUCCESS
                }
                Err(render::RenderError(message)) => {
                    eprintln!("error: {message}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Policy(args) => {
            return match policy::run(*args) {
                Ok(document) => match serde_json::to_string_pretty(&document) {
                    Ok(text) => {
                        println!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: cannot print the policy: {e}");
                        ExitCode::FAILURE
                    }
                },
                Err(message) => {
                    eprintln!("error: {message}");
                    ExitCode::from(2)
                }
            };
        }
        other => other,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match command {
            Command::Demo { dir, events } => json(&demo::run(&dir, events).await?, true),
            Command::Sync { config } => json(&config::run(&config).await?, true),
            Command::Convert(args) => json(&convert::run(*args).await?, false),
            Command::Check(args) => {
                let out = check::run(*args).await?;
                if out.passed {
                    Ok(out.text)
                } else {
                    Err(Failure::Report(out.text))
                }
            }
            Command::Render(_) | Command::Policy(_) => Err(Failure::Config(
                "this command runs without a runtime".into(),
            )),
        }
    });
    match outcome {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(Failure::Failed(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
        Err(Failure::Report(report)) => {
            println!("{report}");
            ExitCode::FAILURE
        }
        Err(Failure::Config(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Run(e)) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}
