//! The checks behind the fuzz targets, shared with the regression test that
//! replays every saved input (`tests/hardening_regressions.rs` includes this
//! file as a module). Each check panics on a finding.
//!
//! - [`review`]: any bytes as an AdmissionReview body. `admission::decode`
//!   and `Webhook::review` (on a local store) must not panic; the answer is
//!   HTTP 200 with a well-formed AdmissionReview echoing the request's uid,
//!   or HTTP 400 when no uid can be read; a patch decodes as base64 JSON
//!   Patch, applies to the request's object, and the webhook run on the
//!   patched object answers without a patch (idempotency).
//! - [`patch`]: the first byte picks the kind (Pod / Deployment) and the
//!   Function, the rest is parsed as JSON. `patch::build_patch` must not
//!   panic; when it builds a patch, the patch only touches the pod metadata
//!   and the containers, applies with `json-patch`, and building it again on
//!   the result gives an empty patch.

use std::sync::OnceLock;

use base64::Engine;
use openfunction_dapr::model::func_context::func_context;
use openfunction_dapr::model::function::{Function, Serving};
use openfunction_dapr::model::mode::resolve;
use openfunction_dapr::model::workload::Kind;
use openfunction_dapr::webhook::Webhook;
use openfunction_dapr::webhook::admission::{self, DecodeError};
use openfunction_dapr::webhook::patch::{Injection, build_patch};
use openfunction_dapr::webhook::store::FunctionStore;
use serde_json::{Value, json};

const CLUSTER_DOMAIN: &str = "cluster.local";

/// The Functions the checks use: one per mode, and one whose annotations
/// are all invalid (warnings, odd app id and protocol).
fn functions() -> &'static [Function] {
    static FUNCTIONS: OnceLock<Vec<Function>> = OnceLock::new();
    FUNCTIONS.get_or_init(|| {
        let component = json!({"type": "bindings.kafka", "version": "v1",
            "metadata": [{"name": "brokers", "value": "kafka:9092"}]});
        [
            json!({"metadata": {"name": "cron-kafka", "namespace": "default"},
                "spec": {"version": "v2.0.0", "image": "i", "serving": {"runtime": "async",
                    "annotations": {"dapr.io/log-level": "debug"},
                    "inputs": [{"name": "cron", "component": "cron"}],
                    "outputs": [{"name": "sample", "component": "kafka", "operation": "create"}],
                    "bindings": {"cron": {"type": "bindings.cron", "version": "v1",
                        "metadata": [{"name": "schedule", "value": "@every 2s"}]},
                        "kafka": component}}}}),
            json!({"metadata": {"name": "front-sidecar", "namespace": "default"},
                "spec": {"image": "i", "port": 8080, "serving": {"runtime": "knative",
                    "annotations": {"openfunction.io/enable-dapr": "true",
                        "openfunction.io/dapr-service-mode": "sidecar",
                        "dapr.io/app-protocol": "http"},
                    "outputs": [{"name": "t", "component": "kafka"}],
                    "bindings": {"kafka": component}}}}),
            json!({"metadata": {"name": "hello-plain", "namespace": "default"},
                "spec": {"image": "i", "serving": {"runtime": "knative",
                    "annotations": {"openfunction.io/enable-dapr": "false"}}}}),
            json!({"metadata": {"name": "odd", "namespace": "default"},
                "spec": {"image": "i", "port": 65535, "serving": {"runtime": "async",
                    "annotations": {"openfunction.io/enable-dapr": " TRUE ",
                        "openfunction.io/dapr-service-mode": "proxy",
                        "dapr.io/app-id": "a~b/c d",
                        "dapr.io/app-protocol": "tcp"},
                    "inputs": [{"name": "in/put~", "component": "pubsub", "topic": "t"}],
                    "pubsub": {"pubsub": {"type": "pubsub.redis", "version": "v1"}}}}}),
        ]
        .into_iter()
        .map(|mut v| {
            v["apiVersion"] = json!("core.openfunction.io/v1beta1");
            v["kind"] = json!("Function");
            serde_json::from_value(v).expect("fixture Function")
        })
        .collect()
    })
}

fn webhook() -> &'static Webhook {
    static WEBHOOK: OnceLock<Webhook> = OnceLock::new();
    WEBHOOK.get_or_init(|| {
        let serving: Serving = serde_json::from_value(json!({
            "apiVersion": "core.openfunction.io/v1beta1", "kind": "Serving",
            "metadata": {"name": "cron-kafka-serving", "namespace": "default",
                "labels": {"openfunction.io/function": "cron-kafka"}},
            "spec": {}
        }))
        .expect("fixture Serving");
        let store = FunctionStore::from_objects(functions().to_vec(), vec![serving]);
        Webhook::new(store, CLUSTER_DOMAIN)
    })
}

fn run_review(body: &[u8]) -> (u16, Vec<u8>) {
    let reviewed = futures::executor::block_on(webhook().review(body));
    (reviewed.status.as_u16(), reviewed.body)
}

