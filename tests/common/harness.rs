//! The reconcile harness: a [`Context`] whose caches are fed from a
//! [`FakeApi`]'s objects (as the watches would), and the Function fixtures.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use openfunction_dapr::controller::{
    self, Context, ControllerSettings, CountingMetrics, Stores, Upstream,
};
use openfunction_dapr::model::function::{Function, Serving};
use openfunction_dapr::model::v1beta2::{ApiVersion, read_function};
use serde_json::Value;

use super::fake_api::{Call, FakeApi};

pub const NS: &str = "ns";
pub const FN_UID: &str = "f0000000-0000-4000-8000-00000000f001";

pub struct Harness {
    pub fake: FakeApi,
    pub ctx: Arc<Context>,
    pub metrics: Arc<CountingMetrics>,
    pub proxies: Writer<Deployment>,
    pub services: Writer<Service>,
    pub workloads: Writer<Deployment>,
    pub upstream_proxies: Writer<Deployment>,
    pub servings: Writer<PartialObjectMeta<Serving>>,
}

pub fn deploy_path(name: &str) -> String {
    format!("/apis/apps/v1/namespaces/{NS}/deployments/{name}")
}
pub fn service_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/services/{name}")
}
pub const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/ns/events";

pub fn settings() -> ControllerSettings {
    ControllerSettings {
        identity: Some("controller-0".into()),
        ..Default::default()
    }
}

impl Harness {
    pub fn new() -> Self {
        let (fake, client) = FakeApi::start();
        let (proxies_r, proxies) = reflector::store::<Deployment>();
        let (services_r, services) = reflector::store::<Service>();
        let (workloads_r, workloads) = reflector::store::<Deployment>();
        let (upstream_r, upstream_proxies) = reflector::store::<Deployment>();
        let (servings_r, servings) = reflector::store::<PartialObjectMeta<Serving>>();
        let h_upstream = Upstream {
            proxies: upstream_r,
            servings: servings_r,
        };
        let metrics = Arc::new(CountingMetrics::default());
        let ctx = Arc::new(Context::new(
            client,
            &settings(),
            Stores {
                proxies: proxies_r,
                services: services_r,
                workloads: workloads_r,
                upstream: h_upstream.clone(),
            },
            metrics.clone(),
        ));
        let mut h = Harness {
            fake,
            ctx,
            metrics,
            proxies,
            services,
            workloads,
            upstream_proxies,
            servings,
        };
        h.sync();
        h
    }

    /// Feed the caches from the fake's objects, as a relist of the watches
    /// (same label selectors) would.
    pub fn sync(&mut self) {
        fn relist<K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned>(
            w: &mut Writer<K>,
            objects: Vec<Value>,
            selector: impl Fn(&Value) -> bool,
        ) {
            w.apply_watcher_event(&watcher::Event::Init);
            for o in objects.into_iter().filter(|o| selector(o)) {
                w.apply_watcher_event(&watcher::Event::InitApply(
                    serde_json::from_value(o).unwrap(),
                ));
            }
            w.apply_watcher_event(&watcher::Event::InitDone);
        }
        let managed = |o: &Value| {
            o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "openfunction-dapr"
        };
        let deployments = self.fake.objects_under("/apis/apps/v1/");
        relist(&mut self.proxies, deployments.clone(), managed);
        relist(
            &mut self.services,
            self.fake.objects_under("/api/v1/"),
            managed,
        );
        relist(&mut self.upstream_proxies, deployments.clone(), |o| {
            o["metadata"]["labels"]
                .get("openfunction.io/proxy")
                .is_some()
                && !managed(o)
        });
        relist(
            &mut self.servings,
            self.fake.objects_under("/apis/core.openfunction.io/"),
            |o| o["kind"] == "Serving",
        );
        relist(&mut self.workloads, deployments, |o| {
            o["metadata"]["labels"]
                .get("openfunction.io/function")
                .is_some()
        });
    }

    /// Reconcile `f` once; the calls it made.
    pub async fn reconcile(&self, f: &Function) -> (Result<Action, controller::Error>, Vec<Call>) {
        self.fake.take_calls();
        let result = controller::reconcile(Arc::new(f.clone()), self.ctx.clone()).await;
        (result, self.fake.take_calls())
    }

    pub async fn reconcile_ok(&self, f: &Function) -> Vec<Call> {
        let (result, calls) = self.reconcile(f).await;
        let action = result.unwrap_or_else(|e| panic!("reconcile failed: {e}"));
        assert_eq!(action, Action::requeue(Duration::from_secs(300)));
        calls
    }
}

