//! Leader election (`openfunction_dapr::ops::leader`) against a fake Lease API.
//!
//! The fake keeps one `coordination.k8s.io/v1` Lease and answers GET, POST,
//! server-side apply (with the field-ownership conflict a real API server
//! reports when another manager holds `spec.holderIdentity`), and merge /
//! strategic patches. It can be taken down (503) or made to hang. Short
//! lease settings (2 s lease, 1 s grace, 400 ms request timeout) keep the
//! tests quick; the production numbers scale the same way.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::BodyExt;
use kube::Client;
use kube::client::Body;
use openfunction_dapr::ops::leader::{LeaderSettings, LeaseFault, run_while_leader_reporting};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use common::fake_api::mock_client;

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/lease-ns/leases/test-lease";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/lease-ns/leases";

#[derive(Default)]
struct State {
    lease: Option<Value>,
    holder_owner: Option<String>,
    down: bool,
    hang: bool,
    /// The Lease's namespace does not exist: creating the Lease fails.
    no_namespace: bool,
    /// RBAC forbids every Lease request.
    forbidden: bool,
    rv: u64,
}

#[derive(Clone, Default)]
struct FakeLeases(Arc<Mutex<State>>);

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

fn status(code: u16, reason: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": reason, "reason": reason, "code": code}),
    )
}

impl FakeLeases {
    fn client(&self) -> Client {
        let fake = self.clone();
        mock_client(move |req| {
            let fake = fake.clone();
            async move {
                let (code, body) = fake.handle(req).await;
                (code, serde_json::to_vec(&body).unwrap())
            }
        })
    }

    fn holder(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap()
            .lease
            .as_ref()
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
    }

    fn set_down(&self, down: bool) {
        self.0.lock().unwrap().down = down;
    }

    fn set_hang(&self, hang: bool) {
        self.0.lock().unwrap().hang = hang;
    }

    fn set_no_namespace(&self, v: bool) {
        self.0.lock().unwrap().no_namespace = v;
    }

    fn set_forbidden(&self, v: bool) {
        self.0.lock().unwrap().forbidden = v;
    }

    async fn handle(&self, req: Request<Body>) -> (u16, Value) {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or_default().to_owned();
        let ct = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = req.into_body().collect().await.unwrap().to_bytes();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        let hang = self.0.lock().unwrap().hang;
        if hang {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return status(504, "Timeout");
        }
        let mut s = self.0.lock().unwrap();
        if s.down {
            return status(503, "ServiceUnavailable");
        }
        if s.forbidden {
            return (
                403,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "leases.coordination.k8s.io \"test-lease\" is forbidden: User \"system:serviceaccount:x:y\" cannot get resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"lease-ns\"",
                    "reason": "Forbidden", "details": {"name": "test-lease", "group": "coordination.k8s.io", "kind": "leases"}, "code": 403}),
            );
        }
        if s.no_namespace && method == "POST" {
            // what kube-apiserver answers for a create in a missing namespace
            return (
                404,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "namespaces \"lease-ns\" not found", "reason": "NotFound",
                    "details": {"name": "lease-ns", "kind": "namespaces"}, "code": 404}),
            );
        }
        s.rv += 1;
        let rv = s.rv.to_string();
        let manager = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("fieldManager="))
            .map(str::to_owned);
        match (method.as_str(), path.as_str()) {
            ("GET", LEASE) => match &s.lease {
                Some(l) => (200, l.clone()),
                None => status(404, "NotFound"),
            },
            ("POST", LEASES) => {
                if s.lease.is_some() {
                    return status(409, "AlreadyExists");
                }
                let mut l = body;
                l["metadata"]["namespace"] = json!("lease-ns");
                l["metadata"]["uid"] = json!("lease-uid");
                l["metadata"]["resourceVersion"] = json!(rv);
                s.lease = Some(l.clone());
                (201, l)
            }
            ("PATCH", LEASE) => {
                let Some(mut l) = s.lease.clone() else {
                    return status(404, "NotFound");
                };
                let new_holder = body["spec"].get("holderIdentity").cloned();
                if ct == "application/apply-patch+yaml" {
                    let Some(manager) = manager else {
                        return status(422, "Invalid");
                    };
                    if let Some(h) = &new_holder
                        && !h.is_null()
                    {
                        let current = l["spec"]["holderIdentity"].clone();
                        if let Some(owner) = &s.holder_owner
                            && *owner != manager
                            && current != *h
                        {
                            return status(409, "Conflict");
                        }
                        s.holder_owner = Some(manager);
                    }
                } else if let Some(h) = &new_holder {
                    s.holder_owner = if h.is_null() { None } else { manager };
                }
                merge(&mut l, &body);
                l["metadata"]["resourceVersion"] = json!(rv);
                s.lease = Some(l.clone());
                (200, l)
            }
            _ => status(405, "MethodNotAllowed"),
        }
    }
}

