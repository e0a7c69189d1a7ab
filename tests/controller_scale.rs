//! Scale of the controller against the fake API server of the tests
//! (`tests/common/fake_api.rs`): N standalone Functions (half async, with a
//! Service; half knative, proxy only) exist when `controller::run_with_metrics`
//! starts; we wait until every proxy Deployment (and Service) is applied, then
//! through one full resync of every Function.
//!
//! Asserted, exactly (never on time):
//! - creation: per Function one server-side apply (PATCH, field manager
//!   `openfunction-dapr`) per owned object, one GET per owned object (the
//!   name check before a create), one `ProxyCreated` Event per owned object
//!   (so 2 for an async Function, 1 for a knative one), no other write;
//! - resync (every Function reconciled at least once more, resync period 1 s):
//!   no write, and no request about a single object either: only the
//!   list/watch requests of the caches.
//!
//! Every reconcile start is counted per Function from the controller's
//! `reconcile` tracing span (a global subscriber in this test binary), so
//! "every Function was resynced" is observed, not assumed from a sleep.
//!
//! - `cargo test --test controller_scale`: 200 Functions (a few seconds in
//!   debug);
//! - `cargo test --release --test controller_scale -- --ignored --nocapture`:
//!   1,000 Functions; prints the time from start to all proxies applied and
//!   the call counts.
//!
//! Leader election is off (`--leader-elect=false`): Lease calls are not per
//! Function, and `controller_reconcile.rs` covers them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use common::fake_api::{Call, FakeApi};
use common::harness::{cron, function};
use openfunction_dapr::controller::resources;
use openfunction_dapr::controller::{self, ControllerMetrics, ControllerSettings, FIELD_MANAGER};
use openfunction_dapr::model::function::Function;
use tracing::Subscriber;
use tracing::span::{Attributes, Id};
use tracing::subscriber::Interest;
use tracing_subscriber::layer::{Context, Layer};

// ------------------------------------------------ reconciles per Function

/// Reconcile starts per `namespace/function`, from the controller's
/// `reconcile` span.
static RECONCILES: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

struct ReconcileCounter;

#[derive(Default)]
struct SpanFields {
    function: String,
    namespace: String,
}

impl tracing::field::Visit for SpanFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "function" => self.function = format!("{value:?}"),
            "namespace" => self.namespace = format!("{value:?}"),
            _ => {}
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"))
    }
}

impl<S: Subscriber> Layer<S> for ReconcileCounter {
    // only the reconcile span is of interest: every other callsite is off
    fn register_callsite(&self, m: &'static tracing::Metadata<'static>) -> Interest {
        if m.is_span() && m.name() == "reconcile" && m.target().starts_with("openfunction_dapr") {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        let mut fields = SpanFields::default();
        attrs.record(&mut fields);
        *RECONCILES
            .lock()
            .unwrap()
            .entry(format!("{}/{}", fields.namespace, fields.function))
            .or_default() += 1;
    }
}

fn count_reconciles() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(ReconcileCounter),
        )
        .expect("the only global tracing subscriber of this test binary");
    });
}

/// Reconcile starts of each of `keys` so far.
fn reconciles_of(keys: &[String]) -> Vec<u64> {
    let map = RECONCILES.lock().unwrap();
    keys.iter()
        .map(|k| map.get(k).copied().unwrap_or_default())
        .collect()
}

// ---------------------------------------------------------------- metrics

