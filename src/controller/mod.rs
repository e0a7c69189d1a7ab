//! The companion controller (SPEC section 6): for every Function in
//! standalone mode it keeps the shared Dapr proxy Deployment (and, for async
//! functions, the function Service) in place, removes them when the Function
//! leaves standalone mode, and rolls the Function's Deployments when its mode
//! changes so their pods are re-admitted by the webhook.
//!
//! Structure:
//! - [`resources`] builds the desired objects, pure;
//! - [`plan::plan`] is pure: Function + observed objects -> steps;
//! - [`reconcile`] observes (from watch-fed caches), plans, and performs the
//!   steps: server-side apply under [`FIELD_MANAGER`], deletes guarded by a
//!   uid precondition, merge patches of one annotation for rolls, Events on
//!   the Function;
//! - [`run`] wires the kube-runtime `Controller`, the caches and leader
//!   election (only the leader reconciles).
//!
//! A reconcile of an unchanged Function makes no API call at all: the
//! observed objects come from the caches, and nothing is applied unless a
//! field the controller manages differs.

pub mod plan;
pub mod resources;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::controller::resources::{ProxyResources, ProxySettings};
use crate::model::function::{FUNCTION_LABEL, Function, Serving};
use crate::model::mode::Mode;
use crate::model::v1beta2::{self, ApiVersion};
use crate::ops::discovery::{
    DISCOVERY_INTERVAL, map_event, version_to_read, version_to_read_retrying,
};
use crate::ops::leader::{self, LeaderSettings};
use kube::core::PartialObjectMeta;
use plan::{Observed, Plan, Step};

/// Field manager of every server-side apply of the controller.
pub const FIELD_MANAGER: &str = "openfunction-dapr";
/// Field manager of the roll patches on function Deployments.
pub const ROLL_FIELD_MANAGER: &str = "openfunction-dapr-roll";
/// `reportingController` of the Events.
pub const EVENT_REPORTER: &str = "openfunction-dapr";

/// Event reasons.
pub mod reasons {
    pub const PROXY_CREATED: &str = "ProxyCreated";
    pub const PROXY_UPDATED: &str = "ProxyUpdated";
    pub const PROXY_REMOVED: &str = "ProxyRemoved";
    pub const PROXY_CONFLICT: &str = "ProxyConflict";
    pub const INVALID_ANNOTATION: &str = "InvalidAnnotation";
    pub const WORKLOAD_ROLLED: &str = "WorkloadRolled";
    /// OpenFunction's own controller runs the Function's proxy: ours steps aside.
    pub const PROXY_DEFERRED: &str = "ProxyDeferred";
}

/// What to do where OpenFunction's own controller runs a proxy for a
/// Function (`--coexist`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Coexist {
    /// Create no proxy and delete ours while OpenFunction's runs.
    #[default]
    Auto,
    /// Ignore OpenFunction's proxies (two daprd with one app id would
    /// consume every event twice: only for clusters without it).
    Off,
}

/// Default period of the resync of every Function.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(300);
/// First retry delay after a failed reconcile; doubles up to [`MAX_BACKOFF`].
pub const BASE_BACKOFF: Duration = Duration::from_secs(2);
/// Longest retry delay after failed reconciles.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long a reconcile waits for the caches to fill before it fails.
pub const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of the controller; `#[command(flatten)]` them into `serve`.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct ControllerSettings {
    /// Run the companion controller; `--controller=false` serves the webhook alone.
    #[arg(
        long = "controller",
        env = "ENABLE_CONTROLLER",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true",
        require_equals = true
    )]
    pub enabled: bool,

    /// Image of the Dapr proxy container.
    #[arg(long, env = "PROXY_IMAGE", default_value = resources::DEFAULT_PROXY_IMAGE)]
    pub proxy_image: String,

    /// Where OpenFunction's controller runs a proxy for a Function (a
    /// Deployment labelled openfunction.io/proxy owned by one of its
    /// Servings): `auto` creates none and removes ours, `off` ignores it.
    #[arg(long, env = "COEXIST", value_enum, default_value_t = Coexist::Auto)]
    pub coexist: Coexist,

    /// Cluster DNS domain. Not a flag of its own: `serve` shares its
    /// `--cluster-domain` with the webhook and copies it here
    /// ([`ControllerSettings::with_shared`]).
    #[arg(skip = crate::model::mode::DEFAULT_CLUSTER_DOMAIN.to_owned())]
    pub cluster_domain: String,

    /// CPU request of the proxy container (empty: none).
    #[arg(long, default_value = resources::DEFAULT_CPU_REQUEST)]
    pub proxy_cpu_request: String,

    /// Memory request of the proxy container (empty: none).
    #[arg(long, default_value = resources::DEFAULT_MEMORY_REQUEST)]
    pub proxy_memory_request: String,

    /// CPU limit of the proxy container (default: none).
    #[arg(long)]
    pub proxy_cpu_limit: Option<String>,

    /// Memory limit of the proxy container (default: none).
    #[arg(long)]
    pub proxy_memory_limit: Option<String>,

    /// Watch Functions (and manage proxies) in this namespace only; `None`:
    /// all namespaces. Not a flag of its own: `serve` shares its
    /// `--namespace` with the webhook ([`ControllerSettings::with_shared`]).
    #[arg(skip)]
    pub namespace: Option<String>,

    /// Seconds between two resyncs of every Function.
    #[arg(long, default_value_t = DEFAULT_RESYNC.as_secs())]
    pub resync_seconds: u64,

    /// Seconds between two looks at which core.openfunction.io versions
    /// the API server serves (the controller and the webhook's store switch
    /// to v1beta2 when it becomes served, back to v1beta1 when it goes).
    #[arg(long, default_value_t = DISCOVERY_INTERVAL.as_secs())]
    pub api_discovery_seconds: u64,

    /// Elect a leader on a Lease so only one replica reconciles; `--leader-elect=false` for a single replica.
    #[arg(
        long = "leader-elect",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true",
        require_equals = true
    )]
    pub leader_elect: bool,

    /// Name of the leader election Lease.
    #[arg(long, default_value = leader::DEFAULT_LEASE_NAME)]
    pub lease_name: String,

    /// Namespace of the Lease (default: the pod's namespace in a cluster,
    /// the kubeconfig context's namespace outside one).
    #[arg(long, env = "POD_NAMESPACE", default_value = "")]
    pub lease_namespace: String,

    /// Lease duration in seconds: how long a dead leader blocks a takeover.
    #[arg(long, default_value_t = leader::DEFAULT_LEASE_DURATION.as_secs())]
    pub lease_duration_seconds: u64,

    /// The leader renews this many seconds before its lease expires.
    #[arg(long, default_value_t = leader::DEFAULT_RENEW_GRACE.as_secs())]
    pub lease_renew_grace_seconds: u64,

    /// Identity of this replica in the Lease and in Events (default: POD_NAME, else the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            proxy_image: resources::DEFAULT_PROXY_IMAGE.to_owned(),
            coexist: Coexist::Auto,
            cluster_domain: crate::model::mode::DEFAULT_CLUSTER_DOMAIN.to_owned(),
            proxy_cpu_request: resources::DEFAULT_CPU_REQUEST.to_owned(),
            proxy_memory_request: resources::DEFAULT_MEMORY_REQUEST.to_owned(),
            proxy_cpu_limit: None,
            proxy_memory_limit: None,
            namespace: None,
            resync_seconds: DEFAULT_RESYNC.as_secs(),
            api_discovery_seconds: DISCOVERY_INTERVAL.as_secs(),
            leader_elect: true,
            lease_name: leader::DEFAULT_LEASE_NAME.to_owned(),
            lease_namespace: String::new(),
            lease_duration_seconds: leader::DEFAULT_LEASE_DURATION.as_secs(),
            lease_renew_grace_seconds: leader::DEFAULT_RENEW_GRACE.as_secs(),
            identity: None,
        }
    }
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

