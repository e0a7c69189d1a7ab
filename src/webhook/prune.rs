//! Parse only what the webhook reads of a workload.
//!
//! Profiling showed the admission hot path spent most of its time building
//! a `serde_json::Value` of the whole object (managedFields, probes,
//! volumes, …) only to read a handful of fields. [`workload`] parses the
//! object into a `Value` that keeps the fields on a fixed list and skips
//! the rest without allocating (`IgnoredAny`). Arrays on the list keep all
//! their elements, so JSON Patch indices computed on the pruned value are
//! the indices of the real object; a kept field of an unexpected type is
//! kept whole, so the patch builder reports it just as on the full object.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Which parts of a value to keep.
#[derive(Debug)]
pub enum Keep {
    /// The whole value.
    All,
    /// Of an object, only these fields (each pruned further).
    Fields(&'static [(&'static str, Keep)]),
    /// Of an array, every element, pruned alike.
    Items(&'static Keep),
}

const META: Keep = Keep::Fields(&[
    ("name", Keep::All),
    ("generateName", Keep::All),
    ("namespace", Keep::All),
    ("labels", Keep::All),
    ("annotations", Keep::All),
]);
const CONTAINER: Keep = Keep::Fields(&[("name", Keep::All), ("env", Keep::All)]);
const POD_SPEC: Keep = Keep::Fields(&[("containers", Keep::Items(&CONTAINER))]);

/// What the webhook reads of a Pod or a Deployment: `kind`, the metadata
/// names, labels and annotations, and the containers' names and env (of the
/// pod, or of the Deployment's pod template).
pub const WORKLOAD: Keep = Keep::Fields(&[
    ("apiVersion", Keep::All),
    ("kind", Keep::All),
    ("metadata", META),
    (
        "spec",
        Keep::Fields(&[
            ("containers", Keep::Items(&CONTAINER)),
            (
                "template",
                Keep::Fields(&[("metadata", META), ("spec", POD_SPEC)]),
            ),
        ]),
    ),
]);

/// Parse `json` keeping only what `keep` lists.
pub fn parse(json: &str, keep: &'static Keep) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(json);
    let v = keep.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Parse a workload object for the webhook (see [`WORKLOAD`]).
pub fn workload(json: &str) -> Result<Value, serde_json::Error> {
    parse(json, &WORKLOAD)
}

impl<'de> DeserializeSeed<'de> for &'static Keep {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self {
            Keep::All => serde::Deserialize::deserialize(d),
            _ => d.deserialize_any(Pruner(self)),
        }
    }
}

struct Pruner(&'static Keep);

impl<'de> Visitor<'de> for Pruner {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let item: &'static Keep = match self.0 {
            Keep::Items(item) => item,
            _ => &Keep::All,
        };
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element_seed(item)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        match self.0 {
            Keep::Fields(fields) => {
                while let Some(key) = map.next_key::<KeyStr<'de>>()? {
                    match fields.iter().find(|(name, _)| *name == key.as_str()) {
                        Some((name, keep)) => {
                            let v = map.next_value_seed(keep)?;
                            out.insert((*name).to_owned(), v);
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
            }
            // A map where a list was expected: keep it whole.
            _ => {
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    out.insert(k, v);
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// A map key, borrowed from the input when it has no escapes.
enum KeyStr<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl KeyStr<'_> {
    fn as_str(&self) -> &str {
        match self {
            KeyStr::Borrowed(s) => s,
            KeyStr::Owned(s) => s,
        }
    }
}

impl<'de> serde::Deserialize<'de> for KeyStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyStr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<KeyStr<'de>, E> {
                Ok(KeyStr::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyStr<'de>, E> {
                Ok(KeyStr::Owned(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<KeyStr<'de>, E> {
                Ok(KeyStr::Owned(v))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_only_listed_fields_and_every_array_element() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "b"}, "managedFields": [{"x": 1}], "uid": "u"},
            "spec": {
                "containers": [
                    {"name": "sidecar", "image": "i", "env": [{"name": "A", "value": "1"}], "probe": {}},
                    {"name": "function", "ports": [1], "env": null}
                ],
                "volumes": [{"name": "v"}]
            },
            "status": {"phase": "Pending"}
        });
        let pruned = workload(&pod.to_string()).unwrap();
        assert_eq!(
            pruned,
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "labels": {"a": "b"}},
                "spec": {"containers": [
                    {"name": "sidecar", "env": [{"name": "A", "value": "1"}]},
                    {"name": "function", "env": null}
                ]}
            })
        );
    }

    #[test]
    fn deployment_template_is_kept() {
        let d = json!({
            "kind": "Deployment",
            "metadata": {"labels": {"openfunction.io/function": "f"}},
            "spec": {"replicas": 3, "selector": {}, "template": {
                "metadata": {"annotations": {"x": "y"}, "creationTimestamp": null},
                "spec": {"containers": [{"name": "c", "env": []}], "volumes": []}
            }}
        });
        assert_eq!(
            workload(&d.to_string()).unwrap(),
            json!({
                "kind": "Deployment",
                "metadata": {"labels": {"openfunction.io/function": "f"}},
                "spec": {"template": {
                    "metadata": {"annotations": {"x": "y"}},
                    "spec": {"containers": [{"name": "c", "env": []}]}
                }}
            })
        );
    }

    #[test]
    fn unexpected_types_are_kept_whole() {
        for v in [
            json!({"metadata": "oops"}),
            json!({"metadata": {"labels": [1, 2]}}),
            json!({"spec": {"containers": {"name": "x", "deep": {"a": 1}}}}),
            json!({"spec": {"containers": ["str", 3, null, [1]]}}),
            json!({"spec": null}),
            json!([1, 2]),
            json!("text"),
        ] {
            assert_eq!(workload(&v.to_string()).unwrap(), v);
        }
    }

    #[test]
    fn escaped_keys_still_match() {
        let json = r#"{"metadata":{"l\u0061bels":{"k":"v"}}}"#;
        assert_eq!(
            workload(json).unwrap(),
            json!({"metadata": {"labels": {"k": "v"}}})
        );
    }

    #[test]
    fn invalid_json_is_an_error() {
        assert!(workload("{").is_err());
        assert!(workload(r#"{"a":1} trailing"#).is_err());
    }
}
