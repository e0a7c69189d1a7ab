//! Functions generated from the real OpenFunction v0.8.0 CRD's
//! `openAPIV3Schema`: a maximal one (every property, two entries in every
//! map and list), a minimal one (required fields only) and random subsets.
//! The CRD is test data outside the repository
//! (`../shared/fixtures/openfunction-v0.8.0/crds/`, or `$OPENFUNCTION_CRDS`).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

pub fn real_crd_dir() -> Option<PathBuf> {
    [
        std::env::var_os("OPENFUNCTION_CRDS").map(PathBuf::from),
        Some(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/fixtures/openfunction-v0.8.0/crds"),
        ),
        Some(PathBuf::from(
            "/work/shared/fixtures/openfunction-v0.8.0/crds",
        )),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.join("functions.core.openfunction.io.yaml").is_file())
}

/// Small deterministic PRNG (xorshift64*), so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn coin(&mut self) -> bool {
        self.next().is_multiple_of(2)
    }
}

#[derive(Clone, Copy)]
pub enum Shape {
    Maximal,
    Minimal,
}

/// A value valid under `schema`. `rng` decides optional properties when set.
pub fn instance(schema: &Value, shape: Shape, rng: &mut Option<Rng>, depth: usize) -> Value {
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        return e[0].clone();
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return json!("50%");
    }
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    match ty {
        "object" => {
            let mut out = Map::new();
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, sub) in props {
                    let wanted = required.contains(&name.as_str())
                        || match (shape, rng.as_mut()) {
                            (_, Some(r)) => r.coin(),
                            (Shape::Maximal, None) => true,
                            (Shape::Minimal, None) => false,
                        };
                    if wanted && depth < 30 {
                        out.insert(name.clone(), instance(sub, shape, rng, depth + 1));
                    }
                }
            }
            if let Some(add) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                let n = match shape {
                    Shape::Maximal => 2,
                    Shape::Minimal => 0,
                };
                for i in 0..n {
                    out.insert(format!("key-{i}"), instance(add, shape, rng, depth + 1));
                }
            }
            if out.is_empty() && preserves(schema) {
                out.insert(
                    "unknown".into(),
                    json!({"nested": [1, "two", {"three": true}]}),
                );
            }
            Value::Object(out)
        }
        "array" => {
            let n = match shape {
                Shape::Maximal => 2,
                Shape::Minimal => 1,
            };
            let items = schema
                .get("items")
                .cloned()
                .unwrap_or(json!({"type": "string"}));
            Value::Array(
                (0..n)
                    .map(|_| instance(&items, shape, rng, depth + 1))
                    .collect(),
            )
        }
        "string" => json!("value"),
        "integer" => json!(7),
        "number" => json!(1.5),
        "boolean" => json!(true),
        _ => json!({"any": ["json", 1, {"x": null}]}),
    }
}

pub fn function_from(spec: Value, status: Option<Value>) -> Value {
    let mut f = json!({
        "apiVersion": "core.openfunction.io/v1beta1",
        "kind": "Function",
        "metadata": {"name": "f", "namespace": "ns", "labels": {"a": "b"}},
        "spec": spec,
    });
    if let Some(s) = status {
        f["status"] = s;
    }
    f
}

fn preserves(schema: &Value) -> bool {
    schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
}

/// The real CRD's v1beta1 `spec` and `status` schemas, if the CRD is here.
pub fn v1beta1_schemas() -> Option<(Value, Value)> {
    let dir = real_crd_dir()?;
    let text = std::fs::read_to_string(dir.join("functions.core.openfunction.io.yaml")).ok()?;
    let real: Value = serde_saphyr::from_str(&text).ok()?;
    let version = real["spec"]["versions"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == "v1beta1")?
        .clone();
    let props = &version["schema"]["openAPIV3Schema"]["properties"];
    Some((props["spec"].clone(), props["status"].clone()))
}

/// The maximal, the minimal and 300 random Functions, each with a label.
pub fn instances(spec: &Value, status: &Value) -> Vec<(String, Value)> {
    let mut out = vec![
        (
            "the maximal Function of the real CRD".to_owned(),
            function_from(
                instance(spec, Shape::Maximal, &mut None, 0),
                Some(instance(status, Shape::Maximal, &mut None, 0)),
            ),
        ),
        (
            "the minimal Function of the real CRD".to_owned(),
            function_from(instance(spec, Shape::Minimal, &mut None, 0), None),
        ),
    ];
    for seed in 1..=300u64 {
        let mut rng = Some(Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let spec = instance(spec, Shape::Maximal, &mut rng, 0);
        let status = instance(status, Shape::Maximal, &mut rng, 0);
        out.push((
            format!("the random Function #{seed} of the real CRD"),
            function_from(spec, Some(status)),
        ));
    }
    out
}
