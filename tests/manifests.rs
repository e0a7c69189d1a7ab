//! The install manifests (`manifests/`), as `kubectl kustomize` renders
//! them: every object is there with the settings an operator relies on, the
//! pieces agree with each other and with the binary (the webhook path, the
//! ports, the flags, parsed by the real command line), and the RBAC grants
//! nothing beyond an explicit allow-list.
//!
//! Needs `kubectl` (its built-in kustomize); without it the tests say so and
//! pass.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use clap::Parser;
use openfunction_dapr::cli::{Cli, Command as Sub, LogFormat, ServeArgs};
use openfunction_dapr::model::function::WIRED_LABEL;
use openfunction_dapr::ops::certs;
use openfunction_dapr::webhook::MUTATE_PATH;
use serde_json::{Value, json};

#[path = "../bench/webhook_match.rs"]
mod webhook_match;

const NAMESPACE: &str = "openfunction-dapr";
const SERVICE_ACCOUNT: &str = "openfunction-dapr";
const LEASE: &str = "openfunction-dapr-controller";

/// Renders `manifests/<dir>`; `None` (with a message) without kubectl.
fn render(dir: &str) -> Option<Vec<Value>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests")
        .join(dir);
    let out = match Command::new("kubectl").arg("kustomize").arg(&path).output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!(
                "SKIPPED: kubectl not available ({e}); cannot render {}",
                path.display()
            );
            return None;
        }
    };
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 output");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("rendered YAML parses");
    Some(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn all<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = all(docs, kind);
    assert_eq!(found.len(), 1, "expected exactly one {kind}");
    found[0]
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn container(deployment: &Value) -> &Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    &containers[0]
}

/// The container's args, parsed by the binary's own command line.
fn serve_args(deployment: &Value) -> (ServeArgs, LogFormat) {
    let args = strings(&container(deployment)["args"]);
    assert_eq!(args.first(), Some(&"serve"), "the container runs `serve`");
    let cli = Cli::try_parse_from(std::iter::once("openfunction-dapr").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("the Deployment's args do not parse: {e}\n{args:?}"));
    match cli.command {
        Sub::Serve(serve) => (*serve, cli.log_format),
        other => panic!("not serve: {other:?}"),
    }
}

/// The number of a container port given by number or by name.
fn resolve_port(container: &Value, port: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = port.as_str().expect("port is a number or a name");
    container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .expect("matchLabels")
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn default_install_has_every_object() {
    let Some(docs) = render(".") else { return };
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "MutatingWebhookConfiguration",
        "CustomResourceDefinition",
    ] {
        assert!(kinds.contains(kind), "no {kind} in the default install");
    }
    let allowed: BTreeSet<&str> = [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "MutatingWebhookConfiguration",
        "CustomResourceDefinition",
    ]
    .into();
    assert!(kinds.is_subset(&allowed), "unexpected kinds: {kinds:?}");
    assert_eq!(one(&docs, "Namespace")["metadata"]["name"], NAMESPACE);
    let namespaced = [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ];
    for d in &docs {
        if namespaced.contains(&d["kind"].as_str().unwrap()) {
            assert_eq!(
                d["metadata"]["namespace"], NAMESPACE,
                "{}",
                d["metadata"]["name"]
            );
        }
    }

    // Only the Function CRD, exactly the generated one.
    let crd = one(&docs, "CustomResourceDefinition");
    let mut generated =
        serde_json::to_value(openfunction_dapr::model::crd::function_crd()).unwrap();
    generated["metadata"]["labels"] = json!({"app.kubernetes.io/part-of": "openfunction-dapr"});
    assert_eq!(crd, &generated);
}

#[test]
fn base_has_no_crd_and_the_rest() {
    let Some(base) = render("base") else { return };
    let Some(full) = render(".") else { return };
    assert!(all(&base, "CustomResourceDefinition").is_empty());
    let without_crd: Vec<Value> = full
        .into_iter()
        .filter(|d| d["kind"] != "CustomResourceDefinition")
        .collect();
    assert_eq!(base, without_crd);
}

