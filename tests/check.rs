//! `openfunction-dapr check` against the fake API server: a healthy
//! installation, then each section broken in turn, asserted on the JSON
//! report field by field; and the caBundle check over real TLS.

mod common;

use std::time::{Duration, SystemTime};

use base64::Engine;
use common::fake_api::Call;
use common::fake_api::{FakeApi, http_client};
use common::harness::v1beta2_document;
use common::webhook::tls_presenting;
use openfunction_dapr::check::{self, CheckOptions, Report};
use openfunction_dapr::model::v1beta2::{ApiVersion, read_function};
use openfunction_dapr::model::workload::Kind;
use openfunction_dapr::ops::certs::{self, generate_ca, sign_leaf};
use openfunction_dapr::webhook::admission::mutate_workload;
use serde_json::{Value, json};

const INSTALL_NS: &str = "openfunction-dapr";
const CONFIG: &str = "00-openfunction-dapr";
const FN_NS: &str = "apps";

fn options() -> CheckOptions {
    CheckOptions {
        namespace: None,
        webhook_config: CONFIG.into(),
        cert_secret: certs::DEFAULT_SECRET_NAME.into(),
        lease_namespace: INSTALL_NS.into(),
        lease_name: "openfunction-dapr-controller".into(),
        install_namespace: INSTALL_NS.into(),
        cluster_domain: "cluster.local".into(),
        grpc_endpoint_form: Default::default(),
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn micro_time(t: SystemTime) -> Value {
    let ts = k8s_openapi::jiff::Timestamp::try_from(t).unwrap();
    serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        ts,
    ))
    .unwrap()
}

fn crd(name: &str, versions: &[(&str, bool)], conversion: Option<Value>) -> Value {
    let mut c = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {
            "group": "core.openfunction.io",
            "names": {"kind": "X", "plural": name.split('.').next().unwrap()},
            "scope": "Namespaced",
            "versions": versions.iter().map(|(v, storage)| json!({
                "name": v, "served": true, "storage": storage,
                "schema": {"openAPIV3Schema": {"type": "object"}}
            })).collect::<Vec<_>>(),
        }
    });
    if let Some(conv) = conversion {
        c["spec"]["conversion"] = conv;
    }
    c
}

fn crd_path(name: &str) -> String {
    format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
}

fn config_path(name: &str) -> String {
    format!("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}")
}

fn lease_path() -> String {
    format!(
        "/apis/coordination.k8s.io/v1/namespaces/{INSTALL_NS}/leases/openfunction-dapr-controller"
    )
}

fn deploy_path(ns: &str, name: &str) -> String {
    format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}")
}

/// The shipped configuration with `ca` as every caBundle.
fn shipped_config(ca_pem: &str) -> Value {
    let mut c = serde_json::to_value(check::shipped_config().unwrap()).unwrap();
    for w in c["webhooks"].as_array_mut().unwrap() {
        w["clientConfig"]["caBundle"] = json!(b64(ca_pem));
    }
    c
}

fn function() -> Value {
    json!({
        "apiVersion": "core.openfunction.io/v1beta1",
        "kind": "Function",
        "metadata": {"name": "cron", "namespace": FN_NS, "uid": "f-1"},
        "spec": {
            "version": "v1",
            "serving": {
                "runtime": "async",
                "inputs": [{"name": "cron", "component": "cron"}],
                "bindings": {"cron": {"type": "bindings.cron", "version": "v1"}}
            }
        }
    })
}

fn ready_deployment(ns: &str, name: &str, labels: Value, ready: i32) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "uid": format!("d-{ns}-{name}")},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"x": "y"}},
                 "template": {"metadata": {"labels": {"x": "y"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        "status": {"readyReplicas": ready}
    })
}

fn function_workload(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": FN_NS, "uid": format!("w-{name}"),
                     "labels": {"openfunction.io/function": "cron"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "function", "image": "fn:1"}]}}}
    })
}

/// `object` as the webhook admits it now.
fn admitted(object: &Value, kind: Kind) -> Value {
    admitted_by(&function(), object, kind)
}

/// `object` as the webhook admits it for the Function document `function`
/// (of either version, read as the webhook reads it).
fn admitted_by(function: &Value, object: &Value, kind: Kind) -> Value {
    let f = read_function(function.clone()).unwrap();
    let m = mutate_workload(object, kind, FN_NS, &f, "cluster.local", Default::default()).unwrap();
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::to_value(&m.patch).unwrap()).unwrap();
    let mut out = object.clone();
    json_patch::patch(&mut out, &patch).unwrap();
    out
}

struct Cluster {
    fake: FakeApi,
    client: kube::Client,
    ca: (String, String),
}

