//! Property tests of the webhook's JSON Patch (SPEC section 5) over
//! generated Pods and Deployments.
//!
//! For every generated Function and workload:
//! - the patch builds and applies, and the result still deserializes as a
//!   `k8s_openapi` Pod / Deployment;
//! - running the webhook on the result gives an empty patch (idempotency);
//! - nothing outside the fields of SPEC section 5 changes: the objects
//!   before and after are equal once the pod annotations `dapr.io/enabled`,
//!   `dapr.io/app-id`, `dapr.io/app-protocol`, `dapr.io/app-port`, the label
//!   `openfunction.io/function` (and `openfunction.io/dapr-wired` of a
//!   Deployment's template) and the env vars `APP_PROTOCOL`, `DAPR_HOST`,
//!   `DAPR_SIDECAR_IP`, `DAPR_GRPC_ENDPOINT`, `DAPR_HTTP_ENDPOINT`,
//!   `FUNC_CONTEXT` of the target container are masked
//!   out (maps and lists the patch had to create count as absent);
//! - the masked fields themselves are what the SPEC-5 table says.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use openfunction_dapr::model::func_context::func_context;
use openfunction_dapr::model::function::FunctionSpec;
use openfunction_dapr::model::mode::{
    GRPC_ENDPOINT_FORM, GrpcEndpointForm, Mode, Resolved, is_proxy_address, is_proxy_endpoint,
    resolve,
};
use openfunction_dapr::model::workload::Kind;
use openfunction_dapr::webhook::patch::{Injection, Op, apply, build_patch, wired_hash};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use serde_json::{Map, Value, json};

const ENABLED: &str = "dapr.io/enabled";
const APP_ID: &str = "dapr.io/app-id";
const APP_PROTOCOL_ANN: &str = "dapr.io/app-protocol";
const APP_PORT: &str = "dapr.io/app-port";
const FN_LABEL: &str = "openfunction.io/function";
const WIRED_LABEL: &str = "openfunction.io/dapr-wired";
const MASKED_ANNOTATIONS: [&str; 4] = [ENABLED, APP_ID, APP_PROTOCOL_ANN, APP_PORT];
const MASKED_ENV: [&str; 6] = [
    "APP_PROTOCOL",
    "DAPR_HOST",
    "DAPR_SIDECAR_IP",
    "DAPR_GRPC_ENDPOINT",
    "DAPR_HTTP_ENDPOINT",
    "FUNC_CONTEXT",
];

/// Does one of our variables hold a proxy address (what standalone wrote)?
fn holds_proxy(name: &str, value: &str, ns: &str) -> bool {
    match name {
        "DAPR_HOST" | "DAPR_SIDECAR_IP" => is_proxy_address(value, ns),
        "DAPR_GRPC_ENDPOINT" | "DAPR_HTTP_ENDPOINT" => is_proxy_endpoint(value, ns),
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// The setting: a Function, its namespace, what it resolves to.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Setup {
    function: String,
    namespace: String,
    resolved: Resolved,
    ctx: String,
    /// The operator's form of DAPR_GRPC_ENDPOINT.
    form: GrpcEndpointForm,
}

impl Setup {
    fn injection(&self) -> Injection<'_> {
        Injection {
            function: &self.function,
            namespace: &self.namespace,
            resolved: &self.resolved,
            func_context: &self.ctx,
            grpc_endpoint_form: self.form,
            func_context_v1beta2: None,
        }
    }
}

