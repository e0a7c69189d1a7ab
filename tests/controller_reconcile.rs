//! The reconcile's API calls against a fake API server.
//!
//! The fake (behind kube-rs' tower-test mock service) keeps objects in
//! memory and answers like kube-apiserver does for what the controller uses:
//! GET (404 Status when missing), server-side apply (fieldManager required,
//! creates with uid/resourceVersion/defaults, immutable Service clusterIP and
//! Deployment selector), JSON merge patch, DELETE with uid preconditions
//! (409 on mismatch) and Events. Every call is recorded; each scenario
//! asserts the verb, path, field manager and body of every call, and fails
//! on a missing or an extra one. The caches the controller reads are fed
//! from the fake's objects, as the watches would.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use openfunction_dapr::controller::plan::with_applied_hash;
use openfunction_dapr::controller::{
    self, Context, ControllerSettings, CountingMetrics, FIELD_MANAGER, ROLL_FIELD_MANAGER, Stores,
};
use openfunction_dapr::function::Function;
use openfunction_dapr::proxy::{self, ProxySettings};
use serde_json::{Value, json};

const NS: &str = "ns";
const FN_UID: &str = "f0000000-0000-4000-8000-00000000f001";

// ---------------------------------------------------------------- the fake

#[derive(Clone, Debug)]
struct Call {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    content_type: Option<String>,
    body: Option<Value>,
}

impl Call {
    fn field_manager(&self) -> Option<&str> {
        self.query.get("fieldManager").map(String::as_str)
    }
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    calls: Vec<Call>,
    next_uid: u64,
    next_rv: u64,
    /// (method, path) -> status code to fail with, once
    fail: Vec<(String, String, u16)>,
    /// Watch events: (resourceVersion, object path, type, object).
    log: Vec<(u64, String, &'static str, Value)>,
}

#[derive(Clone, Default)]
struct FakeApi(Arc<Mutex<State>>);

fn status(code: u16, reason: &str, message: String) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

impl FakeApi {
    fn start() -> (Self, Client) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = FakeApi::default();
        let f = fake.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let f = f.clone();
                // one task per request, so that a (long-polled) watch does
                // not hold up the others
                tokio::spawn(async move {
                    let (code, body) = f.handle(req).await;
                    send.send_response(
                        Response::builder()
                            .status(StatusCode::from_u16(code).unwrap())
                            .header("content-type", "application/json")
                            .body(Body::from(body))
                            .unwrap(),
                    );
                });
            }
        });
        (fake, Client::new(service, "default"))
    }

    fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.0.lock().unwrap().calls)
    }

    fn get(&self, path: &str) -> Option<Value> {
        self.0.lock().unwrap().objects.get(path).cloned()
    }

    fn put(&self, path: &str, obj: Value) {
        let mut s = self.0.lock().unwrap();
        let obj = s.server_fields(obj, true);
        s.store(path, obj, "ADDED");
    }

    fn remove(&self, path: &str) {
        self.0.lock().unwrap().delete(path);
    }

    fn edit(&self, path: &str, f: impl FnOnce(&mut Value)) {
        let mut s = self.0.lock().unwrap();
        let mut obj = s.objects.get(path).cloned().unwrap();
        f(&mut obj);
        let obj = s.server_fields(obj, false);
        s.store(path, obj, "MODIFIED");
    }

    fn calls(&self) -> Vec<Call> {
        self.0.lock().unwrap().calls.clone()
    }

    fn fail_once(&self, method: &str, path: &str, code: u16) {
        self.0
            .lock()
            .unwrap()
            .fail
            .push((method.to_owned(), path.to_owned(), code));
    }

    fn objects_under(&self, prefix: &str) -> Vec<Value> {
        self.0
            .lock()
            .unwrap()
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    async fn handle(&self, req: Request<Body>) -> (u16, Vec<u8>) {
        let method = req.method().to_string();
        let path = req.uri().path().to_owned();
        let query: BTreeMap<String, String> = req
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_owned(), percent_decode(v)))
            })
            .collect();
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = req.into_body().collect().await.unwrap().to_bytes();
        let body: Option<Value> = if bytes.is_empty() {
            None
        } else {
            Some(serde_json::from_slice(&bytes).expect("request bodies are JSON"))
        };
        let call = Call {
            method: method.clone(),
            path: path.clone(),
            query,
            content_type,
            body,
        };
        let route = Route::parse(&path);
        if method == "GET" && route.as_ref().is_some_and(|r| r.name.is_none()) {
            let route = route.unwrap();
            let selector = call.query.get("labelSelector").cloned().unwrap_or_default();
            self.0.lock().unwrap().calls.push(call.clone());
            if call.query.get("watch").map(String::as_str) == Some("true") {
                return (200, self.watch(&route, &selector, &call).await);
            }
            let s = self.0.lock().unwrap();
            return (200, serde_json::to_vec(&s.list(&route, &selector)).unwrap());
        }
        let mut s = self.0.lock().unwrap();
        s.calls.push(call.clone());
        let (code, value) = if let Some(i) = s
            .fail
            .iter()
            .position(|(m, p, _)| *m == method && *p == path)
        {
            let (_, _, code) = s.fail.remove(i);
            status(code, "InternalError", "injected failure".into())
        } else {
            s.serve(&call)
        };
        (code, serde_json::to_vec(&value).unwrap())
    }

    /// A watch, long-polled: the events after the requested resourceVersion
    /// (waiting up to a second for some), then the end of the stream; the
    /// client watches again from where it got.
    async fn watch(&self, route: &Route, selector: &str, call: &Call) -> Vec<u8> {
        let from: u64 = call
            .query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            let lines: Vec<String> = {
                let s = self.0.lock().unwrap();
                s.log
                    .iter()
                    .filter(|(rv, path, _, obj)| {
                        *rv > from && route.contains(path) && selects(selector, obj)
                    })
                    .map(|(_, _, ty, obj)| json!({"type": ty, "object": obj}).to_string())
                    .collect()
            };
            if !lines.is_empty() || tokio::time::Instant::now() >= deadline {
                let mut out = lines.join("\n").into_bytes();
                if !out.is_empty() {
                    out.push(b'\n');
                }
                return out;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// An API path: `<prefix>/namespaces/<ns>/<plural>[/<name>]` or
/// `<prefix>/<plural>` (all namespaces).
struct Route {
    prefix: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
        let plen = match *seg.first()? {
            "api" => 2,
            "apis" => 3,
            _ => return None,
        };
        let prefix = format!("/{}", seg.get(..plen)?.join("/"));
        match seg.get(plen..)? {
            ["namespaces", ns, plural] => Some(Route {
                prefix,
                namespace: Some((*ns).to_owned()),
                plural: (*plural).to_owned(),
                name: None,
            }),
            ["namespaces", ns, plural, name] => Some(Route {
                prefix,
                namespace: Some((*ns).to_owned()),
                plural: (*plural).to_owned(),
                name: Some((*name).to_owned()),
            }),
            [plural] => Some(Route {
                prefix,
                namespace: None,
                plural: (*plural).to_owned(),
                name: None,
            }),
            _ => None,
        }
    }

    /// Whether the object at `path` is in this collection.
    fn contains(&self, path: &str) -> bool {
        Route::parse(path).is_some_and(|r| {
            r.name.is_some()
                && r.prefix == self.prefix
                && r.plural == self.plural
                && (self.namespace.is_none() || r.namespace == self.namespace)
        })
    }
}

/// Label selectors as kube-apiserver reads them (`k=v`, `k==v`, `k!=v`,
/// `k`, `!k`, comma-separated).
fn selects(selector: &str, obj: &Value) -> bool {
    let labels = &obj["metadata"]["labels"];
    selector
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .all(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                labels[k.trim()] != json!(v.trim())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                labels[k.trim()] == json!(v.trim())
            } else if let Some(k) = term.strip_prefix('!') {
                labels.get(k.trim()).is_none()
            } else {
                labels.get(term).is_some()
            }
        })
}

