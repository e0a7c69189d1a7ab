//! The JSON Patch the webhook returns for a function workload (SPEC
//! section 5). Pure: raw JSON of a Pod or Deployment + resolved settings in,
//! RFC 6902 operations out. The patch is built directly from the fields we
//! own; the object is never round-tripped through typed structs, so fields
//! newer than our Kubernetes types survive untouched.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::model::fnv1a;
use crate::model::function::{FUNCTION_LABEL, WIRED_LABEL};
use crate::model::mode::{
    APP_ID, APP_PORT, APP_PROTOCOL, DAPR_ENABLED, GrpcEndpointForm, Mode, Resolved,
    is_proxy_address, is_proxy_endpoint,
};
use crate::model::workload::Kind;

pub const ENV_APP_PROTOCOL: &str = "APP_PROTOCOL";
pub const ENV_DAPR_HOST: &str = "DAPR_HOST";
pub const ENV_DAPR_SIDECAR_IP: &str = "DAPR_SIDECAR_IP";
pub use crate::model::func_context::{ENV_FUNC_CONTEXT, ENV_FUNC_CONTEXT_V1BETA2};
/// What the official Dapr SDKs read (Python, Go, Java, .NET, JavaScript).
pub const ENV_DAPR_GRPC_ENDPOINT: &str = "DAPR_GRPC_ENDPOINT";
pub const ENV_DAPR_HTTP_ENDPOINT: &str = "DAPR_HTTP_ENDPOINT";
/// The container that gets the env changes when present.
pub const FUNCTION_CONTAINER: &str = "function";

/// One RFC 6902 operation; `path` is an escaped JSON pointer.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    Add { path: String, value: Value },
    Replace { path: String, value: Value },
    Remove { path: String },
}

/// What the webhook injects into one workload of Function `function`.
#[derive(Clone, Copy, Debug)]
pub struct Injection<'a> {
    pub function: &'a str,
    pub namespace: &'a str,
    pub resolved: &'a Resolved,
    /// The `FUNC_CONTEXT` JSON of the function.
    pub func_context: &'a str,
    /// The operator's form of `DAPR_GRPC_ENDPOINT` (a Function's
    /// annotation, in `resolved`, wins).
    pub grpc_endpoint_form: GrpcEndpointForm,
    /// The `FUNC_CONTEXT_V1BETA2` JSON of a v1beta2 Function.
    pub func_context_v1beta2: Option<&'a str>,
}

/// The object cannot be patched because a field has the wrong JSON type.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    #[error("{0} is not a JSON object")]
    NotAnObject(String),
    #[error("{0} is not a JSON array")]
    NotAnArray(String),
    #[error("{0} is missing")]
    Missing(String),
}

/// Escape one JSON pointer reference token (`~` as `~0`, `/` as `~1`).
pub fn escape(token: &str) -> Cow<'_, str> {
    if token.contains(['~', '/']) {
        Cow::Owned(token.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(token)
    }
}

/// Build the patch for `object` (a Pod or a Deployment). An empty result
/// means the object already carries every setting.
pub fn build_patch(object: &Value, kind: Kind, inj: &Injection<'_>) -> Result<Vec<Op>, PatchError> {
    let mut ops = Vec::new();
    if !object.is_object() {
        return Err(PatchError::NotAnObject("object".into()));
    }
    if kind == Kind::Deployment {
        match object.pointer("/spec/template") {
            Some(Value::Object(_)) => {}
            Some(_) => return Err(PatchError::NotAnObject("/spec/template".into())),
            None => return Err(PatchError::Missing("/spec/template".into())),
        }
    }
    patch_metadata(object, kind, inj, &mut ops)?;
    patch_env(object, kind, inj, &mut ops)?;
    Ok(ops)
}

