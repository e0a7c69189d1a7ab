//! `FUNC_CONTEXT` and `FUNC_CONTEXT_V1BETA2`: the JSON the OpenFunction
//! functions frameworks read (SPEC section 7).
//!
//! `FUNC_CONTEXT` is the union of both shapes: the v1beta1 fields (what the
//! Go framework reads; for a v1beta2 Function exactly as OpenFunction
//! v1.2.0's `GenOpenFunctionContextV1beta1` builds them) plus `triggers`,
//! `topic` on pub/sub entries, `pre_hooks`, `post_hooks` and `tracing` (what
//! the Python framework `ofn-functions-framework` 0.2 reads; for an async
//! v1beta2 Function `triggers` has no `http` and typed dapr triggers, see
//! `union_triggers`).
//! `FUNC_CONTEXT_V1BETA2` is, for a v1beta2 Function, exactly what v1.2.0's
//! `GenOpenFunctionContextV1beta2` builds (`pkg/core/serving/common`).
//!
//! Departures, because we have no API access here: a component type that
//! is neither on the trigger / output nor in the Function's
//! `bindings` / `pubsub` / `states` is `""` (v1.2.0 reads the existing Dapr
//! Component), component names are used as written (v1.2.0 substitutes the
//! names of the Components its Serving created), and the global hooks and
//! tracing of OpenFunction's ConfigMap are not merged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::model::function::{DaprComponent, DaprIo, FunctionSpec};
use crate::model::v1beta2::{self, Source, TracingConfig};

/// The env variable of the union context.
pub const ENV_FUNC_CONTEXT: &str = "FUNC_CONTEXT";
/// The env variable of the v1beta2 context (v1beta2 Functions only).
pub const ENV_FUNC_CONTEXT_V1BETA2: &str = "FUNC_CONTEXT_V1BETA2";

/// The union context, field order as the v1beta1 format, then the v1beta2
/// keys.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FuncContext<'a> {
    name: &'a str,
    version: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    inputs: BTreeMap<&'a str, Component<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    outputs: BTreeMap<&'a str, Component<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    states: BTreeMap<&'a str, StateRef<'a>>,
    runtime: &'static str,
    port: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pre_plugins: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    post_plugins: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plugins_tracing: Option<Tracing>,
    triggers: Value,
    #[serde(rename = "pre_hooks")]
    pre_hooks: Vec<String>,
    #[serde(rename = "post_hooks")]
    post_hooks: Vec<String>,
    tracing: Tracing,
}

/// An input or output of the v1beta1 format (`functionInput` /
/// `functionOutput`), plus `topic` for pub/sub.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Component<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    uri: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    component_name: &'a str,
    component_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    operation: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StateRef<'a> {
    component_name: &'a str,
    component_type: &'a str,
}

/// A tracing setting: the v1beta1 default (fields in their usual order),
/// or one built from the Function.
#[derive(Serialize)]
#[serde(untagged)]
enum Tracing {
    Default {
        enabled: bool,
        provider: Option<()>,
        tags: Option<()>,
        baggage: Option<()>,
    },
    Set(Value),
}

/// The default `pluginsTracing` of a v1beta1 Function.
fn default_plugins_tracing() -> Tracing {
    Tracing::Default {
        enabled: false,
        provider: None,
        tags: None,
        baggage: None,
    }
}

/// Build the `FUNC_CONTEXT` value of Function `name` (the union shape).
pub fn func_context(name: &str, spec: &FunctionSpec) -> String {
    let ctx = match &spec.v1beta2 {
        Some(src) => from_v1beta2(name, src),
        None => from_v1beta1(name, spec),
    };
    // Serializing plain structs and maps of strings cannot fail.
    serde_json::to_string(&ctx).unwrap_or_default()
}