impl State {
    fn store(&mut self, path: &str, obj: Value, ty: &'static str) {
        let rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.next_rv);
        self.log.push((rv, path.to_owned(), ty, obj.clone()));
        self.objects.insert(path.to_owned(), obj);
    }

    fn delete(&mut self, path: &str) -> Option<Value> {
        let obj = self.objects.remove(path)?;
        self.next_rv += 1;
        let mut gone = obj.clone();
        gone["metadata"]["resourceVersion"] = json!(self.next_rv.to_string());
        self.log
            .push((self.next_rv, path.to_owned(), "DELETED", gone));
        Some(obj)
    }

    fn list(&self, route: &Route, selector: &str) -> Value {
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|(path, obj)| route.contains(path) && selects(selector, obj))
            .map(|(_, obj)| obj.clone())
            .collect();
        let kind = match route.plural.as_str() {
            "deployments" => "DeploymentList",
            "services" => "ServiceList",
            "functions" => "FunctionList",
            "leases" => "LeaseList",
            "events" => "EventList",
            _ => "List",
        };
        json!({
            "apiVersion": route.prefix.trim_start_matches("/api/").trim_start_matches("/apis/"),
            "kind": kind,
            "metadata": {"resourceVersion": self.next_rv.to_string()},
            "items": items,
        })
    }

    fn server_fields(&mut self, mut obj: Value, create: bool) -> Value {
        self.next_rv += 1;
        let rv = self.next_rv.to_string();
        let m = &mut obj["metadata"];
        if create {
            if m.get("uid").is_none() {
                self.next_uid += 1;
                m["uid"] = json!(format!("uid-{}", self.next_uid));
            }
            m["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            m["generation"] = json!(1);
        }
        m["resourceVersion"] = json!(rv);
        obj
    }

    /// What kube-apiserver adds to the objects the controller creates.
    fn defaults(obj: &mut Value, n: u64) {
        match obj["kind"].as_str() {
            Some("Deployment") => {
                let spec = &mut obj["spec"];
                for (k, v) in [
                    ("revisionHistoryLimit", json!(10)),
                    ("progressDeadlineSeconds", json!(600)),
                    (
                        "strategy",
                        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
                    ),
                ] {
                    if spec.get(k).is_none() {
                        spec[k] = v;
                    }
                }
                let pod = &mut spec["template"]["spec"];
                for (k, v) in [
                    ("restartPolicy", json!("Always")),
                    ("terminationGracePeriodSeconds", json!(30)),
                    ("dnsPolicy", json!("ClusterFirst")),
                    ("schedulerName", json!("default-scheduler")),
                ] {
                    if pod.get(k).is_none() {
                        pod[k] = v;
                    }
                }
                for c in pod["containers"].as_array_mut().into_iter().flatten() {
                    for (k, v) in [
                        ("imagePullPolicy", json!("IfNotPresent")),
                        ("terminationMessagePath", json!("/dev/termination-log")),
                        ("terminationMessagePolicy", json!("File")),
                    ] {
                        if c.get(k).is_none() {
                            c[k] = v;
                        }
                    }
                }
                obj["status"] = json!({"observedGeneration": 1});
            }
            Some("Service") => {
                let spec = &mut obj["spec"];
                if spec.get("clusterIP").is_none() {
                    spec["clusterIP"] = json!(format!("10.96.0.{}", 10 + n));
                }
                spec["clusterIPs"] = json!([spec["clusterIP"].clone()]);
                spec["type"] = json!("ClusterIP");
                spec["sessionAffinity"] = json!("None");
                spec["ipFamilies"] = json!(["IPv4"]);
                spec["ipFamilyPolicy"] = json!("SingleStack");
                spec["internalTrafficPolicy"] = json!("Cluster");
                obj["status"] = json!({"loadBalancer": {}});
            }
            _ => {}
        }
    }

    fn serve(&mut self, call: &Call) -> (u16, Value) {
        let segments: Vec<&str> = call.path.trim_matches('/').split('/').collect();
        let name = segments.last().copied().unwrap_or_default().to_owned();
        let resource = segments
            .get(segments.len().saturating_sub(2))
            .copied()
            .unwrap_or_default();
        let not_found = || status(404, "NotFound", format!("{resource} \"{name}\" not found"));
        match call.method.as_str() {
            "GET" => match self.objects.get(&call.path) {
                Some(o) => (200, o.clone()),
                None => not_found(),
            },
            "POST" => {
                // create in a collection
                let mut obj = call.body.clone().unwrap();
                let Some(name) = obj["metadata"]["name"].as_str().map(str::to_owned) else {
                    return status(422, "Invalid", "metadata.name: Required value".into());
                };
                let path = format!("{}/{name}", call.path);
                if self.objects.contains_key(&path) {
                    return status(409, "AlreadyExists", format!("\"{name}\" already exists"));
                }
                obj["metadata"]["namespace"] = json!(Route::parse(&path).and_then(|r| r.namespace));
                obj = self.server_fields(obj, true);
                self.store(&path, obj.clone(), "ADDED");
                (201, obj)
            }
            "PATCH" => {
                let ct = call.content_type.as_deref().unwrap_or_default();
                let body = call.body.clone().unwrap_or(Value::Null);
                if ct == "application/apply-patch+yaml" {
                    if call.field_manager().is_none() {
                        return status(
                            422,
                            "Invalid",
                            "fieldManager: Required value: is required for apply patch".into(),
                        );
                    }
                    let body_name = &body["metadata"]["name"];
                    if (!body_name.is_null() && *body_name != json!(name))
                        || body.get("apiVersion").is_none()
                        || body.get("kind").is_none()
                    {
                        return status(400, "BadRequest", "invalid apply body".into());
                    }
                    match self.objects.get(&call.path).cloned() {
                        None => {
                            let mut obj = body;
                            obj["metadata"]["name"] = json!(name);
                            self.next_uid += 1;
                            let n = self.next_uid;
                            Self::defaults(&mut obj, n);
                            let obj = self.server_fields(obj, true);
                            self.store(&call.path, obj.clone(), "ADDED");
                            (201, obj)
                        }
                        Some(mut obj) => {
                            if obj["kind"] == "Service"
                                && body["spec"].get("clusterIP").is_some()
                                && body["spec"]["clusterIP"] != obj["spec"]["clusterIP"]
                            {
                                return status(
                                    422,
                                    "Invalid",
                                    "spec.clusterIP: Invalid value: field is immutable".into(),
                                );
                            }
                            if obj["kind"] == "Deployment"
                                && body["spec"]["selector"] != obj["spec"]["selector"]
                            {
                                return status(
                                    422,
                                    "Invalid",
                                    "spec.selector: Invalid value: field is immutable".into(),
                                );
                            }
                            merge(&mut obj, &body);
                            let obj = self.server_fields(obj, false);
                            self.store(&call.path, obj.clone(), "MODIFIED");
                            (200, obj)
                        }
                    }
                } else if ct == "application/merge-patch+json"
                    || ct == "application/strategic-merge-patch+json"
                {
                    match self.objects.get(&call.path).cloned() {
                        None => not_found(),
                        Some(mut obj) => {
                            merge(&mut obj, &body);
                            let obj = self.server_fields(obj, false);
                            self.store(&call.path, obj.clone(), "MODIFIED");
                            (200, obj)
                        }
                    }
                } else {
                    status(415, "UnsupportedMediaType", ct.to_owned())
                }
            }
            "DELETE" => match self.objects.get(&call.path).cloned() {
                None => not_found(),
                Some(obj) => {
                    let want = call
                        .body
                        .as_ref()
                        .and_then(|b| b["preconditions"]["uid"].as_str().map(str::to_owned));
                    if let Some(uid) = want
                        && obj["metadata"]["uid"].as_str() != Some(uid.as_str())
                    {
                        return status(
                            409,
                            "Conflict",
                            "Precondition failed: UID in precondition does not match".into(),
                        );
                    }
                    self.delete(&call.path);
                    (200, obj)
                }
            },
            _ => status(405, "MethodNotAllowed", call.method.clone()),
        }
    }
}

