#!/usr/bin/env python3
"""Stand-in for extauth-bridge, used to prove the e2e harness (run.py --fake).

Speaks ejabberd's extauth protocol on stdin/stdout (2-byte big-endian length,
then the payload; replies are exactly 00 02 00 01 / 00 02 00 00) and answers from
a users file with the same semantics as `extauth-bridge --users FILE`, except
that passwords are stored in plain text:

    user@domain:password          (blank lines and '#' comments are kept)

ejabberd starts several of these (extauth_pool_size) and sends requests round
robin, so state lives in the file: every request re-reads it, and setpass,
tryregister and removeuser rewrite it atomically (temp file + rename) under an
flock on FILE.lock, as the real bridge does.

Usage: fake_extauth.py --users FILE
"""
import fcntl
import os
import struct
import sys


def read_exact(stream, n):
    buf = b""
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


class UsersFile:
    def __init__(self, path):
        self.path = path
        self.lock_path = path + ".lock"

    def _lock(self, exclusive):
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        return fd

    def _load(self):
        """Returns (lines, {jid: index}) ; lines are kept verbatim."""
        try:
            with open(self.path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            lines = []
        index = {}
        for i, line in enumerate(lines):
            s = line.strip()
            if not s or s.startswith("#") or ":" not in s:
                continue
            jid, _, _pw = s.partition(":")
            index[jid.lower()] = i
        return lines, index

    def _store(self, lines):
        tmp = "%s.tmp.%d" % (self.path, os.getpid())
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("".join(l + "\n" for l in lines))
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self.path)

    def password(self, jid):
        fd = self._lock(False)
        try:
            lines, index = self._load()
            i = index.get(jid)
            return None if i is None else lines[i].strip().partition(":")[2]
        finally:
            os.close(fd)

    def modify(self, fn):
        fd = self._lock(True)
        try:
            lines, index = self._load()
            ok = fn(lines, index)
            if ok:
                self._store(lines)
            return ok
        finally:
            os.close(fd)


def handle(users, msg):
    parts = msg.split(":", 3)
    cmd = parts[0]
    if cmd in ("auth", "setpass", "tryregister", "removeuser3") and len(parts) == 4:
        user, host, pw = parts[1], parts[2], parts[3]
    elif cmd in ("isuser", "removeuser") and len(parts) == 3:
        user, host, pw = parts[1], parts[2], None
    else:
        return False
    jid = ("%s@%s" % (user, host)).lower()
    if cmd == "auth":
        return pw != "" and users.password(jid) == pw
    if cmd == "isuser":
        return users.password(jid) is not None
    if cmd == "setpass":
        def f(lines, index):
            if jid not in index or pw == "":
                return False
            lines[index[jid]] = "%s:%s" % (jid, pw)
            return True
        return users.modify(f)
    if cmd == "tryregister":
        def f(lines, index):
            if jid in index or pw == "":
                return False
            lines.append("%s:%s" % (jid, pw))
            return True
        return users.modify(f)
    if cmd in ("removeuser", "removeuser3"):
        def f(lines, index):
            if jid not in index:
                return False
            if cmd == "removeuser3" and lines[index[jid]].strip().partition(":")[2] != pw:
                return False
            del lines[index[jid]]
            return True
        return users.modify(f)
    return False


def main(argv):
    if len(argv) != 3 or argv[1] != "--users":
        print("usage: fake_extauth.py --users FILE", file=sys.stderr)
        return 2
    users = UsersFile(argv[2])
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    log = os.environ.get("FAKE_EXTAUTH_LOG")
    while True:
        hdr = read_exact(stdin, 2)
        if hdr is None:
            return 0
        (n,) = struct.unpack(">H", hdr)
        payload = read_exact(stdin, n)
        if payload is None:
            return 0
        try:
            ok = handle(users, payload.decode("utf-8"))
        except Exception as e:  # never crash on a request; answer false
            print("fake_extauth: error: %r" % (e,), file=sys.stderr)
            ok = False
        if log:
            with open(log, "a") as f:
                f.write("%d %s %d\n" % (os.getpid(), payload.split(b":", 1)[0].decode(), ok))
        stdout.write(b"\x00\x02\x00\x01" if ok else b"\x00\x02\x00\x00")
        stdout.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