impl ControllerSettings {
    /// Take the settings `serve` shares with the webhook: the cluster domain
    /// and the namespace to watch (`None`: all).
    pub fn with_shared(mut self, cluster_domain: &str, namespace: Option<String>) -> Self {
        self.cluster_domain = cluster_domain.to_owned();
        self.namespace = namespace.filter(|n| !n.trim().is_empty());
        self
    }

    /// The builders' settings.
    pub fn proxy_settings(&self) -> ProxySettings {
        ProxySettings {
            image: self.proxy_image.clone(),
            cluster_domain: non_empty(&self.cluster_domain)
                .unwrap_or_else(|| crate::model::mode::DEFAULT_CLUSTER_DOMAIN.to_owned()),
            resources: ProxyResources {
                cpu_request: non_empty(&self.proxy_cpu_request),
                memory_request: non_empty(&self.proxy_memory_request),
                cpu_limit: self.proxy_cpu_limit.as_deref().and_then(non_empty),
                memory_limit: self.proxy_memory_limit.as_deref().and_then(non_empty),
            },
        }
    }

    /// This replica's identity.
    pub fn identity(&self) -> String {
        self.identity
            .as_deref()
            .and_then(non_empty)
            .unwrap_or_else(leader::default_identity)
    }

    /// The leader election settings; `client_namespace` is the kube
    /// client's default namespace (see [`leader::default_lease_namespace`]).
    pub fn leader_settings(&self, client_namespace: &str) -> LeaderSettings {
        LeaderSettings {
            lease_name: self.lease_name.clone(),
            namespace: non_empty(&self.lease_namespace)
                .unwrap_or_else(|| leader::default_lease_namespace(client_namespace)),
            identity: self.identity(),
            lease_duration: Duration::from_secs(self.lease_duration_seconds),
            renew_grace: Duration::from_secs(self.lease_renew_grace_seconds),
            request_timeout: leader::DEFAULT_REQUEST_TIMEOUT.min(Duration::from_secs(
                self.lease_renew_grace_seconds.max(2) - 1,
            )),
        }
    }

    /// The resync period.
    /// The period of API discovery (at least a second).
    pub fn api_discovery(&self) -> Duration {
        Duration::from_secs(self.api_discovery_seconds.max(1))
    }

    pub fn resync(&self) -> Duration {
        Duration::from_secs(self.resync_seconds.max(1))
    }
}

/// Errors of a reconcile (they requeue the Function with back-off).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{verb} {kind} {namespace}/{name}: {source}")]
    Api {
        verb: &'static str,
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("Function {0} has no namespace")]
    NotNamespaced(String),
    #[error("the caches of Deployments and Services did not sync in {0:?}")]
    CacheNotReady(Duration),
    #[error("{kind} {namespace}/{name} is being deleted; it will be recreated once it is gone")]
    BeingDeleted {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error(transparent)]
    Leader(#[from] leader::LeaderError),
}

/// Where the controller reports what it does (a seam for Prometheus).
pub trait ControllerMetrics: Send + Sync {
    /// A reconcile finished.
    fn reconciled(&self, _ok: bool, _duration: Duration) {}
    /// A write call was made (`verb`: apply, delete, patch, event).
    fn write(&self, _verb: &'static str, _kind: &'static str) {}
    /// This replica became (true) or stopped being (false) the leader.
    fn leader(&self, _is_leader: bool) {}
    /// Number of proxy Deployments in the controller's cache.
    fn proxies(&self, _count: usize) {}
    /// Number of Functions whose proxy OpenFunction's controller runs (ours
    /// steps aside).
    fn deferred(&self, _count: usize) {}
    /// The version of `core.openfunction.io` Functions the controller reads
    /// (`None`: the API server serves neither; the watch retries).
    fn api_version(&self, _version: Option<ApiVersion>) {}
    /// The Lease cannot be taken (`Some`: why), or can again (`None`).
    fn lease_fault(&self, _fault: Option<&leader::LeaseFault>) {}
}

/// Metrics that go nowhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopMetrics;
impl ControllerMetrics for NoopMetrics {}

/// Counters, readable by a metrics endpoint or a test.
#[derive(Debug, Default)]
pub struct CountingMetrics {
    pub reconciles: std::sync::atomic::AtomicU64,
    pub reconcile_errors: std::sync::atomic::AtomicU64,
    pub writes: std::sync::atomic::AtomicU64,
    pub is_leader: std::sync::atomic::AtomicBool,
}

