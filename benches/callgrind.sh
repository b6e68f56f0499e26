#!/usr/bin/env bash
# Instruction profile of the bridge under the load driver: counts instructions, not time,
# so it does not depend on what else the machine is doing. See BENCHMARKS.md.
#   benches/callgrind.sh [CASE] [REQUESTS]     CASE: http (default), cache, isuser, …
# Needs valgrind (Debian: valgrind). Builds a non-LTO release binary with debug info in
# target/profile (symbols; the shipped one is stripped), starts a private nginx for the
# http case, and prints the top of callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
case_name=${1:-http}
requests=${2:-3000}
port=${PORT:-18082}
work=$(mktemp -d)
trap 'benches/nginx.sh stop "$work/nginx" 2>/dev/null || true; rm -rf "$work"' EXIT

command -v valgrind >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=1 CARGO_PROFILE_RELEASE_LTO=false \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    cargo build --release --quiet --bin extauth-bridge --target-dir target/profile
cargo build --release --quiet --examples

cat > "$work/bridge.sh" <<WRAP
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$work/callgrind.out.%p $PWD/target/profile/release/extauth-bridge "\$@"
WRAP
chmod +x "$work/bridge.sh"
args=(--bridge "$work/bridge.sh" --requests "$requests" --rounds 1 --only "$case_name")
if [ "$case_name" = http ]; then
    args+=(--http "$(benches/nginx.sh start "$work/nginx" "$port")")
fi
target/release/examples/loadgen "${args[@]}"
out=$(ls "$work"/callgrind.out.* | head -1)
echo "== inclusive, top 60 (requests: $requests plus the driver's warm-up)"
callgrind_annotate --inclusive=yes "$out" | sed -n '20,80p' | cut -c1-200
cp "$out" target/profile/callgrind.out
echo "profile kept in target/profile/callgrind.out"
