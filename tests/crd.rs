//! The Function CRD we ship (`manifests/crd/`):
//!
//! - the checked-in file is exactly what `openfunction-dapr crd` prints;
//! - its schema is structural (what the API server requires of a v1 CRD);
//! - it accepts, without pruning anything, every Function valid under the
//!   real OpenFunction v0.8.0 CRD: a maximal and a minimal instance and a
//!   few hundred random ones generated from that CRD's own schema, and every
//!   fixture of `tests/fixtures/functions`;
//! - its typed part follows our Rust types.
//!
//! The validator below implements the part of the API server's structural
//! schema validation the schema uses: `type` (and `format: int32`),
//! `properties`, `required`, `enum`, `additionalProperties`, `items` and
//! `x-kubernetes-preserve-unknown-fields`; a field the schema does not know,
//! outside a preserve-unknown-fields node, is reported as pruned.

use std::collections::BTreeMap;
use std::path::Path;

mod common;

use common::real_crd::{self, function_from};
use openfunction_dapr::model::crd;
use openfunction_dapr::model::function::{DaprComponent, DaprIo, FunctionSpec, ServingSpec};
use serde_json::{Value, json};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

fn schema() -> Value {
    let crd = serde_json::to_value(crd::function_crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

// ---------------------------------------------------------------------------
// The validator.

fn preserves(schema: &Value) -> bool {
    schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
}

/// Errors of `value` under `schema`, each prefixed with its JSON path.
fn validate(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(format!("{path}: {value} is not one of {allowed:?}"));
    }
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let type_ok = match ty {
        "" => true,
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        other => {
            errors.push(format!("{path}: unknown type {other}"));
            false
        }
    };
    if !type_ok {
        errors.push(format!("{path}: {value} is not of type {ty}"));
        return;
    }
    if ty == "integer" && schema.get("format").and_then(Value::as_str) == Some("int32") {
        let n = value.as_i64();
        if n.is_none_or(|n| i32::try_from(n).is_err()) {
            errors.push(format!("{path}: {value} is not an int32"));
        }
    }
    if path == ".metadata" {
        return; // ObjectMeta: validated by the API server itself, never pruned
    }
    if let Some(object) = value.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for r in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(r) {
                    errors.push(format!("{path}: required field {r} is missing"));
                }
            }
        }
        let additional = schema.get("additionalProperties");
        for (k, v) in object {
            let sub_path = format!("{path}.{k}");
            if let Some(sub) = props.and_then(|p| p.get(k)) {
                validate(sub, v, &sub_path, errors);
            } else if let Some(add) = additional.filter(|a| a.is_object()) {
                validate(add, v, &sub_path, errors);
            } else if additional == Some(&Value::Bool(true)) || preserves(schema) {
                // kept as is
            } else {
                errors.push(format!("{sub_path}: unknown field, would be pruned"));
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, v) in array.iter().enumerate() {
            validate(items, v, &format!("{path}[{i}]"), errors);
        }
    }
}

fn errors_of(value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    validate(&schema(), value, "", &mut errors);
    errors
}

fn assert_accepted(value: &Value, what: &str) {
    let errors = errors_of(value);
    assert!(
        errors.is_empty(),
        "{what} is rejected or pruned by our CRD:\n  {}\n{value:#}",
        errors.join("\n  ")
    );
}

/// The API server's structural schema rules that matter here.
fn check_structural(schema: &Value, path: &str, problems: &mut Vec<String>) {
    const KEYS: [&str; 9] = [
        "type",
        "description",
        "properties",
        "additionalProperties",
        "items",
        "required",
        "enum",
        "format",
        "x-kubernetes-preserve-unknown-fields",
    ];
    let Some(node) = schema.as_object() else {
        problems.push(format!("{path}: not an object"));
        return;
    };
    for k in node.keys() {
        if !KEYS.contains(&k.as_str()) {
            problems.push(format!("{path}: unexpected keyword {k}"));
        }
    }
    let ty = node.get("type").and_then(Value::as_str).unwrap_or("");
    if ty.is_empty() && !preserves(schema) {
        problems.push(format!("{path}: no type (and not preserve-unknown-fields)"));
    }
    if node.contains_key("properties") && node.contains_key("additionalProperties") {
        problems.push(format!(
            "{path}: properties and additionalProperties together"
        ));
    }
    if (node.contains_key("properties") || node.contains_key("additionalProperties"))
        && ty != "object"
    {
        problems.push(format!("{path}: properties on a non-object"));
    }
    if node.contains_key("items") != (ty == "array") {
        problems.push(format!(
            "{path}: items without array, or array without items"
        ));
    }
    if let Some(required) = node.get("required").and_then(Value::as_array) {
        let props = node.get("properties").and_then(Value::as_object);
        for r in required.iter().filter_map(Value::as_str) {
            if !props.is_some_and(|p| p.contains_key(r)) {
                problems.push(format!("{path}: required {r} is not a property"));
            }
        }
    }
    if path == ".metadata" && node.len() != 1 {
        problems.push(format!(
            "{path}: only `type: object` is allowed on metadata"
        ));
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, sub) in props {
            check_structural(sub, &format!("{path}.{k}"), problems);
        }
    }
    for key in ["additionalProperties", "items"] {
        if let Some(sub) = node.get(key).filter(|s| s.is_object()) {
            check_structural(sub, &format!("{path}[{key}]"), problems);
        }
    }
}

