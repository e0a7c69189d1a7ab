//! Golden tests of the webhook's JSON Patch (SPEC section 5).
//!
//! Every directory `tests/golden/patch/<case>/` holds:
//! - `input.json`: the Pod or Deployment as the API server sends it (its
//!   `kind` field says which);
//! - `function.yaml`: the Function that owns it (its `metadata.namespace` is
//!   the namespace of the request, `default` when absent);
//! - `expected.json`: the object after the patch.
//!
//! For every case the test resolves the Function (cluster domain
//! `cluster.local`), builds and applies the patch, compares the result with
//! `expected.json`, checks that the result is still a valid object of its
//! kind, and that the webhook run on the result gives an empty patch.
//!
//! `UPDATE_GOLDEN=1 cargo test --test patch_golden` rewrites the
//! `expected.json` files. They are the specification: review every change
//! against SPEC section 5 before keeping it.

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use openfunction_dapr::model::func_context::func_context;
use openfunction_dapr::model::function::Function;
use openfunction_dapr::model::mode::{GrpcEndpointForm, Resolved, resolve};
use openfunction_dapr::model::workload::Kind;
use openfunction_dapr::webhook::patch::{Injection, Op, apply, build_patch, escape};
use serde_json::{Value, json};

const CLUSTER_DOMAIN: &str = "cluster.local";

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/patch")
}

fn kind_of(object: &Value) -> Kind {
    match object.get("kind").and_then(Value::as_str) {
        Some("Pod") => Kind::Pod,
        Some("Deployment") => Kind::Deployment,
        other => panic!("input.json: unsupported kind {other:?}"),
    }
}

struct Case {
    name: String,
    dir: PathBuf,
    input: Value,
    function: Function,
}

impl Case {
    fn load(dir: &Path) -> Case {
        let read = |file: &str| {
            std::fs::read_to_string(dir.join(file))
                .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
        };
        let input: Value = serde_json::from_str(&read("input.json"))
            .unwrap_or_else(|e| panic!("{}/input.json: {e}", dir.display()));
        let function: Function = serde_saphyr::from_str(&read("function.yaml"))
            .unwrap_or_else(|e| panic!("{}/function.yaml: {e}", dir.display()));
        Case {
            name: dir.file_name().unwrap().to_string_lossy().into_owned(),
            dir: dir.to_owned(),
            input,
            function,
        }
    }

    fn fn_name(&self) -> &str {
        self.function
            .metadata
            .name
            .as_deref()
            .expect("function.yaml: metadata.name")
    }

    fn namespace(&self) -> &str {
        self.function
            .metadata
            .namespace
            .as_deref()
            .unwrap_or("default")
    }

    fn resolved(&self) -> Resolved {
        resolve(
            self.fn_name(),
            self.namespace(),
            &self.function.spec,
            CLUSTER_DOMAIN,
        )
    }

    fn patch(&self, object: &Value, resolved: &Resolved, ctx: &str) -> Vec<Op> {
        let inj = Injection {
            function: self.fn_name(),
            namespace: self.namespace(),
            resolved,
            func_context: ctx,
            grpc_endpoint_form: GrpcEndpointForm::Url,
            func_context_v1beta2: None,
        };
        build_patch(object, kind_of(object), &inj)
            .unwrap_or_else(|e| panic!("{}: build_patch failed: {e}", self.name))
    }
}

fn case_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(golden_root())
        .expect("tests/golden/patch exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap()
}

/// The result must still deserialize as the typed Kubernetes object.
fn assert_valid_kind(case: &str, object: &Value) {
    let res = match kind_of(object) {
        Kind::Pod => serde_json::from_value::<Pod>(object.clone()).map(drop),
        Kind::Deployment => serde_json::from_value::<Deployment>(object.clone()).map(drop),
    };
    if let Err(e) = res {
        panic!(
            "{case}: patched object is not a valid {:?}: {e}",
            kind_of(object)
        );
    }
}

