//! Prometheus metrics (text format on the admin port's `/metrics`), with
//! the `prometheus-client` crate: the official Rust client, typed label
//! sets, no global registry.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

use crate::model::v1beta2::{ApiVersion, VersionObserver};
use crate::webhook::{Observer, Reviewed};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// `pod`, `deployment`, `function` or `other`.
    pub resource: &'static str,
    pub operation: String,
    /// `patched`, `unchanged`, `skipped`, `denied` or `error`.
    pub outcome: &'static str,
    /// Why a request was skipped (empty otherwise).
    pub reason: &'static str,
    /// The Dapr mode applied (empty when none).
    pub mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `cache`, `api` or `miss`.
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `apply`, `delete`, `patch` or `create`.
    pub verb: &'static str,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiVersionLabels {
    /// `webhook` (its Function store) or `controller`.
    pub component: &'static str,
    /// `functions` or `servings`.
    pub resource: &'static str,
    /// `v1beta1` or `v1beta2`.
    pub version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    pub admissions: Family<AdmissionLabels, Counter>,
    pub admission_duration: Family<ResourceLabels, Histogram>,
    pub lookups: Family<SourceLabels, Counter>,
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub writes: Family<WriteLabels, Counter>,
    pub proxies_managed: Gauge,
    pub proxies_deferred: Gauge,
    pub certificate_expiry: Gauge<f64, AtomicU64>,
    pub leader: Gauge,
    pub api_version: Family<ApiVersionLabels, Gauge>,
    pub lease_failing: Gauge,
    pub lease_fault: Family<ReasonLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("openfunction_dapr");
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission requests by resource, operation, outcome, skip reason and Dapr mode",
            admissions.clone(),
        );
        // 50 µs .. ~1.6 s
        let admission_duration = Family::<ResourceLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.00005, 2.0, 16))
        });
        registry.register(
            "admission_duration_seconds",
            "Time to answer an admission request, from body read to response encoded",
            admission_duration.clone(),
        );
        let lookups = Family::<SourceLabels, Counter>::default();
        registry.register(
            "function_lookups",
            "Function look-ups of the webhook by source (cache, api, miss)",
            lookups.clone(),
        );
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Controller reconciles by result",
            reconciles.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one controller reconcile",
            reconcile_duration.clone(),
        );
        let writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "controller_writes",
            "API writes made by the controller, by verb and kind",
            writes.clone(),
        );
        let proxies_managed = Gauge::default();
        registry.register(
            "proxies_managed",
            "Standalone Functions whose proxy this controller maintains",
            proxies_managed.clone(),
        );
        let proxies_deferred = Gauge::default();
        registry.register(
            "proxies_deferred",
            "Functions whose Dapr proxy OpenFunction's own controller runs (openfunction-dapr runs none for them)",
            proxies_deferred.clone(),
        );
        let certificate_expiry = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "Unix time at which the serving certificate expires",
            certificate_expiry.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the controller lease",
            leader.clone(),
        );
        let api_version = Family::<ApiVersionLabels, Gauge>::default();
        registry.register(
            "openfunction_api_version",
            "1 for the core.openfunction.io version each component reads (v1beta2 where served, else v1beta1)",
            api_version.clone(),
        );
        let lease_failing = Gauge::default();
        registry.register(
            "lease_failing",
            "1 while the controller Lease cannot be taken for a reason other than another holder",
            lease_failing.clone(),
        );
        let lease_fault = Family::<ReasonLabels, Gauge>::default();
        registry.register(
            "lease_fault",
            "1 for the reason the controller Lease cannot be taken (namespace_missing, forbidden, \
             unauthorized, not_found, api_error, unreachable, other); absent when it can",
            lease_fault.clone(),
        );
        Metrics {
            registry,
            lease_failing,
            lease_fault,
            admissions,
            admission_duration,
            lookups,
            reconciles,
            reconcile_duration,
            writes,
            proxies_managed,
            proxies_deferred,
            certificate_expiry,
            leader,
            api_version,
        }
    }

    /// Record when the serving certificate expires.
    pub fn set_certificate_expiry(&self, not_after: SystemTime) {
        let secs = not_after
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.certificate_expiry.set(secs);
    }

    /// Record one reconcile.
    pub fn reconciled(&self, ok: bool, elapsed: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
        self.reconcile_duration.observe(elapsed.as_secs_f64());
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

async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

impl crate::controller::ControllerMetrics for Metrics {
    fn reconciled(&self, ok: bool, duration: Duration) {
        Metrics::reconciled(self, ok, duration);
    }

    fn write(&self, verb: &'static str, kind: &'static str) {
        self.writes.get_or_create(&WriteLabels { verb, kind }).inc();
    }

    fn leader(&self, is_leader: bool) {
        self.leader.set(i64::from(is_leader));
    }

    fn lease_fault(&self, fault: Option<&crate::ops::leader::LeaseFault>) {
        self.lease_fault.clear();
        self.lease_failing.set(i64::from(fault.is_some()));
        if let Some(f) = fault {
            self.lease_fault
                .get_or_create(&ReasonLabels { reason: f.reason })
                .set(1);
        }
    }

    fn proxies(&self, count: usize) {
        self.proxies_managed
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    fn deferred(&self, count: usize) {
        self.proxies_deferred
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    fn api_version(&self, version: Option<ApiVersion>) {
        self.version_in_use("controller", "functions", version);
    }
}

impl VersionObserver for Metrics {
    fn version_in_use(
        &self,
        component: &'static str,
        resource: &'static str,
        version: Option<ApiVersion>,
    ) {
        for v in [ApiVersion::V1beta1, ApiVersion::V1beta2] {
            self.api_version
                .get_or_create(&ApiVersionLabels {
                    component,
                    resource,
                    version: v.as_str(),
                })
                .set(i64::from(version == Some(v)));
        }
    }
}

impl Observer for Metrics {
    fn admission(&self, r: &Reviewed, elapsed: Duration) {
        self.admissions
            .get_or_create(&AdmissionLabels {
                resource: r.resource,
                operation: r.operation.clone(),
                outcome: r.outcome.as_str(),
                reason: r.outcome.reason(),
                mode: r.mode.map_or("", |m| m.as_str()),
            })
            .inc();
        self.admission_duration
            .get_or_create(&ResourceLabels {
                resource: r.resource,
            })
            .observe(elapsed.as_secs_f64());
        if let Some(source) = r.lookup {
            self.lookups.get_or_create(&SourceLabels { source }).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::mode::Mode;
    use crate::webhook::{Outcome, SkipReason};

    #[test]
    fn admissions_are_counted_with_labels() {
        let m = Metrics::new();
        let reviewed = |outcome, mode, lookup| Reviewed {
            status: StatusCode::OK,
            body: Vec::new(),
            outcome,
            mode,
            resource: "pod",
            operation: "CREATE".into(),
            lookup,
        };
        m.admission(
            &reviewed(Outcome::Patched, Some(Mode::Standalone), Some("cache")),
            Duration::from_micros(80),
        );
        m.admission(
            &reviewed(Outcome::Patched, Some(Mode::Standalone), Some("cache")),
            Duration::from_micros(90),
        );
        m.admission(
            &reviewed(
                Outcome::Skipped(SkipReason::FunctionNotFound),
                None,
                Some("miss"),
            ),
            Duration::from_micros(10),
        );
        m.set_certificate_expiry(UNIX_EPOCH + Duration::from_secs(2_000_000_000));
        m.leader.set(1);
        m.version_in_use("webhook", "functions", Some(ApiVersion::V1beta2));
        m.version_in_use("webhook", "servings", None);
        let text = m.encode();
        for (labels, value) in [
            (
                r#"component="webhook",resource="functions",version="v1beta2""#,
                1,
            ),
            (
                r#"component="webhook",resource="functions",version="v1beta1""#,
                0,
            ),
            (
                r#"component="webhook",resource="servings",version="v1beta2""#,
                0,
            ),
        ] {
            let line = format!("openfunction_dapr_openfunction_api_version{{{labels}}} {value}");
            assert!(text.contains(&line), "{line} missing:\n{text}");
        }
        assert!(
            text.contains(
                r#"openfunction_dapr_admission_requests_total{resource="pod",operation="CREATE",outcome="patched",reason="",mode="standalone"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"outcome="skipped",reason="function_not_found",mode=""} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"openfunction_dapr_function_lookups_total{source="cache"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"openfunction_dapr_function_lookups_total{source="miss"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"openfunction_dapr_admission_duration_seconds_count{resource="pod"} 3"#
            ),
            "{text}"
        );
        assert!(
            text.contains("openfunction_dapr_certificate_expiry_timestamp_seconds 2000000000"),
            "{text}"
        );
        assert!(text.contains("openfunction_dapr_leader 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
