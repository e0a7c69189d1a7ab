//! The webhook as the API server uses it: a real TLS server on 127.0.0.1,
//! an HTTPS client that trusts only a CA made here, real AdmissionReview
//! bodies, the base64 patch decoded and applied with `json-patch`.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use openfunction_dapr::ops::server::{self, ServeOptions};
use openfunction_dapr::ops::tls::{self, ReloadingResolver};
use openfunction_dapr::webhook::store::FunctionStore;
use openfunction_dapr::webhook::{self, Webhook};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

struct Server {
    url: String,
    ca_pem: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start() -> Server {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certs = tls::generate_ca_and_cert(&["localhost".to_string()], true).unwrap();
        let resolver =
            Arc::new(ReloadingResolver::from_pem(&certs.cert_pem, &certs.key_pem).unwrap());
        let config = tls::server_config(resolver, None).unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let store = FunctionStore::from_dir(&dir).unwrap();
        let app = webhook::router(Arc::new(Webhook::new(store, "cluster.local")));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve_tls(
            listener,
            config,
            app,
            ServeOptions::default(),
            async {
                let _ = rx.await;
            },
        ));
        Server {
            url: format!("https://localhost:{port}{}", webhook::MUTATE_PATH),
            ca_pem: certs.ca_pem,
            stop: Some(tx),
            task,
        }
    }

    fn client(&self, http2: bool) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap();
        let b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .resolve("localhost", ([127, 0, 0, 1], 0).into());
        let b = if http2 { b } else { b.http1_only() };
        b.build().unwrap()
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap();
    }
}