/// A healthy installation: every check passes.
fn healthy() -> Cluster {
    let (fake, client) = FakeApi::start();
    let ca = generate_ca().unwrap();
    let names =
        openfunction_dapr::ops::tls::service_dns_names("openfunction-dapr-webhook", INSTALL_NS);
    let (leaf, key) = sign_leaf(&ca.0, &ca.1, &names).unwrap();
    fake.put(
        "/version",
        json!({"major": "1", "minor": "33", "gitVersion": "v1.33.1"}),
    );
    fake.put(
        &crd_path("functions.core.openfunction.io"),
        crd("functions.core.openfunction.io", &[("v1beta1", true)], None),
    );
    fake.put(&config_path(CONFIG), shipped_config(&ca.0));
    fake.put(
        &config_path("dapr-sidecar-injector"),
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
               "metadata": {"name": "dapr-sidecar-injector"}, "webhooks": []}),
    );
    fake.put(
        &format!(
            "/api/v1/namespaces/{INSTALL_NS}/secrets/{}",
            certs::DEFAULT_SECRET_NAME
        ),
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": certs::DEFAULT_SECRET_NAME, "namespace": INSTALL_NS},
               "data": {"tls.crt": b64(&leaf), "tls.key": b64(&key), "ca.crt": b64(&ca.0)}}),
    );
    fake.put(
        &lease_path(),
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "openfunction-dapr-controller", "namespace": INSTALL_NS},
               "spec": {"holderIdentity": "openfunction-dapr-0", "leaseDurationSeconds": 15,
                        "renewTime": micro_time(SystemTime::now())}}),
    );
    fake.put(
        &deploy_path("dapr-system", "dapr-operator"),
        ready_deployment(
            "dapr-system",
            "dapr-operator",
            json!({"app": "dapr-operator"}),
            1,
        ),
    );
    fake.put(
        &format!("/apis/core.openfunction.io/v1beta1/namespaces/{FN_NS}/functions/cron"),
        function(),
    );
    fake.put(
        &deploy_path(FN_NS, "cron-dapr-proxy"),
        ready_deployment(
            FN_NS,
            "cron-dapr-proxy",
            json!({
            "openfunction.io/proxy": "cron",
            "app.kubernetes.io/managed-by": "openfunction-dapr"}),
            1,
        ),
    );
    fake.put(
        &deploy_path(FN_NS, "cron-v1"),
        admitted(&function_workload("cron-v1"), Kind::Deployment),
    );
    Cluster { fake, client, ca }
}

async fn run(c: &Cluster) -> Report {
    check::run(&c.client, &options()).await
}

fn finding<'a>(report: &'a Report, check: &str) -> Vec<&'a check::Finding> {
    report
        .findings
        .iter()
        .filter(|f| f.check == check)
        .collect()
}

/// The one finding of `check`, as JSON.
fn one(report: &Report, check: &str) -> Value {
    let found = finding(report, check);
    assert_eq!(found.len(), 1, "{check}: {:#?}", report.findings);
    serde_json::to_value(found[0]).unwrap()
}

#[tokio::test]
async fn a_healthy_installation_passes_every_check() {
    let c = healthy();
    let report = run(&c).await;
    assert_eq!(report.failures(), 0, "{}", report.to_text());
    assert_eq!(report.count(check::Status::Warn), 0, "{}", report.to_text());
    assert_eq!(report.exit_code(), 0);
    assert_eq!(
        one(&report, "api.server"),
        json!({"section": "api", "check": "api.server", "status": "ok", "message": "Kubernetes v1.33.1"})
    );
    assert_eq!(
        one(&report, "api.function-crd")["message"],
        "the Function CRD serves v1beta1; openfunction-dapr reads v1beta1"
    );
    assert_eq!(one(&report, "webhook.order")["status"], "ok");
    let ca = finding(&report, "webhook.ca-bundle");
    assert_eq!(ca.len(), 5);
    for f in ca {
        assert_eq!(f.status, check::Status::Ok);
        assert!(
            f.message
                .contains("Secret openfunction-dapr/openfunction-dapr-tls"),
            "{}",
            f.message
        );
    }
    assert_eq!(finding(&report, "webhook.settings").len(), 5);
    let lease = one(&report, "controller.lease");
    assert_eq!(lease["status"], "ok");
    assert!(lease["message"].as_str().unwrap().starts_with(
        "Lease openfunction-dapr/openfunction-dapr-controller held by openfunction-dapr-0, renewed "
    ));
    assert_eq!(one(&report, "dapr.injector")["status"], "ok");
    assert_eq!(
        one(&report, "dapr.operator")["message"],
        "the Dapr operator dapr-system/dapr-operator is ready (1/1)"
    );
    assert_eq!(
        one(&report, "dapr.openfunction")["message"],
        "OpenFunction's controller is not installed: openfunction-dapr keeps the proxies"
    );
    assert_eq!(
        one(&report, "functions.mode")["message"],
        "Function apps/cron: standalone (app id cron-apps)"
    );
    assert_eq!(
        one(&report, "functions.proxy")["message"],
        "Function apps/cron: proxy cron-dapr-proxy ready (1/1)"
    );
    assert_eq!(
        one(&report, "functions.workloads")["message"],
        "1 function workload in apps as the webhook would produce it now"
    );
    assert!(finding(&report, "functions.workload").is_empty());
    assert!(report.to_text().ends_with("0 warnings, 0 failed\n"));
    // Reads only.
    assert!(c.fake.calls().iter().all(|call| call.method == "GET"));
}