// ---------------------------------------------------------------- harness

struct Harness {
    fake: FakeApi,
    ctx: Arc<Context>,
    metrics: Arc<CountingMetrics>,
    proxies: Writer<Deployment>,
    services: Writer<Service>,
    workloads: Writer<Deployment>,
}

fn deploy_path(name: &str) -> String {
    format!("/apis/apps/v1/namespaces/{NS}/deployments/{name}")
}
fn service_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/services/{name}")
}
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/ns/events";

fn settings() -> ControllerSettings {
    ControllerSettings {
        identity: Some("controller-0".into()),
        ..Default::default()
    }
}

impl Harness {
    fn new() -> Self {
        let (fake, client) = FakeApi::start();
        let (proxies_r, proxies) = reflector::store::<Deployment>();
        let (services_r, services) = reflector::store::<Service>();
        let (workloads_r, workloads) = reflector::store::<Deployment>();
        let metrics = Arc::new(CountingMetrics::default());
        let ctx = Arc::new(Context::new(
            client,
            &settings(),
            Stores {
                proxies: proxies_r,
                services: services_r,
                workloads: workloads_r,
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
        };
        h.sync();
        h
    }

    /// Feed the caches from the fake's objects, as a relist of the watches
    /// (same label selectors) would.
    fn sync(&mut self) {
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
        relist(&mut self.workloads, deployments, |o| {
            o["metadata"]["labels"]
                .get("openfunction.io/function")
                .is_some()
        });
    }

    /// Reconcile `f` once; the calls it made.
    async fn reconcile(&self, f: &Function) -> (Result<Action, controller::Error>, Vec<Call>) {
        self.fake.take_calls();
        let result = controller::reconcile(Arc::new(f.clone()), self.ctx.clone()).await;
        (result, self.fake.take_calls())
    }

    async fn reconcile_ok(&self, f: &Function) -> Vec<Call> {
        let (result, calls) = self.reconcile(f).await;
        let action = result.unwrap_or_else(|e| panic!("reconcile failed: {e}"));
        assert_eq!(action, Action::requeue(Duration::from_secs(300)));
        calls
    }
}

fn function(file: &str, name: &str) -> Function {
    let path = format!(
        "{}/tests/fixtures/functions/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut f: Function = serde_saphyr::from_multiple::<Value>(&text)
        .unwrap()
        .into_iter()
        .map(|v| serde_json::from_value::<Function>(v).unwrap())
        .find(|f| f.metadata.name.as_deref() == Some(name))
        .unwrap();
    f.metadata.namespace = Some(NS.into());
    f.metadata.uid = Some(FN_UID.into());
    f.metadata.generation = Some(1);
    f
}

/// The async standalone fixture.
fn cron() -> Function {
    function("cron-input-kafka-output.yaml", "cron-input-kafka-output")
}
const CRON: &str = "cron-input-kafka-output";

fn set_annotation(f: &mut Function, k: &str, v: &str) {
    f.spec
        .serving
        .as_mut()
        .unwrap()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(k.into(), v.into());
}

fn with_mode(mut f: Function, mode: &str) -> Function {
    set_annotation(&mut f, "openfunction.io/dapr-service-mode", mode);
    f
}

// ---------------------------------------------------------- expectations

struct Expect {
    method: &'static str,
    path: String,
    field_manager: Option<&'static str>,
    check: Box<dyn Fn(&Call)>,
}

fn expect(
    method: &'static str,
    path: impl Into<String>,
    field_manager: Option<&'static str>,
    check: impl Fn(&Call) + 'static,
) -> Expect {
    Expect {
        method,
        path: path.into(),
        field_manager,
        check: Box::new(check),
    }
}

fn get(path: String) -> Expect {
    expect("GET", path, None, |c| assert!(c.body.is_none()))
}

/// SSA of exactly `desired` (as built, plus the applied-hash annotation).
fn apply(path: String, desired: Value) -> Expect {
    expect("PATCH", path, Some(FIELD_MANAGER), move |c| {
        assert_eq!(
            c.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        assert_eq!(c.query.get("force").map(String::as_str), Some("true"));
        assert_eq!(c.body.as_ref(), Some(&desired), "apply body");
    })
}

fn delete(path: String, uid: String) -> Expect {
    expect("DELETE", path, None, move |c| {
        let body = c.body.as_ref().expect("delete options");
        assert_eq!(body["preconditions"]["uid"], json!(uid));
        assert_eq!(body["propagationPolicy"], "Background");
    })
}

fn roll(name: &str, mode: &'static str) -> Expect {
    expect(
        "PATCH",
        deploy_path(name),
        Some(ROLL_FIELD_MANAGER),
        move |c| {
            assert_eq!(
                c.content_type.as_deref(),
                Some("application/merge-patch+json")
            );
            assert_eq!(
                c.body.as_ref().unwrap(),
                &json!({"spec": {"template": {"metadata": {"annotations": {"openfunction.io/dapr-mode": mode}}}}})
            );
        },
    )
}

/// An Event on the Function about `(kind, name)` with `reason`, `type`,
/// whose note contains `note`.
fn event(
    reason: &'static str,
    type_: &'static str,
    related: Option<(&'static str, String)>,
    note: &'static str,
) -> Expect {
    expect("POST", EVENTS, None, move |c| {
        let e = c.body.as_ref().unwrap();
        assert_eq!(e["reason"], reason);
        assert_eq!(e["type"], type_);
        assert_eq!(e["reportingController"], "openfunction-dapr");
        assert_eq!(e["reportingInstance"], "controller-0");
        assert_eq!(e["regarding"]["kind"], "Function");
        assert_eq!(e["regarding"]["name"], CRON);
        assert_eq!(e["regarding"]["uid"], FN_UID);
        assert_eq!(e["metadata"]["namespace"], NS);
        let text = e["note"].as_str().unwrap();
        assert!(text.contains(note), "note {text:?} lacks {note:?}");
        match &related {
            Some((kind, name)) => {
                assert_eq!(e["related"]["kind"], *kind);
                assert_eq!(e["related"]["name"], json!(name));
            }
            None => assert!(e.get("related").is_none_or(Value::is_null)),
        }
    })
}

fn assert_calls(calls: &[Call], expected: Vec<Expect>) {
    let got: Vec<String> = calls
        .iter()
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    let want: Vec<String> = expected
        .iter()
        .map(|e| format!("{} {}", e.method, e.path))
        .collect();
    assert_eq!(got, want, "calls (missing or extra)");
    for (c, e) in calls.iter().zip(&expected) {
        assert_eq!(
            c.field_manager(),
            e.field_manager,
            "field manager of {} {}",
            c.method,
            c.path
        );
        (e.check)(c);
    }
}

fn desired_deployment(f: &Function) -> Value {
    serde_json::to_value(with_applied_hash(proxy::desired_proxy_deployment(
        f,
        &ProxySettings::default(),
    )))
    .unwrap()
}

fn desired_service(f: &Function) -> Value {
    serde_json::to_value(with_applied_hash(
        proxy::desired_function_service(f, &ProxySettings::default()).unwrap(),
    ))
    .unwrap()
}

fn proxy_name() -> String {
    format!("{CRON}-dapr-proxy")
}

fn uid_of(fake: &FakeApi, path: &str) -> String {
    fake.get(path).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn creation_calls(f: &Function) -> Vec<Expect> {
    vec![
        get(deploy_path(&proxy_name())),
        apply(deploy_path(&proxy_name()), desired_deployment(f)),
        event(
            "ProxyCreated",
            "Normal",
            Some(("Deployment", proxy_name())),
            "Created the Dapr proxy Deployment cron-input-kafka-output-dapr-proxy (app id cron-input-kafka-output-ns, app protocol grpc, app port 8080, 1 replica(s))",
        ),
        get(service_path(CRON)),
        apply(service_path(CRON), desired_service(f)),
        event(
            "ProxyCreated",
            "Normal",
            Some(("Service", CRON.to_owned())),
            "Created the function Service cron-input-kafka-output (headless, port 8080",
        ),
    ]
}

/// A function Deployment labelled for `function`, whose pod template was
/// admitted with `annotations` and `env`.
fn workload(name: &str, function: &str, annotations: Value, env: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS,
            "labels": {"openfunction.io/function": function, "openfunction.io/serving": format!("{function}-serving")}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "openfunction.io/function": function},
                             "annotations": annotations},
                "spec": {"containers": [{"name": "function", "image": "fn:v1", "env": env}]}
            }
        }
    })
}

