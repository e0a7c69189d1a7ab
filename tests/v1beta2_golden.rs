//! Golden tests of OpenFunction 1.x (`core.openfunction.io/v1beta2`)
//! Functions: resolution (SPEC 3, 4), the webhook patch (SPEC 5), the
//! controller's proxy (SPEC 6) and both contexts (SPEC 7).
//!
//! The expected contexts are written by hand from OpenFunction v1.2.0's Go
//! source, `pkg/core/serving/common/common.go`:
//! - the v1beta1 fields of `FUNC_CONTEXT` follow `GenOpenFunctionContextV1beta1`
//!   (runtime `Async` iff `triggers.dapr`; inputs keyed by `inputName`, else
//!   the component name; `uri` = the name for `bindings.*`, else the topic;
//!   outputs keyed by `outputName`; `getComponentType`: the type on the
//!   reference, else `bindings` / `pubsub` / `states`; plugins from the
//!   `plugins` / `plugins.tracing` annotations, `parsePluginsCfg`);
//! - the union keys (`triggers`, `topic`, `pre_hooks`, `post_hooks`,
//!   `tracing`) are what `ofn-functions-framework` 0.2 reads
//!   (`functions_framework/context/function_context.py`), with the values
//!   `GenOpenFunctionContextV1beta2` computes;
//! - `FUNC_CONTEXT_V1BETA2` follows `GenOpenFunctionContextV1beta2`
//!   (triggers copied; inputs from `triggers.inputs`; outputs keyed by name,
//!   without `topic`; `preHooks` / `postHooks`; `tracing` only when enabled).
//!
//! Two sets: hand-written Functions in `tests/golden/v1beta2/` (always run)
//! and the samples of OpenFunction v1.2.0 in
//! `$OFD_FIXTURES/openfunction-v1.2.0/functions/` (skipped when absent).

mod common;

use std::path::Path;

use openfunction_dapr::controller::resources::{self, ProxySettings};
use openfunction_dapr::model::func_context::{func_context, func_context_v1beta2};
use openfunction_dapr::model::function::Function;
use openfunction_dapr::model::mode::{GrpcEndpointForm, Mode, resolve};
use openfunction_dapr::model::v1beta2::{ApiVersion, read_function};
use openfunction_dapr::model::workload::Kind;
use openfunction_dapr::webhook::admission::mutate_workload;
use openfunction_dapr::webhook::patch::apply;
use serde_json::{Value, json};

/// The default `tracing` of the union (no tracing configured).
fn no_tracing() -> Value {
    json!({"enabled": false, "provider": null, "tags": null, "baggage": null})
}

struct Expect {
    mode: Mode,
    port: i32,
    is_async: bool,
    app_id: &'static str,
    warnings: usize,
    ctx: Value,
    ctx_v1beta2: Value,
}

fn load(path: &Path) -> Vec<Function> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap()
        .into_iter()
        .filter(|d| d["kind"] == "Function")
        .map(|d| read_function(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

fn pod(name: &str, ns: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{name}-abc"), "namespace": ns,
            "labels": {"openfunction.io/function": name}},
        "spec": {"containers": [{"name": "function", "image": "img"}]}
    })
}

fn env_of(obj: &Value, pointer: &str) -> Vec<(String, String)> {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

fn parsed(env: &[(String, String)], name: &str) -> Option<Value> {
    env.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| serde_json::from_str(v).unwrap())
}

