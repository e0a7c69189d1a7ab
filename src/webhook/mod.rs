//! The admission endpoint: `POST /mutate`, AdmissionReview in and out.
//! Decoding, the decision and encoding are pure ([`admission`], [`patch`],
//! [`prune`]); [`store`] is the watch-fed Function cache; this module adds
//! the look-up and the HTTP surface.

pub mod admission;
pub mod patch;
pub mod prune;
pub mod store;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tracing::{Instrument, field, info_span, warn};

use crate::model::mode::{GrpcEndpointForm, Mode};
use crate::model::workload::{Classification, Kind, classify};
use crate::webhook::admission::{Answer, DecodeError, Request, Target};
use crate::webhook::store::{FunctionStore, Lookup};

/// The route the MutatingWebhookConfiguration points at.
pub const MUTATE_PATH: &str = "/mutate";

/// Largest request body accepted: the API server caps a request at 3 MiB,
/// and a review carries the object and (on UPDATE) the old object.
pub const MAX_BODY_BYTES: usize = 2 * 3 * 1024 * 1024 + 64 * 1024;

/// What happened to one admission request (a metrics and log label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Patched,
    Unchanged,
    Skipped(SkipReason),
    Denied,
    Error,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Not a resource/operation we handle.
    Resource,
    /// Not labelled as a function workload.
    NotFunction,
    Proxy,
    FunctionNotFound,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Patched => "patched",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped(_) => "skipped",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }

    /// The skip reason, or "" for the other outcomes.
    pub fn reason(self) -> &'static str {
        match self {
            Outcome::Skipped(SkipReason::Resource) => "resource",
            Outcome::Skipped(SkipReason::NotFunction) => "not_function",
            Outcome::Skipped(SkipReason::Proxy) => "proxy",
            Outcome::Skipped(SkipReason::FunctionNotFound) => "function_not_found",
            _ => "",
        }
    }
}

/// A finished review, with what the metrics need to know.
#[derive(Debug)]
pub struct Reviewed {
    pub status: StatusCode,
    pub body: Vec<u8>,
    pub outcome: Outcome,
    pub mode: Option<Mode>,
    /// `pod`, `deployment`, `function` or `other`.
    pub resource: &'static str,
    pub operation: String,
    /// Where the Function came from: `cache`, `api`, or `miss`.
    pub lookup: Option<&'static str>,
}

/// Observes every review; the metrics module implements it.
pub trait Observer: Send + Sync + 'static {
    fn admission(&self, reviewed: &Reviewed, elapsed: std::time::Duration);
}

/// The webhook's state.
pub struct Webhook {
    store: FunctionStore,
    cluster_domain: String,
    grpc_endpoint_form: GrpcEndpointForm,
    observer: Option<Arc<dyn Observer>>,
}

impl Webhook {
    pub fn new(store: FunctionStore, cluster_domain: impl Into<String>) -> Self {
        Webhook {
            store,
            cluster_domain: cluster_domain.into(),
            grpc_endpoint_form: GrpcEndpointForm::default(),
            observer: None,
        }
    }

    /// The operator's form of `DAPR_GRPC_ENDPOINT`.
    pub fn with_grpc_endpoint_form(mut self, form: GrpcEndpointForm) -> Self {
        self.grpc_endpoint_form = form;
        self
    }

    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn store(&self) -> &FunctionStore {
        &self.store
    }

    /// Answer one AdmissionReview body.
    pub async fn review(&self, body: &[u8]) -> Reviewed {
        let span = info_span!(
            "admission",
            uid = field::Empty,
            kind = field::Empty,
            namespace = field::Empty,
            name = field::Empty,
            operation = field::Empty,
            outcome = field::Empty,
            mode = field::Empty,
        );
        let start = Instant::now();
        let reviewed = self.review_inner(body).instrument(span.clone()).await;
        span.record("outcome", reviewed.outcome.as_str());
        if let Some(mode) = reviewed.mode {
            span.record("mode", mode.as_str());
        }
        let elapsed = start.elapsed();
        span.in_scope(|| {
            tracing::debug!(
                elapsed_us = elapsed.as_micros() as u64,
                "admission reviewed"
            )
        });
        if let Some(o) = &self.observer {
            o.admission(&reviewed, elapsed);
        }
        reviewed
    }