/// See the module docs.
pub fn review(data: &[u8]) {
    let decoded = admission::decode(data);
    let (status, body) = run_review(data);
    match status {
        200 => {}
        400 => {
            assert!(
                matches!(decoded, Err(DecodeError::Invalid { uid: None, .. })),
                "HTTP 400 although the uid was readable"
            );
            assert!(!body.is_empty(), "HTTP 400 without a reason");
            return;
        }
        other => panic!("HTTP {other}: only 200 and 400 are expected"),
    }
    let out: Value = serde_json::from_slice(&body).expect("a 200 answer is JSON");
    assert_eq!(out["apiVersion"], admission::API_VERSION, "{out}");
    assert_eq!(out["kind"], admission::REVIEW_KIND, "{out}");
    let response = &out["response"];
    let uid = response["uid"].as_str().expect("the answer has a uid");
    let expected_uid = match &decoded {
        Ok(request) => request.uid.as_str(),
        Err(DecodeError::Invalid { uid: Some(uid), .. }) => uid.as_str(),
        Err(DecodeError::Invalid { uid: None, .. }) => panic!("HTTP 200 without a readable uid"),
    };
    assert_eq!(uid, expected_uid);
    let allowed = response["allowed"]
        .as_bool()
        .expect("`allowed` is a boolean");
    if !allowed {
        let code = response["status"]["code"]
            .as_u64()
            .expect("a refusal has a code");
        assert!(matches!(code, 400 | 503), "refusal code {code}");
        assert!(response.get("patch").is_none(), "a refusal with a patch");
    }
    let Some(patch) = response.get("patch") else {
        assert!(
            response.get("patchType").is_none(),
            "patchType without a patch"
        );
        return;
    };
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch.as_str().expect("the patch is a string"))
        .expect("the patch is base64");
    let ops: json_patch::Patch = serde_json::from_slice(&bytes).expect("the patch is a JSON Patch");
    let request = decoded.expect("a patch for a decoded request");
    // The patch must apply to the object as the API server holds it (the
    // whole object when the body parses as JSON), not only to what the
    // decoder kept of it.
    let full = serde_json::from_slice::<Value>(data)
        .ok()
        .map(|v| v["request"]["object"].clone())
        .filter(Value::is_object);
    let mut object = full
        .or_else(|| request.object.clone())
        .expect("a patch for an object");
    json_patch::patch(&mut object, &ops).unwrap_or_else(|e| {
        panic!(
            "the patch does not apply: {e}; {}",
            String::from_utf8_lossy(&bytes)
        )
    });

    // The webhook on its own output: no patch. (The request is rebuilt
    // from what was decoded: the parts the decoder skips need not even be
    // valid UTF-8.)
    let again = json!({
        "apiVersion": admission::API_VERSION, "kind": admission::REVIEW_KIND,
        "request": {
            "uid": request.uid, "name": request.name, "namespace": request.namespace,
            "operation": request.operation, "subResource": request.sub_resource,
            "resource": {"group": request.resource.group, "version": request.resource.version,
                "resource": request.resource.resource},
            "dryRun": request.dry_run, "object": object,
        }
    });
    let (status, body) = run_review(&serde_json::to_vec(&again).expect("re-encode"));
    assert_eq!(status, 200);
    let out: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(out["response"]["allowed"], true, "{out}");
    assert!(
        out["response"].get("patch").is_none(),
        "not idempotent: {}",
        out["response"]
    );
}

/// See the module docs.
pub fn patch(data: &[u8]) {
    let Some((&selector, json)) = data.split_first() else {
        return;
    };
    let Ok(object) = serde_json::from_slice::<Value>(json) else {
        return;
    };
    let kind = if selector & 1 == 0 {
        Kind::Pod
    } else {
        Kind::Deployment
    };
    let all = functions();
    let function = &all[usize::from(selector >> 1) % all.len()];
    let name = function.metadata.name.as_deref().unwrap_or_default();
    let namespace = "default";
    let resolved = resolve(name, namespace, &function.spec, CLUSTER_DOMAIN);
    let ctx = func_context(name, &function.spec);
    let injection = Injection {
        function: name,
        namespace,
        resolved: &resolved,
        func_context: &ctx,
        grpc_endpoint_form: Default::default(),
        func_context_v1beta2: None,
    };
    let Ok(ops) = build_patch(&object, kind, &injection) else {
        return; // a field of the wrong type: refused, fine
    };
    let (meta, spec) = (kind.meta_path(), kind.spec_path());
    let containers = format!("{spec}/containers/");
    for op in &ops {
        let v = serde_json::to_value(op).expect("op");
        let path = v["path"].as_str().expect("path");
        assert!(
            path == meta || path.starts_with(&format!("{meta}/")) || path.starts_with(&containers),
            "the patch touches {path}"
        );
    }
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::to_value(&ops).expect("ops")).expect("a JSON Patch");
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &patch).unwrap_or_else(|e| {
        panic!(
            "the patch does not apply: {e}\nobject: {object}\npatch: {}",
            serde_json::to_string(&ops).unwrap_or_default()
        )
    });
    let again = build_patch(&patched, kind, &injection)
        .unwrap_or_else(|e| panic!("the patched object is refused: {e}\nobject: {patched}"));
    assert!(
        again.is_empty(),
        "not idempotent: {}\nobject: {object}\npatched: {patched}",
        serde_json::to_string(&again).unwrap_or_default()
    );
}
