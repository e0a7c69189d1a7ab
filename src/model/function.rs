//! Types of the OpenFunction `core.openfunction.io/v1beta1` resources we read.
//!
//! Only the fields this project acts on are modelled; everything else a
//! Function carries is kept in `extra` maps (`#[serde(flatten)]`) so a
//! Function read and written back loses nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::v1beta2::{self, ApiVersion};

/// Fields we do not model, kept verbatim.
pub type Extra = BTreeMap<String, Value>;

/// `Function.spec` of `core.openfunction.io/v1beta1`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "core.openfunction.io",
    version = "v1beta1",
    kind = "Function",
    plural = "functions",
    shortname = "fn",
    namespaced,
    status = "FunctionStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct FunctionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<ServingSpec>,
    #[serde(flatten)]
    pub extra: Extra,
    /// Set when the Function was read as `v1beta2`
    /// ([`crate::model::v1beta2::normalize`]): its v1beta2 spec as read.
    /// Never serialized: a Function is never written back.
    #[serde(skip)]
    #[schemars(skip)]
    pub v1beta2: Option<Arc<v1beta2::Source>>,
}

/// Function status: not interpreted, kept verbatim.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct FunctionStatus {
    #[serde(flatten)]
    pub extra: Extra,
}

/// `Function.spec.serving`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServingSpec {
    /// `knative` or `async`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Vec<DaprIo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<DaprIo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bindings: Option<BTreeMap<String, DaprComponent>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pubsub: Option<BTreeMap<String, DaprComponent>>,
    /// Pod template overrides (a partial PodSpec); kept as raw JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_options: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One entry of `spec.serving.inputs` / `outputs`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaprIo {
    pub name: String,
    pub component: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A Dapr component spec in `spec.serving.bindings` / `pubsub`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaprComponent {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub version: String,
    /// `[{name, value, secretKeyRef}]`; `value` may be any JSON value.
    #[serde(default)]
    pub metadata: Vec<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `Serving` of `core.openfunction.io/v1beta1`: we only follow its labels and
/// ownerReferences back to the Function, so the spec is kept opaque.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "core.openfunction.io",
    version = "v1beta1",
    kind = "Serving",
    plural = "servings",
    namespaced,
    schema = "disabled"
)]
pub struct ServingResourceSpec {
    #[serde(flatten)]
    pub extra: Extra,
}

/// The label that names a workload's Function.
pub const FUNCTION_LABEL: &str = "openfunction.io/function";
/// The label OpenFunction puts on the workloads it creates for a Serving.
pub const SERVING_LABEL: &str = "openfunction.io/serving";
/// The label of proxy pods; such pods are never function workloads.
pub const PROXY_LABEL: &str = "openfunction.io/proxy";
/// The label the webhook puts on a Deployment's pod template it patched: a
/// short hash of the settings it wrote. The shipped webhook configuration
/// does not send pods carrying it to the webhook again (their template was
/// already patched), so scaling out needs no webhook call.
pub const WIRED_LABEL: &str = "openfunction.io/dapr-wired";

impl Serving {
    /// The Function this Serving belongs to: its `openfunction.io/function`
    /// label, else its controller ownerReference of kind Function.
    pub fn function_name(&self) -> Option<&str> {
        serving_function_name(&self.metadata)
    }
}

/// See [`Serving::function_name`]; works on any object's metadata.
pub fn serving_function_name(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<&str> {
    if let Some(name) = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(FUNCTION_LABEL))
        .filter(|n| !n.is_empty())
    {
        return Some(name);
    }
    meta.owner_references.as_ref().and_then(|refs| {
        refs.iter()
            .find(|r| {
                r.controller == Some(true)
                    && r.kind == "Function"
                    && r.api_version.starts_with("core.openfunction.io/")
            })
            .map(|r| r.name.as_str())
    })
}

impl Function {
    /// The version this Function was read as.
    pub fn read_version(&self) -> ApiVersion {
        self.spec.read_version()
    }
}

impl FunctionSpec {
    /// This spec, marked as read from a v1beta2 Function.
    pub fn with_v1beta2(mut self, source: Arc<v1beta2::Source>) -> Self {
        self.v1beta2 = Some(source);
        self
    }

    /// The version the Function was read as.
    pub fn read_version(&self) -> ApiVersion {
        if self.v1beta2.is_some() {
            ApiVersion::V1beta2
        } else {
            ApiVersion::V1beta1
        }
    }