fn standalone_env() -> Value {
    json!([{"name": "DAPR_HOST", "value": "cron-input-kafka-output-ns-dapr.ns.svc.cluster.local"},
           {"name": "APP_PROTOCOL", "value": "grpc"}])
}

// ---------------------------------------------------------------- scenarios

#[tokio::test]
async fn standalone_creates_proxy_and_service() {
    let mut h = Harness::new();
    let f = cron();
    let calls = h.reconcile_ok(&f).await;
    assert_calls(&calls, creation_calls(&f));

    // what the API server holds is owned by the Function
    for path in [deploy_path(&proxy_name()), service_path(CRON)] {
        let o = h.fake.get(&path).unwrap();
        assert_eq!(
            o["metadata"]["ownerReferences"],
            json!([{"apiVersion": "core.openfunction.io/v1beta1", "kind": "Function",
                    "name": CRON, "uid": FN_UID, "controller": true, "blockOwnerDeletion": true}])
        );
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "openfunction-dapr"
        );
    }
    h.sync();
    assert_eq!(h.ctx.stores.proxies.state().len(), 1);
}

#[tokio::test]
async fn second_pass_makes_no_call() {
    let mut h = Harness::new();
    let f = cron();
    h.reconcile_ok(&f).await;
    h.sync();
    let writes = h.metrics.writes.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..3 {
        let calls = h.reconcile_ok(&f).await;
        assert_calls(&calls, vec![]);
    }
    assert_eq!(
        h.metrics.writes.load(std::sync::atomic::Ordering::Relaxed),
        writes
    );
    // also when the Function's status or labels change (not its spec)
    let mut f2 = f.clone();
    f2.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("team".into(), "a".into());
    assert_calls(&h.reconcile_ok(&f2).await, vec![]);
}

