// The scenarios of tests/controller_reconcile.rs, compiled once per
// version of core.openfunction.io Functions (`VERSION`).

use std::sync::Arc;
use std::time::Duration;

use crate::common::fake_api::{Call, FakeApi};
use crate::common::harness::*;
use kube::runtime::controller::Action;
use openfunction_dapr::controller::plan::with_applied_hash;
use openfunction_dapr::controller::resources::{self, ProxySettings};
use openfunction_dapr::controller::{self, ControllerSettings, FIELD_MANAGER, ROLL_FIELD_MANAGER};
use openfunction_dapr::model::function::Function;
use openfunction_dapr::model::v1beta2::ApiVersion;
use serde_json::{Value, json};

/// The fixture Functions, read in [`VERSION`].
fn cron() -> Function {
    in_version(crate::common::harness::cron(), VERSION)
}

fn function(file: &str, name: &str) -> Function {
    in_version(crate::common::harness::function(file, name), VERSION)
}

// ---------------------------------------------------------- expectations

struct Expect {
    method: &'static str,
    path: String,
    field_manager: Option<&'static str>,
    check: Box<dyn Fn(&Call)>,
}

fn expect(
    method: &'static str,
    path: impl Into<String>,
    field_manager: Option<&'static str>,
    check: impl Fn(&Call) + 'static,
) -> Expect {
    Expect {
        method,
        path: path.into(),
        field_manager,
        check: Box::new(check),
    }
}

fn get(path: String) -> Expect {
    expect("GET", path, None, |c| assert!(c.body.is_none()))
}

/// SSA of exactly `desired` (as built, plus the applied-hash annotation).
fn apply(path: String, desired: Value) -> Expect {
    expect("PATCH", path, Some(FIELD_MANAGER), move |c| {
        assert_eq!(
            c.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        assert_eq!(c.query.get("force").map(String::as_str), Some("true"));
        assert_eq!(c.body.as_ref(), Some(&desired), "apply body");
    })
}

fn delete(path: String, uid: String) -> Expect {
    expect("DELETE", path, None, move |c| {
        let body = c.body.as_ref().expect("delete options");
        assert_eq!(body["preconditions"]["uid"], json!(uid));
        assert_eq!(body["propagationPolicy"], "Background");
    })
}

fn roll(name: &str, mode: &'static str) -> Expect {
    expect(
        "PATCH",
        deploy_path(name),
        Some(ROLL_FIELD_MANAGER),
        move |c| {
            assert_eq!(
                c.content_type.as_deref(),
                Some("application/merge-patch+json")
            );
            assert_eq!(
                c.body.as_ref().unwrap(),
                &json!({"spec": {"template": {"metadata": {"annotations": {"openfunction.io/dapr-mode": mode}}}}})
            );
        },
    )
}

/// An Event on the Function about `(kind, name)` with `reason`, `type`,
/// whose note contains `note`.
fn event(
    reason: &'static str,
    type_: &'static str,
    related: Option<(&'static str, String)>,
    note: &'static str,
) -> Expect {
    expect("POST", EVENTS, None, move |c| {
        let e = c.body.as_ref().unwrap();
        assert_eq!(e["reason"], reason);
        assert_eq!(e["type"], type_);
        assert_eq!(e["reportingController"], "openfunction-dapr");
        assert_eq!(e["reportingInstance"], "controller-0");
        assert_eq!(e["regarding"]["kind"], "Function");
        assert_eq!(e["regarding"]["name"], CRON);
        assert_eq!(e["regarding"]["uid"], FN_UID);
        assert_eq!(e["metadata"]["namespace"], NS);
        let text = e["note"].as_str().unwrap();
        assert!(text.contains(note), "note {text:?} lacks {note:?}");
        match &related {
            Some((kind, name)) => {
                assert_eq!(e["related"]["kind"], *kind);
                assert_eq!(e["related"]["name"], json!(name));
            }
            None => assert!(e.get("related").is_none_or(Value::is_null)),
        }
    })
}

fn assert_calls(calls: &[Call], expected: Vec<Expect>) {
    let got: Vec<String> = calls
        .iter()
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    let want: Vec<String> = expected
        .iter()
        .map(|e| format!("{} {}", e.method, e.path))
        .collect();
    assert_eq!(got, want, "calls (missing or extra)");
    for (c, e) in calls.iter().zip(&expected) {
        assert_eq!(
            c.field_manager(),
            e.field_manager,
            "field manager of {} {}",
            c.method,
            c.path
        );
        (e.check)(c);
    }
}

fn desired_deployment(f: &Function) -> Value {
    serde_json::to_value(with_applied_hash(resources::desired_proxy_deployment(
        f,
        &ProxySettings::default(),
    )))
    .unwrap()
}

fn desired_service(f: &Function) -> Value {
    serde_json::to_value(with_applied_hash(
        resources::desired_function_service(f, &ProxySettings::default()).unwrap(),
    ))
    .unwrap()
}

fn proxy_name() -> String {
    format!("{CRON}-dapr-proxy")
}

fn uid_of(fake: &FakeApi, path: &str) -> String {
    fake.get(path).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn creation_calls(f: &Function) -> Vec<Expect> {
    vec![
        get(deploy_path(&proxy_name())),
        apply(deploy_path(&proxy_name()), desired_deployment(f)),
        event(
            "ProxyCreated",
            "Normal",
            Some(("Deployment", proxy_name())),
            "Created the Dapr proxy Deployment cron-input-kafka-output-dapr-proxy (app id cron-input-kafka-output-ns, app protocol grpc, app port 8080, 1 replica(s))",
        ),
        get(service_path(CRON)),
        apply(service_path(CRON), desired_service(f)),
        event(
            "ProxyCreated",
            "Normal",
            Some(("Service", CRON.to_owned())),
            "Created the function Service cron-input-kafka-output (headless, port 8080",
        ),
    ]
}

/// A function Deployment labelled for `function`, whose pod template was
/// admitted with `annotations` and `env`.
fn workload(name: &str, function: &str, annotations: Value, env: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS,
            "labels": {"openfunction.io/function": function, "openfunction.io/serving": format!("{function}-serving")}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "openfunction.io/function": function},
                             "annotations": annotations},
                "spec": {"containers": [{"name": "function", "image": "fn:v1", "env": env}]}
            }
        }
    })
}