/// The union context of a v1beta1 Function.
fn from_v1beta1<'a>(name: &'a str, spec: &'a FunctionSpec) -> FuncContext<'a> {
    let serving = spec.serving.as_ref();
    let is_async = spec.is_async();
    let bindings = serving.and_then(|s| s.bindings.as_ref());
    let pubsub = serving.and_then(|s| s.pubsub.as_ref());
    let port = spec.port.unwrap_or(crate::model::mode::DEFAULT_APP_PORT);
    let inputs = serving.and_then(|s| s.inputs.as_ref()).filter(|_| is_async);

    // `triggers` as OpenFunction's v1beta1 -> v1beta2 conversion derives
    // them: one dapr trigger per input (async), `http.port` (knative).
    let triggers = if is_async {
        let dapr: Vec<Value> = inputs
            .into_iter()
            .flatten()
            .map(|io| {
                let mut t = Map::new();
                t.insert("name".into(), io.component.clone().into());
                if let Some(ty) = component_type(&io.component, bindings, pubsub) {
                    t.insert("type".into(), ty.into());
                }
                if let Some(topic) = io.topic.as_deref().filter(|t| !t.is_empty()) {
                    t.insert("topic".into(), topic.into());
                }
                Value::Object(t)
            })
            .collect();
        if dapr.is_empty() {
            json!({})
        } else {
            json!({ "dapr": dapr })
        }
    } else {
        json!({"http": {"port": port}})
    };

    FuncContext {
        name,
        version: spec.version.as_deref().unwrap_or(""),
        inputs: components(inputs, bindings, pubsub, false),
        outputs: components(
            serving.and_then(|s| s.outputs.as_ref()),
            bindings,
            pubsub,
            true,
        ),
        states: BTreeMap::new(),
        runtime: if is_async { "Async" } else { "Knative" },
        port: port.to_string(),
        pre_plugins: Some(Vec::new()),
        post_plugins: Some(Vec::new()),
        plugins_tracing: Some(default_plugins_tracing()),
        triggers,
        pre_hooks: Vec::new(),
        post_hooks: Vec::new(),
        tracing: default_plugins_tracing(),
    }
}

fn components<'a>(
    ios: Option<&'a Vec<DaprIo>>,
    bindings: Option<&'a BTreeMap<String, DaprComponent>>,
    pubsub: Option<&'a BTreeMap<String, DaprComponent>>,
    with_operation: bool,
) -> BTreeMap<&'a str, Component<'a>> {
    let mut map = BTreeMap::new();
    for io in ios.into_iter().flatten() {
        // pub/sub components are addressed by topic, bindings by name
        let is_pubsub = pubsub.is_some_and(|p| p.contains_key(&io.component));
        let topic = io.topic.as_deref().filter(|_| is_pubsub);
        map.insert(
            io.name.as_str(),
            Component {
                uri: topic.unwrap_or(&io.component),
                topic,
                component_name: &io.component,
                component_type: component_type(&io.component, bindings, pubsub).unwrap_or(""),
                metadata: io.params.as_ref().filter(|p| !p.is_empty()),
                operation: if with_operation {
                    io.operation.as_deref()
                } else {
                    None
                },
            },
        );
    }
    map
}

/// Type of the component `name` in `bindings` or `pubsub`, if declared.
pub fn component_type<'a>(
    name: &str,
    bindings: Option<&'a BTreeMap<String, DaprComponent>>,
    pubsub: Option<&'a BTreeMap<String, DaprComponent>>,
) -> Option<&'a str> {
    pubsub
        .and_then(|p| p.get(name))
        .or_else(|| bindings.and_then(|b| b.get(name)))
        .map(|c| c.type_.as_str())
}

// ---- v1beta2 Functions -------------------------------------------------

/// `getComponentType`: the type on the reference, else from the Function's
/// `bindings` / `pubsub` / `states`, else `""` (see the module docs).
fn v2_type<'a>(serving: &'a v1beta2::ServingImpl, name: &str, ty: &'a Option<String>) -> &'a str {
    ty.as_deref()
        .filter(|t| !t.is_empty())
        .or_else(|| serving.component_type(name))
        .unwrap_or("")
}