#[tokio::test]
async fn changed_or_deleted_proxy_is_put_back() {
    let mut h = Harness::new();
    let f = cron();
    h.reconcile_ok(&f).await;
    h.sync();

    // someone scales the proxy to 0 and changes its image
    h.fake.edit(&deploy_path(&proxy_name()), |d| {
        d["spec"]["replicas"] = json!(0);
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil:latest");
    });
    h.sync();
    let calls = h.reconcile_ok(&f).await;
    assert_calls(
        &calls,
        vec![
            apply(deploy_path(&proxy_name()), desired_deployment(&f)),
            event(
                "ProxyUpdated",
                "Normal",
                Some(("Deployment", proxy_name())),
                "Updated the Dapr proxy Deployment cron-input-kafka-output-dapr-proxy to match the Function",
            ),
        ],
    );
    h.sync();
    let d = h.fake.get(&deploy_path(&proxy_name())).unwrap();
    assert_eq!(d["spec"]["replicas"], 1);
    assert_calls(&h.reconcile_ok(&f).await, vec![]);

    // someone deletes the Service
    h.fake.remove(&service_path(CRON));
    h.sync();
    let calls = h.reconcile_ok(&f).await;
    assert_calls(
        &calls,
        vec![
            get(service_path(CRON)),
            apply(service_path(CRON), desired_service(&f)),
            event(
                "ProxyCreated",
                "Normal",
                Some(("Service", CRON.to_owned())),
                "Created the function Service",
            ),
        ],
    );
    assert!(h.fake.get(&service_path(CRON)).is_some());
}

#[tokio::test]
async fn switch_to_sidecar_deletes_the_proxy() {
    let mut h = Harness::new();
    let f = cron();
    h.reconcile_ok(&f).await;
    h.sync();
    let deploy_uid = uid_of(&h.fake, &deploy_path(&proxy_name()));
    let service_uid = uid_of(&h.fake, &service_path(CRON));

    let sidecar = with_mode(f.clone(), "sidecar");
    let calls = h.reconcile_ok(&sidecar).await;
    assert_calls(
        &calls,
        vec![
            delete(deploy_path(&proxy_name()), deploy_uid),
            event(
                "ProxyRemoved",
                "Normal",
                Some(("Deployment", proxy_name())),
                "Deleted the Dapr proxy Deployment cron-input-kafka-output-dapr-proxy: the function is now in sidecar mode",
            ),
            delete(service_path(CRON), service_uid),
            event(
                "ProxyRemoved",
                "Normal",
                Some(("Service", CRON.to_owned())),
                "Deleted the function Service cron-input-kafka-output: the function is now in sidecar mode",
            ),
        ],
    );
    assert!(h.fake.get(&deploy_path(&proxy_name())).is_none());
    assert!(h.fake.get(&service_path(CRON)).is_none());
    h.sync();
    assert_calls(&h.reconcile_ok(&sidecar).await, vec![]);

    // disabling dapr is the same; and back to standalone recreates
    let mut disabled = f.clone();
    set_annotation(&mut disabled, "openfunction.io/enable-dapr", "false");
    assert_calls(&h.reconcile_ok(&disabled).await, vec![]);
    let calls = h.reconcile_ok(&f).await;
    assert_eq!(calls.len(), 6, "{calls:?}");
    assert_eq!(calls[1].method, "PATCH");
    assert_eq!(calls[4].method, "PATCH");
}

