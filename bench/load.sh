#!/usr/bin/env bash
# Load benchmark over TLS: the product against the floor. See bench/load.py.
#   bench/load.sh                 # 10 s per run
#   DURATION=5 QUICK=1 bench/load.sh
#   ONLY=startup bench/load.sh     # start-to-ready and idle RSS only
#   ONLY=protocols bench/load.sh   # HTTP/1.1 vs HTTP/2, same generator, pinned CPUs
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  apt-get install -y "${missing[@]}" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y "${missing[@]}" >/dev/null; }
fi

cargo build --release --bin openfunction-dapr --example floor
python3 bench/make_bodies.py target/bench-data >/dev/null
exec python3 bench/load.py
