//! Pure builders of the objects the controller maintains for a Function in
//! standalone mode (SPEC section 6): the shared Dapr proxy Deployment
//! `<fn>-dapr-proxy` and, for async functions, the function Service `<fn>`.
//!
//! Nothing here does IO: the controller and the offline `inject` command
//! both call these builders, so what `inject` prints is exactly what the
//! controller applies.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecurityContext, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::model::func_context::{
    ENV_FUNC_CONTEXT, ENV_FUNC_CONTEXT_V1BETA2, func_context, func_context_v1beta2,
};
use crate::model::function::{FUNCTION_LABEL, Function, FunctionSpec};
use crate::model::mode::{self, Resolved};

/// Label naming the Function a proxy belongs to (`openfunction.io/proxy: <fn>`).
/// Pods carrying it are never function workloads.
pub const PROXY_LABEL: &str = crate::model::function::PROXY_LABEL;
/// Label marking objects created on behalf of OpenFunction.
pub const MANAGED_LABEL: &str = "openfunction.io/managed";
/// `app.kubernetes.io/name`
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/component`
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// `app.kubernetes.io/managed-by`
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`] on every object this project writes.
pub const MANAGED_BY: &str = "openfunction-dapr";
/// Label selector matching every object this project writes.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=openfunction-dapr";

/// Name of the proxy (the `app.kubernetes.io/name` label and the container).
pub const PROXY_APP_NAME: &str = "dapr-proxy";
/// Name of the proxy container port.
pub const FUNCTION_PORT_NAME: &str = "function-port";
/// Name of the function Service port.
pub const SERVICE_PORT_NAME: &str = "http";
/// Value of [`COMPONENT_LABEL`] on the function Service.
pub const SERVICE_COMPONENT: &str = "function-service";

/// `spec.serving.annotations` key: number of proxy replicas (default 1).
pub const REPLICAS_ANNOTATION: &str = "openfunction.io/dapr-proxy-replicas";
/// Pod-template annotation the controller changes to roll function
/// Deployments when the mode of their Function changes.
pub const MODE_ANNOTATION: &str = "openfunction.io/dapr-mode";
/// Default number of proxy replicas.
pub const DEFAULT_REPLICAS: i32 = 1;

/// Default proxy image (`--proxy-image`): this project's own image, the
/// same reference the install manifests use, running `openfunction-dapr
/// proxy`.
pub const DEFAULT_PROXY_IMAGE: &str = concat!("openfunction-dapr:", env!("CARGO_PKG_VERSION"));
/// Upstream's Go proxy, which an operator can still choose.
pub const UPSTREAM_PROXY_IMAGE: &str = "openfunction/dapr-proxy:v0.1.0";
/// Admin port (health, metrics) of our proxy (`proxy --admin-addr`).
pub const PROXY_ADMIN_PORT: i32 = 9091;
/// Name of that container port.
pub const PROXY_ADMIN_PORT_NAME: &str = "proxy-admin";
/// Default CPU request of the proxy container.
pub const DEFAULT_CPU_REQUEST: &str = "50m";
/// Default memory request of the proxy container.
pub const DEFAULT_MEMORY_REQUEST: &str = "64Mi";
/// Non-root user and group the proxy runs as.
pub const PROXY_UID: i64 = 65532;

/// `dapr.io/log-as-json`
pub const DAPR_LOG_AS_JSON: &str = "dapr.io/log-as-json";
/// `dapr.io/sidecar-listen-addresses`
pub const DAPR_LISTEN_ADDRESSES: &str = "dapr.io/sidecar-listen-addresses";
/// daprd listens on every address so function pods can reach it.
pub const LISTEN_ALL_ADDRESSES: &str = "[::],0.0.0.0";

/// Compute resources of the proxy container. `None` leaves the value out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyResources {
    pub cpu_request: Option<String>,
    pub memory_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
}

impl Default for ProxyResources {
    fn default() -> Self {
        Self {
            cpu_request: Some(DEFAULT_CPU_REQUEST.to_owned()),
            memory_request: Some(DEFAULT_MEMORY_REQUEST.to_owned()),
            cpu_limit: None,
            memory_limit: None,
        }
    }
}

/// What the builders need besides the Function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySettings {
    /// Image of the proxy container.
    pub image: String,
    /// Cluster DNS domain (used to resolve the Function's settings).
    pub cluster_domain: String,
    /// Requests and limits of the proxy container.
    pub resources: ProxyResources,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            image: DEFAULT_PROXY_IMAGE.to_owned(),
            cluster_domain: mode::DEFAULT_CLUSTER_DOMAIN.to_owned(),
            resources: ProxyResources::default(),
        }
    }
}