#[tokio::test]
async fn stale_delete_is_refused_by_the_uid_precondition() {
    let mut h = Harness::new();
    let f = cron();
    h.reconcile_ok(&f).await;
    h.sync();
    // the proxy was replaced behind the cache's back by another object
    h.fake.edit(&deploy_path(&proxy_name()), |d| {
        d["metadata"]["uid"] = json!("someone-elses");
    });
    let old_service = uid_of(&h.fake, &service_path(CRON));
    let calls = h.reconcile_ok(&with_mode(f, "sidecar")).await;
    let deploy_uid = h.ctx.stores.proxies.state()[0]
        .metadata
        .uid
        .clone()
        .unwrap();
    assert_calls(
        &calls,
        vec![
            delete(deploy_path(&proxy_name()), deploy_uid),
            // 409: nothing deleted, no Event
            delete(service_path(CRON), old_service),
            event(
                "ProxyRemoved",
                "Normal",
                Some(("Service", CRON.to_owned())),
                "Deleted the function Service",
            ),
        ],
    );
    assert!(h.fake.get(&deploy_path(&proxy_name())).is_some());
}

#[tokio::test]
async fn foreign_objects_of_the_same_names_are_never_touched() {
    let mut h = Harness::new();
    let f = cron();
    // a labelled Deployment of the proxy's name, controlled by something else
    let mut foreign = desired_deployment(&f);
    foreign["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": "x", "uid": "other-uid", "controller": true}]);
    h.fake.put(&deploy_path(&proxy_name()), foreign);
    // an unlabelled Service of the function's name, owned by nobody
    h.fake.put(
        &service_path(CRON),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": CRON, "namespace": NS},
               "spec": {"ports": [{"port": 80}], "selector": {"app": "mine"}}}),
    );
    // an unlabelled Deployment owned by the Function itself (labels stripped)
    let mut stripped = desired_deployment(&f);
    stripped["metadata"]["name"] = json!("cron-input-kafka-output-dapr-proxy-old");
    stripped["metadata"]["labels"] = json!({});
    h.fake.put(
        &deploy_path("cron-input-kafka-output-dapr-proxy-old"),
        stripped,
    );
    h.sync();
    assert_eq!(h.ctx.stores.proxies.state().len(), 1);
    let before: Vec<Value> = h.fake.objects_under("/ap");

    // not standalone: nothing to delete that is ours
    for mode in ["sidecar"] {
        assert_calls(&h.reconcile_ok(&with_mode(f.clone(), mode)).await, vec![]);
    }
    let mut disabled = f.clone();
    set_annotation(&mut disabled, "openfunction.io/enable-dapr", "false");
    assert_calls(&h.reconcile_ok(&disabled).await, vec![]);

    // standalone: reported, never applied over
    let calls = h.reconcile_ok(&f).await;
    assert_calls(
        &calls,
        vec![
            event(
                "ProxyConflict",
                "Warning",
                Some(("Deployment", proxy_name())),
                "Deployment cron-input-kafka-output-dapr-proxy already exists and is controlled by ReplicaSet x; it is left untouched",
            ),
            get(service_path(CRON)),
            event(
                "ProxyConflict",
                "Warning",
                Some(("Service", CRON.to_owned())),
                "Service cron-input-kafka-output already exists and was not created by openfunction-dapr for this function",
            ),
        ],
    );
    // reported once, not on every resync (the GET is a read)
    let calls = h.reconcile_ok(&f).await;
    assert_calls(&calls, vec![get(service_path(CRON))]);
    assert_eq!(
        h.fake.objects_under("/ap").len(),
        before.len() + 2,
        "only the two Events were added"
    );
    assert_eq!(
        h.fake.get(&service_path(CRON)).unwrap()["spec"]["selector"],
        json!({"app": "mine"})
    );
}

#[tokio::test]
async fn mode_change_rolls_labelled_function_deployments() {
    let mut h = Harness::new();
    let f = cron();
    h.reconcile_ok(&f).await;
    // function Deployments as the webhook admitted them
    h.fake.put(
        &deploy_path("cron-v1"),
        workload(
            "cron-v1",
            CRON,
            json!({"dapr.io/enabled": "true"}),
            json!([]),
        ),
    );
    h.fake.put(
        &deploy_path("cron-v2"),
        workload(
            "cron-v2",
            CRON,
            json!({"dapr.io/enabled": "false"}),
            standalone_env(),
        ),
    );
    h.fake.put(
        &deploy_path("other-v1"),
        workload(
            "other-v1",
            "other",
            json!({"dapr.io/enabled": "true"}),
            json!([]),
        ),
    );
    h.sync();

    // standalone: only the Deployment admitted in sidecar mode is rolled
    let calls = h.reconcile_ok(&f).await;
    assert_calls(
        &calls,
        vec![
            roll("cron-v1", "standalone"),
            event(
                "WorkloadRolled",
                "Normal",
                Some(("Deployment", "cron-v1".to_owned())),
                "Rolled Deployment cron-v1 (pods admitted in sidecar mode) so its pods are re-admitted in standalone mode",
            ),
        ],
    );
    assert_eq!(
        h.fake.get(&deploy_path("cron-v1")).unwrap()["spec"]["template"]["metadata"]["annotations"]
            ["openfunction.io/dapr-mode"],
        "standalone"
    );
    h.sync();
    assert_calls(&h.reconcile_ok(&f).await, vec![]);

    // to sidecar: the proxy goes and both function Deployments roll
    let deploy_uid = uid_of(&h.fake, &deploy_path(&proxy_name()));
    let service_uid = uid_of(&h.fake, &service_path(CRON));
    let sidecar = with_mode(f.clone(), "sidecar");
    let calls = h.reconcile_ok(&sidecar).await;
    assert_calls(
        &calls,
        vec![
            delete(deploy_path(&proxy_name()), deploy_uid),
            event(
                "ProxyRemoved",
                "Normal",
                Some(("Deployment", proxy_name())),
                "sidecar mode",
            ),
            delete(service_path(CRON), service_uid),
            event(
                "ProxyRemoved",
                "Normal",
                Some(("Service", CRON.to_owned())),
                "sidecar mode",
            ),
            roll("cron-v1", "sidecar"),
            event(
                "WorkloadRolled",
                "Normal",
                Some(("Deployment", "cron-v1".to_owned())),
                "(pods admitted in standalone mode) so its pods are re-admitted in sidecar mode",
            ),
            roll("cron-v2", "sidecar"),
            event(
                "WorkloadRolled",
                "Normal",
                Some(("Deployment", "cron-v2".to_owned())),
                "Rolled Deployment cron-v2",
            ),
        ],
    );
    h.sync();
    assert_calls(&h.reconcile_ok(&sidecar).await, vec![]);
    // the other function's Deployment was never touched
    assert!(
        h.fake.get(&deploy_path("other-v1")).unwrap()["spec"]["template"]["metadata"]
            ["annotations"]
            .get("openfunction.io/dapr-mode")
            .is_none()
    );
}