/// The value of [`WIRED_LABEL`]: 10 hex digits of a hash of every setting
/// the patch writes, so a template patched with other settings gets another
/// value (and the same settings the same value: the patch stays idempotent).
pub fn wired_hash(inj: &Injection<'_>) -> String {
    let r = inj.resolved;
    let port = r.app_port.to_string();
    let grpc = r.grpc_endpoint(inj.grpc_endpoint_form);
    let http = r.http_endpoint();
    let fields: [&str; 9] = [
        inj.function,
        r.mode.as_str(),
        &r.app_id,
        &r.app_protocol,
        &port,
        &r.dapr_host,
        &grpc,
        &http,
        inj.func_context,
    ];
    let mut bytes = Vec::new();
    // FUNC_CONTEXT_V1BETA2 only for a v1beta2 Function: a v1beta1
    // Function's hash is unchanged.
    for f in fields.into_iter().chain(inj.func_context_v1beta2) {
        // length-prefixed: no two field lists give the same bytes
        bytes.extend_from_slice(&(f.len() as u64).to_le_bytes());
        bytes.extend_from_slice(f.as_bytes());
    }
    format!("{:016x}", fnv1a(&bytes))[..10].to_owned()
}

/// A value the patch wants in a string map.
struct Wanted<'a> {
    key: &'static str,
    value: Cow<'a, str>,
    /// Overwrite a different existing value (else only set when absent).
    overwrite: bool,
}

fn patch_metadata(
    object: &Value,
    kind: Kind,
    inj: &Injection<'_>,
    ops: &mut Vec<Op>,
) -> Result<(), PatchError> {
    let r = inj.resolved;
    let enabled = if r.mode == Mode::Sidecar {
        "true"
    } else {
        "false"
    };
    let mut annotations = vec![Wanted {
        key: DAPR_ENABLED,
        value: Cow::Borrowed(enabled),
        overwrite: true,
    }];
    if r.mode != Mode::Disabled {
        annotations.push(Wanted {
            key: APP_ID,
            value: Cow::Borrowed(&r.app_id),
            overwrite: false,
        });
        annotations.push(Wanted {
            key: APP_PROTOCOL,
            value: Cow::Borrowed(&r.app_protocol),
            overwrite: false,
        });
        annotations.push(Wanted {
            key: APP_PORT,
            value: Cow::Owned(r.app_port.to_string()),
            overwrite: false,
        });
    }
    let mut labels = vec![Wanted {
        key: FUNCTION_LABEL,
        value: Cow::Borrowed(inj.function),
        overwrite: true,
    }];
    if kind == Kind::Deployment {
        // Pods of this template need no second admission.
        labels.push(Wanted {
            key: WIRED_LABEL,
            value: Cow::Owned(wired_hash(inj)),
            overwrite: true,
        });
    }

    let meta_path = kind.meta_path();
    match object.pointer(meta_path) {
        None | Some(Value::Null) => {
            let mut meta = Map::new();
            meta.insert("annotations".into(), new_map(&annotations));
            meta.insert("labels".into(), new_map(&labels));
            ops.push(Op::Add {
                path: meta_path.to_owned(),
                value: Value::Object(meta),
            });
        }
        Some(Value::Object(meta)) => {
            patch_string_map(meta, meta_path, "annotations", &annotations, ops)?;
            patch_string_map(meta, meta_path, "labels", &labels, ops)?;
        }
        Some(_) => return Err(PatchError::NotAnObject(meta_path.into())),
    }
    Ok(())
}