/// `uri` of the v1beta1 format: the component name for bindings, else the
/// topic.
fn v2_uri<'a>(ty: &str, name: &'a str, topic: Option<&'a str>) -> &'a str {
    if ty.starts_with("bindings") {
        name
    } else {
        topic.unwrap_or("")
    }
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// The `plugins` annotation (`parsePluginsCfg`).
#[derive(Deserialize, Default)]
struct Plugins {
    #[serde(default)]
    order: Option<Vec<String>>,
    #[serde(default)]
    pre: Option<Vec<String>>,
    #[serde(default)]
    post: Option<Vec<String>>,
}

/// `prePlugins`, `postPlugins` and `pluginsTracing` from the Function's
/// `plugins` / `plugins.tracing` annotations, as `parsePluginsCfg` (an
/// annotation that is not valid YAML is ignored, as there).
fn plugins(src: &Source) -> (Option<Vec<String>>, Option<Vec<String>>, Option<Value>) {
    let (mut pre, mut post) = (None, None);
    if let Some(p) = src
        .plugins
        .as_deref()
        .filter(|r| !r.is_empty())
        .and_then(|r| serde_saphyr::from_str::<Plugins>(r).ok())
    {
        if let Some(order) = p.order {
            post = Some(order.iter().rev().cloned().collect());
            pre = Some(order);
        }
        if p.pre.is_some() {
            pre = p.pre;
        }
        if p.post.is_some() {
            post = p.post;
        }
    }
    let mut tracing = None;
    if let Some(t) = src
        .plugins_tracing
        .as_deref()
        .filter(|r| !r.is_empty())
        .and_then(|r| serde_saphyr::from_str::<TracingConfig>(r).ok())
    {
        if t.enabled == Some(true)
            && let Some(provider) = &t.provider
        {
            pre.get_or_insert_with(Vec::new).push(provider.name.clone());
            post.get_or_insert_with(Vec::new)
                .insert(0, provider.name.clone());
        }
        // functionPluginsTracing: tags omitempty, baggage always written
        let mut v = go_tracing(&t);
        if let Value::Object(m) = &mut v {
            m.entry("baggage").or_insert(Value::Null);
        }
        tracing = Some(v);
    }
    // Go's omitempty drops empty lists too
    let nonempty = |v: Option<Vec<String>>| v.filter(|v| !v.is_empty());
    (nonempty(pre), nonempty(post), tracing)
}

/// `TracingConfig` as Go marshals it: `enabled` and `provider` always,
/// `tags` / `baggage` when non-empty; only the known fields.
fn go_tracing(t: &TracingConfig) -> Value {
    let mut m = Map::new();
    m.insert("enabled".into(), t.enabled.unwrap_or(false).into());
    m.insert(
        "provider".into(),
        t.provider.as_ref().map_or(Value::Null, |p| {
            let mut pm = Map::new();
            pm.insert("name".into(), p.name.clone().into());
            if let Some(o) = non_empty(&p.oap_server) {
                pm.insert("oapServer".into(), o.into());
            }
            if let Some(e) = &p.exporter {
                let mut em = Map::new();
                em.insert("name".into(), e.name.clone().into());
                em.insert("endpoint".into(), e.endpoint.clone().into());
                for (k, v) in [
                    ("headers", &e.headers),
                    ("compression", &e.compression),
                    ("timeout", &e.timeout),
                    ("protocol", &e.protocol),
                ] {
                    if let Some(v) = non_empty(v) {
                        em.insert(k.into(), v.into());
                    }
                }
                pm.insert("exporter".into(), Value::Object(em));
            }
            Value::Object(pm)
        }),
    );
    for (k, v) in [("tags", &t.tags), ("baggage", &t.baggage)] {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            m.insert(k.into(), json!(v));
        }
    }
    Value::Object(m)
}