fn opt_str(values: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        1 => Just(None),
        2 => select(values).prop_map(|s| Some(s.to_owned())),
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        "[a-z][a-z0-9-]{0,10}[a-z0-9]",
        prop_oneof![
            select(&["default", "demo", "ns", "a-b"][..]).prop_map(str::to_owned),
            "[a-z][a-z0-9]{0,8}",
        ],
        opt_str(&["true", "false", "TRUE", " False ", "yes", ""]),
        opt_str(&["standalone", "sidecar", " Sidecar ", "STANDALONE", "proxy"]),
        opt_str(&["my-app", "x", "", "Bad_Id", "a.b"]),
        opt_str(&["grpc", "http", "grpcs", "https", "h2c", "tcp"]),
        proptest::option::of(1..65535i32),
        any::<bool>(),
        (any::<bool>(), any::<bool>()),
        (
            opt_str(&["url", "host-port", " HOST-PORT ", "grpc"]),
            prop_oneof![
                Just(GrpcEndpointForm::Url),
                Just(GrpcEndpointForm::HostPort)
            ],
        ),
    )
        .prop_map(
            |(
                function,
                namespace,
                enable,
                mode,
                app_id,
                proto,
                port,
                is_async,
                (inputs, outputs),
                (form_ann, form),
            )| {
                let mut ann = Map::new();
                for (k, v) in [
                    ("openfunction.io/enable-dapr", enable),
                    ("openfunction.io/dapr-service-mode", mode),
                    (APP_ID, app_id),
                    (APP_PROTOCOL_ANN, proto),
                    (GRPC_ENDPOINT_FORM, form_ann),
                ] {
                    if let Some(v) = v {
                        ann.insert(k.into(), Value::String(v));
                    }
                }
                let mut serving = json!({
                    "runtime": if is_async { "async" } else { "knative" },
                    "annotations": ann,
                    "bindings": {"k": {"type": "bindings.kafka", "version": "v1", "metadata": []}}
                });
                if inputs {
                    serving["inputs"] = json!([{"name": "in", "component": "k"}]);
                }
                if outputs {
                    serving["outputs"] =
                        json!([{"name": "out", "component": "k", "operation": "create"}]);
                }
                let mut spec = json!({"image": "img", "version": "v1", "serving": serving});
                if let Some(p) = port {
                    spec["port"] = json!(p);
                }
                let spec: FunctionSpec = serde_json::from_value(spec).unwrap();
                let resolved = resolve(&function, &namespace, &spec, "cluster.local");
                let ctx = func_context(&function, &spec);
                Setup {
                    function,
                    namespace,
                    resolved,
                    ctx,
                    form,
                }
            },
        )
}

// ---------------------------------------------------------------------------
// Workloads.
// ---------------------------------------------------------------------------

/// Annotation / label keys: the ones we manage, look-alikes that differ only
/// by characters that need escaping, non-ASCII, and random ones.
fn map_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(
            &[
                ENABLED,
                APP_ID,
                APP_PROTOCOL_ANN,
                APP_PORT,
                FN_LABEL,
                "openfunction.io/serving",
                WIRED_LABEL,
                "dapr.io~1enabled",
                "dapr.io~enabled",
                "openfunction.io~1function",
                "dapr.io/config",
                "a~b/c",
                "~0~1",
                "ключ/ü",
                "app",
                "",
            ][..]
        )
        .prop_map(str::to_owned),
        1 => "[a-z~/.0-9-]{1,12}",
        1 => "\\PC{1,6}",
    ]
}

fn map_value() -> impl Strategy<Value = String> {
    prop_oneof![
        select(&["true", "false", "grpc", "http", "8080", "", "my-app"][..])
            .prop_map(str::to_owned),
        "\\PC{0,8}",
    ]
}

/// A string map (annotations / labels): absent, null, or a generated map.
fn string_map() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(Value::Null)),
        6 => proptest::collection::vec((map_key(), map_value()), 0..6).prop_map(|kv| {
            Some(Value::Object(kv.into_iter().map(|(k, v)| (k, Value::String(v))).collect()))
        }),
    ]
}

fn metadata(with_name: bool) -> impl Strategy<Value = Value> {
    (string_map(), string_map(), any::<bool>(), "[a-z]{1,8}").prop_map(
        move |(ann, labels, future, name)| {
            let mut m = Map::new();
            if with_name {
                m.insert("name".into(), Value::String(name));
            }
            if let Some(a) = ann {
                m.insert("annotations".into(), a);
            }
            if let Some(l) = labels {
                m.insert("labels".into(), l);
            }
            if future {
                m.insert("futureMeta".into(), json!({"x": ["y"]}));
            }
            Value::Object(m)
        },
    )
}

