//! The webhook's store and the controller read `core.openfunction.io` in
//! the version the API server serves (`v1beta2` where served, else
//! `v1beta1`), never one that needs a conversion, and switch when the
//! served versions change. Against the fake API server, which serves the
//! versions it is told to and converts nothing.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fake_api::{Call, FakeApi};
use common::harness::{function_document, v1beta2_document};
use openfunction_dapr::controller::{self, ControllerSettings};
use openfunction_dapr::model::func_context::func_context_v1beta2;
use openfunction_dapr::model::v1beta2::{ApiVersion, VersionObserver, read_function};
use openfunction_dapr::model::workload::Owner;
use openfunction_dapr::webhook::store::{FunctionStore, Lookup};
use serde_json::{Value, json};

const NS: &str = "demo";

#[derive(Default)]
struct Recorded(Mutex<Vec<(&'static str, &'static str, Option<ApiVersion>)>>);

impl VersionObserver for Recorded {
    fn version_in_use(&self, c: &'static str, r: &'static str, v: Option<ApiVersion>) {
        self.0.lock().unwrap().push((c, r, v));
    }
}

impl Recorded {
    fn last(&self, component: &str, resource: &str) -> Option<Option<ApiVersion>> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(c, r, _)| *c == component && *r == resource)
            .map(|(_, _, v)| *v)
    }
}

fn hand_written(name: &str) -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/v1beta2/functions.yaml"
    );
    serde_saphyr::from_multiple::<Value>(&std::fs::read_to_string(path).unwrap())
        .unwrap()
        .into_iter()
        .find(|d| d["metadata"]["name"] == name)
        .unwrap()
}

fn path(version: &str, plural: &str, name: &str) -> String {
    format!("/apis/core.openfunction.io/{version}/namespaces/{NS}/{plural}/{name}")
}

async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what}: not within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The controller, without leader election, looking at the served
/// versions every second.
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), controller::Error>>,
}