/// `s.Spec.Triggers` as Go marshals it (only the known fields).
fn go_triggers(t: &v1beta2::Triggers) -> Value {
    let mut m = Map::new();
    if let Some(h) = &t.http {
        let mut hm = Map::new();
        if let Some(p) = h.port {
            hm.insert("port".into(), p.into());
        }
        if let Some(Value::Object(route)) = &h.route {
            let mut rm = Map::new();
            if let Some(Value::Object(g)) = route.get("gatewayRef") {
                rm.insert(
                    "gatewayRef".into(),
                    json!({
                        "name": g.get("name").cloned().unwrap_or_else(|| "".into()),
                        "namespace": g.get("namespace").cloned().unwrap_or(Value::Null),
                    }),
                );
            }
            for k in ["hostnames", "rules"] {
                if let Some(v) = route
                    .get(k)
                    .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
                {
                    rm.insert(k.into(), v.clone());
                }
            }
            hm.insert("route".into(), Value::Object(rm));
        }
        if let Some(e) = non_empty(&h.engine) {
            hm.insert("engine".into(), e.into());
        }
        m.insert("http".into(), Value::Object(hm));
    }
    let reference = |name: &str, ty: &Option<String>, topic: &Option<String>| {
        let mut r = Map::new();
        r.insert("name".into(), name.into());
        if let Some(t) = non_empty(ty) {
            r.insert("type".into(), t.into());
        }
        if let Some(t) = non_empty(topic) {
            r.insert("topic".into(), t.into());
        }
        r
    };
    if let Some(dapr) = t.dapr.as_ref().filter(|d| !d.is_empty()) {
        let list: Vec<Value> = dapr
            .iter()
            .map(|d| {
                let mut r = reference(&d.name, &d.type_, &d.topic);
                if let Some(i) = non_empty(&d.input_name) {
                    r.insert("inputName".into(), i.into());
                }
                Value::Object(r)
            })
            .collect();
        m.insert("dapr".into(), Value::Array(list));
    }
    if let Some(inputs) = t.inputs.as_ref().filter(|d| !d.is_empty()) {
        let list: Vec<Value> = inputs
            .iter()
            .map(|i| match &i.dapr {
                Some(d) => json!({"dapr": reference(&d.name, &d.type_, &d.topic)}),
                None => json!({}),
            })
            .collect();
        m.insert("inputs".into(), Value::Array(list));
    }
    Value::Object(m)
}

/// Pre / post hooks and tracing of `GenOpenFunctionContextV1beta2` (no
/// global configuration): `Override` takes the Function's hooks, `Append`
/// appends them to the (empty) global ones; tracing only when enabled.
fn hooks_and_tracing(serving: &v1beta2::ServingImpl) -> (Vec<String>, Vec<String>, Option<Value>) {
    let (pre, post) = serving
        .hooks
        .as_ref()
        .map_or((Vec::new(), Vec::new()), |h| {
            (
                h.pre.clone().unwrap_or_default(),
                h.post.clone().unwrap_or_default(),
            )
        });
    let tracing = serving
        .tracing
        .as_ref()
        .filter(|t| t.enabled == Some(true))
        .map(go_tracing);
    (pre, post, tracing)
}

