//! The real `openfunction-dapr serve` binary, started on free loopback
//! ports with its output in a log file, killed (by its pid) when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::fake_api::write_kubeconfig;

/// A loopback address nothing listens on (yet).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub struct Serve {
    child: Child,
    pub admin: SocketAddr,
    pub webhook: SocketAddr,
    /// Where the CA of the self-signed certificate is written.
    pub ca_out: PathBuf,
    dir: tempfile::TempDir,
}

impl Serve {
    /// `serve --addr … --admin-addr … --ca-out … <args>`; with `api`, a
    /// kubeconfig naming that API server, else no cluster configuration at
    /// all. `RUST_LOG` is left unset: the default level (info).
    pub fn start(args: &[&str], api: Option<SocketAddr>) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let (admin, webhook) = (free_addr(), free_addr());
        let ca_out = dir.path().join("ca.pem");
        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_openfunction-dapr"));
        cmd.arg("serve")
            .arg("--addr")
            .arg(webhook.to_string())
            .arg("--admin-addr")
            .arg(admin.to_string())
            .arg("--ca-out")
            .arg(&ca_out)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .env("POD_NAMESPACE", "openfunction-dapr")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null());
        match api {
            Some(api) => {
                let kubeconfig = write_kubeconfig(dir.path(), &format!("http://{api}"));
                cmd.env("KUBECONFIG", kubeconfig);
            }
            None => {
                cmd.env("KUBECONFIG", dir.path().join("no-kubeconfig"));
            }
        }
        let child = cmd.spawn().expect("start openfunction-dapr serve");
        Serve {
            child,
            admin,
            webhook,
            ca_out,
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// The status of `GET path` on the admin port (None: not listening).
    pub async fn admin(&self, path: &str) -> Option<u16> {
        super::webhook::init_crypto();
        let r = reqwest::Client::new()
            .get(format!("http://{}{path}", self.admin))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        Some(r.status().as_u16())
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits (bounded) for `/readyz` to answer 200.
    pub async fn wait_ready(&mut self, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            assert!(self.running(), "serve exited: {}", self.log());
            if self.admin("/readyz").await == Some(200) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "not ready within {limit:?}: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The CA it generated (once it is up).
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(&self.ca_out).expect("the CA file")
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}/mutate", self.webhook.port())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
