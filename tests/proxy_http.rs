//! The proxy's HTTP app channel (`APP_PROTOCOL=http`), driven by a fake
//! daprd (an HTTP client making daprd's calls) against fake function pods
//! (axum servers on 127.0.0.1).

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use common::proxy::{Options, Proxy};
use openfunction_dapr::proxy::Protocol;
use serde_json::{Value, json};
use tokio::net::TcpListener;

#[derive(Clone, Debug)]
enum Mode {
    Ok,
    Status(u16),
    Json(Value),
    Stall,
}

/// One request a fake function got: method, path, headers, body.
type Seen = (Method, String, HeaderMap, Bytes);

#[derive(Clone)]
struct Pod {
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    release: Arc<tokio::sync::Notify>,
}

async fn handle(State(pod): State<Pod>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    pod.seen
        .lock()
        .unwrap()
        .push((parts.method, path, parts.headers, body));
    let mode = pod.mode.lock().unwrap().clone();
    match mode {
        Mode::Ok => (StatusCode::OK, "done").into_response(),
        Mode::Status(s) => (StatusCode::from_u16(s).unwrap(), "nope").into_response(),
        Mode::Json(v) => axum::Json(v).into_response(),
        Mode::Stall => {
            pod.release.notified().await;
            StatusCode::OK.into_response()
        }
    }
}

struct FakeHttpFunction {
    addr: SocketAddr,
    pod: Pod,
    task: tokio::task::JoinHandle<()>,
}

