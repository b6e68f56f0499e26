#!/usr/bin/env bash
# Start-up and memory: time from spawn to first reply over many spawns, idle and peak RSS
# (/proc/PID/status VmRSS, VmHWM) for each kind of work, and the binary's size.
#   benches/startup.sh [RUNS] [extra loadgen options, e.g. --http URL]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-200}
shift || true
cargo build --release --quiet --bins --examples
target/release/examples/loadgen --startup "$runs" "$@"
