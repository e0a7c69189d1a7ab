//! Interoperability: the proxy in front of OpenFunction's Python functions
//! framework (`ofn-functions-framework` 0.2.0rc1 with `dapr-ext-grpc` 1.11,
//! `.venv/ofn`), serving an async function with a binding and a topic input.
//!
//! The function is given the `FUNC_CONTEXT` our `model::func_context`
//! writes for the Function (the union shape: the framework reads its
//! `triggers.dapr` and `port`); the proxy reads the same variable. A fake
//! daprd (the generated `AppCallback` client) sends binding and topic events
//! through the proxy; the function appends each to a file. Every event must
//! arrive, and an event sent while the function process is stopped must not
//! be acknowledged until a restarted function took it.

mod common;

use std::time::{Duration, Instant};

use common::ofn::OfnFunction;
use common::proxy::{Options, Proxy, binding, topic_event};
use common::python::python;
use common::serve_bin::free_addr;
use dapr::dapr::proto::runtime::v1::topic_event_response::TopicEventResponseStatus as TopicStatus;
use openfunction_dapr::model::function::FunctionSpec;

#[tokio::test]
async fn python_functions_framework_gets_every_event_through_the_proxy() {
    let Some(python) = python("ofn") else { return };
    let port = free_addr().port();
    let spec: FunctionSpec = serde_json::from_value(serde_json::json!({
        "version": "v1.0.0", "image": "img", "port": port,
        "serving": {"runtime": "async",
            "inputs": [{"name": "cron", "component": "cron"},
                       {"name": "sub", "component": "ps", "topic": "orders"}],
            "bindings": {"cron": {"type": "bindings.cron", "version": "v1"}},
            "pubsub": {"ps": {"type": "pubsub.kafka", "version": "v1"}}}
    }))
    .unwrap();
    let ctx = openfunction_dapr::model::func_context::func_context("fn", &spec);
    let dir = tempfile::tempdir().unwrap();
    let mut function = OfnFunction::start(&python, dir.path(), &[("FUNC_CONTEXT", &ctx)]);

    let pod = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let proxy = Proxy::start(
        &[pod],
        Options {
            context: ctx.clone(),
            event_timeout: Duration::from_secs(60),
            ..Options::default()
        },
    )
    .await;
    let daprd = proxy.daprd().await;
    let mut d = daprd.clone();
    assert_eq!(
        d.list_input_bindings(())
            .await
            .unwrap()
            .into_inner()
            .bindings,
        ["cron"]
    );
    let subs = d
        .list_topic_subscriptions(())
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    assert_eq!(
        (subs[0].pubsub_name.as_str(), subs[0].topic.as_str()),
        ("ps", "orders")
    );

    // The first event waits for the Python process to listen.
    let mut want = Vec::new();
    for i in 0..10 {
        let mut b = binding("cron");
        b.data = format!("tick-{i}").into_bytes();
        d.on_binding_event(b)
            .await
            .unwrap_or_else(|e| panic!("binding {i}: {e}\n{}", function.log()));
        want.push(format!("binding:tick-{i}"));
        let r = d
            .on_topic_event(topic_event(&format!("order-{i}")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, TopicStatus::Success as i32);
        want.push(format!("topic:order-{i}"));
    }
    assert_eq!(function.received(), want);

    // The function process stops: nothing is acknowledged meanwhile.
    function.stop();
    let mut d1 = daprd.clone();
    let topic = tokio::spawn(async move { d1.on_topic_event(topic_event("while-down")).await });
    let mut d2 = daprd.clone();
    let bind = tokio::spawn(async move {
        let mut b = binding("cron");
        b.data = b"while-down".to_vec();
        d2.on_binding_event(b).await
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !topic.is_finished() && !bind.is_finished(),
        "acknowledged with no function running"
    );
    assert_eq!(function.received().len(), 20);

    // A new function process takes them; only then are they acknowledged.
    let function = OfnFunction::start(&python, dir.path(), &[("FUNC_CONTEXT", &ctx)]);
    let started = Instant::now();
    let r = topic.await.unwrap().unwrap().into_inner();
    assert_eq!(r.status, TopicStatus::Success as i32);
    bind.await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(55));
    let got = function.received();
    assert!(got.contains(&"topic:while-down".to_owned()), "{got:?}");
    assert!(got.contains(&"binding:while-down".to_owned()), "{got:?}");
    assert_eq!(got.len(), 22);
}