#[tokio::test]
async fn invalid_annotations_are_reported_once() {
    let mut h = Harness::new();
    let mut f = cron();
    set_annotation(&mut f, "openfunction.io/enable-dapr", "yes");
    set_annotation(&mut f, "openfunction.io/dapr-proxy-replicas", "many");
    let calls = h.reconcile_ok(&f).await;
    let mut expected = vec![event(
        "InvalidAnnotation",
        "Warning",
        None,
        "annotation openfunction.io/enable-dapr: \"yes\" is neither \"true\" nor \"false\"",
    )];
    expected.extend(creation_calls(&f));
    assert_calls(&calls, expected);
    let note = calls[0].body.as_ref().unwrap()["note"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        note.contains("openfunction.io/dapr-proxy-replicas: \"many\""),
        "{note}"
    );
    h.sync();
    assert_calls(&h.reconcile_ok(&f).await, vec![]);
}

#[tokio::test]
async fn app_protocol_change_replaces_the_headless_service() {
    let mut h = Harness::new();
    let f = cron();
    h.reconcile_ok(&f).await;
    h.sync();
    let service_uid = uid_of(&h.fake, &service_path(CRON));
    let mut http = f.clone();
    set_annotation(&mut http, "dapr.io/app-protocol", "http");
    let calls = h.reconcile_ok(&http).await;
    assert_calls(
        &calls,
        vec![
            apply(deploy_path(&proxy_name()), desired_deployment(&http)),
            event(
                "ProxyUpdated",
                "Normal",
                Some(("Deployment", proxy_name())),
                "app protocol http",
            ),
            delete(service_path(CRON), service_uid),
            event(
                "ProxyRemoved",
                "Normal",
                Some(("Service", CRON.to_owned())),
                "Deleted the function Service",
            ),
            get(service_path(CRON)),
            apply(service_path(CRON), desired_service(&http)),
            event(
                "ProxyCreated",
                "Normal",
                Some(("Service", CRON.to_owned())),
                "Created the function Service cron-input-kafka-output (port 8080",
            ),
        ],
    );
    let svc = h.fake.get(&service_path(CRON)).unwrap();
    assert_ne!(svc["spec"]["clusterIP"], "None");
    h.sync();
    assert_calls(&h.reconcile_ok(&http).await, vec![]);
}

#[tokio::test]
async fn knative_function_gets_no_service() {
    let h = Harness::new();
    let f = {
        let mut f = function("sink.yaml", "sink");
        f.metadata.uid = Some(FN_UID.into());
        f
    };
    let calls = h.reconcile_ok(&f).await;
    let got: Vec<String> = calls
        .iter()
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    assert_eq!(
        got,
        [
            format!("GET {}", deploy_path("sink-dapr-proxy")),
            format!("PATCH {}", deploy_path("sink-dapr-proxy")),
            format!("POST {EVENTS}"),
        ]
    );
}

#[tokio::test]
async fn function_being_deleted_gets_nothing() {
    let h = Harness::new();
    let mut f = cron();
    f.metadata.deletion_timestamp =
        Some(serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap());
    assert_calls(&h.reconcile_ok(&f).await, vec![]);
}

#[tokio::test]
async fn errors_requeue_with_exponential_backoff() {
    let mut h = Harness::new();
    let f = cron();
    let path = deploy_path(&proxy_name());
    let arc = Arc::new(f.clone());
    let mut delays = Vec::new();
    for _ in 0..4 {
        h.fake.fail_once("PATCH", &path, 500);
        let (result, calls) = h.reconcile(&f).await;
        let err = result.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("apply Deployment ns/cron-input-kafka-output-dapr-proxy"),
            "{err}"
        );
        // the failed apply is the last call: no Event, nothing after it
        assert_eq!(calls.last().unwrap().method, "PATCH");
        let action = controller::error_policy(arc.clone(), &err, h.ctx.clone());
        delays.push(action);
    }
    assert_eq!(
        delays,
        [2, 4, 8, 16].map(|s| Action::requeue(Duration::from_secs(s)))
    );
    assert_eq!(h.ctx.failures("ns/cron-input-kafka-output"), 4);
    assert_eq!(
        h.metrics
            .reconcile_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    // success resets the back-off
    assert_calls(&h.reconcile_ok(&f).await, creation_calls(&f));
    assert_eq!(h.ctx.failures("ns/cron-input-kafka-output"), 0);
    h.sync();
    h.fake.fail_once("DELETE", &path, 503);
    let (result, _) = h.reconcile(&with_mode(f, "sidecar")).await;
    assert!(
        result
            .unwrap_err()
            .to_string()
            .starts_with("delete Deployment")
    );
    assert_eq!(
        controller::error_policy(
            arc,
            &controller::Error::NotNamespaced("x".into()),
            h.ctx.clone()
        ),
        Action::requeue(Duration::from_secs(2))
    );
}

