//! `s3conn check CONFIG`: probe each connection of a config, permission by permission.
//!
//! CONFIG is the TOML of `sync` (its `[source.connection]` is checked as a source, its
//! `[sink.connection]` as a sink, and an S3 `[state.connection]` as a sink: the state store
//! writes with conditional puts), or a connection alone (the keys of `[source.connection]`
//! at the top level), checked as `--role` (default `source`, which never writes).
//!
//! Prints one table per connection (`--json`: one JSON document), and exits 1 when anything
//! a connector needs is missing, 2 when the config cannot be read.

use std::path::{Path, PathBuf};

use clap::Args;
use s3conn_core::auth::ConnectionConfig;
use s3conn_core::auth::check::CheckReport;
use s3conn_core::auth::policy::Role;
use serde::Deserialize;

use crate::Failure;

/// Arguments of `s3conn check`.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// A sync config, or a connection-only TOML.
    config: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// The role to check a connection-only TOML for (a sync config says it per section).
    #[arg(long, default_value = "source")]
    role: Role,
}

/// What `check` prints, and whether everything passed.
#[derive(Debug)]
pub(crate) struct CheckOutput {
    pub(crate) text: String,
    pub(crate) passed: bool,
}

/// One connection to check: its name in the output, its role, its config.
struct Target {
    name: &'static str,
    role: Role,
    config: ConnectionConfig,
}

fn targets(path: &Path, text: &str, role: Role) -> Result<Vec<Target>, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let is_sync = ["pipeline", "source", "sink", "state"]
        .iter()
        .any(|k| table.contains_key(*k));
    if !is_sync {
        let config = ConnectionConfig::deserialize(toml::Value::Table(table))
            .map_err(|e| format!("not a connection: {e}"))?;
        return Ok(vec![Target {
            name: "connection",
            role,
            config,
        }]);
    }
    let section = |name: &str| -> Result<Option<ConnectionConfig>, String> {
        let Some(value) = table.get(name).and_then(|s| s.get("connection")) else {
            return Ok(None);
        };
        ConnectionConfig::deserialize(value.clone())
            .map(Some)
            .map_err(|e| format!("[{name}.connection]: {e}"))
    };
    let mut found = Vec::new();
    for (name, role) in [
        ("source", Role::Source),
        ("sink", Role::Sink),
        ("state", Role::Sink),
    ] {
        if let Some(config) = section(name)? {
            found.push(Target { name, role, config });
        }
    }
    if found.is_empty() {
        return Err(format!(
            "{}: no [source.connection], [sink.connection] or [state.connection] to check",
            path.display()
        ));
    }
    Ok(found)
}