    async fn review_inner(&self, body: &[u8]) -> Reviewed {
        let request = match admission::decode(body) {
            Ok(r) => r,
            Err(DecodeError::Invalid { uid, reason }) => {
                warn!(%reason, "undecodable admission request");
                let (status, body) = match uid {
                    Some(uid) => {
                        tracing::Span::current().record("uid", uid.as_str());
                        (
                            StatusCode::OK,
                            admission::encode(&uid, &Answer::deny(400, reason)),
                        )
                    }
                    None => (StatusCode::BAD_REQUEST, reason.into_bytes()),
                };
                return Reviewed {
                    status,
                    body,
                    outcome: Outcome::Error,
                    mode: None,
                    resource: "other",
                    operation: String::new(),
                    lookup: None,
                };
            }
        };
        let span = tracing::Span::current();
        span.record("uid", request.uid.as_str());
        span.record("operation", request.operation.as_str());
        let display = request.display_name();
        let (ns, name) = display.split_once('/').unwrap_or(("", &display));
        span.record("namespace", ns);
        span.record("name", name);

        let target = request.target();
        let resource = match target {
            Target::Workload(Kind::Pod) => "pod",
            Target::Workload(Kind::Deployment) => "deployment",
            Target::Function => "function",
            Target::Other => "other",
        };
        span.record("kind", resource);
        let (answer, outcome, mode, lookup) = match target {
            Target::Other => (
                Answer::allow(),
                Outcome::Skipped(SkipReason::Resource),
                None,
                None,
            ),
            Target::Function => {
                let a = admission::review_function(&request, &self.cluster_domain);
                (a, Outcome::Unchanged, None, None)
            }
            Target::Workload(kind) => self.review_workload(&request, kind).await,
        };
        Reviewed {
            status: StatusCode::OK,
            body: admission::encode(&request.uid, &answer),
            outcome,
            mode,
            resource,
            operation: request.operation,
            lookup,
        }
    }

    async fn review_workload(
        &self,
        request: &Request,
        kind: Kind,
    ) -> (Answer, Outcome, Option<Mode>, Option<&'static str>) {
        let Some(object) = request.object.as_ref().filter(|o| o.is_object()) else {
            return (
                Answer::deny(400, "the AdmissionReview request carries no object"),
                Outcome::Error,
                None,
                None,
            );
        };
        if let Some(k) = object.get("kind").and_then(|k| k.as_str())
            && k != kind.as_str()
        {
            return (
                Answer::deny(
                    400,
                    format!("object of kind {k} sent for resource {}", kind.as_str()),
                ),
                Outcome::Error,
                None,
                None,
            );
        }
        let owner = match classify(object, kind) {
            Classification::NotFunction => {
                return (
                    Answer::allow(),
                    Outcome::Skipped(SkipReason::NotFunction),
                    None,
                    None,
                );
            }
            Classification::Proxy => {
                return (
                    Answer::allow(),
                    Outcome::Skipped(SkipReason::Proxy),
                    None,
                    None,
                );
            }
            Classification::Workload(owner) => owner,
        };
        let Some(namespace) = request.namespace() else {
            return (
                Answer::deny(400, "the AdmissionReview request has no namespace"),
                Outcome::Error,
                None,
                None,
            );
        };
        let (function, source) = match self.store.lookup(namespace, owner).await {
            Ok(Lookup::Found { function, source }) => (function, source),
            Ok(Lookup::NotFound(reason)) => {
                let answer = Answer::allow().with_warning(format!(
                    "{reason}: Dapr settings not applied to {} {}",
                    kind.as_str(),
                    request.display_name()
                ));
                return (
                    answer,
                    Outcome::Skipped(SkipReason::FunctionNotFound),
                    None,
                    Some("miss"),
                );
            }
            Err(e) => {
                warn!(error = %e, "function look-up failed");
                return (
                    Answer::deny(
                        503,
                        format!(
                            "temporary failure, retry: openfunction-dapr could not look up the Function: {e}"
                        ),
                    ),
                    Outcome::Denied,
                    None,
                    None,
                );
            }
        };
        match admission::mutate_workload(
            object,
            kind,
            namespace,
            &function,
            &self.cluster_domain,
            self.grpc_endpoint_form,
        ) {
            Ok(m) => {
                let outcome = if m.patch.is_empty() {
                    Outcome::Unchanged
                } else {
                    Outcome::Patched
                };
                let answer = Answer {
                    allowed: true,
                    patch: m.patch,
                    warnings: m.warnings,
                    status: None,
                };
                (answer, outcome, Some(m.mode), Some(source.as_str()))
            }
            Err(e) => (
                Answer::deny(
                    400,
                    format!(
                        "cannot patch {} {}: {e}",
                        kind.as_str(),
                        request.display_name()
                    ),
                ),
                Outcome::Error,
                None,
                Some(source.as_str()),
            ),
        }
    }
}

/// The HTTPS app: `POST /mutate` with a body limit.
pub fn router(webhook: Arc<Webhook>) -> Router {
    Router::new()
        .route(MUTATE_PATH, post(mutate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_announced_oversize))
        .with_state(webhook)
}

/// `413` for a body announced (`Content-Length`) over the limit, before any
/// of it is read; a body that grows past the limit without announcing it is
/// cut off there by `DefaultBodyLimit`.
async fn refuse_announced_oversize(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
    }
    next.run(request).await
}

async fn mutate(State(webhook): State<Arc<Webhook>>, headers: HeaderMap, body: Bytes) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type: application/json",
        )
            .into_response();
    }
    let reviewed = webhook.review(&body).await;
    let content_type = if reviewed.status == StatusCode::OK {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    (
        reviewed.status,
        [(header::CONTENT_TYPE, content_type)],
        reviewed.body,
    )
        .into_response()
}
