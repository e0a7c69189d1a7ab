//! Types of OpenFunction 1.x `core.openfunction.io/v1beta2` Functions
//! (`apis/core/v1beta2` of OpenFunction v1.2.0), and their normalization
//! into the internal [`crate::model::function::Function`].
//!
//! As for `v1beta1`, only the fields this project acts on are modelled and
//! everything else is kept in `extra` maps, so a Function read and written
//! back loses nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::function::{self as v1beta1, DaprComponent, DaprIo, Extra, FunctionStatus};

/// The two `core.openfunction.io` versions we read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ApiVersion {
    #[default]
    V1beta1,
    V1beta2,
}

impl ApiVersion {
    /// `v1beta1` or `v1beta2`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V1beta1 => "v1beta1",
            ApiVersion::V1beta2 => "v1beta2",
        }
    }

    /// `core.openfunction.io/<version>`.
    pub fn api_version(self) -> &'static str {
        match self {
            ApiVersion::V1beta1 => "core.openfunction.io/v1beta1",
            ApiVersion::V1beta2 => "core.openfunction.io/v1beta2",
        }
    }

    /// The version of an `apiVersion` string, if it is one we read.
    pub fn parse(api_version: &str) -> Option<Self> {
        match api_version {
            "core.openfunction.io/v1beta1" => Some(ApiVersion::V1beta1),
            "core.openfunction.io/v1beta2" => Some(ApiVersion::V1beta2),
            _ => None,
        }
    }

    /// The version to read, given the versions the API server serves:
    /// `v1beta2` where served, else `v1beta1` (None when neither is).
    pub fn choose<'a>(served: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let mut best = None;
        for v in served {
            match v {
                "v1beta2" => return Some(ApiVersion::V1beta2),
                "v1beta1" => best = Some(ApiVersion::V1beta1),
                _ => {}
            }
        }
        best
    }
}

/// The API group of Functions and Servings.
pub const GROUP: &str = "core.openfunction.io";
/// The versions we can read, best first.
pub const VERSIONS: [&str; 2] = ["v1beta2", "v1beta1"];

/// Told which version of a resource a component reads (for logs and
/// metrics); `None` when the API server serves neither.
pub trait VersionObserver: Send + Sync {
    fn version_in_use(
        &self,
        component: &'static str,
        resource: &'static str,
        version: Option<ApiVersion>,
    );
}

/// A [`VersionObserver`] that ignores what it is told.
pub struct NoObserver;

impl VersionObserver for NoObserver {
    fn version_in_use(&self, _: &'static str, _: &'static str, _: Option<ApiVersion>) {}
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `Function.spec` of `core.openfunction.io/v1beta2`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "core.openfunction.io",
    version = "v1beta2",
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
    pub serving: Option<ServingImpl>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `Function.spec.serving` (`ServingImpl`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServingImpl {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<Triggers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<Output>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bindings: Option<BTreeMap<String, DaprComponent>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pubsub: Option<BTreeMap<String, DaprComponent>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub states: Option<BTreeMap<String, State>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Hooks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingConfig>,
    /// A partial PodSpec; kept as raw JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_options: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec.serving.triggers`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Triggers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpTrigger>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dapr: Option<Vec<DaprTrigger>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Vec<Input>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `triggers.http`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpTrigger {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// `RouteImpl`; kept as raw JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One entry of `triggers.dapr`: a component reference plus the
/// (deprecated, v1beta1-compatible) `inputName`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaprTrigger {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_name: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One entry of `triggers.inputs`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Input {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dapr: Option<DaprRef>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `DaprComponentRef`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct DaprRef {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One entry of `spec.serving.outputs`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Output {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dapr: Option<DaprOutput>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `outputs[].dapr`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaprOutput {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_name: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One entry of `spec.serving.states`: a component spec, or a reference to
/// an existing component when `spec` is absent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct State {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<DaprComponent>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec.serving.hooks`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Hooks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec.serving.tracing` (`TracingConfig`); also the YAML of the
/// `plugins.tracing` annotation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TracingConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<TracingProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baggage: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `TracingProvider`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TracingProvider {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oap_server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter: Option<Exporter>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `Exporter`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Exporter {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `Serving` of `core.openfunction.io/v1beta2`: only its metadata is read.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "core.openfunction.io",
    version = "v1beta2",
    kind = "Serving",
    plural = "servings",
    namespaced,
    schema = "disabled"
)]
pub struct ServingResourceSpec {
    #[serde(flatten)]
    pub extra: Extra,
}

/// The Function annotations OpenFunction v1.2.0 reads plugin settings from
/// (`parsePluginsCfg`, for the v1beta1-format context).
pub const PLUGINS_ANNOTATION: &str = "plugins";
pub const PLUGINS_TRACING_ANNOTATION: &str = "plugins.tracing";

/// What a v1beta2 Function carries beyond the v1beta1 shape: its spec as
/// read and the plugin annotations of its metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Source {
    pub spec: FunctionSpec,
    /// `metadata.annotations["plugins"]`.
    pub plugins: Option<String>,
    /// `metadata.annotations["plugins.tracing"]`.
    pub plugins_tracing: Option<String>,
}

