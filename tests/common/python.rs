//! The Python virtualenvs of the interoperability tests
//! (`tests/python/NAME.txt`, made by `tests/python/setup.sh`, which `.ci/run`
//! runs first). A test that finds its environment missing makes it here,
//! under a file lock, so plain `cargo test` works on a fresh machine with
//! PyPI access. `OFD_SKIP_PYTHON=1` skips these tests instead (with a
//! message); without it, an environment that cannot be made fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn venvs() -> PathBuf {
    std::env::var_os("OFD_VENVS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv"))
}

/// The interpreter of virtualenv `name`, made if needed; `None` (after
/// printing why) only when `OFD_SKIP_PYTHON` is set.
pub fn python(name: &str) -> Option<PathBuf> {
    if std::env::var_os("OFD_SKIP_PYTHON").is_some_and(|v| v != "0") {
        eprintln!("SKIPPED: OFD_SKIP_PYTHON is set; the Python environment {name} is not used");
        return None;
    }
    let dir = venvs();
    std::fs::create_dir_all(&dir).expect("creating the virtualenv folder");
    let lock = std::fs::File::create(dir.join(".lock")).expect("creating the virtualenv lock");
    lock.lock().expect("locking the virtualenv folder");
    let status = Command::new("bash")
        .arg(repo().join("tests/python/setup.sh"))
        .arg(name)
        .env("OFD_VENVS", &dir)
        .status()
        .expect("running tests/python/setup.sh");
    assert!(
        status.success(),
        "tests/python/setup.sh {name} failed (PyPI unreachable? set OFD_SKIP_PYTHON=1 to skip)"
    );
    let python = dir.join(name).join("bin/python");
    assert!(python.is_file(), "{} missing after setup", python.display());
    Some(python)
}
