//! No secret material and no whole objects in the logs at the default level
//! (`info`, what `serve` uses without `RUST_LOG`), in text and JSON.
//!
//! In-process, the tracing output is captured (both formats) while the
//! webhook reviews objects carrying secret-looking values (env values,
//! annotations, a Function's binding metadata) on every path: patched, not
//! found, refused, undecodable, too large, a failing live look-up; and while
//! certificates are generated, loaded, rotated, refused, written by `certs`
//! and kept in a Secret by the bootstrap (against the fake API server). The
//! real binary is run too (`serve`, text and JSON, and `certs`). Neither a
//! secret value, nor `PRIVATE KEY`, nor any line of a private key (PEM or
//! the base64 a Secret holds), nor a serialized object may appear.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use common::fake_api::FakeApi;
use common::serve_bin::Serve;
use common::webhook::{WebhookServer, https_client, localhost_certs, post_json};
use openfunction_dapr::model::function::Function;
use openfunction_dapr::ops::certs;
use openfunction_dapr::ops::server::ServeOptions;
use openfunction_dapr::ops::tls::{self, ReloadingResolver};
use openfunction_dapr::webhook::Webhook;
use openfunction_dapr::webhook::store::FunctionStore;
use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

/// The process-wide capture: what `main` installs (`info`), as text and as
/// JSON.
fn capture() -> Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let c = Capture::default();
            tracing_subscriber::registry()
                .with(tracing_subscriber::EnvFilter::new("info"))
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(false)
                        .with_writer(c.clone()),
                )
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .with_writer(c.clone()),
                )
                .init();
            c
        })
        .clone()
}

fn captured() -> String {
    String::from_utf8_lossy(&capture().0.lock().unwrap()).into_owned()
}

/// Fails if `log` holds any of `secrets`, `PRIVATE KEY`, or a serialized
/// object.
fn assert_clean(log: &str, secrets: &[String]) {
    for s in secrets {
        assert!(!s.is_empty());
        assert!(!log.contains(s.as_str()), "the log holds {s:?}:\n{log}");
    }
    for forbidden in [
        "PRIVATE KEY",
        "\"containers\"",
        "\"env\"",
        "\"spec\":",
        "BEGIN CERTIFICATE",
    ] {
        assert!(
            !log.contains(forbidden),
            "the log holds {forbidden:?}:\n{log}"
        );
    }
}

/// The lines of a PEM key (the base64 body), each long enough to mean
/// something, and the base64 of the whole PEM (as a Secret holds it).
fn key_material(pem: &str) -> Vec<String> {
    let mut out: Vec<String> = pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(pem);
    out.push(b64[..40].to_owned());
    out.push(b64[b64.len() / 2..b64.len() / 2 + 40].to_owned());
    out
}

const ENV_SECRET: &str = "s3cr3t-env-value-7f1c2a";
const ANNOTATION_SECRET: &str = "tok3n-annotation-9b8e55";
const BINDING_SECRET: &str = "kafka-pa55word-41d0aa";

fn secrets() -> Vec<String> {
    [ENV_SECRET, ANNOTATION_SECRET, BINDING_SECRET]
        .map(str::to_owned)
        .to_vec()
}

fn function() -> Function {
    serde_json::from_value(json!({
        "apiVersion": "core.openfunction.io/v1beta1", "kind": "Function",
        "metadata": {"name": "f", "namespace": "default",
            "annotations": {"token": ANNOTATION_SECRET}},
        "spec": {"image": "i", "serving": {"runtime": "async",
            "inputs": [{"name": "in", "component": "kafka"}],
            "bindings": {"kafka": {"type": "bindings.kafka", "version": "v1",
                "metadata": [{"name": "saslPassword", "value": BINDING_SECRET}]}}}}
    }))
    .unwrap()
}

fn pod(function: &str, env: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default",
            "labels": {"openfunction.io/function": function},
            "annotations": {"token": ANNOTATION_SECRET}},
        "spec": {"containers": [{"name": "function", "image": "i", "env": env}]}})
}

