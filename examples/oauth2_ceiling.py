#!/usr/bin/env python3
"""The test IdP's own ceiling for examples/oauth2_bench.rs: the HTTP calls one bridge login
makes, done directly, one at a time, over one keep-alive connection (stdlib only).

    python oauth2_ceiling.py ISSUER CALLS N [TOKEN]

CALLS: grant, grant+userinfo, grant+introspect, introspect, userinfo. Prints logins/s.
"""
import base64
import http.client
import json
import sys
import time
import urllib.parse

issuer, calls, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
token = sys.argv[4] if len(sys.argv) > 4 else None
url = urllib.parse.urlsplit(issuer)
conn = http.client.HTTPConnection(url.hostname, url.port)
basic = "Basic " + base64.b64encode(b"bridge-basic:basic-secret").decode()
form = {"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic}


def call(method, path, body=None, headers=None):
    conn.request(method, url.path + path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = json.loads(response.read())
    assert response.status == 200, (path, response.status)
    return data


def grant():
    body = urllib.parse.urlencode({"grant_type": "password", "username": "romeo",
                                   "password": "iheartjuliet", "scope": "openid profile"})
    return call("POST", "/token/", body, form)["access_token"]


def userinfo(t):
    assert call("GET", "/userinfo/", headers={"Authorization": "Bearer " + t})["preferred_username"] == "romeo"


def introspect(t):
    assert call("POST", "/introspect/", urllib.parse.urlencode({"token": t}), form)["active"]


login = {
    "grant": grant,
    "grant+userinfo": lambda: userinfo(grant()),
    "grant+introspect": lambda: introspect(grant()),
    "introspect": lambda: introspect(token),
    "userinfo": lambda: userinfo(token),
}[calls]
login()  # connect and warm up outside the timed loop
start = time.perf_counter()
for _ in range(n):
    login()
print(f"{n / (time.perf_counter() - start):.1f}")
