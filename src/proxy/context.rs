//! What the proxy serves, read from `FUNC_CONTEXT` (SPEC section 7): the
//! function's name and port, its binding inputs and its topic
//! subscriptions. Pure.
//!
//! The v1beta1 `inputs` map (`{name: {uri, componentName, componentType,
//! metadata}}`) is read first; when it is absent or empty, the v1beta2
//! `triggers.dapr` list (`[{name, type, topic}]`) is read instead. A
//! component whose type starts with `bindings.` is an input binding (daprd
//! calls `OnBindingEvent` with its name); one whose type starts with
//! `pubsub.` is a topic subscription (pub/sub component + topic, the topic
//! being `topic` when given, else `uri`). Anything else is skipped with a
//! warning.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Port a function listens on when `FUNC_CONTEXT` names none.
pub const DEFAULT_PORT: u16 = 8080;

/// One topic subscription of the function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topic {
    /// The pub/sub component.
    pub pubsub: String,
    /// The topic.
    pub topic: String,
    /// Subscription metadata (the input's `metadata`).
    pub metadata: BTreeMap<String, String>,
}

impl Topic {
    /// The HTTP route daprd posts this topic's events to (upstream's proxy
    /// and the Go functions framework name it after the topic).
    pub fn route(&self) -> String {
        format!("/{}", self.topic.trim_start_matches('/'))
    }
}

/// Everything the proxy needs to know about its function.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionInputs {
    /// Function name (the headless Service `<name>` the proxy forwards to).
    pub name: String,
    /// The function's port, if `FUNC_CONTEXT` names one.
    pub port: Option<u16>,
    /// Input binding component names, sorted, without duplicates.
    pub bindings: Vec<String>,
    /// Topic subscriptions, sorted by pub/sub and topic, without duplicates.
    pub topics: Vec<Topic>,
    /// What was skipped and why.
    pub warnings: Vec<String>,
}

impl FunctionInputs {
    /// Whether `name` is one of the binding inputs.
    pub fn has_binding(&self, name: &str) -> bool {
        self.bindings
            .binary_search_by(|b| b.as_str().cmp(name))
            .is_ok()
    }

    /// The subscription whose HTTP route is `path`.
    pub fn topic_by_route(&self, path: &str) -> Option<&Topic> {
        let path = path.trim_start_matches('/');
        self.topics
            .iter()
            .find(|t| t.topic.trim_start_matches('/') == path)
    }
}

/// `FUNC_CONTEXT` is missing something the proxy cannot do without.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("FUNC_CONTEXT is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("FUNC_CONTEXT has no function name")]
    NoName,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    name: String,
    #[serde(default)]
    port: Option<serde_json::Value>,
    #[serde(default)]
    inputs: Option<BTreeMap<String, RawInput>>,
    #[serde(default)]
    triggers: Option<RawTriggers>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawInput {
    #[serde(default)]
    uri: Option<String>,
    #[serde(default)]
    component_name: Option<String>,
    #[serde(default)]
    component_type: Option<String>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct RawTriggers {
    #[serde(default)]
    dapr: Option<Vec<RawDaprTrigger>>,
}

#[derive(Deserialize)]
struct RawDaprTrigger {
    #[serde(default)]
    name: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    topic: Option<String>,
}

/// Parses a `FUNC_CONTEXT` value.
pub fn parse(json: &str) -> Result<FunctionInputs, ContextError> {
    let raw: Raw = serde_json::from_str(json)?;
    if raw.name.trim().is_empty() {
        return Err(ContextError::NoName);
    }
    let mut out = FunctionInputs {
        name: raw.name.trim().to_owned(),
        port: raw.port.as_ref().and_then(port_of),
        ..FunctionInputs::default()
    };
    if let Some(p) = &raw.port
        && out.port.is_none()
    {
        out.warnings
            .push(format!("port {p} is not a port number; ignored"));
    }
    match raw.inputs.filter(|i| !i.is_empty()) {
        Some(inputs) => {
            for (name, input) in inputs {
                let component = input
                    .component_name
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| name.clone());
                let kind = input.component_type.unwrap_or_default();
                let topic = input.topic.filter(|t| !t.is_empty()).or(input.uri);
                add(
                    &mut out,
                    &name,
                    component,
                    &kind,
                    topic,
                    input.metadata.unwrap_or_default(),
                );
            }
        }
        None => {
            for trigger in raw.triggers.and_then(|t| t.dapr).unwrap_or_default() {
                add(
                    &mut out,
                    &trigger.name.clone(),
                    trigger.name,
                    &trigger.kind,
                    trigger.topic,
                    BTreeMap::new(),
                );
            }
        }
    }
    out.bindings.sort();
    out.bindings.dedup();
    out.topics
        .sort_by(|a, b| (&a.pubsub, &a.topic).cmp(&(&b.pubsub, &b.topic)));
    out.topics
        .dedup_by(|a, b| a.pubsub == b.pubsub && a.topic == b.topic);
    Ok(out)
}

fn add(
    out: &mut FunctionInputs,
    input: &str,
    component: String,
    kind: &str,
    topic: Option<String>,
    metadata: BTreeMap<String, String>,
) {
    if component.is_empty() {
        out.warnings
            .push(format!("input {input:?} names no component; skipped"));
    } else if kind.starts_with("bindings") {
        out.bindings.push(component);
    } else if kind.starts_with("pubsub") {
        match topic.filter(|t| !t.is_empty()) {
            Some(topic) => out.topics.push(Topic {
                pubsub: component,
                topic,
                metadata,
            }),
            None => out
                .warnings
                .push(format!("pub/sub input {input:?} names no topic; skipped")),
        }
    } else {
        out.warnings.push(format!(
            "input {input:?} has component type {kind:?}, neither bindings.* nor pubsub.*; skipped"
        ));
    }
}