#[tokio::test]
async fn api_section_missing_crd_and_conversion_dependency() {
    let c = healthy();
    c.fake.remove(&crd_path("functions.core.openfunction.io"));
    let report = run(&c).await;
    assert_eq!(
        one(&report, "api.function-crd"),
        json!({"section": "api", "check": "api.function-crd", "status": "fail",
               "message": "the Function CRD (functions.core.openfunction.io) is not installed",
               "fix": "install OpenFunction, or the CRD shipped here: kubectl apply -k manifests/"})
    );
    assert_eq!(report.exit_code(), 1);

    // OpenFunction 1.x: v1beta2 stored, both served: v1beta2 is read, no conversion.
    c.fake.serve_openfunction_versions(&["v1beta1", "v1beta2"]);
    let conv = json!({"strategy": "Webhook", "webhook": {"conversionReviewVersions": ["v1"],
        "clientConfig": {"service": {"name": "openfunction-webhook-service", "namespace": "openfunction", "path": "/convert"}}}});
    c.fake.put(
        &crd_path("functions.core.openfunction.io"),
        crd(
            "functions.core.openfunction.io",
            &[("v1beta1", false), ("v1beta2", true)],
            Some(conv.clone()),
        ),
    );
    let report = run(&c).await;
    assert_eq!(
        one(&report, "api.function-crd")["message"],
        "the Function CRD serves v1beta1, v1beta2; openfunction-dapr reads v1beta2"
    );
    assert!(finding(&report, "api.conversion").is_empty());

    // Stored as v1beta2 but only v1beta1 served: every read converts.
    c.fake.serve_openfunction_versions(&["v1beta1"]);
    c.fake.put(
        &crd_path("functions.core.openfunction.io"),
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
               "metadata": {"name": "functions.core.openfunction.io"},
               "spec": {"group": "core.openfunction.io", "names": {"kind": "Function", "plural": "functions"},
                        "scope": "Namespaced", "conversion": conv,
                        "versions": [
                            {"name": "v1beta1", "served": true, "storage": false},
                            {"name": "v1beta2", "served": false, "storage": true}]}}),
    );
    let report = run(&c).await;
    assert_eq!(
        one(&report, "api.conversion"),
        json!({"section": "api", "check": "api.conversion", "status": "warn",
               "message": "reading Function v1beta1 (stored as v1beta2) goes through Service openfunction/openfunction-webhook-service: while it is down, look-ups fail",
               "fix": "keep Service openfunction/openfunction-webhook-service available, or serve the storage version to openfunction-dapr"})
    );
}