// ---------------------------------------------------------------------------
// Tests.

#[test]
fn checked_in_crd_is_the_generated_one() {
    let path = Path::new(MANIFEST_DIR).join(crd::CRD_PATH);
    let checked_in =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        checked_in == crd::function_crd_yaml(),
        "{} is out of date; regenerate it with:\n  cargo run -- crd > {}",
        path.display(),
        crd::CRD_PATH
    );
}

#[test]
fn schema_is_structural() {
    let mut problems = Vec::new();
    let s = schema();
    check_structural(&s, "", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(s["type"], "object");
    // Nothing under spec or status is ever pruned.
    for p in [
        &s["properties"]["spec"],
        &s["properties"]["spec"]["properties"]["serving"],
        &s["properties"]["status"],
    ] {
        assert!(preserves(p), "{p}");
    }
}

#[test]
fn the_validator_is_not_vacuous() {
    let ok = json!({
        "apiVersion": "core.openfunction.io/v1beta1", "kind": "Function",
        "metadata": {"name": "f"},
        "spec": {"image": "i", "serving": {"runtime": "async"}}
    });
    assert_accepted(&ok, "a minimal Function");
    let mut cases: Vec<(Value, &str)> = Vec::new();
    let mut bad = ok.clone();
    bad["spec"]["port"] = json!("8080");
    cases.push((bad, "not of type integer"));
    let mut bad = ok.clone();
    bad["spec"]["port"] = json!(1u64 << 40);
    cases.push((bad, "int32"));
    let mut bad = ok.clone();
    bad["spec"].as_object_mut().unwrap().remove("image");
    cases.push((bad, "required field image"));
    let mut bad = ok.clone();
    bad["spec"]["serving"]["runtime"] = json!("lambda");
    cases.push((bad, "is not one of"));
    let mut bad = ok.clone();
    bad["spec"]["serving"]["annotations"] = json!({"a": 1});
    cases.push((bad, "not of type string"));
    let mut bad = ok.clone();
    bad["spec"]["serving"]["inputs"] = json!([{"name": "x"}]);
    cases.push((bad, "required field component"));
    let mut bad = ok.clone();
    bad["spec"]["serving"]["bindings"] = json!({"c": {"type": "t", "version": "v1"}});
    cases.push((bad, "required field metadata"));
    let mut bad = ok.clone();
    bad["extra"] = json!(1);
    cases.push((bad, "would be pruned"));
    for (bad, want) in cases {
        let errors = errors_of(&bad);
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "expected an error containing {want:?}, got {errors:?} for {bad}"
        );
    }
}

#[test]
fn every_function_valid_under_the_real_crd_is_accepted_unpruned() {
    let Some((spec, status)) = real_crd::v1beta1_schemas() else {
        return; // the helper printed SKIPPED
    };
    let all = real_crd::instances(&spec, &status);
    let maximal = &all[0].1;
    assert!(maximal["spec"]["serving"]["inputs"][1]["params"]["key-1"].is_string());
    assert!(maximal["spec"]["build"].is_object());
    for (label, f) in &all {
        assert_accepted(f, label);
    }
    let spec = &spec;

    // Where both CRDs type a field, they agree (so what we accept, a
    // cluster that later installs OpenFunction accepts too).
    let ours = schema();
    let mut compared = 0;
    compare(&ours["properties"]["spec"], spec, ".spec", &mut compared);
    assert!(compared > 20, "only {compared} fields compared");
}

