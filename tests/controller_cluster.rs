//! Opt-in tests against a real cluster:
//!
//! ```sh
//! KUBECONFIG=~/.kube/config cargo test --test controller_cluster -- --ignored --nocapture
//! ```
//!
//! They need `KUBECONFIG` pointing at a cluster where the user may create
//! namespaces, CRDs (once), Deployments, Services, Leases and Events, with a
//! controller-manager running (garbage collection). Without a reachable
//! cluster they print that they were skipped and pass.
//!
//! Each test works in a fresh random namespace, runs the controller
//! in-process (restricted to that namespace, with leader election on a
//! Lease there), and deletes the namespace at the end, also on failure.
//! The Function CRD of OpenFunction v0.8.0 is installed when missing (from
//! `$OPENFUNCTION_CRD`, else `$OFD_FIXTURES/openfunction-v0.8.0/crds/`)
//! and left in place. No pod needs to run: only objects are checked.
//!
//! Functions are written and read in the version the product reads
//! (`v1beta2` where served), so the same scenarios are the v1beta2 run on a
//! cluster with OpenFunction v1.2.0's CRD: install it first, or let the
//! tests install it with its conversion webhook switched off (none needs to
//! be reachable):
//!
//! ```sh
//! OPENFUNCTION_CRD=$OFD_FIXTURES/openfunction-v1.2.0/crds/functions.core.openfunction.io.yaml \
//!   KUBECONFIG=~/.kube/config cargo test --test controller_cluster -- --ignored --nocapture
//! ```

mod common;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::{Client, ResourceExt};
use openfunction_dapr::controller::{self, ControllerSettings};
use openfunction_dapr::model::function::Function;
use openfunction_dapr::model::v1beta2::{ApiVersion, GROUP};
use openfunction_dapr::ops::discovery::version_to_read_retrying;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use common::cluster::{cluster, create_function, functions_api, random_suffix, wait_for};
use common::harness::fixture_function;

const CRD_NAME: &str = "functions.core.openfunction.io";
/// Creating objects, the controller starting and acting.
const ACT: Duration = Duration::from_secs(90);
/// Garbage collection after a Function is deleted.
const GC: Duration = Duration::from_secs(180);

fn crd_path() -> std::path::PathBuf {
    std::env::var_os("OPENFUNCTION_CRD")
        .map(Into::into)
        .unwrap_or_else(|| {
            common::fixtures::root()
                .join("openfunction-v0.8.0/crds/functions.core.openfunction.io.yaml")
        })
}