/// Whether `image` is upstream's Go proxy (`.../dapr-proxy[:tag][@digest]`),
/// which takes no arguments, rather than this project's image, which runs
/// the `proxy` subcommand.
pub fn is_upstream_proxy_image(image: &str) -> bool {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let name = last.split(':').next().unwrap_or(last);
    name == "dapr-proxy"
}

/// `<fn>-dapr-proxy`
pub fn proxy_deployment_name(function: &str) -> String {
    format!("{function}-dapr-proxy")
}

/// `<fn>`
pub fn function_service_name(function: &str) -> String {
    function.to_owned()
}

/// The namespace a Function's objects live in (`default` when the Function,
/// e.g. read from a file, names none).
pub fn function_namespace(func: &Function) -> &str {
    func.metadata.namespace.as_deref().unwrap_or("default")
}

/// Resolve the mode and derived settings of `func` (SPEC sections 3 and 4).
pub fn resolve_function(func: &Function, settings: &ProxySettings) -> Resolved {
    mode::resolve(
        func_name(func),
        function_namespace(func),
        &func.spec,
        &settings.cluster_domain,
    )
}

fn func_name(func: &Function) -> &str {
    func.metadata.name.as_deref().unwrap_or_default()
}

/// Number of proxy replicas from `openfunction.io/dapr-proxy-replicas`,
/// and a warning when the value is not a non-negative integer (then 1).
pub fn proxy_replicas(spec: &FunctionSpec) -> (i32, Option<String>) {
    match spec
        .serving_annotations()
        .and_then(|a| a.get(REPLICAS_ANNOTATION))
    {
        None => (DEFAULT_REPLICAS, None),
        Some(v) => match v.trim().parse::<i32>() {
            Ok(n) if n >= 0 => (n, None),
            _ => (
                DEFAULT_REPLICAS,
                Some(format!(
                    "annotation {REPLICAS_ANNOTATION}: {v:?} is not a non-negative integer; \
                     the proxy runs {DEFAULT_REPLICAS} replica"
                )),
            ),
        },
    }
}

/// Every problem with the Function's annotations that matters to the
/// controller: the warnings of [`mode::resolve`] plus, in standalone mode,
/// an invalid replicas annotation.
pub fn function_warnings(func: &Function, settings: &ProxySettings) -> Vec<String> {
    let resolved = resolve_function(func, settings);
    let mut warnings = resolved.warnings;
    if resolved.mode == mode::Mode::Standalone
        && let (_, Some(w)) = proxy_replicas(&func.spec)
    {
        warnings.push(w);
    }
    warnings
}

/// Labels of the proxy Deployment and its pods.
pub fn proxy_labels(function: &str) -> BTreeMap<String, String> {
    [
        (PROXY_LABEL, function),
        (MANAGED_LABEL, "true"),
        (NAME_LABEL, PROXY_APP_NAME),
        (INSTANCE_LABEL, function),
        (MANAGED_BY_LABEL, MANAGED_BY),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Labels of the function Service. It carries neither the proxy nor the
/// function label: it is not a workload.
pub fn service_labels(function: &str) -> BTreeMap<String, String> {
    [
        (MANAGED_LABEL, "true"),
        (NAME_LABEL, function),
        (INSTANCE_LABEL, function),
        (COMPONENT_LABEL, SERVICE_COMPONENT),
        (MANAGED_BY_LABEL, MANAGED_BY),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Pod annotations of the proxy: the user's `dapr.io/*` annotations, then
/// the defaults where absent, and `dapr.io/enabled: "true"` forced.
pub fn proxy_pod_annotations(resolved: &Resolved, spec: &FunctionSpec) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = spec
        .serving_annotations()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("dapr.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // The resolved app id and protocol are the user's values trimmed, or the
    // defaults when absent or blank: the same values the webhook uses.
    out.insert(mode::APP_ID.to_owned(), resolved.app_id.clone());
    out.insert(mode::APP_PROTOCOL.to_owned(), resolved.app_protocol.clone());
    out.entry(mode::APP_PORT.to_owned())
        .or_insert_with(|| resolved.app_port.to_string());
    out.entry(DAPR_LOG_AS_JSON.to_owned())
        .or_insert_with(|| "true".to_owned());
    out.entry(DAPR_LISTEN_ADDRESSES.to_owned())
        .or_insert_with(|| LISTEN_ALL_ADDRESSES.to_owned());
    out.insert(mode::DAPR_ENABLED.to_owned(), "true".to_owned());
    out
}

/// The controller ownerReference to `func` (`controller: true`,
/// `blockOwnerDeletion: true`), when the Function has a uid (a Function read
/// from a file has none).
pub fn owner_reference(func: &Function) -> Option<OwnerReference> {
    let uid = func.metadata.uid.clone()?;
    Some(OwnerReference {
        // the version the Function was read as: never one that needs
        // OpenFunction's conversion webhook
        api_version: func.read_version().api_version().to_owned(),
        kind: "Function".to_owned(),
        name: func_name(func).to_owned(),
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

fn object_meta(func: &Function, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: func.metadata.namespace.clone(),
        labels: Some(labels),
        owner_references: owner_reference(func).map(|r| vec![r]),
        ..Default::default()
    }
}

fn quantities(pairs: [(&str, &Option<String>); 2]) -> Option<BTreeMap<String, Quantity>> {
    let map: BTreeMap<String, Quantity> = pairs
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_owned(), Quantity(v.clone()))))
        .collect();
    (!map.is_empty()).then_some(map)
}

fn env_value(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value),
        value_from: None,
    }
}

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".to_owned()),
                field_path: path.to_owned(),
            }),
            ..Default::default()
        }),
    }
}