fn standalone_env() -> Value {
    json!([{"name": "DAPR_HOST", "value": "cron-input-kafka-output-ns-dapr.ns.svc.cluster.local"},
           {"name": "APP_PROTOCOL", "value": "grpc"}])
}

// ---------------------------------------------------------------- scenarios

#[tokio::test]
async fn standalone_creates_proxy_and_service() {
    let mut h = Harness::new();
    let f = cron();
    let calls = h.reconcile_ok(&f).await;
    assert_calls(&calls, creation_calls(&f));

    // what the API server holds is owned by the Function
    for path in [deploy_path(&proxy_name()), service_path(CRON)] {
        let o = h.fake.get(&path).unwrap();
        assert_eq!(
            o["metadata"]["ownerReferences"],
            json!([{"apiVersion": VERSION.api_version(), "kind": "Function",
                    "name": CRON, "uid": FN_UID, "controller": true, "blockOwnerDeletion": true}])
        );
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "openfunction-dapr"
        );
    }
    h.sync();
    assert_eq!(h.ctx.stores.proxies.state().len(), 1);
}

#[tokio::test]
async fn second_pass_makes_no_call() {
    let mut h = Harness::new();
    let f = cron();
    h.reconcile_ok(&f).await;
    h.sync();
    let writes = h.metrics.writes.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..3 {
        let calls = h.reconcile_ok(&f).await;
        assert_calls(&calls, vec![]);
    }
    assert_eq!(
        h.metrics.writes.load(std::sync::atomic::Ordering::Relaxed),
        writes
    );
    // also when the Function's status or labels change (not its spec)
    let mut f2 = f.clone();
    f2.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("team".into(), "a".into());
    assert_calls(&h.reconcile_ok(&f2).await, vec![]);
}

