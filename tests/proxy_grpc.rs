//! The proxy's gRPC app channel, driven by a fake daprd (the generated
//! `AppCallback` client, as daprd calls its app) against several fake
//! function pods on 127.0.0.1: listing, delivery, the acknowledgement rules,
//! balancing, the in-flight bound and draining.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::proxy::{FakeFunction, Mode, Options, Proxy, binding, topic_event};
use dapr::dapr::proto::runtime::v1::app_callback_alpha_client::AppCallbackAlphaClient;
use dapr::dapr::proto::runtime::v1::app_callback_health_check_client::AppCallbackHealthCheckClient;
use dapr::dapr::proto::runtime::v1::topic_event_bulk_request_entry::Event as BulkEvent;
use dapr::dapr::proto::runtime::v1::topic_event_response::TopicEventResponseStatus as TopicStatus;
use dapr::dapr::proto::runtime::v1::{
    TopicEventBulkRequest, TopicEventBulkRequestEntry, TopicEventCeRequest,
};
use tonic::Code;

async fn pods(n: usize) -> Vec<FakeFunction> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(FakeFunction::start().await);
    }
    v
}

fn addrs(pods: &[FakeFunction]) -> Vec<std::net::SocketAddr> {
    pods.iter().map(|p| p.addr).collect()
}

fn status(s: i32) -> TopicStatus {
    TopicStatus::try_from(s).unwrap()
}

