//! The rules of `check`: a [`Snapshot`] of the cluster in, findings out.
//! Pure, except that the workload comparison runs the webhook's own
//! look-up and patch code over an in-memory store.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, MutatingWebhookConfiguration};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use serde_json::Value;

use super::cert::{self, CertProblem};
use super::report::{Finding, Section};
use crate::controller::plan::upstream_proxies_of;
use crate::controller::resources::{MANAGED_BY, MANAGED_BY_LABEL, proxy_deployment_name};
use crate::model::function::{FUNCTION_LABEL, Function, PROXY_LABEL, SERVING_LABEL, Serving};
use crate::model::mode::{GrpcEndpointForm, Mode, resolve};
use crate::model::v1beta2::ApiVersion;
use crate::model::workload::{Classification, Kind, classify};
use crate::ops::certs::RENEW_BEFORE;
use crate::webhook::admission::mutate_workload;
use crate::webhook::store::{FunctionStore, Lookup};

/// The name of the Dapr sidecar injector's configuration.
pub const DAPR_INJECTOR_CONFIG: &str = "dapr-sidecar-injector";
/// The Function CRD.
pub const FUNCTION_CRD: &str = "functions.core.openfunction.io";
/// The Serving CRD.
pub const SERVING_CRD: &str = "servings.core.openfunction.io";

/// What the webhook's server presented (or its Secret holds), per entry.
#[derive(Debug, Clone)]
pub struct Served {
    /// Where the chain came from ("served at 10.0.0.7:8443", "Secret ns/name").
    pub source: String,
    /// The name the API server verifies (`<svc>.<ns>.svc`, or the URL host).
    pub server_name: String,
    /// Leaf first, DER; or why it could not be read.
    pub chain: Result<Vec<Vec<u8>>, String>,
}

/// Everything `check` reads, gathered once.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub now: SystemTime,
    pub server_version: String,
    pub function_crd: Option<CustomResourceDefinition>,
    pub serving_crd: Option<CustomResourceDefinition>,
    /// The versions the product reads Functions and Servings in (API
    /// discovery, as the webhook store and the controller choose them); the
    /// lists below were read in them. `None`: not served.
    pub function_version: Option<ApiVersion>,
    pub serving_version: Option<ApiVersion>,
    pub webhook_config_name: String,
    pub webhook_config: Option<MutatingWebhookConfiguration>,
    /// The shipped configuration, to compare the live one with.
    pub shipped_config: Option<MutatingWebhookConfiguration>,
    /// Names of every MutatingWebhookConfiguration.
    pub mutating_configs: Vec<String>,
    /// Per webhook entry name.
    pub served: BTreeMap<String, Served>,
    /// (namespace, name) of the controller's Lease, and the Lease.
    pub lease_ref: (String, String),
    pub lease: Option<Lease>,
    /// Deployments labelled `app=dapr-operator`.
    pub dapr_operators: Vec<Deployment>,
    /// OpenFunction's controller Deployments.
    pub openfunction_controllers: Vec<Deployment>,
    /// Read in [`Self::function_version`], normalized (`read_function`).
    pub functions: Vec<Function>,
    /// Metadata only, read in [`Self::serving_version`].
    pub servings: Vec<Serving>,
    /// Deployments carrying a function, serving or proxy label, raw.
    pub deployments: Vec<Value>,
    /// Pods carrying a function or serving label, raw.
    pub pods: Vec<Value>,
    pub cluster_domain: String,
    /// The webhook's `--dapr-grpc-endpoint-form`.
    pub grpc_endpoint_form: GrpcEndpointForm,
    /// The namespace the Function part was limited to.
    pub namespace: Option<String>,
    /// The namespace openfunction-dapr runs in (for fixes).
    pub install_namespace: String,
}

