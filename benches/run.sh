#!/usr/bin/env bash
# The whole performance suite, in one run so that every figure is a ratio to floors measured
# alongside it: criterion micro-benchmarks (optional), the load driver with a private nginx,
# and the start-up/memory measurement. See BENCHMARKS.md.
#   benches/run.sh                 load driver + start-up (about 3 minutes)
#   REQUESTS=50000 ROUNDS=5 PROCS=2 CRITERION=1 benches/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${REQUESTS:-20000}
rounds=${ROUNDS:-3}
procs=${PROCS:-1}
port=${PORT:-18080}
work=$(mktemp -d)
trap 'benches/nginx.sh stop "$work/nginx"; rm -rf "$work"' EXIT

command -v python3 >/dev/null || { echo "python3 is needed for the comparator" >&2; exit 1; }
if ! command -v wrk >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1 || true
fi

cargo build --release --quiet --bins --examples
url=$(benches/nginx.sh start "$work/nginx" "$port")

echo "== machine"
echo "$(nproc) CPUs, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "binary: $(stat -c %s target/release/extauth-bridge) bytes"
echo
echo "== load driver"
target/release/examples/loadgen --requests "$requests" --rounds "$rounds" --procs "$procs" --http "$url"
if [ "$procs" = 1 ]; then
    echo
    echo "== load driver, pool of 2 processes"
    target/release/examples/loadgen --requests "$requests" --rounds "$rounds" --procs 2 --http "$url" \
        --only responder,cache,http-floor,http,python-http
fi
echo
echo "== start-up and memory"
target/release/examples/loadgen --startup "${RUNS:-200}" --http "$url"
if [ "${CRITERION:-0}" = 1 ]; then
    echo
    echo "== criterion"
    cargo bench --bench codecs --bench cache
fi