#[tokio::test]
async fn changed_or_deleted_proxy_is_put_back() {
    let mut h = Harness::new();
    let f = cron();
    h.reconcile_ok(&f).await;
    h.sync();

    // someone scales the proxy to 0 and changes its image
    h.fake.edit(&deploy_path(&proxy_name()), |d| {
        d["spec"]["replicas"] = json!(0);
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil:latest");
    });
    h.sync();
    let calls = h.reconcile_ok(&f).await;
    assert_calls(
        &calls,
        vec![
            apply(deploy_path(&proxy_name()), desired_deployment(&f)),
            event(
                "ProxyUpdated",
                "Normal",
                Some(("Deployment", proxy_name())),
                "Updated the Dapr proxy Deployment cron-input-kafka-output-dapr-proxy to match the Function",
            ),
        ],
    );
    h.sync();
    let d = h.fake.get(&deploy_path(&proxy_name())).unwrap();
    assert_eq!(d["spec"]["replicas"], 1);
    assert_calls(&h.reconcile_ok(&f).await, vec![]);

    // someone deletes the Service
    h.fake.remove(&service_path(CRON));
    h.sync();
    let calls = h.reconcile_ok(&f).await;
    assert_calls(
        &calls,
        vec![
            get(service_path(CRON)),
            apply(service_path(CRON), desired_service(&f)),
            event(
                "ProxyCreated",
                "Normal",
                Some(("Service", CRON.to_owned())),
                "Created the function Service",
            ),
        ],
    );
    assert!(h.fake.get(&service_path(CRON)).is_some());
}

#[tokio::test]
async fn switch_to_sidecar_deletes_the_proxy() {
    let mut h = Harness::new();
    let f = cron();
    h.reconcile_ok(&f).await;
    h.sync();
    let deploy_uid = uid_of(&h.fake, &deploy_path(&proxy_name()));
    let service_uid = uid_of(&h.fake, &service_path(CRON));

    let sidecar = with_mode(f.clone(), "sidecar");
    let calls = h.reconcile_ok(&sidecar).await;
    assert_calls(
        &calls,
        vec![
            delete(deploy_path(&proxy_name()), deploy_uid),
            event(
                "ProxyRemoved",
                "Normal",
                Some(("Deployment", proxy_name())),
                "Deleted the Dapr proxy Deployment cron-input-kafka-output-dapr-proxy: the function is now in sidecar mode",
            ),
            delete(service_path(CRON), service_uid),
            event(
                "ProxyRemoved",
                "Normal",
                Some(("Service", CRON.to_owned())),
                "Deleted the function Service cron-input-kafka-output: the function is now in sidecar mode",
            ),
        ],
    );
    assert!(h.fake.get(&deploy_path(&proxy_name())).is_none());
    assert!(h.fake.get(&service_path(CRON)).is_none());
    h.sync();
    assert_calls(&h.reconcile_ok(&sidecar).await, vec![]);

    // disabling dapr is the same; and back to standalone recreates
    let mut disabled = f.clone();
    set_annotation(&mut disabled, "openfunction.io/enable-dapr", "false");
    assert_calls(&h.reconcile_ok(&disabled).await, vec![]);
    let calls = h.reconcile_ok(&f).await;
    assert_eq!(calls.len(), 6, "{calls:?}");
    assert_eq!(calls[1].method, "PATCH");
    assert_eq!(calls[4].method, "PATCH");
}

#[tokio::test]
async fn stale_delete_is_refused_by_the_uid_precondition() {
    let mut h = Harness::new();
    let f = cron();
    h.reconcile_ok(&f).await;
    h.sync();
    // the proxy was replaced behind the cache's back by another object
    h.fake.edit(&deploy_path(&proxy_name()), |d| {
        d["metadata"]["uid"] = json!("someone-elses");
    });
    let old_service = uid_of(&h.fake, &service_path(CRON));
    let calls = h.reconcile_ok(&with_mode(f, "sidecar")).await;
    let deploy_uid = h.ctx.stores.proxies.state()[0]
        .metadata
        .uid
        .clone()
        .unwrap();
    assert_calls(
        &calls,
        vec![
            delete(deploy_path(&proxy_name()), deploy_uid),
            // 409: nothing deleted, no Event
            delete(service_path(CRON), old_service),
            event(
                "ProxyRemoved",
                "Normal",
                Some(("Service", CRON.to_owned())),
                "Deleted the function Service",
            ),
        ],
    );
    assert!(h.fake.get(&deploy_path(&proxy_name())).is_some());
}

