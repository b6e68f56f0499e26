#!/usr/bin/env python3
"""Self-test of the test IdP: starts server.py on a free port in a temp dir,
exercises every endpoint extauth-bridge relies on with plain urllib, prints
one line per check and "N passed, M failed"; exit status 1 on any failure.

    python selftest.py            (run with the venv's python: needs jwcrypto)
    python selftest.py --url http://127.0.0.1:PORT   (test an already running IdP)
"""
import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = []  # (ok, name, detail)


def check(name, ok, detail=""):
    RESULTS.append((bool(ok), name, detail))
    print(f"{'PASS' if ok else 'FAIL'} {name}" + (f" -- {detail}" if detail and not ok else ""), flush=True)
    return ok


class Resp:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def __repr__(self):
        return f"HTTP {self.status} {self.body[:300]!r}"


def http(method, url, form=None, headers=None):
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return Resp(r.status, r.headers, r.read().decode())
    except urllib.error.HTTPError as e:
        return Resp(e.code, e.headers, e.read().decode())


def basic(client_id, secret, encode=True):
    """RFC 6749 2.3.1: form-urlencode id and secret, THEN base64 for Basic."""
    if encode:
        client_id, secret = urllib.parse.quote_plus(client_id), urllib.parse.quote_plus(secret)
    raw = f"{client_id}:{secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def bearer(tok):
    return {"Authorization": f"Bearer {tok}"}


def verify_id_token(label, token_response, jwks_keys, issuer, client_id, username):
    """Verify signature (RS256, kid from JWKS), iss, aud, exp, at_hash, claims."""
    import hashlib

    from jwcrypto import jwk, jwt

    idt = token_response.get("id_token")
    if not check(f"{label}: present", idt, token_response):
        return None
    try:
        ks = jwk.JWKSet.from_json(json.dumps({"keys": jwks_keys}))
        parsed = jwt.JWT(jwt=idt, key=ks, algs=["RS256"], check_claims={"exp": None, "iss": issuer})
        header = json.loads(parsed.header)
        claims = json.loads(parsed.claims)
    except Exception as e:  # noqa: BLE001
        check(f"{label}: RS256 signature verifies against JWKS", False, repr(e))
        return None
    check(f"{label}: RS256 signature verifies against JWKS (header kid matches)",
          header.get("alg") == "RS256" and header.get("kid") in {k["kid"] for k in jwks_keys}, header)
    digest = hashlib.sha256(token_response["access_token"].encode()).digest()
    at_hash = base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()
    check(f"{label}: iss/aud/sub/preferred_username/at_hash",
          claims.get("iss") == issuer and claims.get("aud") == client_id and claims.get("sub")
          and claims.get("preferred_username") == username and claims.get("at_hash") == at_hash
          and claims.get("exp", 0) > time.time(), claims)
    return claims


def start_server(workdir, *extra_args):
    cmd = [sys.executable, os.path.join(HERE, "server.py"), "--workdir", workdir, "--port", "0", *extra_args]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    elapsed = time.monotonic() - t0
    if not line.startswith("READY "):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split(" ", 1)[1], elapsed


