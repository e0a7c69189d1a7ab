//! The real `openfunction-dapr proxy` binary: it listens before any
//! function exists, logs JSON (one line per failed delivery, with the event
//! id and the pod), and on SIGTERM stops taking events, finishes the ones
//! in flight and exits 0.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::proxy::{FakeFunction, Mode, topic_event};
use common::serve_bin::free_addr;
use dapr::dapr::proto::runtime::v1::app_callback_client::AppCallbackClient;
use dapr::dapr::proto::runtime::v1::topic_event_response::TopicEventResponseStatus as TopicStatus;

struct Bin {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Bin {
    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(addr: std::net::SocketAddr) -> AppCallbackClient<tonic::transport::Channel> {
    let started = Instant::now();
    loop {
        match tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(ch) => return AppCallbackClient::new(ch),
            Err(e) => {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "proxy not listening: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[cfg(unix)]
#[tokio::test]
async fn the_binary_serves_logs_json_and_drains_on_sigterm() {
    let function = FakeFunction::start().await;
    function.set_mode(Mode::Fail(tonic::Code::Internal));
    let (listen, admin) = (free_addr(), free_addr());
    let log = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_openfunction-dapr"))
        .args(["--log-format", "json", "proxy"])
        .args(["--listen", &listen.to_string()])
        .args(["--admin-addr", &admin.to_string()])
        .args(["--target", &function.addr.to_string()])
        .args(["--drain-timeout", "10s"])
        .env("FUNC_CONTEXT", common::proxy::CONTEXT)
        .env("APP_PROTOCOL", "grpc")
        .env("POD_NAME", "fn-dapr-proxy-0")
        .env_remove("POD_NAMESPACE")
        .env_remove("RUST_LOG")
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut bin = Bin { child, log };
    let mut daprd = connect(listen).await;
    let listed = daprd.list_input_bindings(()).await.unwrap().into_inner();
    assert_eq!(listed.bindings, ["cron", "kafka-in"]);

    // A failed delivery: RETRY to daprd, one JSON line with id and pod.
    let r = daprd
        .on_topic_event(topic_event("ev-failing"))
        .await
        .unwrap();
    assert_eq!(r.into_inner().status, TopicStatus::Retry as i32);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = bin.log();
    let failed: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event_id"] == "ev-failing")
        .collect();
    assert_eq!(failed.len(), 1, "{log}");
    assert_eq!(failed[0]["pod"], function.addr.to_string());
    assert_eq!(failed[0]["level"], "WARN");
    assert!(
        log.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "every log line is JSON: {log}"
    );

    // Events in flight when SIGTERM arrives are finished and acknowledged.
    function.set_mode(Mode::Stall);
    let mut tasks = Vec::new();
    for i in 0..3 {
        let mut d = daprd.clone();
        tasks.push(tokio::spawn(async move {
            d.on_topic_event(topic_event(&format!("ev-{i}"))).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(function.seen().running, 3);
    let status = Command::new("kill")
        .args(["-TERM", &bin.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        bin.child.try_wait().unwrap().is_none(),
        "exited with events in flight"
    );
    let (ready, _) = common::proxy::admin_get(admin, "/readyz").await;
    assert_eq!(ready, 503);
    function.release();
    for t in tasks {
        let r = t.await.unwrap().unwrap().into_inner();
        assert_eq!(r.status, TopicStatus::Success as i32);
    }
    let started = Instant::now();
    let code = loop {
        if let Some(code) = bin.child.try_wait().unwrap() {
            break code;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no exit: {}",
            bin.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(code.success(), "{code}: {}", bin.log());
    assert_eq!(function.count(), 4);
}

#[test]
fn bad_configuration_is_refused_at_start() {
    let run = |env: &[(&str, &str)], args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_openfunction-dapr"));
        cmd.arg("proxy")
            .args(["--listen", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
            .args(args)
            .env_remove("FUNC_CONTEXT")
            .env_remove("POD_NAMESPACE")
            .env_remove("APP_PROTOCOL");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let ctx = common::proxy::CONTEXT;
    let (ok, err) = run(&[], &[]);
    assert!(!ok && err.contains("--func-context"), "{err}");
    let (ok, err) = run(&[("FUNC_CONTEXT", "{")], &["--target", "127.0.0.1:1"]);
    assert!(!ok && err.contains("not valid JSON"), "{err}");
    let (ok, err) = run(&[("FUNC_CONTEXT", ctx)], &[]);
    assert!(!ok && err.contains("POD_NAMESPACE"), "{err}");
    let (ok, err) = run(
        &[("FUNC_CONTEXT", ctx), ("APP_PROTOCOL", "grpcs")],
        &["--target", "127.0.0.1:1"],
    );
    assert!(!ok && err.contains("not supported"), "{err}");
}
