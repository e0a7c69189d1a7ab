//! Webhook calls per scale-out, without a cluster (issue 11 part 2).
//!
//!   cargo run --example scaleout [-- REPLICAS]
//!
//! For every workload of `examples/workloads.yaml` (Functions from
//! `examples/functions.yaml`): the Deployment's CREATE is evaluated against
//! the shipped `manifests/base/webhook.yaml` (rules, namespaceSelector,
//! objectSelector with kube's label selector semantics); when a webhook
//! entry matches, the real webhook (`Webhook::review`) admits it and its
//! patch is applied. Then REPLICAS pods are made as a ReplicaSet makes them
//! (the patched template's labels plus `pod-template-hash`) and every pod
//! CREATE is evaluated against the same configuration, and against the same
//! configuration without the `openfunction.io/dapr-wired DoesNotExist`
//! expressions (the configuration before this change). Bare pods are
//! evaluated as they are. This is an evaluation of the admission chain's
//! selection rules, not a run against a kube-apiserver.

#[path = "webhook_match.rs"]
mod webhook_match;

use std::path::Path;

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use openfunction_dapr::model::function::WIRED_LABEL;
use openfunction_dapr::webhook::Webhook;
use openfunction_dapr::webhook::store::{FunctionStore, parse_documents};
use serde_json::{Value, json};
use webhook_match::{Admission, called, replica_pod_labels, without_exclusion};

fn labels(v: &Value, pointer: &str) -> std::collections::BTreeMap<String, String> {
    v.pointer(pointer)
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default()
}

/// The Deployment as the webhook admits it (CREATE).
async fn admit(webhook: &Webhook, d: &Value) -> Value {
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "namespace": d["metadata"]["namespace"], "operation": "CREATE", "object": d}
    });
    let reviewed = webhook
        .review(&serde_json::to_vec(&review).expect("JSON"))
        .await;
    let answer: Value = serde_json::from_slice(&reviewed.body).expect("an AdmissionReview");
    let mut out = d.clone();
    if let Some(p) = answer["response"]["patch"].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(p)
            .expect("base64");
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("JSON Patch");
        json_patch::patch(&mut out, &patch).expect("the patch applies");
    }
    out
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let replicas: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config: MutatingWebhookConfiguration = serde_saphyr::from_str(&std::fs::read_to_string(
        root.join("manifests/base/webhook.yaml"),
    )?)?;
    let before = without_exclusion(&config, WIRED_LABEL);
    let webhook = Webhook::new(
        FunctionStore::from_dir(&root.join("examples"))?,
        "cluster.local",
    );
    let workloads = parse_documents(&std::fs::read_to_string(
        root.join("examples/workloads.yaml"),
    )?)
    .map_err(anyhow::Error::msg)?;

    println!(
        "{:<30} {:>15} {:>22} {:>22}",
        "workload", "calls at create", "calls per scale-out", "before (no exclusion)"
    );
    println!(
        "{:<30} {:>15} {:>22} {:>22}",
        "",
        "",
        format!("of {replicas} pods"),
        format!("of {replicas} pods")
    );
    for w in workloads {
        let kind = w["kind"].as_str().unwrap_or_default();
        let name = w["metadata"]["name"].as_str().unwrap_or_default();
        let ns = w["metadata"]["namespace"].as_str().unwrap_or("default");
        match kind {
            "Deployment" => {
                let own = labels(&w, "/metadata/labels");
                let at_create = called(
                    &config,
                    &Admission {
                        group: "apps",
                        resource: "deployments",
                        operation: "CREATE",
                        namespace: ns,
                        labels: &own,
                    },
                )
                .len();
                let d = if at_create > 0 {
                    admit(&webhook, &w).await
                } else {
                    w.clone()
                };
                let pod = replica_pod_labels(&d);
                let admission = Admission {
                    group: "",
                    resource: "pods",
                    operation: "CREATE",
                    namespace: ns,
                    labels: &pod,
                };
                let now = called(&config, &admission).len() * replicas;
                let old = called(&before, &admission).len() * replicas;
                println!(
                    "{:<30} {:>15} {:>22} {:>22}",
                    format!("deployment/{name}"),
                    at_create,
                    now,
                    old
                );
            }
            "Pod" => {
                let own = labels(&w, "/metadata/labels");
                let admission = Admission {
                    group: "",
                    resource: "pods",
                    operation: "CREATE",
                    namespace: ns,
                    labels: &own,
                };
                println!(
                    "{:<30} {:>15} {:>22} {:>22}",
                    format!("pod/{name} (bare)"),
                    called(&config, &admission).len(),
                    "-",
                    called(&before, &admission).len()
                );
            }
            _ => {}
        }
    }
    Ok(())
}
