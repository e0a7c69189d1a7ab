//! Namespace isolation and ownership.
//!
//! - The webhook never reads another namespace's Function: a Pod in
//!   namespace `b` labelled with a Function (or Serving) that exists only in
//!   `a` is allowed unpatched with a "not found" warning, whatever the
//!   object's own `metadata.namespace` claims; against a fake API server,
//!   the live GET made on a cache miss goes to `b`'s path only, and a label
//!   value that is no object name (`../../a/functions/f`, which kube-rs
//!   would put into the path as it is) causes no request at all.
//! - The controller changes nothing outside the Function's namespace and
//!   nothing it does not own: a Deployment of another namespace labelled
//!   with the Function's name is never rolled, and look-alike proxy objects
//!   there are never changed or deleted.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fake_api::{Call, FakeApi};
use common::harness::cron;
use openfunction_dapr::controller::{self, ControllerSettings};
use openfunction_dapr::model::function::{Function, Serving};
use openfunction_dapr::webhook::Webhook;
use openfunction_dapr::webhook::store::FunctionStore;
use serde_json::{Value, json};

const FUNCTIONS: &str = "/apis/core.openfunction.io/v1beta1/namespaces";

fn function_in(ns: &str) -> Function {
    let mut f = cron();
    f.metadata.namespace = Some(ns.into());
    f
}

fn serving(ns: &str, name: &str, function: &str) -> Serving {
    serde_json::from_value(json!({
        "apiVersion": "core.openfunction.io/v1beta1", "kind": "Serving",
        "metadata": {"name": name, "namespace": ns, "labels": {"openfunction.io/function": function}},
        "spec": {}
    }))
    .unwrap()
}

/// A Pod CREATE in namespace `ns` with these labels; the object claims to
/// be in `claimed_ns`.
fn pod_review(uid: &str, ns: &str, claimed_ns: &str, labels: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "namespace": ns, "operation": "CREATE",
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": claimed_ns, "labels": labels},
                "spec": {"containers": [{"name": "function", "image": "i"}]}}
        }
    }))
    .unwrap()
}

