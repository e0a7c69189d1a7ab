//! Functions generated from the real OpenFunction CRDs' `openAPIV3Schema`
//! (v0.8.0's `v1beta1`, v1.2.0's `v1beta2`): a maximal one (every property,
//! two entries in every map and list), a minimal one (required fields only)
//! and random subsets. The CRDs are test data outside the repository
//! (`$OFD_FIXTURES/openfunction-<release>/crds/`, see [`super::fixtures`];
//! `$OPENFUNCTION_CRDS` overrides the v0.8.0 directory).

use std::path::PathBuf;

use serde_json::{Map, Value, json};

/// The v0.8.0 CRD directory, or `None` after printing `SKIPPED: ...`.
pub fn real_crd_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("OPENFUNCTION_CRDS").map(PathBuf::from)
        && dir.join("functions.core.openfunction.io.yaml").is_file()
    {
        return Some(dir);
    }
    super::fixtures::fixtures(
        "openfunction-v0.8.0/crds",
        "the real OpenFunction v0.8.0 CRD",
    )
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
    schemas(real_crd_dir()?, "v1beta1")
}

/// OpenFunction v1.2.0's v1beta2 `spec` and `status` schemas, if here.
pub fn v1beta2_schemas() -> Option<(Value, Value)> {
    let dir = super::fixtures::fixtures(
        "openfunction-v1.2.0/crds",
        "the real OpenFunction v1.2.0 CRD",
    )?;
    schemas(dir, "v1beta2")
}

fn schemas(dir: PathBuf, version: &str) -> Option<(Value, Value)> {
    let text = std::fs::read_to_string(dir.join("functions.core.openfunction.io.yaml")).ok()?;
    let real: Value = serde_saphyr::from_multiple::<Value>(&text)
        .ok()?
        .into_iter()
        .find(|d| d["kind"] == "CustomResourceDefinition")?;
    let version = real["spec"]["versions"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == version)?
        .clone();
    let props = &version["schema"]["openAPIV3Schema"]["properties"];
    Some((props["spec"].clone(), props["status"].clone()))
}

/// The maximal, the minimal and 300 random Functions, each with a label.
pub fn instances(spec: &Value, status: &Value) -> Vec<(String, Value)> {
    instances_of("core.openfunction.io/v1beta1", spec, status)
}

/// [`instances`] of `apiVersion` `api_version`.
pub fn instances_of(api_version: &str, spec: &Value, status: &Value) -> Vec<(String, Value)> {
    let function_from = |spec, status| {
        let mut f = function_from(spec, status);
        f["apiVersion"] = api_version.into();
        f
    };
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