impl ControllerMetrics for CountingMetrics {
    fn reconciled(&self, ok: bool, _duration: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        self.reconciles.fetch_add(1, Relaxed);
        if !ok {
            self.reconcile_errors.fetch_add(1, Relaxed);
        }
    }
    fn write(&self, _verb: &'static str, _kind: &'static str) {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    fn leader(&self, is_leader: bool) {
        self.is_leader
            .store(is_leader, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The watch-fed caches a reconcile reads.
#[derive(Clone)]
pub struct Stores {
    /// Deployments labelled `app.kubernetes.io/managed-by=openfunction-dapr`.
    pub proxies: Store<Deployment>,
    /// Services labelled `app.kubernetes.io/managed-by=openfunction-dapr`.
    pub services: Store<Service>,
    /// Deployments labelled `openfunction.io/function`.
    pub workloads: Store<Deployment>,
    /// OpenFunction's own proxies and Servings (empty with `--coexist=off`).
    pub upstream: Upstream,
}

/// What the controller sees of OpenFunction's own proxies.
#[derive(Clone)]
pub struct Upstream {
    /// Deployments labelled `openfunction.io/proxy` that are not ours.
    pub proxies: Store<Deployment>,
    /// Servings (metadata only), to map a proxy to its Function.
    pub servings: Store<PartialObjectMeta<Serving>>,
}

/// Label selector of OpenFunction's proxies (ours carry the same label).
pub const UPSTREAM_PROXY_SELECTOR: &str =
    "openfunction.io/proxy,app.kubernetes.io/managed-by!=openfunction-dapr";

impl Upstream {
    /// Empty and synced: nothing to coexist with.
    pub fn none() -> Self {
        let mut p = reflector::store::Writer::<Deployment>::default();
        let mut s = reflector::store::Writer::<PartialObjectMeta<Serving>>::default();
        for e in [watcher::Event::Init, watcher::Event::InitDone] {
            p.apply_watcher_event(&e);
        }
        for e in [watcher::Event::Init, watcher::Event::InitDone] {
            s.apply_watcher_event(&e);
        }
        Upstream {
            proxies: p.as_reader(),
            servings: s.as_reader(),
        }
    }

    /// The Function (namespace, name) whose proxy `d` is, when it is
    /// OpenFunction's ([`plan::upstream_proxy_function`]).
    pub fn function_of(&self, d: &Deployment) -> Option<(String, String)> {
        plan::upstream_proxy_function(d, |ns, name| self.serving(ns, name))
    }

    /// The names of OpenFunction's proxies of Function `name` in `ns`.
    pub fn proxies_of(&self, ns: &str, name: &str) -> Vec<String> {
        let proxies = self.proxies.state();
        plan::upstream_proxies_of(proxies.iter().map(|d| d.as_ref()), ns, name, |n, s| {
            self.serving(n, s)
        })
    }

    fn serving(&self, ns: &str, name: &str) -> Option<Arc<PartialObjectMeta<Serving>>> {
        self.servings.get(&ObjectRef::new(name).within(ns))
    }
}

impl Stores {
    async fn ready(&self) -> Result<(), Error> {
        let all = async {
            self.proxies.wait_until_ready().await.ok();
            self.services.wait_until_ready().await.ok();
            self.workloads.wait_until_ready().await.ok();
            self.upstream.proxies.wait_until_ready().await.ok();
            self.upstream.servings.wait_until_ready().await.ok();
        };
        tokio::time::timeout(CACHE_SYNC_TIMEOUT, all)
            .await
            .map_err(|_| Error::CacheNotReady(CACHE_SYNC_TIMEOUT))
    }

    /// What the caches hold for `func`.
    pub fn observe(&self, func: &Function) -> Observed {
        let name = func.name_any();
        let ns = func.namespace().unwrap_or_default();
        Observed {
            proxy: self
                .proxies
                .get(&ObjectRef::new(&resources::proxy_deployment_name(&name)).within(&ns)),
            service: self
                .services
                .get(&ObjectRef::new(&resources::function_service_name(&name)).within(&ns)),
            function_deployments: self.workloads.state_filter(|d| {
                d.namespace().as_deref() == Some(ns.as_str())
                    && d.labels().get(FUNCTION_LABEL) == Some(&name)
            }),
            upstream_proxies: self.upstream.proxies_of(&ns, &name),
        }
    }
}

/// Shared state of the reconciles.
pub struct Context {
    pub client: Client,
    pub proxy: ProxySettings,
    pub resync: Duration,
    /// Who publishes the Events (a fresh [`Recorder`] per Event, so every
    /// Event carries its own note instead of bumping the count of an older
    /// one with the same reason).
    pub reporter: Reporter,
    pub metrics: Arc<dyn ControllerMetrics>,
    pub stores: Stores,
    /// Consecutive failures per Function (`ns/name`), for the back-off.
    failures: Mutex<HashMap<String, u32>>,
    /// Hash of the last warning Event per (Function uid, reason, object), so
    /// a warning is published once, not on every resync.
    reported: Mutex<HashMap<String, u64>>,
}

impl Context {
    pub fn new(
        client: Client,
        settings: &ControllerSettings,
        stores: Stores,
        metrics: Arc<dyn ControllerMetrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: EVENT_REPORTER.to_owned(),
            instance: Some(settings.identity()),
        };
        Self {
            client,
            proxy: settings.proxy_settings(),
            resync: settings.resync(),
            reporter,
            metrics,
            stores,
            failures: Mutex::default(),
            reported: Mutex::default(),
        }
    }

    /// Drop the back-off counters and warning memos of Functions that are
    /// gone: the controller is never called for a deleted Function, so
    /// nothing else would remove them.
    pub fn forget_deleted<'a>(&self, live: impl IntoIterator<Item = &'a Function>) {
        let mut keys = HashSet::new();
        let mut uids = HashSet::new();
        for f in live {
            keys.insert(failure_key(f));
            uids.insert(f.uid().unwrap_or_default());
        }
        if let Ok(mut m) = self.failures.lock() {
            m.retain(|k, _| keys.contains(k));
        }
        if let Ok(mut m) = self.reported.lock() {
            m.retain(|memo, _| {
                memo.split_once('/')
                    .is_some_and(|(uid, _)| uids.contains(uid))
            });
        }
    }

    /// Memo entries held (back-off counters, warning memos), for tests.
    pub fn memo_sizes(&self) -> (usize, usize) {
        (
            self.failures.lock().map(|m| m.len()).unwrap_or_default(),
            self.reported.lock().map(|m| m.len()).unwrap_or_default(),
        )
    }

    /// Consecutive failed reconciles of `ns/name`.
    pub fn failures(&self, key: &str) -> u32 {
        self.failures
            .lock()
            .map(|m| m.get(key).copied().unwrap_or_default())
            .unwrap_or_default()
    }

    async fn publish(
        &self,
        func: &Function,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
        secondary: Option<ObjectReference>,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(truncate(note, 1000)),
            action: action.to_owned(),
            secondary,
        };
        self.metrics.write("create", "Event");
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(e) = recorder.publish(&event, &function_ref(func)).await {
            warn!(error = %e, reason, "could not publish an Event");
        }
    }

    /// Publish a warning once per distinct content (per Function uid and key).
    async fn publish_once(
        &self,
        func: &Function,
        key: &str,
        reason: &str,
        note: String,
        secondary: Option<ObjectReference>,
    ) {
        self.publish_once_as(func, EventType::Warning, key, reason, note, secondary)
            .await;
    }

    /// [`Self::publish_once`] with another Event type.
    async fn publish_once_as(
        &self,
        func: &Function,
        kind: EventType,
        key: &str,
        reason: &str,
        note: String,
        secondary: Option<ObjectReference>,
    ) {
        let uid = func.uid().unwrap_or_default();
        let memo = format!("{uid}/{reason}/{key}");
        let hash = plan::fnv1a(note.as_bytes());
        let fresh = self
            .reported
            .lock()
            .map(|mut m| m.insert(memo, hash) != Some(hash))
            .unwrap_or(true);
        if fresh {
            self.publish(func, kind, reason, "Reconcile", note, secondary)
                .await;
        }
    }

    /// Forget the warnings of `reason` published for `func` (for the object
    /// `key`, or all when `None`), so they are published again if they recur.
    fn forget_reported(&self, func: &Function, reason: &str, key: Option<&str>) {
        let prefix = format!("{}/{reason}/", func.uid().unwrap_or_default());
        if let Ok(mut m) = self.reported.lock() {
            m.retain(|k, _| match (k.strip_prefix(&prefix), key) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(rest), Some(key)) => rest != key,
            });
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// A reference to `func` in the version it was read as (the Event's
/// `regarding`).
fn function_ref(func: &Function) -> ObjectReference {
    ObjectReference {
        api_version: Some(func.read_version().api_version().to_owned()),
        kind: Some("Function".to_owned()),
        name: func.metadata.name.clone(),
        namespace: func.metadata.namespace.clone(),
        uid: func.metadata.uid.clone(),
        resource_version: func.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// The Function that owns `obj` (its controller ownerReference of kind
/// Function, any `core.openfunction.io` version): what a change of an owned
/// object requeues.
fn owning_function<K: Resource>(obj: K) -> Option<ObjectRef<Function>> {
    let namespace = obj.meta().namespace.clone()?;
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .find(|r| {
            r.controller == Some(true)
                && r.kind == "Function"
                && ApiVersion::parse(&r.api_version).is_some()
        })
        .map(|r| ObjectRef::new(&r.name).within(&namespace))
}

fn reference<K: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        ..Default::default()
    }
}

/// Reconcile one Function: observe, plan, act. Requeues after the resync
/// period.
pub async fn reconcile(func: Arc<Function>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = func.name_any();
    let namespace = func
        .namespace()
        .ok_or_else(|| Error::NotNamespaced(name.clone()))?;
    let span = info_span!("reconcile", function = %name, namespace = %namespace);
    async move {
        let started = Instant::now();
        let result = reconcile_inner(&func, &ctx, &namespace).await;
        ctx.metrics.reconciled(result.is_ok(), started.elapsed());
        if result.is_ok()
            && let Ok(mut f) = ctx.failures.lock()
        {
            f.remove(&failure_key(&func));
        }
        result.map(|()| Action::requeue(ctx.resync))
    }
    .instrument(span)
    .await
}

async fn reconcile_inner(func: &Function, ctx: &Context, namespace: &str) -> Result<(), Error> {
    ctx.stores.ready().await?;
    let observed = ctx.stores.observe(func);
    let plan = plan::plan(func, &observed, &ctx.proxy);
    debug!(mode = %plan.mode, steps = plan.steps.len(), "planned");

    if plan.warnings.is_empty() {
        ctx.forget_reported(func, reasons::INVALID_ANNOTATION, None);
    } else {
        ctx.publish_once(
            func,
            "",
            reasons::INVALID_ANNOTATION,
            plan.warnings.join("; "),
            None,
        )
        .await;
    }
    if !plan.steps.iter().any(|s| matches!(s, Step::Defer { .. })) {
        ctx.forget_reported(func, reasons::PROXY_DEFERRED, None);
    }
    execute(func, ctx, namespace, &plan).await
}

async fn execute(func: &Function, ctx: &Context, ns: &str, plan: &Plan) -> Result<(), Error> {
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    let uid = func.uid().unwrap_or_default();
    let why = match plan.mode {
        Mode::Standalone => "the function is in standalone mode".to_owned(),
        Mode::Sidecar => "the function is now in sidecar mode".to_owned(),
        Mode::Disabled => "Dapr is now disabled for the function".to_owned(),
    };

    for step in &plan.steps {
        match step {
            Step::ApplyDeployment { deployment, create } => {
                let resolved = resources::resolve_function(func, &ctx.proxy);
                let replicas = deployment
                    .spec
                    .as_ref()
                    .and_then(|s| s.replicas)
                    .unwrap_or(1);
                let detail = format!(
                    "app id {}, app protocol {}, app port {}, {replicas} replica(s)",
                    resolved.app_id, resolved.app_protocol, resolved.app_port
                );
                apply_checked(
                    ctx,
                    func,
                    &deployments,
                    deployment.as_ref(),
                    *create,
                    &uid,
                    &detail,
                )
                .await?;
            }
            Step::ApplyService { service, create } => {
                let headless =
                    service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None");
                let port = service
                    .spec
                    .as_ref()
                    .and_then(|s| s.ports.as_ref())
                    .and_then(|p| p.first())
                    .map(|p| p.port)
                    .unwrap_or_default();
                let detail = format!(
                    "{}port {port}, selecting the function's pods; the proxy forwards events to it",
                    if headless { "headless, " } else { "" }
                );
                apply_checked(
                    ctx,
                    func,
                    &services,
                    service.as_ref(),
                    *create,
                    &uid,
                    &detail,
                )
                .await?;
            }
            Step::DeleteDeployment { name, uid } => {
                if delete(ctx, &deployments, ns, name, uid).await? {
                    ctx.publish(
                        func,
                        EventType::Normal,
                        reasons::PROXY_REMOVED,
                        "Delete",
                        format!("Deleted the Dapr proxy Deployment {name}: {why}"),
                        Some(reference::<Deployment>(ns, name)),
                    )
                    .await;
                }
            }
            Step::DeleteService { name, uid } => {
                if delete(ctx, &services, ns, name, uid).await? {
                    let why = if plan.mode == Mode::Standalone {
                        "the function is no longer async, or the Service is replaced".to_owned()
                    } else {
                        why.clone()
                    };
                    ctx.publish(
                        func,
                        EventType::Normal,
                        reasons::PROXY_REMOVED,
                        "Delete",
                        format!("Deleted the function Service {name}: {why}"),
                        Some(reference::<Service>(ns, name)),
                    )
                    .await;
                }
            }
            Step::RollDeployment { name, from, to } => {
                let patch = serde_json::json!({
                    "spec": {"template": {"metadata": {"annotations": {
                        resources::MODE_ANNOTATION: to.as_str()
                    }}}}
                });
                let pp = PatchParams {
                    field_manager: Some(ROLL_FIELD_MANAGER.to_owned()),
                    ..Default::default()
                };
                ctx.metrics.write("patch", "Deployment");
                match deployments.patch(name, &pp, &Patch::Merge(&patch)).await {
                    Ok(_) => {
                        let from =
                            from.map_or("an unknown mode".to_owned(), |m| format!("{m} mode"));
                        info!(deployment = %name, %to, "rolled a function Deployment");
                        ctx.publish(
                            func,
                            EventType::Normal,
                            reasons::WORKLOAD_ROLLED,
                            "Roll",
                            format!(
                                "Rolled Deployment {name} (pods admitted in {from}) so its pods are re-admitted in {to} mode"
                            ),
                            Some(reference::<Deployment>(ns, name)),
                        )
                        .await;
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(source) => {
                        return Err(Error::Api {
                            verb: "patch",
                            kind: "Deployment",
                            namespace: ns.to_owned(),
                            name: name.clone(),
                            source,
                        });
                    }
                }
            }
            Step::Defer { name } => {
                let note = format!(
                    "OpenFunction's controller runs the Dapr proxy of this function (Deployment {name}); \
                     openfunction-dapr creates none while it exists (two daprd with one app id would \
                     consume every event twice)"
                );
                debug!(upstream = %name, "deferring to OpenFunction's proxy");
                ctx.publish_once_as(
                    func,
                    EventType::Normal,
                    name,
                    reasons::PROXY_DEFERRED,
                    note,
                    Some(reference::<Deployment>(ns, name)),
                )
                .await;
            }
            Step::Conflict {
                kind,
                name,
                message,
            } => {
                warn!(kind, name = %name, "{message}");
                let secondary = if *kind == "Service" {
                    reference::<Service>(ns, name)
                } else {
                    reference::<Deployment>(ns, name)
                };
                ctx.publish_once(
                    func,
                    name,
                    reasons::PROXY_CONFLICT,
                    message.clone(),
                    Some(secondary),
                )
                .await;
            }
        }
    }
    Ok(())
}

/// Server-side apply `desired`. When it is to be created, first check that
/// the name is free: an object of that name that is not ours is never
/// taken over.
async fn apply_checked<K>(
    ctx: &Context,
    func: &Function,
    api: &Api<K>,
    desired: &K,
    create: bool,
    uid: &str,
    detail: &str,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let kind = K::kind(&());
    let kind: &'static str = if kind == "Service" {
        "Service"
    } else {
        "Deployment"
    };
    let name = desired.name_any();
    let ns = desired.namespace().unwrap_or_default();
    let api_err = |verb, source| Error::Api {
        verb,
        kind,
        namespace: ns.clone(),
        name: name.clone(),
        source,
    };
    let mut created = create;
    if create {
        match api.get_opt(&name).await.map_err(|e| api_err("get", e))? {
            None => {}
            Some(existing) if !resources::is_owned_by(existing.meta(), uid) => {
                let message = format!(
                    "{kind} {name} already exists and was not created by openfunction-dapr for this function; \
                     it is left untouched, so the Dapr proxy of this function is not managed until it is removed or renamed"
                );
                warn!(kind, name = %name, "{message}");
                ctx.publish_once(
                    func,
                    &name,
                    reasons::PROXY_CONFLICT,
                    message,
                    Some(reference::<K>(&ns, &name)),
                )
                .await;
                return Ok(());
            }
            Some(existing) if existing.meta().deletion_timestamp.is_some() => {
                return Err(Error::BeingDeleted {
                    kind,
                    namespace: ns.clone(),
                    name: name.clone(),
                });
            }
            Some(existing) if plan::is_subset(desired, &existing) => return Ok(()),
            Some(_) => created = false,
        }
    }
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    ctx.metrics.write("apply", kind);
    api.patch(&name, &pp, &Patch::Apply(desired))
        .await
        .map_err(|e| api_err("apply", e))?;
    // the name is ours now: a later conflict on it is news again
    ctx.forget_reported(func, reasons::PROXY_CONFLICT, Some(&name));
    let what = if kind == "Service" {
        "function Service"
    } else {
        "Dapr proxy Deployment"
    };
    let (reason, note) = if created {
        info!(kind, name = %name, "created");
        (
            reasons::PROXY_CREATED,
            format!("Created the {what} {name} ({detail})"),
        )
    } else {
        info!(kind, name = %name, "updated to match the Function");
        (
            reasons::PROXY_UPDATED,
            format!("Updated the {what} {name} to match the Function ({detail})"),
        )
    };
    ctx.publish(
        func,
        EventType::Normal,
        reason,
        if created { "Create" } else { "Update" },
        note,
        Some(reference::<K>(&ns, &name)),
    )
    .await;
    Ok(())
}

/// Delete `name` if it still has `uid`; true when it was deleted by us.
async fn delete<K>(
    ctx: &Context,
    api: &Api<K>,
    ns: &str,
    name: &str,
    uid: &str,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let kind: &'static str = if K::kind(&()) == "Service" {
        "Service"
    } else {
        "Deployment"
    };
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..Default::default()
    };
    ctx.metrics.write("delete", kind);
    match api.delete(name, &dp).await {
        Ok(_) => {
            info!(kind, name, "deleted");
            Ok(true)
        }
        // already gone, or replaced by another object of that name
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
            debug!(kind, name, code = e.code, "nothing to delete");
            Ok(false)
        }
        Err(source) => Err(Error::Api {
            verb: "delete",
            kind,
            namespace: ns.to_owned(),
            name: name.to_owned(),
            source,
        }),
    }
}