/// Install the Function CRD when missing and wait until it is served.
async fn ensure_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    if crds.get_opt(CRD_NAME).await.unwrap().is_none() {
        let path = crd_path();
        println!("installing the Function CRD from {}", path.display());
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; set OPENFUNCTION_CRD", path.display()));
        let mut doc: Value = serde_saphyr::from_multiple::<Value>(&text)
            .unwrap()
            .into_iter()
            .find(|d| d["kind"] == "CustomResourceDefinition")
            .expect("a CRD in the file");
        // the release's conversion webhook is not installed here; every
        // Function is written and read in one version, so none is needed
        doc["spec"]["conversion"] = json!({"strategy": "None"});
        let obj: DynamicObject = serde_json::from_value(doc).unwrap();
        let dynamic: Api<DynamicObject> = Api::all_with(
            client.clone(),
            &ApiResource::erase::<CustomResourceDefinition>(&()),
        );
        match dynamic.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("creating the CRD: {e}"),
        }
    }
    wait_for("the Function CRD to be established", ACT, || async {
        let crd = crds.get(CRD_NAME).await.ok()?;
        crd.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
}

/// A namespace with the controller running in it.
struct Env {
    client: Client,
    ns: String,
    identity: String,
    /// The Function version the product reads on this cluster.
    version: ApiVersion,
    stop: Option<oneshot::Sender<()>>,
    controller: Option<tokio::task::JoinHandle<Result<(), controller::Error>>>,
}

impl Env {
    async fn start(client: Client, prefix: &str) -> Env {
        let ns = format!("{prefix}-{}", random_suffix());
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": ns, "labels": {"openfunction-dapr/test": "controller"}}
                }))
                .unwrap(),
            )
            .await
            .unwrap();
        println!("namespace {ns}");
        let version = version_to_read_retrying(&client, "functions")
            .await
            .unwrap_or_default();
        println!("Functions read and written as {version}");
        let identity = format!("test-{}", random_suffix());
        let settings = ControllerSettings {
            namespace: Some(ns.clone()),
            lease_namespace: ns.clone(),
            identity: Some(identity.clone()),
            resync_seconds: 60,
            ..Default::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let controller = tokio::spawn(controller::run(client.clone(), settings, async move {
            let _ = stopped.await;
        }));
        Env {
            client,
            ns,
            identity,
            version,
            stop: Some(stop),
            controller: Some(controller),
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Stop the controller and delete the namespace.
    async fn cleanup(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(c) = self.controller.take() {
            match tokio::time::timeout(Duration::from_secs(30), c).await {
                Ok(Ok(Ok(()))) => {}
                other => println!("controller ended with {other:?}"),
            }
        }
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        match namespaces
            .delete(&self.ns, &DeleteParams::background())
            .await
        {
            Ok(_) => println!("deleted namespace {}", self.ns),
            Err(e) => println!("could not delete namespace {}: {e}", self.ns),
        }
    }

    /// Functions of this namespace in [`Env::version`].
    fn functions(&self) -> Api<DynamicObject> {
        functions_api(&self.client, &self.ns, self.version)
    }

    async fn create_function(&self, file: &str, name: &str) -> Function {
        create_function(
            &self.client,
            &self.ns,
            self.version,
            &fixture_function(file, name),
        )
        .await
    }

    async fn set_mode(&self, name: &str, mode: &str) {
        // `spec.serving.annotations` in both versions.
        let patch = json!({"spec": {"serving": {"annotations": {
            "openfunction.io/dapr-service-mode": mode
        }}}});
        self.functions()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    async fn delete_function(&self, name: &str) {
        let api = self.functions();
        api.delete(name, &DeleteParams::background()).await.unwrap();
        wait_for(&format!("Function {name} to be gone"), ACT, || async {
            matches!(api.get_opt(name).await, Ok(None)).then_some(())
        })
        .await;
    }

    async fn wait_present<K>(&self, name: &str, limit: Duration) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api = self.api::<K>();
        let what = format!("{} {name} to exist", K::kind(&()));
        wait_for(&what, limit, || async {
            api.get_opt(name)
                .await
                .ok()
                .flatten()
                .filter(|o| o.meta().deletion_timestamp.is_none())
        })
        .await
    }

    async fn wait_absent<K>(&self, name: &str, limit: Duration)
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api = self.api::<K>();
        let what = format!("{} {name} to be gone", K::kind(&()));
        wait_for(&what, limit, || async {
            matches!(api.get_opt(name).await, Ok(None)).then_some(())
        })
        .await
    }
}

