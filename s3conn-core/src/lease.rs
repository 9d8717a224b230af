//! One run per pipeline at a time: a lease kept in the pipeline's [`StateStore`].
//!
//! A run takes the lease `<pipeline>.lease` with a compare-and-swap save before it touches
//! anything, renews it while it runs (every third of its time to live), checks that it
//! still holds it right before the sink commits, and releases it at the end. A second run
//! of the same pipeline finds the lease held and stops at once with [`Error::Leased`],
//! which names the holder and when the lease expires.
//!
//! A holder that dies (SIGKILL, a lost machine) stops renewing: its lease expires after its
//! time to live and the next run takes it over. On Linux a run on the same machine (same
//! boot and process namespace) does not wait: it sees that the holder's process is gone
//! (its pid no longer names a process started at the recorded time) and takes over at once.
//!
//! Like every lease, this one assumes that a process paused for longer than the time to
//! live (between its last check and its commit) is rare: the check before the commit
//! renews the lease and refuses to commit if the renewal did not come back within half the
//! time to live.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::state::{StateStore, StateVersion};

/// The default time to live of a lease.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(60);

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Holder {
    sync_id: String,
    host: String,
    pid: u32,
    /// Linux: `<boot id>/<pid namespace>/<start time in clock ticks>`, which names one
    /// process on one machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    process: Option<String>,
}

