#!/usr/bin/env bash
# Usage: selftest.sh VENV_DIR
# Ensures the venv (setup.sh, a no-op when up to date), then starts the IdP on
# a free port in a temp dir and checks every endpoint. Ends with
# "N passed, M failed"; exit status non-zero on failure.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 VENV_DIR" >&2
    exit 2
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$HERE/setup.sh" "$1"
exec "$1/bin/python" "$HERE/selftest.py"