/// How often the memos of deleted Functions are dropped.
const MEMO_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Delay before the `failures`-th retry: 2 s, 4 s, 8 s, ... up to 5 min.
pub fn backoff_delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    BASE_BACKOFF.saturating_mul(1u32 << exp).min(MAX_BACKOFF)
}

/// The back-off counter's key of a Function: `ns/name`.
fn failure_key(func: &Function) -> String {
    format!(
        "{}/{}",
        func.namespace().unwrap_or_default(),
        func.name_any()
    )
}

/// Requeue a failed Function with a per-Function exponential back-off.
pub fn error_policy(func: Arc<Function>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = failure_key(&func);
    let failures = ctx
        .failures
        .lock()
        .map(|mut m| {
            let n = m.entry(key.clone()).or_default();
            *n = n.saturating_add(1);
            *n
        })
        .unwrap_or(1);
    let delay = backoff_delay(failures);
    warn!(function = %key, error = %err, failures, "reconcile failed; retrying in {delay:?}");
    Action::requeue(delay)
}

/// Run the controller until `shutdown`, only while this replica is the
/// leader (unless `--leader-elect=false`). With `--controller=false` it just
/// waits for `shutdown`. Errors of the API are retried, never returned; an
/// error means the settings are unusable.
pub async fn run(
    client: Client,
    settings: ControllerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    run_with_metrics(client, settings, Arc::new(NoopMetrics), shutdown).await
}