impl FakeHttpFunction {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pod = Pod {
            mode: Arc::new(Mutex::new(Mode::Ok)),
            seen: Arc::default(),
            release: Arc::default(),
        };
        let app = Router::new().fallback(handle).with_state(pod.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, pod, task }
    }

    fn set(&self, mode: Mode) {
        *self.pod.mode.lock().unwrap() = mode;
    }

    fn seen(&self) -> Vec<Seen> {
        self.pod.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeHttpFunction {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy(pods: &[&FakeHttpFunction], timeout: Duration) -> Proxy {
    Proxy::start(
        &pods.iter().map(|p| p.addr).collect::<Vec<_>>(),
        Options {
            protocol: Protocol::Http,
            event_timeout: timeout,
            ..Options::default()
        },
    )
    .await
}

fn daprd() -> reqwest::Client {
    common::webhook::init_crypto();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

const CLOUD_EVENT: &str = r#"{"id":"ev-1","source":"test","type":"com.dapr.event.sent","specversion":"1.0","datacontenttype":"application/json","data":{"n":1},"topic":"orders","pubsubname":"ps"}"#;

#[tokio::test]
async fn serves_daprs_discovery_calls() {
    let f = FakeHttpFunction::start().await;
    let p = proxy(&[&f], Duration::from_secs(5)).await;
    let c = daprd();
    let base = format!("http://{}", p.addr);
    let subs: Value = c
        .get(format!("{base}/dapr/subscribe"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        subs,
        json!([{"pubsubname": "ps", "topic": "orders", "route": "/orders", "metadata": {"consumerID": "c1"}}])
    );
    let config = c.get(format!("{base}/dapr/config")).send().await.unwrap();
    assert_eq!(config.status(), 200);
    // OPTIONS /<binding>: 2xx means "the app takes this binding".
    for (binding, want) in [("cron", 200), ("kafka-in", 200), ("other", 404)] {
        let r = c
            .request(Method::OPTIONS, format!("{base}/{binding}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{binding}");
    }
    let health = c.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(f.seen().is_empty(), "none of these reach the function");
}

#[tokio::test]
async fn forwards_bindings_and_topics_with_daprs_status_semantics() {
    let f = FakeHttpFunction::start().await;
    let p = proxy(&[&f], Duration::from_secs(5)).await;
    let c = daprd();
    let base = format!("http://{}", p.addr);

    // Binding: body and metadata headers go through; 200 back.
    let r = c
        .post(format!("{base}/cron"))
        .header("content-type", "application/json")
        .header("x-meta", "1")
        .body("tick")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "done");
    // Topic: the CloudEvent as sent.
    let r = c
        .post(format!("{base}/orders"))
        .header("content-type", "application/cloudevents+json")
        .body(CLOUD_EVENT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = f.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (seen[0].0.clone(), seen[0].1.as_str()),
        (Method::POST, "/cron")
    );
    assert_eq!(&seen[0].3[..], b"tick");
    assert_eq!(seen[0].2["x-meta"], "1");
    assert_eq!(seen[1].1, "/orders");
    assert_eq!(&seen[1].3[..], CLOUD_EVENT.as_bytes());
    assert_eq!(seen[1].2["content-type"], "application/cloudevents+json");

    // The function's DROP and RETRY pass through as it said them.
    f.set(Mode::Json(json!({"status": "DROP"})));
    let r: Value = c
        .post(format!("{base}/orders"))
        .body(CLOUD_EVENT)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "DROP");

    // A function error: topic -> RETRY (even a 404, which daprd would
    // take as DROP), binding -> the error status.
    for code in [500, 404, 503] {
        f.set(Mode::Status(code));
        let r = c
            .post(format!("{base}/orders"))
            .body(CLOUD_EVENT)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], "RETRY", "function status {code}");
        let r = c
            .post(format!("{base}/cron"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), code);
    }
    assert!(
        p.metric("openfunction_dapr_proxy_events_total{kind=\"topic\",result=\"function_error\"}")
            .await
            >= 3.0
    );
}

#[tokio::test]
async fn no_function_means_retry_or_error_after_the_timeout() {
    let f = FakeHttpFunction::start().await;
    let addr = f.addr;
    drop(f);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let p = Proxy::start(
        &[addr],
        Options {
            protocol: Protocol::Http,
            event_timeout: Duration::from_millis(500),
            ..Options::default()
        },
    )
    .await;
    let c = daprd();
    let base = format!("http://{}", p.addr);
    let v: Value = c
        .post(format!("{base}/orders"))
        .body(CLOUD_EVENT)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "RETRY");
    let r = c
        .post(format!("{base}/cron"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
}

#[tokio::test]
async fn moves_off_a_dead_pod_and_spreads_over_live_ones() {
    let pods = [
        FakeHttpFunction::start().await,
        FakeHttpFunction::start().await,
        FakeHttpFunction::start().await,
    ];
    let dead = pods[2].addr;
    pods[2].task.abort();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let p = Proxy::start(
        &[pods[0].addr, pods[1].addr, dead],
        Options {
            protocol: Protocol::Http,
            ..Options::default()
        },
    )
    .await;
    let c = daprd();
    let base = format!("http://{}", p.addr);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, base) = (c.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                let r = c
                    .post(format!("{base}/kafka-in"))
                    .body("x")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (a, b) = (pods[0].seen().len(), pods[1].seen().len());
    assert_eq!(a + b, 160);
    assert!(a >= 40 && b >= 40, "spread {a}/{b}");
}

#[tokio::test]
async fn drains_then_reports_unhealthy() {
    let f = FakeHttpFunction::start().await;
    f.set(Mode::Stall);
    let mut p = proxy(&[&f], Duration::from_secs(5)).await;
    let c = daprd();
    let base = format!("http://{}", p.addr);
    let (c2, b2) = (c.clone(), base.clone());
    let inflight = tokio::spawn(async move {
        c2.post(format!("{b2}/orders"))
            .body(CLOUD_EVENT)
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A new event while draining: RETRY, not delivered.
    if let Ok(r) = c
        .post(format!("{base}/orders"))
        .body(CLOUD_EVENT)
        .send()
        .await
    {
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], "RETRY");
    }
    f.pod.release.notify_waiters();
    let r = inflight.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::timeout(Duration::from_secs(5), p.task.take().unwrap())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(f.seen().len(), 1);
}