/// An env var value: plain, from a reference, or name only; plain values
/// include proxy addresses of this and other namespaces and the exact
/// address the function resolves to.
fn env_entry(ns: String, dapr_host: String) -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        4 => select(&MASKED_ENV[..]).prop_map(str::to_owned),
        1 => select(&["OTHER", "DAPR_GRPC_PORT", "app_protocol", "DAPR_HOST "][..]).prop_map(str::to_owned),
        1 => "[A-Z_]{1,8}",
    ];
    let value = prop_oneof![
        3 => select(vec![
            "".to_owned(),
            "localhost".to_owned(),
            "grpc".to_owned(),
            "http".to_owned(),
            "127.0.0.1".to_owned(),
            dapr_host.clone(),
            format!("other-dapr.{ns}.svc.cluster.local"),
            format!("f-dapr.{ns}.svc"),
            format!(" f-dapr.{ns} "),
            format!("f-dapr.{ns}.svc.example.org"),
            "f-dapr.elsewhere.svc.cluster.local".to_owned(),
            format!("f-dapr.{ns}x.svc"),
            format!("http://{dapr_host}:50001"),
            format!("{dapr_host}:50001"),
            format!("http://{dapr_host}:3500"),
            format!("https://other-dapr.{ns}.svc:3500/"),
            "http://f-dapr.elsewhere.svc.cluster.local:50001".to_owned(),
            "http://localhost:3500".to_owned(),
            "127.0.0.1:50001".to_owned(),
        ]),
        1 => "\\PC{0,10}",
    ];
    let kind = prop_oneof![
        6 => value.prop_map(|v| json!({"value": v})),
        2 => Just(json!({"valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})),
        1 => Just(json!({"valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}})),
        1 => Just(json!({})),
        // explicit nulls mean "absent"
        1 => Just(json!({"value": "grpc", "valueFrom": null})),
        1 => Just(json!({"value": null, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})),
    ];
    (name, kind, any::<bool>()).prop_map(|(name, mut entry, extra)| {
        entry["name"] = Value::String(name);
        if extra {
            entry["futureEnvField"] = json!(1);
        }
        entry
    })
}

fn env_list(ns: String, dapr_host: String) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(Value::Null)),
        8 => proptest::collection::vec(env_entry(ns, dapr_host), 0..9).prop_map(|v| Some(Value::Array(v))),
    ]
}

fn container(name: String, ns: String, dapr_host: String) -> impl Strategy<Value = Value> {
    (env_list(ns, dapr_host), any::<bool>(), any::<bool>()).prop_map(
        move |(env, resize, future)| {
            let mut c = Map::new();
            c.insert("name".into(), Value::String(name.clone()));
            c.insert("image".into(), json!("img:1"));
            if let Some(env) = env {
                c.insert("env".into(), env);
            }
            if resize {
                c.insert(
                    "resizePolicy".into(),
                    json!([{"resourceName": "cpu", "restartPolicy": "NotRequired"}]),
                );
            }
            if future {
                c.insert("futureContainerField".into(), json!({"a": 1}));
            }
            Value::Object(c)
        },
    )
}

const CONTAINER_NAMES: [&str; 6] = ["function", "app", "sidecar", "helper", "function-2", "log"];

fn containers(ns: String, dapr_host: String) -> impl Strategy<Value = Vec<Value>> {
    subsequence(&CONTAINER_NAMES[..], 1..=4)
        .prop_shuffle()
        .prop_flat_map(move |names| {
            names
                .into_iter()
                .map(|n| container(n.to_owned(), ns.clone(), dapr_host.clone()))
                .collect::<Vec<_>>()
        })
}

fn pod_spec(ns: String, dapr_host: String) -> impl Strategy<Value = Value> {
    (
        containers(ns.clone(), dapr_host.clone()),
        proptest::option::of(container("init".into(), ns, dapr_host)),
        any::<bool>(),
    )
        .prop_map(|(containers, init, future)| {
            let mut spec = json!({"containers": containers});
            if let Some(init) = init {
                spec["initContainers"] = json!([init]);
            }
            if future {
                spec["futureField"] = json!({"nested": [true]});
            }
            spec
        })
}

fn pod(s: &Setup) -> impl Strategy<Value = Value> + use<> {
    let (ns, host) = (s.namespace.clone(), s.resolved.dapr_host.clone());
    (
        proptest::option::of(metadata(true)),
        pod_spec(ns, host),
        any::<bool>(),
    )
        .prop_map(|(meta, spec, status)| {
            let mut p = json!({"apiVersion": "v1", "kind": "Pod"});
            if let Some(meta) = meta {
                p["metadata"] = meta;
            }
            p["spec"] = spec;
            if status {
                p["status"] = json!({"phase": "Pending"});
            }
            p
        })
}

fn deployment(s: &Setup) -> impl Strategy<Value = Value> + use<> {
    let (ns, host) = (s.namespace.clone(), s.resolved.dapr_host.clone());
    (
        metadata(true),
        proptest::option::of(metadata(false)),
        pod_spec(ns, host),
        any::<bool>(),
    )
        .prop_map(|(meta, template_meta, pod_spec, future)| {
            let mut template = json!({"spec": pod_spec});
            if let Some(m) = template_meta {
                template["metadata"] = m;
            }
            let mut d = json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": meta,
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}}, "template": template}
            });
            if future {
                d["spec"]["futureField"] = json!("kept");
                d["status"] = json!({"replicas": 0});
            }
            d
        })
}