fn review(uid: &str, resource: (&str, &str), object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": uid, "namespace": "default", "operation": "CREATE",
            "resource": {"group": resource.0, "version": "v1", "resource": resource.1},
            "object": object}
    }))
    .unwrap()
}

/// Bodies that take every path of the webhook, all carrying the secrets.
fn bodies() -> Vec<Vec<u8>> {
    let env = json!([{"name": "DB_PASSWORD", "value": ENV_SECRET}]);
    let pods = ("", "pods");
    let good = review("patched", pods, pod("f", env.clone()));
    let mut bodies = vec![
        good.clone(),
        review("not-found", pods, pod("ghost", env.clone())),
        review(
            "refused",
            pods,
            pod("f", json!({"DB_PASSWORD": ENV_SECRET})),
        ),
        review(
            "function",
            ("core.openfunction.io", "functions"),
            serde_json::to_value(function()).unwrap(),
        ),
        review(
            "function-bad",
            ("core.openfunction.io", "functions"),
            json!({"metadata": {"name": "g"}, "spec": {"serving": {"annotations": {"x": ENV_SECRET, "y": 5}}}}),
        ),
    ];
    // truncated, with and without a readable uid
    bodies.push(good[..good.len() - 20].to_vec());
    bodies.push(
        format!(r#"{{"secret": "{ENV_SECRET}", "request": {{"uid": "u", "object": {{"a": "{ENV_SECRET}""#)
            .into_bytes(),
    );
    // a wrong field type next to the secret
    bodies.push(
        format!(r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"x","operation":{{"secret":"{ENV_SECRET}"}}}}}}"#)
            .into_bytes(),
    );
    bodies.push(format!("not json {ENV_SECRET}").into_bytes());
    bodies
}

#[tokio::test]
async fn reviews_log_no_secret_and_no_object() {
    let _ = capture();
    let store = FunctionStore::from_objects(vec![function()], vec![]);
    let server = WebhookServer::start(store, ServeOptions::default()).await;
    let client = server.client(true);
    for body in bodies() {
        let (status, _) = post_json(&client, &server.url(), body).await;
        assert!(status == 200 || status == 400);
    }
    // too large
    let mut big = review("big", ("", "pods"), pod("f", json!([]))).to_vec();
    big.extend(std::iter::repeat_n(b' ', 7 * 1024 * 1024));
    big.extend(ENV_SECRET.as_bytes());
    let (status, _) = post_json(&client, &server.url(), big).await;
    assert_eq!(status, 413);
    server.stop().await;

    // a failing live look-up (the API server answers 500, then times out)
    let (fake, client) = FakeApi::start();
    let (store, driver) = FunctionStore::watch(client, None, Duration::from_millis(300)).await;
    let driver = tokio::spawn(driver);
    tokio::time::timeout(Duration::from_secs(10), store.ready())
        .await
        .unwrap();
    let webhook = Webhook::new(store, "cluster.local");
    let path = "/apis/core.openfunction.io/v1beta1/namespaces/default/functions/f";
    fake.fail_once("GET", path, 500);
    let env = json!([{"name": "DB_PASSWORD", "value": ENV_SECRET}]);
    let reviewed = webhook
        .review(&review("api-error", ("", "pods"), pod("f", env.clone())))
        .await;
    assert!(String::from_utf8_lossy(&reviewed.body).contains("temporary"));
    fake.down(503);
    let reviewed = webhook
        .review(&review("api-timeout", ("", "pods"), pod("f", env)))
        .await;
    assert!(String::from_utf8_lossy(&reviewed.body).contains("temporary"));
    driver.abort();

    let log = captured();
    assert!(log.contains("undecodable admission request"), "{log}");
    assert!(log.contains("function look-up failed"), "{log}");
    assert_clean(&log, &secrets());
}

