//! Opt-in: `check` against a real cluster, on a healthy and on a broken
//! setup.
//!
//! ```sh
//! KUBECONFIG=~/.kube/config cargo test --test check_cluster -- --ignored --nocapture
//! ```
//!
//! Needs the Function CRD installed (run the `controller_cluster` tests once,
//! or `kubectl apply -k manifests/crd`) and rights to create namespaces,
//! MutatingWebhookConfigurations, Functions, Deployments and Leases. In a
//! fresh namespace it runs the controller in-process, registers a webhook
//! configuration of its own (a unique name, only that namespace,
//! `failurePolicy: Ignore`, a `url` on 127.0.0.1 served by the test), and
//! removes both at the end. Without a reachable cluster it prints that it
//! was skipped and passes.

mod common;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use base64::Engine;
use futures::FutureExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use openfunction_dapr::check::{self, CheckOptions, Report, Status};
use openfunction_dapr::controller::{self, ControllerSettings};
use openfunction_dapr::ops::tls::generate_ca_and_cert;
use serde_json::{Value, json};

use common::cluster::{cluster, random_suffix, wait_for};
use common::harness::fixture_function;
use common::webhook::tls_presenting;

const ACT: Duration = Duration::from_secs(90);

/// The shipped configuration, renamed, limited to `ns`, failing open, its
/// entries calling `url` with `ca` as caBundle.
fn test_config(name: &str, ns: &str, url: &str, ca: &str) -> MutatingWebhookConfiguration {
    let mut c = serde_json::to_value(check::shipped_config().unwrap()).unwrap();
    c["metadata"] = json!({"name": name, "labels": {"openfunction-dapr/test": "check"}});
    for w in c["webhooks"].as_array_mut().unwrap() {
        w["clientConfig"] = json!({"url": url,
            "caBundle": base64::engine::general_purpose::STANDARD.encode(ca)});
        w["failurePolicy"] = json!("Ignore");
        w["namespaceSelector"] = json!({"matchLabels": {"kubernetes.io/metadata.name": ns}});
    }
    serde_json::from_value(c).unwrap()
}

fn statuses<'a>(report: &'a Report, check: &str) -> Vec<(Status, &'a str)> {
    report
        .findings
        .iter()
        .filter(|f| f.check == check)
        .map(|f| (f.status, f.message.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: KUBECONFIG=... cargo test -- --ignored"]
async fn check_on_a_healthy_and_a_broken_setup() {
    let Some(client) = cluster().await else {
        return;
    };
    let ns = format!("ofd-check-{}", random_suffix());
    let config_name = format!("00-ofd-check-{}", random_suffix());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"openfunction-dapr/test": "check"}}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let identity = format!("check-test-{}", random_suffix());
    let settings = ControllerSettings {
        namespace: Some(ns.clone()),
        lease_namespace: ns.clone(),
        identity: Some(identity.clone()),
        ..Default::default()
    };
    let controller = tokio::spawn(controller::run(client.clone(), settings, async move {
        let _ = stopped.await;
    }));
    let outcome = AssertUnwindSafe(scenario(&client, &ns, &config_name, &identity))
        .catch_unwind()
        .await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), controller).await;
    let _ = configs.delete(&config_name, &DeleteParams::default()).await;
    let _ = namespaces.delete(&ns, &DeleteParams::background()).await;
    println!("removed {config_name} and namespace {ns}");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A TLS server on 127.0.0.1 with a certificate of a fresh CA: its port
/// and that CA.
async fn tls_server() -> (u16, String) {
    let certs = generate_ca_and_cert(&[], true).unwrap();
    (
        tls_presenting(&certs.cert_pem, &certs.key_pem).await,
        certs.ca_pem,
    )
}

