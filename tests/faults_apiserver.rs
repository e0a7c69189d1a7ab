//! The API server goes away: the fake API server of `tests/common/fake_api.rs`
//! served over real HTTP on 127.0.0.1, refused (nothing listening), down
//! (every request answered 503, and counted), stopped and restarted on the
//! same port while clients are connected.
//!
//! - At start: the function store (and the real `serve` binary, whose
//!   `/readyz` is polled on the admin port) waits with back-off, without
//!   crashing, and becomes ready once the API server answers.
//! - While running: admissions keep being answered from the cache (a miss
//!   is denied as temporary, within the look-up timeout), the watches resume
//!   afterwards (a Function created during the outage appears), the
//!   controller retries failed writes with back-off, and nobody hammers the
//!   API server meanwhile (requests per second are counted).

mod common;

use std::time::{Duration, Instant};

use common::fake_api::{Call, FakeApi, http_client};
use common::harness::cron;
use common::serve_bin::{Serve, free_addr};
use common::webhook::{https_client, patch_of, post_json};
use openfunction_dapr::controller::{self, ControllerSettings};
use openfunction_dapr::webhook::Webhook;
use openfunction_dapr::webhook::store::FunctionStore;
use serde_json::{Value, json};

fn function_path(ns: &str, name: &str) -> String {
    format!("/apis/core.openfunction.io/v1beta1/namespaces/{ns}/functions/{name}")
}

/// The standalone fixture Function as `name` in `ns`.
fn function(ns: &str, name: &str) -> Value {
    let mut f = cron();
    f.metadata.namespace = Some(ns.into());
    f.metadata.name = Some(name.into());
    f.metadata.uid = Some(format!("uid-{ns}-{name}"));
    serde_json::to_value(f).unwrap()
}

fn pod_review(uid: &str, function: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "namespace": "default", "operation": "CREATE",
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "labels": {"openfunction.io/function": function}},
                "spec": {"containers": [{"name": "function", "image": "i"}]}}
        }
    }))
    .unwrap()
}

/// The answer to one review: (allowed, patched, status code of a refusal,
/// its message).
async fn review(webhook: &Webhook, body: &[u8]) -> (bool, bool, Option<u64>, String) {
    let reviewed = webhook.review(body).await;
    assert_eq!(reviewed.status.as_u16(), 200);
    let out: Value = serde_json::from_slice(&reviewed.body).unwrap();
    let r = &out["response"];
    (
        r["allowed"] == true,
        r.get("patch").is_some(),
        r["status"]["code"].as_u64(),
        r["status"]["message"].as_str().unwrap_or("").to_owned(),
    )
}

async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn the_store_waits_for_an_unreachable_api_server_then_syncs() {
    let fake = FakeApi::default();
    fake.put(&function_path("default", "f1"), function("default", "f1"));
    let addr = free_addr();
    let client = http_client(&format!("http://{addr}"));
    // nothing listens yet: connection refused
    let starting = tokio::spawn(FunctionStore::watch(
        client,
        None,
        Duration::from_millis(500),
    ));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        !starting.is_finished(),
        "gave up or went on without a cluster"
    );

    // it accepts connections and drops them for a while: still waiting,
    // and not hammering (back-off 0.5 s, 1 s, 2 s, ...)
    let refusing = fake.serve_refusing(addr).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!starting.is_finished());
    let tries = fake.refused_connections();
    assert!(tries <= 3, "{tries} connections in 1.5 s");
    refusing.stop().await;

    // it answers 503 for a while: kube-client's own retry policy (429, 503,
    // 504: 5 ms doubling, 15 retries) fires a short burst, then slows down
    fake.down(503);
    let server = fake.serve_http(addr).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!starting.is_finished());
    let calls = fake.take_calls();
    assert!(
        (1..=12).contains(&calls.len()),
        "{} requests in 1.5 s of 503s",
        calls.len()
    );

    // it serves: the store syncs
    fake.up();
    let (store, driver) = tokio::time::timeout(Duration::from_secs(10), starting)
        .await
        .expect("discovery resumes")
        .unwrap();
    let driver = tokio::spawn(driver);
    tokio::time::timeout(Duration::from_secs(10), store.ready())
        .await
        .expect("caches synced");
    assert!(store.cached("default", "f1").is_some());
    driver.abort();
    server.stop().await;
}