/// Resolution, both contexts, the webhook patch on a bare Pod and the proxy
/// Deployment of `f`, against `want`.
fn check(f: &Function, want: &Expect) {
    let name = f.metadata.name.clone().unwrap();
    let ns = f.metadata.namespace.clone().unwrap_or("default".into());
    assert_eq!(f.read_version(), ApiVersion::V1beta2, "{name}");

    let r = resolve(&name, &ns, &f.spec, "cluster.local");
    assert_eq!(r.mode, want.mode, "{name}: mode");
    assert_eq!(r.app_port, want.port, "{name}: port");
    assert_eq!(r.app_id, want.app_id, "{name}: app id");
    assert_eq!(r.warnings.len(), want.warnings, "{name}: {:?}", r.warnings);
    assert_eq!(f.spec.is_async(), want.is_async, "{name}: runtime");

    let ctx: Value = serde_json::from_str(&func_context(&name, &f.spec)).unwrap();
    assert_eq!(ctx, want.ctx, "{name}: FUNC_CONTEXT");
    let ctx2: Value = serde_json::from_str(&func_context_v1beta2(&name, &f.spec).unwrap()).unwrap();
    assert_eq!(ctx2, want.ctx_v1beta2, "{name}: FUNC_CONTEXT_V1BETA2");

    // the webhook: both contexts on the function container, idempotent
    let object = pod(&name, &ns);
    let m = mutate_workload(
        &object,
        Kind::Pod,
        &ns,
        f,
        "cluster.local",
        GrpcEndpointForm::Url,
    )
    .unwrap();
    let patched = apply(&object, &m.patch).unwrap();
    let env = env_of(&patched, "/spec/containers/0/env");
    assert_eq!(
        parsed(&env, "FUNC_CONTEXT").as_ref(),
        Some(&want.ctx),
        "{name}"
    );
    assert_eq!(
        parsed(&env, "FUNC_CONTEXT_V1BETA2").as_ref(),
        Some(&want.ctx_v1beta2),
        "{name}"
    );
    let enabled = if want.mode == Mode::Sidecar {
        "true"
    } else {
        "false"
    };
    assert_eq!(
        patched.pointer("/metadata/annotations/dapr.io~1enabled"),
        Some(&json!(enabled)),
        "{name}"
    );
    let standalone = want.mode == Mode::Standalone;
    assert_eq!(
        env.iter().any(|(n, _)| n == "DAPR_HOST"),
        standalone,
        "{name}"
    );
    let again = mutate_workload(
        &patched,
        Kind::Pod,
        &ns,
        f,
        "cluster.local",
        GrpcEndpointForm::Url,
    )
    .unwrap();
    assert!(
        again.patch.is_empty(),
        "{name}: not idempotent: {:?}",
        again.patch
    );

    // the controller: the proxy carries both contexts and is owned through
    // the version the Function was read as; a Service only for async
    let mut owned = f.clone();
    owned.metadata.uid = Some("uid-1".into());
    let settings = ProxySettings::default();
    let proxy =
        serde_json::to_value(resources::desired_proxy_deployment(&owned, &settings)).unwrap();
    let penv = env_of(&proxy, "/spec/template/spec/containers/0/env");
    assert_eq!(
        parsed(&penv, "FUNC_CONTEXT").as_ref(),
        Some(&want.ctx),
        "{name}"
    );
    assert_eq!(
        parsed(&penv, "FUNC_CONTEXT_V1BETA2").as_ref(),
        Some(&want.ctx_v1beta2),
        "{name}"
    );
    assert_eq!(
        proxy["metadata"]["ownerReferences"][0]["apiVersion"],
        "core.openfunction.io/v1beta2"
    );
    assert_eq!(
        resources::desired_function_service(&owned, &settings).is_some(),
        want.is_async,
        "{name}"
    );
}

fn run(functions: &[Function], expected: impl Fn(&str) -> Option<Expect>, origin: &str) {
    assert!(!functions.is_empty(), "{origin}: no Functions");
    for f in functions {
        let name = f.metadata.name.as_deref().unwrap();
        let want = expected(name).unwrap_or_else(|| panic!("{origin}: no expectation for {name}"));
        check(f, &want);
    }
}

