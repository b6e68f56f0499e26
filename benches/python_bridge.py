#!/usr/bin/env python3
"""The comparator: a typical Python extauth script for ejabberd, as people write them.

ejabberd framing on stdin/stdout (2-byte big-endian length, then the payload; replies
00 02 00 01 / 00 02 00 00), one keep-alive connection to a mod_auth_http server with the
standard library's http.client, GET {base}/check_password?user=&server=&pass= -> 200 "true".

    python_bridge.py http://127.0.0.1:18080     # ask the HTTP server
    python_bridge.py --always-true              # answer 1 to everything (Python's pipe floor)
"""
import http.client
import struct
import sys
import urllib.parse

YES = b"\x00\x02\x00\x01"
NO = b"\x00\x02\x00\x00"


def main():
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    always_true = sys.argv[1] == "--always-true"
    conn, path = None, ""
    if not always_true:
        base = urllib.parse.urlsplit(sys.argv[1])
        conn = http.client.HTTPConnection(base.hostname, base.port or 80, timeout=5)
        path = base.path.rstrip("/")
    while True:
        head = stdin.read(2)
        if len(head) < 2:
            return
        (length,) = struct.unpack(">H", head)
        fields = stdin.read(length).decode("utf-8").split(":", 3)
        answer = False
        if always_true:
            answer = True
        elif fields[0] == "auth" and len(fields) == 4:
            query = urllib.parse.urlencode(
                {"user": fields[1], "server": fields[2], "pass": fields[3]}
            )
            try:
                conn.request("GET", f"{path}/check_password?{query}")
                resp = conn.getresponse()
                body = resp.read()
                answer = resp.status == 200 and body.strip() == b"true"
            except (OSError, http.client.HTTPException):
                conn.close()
                answer = False
        stdout.write(YES if answer else NO)
        stdout.flush()


if __name__ == "__main__":
    main()
