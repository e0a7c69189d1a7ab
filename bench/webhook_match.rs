//! Which entries of a `MutatingWebhookConfiguration` the API server would
//! call for one object: its rules (group, resource, operation), its
//! `namespaceSelector` (over the namespace's `kubernetes.io/metadata.name`
//! label, the only one we rely on) and its `objectSelector`, with kube's
//! label selector semantics (`kube::core::Selector`). Shared by
//! `bench/scaleout.rs` and `tests/manifests.rs` (`#[path]`).

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, MutatingWebhookConfiguration};
use kube::core::{Selector, SelectorExt};

/// One admission the API server is about to make.
pub struct Admission<'a> {
    pub group: &'a str,
    pub resource: &'a str,
    pub operation: &'a str,
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

fn selects(
    selector: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> bool {
    match selector {
        // absent: everything
        None => true,
        Some(s) => Selector::try_from(s.clone())
            .expect("a valid label selector")
            .matches(labels),
    }
}

fn rule_matches(w: &MutatingWebhook, a: &Admission<'_>) -> bool {
    let any =
        |list: &Option<Vec<String>>, v: &str| list.iter().flatten().any(|x| x == "*" || x == v);
    w.rules.iter().flatten().any(|r| {
        any(&r.api_groups, a.group)
            && any(&r.resources, a.resource)
            && any(&r.operations, a.operation)
    })
}

/// The names of the webhooks of `config` called for `a`.
pub fn called<'c>(config: &'c MutatingWebhookConfiguration, a: &Admission<'_>) -> Vec<&'c str> {
    let ns_labels = BTreeMap::from([(
        "kubernetes.io/metadata.name".to_owned(),
        a.namespace.to_owned(),
    )]);
    config
        .webhooks
        .iter()
        .flatten()
        .filter(|w| {
            rule_matches(w, a)
                && selects(w.namespace_selector.as_ref(), &ns_labels)
                && selects(w.object_selector.as_ref(), a.labels)
        })
        .map(|w| w.name.as_str())
        .collect()
}

/// `config` without the `DoesNotExist` expressions on `label`: what the
/// configuration was before pods of patched templates were excluded.
pub fn without_exclusion(
    config: &MutatingWebhookConfiguration,
    label: &str,
) -> MutatingWebhookConfiguration {
    let mut c = config.clone();
    for w in c.webhooks.iter_mut().flatten() {
        if let Some(exprs) = w
            .object_selector
            .as_mut()
            .and_then(|s| s.match_expressions.as_mut())
        {
            exprs.retain(|e| !(e.key == label && e.operator == "DoesNotExist"));
        }
    }
    c
}

/// The labels of the pods a ReplicaSet creates from a Deployment's pod
/// template: the template's labels plus `pod-template-hash`.
pub fn replica_pod_labels(deployment: &serde_json::Value) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = deployment
        .pointer("/spec/template/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    labels.insert("pod-template-hash".into(), "5d8f7c9b6".into());
    labels
}
