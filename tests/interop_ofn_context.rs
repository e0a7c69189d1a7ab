//! Interoperability: the `FUNC_CONTEXT` we write is enough for OpenFunction's
//! Python functions framework (`ofn-functions-framework` 0.2.0rc1,
//! `.venv/ofn`) on its own, with no proxy in front, for an async Function of
//! either API version.
//!
//! The framework reads only `FUNC_CONTEXT` (`_function_registry.py`,
//! `FUNC_CONTEXT = "FUNC_CONTEXT"`); it listens for Dapr's gRPC
//! `AppCallback` on the top-level `port` (`context/function_context.py`:
//! `port = json_dct.get("port", 0)`; `runner.py` hands `context.port` to
//! `DaprTriggerHandler`) and registers one binding per `triggers.dapr`
//! entry whose `type` starts with `bindings`, one subscription
//! (`name`, `topic`) per entry whose `type` starts with `pubsub`
//! (`triggers/dapr_trigger/dapr.py`). A fake daprd (the generated
//! `AppCallback` client) checks the listings and sends one binding and one
//! topic event.

mod common;

use std::time::{Duration, Instant};

use common::fixtures::fixtures;
use common::ofn::OfnFunction;
use common::proxy::{binding, topic_event};
use common::python::python;
use common::serve_bin::free_addr;
use dapr::dapr::proto::runtime::v1::app_callback_client::AppCallbackClient;
use dapr::dapr::proto::runtime::v1::topic_event_response::TopicEventResponseStatus as TopicStatus;
use openfunction_dapr::model::func_context::{func_context, func_context_v1beta2};
use openfunction_dapr::model::function::FunctionSpec;
use openfunction_dapr::model::mode::GrpcEndpointForm;
use openfunction_dapr::model::v1beta2::read_function;
use openfunction_dapr::model::workload::Kind;
use openfunction_dapr::webhook::admission::mutate_workload;
use openfunction_dapr::webhook::patch::apply;
use serde_json::{Value, json};
use tonic::transport::Channel;

/// What a Function must be served as: its binding inputs and its
/// (pubsub, topic) subscriptions.
struct Want<'a> {
    bindings: &'a [&'a str],
    subscriptions: &'a [(&'a str, &'a str)],
}

/// Start the framework with `env`, wait until it answers
/// `ListInputBindings` on `port` (at most 60 s), check both listings
/// exactly, then one binding and one topic event.
async fn serve_and_check(env: &[(&str, &str)], port: u16, want: Want<'_>) {
    let Some(python) = python("ofn") else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut function = OfnFunction::start(&python, dir.path(), env);
    let url = format!("http://127.0.0.1:{port}");

    // Bounded wait for the gRPC server (the framework imports grpc, flask
    // and the function first).
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut d, bindings): (AppCallbackClient<Channel>, Vec<String>) = loop {
        if let Some(status) = function.exited() {
            panic!("function exited ({status}):\n{}", function.log());
        }
        let err = match AppCallbackClient::connect(url.clone()).await {
            Ok(mut c) => match c.list_input_bindings(()).await {
                Ok(r) => break (c, r.into_inner().bindings),
                Err(e) => format!("ListInputBindings: {e}"),
            },
            Err(e) => format!("connect: {e}"),
        };
        if Instant::now() > deadline {
            panic!(
                "no gRPC AppCallback on {url} after 60 s ({err}); function log:\n{}",
                function.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Exactly the Function's bindings and subscriptions, listed by the
    // framework itself (dapr-ext-grpc's App: the names it registered).
    let mut bindings = bindings;
    bindings.sort();
    assert_eq!(bindings, want.bindings, "{}", function.log());
    let mut subs: Vec<(String, String)> = d
        .list_topic_subscriptions(())
        .await
        .unwrap()
        .into_inner()
        .subscriptions
        .into_iter()
        .map(|s| (s.pubsub_name, s.topic))
        .collect();
    subs.sort();
    let want_subs: Vec<(String, String)> = want
        .subscriptions
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    assert_eq!(subs, want_subs, "{}", function.log());

    // One binding event and one topic event reach the handler.
    let mut b = binding(want.bindings[0]);
    b.data = b"tick".to_vec();
    d.on_binding_event(b)
        .await
        .unwrap_or_else(|e| panic!("OnBindingEvent: {e}\n{}", function.log()));
    let (pubsub, topic) = want.subscriptions[0];
    let mut t = topic_event("evt-1");
    t.pubsub_name = pubsub.into();
    t.topic = topic.into();
    let r = d
        .on_topic_event(t)
        .await
        .unwrap_or_else(|e| panic!("OnTopicEvent: {e}\n{}", function.log()))
        .into_inner();
    assert_eq!(r.status, TopicStatus::Success as i32);
    assert_eq!(function.received(), ["binding:tick", "topic:evt-1"]);
    // `function` is dropped here: killed by its PID.
}

/// v1beta1: an async Function with a cron binding and a kafka pub/sub input
/// and a binding output; the context of `model::func_context` (the union:
/// `triggers.dapr` derived from the inputs, `port` = `spec.port`).
#[tokio::test]
async fn python_framework_serves_our_v1beta1_context() {
    let port = free_addr().port();
    let spec: FunctionSpec = serde_json::from_value(json!({
        "version": "v1.0.0", "image": "img", "port": port,
        "serving": {"runtime": "async",
            "inputs": [{"name": "cron", "component": "cron"},
                       {"name": "sub", "component": "ps", "topic": "orders"}],
            "outputs": [{"name": "out", "component": "kafka-out", "operation": "create"}],
            "bindings": {"cron": {"type": "bindings.cron", "version": "v1"},
                         "kafka-out": {"type": "bindings.kafka", "version": "v1"}},
            "pubsub": {"ps": {"type": "pubsub.kafka", "version": "v1"}}}
    }))
    .unwrap();
    let ctx = func_context("fn", &spec);
    assert_eq!(func_context_v1beta2("fn", &spec), None);
    serve_and_check(
        &[("FUNC_CONTEXT", &ctx)],
        port,
        Want {
            bindings: &["cron"],
            subscriptions: &[("ps", "orders")],
        },
    )
    .await;
}

/// The Function documents (`kind: Function`) of a v1.2.0 sample file.
fn sample(dir: &std::path::Path, file: &str, name: &str) -> Value {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap()
        .into_iter()
        .find(|d| d["kind"] == "Function" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{file}: no Function {name}"))
}

/// Read a v1beta2 Function document with `read_function`, let the webhook
/// patch a bare Pod of it and return `FUNC_CONTEXT` and
/// `FUNC_CONTEXT_V1BETA2` from the function container (as the webhook sets
/// both). Checks that the port the Function sets is where each shape keeps
/// it: the union's top-level `port` (what the framework listens on), the
/// v1beta2 shape's `triggers.http.port`.
fn webhook_contexts(doc: Value, port: u16) -> Vec<(String, String)> {
    let function = read_function(doc).unwrap();
    let name = function.metadata.name.clone().unwrap();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{name}-abc"), "namespace": "default",
            "labels": {"openfunction.io/function": name}},
        "spec": {"containers": [{"name": "function", "image": "img"}]}
    });
    let m = mutate_workload(
        &pod,
        Kind::Pod,
        "default",
        &function,
        "cluster.local",
        GrpcEndpointForm::Url,
    )
    .unwrap();
    let patched = apply(&pod, &m.patch).unwrap();
    let env: Vec<(String, String)> = patched["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"].as_str().unwrap().starts_with("FUNC_CONTEXT"))
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let get = |n: &str| -> Value {
        let v = &env
            .iter()
            .find(|(k, _)| k == n)
            .unwrap_or_else(|| panic!("no {n}"))
            .1;
        serde_json::from_str(v).unwrap()
    };
    assert_eq!(env.len(), 2, "{env:?}");
    let ctx = get("FUNC_CONTEXT");
    assert_eq!(
        ctx,
        serde_json::from_str::<Value>(&func_context(&name, &function.spec)).unwrap()
    );
    assert_eq!(ctx["runtime"], "Async");
    assert_eq!(ctx["port"], port.to_string());
    assert_eq!(
        get("FUNC_CONTEXT_V1BETA2")["triggers"]["http"]["port"],
        port
    );
    env
}