// ---------------------------------------------------------------------------
// Checks.
// ---------------------------------------------------------------------------

fn target_index(object: &Value, kind: Kind) -> Option<usize> {
    let containers = object
        .pointer(&format!("{}/containers", kind.spec_path()))?
        .as_array()?;
    containers
        .iter()
        .position(|c| c["name"] == "function")
        .or((!containers.is_empty()).then_some(0))
}

fn env_of(object: &Value, kind: Kind, index: usize) -> Vec<Value> {
    object
        .pointer(&format!("{}/containers/{index}/env", kind.spec_path()))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Remove `keys` from the map at `pointer`; drop the map if it ends empty
/// (or was null): the patch may create it.
fn mask_map(object: &mut Value, parent: &str, field: &str, keys: &[&str]) {
    let Some(Value::Object(parent)) = object.pointer_mut(parent) else {
        return;
    };
    if let Some(Value::Object(map)) = parent.get_mut(field) {
        for k in keys {
            map.remove(*k);
        }
    }
    if parent
        .get(field)
        .is_some_and(|m| m.is_null() || m.as_object().is_some_and(Map::is_empty))
    {
        parent.remove(field);
    }
}

fn masked(object: &Value, kind: Kind, target: Option<usize>) -> Value {
    let mut o = object.clone();
    let meta = kind.meta_path();
    mask_map(&mut o, meta, "annotations", &MASKED_ANNOTATIONS);
    mask_map(&mut o, meta, "labels", &[FN_LABEL, WIRED_LABEL]);
    // metadata the patch had to create
    let (parent, field) = meta.rsplit_once('/').unwrap();
    let parent = if parent.is_empty() { "" } else { parent };
    if let Some(Value::Object(p)) = o.pointer_mut(parent)
        && p.get(field)
            .is_some_and(|m| m.as_object().is_some_and(Map::is_empty))
    {
        p.remove(field);
    }
    if let Some(i) = target {
        let c = o
            .pointer_mut(&format!("{}/containers/{i}", kind.spec_path()))
            .and_then(Value::as_object_mut)
            .unwrap();
        if let Some(Value::Array(env)) = c.get_mut("env") {
            env.retain(|e| !e["name"].as_str().is_some_and(|n| MASKED_ENV.contains(&n)));
        }
        if c.get("env")
            .is_some_and(|e| e.is_null() || e.as_array().is_some_and(Vec::is_empty))
        {
            c.remove("env");
        }
    }
    o
}

fn name_of(e: &Value) -> &str {
    e["name"].as_str().unwrap_or("")
}

/// No `valueFrom` (null counts as absent, as in Kubernetes).
fn is_plain(e: &Value) -> bool {
    e.get("valueFrom").is_none_or(Value::is_null)
}

/// The `value` of an env entry; null counts as absent.
fn value_of(e: &Value) -> Option<&Value> {
    e.get("value").filter(|v| !v.is_null())
}

/// The target container's env after the patch, as SPEC section 5 says:
/// the variables we set are replaced in place (the first occurrence; later
/// duplicates go), `FUNC_CONTEXT` is set only when absent, stale proxy
/// addresses go outside standalone mode, missing variables are appended.
fn model_env(input: &[Value], s: &Setup) -> Vec<Value> {
    let r = &s.resolved;
    let standalone = r.mode == Mode::Standalone;
    let mut wanted: Vec<(&str, &str, bool)> = vec![
        ("APP_PROTOCOL", &r.app_protocol, true),
        ("FUNC_CONTEXT", &s.ctx, false),
    ];
    let grpc = r.grpc_endpoint(s.form);
    let http = r.http_endpoint();
    if standalone {
        wanted.push(("DAPR_HOST", &r.dapr_host, true));
        wanted.push(("DAPR_SIDECAR_IP", &r.dapr_host, true));
        wanted.push(("DAPR_GRPC_ENDPOINT", &grpc, true));
        wanted.push(("DAPR_HTTP_ENDPOINT", &http, true));
    }
    let mut out = Vec::new();
    let mut seen = vec![false; wanted.len()];
    for e in input {
        let name = name_of(e);
        if let Some(w) = wanted.iter().position(|(n, _, _)| *n == name) {
            let (_, value, overwrite) = wanted[w];
            if seen[w] {
                if !overwrite {
                    out.push(e.clone());
                }
                continue;
            }
            seen[w] = true;
            let kept_as_is = if overwrite {
                is_plain(e) && value_of(e) == Some(&json!(value))
            } else {
                (is_plain(e) && value_of(e).is_some_and(Value::is_string))
                    || (!is_plain(e) && value_of(e).is_none())
            };
            if kept_as_is {
                out.push(e.clone());
            } else if is_plain(e) && value_of(e).is_some_and(Value::is_string) {
                let mut e = e.clone();
                e["value"] = json!(value);
                out.push(e);
            } else {
                out.push(json!({"name": name, "value": value}));
            }
        } else if !standalone
            && e["value"]
                .as_str()
                .is_some_and(|v| holds_proxy(name, v, &s.namespace))
        {
            // removed
        } else {
            out.push(e.clone());
        }
    }
    for (w, (name, value, _)) in wanted.iter().enumerate() {
        if !seen[w] {
            out.push(json!({"name": name, "value": value}));
        }
    }
    out
}

fn check(s: &Setup, kind: Kind, input: &Value) -> Result<(), TestCaseError> {
    let r = &s.resolved;
    // The generator makes valid objects.
    match kind {
        Kind::Pod => serde_json::from_value::<Pod>(input.clone()).map(drop),
        Kind::Deployment => serde_json::from_value::<Deployment>(input.clone()).map(drop),
    }
    .map_err(|e| TestCaseError::fail(format!("generated input is invalid: {e}")))?;

    let ops = build_patch(input, kind, &s.injection())
        .map_err(|e| TestCaseError::fail(format!("build_patch: {e}")))?;
    let out = apply(input, &ops)
        .map_err(|e| TestCaseError::fail(format!("apply: {e}\nops: {ops:#?}")))?;

    // A valid object of the same kind.
    prop_assert_eq!(&out["kind"], &input["kind"]);
    prop_assert_eq!(&out["apiVersion"], &input["apiVersion"]);
    match kind {
        Kind::Pod => serde_json::from_value::<Pod>(out.clone()).map(drop),
        Kind::Deployment => serde_json::from_value::<Deployment>(out.clone()).map(drop),
    }
    .map_err(|e| TestCaseError::fail(format!("patched object is invalid: {e}")))?;

    // Idempotent.
    let again = build_patch(&out, kind, &s.injection()).unwrap();
    prop_assert!(again.is_empty(), "second run: {:#?}", again);

    // Nothing outside the SPEC-5 fields changes.
    let target = target_index(input, kind);
    prop_assert_eq!(target, target_index(&out, kind));
    prop_assert_eq!(masked(input, kind, target), masked(&out, kind, target));

    // Annotations.
    let meta = kind.meta_path();
    let ann_in = input
        .pointer(&format!("{meta}/annotations"))
        .and_then(Value::as_object);
    let ann_out = out
        .pointer(&format!("{meta}/annotations"))
        .and_then(Value::as_object)
        .unwrap();
    let enabled = if r.mode == Mode::Sidecar {
        "true"
    } else {
        "false"
    };
    prop_assert_eq!(&ann_out[ENABLED], enabled);
    let user = |k: &str| ann_in.and_then(|a| a.get(k)).cloned();
    for (k, default) in [
        (APP_ID, r.app_id.clone()),
        (APP_PROTOCOL_ANN, r.app_protocol.clone()),
        (APP_PORT, r.app_port.to_string()),
    ] {
        match (r.mode, user(k)) {
            // the user's value is kept
            (_, Some(v)) => prop_assert_eq!(ann_out.get(k), Some(&v), "{}", k),
            (Mode::Disabled, None) => prop_assert!(ann_out.get(k).is_none(), "{}", k),
            (_, None) => prop_assert_eq!(&ann_out[k], &json!(default), "{}", k),
        }
    }
    // Label.
    prop_assert_eq!(
        out.pointer(&format!("{meta}/labels/{}", "openfunction.io~1function")),
        Some(&json!(s.function))
    );

    // The template of a Deployment is marked as wired with the settings'
    // hash; a Pod's own labels keep whatever the user wrote there.
    let wired = out.pointer(&format!("{meta}/labels/openfunction.io~1dapr-wired"));
    match kind {
        Kind::Deployment => prop_assert_eq!(wired, Some(&json!(wired_hash(&s.injection())))),
        Kind::Pod => prop_assert_eq!(
            wired,
            input.pointer(&format!("{meta}/labels/openfunction.io~1dapr-wired"))
        ),
    }

    // Env of the target container.
    let Some(t) = target else {
        return Ok(());
    };
    let env_in = env_of(input, kind, t);
    let env_out = env_of(&out, kind, t);
    let count = |env: &[Value], n: &str| env.iter().filter(|e| name_of(e) == n).count();
    let only = |n: &str| -> Vec<&Value> { env_out.iter().filter(|e| name_of(e) == n).collect() };
    // APP_PROTOCOL: exactly one, plain, the app protocol.
    let ap = only("APP_PROTOCOL");
    prop_assert_eq!(ap.len(), 1);
    prop_assert_eq!(&ap[0]["value"], &json!(r.app_protocol));
    prop_assert!(is_plain(ap[0]));
    // FUNC_CONTEXT: set when absent, never duplicated by us.
    prop_assert_eq!(
        count(&env_out, "FUNC_CONTEXT"),
        count(&env_in, "FUNC_CONTEXT").max(1)
    );
    match env_in.iter().find(|e| name_of(e) == "FUNC_CONTEXT") {
        None => prop_assert_eq!(&only("FUNC_CONTEXT")[0]["value"], &json!(s.ctx)),
        // the user's own value (plain or from a reference) is kept as is
        Some(e)
            if (is_plain(e) && value_of(e).is_some_and(Value::is_string))
                || (!is_plain(e) && value_of(e).is_none()) =>
        {
            prop_assert_eq!(only("FUNC_CONTEXT")[0], e)
        }
        Some(_) => {}
    }
    let grpc = match r.grpc_endpoint_form.unwrap_or(s.form) {
        GrpcEndpointForm::Url => format!("http://{}:50001", r.dapr_host),
        GrpcEndpointForm::HostPort => format!("{}:50001", r.dapr_host),
    };
    for (name, want) in [
        ("DAPR_HOST", r.dapr_host.clone()),
        ("DAPR_SIDECAR_IP", r.dapr_host.clone()),
        ("DAPR_GRPC_ENDPOINT", grpc),
        ("DAPR_HTTP_ENDPOINT", format!("http://{}:3500", r.dapr_host)),
    ] {
        if r.mode == Mode::Standalone {
            let v = only(name);
            prop_assert_eq!(v.len(), 1, "{}", name);
            prop_assert_eq!(&v[0]["value"], &json!(want), "{}", name);
            prop_assert!(is_plain(v[0]));
        } else {
            // no proxy address left; everything else the user set is kept
            for e in only(name) {
                prop_assert!(
                    !e["value"]
                        .as_str()
                        .is_some_and(|v| holds_proxy(name, v, &s.namespace)),
                    "{}",
                    e
                );
            }
            let keep = |env: &[Value]| -> Vec<Value> {
                env.iter()
                    .filter(|e| {
                        name_of(e) == name
                            && !e["value"]
                                .as_str()
                                .is_some_and(|v| holds_proxy(name, v, &s.namespace))
                    })
                    .cloned()
                    .collect()
            };
            prop_assert_eq!(keep(&env_in), keep(&env_out));
        }
    }
    // In disabled / sidecar mode no managed variable points at a proxy.
    if r.mode != Mode::Standalone {
        for e in &env_out {
            if MASKED_ENV.contains(&name_of(e)) && name_of(e) != "FUNC_CONTEXT" {
                prop_assert!(
                    !e["value"]
                        .as_str()
                        .is_some_and(|v| holds_proxy(name_of(e), v, &s.namespace)),
                    "{}",
                    e
                );
            }
        }
    }
    // Replaced in place, in the order SPEC 5 gives.
    prop_assert_eq!(&env_out, &model_env(&env_in, s));
    // The patch never rewrites a whole env list that already exists.
    let env_path = format!("{}/containers/{t}/env", kind.spec_path());
    if input.pointer(&env_path).is_some_and(Value::is_array) {
        for op in &ops {
            if let Op::Add { path, .. } | Op::Replace { path, .. } = op {
                prop_assert_ne!(path, &env_path);
            }
        }
    }
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 200,
        max_shrink_iters: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn generated_pods((s, pod) in setup().prop_flat_map(|s| { let p = pod(&s); (Just(s), p) })) {
        check(&s, Kind::Pod, &pod)?;
    }

    #[test]
    fn generated_deployments((s, d) in setup().prop_flat_map(|s| { let d = deployment(&s); (Just(s), d) })) {
        check(&s, Kind::Deployment, &d)?;
        // the Deployment's own metadata and everything outside the pod
        // template are untouched (also implied by the masked comparison)
        let ops = build_patch(&d, Kind::Deployment, &s.injection()).unwrap();
        let out = apply(&d, &ops).unwrap();
        prop_assert_eq!(&out["metadata"], &d["metadata"]);
        prop_assert_eq!(&out["spec"]["selector"], &d["spec"]["selector"]);
    }

    /// The mode decides `dapr.io/enabled` whatever the user wrote.
    #[test]
    fn enabled_annotation_is_forced(s in setup(), user in proptest::option::of(map_value())) {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {"containers": [{"name": "c"}]}});
        if let Some(v) = user {
            p["metadata"]["annotations"] = json!({ENABLED: v});
        }
        let out = apply(&p, &build_patch(&p, Kind::Pod, &s.injection()).unwrap()).unwrap();
        let want = if s.resolved.mode == Mode::Sidecar { "true" } else { "false" };
        prop_assert_eq!(&out["metadata"]["annotations"][ENABLED], want);
    }
}

