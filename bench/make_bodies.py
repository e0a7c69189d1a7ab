#!/usr/bin/env python3
"""Writes the AdmissionReview bodies and Function sets the benchmarks use.

Usage: python3 bench/make_bodies.py OUT_DIR
Deterministic: the same files every run.
"""
import json
import os
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "data")
NS = "bench"

FUNC_CONTEXT = json.dumps({
    "name": "fn-0", "version": "v1.0.0",
    "inputs": {"cron": {"uri": "cron", "componentName": "cron", "componentType": "bindings.cron"}},
    "outputs": {"sample": {"uri": "kafka-server", "componentName": "kafka-server",
                           "componentType": "bindings.kafka", "operation": "create"}},
    "runtime": "Async", "port": "8080", "prePlugins": [], "postPlugins": [],
    "pluginsTracing": {"enabled": False, "provider": None, "tags": None, "baggage": None},
}, separators=(",", ":"))


def function(i, ns=NS):
    return {
        "apiVersion": "core.openfunction.io/v1beta1", "kind": "Function",
        "metadata": {"name": f"fn-{i}", "namespace": ns, "uid": f"00000000-0000-4000-8000-{i:012d}",
                     "resourceVersion": str(1000 + i), "generation": 1},
        "spec": {
            "version": "v1.0.0", "image": f"registry.example.com/fn-{i}:v1", "port": 8080,
            "serving": {
                "runtime": "async",
                "annotations": {"dapr.io/log-level": "info"},
                "inputs": [{"name": "cron", "component": "cron"}],
                "outputs": [{"name": "sample", "component": "kafka-server", "operation": "create"}],
                "bindings": {
                    "cron": {"type": "bindings.cron", "version": "v1",
                             "metadata": [{"name": "schedule", "value": "@every 2s"}]},
                    "kafka-server": {"type": "bindings.kafka", "version": "v1", "metadata": [
                        {"name": "brokers", "value": "kafka-server-kafka-brokers:9092"},
                        {"name": "topics", "value": "sample-topic"},
                        {"name": "publishTopic", "value": "sample-topic"}]},
                },
                "template": {"containers": [{"name": "function", "imagePullPolicy": "IfNotPresent"}]},
            },
        },
    }


def managed_fields(n):
    return [{"manager": f"controller-{k}", "operation": "Update", "apiVersion": "v1",
             "time": "2026-11-21T06:00:00Z", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}, "f:openfunction.io/serving": {}},
                                         "f:ownerReferences": {".": {}, "k:{\"uid\":\"abc\"}": {}}},
                          "f:spec": {"f:containers": {"k:{\"name\":\"function\"}": {
                              ".": {}, "f:env": {".": {}, "k:{\"name\":\"FUNC_CONTEXT\"}": {".": {}, "f:name": {}, "f:value": {}}},
                              "f:image": {}, "f:imagePullPolicy": {}, "f:name": {}, "f:ports": {}, "f:resources": {}}}}}}
            for k in range(n)]


def pod_spec(env):
    return {
        "containers": [{
            "name": "function", "image": "registry.example.com/fn-0:v1", "imagePullPolicy": "IfNotPresent",
            "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
            "env": env,
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10},
            "volumeMounts": [{"name": "config", "mountPath": "/etc/config"},
                             {"name": "kube-api-access-x7k2p", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True}],
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
        }],
        "volumes": [{"name": "config", "configMap": {"name": "fn-0-config"}},
                    {"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}, "path": "namespace"}]}}]}}],
        "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default", "schedulerName": "default-scheduler",
        "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
        "priority": 0, "enableServiceLinks": True, "preemptionPolicy": "PreemptLowerPriority",
    }


def base_env():
    return [{"name": "FUNC_CONTEXT", "value": FUNC_CONTEXT},
            {"name": "CONFIG_PATH", "value": "/etc/config"},
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}},
            {"name": "GOMAXPROCS", "value": "1"}]


def review(uid, kind, resource, group, op, obj, old=None):
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": resource},
        "requestKind": {"group": group, "version": "v1", "kind": kind},
        "requestResource": {"group": group, "version": "v1", "resource": resource},
        "name": obj["metadata"].get("name", ""), "namespace": NS, "operation": op,
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                     "uid": "5c8c2a55-8d5b-4f0a-9d3e-1f1f6c5b2a10", "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]},
        "object": obj, "oldObject": old, "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions" if op == "CREATE" else "UpdateOptions"}}}


def pod(env, fn="fn-0"):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": f"{fn}-serving-7d9f8b6c5-", "namespace": NS,
                         "labels": {"app": fn, "openfunction.io/serving": f"{fn}-serving", "openfunction.io/function": fn,
                                    "pod-template-hash": "7d9f8b6c5"},
                         "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-21T06:00:00Z"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{fn}-serving-7d9f8b6c5",
                                              "uid": "abc", "controller": True, "blockOwnerDeletion": True}],
                         "managedFields": managed_fields(9)},
            "spec": pod_spec(env)}


def deployment(env, fn="fn-0", image="registry.example.com/fn-0:v1"):
    spec = pod_spec(env)
    spec["containers"][0]["image"] = image
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"{fn}-serving", "namespace": NS, "uid": "d1", "resourceVersion": "77", "generation": 3,
                         "labels": {"openfunction.io/serving": f"{fn}-serving", "openfunction.io/function": fn},
                         "managedFields": managed_fields(9)},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": fn}},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                     "template": {"metadata": {"labels": {"app": fn}}, "spec": spec}},
            "status": {}}


def main():
    os.makedirs(OUT, exist_ok=True)
    bodies = {
        "pod.json": review("11111111-1111-4111-8111-111111111111", "Pod", "pods", "", "CREATE", pod(base_env())),
        "deployment.json": review("22222222-2222-4222-8222-222222222222", "Deployment", "deployments", "apps", "CREATE",
                                  deployment(base_env())),
        "deployment-update.json": review("33333333-3333-4333-8333-333333333333", "Deployment", "deployments", "apps", "UPDATE",
                                         deployment(base_env(), image="registry.example.com/fn-0:v2"),
                                         deployment(base_env())),
        "pod-1500-env.json": review("44444444-4444-4444-8444-444444444444", "Pod", "pods", "", "CREATE",
                                    pod(base_env() + [{"name": f"VAR_{i}", "value": f"value-{i}"} for i in range(1494)])),
    }
    for name, body in bodies.items():
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(body, f, separators=(",", ":"))
    for count in (10, 1000, 10000, 100000):
        d = os.path.join(OUT, f"functions-{count}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "functions.yaml"), "w") as f:
            for i in range(count):
                f.write("---\n")
                json.dump(function(i), f, separators=(",", ":"))
                f.write("\n")
    for name in bodies:
        print(f"{name}: {os.path.getsize(os.path.join(OUT, name))} bytes")


if __name__ == "__main__":
    main()