/// v1beta2: OpenFunction v1.2.0's `bindings` sample (cron binding trigger
/// with `inputName`, kafka binding output with `outputName`) plus the pub/sub
/// trigger and component of its `autoscaling-subscriber` sample (kafka
/// topic `pubsub`), on a free port set as `triggers.http.port` (the v1beta2
/// app port, SPEC 2). Read by `read_function`; both contexts taken from the
/// Pod the webhook patches.
#[tokio::test]
async fn python_framework_serves_our_v1beta2_context() {
    let Some(dir) = fixtures("openfunction-v1.2.0/functions", "v1beta2 context") else {
        return;
    };
    let mut doc = sample(
        &dir,
        "function-bindings-sample-serving-only.yaml",
        "bindings",
    );
    let sub = sample(
        &dir,
        "function-pubsub-sample-serving-only.yaml",
        "autoscaling-subscriber",
    );
    let serving = &mut doc["spec"]["serving"];
    serving["pubsub"] = sub["spec"]["serving"]["pubsub"].clone();
    let dapr = serving["triggers"]["dapr"].as_array_mut().unwrap();
    dapr.extend(
        sub["spec"]["serving"]["triggers"]["dapr"]
            .as_array()
            .unwrap()
            .iter()
            .cloned(),
    );
    let port = free_addr().port();
    serving["triggers"]["http"] = json!({"port": port});
    let env = webhook_contexts(doc, port);
    let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    serve_and_check(
        &env,
        port,
        Want {
            bindings: &["cron"],
            subscriptions: &[("kafka-server", "pubsub")],
        },
    )
    .await;
}

/// v1beta2, hand-written: dapr triggers without `type` (OpenFunction's
/// `getComponentType` takes it from `bindings` / `pubsub`), port in
/// `triggers.http.port`.
#[tokio::test]
async fn python_framework_serves_our_v1beta2_context_with_untyped_triggers() {
    let port = free_addr().port();
    let doc = json!({
        "apiVersion": "core.openfunction.io/v1beta2", "kind": "Function",
        "metadata": {"name": "subscriber", "namespace": "default"},
        "spec": {"version": "v1.0.0", "image": "img", "serving": {
            "triggers": {"http": {"port": port},
                "dapr": [{"name": "cron"}, {"name": "mq", "topic": "orders"}]},
            "outputs": [{"dapr": {"name": "kafka-out", "operation": "create"}}],
            "bindings": {"cron": {"type": "bindings.cron", "version": "v1", "metadata": []},
                         "kafka-out": {"type": "bindings.kafka", "version": "v1", "metadata": []}},
            "pubsub": {"mq": {"type": "pubsub.kafka", "version": "v1", "metadata": []}}}}
    });
    let env = webhook_contexts(doc, port);
    let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    serve_and_check(
        &env,
        port,
        Want {
            bindings: &["cron"],
            subscriptions: &[("mq", "orders")],
        },
    )
    .await;
}
