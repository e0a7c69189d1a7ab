//! The shared test data outside the repository (real OpenFunction CRDs and
//! samples): `$OFD_FIXTURES`, else `<repo>/../shared/fixtures`. Tests that
//! need it print `SKIPPED: ...` and pass when it is absent.

use std::path::{Path, PathBuf};

/// The fixtures directory: `$OFD_FIXTURES`, else `<repo>/../shared/fixtures`.
pub fn root() -> PathBuf {
    std::env::var_os("OFD_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
}

/// `<fixtures>/<sub>` when it exists; otherwise prints why the caller is
/// skipped and returns `None`.
pub fn fixtures(sub: &str, who: &str) -> Option<PathBuf> {
    let dir = root().join(sub);
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: {who}: {} not found (set OFD_FIXTURES to the fixtures directory)",
            dir.display()
        );
        None
    }
}