#[tokio::test]
async fn foreign_objects_of_the_same_names_are_never_touched() {
    let mut h = Harness::new();
    let f = cron();
    // a labelled Deployment of the proxy's name, controlled by something else
    let mut foreign = desired_deployment(&f);
    foreign["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": "x", "uid": "other-uid", "controller": true}]);
    h.fake.put(&deploy_path(&proxy_name()), foreign);
    // an unlabelled Service of the function's name, owned by nobody
    h.fake.put(
        &service_path(CRON),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": CRON, "namespace": NS},
               "spec": {"ports": [{"port": 80}], "selector": {"app": "mine"}}}),
    );
    // an unlabelled Deployment owned by the Function itself (labels stripped)
    let mut stripped = desired_deployment(&f);
    stripped["metadata"]["name"] = json!("cron-input-kafka-output-dapr-proxy-old");
    stripped["metadata"]["labels"] = json!({});
    h.fake.put(
        &deploy_path("cron-input-kafka-output-dapr-proxy-old"),
        stripped,
    );
    h.sync();
    assert_eq!(h.ctx.stores.proxies.state().len(), 1);
    let before: Vec<Value> = h.fake.objects_under("/ap");

    // not standalone: nothing to delete that is ours
    for mode in ["sidecar"] {
        assert_calls(&h.reconcile_ok(&with_mode(f.clone(), mode)).await, vec![]);
    }
    let mut disabled = f.clone();
    set_annotation(&mut disabled, "openfunction.io/enable-dapr", "false");
    assert_calls(&h.reconcile_ok(&disabled).await, vec![]);

    // standalone: reported, never applied over
    let calls = h.reconcile_ok(&f).await;
    assert_calls(
        &calls,
        vec![
            event(
                "ProxyConflict",
                "Warning",
                Some(("Deployment", proxy_name())),
                "Deployment cron-input-kafka-output-dapr-proxy already exists and is controlled by ReplicaSet x; it is left untouched",
            ),
            get(service_path(CRON)),
            event(
                "ProxyConflict",
                "Warning",
                Some(("Service", CRON.to_owned())),
                "Service cron-input-kafka-output already exists and was not created by openfunction-dapr for this function",
            ),
        ],
    );
    // reported once, not on every resync (the GET is a read)
    let calls = h.reconcile_ok(&f).await;
    assert_calls(&calls, vec![get(service_path(CRON))]);
    assert_eq!(
        h.fake.objects_under("/ap").len(),
        before.len() + 2,
        "only the two Events were added"
    );
    assert_eq!(
        h.fake.get(&service_path(CRON)).unwrap()["spec"]["selector"],
        json!({"app": "mine"})
    );
}

#[tokio::test]
async fn mode_change_rolls_labelled_function_deployments() {
    let mut h = Harness::new();
    let f = cron();
    h.reconcile_ok(&f).await;
    // function Deployments as the webhook admitted them
    h.fake.put(
        &deploy_path("cron-v1"),
        workload(
            "cron-v1",
            CRON,
            json!({"dapr.io/enabled": "true"}),
            json!([]),
        ),
    );
    h.fake.put(
        &deploy_path("cron-v2"),
        workload(
            "cron-v2",
            CRON,
            json!({"dapr.io/enabled": "false"}),
            standalone_env(),
        ),
    );
    h.fake.put(
        &deploy_path("other-v1"),
        workload(
            "other-v1",
            "other",
            json!({"dapr.io/enabled": "true"}),
            json!([]),
        ),
    );
    h.sync();

    // standalone: only the Deployment admitted in sidecar mode is rolled
    let calls = h.reconcile_ok(&f).await;
    assert_calls(
        &calls,
        vec![
            roll("cron-v1", "standalone"),
            event(
                "WorkloadRolled",
                "Normal",
                Some(("Deployment", "cron-v1".to_owned())),
                "Rolled Deployment cron-v1 (pods admitted in sidecar mode) so its pods are re-admitted in standalone mode",
            ),
        ],
    );
    assert_eq!(
        h.fake.get(&deploy_path("cron-v1")).unwrap()["spec"]["template"]["metadata"]["annotations"]
            ["openfunction.io/dapr-mode"],
        "standalone"
    );
    h.sync();
    assert_calls(&h.reconcile_ok(&f).await, vec![]);

    // to sidecar: the proxy goes and both function Deployments roll
    let deploy_uid = uid_of(&h.fake, &deploy_path(&proxy_name()));
    let service_uid = uid_of(&h.fake, &service_path(CRON));
    let sidecar = with_mode(f.clone(), "sidecar");
    let calls = h.reconcile_ok(&sidecar).await;
    assert_calls(
        &calls,
        vec![
            delete(deploy_path(&proxy_name()), deploy_uid),
            event(
                "ProxyRemoved",
                "Normal",
                Some(("Deployment", proxy_name())),
                "sidecar mode",
            ),
            delete(service_path(CRON), service_uid),
            event(
                "ProxyRemoved",
                "Normal",
                Some(("Service", CRON.to_owned())),
                "sidecar mode",
            ),
            roll("cron-v1", "sidecar"),
            event(
                "WorkloadRolled",
                "Normal",
                Some(("Deployment", "cron-v1".to_owned())),
                "(pods admitted in standalone mode) so its pods are re-admitted in sidecar mode",
            ),
            roll("cron-v2", "sidecar"),
            event(
                "WorkloadRolled",
                "Normal",
                Some(("Deployment", "cron-v2".to_owned())),
                "Rolled Deployment cron-v2",
            ),
        ],
    );
    h.sync();
    assert_calls(&h.reconcile_ok(&sidecar).await, vec![]);
    // the other function's Deployment was never touched
    assert!(
        h.fake.get(&deploy_path("other-v1")).unwrap()["spec"]["template"]["metadata"]
            ["annotations"]
            .get("openfunction.io/dapr-mode")
            .is_none()
    );
}