#[test]
fn golden_cases() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v != "0" && !v.is_empty());
    let dirs = case_dirs();
    assert!(
        dirs.len() >= 14,
        "expected at least 14 golden cases, found {}",
        dirs.len()
    );
    let mut failures = Vec::new();
    for dir in &dirs {
        let case = Case::load(dir);
        let resolved = case.resolved();
        let ctx = func_context(case.fn_name(), &case.function.spec);

        assert_valid_kind(&format!("{} (input)", case.name), &case.input);
        let ops = case.patch(&case.input, &resolved, &ctx);
        let patched = apply(&case.input, &ops)
            .unwrap_or_else(|e| panic!("{}: patch does not apply: {e}\n{ops:#?}", case.name));
        assert_valid_kind(&case.name, &patched);

        // Idempotent: the webhook run on its own output has nothing to do.
        let again = case.patch(&patched, &resolved, &ctx);
        assert!(
            again.is_empty(),
            "{}: second run is not empty: {again:#?}",
            case.name
        );

        let expected_path = case.dir.join("expected.json");
        if update {
            std::fs::write(&expected_path, pretty(&patched) + "\n").unwrap();
            eprintln!("wrote {}", expected_path.display());
            continue;
        }
        let expected: Value = match std::fs::read_to_string(&expected_path) {
            Ok(text) => serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display())),
            Err(e) => panic!(
                "{}: {e} (run UPDATE_GOLDEN=1 cargo test --test patch_golden, then review it)",
                expected_path.display()
            ),
        };
        if patched != expected {
            failures.push(format!(
                "case {}: patched object differs from expected.json\n--- expected\n{}\n--- actual\n{}\n--- patch\n{}",
                case.name,
                pretty(&expected),
                pretty(&patched),
                serde_json::to_string_pretty(&ops).unwrap(),
            ));
        }
        // The expected object is itself a fixed point of the webhook.
        let on_expected = case.patch(&expected, &resolved, &ctx);
        if !on_expected.is_empty() {
            failures.push(format!(
                "case {}: the webhook would still patch expected.json: {on_expected:#?}",
                case.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Each case directory is complete, and no stray file hides a case.
#[test]
fn golden_layout() {
    // While `golden_cases` (re)writes them, expected files may be missing.
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for dir in case_dirs() {
        for file in ["input.json", "function.yaml", "expected.json"] {
            if update && file == "expected.json" {
                continue;
            }
            assert!(
                dir.join(file).is_file(),
                "{}: {file} is missing",
                dir.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The raw operations: escaping and wire format.
// ---------------------------------------------------------------------------

fn sample_resolved(mode: &str) -> (Function, Resolved, String) {
    let yaml = format!(
        "apiVersion: core.openfunction.io/v1beta1\nkind: Function\nmetadata:\n  name: f\n  namespace: ns\n\
         spec:\n  image: i\n  serving:\n    runtime: knative\n    annotations:\n      \
         openfunction.io/enable-dapr: \"{}\"\n      openfunction.io/dapr-service-mode: \"{mode}\"\n",
        mode != "disabled"
    );
    let f: Function = serde_saphyr::from_str(&yaml).unwrap();
    let r = resolve("f", "ns", &f.spec, CLUSTER_DOMAIN);
    let ctx = func_context("f", &f.spec);
    (f, r, ctx)
}

fn ops_for(object: &Value, kind: Kind, mode: &str) -> Vec<Op> {
    let (_, r, ctx) = sample_resolved(mode);
    let inj = Injection {
        function: "f",
        namespace: "ns",
        resolved: &r,
        func_context: &ctx,
        grpc_endpoint_form: GrpcEndpointForm::Url,
        func_context_v1beta2: None,
    };
    build_patch(object, kind, &inj).unwrap()
}

fn paths(ops: &[Op]) -> Vec<String> {
    ops.iter()
        .map(|op| match op {
            Op::Add { path, .. } | Op::Replace { path, .. } | Op::Remove { path } => path.clone(),
        })
        .collect()
}

#[test]
fn escape_tokens() {
    assert_eq!(escape("dapr.io/enabled"), "dapr.io~1enabled");
    assert_eq!(
        escape("openfunction.io/function"),
        "openfunction.io~1function"
    );
    assert_eq!(escape("a~b"), "a~0b");
    // `~` first, so an escaped-looking key does not collapse
    assert_eq!(escape("a~1b"), "a~01b");
    assert_eq!(escape("~/"), "~0~1");
    assert_eq!(escape("plain"), "plain");
    assert!(matches!(escape("plain"), std::borrow::Cow::Borrowed(_)));
    assert_eq!(escape(""), "");
    assert_eq!(escape("ключ/ü"), "ключ~1ü");
}

#[test]
fn op_paths_are_escaped() {
    // Existing maps: one op per key, with the key escaped.
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"annotations": {"dapr.io/enabled": "maybe"}, "labels": {"app": "x"}},
        "spec": {"containers": [{"name": "function", "env": []}]}
    });
    let ops = ops_for(&pod, Kind::Pod, "sidecar");
    let p = paths(&ops);
    assert!(
        p.contains(&"/metadata/annotations/dapr.io~1enabled".to_owned()),
        "{p:?}"
    );
    assert!(
        p.contains(&"/metadata/annotations/dapr.io~1app-id".to_owned()),
        "{p:?}"
    );
    assert!(
        p.contains(&"/metadata/annotations/dapr.io~1app-protocol".to_owned()),
        "{p:?}"
    );
    assert!(
        p.contains(&"/metadata/annotations/dapr.io~1app-port".to_owned()),
        "{p:?}"
    );
    assert!(
        p.contains(&"/metadata/labels/openfunction.io~1function".to_owned()),
        "{p:?}"
    );
    // never unescaped, never double-escaped
    assert!(
        p.iter()
            .all(|p| !p.contains("dapr.io/") && !p.contains("openfunction.io/"))
    );
    assert!(p.iter().all(|p| !p.contains("~01")));
    // the user's "maybe" is overridden with a replace, the rest are adds
    assert!(ops.contains(&Op::Replace {
        path: "/metadata/annotations/dapr.io~1enabled".into(),
        value: json!("true"),
    }));

    // The same on a Deployment's pod template.
    let deploy = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {
            "metadata": {"annotations": {}, "labels": {"app": "x"}},
            "spec": {"containers": [{"name": "function"}]}}}
    });
    let p = paths(&ops_for(&deploy, Kind::Deployment, "standalone"));
    assert!(
        p.contains(&"/spec/template/metadata/annotations/dapr.io~1enabled".to_owned()),
        "{p:?}"
    );
    assert!(
        p.contains(&"/spec/template/metadata/labels/openfunction.io~1function".to_owned()),
        "{p:?}"
    );
    assert!(
        p.contains(&"/spec/template/spec/containers/0/env".to_owned()),
        "{p:?}"
    );
    // the Deployment's own metadata is never touched
    assert!(p.iter().all(|p| !p.starts_with("/metadata")), "{p:?}");
}

#[test]
fn escaped_paths_apply_to_the_right_keys() {
    // Keys that only differ by the characters that need escaping stay apart.
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"annotations": {
            "dapr.io~1enabled": "literal-tilde-one",
            "dapr.io~enabled": "tilde",
            "dapr.io/enabled": "false"
        }},
        "spec": {"containers": [{"name": "c"}]}
    });
    let ops = ops_for(&pod, Kind::Pod, "sidecar");
    let out = apply(&pod, &ops).unwrap();
    let ann = &out["metadata"]["annotations"];
    assert_eq!(ann["dapr.io/enabled"], "true");
    assert_eq!(ann["dapr.io~1enabled"], "literal-tilde-one");
    assert_eq!(ann["dapr.io~enabled"], "tilde");
}