#[tokio::test]
async fn lists_inputs_from_func_context_and_reports_health() {
    let proxy = Proxy::start(&[], Options::default()).await;
    let mut daprd = proxy.daprd().await;
    let bindings = daprd.list_input_bindings(()).await.unwrap().into_inner();
    assert_eq!(bindings.bindings, ["cron", "kafka-in"]);
    let subs = daprd
        .list_topic_subscriptions(())
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    assert_eq!(subs.len(), 1);
    assert_eq!(
        (subs[0].pubsub_name.as_str(), subs[0].topic.as_str()),
        ("ps", "orders")
    );
    assert_eq!(subs[0].metadata["consumerID"], "c1");
    // No routes: daprd sends an empty path, what SDK handlers expect.
    assert!(subs[0].routes.is_none());

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", proxy.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = AppCallbackHealthCheckClient::new(channel);
    health.health_check(()).await.unwrap();
    let (code, _) = common::proxy::admin_get(proxy.admin, "/healthz").await;
    assert_eq!(code, 200);
    let (code, _) = common::proxy::admin_get(proxy.admin, "/readyz").await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn delivers_bindings_topics_and_invocations_once_each() {
    let pods = pods(3).await;
    let proxy = Proxy::start(&addrs(&pods), Options::default()).await;
    let mut daprd = proxy.daprd().await;

    let mut req = tonic::Request::new(binding("cron"));
    req.metadata_mut().insert(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            .parse()
            .unwrap(),
    );
    let answer = daprd.on_binding_event(req).await.unwrap().into_inner();
    // The function's answer comes back as it was.
    assert!(
        String::from_utf8(answer.data)
            .unwrap()
            .starts_with("ok from ")
    );

    for i in 0..30 {
        let r = daprd
            .on_topic_event(topic_event(&format!("t{i}")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status(r.status), TopicStatus::Success);
    }
    daprd
        .on_invoke(dapr::dapr::proto::common::v1::InvokeRequest {
            method: "hello".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let mut all: Vec<String> = pods.iter().flat_map(|p| p.seen().events.clone()).collect();
    assert_eq!(all.len(), 32, "{all:?}");
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 32, "every event reached exactly one pod");
    // Metadata (tracing) went along; daprd's path too (empty).
    let traced = pods.iter().any(|p| {
        p.seen().metadata.iter().any(|m| {
            m.get("traceparent")
                .is_some_and(|v| v.starts_with("00-0af7"))
        })
    });
    assert!(traced);
    assert!(
        pods.iter()
            .all(|p| p.seen().paths.iter().all(String::is_empty))
    );
    assert!(
        proxy
            .metric("openfunction_dapr_proxy_events_total{kind=\"topic\",result=\"success\"}")
            .await
            >= 30.0
    );
}

#[tokio::test]
async fn function_errors_go_back_to_daprd() {
    let pods = pods(1).await;
    let proxy = Proxy::start(&addrs(&pods), Options::default()).await;
    let mut daprd = proxy.daprd().await;

    pods[0].set_mode(Mode::Fail(Code::Internal));
    let err = daprd.on_binding_event(binding("cron")).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(err.message(), "function says no");
    let r = daprd
        .on_topic_event(topic_event("e1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(r.status), TopicStatus::Retry);
    // UNIMPLEMENTED would make daprd drop the event: it becomes RETRY for
    // topics and INTERNAL for bindings.
    pods[0].set_mode(Mode::Fail(Code::Unimplemented));
    let r = daprd
        .on_topic_event(topic_event("e2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(r.status), TopicStatus::Retry);
    let err = daprd.on_binding_event(binding("cron")).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    // The function's own RETRY and DROP are passed through.
    pods[0].set_mode(Mode::Reply(TopicStatus::Drop));
    let r = daprd
        .on_topic_event(topic_event("e3"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(r.status), TopicStatus::Drop);
    pods[0].set_mode(Mode::Reply(TopicStatus::Retry));
    let r = daprd
        .on_topic_event(topic_event("e4"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(r.status), TopicStatus::Retry);
    // Each was delivered once: an answer is never retried by the proxy.
    assert_eq!(pods[0].count(), 6);
    assert_eq!(
        proxy.metric("openfunction_dapr_proxy_retries_total").await,
        0.0
    );
}

#[tokio::test]
async fn a_pod_that_is_down_is_skipped() {
    let mut pods = pods(3).await;
    pods[1].stop().await;
    let proxy = Proxy::start(&addrs(&pods), Options::default()).await;
    let mut daprd = proxy.daprd().await;
    for i in 0..20 {
        let r = daprd
            .on_topic_event(topic_event(&format!("e{i}")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status(r.status), TopicStatus::Success);
    }
    assert_eq!(pods[1].count(), 0);
    assert_eq!(pods[0].count() + pods[2].count(), 20);
}

#[tokio::test]
async fn no_pod_waits_for_the_event_timeout_then_fails() {
    let mut pods = pods(1).await;
    pods[0].stop().await;
    let opts = Options {
        event_timeout: Duration::from_millis(600),
        ..Options::default()
    };
    let proxy = Proxy::start(&addrs(&pods), opts).await;
    let mut daprd = proxy.daprd().await;
    let start = std::time::Instant::now();
    let err = daprd.on_binding_event(binding("cron")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(start.elapsed() >= Duration::from_millis(600));
    let r = daprd
        .on_topic_event(topic_event("e1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(r.status), TopicStatus::Retry, "never a success");
    // No pod listed at all: the same.
    proxy.resolver.set(vec![]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = daprd
        .on_topic_event(topic_event("e2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(r.status), TopicStatus::Retry);
    assert!(
        proxy
            .metric("openfunction_dapr_proxy_events_total{kind=\"topic\",result=\"timeout\"}")
            .await
            >= 2.0
    );
}

#[tokio::test]
async fn all_pods_down_then_back_nothing_is_acknowledged_meanwhile() {
    let mut pods = pods(2).await;
    for p in &mut pods {
        p.stop().await;
    }
    let opts = Options {
        event_timeout: Duration::from_secs(20),
        ..Options::default()
    };
    let proxy = Proxy::start(&addrs(&pods), opts).await;
    let daprd = proxy.daprd().await;
    let mut tasks = Vec::new();
    for i in 0..5 {
        let mut d = daprd.clone();
        tasks.push(tokio::spawn(async move {
            d.on_topic_event(topic_event(&format!("e{i}"))).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "acknowledged while no pod was up"
    );
    pods[1].restart().await;
    for t in tasks {
        let r = t.await.unwrap().unwrap().into_inner();
        assert_eq!(status(r.status), TopicStatus::Success);
    }
    assert_eq!(pods[1].count(), 5);
}

#[tokio::test]
async fn a_stalled_pod_does_not_hold_up_the_others() {
    let pods = pods(3).await;
    pods[0].set_mode(Mode::Stall);
    let proxy = Proxy::start(&addrs(&pods), Options::default()).await;
    let daprd = proxy.daprd().await;
    let mut tasks = Vec::new();
    for i in 0..60 {
        let mut d = daprd.clone();
        tasks.push(tokio::spawn(async move {
            d.on_topic_event(topic_event(&format!("e{i}"))).await
        }));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stalled = pods[0].count();
    let done = tasks.iter().filter(|t| t.is_finished()).count();
    // Least outstanding requests: once the stalled pod has a few requests
    // piling up, it loses every comparison.
    assert!(stalled <= 6, "stalled pod got {stalled}");
    assert_eq!(done, 60 - stalled, "only the stalled pod's events wait");
    pods[0].release();
    for t in tasks {
        assert_eq!(
            status(t.await.unwrap().unwrap().into_inner().status),
            TopicStatus::Success
        );
    }
}

#[tokio::test]
async fn spreads_load_over_pods() {
    let pods = pods(4).await;
    let proxy = Proxy::start(&addrs(&pods), Options::default()).await;
    let daprd = proxy.daprd().await;
    let mut tasks = Vec::new();
    for w in 0..16 {
        let mut d = daprd.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                d.on_binding_event(binding("kafka-in")).await.unwrap();
                let _ = (w, i);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let counts: Vec<usize> = pods.iter().map(FakeFunction::count).collect();
    assert_eq!(counts.iter().sum::<usize>(), 400);
    for c in &counts {
        assert!((40..=160).contains(c), "uneven spread {counts:?}");
    }
}

#[tokio::test]
async fn in_flight_is_bounded() {
    let pods = pods(1).await;
    pods[0].set_mode(Mode::Stall);
    let opts = Options {
        max_in_flight: 4,
        ..Options::default()
    };
    let proxy = Proxy::start(&addrs(&pods), opts).await;
    let daprd = proxy.daprd().await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let mut d = daprd.clone();
        tasks.push(tokio::spawn(async move {
            d.on_topic_event(topic_event(&format!("e{i}"))).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pods[0].seen().running, 4);
    assert_eq!(proxy.metric("openfunction_dapr_proxy_in_flight").await, 4.0);
    // Release in rounds: the waiting ones go in as slots free up.
    pods[0].set_mode(Mode::Ok);
    pods[0].release();
    for t in tasks {
        assert_eq!(
            status(t.await.unwrap().unwrap().into_inner().status),
            TopicStatus::Success
        );
    }
    assert_eq!(pods[0].seen().max_running, 4);
    assert_eq!(pods[0].count(), 10);
}

#[tokio::test]
async fn bulk_events_are_answered_per_entry() {
    let pods = pods(2).await;
    let proxy = Proxy::start(&addrs(&pods), Options::default()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", proxy.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let entries = (0..6)
        .map(|i| TopicEventBulkRequestEntry {
            entry_id: format!("entry-{i}"),
            content_type: "application/json".into(),
            metadata: Default::default(),
            event: Some(if i % 2 == 0 {
                BulkEvent::CloudEvent(TopicEventCeRequest {
                    id: format!("ce-{i}"),
                    data: b"{}".to_vec(),
                    ..Default::default()
                })
            } else {
                BulkEvent::Bytes(b"raw".to_vec())
            }),
        })
        .collect();
    let req = TopicEventBulkRequest {
        id: "bulk".into(),
        entries,
        topic: "orders".into(),
        pubsub_name: "ps".into(),
        ..Default::default()
    };
    // daprd calls AppCallback first, then the alpha service.
    let mut v1 = dapr::dapr::proto::runtime::v1::app_callback_client::AppCallbackClient::new(
        channel.clone(),
    );
    let r = v1
        .on_bulk_topic_event(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.statuses.len(), 6);
    assert!(
        r.statuses
            .iter()
            .all(|s| status(s.status) == TopicStatus::Success)
    );
    let ids: HashSet<_> = r.statuses.iter().map(|s| s.entry_id.clone()).collect();
    assert_eq!(ids.len(), 6);
    let seen: usize = pods.iter().map(FakeFunction::count).sum();
    assert_eq!(seen, 6);

    pods[0].set_mode(Mode::Fail(Code::Internal));
    pods[1].set_mode(Mode::Fail(Code::Internal));
    let mut alpha = AppCallbackAlphaClient::new(channel);
    #[allow(deprecated)] // daprd still falls back to it
    let r = alpha
        .on_bulk_topic_event_alpha1(req)
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.statuses
            .iter()
            .all(|s| status(s.status) == TopicStatus::Retry)
    );
}

#[tokio::test]
async fn drains_on_shutdown() {
    let pods = pods(1).await;
    pods[0].set_mode(Mode::Stall);
    let mut proxy = Proxy::start(&addrs(&pods), Options::default()).await;
    let daprd = proxy.daprd().await;
    let mut tasks = Vec::new();
    for i in 0..3 {
        let mut d = daprd.clone();
        tasks.push(tokio::spawn(async move {
            d.on_topic_event(topic_event(&format!("e{i}"))).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // No new events once draining: refused with RETRY (or not connected).
    let mut d = daprd.clone();
    if let Ok(r) = d.on_topic_event(topic_event("late")).await {
        assert_eq!(status(r.into_inner().status), TopicStatus::Retry);
    }
    let (code, _) = common::proxy::admin_get(proxy.admin, "/readyz").await;
    assert_eq!(code, 503);
    assert!(
        !proxy.task.as_ref().unwrap().is_finished(),
        "exited with events in flight"
    );
    // The in-flight ones finish and are acknowledged, then the proxy exits.
    pods[0].release();
    for t in tasks {
        assert_eq!(
            status(t.await.unwrap().unwrap().into_inner().status),
            TopicStatus::Success
        );
    }
    let task = proxy.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("proxy exits after draining")
        .unwrap()
        .unwrap();
    assert_eq!(pods[0].count(), 3);
}

#[tokio::test]
async fn drain_gives_up_after_the_drain_timeout() {
    let pods = pods(1).await;
    pods[0].set_mode(Mode::Stall);
    let opts = Options {
        drain_timeout: Duration::from_millis(300),
        ..Options::default()
    };
    let mut proxy = Proxy::start(&addrs(&pods), opts).await;
    let mut d = proxy.daprd().await;
    let t = tokio::spawn(async move { d.on_topic_event(topic_event("stuck")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.shutdown();
    let task = proxy.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("exits after the drain timeout")
        .unwrap()
        .unwrap();
    // The abandoned event was not acknowledged.
    match tokio::time::timeout(Duration::from_secs(5), t).await {
        Ok(Ok(Ok(r))) => assert_ne!(status(r.into_inner().status), TopicStatus::Success),
        Ok(Ok(Err(_))) | Err(_) => {}
        Ok(Err(e)) => panic!("{e}"),
    }
}
