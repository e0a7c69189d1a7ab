//! An OpenFunction Python function: `ofn-functions-framework` (virtualenv
//! `ofn`, see `python.rs`) serving a handler that appends every binding and
//! topic event it gets to `events.txt` in its folder. Its output goes to
//! `function.log` there. Killed by PID when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The handler: `binding:<data>` / `topic:<event id>`, one line each.
const HANDLER: &str = r#"
import os

from functions_framework.context.user_context import UserContext

OUT = os.environ["OFD_OUT"]

def handler(context: UserContext):
    b = context.get_binding_request()
    t = context.get_topic_event()
    with open(OUT, "a") as f:
        if b is not None:
            f.write("binding:" + b.text() + "\n")
        if t is not None:
            f.write("topic:" + t.EventID() + "\n")
"#;

pub struct OfnFunction {
    child: Child,
    dir: PathBuf,
}

impl OfnFunction {
    /// `python -m functions_framework` in `dir` with the given environment
    /// (`FUNC_CONTEXT`, ...).
    pub fn start(python: &Path, dir: &Path, env: &[(&str, &str)]) -> Self {
        std::fs::write(dir.join("function.py"), HANDLER).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("function.log"))
            .unwrap();
        let child = Command::new(python)
            .args([
                "-m",
                "functions_framework",
                "--target",
                "handler",
                "--source",
            ])
            .arg(dir.join("function.py"))
            .envs(env.iter().copied())
            .env("OFD_OUT", dir.join("events.txt"))
            .env("PYTHONUNBUFFERED", "1")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the Python function");
        OfnFunction {
            child,
            dir: dir.to_owned(),
        }
    }

    /// Kill the process (by its PID) and reap it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit status, once the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// What the function printed so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("function.log")).unwrap_or_default()
    }

    /// The events the handler wrote, in order.
    pub fn received(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("events.txt"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for OfnFunction {
    fn drop(&mut self) {
        self.stop();
    }
}
