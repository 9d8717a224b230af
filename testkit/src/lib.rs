//! Real parts for s3conn's tests: an S3 server on loopback that checks SigV4 signatures
//! (s3s-fs, in process), moto for STS/IAM and race-correct conditional writes, a fault
//! injecting object-store wrapper, a fault-injecting HTTP proxy to put in front of the
//! server, and the independent readers (pyarrow, fastavro, duckdb) that check what s3conn
//! writes.
//!
//! Test infrastructure: it panics with a message that says what is missing and how to get it.

#![allow(
    clippy::panic,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stderr
)]

mod faults;
mod proxy;
mod python;
mod server;

pub use faults::{FaultKind, FaultyStore, Op};
pub use proxy::{Fault, FaultPlan, FaultProxy, ProxyStats};
pub use python::{MotoServer, python, run_python};
pub use server::S3Server;
