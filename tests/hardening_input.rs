//! Bad input against the real HTTPS webhook (`webhook::router` behind
//! `server::serve_tls` on 127.0.0.1): every case gets a well-formed
//! AdmissionReview answer or a clean HTTP error, and the server still serves
//! afterwards. Also: bodies over the limit (refused without being read into
//! memory), 100k-deep JSON (a clean answer, no stack overflow), a
//! 1,500-variable env list, slow and idle clients.
//!
//! What `tests/e2e_webhook.rs` and `tests/server_tls.rs` already prove is not
//! repeated here: wrong method / path / `text/plain` (e2e), plain HTTP and
//! garbage on the TLS port, a silent client during the handshake, a client
//! stalling after one header byte (server_tls).

mod common;

use std::time::{Duration, Instant};

use common::webhook::{
    WebhookServer, example_review, examples_store, expect_closed, patch_of, raw_request,
    read_response, tls_connect,
};
use openfunction_dapr::ops::server::ServeOptions;
use openfunction_dapr::webhook::MAX_BODY_BYTES;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// What a case must get.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// HTTP 400, a text reason: no uid could be read.
    Http400,
    /// HTTP 200, an AdmissionReview refusing with status 400.
    Refused,
    /// Either of the two above (which one depends on how much is readable).
    Http400OrRefused,
    /// HTTP 200, allowed; a patch, if any, applies to the object.
    Allowed,
}

fn review(uid: &str, resource: (&str, &str), operation: &str, object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "namespace": "default", "operation": operation,
            "resource": {"group": resource.0, "version": "v1", "resource": resource.1},
            "object": object,
        }
    })
}

fn pod(labels: Value, annotations: Value, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "namespace": "default", "labels": labels, "annotations": annotations},
           "spec": spec})
}

/// A standalone function's Pod (`cron-kafka` of examples/).
fn cron_pod(annotations: Value, spec: Value) -> Value {
    pod(
        json!({"openfunction.io/function": "cron-kafka"}),
        annotations,
        spec,
    )
}

fn nested(depth: usize, open: &str, close: &str, inner: &str) -> String {
    let mut s = String::with_capacity(depth * (open.len() + close.len()) + inner.len());
    for _ in 0..depth {
        s.push_str(open);
    }
    s.push_str(inner);
    for _ in 0..depth {
        s.push_str(close);
    }
    s
}

const DEEP: usize = 100_000;