fn hand_written(name: &str) -> Option<Expect> {
    Some(match name {
        // GenOpenFunctionContextV1beta1: `ticks` from inputName, type of
        // `cron` and `kafka-out` from `bindings` (getComponentTypeFromServing);
        // `events` has its type on the output, so uri = its topic.
        "cron-to-kafka" => Expect {
            mode: Mode::Standalone,
            port: 8080,
            is_async: true,
            app_id: "cron-to-kafka-demo",
            warnings: 0,
            ctx: json!({
                "name": "cron-to-kafka", "version": "v2.1.0",
                "inputs": {"ticks": {"uri": "cron", "componentName": "cron", "componentType": "bindings.cron"}},
                "outputs": {
                    "sink": {"uri": "kafka-out", "componentName": "kafka-out",
                        "componentType": "bindings.kafka", "operation": "create"},
                    "events": {"uri": "audit", "topic": "audit", "componentName": "events",
                        "componentType": "pubsub.redis", "metadata": {"ttlInSeconds": "60"}}
                },
                "runtime": "Async", "port": "8080",
                // union: the trigger's type as getComponentType finds it (the
                // Python framework registers a trigger by its type)
                "triggers": {"dapr": [{"name": "cron", "type": "bindings.cron", "inputName": "ticks"}]},
                "pre_hooks": [], "post_hooks": [], "tracing": no_tracing()
            }),
            // GenOpenFunctionContextV1beta2: outputs keyed by name, no topic
            ctx_v1beta2: json!({
                "name": "cron-to-kafka", "version": "v2.1.0",
                "triggers": {"dapr": [{"name": "cron", "inputName": "ticks"}]},
                "outputs": {
                    "kafka-out": {"componentName": "kafka-out", "componentType": "bindings.kafka",
                        "operation": "create"},
                    "events": {"componentName": "events", "componentType": "pubsub.redis",
                        "metadata": {"ttlInSeconds": "60"}}
                }
            }),
        },
        // type from `pubsub`, uri = topic; port from triggers.http.port.
        // Union triggers of an async Function: no `http` (the Python
        // framework would serve HTTP on `port` instead of the dapr
        // triggers), types filled in; FUNC_CONTEXT_V1BETA2 keeps the copy.
        "subscriber" => Expect {
            mode: Mode::Sidecar,
            port: 9090,
            is_async: true,
            app_id: "subscriber-demo",
            warnings: 0,
            ctx: json!({
                "name": "subscriber", "version": "v1.0.0",
                "inputs": {"mq": {"uri": "orders", "topic": "orders", "componentName": "mq",
                    "componentType": "pubsub.kafka"}},
                "runtime": "Async", "port": "9090",
                "triggers": {"dapr": [{"name": "mq", "type": "pubsub.kafka", "topic": "orders"}]},
                "pre_hooks": [], "post_hooks": [], "tracing": no_tracing()
            }),
            ctx_v1beta2: json!({
                "name": "subscriber", "version": "v1.0.0",
                "triggers": {"http": {"port": 9090}, "dapr": [{"name": "mq", "topic": "orders"}]}
            }),
        },
        // only an http trigger: GetDaprServiceEnabled is false; Knative;
        // RouteImpl's gatewayRef.namespace has no omitempty (null)
        "http-only" => {
            let triggers = json!({"http": {"port": 9000, "engine": "keda", "route": {
                "gatewayRef": {"name": "openfunction", "namespace": null},
                "hostnames": ["http-only.example.com"]}}});
            Expect {
                mode: Mode::Disabled,
                port: 9000,
                is_async: false,
                app_id: "http-only-demo",
                warnings: 0,
                ctx: json!({
                    "name": "http-only", "version": "v1.0.0", "runtime": "Knative", "port": "9000",
                    "triggers": triggers,
                    "pre_hooks": [], "post_hooks": [], "tracing": no_tracing()
                }),
                ctx_v1beta2: json!({"name": "http-only", "version": "v1.0.0", "triggers": triggers}),
            }
        }
        // states and triggers.inputs enable dapr; a state without spec
        // refers to an existing component (type unknown here: "")
        "stateful" => {
            let states = json!({
                "store": {"componentName": "store", "componentType": "state.redis"},
                "existing": {"componentName": "existing", "componentType": ""}
            });
            let triggers =
                json!({"http": {}, "inputs": [{"dapr": {"name": "store", "type": "state.redis"}}]});
            Expect {
                mode: Mode::Standalone,
                port: 8080,
                is_async: false,
                app_id: "stateful-demo",
                warnings: 0,
                ctx: json!({
                    "name": "stateful", "version": "", "states": states,
                    "runtime": "Knative", "port": "8080", "triggers": triggers,
                    "pre_hooks": [], "post_hooks": [], "tracing": no_tracing()
                }),
                ctx_v1beta2: json!({
                    "name": "stateful", "version": "", "triggers": triggers,
                    "inputs": {"store": {"componentName": "store", "componentType": "state.redis"}},
                    "states": states
                }),
            }
        }
        // hooks Append (no global hooks: the Function's own), tracing
        // enabled (mergerTracingConfig keeps it); dapr off by "FALSE"
        "traced" => {
            let tracing = json!({"enabled": true, "provider": {"name": "opentelemetry",
                "exporter": {"name": "otlp", "endpoint": "collector:4317", "protocol": "grpc"}},
                "tags": {"team": "faas"}});
            let triggers = json!({"dapr": [{"name": "cron", "type": "bindings.cron"}]});
            Expect {
                mode: Mode::Disabled,
                port: 8080,
                is_async: true,
                app_id: "traced-demo",
                warnings: 0,
                ctx: json!({
                    "name": "traced", "version": "v3",
                    "inputs": {"cron": {"uri": "cron", "componentName": "cron", "componentType": "bindings.cron"}},
                    "runtime": "Async", "port": "8080", "triggers": triggers,
                    "pre_hooks": ["plugin-a"], "post_hooks": ["plugin-b"], "tracing": tracing
                }),
                ctx_v1beta2: json!({
                    "name": "traced", "version": "v3", "triggers": triggers,
                    "preHooks": ["plugin-a"], "postHooks": ["plugin-b"], "tracing": tracing
                }),
            }
        }
        // parsePluginsCfg: `order` gives prePlugins and its reverse as
        // postPlugins. No triggers at all: Go would dereference a nil
        // Triggers; we treat them as empty.
        "producer" => Expect {
            mode: Mode::Standalone,
            port: 8080,
            is_async: false,
            app_id: "orders-producer",
            warnings: 1,
            ctx: json!({
                "name": "producer", "version": "",
                "outputs": {"mq": {"uri": "orders", "topic": "orders", "componentName": "mq",
                    "componentType": "pubsub.kafka"}},
                "runtime": "Knative", "port": "8080",
                "prePlugins": ["one", "two"], "postPlugins": ["two", "one"],
                "triggers": {}, "pre_hooks": [], "post_hooks": [], "tracing": no_tracing()
            }),
            ctx_v1beta2: json!({
                "name": "producer", "version": "",
                "outputs": {"mq": {"componentName": "mq", "componentType": "pubsub.kafka"}}
            }),
        },
        _ => return None,
    })
}