def run_checks(base):
    issuer = base + "/o"
    token_url = issuer + "/token/"
    introspect_url = issuer + "/introspect/"
    revoke_url = issuer + "/revoke_token/"
    userinfo_url = issuer + "/userinfo/"

    # ---------- discovery ----------
    r = http("GET", issuer + "/.well-known/openid-configuration")
    d = r.json() or {}
    check("oidc discovery {issuer}/.well-known/openid-configuration issuer matches",
          r.status == 200 and d.get("issuer") == issuer, r)
    check("oidc discovery endpoints",
          d.get("token_endpoint") == token_url and d.get("userinfo_endpoint") == userinfo_url
          and d.get("jwks_uri") == issuer + "/.well-known/jwks.json"
          and "preferred_username" in d.get("claims_supported", []), d)
    r = http("GET", issuer + "/.well-known/openid-configuration/")
    check("oidc discovery also with trailing slash", r.status == 200 and (r.json() or {}).get("issuer") == issuer, r)

    r = http("GET", base + "/.well-known/oauth-authorization-server/o")
    m = r.json() or {}
    check("rfc8414 metadata /.well-known/oauth-authorization-server/o issuer matches",
          r.status == 200 and m.get("issuer") == issuer, r)
    check("rfc8414 metadata endpoints + grant_types_supported has password",
          m.get("token_endpoint") == token_url and m.get("introspection_endpoint") == introspect_url
          and m.get("revocation_endpoint") == revoke_url
          and m.get("jwks_uri") == issuer + "/.well-known/jwks.json"
          and "password" in m.get("grant_types_supported", []), m)
    r = http("GET", base + "/.well-known/oauth-authorization-server")
    check("rfc8414 root form (no issuer path) is 404", r.status == 404, r)

    r = http("GET", issuer + "/.well-known/jwks.json")
    keys = (r.json() or {}).get("keys", [])
    rsa = [k for k in keys if k.get("kty") == "RSA" and k.get("kid") and k.get("n") and k.get("e")]
    check("jwks has an RSA key with kid (alg RS256, use sig)",
          r.status == 200 and rsa and rsa[0].get("alg") == "RS256" and rsa[0].get("use") == "sig", r)

    # ---------- password grant ----------
    def grant(user, pw, auth_headers=None, extra=None, scope="openid profile"):
        form = {"grant_type": "password", "username": user, "password": pw}
        if scope is not None:
            form["scope"] = scope
        form.update(extra or {})
        return http("POST", token_url, form, auth_headers)

    def good_token(name, r, scope="openid profile"):
        j = r.json() or {}
        ok = (r.status == 200 and j.get("token_type") == "Bearer" and j.get("access_token")
              and isinstance(j.get("expires_in"), int) and j.get("scope") == scope)
        check(name, ok, r)
        return j

    clients = {
        "basic (client_secret_basic)": lambda: basic("bridge-basic", "basic-secret"),
        "post (client_secret_post)": lambda: {"client_id": "bridge-post", "client_secret": "post-secret"},
        "public (client_id only)": lambda: {"client_id": "bridge-public"},
        "weird (basic, urlencoded id/secret)": lambda: basic("weird id:é", "s3cr:et&+%"),
        "weird (client_secret_post)": lambda: {"client_id": "weird id:é", "client_secret": "s3cr:et&+%"},
    }
    tokens = {}
    for label, mk in clients.items():
        c = mk()
        if "Authorization" in c:
            r = grant("romeo", "iheartjuliet", auth_headers=c)
        else:
            r = grant("romeo", "iheartjuliet", extra=c)
        tokens[label] = good_token(f"password grant romeo via {label} -> 200 Bearer", r)
    romeo = tokens["basic (client_secret_basic)"]
    check("password grant returns refresh_token, no id_token",
          romeo.get("refresh_token") and "id_token" not in romeo, romeo)

    r = grant("romeo", "iheartjuliet", auth_headers=basic("weird id:é", "s3cr:et&+%", encode=False))
    check("weird client with NON-urlencoded Basic creds -> 401 invalid_client",
          r.status == 401 and (r.json() or {}).get("error") == "invalid_client", r)
    r = grant("romeo", "iheartjuliet", auth_headers=basic("bridge-basic", "wrong"))
    check("wrong client secret -> 401 invalid_client",
          r.status == 401 and (r.json() or {}).get("error") == "invalid_client", r)
    r = grant("romeo", "iheartjuliet", extra={"client_id": "bridge-basic"})
    check("confidential client without secret -> 401 invalid_client",
          r.status == 401 and (r.json() or {}).get("error") == "invalid_client", r)
    r = grant("romeo", "iheartjuliet", extra={"client_id": "no-such-client"})
    check("unknown client_id -> 401 invalid_client",
          r.status == 401 and (r.json() or {}).get("error") == "invalid_client", r)

    good_token("juliet (password with colon) via basic -> 200",
               grant("juliet", "wherefore:art thou", auth_headers=basic("bridge-basic", "basic-secret")))
    good_token("mercutio (non-ASCII password) via basic -> 200",
               grant("mercutio", "pässwörd✓", auth_headers=basic("bridge-basic", "basic-secret")))

    def bad_grant(name, r):
        check(name, r.status == 400 and (r.json() or {}).get("error") == "invalid_grant", r)

    bad_grant("wrong password -> 400 invalid_grant",
              grant("romeo", "wrong", auth_headers=basic("bridge-basic", "basic-secret")))
    bad_grant("unknown user -> 400 invalid_grant",
              grant("benvolio", "x", auth_headers=basic("bridge-basic", "basic-secret")))
    bad_grant("inactive tybalt (right password) -> 400 invalid_grant",
              grant("tybalt", "fightme", auth_headers=basic("bridge-basic", "basic-secret")))
    bad_grant("username case matters (Romeo) -> 400 invalid_grant",
              grant("Romeo", "iheartjuliet", auth_headers=basic("bridge-basic", "basic-secret")))
    r = grant("romeo", "iheartjuliet", auth_headers=basic("bridge-basic", "basic-secret"), scope="openid bogus")
    check("unknown scope -> 400 invalid_scope",
          r.status == 400 and (r.json() or {}).get("error") == "invalid_scope", r)
    good_token("no scope param -> default scope 'openid profile email read'",
               grant("romeo", "iheartjuliet", auth_headers=basic("bridge-basic", "basic-secret"), scope=None),
               scope="openid profile email read")
    r = http("POST", issuer + "/token", {"grant_type": "password", "username": "romeo",
                                         "password": "iheartjuliet"}, basic("bridge-basic", "basic-secret"))
    check("token endpoint without trailing slash -> 404", r.status == 404, r)

    # ---------- userinfo ----------
    at = romeo["access_token"]
    r = http("GET", userinfo_url, headers=bearer(at))
    u = r.json() or {}
    check("userinfo GET (scope openid profile) -> preferred_username romeo",
          r.status == 200 and u.get("preferred_username") == "romeo" and u.get("sub"), r)
    r = http("POST", userinfo_url, form={}, headers=bearer(at))
    check("userinfo POST also works", r.status == 200 and (r.json() or {}).get("preferred_username") == "romeo", r)
    t_openid = grant("romeo", "iheartjuliet", auth_headers=basic("bridge-basic", "basic-secret"), scope="openid").json()
    r = http("GET", userinfo_url, headers=bearer(t_openid["access_token"]))
    check("userinfo with scope 'openid' only -> 200 without preferred_username",
          r.status == 200 and "preferred_username" not in (r.json() or {}), r)
    t_prof = grant("romeo", "iheartjuliet", auth_headers=basic("bridge-basic", "basic-secret"), scope="profile").json()
    r = http("GET", userinfo_url, headers=bearer(t_prof["access_token"]))
    check("userinfo with scope 'profile' only (no openid) -> 401 invalid_token",
          r.status == 401 and (r.json() or {}).get("error") == "invalid_token", r)
    r = http("GET", userinfo_url, headers=bearer("garbage"))
    check("userinfo with garbage token -> 401 + WWW-Authenticate Bearer",
          r.status == 401 and r.headers.get("WWW-Authenticate", "").startswith("Bearer"), r)
    t_email = grant("romeo", "iheartjuliet", auth_headers=basic("bridge-basic", "basic-secret"),
                    scope="openid email").json()
    r = http("GET", userinfo_url, headers=bearer(t_email["access_token"]))
    check("userinfo with scope 'openid email' -> email, no preferred_username",
          r.status == 200 and (r.json() or {}).get("email") == "romeo@montague.example"
          and "preferred_username" not in (r.json() or {}), r)

    # ---------- introspection ----------
    def introspect(tok, headers=None, extra=None):
        form = {"token": tok}
        form.update(extra or {})
        return http("POST", introspect_url, form, headers)

    def active_romeo(name, r, client_id="bridge-basic"):
        j = r.json() or {}
        check(name, r.status == 200 and j.get("active") is True and j.get("username") == "romeo"
              and j.get("client_id") == client_id and j.get("scope") == "openid profile"
              and isinstance(j.get("exp"), int) and j["exp"] > time.time(), r)

    active_romeo("introspect with client_secret_basic (bridge-basic) -> active, username romeo",
                 introspect(at, basic("bridge-basic", "basic-secret")))
    active_romeo("introspect with bearer introspect-token-123 -> active, username romeo",
                 introspect(at, bearer("introspect-token-123")))
    active_romeo("introspect with client_secret_post (bridge-post)",
                 introspect(at, extra={"client_id": "bridge-post", "client_secret": "post-secret"}))
    active_romeo("introspect with weird client (urlencoded Basic)",
                 introspect(at, basic("weird id:é", "s3cr:et&+%")))
    r = http("GET", introspect_url + "?" + urllib.parse.urlencode({"token": at}),
             headers=bearer("introspect-token-123"))
    active_romeo("introspect via GET ?token= also works", r)
    active_romeo("introspect a token issued to bridge-public (client_id field)",
                 introspect(tokens["public (client_id only)"]["access_token"], bearer("introspect-token-123")),
                 client_id="bridge-public")
    active_romeo("introspect a token issued to the weird client (client_id field)",
                 introspect(tokens["weird (basic, urlencoded id/secret)"]["access_token"],
                            bearer("introspect-token-123")), client_id="weird id:é")
    r = introspect(at, extra={"client_id": "bridge-public"})
    check("introspect authenticated only as public client -> 403 (empty body)", r.status == 403, r)
    r = introspect(at, bearer(t_openid["access_token"]))
    check("introspect with bearer lacking 'introspection' scope -> 403", r.status == 403, r)
    r = introspect(at, basic("bridge-basic", "wrong"))
    check("introspect with wrong client secret -> 403", r.status == 403, r)
    r = introspect(at)
    check("introspect without any auth -> 403", r.status == 403, r)
    r = introspect("garbage-token", bearer("introspect-token-123"))
    check("introspect garbage token -> 200 {active:false}", r.status == 200 and r.json() == {"active": False}, r)
    r = http("POST", introspect_url, {}, bearer("introspect-token-123"))
    check("introspect without token param -> 400 invalid_request",
          r.status == 400 and (r.json() or {}).get("error") == "invalid_request", r)

    # ---------- revocation ----------
    def revoke(tok, headers=None, extra=None):
        form = {"token": tok}
        form.update(extra or {})
        return http("POST", revoke_url, form, headers)

    r = revoke(at, basic("bridge-post", "post-secret"))
    j = introspect(at, bearer("introspect-token-123")).json() or {}
    check("revoke by a DIFFERENT client -> 200 but token stays active",
          r.status == 200 and j.get("active") is True, (r, j))
    r = revoke(at, basic("bridge-basic", "basic-secret"))
    check("revoke (client_secret_basic, owner client) -> 200", r.status == 200 and r.body == "", r)
    r = introspect(at, bearer("introspect-token-123"))
    check("introspect after revoke -> active false", r.status == 200 and r.json() == {"active": False}, r)
    r = http("GET", userinfo_url, headers=bearer(at))
    check("userinfo after revoke -> 401", r.status == 401, r)
    r = http("POST", token_url, {"grant_type": "refresh_token", "refresh_token": romeo["refresh_token"]},
             basic("bridge-basic", "basic-secret"))
    check("refresh_token of a revoked access token -> 400 invalid_grant",
          r.status == 400 and (r.json() or {}).get("error") == "invalid_grant", r)

    for label, auth, extra in [
        ("post (client_secret_post)", None, {"client_id": "bridge-post", "client_secret": "post-secret"}),
        ("public (client_id only)", None, {"client_id": "bridge-public"}),
        ("weird (basic, urlencoded id/secret)", basic("weird id:é", "s3cr:et&+%"), None),
    ]:
        tok = tokens[label]["access_token"]
        r = revoke(tok, auth, extra)
        j = introspect(tok, bearer("introspect-token-123")).json() or {}
        check(f"revoke with {label} -> 200, then inactive", r.status == 200 and j.get("active") is False, (r, j))
    r = revoke("garbage", basic("bridge-basic", "basic-secret"))
    check("revoke unknown token -> 200", r.status == 200, r)
    r = revoke(tokens["weird (client_secret_post)"]["access_token"], basic("bridge-basic", "wrong"))
    check("revoke with wrong client secret -> 401 invalid_client",
          r.status == 401 and (r.json() or {}).get("error") == "invalid_client", r)

    # ---------- refresh grant + id_token ----------
    # Stock DOT: the password grant never returns an id_token, the refresh_token
    # grant does (when the scope contains openid).
    pw = grant("juliet", "wherefore:art thou", auth_headers=basic("bridge-basic", "basic-secret")).json()
    r = http("POST", token_url, {"grant_type": "refresh_token", "refresh_token": pw["refresh_token"]},
             basic("bridge-basic", "basic-secret"))
    rj = good_token("refresh_token grant -> 200 Bearer, same scope", r)
    check("refresh_token grant rotates the refresh token",
          rj.get("refresh_token") and rj.get("refresh_token") != pw["refresh_token"], rj)
    j = introspect(pw["access_token"], bearer("introspect-token-123")).json() or {}
    check("old access token inactive after refresh", j.get("active") is False, j)
    r = http("POST", token_url, {"grant_type": "refresh_token", "refresh_token": pw["refresh_token"]},
             basic("bridge-basic", "basic-secret"))
    check("re-using the rotated refresh token -> 400 invalid_grant",
          r.status == 400 and (r.json() or {}).get("error") == "invalid_grant", r)
    verify_id_token("refresh grant id_token", rj, keys, issuer, "bridge-basic", "juliet")

    # ---------- keep-alive ----------
    import http.client as httpclient

    conn = httpclient.HTTPConnection(urllib.parse.urlparse(base).hostname, urllib.parse.urlparse(base).port,
                                      timeout=10)
    ok = True
    for _ in range(3):
        conn.request("GET", "/o/.well-known/jwks.json")
        resp = conn.getresponse()
        resp.read()
        ok = ok and resp.status == 200 and not resp.will_close and resp.getheader("Content-Length")
    conn.close()
    check("HTTP/1.1 keep-alive: 3 requests on one connection, Content-Length set", ok)


