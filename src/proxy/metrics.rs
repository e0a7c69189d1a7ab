//! Prometheus metrics of the proxy (prefix `openfunction_dapr_proxy_`),
//! served on the admin port's `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Kind of event: `binding`, `topic`, `bulk_topic_entry` or `invoke`.
pub type Kind = &'static str;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub kind: Kind,
    /// `success` (the function acknowledged), `function_error` (the
    /// function answered with an error or RETRY), `drop` (the function
    /// answered DROP), `timeout` (no function answered within the event
    /// timeout), `rejected` (arrived while draining). An event daprd gave
    /// up on first is not counted.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: Kind,
}

/// Every metric of the proxy.
pub struct ProxyMetrics {
    registry: Registry,
    pub events: Family<EventLabels, Counter>,
    pub delivery_duration: Family<KindLabels, Histogram>,
    pub in_flight: Gauge,
    pub endpoints: Gauge,
    pub retries: Counter,
    pub resolutions_failed: Counter,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("openfunction_dapr_proxy");
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Events received from daprd, by kind and result",
            events.clone(),
        );
        // 100 µs .. ~3.3 s, then +Inf
        let delivery_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register(
            "delivery_duration_seconds",
            "Time from an event's arrival to daprd getting the answer",
            delivery_duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight",
            "Events being delivered to functions (bounded by --max-in-flight)",
            in_flight.clone(),
        );
        let endpoints = Gauge::default();
        registry.register(
            "endpoints",
            "Function endpoints known from discovery",
            endpoints.clone(),
        );
        let retries = Counter::default();
        registry.register(
            "retries",
            "Deliveries tried again on another pod after a connection failure",
            retries.clone(),
        );
        let resolutions_failed = Counter::default();
        registry.register(
            "resolution_failures",
            "DNS look-ups of the function Service that failed",
            resolutions_failed.clone(),
        );
        Self {
            registry,
            events,
            delivery_duration,
            in_flight,
            endpoints,
            retries,
            resolutions_failed,
        }
    }

    /// Records one answered event.
    pub fn event(&self, kind: Kind, result: &'static str, elapsed: Duration) {
        self.events
            .get_or_create(&EventLabels { kind, result })
            .inc();
        self.delivery_duration
            .get_or_create(&KindLabels { kind })
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// `GET /metrics`, to merge into the admin router.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/metrics", get(serve_metrics))
            .with_state(self.clone())
    }
}

async fn serve_metrics(State(metrics): State<Arc<ProxyMetrics>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix() {
        let m = ProxyMetrics::new();
        m.event("topic", "success", Duration::from_millis(2));
        m.retries.inc();
        m.in_flight.set(3);
        m.endpoints.set(4);
        let text = m.encode();
        for name in [
            "openfunction_dapr_proxy_events_total{kind=\"topic\",result=\"success\"} 1",
            "openfunction_dapr_proxy_delivery_duration_seconds_count{kind=\"topic\"} 1",
            "openfunction_dapr_proxy_in_flight 3",
            "openfunction_dapr_proxy_endpoints 4",
            "openfunction_dapr_proxy_retries_total 1",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
