//! A fake Kubernetes API server for the tests, in memory.
//!
//! It keeps objects and answers like kube-apiserver does for what the
//! controller and the webhook's store use: GET (404 Status when missing),
//! lists and long-polled watches (label selectors), server-side apply
//! (fieldManager required, creates with uid/resourceVersion/defaults,
//! immutable Service clusterIP and Deployment selector), JSON merge patch,
//! DELETE with uid preconditions (409 on mismatch) and Events. Every call is
//! recorded. It is reached in-process ([`FakeApi::start`], kube-rs'
//! tower-test mock) or over real HTTP on 127.0.0.1 ([`FakeApi::serve_http`]),
//! and can fail calls ([`FakeApi::fail_once`]), go down ([`FakeApi::down`],
//! or stop the HTTP server) and hold calls in flight ([`FakeApi::hold`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinSet;

#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: Option<String>,
    pub body: Option<Value>,
    /// When the fake received it.
    pub at: Instant,
}

impl Call {
    pub fn field_manager(&self) -> Option<&str> {
        self.query.get("fieldManager").map(String::as_str)
    }
}

#[derive(Default)]
pub struct State {
    objects: BTreeMap<String, Value>,
    calls: Vec<Call>,
    next_uid: u64,
    next_rv: u64,
    /// (method, path) -> status code to fail with, once
    fail: Vec<(String, String, u16)>,
    /// Watch events: (resourceVersion, object path, type, object).
    log: Vec<(u64, String, &'static str, Value)>,
    /// Answer everything with this status (an outage).
    down: Option<u16>,
    /// Connections accepted and closed by a refusing server.
    refused: usize,
    /// Lease path -> the field manager owning `spec.holderIdentity`.
    lease_holders: BTreeMap<String, String>,
    holds: Vec<HoldEntry>,
    /// The `core.openfunction.io` versions that serve Functions and
    /// Servings (API discovery); `None`: `v1beta1` only.
    openfunction_versions: Option<Vec<String>>,
    /// No Serving CRD: discovery lists Functions only.
    no_servings: bool,
}

struct HoldEntry {
    method: String,
    path: String,
    arrived: Arc<Notify>,
    count: Arc<AtomicUsize>,
    released: watch::Receiver<bool>,
}

/// Requests held by [`FakeApi::hold`].
pub struct Hold {
    arrived: Arc<Notify>,
    count: Arc<AtomicUsize>,
    release: Arc<watch::Sender<bool>>,
}

impl Hold {
    /// Wait (bounded) until a held request has arrived.
    pub async fn arrived(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.count.load(Ordering::SeqCst) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the held request never came"
            );
            let _ = tokio::time::timeout(Duration::from_millis(50), self.arrived.notified()).await;
        }
    }

    /// Let the held requests (and later ones) through.
    pub fn release(&self) {
        let _ = self.release.send(true);
    }
}

/// A fake API server served over HTTP by [`FakeApi::serve_http`].
pub struct HttpServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop it as a crash would: the port closes, open connections
    /// (watches) drop.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// A kube client for an API server at `url` (`http://127.0.0.1:port`).
pub fn http_client(url: &str) -> Client {
    let mut config = kube::Config::new(url.parse().expect("API server URL"));
    config.connect_timeout = Some(Duration::from_secs(2));
    Client::try_from(config).expect("kube client")
}

/// A kubeconfig file naming the API server at `url`.
pub fn write_kubeconfig(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: fake\n  cluster:\n    server: {url}\n\
             users:\n- name: fake\n  user:\n    token: fake-token\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\n"
        ),
    )
    .expect("write kubeconfig");
    path
}

#[derive(Clone, Default)]
pub struct FakeApi(Arc<Mutex<State>>);

pub fn status(code: u16, reason: &str, message: String) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

