//! The `inject` subcommand, run as a user runs it: the real binary, its
//! stdout compared with golden files (`UPDATE_GOLDEN=1` rewrites them),
//! its errors and exit codes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_openfunction-dapr"))
        .arg("inject")
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml).unwrap()
}

fn golden(name: &str, actual: &str) {
    let path: PathBuf = root().join("tests/golden/inject").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create)",
            path.display()
        )
    });
    assert_eq!(docs(actual), docs(&expected), "{} differs", path.display());
}

#[test]
fn fixture_functions() {
    let files = [
        "tests/fixtures/functions/cron-input-kafka-output.yaml",
        "tests/fixtures/functions/function-front-knative-output.yaml",
        "tests/fixtures/functions/serving-only-modes.yaml",
        "tests/fixtures/functions/sink.yaml",
    ];
    let mut args = Vec::new();
    for f in &files {
        args.extend(["-f", f]);
    }
    let out = run(&args, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    golden("fixtures.yaml", &stdout);

    // Only Functions in the input: the controller's objects for the four
    // standalone ones (the sidecar and disabled samples get none), and a
    // Service only for the async function.
    let d = docs(&stdout);
    let names: Vec<(&str, &str)> = d
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("Deployment", "cron-input-kafka-output-dapr-proxy"),
            ("Service", "cron-input-kafka-output"),
            ("Deployment", "function-front-dapr-proxy"),
            ("Deployment", "function-sample-standalone-dapr-proxy"),
            ("Deployment", "sink-dapr-proxy"),
        ]
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn examples_with_workloads() {
    let out = run(
        &[
            "-f",
            "examples/functions.yaml",
            "-f",
            "examples/workloads.yaml",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    golden("examples.yaml", &stdout);
    let d = docs(&stdout);
    // six workloads, then the standalone function's proxy and Service
    assert_eq!(d.len(), 8);
    assert_eq!(
        d[0]["spec"]["template"]["metadata"]["annotations"]["dapr.io/enabled"],
        "false"
    );
    assert_eq!(
        d[2]["spec"]["template"]["metadata"]["annotations"]["dapr.io/enabled"],
        "true"
    );
    assert_eq!(d[6]["metadata"]["name"], "cron-kafka-dapr-proxy");
    assert_eq!(d[7]["kind"], "Service");
}

#[test]
fn stdin_and_warnings() {
    let input = r#"
apiVersion: core.openfunction.io/v1beta1
kind: Function
metadata: {name: f, namespace: ns}
spec:
  image: i
  serving:
    runtime: knative
    annotations: {openfunction.io/enable-dapr: "TRUE", openfunction.io/dapr-service-mode: "proxy"}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: ns, labels: {openfunction.io/function: f}}
spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: ns}
spec: {containers: [{name: c, image: x}]}
"#;
    let out = run(&["-f", "-", "--cluster-domain", "example.org"], Some(input));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = docs(&String::from_utf8(out.stdout).unwrap());
    let env = &d[0]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["value"] == "f-ns-dapr.ns.svc.example.org")
    );
    // the unlabelled pod is printed untouched
    assert_eq!(d[1]["metadata"]["name"], "other");
    assert!(d[1]["metadata"].get("annotations").is_none());
    assert_eq!(d[2]["metadata"]["name"], "f-dapr-proxy");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("warning: Function ns/f: annotation openfunction.io/dapr-service-mode")
    );
}

#[test]
fn bad_input_names_the_document() {
    let cases = [
        ("a: [unclosed", "<stdin>"),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
            "document 1: unsupported kind v1/ConfigMap",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: y, labels: {openfunction.io/function: ghost}}\nspec: {containers: []}\n",
            "document 2: Pod of a Function not in the input: Function default/ghost not found",
        ),
        ("just a string\n", "document 1: not a Kubernetes object"),
    ];
    for (input, expected) in cases {
        let out = run(&["-f", "-"], Some(input));
        assert!(!out.status.success(), "accepted {input:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains(expected), "{input:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    let out = run(&["-f", "does-not-exist.yaml"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does-not-exist.yaml"));
}
