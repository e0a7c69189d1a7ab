//! The pure half of a reconcile: from a Function and what the caches hold,
//! decide which API calls to make. No IO here.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use serde::Serialize;
use serde_json::Value;

use crate::controller::resources::{self, ProxySettings};
use crate::model::function::{Function, serving_function_name};
use crate::model::mode::{self, Mode};
use crate::model::v1beta2::ApiVersion;

/// Annotation on the objects the controller applies: a hash of what it
/// applied, so that a field the controller stops setting is noticed.
pub const APPLIED_HASH_ANNOTATION: &str = "openfunction.io/applied-hash";

/// What the controller currently sees of a Function's objects.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The Deployment named `<fn>-dapr-proxy` in the Function's namespace,
    /// whoever owns it.
    pub proxy: Option<Arc<Deployment>>,
    /// The Service named `<fn>` in the Function's namespace, whoever owns it.
    pub service: Option<Arc<Service>>,
    /// The Deployments labelled `openfunction.io/function: <fn>` in the
    /// Function's namespace.
    pub function_deployments: Vec<Arc<Deployment>>,
    /// OpenFunction's own proxy Deployments of the Function (labelled
    /// `openfunction.io/proxy`, controlled by one of its Servings), sorted;
    /// empty with `--coexist=off`.
    pub upstream_proxies: Vec<String>,
}

/// One API call (or refusal) the reconcile makes, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Server-side apply the proxy Deployment. `create` is true when nothing
    /// of that name was observed (the IO layer then checks the name is free).
    ApplyDeployment {
        deployment: Box<Deployment>,
        create: bool,
    },
    /// Server-side apply the function Service.
    ApplyService { service: Box<Service>, create: bool },
    /// Delete our proxy Deployment (precondition: this uid).
    DeleteDeployment { name: String, uid: String },
    /// Delete our function Service (precondition: this uid).
    DeleteService { name: String, uid: String },
    /// Set the pod-template annotation `openfunction.io/dapr-mode` of a
    /// function Deployment, so its pods are re-admitted in `to` mode.
    RollDeployment {
        name: String,
        from: Option<Mode>,
        to: Mode,
    },
    /// OpenFunction's controller runs the Function's proxy (`name`): create
    /// none (ours, if any, is deleted by a step of its own) and say so.
    Defer { name: String },
    /// An object we would manage exists but is not ours: leave it alone and
    /// say so.
    Conflict {
        kind: &'static str,
        name: String,
        message: String,
    },
}

impl Step {
    /// True for steps that write to the API server.
    pub fn is_write(&self) -> bool {
        !matches!(self, Step::Conflict { .. } | Step::Defer { .. })
    }
}

/// The outcome of [`plan`].
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub mode: Mode,
    /// Problems with the Function's annotations (for `InvalidAnnotation`).
    pub warnings: Vec<String>,
    pub steps: Vec<Step>,
}