/// Run `scenario` in a fresh namespace with the controller; always clean
/// up (stop the controller, delete the namespace), then re-raise a failure.
async fn run_scenario(prefix: &str, scenario: for<'a> fn(&'a Env) -> BoxFuture<'a, ()>) {
    let Some(client) = cluster().await else {
        return;
    };
    ensure_crd(&client).await;
    let mut env = Env::start(client, prefix).await;
    let outcome = AssertUnwindSafe(scenario(&env)).catch_unwind().await;
    env.cleanup().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn owner_uid<K: kube::Resource>(o: &K) -> Option<String> {
    o.meta()
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true) && r.kind == "Function")
        .map(|r| r.uid.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: KUBECONFIG=... cargo test -- --ignored"]
async fn standalone_lifecycle() {
    run_scenario("ofd-lifecycle", |env| lifecycle(env).boxed()).await;
}

async fn lifecycle(env: &Env) {
    let name = "cron-input-kafka-output";
    let proxy = format!("{name}-dapr-proxy");

    // only one replica reconciles: this one holds the Lease
    let leases = env.api::<Lease>();
    wait_for("the controller to hold the Lease", ACT, || async {
        let l = leases
            .get_opt("openfunction-dapr-controller")
            .await
            .ok()??;
        (l.spec?.holder_identity? == env.identity).then_some(())
    })
    .await;

    // standalone async function: proxy Deployment and function Service
    let f = env
        .create_function("cron-input-kafka-output.yaml", name)
        .await;
    let fn_uid = f.uid().unwrap();
    let d: Deployment = env.wait_present(&proxy, ACT).await;
    let svc: Service = env.wait_present(name, ACT).await;
    assert_eq!(owner_uid(&d).as_deref(), Some(fn_uid.as_str()));
    assert_eq!(owner_uid(&svc).as_deref(), Some(fn_uid.as_str()));
    // owned through the version the controller reads
    assert_eq!(
        d.owner_references()[0].api_version,
        env.version.api_version()
    );
    assert_eq!(d.labels()["openfunction.io/proxy"], name);
    let pod = d.spec.as_ref().unwrap().template.clone();
    assert_eq!(
        pod.metadata.unwrap().annotations.unwrap()["dapr.io/enabled"],
        "true"
    );
    let container = &pod.spec.unwrap().containers[0];
    assert_eq!(container.name, "dapr-proxy");
    let env_names: Vec<&str> = container
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert!(env_names.contains(&"FUNC_CONTEXT"), "{env_names:?}");
    assert_eq!(
        env_names.contains(&"FUNC_CONTEXT_V1BETA2"),
        env.version == ApiVersion::V1beta2,
        "{env_names:?}"
    );
    let s = svc.spec.as_ref().unwrap();
    assert_eq!(s.cluster_ip.as_deref(), Some("None"));
    assert_eq!(
        s.selector.as_ref().unwrap()["openfunction.io/function"],
        name
    );
    // managed fields: one field manager for everything the controller applied
    assert!(
        d.metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|m| m.manager.as_deref() == Some("openfunction-dapr")
                && m.operation.as_deref() == Some("Apply"))
    );

    // an Event on the Function
    let events = env.api::<Event>();
    wait_for("a ProxyCreated Event", ACT, || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("ProxyCreated")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
            })
            .then_some(())
    })
    .await;

    // a deleted proxy is put back
    let deployments = env.api::<Deployment>();
    let old_uid = d.uid().unwrap();
    deployments
        .delete(&proxy, &DeleteParams::background())
        .await
        .unwrap();
    wait_for("the deleted proxy to be recreated", ACT, || async {
        let d = deployments.get_opt(&proxy).await.ok()??;
        (d.uid()? != old_uid && d.metadata.deletion_timestamp.is_none()).then_some(())
    })
    .await;

    // a changed proxy is put back
    deployments
        .patch(
            &proxy,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    wait_for("the scaled proxy to be repaired", ACT, || async {
        let d = deployments.get_opt(&proxy).await.ok()??;
        (d.spec?.replicas? == 1).then_some(())
    })
    .await;

    // a function Deployment, as admitted in standalone mode
    let workload: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "cron-fn", "labels": {"openfunction.io/function": name}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "cron-fn"}},
            "template": {
                "metadata": {"labels": {"app": "cron-fn", "openfunction.io/function": name},
                             "annotations": {"dapr.io/enabled": "false"}},
                "spec": {"containers": [{"name": "function", "image": "registry.k8s.io/pause:3.9",
                    "env": [{"name": "DAPR_HOST",
                             "value": format!("{name}-{}-dapr.{}.svc.cluster.local", env.ns, env.ns)}]}]}
            }
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &workload)
        .await
        .unwrap();

    // to sidecar: proxy and Service removed, the function Deployment rolled
    env.set_mode(name, "sidecar").await;
    env.wait_absent::<Deployment>(&proxy, ACT).await;
    env.wait_absent::<Service>(name, ACT).await;
    wait_for(
        "the function Deployment to be rolled to sidecar",
        ACT,
        || async {
            let d = deployments.get_opt("cron-fn").await.ok()??;
            let ann = d.spec?.template.metadata?.annotations?;
            (ann.get("openfunction.io/dapr-mode")? == "sidecar").then_some(())
        },
    )
    .await;

    // back to standalone: recreated and rolled again
    env.set_mode(name, "standalone").await;
    let _: Deployment = env.wait_present(&proxy, ACT).await;
    let _: Service = env.wait_present(name, ACT).await;
    wait_for(
        "the function Deployment to be rolled to standalone",
        ACT,
        || async {
            let d = deployments.get_opt("cron-fn").await.ok()??;
            let ann = d.spec?.template.metadata?.annotations?;
            (ann.get("openfunction.io/dapr-mode")? == "standalone").then_some(())
        },
    )
    .await;

    // deleting the Function: garbage collection removes the proxy
    env.delete_function(name).await;
    env.wait_absent::<Deployment>(&proxy, GC).await;
    env.wait_absent::<Service>(name, GC).await;
    // the user's function Deployment is not owned by the Function: it stays
    assert!(deployments.get_opt("cron-fn").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: KUBECONFIG=... cargo test -- --ignored"]
async fn only_standalone_functions_get_a_proxy() {
    run_scenario("ofd-modes", |env| modes(env).boxed()).await;
}

async fn modes(env: &Env) {
    // a foreign Deployment with the name the sidecar function's proxy would have
    let deployments = env.api::<Deployment>();
    let foreign: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "function-sample-sidecar-dapr-proxy"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "foreign"}},
            "template": {"metadata": {"labels": {"app": "foreign"}},
                         "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.9"}]}}
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();

    env.create_function("serving-only-modes.yaml", "function-sample-sidecar")
        .await;
    env.create_function("serving-only-modes.yaml", "function-sample-disabled")
        .await;
    env.create_function("serving-only-modes.yaml", "function-sample-standalone")
        .await;
    // knative standalone: a proxy, no Service
    let _: Deployment = env
        .wait_present("function-sample-standalone-dapr-proxy", ACT)
        .await;
    // give the controller time to act on the others (it handles them together)
    tokio::time::sleep(Duration::from_secs(5)).await;
    let services = env.api::<Service>();
    assert!(
        services
            .get_opt("function-sample-standalone")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        deployments
            .get_opt("function-sample-disabled-dapr-proxy")
            .await
            .unwrap()
            .is_none()
    );
    let foreign = deployments
        .get_opt("function-sample-sidecar-dapr-proxy")
        .await
        .unwrap()
        .expect("the foreign Deployment is never deleted");
    assert!(foreign.metadata.owner_references.is_none());
    assert!(
        !foreign
            .labels()
            .contains_key("app.kubernetes.io/managed-by")
    );

    // switching the sidecar function to standalone: the foreign Deployment
    // blocks the proxy; it is reported, not taken over
    env.set_mode("function-sample-sidecar", "standalone").await;
    let events = env.api::<Event>();
    wait_for("a ProxyConflict Event", ACT, || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("ProxyConflict"))
            .then_some(())
    })
    .await;
    let still = deployments
        .get_opt("function-sample-sidecar-dapr-proxy")
        .await
        .unwrap()
        .unwrap();
    assert!(still.metadata.owner_references.is_none());
    assert_eq!(
        still.spec.unwrap().template.spec.unwrap().containers[0].name,
        "c"
    );
}

