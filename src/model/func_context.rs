//! `FUNC_CONTEXT`: the JSON the OpenFunction functions frameworks read
//! (SPEC section 7).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::function::{DaprComponent, DaprIo, FunctionSpec};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FuncContext<'a> {
    name: &'a str,
    version: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    inputs: BTreeMap<&'a str, Component<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    outputs: BTreeMap<&'a str, Component<'a>>,
    runtime: &'static str,
    port: String,
    pre_plugins: [&'a str; 0],
    post_plugins: [&'a str; 0],
    plugins_tracing: PluginsTracing,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Component<'a> {
    uri: &'a str,
    component_name: &'a str,
    component_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    operation: Option<&'a str>,
}

#[derive(Serialize)]
struct PluginsTracing {
    enabled: bool,
    provider: Option<()>,
    tags: Option<()>,
    baggage: Option<()>,
}

/// Build the `FUNC_CONTEXT` value of Function `name`.
pub fn func_context(name: &str, spec: &FunctionSpec) -> String {
    let serving = spec.serving.as_ref();
    let is_async = spec.is_async();
    let bindings = serving.and_then(|s| s.bindings.as_ref());
    let pubsub = serving.and_then(|s| s.pubsub.as_ref());

    let ctx = FuncContext {
        name,
        version: spec.version.as_deref().unwrap_or(""),
        inputs: if is_async {
            components(
                serving.and_then(|s| s.inputs.as_ref()),
                bindings,
                pubsub,
                false,
            )
        } else {
            BTreeMap::new()
        },
        outputs: components(
            serving.and_then(|s| s.outputs.as_ref()),
            bindings,
            pubsub,
            true,
        ),
        runtime: if is_async { "Async" } else { "Knative" },
        port: spec
            .port
            .unwrap_or(crate::model::mode::DEFAULT_APP_PORT)
            .to_string(),
        pre_plugins: [],
        post_plugins: [],
        plugins_tracing: PluginsTracing {
            enabled: false,
            provider: None,
            tags: None,
            baggage: None,
        },
    };
    // Serializing plain structs and maps of strings cannot fail.
    serde_json::to_string(&ctx).unwrap_or_default()
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
        let uri = match (&io.topic, is_pubsub) {
            (Some(topic), true) => topic.as_str(),
            _ => io.component.as_str(),
        };
        map.insert(
            io.name.as_str(),
            Component {
                uri,
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

    #[test]
    fn async_cron_kafka() {
        let f = fixture("cron-input-kafka-output.yaml");
        let ctx: Value =
            serde_json::from_str(&func_context("cron-input-kafka-output", &f.spec)).unwrap();
        assert_eq!(
            ctx,
            json!({
                "name": "cron-input-kafka-output",
                "version": "v2.0.0",
                "inputs": {"cron": {"uri": "cron", "componentName": "cron", "componentType": "bindings.cron"}},
                "outputs": {"sample": {"uri": "kafka-server", "componentName": "kafka-server",
                    "componentType": "bindings.kafka", "operation": "create"}},
                "runtime": "Async",
                "port": "8080",
                "prePlugins": [],
                "postPlugins": [],
                "pluginsTracing": {"enabled": false, "provider": null, "tags": null, "baggage": null}
            })
        );
    }

    #[test]
    fn knative_without_io_leaves_maps_out_and_keeps_field_order() {
        let f = fixture("sink.yaml");
        let s = func_context("sink", &f.spec);
        assert_eq!(
            s,
            r#"{"name":"sink","version":"v1.0.0","runtime":"Knative","port":"8080","prePlugins":[],"postPlugins":[],"pluginsTracing":{"enabled":false,"provider":null,"tags":null,"baggage":null}}"#
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
            json!({"uri": "t1", "componentName": "mq", "componentType": "pubsub.natsstreaming", "metadata": {"k": "v"}})
        );
        assert_eq!(ctx["outputs"]["pub"]["uri"], "t2");
        assert_eq!(ctx["outputs"]["bind"]["uri"], "b");
        assert_eq!(ctx["outputs"]["bind"]["operation"], "create");
        assert_eq!(ctx["outputs"]["missing"]["componentType"], "");
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
    }
}