fn example(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/reviews")
        .join(file);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Posts `body`, checks the HTTP version, returns (status, JSON answer).
async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>, http2: bool) -> (u16, Value) {
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let expected = if http2 {
        reqwest::Version::HTTP_2
    } else {
        reqwest::Version::HTTP_11
    };
    assert_eq!(resp.version(), expected);
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

/// Decode the answer as the API server does and apply its patch.
fn admitted(review: &Value, answer: &Value) -> (Value, Vec<String>) {
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let mut object = review["request"]["object"].clone();
    if let Some(patch) = answer["response"].get("patch") {
        assert_eq!(answer["response"]["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch.as_str().expect("patch must be a base64 string"))
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut object, &patch).unwrap();
    } else {
        assert!(answer["response"].get("patchType").is_none());
    }
    let warnings = answer["response"]["warnings"]
        .as_array()
        .map(|w| w.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    (object, warnings)
}

fn env(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|v| {
                    (
                        v["name"].as_str().unwrap().to_owned(),
                        v["value"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn env_get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let found: Vec<_> = env.iter().filter(|(n, _)| n == name).collect();
    assert!(found.len() <= 1, "{name} duplicated: {env:?}");
    found.first().map(|(_, v)| v.as_str())
}

async fn scenarios(server: &Server, http2: bool) {
    let client = server.client(http2);
    let url = &server.url;

    // standalone Deployment: template patched, proxy address set
    let review = example("deployment-cron-kafka.json");
    let (status, answer) = post(&client, url, serde_json::to_vec(&review).unwrap(), http2).await;
    assert_eq!(status, 200);
    let (d, warnings) = admitted(&review, &answer);
    assert!(warnings.is_empty(), "{warnings:?}");
    let tmpl = &d["spec"]["template"];
    let ann = &tmpl["metadata"]["annotations"];
    assert_eq!(ann["dapr.io/enabled"], "false");
    assert_eq!(ann["dapr.io/app-id"], "cron-kafka-default");
    assert_eq!(ann["dapr.io/app-protocol"], "grpc");
    assert_eq!(ann["dapr.io/app-port"], "8080");
    assert_eq!(
        tmpl["metadata"]["labels"]["openfunction.io/function"],
        "cron-kafka"
    );
    assert_eq!(tmpl["metadata"]["labels"]["app"], "cron-kafka");
    let e = env(&tmpl["spec"]["containers"][0]);
    let host = "cron-kafka-default-dapr.default.svc.cluster.local";
    assert_eq!(env_get(&e, "DAPR_HOST"), Some(host));
    assert_eq!(env_get(&e, "DAPR_SIDECAR_IP"), Some(host));
    assert_eq!(env_get(&e, "APP_PROTOCOL"), Some("grpc"));
    let ctx: Value = serde_json::from_str(env_get(&e, "FUNC_CONTEXT").unwrap()).unwrap();
    assert_eq!(ctx["name"], "cron-kafka");
    assert_eq!(ctx["runtime"], "Async");
    assert_eq!(ctx["inputs"]["cron"]["componentType"], "bindings.cron");
    // everything else is as it was
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["metadata"], review["request"]["object"]["metadata"]);
    assert_eq!(
        tmpl["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 8080}])
    );

    // sidecar Pod: dapr.io/enabled true, no proxy address
    let review = example("pod-front-sidecar-pod.json");
    let (status, answer) = post(&client, url, serde_json::to_vec(&review).unwrap(), http2).await;
    assert_eq!(status, 200);
    let (p, _) = admitted(&review, &answer);
    let ann = &p["metadata"]["annotations"];
    assert_eq!(ann["dapr.io/enabled"], "true");
    assert_eq!(ann["dapr.io/app-id"], "front-sidecar-default");
    assert_eq!(ann["dapr.io/app-protocol"], "http");
    let e = env(&p["spec"]["containers"][0]);
    assert_eq!(env_get(&e, "APP_PROTOCOL"), Some("http"));
    assert_eq!(env_get(&e, "DAPR_HOST"), None);
    assert_eq!(env_get(&e, "DAPR_SIDECAR_IP"), None);
    assert!(env_get(&e, "FUNC_CONTEXT").is_some());

    // disabled Pod: a stale proxy address is removed, no app-id
    let review = example("pod-hello-plain-pod.json");
    let (_, answer) = post(&client, url, serde_json::to_vec(&review).unwrap(), http2).await;
    let (p, _) = admitted(&review, &answer);
    assert_eq!(
        p["metadata"]["annotations"],
        json!({"dapr.io/enabled": "false"})
    );
    let e = env(&p["spec"]["containers"][0]);
    assert_eq!(env_get(&e, "DAPR_HOST"), None);
    assert_eq!(env_get(&e, "APP_PROTOCOL"), Some("grpc"));

    // a Pod that is no function workload: allowed, untouched
    let mut review = example("pod-hello-plain-pod.json");
    review["request"]["uid"] = json!("not-a-function");
    review["request"]["object"]["metadata"]["labels"] = json!({"app": "web"});
    let (_, answer) = post(&client, url, serde_json::to_vec(&review).unwrap(), http2).await;
    let (p, warnings) = admitted(&review, &answer);
    assert_eq!(p, review["request"]["object"]);
    assert!(warnings.is_empty());
    assert_eq!(answer["response"].as_object().unwrap().len(), 2, "{answer}");

    // a workload of a Function that does not exist: allowed with a warning
    let mut review = example("pod-hello-plain-pod.json");
    review["request"]["object"]["metadata"]["labels"] =
        json!({"openfunction.io/function": "ghost"});
    let (_, answer) = post(&client, url, serde_json::to_vec(&review).unwrap(), http2).await;
    let (p, warnings) = admitted(&review, &answer);
    assert_eq!(p, review["request"]["object"]);
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("Function default/ghost not found"),
        "{warnings:?}"
    );

    // a Function with invalid annotations: allowed, one warning each
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "fn-1", "operation": "CREATE", "namespace": "default",
            "kind": {"group": "core.openfunction.io", "version": "v1beta1", "kind": "Function"},
            "resource": {"group": "core.openfunction.io", "version": "v1beta1", "resource": "functions"},
            "object": {"apiVersion": "core.openfunction.io/v1beta1", "kind": "Function",
                "metadata": {"name": "bad", "namespace": "default"},
                "spec": {"image": "i", "serving": {"runtime": "knative", "annotations": {
                    "openfunction.io/enable-dapr": "TRUE ", "openfunction.io/dapr-service-mode": "proxy"}}}}
        }
    });
    let (_, answer) = post(&client, url, serde_json::to_vec(&review).unwrap(), http2).await;
    let (f, warnings) = admitted(&review, &answer);
    assert_eq!(f, review["request"]["object"]);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("dapr-service-mode"));

    // malformed body with a readable uid: an AdmissionReview refusal
    let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"broken","object":"#;
    let (status, answer) = post(&client, url, body.to_vec(), http2).await;
    assert_eq!(status, 400, "{answer}");
    let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"broken","operation":7}}"#;
    let (status, answer) = post(&client, url, body.to_vec(), http2).await;
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["uid"], "broken");
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["status"]["code"], 400);
    // not JSON at all: a clean HTTP error
    let (status, _) = post(&client, url, b"hello".to_vec(), http2).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn webhook_over_http1_and_http2() {
    let server = Server::start().await;
    scenarios(&server, false).await;
    scenarios(&server, true).await;
    server.stop().await;
}

#[tokio::test]
async fn untrusted_clients_and_wrong_requests_are_refused() {
    let server = Server::start().await;
    // a client that does not trust our CA cannot connect
    let other = tls::generate_ca_and_cert(&["localhost".to_string()], true).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(other.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    assert!(client.post(&server.url).body("{}").send().await.is_err());

    let client = server.client(false);
    // wrong method, path, content type
    let r = client.get(&server.url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let r = client
        .post(server.url.replace("/mutate", "/validate"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = client
        .post(&server.url)
        .header("content-type", "text/plain")
        .body(serde_json::to_vec(&example("pod-hello-plain-pod.json")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    // a body over the limit is refused
    let big = vec![b' '; webhook::MAX_BODY_BYTES + 1];
    let r = client
        .post(&server.url)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    // and the server still serves
    let review = example("pod-front-sidecar-pod.json");
    let (status, _) = post(
        &client,
        &server.url,
        serde_json::to_vec(&review).unwrap(),
        false,
    )
    .await;
    assert_eq!(status, 200);
    server.stop().await;
}