/// Reviews `body`: (allowed, has a patch, warnings).
async fn review(webhook: &Webhook, body: &[u8]) -> (bool, bool, Vec<String>) {
    let reviewed = webhook.review(body).await;
    assert_eq!(reviewed.status.as_u16(), 200);
    let out: Value = serde_json::from_slice(&reviewed.body).unwrap();
    let warnings = out["response"]["warnings"]
        .as_array()
        .map(|w| w.iter().map(|w| w.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    (
        out["response"]["allowed"] == true,
        out["response"].get("patch").is_some(),
        warnings,
    )
}

/// Label sets that name, one way or another, what only namespace `a` has.
fn cross_namespace_labels() -> Vec<(&'static str, Value)> {
    let f = "cron-input-kafka-output";
    vec![
        ("function of a", json!({"openfunction.io/function": f})),
        ("serving of a", json!({"openfunction.io/serving": "s"})),
        (
            "serving of b naming a's function",
            json!({"openfunction.io/serving": "s-b"}),
        ),
        (
            "path traversal to a",
            json!({"openfunction.io/function": format!("../../a/functions/{f}")}),
        ),
        (
            "traversal from a name",
            json!({"openfunction.io/function": format!("{f}/../../../a/functions/{f}")}),
        ),
        (
            "query in the name",
            json!({"openfunction.io/function": format!("{f}?fieldSelector=metadata.namespace%3Da")}),
        ),
        (
            "qualified name",
            json!({"openfunction.io/function": format!("a/{f}")}),
        ),
        (
            "serving traversal",
            json!({"openfunction.io/serving": "../../a/servings/s"}),
        ),
    ]
}

#[tokio::test]
async fn a_pod_never_gets_the_function_of_another_namespace() {
    let store = FunctionStore::from_objects(
        vec![function_in("a")],
        vec![
            serving("a", "s", "cron-input-kafka-output"),
            serving("b", "s-b", "cron-input-kafka-output"),
        ],
    );
    let webhook = Webhook::new(store, "cluster.local");
    // the same Pod in a is patched...
    let labels = json!({"openfunction.io/function": "cron-input-kafka-output"});
    let (allowed, patched, _) = review(&webhook, &pod_review("in-a", "a", "a", labels)).await;
    assert!(allowed && patched);
    // ...in b it is not, whatever its metadata.namespace says
    for (case, labels) in cross_namespace_labels() {
        for claimed in ["b", "a"] {
            let body = pod_review(case, "b", claimed, labels.clone());
            let (allowed, patched, warnings) = review(&webhook, &body).await;
            assert!(allowed, "{case}: allowed");
            assert!(!patched, "{case}: patched with a's Function");
            assert_eq!(warnings.len(), 1, "{case}: {warnings:?}");
            assert!(
                warnings[0].contains("not found") && warnings[0].contains(" b/"),
                "{case}: {warnings:?}"
            );
        }
    }
}

/// GETs of one object by name (not lists or watches).
fn gets_by_name(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.method == "GET" && !c.query.contains_key("watch"))
        .filter(|c| !c.path.ends_with("/functions") && !c.path.ends_with("/servings"))
        .map(|c| {
            let query: Vec<String> = c.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if query.is_empty() {
                c.path.clone()
            } else {
                format!("{}?{}", c.path, query.join("&"))
            }
        })
        .collect()
}

/// Why names are checked before a live GET: kube-rs puts them into the
/// path as they are.
#[test]
fn kube_rs_does_not_escape_names_in_paths() {
    let request = kube::core::Request::new(format!("{FUNCTIONS}/b/functions"))
        .get("../../a/functions/f", &Default::default())
        .unwrap();
    assert_eq!(
        request.uri().path(),
        format!("{FUNCTIONS}/b/functions/../../a/functions/f")
    );
}

#[tokio::test]
async fn live_lookups_on_a_miss_stay_in_the_pods_namespace() {
    let (fake, client) = FakeApi::start();
    let f = "cron-input-kafka-output";
    fake.put(
        &format!("{FUNCTIONS}/a/functions/{f}"),
        serde_json::to_value(function_in("a")).unwrap(),
    );
    fake.put(
        &format!("{FUNCTIONS}/a/servings/s"),
        serde_json::to_value(serving("a", "s", f)).unwrap(),
    );
    let (store, driver) = FunctionStore::watch(client, None, Duration::from_millis(500)).await;
    let driver = tokio::spawn(driver);
    tokio::time::timeout(Duration::from_secs(10), store.ready())
        .await
        .expect("caches synced");
    let webhook = Arc::new(Webhook::new(store, "cluster.local"));
    fake.take_calls();

    for (case, labels) in cross_namespace_labels() {
        let (allowed, patched, warnings) =
            review(&webhook, &pod_review(case, "b", "a", labels)).await;
        assert!(allowed && !patched, "{case}: {warnings:?}");
    }
    let gets = gets_by_name(&fake.take_calls());
    // exactly one miss each for what b could hold, and nothing else
    let mut unique = gets.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique,
        [
            format!("{FUNCTIONS}/b/functions/{f}"),
            format!("{FUNCTIONS}/b/servings/s"),
            format!("{FUNCTIONS}/b/servings/s-b"),
        ],
        "{gets:#?}"
    );

    // a's Function through a's Pod: from the cache, no request
    let labels = json!({"openfunction.io/function": f});
    let (allowed, patched, _) = review(&webhook, &pod_review("in-a", "a", "a", labels)).await;
    assert!(allowed && patched);
    assert!(gets_by_name(&fake.take_calls()).is_empty());
    driver.abort();
}

fn deployment(ns: &str, name: &str, labels: Value, template_annotations: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": template_annotations},
                "spec": {"containers": [{"name": "function", "image": "i",
                    "env": [{"name": "DAPR_HOST",
                        "value": "cron-input-kafka-output-a-dapr.a.svc.cluster.local"}]}]}
            }
        }
    })
}

