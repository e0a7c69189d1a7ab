//! Dapr's HTTP app protocol (`APP_PROTOCOL=http`), served to daprd and
//! forwarded to the function pods over a keep-alive connection pool.
//!
//! What daprd asks and makes of the answers (dapr/dapr):
//! - `GET /dapr/subscribe` lists the subscriptions
//!   (`pkg/runtime/pubsub/subscriptions.go`); `GET /dapr/config` the app
//!   configuration (`pkg/channel/http/http_channel.go`);
//! - `OPTIONS /<binding>`: 2xx or 405 means the app takes that input
//!   binding (`pkg/runtime/processor/binding/send.go`); events then come as
//!   `POST /<binding>`, metadata in headers, and any status but 200 is a
//!   failure;
//! - `POST /<route>` with the CloudEvent (`pkg/runtime/subscription/postman/
//!   http/http.go`): a 2xx with `{"status": "SUCCESS"}` or no status
//!   acknowledges, `RETRY` (and any non-2xx but 404) redelivers, `DROP` (and
//!   404) drops. The proxy passes a function's 2xx answer through, and
//!   answers `{"status": "RETRY"}` when the function failed (its 404 too)
//!   or no function answered;
//! - `GET /healthz`: app health checks (200 while not draining).
//!
//! Routes are named as upstream's proxy and the Go functions framework name
//! them: a binding at `/<component>`, a topic at `/<topic>`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use super::context::FunctionInputs;
use super::deliver::{Attempt, Deliverer, DeliveryError, EventInfo};

/// Largest body accepted from daprd or a function.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// The client towards function pods: a keep-alive pool per pod.
pub type FunctionClient = Client<HttpConnector, Full<Bytes>>;

/// A pooled HTTP/1.1 client.
pub fn client() -> FunctionClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(connector)
}

struct AppState {
    inputs: FunctionInputs,
    client: FunctionClient,
    deliverer: Deliverer<SocketAddr>,
}

/// The routes daprd calls.
pub fn router(
    inputs: FunctionInputs,
    client: FunctionClient,
    deliverer: Deliverer<SocketAddr>,
) -> Router {
    let state = Arc::new(AppState {
        inputs,
        client,
        deliverer,
    });
    Router::new()
        .route("/dapr/subscribe", get(subscribe))
        .route("/dapr/config", get(config))
        .route("/healthz", get(healthz))
        .fallback(forward)
        .with_state(state)
}

#[derive(Serialize)]
struct Subscription<'a> {
    pubsubname: &'a str,
    topic: &'a str,
    route: String,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    metadata: &'a std::collections::BTreeMap<String, String>,
}

async fn subscribe(State(s): State<Arc<AppState>>) -> Response {
    let subs: Vec<Subscription<'_>> = s
        .inputs
        .topics
        .iter()
        .map(|t| Subscription {
            pubsubname: &t.pubsub,
            topic: &t.topic,
            route: t.route(),
            metadata: &t.metadata,
        })
        .collect();
    axum::Json(subs).into_response()
}

async fn config() -> Response {
    axum::Json(serde_json::json!({})).into_response()
}

async fn healthz(State(s): State<Arc<AppState>>) -> Response {
    if s.deliverer.gate.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    } else {
        (StatusCode::OK, "ok").into_response()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Binding,
    Topic,
    Invoke,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Binding => "binding",
            Kind::Topic => "topic",
            Kind::Invoke => "invoke",
        }
    }
}

/// Hop-by-hop headers, never forwarded.
const HOP: [header::HeaderName; 7] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::TE,
    header::UPGRADE,
    header::HOST,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
];

fn strip_hop(headers: &mut HeaderMap) {
    for h in &HOP {
        headers.remove(h);
    }
    headers.remove("keep-alive");
}

/// A function's complete answer.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Deserialize)]
struct EventId {
    #[serde(default)]
    id: Option<serde_json::Value>,
}

fn retry() -> Response {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({"status": "RETRY"})),
    )
        .into_response()
}