#[tokio::test]
async fn webhook_section_missing_configuration() {
    let c = healthy();
    c.fake.remove(&config_path(CONFIG));
    let report = run(&c).await;
    assert_eq!(
        one(&report, "webhook.configuration"),
        json!({"section": "webhook", "check": "webhook.configuration", "status": "fail",
               "message": "MutatingWebhookConfiguration 00-openfunction-dapr not found",
               "fix": "kubectl apply -k manifests/ (or name yours with --webhook-config NAME)"})
    );
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test]
async fn webhook_section_stale_ca_bundle_order_and_settings() {
    let c = healthy();
    let (other_ca, _) = generate_ca().unwrap();
    c.fake.edit(&config_path(CONFIG), |cfg| {
        cfg["webhooks"][0]["clientConfig"]["caBundle"] = json!(b64(&other_ca));
        cfg["webhooks"][1]["failurePolicy"] = json!("Ignore");
    });
    let report = run(&c).await;
    let ca = finding(&report, "webhook.ca-bundle");
    let first = serde_json::to_value(ca[0]).unwrap();
    assert_eq!(first["status"], "fail");
    assert_eq!(
        first["message"],
        "function-deployments.openfunction-dapr.openfunction.io: the caBundle does not verify the serving certificate (signed by another CA) (Secret openfunction-dapr/openfunction-dapr-tls)"
    );
    assert!(
        first["fix"].as_str().unwrap().starts_with(
            "kubectl -n openfunction-dapr rollout restart deployment/openfunction-dapr"
        )
    );
    assert_eq!(ca[1].status, check::Status::Ok);
    let settings = finding(&report, "webhook.settings");
    assert_eq!(settings[1].status, check::Status::Warn);
    assert_eq!(
        settings[1].message,
        "serving-deployments.openfunction-dapr.openfunction.io: failurePolicy Ignore (shipped Fail)"
    );

    // A configuration named after the Dapr injector runs after it.
    let cfg = c.fake.get(&config_path(CONFIG)).unwrap();
    c.fake.remove(&config_path(CONFIG));
    let mut renamed = cfg.clone();
    renamed["metadata"]["name"] = json!("openfunction-dapr");
    c.fake.put(&config_path("openfunction-dapr"), renamed);
    let report = check::run(
        &c.client,
        &CheckOptions {
            webhook_config: "openfunction-dapr".into(),
            ..options()
        },
    )
    .await;
    assert_eq!(
        one(&report, "webhook.order"),
        json!({"section": "webhook", "check": "webhook.order", "status": "fail",
               "message": "openfunction-dapr sorts after dapr-sidecar-injector: the Dapr injector decides before dapr.io/enabled is written",
               "fix": "rename the configuration so it sorts first (the shipped name is 00-openfunction-dapr): kubectl apply -k manifests/"})
    );
}

#[tokio::test]
async fn controller_section_missing_and_stale_lease() {
    let c = healthy();
    c.fake.edit(&lease_path(), |l| {
        l["spec"]["renewTime"] = micro_time(SystemTime::now() - Duration::from_secs(300));
    });
    let report = run(&c).await;
    let lease = one(&report, "controller.lease");
    assert_eq!(lease["status"], "fail");
    assert!(
        lease["message"].as_str().unwrap().starts_with(
            "Lease openfunction-dapr/openfunction-dapr-controller held by openfunction-dapr-0 but not renewed for 30"
        ),
        "{lease}"
    );
    assert_eq!(
        lease["fix"],
        "kubectl -n openfunction-dapr logs deployment/openfunction-dapr | grep -i lease"
    );

    c.fake.remove(&lease_path());
    let report = run(&c).await;
    assert_eq!(
        one(&report, "controller.lease")["message"],
        "Lease openfunction-dapr/openfunction-dapr-controller not found: no replica has ever led, so no Function is reconciled"
    );
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test]
async fn dapr_section_missing_injector_and_operator_and_openfunction_present() {
    let c = healthy();
    c.fake.remove(&config_path("dapr-sidecar-injector"));
    c.fake.remove(&deploy_path("dapr-system", "dapr-operator"));
    c.fake.put(
        &deploy_path("openfunction", "openfunction-controller-manager"),
        ready_deployment(
            "openfunction",
            "openfunction-controller-manager",
            json!({"app.kubernetes.io/name": "openfunction-controller-manager"}),
            1,
        ),
    );
    let report = run(&c).await;
    assert_eq!(
        one(&report, "dapr.injector"),
        json!({"section": "dapr", "check": "dapr.injector", "status": "fail",
               "message": "no dapr-sidecar-injector configuration: proxies and sidecar functions get no daprd",
               "fix": "install Dapr on the cluster: dapr init -k (or its Helm chart)"})
    );
    assert_eq!(
        one(&report, "dapr.operator")["message"],
        "the Dapr operator is not running: standalone mode needs it for the <app-id>-dapr Service"
    );
    assert_eq!(
        one(&report, "dapr.openfunction")["message"],
        "OpenFunction's controller runs (openfunction/openfunction-controller-manager): where it runs a proxy for a Function, openfunction-dapr runs none"
    );
    // Without the injector, ordering has nothing to compare with.
    assert!(finding(&report, "webhook.order").is_empty());
}