/// What the controller reports (writes counted by the controller itself,
/// to cross-check the fake's record).
#[derive(Default)]
struct Metrics {
    reconciles: AtomicU64,
    errors: AtomicU64,
    writes: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl ControllerMetrics for Metrics {
    fn reconciled(&self, ok: bool, _duration: Duration) {
        self.reconciles.fetch_add(1, Relaxed);
        if !ok {
            self.errors.fetch_add(1, Relaxed);
        }
    }
    fn write(&self, verb: &'static str, kind: &'static str) {
        *self.writes.lock().unwrap().entry((verb, kind)).or_default() += 1;
    }
}

// ------------------------------------------------------------ the scenario

struct Func {
    name: String,
    uid: String,
    is_async: bool,
}

fn function_path(ns: &str, name: &str) -> String {
    format!("/apis/core.openfunction.io/v1beta1/namespaces/{ns}/functions/{name}")
}
fn deploy_path(ns: &str, function: &str) -> String {
    format!(
        "/apis/apps/v1/namespaces/{ns}/deployments/{}",
        resources::proxy_deployment_name(function)
    )
}
fn service_path(ns: &str, function: &str) -> String {
    format!(
        "/api/v1/namespaces/{ns}/services/{}",
        resources::function_service_name(function)
    )
}
fn events_path(ns: &str) -> String {
    format!("/apis/events.k8s.io/v1/namespaces/{ns}/events")
}

/// Function `i` of namespace `ns`: even ones async (proxy and Service), odd
/// ones knative (proxy only); all standalone.
fn make_function(ns: &str, i: usize, sink: &Function, cron: &Function) -> (Func, Function) {
    let is_async = i.is_multiple_of(2);
    let mut f = if is_async { cron.clone() } else { sink.clone() };
    let name = format!("{}-{i:04}", if is_async { "async" } else { "knative" });
    let uid = format!("f0000000-0000-4000-8000-{:012}", i + 1);
    f.metadata.name = Some(name.clone());
    f.metadata.namespace = Some(ns.to_owned());
    f.metadata.uid = Some(uid.clone());
    f.metadata.generation = Some(1);
    (
        Func {
            name,
            uid,
            is_async,
        },
        f,
    )
}

fn is_apply(c: &Call) -> bool {
    c.method == "PATCH"
        && c.field_manager() == Some(FIELD_MANAGER)
        && c.content_type.as_deref() == Some("application/apply-patch+yaml")
}

fn is_event(c: &Call) -> bool {
    c.method == "POST" && c.path.ends_with("/events")
}

fn is_write(c: &Call) -> bool {
    c.method != "GET"
}

/// A list or a watch (a GET of a collection), as opposed to a GET of one
/// object.
fn is_collection_get(c: &Call) -> bool {
    c.method == "GET"
        && (c.query.get("watch").map(String::as_str) == Some("true")
            || ["/functions", "/deployments", "/services"]
                .iter()
                .any(|p| c.path.ends_with(p)))
}

fn summary(calls: &[&Call]) -> Vec<String> {
    calls
        .iter()
        .map(|c| {
            format!(
                "{} {} fieldManager={:?} reason={:?}",
                c.method,
                c.path,
                c.field_manager(),
                c.body.as_ref().map(|b| b["reason"].clone())
            )
        })
        .collect()
}

async fn wait_for(what: &str, limit: Duration, poll: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(poll).await;
    }
}

