//! A harness that drives the reference host `s3conn` as a child process, kills it with
//! SIGKILL at named failpoints or at random moments, and checks what the bucket holds
//! afterwards against the source, independently of the code under test: manifests are
//! read as JSON, files with the parquet crate or line by line, ETags and sizes with a
//! HEAD, leftovers by walking the folder that holds the objects.

#![allow(
    dead_code,
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use s3conn_testkit::{FaultPlan, FaultProxy, MotoServer, S3Server, run_python};
use serde_json::Value;

/// The reference host binary, built beside the test binaries (`cargo test` builds the
/// examples; `cargo build -p s3conn-core --example s3conn` does too).
pub fn host_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let host = profile_dir.join("examples").join("s3conn");
    assert!(
        host.exists(),
        "the reference host is not built at {}: run `cargo build -p s3conn-core --example s3conn` (cargo test --all-targets builds it)",
        host.display()
    );
    host
}

/// Where the sink writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A local folder plays the bucket.
    Local,
    /// The loopback S3 server (s3s-fs, in this test process), over HTTP with SigV4.
    S3,
    /// moto (a child process): S3 with `ListMultipartUploads`, which s3s-fs lacks.
    Moto,
}

/// What the sink writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Parquet, one folder per record date (Hive), small files: many single-PUT files.
    ParquetByDate,
    /// Uncompressed NDJSON, one folder, 5 MiB parts: multipart uploads.
    NdjsonMultipart,
}

#[derive(Debug, Clone)]
pub struct Case {
    pub target: Target,
    pub output: Output,
    pub full_refresh: bool,
    /// Keys carry the sync id (`{sync_id}`), so no two attempts share a key.
    pub unique_keys: bool,
    /// Objects (of `rows` rows each) in the first delivery; `later` more for the next.
    pub first_objects: u64,
    pub later_objects: u64,
    pub rows: u64,
    /// A sync commits every this many objects (`commit_every_objects`); 0: the default.
    pub chunk_objects: u64,
}

impl Case {
    pub fn name(&self) -> String {
        format!(
            "{:?}/{:?}/{}/{}",
            self.target,
            self.output,
            if self.full_refresh {
                "full"
            } else {
                "incremental"
            },
            if self.unique_keys { "sync_id" } else { "part" }
        )
    }
}

/// One scenario's folder, servers and config.
pub struct Scenario {
    pub case: Case,
    pub dir: tempfile::TempDir,
    pub server: Option<S3Server>,
    pub moto: Option<MotoServer>,
    /// The store that holds the source objects and the sink's files.
    pub store: Arc<dyn ObjectStore>,
    pub config: PathBuf,
    pub landed: u64,
    pub host: PathBuf,
    last_stderr: std::sync::Mutex<String>,
    step: std::sync::Mutex<String>,
    read_cache: std::sync::Mutex<ReadCache>,
    last_report: std::sync::Mutex<Value>,
    lease_ttl: std::sync::Mutex<u64>,
    /// A fault-injecting proxy every request of the host goes through.
    pub proxy: Option<FaultProxy>,
}

/// Event ids read from a file, by key, ETag and size.
type ReadCache = BTreeMap<(String, String, u64), Arc<Vec<u64>>>;

pub const PIPELINE: &str = "kill";
const MOTO_BUCKET: &str = "kill-bucket";
const MOTO_KEY: &str = "AKIAMOTOKILL";
const MOTO_SECRET: &str = "moto-secret";

/// Run boto3 `code` against `moto` with `s3` and `bucket` defined; returns what it printed.
fn boto3(moto: &MotoServer, code: &str) -> String {
    run_python(
        &format!(
            "import boto3, sys\ns3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id='{MOTO_KEY}', aws_secret_access_key='{MOTO_SECRET}')\nbucket = '{MOTO_BUCKET}'\n{code}\n"
        ),
        &[moto.endpoint()],
    )
}
const SOURCE_PREFIX: &str = "landing/events";
pub const SINK_ROOT: &str = "warehouse";

/// One event row: a unique id, a time spread over four weeks, some payload.
fn event_line(id: u64, pad: usize) -> String {
    let day = 1 + (id.wrapping_mul(7919)) % 28;
    format!(
        "{{\"event_id\":{id},\"ts\":\"2024-03-{day:02}T{:02}:{:02}:00Z\",\"user\":\"u{}\",\"payload\":\"{}\"}}\n",
        id % 24,
        id % 60,
        id % 97,
        "x".repeat(pad)
    )
}