/// Decide what to do for `func` given what is observed.
///
/// - Standalone: apply the proxy Deployment (and the Service for async
///   functions) when missing or when a field we manage differs; refuse to
///   touch objects of those names that are not ours; delete our Service when
///   the function is no longer async.
/// - Any other mode: delete our proxy Deployment and Service, nothing else.
/// - Every mode: roll the function Deployments whose pods were admitted in
///   another mode.
///
/// A Function being deleted, or without uid, gets no steps.
pub fn plan(func: &Function, observed: &Observed, settings: &ProxySettings) -> Plan {
    let resolved = resources::resolve_function(func, settings);
    let warnings = resources::function_warnings(func, settings);
    let mode = resolved.mode;
    let mut steps = Vec::new();
    let uid = func.metadata.uid.as_deref().unwrap_or_default();
    if func.metadata.deletion_timestamp.is_some() || uid.is_empty() {
        return Plan {
            mode,
            warnings,
            steps,
        };
    }
    let name = func.name_any();
    let ours = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        resources::is_owned_by(meta, uid)
    };

    if mode == Mode::Standalone
        && let Some(upstream) = observed.upstream_proxies.first()
    {
        // Two daprd with one app id would consume every event twice.
        steps.push(Step::Defer {
            name: upstream.clone(),
        });
        if let Some(o) = observed.proxy.as_deref()
            && ours(&o.metadata)
            && o.metadata.deletion_timestamp.is_none()
        {
            steps.push(Step::DeleteDeployment {
                name: o.name_any(),
                uid: o.uid().unwrap_or_default(),
            });
        }
    }
    if mode == Mode::Standalone {
        let desired = with_applied_hash(resources::desired_proxy_deployment(func, settings));
        match observed.proxy.as_deref() {
            _ if !observed.upstream_proxies.is_empty() => {}
            None => steps.push(Step::ApplyDeployment {
                deployment: Box::new(desired),
                create: true,
            }),
            Some(o) if !ours(&o.metadata) => steps.push(Step::Conflict {
                kind: "Deployment",
                name: o.name_any(),
                message: conflict_message("Deployment", &o.metadata),
            }),
            Some(o) if o.metadata.deletion_timestamp.is_some() => {
                // being deleted (e.g. foreground): recreate once it is gone
            }
            Some(o) if !is_subset(&desired, o) => steps.push(Step::ApplyDeployment {
                deployment: Box::new(desired),
                create: false,
            }),
            Some(_) => {}
        }

        match (
            resources::desired_function_service(func, settings).map(with_applied_hash),
            observed.service.as_deref(),
        ) {
            (Some(desired), None) => steps.push(Step::ApplyService {
                service: Box::new(desired),
                create: true,
            }),
            (Some(_), Some(o)) if !ours(&o.metadata) => steps.push(Step::Conflict {
                kind: "Service",
                name: o.name_any(),
                message: conflict_message("Service", &o.metadata),
            }),
            (Some(_), Some(o)) if o.metadata.deletion_timestamp.is_some() => {}
            (Some(desired), Some(o)) if headless(&desired) != headless(o) => {
                // clusterIP is immutable: replace the Service
                steps.push(Step::DeleteService {
                    name: o.name_any(),
                    uid: o.uid().unwrap_or_default(),
                });
                steps.push(Step::ApplyService {
                    service: Box::new(desired),
                    create: true,
                });
            }
            (Some(desired), Some(o)) if !is_subset(&desired, o) => steps.push(Step::ApplyService {
                service: Box::new(desired),
                create: false,
            }),
            (Some(_), Some(_)) => {}
            // no longer async: our Service goes
            (None, Some(o)) if ours(&o.metadata) && o.metadata.deletion_timestamp.is_none() => {
                steps.push(Step::DeleteService {
                    name: o.name_any(),
                    uid: o.uid().unwrap_or_default(),
                })
            }
            (None, _) => {}
        }
    } else {
        if let Some(o) = observed.proxy.as_deref()
            && ours(&o.metadata)
            && o.metadata.deletion_timestamp.is_none()
        {
            steps.push(Step::DeleteDeployment {
                name: o.name_any(),
                uid: o.uid().unwrap_or_default(),
            });
        }
        if let Some(o) = observed.service.as_deref()
            && ours(&o.metadata)
            && o.metadata.deletion_timestamp.is_none()
        {
            steps.push(Step::DeleteService {
                name: o.name_any(),
                uid: o.uid().unwrap_or_default(),
            });
        }
    }

    let mut rolls: Vec<_> = observed
        .function_deployments
        .iter()
        .filter(|d| d.metadata.deletion_timestamp.is_none())
        .filter(|d| d.labels().get(crate::model::function::FUNCTION_LABEL) == Some(&name))
        .filter(|d| !d.labels().contains_key(resources::PROXY_LABEL))
        .filter_map(|d| {
            let from = admitted_mode(d);
            (from != Some(mode)).then(|| Step::RollDeployment {
                name: d.name_any(),
                from,
                to: mode,
            })
        })
        .collect();
    rolls.sort_by(|a, b| step_name(a).cmp(step_name(b)));
    steps.extend(rolls);

    Plan {
        mode,
        warnings,
        steps,
    }
}

