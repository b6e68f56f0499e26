#!/usr/bin/env python3
"""Entry point of the extauth-bridge OAuth2/OIDC test IdP (django-oauth-toolkit).

    python server.py --workdir DIR [--port PORT] [--threads N] [--access-log]
                     [--idle-timeout S] [--exit-on-stdin-eof]
                     [--password-grant-id-token] [--init-only]

Binds 127.0.0.1:PORT (0 = free port) first, so the issuer
http://127.0.0.1:PORT/o is known before Django is configured; then migrates
the SQLite DB in DIR, seeds it, and serves with waitress. Prints exactly one
stdout line, "READY http://127.0.0.1:PORT", once the socket accepts
connections. SIGTERM / SIGINT -> clean shutdown, exit status 0.
"""
import argparse
import hashlib
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"


def log(msg):
    print(f"idp: {msg}", file=sys.stderr, flush=True)


def ensure_rsa_key(path):
    """RSA-2048 signing key for RS256 id_tokens; reused if WORKDIR is reused."""
    if path.exists():
        return
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pem)
    tmp.replace(path)


def migrate(workdir):
    """Migrate WORKDIR/db.sqlite3. A fresh DB is copied from a schema-only
    template cached in the venv (sys.prefix) when one exists (saves ~1.2 s of
    migrations); otherwise it is migrated and then saved as that template.
    IDP_NO_DB_CACHE=1 disables the cache."""
    import shutil
    import sqlite3
    from importlib.metadata import version

    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    db = workdir / "db.sqlite3"
    use_cache = os.environ.get("IDP_NO_DB_CACHE") != "1"
    key_src = repr((version("django"), version("django-oauth-toolkit"), settings.INSTALLED_APPS))
    cache = Path(sys.prefix) / f"extauth-idp-schema-{hashlib.sha256(key_src.encode()).hexdigest()[:16]}.sqlite3"
    fresh = not db.exists()
    if fresh and use_cache and cache.exists():
        shutil.copyfile(cache, db)
        fresh = False
    call_command("migrate", verbosity=0, interactive=False)
    if fresh and use_cache and os.access(cache.parent, os.W_OK):
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        connection.ensure_connection()
        dst = sqlite3.connect(tmp)
        try:
            connection.connection.backup(dst)
        finally:
            dst.close()
        os.replace(tmp, cache)


def watch_stdin():
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    log("stdin closed, shutting down")
    os.kill(os.getpid(), signal.SIGTERM)


def access_log(app):
    def wrapped(environ, start_response):
        def sr(status, headers, exc_info=None):
            log(f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')} -> {status}")
            return start_response(status, headers, exc_info)

        return app(environ, sr)

    return wrapped


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, help="directory for db.sqlite3 and the RSA key")
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1, 0 = pick a free one")
    ap.add_argument("--threads", type=int, default=4, help="waitress worker threads")
    ap.add_argument("--access-log", action="store_true", help="log each request to stderr")
    ap.add_argument("--idle-timeout", type=int, default=120,
                    help="seconds before an idle keep-alive connection is closed (waitress channel_timeout)")
    ap.add_argument("--exit-on-stdin-eof", action="store_true",
                    help="shut down when stdin is closed (e.g. the test process that piped it died)")
    ap.add_argument("--init-only", action="store_true",
                    help="migrate + seed WORKDIR (warms the schema cache), then exit without serving")
    ap.add_argument("--password-grant-id-token", action="store_true",
                    help="password grant also returns an id_token for scope openid (not stock DOT)")
    args = ap.parse_args()

    t0 = time.monotonic()
    # The handlers only set a flag, checked by the serve loop: raising
    # SystemExit from them could be swallowed by one of waitress's bare
    # `except:` clauses (trigger thunks) and leave the server running.
    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: stopping.append(signum))
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    if args.init_only:
        sock, base = None, f"http://{HOST}:{args.port}"
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, args.port))
        sock.listen(128)
        base = f"http://{HOST}:{sock.getsockname()[1]}"

    ensure_rsa_key(workdir / "oidc_rsa_key.pem")
    os.environ["IDP_WORKDIR"] = str(workdir)
    os.environ["IDP_ISSUER"] = f"{base}/o"
    os.environ["DJANGO_SETTINGS_MODULE"] = "idp.settings"
    if args.password_grant_id_token:
        os.environ["IDP_PASSWORD_GRANT_ID_TOKEN"] = "1"
    sys.path.insert(0, str(HERE))
    sys.dont_write_bytecode = True  # keep the source tree free of __pycache__

    import django

    django.setup()
    from django.core.wsgi import get_wsgi_application

    migrate(workdir)
    from idp.seed import seed

    seed()
    if args.init_only:
        log(f"initialised {workdir} in {time.monotonic() - t0:.2f}s")
        return 0
    app = get_wsgi_application()
    if args.access_log or os.environ.get("IDP_ACCESS_LOG"):
        app = access_log(app)

    import waitress.server
    from waitress import wasyncore

    sockmap = {}
    server = waitress.server.create_server(
        app,
        map=sockmap,
        sockets=[sock],
        threads=args.threads,
        ident="extauth-test-idp",
        clear_untrusted_proxy_headers=True,
        channel_timeout=args.idle_timeout,
        # waitress looks for idle channels only every cleanup_interval (30 s by default):
        # check at least as often as the timeout, so a short --idle-timeout really applies
        cleanup_interval=max(1, min(30, args.idle_timeout)),
    )

    if stopping:  # SIGTERM during startup
        wasyncore.close_all(sockmap)
        log("stopped before serving")
        return 0
    log(f"workdir {workdir}, issuer {base}/o, startup {time.monotonic() - t0:.2f}s")
    print(f"READY {base}", flush=True)
    if args.exit_on_stdin_eof:
        threading.Thread(target=watch_stdin, daemon=True).start()
    try:
        while not stopping:
            wasyncore.loop(timeout=0.2, map=sockmap, use_poll=True, count=1)
    finally:
        server.task_dispatcher.shutdown()  # waits up to 5 s for running requests
        wasyncore.close_all(sockmap)
        log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
