#!/usr/bin/env bash
# Dapr proxy benchmark: fake daprd -> proxy (release binary) -> 4 fake
# function pods, against fake daprd -> one function directly, same generator,
# same run; unary gRPC OnTopicEvent with 1 KB of data. Also the proxy's idle
# RSS and its RSS with one stalled function holding 5,000 events.
#
#   bash bench/proxy.sh [SECONDS_PER_STEP] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin openfunction-dapr --example proxy_load
exec target/release/examples/proxy_load target/release/openfunction-dapr "${1:-5}" "${2:-3}"