/// The proxy Deployment `<fn>-dapr-proxy` of `func` (SPEC section 6).
///
/// It does not look at the mode: callers build it for standalone Functions.
pub fn desired_proxy_deployment(func: &Function, settings: &ProxySettings) -> Deployment {
    let name = func_name(func);
    let resolved = resolve_function(func, settings);
    let (replicas, _) = proxy_replicas(&func.spec);
    let labels = proxy_labels(name);
    let res = &settings.resources;

    let ours = !is_upstream_proxy_image(&settings.image);
    let mut ports = vec![ContainerPort {
        name: Some(FUNCTION_PORT_NAME.to_owned()),
        container_port: resolved.app_port,
        protocol: Some("TCP".to_owned()),
        ..Default::default()
    }];
    if ours {
        ports.push(ContainerPort {
            name: Some(PROXY_ADMIN_PORT_NAME.to_owned()),
            container_port: PROXY_ADMIN_PORT,
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        });
    }
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(PROXY_ADMIN_PORT_NAME.to_owned()),
            ..Default::default()
        }),
        period_seconds: Some(10),
        ..Default::default()
    };
    let container = Container {
        name: PROXY_APP_NAME.to_owned(),
        image: Some(settings.image.clone()),
        // Our image runs `openfunction-dapr proxy` (admin port 9091);
        // upstream's runs its proxy with no arguments.
        args: ours.then(|| vec!["proxy".to_owned()]),
        readiness_probe: ours.then(|| probe("/readyz")),
        liveness_probe: ours.then(|| probe("/livez")),
        ports: Some(ports),
        env: Some(
            [env_value(ENV_FUNC_CONTEXT, func_context(name, &func.spec))]
                .into_iter()
                .chain(
                    func_context_v1beta2(name, &func.spec)
                        .map(|v| env_value(ENV_FUNC_CONTEXT_V1BETA2, v)),
                )
                .chain([
                    env_value("APP_PROTOCOL", resolved.app_protocol.clone()),
                    env_field("POD_NAME", "metadata.name"),
                    env_field("POD_NAMESPACE", "metadata.namespace"),
                ])
                .collect(),
        ),
        resources: Some(ResourceRequirements {
            requests: quantities([("cpu", &res.cpu_request), ("memory", &res.memory_request)]),
            limits: quantities([("cpu", &res.cpu_limit), ("memory", &res.memory_limit)]),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };

    Deployment {
        metadata: object_meta(func, proxy_deployment_name(name), labels.clone()),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([(PROXY_LABEL.to_owned(), name.to_owned())])),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(proxy_pod_annotations(&resolved, &func.spec)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(PROXY_UID),
                        run_as_group: Some(PROXY_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// True unless the app protocol is `http` or `https`: the proxy balances
/// gRPC over the pod addresses itself, so the Service is headless.
pub fn is_headless(app_protocol: &str) -> bool {
    !(app_protocol.eq_ignore_ascii_case("http") || app_protocol.eq_ignore_ascii_case("https"))
}

/// The function Service `<fn>` the proxy forwards events to; `None` unless
/// the Function's runtime is async. It does not look at the mode.
pub fn desired_function_service(func: &Function, settings: &ProxySettings) -> Option<Service> {
    if !func.spec.is_async() {
        return None;
    }
    let name = func_name(func);
    let resolved = resolve_function(func, settings);
    Some(Service {
        metadata: object_meta(func, function_service_name(name), service_labels(name)),
        spec: Some(ServiceSpec {
            cluster_ip: is_headless(&resolved.app_protocol).then(|| "None".to_owned()),
            ports: Some(vec![ServicePort {
                name: Some(SERVICE_PORT_NAME.to_owned()),
                port: resolved.app_port,
                target_port: Some(IntOrString::Int(resolved.app_port)),
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            }]),
            selector: Some(BTreeMap::from([(
                FUNCTION_LABEL.to_owned(),
                name.to_owned(),
            )])),
            ..Default::default()
        }),
        status: None,
    })
}

/// True when `meta` carries our labels **and** a controller ownerReference
/// to the Function with uid `func_uid`. Only such objects are ever changed
/// or deleted by the controller.
pub fn is_owned_by(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    func_uid: &str,
) -> bool {
    let labels = meta.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    label(MANAGED_BY_LABEL) == Some(MANAGED_BY)
        && label(MANAGED_LABEL) == Some("true")
        && !func_uid.is_empty()
        && meta.owner_references.iter().flatten().any(|r| {
            r.controller == Some(true)
                && r.uid == func_uid
                && r.kind == "Function"
                && r.api_version.starts_with("core.openfunction.io/")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn function(annotations: serde_json::Value, runtime: &str) -> Function {
        serde_json::from_value(json!({
            "apiVersion": "core.openfunction.io/v1beta1",
            "kind": "Function",
            "metadata": {"name": "fn1", "namespace": "ns", "uid": "u-1"},
            "spec": {
                "image": "img",
                "serving": {
                    "runtime": runtime,
                    "annotations": annotations,
                    "outputs": [{"name": "o", "component": "c"}]
                }
            }
        }))
        .unwrap()
    }

    #[test]
    fn our_image_runs_the_proxy_subcommand_upstreams_takes_no_args() {
        let f = function(json!({}), "async");
        let container = |image: &str| {
            let settings = ProxySettings {
                image: image.to_owned(),
                ..ProxySettings::default()
            };
            let d = desired_proxy_deployment(&f, &settings);
            d.spec.unwrap().template.spec.unwrap().containers.remove(0)
        };
        let ours = container(DEFAULT_PROXY_IMAGE);
        assert_eq!(ours.image.as_deref(), Some("openfunction-dapr:0.1.0"));
        assert_eq!(ours.args, Some(vec!["proxy".to_owned()]));
        assert!(ours.readiness_probe.is_some() && ours.liveness_probe.is_some());
        assert_eq!(ours.ports.as_ref().map(Vec::len), Some(2));
        for upstream in [
            UPSTREAM_PROXY_IMAGE,
            "registry.example.com/mirror/dapr-proxy:v0.1.0",
            "openfunction/dapr-proxy@sha256:abc",
            "dapr-proxy",
        ] {
            let c = container(upstream);
            assert_eq!(c.args, None, "{upstream}");
            assert!(c.readiness_probe.is_none(), "{upstream}");
            assert_eq!(c.ports.as_ref().map(Vec::len), Some(1));
        }
        // A registry with a port is not a tag.
        assert!(!is_upstream_proxy_image(
            "localhost:5000/openfunction-dapr:0.1.0"
        ));
        assert!(is_upstream_proxy_image("localhost:5000/dapr-proxy:1"));
    }

    #[test]
    fn replicas_annotation() {
        for (v, n, warn) in [
            ("3", 3, false),
            (" 2 ", 2, false),
            ("0", 0, false),
            ("-1", 1, true),
            ("two", 1, true),
            ("", 1, true),
            ("1.5", 1, true),
        ] {
            let f = function(json!({ REPLICAS_ANNOTATION: v }), "knative");
            let (r, w) = proxy_replicas(&f.spec);
            assert_eq!(r, n, "{v:?}");
            assert_eq!(w.is_some(), warn, "{v:?}");
            let d = desired_proxy_deployment(&f, &ProxySettings::default());
            assert_eq!(d.spec.unwrap().replicas, Some(n));
        }
        let f = function(json!({}), "knative");
        assert_eq!(proxy_replicas(&f.spec), (1, None));
    }

    #[test]
    fn replicas_warning_only_in_standalone() {
        let s = ProxySettings::default();
        let f = function(json!({ REPLICAS_ANNOTATION: "x" }), "knative");
        assert_eq!(function_warnings(&f, &s).len(), 1);
        let f = function(
            json!({ REPLICAS_ANNOTATION: "x", "openfunction.io/dapr-service-mode": "sidecar" }),
            "knative",
        );
        assert!(function_warnings(&f, &s).is_empty());
    }

    #[test]
    fn pod_annotations_pass_user_dapr_annotations_and_force_enabled() {
        let f = function(
            json!({
                "dapr.io/enabled": "false",
                "dapr.io/app-port": "9999",
                "dapr.io/log-level": "debug",
                "dapr.io/log-as-json": "false",
                "dapr.io/app-id": " custom ",
                "other.io/x": "y",
                "openfunction.io/enable-dapr": "true"
            }),
            "knative",
        );
        let d = desired_proxy_deployment(&f, &ProxySettings::default());
        let ann = d
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap();
        assert_eq!(ann["dapr.io/enabled"], "true");
        assert_eq!(ann["dapr.io/app-port"], "9999");
        assert_eq!(ann["dapr.io/log-level"], "debug");
        assert_eq!(ann["dapr.io/log-as-json"], "false");
        assert_eq!(ann["dapr.io/app-id"], "custom");
        assert_eq!(ann["dapr.io/app-protocol"], "grpc");
        assert_eq!(ann["dapr.io/sidecar-listen-addresses"], "[::],0.0.0.0");
        assert!(!ann.contains_key("other.io/x"));
        assert!(!ann.contains_key("openfunction.io/enable-dapr"));
    }

    #[test]
    fn service_only_for_async_and_headless_unless_http() {
        let s = ProxySettings::default();
        assert!(desired_function_service(&function(json!({}), "knative"), &s).is_none());
        for (proto, headless) in [
            ("grpc", true),
            ("http", false),
            ("https", false),
            ("h2c", true),
            ("grpcs", true),
        ] {
            let f = function(json!({ "dapr.io/app-protocol": proto }), "async");
            let svc = desired_function_service(&f, &s).unwrap();
            let spec = svc.spec.unwrap();
            assert_eq!(spec.cluster_ip.is_some(), headless, "{proto}");
            assert_eq!(spec.selector.unwrap()[FUNCTION_LABEL], "fn1");
        }
    }

    #[test]
    fn owner_reference_and_ownership() {
        let f = function(json!({}), "async");
        let d = desired_proxy_deployment(&f, &ProxySettings::default());
        assert!(is_owned_by(&d.metadata, "u-1"));
        assert!(!is_owned_by(&d.metadata, "u-2"));
        assert!(!is_owned_by(&d.metadata, ""));
        let svc = desired_function_service(&f, &ProxySettings::default()).unwrap();
        assert!(is_owned_by(&svc.metadata, "u-1"));

        // labels missing
        let mut m = d.metadata.clone();
        m.labels.as_mut().unwrap().remove(MANAGED_BY_LABEL);
        assert!(!is_owned_by(&m, "u-1"));
        // owner but not controller
        let mut m = d.metadata.clone();
        m.owner_references.as_mut().unwrap()[0].controller = Some(false);
        assert!(!is_owned_by(&m, "u-1"));
        // controller of another kind with the same uid
        let mut m = d.metadata.clone();
        m.owner_references.as_mut().unwrap()[0].kind = "Serving".into();
        assert!(!is_owned_by(&m, "u-1"));

        // a Function without uid (read from a file) gets no ownerReference
        let mut f = f;
        f.metadata.uid = None;
        let d = desired_proxy_deployment(&f, &ProxySettings::default());
        assert!(d.metadata.owner_references.is_none());
    }

    #[test]
    fn resources_settings() {
        let f = function(json!({}), "knative");
        let s = ProxySettings {
            resources: ProxyResources {
                cpu_request: None,
                memory_request: Some("32Mi".into()),
                cpu_limit: Some("1".into()),
                memory_limit: None,
            },
            ..Default::default()
        };
        let d = desired_proxy_deployment(&f, &s);
        let r = d.spec.unwrap().template.spec.unwrap().containers[0]
            .resources
            .clone()
            .unwrap();
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"requests": {"memory": "32Mi"}, "limits": {"cpu": "1"}})
        );
    }
}