fn step_name(s: &Step) -> &str {
    match s {
        Step::RollDeployment { name, .. }
        | Step::DeleteDeployment { name, .. }
        | Step::DeleteService { name, .. }
        | Step::Conflict { name, .. }
        | Step::Defer { name } => name,
        Step::ApplyDeployment { deployment, .. } => {
            deployment.metadata.name.as_deref().unwrap_or_default()
        }
        Step::ApplyService { service, .. } => service.metadata.name.as_deref().unwrap_or_default(),
    }
}

fn conflict_message(
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> String {
    let name = meta.name.as_deref().unwrap_or_default();
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| format!("controlled by {} {}", r.kind, r.name))
        .unwrap_or_else(|| "not created by openfunction-dapr".to_owned());
    format!(
        "{kind} {name} already exists and is {owner}; it is left untouched, \
         so the Dapr proxy of this function is not managed until it is removed or renamed"
    )
}

fn headless(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| ip == "None")
}

/// The mode the pods of a function Deployment were admitted in, as far as
/// its pod template tells: the `openfunction.io/dapr-mode` annotation the
/// controller wrote, else what the webhook wrote (`dapr.io/enabled`, and a
/// `DAPR_HOST` pointing at a proxy). `None` when the template was never
/// admitted by the webhook.
pub fn admitted_mode(d: &Deployment) -> Option<Mode> {
    let template = &d.spec.as_ref()?.template;
    let annotations = template.metadata.as_ref()?.annotations.as_ref()?;
    if let Some(m) = annotations.get(resources::MODE_ANNOTATION) {
        return parse_mode(m);
    }
    match annotations.get(mode::DAPR_ENABLED).map(|v| v.trim()) {
        Some("true") => Some(Mode::Sidecar),
        Some("false") => {
            let ns = d.namespace().unwrap_or_default();
            let proxied = template.spec.as_ref().is_some_and(|s| {
                s.containers.iter().any(|c| {
                    c.env.iter().flatten().any(|e| {
                        e.name == "DAPR_HOST"
                            && e.value
                                .as_deref()
                                .is_some_and(|v| mode::is_proxy_address(v, &ns))
                    })
                })
            });
            Some(if proxied {
                Mode::Standalone
            } else {
                Mode::Disabled
            })
        }
        _ => None,
    }
}

/// The Function (namespace, name) whose proxy `d` is, when it is
/// OpenFunction's: labelled `openfunction.io/proxy` and controlled by a
/// Serving (of a version we read) that `serving` finds by (namespace, name),
/// of the same uid when it has one, naming the Function.
pub fn upstream_proxy_function<S>(
    d: &Deployment,
    serving: impl FnOnce(&str, &str) -> Option<S>,
) -> Option<(String, String)>
where
    S: std::ops::Deref,
    S::Target: kube::Resource,
{
    let ns = d.namespace()?;
    if !d.labels().contains_key(resources::PROXY_LABEL) {
        return None;
    }
    let owner = d.metadata.owner_references.iter().flatten().find(|r| {
        r.controller == Some(true)
            && r.kind == "Serving"
            && ApiVersion::parse(&r.api_version).is_some()
    })?;
    let serving = serving(&ns, &owner.name)?;
    let meta = kube::Resource::meta(&*serving);
    if meta.uid.is_some() && meta.uid.as_deref() != Some(owner.uid.as_str()) {
        return None;
    }
    let function = serving_function_name(meta)?;
    Some((ns, function.to_owned()))
}

