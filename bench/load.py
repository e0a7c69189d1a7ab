#!/usr/bin/env python3
"""Load benchmark of the webhook over TLS, against a floor server.

Starts `openfunction-dapr serve --local` and the floor (bench/floor.rs: TLS +
hyper + serde_json parse + fixed answer) on 127.0.0.1, drives POST /mutate
with wrk (HTTP/1.1 keep-alive) and h2load (HTTP/2) at several
concurrencies for a bounded time, and prints req/s, p50/p99 latency, the
product/floor ratio and the server's RSS. Also: throughput with 10 vs
100,000 Functions in the store, the 1,500-env-var pod, idle RSS with 10 and
10,000 Functions, and start-to-ready with 1,000 Functions.

Run through bench/load.sh (installs wrk and h2load, builds release).
Environment: DURATION (seconds per run, default 10), QUICK=1 (fewer runs),
ONLY=startup (only start-to-ready and idle RSS with 1,000 and 10,000 Functions),
ONLY=protocols (only the same-generator HTTP/1.1 vs HTTP/2 comparison).

The HTTP/1.1-vs-HTTP/2 comparison uses one generator for both protocols
(h2load, with --h1 for HTTP/1.1), the server pinned to CPU 0 and h2load to
CPU 1, alternating runs, medians: wrk and h2load differ in their own CPU cost,
which on a shared 2-core machine moves the server's throughput.
"""
import statistics
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/openfunction-dapr")
FLOOR = os.path.join(ROOT, "target/release/examples/floor")
DATA = os.path.join(ROOT, "target/bench-data")
DURATION = int(os.environ.get("DURATION", "10"))
QUICK = os.environ.get("QUICK") == "1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Proc:
    def __init__(self, argv, ready_url=None, port=None, timeout=120):
        self.log = tempfile.TemporaryFile()
        self.started = time.monotonic()
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + timeout
        while True:
            if self.p.poll() is not None:
                self.log.seek(0)
                sys.exit(f"{argv[0]} exited: {self.log.read().decode(errors='replace')[-2000:]}")
            try:
                if ready_url:
                    with urllib.request.urlopen(ready_url, timeout=1) as r:
                        if r.status == 200:
                            break
                else:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                sys.exit(f"{argv[0]} not ready after {timeout}s")
            time.sleep(0.002)
        self.ready_after = time.monotonic() - self.started

    def rss(self):
        return rss_kib(self.p.pid)

    def stop(self):
        # our own child, by PID
        self.p.terminate()
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def product(store_dir, pin=None):
    port, admin = free_port(), free_port()
    ca = tempfile.mktemp(suffix="-ca.pem")
    p = Proc(taskset(pin) + [BIN, "serve", "--local", store_dir, "--addr", f"127.0.0.1:{port}",
              "--admin-addr", f"127.0.0.1:{admin}", "--ca-out", ca, "--shutdown-delay", "0s"],
             ready_url=f"http://127.0.0.1:{admin}/readyz", timeout=600)
    p.url = f"https://127.0.0.1:{port}/mutate"
    return p


def floor(pin=None):
    port = free_port()
    p = Proc(taskset(pin) + [FLOOR, f"127.0.0.1:{port}", tempfile.mktemp(suffix="-floor-ca.pem")], port=port)
    p.url = f"https://127.0.0.1:{port}/mutate"
    return p


def taskset(cpu):
    return [] if cpu is None else ["taskset", "-c", str(cpu)]


def to_ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    n, unit = float(m.group(1)), m.group(2)
    return n / 1000 if unit == "us" else n if unit == "ms" else n * 1000


def wrk(url, conns, body):
    threads = min(conns, 2)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{conns}", f"-d{DURATION}s", "--latency", "-s",
         os.path.join(ROOT, "bench/post.lua"), url],
        env={**os.environ, "BODY": body}, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if errors or socket_errors:
        print(f"  wrk reported errors: {errors and errors.group(0)} {socket_errors and socket_errors.group(0)}")
    return rps, p50, p99


def h2load(url, conns, body):
    log = tempfile.mktemp(suffix=".h2log")
    out = subprocess.run(
        ["h2load", "-c", str(conns), "-m", "1", "-t", str(min(conns, 2)), "-D", str(DURATION),
         "--data", body, "-H", "content-type: application/json", "--log-file", log, url],
        capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    failed = int(re.search(r"(\d+) failed", out).group(1))
    if failed:
        print(f"  h2load: {failed} failed requests")
    durations = []
    with open(log) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                durations.append(int(parts[2]) / 1000.0)
    os.unlink(log)
    durations.sort()
    pct = lambda q: durations[min(len(durations) - 1, int(q * len(durations)))] if durations else float("nan")
    return rps, pct(0.50), pct(0.99)


def h2load_n(url, conns, body, requests, h1, pin):
    """Fixed request count, one generator thread; returns req/s."""
    argv = taskset(pin) + ["h2load", "-c", str(conns), "-m", "1", "-t", "1", "-n", str(requests),
                           "--data", body, "-H", "content-type: application/json", url]
    if h1:
        argv.insert(len(taskset(pin)) + 1, "--h1")
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    failed = int(re.search(r"(\d+) failed", out).group(1))
    if failed:
        print(f"  h2load: {failed} failed requests")
    return float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))