/// Every finding, section by section.
pub async fn evaluate(s: &Snapshot) -> Vec<Finding> {
    let mut out = api(s);
    out.extend(webhook(s));
    out.extend(controller(s));
    out.extend(dapr(s));
    out.extend(functions(s).await);
    out
}

fn served_versions(crd: &CustomResourceDefinition) -> Vec<String> {
    crd.spec
        .versions
        .iter()
        .filter(|v| v.served)
        .map(|v| v.name.clone())
        .collect()
}

fn storage_version(crd: &CustomResourceDefinition) -> Option<&str> {
    crd.spec
        .versions
        .iter()
        .find(|v| v.storage)
        .map(|v| v.name.as_str())
}

fn api(s: &Snapshot) -> Vec<Finding> {
    let mut out = vec![Finding::ok(
        Section::Api,
        "api.server",
        format!("Kubernetes {}", s.server_version),
    )];
    match &s.function_crd {
        None => out.push(Finding::fail(
            Section::Api,
            "api.function-crd",
            format!("the Function CRD ({FUNCTION_CRD}) is not installed"),
            "install OpenFunction, or the CRD shipped here: kubectl apply -k manifests/",
        )),
        Some(crd) => out.extend(crd_findings(
            crd,
            "Function",
            "api.function-crd",
            s.function_version,
        )),
    }
    match &s.serving_crd {
        None => out.push(Finding::ok(
            Section::Api,
            "api.serving-crd",
            format!(
                "no Serving CRD ({SERVING_CRD}): workloads are found by their \
                 {FUNCTION_LABEL} label alone"
            ),
        )),
        Some(crd) => out.extend(crd_findings(
            crd,
            "Serving",
            "api.serving-crd",
            s.serving_version,
        )),
    }
    out
}

/// `using`: the version the product reads (what was listed), from API
/// discovery, not from the CRD, so the two never disagree.
fn crd_findings(
    crd: &CustomResourceDefinition,
    kind: &str,
    check: &'static str,
    using: Option<ApiVersion>,
) -> Vec<Finding> {
    let served = served_versions(crd).join(", ");
    let Some(using) = using.map(ApiVersion::as_str) else {
        return vec![Finding::fail(
            Section::Api,
            check,
            format!("the {kind} CRD serves {served}, neither v1beta2 nor v1beta1"),
            "install OpenFunction 0.8 or later (v1beta1) or 1.x (v1beta2)",
        )];
    };
    let mut out = vec![Finding::ok(
        Section::Api,
        check,
        format!("the {kind} CRD serves {served}; openfunction-dapr reads {using}"),
    )];
    let conversion = crd.spec.conversion.as_ref();
    let webhook = conversion.filter(|c| c.strategy == "Webhook");
    let storage = storage_version(crd);
    if let Some(c) = webhook
        && storage != Some(using)
    {
        let target = c
            .webhook
            .as_ref()
            .and_then(|w| w.client_config.as_ref())
            .and_then(|cc| cc.service.as_ref())
            .map(|svc| format!("Service {}/{}", svc.namespace, svc.name))
            .unwrap_or_else(|| "its conversion webhook".to_owned());
        out.push(Finding::warn(
            Section::Api,
            "api.conversion",
            format!(
                "reading {kind} {using} (stored as {}) goes through {target}: \
                 while it is down, look-ups fail",
                storage.unwrap_or("?")
            ),
            format!("keep {target} available, or serve the storage version to openfunction-dapr"),
        ));
    }
    out
}