#[tokio::test]
async fn certificate_handling_logs_no_key() {
    let _ = capture();
    let mut material = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));

    let a = localhost_certs();
    material.extend(key_material(&a.key_pem));
    std::fs::write(&cert, &a.cert_pem).unwrap();
    std::fs::write(&key, &a.key_pem).unwrap();
    let resolver = Arc::new(ReloadingResolver::from_files(&cert, &key).unwrap());
    let _ = ReloadingResolver::from_pem(&a.cert_pem, &a.key_pem).unwrap();
    let watcher = tokio::spawn(tls::watch(resolver.clone(), Duration::from_millis(20)));

    // rotated
    let b = localhost_certs();
    material.extend(key_material(&b.key_pem));
    std::fs::write(&cert, &b.cert_pem).unwrap();
    std::fs::write(&key, &b.key_pem).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // refused: another pair's key, a truncated key, garbage between markers
    let c = localhost_certs();
    material.extend(key_material(&c.key_pem));
    std::fs::write(&key, &c.key_pem).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let truncated = &b.key_pem[..b.key_pem.len() - 30];
    std::fs::write(&key, truncated).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(
        &key,
        format!("-----BEGIN PRIVATE KEY-----\n{ENV_SECRET}!!\n-----END PRIVATE KEY-----\n"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(resolver.reload().is_err());
    std::fs::remove_file(&key).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    watcher.abort();

    // `certs` writes files
    let out = dir.path().join("out");
    let written = certs::write_files("svc", "ns", &out, false).unwrap();
    material.extend(key_material(&written.key_pem));

    // the bootstrap keeps the pair in a Secret (fake API server): created,
    // then read back; the caBundle of the webhook configuration is set
    let (fake, client) = FakeApi::start();
    fake.put(
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/00-openfunction-dapr",
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "00-openfunction-dapr"},
            "webhooks": [{"name": "w.openfunction.io", "admissionReviewVersions": ["v1"],
                "sideEffects": "None", "clientConfig": {"service": {"name": "s", "namespace": "ofd"}}}]}),
    );
    let settings = certs::BootstrapSettings::new("ofd", "openfunction-dapr-webhook");
    certs::check_once(&client, &settings).await.unwrap();
    certs::check_once(&client, &settings).await.unwrap();
    let secret = fake
        .get("/api/v1/namespaces/ofd/secrets/openfunction-dapr-tls")
        .expect("the Secret");
    for (k, v) in secret["data"].as_object().unwrap() {
        let b64 = v.as_str().unwrap();
        if k.ends_with(".key") {
            material.push(b64[..40].to_owned());
            let pem = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            material.extend(key_material(&String::from_utf8(pem).unwrap()));
        }
    }

    let log = captured();
    assert!(log.contains("installed new TLS certificate"), "{log}");
    assert!(log.contains("keeping the current pair"), "{log}");
    assert_clean(&log, &material);
    assert!(!log.contains(ENV_SECRET));
}

/// Everything the binary printed while it served `bodies()` at the
/// default level, with `--log-format format`.
async fn serve_binary_log(format: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    // a Function whose binding metadata holds a secret
    std::fs::write(
        dir.path().join("f.json"),
        serde_json::to_vec(&function()).unwrap(),
    )
    .unwrap();
    let mut serve = Serve::start(
        &[
            "--local",
            dir.path().to_str().unwrap(),
            "--log-format",
            format,
        ],
        None,
    );
    serve.wait_ready(Duration::from_secs(20)).await;
    let client = https_client(&[&serve.ca_pem()], serve.webhook, false);
    for body in bodies() {
        let (status, _) = post_json(&client, &serve.url(), body).await;
        assert!(status == 200 || status == 400);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(serve.running());
    serve.log()
}

#[tokio::test]
async fn the_binary_logs_no_secret_and_no_key() {
    for format in ["text", "json"] {
        let log = serve_binary_log(format).await;
        assert!(log.contains("undecodable admission request"), "{log}");
        assert_clean(&log, &secrets());
    }
    // `certs` prints where it wrote the key, not the key
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_openfunction-dapr"))
        .args(["certs", "--out-dir"])
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = std::fs::read_to_string(dir.path().join("tls.key")).unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("tls.key"), "{printed}");
    assert_clean(&printed, &key_material(&key));
}