/// `triggers` of the union for a v1beta2 Function: its own triggers as
/// `GenOpenFunctionContextV1beta2` copies them, read the way the Python
/// framework (`ofn-functions-framework` 0.2) acts on them:
/// - async (`triggers.dapr` non-empty): no `http`. The framework starts an
///   HTTP trigger first and it never returns (`runner.py` `run`,
///   `HTTPTriggerHandler.start`), so the dapr triggers would never be
///   served; and the port `triggers.http.port` gives is the top-level
///   `port`, which the framework's gRPC server listens on
///   (`function_context.py` `port`, `DaprTriggerHandler`). As for a v1beta1
///   Function, `http` only for knative. `FUNC_CONTEXT_V1BETA2` keeps it.
/// - each dapr trigger carries its `type` (the one `getComponentType`
///   finds), as the framework registers a trigger only by its `type`
///   prefix (`bindings` / `pubsub`, `dapr_trigger/dapr.py`).
fn union_triggers(serving: &v1beta2::ServingImpl, t: &v1beta2::Triggers) -> Value {
    let mut v = go_triggers(t);
    let dapr = t.dapr.as_deref().unwrap_or_default();
    if let Value::Object(m) = &mut v
        && !dapr.is_empty()
    {
        m.remove("http");
        if let Some(Value::Array(list)) = m.get_mut("dapr") {
            for (entry, d) in list.iter_mut().zip(dapr) {
                let ty = v2_type(serving, &d.name, &d.type_);
                if let (Value::Object(e), false) = (entry, ty.is_empty()) {
                    e.entry("type").or_insert_with(|| ty.into());
                }
            }
        }
    }
    v
}

/// The union context of a v1beta2 Function.
fn from_v1beta2<'a>(name: &'a str, src: &'a Source) -> FuncContext<'a> {
    static EMPTY: std::sync::LazyLock<v1beta2::ServingImpl> =
        std::sync::LazyLock::new(Default::default);
    let spec = &src.spec;
    let serving = spec.serving.as_ref().unwrap_or(&EMPTY);
    let port = serving
        .triggers
        .as_ref()
        .and_then(|t| t.http.as_ref())
        .and_then(|h| h.port)
        .unwrap_or(crate::model::mode::DEFAULT_APP_PORT);
    let dapr = serving.dapr_triggers();

    let mut inputs = BTreeMap::new();
    for t in dapr {
        let ty = v2_type(serving, &t.name, &t.type_);
        let topic = non_empty(&t.topic);
        let uri = v2_uri(ty, &t.name, topic);
        inputs.insert(
            non_empty(&t.input_name).unwrap_or(&t.name),
            Component {
                uri,
                topic: topic.filter(|_| !ty.starts_with("bindings")),
                component_name: &t.name,
                component_type: ty,
                metadata: None,
                operation: None,
            },
        );
    }
    let mut outputs = BTreeMap::new();
    for o in serving
        .outputs
        .iter()
        .flatten()
        .filter_map(|o| o.dapr.as_ref())
    {
        let ty = v2_type(serving, &o.name, &o.type_);
        let topic = non_empty(&o.topic);
        outputs.insert(
            non_empty(&o.output_name).unwrap_or(&o.name),
            Component {
                uri: v2_uri(ty, &o.name, topic),
                topic: topic.filter(|_| !ty.starts_with("bindings")),
                component_name: &o.name,
                component_type: ty,
                metadata: o.metadata.as_ref().filter(|m| !m.is_empty()),
                operation: non_empty(&o.operation),
            },
        );
    }
    let states = states(serving);
    let (pre_plugins, post_plugins, plugins_tracing) = plugins(src);
    let (pre_hooks, post_hooks, tracing) = hooks_and_tracing(serving);
    FuncContext {
        name,
        version: spec.version.as_deref().unwrap_or(""),
        inputs,
        outputs,
        states,
        runtime: if dapr.is_empty() { "Knative" } else { "Async" },
        port: port.to_string(),
        pre_plugins,
        post_plugins,
        plugins_tracing: plugins_tracing.map(Tracing::Set),
        triggers: serving
            .triggers
            .as_ref()
            .map_or_else(|| json!({}), |t| union_triggers(serving, t)),
        pre_hooks,
        post_hooks,
        tracing: tracing.map_or_else(default_plugins_tracing, Tracing::Set),
    }
}

fn states(serving: &v1beta2::ServingImpl) -> BTreeMap<&str, StateRef<'_>> {
    serving
        .states
        .iter()
        .flatten()
        .map(|(name, state)| {
            let ty = state.spec.as_ref().map_or("", |s| s.type_.as_str());
            (
                name.as_str(),
                StateRef {
                    component_name: name,
                    component_type: ty,
                },
            )
        })
        .collect()
}