impl Scenario {
    pub async fn new(case: Case) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = match case.target {
            Target::S3 => Some(S3Server::start().await),
            Target::Local | Target::Moto => None,
        };
        let moto = (case.target == Target::Moto).then(|| {
            let moto = MotoServer::start();
            boto3(&moto, "s3.create_bucket(Bucket=bucket)");
            moto
        });
        let store: Arc<dyn ObjectStore> = match (&server, &moto) {
            (Some(server), _) => server.store(server.bucket()),
            (None, Some(moto)) => Arc::new(
                object_store::aws::AmazonS3Builder::new()
                    .with_endpoint(moto.endpoint())
                    .with_allow_http(true)
                    .with_region("us-east-1")
                    .with_bucket_name(MOTO_BUCKET)
                    .with_access_key_id(MOTO_KEY)
                    .with_secret_access_key(MOTO_SECRET)
                    .build()
                    .unwrap(),
            ),
            (None, None) => {
                let bucket = dir.path().join("bucket");
                std::fs::create_dir_all(&bucket).unwrap();
                Arc::new(LocalFileSystem::new_with_prefix(&bucket).unwrap())
            }
        };
        let config = dir.path().join("sync.toml");
        let scenario = Self {
            case,
            dir,
            server,
            moto,
            store,
            config,
            landed: 0,
            host: host_binary(),
            last_stderr: std::sync::Mutex::new(String::new()),
            step: std::sync::Mutex::new(String::new()),
            read_cache: std::sync::Mutex::new(BTreeMap::new()),
            last_report: std::sync::Mutex::new(Value::Null),
            lease_ttl: std::sync::Mutex::new(30),
            proxy: None,
        };
        scenario.write_config();
        scenario
    }

    /// The case and the step under way, for messages.
    pub fn label(&self) -> String {
        let step = self.step.lock().map(|s| s.clone()).unwrap_or_default();
        format!("{} {step}", self.case.name())
    }

    /// Name the step under way (shown in every failure).
    pub fn set_step(&self, step: impl Into<String>) {
        if let Ok(mut s) = self.step.lock() {
            *s = step.into();
        }
    }

    fn connection(&self, prefix: &str) -> String {
        let (endpoint, client) = match (&self.proxy, &self.server) {
            (Some(proxy), _) => (
                proxy.endpoint().to_owned(),
                "timeout_secs = 3\nmax_retries = 10\nretry_timeout_secs = 300\n",
            ),
            (None, Some(server)) => (server.endpoint().to_owned(), "timeout_secs = 5\n"),
            (None, None) => (String::new(), ""),
        };
        if let Some(moto) = &self.moto {
            return format!(
                "url = \"s3://{MOTO_BUCKET}/{prefix}\"\nendpoint = \"{}\"\nallow_http = true\naccess_key_id = \"{MOTO_KEY}\"\nsecret_access_key = \"{MOTO_SECRET}\"\ntimeout_secs = 10\n",
                moto.endpoint()
            );
        }
        match &self.server {
            Some(server) => format!(
                "url = \"s3://{}/{prefix}\"\nendpoint = \"{endpoint}\"\nallow_http = true\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n{client}",
                server.bucket(),
                server.access_key(),
                server.secret_key()
            ),
            None => format!(
                "local_path = \"{}\"\nprefix = \"{prefix}\"\n",
                self.dir.path().join("bucket").display()
            ),
        }
    }

    /// Send every request of the host through a fault-injecting proxy (S3 only), with
    /// short client timeouts so that held connections fail fast.
    pub async fn through_proxy(&mut self, plan: FaultPlan) {
        let server = self.server.as_ref().expect("a proxy needs the S3 target");
        self.proxy = Some(FaultProxy::start(server.endpoint(), plan).await);
        self.write_config();
    }

    /// Rewrite the config with another lease time to live.
    pub fn set_lease_ttl(&self, secs: u64) {
        if let Ok(mut ttl) = self.lease_ttl.lock() {
            *ttl = secs;
        }
        self.write_config();
    }

    fn write_config(&self) {
        let unique = if self.case.unique_keys {
            "-{sync_id}"
        } else {
            ""
        };
        let sink = match self.case.output {
            Output::ParquetByDate => format!(
                "format = \"parquet\"\ntemplate = \"${{STREAM_NAME}}/${{DATE@record}}/part-{{part_number}}{unique}{{format_extension}}\"\nhive = true\ntime_column = \"ts\"\ntarget_file_size_mb = 1\n"
            ),
            Output::NdjsonMultipart => format!(
                "format = \"ndjson\"\ntemplate = \"${{STREAM_NAME}}/part-{{part_number}}{unique}{{format_extension}}\"\ntarget_file_size_mb = 7\npart_size_mb = 5\n"
            ),
        };
        let ttl = self.lease_ttl.lock().map(|t| *t).unwrap_or(30);
        let mode = if self.case.full_refresh {
            "full_refresh"
        } else {
            "incremental"
        };
        let chunk = match self.case.chunk_objects {
            0 => String::new(),
            n => format!("commit_every_objects = {n}\n"),
        };
        let text = format!(
            "[pipeline]\nid = \"{PIPELINE}\"\nmode = \"{mode}\"\nlease_ttl_secs = {ttl}\n{chunk}\n[source]\ntype = \"s3\"\n[source.connection]\n{}\n[[source.streams]]\nname = \"events\"\nprefix = \"events\"\nformat = \"ndjson\"\n\n[sink]\ntype = \"s3\"\n{sink}\n[sink.connection]\n{}\n[state]\ntype = \"local\"\npath = \"{}\"\n",
            self.connection("landing"),
            self.connection(SINK_ROOT),
            self.dir.path().join("state").display()
        );
        std::fs::write(&self.config, text).unwrap();
    }

    fn pad(&self) -> usize {
        match self.case.output {
            Output::ParquetByDate => 40,
            // Long rows: about 2 MB per object of 500 rows, little to parse per byte.
            Output::NdjsonMultipart => 4_000,
        }
    }

    /// Land `n` more source objects of `rows` rows each.
    pub async fn land(&mut self, n: u64) {
        for o in self.landed..self.landed + n {
            let mut text = String::new();
            for r in 0..self.case.rows {
                text.push_str(&event_line(o * self.case.rows + r, self.pad()));
            }
            let key = Path::from(format!("{SOURCE_PREFIX}/obj-{o:05}.jsonl"));
            self.store
                .put(&key, Bytes::from(text).into())
                .await
                .unwrap();
        }
        self.landed += n;
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.host);
        command
            .arg("sync")
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .env_remove("S3CONN_FAILPOINT")
            .env_remove("S3CONN_FAILPOINT_TRACE")
            .stdin(Stdio::null());
        command
    }

    /// Run a sync to its end.
    pub fn run(&self) -> RunOutcome {
        let started = Instant::now();
        let out = self.command().output().unwrap();
        RunOutcome {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took: started.elapsed(),
        }
    }

    /// Run syncs until one succeeds (at most `tries`).
    pub fn run_until_success(&self, tries: usize) -> RunOutcome {
        let mut last = None;
        for _ in 0..tries {
            let outcome = self.run();
            if outcome.success {
                if let Ok(mut last) = self.last_report.lock() {
                    *last = outcome.report();
                }
                return outcome;
            }
            last = Some(outcome);
        }
        let last = last.unwrap();
        panic!(
            "[{}] no sync succeeded in {tries} tries; the last said:\n{}",
            self.label(),
            last.stderr
        );
    }

    /// How often each failpoint is reached in a clean sync (which is run to its end).
    pub fn trace(&self) -> BTreeMap<String, u64> {
        let out = self
            .command()
            .env("S3CONN_FAILPOINT_TRACE", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "[{}] traced sync failed: {}",
            self.label(),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut counts = BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            if let Some(rest) = line.strip_prefix("s3conn-failpoint-pass: ")
                && let Some((name, _)) = rest.split_once(" #")
            {
                *counts.entry(name.to_owned()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Run a sync that stops at the `n`-th pass of failpoint `name`, and kill it there
    /// with SIGKILL. Returns whether the point was reached (a sync that ends first is
    /// left to end); `self.last_stderr()` has what it printed.
    pub fn kill_at(&self, name: &str, n: u64) -> bool {
        let mut child = self
            .command()
            .env("S3CONN_FAILPOINT", format!("{name}@{n}"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let marker = format!("s3conn-failpoint: {name} #{n}");
        let mut reached = false;
        let mut printed = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains(&marker) {
                reached = true;
                break;
            }
            printed.push(line);
        }
        if reached {
            kill(&mut child);
        } else {
            let _ = child.wait();
        }
        if let Ok(mut last) = self.last_stderr.lock() {
            let tail = printed.len().saturating_sub(30);
            *last = printed[tail..].join("\n");
        }
        reached
    }

    /// What the last sync run by `kill_at` printed on stderr.
    pub fn last_stderr(&self) -> String {
        self.last_stderr
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Start a sync with extra environment variables, its stderr piped.
    pub fn spawn(&self, env: &[(&str, &str)]) -> Child {
        let mut command = self.command();
        command
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        command.spawn().unwrap()
    }

    /// Start a sync and kill it with SIGKILL after `after` (if it is still running).
    /// Returns whether it was killed.
    pub fn kill_after(&self, after: Duration) -> bool {
        let mut child = self
            .command()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + after;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if Instant::now() >= deadline {
                kill(&mut child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The folder that holds the objects (the local bucket, or the S3 server's bucket).
    pub fn bucket_dir(&self) -> PathBuf {
        match &self.server {
            Some(server) => server.bucket_dir(server.bucket()),
            None => self.dir.path().join("bucket"),
        }
    }

    /// The event ids of source objects `objects`.
    pub fn ids_of(&self, objects: std::ops::Range<u64>) -> BTreeSet<u64> {
        (objects.start * self.case.rows..objects.end * self.case.rows).collect()
    }

    /// The pipeline's committed source state: the objects it says were read.
    pub fn committed_objects(&self) -> BTreeSet<String> {
        self.state_objects("committed")
    }

    /// The objects of the checkpoint the pipeline was about to commit, if any.
    pub fn pending_objects(&self) -> BTreeSet<String> {
        self.state_objects("pending")
    }

    fn state_objects(&self, which: &str) -> BTreeSet<String> {
        let folder = self.dir.path().join("state").join(PIPELINE);
        let Ok(entries) = std::fs::read_dir(&folder) else {
            return BTreeSet::new();
        };
        let mut versions: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        versions.sort();
        let Some(newest) = versions.last() else {
            return BTreeSet::new();
        };
        let state: Value = serde_json::from_slice(&std::fs::read(newest).unwrap()).unwrap();
        state[which]["source"]["streams"]["events"]["frontier"]
            .as_object()
            .map(|seen| seen.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// Read `child`'s stderr until a line contains `marker`; returns whether the marker came,
/// the lines read, and a handle to the rest of stderr (read in the background).
pub fn wait_for(
    child: &mut Child,
    marker: &str,
) -> (bool, Vec<String>, std::thread::JoinHandle<Vec<String>>) {
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let mut found = false;
    for line in lines.by_ref() {
        let Ok(line) = line else { break };
        let hit = line.contains(marker);
        seen.push(line);
        if hit {
            found = true;
            break;
        }
    }
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect());
    (found, seen, rest)
}

/// Send `signal` (`STOP`, `CONT`, `KILL`) to a child.
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {}", child.id());
}

fn kill(child: &mut Child) {
    // std's Child::kill sends SIGKILL on Unix.
    let _ = child.kill();
    let _ = child.wait();
}

#[derive(Debug)]
pub struct RunOutcome {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl RunOutcome {
    pub fn report(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or(Value::Null)
    }
}

/// What the committed view holds.
#[derive(Debug, Default)]
pub struct View {
    /// Live files (key → manifest record).
    pub live: BTreeMap<String, Value>,
    /// Event id → how many times it appears in live files.
    pub ids: BTreeMap<u64, u64>,
    /// Every file any manifest lists, live or not.
    pub listed: BTreeSet<String>,
    pub manifests: usize,
}

impl Scenario {
    /// Read the manifests and the files they list, and check what every manifest promises:
    /// each listed live file exists with the size and ETag its manifest recorded and holds
    /// the rows it says. Returns the view; panics with what is wrong.
    pub async fn committed_view(&self) -> View {
        let prefix = Path::from(format!("{SINK_ROOT}/manifests"));
        let mut names: Vec<Path> = self
            .store
            .list(Some(&prefix))
            .map(|m| m.unwrap().location)
            .collect::<Vec<_>>()
            .await;
        names.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
        let mut view = View::default();
        for name in &names {
            let bytes = self.store.get(name).await.unwrap().bytes().await.unwrap();
            let manifest: Value = serde_json::from_slice(&bytes).unwrap();
            view.manifests += 1;
            let record = &manifest["s3conn"];
            assert_eq!(record["pipeline_id"], PIPELINE);
            let full = manifest["tables"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["incremental"] == false);
            if full {
                view.live.clear();
            }
            for file in record["files"].as_array().unwrap() {
                let key = file["key"].as_str().unwrap().to_owned();
                view.listed.insert(key.clone());
                view.live.insert(key, file.clone());
            }
        }
        for (key, file) in &view.live {
            let path = Path::from(key.as_str());
            let meta = match self.store.head(&path).await {
                Ok(meta) => meta,
                Err(e) => panic!("[{}] a committed file is gone: {key}: {e}", self.label()),
            };
            assert_eq!(
                meta.size,
                file["size"].as_u64().unwrap(),
                "[{}] {key}: size differs from its manifest",
                self.label()
            );
            assert_eq!(
                meta.e_tag.as_deref(),
                file["e_tag"].as_str(),
                "[{}] {key}: ETag differs from its manifest (the file was replaced)",
                self.label()
            );
            // Objects never change under one ETag: read each one once per scenario.
            let cache_key = (
                key.clone(),
                meta.e_tag.clone().unwrap_or_default(),
                meta.size,
            );
            let cached = self.read_cache.lock().unwrap().get(&cache_key).cloned();
            let ids = match cached {
                Some(ids) => ids,
                None => {
                    let bytes = self.store.get(&path).await.unwrap().bytes().await.unwrap();
                    let ids = Arc::new(read_ids(key, bytes));
                    self.read_cache
                        .lock()
                        .unwrap()
                        .insert(cache_key, Arc::clone(&ids));
                    ids
                }
            };
            assert_eq!(
                ids.len() as u64,
                file["rows"].as_u64().unwrap(),
                "[{}] {key}: row count differs from its manifest",
                self.label()
            );
            for id in ids.iter() {
                *view.ids.entry(*id).or_insert(0) += 1;
            }
        }
        view
    }

    /// Every data file in the bucket (the sink's root, outside its bookkeeping folders),
    /// straight from the folder that holds them: staging files of unfinished writes count.
    pub fn data_files(&self) -> BTreeSet<String> {
        if self.moto.is_some() {
            return self
                .listed_keys()
                .into_iter()
                .filter(|k| {
                    let inside = k.strip_prefix(&format!("{SINK_ROOT}/")).unwrap_or("");
                    !(inside.starts_with("manifests/")
                        || inside.starts_with("sync_reports/")
                        || inside.starts_with("_s3conn/"))
                })
                .collect();
        }
        let root = self.bucket_dir();
        let mut found = BTreeSet::new();
        let mut todo = vec![root.join(SINK_ROOT)];
        while let Some(dir) = todo.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    todo.push(path);
                    continue;
                }
                let relative = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let inside = relative
                    .strip_prefix(&format!("{SINK_ROOT}/"))
                    .unwrap_or("");
                if inside.starts_with("manifests/")
                    || inside.starts_with("sync_reports/")
                    || inside.starts_with("_s3conn/")
                {
                    continue;
                }
                found.insert(relative);
            }
        }
        found
    }

    /// Every key under the sink's root, by listing the store (moto keeps no files).
    fn listed_keys(&self) -> BTreeSet<String> {
        let moto = self.moto.as_ref().expect("listing is for moto");
        boto3(
            moto,
            &format!("for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix='{SINK_ROOT}/'):\n    for o in page.get('Contents', []):\n        print(o['Key'])"),
        )
        .lines()
        .map(str::to_owned)
        .collect()
    }

    /// Multipart uploads still open: S3's upload records on the server, a local folder's
    /// staging files (`name#digits`).
    pub fn open_uploads(&self) -> Vec<String> {
        if let Some(moto) = &self.moto {
            return boto3(
                moto,
                "for u in s3.list_multipart_uploads(Bucket=bucket).get('Uploads', []):\n    print(u['Key'], u['UploadId'])",
            )
            .lines()
            .map(str::to_owned)
            .collect();
        }
        match &self.server {
            Some(server) => std::fs::read_dir(server.root())
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".upload-") && n.ends_with(".json"))
                .collect(),
            None => self
                .data_files()
                .into_iter()
                .filter(|k| {
                    k.rsplit_once('#').is_some_and(|(_, id)| {
                        !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())
                    })
                })
                .collect(),
        }
    }

    /// The journals left under the sink's root.
    pub fn journals(&self) -> Vec<String> {
        if self.moto.is_some() {
            return self
                .listed_keys()
                .into_iter()
                .filter(|k| k.starts_with(&format!("{SINK_ROOT}/_s3conn/")))
                .collect();
        }
        let dir = self.bucket_dir().join(SINK_ROOT).join("_s3conn");
        let mut found = Vec::new();
        let mut todo = vec![dir];
        while let Some(dir) = todo.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.path().is_dir() {
                    todo.push(entry.path());
                } else {
                    found.push(entry.path().display().to_string());
                }
            }
        }
        found
    }

    /// Right after a kill: the state names only objects whose every row is committed.
    pub async fn check_state_not_ahead(&self) {
        let view = self.committed_view().await;
        for key in self.committed_objects() {
            let object: u64 = key
                .rsplit_once("obj-")
                .and_then(|(_, rest)| rest.strip_suffix(".jsonl"))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected key in the state: {key}"));
            for id in self.ids_of(object..object + 1) {
                assert!(
                    view.ids.contains_key(&id),
                    "[{}] the state says {key} was read, but its row {id} is not committed",
                    self.label()
                );
            }
        }
    }

    /// After a successful sync: every landed row exactly once in the live files, every
    /// listed live file intact, nothing else in the bucket, no journal, no open upload.
    pub async fn check_exact(&self) {
        let name = self.label();
        let view = self.committed_view().await;
        let expected = self.ids_of(0..self.landed);
        let missing: Vec<u64> = expected
            .iter()
            .filter(|id| !view.ids.contains_key(id))
            .copied()
            .collect();
        let repeated: Vec<(u64, u64)> = view
            .ids
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, n)| (*id, *n))
            .collect();
        let unknown: Vec<u64> = view
            .ids
            .keys()
            .filter(|id| !expected.contains(id))
            .copied()
            .collect();
        assert!(
            missing.is_empty() && repeated.is_empty() && unknown.is_empty(),
            "[{name}] committed rows differ from the source: {} missing (first {:?}), {} repeated (first {:?}), {} unknown",
            missing.len(),
            missing.first(),
            repeated.len(),
            repeated.first(),
            unknown.len()
        );
        let live: BTreeSet<String> = view.live.keys().cloned().collect();
        let stray: Vec<String> = self.data_files().difference(&live).cloned().collect();
        if !stray.is_empty() {
            let mut detail = Vec::new();
            for key in &stray {
                let attributes = self
                    .store
                    .get_opts(
                        &Path::from(key.as_str()),
                        object_store::GetOptions {
                            head: true,
                            ..Default::default()
                        },
                    )
                    .await
                    .map(|r| format!("{:?}", r.attributes))
                    .unwrap_or_else(|e| format!("head failed: {e}"));
                detail.push(format!("{key} (attributes {attributes})"));
            }
            panic!(
                "[{name}] files outside the committed view remain: {detail:?}; the last run's recovery: {}",
                self.last_report
                    .lock()
                    .map(|r| r["recovery"].to_string())
                    .unwrap_or_default()
            );
        }
        let journals = self.journals();
        assert!(
            journals.is_empty(),
            "[{name}] journals remain (the last run's recovery: {}): {:?}",
            self.last_report
                .lock()
                .map(|r| r["recovery"].to_string())
                .unwrap_or_default(),
            journals
                .iter()
                .map(|j| std::fs::read_to_string(j).unwrap_or_default())
                .collect::<Vec<_>>()
        );
        let uploads = self.open_uploads();
        assert!(
            uploads.is_empty(),
            "[{name}] multipart uploads remain open (the last run's recovery: {}): {uploads:?}",
            self.last_report
                .lock()
                .map(|r| r["recovery"].to_string())
                .unwrap_or_default(),
        );
    }
}

/// The event ids in a data file (Parquet, or NDJSON lines).
fn read_ids(key: &str, bytes: Bytes) -> Vec<u64> {
    if key.ends_with(".parquet") {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap_or_else(|e| panic!("{key} is not a Parquet file: {e}"))
            .build()
            .unwrap();
        let mut ids = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            let column = batch.column_by_name("event_id").unwrap();
            let column = arrow_cast::cast(column, &arrow_schema::DataType::UInt64).unwrap();
            let column = column
                .as_any()
                .downcast_ref::<arrow_array::UInt64Array>()
                .unwrap();
            ids.extend(column.iter().map(|v| v.unwrap()));
        }
        ids
    } else {
        std::str::from_utf8(&bytes)
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                v["event_id"].as_u64().unwrap()
            })
            .collect()
    }
}

/// A deterministic generator for the random kills (splitmix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