fn webhook(s: &Snapshot) -> Vec<Finding> {
    let name = &s.webhook_config_name;
    let Some(config) = &s.webhook_config else {
        return vec![Finding::fail(
            Section::Webhook,
            "webhook.configuration",
            format!("MutatingWebhookConfiguration {name} not found"),
            "kubectl apply -k manifests/ (or name yours with --webhook-config NAME)",
        )];
    };
    let entries = config.webhooks.as_deref().unwrap_or_default();
    let mut out = vec![Finding::ok(
        Section::Webhook,
        "webhook.configuration",
        format!(
            "MutatingWebhookConfiguration {name} with {} webhooks",
            entries.len()
        ),
    )];
    if s.mutating_configs.iter().any(|c| c == DAPR_INJECTOR_CONFIG) {
        if name.as_str() < DAPR_INJECTOR_CONFIG {
            out.push(Finding::ok(
                Section::Webhook,
                "webhook.order",
                format!(
                    "{name} runs before {DAPR_INJECTOR_CONFIG} (configurations run in name order)"
                ),
            ));
        } else {
            out.push(Finding::fail(
                Section::Webhook,
                "webhook.order",
                format!(
                    "{name} sorts after {DAPR_INJECTOR_CONFIG}: the Dapr injector decides \
                     before dapr.io/enabled is written"
                ),
                "rename the configuration so it sorts first (the shipped name is 00-openfunction-dapr): kubectl apply -k manifests/",
            ));
        }
    }
    for entry in entries {
        out.push(ca_finding(s, entry));
    }
    out.extend(shipped_differences(s, entries));
    out
}

fn ca_finding(s: &Snapshot, entry: &MutatingWebhook) -> Finding {
    let check = "webhook.ca-bundle";
    let restart = format!(
        "kubectl -n {} rollout restart deployment/openfunction-dapr (it rewrites the caBundle \
         from its Secret at start; with cert-manager, check that its cainjector runs)",
        s.install_namespace
    );
    let Some(served) = s.served.get(&entry.name) else {
        return Finding::warn(
            Section::Webhook,
            check,
            format!(
                "{}: no serving certificate to verify the caBundle against",
                entry.name
            ),
            "check the clientConfig of the entry",
        );
    };
    let chain = match &served.chain {
        Ok(chain) => chain,
        Err(e) => {
            return Finding::warn(
                Section::Webhook,
                check,
                format!("{}: cannot read the serving certificate ({e})", entry.name),
                format!(
                    "kubectl -n {} get secret,endpoints (the check reads the certificate from the \
                     webhook's Secret or its pods)",
                    s.install_namespace
                ),
            );
        }
    };
    let bundle = entry
        .client_config
        .ca_bundle
        .as_ref()
        .map(|b| b.0.as_slice())
        .unwrap_or_default();
    match cert::verify(bundle, chain, &served.server_name, s.now) {
        Ok(not_after) => {
            let left = not_after.and_then(|t| t.duration_since(s.now).ok());
            let days = left.map(|d| d.as_secs() / 86_400).unwrap_or(0);
            if left.is_some_and(|d| d < RENEW_BEFORE) {
                Finding::warn(
                    Section::Webhook,
                    check,
                    format!(
                        "{}: the caBundle verifies the certificate ({}), which expires in {days} days",
                        entry.name, served.source
                    ),
                    format!(
                        "openfunction-dapr renews it {} days ahead; if it does not, {restart}",
                        RENEW_BEFORE.as_secs() / 86_400
                    ),
                )
            } else {
                Finding::ok(
                    Section::Webhook,
                    check,
                    format!(
                        "{}: the caBundle verifies the certificate ({}), valid {days} more days",
                        entry.name, served.source
                    ),
                )
            }
        }
        Err(problem) => {
            let fix = match problem {
                CertProblem::Expired => format!(
                    "renew it: kubectl -n {ns} delete secret openfunction-dapr-tls && {restart}",
                    ns = s.install_namespace
                ),
                _ => restart,
            };
            Finding::fail(
                Section::Webhook,
                check,
                format!("{}: {problem} ({})", entry.name, served.source),
                fix,
            )
        }
    }
}

/// The fields of a webhook entry compared with the shipped configuration.
const COMPARED_FIELDS: [&str; 7] = [
    "failurePolicy",
    "timeoutSeconds",
    "sideEffects",
    "reinvocationPolicy",
    "objectSelector",
    "namespaceSelector",
    "rules",
];