impl Running {
    fn start(client: kube::Client) -> Self {
        let settings = ControllerSettings {
            identity: Some("controller-0".into()),
            leader_elect: false,
            api_discovery_seconds: 1,
            ..Default::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(controller::run(client, settings, async move {
            let _ = stopped.await;
        }));
        Running { stop, task }
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("run returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

/// Requests for Functions or Servings in `version` (discovery aside).
fn object_calls<'a>(calls: &'a [Call], version: &str) -> Vec<&'a Call> {
    calls
        .iter()
        .filter(|c| {
            c.path
                .starts_with(&format!("/apis/core.openfunction.io/{version}/"))
        })
        .collect()
}

#[tokio::test]
async fn store_reads_v1beta2_where_served_with_servings_and_live_gets() {
    let (fake, client) = FakeApi::start();
    fake.serve_openfunction_versions(&["v1beta1", "v1beta2"]);
    fake.put(
        &path("v1beta2", "functions", "cron-to-kafka"),
        hand_written("cron-to-kafka"),
    );
    // a v1beta2 Serving as OpenFunction 1.x creates it: labelled with its Function
    fake.put(
        &path("v1beta2", "servings", "serving-x7k2p"),
        json!({"apiVersion": "core.openfunction.io/v1beta2", "kind": "Serving",
            "metadata": {"name": "serving-x7k2p", "namespace": NS,
                "labels": {"openfunction.io/function": "cron-to-kafka"}},
            "spec": {"image": "i", "triggers": {"dapr": [{"name": "cron"}]}}}),
    );
    let observer = Arc::new(Recorded::default());
    let (store, driver) = FunctionStore::watch_with(
        client,
        None,
        Duration::from_millis(500),
        observer.clone(),
        Duration::from_millis(100),
    )
    .await;
    let driver = tokio::spawn(driver);
    tokio::time::timeout(Duration::from_secs(20), store.ready())
        .await
        .expect("caches synced");
    assert_eq!(
        observer.last("webhook", "functions"),
        Some(Some(ApiVersion::V1beta2))
    );
    assert_eq!(
        observer.last("webhook", "servings"),
        Some(Some(ApiVersion::V1beta2))
    );

    // a pod labelled only with its Serving finds the Function through it
    let Lookup::Found { function, .. } = store
        .lookup(NS, Owner::Serving("serving-x7k2p"))
        .await
        .unwrap()
    else {
        panic!("not found through the Serving");
    };
    assert_eq!(function.read_version(), ApiVersion::V1beta2);
    assert!(func_context_v1beta2("cron-to-kafka", &function.spec).is_some());

    // misses are looked up live, in v1beta2
    for owner in [Owner::Function("ghost"), Owner::Serving("ghost-serving")] {
        assert!(matches!(
            store.lookup(NS, owner).await.unwrap(),
            Lookup::NotFound(_)
        ));
    }
    let calls = fake.calls();
    let gets: Vec<&str> = object_calls(&calls, "v1beta2")
        .into_iter()
        .filter(|c| !c.query.contains_key("watch") && c.path.contains("ghost"))
        .map(|c| c.path.as_str())
        .collect();
    assert_eq!(
        gets,
        [
            path("v1beta2", "functions", "ghost"),
            path("v1beta2", "servings", "ghost-serving")
        ]
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
    );
    // nothing asked of v1beta1, which would need OpenFunction's conversion
    assert!(object_calls(&calls, "v1beta1").is_empty());
    driver.abort();
}

#[tokio::test]
async fn store_switches_to_v1beta2_when_it_becomes_served() {
    let (fake, client) = FakeApi::start();
    // an OpenFunction 0.8 cluster: v1beta1 only
    let v1: Value = serde_json::to_value(common::harness::cron()).unwrap();
    let fpath = |v| common::harness::function_path_in(v, common::harness::CRON);
    fake.put(&fpath(ApiVersion::V1beta1), v1.clone());
    let observer = Arc::new(Recorded::default());
    let (store, driver) = FunctionStore::watch_with(
        client,
        None,
        Duration::from_millis(500),
        observer.clone(),
        Duration::from_millis(100),
    )
    .await;
    let driver = tokio::spawn(driver);
    tokio::time::timeout(Duration::from_secs(20), store.ready())
        .await
        .unwrap();
    assert_eq!(
        observer.last("webhook", "functions"),
        Some(Some(ApiVersion::V1beta1))
    );
    let cached = |v| {
        store
            .cached("ns", common::harness::CRON)
            .is_some_and(|f| f.read_version() == v)
    };
    eventually("the v1beta1 Function cached", || {
        cached(ApiVersion::V1beta1)
    })
    .await;

    // OpenFunction 1.x installed: v1beta2 served (and stored)
    fake.serve_openfunction_versions(&["v1beta1", "v1beta2"]);
    fake.put(&fpath(ApiVersion::V1beta2), v1beta2_document(&v1));
    eventually("the store reading v1beta2", || cached(ApiVersion::V1beta2)).await;
    assert_eq!(
        observer.last("webhook", "functions"),
        Some(Some(ApiVersion::V1beta2))
    );
    driver.abort();
}

#[tokio::test]
async fn controller_switches_and_owns_through_the_version_it_reads() {
    let (fake, client) = FakeApi::start();
    let f = common::harness::cron();
    let fpath = |v| common::harness::function_path_in(v, common::harness::CRON);
    fake.put(&fpath(ApiVersion::V1beta1), function_document(&f));
    let running = Running::start(client);
    let proxy = common::harness::deploy_path(&format!("{}-dapr-proxy", common::harness::CRON));
    let owner_version = || {
        fake.get(&proxy)
            .map(|d| d["metadata"]["ownerReferences"][0]["apiVersion"].clone())
    };
    eventually("the proxy owned through v1beta1", || {
        owner_version() == Some(json!("core.openfunction.io/v1beta1"))
    })
    .await;

    fake.serve_openfunction_versions(&["v1beta1", "v1beta2"]);
    let v2 = read_function(v1beta2_document(&function_document(&f))).unwrap();
    fake.put(&fpath(ApiVersion::V1beta2), function_document(&v2));
    eventually("the proxy owned through v1beta2", || {
        owner_version() == Some(json!("core.openfunction.io/v1beta2"))
    })
    .await;
    // and it now carries the v1beta2 context too
    let env = fake.get(&proxy).unwrap()["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "FUNC_CONTEXT_V1BETA2"),
        "{env}"
    );
    running.stop().await;
}

#[tokio::test]
async fn controller_defers_to_openfunctions_proxy_once_the_serving_crd_appears() {
    // No Serving CRD at start (OpenFunction installed later): the
    // controller notices it on its next discovery and from then on defers
    // to OpenFunction's proxy, as it would have from the start.
    let (fake, client) = FakeApi::start();
    fake.serve_servings(false);
    let f = common::harness::cron();
    let ns = common::harness::NS;
    let fpath = common::harness::function_path_in(ApiVersion::V1beta1, common::harness::CRON);
    fake.put(&fpath, function_document(&f));
    let running = Running::start(client);
    let ours = common::harness::deploy_path(&format!("{}-dapr-proxy", common::harness::CRON));
    eventually("our proxy", || fake.get(&ours).is_some()).await;

    let serving = "cron-serving-7xk2p";
    fake.put(
        &format!("/apis/core.openfunction.io/v1beta1/namespaces/{ns}/servings/{serving}"),
        json!({"apiVersion": "core.openfunction.io/v1beta1", "kind": "Serving",
            "metadata": {"name": serving, "namespace": ns, "uid": "serving-uid",
                "labels": {"openfunction.io/function": common::harness::CRON}}}),
    );
    let theirs = format!("{serving}-proxy-deployment-v100-x7k2p");
    fake.put(
        &common::harness::deploy_path(&theirs),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": theirs, "namespace": ns,
                "labels": {"openfunction.io/managed": "true", "openfunction.io/proxy": serving},
                "ownerReferences": [{"apiVersion": "core.openfunction.io/v1beta1", "kind": "Serving",
                    "name": serving, "uid": "serving-uid", "controller": true}]},
            "spec": {"selector": {"matchLabels": {"openfunction.io/proxy": serving}},
                "template": {"metadata": {"labels": {"openfunction.io/proxy": serving}},
                    "spec": {"containers": [{"name": "dapr-proxy", "image": "openfunction/dapr-proxy:v0.1.0"}]}}}}),
    );
    // Still without the CRD, their Deployment names no Serving we can read:
    // ours stays.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(fake.get(&ours).is_some(), "no Serving CRD yet: ours stays");

    fake.serve_servings(true);
    eventually("ours removed in favour of OpenFunction's", || {
        fake.get(&ours).is_none()
    })
    .await;
    assert!(
        fake.get(&common::harness::deploy_path(&theirs)).is_some(),
        "theirs untouched"
    );
    running.stop().await;
}
