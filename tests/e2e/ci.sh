#!/usr/bin/env bash
# The e2e stage for CI, from a clean machine (root or sudo; package registries only):
# installs ejabberd + slixmpp + redis-server (apt) and the test IdP's virtualenv (pip), builds the release
# binary and the example API server, then runs every group of tests/e2e/run.py.
# Output: one line per case, then `N passed, M failed`; exit status non-zero on any failure.
#
#   tests/e2e/ci.sh                     # everything
#   tests/e2e/ci.sh --group http -v     # extra arguments go to run.py
#   E2E_BRIDGE=/path/extauth-bridge tests/e2e/ci.sh   # test that binary instead of building one
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TERM_COLOR=never
t0=$SECONDS
step() { printf '== %s (%ss)\n' "$1" "$((SECONDS - t0))"; }

step "ejabberd, slixmpp and redis-server (tests/e2e/setup.sh)"
tests/e2e/setup.sh

step "test IdP virtualenv (tests/oauth2_server/setup.sh)"
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    # Debian's python3 has venv in a separate package
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
fi
# the same place scripts/test uses, so the two share one venv
export EXTAUTH_TEST_IDP_VENV="${EXTAUTH_TEST_IDP_VENV:-$PWD/target/idp-venv}"
tests/oauth2_server/setup.sh "$EXTAUTH_TEST_IDP_VENV"

step "cargo build --release; cargo build --example http_auth_server"
# The binary under test is built exactly as users build it. The example API server is only
# a test helper: a debug build, which reuses what scripts/test (cargo test --all-targets,
# examples included) has built; a release build of it would compile every dependency a
# second time (dev-dependencies unify features differently): ~4 min more on 2 cores.
if [ -z "${E2E_BRIDGE:-}" ]; then
    cargo build --release --locked --quiet
fi
cargo build --locked --quiet --example http_auth_server

step "run.py"
status=0
/usr/bin/python3 tests/e2e/run.py \
    --bridge "${E2E_BRIDGE:-target/release/extauth-bridge}" \
    --http-server target/debug/examples/http_auth_server \
    --idp-venv "$EXTAUTH_TEST_IDP_VENV" \
    "$@" || status=$?
printf '== e2e stage: %ss wall, exit status %s\n' "$((SECONDS - t0))" "$status"
exit "$status"