impl ServingImpl {
    /// `triggers.dapr`, or nothing.
    pub fn dapr_triggers(&self) -> &[DaprTrigger] {
        self.triggers
            .as_ref()
            .and_then(|t| t.dapr.as_deref())
            .unwrap_or_default()
    }

    /// The rule of OpenFunction v1.2.0's `GetDaprServiceEnabled` when
    /// `openfunction.io/enable-dapr` is absent: `triggers.dapr`,
    /// `triggers.inputs`, `outputs` or `states` non-empty (an empty list or
    /// map counts as absent).
    pub fn dapr_by_default(&self) -> bool {
        let inputs = self
            .triggers
            .as_ref()
            .and_then(|t| t.inputs.as_ref())
            .is_some_and(|v| !v.is_empty());
        !self.dapr_triggers().is_empty()
            || inputs
            || self.outputs.as_ref().is_some_and(|v| !v.is_empty())
            || self.states.as_ref().is_some_and(|m| !m.is_empty())
    }

    /// The type of component `name` from `bindings`, `pubsub` or `states`
    /// (in this order, as `getComponentTypeFromServing`).
    pub fn component_type(&self, name: &str) -> Option<&str> {
        let t = self
            .bindings
            .as_ref()
            .and_then(|b| b.get(name))
            .or_else(|| self.pubsub.as_ref().and_then(|p| p.get(name)))
            .map(|c| c.type_.as_str())
            .or_else(|| {
                self.states
                    .as_ref()
                    .and_then(|s| s.get(name))
                    .and_then(|s| s.spec.as_ref())
                    .map(|c| c.type_.as_str())
            });
        t.filter(|t| !t.is_empty())
    }
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// The internal Function of a v1beta2 Function: the v1beta1 shape the rest
/// of the product reads (port from `triggers.http.port`, runtime `async`
/// when `triggers.dapr` is non-empty, inputs from `triggers.dapr`, outputs
/// from `outputs[].dapr`, same annotations, bindings and pub/sub), with the
/// v1beta2 spec kept beside it for the contexts and the resolution rules.
pub fn normalize(f: Function) -> v1beta1::Function {
    let Function { metadata, spec, .. } = f;
    let annotation = |k: &str| {
        metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(k))
            .cloned()
    };
    let source = Source {
        plugins: annotation(PLUGINS_ANNOTATION),
        plugins_tracing: annotation(PLUGINS_TRACING_ANNOTATION),
        spec,
    };
    let spec = &source.spec;
    let serving = spec.serving.as_ref().map(|s| {
        let triggers = s.dapr_triggers();
        let inputs: Vec<DaprIo> = triggers
            .iter()
            .map(|t| DaprIo {
                name: non_empty(&t.input_name).unwrap_or(&t.name).to_owned(),
                component: t.name.clone(),
                topic: non_empty(&t.topic).map(str::to_owned),
                ..Default::default()
            })
            .collect();
        let outputs: Vec<DaprIo> = s
            .outputs
            .iter()
            .flatten()
            .filter_map(|o| o.dapr.as_ref())
            .map(|o| DaprIo {
                name: non_empty(&o.output_name).unwrap_or(&o.name).to_owned(),
                component: o.name.clone(),
                topic: non_empty(&o.topic).map(str::to_owned),
                operation: non_empty(&o.operation).map(str::to_owned),
                params: o.metadata.clone().filter(|m| !m.is_empty()),
                ..Default::default()
            })
            .collect();
        v1beta1::ServingSpec {
            runtime: Some(
                if triggers.is_empty() {
                    "knative"
                } else {
                    "async"
                }
                .to_owned(),
            ),
            annotations: s.annotations.clone(),
            inputs: (!inputs.is_empty()).then_some(inputs),
            outputs: (!outputs.is_empty()).then_some(outputs),
            bindings: s.bindings.clone(),
            pubsub: s.pubsub.clone(),
            template: s.template.clone(),
            scale_options: s.scale_options.clone(),
            ..Default::default()
        }
    });
    let port = spec
        .serving
        .as_ref()
        .and_then(|s| s.triggers.as_ref())
        .and_then(|t| t.http.as_ref())
        .and_then(|h| h.port);
    v1beta1::Function {
        metadata,
        spec: v1beta1::FunctionSpec {
            version: spec.version.clone(),
            image: spec.image.clone(),
            port,
            serving,
            extra: Extra::new(),
            v1beta2: None,
        }
        .with_v1beta2(Arc::new(source)),
        status: None,
    }
}

