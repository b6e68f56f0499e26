#!/usr/bin/env bash
# A private nginx on a loopback port answering mod_auth_http's check_password with `true`:
# the "fast local HTTP server" of the load driver. Its own prefix, pid and logs under $DIR.
#   benches/nginx.sh start DIR PORT     (prints the base URL)
#   benches/nginx.sh stop DIR
set -euo pipefail
cmd=$1 dir=$2
case "$cmd" in
start)
    port=$3
    if ! command -v nginx >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
    fi
    mkdir -p "$dir/logs" "$dir/tmp"
    cat > "$dir/nginx.conf" <<CONF
daemon on;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $dir/tmp;
    proxy_temp_path $dir/tmp;
    fastcgi_temp_path $dir/tmp;
    uwsgi_temp_path $dir/tmp;
    scgi_temp_path $dir/tmp;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$port;
        location = /check_password { default_type text/plain; return 200 "true"; }
        location = /user_exists    { default_type text/plain; return 200 "true"; }
        location / { return 404; }
    }
}
CONF
    nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log"
    for _ in $(seq 50); do
        curl -fsS "http://127.0.0.1:$port/check_password" >/dev/null 2>&1 && break
        sleep 0.1
    done
    echo "http://127.0.0.1:$port"
    ;;
stop)
    if [ -f "$dir/nginx.pid" ]; then
        kill "$(cat "$dir/nginx.pid")" 2>/dev/null || true
    fi
    ;;
esac
