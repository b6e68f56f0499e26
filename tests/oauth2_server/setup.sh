#!/usr/bin/env bash
# Usage: setup.sh VENV_DIR
# Idempotently creates a virtualenv at VENV_DIR with the test IdP's dependencies.
# Re-running is a no-op (a stamp holds the hash of requirements.txt).
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 VENV_DIR" >&2
    exit 2
fi
VENV_DIR=$1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REQ="$HERE/requirements.txt"
PYTHON=${PYTHON:-python3}

want=$(sha256sum "$REQ" | cut -d' ' -f1)
stamp="$VENV_DIR/.extauth-idp-requirements.sha256"
if [ -x "$VENV_DIR/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

if [ ! -x "$VENV_DIR/bin/python" ]; then
    "$PYTHON" -m venv "$VENV_DIR"
fi
"$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-input -r "$REQ"
# Warm-up: byte-compile, and cache a migrated schema-only SQLite DB in the venv
# so that every later server start skips the migrations (~1.2 s).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! "$VENV_DIR/bin/python" "$HERE/server.py" --workdir "$tmp/w" --init-only 2>"$tmp/log"; then
    cat "$tmp/log" >&2
    exit 1
fi
echo "$want" > "$stamp"
