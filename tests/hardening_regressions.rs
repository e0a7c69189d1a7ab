//! Replays every saved fuzz input through the checks the fuzz targets run
//! (`fuzz/src/lib.rs`, included here as a module, so both use the same
//! code): `tests/regressions/review/*` through `checks::review` (the
//! AdmissionReview decoder and the whole `Webhook::review`) and
//! `tests/regressions/patch/*` through `checks::patch` (`patch::build_patch`,
//! the patch applied, idempotency). The fuzzers' seed corpora
//! (`fuzz/seeds/`) are replayed too. A directory that is missing or empty
//! fails the test rather than passing silently.

#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::path::{Path, PathBuf};

fn files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no input", dir.display());
    files
}

/// Runs `check` on every file of `dir`; fails naming every input that fails.
fn replay(dir: &str, check: fn(&[u8])) {
    let mut failed = Vec::new();
    for path in files(dir) {
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "failing inputs: {failed:#?}");
}

#[test]
fn review_regressions() {
    replay("tests/regressions/review", checks::review);
}

#[test]
fn patch_regressions() {
    replay("tests/regressions/patch", checks::patch);
}

#[test]
fn review_seeds() {
    replay("fuzz/seeds/review", checks::review);
}

#[test]
fn patch_seeds() {
    replay("fuzz/seeds/patch", checks::patch);
}
