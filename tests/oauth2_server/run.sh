#!/usr/bin/env bash
# Usage: run.sh VENV_DIR WORKDIR [PORT [server.py options...]]
# Starts the test IdP on 127.0.0.1:PORT (PORT 0 or omitted = pick a free port).
# Prints exactly one stdout line "READY http://127.0.0.1:PORT" once it accepts
# connections; logs go to stderr. SIGTERM/SIGINT shut it down (exit 0).
# Extra options: --access-log --threads N --idle-timeout S --exit-on-stdin-eof
#                --password-grant-id-token   (see: python server.py --help)
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 VENV_DIR WORKDIR [PORT [server.py options...]]" >&2
    exit 2
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV_DIR=$1
WORKDIR=$2
PORT=${3:-0}
shift $(( $# >= 3 ? 3 : 2 ))
exec "$VENV_DIR/bin/python" "$HERE/server.py" --workdir "$WORKDIR" --port "$PORT" "$@"
