//! Interoperability: the official Dapr Python SDK reaches daprd with exactly
//! the variables the webhook wrote (SPEC section 5, issue 11 part 1).
//!
//! A real admission (the webhook behind its HTTPS server) patches a Pod of a
//! standalone Function; the env of its `function` container is taken from
//! the applied patch, and only the host and port parts of the values are
//! rewritten to a fake daprd on 127.0.0.1 (there is no cluster DNS here).
//! The SDK then runs with that env and nothing else; the fake daprd records
//! what arrives: its HTTP health check, one gRPC call (`GetState`) and one
//! HTTP call (service invocation).
//!
//! The fake daprd is hand-rolled on hyper: an h2c endpoint answering any
//! `dapr.proto.runtime.v1.Dapr` method with an empty message (valid for
//! `GetStateResponse`), and an HTTP/1.1 endpoint answering
//! `/v1.0/healthz/outbound` and `/v1.0/invoke/...`.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::python::python;
use common::webhook::{WebhookServer, patch_of};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use openfunction_dapr::model::function::Function;
use openfunction_dapr::model::mode::GrpcEndpointForm;
use openfunction_dapr::ops::server::ServeOptions;
use openfunction_dapr::webhook::store::FunctionStore;
use serde_json::json;
use tokio::net::TcpListener;

const NS: &str = "demo";

fn function(name: &str, form: Option<&str>) -> Function {
    let mut ann = json!({"openfunction.io/enable-dapr": "true"});
    if let Some(form) = form {
        ann["openfunction.io/dapr-grpc-endpoint-form"] = json!(form);
    }
    serde_json::from_value(json!({
        "apiVersion": "core.openfunction.io/v1beta1", "kind": "Function",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"image": "img", "version": "v1", "serving": {"runtime": "knative", "annotations": ann}}
    }))
    .unwrap()
}

/// The env the webhook gives the `function` container of a new Pod of
/// Function `name`, through a real admission.
async fn admitted_env(webhook: &WebhookServer, name: &str) -> BTreeMap<String, String> {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": format!("{name}-"), "namespace": NS,
            "labels": {"openfunction.io/function": name}},
        "spec": {"containers": [{"name": "function", "image": "img"}]}
    });
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("uid-{name}"),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": NS, "operation": "CREATE", "object": pod,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"}
        }
    });
    let client = webhook.client(true);
    let (status, answer) = webhook
        .post(&client, serde_json::to_vec(&review).unwrap())
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch_of(&answer)).expect("the patch applies");
    patched["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["value"].as_str().expect("plain values").to_owned(),
            )
        })
        .collect()
}

/// Rewrite only the host and port parts of the webhook's values: daprd's
/// ports 50001 / 3500 of `dapr_host` to the fake daprd's, the bare host to
/// 127.0.0.1. The scheme and form stay as the webhook wrote them.
fn rewrite(
    env: &BTreeMap<String, String>,
    dapr_host: &str,
    grpc: SocketAddr,
    http: SocketAddr,
) -> BTreeMap<String, String> {
    env.iter()
        .map(|(k, v)| {
            let v = v
                .replace(&format!("{dapr_host}:50001"), &grpc.to_string())
                .replace(&format!("{dapr_host}:3500"), &http.to_string())
                .replace(dapr_host, "127.0.0.1");
            (k.clone(), v)
        })
        .collect()
}

type Log = Arc<Mutex<Vec<String>>>;
type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// gRPC: an empty message and `grpc-status: 0` in the trailers, whatever the
/// method. HTTP: health and invocation.
async fn fake_daprd(req: Request<Incoming>, log: Log) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let received = body.as_ref().map(Bytes::len).unwrap_or(0);
    log.lock().unwrap().push(format!(
        "{} {path} ({received} bytes)",
        if grpc { "grpc" } else { "http" }
    ));
    if grpc {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
            // compressed flag 0, length 0: the empty message
            Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = StreamBody::new(futures::stream::iter(frames));
        return Ok(Response::builder()
            .header("content-type", "application/grpc")
            .body(BodyExt::boxed(body))
            .unwrap());
    }
    let (status, text) = if path == "/v1.0/healthz/outbound" {
        (StatusCode::NO_CONTENT, "")
    } else if path.starts_with("/v1.0/invoke/") {
        (StatusCode::OK, "invoked")
    } else {
        (StatusCode::NOT_FOUND, "")
    };
    let body = http_body_util::Full::new(Bytes::from_static(text.as_bytes()));
    Ok(Response::builder()
        .status(status)
        .body(BodyExt::boxed(body))
        .unwrap())
}