#[tokio::test]
async fn the_controller_writes_only_in_the_functions_namespace_and_to_its_own_objects() {
    let (fake, client) = FakeApi::start();
    let f = "cron-input-kafka-output";
    let function_path = format!("{FUNCTIONS}/a/functions/{f}");
    fake.put(
        &function_path,
        serde_json::to_value(function_in("a")).unwrap(),
    );
    let labelled = json!({"openfunction.io/function": f});
    let standalone = json!({"dapr.io/enabled": "false"});
    // a's function Deployment, and one in b with the same label
    let deploy = |ns: &str, name: &str| format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}");
    fake.put(
        &deploy("a", "fn-a"),
        deployment("a", "fn-a", labelled.clone(), standalone.clone()),
    );
    fake.put(
        &deploy("b", "fn-b"),
        deployment("b", "fn-b", labelled.clone(), standalone.clone()),
    );
    // in b, look-alikes of the proxy and the Service, even claiming to be
    // managed by us and owned by a Function of that name
    let managed = json!({"app.kubernetes.io/managed-by": "openfunction-dapr",
        "openfunction.io/proxy": f, "openfunction.io/managed": "true"});
    let mut look_alike = deployment("b", &format!("{f}-dapr-proxy"), managed.clone(), json!({}));
    look_alike["metadata"]["ownerReferences"] = json!([{"apiVersion": "core.openfunction.io/v1beta1",
        "kind": "Function", "name": f, "uid": "uid-of-another-function", "controller": true}]);
    fake.put(&deploy("b", &format!("{f}-dapr-proxy")), look_alike);
    let service_b = format!("/api/v1/namespaces/b/services/{f}");
    fake.put(
        &service_b,
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f, "namespace": "b", "labels": managed},
            "spec": {"ports": [{"port": 80}], "selector": {"app": "x"}}}),
    );
    let before_b = fake.objects_under("/apis/apps/v1/namespaces/b/");
    let before_service = fake.get(&service_b);

    let settings = ControllerSettings {
        identity: Some("controller-0".into()),
        leader_elect: false,
        resync_seconds: 1,
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(controller::run(client, settings, async move {
        let _ = stopped.await;
    }));
    let eventually = |what: &'static str, cond: Box<dyn Fn() -> bool>| async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    {
        let fake = fake.clone();
        let path = deploy("a", &format!("{f}-dapr-proxy"));
        eventually("a's proxy", Box::new(move || fake.get(&path).is_some())).await;
    }
    // to sidecar: a's proxy goes, a's Deployment rolls; b is not touched
    fake.edit(&function_path, |func| {
        func["spec"]["serving"]["annotations"]["openfunction.io/dapr-service-mode"] =
            json!("sidecar");
    });
    {
        let fake = fake.clone();
        let (proxy, rolled) = (deploy("a", &format!("{f}-dapr-proxy")), deploy("a", "fn-a"));
        eventually(
            "a's proxy removed and a's Deployment rolled",
            Box::new(move || {
                fake.get(&proxy).is_none() && fake.get(&rolled).is_some_and(|d| {
                    d["spec"]["template"]["metadata"]["annotations"]["openfunction.io/dapr-mode"]
                        == "sidecar"
                })
            }),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // a resync or so
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("the controller stops")
        .unwrap()
        .unwrap();

    assert_eq!(fake.objects_under("/apis/apps/v1/namespaces/b/"), before_b);
    assert_eq!(fake.get(&service_b), before_service);
    let writes: Vec<String> = fake
        .calls()
        .iter()
        .filter(|c| c.method != "GET")
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    assert!(!writes.is_empty());
    for w in &writes {
        assert!(w.contains("/namespaces/a/"), "a write outside a: {w}");
    }
    // and the GETs the controller made by name were in a too
    for g in gets_by_name(&fake.calls()) {
        assert!(
            g.contains("/namespaces/a/") || !g.contains("/namespaces/"),
            "{g}"
        );
    }
}