/// Check every connection the config names.
pub(crate) async fn run(args: CheckArgs) -> Result<CheckOutput, Failure> {
    let path = &args.config;
    let config_error = |m: String| Failure::Config(format!("{}: {m}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| config_error(e.to_string()))?;
    let targets = targets(path, &text, args.role).map_err(config_error)?;
    let mut reports: Vec<(&'static str, CheckReport)> = Vec::new();
    for target in targets {
        let connection = target
            .config
            .connect()
            .map_err(|e| config_error(format!("[{}] {}", target.name, crate::chain(&e))))?;
        reports.push((target.name, connection.check(target.role).await));
    }
    let passed = reports.iter().all(|(_, r)| r.passed());
    let text = if args.json {
        let checks: Vec<serde_json::Value> = reports
            .iter()
            .map(|(name, report)| {
                let mut value = serde_json::to_value(report).unwrap_or_default();
                if let Some(object) = value.as_object_mut() {
                    object.insert("name".into(), (*name).into());
                }
                value
            })
            .collect();
        crate::json(
            &serde_json::json!({ "passed": passed, "checks": checks }),
            true,
        )?
    } else {
        reports
            .iter()
            .map(|(name, report)| format!("[{name}] {report}"))
            .collect::<Vec<_>>()
            .join("\n\n")
    };
    Ok(CheckOutput { text, passed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex, OnceLock};

    fn args(config: &Path, extra: &[&str]) -> CheckArgs {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            args: CheckArgs,
        }
        let mut argv = vec!["check".to_owned(), config.display().to_string()];
        argv.extend(extra.iter().map(|s| s.to_string()));
        Cli::try_parse_from(argv).unwrap().args
    }

    /// Every tracing event of this test binary's client side, captured.
    fn logs() -> Arc<Mutex<Vec<u8>>> {
        struct Writer(Arc<Mutex<Vec<u8>>>);
        impl Write for Writer {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
        Arc::clone(LOGS.get_or_init(|| {
            let buffer = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&buffer);
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(
                    "trace,s3s=off,s3s_fs=off",
                ))
                .with_ansi(false)
                .with_writer(move || Writer(Arc::clone(&sink)))
                .finish();
            // Another test of this binary may have installed one already: then this one
            // records nothing, and the scan below is of the outputs only.
            let _ = tracing::subscriber::set_global_default(subscriber);
            buffer
        }))
    }

    #[tokio::test]
    async fn a_local_sync_config_passes_and_prints_tables_or_json() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = dir.path().join("bucket");
        let config = dir.path().join("sync.toml");
        std::fs::write(
            &config,
            format!(
                "[pipeline]\nid = \"p\"\n[source]\ntype = \"s3\"\nstreams = []\n[source.connection]\nlocal_path = \"{b}\"\nprefix = \"landing\"\n[sink]\ntype = \"s3\"\n[sink.connection]\nlocal_path = \"{b}\"\nprefix = \"warehouse\"\n",
                b = bucket.display()
            ),
        )
        .unwrap();
        let out = run(args(&config, &[])).await.ok().unwrap();
        assert!(out.passed, "{}", out.text);
        assert!(
            out.text.starts_with("[source] connection check:"),
            "{}",
            out.text
        );
        assert!(
            out.text.contains("[sink] connection check:"),
            "{}",
            out.text
        );
        let json = run(args(&config, &["--json"])).await.ok().unwrap();
        let value: serde_json::Value = serde_json::from_str(&json.text).unwrap();
        assert_eq!(value["passed"], true);
        assert_eq!(value["checks"][0]["name"], "source");
        assert_eq!(value["checks"][1]["role"], "sink");
        assert_eq!(value["checks"][1]["probes"].as_array().unwrap().len(), 7);
        // Nothing is left behind by the sink check.
        assert_eq!(files_under(&bucket.join("warehouse")), 0);
    }

    fn files_under(dir: &Path) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .map(|e| e.unwrap().path())
            .map(|p| if p.is_dir() { files_under(&p) } else { 1 })
            .sum()
    }

    #[tokio::test]
    async fn a_connection_only_config_is_checked_for_the_role_given() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("conn.toml");
        std::fs::write(
            &config,
            format!("local_path = \"{}\"\n", dir.path().join("b").display()),
        )
        .unwrap();
        let out = run(args(&config, &["--role", "sink", "--json"]))
            .await
            .ok()
            .unwrap();
        let value: serde_json::Value = serde_json::from_str(&out.text).unwrap();
        assert_eq!(value["checks"][0]["role"], "sink", "{}", out.text);
        assert!(out.passed);

        std::fs::write(&config, "buckt = \"b\"\n").unwrap();
        let Err(Failure::Config(message)) = run(args(&config, &[])).await else {
            panic!("a bad connection is a config error");
        };
        assert!(message.contains("buckt"), "{message}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_secret_fails_the_check_and_never_prints() {
        let logs = logs();
        let server = s3conn_testkit::S3Server::start().await;
        let secret = "wrong-secret-never-printed-0123";
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sync.toml");
        let connection = |secret: &str| {
            format!(
                "url = \"s3://{}/exports\"\nendpoint = \"{}\"\nallow_http = true\nmax_retries = 0\naccess_key_id = \"{}\"\nsecret_access_key = \"{secret}\"\n",
                server.bucket(),
                server.endpoint(),
                server.access_key()
            )
        };
        std::fs::write(
            &config,
            format!(
                "[pipeline]\nid = \"p\"\n[source]\ntype = \"s3\"\nstreams = []\n[source.connection]\n{}\n[sink]\ntype = \"s3\"\n[sink.connection]\n{}",
                connection(server.secret_key()),
                connection(secret)
            ),
        )
        .unwrap();
        let out = run(args(&config, &[])).await.ok().unwrap();
        assert!(!out.passed, "{}", out.text);
        assert!(out.text.contains("SignatureDoesNotMatch"), "{}", out.text);
        let json = run(args(&config, &["--json"])).await.ok().unwrap();
        let value: serde_json::Value = serde_json::from_str(&json.text).unwrap();
        assert_eq!(
            value["checks"][0]["passed"], true,
            "the source's keys are right"
        );
        assert_eq!(
            value["checks"][1]["probes"][0]["code"],
            "SignatureDoesNotMatch"
        );

        let logged = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
        for text in [&out.text, &json.text, &logged] {
            assert!(!text.contains(secret), "{text}");
            assert!(!text.contains(server.secret_key()), "{text}");
        }
    }
}
