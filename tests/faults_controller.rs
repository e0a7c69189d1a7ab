//! Races in the controller, against the fake API server
//! (`tests/common/fake_api.rs`) through the reconcile harness
//! (`tests/common/harness.rs`) or the whole `controller::run`.
//!
//! Already covered by `tests/controller_reconcile.rs`, not repeated here: a
//! stale delete refused by the uid precondition (409), foreign objects of
//! the same names never touched, a hand-deleted or changed proxy put back
//! (one reconcile, and the whole controller), back-off on 500s.
//!
//! Added here: a conflict (409) on apply, creation behind a stale cache,
//! deletes and rolls of objects already gone (404), a proxy still being
//! deleted, a Function deleted while its reconcile is in flight, and a
//! leader handover (graceful and by crash) that creates nothing twice and
//! deletes nothing.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_api::{Call, FakeApi};
use common::harness::*;
use kube::runtime::controller::Action;
use openfunction_dapr::controller::plan::with_applied_hash;
use openfunction_dapr::controller::resources::{self, ProxySettings};
use openfunction_dapr::controller::{self, ControllerSettings};
use openfunction_dapr::model::function::Function;
use serde_json::{Value, json};

fn proxy_path() -> String {
    deploy_path(&format!("{CRON}-dapr-proxy"))
}

fn summary(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .map(|c| {
            let reason = c
                .body
                .as_ref()
                .and_then(|b| b["reason"].as_str())
                .map(|r| format!(" {r}"))
                .unwrap_or_default();
            format!("{} {}{reason}", c.method, c.path)
        })
        .collect()
}

fn desired_deployment(f: &Function) -> Value {
    serde_json::to_value(with_applied_hash(resources::desired_proxy_deployment(
        f,
        &ProxySettings::default(),
    )))
    .unwrap()
}

#[tokio::test]
async fn a_conflict_on_apply_is_retried_and_creates_once() {
    let h = Harness::new();
    let f = cron();
    h.fake.fail_once("PATCH", &proxy_path(), 409);
    let (result, calls) = h.reconcile(&f).await;
    let err = result.expect_err("the 409 fails the reconcile");
    assert!(err.to_string().starts_with("apply Deployment"), "{err}");
    assert_eq!(
        summary(&calls),
        [
            format!("GET {}", proxy_path()),
            format!("PATCH {}", proxy_path())
        ],
        "no Event, nothing after the failed call"
    );
    assert_eq!(
        controller::error_policy(Arc::new(f.clone()), &err, h.ctx.clone()),
        Action::requeue(Duration::from_secs(2))
    );
    let calls = h.reconcile_ok(&f).await;
    assert_eq!(
        summary(&calls),
        [
            format!("GET {}", proxy_path()),
            format!("PATCH {}", proxy_path()),
            format!("POST {EVENTS} ProxyCreated"),
            format!("GET {}", service_path(CRON)),
            format!("PATCH {}", service_path(CRON)),
            format!("POST {EVENTS} ProxyCreated"),
        ]
    );
}

#[tokio::test]
async fn an_object_created_behind_a_stale_cache_is_not_applied_again() {
    let h = Harness::new();
    let f = cron();
    h.reconcile_ok(&f).await;
    // the watches have not delivered the new objects yet: the caches still
    // say there is no proxy; the reconcile looks, finds its own, and writes
    // nothing
    let calls = h.reconcile_ok(&f).await;
    assert_eq!(
        summary(&calls),
        [
            format!("GET {}", proxy_path()),
            format!("GET {}", service_path(CRON))
        ]
    );
}

#[tokio::test]
async fn deleting_what_is_already_gone_is_quiet() {
    let mut h = Harness::new();
    let f = cron();
    h.reconcile_ok(&f).await;
    h.sync();
    // deleted by someone else; the caches do not know yet
    h.fake.remove(&proxy_path());
    h.fake.remove(&service_path(CRON));
    let calls = h.reconcile_ok(&with_mode(f, "sidecar")).await;
    assert_eq!(
        summary(&calls),
        [
            format!("DELETE {}", proxy_path()),
            format!("DELETE {}", service_path(CRON)),
        ],
        "404s: no ProxyRemoved Event, no error"
    );
}

#[tokio::test]
async fn a_roll_of_a_deployment_deleted_meanwhile_is_skipped() {
    let mut h = Harness::new();
    let f = cron();
    h.reconcile_ok(&f).await;
    let workload = deploy_path("cron-v1");
    h.fake.put(
        &workload,
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "cron-v1", "namespace": NS, "labels": {"openfunction.io/function": CRON}},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {
                "metadata": {"labels": {"app": "x"}, "annotations": {"dapr.io/enabled": "true"}},
                "spec": {"containers": [{"name": "function", "image": "i"}]}}}}),
    );
    h.sync();
    h.fake.remove(&workload);
    let calls = h.reconcile_ok(&f).await;
    assert_eq!(
        summary(&calls),
        [format!("PATCH {workload}")],
        "404: no WorkloadRolled Event, no error"
    );
    assert!(h.fake.get(&workload).is_none(), "not recreated by the roll");
}

