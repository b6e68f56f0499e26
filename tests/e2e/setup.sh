#!/usr/bin/env bash
# Installs what the e2e harness needs (idempotent): Debian's ejabberd 23.01,
# slixmpp for Debian's /usr/bin/python3 and redis-server (the shared group's store).
# Never leaves the system ejabberd or redis-server service running: the harness
# starts its own private ejabberd with `erl` and its own redis-server by pid.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need=()
dpkg-query -W -f='${Status}' ejabberd 2>/dev/null | grep -q 'install ok installed' || need+=(ejabberd)
dpkg-query -W -f='${Status}' python3-slixmpp 2>/dev/null | grep -q 'install ok installed' || need+=(python3-slixmpp)
dpkg-query -W -f='${Status}' redis-server 2>/dev/null | grep -q 'install ok installed' || need+=(redis-server)

if [ ${#need[@]} -gt 0 ]; then
    # Keep maintainer scripts from starting the ejabberd (or redis-server) service during install
    # (a policy-rc.d that exits 101 forbids invoke-rc.d starts). Only add one if
    # there is none, and remove only the one we added.
    added_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    trap '[ -n "$added_policy" ] && $SUDO rm -f /usr/sbin/policy-rc.d' EXIT
    aptlog=$(mktemp)
    if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"; } >"$aptlog" 2>&1; then
        cat "$aptlog" >&2; rm -f "$aptlog"; exit 1
    fi
    rm -f "$aptlog"
fi

# If the system service got started anyway (e.g. on a host with a real systemd),
# stop and disable it: the tests never use it.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now ejabberd.service >/dev/null 2>&1 || true
    $SUDO systemctl disable --now redis-server.service >/dev/null 2>&1 || true
fi
if pgrep -u ejabberd -x beam.smp >/dev/null 2>&1; then
    $SUDO /usr/sbin/ejabberdctl stop >/dev/null 2>&1 || true
    sleep 1
    for pid in $(pgrep -u ejabberd -x beam.smp || true); do $SUDO kill "$pid" 2>/dev/null || true; done
fi

echo "ejabberd: $(dpkg-query -W -f='${Version}' ejabberd)"
echo "python3-slixmpp: $(dpkg-query -W -f='${Version}' python3-slixmpp)"
echo "redis-server: $(dpkg-query -W -f='${Version}' redis-server)"
echo "erlang: $(HOME=/tmp erl -noshell -eval 'io:format("~s (erts ~s)",[erlang:system_info(otp_release),erlang:system_info(version)]),halt().')"