fn settings(identity: &str) -> LeaderSettings {
    LeaderSettings {
        lease_name: "test-lease".into(),
        namespace: "lease-ns".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(2),
        renew_grace: Duration::from_secs(1),
        request_timeout: Duration::from_millis(400),
    }
}

/// One replica: its work sets `running` while it runs.
struct Replica {
    running: Arc<AtomicBool>,
    terms: Arc<AtomicU32>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

fn replica(fake: &FakeLeases, identity: &str) -> Replica {
    replica_reporting(fake, identity, Arc::default())
}

/// Every fault report (`None`: the fault ended), in order.
type Faults = Arc<Mutex<Vec<Option<LeaseFault>>>>;

fn replica_reporting(fake: &FakeLeases, identity: &str, faults: Faults) -> Replica {
    let running = Arc::new(AtomicBool::new(false));
    let terms = Arc::new(AtomicU32::new(0));
    let (tx, rx) = oneshot::channel::<()>();
    let (r, t) = (running.clone(), terms.clone());
    let client = fake.client();
    let settings = settings(identity);
    let task = tokio::spawn(async move {
        run_while_leader_reporting(
            client,
            settings,
            move |stop: oneshot::Receiver<()>| {
                let (r, t) = (r.clone(), t.clone());
                async move {
                    assert!(!r.swap(true, Ordering::SeqCst), "two terms at once");
                    t.fetch_add(1, Ordering::SeqCst);
                    // stops when told, or when the elector is gone
                    let _ = stop.await;
                    r.store(false, Ordering::SeqCst);
                    Ok::<(), String>(())
                }
            },
            |_| {},
            move |fault: Option<&LeaseFault>| faults.lock().unwrap().push(fault.cloned()),
            async move {
                let _ = rx.await;
            },
        )
        .await
        .unwrap();
    });
    Replica {
        running,
        terms,
        shutdown: Some(tx),
        task,
    }
}

impl Replica {
    fn leads(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }
}

async fn wait_for(what: &str, limit: Duration, cond: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn a_replica_leads_and_releases_on_shutdown() {
    let fake = FakeLeases::default();
    let mut a = replica(&fake, "a");
    wait_for("leadership", Duration::from_secs(5), || a.leads()).await;
    assert_eq!(fake.holder().as_deref(), Some("a"));
    // it keeps the lease across several renewals
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(a.leads());
    assert_eq!(a.terms.load(Ordering::SeqCst), 1);
    assert_eq!(fake.holder().as_deref(), Some("a"));

    a.shutdown.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), &mut a.task)
        .await
        .expect("returns after shutdown")
        .unwrap();
    assert!(!a.leads(), "work stopped");
    assert_eq!(fake.holder(), None, "lease released");
}