#[tokio::test]
async fn a_proxy_still_being_deleted_is_recreated_once_it_is_gone() {
    let h = Harness::new();
    let f = cron();
    let mut dying = desired_deployment(&f);
    dying["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    dying["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
    h.fake.put(&proxy_path(), dying);
    let (result, calls) = h.reconcile(&f).await;
    let err = result.expect_err("being deleted");
    assert!(err.to_string().contains("is being deleted"), "{err}");
    assert_eq!(summary(&calls), [format!("GET {}", proxy_path())]);
    assert_eq!(
        controller::error_policy(Arc::new(f.clone()), &err, h.ctx.clone()),
        Action::requeue(Duration::from_secs(2))
    );
    h.fake.remove(&proxy_path());
    let calls = h.reconcile_ok(&f).await;
    assert_eq!(calls[1].method, "PATCH");
    assert!(h.fake.get(&proxy_path()).is_some());
}

fn function_path() -> String {
    format!("/apis/core.openfunction.io/v1beta1/namespaces/{NS}/functions/{CRON}")
}

async fn eventually(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn run_settings(identity: &str) -> ControllerSettings {
    ControllerSettings {
        identity: Some(identity.into()),
        lease_namespace: "ofd-system".into(),
        lease_duration_seconds: 2,
        lease_renew_grace_seconds: 1,
        resync_seconds: 1,
        ..Default::default()
    }
}

struct Replica {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), controller::Error>>,
}

fn replica(fake: &FakeApi, settings: ControllerSettings) -> Replica {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(controller::run(fake.client(), settings, async move {
        let _ = stopped.await;
    }));
    Replica {
        stop: Some(stop),
        task,
    }
}

impl Replica {
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the replica stops")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn a_function_deleted_while_its_reconcile_is_in_flight_leaves_nothing_behind() {
    let fake = FakeApi::default();
    fake.put(&function_path(), serde_json::to_value(cron()).unwrap());
    let hold = fake.hold("PATCH", &proxy_path());
    let settings = ControllerSettings {
        leader_elect: false,
        ..run_settings("controller-0")
    };
    let r = replica(&fake, settings);
    // the reconcile is about to create the proxy; the Function goes
    hold.arrived().await;
    fake.remove(&function_path());
    tokio::time::sleep(Duration::from_millis(300)).await;
    hold.release();
    eventually("the in-flight apply", Duration::from_secs(5), || {
        fake.get(&proxy_path()).is_some()
    })
    .await;
    // what it created is owned by the deleted Function: garbage collection
    // removes it
    let proxy = fake.get(&proxy_path()).unwrap();
    assert_eq!(
        proxy["metadata"]["ownerReferences"],
        json!([{"apiVersion": "core.openfunction.io/v1beta1", "kind": "Function",
                "name": CRON, "uid": FN_UID, "controller": true, "blockOwnerDeletion": true}])
    );
    tokio::time::sleep(Duration::from_millis(500)).await; // the Service too
    let collected = fake.collect_garbage();
    assert!(collected.contains(&proxy_path()), "{collected:?}");
    // and the controller does not bring anything back (resync: 1 s)
    fake.take_calls();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes: Vec<String> = summary(&fake.take_calls())
        .into_iter()
        .filter(|c| !c.starts_with("GET "))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert!(fake.get(&proxy_path()).is_none());
    assert!(fake.get(&service_path(CRON)).is_none());
    r.shutdown().await;
}

#[tokio::test]
async fn leader_handover_creates_nothing_twice_and_deletes_nothing() {
    let fake = FakeApi::default();
    fake.put(&function_path(), serde_json::to_value(cron()).unwrap());
    let lease =
        "/apis/coordination.k8s.io/v1/namespaces/ofd-system/leases/openfunction-dapr-controller";
    let holder = || {
        fake.get(lease)
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
    };
    let limit = Duration::from_secs(20);

    let a = replica(&fake, run_settings("replica-a"));
    eventually("a leads and creates the proxy", limit, || {
        fake.get(&proxy_path()).is_some() && fake.get(&service_path(CRON)).is_some()
    })
    .await;
    assert_eq!(holder().as_deref(), Some("replica-a"));
    let b = replica(&fake, run_settings("replica-b"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(holder().as_deref(), Some("replica-a"), "b waits");

    // graceful: a steps down and releases, b takes over
    a.shutdown().await;
    eventually("b leads", limit, || {
        holder().as_deref() == Some("replica-b")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await; // b resyncs

    // crash: b dies holding the lease, c takes over once it expires
    let c = replica(&fake, run_settings("replica-c"));
    b.task.abort();
    eventually("c leads", limit, || {
        holder().as_deref() == Some("replica-c")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await; // c resyncs
    c.shutdown().await;

    let calls = summary(&fake.calls());
    let count = |what: &str| calls.iter().filter(|c| c.as_str() == what).count();
    assert_eq!(count(&format!("PATCH {}", proxy_path())), 1, "{calls:#?}");
    assert_eq!(count(&format!("PATCH {}", service_path(CRON))), 1);
    assert_eq!(count(&format!("POST {EVENTS} ProxyCreated")), 2);
    for c in &calls {
        assert!(!c.starts_with("DELETE "), "{c}");
        assert!(
            !c.ends_with(" ProxyUpdated") && !c.ends_with(" ProxyRemoved"),
            "{c}"
        );
    }
    assert!(fake.get(&proxy_path()).is_some());
    assert!(fake.get(&service_path(CRON)).is_some());
}