// ---------------------------------------------------------------------------
// A large pod: the patch stays small.
// ---------------------------------------------------------------------------

fn setup_for(mode: &str) -> Setup {
    let ann = match mode {
        "disabled" => json!({"openfunction.io/enable-dapr": "false"}),
        m => json!({"openfunction.io/enable-dapr": "true", "openfunction.io/dapr-service-mode": m}),
    };
    let spec: FunctionSpec = serde_json::from_value(json!({
        "image": "i", "version": "v1.0.0",
        "serving": {"runtime": "knative", "annotations": ann}
    }))
    .unwrap();
    let resolved = resolve("big", "ns", &spec, "cluster.local");
    let ctx = func_context("big", &spec);
    Setup {
        function: "big".into(),
        namespace: "ns".into(),
        resolved,
        ctx,
        form: GrpcEndpointForm::Url,
    }
}

#[test]
fn patch_for_1500_env_vars_stays_small() {
    for mode in ["standalone", "sidecar", "disabled"] {
        let s = setup_for(mode);
        // no managed variables at all, then stale ones scattered around
        for stale in [false, true] {
            let mut env: Vec<Value> = (0..1500)
                .map(|i| json!({"name": format!("VAR_{i:04}"), "value": format!("value-{i}")}))
                .collect();
            if stale {
                env[3] = json!({"name": "APP_PROTOCOL", "value": "http"});
                env[700] =
                    json!({"name": "DAPR_HOST", "value": "big-ns-dapr.ns.svc.cluster.local"});
                env[1200] = json!({"name": "DAPR_SIDECAR_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}});
                env[1499] = json!({"name": "FUNC_CONTEXT", "value": "{}"});
            }
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "big", "labels": {"openfunction.io/function": "big"}},
                "spec": {"containers": [
                    {"name": "other", "env": env.clone()},
                    {"name": "function", "env": env}
                ]}
            });
            let ops = build_patch(&pod, Kind::Pod, &s.injection()).unwrap();
            let wire = serde_json::to_string(&ops).unwrap();
            assert!(
                wire.len() < 2048,
                "{mode} stale={stale}: patch is {} bytes: {wire}",
                wire.len()
            );
            let out = apply(&pod, &ops).unwrap();
            assert!(
                build_patch(&out, Kind::Pod, &s.injection())
                    .unwrap()
                    .is_empty()
            );
            // the unrelated variables are all still there, in order
            let names: Vec<&str> = out["spec"]["containers"][1]["env"]
                .as_array()
                .unwrap()
                .iter()
                .map(name_of)
                .filter(|n| n.starts_with("VAR_"))
                .collect();
            assert_eq!(names.len(), if stale { 1496 } else { 1500 });
            assert!(names.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(out["spec"]["containers"][0], pod["spec"]["containers"][0]);
        }
    }
}