impl Holder {
    fn describe(&self) -> String {
        format!(
            "sync {} on host {} (pid {})",
            self.sync_id, self.host, self.pid
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    version: u32,
    holder: Holder,
    /// Epoch milliseconds.
    acquired_at: i64,
    /// Epoch milliseconds.
    expires_at: i64,
    #[serde(default)]
    released: bool,
}

/// A held lease.
#[derive(Debug)]
pub(crate) struct Lease {
    key: String,
    pipeline: String,
    version: StateVersion,
    record: Record,
    ttl: Duration,
    renewed: Instant,
}

fn state_error(key: &str, e: impl std::fmt::Display) -> Error {
    Error::State {
        key: key.to_owned(),
        reason: e.to_string(),
    }
}

fn encode(key: &str, record: &Record) -> Result<Bytes> {
    serde_json::to_vec(record)
        .map(Bytes::from)
        .map_err(|e| state_error(key, e))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| ms.to_string())
}

impl Lease {
    /// Take the lease of `pipeline` for `sync_id`, or fail with [`Error::Leased`].
    pub(crate) async fn acquire<T: StateStore + ?Sized>(
        store: &T,
        pipeline: &str,
        sync_id: &str,
        ttl: Duration,
    ) -> Result<Self> {
        let key = format!("{pipeline}.lease");
        let holder = Holder {
            sync_id: sync_id.to_owned(),
            host: host_name(),
            pid: std::process::id(),
            process: this_process(),
        };
        for _ in 0..5 {
            let current = store.load(&key).await?;
            let expected = match &current {
                None => None,
                Some(v) => {
                    let record: Record =
                        serde_json::from_slice(&v.value).map_err(|e| state_error(&key, e))?;
                    let now = Utc::now().timestamp_millis();
                    if record.released || record.expires_at <= now {
                        tracing::debug!(holder = %record.holder.describe(), "taking over a released or expired lease");
                    } else if holder_is_gone(&record.holder) {
                        tracing::info!(holder = %record.holder.describe(), "the run holding the lease is gone (its process no longer exists); taking the lease over");
                    } else {
                        return Err(Error::Leased {
                            pipeline: pipeline.to_owned(),
                            holder: record.holder.describe(),
                            expires_at: rfc3339(record.expires_at),
                        });
                    }
                    Some(v.version)
                }
            };
            let now = Utc::now().timestamp_millis();
            let record = Record {
                version: 1,
                holder: holder.clone(),
                acquired_at: now,
                expires_at: now.saturating_add(millis(ttl)),
                released: false,
            };
            match store.save(&key, encode(&key, &record)?, expected).await {
                Ok(version) => {
                    return Ok(Self {
                        key,
                        pipeline: pipeline.to_owned(),
                        version,
                        record,
                        ttl,
                        renewed: Instant::now(),
                    });
                }
                // Someone else moved first: look again.
                Err(Error::StateConflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::LeaseLost {
            pipeline: pipeline.to_owned(),
            reason: "the lease kept changing hands while this run tried to take it".into(),
        })
    }

    /// Extend the lease by its time to live.
    pub(crate) async fn renew<T: StateStore + ?Sized>(&mut self, store: &T) -> Result<()> {
        let started = Instant::now();
        let mut record = self.record.clone();
        record.expires_at = Utc::now()
            .timestamp_millis()
            .saturating_add(millis(self.ttl));
        match store
            .save(&self.key, encode(&self.key, &record)?, Some(self.version))
            .await
        {
            Ok(version) => {
                self.version = version;
                self.record = record;
                self.renewed = started;
                Ok(())
            }
            Err(Error::StateConflict { .. }) => Err(Error::LeaseLost {
                pipeline: self.pipeline.clone(),
                reason: "another run took over its lease".into(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Renew now and make sure the lease is safely held for the next steps: the renewal
    /// must come back within half the time to live.
    pub(crate) async fn confirm<T: StateStore + ?Sized>(&mut self, store: &T) -> Result<()> {
        self.renew(store).await?;
        if self.renewed.elapsed() > self.ttl / 2 {
            return Err(Error::LeaseLost {
                pipeline: self.pipeline.clone(),
                reason: format!(
                    "renewing its lease took {:?}, more than half its time to live",
                    self.renewed.elapsed()
                ),
            });
        }
        Ok(())
    }

    /// When the next renewal is due.
    pub(crate) fn renew_every(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(100))
    }

    /// Give the lease up.
    pub(crate) async fn release<T: StateStore + ?Sized>(mut self, store: &T) -> Result<()> {
        self.record.released = true;
        self.record.expires_at = Utc::now().timestamp_millis();
        match store
            .save(
                &self.key,
                encode(&self.key, &self.record)?,
                Some(self.version),
            )
            .await
        {
            Ok(_) | Err(Error::StateConflict { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// This machine's name, for people reading the lease.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// `<boot id>/<pid namespace>/<start time>` of this process (Linux).
fn this_process() -> Option<String> {
    let (boot, namespace) = machine()?;
    let start = start_ticks(std::process::id())?;
    Some(format!("{boot}/{namespace}/{start}"))
}

fn machine() -> Option<(String, String)> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let namespace = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some((
        boot.trim().to_owned(),
        namespace.to_string_lossy().into_owned(),
    ))
}

/// The start time of process `pid`, in clock ticks since boot (field 22 of its stat).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after its end.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the holder's process certainly no longer exists: it ran on this machine, in this
/// process namespace, and its pid now names no process or one started at another time.
fn holder_is_gone(holder: &Holder) -> bool {
    let Some(theirs) = &holder.process else {
        return false;
    };
    let Some((boot, namespace)) = machine() else {
        return false;
    };
    let mut parts = theirs.splitn(3, '/');
    let (Some(their_boot), Some(their_namespace), Some(their_start)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    if their_boot != boot || their_namespace != namespace {
        return false;
    }
    match start_ticks(holder.pid) {
        None => std::path::Path::new("/proc/self").exists(),
        Some(start) => start.to_string() != their_start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStateStore;

    #[tokio::test]
    async fn a_held_lease_refuses_a_second_run_until_released() {
        let store = MemoryStateStore::new();
        let ttl = Duration::from_secs(60);
        let mut first = Lease::acquire(&store, "p", "sync-1", ttl).await.unwrap();
        let err = Lease::acquire(&store, "p", "sync-2", ttl)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Leased { .. }), "{text}");
        assert!(
            text.contains("sync-1") && text.contains(&std::process::id().to_string()),
            "{text}"
        );
        first.renew(&store).await.unwrap();
        first.confirm(&store).await.unwrap();
        // Another pipeline is not affected.
        Lease::acquire(&store, "q", "sync-3", ttl).await.unwrap();
        first.release(&store).await.unwrap();
        Lease::acquire(&store, "p", "sync-2", ttl).await.unwrap();
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_and_its_holder_cannot_renew() {
        let store = MemoryStateStore::new();
        let mut first = Lease::acquire(&store, "p", "sync-1", Duration::from_millis(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let _second = Lease::acquire(&store, "p", "sync-2", Duration::from_secs(60))
            .await
            .unwrap();
        let err = first.renew(&store).await.unwrap_err();
        assert!(matches!(err, Error::LeaseLost { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_lease_whose_process_is_gone_is_taken_over_at_once() {
        let Some(process) = this_process() else {
            return; // not Linux
        };
        let store = MemoryStateStore::new();
        let (boot, namespace) = machine().unwrap();
        // A process that existed: this one's record, with a start time that no longer
        // matches its pid.
        let record = Record {
            version: 1,
            holder: Holder {
                sync_id: "dead".into(),
                host: host_name(),
                pid: std::process::id(),
                process: Some(format!("{boot}/{namespace}/1")),
            },
            acquired_at: Utc::now().timestamp_millis(),
            expires_at: Utc::now().timestamp_millis() + 3_600_000,
            released: false,
        };
        store
            .save("p.lease", encode("p.lease", &record).unwrap(), None)
            .await
            .unwrap();
        Lease::acquire(&store, "p", "sync-2", Duration::from_secs(60))
            .await
            .unwrap();
        // A live holder (this very process) is not taken over.
        let store = MemoryStateStore::new();
        let mut live = record.clone();
        live.holder.process = Some(process);
        store
            .save("p.lease", encode("p.lease", &live).unwrap(), None)
            .await
            .unwrap();
        let err = Lease::acquire(&store, "p", "sync-2", Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Leased { .. }), "{err}");
    }
}
