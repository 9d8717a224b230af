//! The independent readers (pyarrow, fastavro, duckdb) and moto, from the project's Python
//! environment.

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Python interpreter that has the independent readers: `$S3CONN_PYTHON`, else the
/// workspace's `.venv` (made by `scripts/test`).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("S3CONN_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(".venv")
        .join("bin")
        .join("python");
    if venv.exists() {
        return venv;
    }
    panic!(
        "this test reads s3conn's output with independent readers (pyarrow, duckdb, fastavro): \
         run `scripts/test` once to create .venv, or point S3CONN_PYTHON at a python that has them"
    );
}

/// Run a Python script with arguments; returns its stdout. Panics with stderr on failure.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let python = python();
    let output = Command::new(&python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    if !output.status.success() {
        panic!(
            "python script failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8(output.stdout).expect("python printed UTF-8")
}

/// A moto server on loopback (S3 with race-correct conditional writes, IAM, STS). Stops when
/// dropped.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    endpoint: String,
}

impl MotoServer {
    /// Start `moto_server` from the Python environment on a free port and wait until it
    /// answers. It accepts any credentials and enforces no IAM policy.
    pub fn start() -> Self {
        Self::spawn(None)
    }

    /// Start `moto_server` with `INITIAL_NO_AUTH_ACTION_COUNT=n`: the first `n` requests to
    /// S3, IAM and STS are let through (setting up users, keys, roles and buckets), every
    /// later one must carry a valid SigV4 signature of a key moto issued and is checked
    /// against the caller's IAM policies (and, for `sts:AssumeRole`, the role's trust
    /// policy). See [`reset_auth`](Self::reset_auth) to start enforcing at a chosen moment.
    pub fn start_with_auth(n: u64) -> Self {
        Self::spawn(Some(n))
    }

    /// moto's own `/moto-api/reset-auth`: let the next `n` requests through unchecked, then
    /// enforce signatures and IAM policies (`reset_auth(0)`: enforce from now on).
    pub fn reset_auth(&self, n: u64) {
        let addr = self
            .endpoint
            .strip_prefix("http://")
            .expect("moto endpoint is http://host:port");
        let body = n.to_string();
        let mut stream = TcpStream::connect(addr).expect("connect to moto");
        write!(
            stream,
            "POST /moto-api/reset-auth HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send reset-auth to moto");
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut stream, &mut answer).expect("read moto's answer");
        assert!(
            answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
            "moto refused reset-auth: {answer}"
        );
    }

    fn spawn(no_auth_action_count: Option<u64>) -> Self {
        let python = python();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("find a free port");
            l.local_addr().expect("address").port()
        };
        let bin = python.with_file_name("moto_server");
        let mut command = if bin.exists() {
            Command::new(bin)
        } else {
            let mut c = Command::new(&python);
            c.args(["-m", "moto.server"]);
            c
        };
        if let Some(n) = no_auth_action_count {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", n.to_string());
        }
        let child = command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start moto_server (pip install 'moto[server]'): {e}")
            });
        let server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.write_all(b"GET /moto-api/ HTTP/1.0\r\n\r\n");
                return server;
            }
            if Instant::now() > deadline {
                panic!("moto_server did not start within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