// ---------------------------------------------------------------------------
// valueFrom, one case at a time.
// ---------------------------------------------------------------------------

fn env_after(mode: &str, env: Value) -> Vec<Value> {
    let s = setup_for(mode);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "function", "env": env}]}});
    let ops = build_patch(&pod, Kind::Pod, &s.injection()).unwrap();
    let out = apply(&pod, &ops).unwrap();
    assert!(
        build_patch(&out, Kind::Pod, &s.injection())
            .unwrap()
            .is_empty()
    );
    out["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn value_from_entries() {
    let from = json!({"secretKeyRef": {"name": "s", "key": "k"}});
    // A variable we set replaces a valueFrom with a plain value, in place.
    for name in [
        "APP_PROTOCOL",
        "DAPR_HOST",
        "DAPR_SIDECAR_IP",
        "DAPR_GRPC_ENDPOINT",
        "DAPR_HTTP_ENDPOINT",
    ] {
        let env = env_after(
            "standalone",
            json!([{"name": "A"}, {"name": name, "valueFrom": from}]),
        );
        assert_eq!(env[1]["name"], name);
        assert!(env[1].get("valueFrom").is_none(), "{env:?}");
        assert!(env[1]["value"].is_string());
        assert_eq!(env.iter().filter(|e| e["name"] == name).count(), 1);
    }
    // FUNC_CONTEXT from a reference is the user's: kept.
    let env = env_after(
        "sidecar",
        json!([{"name": "FUNC_CONTEXT", "valueFrom": from}]),
    );
    assert_eq!(env[0], json!({"name": "FUNC_CONTEXT", "valueFrom": from}));
    assert_eq!(env.len(), 2);
    // An explicit null is no value / no reference, as in Kubernetes: the
    // user's FUNC_CONTEXT stays in both shapes.
    for user in [
        json!({"name": "FUNC_CONTEXT", "value": "{\"name\":\"mine\"}", "valueFrom": null}),
        json!({"name": "FUNC_CONTEXT", "value": null, "valueFrom": from}),
    ] {
        let env = env_after("standalone", json!([user]));
        assert_eq!(env[0], user);
    }
    let env = env_after(
        "sidecar",
        json!([{"name": "APP_PROTOCOL", "value": "http", "valueFrom": null}]),
    );
    assert_eq!(env[0]["value"], "grpc");
    // Outside standalone a DAPR_HOST from a reference is not a known proxy
    // address: kept.
    for mode in ["sidecar", "disabled"] {
        let env = env_after(mode, json!([{"name": "DAPR_HOST", "valueFrom": from}]));
        assert_eq!(
            env[0],
            json!({"name": "DAPR_HOST", "valueFrom": from}),
            "{mode}"
        );
    }
}