/// The names of OpenFunction's proxies of Function `name` in `ns` among
/// `proxies` ([`upstream_proxy_function`]), sorted. Ours (managed by
/// openfunction-dapr) and those being deleted do not count.
pub fn upstream_proxies_of<'a, S>(
    proxies: impl IntoIterator<Item = &'a Deployment>,
    ns: &str,
    name: &str,
    serving: impl Fn(&str, &str) -> Option<S>,
) -> Vec<String>
where
    S: std::ops::Deref,
    S::Target: kube::Resource,
{
    let mut names: Vec<String> = proxies
        .into_iter()
        .filter(|d| d.metadata.deletion_timestamp.is_none())
        .filter(|d| {
            d.labels()
                .get(resources::MANAGED_BY_LABEL)
                .map(String::as_str)
                != Some(resources::MANAGED_BY)
        })
        .filter(|d| upstream_proxy_function(d, &serving).is_some_and(|(n, f)| n == ns && f == name))
        .map(|d| d.name_any())
        .collect();
    names.sort();
    names
}

/// Parse a [`Mode`] from its [`Mode::as_str`] form.
pub fn parse_mode(s: &str) -> Option<Mode> {
    [Mode::Disabled, Mode::Sidecar, Mode::Standalone]
        .into_iter()
        .find(|m| m.as_str() == s.trim())
}

/// Add [`APPLIED_HASH_ANNOTATION`] (a hash of the object as built) to an
/// object's metadata.
pub fn with_applied_hash<K: kube::Resource + Serialize>(mut obj: K) -> K {
    let hash = format!(
        "{:016x}",
        fnv1a(&serde_json::to_vec(&obj).unwrap_or_default())
    );
    obj.meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(APPLIED_HASH_ANNOTATION.to_owned(), hash);
    obj
}

pub use crate::model::fnv1a;

/// True when every field of `desired` is present with the same value in
/// `observed` (fields the API server or others added are ignored). List
/// items that have a `name` are matched by name, others by value.
pub fn is_subset<A: Serialize, B: Serialize>(desired: &A, observed: &B) -> bool {
    match (
        serde_json::to_value(desired),
        serde_json::to_value(observed),
    ) {
        (Ok(d), Ok(o)) => value_subset(&d, &o),
        _ => false,
    }
}