async fn forward(State(s): State<Arc<AppState>>, req: Request) -> Response {
    let start = Instant::now();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let name = path.trim_start_matches('/');
    let kind = if parts.method == Method::POST && s.inputs.has_binding(name) {
        Kind::Binding
    } else if parts.method == Method::POST && s.inputs.topic_by_route(&path).is_some() {
        Kind::Topic
    } else if parts.method == Method::OPTIONS && !name.contains('/') {
        // daprd asks whether the app takes this input binding.
        return if s.inputs.has_binding(name) {
            StatusCode::OK.into_response()
        } else {
            StatusCode::NOT_FOUND.into_response()
        };
    } else {
        Kind::Invoke
    };
    let body = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot read the body: {e}"),
            )
                .into_response();
        }
    };
    let id = match kind {
        Kind::Topic => serde_json::from_slice::<EventId>(&body)
            .ok()
            .and_then(|e| e.id)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .unwrap_or_default(),
        _ => String::new(),
    };
    let mut headers = parts.headers;
    strip_hop(&mut headers);
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| path.clone(), |p| p.as_str().to_owned());
    let method = parts.method;
    let d = &s.deliverer;
    let result = d
        .deliver(
            EventInfo {
                kind: kind.label(),
                id: &id,
            },
            |addr, _| {
                let request = build(&method, addr, &path_and_query, &headers, body.clone());
                let client = s.client.clone();
                async move {
                    let Some(request) = request else {
                        return Attempt::Answered(Err("invalid request URI".to_owned()));
                    };
                    match client.request(request).await {
                        Ok(resp) => {
                            let (parts, body) = resp.into_parts();
                            match http_body_util::Limited::new(body, MAX_BODY).collect().await {
                                Ok(body) => Attempt::Answered(Ok(Answer {
                                    status: parts.status,
                                    headers: parts.headers,
                                    body: body.to_bytes(),
                                })),
                                Err(e) => Attempt::NotDelivered(format!("reading the answer: {e}")),
                            }
                        }
                        Err(e) => Attempt::NotDelivered(error_chain(&e)),
                    }
                }
            },
        )
        .await;
    let label = kind.label();
    let (response, result) = match result {
        Ok((Ok(answer), pod)) => {
            let ok = match kind {
                Kind::Topic => answer.status.is_success(),
                Kind::Binding => answer.status == StatusCode::OK,
                Kind::Invoke => true,
            };
            if kind == Kind::Topic && !ok {
                tracing::warn!(event_id = %id, kind = label, %pod, status = answer.status.as_u16(), "function failed the event; RETRY");
                (retry(), "function_error")
            } else {
                let result = if !ok {
                    tracing::warn!(event_id = %id, kind = label, %pod, status = answer.status.as_u16(), "function failed the event");
                    "function_error"
                } else if kind == Kind::Topic {
                    topic_result(&answer.body)
                } else {
                    "success"
                };
                let mut headers = answer.headers;
                strip_hop(&mut headers);
                let mut resp = Response::new(Body::from(answer.body));
                *resp.status_mut() = answer.status;
                *resp.headers_mut() = headers;
                (resp, result)
            }
        }
        Ok((Err(e), _)) => (
            (StatusCode::BAD_REQUEST, e).into_response(),
            "function_error",
        ),
        Err(e) => {
            let result = match &e {
                DeliveryError::Timeout { tried, .. } => {
                    tracing::error!(event_id = %id, kind = label, pod = ?tried, error = %e, "event not delivered");
                    "timeout"
                }
                DeliveryError::Draining => "rejected",
            };
            let resp = if kind == Kind::Topic {
                retry()
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
            };
            (resp, result)
        }
    };
    d.metrics.event(label, result, start.elapsed());
    response
}

/// `success`, `drop` or `function_error` (RETRY) from a topic answer body.
fn topic_result(body: &[u8]) -> &'static str {
    #[derive(Deserialize)]
    struct Reply {
        #[serde(default)]
        status: String,
    }
    match serde_json::from_slice::<Reply>(body) {
        Ok(r) => match r.status.to_ascii_uppercase().as_str() {
            "" | "SUCCESS" => "success",
            "DROP" => "drop",
            _ => "function_error",
        },
        Err(_) => "success",
    }
}

fn build(
    method: &Method,
    addr: SocketAddr,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Option<http::Request<Full<Bytes>>> {
    let uri: Uri = format!("http://{addr}{path_and_query}").parse().ok()?;
    let mut req = http::Request::builder()
        .method(method.clone())
        .uri(uri)
        .body(Full::new(body))
        .ok()?;
    *req.headers_mut() = headers.clone();
    if let Ok(host) = HeaderValue::from_str(&addr.to_string()) {
        req.headers_mut().insert(header::HOST, host);
    }
    Some(req)
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_replies() {
        assert_eq!(topic_result(b""), "success");
        assert_eq!(topic_result(b"{}"), "success");
        assert_eq!(topic_result(br#"{"status":"SUCCESS"}"#), "success");
        assert_eq!(topic_result(br#"{"status":"DROP"}"#), "drop");
        assert_eq!(topic_result(br#"{"status":"RETRY"}"#), "function_error");
        assert_eq!(topic_result(br#"{"status":"WHAT"}"#), "function_error");
    }

    #[test]
    fn hop_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("traceparent", "x".parse().unwrap());
        strip_hop(&mut h);
        assert_eq!(h.len(), 1);
        let req = build(
            &Method::POST,
            "127.0.0.1:9".parse().unwrap(),
            "/t?a=1",
            &h,
            Bytes::new(),
        )
        .unwrap();
        assert_eq!(req.uri(), "http://127.0.0.1:9/t?a=1");
        assert_eq!(req.headers()[header::HOST], "127.0.0.1:9");
    }
}