/// (name, body, what it must get, the request's object for a patch).
fn cases() -> Vec<(&'static str, Vec<u8>, Want)> {
    let head = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"deep","namespace":"default","operation":"CREATE","resource":{"group":"","version":"v1","resource":"pods"},"#;
    let to_vec = |v: Value| serde_json::to_vec(&v).unwrap();
    let pods = ("", "pods");
    let good_spec = json!({"containers": [{"name": "function", "image": "i"}]});
    let mut cases: Vec<(&'static str, Vec<u8>, Want)> = vec![
        ("empty body", vec![], Want::Http400),
        ("not JSON", b"hello".to_vec(), Want::Http400),
        ("invalid UTF-8", b"\xff\xfe\xfd{".to_vec(), Want::Http400),
        (
            "invalid UTF-8 inside a string",
            [
                &br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"utf8","object":{"metadata":{"name":""#[..],
                b"\xff\xfe",
                br#""}}}}"#,
            ]
            .concat(),
            Want::Http400OrRefused,
        ),
        ("a JSON array", b"[]".to_vec(), Want::Http400),
        ("a JSON number", b"5".to_vec(), Want::Http400),
        ("JSON null", b"null".to_vec(), Want::Http400),
        (
            "request is a number",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":5}"#
                .to_vec(),
            Want::Http400,
        ),
        (
            "no request",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            Want::Http400,
        ),
        (
            "no uid",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"operation":"CREATE"}}"#.to_vec(),
            Want::Http400,
        ),
        (
            "empty uid",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":""}}"#.to_vec(),
            Want::Http400,
        ),
        (
            "uid is a number",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":5}}"#.to_vec(),
            Want::Http400,
        ),
        (
            "wrong apiVersion",
            {
                let mut r = review("v1beta1", pods, "CREATE", cron_pod(json!({}), good_spec.clone()));
                r["apiVersion"] = json!("admission.k8s.io/v1beta1");
                to_vec(r)
            },
            Want::Refused,
        ),
        (
            "wrong kind",
            {
                let mut r = review("wrong-kind", pods, "CREATE", cron_pod(json!({}), good_spec.clone()));
                r["kind"] = json!("Pod");
                to_vec(r)
            },
            Want::Refused,
        ),
        (
            "no apiVersion nor kind",
            br#"{"request":{"uid":"bare"}}"#.to_vec(),
            Want::Refused,
        ),
        (
            "a field of the wrong type",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"typed","resource":"pods","operation":["CREATE"]}}"#.to_vec(),
            Want::Refused,
        ),
        (
            "object: null",
            to_vec(review("null-object", pods, "CREATE", Value::Null)),
            Want::Refused,
        ),
        (
            "object is a string",
            to_vec(review("string-object", pods, "CREATE", json!("a pod"))),
            Want::Refused,
        ),
        (
            "a Deployment sent as a pod",
            to_vec(review(
                "other-kind",
                pods,
                "CREATE",
                example_review("deployment-cron-kafka.json")["request"]["object"].clone(),
            )),
            Want::Refused,
        ),
        (
            "a Pod with no containers",
            to_vec(review("no-containers", pods, "CREATE", cron_pod(json!({}), json!({"containers": []})))),
            Want::Allowed,
        ),
        (
            "a Pod with no spec",
            to_vec(review("no-spec", pods, "CREATE", {
                let mut p = cron_pod(json!({}), json!({}));
                p.as_object_mut().unwrap().remove("spec");
                p
            })),
            Want::Allowed,
        ),
        (
            "containers is an object",
            to_vec(review("containers-object", pods, "CREATE", cron_pod(json!({}), json!({"containers": {"name": "function"}})))),
            Want::Refused,
        ),
        (
            "env is an object",
            to_vec(review("env-object", pods, "CREATE", cron_pod(json!({}), json!({"containers": [{"name": "function", "env": {"A": "b"}}]})))),
            Want::Refused,
        ),
        (
            "env entries with valueFrom",
            to_vec(review(
                "value-from",
                pods,
                "CREATE",
                cron_pod(
                    json!({}),
                    json!({"containers": [{"name": "function", "image": "i", "env": [
                        {"name": "DAPR_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "APP_PROTOCOL", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
                        {"name": "FUNC_CONTEXT", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                        {"name": "OTHER", "valueFrom": {"secretKeyRef": {"name": "s", "key": "o"}}},
                        {"name": "DAPR_SIDECAR_IP", "value": null, "valueFrom": null}
                    ]}]}),
                ),
            )),
            Want::Allowed,
        ),
        (
            "env entries that are not objects or have no name",
            to_vec(review(
                "odd-env",
                pods,
                "CREATE",
                cron_pod(json!({}), json!({"containers": [{"name": "function", "env": [5, "x", null, {"value": "v"}, {"name": 7}]}]})),
            )),
            Want::Allowed,
        ),
        (
            "annotation values of the wrong JSON type",
            to_vec(review(
                "typed-annotations",
                pods,
                "CREATE",
                cron_pod(
                    json!({"dapr.io/enabled": true, "dapr.io/app-port": 8080, "dapr.io/app-id": null,
                           "dapr.io/app-protocol": ["grpc"], "other": {"x": 1}}),
                    good_spec.clone(),
                ),
            )),
            Want::Allowed,
        ),
        (
            "annotations is an array",
            to_vec(review("annotations-array", pods, "CREATE", cron_pod(json!(["dapr.io/enabled"]), good_spec.clone()))),
            Want::Refused,
        ),
        (
            "metadata is a string",
            to_vec(review("metadata-string", pods, "CREATE", {
                let mut p = cron_pod(json!({}), good_spec.clone());
                p["metadata"] = json!("meta");
                p
            })),
            Want::Allowed, // no labels: not a function workload
        ),
        (
            "the function label is a number",
            to_vec(review("label-number", pods, "CREATE", pod(json!({"openfunction.io/function": 5}), json!({}), good_spec.clone()))),
            Want::Allowed,
        ),
        (
            "a Deployment whose template is a string",
            {
                let mut d = example_review("deployment-cron-kafka.json");
                d["request"]["uid"] = json!("template-string");
                d["request"]["object"]["spec"]["template"] = json!("t");
                to_vec(d)
            },
            Want::Http400OrRefused,
        ),
        (
            "a Function whose annotations have the wrong type",
            to_vec(review(
                "function-typed",
                ("core.openfunction.io", "functions"),
                "CREATE",
                json!({"apiVersion": "core.openfunction.io/v1beta1", "kind": "Function",
                       "metadata": {"name": "f", "namespace": "default"},
                       "spec": {"image": "i", "serving": {"runtime": "async",
                           "annotations": {"openfunction.io/enable-dapr": true}}}}),
            )),
            Want::Allowed,
        ),
        (
            "a Function that is not an object",
            to_vec(review("function-string", ("core.openfunction.io", "functions"), "UPDATE", json!([1, 2]))),
            Want::Allowed,
        ),
    ];
    // 100k-deep JSON: in a part of the object the webhook never reads
    // (skipped without recursion by the pruning parser, src/prune.rs: the
    // Pod has no function label, so a normal answer), in the annotations
    // (parsed: refused, uid kept), in oldObject (skipped), at the top.
    let object = nested(DEEP, r#"{"a":"#, "}", "1");
    cases.push((
        "100k-deep object",
        format!(r#"{head}"object":{object}}}}}"#).into_bytes(),
        Want::Allowed,
    ));
    let annotations = nested(DEEP, r#"{"a":"#, "}", "1");
    cases.push((
        "100k-deep annotations",
        format!(
            r#"{head}"object":{{"kind":"Pod","metadata":{{"labels":{{"openfunction.io/function":"cron-kafka"}},"annotations":{annotations}}}}}}}}}"#
        )
        .into_bytes(),
        Want::Refused,
    ));
    let mut review_ok = example_review("pod-cron-kafka-pod.json");
    review_ok["request"]["uid"] = json!("deep-old-object");
    review_ok["request"]["oldObject"] = json!("PLACEHOLDER");
    let text = serde_json::to_string(&review_ok)
        .unwrap()
        .replace("\"PLACEHOLDER\"", &nested(DEEP, "[", "]", "{\"x\":[[{}]]}"));
    cases.push(("100k-deep oldObject", text.into_bytes(), Want::Allowed));
    cases.push((
        "100k-deep top level",
        nested(DEEP, "[", "]", "").into_bytes(),
        Want::Http400,
    ));
    cases
}

#[derive(serde::Deserialize)]
struct Sent {
    request: SentRequest,
}

/// What the test reads back from a body it sent (`oldObject` and the rest
/// are skipped, as the webhook's decoder does).
#[derive(serde::Deserialize)]
struct SentRequest {
    #[serde(default)]
    object: Value,
}

fn sent(body: &[u8]) -> Option<SentRequest> {
    serde_json::from_slice::<Sent>(body).ok().map(|s| s.request)
}

/// The uid a body carries, if it can be read (the rest is skipped).
fn uid_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Body {
        request: Uid,
    }
    #[derive(serde::Deserialize)]
    struct Uid {
        uid: Value,
    }
    let uid = serde_json::from_slice::<Body>(body).ok()?.request.uid;
    uid.as_str().map(str::to_owned)
}

fn check(name: &str, body: &[u8], want: Want, status: u16, answer: &Value) {
    let refused = |answer: &Value| {
        assert_eq!(
            answer["apiVersion"], "admission.k8s.io/v1",
            "{name}: {answer}"
        );
        assert_eq!(answer["kind"], "AdmissionReview", "{name}");
        if let Some(uid) = uid_of(body) {
            assert_eq!(answer["response"]["uid"], json!(uid), "{name}");
        }
        assert!(
            !answer["response"]["uid"].as_str().unwrap_or("").is_empty(),
            "{name}: {answer}"
        );
        assert_eq!(answer["response"]["allowed"], false, "{name}: {answer}");
        assert_eq!(
            answer["response"]["status"]["code"], 400,
            "{name}: {answer}"
        );
        assert!(
            !answer["response"]["status"]["message"]
                .as_str()
                .unwrap_or("")
                .is_empty(),
            "{name}: a refusal says why"
        );
        assert!(answer["response"].get("patch").is_none(), "{name}");
    };
    match (want, status) {
        (Want::Http400 | Want::Http400OrRefused, 400) => {
            let text = answer
                .as_str()
                .unwrap_or_else(|| panic!("{name}: {answer}"));
            assert!(!text.is_empty(), "{name}: HTTP 400 says why");
        }
        (Want::Refused | Want::Http400OrRefused, 200) => refused(answer),
        (Want::Allowed, 200) => {
            assert_eq!(answer["kind"], "AdmissionReview", "{name}");
            assert_eq!(
                answer["response"]["uid"],
                json!(uid_of(body).unwrap()),
                "{name}"
            );
            assert_eq!(answer["response"]["allowed"], true, "{name}: {answer}");
            let patch = patch_of(answer);
            if !patch.0.is_empty() {
                let mut object = sent(body).unwrap().object;
                json_patch::patch(&mut object, &patch)
                    .unwrap_or_else(|e| panic!("{name}: the patch does not apply: {e}"));
            }
        }
        _ => panic!("{name}: HTTP {status}, wanted {want:?}: {answer}"),
    }
}

async fn still_serving(server: &WebhookServer, client: &reqwest::Client) {
    let review = example_review("pod-cron-kafka-pod.json");
    let (status, answer) = server
        .post(client, serde_json::to_vec(&review).unwrap())
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["response"]["allowed"], true);
    assert!(!patch_of(&answer).0.is_empty(), "still patching");
}

#[tokio::test]
async fn every_bad_body_gets_a_review_answer_or_a_clean_http_error() {
    let server = WebhookServer::start(examples_store(), ServeOptions::default()).await;
    for http2 in [false, true] {
        let client = server.client(http2);
        for (name, body, want) in cases() {
            let (status, answer) = server.post(&client, body.clone()).await;
            check(name, &body, want, status, &answer);
        }
        still_serving(&server, &client).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn specific_answers_to_bad_bodies() {
    let server = WebhookServer::start(examples_store(), ServeOptions::default()).await;
    let client = server.client(false);
    let by_name = |n: &str| cases().into_iter().find(|c| c.0 == n).unwrap();

    // deep JSON: serde_json's recursion limit, said in the refusal
    let (_, body, _) = by_name("100k-deep annotations");
    let (_, answer) = server.post(&client, body).await;
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("recursion limit"), "{message}");

    // valueFrom: our variables become plain values, the user's other
    // variables and FUNC_CONTEXT (set only when absent) are kept
    let (_, body, _) = by_name("env entries with valueFrom");
    let (_, answer) = server.post(&client, body.clone()).await;
    let request: Value = serde_json::from_slice(&body).unwrap();
    let mut pod = request["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch_of(&answer)).unwrap();
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    let get = |n: &str| -> Vec<&Value> { env.iter().filter(|e| e["name"] == n).collect() };
    let host = "cron-kafka-default-dapr.default.svc.cluster.local";
    assert_eq!(
        get("DAPR_HOST"),
        [&json!({"name": "DAPR_HOST", "value": host})]
    );
    assert_eq!(
        get("DAPR_SIDECAR_IP"),
        [&json!({"name": "DAPR_SIDECAR_IP", "value": host})]
    );
    assert_eq!(
        get("APP_PROTOCOL"),
        [&json!({"name": "APP_PROTOCOL", "value": "grpc"})]
    );
    assert!(get("FUNC_CONTEXT")[0].get("valueFrom").is_some());
    assert!(get("OTHER")[0].get("valueFrom").is_some());

    // annotation values of the wrong type: ours become the right strings
    let (_, body, _) = by_name("annotation values of the wrong JSON type");
    let (_, answer) = server.post(&client, body.clone()).await;
    let request: Value = serde_json::from_slice(&body).unwrap();
    let mut pod = request["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch_of(&answer)).unwrap();
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["dapr.io/enabled"], "false");
    assert_eq!(ann["dapr.io/app-port"], "8080");
    assert_eq!(ann["dapr.io/app-id"], "cron-kafka-default");
    assert_eq!(ann["dapr.io/app-protocol"], "grpc");
    assert_eq!(ann["other"], json!({"x": 1}), "not ours: untouched");

    // a Pod with no containers: the annotations, nothing else
    let (_, body, _) = by_name("a Pod with no containers");
    let (_, answer) = server.post(&client, body).await;
    for op in patch_of(&answer).0 {
        let v = serde_json::to_value(&op).unwrap();
        assert!(v["path"].as_str().unwrap().starts_with("/metadata"), "{v}");
    }

    // a Function with annotations of the wrong type: allowed, with a warning
    let (_, body, _) = by_name("a Function whose annotations have the wrong type");
    let (_, answer) = server.post(&client, body).await;
    let warnings = answer["response"]["warnings"].as_array().unwrap();
    assert!(
        warnings[0].as_str().unwrap().contains("cannot interpret"),
        "{warnings:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_1500_variable_env_list_gets_a_small_patch_fast() {
    let server = WebhookServer::start(examples_store(), ServeOptions::default()).await;
    let client = server.client(true);
    let mut env: Vec<Value> = (0..1500)
        .map(|i| json!({"name": format!("VAR_{i}"), "value": format!("value-{i}")}))
        .collect();
    env[700] = json!({"name": "DAPR_HOST", "value": "stale"});
    let body = serde_json::to_vec(&review(
        "big-env",
        ("", "pods"),
        "CREATE",
        cron_pod(
            json!({}),
            json!({"containers": [{"name": "function", "image": "i", "env": env}]}),
        ),
    ))
    .unwrap();
    // warm the connection up, then time one review
    still_serving(&server, &client).await;
    let started = Instant::now();
    let (status, answer) = server.post(&client, body.clone()).await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    let encoded = answer["response"]["patch"].as_str().unwrap().len();
    let patch = patch_of(&answer);
    assert!(patch.0.len() <= 10, "{} operations", patch.0.len());
    assert!(encoded < 4096, "a {encoded}-byte patch for 1,500 variables");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let request: Value = serde_json::from_slice(&body).unwrap();
    let mut pod = request["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    assert_eq!(env.len(), 1505, "replaced in place, five appended");
    assert_eq!(
        env[700]["value"],
        "cron-kafka-default-dapr.default.svc.cluster.local"
    );
    server.stop().await;
}

const HEAD_100MB: &str = "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n";

#[tokio::test]
async fn a_body_announced_over_the_limit_is_refused_before_it_is_read() {
    let server = WebhookServer::start(examples_store(), ServeOptions::default()).await;
    let mut stream = tls_connect(server.addr, &[&server.ca_pem], &[b"http/1.1"])
        .await
        .unwrap();
    let started = Instant::now();
    let (status, _) = tokio::time::timeout(
        Duration::from_secs(5),
        raw_request(&mut stream, HEAD_100MB, &[b' '; 4096]),
    )
    .await
    .expect("an answer without the 100 MB")
    .expect("response");
    assert_eq!(status, 413);
    assert!(started.elapsed() < Duration::from_secs(2));
    // the connection is not kept for the rest of the body
    expect_closed(&mut stream, Duration::from_secs(5)).await;
    still_serving(&server, &server.client(false)).await;
    server.stop().await;
}

#[tokio::test]
async fn a_streamed_body_over_the_limit_is_cut_off_at_the_limit() {
    let server = WebhookServer::start(examples_store(), ServeOptions::default()).await;
    let stream = tls_connect(server.addr, &[&server.ca_pem], &[b"http/1.1"])
        .await
        .unwrap();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let head = "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    // Stream up to 100 MB in 64 KiB chunks until the server stops reading.
    let sender = tokio::spawn(async move {
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0usize;
        if writer.write_all(head.as_bytes()).await.is_err() {
            return sent;
        }
        while sent < 100_000_000 {
            let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            match tokio::time::timeout(Duration::from_secs(2), writer.write_all(&frame)).await {
                Ok(Ok(())) => sent += chunk.len(),
                _ => break, // refused (reset) or no longer read (stalled)
            }
        }
        sent
    });
    let (status, _) = tokio::time::timeout(Duration::from_secs(20), read_response(&mut reader))
        .await
        .expect("an answer")
        .expect("response");
    assert_eq!(status, 413);
    let sent = tokio::time::timeout(Duration::from_secs(20), sender)
        .await
        .expect("the sender stops")
        .unwrap();
    // The limit plus what the kernel's socket buffers hold, far from 100 MB.
    assert!(
        sent < MAX_BODY_BYTES + 32 * 1024 * 1024,
        "{sent} bytes accepted"
    );
    still_serving(&server, &server.client(false)).await;
    server.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_over_http2() {
    let server = WebhookServer::start(examples_store(), ServeOptions::default()).await;
    let client = server.client(true);
    let resp = client
        .post(server.url())
        .header("content-type", "application/json")
        .body(vec![b' '; MAX_BODY_BYTES + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status().as_u16(), 413);
    // the same connection keeps serving
    still_serving(&server, &client).await;
    server.stop().await;
}

#[tokio::test]
async fn headers_sent_one_byte_at_a_time_or_not_at_all_are_cut_off() {
    let opts = ServeOptions {
        header_read_timeout: Duration::from_millis(500),
        ..ServeOptions::default()
    };
    let server = WebhookServer::start(examples_store(), opts).await;
    let mut stream = tls_connect(server.addr, &[&server.ca_pem], &[b"http/1.1"])
        .await
        .unwrap();
    // 300 bytes at one every 20 ms would take 6 s: the timeout is per
    // request head, not per byte.
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nX-Slow: {}\r\n\r\n",
        "a".repeat(250)
    );
    let started = Instant::now();
    let mut cut = false;
    for b in head.as_bytes() {
        if stream.write_all(&[*b]).await.is_err() || stream.flush().await.is_err() {
            cut = true;
            break;
        }
        if started.elapsed() > Duration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !cut {
        expect_closed(&mut stream, Duration::from_secs(3)).await;
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "cut off after {took:?}");

    // a client that completes the handshake and then says nothing
    let mut silent = tls_connect(server.addr, &[&server.ca_pem], &[b"http/1.1"])
        .await
        .unwrap();
    let started = Instant::now();
    expect_closed(&mut silent, Duration::from_secs(3)).await;
    assert!(started.elapsed() >= Duration::from_millis(400));
    still_serving(&server, &server.client(false)).await;
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_stalls_is_cut_off() {
    let opts = ServeOptions {
        request_timeout: Duration::from_millis(500),
        ..ServeOptions::default()
    };
    let server = WebhookServer::start(examples_store(), opts).await;
    let mut stream = tls_connect(server.addr, &[&server.ca_pem], &[b"http/1.1"])
        .await
        .unwrap();
    let head = "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n";
    let started = Instant::now();
    let (status, _) = tokio::time::timeout(
        Duration::from_secs(5),
        raw_request(&mut stream, head, br#"{"apiVersion":"#),
    )
    .await
    .expect("the stalled request is answered")
    .expect("response");
    assert_eq!(status, 408);
    assert!(started.elapsed() >= Duration::from_millis(400));
    expect_closed(&mut stream, Duration::from_secs(5)).await;
    still_serving(&server, &server.client(true)).await;
    server.stop().await;
}

#[tokio::test]
async fn five_hundred_idle_connections_do_not_stop_a_normal_request() {
    let server = WebhookServer::start(examples_store(), ServeOptions::default()).await;
    // 400 clients that connect and say nothing, 100 that finish the TLS
    // handshake and then say nothing
    let mut idle = Vec::new();
    for _ in 0..400 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let mut idle_tls = Vec::new();
    for _ in 0..100 {
        idle_tls.push(
            tls_connect(server.addr, &[&server.ca_pem], &[b"http/1.1"])
                .await
                .unwrap(),
        );
    }
    for http2 in [false, true] {
        let started = Instant::now();
        still_serving(&server, &server.client(http2)).await;
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    drop((idle, idle_tls));
    server.stop().await;
}

#[tokio::test]
async fn other_methods_and_content_types() {
    let server = WebhookServer::start(examples_store(), ServeOptions::default()).await;
    let client = server.client(false);
    let body = serde_json::to_vec(&example_review("pod-cron-kafka-pod.json")).unwrap();
    for method in ["PUT", "DELETE", "PATCH", "OPTIONS"] {
        let r = client
            .request(method.parse().unwrap(), server.url())
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 405, "{method}");
    }
    for (content_type, want) in [
        (Some("application/json; charset=utf-8"), 200),
        (Some("Application/JSON"), 200),
        (Some("application/jsonx"), 415),
        (Some("application/yaml"), 415),
        (None, 415),
    ] {
        let mut req = client.post(server.url()).body(body.clone());
        if let Some(ct) = content_type {
            match reqwest::header::HeaderValue::from_bytes(ct.as_bytes()) {
                Ok(v) => req = req.header("content-type", v),
                Err(_) => continue,
            }
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), want, "{content_type:?}");
    }
    let mut stream = tls_connect(server.addr, &[&server.ca_pem], &[b"http/1.1"])
        .await
        .unwrap();
    // a request line that is not HTTP: a clean 400 and a closed connection
    stream.write_all(b"HELLO\r\n\r\n").await.unwrap();
    let (status, _) = read_response(&mut stream).await.unwrap();
    assert_eq!(status, 400);
    expect_closed(&mut stream, Duration::from_secs(5)).await;
    still_serving(&server, &client).await;
    server.stop().await;
}

/// HTTP/2: a request that announces (content-length) a body over the limit
/// and has not sent it gets a 413 answer, as over HTTP/1.1, not a bare
/// stream reset; the connection keeps serving.
#[tokio::test]
async fn a_body_announced_over_the_limit_gets_413_over_http2() {
    let server = WebhookServer::start(examples_store(), ServeOptions::default()).await;
    let client = server.client(true);
    // one small chunk, then nothing: the rest of the 100 MB never comes
    let body = futures::StreamExt::chain(
        futures::stream::iter([Ok::<_, std::io::Error>(hyper::body::Frame::data(
            bytes::Bytes::from_static(b" "),
        ))]),
        futures::stream::pending(),
    );
    let body = http_body_util::StreamBody::new(body);
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        client
            .post(server.url())
            .header("content-type", "application/json")
            .header("content-length", "100000000")
            .body(reqwest::Body::wrap(body))
            .send(),
    )
    .await
    .expect("an answer without the 100 MB")
    .expect("a response, not a reset");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status().as_u16(), 413);
    assert_eq!(resp.text().await.unwrap(), "request body too large");
    still_serving(&server, &client).await;
    server.stop().await;
}