#[tokio::test]
async fn functions_section_proxy_states() {
    let c = healthy();
    c.fake.edit(&deploy_path(FN_NS, "cron-dapr-proxy"), |d| {
        d["status"]["readyReplicas"] = json!(0)
    });
    let report = run(&c).await;
    assert_eq!(
        one(&report, "functions.proxy"),
        json!({"section": "functions", "check": "functions.proxy", "status": "fail",
               "message": "Function apps/cron: proxy cron-dapr-proxy has no ready replica (0/1)",
               "fix": "kubectl -n apps describe deployment/cron-dapr-proxy"})
    );

    // OpenFunction's own proxy, owned by the Function's Serving, beside ours.
    c.fake.put(
        &format!("/apis/core.openfunction.io/v1beta1/namespaces/{FN_NS}/servings/cron-serving-x"),
        json!({"apiVersion": "core.openfunction.io/v1beta1", "kind": "Serving",
               "metadata": {"name": "cron-serving-x", "namespace": FN_NS, "uid": "s-1",
                            "labels": {"openfunction.io/function": "cron"}}, "spec": {}}),
    );
    c.fake.put(
        &crd_path("servings.core.openfunction.io"),
        crd("servings.core.openfunction.io", &[("v1beta1", true)], None),
    );
    let mut theirs = ready_deployment(
        FN_NS,
        "cron-serving-x-proxy-deployment-v1-abcde",
        json!({"openfunction.io/proxy": "cron-serving-x", "openfunction.io/managed": "true"}),
        1,
    );
    theirs["metadata"]["ownerReferences"] = json!([{"apiVersion": "core.openfunction.io/v1beta1",
        "kind": "Serving", "name": "cron-serving-x", "uid": "s-1", "controller": true}]);
    c.fake.put(
        &deploy_path(FN_NS, "cron-serving-x-proxy-deployment-v1-abcde"),
        theirs,
    );
    let report = run(&c).await;
    let proxy = one(&report, "functions.proxy");
    assert_eq!(proxy["status"], "fail");
    assert_eq!(
        proxy["message"],
        "Function apps/cron: two proxies, cron-dapr-proxy and OpenFunction's cron-serving-x-proxy-deployment-v1-abcde: every event is consumed twice"
    );

    c.fake.remove(&deploy_path(FN_NS, "cron-dapr-proxy"));
    let report = run(&c).await;
    assert_eq!(
        one(&report, "functions.proxy"),
        json!({"section": "functions", "check": "functions.proxy", "status": "ok",
               "message": "Function apps/cron: OpenFunction's proxy cron-serving-x-proxy-deployment-v1-abcde is in charge"})
    );

    c.fake.remove(&deploy_path(
        FN_NS,
        "cron-serving-x-proxy-deployment-v1-abcde",
    ));
    let report = run(&c).await;
    assert_eq!(
        one(&report, "functions.proxy"),
        json!({"section": "functions", "check": "functions.proxy", "status": "fail",
               "message": "Function apps/cron: standalone, but no proxy Deployment cron-dapr-proxy",
               "fix": "see the Controller section; kubectl -n apps describe function cron (its Events)"})
    );
}

/// The cron Function as OpenFunction 1.x holds it: [`function`] converted
/// to v1beta2 as v1.2.0 converts it, plus a state store, which only v1beta2
/// has.
fn function_v1beta2() -> Value {
    let mut f = v1beta2_document(&function());
    f["spec"]["serving"]["states"] =
        json!({"store": {"spec": {"type": "state.redis", "version": "v1"}}});
    f
}

fn function_in(version: ApiVersion) -> Value {
    match version {
        ApiVersion::V1beta1 => function(),
        ApiVersion::V1beta2 => function_v1beta2(),
    }
}

fn other(version: ApiVersion) -> ApiVersion {
    match version {
        ApiVersion::V1beta1 => ApiVersion::V1beta2,
        ApiVersion::V1beta2 => ApiVersion::V1beta1,
    }
}

fn openfunction_path(version: ApiVersion, plural: &str, name: &str) -> String {
    format!(
        "/apis/{}/namespaces/{FN_NS}/{plural}/{name}",
        version.api_version()
    )
}

/// [`healthy`], with Functions and Servings served in `version`: v1beta1
/// alone (OpenFunction 0.8), or v1beta2 as OpenFunction 1.x serves it (v1beta1
/// too, v1beta2 stored, a conversion webhook). The fake converts nothing:
/// under v1beta1 it holds what a conversion would answer, which must never
/// be read.
fn healthy_in(version: ApiVersion) -> Cluster {
    let c = healthy();
    let conv = json!({"strategy": "Webhook", "webhook": {"conversionReviewVersions": ["v1"],
        "clientConfig": {"service": {"name": "openfunction-webhook-service", "namespace": "openfunction", "path": "/convert"}}}});
    for name in [
        "functions.core.openfunction.io",
        "servings.core.openfunction.io",
    ] {
        let c_ = match version {
            ApiVersion::V1beta1 => crd(name, &[("v1beta1", true)], None),
            ApiVersion::V1beta2 => crd(
                name,
                &[("v1beta1", false), ("v1beta2", true)],
                Some(conv.clone()),
            ),
        };
        c.fake.put(&crd_path(name), c_);
    }
    if version == ApiVersion::V1beta2 {
        c.fake.serve_openfunction_versions(&["v1beta1", "v1beta2"]);
        c.fake.put(
            &openfunction_path(version, "functions", "cron"),
            function_v1beta2(),
        );
        c.fake.put(
            &deploy_path(FN_NS, "cron-v1"),
            admitted_by(
                &function_v1beta2(),
                &function_workload("cron-v1"),
                Kind::Deployment,
            ),
        );
    }
    c
}