pub fn merge(target: &mut Value, patch: &Value) {
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
    /// A fake and a client talking to it in-process (kube-rs' tower-test
    /// mock service).
    pub fn start() -> (Self, Client) {
        let fake = FakeApi::default();
        let client = fake.client();
        (fake, client)
    }

    /// Serve Functions and Servings of `core.openfunction.io` in these
    /// versions (API discovery answers accordingly; default `v1beta1`).
    /// Objects are stored per version path: nothing is converted.
    pub fn serve_openfunction_versions(&self, versions: &[&str]) {
        self.0.lock().unwrap().openfunction_versions =
            Some(versions.iter().map(|v| (*v).to_owned()).collect());
    }

    /// Whether discovery lists Servings next to Functions (default: yes);
    /// `false` is a cluster without OpenFunction's Serving CRD.
    pub fn serve_servings(&self, served: bool) {
        self.0.lock().unwrap().no_servings = !served;
    }

    /// Another in-process client of this fake (e.g. a second replica).
    pub fn client(&self) -> Client {
        let f = self.clone();
        mock_client(move |req| {
            let f = f.clone();
            async move { f.handle(req).await }
        })
    }

    /// Serve this fake over plain HTTP/1.1 on `addr` (`127.0.0.1:0` for
    /// any port), as a real API server would be reached. The objects live
    /// in the fake, so a server can be stopped and another one started on
    /// the same address: an API server outage.
    pub async fn serve_http(&self, addr: SocketAddr) -> HttpServer {
        let listener = TcpListener::bind(addr)
            .await
            .expect("bind the fake API server");
        let addr = listener.local_addr().unwrap();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let fake = self.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        let fake = fake.clone();
                        conns.spawn(async move {
                            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                                let fake = fake.clone();
                                async move {
                                    let (parts, body) = req.into_parts();
                                    let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                                    let (code, body) = fake.handle_parts(&parts.method, &parts.uri, &parts.headers, &bytes).await;
                                    Ok::<_, std::convert::Infallible>(
                                        Response::builder()
                                            .status(StatusCode::from_u16(code).unwrap())
                                            .header("content-type", "application/json")
                                            .body(Full::new(Bytes::from(body)))
                                            .unwrap(),
                                    )
                                }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(tcp), service)
                                .await;
                        });
                    }
                }
            }
            // a crash: the listener closes and every connection drops
            drop(listener);
            conns.shutdown().await;
        });
        HttpServer {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// An unreachable API server on `addr`: every connection is accepted
    /// and closed at once, before any answer, and counted
    /// ([`Self::refused_connections`]).
    pub async fn serve_refusing(&self, addr: SocketAddr) -> HttpServer {
        let listener = TcpListener::bind(addr)
            .await
            .expect("bind the refusing API server");
        let addr = listener.local_addr().unwrap();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let fake = self.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => {
                        if let Ok((tcp, _)) = accepted {
                            fake.0.lock().unwrap().refused += 1;
                            drop(tcp);
                        }
                    }
                }
            }
        });
        HttpServer {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Connections closed by [`Self::serve_refusing`] servers so far.
    pub fn refused_connections(&self) -> usize {
        self.0.lock().unwrap().refused
    }

    /// Answer every request with `code` (a Status) until [`Self::up`]; the
    /// requests are still recorded, so a test can count them.
    pub fn down(&self, code: u16) {
        self.0.lock().unwrap().down = Some(code);
    }

    /// Serve normally again after [`Self::down`].
    pub fn up(&self) {
        self.0.lock().unwrap().down = None;
    }

    /// Hold every `method path` request until the returned [`Hold`] is
    /// released.
    pub fn hold(&self, method: &str, path: &str) -> Hold {
        let (tx, rx) = watch::channel(false);
        let hold = Hold {
            arrived: Arc::new(Notify::new()),
            count: Arc::new(AtomicUsize::new(0)),
            release: Arc::new(tx),
        };
        self.0.lock().unwrap().holds.push(HoldEntry {
            method: method.to_owned(),
            path: path.to_owned(),
            arrived: hold.arrived.clone(),
            count: hold.count.clone(),
            released: rx,
        });
        hold
    }

    /// Delete what garbage collection would: objects whose controller
    /// owner (by uid) no longer exists. Returns their paths.
    pub fn collect_garbage(&self) -> Vec<String> {
        let mut s = self.0.lock().unwrap();
        let uids: std::collections::BTreeSet<String> = s
            .objects
            .values()
            .filter_map(|o| o["metadata"]["uid"].as_str().map(str::to_owned))
            .collect();
        let orphans: Vec<String> = s
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| {
                        !refs.is_empty()
                            && refs
                                .iter()
                                .all(|r| r["uid"].as_str().is_none_or(|u| !uids.contains(u)))
                    })
            })
            .map(|(p, _)| p.clone())
            .collect();
        for p in &orphans {
            s.delete(p);
        }
        orphans
    }

    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.0.lock().unwrap().calls)
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.0.lock().unwrap().objects.get(path).cloned()
    }

    pub fn put(&self, path: &str, obj: Value) {
        let mut s = self.0.lock().unwrap();
        let obj = s.server_fields(obj, true);
        s.store(path, obj, "ADDED");
    }

    pub fn remove(&self, path: &str) {
        self.0.lock().unwrap().delete(path);
    }

    pub fn edit(&self, path: &str, f: impl FnOnce(&mut Value)) {
        let mut s = self.0.lock().unwrap();
        let mut obj = s.objects.get(path).cloned().unwrap();
        f(&mut obj);
        let obj = s.server_fields(obj, false);
        s.store(path, obj, "MODIFIED");
    }

    pub fn calls(&self) -> Vec<Call> {
        self.0.lock().unwrap().calls.clone()
    }

    pub fn fail_once(&self, method: &str, path: &str, code: u16) {
        self.0
            .lock()
            .unwrap()
            .fail
            .push((method.to_owned(), path.to_owned(), code));
    }

    pub fn objects_under(&self, prefix: &str) -> Vec<Value> {
        self.0
            .lock()
            .unwrap()
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub async fn handle(&self, req: Request<Body>) -> (u16, Vec<u8>) {
        let (parts, body) = req.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        self.handle_parts(&parts.method, &parts.uri, &parts.headers, &bytes)
            .await
    }

    /// One request, whatever the transport.
    pub async fn handle_parts(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        bytes: &[u8],
    ) -> (u16, Vec<u8>) {
        let method = method.to_string();
        let path = uri.path().to_owned();
        let query: BTreeMap<String, String> = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_owned(), percent_decode(v)))
            })
            .collect();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: Option<Value> = if bytes.is_empty() {
            None
        } else {
            Some(serde_json::from_slice(bytes).expect("request bodies are JSON"))
        };
        let call = Call {
            method: method.clone(),
            path: path.clone(),
            query,
            content_type,
            body,
            at: Instant::now(),
        };
        let held = {
            let mut s = self.0.lock().unwrap();
            if let Some(code) = s.down {
                s.calls.push(call);
                let (code, value) =
                    status(code, "ServiceUnavailable", "the API server is down".into());
                return (code, serde_json::to_vec(&value).unwrap());
            }
            s.holds
                .iter()
                .find(|h| h.method == method && h.path == path)
                .map(|h| {
                    h.count.fetch_add(1, Ordering::SeqCst);
                    h.arrived.notify_waiters();
                    h.released.clone()
                })
        };
        if let Some(mut released) = held {
            let _ = released.wait_for(|r| *r).await;
        }
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