#[test]
fn ops_serialize_as_rfc6902() {
    let add = Op::Add {
        path: "/metadata/annotations/dapr.io~1enabled".into(),
        value: json!("true"),
    };
    assert_eq!(
        serde_json::to_string(&add).unwrap(),
        r#"{"op":"add","path":"/metadata/annotations/dapr.io~1enabled","value":"true"}"#
    );
    let replace = Op::Replace {
        path: "/spec/containers/0/env/2/value".into(),
        value: json!("grpc"),
    };
    assert_eq!(
        serde_json::to_string(&replace).unwrap(),
        r#"{"op":"replace","path":"/spec/containers/0/env/2/value","value":"grpc"}"#
    );
    let remove = Op::Remove {
        path: "/spec/containers/0/env/3".into(),
    };
    assert_eq!(
        serde_json::to_string(&remove).unwrap(),
        r#"{"op":"remove","path":"/spec/containers/0/env/3"}"#
    );

    // A whole patch, as the webhook sends it, is a JSON array of such
    // objects and nothing else.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "function"}]}});
    let ops = ops_for(&pod, Kind::Pod, "standalone");
    let wire: Value = serde_json::to_value(&ops).unwrap();
    for op in wire.as_array().unwrap() {
        let o = op.as_object().unwrap();
        let name = o["op"].as_str().unwrap();
        let keys: Vec<&str> = o.keys().map(String::as_str).collect();
        match name {
            "add" | "replace" => assert_eq!(keys.len(), 3, "{op}"),
            "remove" => assert_eq!(keys.len(), 2, "{op}"),
            other => panic!("unexpected op {other}"),
        }
        assert!(o["path"].as_str().unwrap().starts_with('/'));
    }
    // ... and the json-patch crate (RFC 6902) reads it back unchanged.
    let parsed: json_patch::Patch = serde_json::from_value(wire.clone()).unwrap();
    assert_eq!(serde_json::to_value(&parsed).unwrap(), wire);
    assert_eq!(
        wire,
        json!([
            {"op": "add", "path": "/metadata/annotations", "value": {
                "dapr.io/enabled": "false",
                "dapr.io/app-id": "f-ns",
                "dapr.io/app-protocol": "grpc",
                "dapr.io/app-port": "8080"}},
            {"op": "add", "path": "/metadata/labels", "value": {"openfunction.io/function": "f"}},
            {"op": "add", "path": "/spec/containers/0/env", "value": [
                {"name": "APP_PROTOCOL", "value": "grpc"},
                {"name": "FUNC_CONTEXT", "value": func_context("f", &sample_resolved("standalone").0.spec)},
                {"name": "DAPR_HOST", "value": "f-ns-dapr.ns.svc.cluster.local"},
                {"name": "DAPR_SIDECAR_IP", "value": "f-ns-dapr.ns.svc.cluster.local"},
                {"name": "DAPR_GRPC_ENDPOINT", "value": "http://f-ns-dapr.ns.svc.cluster.local:50001"},
                {"name": "DAPR_HTTP_ENDPOINT", "value": "http://f-ns-dapr.ns.svc.cluster.local:3500"}]}
        ])
    );
}

#[test]
fn already_patched_object_gives_empty_patch() {
    for mode in ["standalone", "sidecar", "disabled"] {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "spec": {"containers": [{"name": "function"}]}});
        let ops = ops_for(&pod, Kind::Pod, mode);
        let once = apply(&pod, &ops).unwrap();
        assert!(ops_for(&once, Kind::Pod, mode).is_empty(), "{mode}");
        // and an empty patch serializes as an empty JSON array
        assert_eq!(serde_json::to_string(&Vec::<Op>::new()).unwrap(), "[]");
    }
}