    /// Whether dapr is enabled when `openfunction.io/enable-dapr` is absent:
    /// for v1beta1, `spec.serving.inputs` or `outputs` non-empty; for
    /// v1beta2, as OpenFunction v1.2.0 ([`v1beta2::ServingImpl::dapr_by_default`]).
    pub fn dapr_by_default(&self) -> bool {
        if let Some(src) = &self.v1beta2 {
            return src
                .spec
                .serving
                .as_ref()
                .is_some_and(|s| s.dapr_by_default());
        }
        self.serving.as_ref().is_some_and(|s| {
            s.inputs.as_ref().is_some_and(|v| !v.is_empty())
                || s.outputs.as_ref().is_some_and(|v| !v.is_empty())
        })
    }

    /// What [`Self::dapr_by_default`] looks at, for messages.
    pub fn dapr_sources(&self) -> &'static str {
        if self.v1beta2.is_some() {
            "dapr triggers, inputs, outputs or states"
        } else {
            "inputs or outputs"
        }
    }

    /// The serving annotations, or an empty map.
    pub fn serving_annotations(&self) -> Option<&BTreeMap<String, String>> {
        self.serving.as_ref().and_then(|s| s.annotations.as_ref())
    }

    /// True when the serving runtime is `async` (case ignored).
    pub fn is_async(&self) -> bool {
        self.serving
            .as_ref()
            .and_then(|s| s.runtime.as_deref())
            .is_some_and(|r| r.trim().eq_ignore_ascii_case("async"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/functions");

    fn load_all() -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(FIXTURES).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for doc in serde_saphyr::from_multiple::<Value>(&text).unwrap() {
                out.push((path.display().to_string(), doc));
            }
        }
        assert!(out.len() >= 6, "fixtures missing: {}", out.len());
        out
    }

    #[test]
    fn every_fixture_deserializes_and_round_trips_losslessly() {
        for (path, doc) in load_all() {
            let f: Function =
                serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{path}: {e}"));
            let back = serde_json::to_value(&f).unwrap();
            assert_eq!(back, doc, "{path}: data lost in round trip");
        }
    }

    #[test]
    fn unknown_fields_are_kept() {
        let doc = serde_json::json!({
            "apiVersion": "core.openfunction.io/v1beta1",
            "kind": "Function",
            "metadata": {"name": "f", "namespace": "ns"},
            "spec": {
                "image": "img",
                "futureField": {"a": [1, 2]},
                "route": {"gatewayRef": {"name": "gw"}},
                "serving": {
                    "runtime": "async",
                    "labels": {"x": "y"},
                    "timeout": "10s",
                    "inputs": [{"name": "i", "component": "c", "futureIo": true}],
                    "bindings": {"c": {"type": "bindings.cron", "version": "v1",
                        "metadata": [{"name": "schedule", "value": {"nested": 1}}],
                        "ignoreErrors": true}}
                }
            },
            "status": {"serving": {"state": "Running"}}
        });
        let f: Function = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(serde_json::to_value(&f).unwrap(), doc);
        assert!(f.spec.is_async());
    }

    #[test]
    fn serving_points_to_function_by_label_or_owner() {
        let by_label: Serving = serde_json::from_value(serde_json::json!({
            "apiVersion": "core.openfunction.io/v1beta1", "kind": "Serving",
            "metadata": {"name": "s", "labels": {"openfunction.io/function": "f1"}},
            "spec": {}
        }))
        .unwrap();
        assert_eq!(by_label.function_name(), Some("f1"));
        let by_owner: Serving = serde_json::from_value(serde_json::json!({
            "apiVersion": "core.openfunction.io/v1beta1", "kind": "Serving",
            "metadata": {"name": "s", "ownerReferences": [
                {"apiVersion": "v1", "kind": "Function", "name": "wrong-group", "uid": "0", "controller": true},
                {"apiVersion": "core.openfunction.io/v1beta1", "kind": "Function", "name": "f2", "uid": "1", "controller": true}
            ]},
            "spec": {}
        }))
        .unwrap();
        assert_eq!(by_owner.function_name(), Some("f2"));
        let orphan: Serving = serde_json::from_value(serde_json::json!({
            "apiVersion": "core.openfunction.io/v1beta1", "kind": "Serving",
            "metadata": {"name": "s", "ownerReferences": [
                {"apiVersion": "core.openfunction.io/v1beta1", "kind": "Function", "name": "f3", "uid": "1"}
            ]},
            "spec": {}
        }))
        .unwrap();
        assert_eq!(orphan.function_name(), None);
    }
}
