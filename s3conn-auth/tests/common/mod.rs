//! Shared by the integration tests: everything the crate logs, captured; a scan of every
//! output for secrets.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// Every tracing event of this test binary, at TRACE level, as formatted text.
#[derive(Clone, Default)]
pub(crate) struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

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

/// Install (once per test binary) a global subscriber that records every event of every
/// client-side crate at TRACE level (s3conn_auth, object_store, reqwest, hyper…) with all
/// its fields. The in-process test server (s3s, s3s-fs) logs the requests it receives,
/// headers included: that is the server's side, not what a host of s3conn prints, so its
/// targets are left out.
pub(crate) fn logs() -> Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let buffer = Arc::clone(&logs.0);
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "trace,s3s=off,s3s_fs=off",
            ))
            .with_ansi(false)
            .with_writer(move || Writer(Arc::clone(&buffer)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        logs
    })
    .clone()
}

/// Panic if any text contains any secret (secrets shorter than 8 characters are not
/// meaningful to search for and are refused).
pub(crate) fn assert_no_secret(what: &str, texts: &[String], secrets: &[String]) {
    for secret in secrets {
        assert!(
            secret.len() >= 8,
            "test secrets must be searchable: `{secret}`"
        );
        for text in texts {
            assert!(
                !text.contains(secret.as_str()),
                "{what}: a secret appears in output:\n{text}"
            );
        }
    }
}