def stop_server(proc, label):
    if proc is None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = None
    check(label, rc == 0, f"rc={rc}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", help="test an already running IdP instead of starting one")
    args = ap.parse_args()

    proc = None
    tmp = None
    try:
        if args.url:
            base = args.url.rstrip("/")
        else:
            tmp = tempfile.TemporaryDirectory(prefix="extauth-idp-")
            proc, base, elapsed = start_server(tmp.name)
            print(f"INFO server started at {base} in {elapsed:.2f}s (fresh workdir)", flush=True)
        run_checks(base)
    except Exception as e:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        check("selftest ran to completion", False, repr(e))
    finally:
        stop_server(proc, "SIGTERM -> clean exit status 0")
        if tmp is not None:
            tmp.cleanup()

    if not args.url:
        # Opt-in mode: password grant also returns an id_token (not stock DOT).
        proc = None
        with tempfile.TemporaryDirectory(prefix="extauth-idp-") as wd:
            try:
                proc, base, elapsed = start_server(wd, "--password-grant-id-token")
                print(f"INFO second server (--password-grant-id-token) at {base} in {elapsed:.2f}s", flush=True)
                issuer = base + "/o"
                keys = http("GET", issuer + "/.well-known/jwks.json").json()["keys"]
                r = http("POST", issuer + "/token/", {"grant_type": "password", "username": "mercutio",
                                                       "password": "pässwörd✓", "scope": "openid profile"},
                         basic("weird id:é", "s3cr:et&+%"))
                check("--password-grant-id-token: password grant -> 200", r.status == 200, r)
                verify_id_token("--password-grant-id-token: password grant id_token", r.json() or {}, keys,
                                issuer, "weird id:é", "mercutio")
                r = http("POST", issuer + "/token/", {"grant_type": "password", "username": "romeo",
                                                       "password": "iheartjuliet", "scope": "profile"},
                         basic("bridge-basic", "basic-secret"))
                check("--password-grant-id-token: no id_token without openid scope",
                      r.status == 200 and "id_token" not in (r.json() or {}), r)
            except Exception as e:  # noqa: BLE001
                check("opt-in id_token server checks ran", False, repr(e))
            finally:
                stop_server(proc, "second server: SIGTERM -> exit 0")

    passed = sum(1 for ok, _, _ in RESULTS if ok)
    failed = len(RESULTS) - passed
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
