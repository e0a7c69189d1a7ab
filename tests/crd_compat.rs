//! Every Function valid under the real OpenFunction v0.8.0 CRD must
//! deserialize into our types and serialize back without losing data.
//!
//! Instances are generated from the CRD's own `openAPIV3Schema`: a maximal
//! one (every property, two entries in every map and list), a minimal one
//! (required fields only), and a few hundred random subsets in between.
//! The CRD is test data outside the repository
//! (`../shared/fixtures/openfunction-v0.8.0/crds/`, or `$OPENFUNCTION_CRDS`);
//! when it is absent the test says so and passes.

use std::path::PathBuf;

use openfunction_dapr::function::Function;
use serde_json::{Map, Value, json};

fn crd_dir() -> Option<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    [
        std::env::var_os("OPENFUNCTION_CRDS").map(PathBuf::from),
        Some(manifest.join("../shared/fixtures/openfunction-v0.8.0/crds")),
        Some(PathBuf::from(
            "/work/shared/fixtures/openfunction-v0.8.0/crds",
        )),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.join("functions.core.openfunction.io.yaml").is_file())
}

/// Small deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);

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
enum Shape {
    Maximal,
    Minimal,
}

/// A value valid under `schema`. `rng` decides optional properties when set.
fn instance(schema: &Value, shape: Shape, rng: &mut Option<Rng>, depth: usize) -> Value {
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
            if out.is_empty()
                && schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
            {
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
        // untyped, preserve-unknown-fields (e.g. a Dapr metadata value)
        _ => json!({"any": ["json", 1, {"x": null}]}),
    }
}

fn function_from(spec: Value, status: Option<Value>) -> Value {
    let mut f = json!({
        "apiVersion": "core.openfunction.io/v1beta1",
        "kind": "Function",
        "metadata": {"name": "f", "namespace": "ns"},
        "spec": spec,
    });
    if let Some(s) = status {
        f["status"] = s;
    }
    f
}

fn round_trips(doc: &Value) {
    let f: Function =
        serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{e}\n{doc:#}"));
    let back = serde_json::to_value(&f).unwrap();
    assert_eq!(&back, doc, "data lost in round trip");
}

#[test]
fn every_function_valid_under_the_real_crd_round_trips() {
    let Some(dir) = crd_dir() else {
        eprintln!("SKIPPED: OpenFunction v0.8.0 CRDs not found (set OPENFUNCTION_CRDS)");
        return;
    };
    let text = std::fs::read_to_string(dir.join("functions.core.openfunction.io.yaml")).unwrap();
    let crd: Value = serde_saphyr::from_str(&text).unwrap();
    let version = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "v1beta1")
        .expect("v1beta1 in the CRD");
    let schema = &version["schema"]["openAPIV3Schema"]["properties"];
    let (spec, status) = (&schema["spec"], &schema["status"]);

    let maximal = function_from(
        instance(spec, Shape::Maximal, &mut None, 0),
        Some(instance(status, Shape::Maximal, &mut None, 0)),
    );
    // the maximal instance reaches the fields we model
    assert!(maximal["spec"]["serving"]["inputs"][1]["params"]["key-1"].is_string());
    assert!(maximal["spec"]["serving"]["bindings"]["key-0"]["metadata"][0]["value"].is_object());
    round_trips(&maximal);
    round_trips(&function_from(
        instance(spec, Shape::Minimal, &mut None, 0),
        None,
    ));
    for seed in 1..=300u64 {
        let mut rng = Some(Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let spec = instance(spec, Shape::Maximal, &mut rng, 0);
        round_trips(&function_from(spec, None));
    }
}
