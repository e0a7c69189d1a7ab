//! Dapr's gRPC app channel, served to daprd (`AppCallback`,
//! `AppCallbackHealthCheck`, `AppCallbackAlpha`) and forwarded to the
//! function pods, which serve the same `AppCallback` (OpenFunction's
//! functions frameworks do, through the Dapr SDKs).
//!
//! What daprd makes of the answers (dapr/dapr,
//! `pkg/runtime/subscription/postman/grpc/grpc.go`): a topic event is
//! acknowledged on `SUCCESS` (or an empty answer), redelivered on `RETRY` or
//! on any error status but `UNIMPLEMENTED`, and dropped on `DROP` or
//! `UNIMPLEMENTED`. So the proxy answers a topic event with what the
//! function answered, and with `RETRY` whenever the function failed or no
//! function answered (a function's `UNIMPLEMENTED` too: during a roll-out a
//! pod may not know a topic yet, and dropping would lose the event). A
//! binding event (`pkg/runtime/processor/binding/send.go`) fails on any
//! error status: the proxy passes the function's error through and answers
//! `UNAVAILABLE` when no function answered.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dapr::dapr::proto::common::v1::{InvokeRequest, InvokeResponse};
use dapr::dapr::proto::runtime::v1::app_callback_alpha_server::{
    AppCallbackAlpha, AppCallbackAlphaServer,
};
use dapr::dapr::proto::runtime::v1::app_callback_client::AppCallbackClient;
use dapr::dapr::proto::runtime::v1::app_callback_health_check_server::{
    AppCallbackHealthCheck, AppCallbackHealthCheckServer,
};
use dapr::dapr::proto::runtime::v1::app_callback_server::{AppCallback, AppCallbackServer};
use dapr::dapr::proto::runtime::v1::topic_event_bulk_request_entry::Event as BulkEvent;
use dapr::dapr::proto::runtime::v1::topic_event_response::TopicEventResponseStatus;
use dapr::dapr::proto::runtime::v1::{
    BindingEventRequest, BindingEventResponse, HealthCheckResponse, JobEventRequest,
    JobEventResponse, ListInputBindingsResponse, ListTopicSubscriptionsResponse,
    TopicEventBulkRequest, TopicEventBulkResponse, TopicEventBulkResponseEntry, TopicEventRequest,
    TopicEventResponse, TopicSubscription,
};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use super::context::FunctionInputs;
use super::deliver::{Attempt, Deliverer, DeliveryError, EventInfo};