/// [`run`], reporting to `metrics`.
pub async fn run_with_metrics(
    client: Client,
    settings: ControllerSettings,
    metrics: Arc<dyn ControllerMetrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    if !settings.enabled {
        info!("controller disabled (--controller=false): serving the webhook only");
        shutdown.await;
        return Ok(());
    }
    let settings = Arc::new(settings);
    if !settings.leader_elect {
        let (stop_tx, stop_rx) = oneshot::channel();
        let stopper = tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(());
        });
        metrics.leader(true);
        let result = run_controller(client, settings, metrics.clone(), stop_rx).await;
        metrics.leader(false);
        stopper.abort();
        return result;
    }
    let lease = settings.leader_settings(client.default_namespace());
    info!(lease = %lease.lease_name, namespace = %lease.namespace, identity = %lease.identity,
        duration = ?lease.lease_duration, "leader election enabled");
    let (m, f) = (metrics.clone(), metrics.clone());
    leader::run_while_leader_reporting(
        client.clone(),
        lease,
        move |stop| run_controller(client.clone(), settings.clone(), metrics.clone(), stop),
        move |is_leader| m.leader(is_leader),
        move |fault| f.lease_fault(fault),
        shutdown,
    )
    .await?;
    Ok(())
}

/// The versions the controller reads: Functions (`v1beta2` where served,
/// else `v1beta1`) and, with `--coexist=auto`, Servings (`None`: no Serving
/// CRD, so OpenFunction's controller runs no proxy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Served {
    functions: Option<ApiVersion>,
    servings: Option<ApiVersion>,
}