/// Asserts that every typed node of `ours` has the same type, required list
/// and enum as the same node of `real`.
fn compare(ours: &Value, real: &Value, path: &str, compared: &mut usize) {
    if ours.get("type").is_none() {
        return; // preserve-unknown-fields: anything goes
    }
    // Opaque in our types (`serde_json::Value`): the type only.
    let opaque = preserves(ours) && ours.get("properties").is_none();
    for key in ["type", "required", "enum", "format"] {
        if opaque && key != "type" {
            continue;
        }
        let sorted = |v: Option<&Value>| {
            let mut v = v.cloned();
            if let Some(Value::Array(items)) = v.as_mut() {
                items.sort_by_key(Value::to_string);
            }
            v
        };
        let (a, b) = (sorted(ours.get(key)), sorted(real.get(key)));
        assert_eq!(a, b, "{path}: {key} differs from the real CRD");
    }
    *compared += 1;
    if opaque {
        return;
    }
    if let Some(props) = ours.get("properties").and_then(Value::as_object) {
        for (k, sub) in props {
            let real_sub = &real["properties"][k];
            assert!(real_sub.is_object(), "{path}.{k}: not in the real CRD");
            compare(sub, real_sub, &format!("{path}.{k}"), compared);
        }
    }
    for key in ["additionalProperties", "items"] {
        if let Some(sub) = ours.get(key).filter(|s| s.is_object()) {
            compare(sub, &real[key], &format!("{path}[{key}]"), compared);
        }
    }
}

#[test]
fn every_fixture_function_is_accepted() {
    let dir = Path::new(MANIFEST_DIR).join("tests/fixtures/functions");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_saphyr::from_multiple::<Value>(&text).unwrap() {
            if doc["kind"] == "Function" {
                assert_accepted(&doc, &path.display().to_string());
                n += 1;
            }
        }
    }
    assert!(n >= 6, "only {n} fixtures");
    // The examples too.
    let text =
        std::fs::read_to_string(Path::new(MANIFEST_DIR).join("examples/functions.yaml")).unwrap();
    for doc in serde_saphyr::from_multiple::<Value>(&text).unwrap() {
        if doc["kind"] == "Function" {
            assert_accepted(&doc, "examples/functions.yaml");
        }
    }
}

/// Every field our types serialize is typed in the schema, at the same
/// place: the schema follows the Rust types.
#[test]
fn schema_follows_the_rust_types() {
    let io = DaprIo {
        name: "n".into(),
        component: "c".into(),
        topic: Some("t".into()),
        operation: Some("o".into()),
        params: Some(BTreeMap::from([("k".into(), "v".into())])),
        extra: BTreeMap::new(),
    };
    let component = DaprComponent {
        type_: "bindings.kafka".into(),
        version: "v1".into(),
        metadata: vec![json!({"name": "brokers", "value": "b"})],
        extra: BTreeMap::new(),
    };
    let spec = FunctionSpec {
        version: Some("v1".into()),
        image: "img".into(),
        port: Some(8080),
        serving: Some(ServingSpec {
            runtime: Some("async".into()),
            annotations: Some(BTreeMap::from([("a".into(), "b".into())])),
            inputs: Some(vec![io.clone()]),
            outputs: Some(vec![io]),
            bindings: Some(BTreeMap::from([("c".into(), component.clone())])),
            pubsub: Some(BTreeMap::from([("p".into(), component)])),
            template: Some(json!({"containers": []})),
            scale_options: Some(json!({"minReplicas": 1})),
            triggers: Some(json!([{"type": "kafka", "metadata": {}}])),
            extra: BTreeMap::new(),
        }),
        extra: BTreeMap::new(),
        v1beta2: None,
    };
    let value = serde_json::to_value(&spec).unwrap();
    let s = schema();
    let mut missing = Vec::new();
    typed_paths(&s["properties"]["spec"], &value, ".spec", &mut missing);
    assert!(
        missing.is_empty(),
        "fields of our types not typed in the schema: {missing:?}"
    );
    assert_accepted(
        &function_from(value, None),
        "a Function built from our types",
    );
}

/// Collects the object keys of `value` that `schema` does not type.
/// Opaque values (`serde_json::Value` in our types) are not descended.
fn typed_paths(schema: &Value, value: &Value, path: &str, missing: &mut Vec<String>) {
    if schema.get("type").is_none() || (preserves(schema) && schema.get("properties").is_none()) {
        return;
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let sub = schema
                    .get("properties")
                    .and_then(|p| p.get(k))
                    .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()));
                match sub {
                    Some(sub) => typed_paths(sub, v, &format!("{path}.{k}"), missing),
                    None => missing.push(format!("{path}.{k}")),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                typed_paths(&schema["items"], v, &format!("{path}[{i}]"), missing);
            }
        }
        _ => {}
    }
}