/// Until every Function has had a reconcile start after `since`.
async fn wait_all_reconciled_since(what: &str, keys: &[String], since: &[u64], limit: Duration) {
    wait_for(what, limit, Duration::from_millis(20), || {
        reconciles_of(keys)
            .iter()
            .zip(since)
            .all(|(now, before)| now > before)
    })
    .await;
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What a run measured.
struct Figures {
    functions: usize,
    owned_objects: usize,
    /// Start of `run` to the first list of the Functions.
    functions_listed: Duration,
    /// Start of `run` to the first apply the fake received.
    first_apply: Duration,
    /// Start of `run` to the last proxy Deployment apply the fake received.
    all_proxies_applied: Duration,
    /// Start of `run` to the last apply (Deployment or Service).
    all_applied: Duration,
    /// Start of `run` to the test seeing every object in the fake.
    all_observed: Duration,
    applies: usize,
    other_writes: usize,
    events: usize,
    creation_gets: usize,
    creation_requests: usize,
    /// Reconcile starts per Function until every Event was published.
    creation_reconciles: (u64, u64),
    /// Most Functions whose creation calls (first GET to last Event)
    /// overlapped in time: the reconciles really in flight at once.
    max_in_flight: usize,
    /// Mean time from a Function's first creation call to its last.
    mean_creation_span: Duration,
    resync_window: Duration,
    resync_requests: usize,
    resync_watches: usize,
    resync_lists: usize,
    resync_writes: usize,
    resync_reconciles: (u64, u64),
}

impl Figures {
    fn print(&self, label: &str) {
        let n = self.functions as f64;
        println!(
            "[{label}] {} Functions ({} owned objects): Functions listed {:.0} ms, first apply {:.0} ms, \
             all proxy Deployments applied {:.0} ms (all objects applied {:.0} ms, observed {:.0} ms) after start; \
             {:.0} applies/s from the first to the last",
            self.functions,
            self.owned_objects,
            ms(self.functions_listed),
            ms(self.first_apply),
            ms(self.all_proxies_applied),
            ms(self.all_applied),
            ms(self.all_observed),
            self.applies as f64
                / (self.all_applied - self.first_apply)
                    .as_secs_f64()
                    .max(1e-3),
        );
        println!(
            "[{label}] creation: applies {} ({:.2}/Function, {:.2}/owned object), other writes {}, \
             Events {} ({:.2}/Function), GETs of single objects {}, requests in all {} ({:.2}/Function), \
             reconciles per Function {}..{}; at most {} Functions in flight at once, \
             {:.1} ms from a Function's first creation call to its last (mean)",
            self.applies,
            self.applies as f64 / n,
            self.applies as f64 / self.owned_objects as f64,
            self.other_writes,
            self.events,
            self.events as f64 / n,
            self.creation_gets,
            self.creation_requests,
            self.creation_requests as f64 / n,
            self.creation_reconciles.0,
            self.creation_reconciles.1,
            self.max_in_flight,
            ms(self.mean_creation_span),
        );
        println!(
            "[{label}] resync window {:.0} ms (every Function reconciled {}..{} times): \
             requests {} (watches {}, lists {}), writes {}",
            ms(self.resync_window),
            self.resync_reconciles.0,
            self.resync_reconciles.1,
            self.resync_requests,
            self.resync_watches,
            self.resync_lists,
            self.resync_writes,
        );
    }
}

/// The Function a creation call is about: the proxy Deployment's, the
/// Service's, or the Event's `regarding`.
fn function_of(c: &Call) -> Option<String> {
    let last = c.path.rsplit('/').next()?;
    if is_event(c) {
        c.body.as_ref()?["regarding"]["name"]
            .as_str()
            .map(str::to_owned)
    } else if c.path.contains("/deployments/") {
        last.strip_suffix("-dapr-proxy").map(str::to_owned)
    } else if c.path.contains("/services/") {
        Some(last.to_owned())
    } else {
        None
    }
}

/// Per Function: from its first creation call (GET, apply, Event) to its
/// last, relative to `start`.
fn creation_spans(calls: &[Call], start: Instant) -> BTreeMap<String, (Duration, Duration)> {
    let mut spans: BTreeMap<String, (Duration, Duration)> = BTreeMap::new();
    for c in calls.iter().filter(|c| !is_collection_get(c)) {
        let Some(f) = function_of(c) else { continue };
        let at = c.at.saturating_duration_since(start);
        let span = spans.entry(f).or_insert((at, at));
        span.0 = span.0.min(at);
        span.1 = span.1.max(at);
    }
    spans
}

/// The most spans overlapping at one instant.
fn max_overlap(spans: &BTreeMap<String, (Duration, Duration)>) -> usize {
    // starts sort before ends at the same instant
    let mut edges: Vec<(Duration, i32)> = spans
        .values()
        .flat_map(|(a, b)| [(*a, -1), (*b, 1)])
        .collect();
    edges.sort();
    let (mut now, mut max) = (0i64, 0i64);
    for (_, e) in edges {
        now -= i64::from(e);
        max = max.max(now);
    }
    max as usize
}

fn min_max(v: impl Iterator<Item = u64>) -> (u64, u64) {
    v.fold((u64::MAX, 0), |(lo, hi), x| (lo.min(x), hi.max(x)))
}

/// Run the controller over `n` Functions in namespace `ns`; assert the
/// call counts exactly; return the figures.
async fn scale(label: &str, ns: &str, n: usize, limit: Duration) -> Figures {
    count_reconciles();
    let (fake, client) = FakeApi::start();
    let (sink, cron) = (function("sink.yaml", "sink"), cron());
    let funcs: Vec<Func> = (0..n)
        .map(|i| {
            let (func, f) = make_function(ns, i, &sink, &cron);
            fake.put(
                &function_path(ns, &func.name),
                serde_json::to_value(f).unwrap(),
            );
            func
        })
        .collect();
    let keys: Vec<String> = funcs.iter().map(|f| format!("{ns}/{}", f.name)).collect();
    let mut expected_objects: Vec<String> = Vec::new();
    for f in &funcs {
        expected_objects.push(deploy_path(ns, &f.name));
        if f.is_async {
            expected_objects.push(service_path(ns, &f.name));
        }
    }
    let owned_objects = expected_objects.len();
    let before = reconciles_of(&keys);
    assert!(before.iter().all(|&c| c == 0), "fresh Function names");

    let settings = ControllerSettings {
        identity: Some("controller-0".into()),
        leader_elect: false,
        resync_seconds: 1,
        ..Default::default()
    };
    let metrics = Arc::new(Metrics::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let start = Instant::now();
    let task = tokio::spawn(controller::run_with_metrics(
        client,
        settings,
        metrics.clone(),
        async move {
            let _ = stopped.await;
        },
    ));

    // every proxy Deployment and Service in the fake
    let mut pending = expected_objects.clone();
    wait_for(
        "every proxy Deployment and Service",
        limit,
        Duration::from_millis(5),
        || {
            pending.retain(|p| fake.get(p).is_none());
            pending.is_empty()
        },
    )
    .await;
    let all_observed = start.elapsed();

    // ... and the Event of each (published after the apply)
    let events_prefix = format!("{}/", events_path(ns));
    wait_for(
        "an Event per created object",
        limit,
        Duration::from_millis(20),
        || fake.objects_under(&events_prefix).len() >= owned_objects,
    )
    .await;
    let at_events = reconciles_of(&keys);
    assert!(
        at_events.iter().zip(&before).all(|(a, b)| a > b),
        "every Function's reconcile is counted (from the controller's `reconcile` span)"
    );
    // settle: every Function reconciled once more (the reconciles the new
    // objects' watch events trigger, then a resync), so late writes of the
    // creation would show up here
    wait_all_reconciled_since("a reconcile after creation", &keys, &at_events, limit).await;
    let creation = fake.take_calls();

    // the resync window: every Function reconciled at least once more
    let window_from = reconciles_of(&keys);
    let window_start = Instant::now();
    wait_all_reconciled_since("a full resync", &keys, &window_from, limit).await;
    let window = fake.take_calls();
    let resync_window = window_start.elapsed();
    let window_to = reconciles_of(&keys);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("run returns after shutdown")
        .unwrap()
        .unwrap();

    // ------------------------------------------------------- creation
    let applies: Vec<&Call> = creation.iter().filter(|c| is_apply(c)).collect();
    let events: Vec<&Call> = creation.iter().filter(|c| is_event(c)).collect();
    let other_writes: Vec<&Call> = creation
        .iter()
        .filter(|c| is_write(c) && !is_apply(c) && !is_event(c))
        .collect();
    let gets: Vec<&Call> = creation
        .iter()
        // API discovery (which Function version is served) is not a GET of
        // an object
        .filter(|c| {
            c.method == "GET"
                && !is_collection_get(c)
                && !c.path.starts_with("/apis/core.openfunction.io/")
        })
        .collect();
    let since = |c: &Call| c.at.saturating_duration_since(start);
    let spans = creation_spans(&creation, start);
    let proxy_applies = applies.iter().filter(|c| c.path.contains("/deployments/"));
    let figures = Figures {
        functions: n,
        owned_objects,
        functions_listed: creation
            .iter()
            .filter(|c| c.method == "GET" && c.path.ends_with("/functions"))
            .map(since)
            .min()
            .unwrap_or_default(),
        first_apply: applies.iter().map(|c| since(c)).min().unwrap_or_default(),
        all_proxies_applied: proxy_applies.map(|c| since(c)).max().unwrap_or_default(),
        all_applied: applies.iter().map(|c| since(c)).max().unwrap_or_default(),
        all_observed,
        applies: applies.len(),
        other_writes: other_writes.len(),
        events: events.len(),
        creation_gets: gets.len(),
        creation_requests: creation.len(),
        creation_reconciles: min_max(at_events.iter().zip(&before).map(|(a, b)| a - b)),
        max_in_flight: max_overlap(&spans),
        mean_creation_span: spans.values().map(|(a, b)| *b - *a).sum::<Duration>()
            / spans.len().max(1) as u32,
        resync_window,
        resync_requests: window.len(),
        resync_watches: window
            .iter()
            .filter(|c| c.query.get("watch").map(String::as_str) == Some("true"))
            .count(),
        resync_lists: window
            .iter()
            .filter(|c| is_collection_get(c) && !c.query.contains_key("watch"))
            .count(),
        resync_writes: window.iter().filter(|c| is_write(c)).count(),
        resync_reconciles: min_max(window_to.iter().zip(&window_from).map(|(a, b)| a - b)),
    };
    // printed before the assertions, so a failing run still reports
    figures.print(label);

    assert_eq!(metrics.errors.load(Relaxed), 0, "failed reconciles");
    assert!(
        other_writes.is_empty(),
        "writes other than applies and Events on creation: {:#?}",
        summary(&other_writes)
    );

    // one apply per owned object, by our field manager, forced, owned by
    // the Function; one GET per owned object (the name check)
    let mut applied: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &applies {
        *applied.entry(c.path.as_str()).or_default() += 1;
        assert_eq!(c.query.get("force").map(String::as_str), Some("true"));
    }
    let mut got: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &gets {
        *got.entry(c.path.as_str()).or_default() += 1;
    }
    let per_object: BTreeMap<&str, usize> =
        expected_objects.iter().map(|p| (p.as_str(), 1)).collect();
    assert_eq!(applied, per_object, "applies per owned object");
    assert_eq!(got, per_object, "GETs of single objects on creation");
    for f in &funcs {
        for path in [deploy_path(ns, &f.name), service_path(ns, &f.name)] {
            let obj = fake.get(&path);
            if path.contains("/services/") && !f.is_async {
                assert!(obj.is_none(), "a knative Function gets no Service: {path}");
                continue;
            }
            let obj = obj.unwrap();
            assert_eq!(
                obj["metadata"]["ownerReferences"][0]["uid"], f.uid,
                "{path} is owned by its Function"
            );
        }
    }

    // Events: ProxyCreated, one per owned object (2 per async Function, 1
    // per knative one), regarding the Function, related to the object
    let mut per_function: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for c in &events {
        assert_eq!(c.path, events_path(ns));
        let e = c.body.as_ref().unwrap();
        assert_eq!(e["reason"], "ProxyCreated", "{e}");
        assert_eq!(e["type"], "Normal");
        let regarding = e["regarding"]["name"].as_str().unwrap().to_owned();
        let related = (
            e["related"]["kind"].as_str().unwrap_or_default().to_owned(),
            e["related"]["name"].as_str().unwrap_or_default().to_owned(),
        );
        assert!(
            per_function
                .entry(regarding)
                .or_default()
                .insert(related.clone()),
            "two Events about {related:?}"
        );
    }
    assert_eq!(events.len(), owned_objects, "one Event per owned object");
    assert_eq!(per_function.len(), n, "Events of every Function");
    for f in &funcs {
        let mut want = BTreeSet::from([(
            "Deployment".to_owned(),
            resources::proxy_deployment_name(&f.name),
        )]);
        if f.is_async {
            want.insert((
                "Service".to_owned(),
                resources::function_service_name(&f.name),
            ));
        }
        assert_eq!(per_function[&f.name], want, "Events of {}", f.name);
    }

    // the controller counted the same writes
    let counted = metrics.writes.lock().unwrap().clone();
    let counted_applies: u64 = counted
        .iter()
        .filter(|((verb, _), _)| *verb == "apply")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(counted_applies as usize, owned_objects, "{counted:?}");
    assert_eq!(
        counted
            .get(&("create", "Event"))
            .copied()
            .unwrap_or_default() as usize,
        owned_objects,
        "{counted:?}"
    );
    assert_eq!(
        counted.values().sum::<u64>() as usize,
        2 * owned_objects,
        "{counted:?}"
    );

    // ---------------------------------------------------------- resync
    assert!(figures.resync_reconciles.0 >= 1, "a full resync");
    let writes: Vec<&Call> = window.iter().filter(|c| is_write(c)).collect();
    assert!(
        writes.is_empty(),
        "writes on a resync of unchanged Functions: {:#?}",
        summary(&writes)
    );
    let single: Vec<&Call> = window.iter().filter(|c| !is_collection_get(c)).collect();
    assert!(
        single.is_empty(),
        "requests about single objects on a resync (the caches should answer): {:#?}",
        summary(&single)
    );

    figures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_functions_one_apply_per_object_and_a_quiet_resync() {
    scale("200", "scale-200", 200, Duration::from_secs(120)).await;
}

/// `cargo test --release --test controller_scale -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "1,000 Functions: run in release with --ignored --nocapture"]
async fn one_thousand_functions() {
    scale("1000", "scale-1000", 1000, Duration::from_secs(600)).await;
}