impl Served {
    /// Ask the API server (retrying until it answers).
    async fn discover(client: &Client, coexist: Coexist) -> Served {
        Served {
            functions: version_to_read_retrying(client, "functions").await,
            servings: match coexist {
                Coexist::Auto => version_to_read_retrying(client, "servings").await,
                Coexist::Off => None,
            },
        }
    }

    /// Resolves when the served versions are no longer these (looked at
    /// every `period`; an unreachable API server changes nothing).
    async fn changed(self, client: &Client, coexist: Coexist, period: Duration) {
        loop {
            tokio::time::sleep(period).await;
            let Ok(functions) = version_to_read(client, "functions").await else {
                continue;
            };
            let servings = match coexist {
                Coexist::Off => None,
                Coexist::Auto => match version_to_read(client, "servings").await {
                    Ok(v) => v,
                    Err(_) => continue,
                },
            };
            if (Served {
                functions,
                servings,
            }) != self
            {
                return;
            }
        }
    }
}

/// The controller itself, until `stop` fires (or its sender is dropped).
/// It reads Functions and Servings in the versions [`Served::discover`]
/// finds and starts again when the served versions change (a Serving CRD
/// installed later included).
pub async fn run_controller(
    client: Client,
    settings: Arc<ControllerSettings>,
    metrics: Arc<dyn ControllerMetrics>,
    stop: oneshot::Receiver<()>,
) -> Result<(), Error> {
    let mut stop = stop.map(|_| ()).shared();
    loop {
        let served = Served::discover(&client, settings.coexist).await;
        let version = served.functions;
        metrics.api_version(version);
        info!(version = %version.unwrap_or_default(), served = version.is_some(),
            "controller: reading core.openfunction.io Functions in this version");
        let (restart_tx, restart_rx) = oneshot::channel::<()>();
        let restart = {
            let (client, stop) = (client.clone(), stop.clone());
            let (period, coexist) = (settings.api_discovery(), settings.coexist);
            async move {
                tokio::select! {
                    () = served.changed(&client, coexist, period) => {
                        info!("the served Function or Serving versions changed: restarting the controller");
                        true
                    }
                    () = stop => false,
                }
            }
        };
        let run = run_controller_for(
            client.clone(),
            settings.clone(),
            metrics.clone(),
            version.unwrap_or_default(),
            served.servings,
            restart_rx,
        );
        let watcher_task = tokio::spawn(async move {
            let again = restart.await;
            let _ = restart_tx.send(());
            again
        });
        if let Err(e) = run.await {
            watcher_task.abort();
            return Err(e);
        }
        let again = watcher_task.await.unwrap_or(false);
        if !again || (&mut stop).now_or_never().is_some() {
            return Ok(());
        }
    }
}