/// Read a Function document of either version (by its `apiVersion`;
/// anything but `core.openfunction.io/v1beta2` is read as v1beta1).
pub fn read_function(doc: Value) -> Result<v1beta1::Function, serde_json::Error> {
    let v2 =
        doc.get("apiVersion").and_then(Value::as_str) == Some(ApiVersion::V1beta2.api_version());
    if v2 {
        serde_json::from_value::<Function>(doc).map(normalize)
    } else {
        serde_json::from_value::<v1beta1::Function>(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn choose_prefers_v1beta2() {
        assert_eq!(
            ApiVersion::choose(["v1beta1", "v1beta2"]),
            Some(ApiVersion::V1beta2)
        );
        assert_eq!(
            ApiVersion::choose(["v1alpha2", "v1beta1"]),
            Some(ApiVersion::V1beta1)
        );
        assert_eq!(ApiVersion::choose(["v1alpha2"]), None);
        assert_eq!(ApiVersion::choose([]), None);
    }

    #[test]
    fn unknown_fields_are_kept() {
        let doc = json!({
            "apiVersion": "core.openfunction.io/v1beta2",
            "kind": "Function",
            "metadata": {"name": "f", "namespace": "ns"},
            "spec": {
                "image": "img",
                "workloadRuntime": "OCIContainer",
                "build": {"srcRepo": {"url": "u"}},
                "serving": {
                    "workloadType": "Deployment",
                    "params": {"a": "b"},
                    "triggers": {
                        "http": {"port": 9000, "engine": "keda", "route": {"gatewayRef": {"name": "gw"}}, "future": 1},
                        "dapr": [{"name": "c", "type": "bindings.cron", "inputName": "in", "future": [1]}],
                        "inputs": [{"dapr": {"name": "s", "type": "state.redis", "x": 1}, "y": 2}]
                    },
                    "outputs": [{"dapr": {"name": "o", "operation": "create", "outputName": "out",
                        "metadata": {"k": "v"}, "z": true}}],
                    "states": {"s": {"spec": {"type": "state.redis", "version": "v1", "metadata": []}}, "ref": {}},
                    "hooks": {"pre": ["a"], "post": ["b"], "policy": "Append"},
                    "tracing": {"enabled": true, "provider": {"name": "skywalking", "oapServer": "o:1",
                        "exporter": {"name": "otlp", "endpoint": "e", "future": 1}}, "tags": {"t": "1"}}
                }
            },
            "status": {"serving": {"state": "Running"}}
        });
        let f: Function = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(serde_json::to_value(&f).unwrap(), doc);
    }

    #[test]
    fn normalization_maps_the_v1beta2_shape() {
        let f: Function = serde_json::from_value(json!({
            "apiVersion": "core.openfunction.io/v1beta2", "kind": "Function",
            "metadata": {"name": "f", "namespace": "ns", "annotations": {"plugins": "pre: [a]"}},
            "spec": {"image": "i", "version": "v1", "serving": {
                "annotations": {"dapr.io/app-protocol": "http"},
                "triggers": {"http": {"port": 9000},
                    "dapr": [{"name": "kafka", "type": "bindings.kafka", "inputName": "in"},
                             {"name": "mq", "topic": "t"}]},
                "outputs": [{"dapr": {"name": "out", "operation": "create", "metadata": {"k": "v"}}},
                            {"other": 1}]
            }}
        }))
        .unwrap();
        let n = normalize(f);
        assert_eq!(n.spec.port, Some(9000));
        assert!(n.spec.is_async());
        let s = n.spec.serving.as_ref().unwrap();
        let inputs = s.inputs.as_ref().unwrap();
        assert_eq!(
            (inputs[0].name.as_str(), inputs[0].component.as_str()),
            ("in", "kafka")
        );
        assert_eq!(
            (inputs[1].name.as_str(), inputs[1].topic.as_deref()),
            ("mq", Some("t"))
        );
        let outputs = s.outputs.as_ref().unwrap();
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].operation.as_deref(), Some("create"));
        assert_eq!(n.read_version(), ApiVersion::V1beta2);
        assert_eq!(
            n.spec.v1beta2.as_ref().unwrap().plugins.as_deref(),
            Some("pre: [a]")
        );
        assert!(n.spec.dapr_by_default());
    }

    #[test]
    fn dapr_by_default_follows_v1_2_0() {
        let serving = |v: Value| serde_json::from_value::<ServingImpl>(v).unwrap();
        assert!(!serving(json!({})).dapr_by_default());
        assert!(
            !serving(
                json!({"triggers": {"http": {"port": 1}, "dapr": []}, "outputs": [], "states": {}})
            )
            .dapr_by_default()
        );
        assert!(serving(json!({"triggers": {"dapr": [{"name": "c"}]}})).dapr_by_default());
        assert!(
            serving(json!({"triggers": {"inputs": [{"dapr": {"name": "c"}}]}})).dapr_by_default()
        );
        assert!(serving(json!({"outputs": [{"dapr": {"name": "c"}}]})).dapr_by_default());
        assert!(serving(json!({"states": {"s": {}}})).dapr_by_default());
    }
}