#[test]
fn deployment_is_production_ready() {
    let Some(docs) = render(".") else { return };
    let d = one(&docs, "Deployment");
    let spec = &d["spec"];
    let pod = &spec["template"]["spec"];
    let pod_labels = &spec["template"]["metadata"]["labels"];
    let c = container(d);

    assert_eq!(spec["replicas"], 2);
    assert!(labels_match(&spec["selector"]["matchLabels"], pod_labels));
    assert_eq!(spec["strategy"]["type"], "RollingUpdate");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    assert_eq!(pod["serviceAccountName"], SERVICE_ACCOUNT);

    // Anti-affinity: preferred, by host name, on our own pods.
    let terms =
        pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .expect("preferred pod anti-affinity");
    assert!(terms.iter().any(|t| {
        t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
            && labels_match(
                &t["podAffinityTerm"]["labelSelector"]["matchLabels"],
                pod_labels,
            )
    }));
    assert!(
        pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            .is_null()
    );

    // Restricted security context.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert!(sc["capabilities"]["add"].is_null());
    assert!(sc["privileged"].is_null() || sc["privileged"] == false);

    // Resources: requests, a memory limit, no CPU limit.
    let r = &c["resources"];
    assert_eq!(r["requests"]["cpu"], "50m");
    assert_eq!(r["requests"]["memory"], "32Mi");
    assert_eq!(r["limits"]["memory"], "128Mi");
    assert!(r["limits"]["cpu"].is_null(), "no CPU limit");

    // Downward API.
    let env = c["env"].as_array().expect("env");
    for (name, path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let var = env
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(var["valueFrom"]["fieldRef"]["fieldPath"], path, "{name}");
    }

    // The args, as the binary reads them.
    let (args, log_format) = serve_args(d);
    assert_eq!(log_format, LogFormat::Json);
    assert!(args.local.is_none() && args.tls_cert.is_none());
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace period");
    assert!(
        grace as f64 > (args.shutdown_delay + args.drain_timeout).as_secs_f64(),
        "terminationGracePeriodSeconds {grace} must exceed shutdown delay + drain timeout"
    );

    // Probes hit the admin port, on the paths the admin server serves.
    let admin = u64::from(args.admin_addr.port());
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/livez")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(resolve_port(c, &get["port"]), admin, "{probe} port");
        assert!(get["scheme"].is_null() || get["scheme"] == "HTTP");
    }
    assert_eq!(admin, 9090);
    assert_eq!(args.addr.port(), 9443);

    // A PodDisruptionBudget over the same pods.
    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(labels_match(
        &pdb["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
}

#[test]
fn service_and_webhook_agree_with_the_server() {
    let Some(docs) = render(".") else { return };
    let d = one(&docs, "Deployment");
    let c = container(d);
    let (args, _) = serve_args(d);
    let svc = one(&docs, "Service");
    let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
    assert!(labels_match(&svc["spec"]["selector"], pod_labels));
    let ports = svc["spec"]["ports"].as_array().expect("ports");
    assert_eq!(ports.len(), 1);
    let port = &ports[0];
    assert_eq!(port["port"], 443);
    assert!(
        port["name"].as_str().is_some_and(|n| !n.is_empty()),
        "named port"
    );
    assert_eq!(
        resolve_port(c, &port["targetPort"]),
        u64::from(args.addr.port()),
        "Service targetPort = container port = --addr"
    );
    let svc_name = svc["metadata"]["name"].as_str().unwrap();
    let svc_ns = svc["metadata"]["namespace"].as_str().unwrap();
    assert_eq!(
        args.webhook_service, svc_name,
        "the certificate is made for this Service"
    );

    let config = one(&docs, "MutatingWebhookConfiguration");
    let config_name = config["metadata"]["name"].as_str().unwrap();
    assert!(
        config_name < "dapr-sidecar-injector",
        "{config_name} must sort before dapr-sidecar-injector"
    );
    assert_eq!(args.webhook_config_name, config_name);
    assert_eq!(config_name, certs::DEFAULT_WEBHOOK_CONFIG_NAME);

    let webhooks = config["webhooks"].as_array().expect("webhooks");
    assert_eq!(webhooks.len(), 5);
    let by_name: BTreeMap<&str, &Value> = webhooks
        .iter()
        .map(|w| (w["name"].as_str().unwrap(), w))
        .collect();
    for w in webhooks {
        let name = w["name"].as_str().unwrap();
        let service = &w["clientConfig"]["service"];
        assert_eq!(service["name"], svc_name, "{name}");
        assert_eq!(service["namespace"], svc_ns, "{name}");
        assert_eq!(service["path"], MUTATE_PATH, "{name}");
        assert_eq!(service["port"], port["port"], "{name}");
        assert!(w["clientConfig"]["url"].is_null());
        assert_eq!(w["sideEffects"], "None", "{name}");
        assert_eq!(strings(&w["admissionReviewVersions"]), ["v1"], "{name}");
        let timeout = w["timeoutSeconds"].as_u64().expect("timeoutSeconds");
        assert!((1..=5).contains(&timeout), "{name}: timeout {timeout}");
        let expr = &w["namespaceSelector"]["matchExpressions"][0];
        assert_eq!(expr["key"], "kubernetes.io/metadata.name", "{name}");
        assert_eq!(expr["operator"], "NotIn", "{name}");
        let excluded = strings(&expr["values"]);
        assert!(
            excluded.contains(&NAMESPACE) && excluded.contains(&"kube-system"),
            "{name}"
        );
    }

    let pod_rules = json!([
        {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"], "scope": "Namespaced"},
    ]);
    let deployment_rules = json!([
        {"apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments"], "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"},
    ]);
    let function_sel = json!([
        {"key": "openfunction.io/function", "operator": "Exists"},
        {"key": "openfunction.io/proxy", "operator": "DoesNotExist"},
    ]);
    let serving_sel = json!([
        {"key": "openfunction.io/serving", "operator": "Exists"},
        {"key": "openfunction.io/function", "operator": "DoesNotExist"},
        {"key": "openfunction.io/proxy", "operator": "DoesNotExist"},
    ]);
    let not_wired = |sel: &Value| {
        let mut sel = sel.clone();
        sel.as_array_mut()
            .unwrap()
            .push(json!({"key": WIRED_LABEL, "operator": "DoesNotExist"}));
        sel
    };
    for (name, rules, selector) in [
        (
            "function-deployments",
            &deployment_rules,
            function_sel.clone(),
        ),
        (
            "serving-deployments",
            &deployment_rules,
            serving_sel.clone(),
        ),
        ("function-pods", &pod_rules, not_wired(&function_sel)),
        ("serving-pods", &pod_rules, not_wired(&serving_sel)),
    ] {
        let w = by_name[format!("{name}.openfunction-dapr.openfunction.io").as_str()];
        assert_eq!(w["failurePolicy"], "Fail", "{name}");
        assert_eq!(w["reinvocationPolicy"], "IfNeeded", "{name}");
        assert_eq!(&w["rules"], rules, "{name}");
        assert_eq!(w["objectSelector"]["matchExpressions"], selector, "{name}");
    }
    let functions = by_name["functions.openfunction-dapr.openfunction.io"];
    assert_eq!(functions["failurePolicy"], "Ignore");
    assert_eq!(
        functions["rules"],
        json!([{"apiGroups": ["core.openfunction.io"], "apiVersions": ["v1beta1"], "resources": ["functions"], "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}])
    );
}

/// One grant: (role kind, role namespace, apiGroup, resource, verb,
/// resourceNames).
type Grant = (String, String, String, String, String, Vec<String>);

fn grants(docs: &[Value]) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for kind in ["ClusterRole", "Role"] {
        for role in all(docs, kind) {
            let ns = role["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            for rule in role["rules"].as_array().expect("rules") {
                assert!(rule["nonResourceURLs"].is_null(), "no non-resource URLs");
                let names: Vec<String> = strings(&rule["resourceNames"])
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                for group in strings(&rule["apiGroups"]) {
                    for resource in strings(&rule["resources"]) {
                        for verb in strings(&rule["verbs"]) {
                            out.insert((
                                kind.to_owned(),
                                ns.clone(),
                                group.to_owned(),
                                resource.to_owned(),
                                verb.to_owned(),
                                names.clone(),
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

/// Every grant the documented RBAC may hold, and nothing else.
fn allowed_grants(with_certificate: bool) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    let mut add =
        |kind: &str, ns: &str, group: &str, resource: &str, verbs: &[&str], names: &[&str]| {
            for verb in verbs {
                out.insert((
                    kind.to_owned(),
                    ns.to_owned(),
                    group.to_owned(),
                    resource.to_owned(),
                    (*verb).to_owned(),
                    names.iter().map(|n| (*n).to_owned()).collect(),
                ));
            }
        };
    let read = ["get", "list", "watch"];
    let write = ["get", "list", "watch", "create", "patch", "delete"];
    add(
        "ClusterRole",
        "",
        "core.openfunction.io",
        "functions",
        &read,
        &[],
    );
    add(
        "ClusterRole",
        "",
        "core.openfunction.io",
        "servings",
        &read,
        &[],
    );
    add("ClusterRole", "", "apps", "deployments", &write, &[]);
    add("ClusterRole", "", "", "services", &write, &[]);
    add(
        "ClusterRole",
        "",
        "events.k8s.io",
        "events",
        &["create", "patch"],
        &[],
    );
    add(
        "Role",
        NAMESPACE,
        "coordination.k8s.io",
        "leases",
        &["create"],
        &[],
    );
    add(
        "Role",
        NAMESPACE,
        "coordination.k8s.io",
        "leases",
        &["get", "patch"],
        &[LEASE],
    );
    if with_certificate {
        add("Role", NAMESPACE, "", "secrets", &["create"], &[]);
        add(
            "Role",
            NAMESPACE,
            "",
            "secrets",
            &["get", "update"],
            &[certs::DEFAULT_SECRET_NAME],
        );
        add(
            "ClusterRole",
            "",
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            &["get", "patch"],
            &[certs::DEFAULT_WEBHOOK_CONFIG_NAME],
        );
    }
    out
}

fn check_rbac(docs: &[Value], with_certificate: bool) {
    let got = grants(docs);
    let allowed = allowed_grants(with_certificate);
    let extra: Vec<_> = got.difference(&allowed).collect();
    assert!(
        extra.is_empty(),
        "RBAC grants beyond the documented list: {extra:#?}"
    );
    let missing: Vec<_> = allowed.difference(&got).collect();
    assert!(missing.is_empty(), "RBAC grants missing: {missing:#?}");

    // Every role is bound to our ServiceAccount, and only to it.
    let role_names: BTreeSet<(String, String)> = ["ClusterRole", "Role"]
        .iter()
        .flat_map(|k| {
            all(docs, k).into_iter().map(move |r| {
                (
                    (*k).to_owned(),
                    r["metadata"]["name"].as_str().unwrap().to_owned(),
                )
            })
        })
        .collect();
    let mut bound = BTreeSet::new();
    for kind in ["ClusterRoleBinding", "RoleBinding"] {
        for b in all(docs, kind) {
            assert_eq!(
                b["subjects"],
                json!([{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}]),
                "{kind} {}",
                b["metadata"]["name"]
            );
            let role = (
                b["roleRef"]["kind"].as_str().unwrap().to_owned(),
                b["roleRef"]["name"].as_str().unwrap().to_owned(),
            );
            assert!(
                role_names.contains(&role),
                "{kind} binds a missing role {role:?}"
            );
            if kind == "RoleBinding" {
                assert_eq!(b["metadata"]["namespace"], NAMESPACE);
            }
            bound.insert(role);
        }
    }
    assert_eq!(bound, role_names, "every role is bound");
}

#[test]
fn rbac_is_the_documented_least_privilege() {
    let Some(docs) = render(".") else { return };
    check_rbac(&docs, true);
    // The names the binary uses by default.
    let (args, _) = serve_args(one(&docs, "Deployment"));
    assert_eq!(
        args.cert_secret, None,
        "in a cluster the default Secret is used"
    );
    assert_eq!(
        certs::bootstrap_secret(args.cert_secret.as_deref(), false, true).as_deref(),
        Some(certs::DEFAULT_SECRET_NAME)
    );
    assert_eq!(openfunction_dapr::ops::leader::DEFAULT_LEASE_NAME, LEASE);
}

#[test]
fn cert_manager_overlay() {
    let Some(docs) = render("overlays/cert-manager") else {
        return;
    };
    check_rbac(&docs, false);
    let d = one(&docs, "Deployment");
    let c = container(d);
    let (args, _) = serve_args(d);
    let (cert, key) = (
        args.tls_cert.expect("--tls-cert"),
        args.tls_key.expect("--tls-key"),
    );

    // The serving Certificate's Secret is mounted where --tls-cert/--tls-key read.
    let certificates = all(&docs, "Certificate");
    let serving = certificates
        .iter()
        .find(|c| c["spec"]["isCA"] != true)
        .expect("a serving Certificate");
    let secret = serving["spec"]["secretName"].as_str().unwrap();
    let volume = d["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"] == secret)
        .expect("a volume of the serving certificate's Secret");
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the Secret is mounted");
    let dir = Path::new(mount["mountPath"].as_str().unwrap());
    assert_eq!(cert, dir.join("tls.crt"));
    assert_eq!(key, dir.join("tls.key"));
    assert_eq!(mount["readOnly"], true);

    // For the Service's names, from the CA Issuer.
    let svc = one(&docs, "Service");
    let names = openfunction_dapr::ops::tls::service_dns_names(
        svc["metadata"]["name"].as_str().unwrap(),
        svc["metadata"]["namespace"].as_str().unwrap(),
    );
    assert_eq!(strings(&serving["spec"]["dnsNames"]), names);
    let issuer = serving["spec"]["issuerRef"]["name"].as_str().unwrap();
    let ca_issuer = all(&docs, "Issuer")
        .into_iter()
        .find(|i| i["metadata"]["name"] == issuer)
        .expect("the serving Certificate's Issuer");
    let ca_secret = ca_issuer["spec"]["ca"]["secretName"]
        .as_str()
        .expect("a CA Issuer");
    assert!(
        certificates
            .iter()
            .any(|c| c["spec"]["isCA"] == true && c["spec"]["secretName"] == ca_secret)
    );

    // The CA injector fills caBundle from that Certificate.
    let config = one(&docs, "MutatingWebhookConfiguration");
    assert_eq!(
        config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!(
            "{}/{}",
            serving["metadata"]["namespace"].as_str().unwrap(),
            serving["metadata"]["name"].as_str().unwrap()
        )
    );
    assert_eq!(serving["metadata"]["namespace"], NAMESPACE);
    assert_eq!(config["webhooks"].as_array().unwrap().len(), 5);
}

/// Scale-out without the webhook (SPEC 5): pods of a template the webhook
/// patched are not sent to it again; Deployments, bare pods and pods of
/// unpatched templates are, evaluated with kube's selector semantics
/// against the rendered configuration (base and cert-manager overlay).
#[tokio::test]
async fn pods_of_a_patched_template_skip_the_webhook() {
    use openfunction_dapr::webhook::Webhook;
    use openfunction_dapr::webhook::store::FunctionStore;
    use webhook_match::{Admission, called, replica_pod_labels};

    for dir in [".", "overlays/cert-manager"] {
        let Some(docs) = render(dir) else { return };
        let config: k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration =
            serde_json::from_value(one(&docs, "MutatingWebhookConfiguration").clone()).unwrap();
        let calls = |resource: &str, operation: &str, ns: &str, labels: &[(&str, &str)]| {
            let labels: BTreeMap<String, String> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let group = if resource == "pods" { "" } else { "apps" };
            called(
                &config,
                &Admission {
                    group,
                    resource,
                    operation,
                    namespace: ns,
                    labels: &labels,
                },
            )
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
        };
        let fl = ("openfunction.io/function", "f");
        let sl = ("openfunction.io/serving", "s");
        let wired = (WIRED_LABEL, "0123456789");
        let one = |n: &str| vec![format!("{n}.openfunction-dapr.openfunction.io")];
        // Deployments: every CREATE / UPDATE, wired or not.
        for op in ["CREATE", "UPDATE"] {
            assert_eq!(
                calls("deployments", op, "demo", &[fl, wired]),
                one("function-deployments")
            );
            assert_eq!(
                calls("deployments", op, "demo", &[sl]),
                one("serving-deployments")
            );
        }
        // Pods: bare ones as before, wired ones never.
        assert_eq!(calls("pods", "CREATE", "demo", &[fl]), one("function-pods"));
        assert_eq!(calls("pods", "CREATE", "demo", &[sl]), one("serving-pods"));
        assert!(calls("pods", "CREATE", "demo", &[fl, wired]).is_empty());
        assert!(calls("pods", "CREATE", "demo", &[sl, fl, wired]).is_empty());
        assert!(calls("pods", "CREATE", "demo", &[sl, wired]).is_empty());
        assert!(
            calls(
                "pods",
                "CREATE",
                "demo",
                &[fl, ("openfunction.io/proxy", "f")]
            )
            .is_empty()
        );
        assert!(calls("pods", "CREATE", "kube-system", &[fl]).is_empty());
        assert!(calls("pods", "CREATE", "demo", &[("app", "x")]).is_empty());

        // The real webhook on a Deployment: the pods its ReplicaSet makes
        // from the patched template need no call; a mode switch (the
        // controller's roll, an UPDATE) is admitted again.
        let webhook = Webhook::new(
            FunctionStore::from_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"))
                .unwrap(),
            "cluster.local",
        );
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "cron-kafka", "namespace": "default",
                "labels": {"openfunction.io/function": "cron-kafka"}},
            "spec": {"selector": {"matchLabels": {"app": "c"}}, "template": {
                "metadata": {"labels": {"app": "c", "openfunction.io/function": "cron-kafka"}},
                "spec": {"containers": [{"name": "function", "image": "i"}]}}}});
        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "namespace": "default", "operation": "CREATE", "object": d}});
        let answer: Value = serde_json::from_slice(
            &webhook
                .review(&serde_json::to_vec(&review).unwrap())
                .await
                .body,
        )
        .unwrap();
        let mut patched = d.clone();
        json_patch::patch(&mut patched, &webhook_patch(&answer)).unwrap();
        let pod = replica_pod_labels(&patched);
        assert!(pod.contains_key(WIRED_LABEL), "{pod:?}");
        let pairs: Vec<(&str, &str)> = pod.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert!(
            calls("pods", "CREATE", "default", &pairs).is_empty(),
            "{pod:?}"
        );
        // ... which only the exclusion saves
        let before = webhook_match::without_exclusion(&config, WIRED_LABEL);
        let admission = Admission {
            group: "",
            resource: "pods",
            operation: "CREATE",
            namespace: "default",
            labels: &pod,
        };
        assert_eq!(
            called(&before, &admission),
            ["function-pods.openfunction-dapr.openfunction.io"]
        );
        // the unpatched template's pods would have been sent
        let pod = replica_pod_labels(&d);
        let pairs: Vec<(&str, &str)> = pod.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            calls("pods", "CREATE", "default", &pairs),
            one("function-pods")
        );
    }
}

fn webhook_patch(answer: &Value) -> json_patch::Patch {
    use base64::Engine;
    let p = answer["response"]["patch"].as_str().expect("a patch");
    serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(p).unwrap()).unwrap()
}
