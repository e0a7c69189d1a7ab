#!/usr/bin/env bash
# Dapr proxy benchmark: fake daprd -> proxy (release binary) -> 4 fake
# function pods, against fake daprd -> one function directly, same generator,
# same run; unary gRPC OnTopicEvent with 1 KB of data. Also the CPU time per
# event of each side, the proxy's idle RSS and its RSS with one stalled
# function holding 5,000 events.
#
#   bash bench/proxy.sh [SECONDS_PER_STEP] [ROUNDS]
#
# PIN=1 runs the generator (fake daprd and function pods) on CPU 1 and the
# proxy on CPU 0, as in a cluster where the proxy pod has a core of its own;
# unpinned, all three share every core.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin openfunction-dapr --example proxy_load
bin=target/release/openfunction-dapr
if [ "${PIN:-0}" = 1 ]; then
    PROXY_CPU=0 exec taskset -c 1 target/release/examples/proxy_load "$bin" "${1:-5}" "${2:-3}"
fi
exec target/release/examples/proxy_load "$bin" "${1:-5}" "${2:-3}"