/// Every request for `core.openfunction.io` objects is in `version`
/// (API discovery aside): nothing that needs a conversion. Returns the
/// paths of the lists.
fn assert_only_version_read(calls: &[Call], version: ApiVersion) -> Vec<String> {
    let mut lists = Vec::new();
    for c in calls {
        assert_eq!(c.method, "GET", "{c:?}");
        if let Some(rest) = c.path.strip_prefix("/apis/core.openfunction.io/") {
            assert!(
                !rest.contains('/') || rest.starts_with(&format!("{version}/")),
                "{} {} reads another version than {version}",
                c.method,
                c.path
            );
            if rest.contains('/') {
                lists.push(c.path.clone());
            }
        }
    }
    lists
}

/// The `name` env variable of the first container of a Deployment.
fn env_of(d: &Value, name: &str) -> Option<String> {
    d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(str::to_owned))
}

/// Functions and Servings are read in the version the product uses, and
/// workloads are compared with what the webhook produces for that version:
/// a workload admitted for the other version's reading is stale.
async fn workloads_compared_in(version: ApiVersion) {
    let c = healthy_in(version);
    let v = version.as_str();
    // Admitted when the Function was read in the other version (before an
    // upgrade to OpenFunction 1.x, or by a webhook reading through the
    // conversion): the contexts differ.
    let stale = admitted_by(
        &function_in(other(version)),
        &function_workload("cron-v2"),
        Kind::Deployment,
    );
    c.fake.put(&deploy_path(FN_NS, "cron-v2"), stale.clone());
    let wired = c.fake.get(&deploy_path(FN_NS, "cron-v1")).unwrap();
    let v2_context = env_of(&wired, "FUNC_CONTEXT_V1BETA2");
    assert_eq!(v2_context.is_some(), version == ApiVersion::V1beta2);
    if let Some(ctx) = v2_context {
        assert!(ctx.contains("state.redis"), "{ctx}");
        assert_eq!(env_of(&stale, "FUNC_CONTEXT_V1BETA2"), None);
    }

    let report = run(&c).await;
    let served = match version {
        ApiVersion::V1beta1 => "v1beta1",
        ApiVersion::V1beta2 => "v1beta1, v1beta2",
    };
    assert_eq!(
        one(&report, "api.function-crd"),
        json!({"section": "api", "check": "api.function-crd", "status": "ok",
               "message": format!("the Function CRD serves {served}; openfunction-dapr reads {v}")})
    );
    assert_eq!(
        one(&report, "api.serving-crd"),
        json!({"section": "api", "check": "api.serving-crd", "status": "ok",
               "message": format!("the Serving CRD serves {served}; openfunction-dapr reads {v}")})
    );
    assert!(finding(&report, "api.conversion").is_empty());
    assert_eq!(
        one(&report, "functions.mode"),
        json!({"section": "functions", "check": "functions.mode", "status": "ok",
               "message": "Function apps/cron: standalone (app id cron-apps)"})
    );
    assert_eq!(
        one(&report, "functions.workloads"),
        json!({"section": "functions", "check": "functions.workloads", "status": "ok",
               "message": "1 function workload in apps as the webhook would produce it now"})
    );
    let changes = match version {
        // the wired label, and FUNC_CONTEXT_V1BETA2 added
        ApiVersion::V1beta2 => {
            "2 changes: /spec/template/metadata/labels/openfunction.io~1dapr-wired, /spec/template/spec/containers/0/env/-"
        }
        // the wired label only (a FUNC_CONTEXT_V1BETA2 there is not the
        // webhook's to remove)
        ApiVersion::V1beta1 => {
            "1 change: /spec/template/metadata/labels/openfunction.io~1dapr-wired"
        }
    };
    assert_eq!(
        one(&report, "functions.workload"),
        json!({"section": "functions", "check": "functions.workload", "status": "fail",
               "message": format!("deployment apps/cron-v2 differs from what the webhook produces now ({changes}): created while the webhook was away, or not rolled after a mode change"),
               "fix": "kubectl rollout restart deployment/cron-v2 -n apps"})
    );
    assert_eq!(report.exit_code(), 1);
    let lists = assert_only_version_read(&c.fake.calls(), version);
    assert_eq!(
        lists,
        [
            format!("/apis/core.openfunction.io/{v}/functions"),
            format!("/apis/core.openfunction.io/{v}/servings"),
        ]
    );

    // OpenFunction's own proxy, controlled by a Serving in `version`, and
    // none of ours: OpenFunction's is in charge (as the controller decides).
    c.fake.take_calls();
    c.fake.remove(&deploy_path(FN_NS, "cron-v2"));
    c.fake.remove(&deploy_path(FN_NS, "cron-dapr-proxy"));
    c.fake.put(
        &openfunction_path(version, "servings", "cron-serving-x"),
        json!({"apiVersion": version.api_version(), "kind": "Serving",
               "metadata": {"name": "cron-serving-x", "namespace": FN_NS, "uid": "s-1",
                            "labels": {"openfunction.io/function": "cron"}}, "spec": {}}),
    );
    let mut theirs = ready_deployment(
        FN_NS,
        "cron-serving-x-proxy-deployment-v1-abcde",
        json!({"openfunction.io/proxy": "cron-serving-x", "openfunction.io/managed": "true"}),
        1,
    );
    theirs["metadata"]["ownerReferences"] = json!([{"apiVersion": version.api_version(),
        "kind": "Serving", "name": "cron-serving-x", "uid": "s-1", "controller": true}]);
    c.fake.put(
        &deploy_path(FN_NS, "cron-serving-x-proxy-deployment-v1-abcde"),
        theirs,
    );
    let report = run(&c).await;
    assert_eq!(
        one(&report, "functions.proxy"),
        json!({"section": "functions", "check": "functions.proxy", "status": "ok",
               "message": "Function apps/cron: OpenFunction's proxy cron-serving-x-proxy-deployment-v1-abcde is in charge"})
    );
    assert_eq!(report.failures(), 0, "{}", report.to_text());
    assert_only_version_read(&c.fake.calls(), version);
}