pub fn percent_decode(v: &str) -> String {
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
pub struct Route {
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
            // A cluster-scoped object (a CRD, a webhook configuration).
            [plural, name] => Some(Route {
                prefix,
                namespace: None,
                plural: (*plural).to_owned(),
                name: Some((*name).to_owned()),
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
pub fn selects(selector: &str, obj: &Value) -> bool {
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

    /// A Lease's `spec.holderIdentity` is owned by the field manager that
    /// set it: a server-side apply by another manager that changes it is a
    /// conflict (409), as kube-apiserver reports it; leader election relies
    /// on that so that two replicas never both take the lease.
    fn lease_holder_conflict(
        &mut self,
        call: &Call,
        ct: &str,
        body: &Value,
    ) -> Option<(u16, Value)> {
        if !call.path.contains("/leases/") {
            return None;
        }
        let new_holder = body["spec"].get("holderIdentity")?;
        let manager = call.field_manager().map(str::to_owned);
        if ct == "application/apply-patch+yaml" {
            if !new_holder.is_null() {
                let current = self
                    .objects
                    .get(&call.path)
                    .map(|l| l["spec"]["holderIdentity"].clone())
                    .unwrap_or(Value::Null);
                if let (Some(owner), Some(m)) = (self.lease_holders.get(&call.path), &manager)
                    && owner != m
                    && current != *new_holder
                {
                    return Some(status(
                        409,
                        "Conflict",
                        format!(
                            "Apply failed with 1 conflict: conflict with \"{owner}\": .spec.holderIdentity"
                        ),
                    ));
                }
                if let Some(m) = manager {
                    self.lease_holders.insert(call.path.clone(), m);
                }
            }
        } else if new_holder.is_null() {
            self.lease_holders.remove(&call.path);
        } else if let Some(m) = manager {
            self.lease_holders.insert(call.path.clone(), m);
        }
        None
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
        if call.method == "GET"
            && let Some(version) = call.path.strip_prefix("/apis/core.openfunction.io/")
            && !version.contains('/')
        {
            let served = match &self.openfunction_versions {
                Some(v) => v.iter().any(|v| v == version),
                None => version == "v1beta1",
            };
            if !served {
                return status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource".into(),
                );
            }
            let resource = |name: &str, kind: &str| {
                json!({"name": name, "singularName": "", "namespaced": true, "kind": kind,
                    "verbs": ["delete", "get", "list", "patch", "create", "update", "watch"]})
            };
            let mut resources = vec![resource("functions", "Function")];
            if !self.no_servings {
                resources.push(resource("servings", "Serving"));
            }
            return (
                200,
                json!({"kind": "APIResourceList", "apiVersion": "v1",
                    "groupVersion": format!("core.openfunction.io/{version}"),
                    "resources": resources}),
            );
        }
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
                if let Some(conflict) = self.lease_holder_conflict(call, ct, &body) {
                    return conflict;
                }
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

/// A kube Client whose requests `handle` answers in-process with (status,
/// JSON body) (kube-rs' tower-test mock service). One task per request, so
/// that a long-polled watch does not hold up the others.
pub fn mock_client<H, Fut>(handle: H) -> Client
where
    H: Fn(Request<Body>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = (u16, Vec<u8>)> + Send + 'static,
{
    let (service, mut requests) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((req, send)) = requests.next_request().await {
            let answer = handle(req);
            tokio::spawn(async move {
                let (code, body) = answer.await;
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
    Client::new(service, "default")
}