fn value_subset(d: &Value, o: &Value) -> bool {
    match (d, o) {
        (Value::Object(d), Value::Object(o)) => d.iter().all(|(k, dv)| match o.get(k) {
            Some(ov) => value_subset(dv, ov),
            None => dv.is_null(),
        }),
        (Value::Array(d), Value::Array(o)) => {
            d.iter()
                .all(|dv| match dv.get("name").and_then(Value::as_str) {
                    Some(name) => o
                        .iter()
                        .find(|ov| ov.get("name").and_then(Value::as_str) == Some(name))
                        .is_some_and(|ov| value_subset(dv, ov)),
                    None => o.iter().any(|ov| value_subset(dv, ov)),
                })
        }
        _ => d == o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const UID: &str = "uid-fn";

    fn func(annotations: Value, runtime: &str) -> Function {
        serde_json::from_value(json!({
            "apiVersion": "core.openfunction.io/v1beta1",
            "kind": "Function",
            "metadata": {"name": "f", "namespace": "ns", "uid": UID, "generation": 1},
            "spec": {
                "image": "img",
                "serving": {
                    "runtime": runtime,
                    "annotations": annotations,
                    "inputs": [{"name": "i", "component": "c"}]
                }
            }
        }))
        .unwrap()
    }

    fn standalone_async() -> Function {
        func(json!({}), "async")
    }

    fn sidecar() -> Function {
        func(
            json!({"openfunction.io/dapr-service-mode": "sidecar"}),
            "async",
        )
    }

    /// What the API server holds after applying `obj`: the object plus
    /// server-side fields and defaults.
    fn served<K: Serialize + serde::de::DeserializeOwned>(obj: &K, uid: &str) -> Arc<K> {
        let mut v = serde_json::to_value(obj).unwrap();
        v["metadata"]["uid"] = json!(uid);
        v["metadata"]["resourceVersion"] = json!("42");
        v["metadata"]["generation"] = json!(1);
        v["metadata"]["creationTimestamp"] = json!("2024-01-01T00:00:00Z");
        v["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!("1");
        if v["kind"] == "Deployment" {
            v["spec"]["revisionHistoryLimit"] = json!(10);
            v["spec"]["progressDeadlineSeconds"] = json!(600);
            let c = &mut v["spec"]["template"]["spec"]["containers"][0];
            c["imagePullPolicy"] = json!("IfNotPresent");
            c["terminationMessagePath"] = json!("/dev/termination-log");
            v["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
            v["status"] = json!({"replicas": 1});
        } else {
            if v["spec"].get("clusterIP").is_none() {
                v["spec"]["clusterIP"] = json!("10.96.0.10");
            }
            v["spec"]["type"] = json!("ClusterIP");
            v["spec"]["sessionAffinity"] = json!("None");
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn observed_for(f: &Function) -> Observed {
        let s = ProxySettings::default();
        let d = with_applied_hash(resources::desired_proxy_deployment(f, &s));
        let svc = resources::desired_function_service(f, &s).map(with_applied_hash);
        Observed {
            proxy: Some(served(&d, "uid-d")),
            service: svc.map(|s| served(&s, "uid-s")),
            function_deployments: vec![],
            upstream_proxies: vec![],
        }
    }

    fn workload(
        name: &str,
        function: &str,
        template_annotations: Value,
        env: Value,
    ) -> Arc<Deployment> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                    "labels": {"openfunction.io/function": function}},
                "spec": {
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}, "annotations": template_annotations},
                        "spec": {"containers": [{"name": "function", "image": "i", "env": env}]}
                    }
                }
            }))
            .unwrap(),
        )
    }

    fn kinds(p: &Plan) -> Vec<String> {
        p.steps
            .iter()
            .map(|s| match s {
                Step::ApplyDeployment { create, .. } => format!("apply-deploy create={create}"),
                Step::ApplyService { create, .. } => format!("apply-svc create={create}"),
                Step::DeleteDeployment { name, uid } => format!("delete-deploy {name} {uid}"),
                Step::DeleteService { name, uid } => format!("delete-svc {name} {uid}"),
                Step::RollDeployment { name, from, to } => {
                    format!("roll {name} {from:?}->{to}")
                }
                Step::Conflict { kind, name, .. } => format!("conflict {kind} {name}"),
                Step::Defer { name } => format!("defer {name}"),
            })
            .collect()
    }

    #[test]
    fn openfunctions_proxy_means_none_of_ours() {
        let f = standalone_async();
        let s = ProxySettings::default();
        // ours exists: deleted; none created; the Service is kept
        let mut o = observed_for(&f);
        o.upstream_proxies = vec!["serving-x-proxy-deployment-v1-abc".into()];
        let p = plan(&f, &o, &s);
        assert_eq!(
            kinds(&p),
            [
                "defer serving-x-proxy-deployment-v1-abc",
                "delete-deploy f-dapr-proxy uid-d"
            ]
        );
        // none of ours: nothing created
        let o = Observed {
            upstream_proxies: vec!["p".into()],
            ..Default::default()
        };
        assert_eq!(
            kinds(&plan(&f, &o, &s)),
            ["defer p", "apply-svc create=true"]
        );
        // OpenFunction's proxy gone: ours comes back
        assert_eq!(
            kinds(&plan(&f, &Observed::default(), &s)),
            ["apply-deploy create=true", "apply-svc create=true"]
        );
    }

    #[test]
    fn upstream_proxies_are_found_through_their_controlling_serving() {
        use crate::model::function::Serving;
        let serving: Serving = serde_json::from_value(json!({
            "apiVersion": "core.openfunction.io/v1beta2", "kind": "Serving",
            "metadata": {"name": "s", "namespace": "ns", "uid": "s-1",
                "labels": {"openfunction.io/function": "f"}}, "spec": {}
        }))
        .unwrap();
        let proxy = |name: &str, labels: Value, owner: Value| -> Deployment {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns", "labels": labels,
                    "ownerReferences": [owner]}
            }))
            .unwrap()
        };
        let by_serving = |uid: &str, controller: bool| {
            json!({"apiVersion": "core.openfunction.io/v1beta2", "kind": "Serving",
                "name": "s", "uid": uid, "controller": controller})
        };
        let label = json!({"openfunction.io/proxy": "s"});
        let lookup = |ns: &str, name: &str| (ns == "ns" && name == "s").then_some(&serving);
        let theirs = proxy("b", label.clone(), by_serving("s-1", true));
        assert_eq!(
            upstream_proxy_function(&theirs, lookup),
            Some(("ns".into(), "f".into()))
        );
        let mut deleting = proxy("a", label.clone(), by_serving("s-1", true));
        deleting.metadata.deletion_timestamp =
            Some(serde_json::from_value(json!("2024-01-01T00:00:00Z")).unwrap());
        let others = [
            theirs.clone(),
            deleting,
            // not labelled, not controlled, another Serving of that name
            proxy("c", json!({}), by_serving("s-1", true)),
            proxy("d", label.clone(), by_serving("s-1", false)),
            proxy("e", label.clone(), by_serving("s-0", true)),
            // ours, whatever its owner
            proxy(
                "f",
                json!({"openfunction.io/proxy": "s", "app.kubernetes.io/managed-by": "openfunction-dapr"}),
                by_serving("s-1", true),
            ),
            proxy("g", label, by_serving("s-1", true)),
        ];
        assert_eq!(upstream_proxies_of(&others, "ns", "f", lookup), ["b", "g"]);
        assert!(upstream_proxies_of(&others, "ns", "other", lookup).is_empty());
        assert!(upstream_proxies_of(&others, "ns", "f", |_, _| None::<&Serving>).is_empty());
    }

    #[test]
    fn standalone_creates_both_then_nothing() {
        let f = standalone_async();
        let p = plan(&f, &Observed::default(), &ProxySettings::default());
        assert_eq!(p.mode, Mode::Standalone);
        assert_eq!(
            kinds(&p),
            ["apply-deploy create=true", "apply-svc create=true"]
        );
        let p = plan(&f, &observed_for(&f), &ProxySettings::default());
        assert!(p.steps.is_empty(), "{:?}", kinds(&p));
    }

    #[test]
    fn knative_standalone_has_no_service_and_drops_ours() {
        let f = func(json!({}), "knative");
        let p = plan(&f, &Observed::default(), &ProxySettings::default());
        assert_eq!(kinds(&p), ["apply-deploy create=true"]);
        // was async before: our Service is deleted (and FUNC_CONTEXT changed)
        let mut obs = observed_for(&standalone_async());
        let p = plan(&f, &obs, &ProxySettings::default());
        assert_eq!(
            kinds(&p),
            ["apply-deploy create=false", "delete-svc f uid-s"]
        );
        // not ours: left alone
        Arc::make_mut(obs.service.as_mut().unwrap())
            .metadata
            .owner_references = None;
        let p = plan(&f, &obs, &ProxySettings::default());
        assert_eq!(kinds(&p), ["apply-deploy create=false"]);
    }

    #[test]
    fn drift_is_repaired() {
        let f = standalone_async();
        let mut obs = observed_for(&f);
        let d = Arc::make_mut(obs.proxy.as_mut().unwrap());
        d.spec.as_mut().unwrap().replicas = Some(5);
        let p = plan(&f, &obs, &ProxySettings::default());
        assert_eq!(kinds(&p), ["apply-deploy create=false"]);

        // an image change in the settings is a difference
        let obs = observed_for(&f);
        let s = ProxySettings {
            image: "other:1".into(),
            ..Default::default()
        };
        assert_eq!(kinds(&plan(&f, &obs, &s)), ["apply-deploy create=false"]);
    }

    #[test]
    fn removed_user_annotation_is_noticed_through_the_hash() {
        let f = func(json!({"dapr.io/log-level": "debug"}), "async");
        let obs = observed_for(&f);
        // the user drops the annotation: desired is a subset of observed,
        // but the applied hash changed
        let f2 = standalone_async();
        let p = plan(&f2, &obs, &ProxySettings::default());
        assert_eq!(kinds(&p), ["apply-deploy create=false"]);
    }

    #[test]
    fn protocol_change_replaces_the_service() {
        let f = standalone_async(); // grpc: headless
        let obs = observed_for(&f);
        let http = func(json!({"dapr.io/app-protocol": "http"}), "async");
        let p = plan(&http, &obs, &ProxySettings::default());
        assert_eq!(
            kinds(&p),
            [
                "apply-deploy create=false",
                "delete-svc f uid-s",
                "apply-svc create=true"
            ]
        );
    }

    #[test]
    fn other_modes_delete_only_ours() {
        let obs = observed_for(&standalone_async());
        let p = plan(&sidecar(), &obs, &ProxySettings::default());
        assert_eq!(p.mode, Mode::Sidecar);
        assert_eq!(
            kinds(&p),
            ["delete-deploy f-dapr-proxy uid-d", "delete-svc f uid-s"]
        );
        let disabled = func(json!({"openfunction.io/enable-dapr": "false"}), "async");
        let p = plan(&disabled, &obs, &ProxySettings::default());
        assert_eq!(p.mode, Mode::Disabled);
        assert_eq!(p.steps.len(), 2);

        // foreign-owned or unlabelled objects of the same names are untouched
        let mut foreign = observed_for(&standalone_async());
        for r in Arc::make_mut(foreign.proxy.as_mut().unwrap())
            .metadata
            .owner_references
            .iter_mut()
            .flatten()
        {
            r.uid = "someone-else".into();
        }
        Arc::make_mut(foreign.service.as_mut().unwrap())
            .metadata
            .labels = None;
        let p = plan(&sidecar(), &foreign, &ProxySettings::default());
        assert!(p.steps.is_empty(), "{:?}", kinds(&p));
        // and in standalone they are reported, not overwritten
        let p = plan(&standalone_async(), &foreign, &ProxySettings::default());
        assert_eq!(
            kinds(&p),
            ["conflict Deployment f-dapr-proxy", "conflict Service f"]
        );
    }

    #[test]
    fn objects_being_deleted_are_left_to_finish() {
        let mut obs = observed_for(&standalone_async());
        let ts: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time =
            serde_json::from_value(json!("2024-01-01T00:00:00Z")).unwrap();
        Arc::make_mut(obs.proxy.as_mut().unwrap())
            .metadata
            .deletion_timestamp = Some(ts.clone());
        Arc::make_mut(obs.service.as_mut().unwrap())
            .metadata
            .deletion_timestamp = Some(ts.clone());
        assert!(
            plan(&sidecar(), &obs, &ProxySettings::default())
                .steps
                .is_empty()
        );
        assert!(
            plan(&standalone_async(), &obs, &ProxySettings::default())
                .steps
                .is_empty()
        );
        // a Function being deleted gets nothing
        let mut f = standalone_async();
        f.metadata.deletion_timestamp = Some(ts);
        assert!(
            plan(&f, &Observed::default(), &ProxySettings::default())
                .steps
                .is_empty()
        );
        // nor one without uid
        let mut f = standalone_async();
        f.metadata.uid = None;
        assert!(
            plan(&f, &Observed::default(), &ProxySettings::default())
                .steps
                .is_empty()
        );
    }

    #[test]
    fn admitted_mode_inference() {
        let host = json!([{"name": "DAPR_HOST", "value": "f-ns-dapr.ns.svc.cluster.local"}]);
        assert_eq!(
            admitted_mode(&workload(
                "a",
                "f",
                json!({"dapr.io/enabled": "true"}),
                json!([])
            )),
            Some(Mode::Sidecar)
        );
        assert_eq!(
            admitted_mode(&workload(
                "a",
                "f",
                json!({"dapr.io/enabled": "false"}),
                host.clone()
            )),
            Some(Mode::Standalone)
        );
        assert_eq!(
            admitted_mode(&workload(
                "a",
                "f",
                json!({"dapr.io/enabled": "false"}),
                json!([])
            )),
            Some(Mode::Disabled)
        );
        // a DAPR_HOST of another namespace is not our proxy
        assert_eq!(
            admitted_mode(&workload(
                "a",
                "f",
                json!({"dapr.io/enabled": "false"}),
                json!([{"name": "DAPR_HOST", "value": "x-dapr.other.svc"}])
            )),
            Some(Mode::Disabled)
        );
        assert_eq!(
            admitted_mode(&workload("a", "f", json!({}), json!([]))),
            None
        );
        // our annotation wins
        assert_eq!(
            admitted_mode(&workload(
                "a",
                "f",
                json!({"dapr.io/enabled": "true", "openfunction.io/dapr-mode": "standalone"}),
                json!([])
            )),
            Some(Mode::Standalone)
        );
    }

    #[test]
    fn rolls_only_deployments_admitted_in_another_mode() {
        let host = json!([{"name": "DAPR_HOST", "value": "f-ns-dapr.ns.svc.cluster.local"}]);
        let mut obs = observed_for(&standalone_async());
        obs.function_deployments = vec![
            workload(
                "b-sidecar",
                "f",
                json!({"dapr.io/enabled": "true"}),
                json!([]),
            ),
            workload(
                "a-standalone",
                "f",
                json!({"dapr.io/enabled": "false"}),
                host,
            ),
            workload(
                "c-marked",
                "f",
                json!({"openfunction.io/dapr-mode": "standalone"}),
                json!([]),
            ),
            workload("d-never-admitted", "f", json!({}), json!([])),
            workload(
                "e-other-fn",
                "g",
                json!({"dapr.io/enabled": "true"}),
                json!([]),
            ),
        ];
        let p = plan(&standalone_async(), &obs, &ProxySettings::default());
        assert_eq!(
            kinds(&p),
            [
                "roll b-sidecar Some(Sidecar)->standalone",
                "roll d-never-admitted None->standalone"
            ]
        );
        let p = plan(&sidecar(), &obs, &ProxySettings::default());
        assert_eq!(
            kinds(&p),
            [
                "delete-deploy f-dapr-proxy uid-d",
                "delete-svc f uid-s",
                "roll a-standalone Some(Standalone)->sidecar",
                "roll c-marked Some(Standalone)->sidecar",
                "roll d-never-admitted None->sidecar"
            ]
        );
    }

    #[test]
    fn warnings_are_reported() {
        let f = func(
            json!({"openfunction.io/dapr-service-mode": "proxy", "openfunction.io/dapr-proxy-replicas": "many"}),
            "async",
        );
        let p = plan(&f, &Observed::default(), &ProxySettings::default());
        assert_eq!(p.mode, Mode::Standalone);
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
    }

    #[test]
    fn subset_semantics() {
        assert!(value_subset(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!value_subset(&json!({"a": 1}), &json!({"a": 2})));
        assert!(!value_subset(&json!({"a": 1}), &json!({})));
        assert!(value_subset(&json!({"a": null}), &json!({})));
        assert!(value_subset(
            &json!([{"name": "x", "v": 1}]),
            &json!([{"name": "y", "v": 2}, {"name": "x", "v": 1, "w": 3}])
        ));
        assert!(!value_subset(
            &json!([{"name": "x", "v": 1}]),
            &json!([{"name": "x", "v": 2}])
        ));
        assert!(value_subset(&json!(["ALL"]), &json!(["ALL", "NET_RAW"])));
        assert!(!value_subset(&json!(["ALL"]), &json!([])));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn parse_modes() {
        for m in [Mode::Disabled, Mode::Sidecar, Mode::Standalone] {
            assert_eq!(parse_mode(m.as_str()), Some(m));
        }
        assert_eq!(parse_mode("proxy"), None);
    }
}