#[tokio::test]
async fn functions_read_in_v1beta1_where_only_v1beta1_is_served() {
    workloads_compared_in(ApiVersion::V1beta1).await;
}

#[tokio::test]
async fn functions_read_in_v1beta2_where_served_never_through_the_conversion() {
    workloads_compared_in(ApiVersion::V1beta2).await;
}

#[tokio::test]
async fn functions_section_names_workloads_the_webhook_never_saw() {
    let c = healthy();
    let (other_ca, _) = generate_ca().unwrap();
    c.fake.edit(&config_path(CONFIG), |cfg| {
        cfg["webhooks"][0]["clientConfig"]["caBundle"] = json!(b64(&other_ca));
    });
    // Created while the webhook was away: not patched.
    c.fake
        .put(&deploy_path(FN_NS, "cron-v2"), function_workload("cron-v2"));
    // A bare pod, not patched; and a pod of the wired Deployment (skipped:
    // its Deployment is compared).
    c.fake.put(
        &format!("/api/v1/namespaces/{FN_NS}/pods/debug"),
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "debug", "namespace": FN_NS, "uid": "p-1",
                            "labels": {"openfunction.io/function": "cron"}},
               "spec": {"containers": [{"name": "function", "image": "fn:1"}]}}),
    );
    c.fake.put(
        &format!("/api/v1/namespaces/{FN_NS}/pods/cron-v1-5d9f-abcde"),
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "cron-v1-5d9f-abcde", "namespace": FN_NS, "uid": "p-2",
                            "labels": {"openfunction.io/function": "cron", "pod-template-hash": "5d9f"},
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                "name": "cron-v1-5d9f", "uid": "rs-1", "controller": true}]},
               "spec": {"containers": [{"name": "function", "image": "fn:1"}]}}),
    );
    // A workload naming a Function that does not exist.
    let mut orphan = function_workload("ghost");
    orphan["metadata"]["labels"]["openfunction.io/function"] = json!("ghost");
    c.fake.put(&deploy_path(FN_NS, "ghost"), orphan);
    let report = run(&c).await;
    let workloads = finding(&report, "functions.workload");
    let messages: Vec<(&str, &str, Option<&str>)> = workloads
        .iter()
        .map(|f| {
            (
                f.message.split(" (").next().unwrap(),
                match f.status {
                    check::Status::Ok => "ok",
                    check::Status::Warn => "warn",
                    check::Status::Fail => "fail",
                },
                f.fix.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        messages,
        vec![
            (
                "deployment apps/cron-v2 differs from what the webhook produces now",
                "fail",
                Some("kubectl rollout restart deployment/cron-v2 -n apps")
            ),
            (
                "deployment apps/ghost: Function apps/ghost not found, so the webhook leaves it alone",
                "warn",
                Some("create the Function, or remove the openfunction.io/function label")
            ),
            (
                "pod apps/debug differs from what the webhook produces now",
                "fail",
                Some("kubectl delete pod debug -n apps (and create it again)")
            ),
        ]
    );
    assert!(
        workloads[0].message.contains("/spec/template/metadata"),
        "{}",
        workloads[0].message
    );
    assert_eq!(
        one(&report, "functions.workloads")["message"],
        "1 function workload in apps as the webhook would produce it now"
    );
}

#[tokio::test]
async fn limited_to_a_namespace() {
    let c = healthy();
    let report = check::run(
        &c.client,
        &CheckOptions {
            namespace: Some("elsewhere".into()),
            ..options()
        },
    )
    .await;
    assert_eq!(
        one(&report, "functions.none")["message"],
        "no Functions in namespace elsewhere"
    );
    assert!(finding(&report, "functions.mode").is_empty());
}

#[tokio::test]
async fn an_unreachable_cluster_exits_2() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let report = check::run(&http_client(&url), &options()).await;
    assert_eq!(report.exit_code(), 2);
    assert!(report.findings.is_empty());
    assert!(report.to_text().starts_with("✗ cannot reach the cluster: "));
    let v: Value = serde_json::from_str(&report.to_json()).unwrap();
    assert!(v["unreachable"].is_string());
}