async fn scenario(client: &Client, ns: &str, config_name: &str, identity: &str) {
    let (port, ca) = tls_server().await;
    let url = format!("https://127.0.0.1:{port}/mutate");
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    configs
        .create(
            &PostParams::default(),
            &test_config(config_name, ns, &url, &ca),
        )
        .await
        .unwrap();
    // in the version the product reads (v1beta2 on OpenFunction 1.2)
    let version = openfunction_dapr::ops::discovery::version_to_read_retrying(client, "functions")
        .await
        .unwrap_or_default();
    common::cluster::create_function(
        client,
        ns,
        version,
        &fixture_function("serving-only-modes.yaml", "function-sample-standalone"),
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    wait_for("the proxy Deployment", ACT, || async {
        deployments
            .get_opt("function-sample-standalone-dapr-proxy")
            .await
            .ok()
            .flatten()
    })
    .await;
    let opts = CheckOptions {
        namespace: Some(ns.to_owned()),
        webhook_config: config_name.to_owned(),
        cert_secret: "unused".into(),
        lease_namespace: ns.to_owned(),
        lease_name: openfunction_dapr::ops::leader::DEFAULT_LEASE_NAME.into(),
        install_namespace: ns.to_owned(),
        cluster_domain: "cluster.local".into(),
        grpc_endpoint_form: Default::default(),
    };
    let report = wait_for("the Lease to be held", ACT, || async {
        let r = check::run(client, &opts).await;
        (statuses(&r, "controller.lease").first()?.0 == Status::Ok).then_some(r)
    })
    .await;
    println!("healthy:\n{}", report.to_text());
    assert!(report.unreachable.is_none());
    assert_eq!(statuses(&report, "api.server")[0].0, Status::Ok);
    assert_eq!(statuses(&report, "api.function-crd")[0].0, Status::Ok);
    assert!(
        statuses(&report, "controller.lease")[0]
            .1
            .contains(identity)
    );
    for (status, message) in statuses(&report, "webhook.ca-bundle") {
        assert_eq!(status, Status::Ok, "{message}");
        assert!(
            message.contains(&format!("served at 127.0.0.1:{port}")),
            "{message}"
        );
    }
    assert_eq!(
        statuses(&report, "functions.mode"),
        vec![(
            Status::Ok,
            format!("Function {ns}/function-sample-standalone: standalone (app id function-sample-standalone-{ns})").as_str()
        )]
    );
    // The proxy exists; it is ready only where Dapr and the image run.
    assert!(statuses(&report, "functions.proxy")[0]
        .1
        .starts_with(&format!("Function {ns}/function-sample-standalone: proxy function-sample-standalone-dapr-proxy")));
    assert!(statuses(&report, "functions.workload").is_empty());

    // Broken: another CA in the caBundle, a workload the webhook never
    // patched, and a Lease nobody holds.
    let (_, other_ca) = tls_server().await;
    configs
        .replace(config_name, &PostParams::default(), &{
            let mut c = test_config(config_name, ns, &url, &other_ca);
            c.metadata.resource_version = configs
                .get(config_name)
                .await
                .unwrap()
                .metadata
                .resource_version;
            c
        })
        .await
        .unwrap();
    let workload: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "unpatched", "labels": {"openfunction.io/function": "function-sample-standalone"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "unpatched"}},
                 "template": {"metadata": {"labels": {"app": "unpatched"}},
                              "spec": {"containers": [{"name": "function", "image": "registry.k8s.io/pause:3.9"}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &workload)
        .await
        .unwrap();
    let broken = CheckOptions {
        lease_name: "nobody-holds-this".into(),
        ..opts
    };
    let report = check::run(client, &broken).await;
    println!("broken:\n{}", report.to_text());
    assert_eq!(report.exit_code(), 1);
    for (status, message) in statuses(&report, "webhook.ca-bundle") {
        assert_eq!(status, Status::Fail, "{message}");
        assert!(message.contains("signed by another CA"), "{message}");
    }
    assert_eq!(statuses(&report, "controller.lease")[0].0, Status::Fail);
    let workload = report
        .findings
        .iter()
        .find(|f| f.check == "functions.workload")
        .expect("the unpatched workload is named");
    assert_eq!(workload.status, Status::Fail);
    assert_eq!(
        workload.fix.as_deref(),
        Some(format!("kubectl rollout restart deployment/unpatched -n {ns}").as_str())
    );
    let _: Value = serde_json::from_str(&report.to_json()).unwrap();
}