/// One fake daprd port (HTTP/1.1 and h2c); the task is aborted on drop.
struct FakePort {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakePort {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fake_port(log: Log) -> FakePort {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| fake_daprd(req, log.clone()));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    FakePort { addr, task }
}

const SCRIPT: &str = r#"
from dapr.clients import DaprClient
with DaprClient() as d:
    state = d.get_state(store_name="statestore", key="k")
    print("grpc:", repr(state.data))
    r = d.invoke_method("other-app", "hello", data=b"hi", http_verb="POST")
    print("http:", r.data)
"#;

/// Runs the SDK of virtualenv `venv` with exactly `env`; its output. The
/// child is killed if it outlives 60 s (or the test).
async fn run_sdk(venv: &str, env: &BTreeMap<String, String>) -> Option<String> {
    let python = python(venv)?;
    let env = env.clone();
    let out = tokio::task::spawn_blocking(move || {
        let child = std::process::Command::new(python)
            .arg("-c")
            .arg(SCRIPT)
            .env_clear()
            .envs(&env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python runs");
        let mut child = KillOnDrop(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while child.0.try_wait().expect("wait").is_none() {
            assert!(std::time::Instant::now() < deadline, "the SDK hung");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut out = String::new();
        for pipe in [
            child.0.stdout.take().map(|p| Box::new(p) as Box<dyn Read>),
            child.0.stderr.take().map(|p| Box::new(p) as Box<dyn Read>),
        ]
        .into_iter()
        .flatten()
        {
            let mut pipe = pipe;
            pipe.read_to_string(&mut out).expect("output");
        }
        (child.0.try_wait().unwrap().unwrap(), out)
    })
    .await
    .unwrap();
    assert!(out.0.success(), "the SDK failed:\n{}", out.1);
    Some(out.1)
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Setup {
    webhook: WebhookServer,
    log: Log,
    grpc: FakePort,
    http: FakePort,
}

async fn setup(default_form: GrpcEndpointForm) -> Setup {
    common::webhook::init_crypto();
    let store = FunctionStore::from_objects(
        vec![
            function("url-fn", None),
            function("hostport-fn", Some("host-port")),
        ],
        vec![],
    );
    let certs = common::webhook::localhost_certs();
    let resolver = Arc::new(
        openfunction_dapr::ops::tls::ReloadingResolver::from_pem(&certs.cert_pem, &certs.key_pem)
            .unwrap(),
    );
    let config = openfunction_dapr::ops::tls::server_config(resolver, None).unwrap();
    let webhook = Arc::new(
        openfunction_dapr::webhook::Webhook::new(store, "cluster.local")
            .with_grpc_endpoint_form(default_form),
    );
    let webhook =
        WebhookServer::start_with(webhook, config, certs.ca_pem, ServeOptions::default()).await;
    let log: Log = Arc::default();
    let grpc = fake_port(log.clone()).await;
    let http = fake_port(log.clone()).await;
    Setup {
        webhook,
        log,
        grpc,
        http,
    }
}

fn take(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_python_sdk_reaches_daprd_with_the_webhooks_env() {
    let s = setup(GrpcEndpointForm::Url).await;
    let host = "url-fn-demo-dapr.demo.svc.cluster.local";
    let env = admitted_env(&s.webhook, "url-fn").await;
    assert_eq!(env["DAPR_GRPC_ENDPOINT"], format!("http://{host}:50001"));
    assert_eq!(env["DAPR_HTTP_ENDPOINT"], format!("http://{host}:3500"));
    assert_eq!(env["DAPR_HOST"], host);
    let env = rewrite(&env, host, s.grpc.addr, s.http.addr);
    let Some(out) = run_sdk("sdk", &env).await else {
        return;
    };
    assert!(out.contains("grpc: b''"), "{out}");
    assert!(out.contains("http: b'invoked'"), "{out}");
    // The health check (on DAPR_HTTP_ENDPOINT) comes before the first gRPC
    // call, then the gRPC call and the HTTP call.
    let log = take(&s.log);
    let calls: Vec<&str> = log
        .iter()
        .map(String::as_str)
        .filter(|l| *l != "http /v1.0/healthz/outbound (0 bytes)")
        .collect();
    assert_eq!(
        calls,
        [
            "grpc /dapr.proto.runtime.v1.Dapr/GetState (20 bytes)",
            "http /v1.0/invoke/other-app/method/hello (2 bytes)",
        ],
        "{log:?}"
    );
    assert_eq!(log[0], "http /v1.0/healthz/outbound (0 bytes)", "{log:?}");

    // The Function's annotation picks the host:port form; the newest SDK
    // reads that too.
    let host = "hostport-fn-demo-dapr.demo.svc.cluster.local";
    let env = admitted_env(&s.webhook, "hostport-fn").await;
    assert_eq!(env["DAPR_GRPC_ENDPOINT"], format!("{host}:50001"));
    let env = rewrite(&env, host, s.grpc.addr, s.http.addr);
    let out = run_sdk("sdk", &env).await.expect("environment made above");
    assert!(out.contains("grpc: b''"), "{out}");
    let log = take(&s.log);
    assert!(log.iter().any(|l| l.contains("GetState")), "{log:?}");
    assert!(log.iter().any(|l| l.contains("/v1.0/invoke/")), "{log:?}");
    s.webhook.stop().await;
}

/// Python SDK 1.11 (what OpenFunction's Python framework 0.2 pins) with the
/// operator's `host-port` setting: its gRPC and HTTP calls arrive too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_1_11_needs_and_gets_the_host_port_form() {
    let s = setup(GrpcEndpointForm::HostPort).await;
    let host = "url-fn-demo-dapr.demo.svc.cluster.local";
    let env = admitted_env(&s.webhook, "url-fn").await;
    assert_eq!(env["DAPR_GRPC_ENDPOINT"], format!("{host}:50001"));
    let env = rewrite(&env, host, s.grpc.addr, s.http.addr);
    let Some(out) = run_sdk("ofn", &env).await else {
        return;
    };
    assert!(out.contains("grpc: b''"), "{out}");
    assert!(out.contains("http: b'invoked'"), "{out}");
    let log = take(&s.log);
    assert!(
        log.iter()
            .any(|l| l == "grpc /dapr.proto.runtime.v1.Dapr/GetState (20 bytes)"),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l == "http /v1.0/invoke/other-app/method/hello (2 bytes)"),
        "{log:?}"
    );
    s.webhook.stop().await;
}