#[tokio::test]
async fn only_one_leads_and_another_takes_over_when_it_dies() {
    let fake = FakeLeases::default();
    let a = replica(&fake, "a");
    let b = replica(&fake, "b");
    wait_for("a leader", Duration::from_secs(5), || {
        a.leads() || b.leads()
    })
    .await;
    // for a while, exactly one leads
    for _ in 0..100 {
        assert!(a.leads() ^ b.leads(), "exactly one leader");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let (leader, follower, name) = if a.leads() { (a, b, "b") } else { (b, a, "a") };
    // the leader dies without releasing the lease
    leader.task.abort();
    let _ = leader.task.await;
    wait_for("old work stopped", Duration::from_secs(1), || {
        !leader.running.load(Ordering::SeqCst)
    })
    .await;
    let took = wait_for("takeover", Duration::from_secs(5), || follower.leads()).await;
    // within one lease duration (2 s) after the last renewal, plus the
    // randomised wait (<= 1 s) and slack for a loaded machine
    assert!(
        took <= Duration::from_millis(3500),
        "takeover took {took:?}"
    );
    assert_eq!(fake.holder().as_deref(), Some(name));
    println!("takeover after {took:?} (lease duration 2 s)");
}

#[tokio::test]
async fn leader_stops_when_it_cannot_renew_and_comes_back() {
    let fake = FakeLeases::default();
    let a = replica(&fake, "a");
    wait_for("leadership", Duration::from_secs(5), || a.leads()).await;
    fake.set_down(true);
    // renewal is due 1 s before expiry; it fails at once: the work stops
    // before the lease (2 s after the last renewal) could be taken over
    let stopped = wait_for("step down", Duration::from_millis(2500), || !a.leads()).await;
    println!("stepped down {stopped:?} after the API went down");
    tokio::time::sleep(Duration::from_millis(500)).await;
    fake.set_down(false);
    wait_for("leads again", Duration::from_secs(10), || a.leads()).await;
    assert_eq!(a.terms.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn leader_stops_when_renewal_hangs() {
    let fake = FakeLeases::default();
    let a = replica(&fake, "a");
    let b = replica(&fake, "b");
    wait_for("a leader", Duration::from_secs(5), || {
        a.leads() || b.leads()
    })
    .await;
    fake.set_hang(true);
    // the request timeout (400 ms) bounds the renewal: the leader stops
    // within about one lease duration
    let stopped = wait_for("step down", Duration::from_millis(2500), || {
        !a.leads() && !b.leads()
    })
    .await;
    println!("stepped down {stopped:?} after the API started hanging");
}

#[tokio::test]
async fn a_missing_namespace_is_a_reported_fault_and_the_elector_keeps_trying() {
    let fake = FakeLeases::default();
    fake.set_no_namespace(true);
    let faults: Faults = Arc::default();
    let a = replica_reporting(&fake, "a", faults.clone());
    wait_for("the fault is reported", Duration::from_secs(5), || {
        !faults.lock().unwrap().is_empty()
    })
    .await;
    let first = faults.lock().unwrap()[0].clone().expect("a fault");
    assert_eq!(first.reason, "namespace_missing");
    assert!(
        first.message.contains("Lease lease-ns/test-lease")
            && first
                .message
                .contains("namespace \"lease-ns\" does not exist"),
        "{}",
        first.message
    );
    assert!(!a.leads());
    // reported once while it lasts, not at every retry
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        faults.lock().unwrap().len(),
        1,
        "{:?}",
        faults.lock().unwrap()
    );
    // the namespace is created: the elector, still trying, takes the Lease
    fake.set_no_namespace(false);
    wait_for("leads", Duration::from_secs(40), || a.leads()).await;
    assert_eq!(
        faults.lock().unwrap().last(),
        Some(&None),
        "the fault ended"
    );
    assert_eq!(fake.holder().as_deref(), Some("a"));
}

#[tokio::test]
async fn forbidden_is_a_reported_fault() {
    let fake = FakeLeases::default();
    fake.set_forbidden(true);
    let faults: Faults = Arc::default();
    let a = replica_reporting(&fake, "a", faults.clone());
    wait_for("the fault is reported", Duration::from_secs(5), || {
        !faults.lock().unwrap().is_empty()
    })
    .await;
    let f = faults.lock().unwrap()[0].clone().expect("a fault");
    assert_eq!(f.reason, "forbidden");
    assert!(f.message.contains("forbidden"), "{}", f.message);
    assert!(!a.leads());
    fake.set_forbidden(false);
    wait_for("leads", Duration::from_secs(40), || a.leads()).await;
    assert_eq!(faults.lock().unwrap().last(), Some(&None));
}

#[tokio::test]
async fn another_holder_is_no_fault() {
    let fake = FakeLeases::default();
    let (fa, fb): (Faults, Faults) = (Arc::default(), Arc::default());
    let a = replica_reporting(&fake, "a", fa.clone());
    let b = replica_reporting(&fake, "b", fb.clone());
    wait_for("a leader", Duration::from_secs(5), || {
        a.leads() || b.leads()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(a.leads() ^ b.leads());
    assert!(fa.lock().unwrap().is_empty(), "{:?}", fa.lock().unwrap());
    assert!(fb.lock().unwrap().is_empty(), "{:?}", fb.lock().unwrap());
}