/// `"8080"` or `8080`.
fn port_of(v: &serde_json::Value) -> Option<u16> {
    match v {
        serde_json::Value::String(s) => s.trim().parse().ok(),
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        _ => None,
    }
    .filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(pubsub: &str, topic: &str) -> Topic {
        Topic {
            pubsub: pubsub.into(),
            topic: topic.into(),
            metadata: BTreeMap::new(),
        }
    }

    #[test]
    fn v1beta1_inputs() {
        let ctx = r#"{"name":"sink","version":"v1","port":"8081","runtime":"Async",
          "inputs":{
            "cron":{"uri":"cron","componentName":"cron","componentType":"bindings.cron"},
            "sub":{"uri":"sample-topic","componentName":"msg","componentType":"pubsub.kafka",
                   "metadata":{"consumerID":"c"}},
            "kafka":{"uri":"k","componentName":"k","componentType":"bindings.kafka"}
          },
          "outputs":{"o":{"uri":"x","componentName":"x","componentType":"bindings.kafka","operation":"create"}}}"#;
        let got = parse(ctx).unwrap();
        assert_eq!(got.name, "sink");
        assert_eq!(got.port, Some(8081));
        assert_eq!(got.bindings, ["cron", "k"]);
        let mut want = topic("msg", "sample-topic");
        want.metadata.insert("consumerID".into(), "c".into());
        assert_eq!(got.topics, [want]);
        assert!(got.warnings.is_empty());
        assert!(got.has_binding("cron") && !got.has_binding("x"));
        assert_eq!(got.topic_by_route("/sample-topic").unwrap().pubsub, "msg");
        assert_eq!(got.topics[0].route(), "/sample-topic");
    }

    #[test]
    fn topic_beside_uri_wins() {
        let ctx = r#"{"name":"f","inputs":{"s":{"uri":"u","topic":"t","componentName":"p","componentType":"pubsub.redis"}}}"#;
        assert_eq!(parse(ctx).unwrap().topics, [topic("p", "t")]);
    }

    #[test]
    fn falls_back_to_v1beta2_triggers() {
        let ctx = r#"{"name":"f","port":8080,
          "triggers":{"dapr":[{"name":"cron","type":"bindings.cron"},
                              {"name":"ps","type":"pubsub.kafka","topic":"t1"}],
                      "http":{"port":8080}}}"#;
        let got = parse(ctx).unwrap();
        assert_eq!(got.port, Some(8080));
        assert_eq!(got.bindings, ["cron"]);
        assert_eq!(got.topics, [topic("ps", "t1")]);
    }

    #[test]
    fn v1beta1_inputs_win_over_triggers() {
        let ctx = r#"{"name":"f",
          "inputs":{"a":{"uri":"a","componentName":"a","componentType":"bindings.cron"}},
          "triggers":{"dapr":[{"name":"b","type":"bindings.cron"}]}}"#;
        assert_eq!(parse(ctx).unwrap().bindings, ["a"]);
        // An empty map counts as absent.
        let ctx =
            r#"{"name":"f","inputs":{},"triggers":{"dapr":[{"name":"b","type":"bindings.cron"}]}}"#;
        assert_eq!(parse(ctx).unwrap().bindings, ["b"]);
    }

    #[test]
    fn skips_what_it_cannot_serve() {
        let ctx = r#"{"name":"f","port":"http",
          "inputs":{"a":{"uri":"a","componentName":"a","componentType":"state.redis"},
                    "b":{"componentName":"b","componentType":"pubsub.kafka"},
                    "c":{"uri":"c","componentName":"","componentType":"bindings.cron"}}}"#;
        let got = parse(ctx).unwrap();
        assert_eq!(got.port, None);
        assert!(got.topics.is_empty());
        // A missing component name falls back to the input name.
        assert_eq!(got.bindings, ["c"]);
        assert_eq!(got.warnings.len(), 3, "{:?}", got.warnings);
    }

    #[test]
    fn duplicates_are_listed_once() {
        let ctx = r#"{"name":"f","triggers":{"dapr":[
            {"name":"b","type":"bindings.cron"},{"name":"b","type":"bindings.cron"},
            {"name":"p","type":"pubsub.kafka","topic":"t"},{"name":"p","type":"pubsub.kafka","topic":"t"}]}}"#;
        let got = parse(ctx).unwrap();
        assert_eq!(got.bindings, ["b"]);
        assert_eq!(got.topics.len(), 1);
    }

    #[test]
    fn errors() {
        assert!(matches!(parse("{"), Err(ContextError::Json(_))));
        assert!(matches!(parse("{}"), Err(ContextError::NoName)));
        assert!(matches!(
            parse(r#"{"name":" "}"#),
            Err(ContextError::NoName)
        ));
        assert!(parse("[]").is_err());
    }

    #[test]
    fn reads_what_our_func_context_writes() {
        use crate::model::function::FunctionSpec;
        let spec: FunctionSpec = serde_json::from_value(serde_json::json!({
            "version": "v1", "image": "i", "port": 8081,
            "serving": {"runtime": "async",
                "inputs": [{"name": "cron", "component": "cron"},
                           {"name": "sub", "component": "msg", "topic": "t"}],
                "bindings": {"cron": {"type": "bindings.cron", "version": "v1"}},
                "pubsub": {"msg": {"type": "pubsub.kafka", "version": "v1"}}}
        }))
        .unwrap();
        let ctx = crate::model::func_context::func_context("f", &spec);
        let got = parse(&ctx).unwrap();
        assert_eq!(got.name, "f");
        assert_eq!(got.port, Some(8081));
        assert_eq!(got.bindings, ["cron"]);
        assert_eq!(got.topics, [topic("msg", "t")]);
    }
}