/// [`run_controller`] with Functions read in `version` and Servings in
/// `servings`, until `stop`.
async fn run_controller_for(
    client: Client,
    settings: Arc<ControllerSettings>,
    metrics: Arc<dyn ControllerMetrics>,
    version: ApiVersion,
    servings: Option<ApiVersion>,
    stop: oneshot::Receiver<()>,
) -> Result<(), Error> {
    fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let ns = settings.namespace.clone().filter(|n| !n.trim().is_empty());
    let managed = watcher::Config::default().labels(resources::MANAGED_SELECTOR);

    let (proxies, proxy_writer) = reflector::store::<Deployment>();
    let proxy_events = watcher(api::<Deployment>(&client, &ns), managed.clone())
        .default_backoff()
        .modify(|d| d.managed_fields_mut().clear())
        .reflect(proxy_writer)
        .touched_objects();
    let (services, service_writer) = reflector::store::<Service>();
    let service_events = watcher(api::<Service>(&client, &ns), managed)
        .default_backoff()
        .modify(|s| s.managed_fields_mut().clear())
        .reflect(service_writer)
        .touched_objects();
    let (workloads, workload_writer) = reflector::store::<Deployment>();
    let workload_events = watcher(
        api::<Deployment>(&client, &ns),
        watcher::Config::default().labels(FUNCTION_LABEL),
    )
    .default_backoff()
    .modify(|d| {
        d.managed_fields_mut().clear();
        d.status = None;
    })
    .reflect(workload_writer)
    .for_each(|event| {
        if let Err(e) = event {
            warn!(error = %e, "watch of function Deployments failed; retrying");
        }
        std::future::ready(())
    });
    let workload_task = tokio::spawn(workload_events);

    let (trigger, triggers) = futures::channel::mpsc::unbounded();
    let (upstream, upstream_task) = match settings.coexist {
        Coexist::Off => (Upstream::none(), None),
        Coexist::Auto => {
            let (u, task) = watch_upstream(&client, &ns, servings, trigger);
            (u, Some(task))
        }
    };
    let stores = Stores {
        proxies,
        services,
        workloads,
        upstream: upstream.clone(),
    };
    let gauge_task = {
        let (proxies, metrics, upstream) = (
            stores.proxies.clone(),
            metrics.clone(),
            stores.upstream.clone(),
        );
        tokio::spawn(async move {
            loop {
                let count = proxies
                    .state()
                    .iter()
                    .filter(|d| d.labels().contains_key(resources::PROXY_LABEL))
                    .count();
                metrics.proxies(count);
                let deferred: HashSet<(String, String)> = upstream
                    .proxies
                    .state()
                    .iter()
                    .filter_map(|d| upstream.function_of(d))
                    .collect();
                metrics.deferred(deferred.len());
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        })
    };
    let ctx = Arc::new(Context::new(client.clone(), &settings, stores, metrics));
    info!(
        namespace = ns.as_deref().unwrap_or("<all>"),
        image = %settings.proxy_image,
        "starting the controller"
    );
    // The Functions' cache, without managedFields (often most of an object).
    let (functions, function_writer) = reflector::store::<Function>();
    let function_events = match version {
        ApiVersion::V1beta1 => {
            watcher(api::<Function>(&client, &ns), watcher::Config::default()).boxed()
        }
        ApiVersion::V1beta2 => watcher(
            api::<v1beta2::Function>(&client, &ns),
            watcher::Config::default(),
        )
        .map_ok(|e| map_event(e, v1beta2::normalize))
        .boxed(),
    }
    .default_backoff()
    .modify(|f| f.managed_fields_mut().clear())
    .reflect(function_writer)
    .touched_objects();
    let prune_task = {
        let (functions, ctx) = (functions.clone(), ctx.clone());
        tokio::spawn(async move {
            if functions.wait_until_ready().await.is_err() {
                return;
            }
            loop {
                tokio::time::sleep(MEMO_PRUNE_INTERVAL).await;
                ctx.forget_deleted(functions.state().iter().map(|f| f.as_ref()));
            }
        })
    };
    // Owned objects map to their Function through the ownerReference
    // whatever its version (`owns_stream` would match only one version).
    Controller::for_stream(function_events, functions)
        .watches_stream(proxy_events, owning_function)
        .watches_stream(service_events, owning_function)
        .reconcile_on(triggers)
        .with_config(
            ControllerConfig::default()
                .concurrency(8)
                .debounce(Duration::from_millis(500)),
        )
        .graceful_shutdown_on(stop.map(|_| ()))
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            match result {
                Ok((obj, _)) => debug!(function = %obj, "reconciled"),
                Err(kube::runtime::controller::Error::ReconcilerFailed(e, obj)) => {
                    debug!(function = %obj, error = %e, "reconcile failed")
                }
                Err(e) => warn!(error = %e, "controller error"),
            }
            std::future::ready(())
        })
        .await;
    workload_task.abort();
    if let Some(t) = upstream_task {
        t.abort();
    }
    gauge_task.abort();
    prune_task.abort();
    info!("controller stopped");
    Ok(())
}