#[tokio::test]
async fn invalid_annotations_are_reported_once() {
    let mut h = Harness::new();
    let mut f = cron();
    set_annotation(&mut f, "openfunction.io/enable-dapr", "yes");
    set_annotation(&mut f, "openfunction.io/dapr-proxy-replicas", "many");
    let calls = h.reconcile_ok(&f).await;
    let mut expected = vec![event(
        "InvalidAnnotation",
        "Warning",
        None,
        "annotation openfunction.io/enable-dapr: \"yes\" is neither \"true\" nor \"false\"",
    )];
    expected.extend(creation_calls(&f));
    assert_calls(&calls, expected);
    let note = calls[0].body.as_ref().unwrap()["note"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        note.contains("openfunction.io/dapr-proxy-replicas: \"many\""),
        "{note}"
    );
    h.sync();
    assert_calls(&h.reconcile_ok(&f).await, vec![]);
}

#[tokio::test]
async fn app_protocol_change_replaces_the_headless_service() {
    let mut h = Harness::new();
    let f = cron();
    h.reconcile_ok(&f).await;
    h.sync();
    let service_uid = uid_of(&h.fake, &service_path(CRON));
    let mut http = f.clone();
    set_annotation(&mut http, "dapr.io/app-protocol", "http");
    let calls = h.reconcile_ok(&http).await;
    assert_calls(
        &calls,
        vec![
            apply(deploy_path(&proxy_name()), desired_deployment(&http)),
            event(
                "ProxyUpdated",
                "Normal",
                Some(("Deployment", proxy_name())),
                "app protocol http",
            ),
            delete(service_path(CRON), service_uid),
            event(
                "ProxyRemoved",
                "Normal",
                Some(("Service", CRON.to_owned())),
                "Deleted the function Service",
            ),
            get(service_path(CRON)),
            apply(service_path(CRON), desired_service(&http)),
            event(
                "ProxyCreated",
                "Normal",
                Some(("Service", CRON.to_owned())),
                "Created the function Service cron-input-kafka-output (port 8080",
            ),
        ],
    );
    let svc = h.fake.get(&service_path(CRON)).unwrap();
    assert_ne!(svc["spec"]["clusterIP"], "None");
    h.sync();
    assert_calls(&h.reconcile_ok(&http).await, vec![]);
}

#[tokio::test]
async fn knative_function_gets_no_service() {
    let h = Harness::new();
    let f = {
        let mut f = function("sink.yaml", "sink");
        f.metadata.uid = Some(FN_UID.into());
        f
    };
    let calls = h.reconcile_ok(&f).await;
    let got: Vec<String> = calls
        .iter()
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    assert_eq!(
        got,
        [
            format!("GET {}", deploy_path("sink-dapr-proxy")),
            format!("PATCH {}", deploy_path("sink-dapr-proxy")),
            format!("POST {EVENTS}"),
        ]
    );
}

#[tokio::test]
async fn function_being_deleted_gets_nothing() {
    let h = Harness::new();
    let mut f = cron();
    f.metadata.deletion_timestamp =
        Some(serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap());
    assert_calls(&h.reconcile_ok(&f).await, vec![]);
}