/// A Serving CRD for clusters without OpenFunction (any object accepted),
/// so the test can play OpenFunction's controller; an existing one is kept.
async fn ensure_serving_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = "servings.core.openfunction.io";
    if crds.get_opt(name).await.unwrap().is_none() {
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {"group": "core.openfunction.io", "scope": "Namespaced",
                "names": {"plural": "servings", "singular": "serving", "kind": "Serving"},
                "versions": [{"name": "v1beta1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object",
                        "x-kubernetes-preserve-unknown-fields": true}}}]}
        }))
        .unwrap();
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("creating the Serving CRD: {e}"),
        }
    }
    wait_for("the Serving CRD to be established", ACT, || async {
        let crd = crds.get(name).await.ok()?;
        crd.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: KUBECONFIG=... cargo test -- --ignored"]
async fn no_second_proxy_next_to_openfunctions() {
    // The Serving CRD must be there before the controller starts (it
    // discovers the served Serving version at start).
    if let Some(client) = cluster().await {
        ensure_serving_crd(&client).await;
    }
    run_scenario("ofd-coexist", |env| coexist(env).boxed()).await;
}

async fn coexist(env: &Env) {
    use openfunction_dapr::model::v1beta2::VERSIONS;
    let name = "cron-input-kafka-output";
    let proxy = format!("{name}-dapr-proxy");
    env.create_function("cron-input-kafka-output.yaml", name)
        .await;
    env.wait_present::<Deployment>(&proxy, ACT).await;

    // Play OpenFunction's controller (CreateDaprProxy, v0.8.0 – v1.2.0): a
    // Serving of the Function and its proxy Deployment.
    let served = openfunction_dapr::ops::discovery::served_versions(
        &env.client,
        GROUP,
        "servings",
        &VERSIONS,
    )
    .await
    .unwrap();
    let version = ApiVersion::choose(served).expect("a served Serving version");
    let servings: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        &env.ns,
        &ApiResource {
            group: GROUP.into(),
            version: version.as_str().into(),
            api_version: version.api_version().into(),
            kind: "Serving".into(),
            plural: "servings".into(),
        },
    );
    let serving: DynamicObject = serde_json::from_value(json!({
        "apiVersion": version.api_version(), "kind": "Serving",
        "metadata": {"name": "serving-t1", "labels": {"openfunction.io/function": name}},
        "spec": {}
    }))
    .unwrap();
    let serving = servings
        .create(&PostParams::default(), &serving)
        .await
        .unwrap();
    let upstream = "serving-t1-proxy-deployment-v100-abcde";
    let deploy: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": upstream,
            "labels": {"openfunction.io/managed": "true", "openfunction.io/proxy": "serving-t1"},
            "ownerReferences": [{"apiVersion": version.api_version(), "kind": "Serving",
                "name": "serving-t1", "uid": serving.uid().unwrap(), "controller": true,
                "blockOwnerDeletion": true}]},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"openfunction.io/proxy": "serving-t1"}},
            "template": {"metadata": {"labels": {"openfunction.io/proxy": "serving-t1"}},
                "spec": {"containers": [{"name": "dapr-proxy", "image": "openfunction/dapr-proxy:v0.1.0"}]}}}
    }))
    .unwrap();
    env.api::<Deployment>()
        .create(&PostParams::default(), &deploy)
        .await
        .unwrap();

    // ours goes, theirs stays, an Event names theirs
    env.wait_absent::<Deployment>(&proxy, ACT).await;
    let events = env.api::<Event>();
    wait_for("a ProxyDeferred Event", ACT, || async {
        events
            .list(&Default::default())
            .await
            .ok()?
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("ProxyDeferred")
                    && e.note.as_deref().is_some_and(|n| n.contains(upstream))
            })
            .then_some(())
    })
    .await;
    assert!(
        env.api::<Deployment>()
            .get_opt(upstream)
            .await
            .unwrap()
            .is_some()
    );

    // OpenFunction's proxy goes: ours comes back
    env.api::<Deployment>()
        .delete(upstream, &DeleteParams::default())
        .await
        .unwrap();
    env.wait_present::<Deployment>(&proxy, ACT).await;
}
