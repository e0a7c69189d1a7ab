//! The webhook's hot path, in process: decode an AdmissionReview, find the
//! Function, resolve, build the patch, encode the answer.
//!
//! Bodies come from `bench/make_bodies.py` (run automatically into
//! `target/bench-data` when missing): an ~8 KB Pod review, a Deployment
//! CREATE, a Deployment UPDATE with oldObject, and a Pod with 1,500 env vars.
//!
//! `cargo bench --bench admission`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use openfunction_dapr::model::function::Function;
use openfunction_dapr::webhook::Webhook;
use openfunction_dapr::webhook::store::FunctionStore;
use serde_json::json;

fn data_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/bench-data");
    if !dir.join("pod.json").is_file() {
        let status = Command::new("python3")
            .arg(root.join("bench/make_bodies.py"))
            .arg(&dir)
            .status()
            .expect("python3 runs bench/make_bodies.py");
        assert!(status.success());
    }
    dir
}

/// `n` Functions `fn-0`..`fn-{n-1}` in namespace `bench`, like the bodies'.
fn functions(n: usize) -> Vec<Function> {
    (0..n)
        .map(|i| {
            serde_json::from_value(json!({
                "apiVersion": "core.openfunction.io/v1beta1", "kind": "Function",
                "metadata": {"name": format!("fn-{i}"), "namespace": "bench", "uid": format!("uid-{i}")},
                "spec": {"version": "v1.0.0", "image": format!("registry.example.com/fn-{i}:v1"), "port": 8080,
                    "serving": {"runtime": "async",
                        "annotations": {"dapr.io/log-level": "info"},
                        "inputs": [{"name": "cron", "component": "cron"}],
                        "outputs": [{"name": "sample", "component": "kafka-server", "operation": "create"}],
                        "bindings": {
                            "cron": {"type": "bindings.cron", "version": "v1", "metadata": [{"name": "schedule", "value": "@every 2s"}]},
                            "kafka-server": {"type": "bindings.kafka", "version": "v1", "metadata": [{"name": "brokers", "value": "kafka:9092"}]}}}}
            }))
            .unwrap()
        })
        .collect()
}

fn webhook(n: usize) -> Arc<Webhook> {
    Arc::new(Webhook::new(
        FunctionStore::from_objects(functions(n), vec![]),
        "cluster.local",
    ))
}

fn bench_bodies(c: &mut Criterion) {
    let dir = data_dir();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let wh = webhook(10);
    let mut group = c.benchmark_group("review");
    for name in ["pod", "deployment", "deployment-update", "pod-1500-env"] {
        let body = std::fs::read(dir.join(format!("{name}.json"))).unwrap();
        // sanity: every body is patched
        let r = rt.block_on(wh.review(&body));
        assert_eq!(r.outcome.as_str(), "patched", "{name}");
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| rt.block_on(wh.review(body)))
        });
        // the floor's work on the same body: parse it into a serde_json::Value
        group.bench_with_input(BenchmarkId::new("floor-parse", name), &body, |b, body| {
            b.iter(|| serde_json::from_slice::<serde_json::Value>(body).unwrap())
        });
    }
    group.finish();
}

fn bench_store_size(c: &mut Criterion) {
    let dir = data_dir();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let body = std::fs::read(dir.join("pod.json")).unwrap();
    let mut group = c.benchmark_group("review-pod-by-store-size");
    for n in [10usize, 100_000] {
        let wh = webhook(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &body, |b, body| {
            b.iter(|| rt.block_on(wh.review(body)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_bodies, bench_store_size);
criterion_main!(benches);