#[tokio::test]
async fn errors_requeue_with_exponential_backoff() {
    let mut h = Harness::new();
    let f = cron();
    let path = deploy_path(&proxy_name());
    let arc = Arc::new(f.clone());
    let mut delays = Vec::new();
    for _ in 0..4 {
        h.fake.fail_once("PATCH", &path, 500);
        let (result, calls) = h.reconcile(&f).await;
        let err = result.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("apply Deployment ns/cron-input-kafka-output-dapr-proxy"),
            "{err}"
        );
        // the failed apply is the last call: no Event, nothing after it
        assert_eq!(calls.last().unwrap().method, "PATCH");
        let action = controller::error_policy(arc.clone(), &err, h.ctx.clone());
        delays.push(action);
    }
    assert_eq!(
        delays,
        [2, 4, 8, 16].map(|s| Action::requeue(Duration::from_secs(s)))
    );
    assert_eq!(h.ctx.failures("ns/cron-input-kafka-output"), 4);
    assert_eq!(
        h.metrics
            .reconcile_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    // success resets the back-off
    assert_calls(&h.reconcile_ok(&f).await, creation_calls(&f));
    assert_eq!(h.ctx.failures("ns/cron-input-kafka-output"), 0);
    h.sync();
    h.fake.fail_once("DELETE", &path, 503);
    let (result, _) = h.reconcile(&with_mode(f, "sidecar")).await;
    assert!(
        result
            .unwrap_err()
            .to_string()
            .starts_with("delete Deployment")
    );
    assert_eq!(
        controller::error_policy(
            arc,
            &controller::Error::NotNamespaced("x".into()),
            h.ctx.clone()
        ),
        Action::requeue(Duration::from_secs(2))
    );
}

#[tokio::test]
async fn memos_of_deleted_functions_are_forgotten() {
    let h = Harness::new();
    // a warning memo for `kept` (an invalid annotation was reported) ...
    let mut kept = cron();
    set_annotation(&mut kept, "openfunction.io/enable-dapr", "yes");
    h.reconcile_ok(&kept).await;
    // ... and back-off counters for `kept` and for `gone`, another Function
    let mut gone = cron();
    gone.metadata.name = Some("gone".into());
    gone.metadata.uid = Some("uid-of-gone".into());
    let err = controller::Error::NotNamespaced("x".into());
    for f in [&kept, &gone] {
        controller::error_policy(Arc::new(f.clone()), &err, h.ctx.clone());
    }
    assert_eq!(h.ctx.memo_sizes(), (2, 1));
    h.ctx.forget_deleted([&kept]);
    assert_eq!(h.ctx.failures("ns/cron-input-kafka-output"), 1);
    assert_eq!(h.ctx.failures("ns/gone"), 0);
    assert_eq!(h.ctx.memo_sizes(), (1, 1));
    // `kept` deleted as well: nothing is left
    h.ctx.forget_deleted([]);
    assert_eq!(h.ctx.memo_sizes(), (0, 0));
}

// ------------------------------------------- the whole controller, run()

fn function_path(name: &str) -> String {
    function_path_in(VERSION, name)
}

/// A fake API server serving Functions in [`VERSION`] (and, for v1beta2,
/// also v1beta1, as OpenFunction 1.x does: the controller must pick v1beta2).
fn start_fake() -> (FakeApi, kube::Client) {
    let (fake, client) = FakeApi::start();
    if VERSION == ApiVersion::V1beta2 {
        fake.serve_openfunction_versions(&["v1beta1", "v1beta2"]);
    }
    (fake, client)
}

/// No request for Functions in another version than [`VERSION`] (API
/// discovery aside): nothing that would need a conversion.
fn assert_only_version_read(calls: &[Call]) {
    for c in calls {
        if let Some(rest) = c.path.strip_prefix("/apis/core.openfunction.io/") {
            assert!(
                !rest.contains('/') || rest.starts_with(&format!("{}/", VERSION.as_str())),
                "{} {} reads another version than {VERSION}",
                c.method,
                c.path
            );
        }
    }
}