#[tokio::test]
async fn admissions_are_answered_from_the_cache_during_an_outage_and_watches_resume() {
    let fake = FakeApi::default();
    fake.put(&function_path("default", "f1"), function("default", "f1"));
    let server = fake.serve_http("127.0.0.1:0".parse().unwrap()).await;
    let addr = server.addr;
    let (store, driver) =
        FunctionStore::watch(http_client(&server.url()), None, Duration::from_millis(500)).await;
    let driver = tokio::spawn(driver);
    tokio::time::timeout(Duration::from_secs(10), store.ready())
        .await
        .expect("caches synced");
    let webhook = Webhook::new(store.clone(), "cluster.local");

    // the API server crashes: connections drop, the port is closed
    server.stop().await;
    let (allowed, patched, _, _) = review(&webhook, &pod_review("cached", "f1")).await;
    assert!(allowed && patched, "answered from the cache");
    let started = Instant::now();
    let (allowed, patched, code, message) = review(&webhook, &pod_review("miss", "ghost")).await;
    assert!(!allowed && !patched);
    assert_eq!(code, Some(503));
    assert!(message.contains("temporary"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // a Function is created meanwhile
    fake.put(&function_path("default", "f2"), function("default", "f2"));
    tokio::time::sleep(Duration::from_millis(700)).await;

    // unreachable for a while (connections dropped at once): count them
    let refusing = fake.serve_refusing(addr).await;
    let window = Instant::now();
    for i in 0..5 {
        let (allowed, patched, _, _) =
            review(&webhook, &pod_review(&format!("cached-{i}"), "f1")).await;
        assert!(allowed && patched, "answered from the cache");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let elapsed = window.elapsed().as_secs_f64();
    let tries = fake.refused_connections();
    assert!(
        tries as f64 / elapsed < 4.0,
        "{tries} connections from two watches in {elapsed:.1} s"
    );
    refusing.stop().await;
    let server = fake.serve_http(addr).await;

    // back for good: the watch resumes and brings f2
    let took = eventually(
        "the Function created during the outage",
        Duration::from_secs(15),
        || store.cached("default", "f2").is_some(),
    )
    .await;
    eprintln!("watch resumed {took:?} after the API server came back");
    let (allowed, patched, _, _) = review(&webhook, &pod_review("new", "f2")).await;
    assert!(allowed && patched);
    driver.abort();
    server.stop().await;
}

#[tokio::test]
async fn the_controller_retries_failed_writes_and_rides_out_an_outage() {
    let fake = FakeApi::default();
    fake.put(&function_path("ns", "f1"), function("ns", "f1"));
    let server = fake.serve_http("127.0.0.1:0".parse().unwrap()).await;
    let settings = ControllerSettings {
        identity: Some("controller-0".into()),
        leader_elect: false,
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(controller::run(
        http_client(&server.url()),
        settings,
        async move {
            let _ = stopped.await;
        },
    ));
    let proxy = |name: &str| format!("/apis/apps/v1/namespaces/ns/deployments/{name}-dapr-proxy");
    eventually("the proxy", Duration::from_secs(20), || {
        fake.get(&proxy("f1")).is_some()
    })
    .await;

    // a failed write is retried after the back-off, once
    fake.take_calls();
    fake.fail_once("PATCH", &proxy("f1"), 500);
    fake.remove(&proxy("f1"));
    eventually("the proxy recreated", Duration::from_secs(10), || {
        fake.get(&proxy("f1")).is_some()
    })
    .await;
    let patches: Vec<Call> = fake
        .take_calls()
        .into_iter()
        .filter(|c| c.method == "PATCH" && c.path == proxy("f1"))
        .collect();
    assert_eq!(patches.len(), 2, "one failure, one retry");
    let gap = patches[1].at - patches[0].at;
    assert!(gap >= Duration::from_millis(1800), "retried after {gap:?}");

    // an outage: the proxy is deleted as it starts, and a Function is
    // created during it. First the API server is unreachable (connections
    // dropped at once), then it answers 503.
    fake.remove(&proxy("f1"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = server.addr;
    server.stop().await;
    fake.take_calls();
    fake.put(&function_path("ns", "f2"), function("ns", "f2"));
    let refusing = fake.serve_refusing(addr).await;
    let window = Instant::now();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let unreachable = fake.refused_connections() as f64 / window.elapsed().as_secs_f64();
    refusing.stop().await;
    // four watches and the failing reconcile, each with its back-off
    assert!(
        unreachable < 6.0,
        "{unreachable:.1} connections/s while unreachable"
    );

    fake.down(503);
    let server = fake.serve_http(addr).await;
    let window = Instant::now();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let during = fake.take_calls();
    let overloaded = during.len() as f64 / window.elapsed().as_secs_f64();
    // kube-client retries 503s itself (5 ms doubling), on top of our
    // back-offs: a burst at first, then fewer and fewer
    assert!(
        overloaded < 40.0,
        "{} requests in 2 s of 503s: {:?}",
        during.len(),
        during
            .iter()
            .map(|c| format!("{} {}", c.method, c.path))
            .collect::<Vec<_>>()
    );
    fake.up();
    let took = eventually(
        "the deleted proxy back and the new Function's proxy created",
        Duration::from_secs(20),
        || fake.get(&proxy("f1")).is_some() && fake.get(&proxy("f2")).is_some(),
    )
    .await;
    eprintln!(
        "{unreachable:.1} connections/s while unreachable, {overloaded:.1} requests/s while answering 503; \
         repaired {took:?} after the API server came back"
    );

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("the controller stops")
        .unwrap()
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn serve_is_not_ready_until_the_api_server_answers() {
    let fake = FakeApi::default();
    fake.put(&function_path("default", "f1"), function("default", "f1"));
    let api = free_addr();
    let mut serve = Serve::start(&["--lookup-timeout", "1s"], Some(api));

    // no API server: alive, not ready, for a while
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut polled = 0;
    while Instant::now() < deadline {
        assert!(serve.running(), "serve exited: {}", serve.log());
        if let Some(ready) = serve.admin("/readyz").await {
            assert_eq!(ready, 503, "ready without an API server");
            assert_eq!(serve.admin("/livez").await, Some(200));
            polled += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(polled > 0, "the admin port never answered: {}", serve.log());

    // the API server comes up: ready, and the webhook answers from the cache
    let server = fake.serve_http(api).await;
    let took = serve.wait_ready(Duration::from_secs(15)).await;
    eprintln!("ready {took:?} after the API server came up");
    let client = https_client(&[&serve.ca_pem()], serve.webhook, false);
    let (status, answer) = post_json(&client, &serve.url(), pod_review("binary", "f1")).await;
    assert_eq!(status, 200, "{answer}");
    assert!(!patch_of(&answer).0.is_empty(), "{answer}");
    assert!(serve.running());
    drop(serve);
    server.stop().await;
}

/// A Lease the controller may not take (RBAC forbids creating it): the
/// webhook stays ready, and the cause is on `/readyz`, in the metrics and
/// in an ERROR line, while the elector keeps trying.
#[tokio::test]
async fn a_lease_that_cannot_be_taken_is_reported_not_silent() {
    let fake = FakeApi::default();
    fake.put(&function_path("default", "f1"), function("default", "f1"));
    let leases = "/apis/coordination.k8s.io/v1/namespaces/openfunction-dapr/leases";
    for _ in 0..1000 {
        fake.fail_once("POST", leases, 403);
    }
    let api = free_addr();
    let server = fake.serve_http(api).await;
    let mut serve = Serve::start(&[], Some(api));
    serve.wait_ready(Duration::from_secs(15)).await;
    let admin = |path: &str| {
        let url = format!("http://{}{path}", serve.admin);
        async move {
            let r = reqwest::get(url).await.expect("admin port");
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let ready = loop {
        let (status, body) = admin("/readyz").await;
        if body.contains("controller:") || Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ready.0, 200, "the webhook stays ready");
    assert!(
        ready.1.starts_with(
            "ok\ncontroller: cannot take Lease openfunction-dapr/openfunction-dapr-controller: forbidden"
        ),
        "{ready:?}\n{}",
        serve.log()
    );
    let (_, metrics) = admin("/metrics").await;
    assert!(
        metrics.contains("openfunction_dapr_lease_failing 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("openfunction_dapr_lease_fault{reason=\"forbidden\"} 1"),
        "{metrics}"
    );
    let log = serve.log();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("cannot take Lease"))
        .collect();
    assert_eq!(errors.len(), 1, "once per minute:\n{log}");
    // it keeps trying
    let posts = || {
        fake.calls()
            .iter()
            .filter(|c| c.method == "POST" && c.path == leases)
            .count()
    };
    let before = posts();
    // (back-off 1 s, 2 s, 4 s, ... at most 30 s)
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(posts() > before, "the elector stopped trying");
    assert!(serve.running());
    drop(serve);
    server.stop().await;
}