/// `functionComponent` of the v1beta2 format.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct V2Component<'a> {
    component_name: &'a str,
    component_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    operation: Option<&'a str>,
}

/// `functionContextV1beta2`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct V2Context<'a> {
    name: &'a str,
    version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    triggers: Option<Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    inputs: BTreeMap<&'a str, V2Component<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    outputs: BTreeMap<&'a str, V2Component<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    states: BTreeMap<&'a str, StateRef<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pre_hooks: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    post_hooks: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tracing: Option<Value>,
}

/// `FUNC_CONTEXT_V1BETA2` of Function `name`: for a v1beta2 Function, what
/// `GenOpenFunctionContextV1beta2` builds; `None` for a v1beta1 Function.
pub fn func_context_v1beta2(name: &str, spec: &FunctionSpec) -> Option<String> {
    let src = spec.v1beta2.as_ref()?;
    let serving = src.spec.serving.as_ref();
    let empty = v1beta2::ServingImpl::default();
    let s = serving.unwrap_or(&empty);
    let mut inputs = BTreeMap::new();
    for d in s
        .triggers
        .iter()
        .flat_map(|t| t.inputs.iter().flatten())
        .filter_map(|i| i.dapr.as_ref())
    {
        inputs.insert(
            d.name.as_str(),
            V2Component {
                component_name: &d.name,
                component_type: v2_type(s, &d.name, &d.type_),
                topic: non_empty(&d.topic),
                metadata: None,
                operation: None,
            },
        );
    }
    let mut outputs = BTreeMap::new();
    for o in s.outputs.iter().flatten().filter_map(|o| o.dapr.as_ref()) {
        outputs.insert(
            o.name.as_str(),
            V2Component {
                component_name: &o.name,
                component_type: v2_type(s, &o.name, &o.type_),
                topic: None,
                metadata: o.metadata.as_ref().filter(|m| !m.is_empty()),
                operation: non_empty(&o.operation),
            },
        );
    }
    let (pre_hooks, post_hooks, tracing) = hooks_and_tracing(s);
    let ctx = V2Context {
        name,
        version: src.spec.version.as_deref().unwrap_or(""),
        triggers: s.triggers.as_ref().map(go_triggers),
        inputs,
        outputs,
        states: states(s),
        pre_hooks,
        post_hooks,
        tracing,
    };
    Some(serde_json::to_string(&ctx).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::function::Function;
    use serde_json::{Value, json};

    fn fixture(file: &str) -> Function {
        let path = format!(
            "{}/tests/fixtures/functions/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).unwrap();
        serde_saphyr::from_str(&text).unwrap()
    }

    /// The default v1beta1 plugin and v1beta2 hook keys of the union.
    fn tail() -> Value {
        json!({
            "prePlugins": [], "postPlugins": [],
            "pluginsTracing": {"enabled": false, "provider": null, "tags": null, "baggage": null},
            "pre_hooks": [], "post_hooks": [],
            "tracing": {"enabled": false, "provider": null, "tags": null, "baggage": null}
        })
    }

    fn with_tail(mut v: Value) -> Value {
        for (k, x) in tail().as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    #[test]
    fn async_cron_kafka() {
        let f = fixture("cron-input-kafka-output.yaml");
        let ctx: Value =
            serde_json::from_str(&func_context("cron-input-kafka-output", &f.spec)).unwrap();
        assert_eq!(
            ctx,
            with_tail(json!({
                "name": "cron-input-kafka-output",
                "version": "v2.0.0",
                "inputs": {"cron": {"uri": "cron", "componentName": "cron", "componentType": "bindings.cron"}},
                "outputs": {"sample": {"uri": "kafka-server", "componentName": "kafka-server",
                    "componentType": "bindings.kafka", "operation": "create"}},
                "runtime": "Async",
                "port": "8080",
                // union: one dapr trigger per input, {name: component, type, topic}
                "triggers": {"dapr": [{"name": "cron", "type": "bindings.cron"}]}
            }))
        );
        assert_eq!(
            func_context_v1beta2("cron-input-kafka-output", &f.spec),
            None
        );
    }

    #[test]
    fn knative_without_io_leaves_maps_out_and_keeps_field_order() {
        let f = fixture("sink.yaml");
        let s = func_context("sink", &f.spec);
        assert_eq!(
            s,
            r#"{"name":"sink","version":"v1.0.0","runtime":"Knative","port":"8080","prePlugins":[],"postPlugins":[],"pluginsTracing":{"enabled":false,"provider":null,"tags":null,"baggage":null},"triggers":{"http":{"port":8080}},"pre_hooks":[],"post_hooks":[],"tracing":{"enabled":false,"provider":null,"tags":null,"baggage":null}}"#
        );
    }

    #[test]
    fn pubsub_uses_topic_and_params_are_metadata() {
        let spec: FunctionSpec = serde_json::from_value(json!({
            "image": "i",
            "port": 9000,
            "serving": {
                "runtime": "async",
                "inputs": [{"name": "sub", "component": "mq", "topic": "t1", "params": {"k": "v"}}],
                "outputs": [
                    {"name": "pub", "component": "mq", "topic": "t2"},
                    {"name": "bind", "component": "b", "topic": "ignored-for-bindings", "operation": "create"},
                    {"name": "missing", "component": "nowhere"}
                ],
                "pubsub": {"mq": {"type": "pubsub.natsstreaming", "version": "v1", "metadata": []}},
                "bindings": {"b": {"type": "bindings.kafka", "version": "v1", "metadata": []}}
            }
        }))
        .unwrap();
        let ctx: Value = serde_json::from_str(&func_context("f", &spec)).unwrap();
        assert_eq!(ctx["port"], "9000");
        assert_eq!(ctx["version"], "");
        assert_eq!(
            ctx["inputs"]["sub"],
            json!({"uri": "t1", "topic": "t1", "componentName": "mq",
                "componentType": "pubsub.natsstreaming", "metadata": {"k": "v"}})
        );
        assert_eq!(ctx["outputs"]["pub"]["uri"], "t2");
        assert_eq!(ctx["outputs"]["pub"]["topic"], "t2");
        assert_eq!(ctx["outputs"]["bind"]["uri"], "b");
        assert!(ctx["outputs"]["bind"].get("topic").is_none());
        assert_eq!(ctx["outputs"]["bind"]["operation"], "create");
        assert_eq!(ctx["outputs"]["missing"]["componentType"], "");
        assert_eq!(
            ctx["triggers"],
            json!({"dapr": [{"name": "mq", "type": "pubsub.natsstreaming", "topic": "t1"}]})
        );
    }

    #[test]
    fn knative_inputs_are_not_listed() {
        let spec: FunctionSpec = serde_json::from_value(json!({
            "image": "i",
            "serving": {"runtime": "knative", "inputs": [{"name": "i", "component": "c"}]}
        }))
        .unwrap();
        let ctx: Value = serde_json::from_str(&func_context("f", &spec)).unwrap();
        assert!(ctx.get("inputs").is_none());
        assert!(ctx.get("outputs").is_none());
        assert_eq!(ctx["runtime"], "Knative");
        assert_eq!(ctx["triggers"], json!({"http": {"port": 8080}}));
    }

    #[test]
    fn async_without_inputs_has_empty_triggers() {
        let spec: FunctionSpec =
            serde_json::from_value(json!({"image": "i", "serving": {"runtime": "async"}})).unwrap();
        let ctx: Value = serde_json::from_str(&func_context("f", &spec)).unwrap();
        assert_eq!(ctx["triggers"], json!({}));
        assert_eq!(ctx["runtime"], "Async");
    }
}
