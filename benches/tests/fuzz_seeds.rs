//! Every seed of every fuzz target (`fuzz/seeds/<target>/`, among them the inputs that once
//! crashed one) replayed through the targets' own bodies (`fuzz/src/lib.rs`) in the
//! workspace's test run: none panics past s3conn's API or breaks a target's assertion.
//! Fuzzing itself is `cargo fuzz run <target>` in `fuzz/` (scripts/test with FUZZ_SECONDS).

#![allow(
    unreachable_pub,
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stderr,
    missing_docs
)]

#[path = "../../fuzz/src/lib.rs"]
mod fuzz_targets;

use std::path::Path;

#[test]
fn every_fuzz_seed_replays_without_a_crash() {
    fuzz_targets::quiet_panics();
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let mut replayed = 0;
    let mut crashes = Vec::new();
    for (name, target) in fuzz_targets::TARGETS {
        let dir = seeds.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(
            !files.is_empty(),
            "no seeds for {name} in {}",
            dir.display()
        );
        for file in files {
            let data = std::fs::read(&file).unwrap();
            if let Err(panic) = std::panic::catch_unwind(|| target(&data)) {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                crashes.push(format!("{name} {}: {why}", file.display()));
            }
            replayed += 1;
        }
    }
    eprintln!(
        "{replayed} seeds replayed through {} targets",
        fuzz_targets::TARGETS.len()
    );
    assert!(crashes.is_empty(), "crashes: {crashes:#?}");
}