/// A leaf for 127.0.0.1 signed by `ca`, valid until `not_after`.
fn leaf_until(ca: &(String, String), not_after: SystemTime) -> (String, String) {
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&ca.0, rcgen::KeyPair::from_pem(&ca.1).unwrap()).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params.not_before = (not_after.min(SystemTime::now()) - Duration::from_secs(3600)).into();
    params.not_after = not_after.into();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A configuration whose one entry calls `https://127.0.0.1:<port>/mutate`.
fn url_config(port: u16, ca_pem: &str) -> Value {
    let mut c = shipped_config(ca_pem);
    let first = c["webhooks"][0].clone();
    let mut entry = first;
    entry["clientConfig"] =
        json!({"url": format!("https://127.0.0.1:{port}/mutate"), "caBundle": b64(ca_pem)});
    c["webhooks"] = json!([entry]);
    c
}

#[tokio::test]
async fn ca_bundle_is_checked_against_the_certificate_really_served() {
    let c = healthy();
    let now = SystemTime::now();
    let good = leaf_until(&c.ca, now + Duration::from_secs(365 * 86_400));
    let port = tls_presenting(&good.0, &good.1).await;

    c.fake.put(&config_path(CONFIG), url_config(port, &c.ca.0));
    let report = run(&c).await;
    let f = one(&report, "webhook.ca-bundle");
    assert_eq!(f["status"], "ok", "{f}");
    assert_eq!(
        f["message"]
            .as_str()
            .unwrap()
            .split(", valid")
            .next()
            .unwrap(),
        format!(
            "function-deployments.openfunction-dapr.openfunction.io: the caBundle verifies the certificate (served at 127.0.0.1:{port})"
        )
    );

    // Another CA in the bundle.
    let (other, _) = generate_ca().unwrap();
    c.fake.put(&config_path(CONFIG), url_config(port, &other));
    let f = one(&run(&c).await, "webhook.ca-bundle");
    assert_eq!(f["status"], "fail");
    assert_eq!(
        f["message"],
        format!(
            "function-deployments.openfunction-dapr.openfunction.io: the caBundle does not verify the serving certificate (signed by another CA) (served at 127.0.0.1:{port})"
        )
    );

    // An expired certificate, from the right CA.
    let expired = leaf_until(&c.ca, now - Duration::from_secs(86_400));
    let port = tls_presenting(&expired.0, &expired.1).await;
    c.fake.put(&config_path(CONFIG), url_config(port, &c.ca.0));
    let f = one(&run(&c).await, "webhook.ca-bundle");
    assert_eq!(f["status"], "fail");
    assert_eq!(
        f["message"],
        format!(
            "function-deployments.openfunction-dapr.openfunction.io: the serving certificate has expired (served at 127.0.0.1:{port})"
        )
    );
    assert!(
        f["fix"].as_str().unwrap().starts_with(
            "renew it: kubectl -n openfunction-dapr delete secret openfunction-dapr-tls"
        )
    );

    // About to expire: a warning.
    let soon = leaf_until(&c.ca, now + Duration::from_secs(5 * 86_400));
    let port = tls_presenting(&soon.0, &soon.1).await;
    c.fake.put(&config_path(CONFIG), url_config(port, &c.ca.0));
    let f = one(&run(&c).await, "webhook.ca-bundle");
    assert_eq!(f["status"], "warn");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .ends_with("which expires in 4 days"),
        "{f}"
    );
}