async fn eventually(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_write(c: &Call) -> bool {
    c.method != "GET"
}

#[tokio::test]
async fn run_keeps_the_proxy_in_place_and_is_quiet_when_nothing_changes() {
    let (fake, client) = start_fake();
    fake.put(&function_path(CRON), function_document(&cron()));
    fake.put(
        &deploy_path("cron-v1"),
        workload(
            "cron-v1",
            CRON,
            json!({"dapr.io/enabled": "false"}),
            standalone_env(),
        ),
    );
    let settings = ControllerSettings {
        identity: Some("controller-0".into()),
        lease_namespace: "ofd-system".into(),
        resync_seconds: 1,
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(controller::run(client, settings, async move {
        let _ = stopped.await;
    }));
    let lease =
        "/apis/coordination.k8s.io/v1/namespaces/ofd-system/leases/openfunction-dapr-controller";
    let limit = Duration::from_secs(20);

    // leader election, then the proxy and the Service
    eventually("the proxy and the Service", limit, || {
        fake.get(&deploy_path(&proxy_name())).is_some() && fake.get(&service_path(CRON)).is_some()
    })
    .await;
    assert_eq!(
        fake.get(lease).unwrap()["spec"]["holderIdentity"],
        "controller-0"
    );
    assert!(openfunction_dapr::controller::plan::is_subset(
        &desired_deployment(&cron()),
        &fake.get(&deploy_path(&proxy_name())).unwrap()
    ));

    // resyncs every second of an unchanged Function write nothing
    tokio::time::sleep(Duration::from_millis(1500)).await;
    fake.take_calls();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes: Vec<String> = fake
        .take_calls()
        .iter()
        .filter(|c| is_write(c) && !c.path.starts_with(lease))
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    assert!(writes.is_empty(), "writes on resync: {writes:?}");

    // a deleted proxy is put back
    let old = uid_of(&fake, &deploy_path(&proxy_name()));
    fake.remove(&deploy_path(&proxy_name()));
    eventually("the proxy recreated", limit, || {
        fake.get(&deploy_path(&proxy_name()))
            .is_some_and(|d| d["metadata"]["uid"] != json!(old))
    })
    .await;
    // a changed Service is put back
    fake.edit(&service_path(CRON), |s| {
        s["spec"]["ports"][0]["port"] = json!(9999);
    });
    eventually("the Service repaired", limit, || {
        fake.get(&service_path(CRON))
            .is_some_and(|s| s["spec"]["ports"][0]["port"] == 8080)
    })
    .await;

    // to sidecar: the proxy goes, the function Deployment is rolled
    fake.edit(&function_path(CRON), |f| {
        f["spec"]["serving"]["annotations"]["openfunction.io/dapr-service-mode"] = json!("sidecar");
        f["metadata"]["generation"] = json!(2);
    });
    eventually("the proxy removed and the workload rolled", limit, || {
        fake.get(&deploy_path(&proxy_name())).is_none()
            && fake.get(&service_path(CRON)).is_none()
            && fake.get(&deploy_path("cron-v1")).is_some_and(|d| {
                d["spec"]["template"]["metadata"]["annotations"]["openfunction.io/dapr-mode"]
                    == "sidecar"
            })
    })
    .await;

    // every watch and list of Deployments and Services is label-selected
    let calls = fake.calls();
    for c in calls.iter().filter(|c| {
        c.method == "GET" && (c.path.ends_with("/deployments") || c.path.ends_with("/services"))
    }) {
        let selector = c.query.get("labelSelector").map(String::as_str);
        assert!(
            matches!(
                selector,
                Some("app.kubernetes.io/managed-by=openfunction-dapr")
                    | Some("openfunction.io/function")
                    // OpenFunction's own proxies (--coexist=auto)
                    | Some("openfunction.io/proxy,app.kubernetes.io/managed-by!=openfunction-dapr")
            ),
            "{} {} {selector:?}",
            c.method,
            c.path
        );
        assert!(
            !c.path.contains("/namespaces/"),
            "all namespaces by default"
        );
    }

    assert_only_version_read(&calls);

    // shutdown: the controller stops and the lease is released
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("run returns after shutdown")
        .unwrap()
        .unwrap();
    assert!(
        fake.get(lease).unwrap()["spec"]
            .get("holderIdentity")
            .is_none_or(Value::is_null),
        "lease released"
    );
}

#[tokio::test]
async fn run_restricted_to_a_namespace_without_leader_election() {
    let (fake, client) = start_fake();
    fake.put(&function_path(CRON), function_document(&cron()));
    let settings = ControllerSettings {
        identity: Some("controller-0".into()),
        namespace: Some(NS.into()),
        leader_elect: false,
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(controller::run(client, settings, async move {
        let _ = stopped.await;
    }));
    eventually("the proxy and the Service", Duration::from_secs(20), || {
        fake.get(&deploy_path(&proxy_name())).is_some() && fake.get(&service_path(CRON)).is_some()
    })
    .await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("run returns after shutdown")
        .unwrap()
        .unwrap();
    let calls = fake.calls();
    assert_only_version_read(&calls);
    assert!(calls.iter().all(|c| !c.path.contains("/leases")));
    for c in calls.iter().filter(|c| c.query.contains_key("watch")) {
        assert!(c.path.contains("/namespaces/ns/"), "{}", c.path);
    }
}

#[tokio::test]
async fn run_with_the_controller_disabled_does_nothing() {
    let (fake, client) = start_fake();
    let settings = ControllerSettings {
        enabled: false,
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(controller::run(client, settings, async move {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!task.is_finished(), "waits for shutdown");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(fake.calls().is_empty());
}

/// OpenFunction's own proxy (as v0.8.0 – v1.2.0 `CreateDaprProxy` makes
/// it: `<serving>-proxy-deployment-<version>-<random>`, labels
/// `openfunction.io/managed` / `openfunction.io/proxy: <serving>`,
/// controlled by the Serving, which carries `openfunction.io/function`).
fn openfunction_proxy(serving: &str) -> (String, Value, String, Value) {
    let serving_path = format!(
        "/apis/core.openfunction.io/{}/namespaces/{NS}/servings/{serving}",
        VERSION.as_str()
    );
    let serving_obj = json!({
        "apiVersion": VERSION.api_version(), "kind": "Serving",
        "metadata": {"name": serving, "namespace": NS, "uid": "serving-uid",
            "labels": {"openfunction.io/function": CRON}}
    });
    let name = format!("{serving}-proxy-deployment-v100-x7k2p");
    let deploy = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS,
            "labels": {"openfunction.io/managed": "true", "openfunction.io/proxy": serving},
            "ownerReferences": [{"apiVersion": VERSION.api_version(), "kind": "Serving",
                "name": serving, "uid": "serving-uid", "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"selector": {"matchLabels": {"openfunction.io/proxy": serving}},
            "template": {"metadata": {"labels": {"openfunction.io/proxy": serving}},
                "spec": {"containers": [{"name": "dapr-proxy", "image": "openfunction/dapr-proxy:v0.1.0"}]}}}
    });
    (serving_path, serving_obj, name, deploy)
}

#[tokio::test]
async fn openfunctions_proxy_replaces_ours_and_ours_comes_back() {
    let mut h = Harness::new();
    let f = cron();
    h.reconcile_ok(&f).await;
    h.sync();
    let ours = uid_of(&h.fake, &deploy_path(&proxy_name()));

    // OpenFunction's controller starts its own proxy for the Function
    let (serving_path, serving, upstream, deploy) = openfunction_proxy("serving-4xk9q");
    h.fake.put(&serving_path, serving);
    h.fake.put(&deploy_path(&upstream), deploy);
    h.sync();
    let calls = h.reconcile_ok(&f).await;
    assert_calls(
        &calls,
        vec![
            event(
                "ProxyDeferred",
                "Normal",
                Some(("Deployment", upstream.clone())),
                "OpenFunction's controller runs the Dapr proxy of this function (Deployment serving-4xk9q-proxy-deployment-v100-x7k2p)",
            ),
            delete(deploy_path(&proxy_name()), ours),
            event(
                "ProxyRemoved",
                "Normal",
                Some(("Deployment", proxy_name())),
                "Deleted the Dapr proxy Deployment",
            ),
        ],
    );
    assert!(h.fake.get(&deploy_path(&proxy_name())).is_none());
    assert!(h.fake.get(&deploy_path(&upstream)).is_some(), "theirs untouched");
    // nothing more while it runs (the Event is not repeated)
    h.sync();
    assert_calls(&h.reconcile_ok(&f).await, vec![]);

    // OpenFunction's proxy goes away: ours comes back
    h.fake.remove(&deploy_path(&upstream));
    h.sync();
    let calls = h.reconcile_ok(&f).await;
    assert_calls(&calls, creation_calls(&f).into_iter().take(3).collect());
}

#[tokio::test]
async fn a_proxy_of_another_functions_serving_changes_nothing() {
    let mut h = Harness::new();
    let f = cron();
    let (serving_path, mut serving, upstream, deploy) = openfunction_proxy("serving-other");
    serving["metadata"]["labels"]["openfunction.io/function"] = json!("another-function");
    h.fake.put(&serving_path, serving);
    h.fake.put(&deploy_path(&upstream), deploy);
    h.sync();
    assert_calls(&h.reconcile_ok(&f).await, creation_calls(&f));
}