#[test]
fn hand_written_v1beta2_functions() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1beta2/functions.yaml");
    let functions = load(&path);
    assert_eq!(functions.len(), 6);
    run(&functions, hand_written, "tests/golden/v1beta2");
}

/// The samples of OpenFunction v1.2.0 (`config/samples`).
fn sample(file: &str, name: &str) -> Option<Expect> {
    let route = json!({"gatewayRef": {"name": "openfunction", "namespace": "openfunction"}});
    Some(match (file, name) {
        // triggers.dapr with inputName and type: inputs keyed by inputName
        (
            "function-bindings-sample-serving-only.yaml"
            | "function-knative-with-dapr-serving-only.yaml",
            "output-target",
        ) => {
            let triggers = json!({"dapr": [{"name": "target-topic", "type": "bindings.kafka", "inputName": "greeting"}]});
            Expect {
                mode: Mode::Standalone,
                port: 8080,
                is_async: true,
                app_id: "output-target-default",
                warnings: 0,
                ctx: json!({
                    "name": "output-target", "version": "v1.0.0",
                    "inputs": {"greeting": {"uri": "target-topic", "componentName": "target-topic",
                        "componentType": "bindings.kafka"}},
                    "runtime": "Async", "port": "8080", "triggers": triggers,
                    "pre_hooks": [], "post_hooks": [], "tracing": no_tracing()
                }),
                ctx_v1beta2: json!({"name": "output-target", "version": "v1.0.0", "triggers": triggers}),
            }
        }
        ("function-bindings-sample-serving-only.yaml", "bindings") => {
            let triggers =
                json!({"dapr": [{"name": "cron", "type": "bindings.cron", "inputName": "cron"}]});
            Expect {
                mode: Mode::Standalone,
                port: 8080,
                is_async: true,
                app_id: "bindings-default",
                warnings: 0,
                ctx: json!({
                    "name": "bindings", "version": "v1.0.0",
                    "inputs": {"cron": {"uri": "cron", "componentName": "cron", "componentType": "bindings.cron"}},
                    "outputs": {"sample": {"uri": "kafka-server", "componentName": "kafka-server",
                        "componentType": "bindings.kafka", "operation": "create"}},
                    "runtime": "Async", "port": "8080", "triggers": triggers,
                    "pre_hooks": [], "post_hooks": [], "tracing": no_tracing()
                }),
                ctx_v1beta2: json!({
                    "name": "bindings", "version": "v1.0.0", "triggers": triggers,
                    "outputs": {"kafka-server": {"componentName": "kafka-server",
                        "componentType": "bindings.kafka", "operation": "create"}}
                }),
            }
        }
        // http trigger only (keda engine): dapr off, Knative, port 9898
        ("function-kedahttp-sample-serving.yaml", "kedahttp-sample") => {
            let triggers = json!({"http": {"port": 9898, "engine": "keda", "route": {
                "gatewayRef": {"name": "openfunction", "namespace": "openfunction"},
                "hostnames": ["podinfo.com"],
                "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}]}}});
            Expect {
                mode: Mode::Disabled,
                port: 9898,
                is_async: false,
                app_id: "kedahttp-sample-default",
                warnings: 0,
                ctx: json!({
                    "name": "kedahttp-sample", "version": "v2.0.0", "runtime": "Knative", "port": "9898",
                    "triggers": triggers, "pre_hooks": [], "post_hooks": [], "tracing": no_tracing()
                }),
                ctx_v1beta2: json!({"name": "kedahttp-sample", "version": "v2.0.0", "triggers": triggers}),
            }
        }
        // knative with an output: dapr on (outputs), outputs keyed by outputName
        ("function-knative-with-dapr-serving-only.yaml", "function-front") => {
            let triggers = json!({"http": {"port": 8080, "route": route}});
            Expect {
                mode: Mode::Standalone,
                port: 8080,
                is_async: false,
                app_id: "function-front-default",
                warnings: 0,
                ctx: json!({
                    "name": "function-front", "version": "v1.0.0",
                    "outputs": {"target": {"uri": "kafka-server", "componentName": "kafka-server",
                        "componentType": "bindings.kafka", "operation": "create"}},
                    "runtime": "Knative", "port": "8080", "triggers": triggers,
                    "pre_hooks": [], "post_hooks": [], "tracing": no_tracing()
                }),
                ctx_v1beta2: json!({
                    "name": "function-front", "version": "v1.0.0", "triggers": triggers,
                    "outputs": {"kafka-server": {"componentName": "kafka-server",
                        "componentType": "bindings.kafka", "operation": "create"}}
                }),
            }
        }
        // pub/sub trigger: uri = topic
        ("function-pubsub-sample-serving-only.yaml", "autoscaling-subscriber") => {
            let triggers = json!({"dapr": [{"name": "kafka-server", "type": "pubsub.kafka",
                "topic": "pubsub", "inputName": "producer"}]});
            Expect {
                mode: Mode::Standalone,
                port: 8080,
                is_async: true,
                app_id: "autoscaling-subscriber-default",
                warnings: 0,
                ctx: json!({
                    "name": "autoscaling-subscriber", "version": "v1.0.0",
                    "inputs": {"producer": {"uri": "pubsub", "topic": "pubsub", "componentName": "kafka-server",
                        "componentType": "pubsub.kafka"}},
                    "runtime": "Async", "port": "8080", "triggers": triggers,
                    "pre_hooks": [], "post_hooks": [], "tracing": no_tracing()
                }),
                ctx_v1beta2: json!({"name": "autoscaling-subscriber", "version": "v1.0.0", "triggers": triggers}),
            }
        }
        // only an http trigger: dapr off
        ("function-sample-serving-only.yaml", "function-sample-serving-only") => {
            let triggers = json!({"http": {"port": 8080, "route": route}});
            Expect {
                mode: Mode::Disabled,
                port: 8080,
                is_async: false,
                app_id: "function-sample-serving-only-default",
                warnings: 0,
                ctx: json!({
                    "name": "function-sample-serving-only", "version": "v1.0.0",
                    "runtime": "Knative", "port": "8080", "triggers": triggers,
                    "pre_hooks": [], "post_hooks": [], "tracing": no_tracing()
                }),
                ctx_v1beta2: json!({"name": "function-sample-serving-only", "version": "v1.0.0",
                    "triggers": triggers}),
            }
        }
        // parsePluginsCfg from the annotations (pluginsTracing kept although
        // disabled); hooks Override; spec tracing disabled: no `tracing`
        // (mergerTracingConfig returns nil)
        ("function-with-plugins-serving-only.yaml", "bindings-plugins") => {
            let plugins = json!(["plugin-custom", "plugin-example"]);
            let triggers =
                json!({"dapr": [{"name": "cron", "type": "bindings.cron", "inputName": "input"}]});
            Expect {
                mode: Mode::Standalone,
                port: 8080,
                is_async: true,
                app_id: "bindings-plugins-default",
                warnings: 0,
                ctx: json!({
                    "name": "bindings-plugins", "version": "v1.0.0",
                    "inputs": {"input": {"uri": "cron", "componentName": "cron", "componentType": "bindings.cron"}},
                    "runtime": "Async", "port": "8080",
                    "prePlugins": plugins, "postPlugins": plugins,
                    "pluginsTracing": {"enabled": false,
                        "provider": {"name": "skywalking", "oapServer": "localhost:xxx"},
                        "tags": {"func": "function-with-tracing", "layer": "faas", "tag1": "value1", "tag2": "value2"},
                        "baggage": {"key": "sw8-correlation",
                            "value": "base64(string key):base64(string value),base64(string key2):base64(string value2)"}},
                    "triggers": triggers,
                    "pre_hooks": plugins, "post_hooks": plugins, "tracing": no_tracing()
                }),
                ctx_v1beta2: json!({
                    "name": "bindings-plugins", "version": "v1.0.0", "triggers": triggers,
                    "preHooks": plugins, "postHooks": plugins
                }),
            }
        }
        _ => return None,
    })
}

#[test]
fn openfunction_v1_2_0_samples() {
    let Some(dir) = common::fixtures::fixtures("openfunction-v1.2.0/functions", "v1.2.0 samples")
    else {
        return;
    };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut seen = 0;
    for path in files {
        let file = path.file_name().unwrap().to_str().unwrap().to_owned();
        let functions = load(&path);
        for f in &functions {
            let name = f.metadata.name.as_deref().unwrap();
            let want =
                sample(&file, name).unwrap_or_else(|| panic!("{file}: no expectation for {name}"));
            check(f, &want);
            seen += 1;
        }
    }
    assert_eq!(seen, 8, "every sample Function checked");
}