/// Watches of OpenFunction's proxies and Servings (metadata only, in
/// `version`, the one the API server serves; none without the Serving CRD).
/// A change of such a proxy reconciles its Function, so ours comes back
/// when it goes.
fn watch_upstream(
    client: &Client,
    ns: &Option<String>,
    version: Option<ApiVersion>,
    trigger: futures::channel::mpsc::UnboundedSender<ObjectRef<Function>>,
) -> (Upstream, tokio::task::JoinHandle<()>) {
    fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let (proxies, mut pw) = reflector::store::<Deployment>();
    let (servings, mut sw) = reflector::store::<PartialObjectMeta<Serving>>();
    let proxy_events = watcher(
        api::<Deployment>(client, ns),
        watcher::Config::default().labels(UPSTREAM_PROXY_SELECTOR),
    )
    .default_backoff()
    .modify(|d| {
        d.managed_fields_mut().clear();
        d.status = None;
        d.spec = None;
    });
    let serving_events = match version {
        Some(ApiVersion::V1beta1) => watcher(
            api::<PartialObjectMeta<Serving>>(client, ns),
            watcher::Config::default(),
        )
        .default_backoff()
        .boxed(),
        Some(ApiVersion::V1beta2) => watcher(
            api::<PartialObjectMeta<v1beta2::Serving>>(client, ns),
            watcher::Config::default(),
        )
        .default_backoff()
        .map_ok(|e| {
            map_event(e, |s| PartialObjectMeta::<Serving> {
                types: None,
                metadata: s.metadata,
                _phantom: Default::default(),
            })
        })
        .boxed(),
        None => {
            info!("no Serving CRD: OpenFunction's controller runs no proxy here");
            sw.apply_watcher_event(&watcher::Event::Init);
            sw.apply_watcher_event(&watcher::Event::InitDone);
            futures::stream::pending().boxed()
        }
    };
    let upstream = Upstream {
        proxies: proxies.clone(),
        servings: servings.clone(),
    };
    let task = tokio::spawn(async move {
        let mut proxy_events = std::pin::pin!(proxy_events);
        let mut serving_events = serving_events;
        loop {
            tokio::select! {
                Some(e) = proxy_events.next() => match e {
                    Ok(e) => {
                        // Reconcile the Function of a proxy that came or went.
                        if let watcher::Event::Apply(d) | watcher::Event::Delete(d) = &e
                            && let Some((ns, f)) = upstream.function_of(d)
                        {
                            let _ = trigger.unbounded_send(ObjectRef::new(&f).within(&ns));
                        }
                        pw.apply_watcher_event(&e)
                    }
                    Err(e) => warn!(error = %e, "watch of OpenFunction's proxies failed; retrying"),
                },
                Some(e) = serving_events.next() => match e {
                    Ok(e) => {
                        let e = e.modify(|s| s.metadata.managed_fields = None);
                        sw.apply_watcher_event(&e)
                    }
                    Err(e) => warn!(error = %e, "watch of Servings failed; retrying"),
                },
                else => break,
            }
        }
    });
    (Upstream { proxies, servings }, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: ControllerSettings,
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff_delay(0), Duration::from_secs(2));
        assert_eq!(backoff_delay(1), Duration::from_secs(2));
        assert_eq!(backoff_delay(2), Duration::from_secs(4));
        assert_eq!(backoff_delay(5), Duration::from_secs(32));
        assert_eq!(backoff_delay(9), MAX_BACKOFF);
        assert_eq!(backoff_delay(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn cli_flags() {
        let s = Cli::parse_from([
            "x",
            "--controller=false",
            "--proxy-image",
            "reg/proxy:v2",
            "--proxy-cpu-request",
            "",
            "--proxy-memory-limit",
            "128Mi",
            "--leader-elect=false",
        ])
        .settings
        .with_shared("example.org", Some("fns".into()));
        assert!(!s.enabled);
        assert!(!s.leader_elect);
        assert_eq!(s.namespace.as_deref(), Some("fns"));
        let p = s.proxy_settings();
        assert_eq!(p.image, "reg/proxy:v2");
        assert_eq!(p.cluster_domain, "example.org");
        assert_eq!(p.resources.cpu_request, None);
        assert_eq!(p.resources.memory_request.as_deref(), Some("64Mi"));
        assert_eq!(p.resources.memory_limit.as_deref(), Some("128Mi"));

        let d = Cli::parse_from(["x", "--controller"]).settings;
        assert!(d.enabled);
        assert_eq!(d.proxy_settings(), ProxySettings::default());
        assert_eq!(d.resync(), DEFAULT_RESYNC);
        let l = d.leader_settings("ns");
        // No --lease-namespace: POD_NAMESPACE, else the client's namespace
        // (in a cluster the service account's, else the kubeconfig context's).
        if std::env::var_os("POD_NAMESPACE").is_none() {
            assert_eq!(l.namespace, "ns");
        }
        let mut explicit = d.clone();
        explicit.lease_namespace = "ops".into();
        assert_eq!(explicit.leader_settings("ns").namespace, "ops");
        assert_eq!(l.lease_name, "openfunction-dapr-controller");
        assert_eq!(l.lease_duration, Duration::from_secs(15));
        assert!(l.request_timeout < l.renew_grace);
    }

    /// `serve` flattens these settings next to the webhook's: no flag may
    /// clash.
    #[test]
    fn flattens_into_serve() {
        use clap::CommandFactory;
        #[derive(Parser)]
        struct Serve {
            #[command(flatten)]
            serve: crate::cli::ServeArgs,
        }
        Serve::command().debug_assert();
        let s = Serve::parse_from(["x", "--cluster-domain", "corp", "--controller=false"]).serve;
        let c = s
            .controller
            .with_shared(&s.cluster_domain, s.namespace.clone());
        assert!(!c.enabled);
        assert_eq!(c.proxy_settings().cluster_domain, "corp");
    }

    #[test]
    fn default_matches_the_cli_defaults() {
        let mut parsed = Cli::parse_from(["x"]).settings;
        let mut default = ControllerSettings::default();
        // these three may come from the environment
        for s in [&mut parsed, &mut default] {
            s.identity = None;
            s.lease_namespace.clear();
            s.namespace = None;
        }
        assert_eq!(parsed, default);
    }
}