/// Largest message accepted from daprd or a function (daprd's default
/// `max-body-size` is 4 MiB).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// The client of one function pod: one HTTP/2 connection, made on first
/// use and remade after a failure, with keep-alive pings so a vanished pod
/// is noticed.
pub fn connect(addr: SocketAddr) -> AppCallbackClient<Channel> {
    // A SocketAddr always makes a valid URI.
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap_or_else(|_| Endpoint::from_static("http://127.0.0.1:1"))
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    AppCallbackClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// The app channel towards daprd.
#[derive(Clone)]
pub struct AppChannel {
    inner: Arc<Inner>,
}

struct Inner {
    inputs: FunctionInputs,
    deliverer: Deliverer<AppCallbackClient<Channel>>,
    seq: AtomicU64,
}

impl AppChannel {
    pub fn new(inputs: FunctionInputs, deliverer: Deliverer<AppCallbackClient<Channel>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                inputs,
                deliverer,
                seq: AtomicU64::new(0),
            }),
        }
    }

    /// The three gRPC services, ready for a tonic server.
    pub fn routes(&self) -> tonic::service::Routes {
        tonic::service::Routes::new(
            AppCallbackServer::new(self.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(AppCallbackHealthCheckServer::new(self.clone()))
        .add_service(
            AppCallbackAlphaServer::new(self.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
    }

    /// A local id for events that carry none (bindings, invocations).
    fn next_id(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{}",
            self.inner.seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Delivers one topic event and turns every outcome into the answer
    /// daprd should get.
    async fn topic(
        &self,
        kind: &'static str,
        metadata: MetadataMap,
        event: TopicEventRequest,
    ) -> TopicEventResponseStatus {
        let start = Instant::now();
        let d = &self.inner.deliverer;
        let id = event.id.clone();
        let info = EventInfo { kind, id: &id };
        let result = d
            .deliver(info, |mut client, _| {
                let req = forward(&metadata, event.clone());
                async move { classify(client.on_topic_event(req).await) }
            })
            .await;
        let (status, result) = match result {
            Ok((Ok(answer), pod)) => {
                let status = TopicEventResponseStatus::try_from(answer.status)
                    .unwrap_or(TopicEventResponseStatus::Retry);
                match status {
                    TopicEventResponseStatus::Success => (status, "success"),
                    TopicEventResponseStatus::Drop => (status, "drop"),
                    TopicEventResponseStatus::Retry => {
                        tracing::warn!(event_id = %id, kind, %pod, "function answered RETRY");
                        (TopicEventResponseStatus::Retry, "function_error")
                    }
                }
            }
            Ok((Err(status), pod)) => {
                tracing::warn!(event_id = %id, kind, %pod, code = ?status.code(), error = status.message(), "function failed the event; RETRY");
                (TopicEventResponseStatus::Retry, "function_error")
            }
            Err(e) => (TopicEventResponseStatus::Retry, failed(kind, &id, &e)),
        };
        d.metrics.event(kind, result, start.elapsed());
        status
    }
}

/// Logs a delivery that reached no function; returns the metric result.
fn failed(kind: &str, id: &str, e: &DeliveryError) -> &'static str {
    match e {
        DeliveryError::Timeout { tried, .. } => {
            tracing::error!(event_id = %id, kind, pod = ?tried, error = %e, "event not delivered");
            "timeout"
        }
        DeliveryError::Draining => {
            tracing::warn!(event_id = %id, kind, "event refused: shutting down");
            "rejected"
        }
    }
}

fn delivery_status(e: &DeliveryError) -> Status {
    Status::unavailable(e.to_string())
}

/// A function's answer, or the sign that the request never got one: tonic
/// marks transport failures (connect, reset, GOAWAY, keep-alive timeout)
/// with a source error, while a status the function sent has none.
fn classify<T>(result: Result<Response<T>, Status>) -> Attempt<Result<T, Status>> {
    match result {
        Ok(r) => Attempt::Answered(Ok(r.into_inner())),
        Err(s) if std::error::Error::source(&s).is_some() => {
            Attempt::NotDelivered(format!("{:?}: {}", s.code(), s.message()))
        }
        Err(s) => Attempt::Answered(Err(s)),
    }
}

/// Headers that belong to the hop from daprd, not to the function.
const HOP_HEADERS: [&str; 5] = [
    "user-agent",
    "grpc-timeout",
    "grpc-accept-encoding",
    "grpc-encoding",
    "host",
];

/// The request to a function: daprd's metadata (tracing, custom metadata)
/// without hop headers, and the same message.
fn forward<T>(metadata: &MetadataMap, message: T) -> Request<T> {
    let mut md = metadata.clone();
    for h in HOP_HEADERS {
        md.remove(h);
    }
    Request::from_parts(md, tonic::Extensions::default(), message)
}

#[tonic::async_trait]
impl AppCallback for AppChannel {
    async fn on_invoke(
        &self,
        request: Request<InvokeRequest>,
    ) -> Result<Response<InvokeResponse>, Status> {
        let start = Instant::now();
        let (metadata, _, message) = request.into_parts();
        let id = self.next_id("invoke");
        let d = &self.inner.deliverer;
        let result = d
            .deliver(
                EventInfo {
                    kind: "invoke",
                    id: &id,
                },
                |mut client, _| {
                    let req = forward(&metadata, message.clone());
                    async move { classify(client.on_invoke(req).await) }
                },
            )
            .await;
        let (answer, result) = match result {
            Ok((Ok(a), _)) => (Ok(Response::new(a)), "success"),
            Ok((Err(s), pod)) => {
                tracing::warn!(event_id = %id, kind = "invoke", %pod, code = ?s.code(), error = s.message(), "function failed the invocation");
                (Err(s), "function_error")
            }
            Err(e) => (Err(delivery_status(&e)), failed("invoke", &id, &e)),
        };
        d.metrics.event("invoke", result, start.elapsed());
        answer
    }

    async fn list_topic_subscriptions(
        &self,
        _: Request<()>,
    ) -> Result<Response<ListTopicSubscriptionsResponse>, Status> {
        // No routes: daprd then sends an empty path, which is what the
        // functions frameworks' SDK handlers are registered under.
        let subscriptions = self
            .inner
            .inputs
            .topics
            .iter()
            .map(|t| TopicSubscription {
                pubsub_name: t.pubsub.clone(),
                topic: t.topic.clone(),
                metadata: t.metadata.clone().into_iter().collect(),
                ..TopicSubscription::default()
            })
            .collect();
        Ok(Response::new(ListTopicSubscriptionsResponse {
            subscriptions,
        }))
    }

    async fn on_topic_event(
        &self,
        request: Request<TopicEventRequest>,
    ) -> Result<Response<TopicEventResponse>, Status> {
        let (metadata, _, event) = request.into_parts();
        let status = self.topic("topic", metadata, event).await;
        Ok(Response::new(TopicEventResponse {
            status: status as i32,
        }))
    }

    async fn list_input_bindings(
        &self,
        _: Request<()>,
    ) -> Result<Response<ListInputBindingsResponse>, Status> {
        Ok(Response::new(ListInputBindingsResponse {
            bindings: self.inner.inputs.bindings.clone(),
        }))
    }

    async fn on_binding_event(
        &self,
        request: Request<BindingEventRequest>,
    ) -> Result<Response<BindingEventResponse>, Status> {
        let start = Instant::now();
        let (metadata, _, event) = request.into_parts();
        let id = self.next_id(&format!("binding-{}", event.name));
        let d = &self.inner.deliverer;
        let result = d
            .deliver(
                EventInfo {
                    kind: "binding",
                    id: &id,
                },
                |mut client, _| {
                    let req = forward(&metadata, event.clone());
                    async move { classify(client.on_binding_event(req).await) }
                },
            )
            .await;
        let (answer, result) = match result {
            Ok((Ok(a), _)) => (Ok(Response::new(a)), "success"),
            Ok((Err(s), pod)) => {
                tracing::warn!(event_id = %id, kind = "binding", %pod, code = ?s.code(), error = s.message(), "function failed the event");
                // UNIMPLEMENTED would read as "not subscribed" elsewhere:
                // report it as what it is here, a failed delivery.
                let s = if s.code() == tonic::Code::Unimplemented {
                    Status::internal(format!("function does not implement it: {}", s.message()))
                } else {
                    s
                };
                (Err(s), "function_error")
            }
            Err(e) => (Err(delivery_status(&e)), failed("binding", &id, &e)),
        };
        d.metrics.event("binding", result, start.elapsed());
        answer
    }

    async fn on_bulk_topic_event(
        &self,
        request: Request<TopicEventBulkRequest>,
    ) -> Result<Response<TopicEventBulkResponse>, Status> {
        Ok(Response::new(self.bulk(request).await))
    }

    async fn on_job_event(
        &self,
        _: Request<JobEventRequest>,
    ) -> Result<Response<JobEventResponse>, Status> {
        Err(Status::unimplemented(
            "the Dapr proxy forwards bindings, topics and invocations only",
        ))
    }
}

impl AppChannel {
    /// Every entry delivered as its own topic event, concurrently; one
    /// status per entry.
    async fn bulk(&self, request: Request<TopicEventBulkRequest>) -> TopicEventBulkResponse {
        let (metadata, _, bulk) = request.into_parts();
        let deliveries = bulk.entries.iter().map(|entry| {
            let mut md = metadata.clone();
            for (k, v) in &entry.metadata {
                if let (Ok(k), Ok(v)) = (
                    MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()),
                    MetadataValue::try_from(v.as_str()),
                ) {
                    md.insert(k, v);
                }
            }
            let event = bulk_entry_event(&bulk, entry);
            let entry_id = entry.entry_id.clone();
            async move {
                let status = self.topic("bulk_topic_entry", md, event).await;
                TopicEventBulkResponseEntry {
                    entry_id,
                    status: status as i32,
                }
            }
        });
        TopicEventBulkResponse {
            statuses: futures::future::join_all(deliveries).await,
        }
    }
}

/// The single topic event of one bulk entry.
fn bulk_entry_event(
    bulk: &TopicEventBulkRequest,
    entry: &dapr::dapr::proto::runtime::v1::TopicEventBulkRequestEntry,
) -> TopicEventRequest {
    let base = TopicEventRequest {
        topic: bulk.topic.clone(),
        pubsub_name: bulk.pubsub_name.clone(),
        path: bulk.path.clone(),
        ..TopicEventRequest::default()
    };
    match &entry.event {
        Some(BulkEvent::CloudEvent(ce)) => TopicEventRequest {
            id: if ce.id.is_empty() {
                entry.entry_id.clone()
            } else {
                ce.id.clone()
            },
            source: ce.source.clone(),
            r#type: ce.r#type.clone(),
            spec_version: ce.spec_version.clone(),
            data_content_type: ce.data_content_type.clone(),
            data: ce.data.clone(),
            extensions: ce.extensions.clone(),
            ..base
        },
        Some(BulkEvent::Bytes(bytes)) => TopicEventRequest {
            id: entry.entry_id.clone(),
            data_content_type: entry.content_type.clone(),
            data: bytes.clone(),
            ..base
        },
        None => TopicEventRequest {
            id: entry.entry_id.clone(),
            data_content_type: entry.content_type.clone(),
            ..base
        },
    }
}

#[tonic::async_trait]
impl AppCallbackHealthCheck for AppChannel {
    async fn health_check(&self, _: Request<()>) -> Result<Response<HealthCheckResponse>, Status> {
        if self.inner.deliverer.gate.is_draining() {
            Err(Status::unavailable("shutting down"))
        } else {
            Ok(Response::new(HealthCheckResponse {}))
        }
    }
}

#[tonic::async_trait]
impl AppCallbackAlpha for AppChannel {
    async fn on_bulk_topic_event_alpha1(
        &self,
        request: Request<TopicEventBulkRequest>,
    ) -> Result<Response<TopicEventBulkResponse>, Status> {
        Ok(Response::new(self.bulk(request).await))
    }

    async fn on_job_event_alpha1(
        &self,
        _: Request<JobEventRequest>,
    ) -> Result<Response<JobEventResponse>, Status> {
        Err(Status::unimplemented(
            "the Dapr proxy forwards bindings, topics and invocations only",
        ))
    }
}

/// Metadata entries as a plain map (for tests and logs).
pub fn metadata_map(md: &MetadataMap) -> HashMap<String, String> {
    md.iter()
        .filter_map(|kv| match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned()))
            }
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dapr::dapr::proto::runtime::v1::{TopicEventBulkRequestEntry, TopicEventCeRequest};

    #[test]
    fn bulk_entries_become_topic_events() {
        let bulk = TopicEventBulkRequest {
            id: "b".into(),
            topic: "t".into(),
            pubsub_name: "p".into(),
            path: "".into(),
            ..Default::default()
        };
        let ce = TopicEventBulkRequestEntry {
            entry_id: "1".into(),
            event: Some(BulkEvent::CloudEvent(TopicEventCeRequest {
                id: "ce-1".into(),
                source: "s".into(),
                r#type: "com.example".into(),
                spec_version: "1.0".into(),
                data_content_type: "application/json".into(),
                data: b"{}".to_vec(),
                extensions: None,
            })),
            ..Default::default()
        };
        let ev = bulk_entry_event(&bulk, &ce);
        assert_eq!(
            (ev.id.as_str(), ev.topic.as_str(), ev.pubsub_name.as_str()),
            ("ce-1", "t", "p")
        );
        assert_eq!(ev.data, b"{}");
        let raw = TopicEventBulkRequestEntry {
            entry_id: "2".into(),
            content_type: "text/plain".into(),
            event: Some(BulkEvent::Bytes(b"hi".to_vec())),
            ..Default::default()
        };
        let ev = bulk_entry_event(&bulk, &raw);
        assert_eq!(
            (ev.id.as_str(), ev.data_content_type.as_str()),
            ("2", "text/plain")
        );
        assert_eq!(ev.data, b"hi");
    }

    #[test]
    fn hop_headers_are_not_forwarded() {
        let mut md = MetadataMap::new();
        md.insert("traceparent", "00-abc-def-01".parse().unwrap());
        md.insert("grpc-timeout", "5S".parse().unwrap());
        md.insert("user-agent", "grpc-go".parse().unwrap());
        let req = forward(&md, ());
        let got = metadata_map(req.metadata());
        assert_eq!(got.len(), 1);
        assert_eq!(got["traceparent"], "00-abc-def-01");
    }

    #[test]
    fn statuses_from_functions_are_answers() {
        match classify::<()>(Err(Status::internal("boom"))) {
            Attempt::Answered(Err(s)) => assert_eq!(s.code(), tonic::Code::Internal),
            _ => panic!("a function's status is its answer"),
        }
        let mut transport = Status::unavailable("connection refused");
        transport.set_source(Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(matches!(
            classify::<()>(Err(transport)),
            Attempt::NotDelivered(_)
        ));
    }
}