def protocols():
    """HTTP/1.1 vs HTTP/2 with the same generator, server and generator on separate CPUs."""
    pin = 0 if (os.cpu_count() or 1) >= 2 else None
    gen = 1 if pin is not None else None
    body = os.path.join(DATA, "pod.json")
    reps = 3 if QUICK else 5
    requests = 3000 * DURATION
    servers = [("product", product(os.path.join(DATA, "functions-10"), pin)), ("floor", floor(pin))]
    print(f"\n## HTTP/1.1 vs HTTP/2, same generator (h2load; server on CPU {pin}, h2load on CPU {gen}; "
          f"{reps} alternating runs of {requests:,} requests, medians)\n")
    print("| server | concurrency | HTTP/1.1 req/s | HTTP/2 req/s | HTTP/2 / HTTP/1.1 (median of per-run ratios) |")
    print("|---|---|---|---|---|")
    for c in ([8] if QUICK else [1, 8, 64]):
        for name, p in servers:
            h1s, h2s = [], []
            for _ in range(reps):
                h1s.append(h2load_n(p.url, c, body, requests, True, gen))
                h2s.append(h2load_n(p.url, c, body, requests, False, gen))
            ratio = statistics.median(b / a for a, b in zip(h1s, h2s))
            print(f"| {name} | {c} | {statistics.median(h1s):,.0f} | {statistics.median(h2s):,.0f} | {ratio:.2f} |")
    for _, p in servers:
        p.stop()


def row(label, r):
    return f"| {label} | {r[0]:,.0f} | {r[1]:.2f} | {r[2]:.2f} |"


def startup():
    for n in (1000, 10000):
        p = product(os.path.join(DATA, f"functions-{n}"))
        ready = p.ready_after
        time.sleep(1)
        print(f"{n:,} Functions: start to ready {ready * 1000:.0f} ms, idle RSS {p.rss() / 1024:.1f} MiB")
        p.stop()


def main():
    if os.environ.get("ONLY") == "startup":
        startup()
        return
    if os.environ.get("ONLY") == "protocols":
        protocols()
        return
    body = os.path.join(DATA, "pod.json")
    conc = [8] if QUICK else [1, 8, 64]
    results = []
    print(f"# Load benchmark ({DURATION}s per run, {os.cpu_count()} CPUs, load generator on the same machine)\n")

    prod, flo = product(os.path.join(DATA, "functions-10")), floor()
    idle_rss = prod.rss()
    for proto, tool in (("HTTP/1.1", wrk), ("HTTP/2", h2load)):
        for c in conc:
            p = tool(prod.url, c, body)
            f = tool(flo.url, c, body)
            results.append((proto, c, p, f))
    busy_rss = prod.rss()
    env1500 = wrk(prod.url, 1, os.path.join(DATA, "pod-1500-env.json"))
    prod.stop()
    flo.stop()

    print("| protocol | concurrency | product req/s | floor req/s | ratio | product p50 ms | product p99 ms | floor p50 ms | floor p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for proto, c, p, f in results:
        print(f"| {proto} | {c} | {p[0]:,.0f} | {f[0]:,.0f} | {p[0] / f[0]:.2f} | {p[1]:.2f} | {p[2]:.2f} | {f[1]:.2f} | {f[2]:.2f} |")
    print()
    print(f"1,500-env-var pod, HTTP/1.1, concurrency 1: {env1500[0]:,.0f} req/s, p50 {env1500[1]:.2f} ms, p99 {env1500[2]:.2f} ms")
    print(f"RSS, 10 Functions: idle {idle_rss / 1024:.1f} MiB, after load {busy_rss / 1024:.1f} MiB")

    # look-up cost vs store size
    scale = []
    for n in (10, 100000):
        p = product(os.path.join(DATA, f"functions-{n}"))
        started = p.ready_after
        r = wrk(p.url, 8, body)
        scale.append((n, r, p.rss(), started))
        p.stop()
    print(f"Store size, HTTP/1.1 c=8: 10 Functions {scale[0][1][0]:,.0f} req/s; 100,000 Functions "
          f"{scale[1][1][0]:,.0f} req/s; ratio {scale[1][1][0] / scale[0][1][0]:.2f} "
          f"(RSS {scale[1][2] / 1024:.1f} MiB with 100,000, start to ready {scale[1][3]:.1f} s)")

    startup()
    protocols()


if __name__ == "__main__":
    main()