// ------------------------------------------- the whole controller, run()

fn function_path(name: &str) -> String {
    format!("/apis/core.openfunction.io/v1beta1/namespaces/{NS}/functions/{name}")
}

async fn eventually(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_write(c: &Call) -> bool {
    c.method != "GET"
}

#[tokio::test]
async fn run_keeps_the_proxy_in_place_and_is_quiet_when_nothing_changes() {
    let (fake, client) = FakeApi::start();
    fake.put(&function_path(CRON), serde_json::to_value(cron()).unwrap());
    fake.put(
        &deploy_path("cron-v1"),
        workload(
            "cron-v1",
            CRON,
            json!({"dapr.io/enabled": "false"}),
            standalone_env(),
        ),
    );
    let settings = ControllerSettings {
        identity: Some("controller-0".into()),
        lease_namespace: "ofd-system".into(),
        resync_seconds: 1,
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(controller::run(client, settings, async move {
        let _ = stopped.await;
    }));
    let lease =
        "/apis/coordination.k8s.io/v1/namespaces/ofd-system/leases/openfunction-dapr-controller";
    let limit = Duration::from_secs(20);

    // leader election, then the proxy and the Service
    eventually("the proxy and the Service", limit, || {
        fake.get(&deploy_path(&proxy_name())).is_some() && fake.get(&service_path(CRON)).is_some()
    })
    .await;
    assert_eq!(
        fake.get(lease).unwrap()["spec"]["holderIdentity"],
        "controller-0"
    );
    assert!(openfunction_dapr::controller::plan::is_subset(
        &desired_deployment(&cron()),
        &fake.get(&deploy_path(&proxy_name())).unwrap()
    ));

    // resyncs every second of an unchanged Function write nothing
    tokio::time::sleep(Duration::from_millis(1500)).await;
    fake.take_calls();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes: Vec<String> = fake
        .take_calls()
        .iter()
        .filter(|c| is_write(c) && !c.path.starts_with(lease))
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    assert!(writes.is_empty(), "writes on resync: {writes:?}");

    // a deleted proxy is put back
    let old = uid_of(&fake, &deploy_path(&proxy_name()));
    fake.remove(&deploy_path(&proxy_name()));
    eventually("the proxy recreated", limit, || {
        fake.get(&deploy_path(&proxy_name()))
            .is_some_and(|d| d["metadata"]["uid"] != json!(old))
    })
    .await;
    // a changed Service is put back
    fake.edit(&service_path(CRON), |s| {
        s["spec"]["ports"][0]["port"] = json!(9999);
    });
    eventually("the Service repaired", limit, || {
        fake.get(&service_path(CRON))
            .is_some_and(|s| s["spec"]["ports"][0]["port"] == 8080)
    })
    .await;

    // to sidecar: the proxy goes, the function Deployment is rolled
    fake.edit(&function_path(CRON), |f| {
        f["spec"]["serving"]["annotations"]["openfunction.io/dapr-service-mode"] = json!("sidecar");
        f["metadata"]["generation"] = json!(2);
    });
    eventually("the proxy removed and the workload rolled", limit, || {
        fake.get(&deploy_path(&proxy_name())).is_none()
            && fake.get(&service_path(CRON)).is_none()
            && fake.get(&deploy_path("cron-v1")).is_some_and(|d| {
                d["spec"]["template"]["metadata"]["annotations"]["openfunction.io/dapr-mode"]
                    == "sidecar"
            })
    })
    .await;

    // every watch and list of Deployments and Services is label-selected
    let calls = fake.calls();
    for c in calls.iter().filter(|c| {
        c.method == "GET" && (c.path.ends_with("/deployments") || c.path.ends_with("/services"))
    }) {
        let selector = c.query.get("labelSelector").map(String::as_str);
        assert!(
            matches!(
                selector,
                Some("app.kubernetes.io/managed-by=openfunction-dapr")
                    | Some("openfunction.io/function")
            ),
            "{} {} {selector:?}",
            c.method,
            c.path
        );
        assert!(
            !c.path.contains("/namespaces/"),
            "all namespaces by default"
        );
    }

    // shutdown: the controller stops and the lease is released
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("run returns after shutdown")
        .unwrap()
        .unwrap();
    assert!(
        fake.get(lease).unwrap()["spec"]
            .get("holderIdentity")
            .is_none_or(Value::is_null),
        "lease released"
    );
}

#[tokio::test]
async fn run_restricted_to_a_namespace_without_leader_election() {
    let (fake, client) = FakeApi::start();
    fake.put(&function_path(CRON), serde_json::to_value(cron()).unwrap());
    let settings = ControllerSettings {
        identity: Some("controller-0".into()),
        namespace: Some(NS.into()),
        leader_elect: false,
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(controller::run(client, settings, async move {
        let _ = stopped.await;
    }));
    eventually("the proxy and the Service", Duration::from_secs(20), || {
        fake.get(&deploy_path(&proxy_name())).is_some() && fake.get(&service_path(CRON)).is_some()
    })
    .await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("run returns after shutdown")
        .unwrap()
        .unwrap();
    let calls = fake.calls();
    assert!(calls.iter().all(|c| !c.path.contains("/leases")));
    for c in calls.iter().filter(|c| c.query.contains_key("watch")) {
        assert!(c.path.contains("/namespaces/ns/"), "{}", c.path);
    }
}

#[tokio::test]
async fn run_with_the_controller_disabled_does_nothing() {
    let (fake, client) = FakeApi::start();
    let settings = ControllerSettings {
        enabled: false,
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(controller::run(client, settings, async move {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!task.is_finished(), "waits for shutdown");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(fake.calls().is_empty());
}