/// The Function `name` from `tests/fixtures/functions/<file>`, as written.
pub fn fixture_function(file: &str, name: &str) -> Function {
    let path = format!(
        "{}/tests/fixtures/functions/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap()
        .into_iter()
        .map(|v| serde_json::from_value::<Function>(v).unwrap())
        .find(|f| f.metadata.name.as_deref() == Some(name))
        .unwrap()
}

/// A fixture Function as the API server would hand it over in [`NS`].
pub fn function(file: &str, name: &str) -> Function {
    let mut f = fixture_function(file, name);
    f.metadata.namespace = Some(NS.into());
    f.metadata.uid = Some(FN_UID.into());
    f.metadata.generation = Some(1);
    f
}

/// The async standalone fixture.
pub fn cron() -> Function {
    function("cron-input-kafka-output.yaml", "cron-input-kafka-output")
}
pub const CRON: &str = "cron-input-kafka-output";

pub fn set_annotation(f: &mut Function, k: &str, v: &str) {
    f.spec
        .serving
        .as_mut()
        .unwrap()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(k.into(), v.into());
    // and in the v1beta2 spec a v1beta2 Function was read from
    if let Some(src) = f.spec.v1beta2.as_mut() {
        std::sync::Arc::make_mut(src)
            .spec
            .serving
            .get_or_insert_with(Default::default)
            .annotations
            .get_or_insert_with(Default::default)
            .insert(k.into(), v.into());
    }
}

/// A v1beta1 Function document as `core.openfunction.io/v1beta2`, the way
/// OpenFunction v1.2.0 converts it (`apis/core/v1beta1/function_conversion.go`,
/// `ConvertTo`): knative -> `triggers.http.port` = `spec.port`; async -> one
/// `triggers.dapr` entry per input (`name` = component, `topic`, `type` of
/// the component, `inputName` = input name); outputs whose component is
/// declared -> `outputs[].dapr` (`metadata` = params, `outputName`).
pub fn v1beta2_document(v1: &Value) -> Value {
    let spec = &v1["spec"];
    let serving = &spec["serving"];
    let component = |name: &Value| {
        serving["bindings"]
            .get(name.as_str().unwrap_or_default())
            .or_else(|| serving["pubsub"].get(name.as_str().unwrap_or_default()))
            .cloned()
    };
    let mut s = serde_json::Map::new();
    for k in [
        "annotations",
        "bindings",
        "pubsub",
        "params",
        "labels",
        "template",
        "timeout",
    ] {
        if let Some(v) = serving.get(k) {
            s.insert(k.into(), v.clone());
        }
    }
    let mut triggers = serde_json::Map::new();
    match serving["runtime"].as_str() {
        Some("knative") => {
            let mut http = serde_json::Map::new();
            if let Some(p) = spec.get("port") {
                http.insert("port".into(), p.clone());
            }
            triggers.insert("http".into(), Value::Object(http));
        }
        Some("async") => {
            let dapr: Vec<Value> = serving["inputs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| {
                    let mut t = serde_json::json!({"name": i["component"], "inputName": i["name"]});
                    if let Some(topic) = i.get("topic") {
                        t["topic"] = topic.clone();
                    }
                    if let Some(c) = component(&i["component"]) {
                        t["type"] = c["type"].clone();
                    }
                    t
                })
                .collect();
            triggers.insert("dapr".into(), Value::Array(dapr));
        }
        _ => {}
    }
    s.insert("triggers".into(), Value::Object(triggers));
    let outputs: Vec<Value> = serving["outputs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| {
            let c = component(&o["component"])?;
            let mut d = serde_json::json!({"name": o["component"], "type": c["type"], "outputName": o["name"]});
            for (from, to) in [("topic", "topic"), ("params", "metadata"), ("operation", "operation")] {
                if let Some(v) = o.get(from) {
                    d[to] = v.clone();
                }
            }
            Some(serde_json::json!({"dapr": d}))
        })
        .collect();
    if !outputs.is_empty() {
        s.insert("outputs".into(), Value::Array(outputs));
    }
    if let Some(so) = serving.get("scaleOptions") {
        let mut o = serde_json::Map::new();
        for k in ["minReplicas", "maxReplicas", "knative"] {
            if let Some(v) = so.get(k) {
                o.insert(k.into(), v.clone());
            }
        }
        s.insert("scaleOptions".into(), Value::Object(o));
    }
    let mut out_spec = serde_json::Map::new();
    for k in ["version", "image", "imageCredentials", "build"] {
        if let Some(v) = spec.get(k) {
            out_spec.insert(k.into(), v.clone());
        }
    }
    out_spec.insert("serving".into(), Value::Object(s));
    serde_json::json!({
        "apiVersion": ApiVersion::V1beta2.api_version(),
        "kind": "Function",
        "metadata": v1["metadata"],
        "spec": out_spec,
    })
}

/// The document of `f` as the API server holds it in the version it was
/// read as.
pub fn function_document(f: &Function) -> Value {
    match &f.spec.v1beta2 {
        None => serde_json::to_value(f).unwrap(),
        Some(src) => serde_json::json!({
            "apiVersion": ApiVersion::V1beta2.api_version(),
            "kind": "Function",
            "metadata": f.metadata,
            "spec": src.spec,
        }),
    }
}

/// `f` (read as v1beta1) as read in `version`.
pub fn in_version(f: Function, version: ApiVersion) -> Function {
    match version {
        ApiVersion::V1beta1 => f,
        ApiVersion::V1beta2 => {
            read_function(v1beta2_document(&serde_json::to_value(&f).unwrap())).unwrap()
        }
    }
}

/// The API path of Function `name` in [`NS`], in `version`.
pub fn function_path_in(version: ApiVersion, name: &str) -> String {
    format!(
        "/apis/{}/namespaces/{NS}/functions/{name}",
        version.api_version()
    )
}

pub fn with_mode(mut f: Function, mode: &str) -> Function {
    set_annotation(&mut f, "openfunction.io/dapr-service-mode", mode);
    f
}