/// Failure policy, timeout, selectors and rules against the shipped entry
/// of the same name.
fn shipped_differences(s: &Snapshot, entries: &[MutatingWebhook]) -> Vec<Finding> {
    let Some(shipped) = s.shipped_config.as_ref().and_then(|c| c.webhooks.as_ref()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for want in shipped {
        let Some(have) = entries.iter().find(|e| e.name == want.name) else {
            out.push(Finding::fail(
                Section::Webhook,
                "webhook.entries",
                format!(
                    "webhook {} is missing from {}",
                    want.name, s.webhook_config_name
                ),
                "kubectl apply -k manifests/",
            ));
            continue;
        };
        let (have, want_json) = (json(have), json(want));
        let diffs: Vec<String> = COMPARED_FIELDS
            .iter()
            .filter(|f| have[**f] != want_json[**f])
            .map(|f| {
                format!(
                    "{f} {} (shipped {})",
                    compact(&have[*f]),
                    compact(&want_json[*f])
                )
            })
            .collect();
        if diffs.is_empty() {
            out.push(Finding::ok(
                Section::Webhook,
                "webhook.settings",
                format!(
                    "{}: failure policy, timeout, selectors and rules as shipped",
                    want.name
                ),
            ));
        } else {
            out.push(Finding::warn(
                Section::Webhook,
                "webhook.settings",
                format!("{}: {}", want.name, diffs.join("; ")),
                "kubectl apply -k manifests/ (unless the change is yours, on purpose)",
            ));
        }
    }
    out
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

fn compact(v: &Value) -> String {
    match v {
        Value::Null => "unset".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn controller(s: &Snapshot) -> Vec<Finding> {
    let (ns, name) = &s.lease_ref;
    let logs = format!(
        "kubectl -n {} logs deployment/openfunction-dapr | grep -i lease",
        s.install_namespace
    );
    let Some(lease) = &s.lease else {
        return vec![Finding::fail(
            Section::Controller,
            "controller.lease",
            format!(
                "Lease {ns}/{name} not found: no replica has ever led, so no Function is reconciled"
            ),
            logs,
        )];
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.filter(|h| !h.is_empty());
    let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(0) as u64);
    let renewed = spec.renew_time.map(|t| SystemTime::from(t.0));
    let age = renewed.and_then(|t| s.now.duration_since(t).ok());
    match (holder, age) {
        (Some(holder), Some(age)) if age <= duration => vec![Finding::ok(
            Section::Controller,
            "controller.lease",
            format!(
                "Lease {ns}/{name} held by {holder}, renewed {}s ago (duration {}s)",
                age.as_secs(),
                duration.as_secs()
            ),
        )],
        (Some(holder), _) if renewed.is_some_and(|t| t > s.now) => vec![Finding::ok(
            Section::Controller,
            "controller.lease",
            format!("Lease {ns}/{name} held by {holder}, renewed just now"),
        )],
        (Some(holder), age) => vec![Finding::fail(
            Section::Controller,
            "controller.lease",
            format!(
                "Lease {ns}/{name} held by {holder} but not renewed {} (duration {}s): the controller is stuck or gone",
                age.map(|a| format!("for {}s", a.as_secs()))
                    .unwrap_or_else(|| "ever".to_owned()),
                duration.as_secs()
            ),
            logs,
        )],
        (None, _) => vec![Finding::fail(
            Section::Controller,
            "controller.lease",
            format!("Lease {ns}/{name} has no holder: no replica leads"),
            logs,
        )],
    }
}

fn ready(d: &Deployment) -> (i32, i32) {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = d
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    (ready, want)
}

fn qualified(d: &Deployment) -> String {
    format!("{}/{}", d.namespace().unwrap_or_default(), d.name_any())
}

fn dapr(s: &Snapshot) -> Vec<Finding> {
    let install = "install Dapr on the cluster: dapr init -k (or its Helm chart)";
    let mut out = Vec::new();
    if s.mutating_configs.iter().any(|c| c == DAPR_INJECTOR_CONFIG) {
        out.push(Finding::ok(
            Section::Dapr,
            "dapr.injector",
            format!("the Dapr sidecar injector is registered ({DAPR_INJECTOR_CONFIG})"),
        ));
    } else {
        out.push(Finding::fail(
            Section::Dapr,
            "dapr.injector",
            format!(
                "no {DAPR_INJECTOR_CONFIG} configuration: proxies and sidecar functions get no daprd"
            ),
            install,
        ));
    }
    match s.dapr_operators.first() {
        None => out.push(Finding::fail(
            Section::Dapr,
            "dapr.operator",
            "the Dapr operator is not running: standalone mode needs it for the <app-id>-dapr Service",
            install,
        )),
        Some(d) => {
            let (ready, want) = ready(d);
            if ready > 0 {
                out.push(Finding::ok(
                    Section::Dapr,
                    "dapr.operator",
                    format!("the Dapr operator {} is ready ({ready}/{want})", qualified(d)),
                ));
            } else {
                out.push(Finding::fail(
                    Section::Dapr,
                    "dapr.operator",
                    format!("the Dapr operator {} has no ready replica ({ready}/{want})", qualified(d)),
                    format!(
                        "kubectl -n {} describe deployment/{}",
                        d.namespace().unwrap_or_default(),
                        d.name_any()
                    ),
                ));
            }
        }
    }
    out.push(match s.openfunction_controllers.first() {
        Some(d) => Finding::ok(
            Section::Dapr,
            "dapr.openfunction",
            format!(
                "OpenFunction's controller runs ({}): where it runs a proxy for a Function, \
                 openfunction-dapr runs none",
                qualified(d)
            ),
        ),
        None => Finding::ok(
            Section::Dapr,
            "dapr.openfunction",
            "OpenFunction's controller is not installed: openfunction-dapr keeps the proxies",
        ),
    });
    out
}

fn labels(v: &Value) -> Option<&serde_json::Map<String, Value>> {
    v.pointer("/metadata/labels").and_then(Value::as_object)
}

fn meta_str<'a>(v: &'a Value, field: &str) -> &'a str {
    v["metadata"][field].as_str().unwrap_or_default()
}

/// The Deployment a ReplicaSet-owned pod belongs to (`<deploy>-<hash>`).
fn pod_deployment(pod: &Value) -> Option<String> {
    let hash = labels(pod)?.get("pod-template-hash")?.as_str()?;
    let owners = pod.pointer("/metadata/ownerReferences")?.as_array()?;
    let rs = owners
        .iter()
        .find(|o| o["kind"] == "ReplicaSet" && o["controller"] == true)?;
    rs["name"]
        .as_str()?
        .strip_suffix(hash)?
        .strip_suffix('-')
        .map(str::to_owned)
}

async fn functions(s: &Snapshot) -> Vec<Finding> {
    let mut out = Vec::new();
    let scope = s
        .namespace
        .as_deref()
        .map(|ns| format!("in namespace {ns}"))
        .unwrap_or_else(|| "in any namespace".to_owned());
    if s.functions.is_empty() {
        out.push(Finding::ok(
            Section::Functions,
            "functions.none",
            format!("no Functions {scope}"),
        ));
    }
    let mut functions: Vec<&Function> = s.functions.iter().collect();
    functions.sort_by_key(|f| (f.namespace(), f.name_any()));
    let proxies: Vec<Deployment> = s
        .deployments
        .iter()
        .filter(|d| labels(d).is_some_and(|l| l.contains_key(PROXY_LABEL)))
        .filter_map(deployment_view)
        .collect();
    let servings: BTreeMap<(&str, &str), &Serving> = s
        .servings
        .iter()
        .filter_map(|sv| {
            let meta = &sv.metadata;
            Some(((meta.namespace.as_deref()?, meta.name.as_deref()?), sv))
        })
        .collect();
    for f in functions {
        let ns = f.namespace().unwrap_or_default();
        // OpenFunction's proxies of `f` as the controller sees them (--coexist=auto).
        let theirs = upstream_proxies_of(&proxies, &ns, &f.name_any(), |ns, name| {
            servings.get(&(ns, name)).copied()
        });
        out.extend(function_findings(s, f, &theirs));
    }
    out.extend(workload_findings(s).await);
    out
}

fn deployment_view(v: &Value) -> Option<Deployment> {
    serde_json::from_value(v.clone()).ok()
}

/// `theirs`: OpenFunction's proxies of `f`, sorted.
fn function_findings(s: &Snapshot, f: &Function, theirs: &[String]) -> Vec<Finding> {
    let ns = f.namespace().unwrap_or_default();
    let name = f.name_any();
    let resolved = resolve(&name, &ns, &f.spec, &s.cluster_domain);
    let mut out = vec![Finding::ok(
        Section::Functions,
        "functions.mode",
        format!(
            "Function {ns}/{name}: {} (app id {})",
            resolved.mode.as_str(),
            resolved.app_id
        ),
    )];
    for w in &resolved.warnings {
        out.push(Finding::warn(
            Section::Functions,
            "functions.annotation",
            format!("Function {ns}/{name}: {w}"),
            format!("kubectl -n {ns} edit function {name} (spec.serving.annotations)"),
        ));
    }
    if resolved.mode != Mode::Standalone {
        return out;
    }
    let in_ns = |d: &&Value| meta_str(d, "namespace") == ns;
    let ours_name = proxy_deployment_name(&name);
    let ours = s.deployments.iter().filter(in_ns).find(|d| {
        meta_str(d, "name") == ours_name
            && labels(d).and_then(|l| l.get(MANAGED_BY_LABEL)) == Some(&Value::from(MANAGED_BY))
    });
    let theirs = (!theirs.is_empty()).then(|| theirs.join(", "));
    let describe = format!("kubectl -n {ns} describe function {name} (its Events)");
    match (ours.and_then(deployment_view), theirs) {
        (Some(_), Some(t)) => out.push(Finding::fail(
            Section::Functions,
            "functions.proxy",
            format!(
                "Function {ns}/{name}: two proxies, {ours_name} and OpenFunction's {t}: every event is consumed twice"
            ),
            format!(
                "check the controller (--coexist=auto removes ours): kubectl -n {ns} delete deployment {ours_name}"
            ),
        )),
        (None, Some(t)) => out.push(Finding::ok(
            Section::Functions,
            "functions.proxy",
            format!("Function {ns}/{name}: OpenFunction's proxy {t} is in charge"),
        )),
        (Some(d), None) => {
            let (ready, want) = ready(&d);
            if ready > 0 {
                out.push(Finding::ok(
                    Section::Functions,
                    "functions.proxy",
                    format!("Function {ns}/{name}: proxy {ours_name} ready ({ready}/{want})"),
                ));
            } else {
                out.push(Finding::fail(
                    Section::Functions,
                    "functions.proxy",
                    format!("Function {ns}/{name}: proxy {ours_name} has no ready replica ({ready}/{want})"),
                    format!("kubectl -n {ns} describe deployment/{ours_name}"),
                ));
            }
        }
        (None, None) => out.push(Finding::fail(
            Section::Functions,
            "functions.proxy",
            format!("Function {ns}/{name}: standalone, but no proxy Deployment {ours_name}"),
            format!("see the Controller section; {describe}"),
        )),
    }
    out
}

/// Every labelled Deployment and every pod the webhook admits alone (bare,
/// or of a Deployment not itself labelled), compared with what the webhook
/// would produce for it now.
async fn workload_findings(s: &Snapshot) -> Vec<Finding> {
    let store = FunctionStore::from_objects(s.functions.clone(), s.servings.clone());
    let labelled: BTreeSet<(String, String)> = s
        .deployments
        .iter()
        .filter(|d| !matches!(classify(d, Kind::Deployment), Classification::NotFunction))
        .map(|d| {
            (
                meta_str(d, "namespace").to_owned(),
                meta_str(d, "name").to_owned(),
            )
        })
        .collect();
    let mut workloads: Vec<(Kind, &Value)> = s
        .deployments
        .iter()
        .filter(|d| {
            labels(d)
                .is_some_and(|l| l.contains_key(FUNCTION_LABEL) || l.contains_key(SERVING_LABEL))
        })
        .map(|d| (Kind::Deployment, d))
        .collect();
    workloads.extend(
        s.pods
            .iter()
            .filter(|p| {
                pod_deployment(p)
                    .is_none_or(|d| !labelled.contains(&(meta_str(p, "namespace").to_owned(), d)))
            })
            .map(|p| (Kind::Pod, p)),
    );
    let mut out = Vec::new();
    let mut wired: BTreeMap<String, usize> = BTreeMap::new();
    for (kind, object) in workloads {
        let ns = meta_str(object, "namespace");
        let name = meta_str(object, "name");
        let what = format!("{} {ns}/{name}", kind.as_str().to_lowercase());
        let fix = match kind {
            Kind::Deployment => format!("kubectl rollout restart deployment/{name} -n {ns}"),
            Kind::Pod => format!("kubectl delete pod {name} -n {ns} (and create it again)"),
        };
        let Classification::Workload(owner) = classify(object, kind) else {
            continue;
        };
        let function = match store.lookup(ns, owner).await {
            Ok(Lookup::Found { function, .. }) => function,
            Ok(Lookup::NotFound(reason)) => {
                out.push(Finding::warn(
                    Section::Functions,
                    "functions.workload",
                    format!("{what}: {reason}, so the webhook leaves it alone"),
                    format!("create the Function, or remove the {FUNCTION_LABEL} label"),
                ));
                continue;
            }
            Err(e) => {
                out.push(Finding::warn(
                    Section::Functions,
                    "functions.workload",
                    format!("{what}: {e}"),
                    "run the check again",
                ));
                continue;
            }
        };
        match mutate_workload(
            object,
            kind,
            ns,
            &function,
            &s.cluster_domain,
            s.grpc_endpoint_form,
        ) {
            Ok(m) if m.patch.is_empty() => *wired.entry(ns.to_owned()).or_default() += 1,
            Ok(m) => {
                let paths: Vec<String> = m
                    .patch
                    .iter()
                    .map(|op| {
                        let op = serde_json::to_value(op).unwrap_or_default();
                        op["path"].as_str().unwrap_or_default().to_owned()
                    })
                    .take(4)
                    .collect();
                out.push(Finding::fail(
                    Section::Functions,
                    "functions.workload",
                    format!(
                        "{what} differs from what the webhook produces now ({} change{}: {}{}): \
                         created while the webhook was away, or not rolled after a mode change",
                        m.patch.len(),
                        if m.patch.len() == 1 { "" } else { "s" },
                        paths.join(", "),
                        if m.patch.len() > 4 { ", …" } else { "" }
                    ),
                    fix,
                ));
            }
            Err(e) => out.push(Finding::fail(
                Section::Functions,
                "functions.workload",
                format!("{what}: the webhook cannot patch it ({e})"),
                fix,
            )),
        }
    }
    for (ns, n) in wired {
        out.push(Finding::ok(
            Section::Functions,
            "functions.workloads",
            format!(
                "{n} function workload{} in {ns} as the webhook would produce {} now",
                if n == 1 { "" } else { "s" },
                if n == 1 { "it" } else { "them" }
            ),
        ));
    }
    out
}