fn new_map(wanted: &[Wanted<'_>]) -> Value {
    Value::Object(
        wanted
            .iter()
            .map(|w| {
                (
                    w.key.to_owned(),
                    Value::String(w.value.clone().into_owned()),
                )
            })
            .collect(),
    )
}

fn patch_string_map(
    meta: &Map<String, Value>,
    meta_path: &str,
    field: &str,
    wanted: &[Wanted<'_>],
    ops: &mut Vec<Op>,
) -> Result<(), PatchError> {
    let path = format!("{meta_path}/{field}");
    match meta.get(field) {
        None | Some(Value::Null) => ops.push(Op::Add {
            path,
            value: new_map(wanted),
        }),
        Some(Value::Object(map)) => {
            for w in wanted {
                let entry = format!("{path}/{}", escape(w.key));
                match map.get(w.key) {
                    None => ops.push(Op::Add {
                        path: entry,
                        value: Value::String(w.value.clone().into_owned()),
                    }),
                    // A non-string value is invalid Kubernetes; make it right.
                    Some(Value::String(v)) if v == w.value.as_ref() || !w.overwrite => {}
                    Some(_) => ops.push(Op::Replace {
                        path: entry,
                        value: Value::String(w.value.clone().into_owned()),
                    }),
                }
            }
        }
        Some(_) => return Err(PatchError::NotAnObject(path)),
    }
    Ok(())
}

fn patch_env(
    object: &Value,
    kind: Kind,
    inj: &Injection<'_>,
    ops: &mut Vec<Op>,
) -> Result<(), PatchError> {
    let containers_path = format!("{}/containers", kind.spec_path());
    let containers = match object.pointer(&containers_path) {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(c)) => c,
        Some(_) => return Err(PatchError::NotAnArray(containers_path)),
    };
    let Some(index) = containers
        .iter()
        .position(|c| c.get("name").and_then(Value::as_str) == Some(FUNCTION_CONTAINER))
        .or(if containers.is_empty() { None } else { Some(0) })
    else {
        // A Pod without containers is invalid; the API server rejects it.
        return Ok(());
    };
    let container_path = format!("{containers_path}/{index}");
    let container = match &containers[index] {
        Value::Object(c) => c,
        _ => return Err(PatchError::NotAnObject(container_path)),
    };

    let r = inj.resolved;
    let standalone = r.mode == Mode::Standalone;
    let (grpc_endpoint, http_endpoint) = if standalone {
        (r.grpc_endpoint(inj.grpc_endpoint_form), r.http_endpoint())
    } else {
        Default::default()
    };
    // (name, value, overwrite an existing different value)
    let mut wanted: Vec<(&'static str, &str, bool)> = vec![
        (ENV_APP_PROTOCOL, &r.app_protocol, true),
        (ENV_FUNC_CONTEXT, inj.func_context, false),
    ];
    if let Some(v2) = inj.func_context_v1beta2 {
        wanted.push((ENV_FUNC_CONTEXT_V1BETA2, v2, false));
    }
    if standalone {
        wanted.push((ENV_DAPR_HOST, &r.dapr_host, true));
        wanted.push((ENV_DAPR_SIDECAR_IP, &r.dapr_host, true));
        wanted.push((ENV_DAPR_GRPC_ENDPOINT, &grpc_endpoint, true));
        wanted.push((ENV_DAPR_HTTP_ENDPOINT, &http_endpoint, true));
    }
    let env_value = |name: &str, value: &str| {
        let mut m = Map::with_capacity(2);
        m.insert("name".into(), Value::String(name.to_owned()));
        m.insert("value".into(), Value::String(value.to_owned()));
        Value::Object(m)
    };

    let env_path = format!("{container_path}/env");
    let env = match container.get("env") {
        None | Some(Value::Null) => {
            let list = wanted.iter().map(|(n, v, _)| env_value(n, v)).collect();
            ops.push(Op::Add {
                path: env_path,
                value: Value::Array(list),
            });
            return Ok(());
        }
        Some(Value::Array(env)) => env,
        Some(_) => return Err(PatchError::NotAnArray(env_path)),
    };

    let mut seen = vec![false; wanted.len()];
    let mut removals = Vec::new();
    for (j, entry) in env.iter().enumerate() {
        let Some(name) = entry.get("name").and_then(Value::as_str) else {
            continue;
        };
        if let Some(w) = wanted.iter().position(|(n, _, _)| *n == name) {
            let (_, value, overwrite) = wanted[w];
            if seen[w] {
                // A duplicate of a variable we set (upstream appended
                // duplicates): the first occurrence is the one we keep.
                if overwrite {
                    removals.push(j);
                }
                continue;
            }
            seen[w] = true;
            // An explicit `null` means absent, as it does to Kubernetes.
            let plain = entry.get("valueFrom").is_none_or(Value::is_null);
            match entry.get("value").filter(|v| !v.is_null()) {
                Some(Value::String(v)) if plain && (v == value || !overwrite) => {}
                None if !plain && !overwrite => {}
                Some(Value::String(_)) if plain => ops.push(Op::Replace {
                    path: format!("{env_path}/{j}/value"),
                    value: Value::String(value.to_owned()),
                }),
                _ => ops.push(Op::Replace {
                    path: format!("{env_path}/{j}"),
                    value: env_value(name, value),
                }),
            }
        } else if !standalone && holds_proxy_address(name, entry, inj.namespace) {
            removals.push(j);
        }
    }
    // Replacements used the original indices; remove from the back so the
    // remaining indices stay valid, then append what is missing.
    for j in removals.into_iter().rev() {
        ops.push(Op::Remove {
            path: format!("{env_path}/{j}"),
        });
    }
    for (w, (name, value, _)) in wanted.iter().enumerate() {
        if !seen[w] {
            ops.push(Op::Add {
                path: format!("{env_path}/-"),
                value: env_value(name, value),
            });
        }
    }
    Ok(())
}

/// True for one of our proxy variables whose plain value is a proxy address
/// (what standalone mode wrote; anything else is the user's and stays).
fn holds_proxy_address(name: &str, entry: &Value, namespace: &str) -> bool {
    let Some(value) = entry.get("value").and_then(Value::as_str) else {
        return false;
    };
    match name {
        ENV_DAPR_HOST | ENV_DAPR_SIDECAR_IP => is_proxy_address(value, namespace),
        ENV_DAPR_GRPC_ENDPOINT | ENV_DAPR_HTTP_ENDPOINT => is_proxy_endpoint(value, namespace),
        _ => false,
    }
}

/// Convert to the `json-patch` crate's type, to apply a patch locally.
pub fn to_json_patch(ops: &[Op]) -> json_patch::Patch {
    // Our ops serialize to valid RFC 6902 by construction.
    serde_json::from_value(serde_json::to_value(ops).unwrap_or_default())
        .unwrap_or(json_patch::Patch(Vec::new()))
}

/// Apply `ops` to a copy of `object`.
pub fn apply(object: &Value, ops: &[Op]) -> Result<Value, json_patch::PatchError> {
    let mut out = object.clone();
    json_patch::patch(&mut out, &to_json_patch(ops))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::function::FunctionSpec;
    use crate::model::mode::resolve;

    fn resolved(annotations: serde_json::Value) -> Resolved {
        let spec: FunctionSpec = serde_json::from_value(serde_json::json!({
            "image": "i", "serving": {"runtime": "knative", "annotations": annotations}
        }))
        .unwrap();
        resolve("f", "ns", &spec, "cluster.local")
    }

    fn hash(r: &Resolved, ctx: &str, form: GrpcEndpointForm) -> String {
        wired_hash(&Injection {
            function: "f",
            namespace: "ns",
            resolved: r,
            func_context: ctx,
            grpc_endpoint_form: form,
            func_context_v1beta2: None,
        })
    }

    #[test]
    fn wired_hash_is_a_short_stable_label_value_of_the_settings() {
        let standalone = resolved(serde_json::json!({"openfunction.io/enable-dapr": "true"}));
        let h = hash(&standalone, "{}", GrpcEndpointForm::Url);
        assert_eq!(h.len(), 10);
        assert!(
            h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        // Pinned: a new value rolls every wired Deployment on upgrade.
        assert_eq!(
            h, "bd13b29bff",
            "changing the hash input rolls every wired Deployment"
        );
        assert_eq!(h, hash(&standalone, "{}", GrpcEndpointForm::Url));
        // Every setting the patch writes changes it.
        let sidecar = resolved(serde_json::json!({
            "openfunction.io/enable-dapr": "true", "openfunction.io/dapr-service-mode": "sidecar"}));
        let other_proto = resolved(serde_json::json!({
            "openfunction.io/enable-dapr": "true", "dapr.io/app-protocol": "http"}));
        let others = [
            hash(&sidecar, "{}", GrpcEndpointForm::Url),
            hash(&standalone, "{\"a\":1}", GrpcEndpointForm::Url),
            hash(&standalone, "{}", GrpcEndpointForm::HostPort),
            hash(&other_proto, "{}", GrpcEndpointForm::Url),
        ];
        for o in &others {
            assert_ne!(&h, o);
        }
    }
}
