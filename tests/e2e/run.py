#!/usr/bin/env python3
"""End-to-end tests: a private ejabberd 23.01 with `auth_method: [external]`
running extauth-bridge, and a real XMPP client (slixmpp) logging in, through the users
file, an HTTP account API (examples/http_auth_server) and a real OAuth2 IdP
(tests/oauth2_server); and two ejabberd nodes sharing one private redis-server.

    tests/e2e/setup.sh                                   # once: ejabberd + slixmpp
    /usr/bin/python3 tests/e2e/run.py --bridge target/release/extauth-bridge
    /usr/bin/python3 tests/e2e/run.py --fake             # against fake_extauth.py
    ... [--group files,nochange,kill,load,http,oauth2,shared] [--keep] [-v]
    tests/e2e/ci.sh                                      # CI: install, build, run all groups

Every group starts its own ejabberd (plain `erl`, never the system service or
ejabberdctl) in a temp dir, with its own node name, cookie and distribution
port (no epmd at all), and a c2s listener on a free 127.0.0.1 port. One line
per case (`PASS name (0.12s)` / `FAIL name: reason`), then `N passed, M failed`.

See README.md beside this file.
"""
import argparse
import asyncio
import atexit
import concurrent.futures
import glob
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

DEBIAN_PYTHON = "/usr/bin/python3"
logging.getLogger("slixmpp").setLevel(logging.ERROR)   # "Using slower stringprep" at import
try:
    import slixmpp
except ImportError:
    # Debian's python3-slixmpp lives in /usr/bin/python3's dist-packages: re-exec
    # there when started by another interpreter (e.g. a pyenv `python3`).
    if os.path.realpath(sys.executable) != os.path.realpath(DEBIAN_PYTHON) and os.path.exists(DEBIAN_PYTHON) \
            and not os.environ.get("E2E_NO_REEXEC"):
        os.environ["E2E_NO_REEXEC"] = "1"
        os.execv(DEBIAN_PYTHON, [DEBIAN_PYTHON] + sys.argv)
    sys.exit("run.py: slixmpp is not installed: run tests/e2e/setup.sh (or pip install slixmpp)")

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = os.path.join(HERE, "fake_extauth.py")
EJABBERD_LIB = None          # holds ejabberd-<version>/ebin (ERL_LIBS, as ejabberdctl sets it); see find_ejabberd_lib
ERL = shutil.which("erl") or "/usr/bin/erl"
DOMAIN = "example.net"
DOMAIN2 = "example.org"
CLIENT_TIMEOUT = 5.0        # every client helper gives up after this many seconds
CASE_TIMEOUT = 150          # last-resort alarm per case
BUDGET = 600                # seconds for the whole run (every group's setup and cases): over it, the run fails

VERBOSE = False


def log(msg):
    if VERBOSE:
        print("  . " + msg, flush=True)


def info(msg):
    print("  " + msg, flush=True)


class CaseFailure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise CaseFailure(msg)


def expect(actual, wanted, what):
    if actual != wanted:
        raise CaseFailure("%s: got %r, want %r" % (what, actual, wanted))


def find_ejabberd_lib():
    """The directory that holds ejabberd-<version>/ebin, for ERL_LIBS; None when ejabberd is not
    installed. Debian puts it under the multiarch directory (/usr/lib/x86_64-linux-gnu on amd64,
    /usr/lib/aarch64-linux-gnu on arm64): globbed, else asked from dpkg."""
    apps = sorted(glob.glob("/usr/lib/*/ejabberd-*/ebin/ejabberd.app")) + \
        sorted(glob.glob("/usr/lib/ejabberd-*/ebin/ejabberd.app"))
    if not apps:
        try:
            listed = subprocess.run(["dpkg", "-L", "ejabberd"], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, timeout=20).stdout.decode()
        except (OSError, subprocess.SubprocessError):
            listed = ""
        apps = sorted(line for line in listed.splitlines()
                      if re.search(r"/ejabberd-[^/]+/ebin/ejabberd\.app$", line))
    if not apps:
        return None
    # the newest if several: ".../ejabberd-23.01-1/ebin/ejabberd.app" -> ".../"
    return os.path.dirname(os.path.dirname(os.path.dirname(apps[-1])))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------
# /proc helpers

def proc_children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # comm may contain spaces/parens: ppid is the 2nd field after the last ')'
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def descendants(pid):
    kids = proc_children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def proc_status(pid):
    """{'VmRSS': kB, 'VmHWM': kB, ...} or {} if gone."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "Threads", "State"):
                    out[k] = v.strip()
    except OSError:
        pass
    return out


def proc_rchar(pid):
    """Bytes the process has read (any fd): grows when a bridge process gets a request."""
    try:
        with open("/proc/%d/io" % pid) as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def kb(s):
    return int(s.split()[0]) if s else 0


def pid_alive(pid):
    st = proc_status(pid)
    return bool(st) and not st.get("State", "").startswith("Z")


# --------------------------------------------------------------------------------------
# Bridges: the program ejabberd runs as extauth_program

class Bridge:
    """The real extauth-bridge binary."""
    plain_passwords = False
    reads_config = True          # takes --config FILE; the fake only knows --users FILE

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.name = "extauth-bridge (%s)" % self.path

    def command(self, args):
        return " ".join(shlex.quote(a) for a in [self.path] + list(args))

    def is_instance(self, pid):
        try:
            return os.path.realpath("/proc/%d/exe" % pid) == os.path.realpath(self.path)
        except OSError:
            return False

    def hash_password(self, password):
        p = subprocess.run([self.path, "hash-password"], input=password.encode("utf-8"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        if p.returncode != 0:
            raise RuntimeError("hash-password failed (%d): %s" % (p.returncode, p.stderr.decode(errors="replace")))
        return p.stdout.decode().strip()

    def version(self):
        try:
            p = subprocess.run([self.path, "--version"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10)
            return p.stdout.decode().strip() or "?"
        except Exception:
            return "?"


class FakeBridge(Bridge):
    """fake_extauth.py: same users-file semantics, plain-text passwords."""
    plain_passwords = True
    reads_config = False

    def __init__(self):
        self.path = FAKE
        self.name = "fake_extauth.py"

    def command(self, args):
        return " ".join(shlex.quote(a) for a in [sys.executable, self.path] + list(args))

    def is_instance(self, pid):
        return self.path in cmdline(pid)

    def hash_password(self, password):
        return password

    def version(self):
        return "fake"


def write_users_file(bridge, path, users):
    """users: {jid: password}. Hashes in parallel for the real bridge."""
    items = sorted(users.items())
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as ex:
        hashes = list(ex.map(lambda kv: bridge.hash_password(kv[1]), items))
    with open(path, "w", encoding="utf-8") as f:
        f.write("# written by tests/e2e/run.py\n")
        for (jid, _), h in zip(items, hashes):
            f.write("%s:%s\n" % (jid, h))


def users_file_entries(path):
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            s = line.strip()
            if s and not s.startswith("#") and ":" in s:
                jid, _, v = s.partition(":")
                out[jid] = v
    return out


class FileStore:
    """Where the files group's accounts live: the users file the bridge edits."""
    name = "users file"

    def __init__(self, path, plain_passwords):
        self.path, self.plain_passwords = path, plain_passwords

    def has(self, jid):
        return jid in users_file_entries(self.path)

    def entry(self, jid):
        return users_file_entries(self.path).get(jid)

    def check_changed(self, jid, before, new_password):
        after = self.entry(jid)
        check(after is not None and after != before, "users file entry for %s unchanged after setpass" % jid)
        with open(self.path, encoding="utf-8") as f:
            check(self.plain_passwords or new_password not in f.read(), "new password stored in clear in the users file")


# --------------------------------------------------------------------------------------
# A private ejabberd

def yaml_str(s):
    # a YAML double-quoted scalar is a JSON string
    import json
    return json.dumps(s)


PENDING = []   # Ejabberd and Ctx objects not cleaned up yet: _atexit finishes the job


class Ejabberd:
    def __init__(self, name, auth="external", extauth_program=None, pool_size=2, hosts=(DOMAIN, DOMAIN2),
                 register=True):
        self.name = name
        self.register = register   # False: no mod_register, so no in-band registration or password change
        self.hosts = list(hosts)
        self.auth = auth
        self.extauth_program = extauth_program
        self.pool_size = pool_size
        self.dir = tempfile.mkdtemp(prefix="e2e-ejabberd-%s-" % name)
        PENDING.append(self)
        for d in ("spool", "log", "run", "home"):
            os.makedirs(os.path.join(self.dir, d))
        self.port = free_port()
        self.dist_port = free_port()
        self.node = "e2e_%d_%s@%s" % (os.getpid(), re.sub(r"\W", "_", name), socket.gethostname().split(".")[0])
        self.cookie = secrets.token_hex(16)
        self.proc = None
        self.config_path = os.path.join(self.dir, "ejabberd.yml")
        self.log_path = os.path.join(self.dir, "log", "ejabberd.log")
        self.out_path = os.path.join(self.dir, "log", "erl.out")

    @property
    def address(self):
        return ("127.0.0.1", self.port)

    def config(self):
        lines = [
            "hosts:",
        ] + ["  - %s" % h for h in self.hosts] + [
            "loglevel: info",
            "log_rotate_count: 0",
            "hide_sensitive_log_data: true",
            "certfiles: []",
            "auth_method: [%s]" % self.auth,
            "auth_use_cache: false",
            "registration_timeout: infinity",
            "max_fsm_queue: 100000",
            "s2s_access: none",
        ]
        if self.auth == "external":
            lines += [
                "extauth_program: %s" % yaml_str(self.extauth_program),
                "extauth_pool_size: %d" % self.pool_size,
            ]
        else:
            lines += ["auth_password_format: plain"]
        lines += [
            "listen:",
            "  -",
            "    port: %d" % self.port,
            '    ip: "127.0.0.1"',
            "    module: ejabberd_c2s",
            "    starttls: false",
            "    starttls_required: false",
            "    backlog: 1024",
            "    access: c2s",
            "    shaper: none",
            "    max_stanza_size: 262144",
            "    max_fsm_queue: 100000",
            "acl:",
            "  loopback:",
            "    ip: 127.0.0.0/8",
            "access_rules:",
            "  c2s:",
            "    allow: all",
            "  register:",
            "    allow: all",
            "shaper: {}",
            "shaper_rules:",
            "  max_user_sessions: 1000000",
            "  c2s_shaper: none",
            "  s2s_shaper: none",
        ]
        if self.register:
            lines += [
                "modules:",
                "  mod_register:",
                "    ip_access: all",
                "    access: register",
                "    access_remove: all",
                "    password_strength: 0",
            ]
        else:
            lines += ["modules: {}"]
        lines += [""]
        return "\n".join(lines)

    def erl_argv(self):
        return [
            ERL, "-noinput",
            "-sname", self.node, "-setcookie", self.cookie,
            # no epmd: the node listens on this port itself (as ejabberdctl's ERL_DIST_PORT)
            "-erl_epmd_port", str(self.dist_port), "-start_epmd", "false",
            "-kernel", "inet_dist_use_interface", "{127,0,0,1}",
            "+P", "250000",
            "-env", "ERL_CRASH_DUMP_BYTES", "0",
            "-mnesia", "dir", '"%s"' % os.path.join(self.dir, "spool"),
            "-ejabberd", "config", '"%s"' % self.config_path, "log_path", '"%s"' % self.log_path,
            "-s", "ejabberd",
        ]

    def env(self):
        env = dict(os.environ)
        for k in list(env):
            if k.startswith(("ERL_", "EJABBERD_")):
                del env[k]
        env.update({
            "ERL_LIBS": EJABBERD_LIB,
            "EJABBERD_CONFIG_PATH": self.config_path,
            "EJABBERD_LOG_PATH": self.log_path,
            "ERL_CRASH_DUMP": os.path.join(self.dir, "log", "erl_crash.dump"),
            "ERL_MAX_PORTS": "32000",
            "ERL_MAX_ETS_TABLES": "1400",
            "HOME": os.path.join(self.dir, "home"),   # nothing lands in the real $HOME
        })
        return env

    def start(self, timeout=30):
        with open(self.config_path, "w", encoding="utf-8") as f:
            f.write(self.config())
        out = open(self.out_path, "wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.erl_argv(), cwd=os.path.join(self.dir, "run"), env=self.env(),
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)  # Ctrl-C reaches us, not beam
        out.close()
        deadline = t0 + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("ejabberd exited with %s during startup\n%s" % (self.proc.returncode, self.log_tail()))
            try:
                with socket.create_connection(self.address, timeout=1):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("ejabberd c2s not accepting on %s:%d after %ds\n%s"
                                   % (self.address + (timeout, self.log_tail())))
            time.sleep(0.1)
        self.startup_s = time.monotonic() - t0
        log("ejabberd %s up on %s:%d in %.2fs (node %s, dir %s)" % (self.name, self.address[0], self.port,
                                                                      self.startup_s, self.node, self.dir))

    def log_tail(self, n=40):
        out = []
        for p in (self.log_path, self.out_path):
            try:
                with open(p, encoding="utf-8", errors="replace") as f:
                    lines = f.read().splitlines()[-n:]
                out.append("--- %s (last %d lines)\n%s" % (p, len(lines), "\n".join(lines)))
            except OSError as e:
                out.append("--- %s: %s" % (p, e))
        return "\n".join(out)

    def log_text(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def bridge_errors(self, most=3):
        """The bridge's own error lines in erl.out (its stderr), deduplicated."""
        seen = []
        try:
            with open(self.out_path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    line = line.strip()
                    if line.startswith("extauth-bridge:") and line not in seen:
                        seen.append(line)
        except OSError:
            pass
        return seen[:most]

    @property
    def beam_pid(self):
        return self.proc.pid  # erl execs beam.smp: same pid

    def rpc(self, module, function, args_erl, timeout=15):
        """Calls module:function(Args) on the node from a hidden node (no epmd, no listener);
        args_erl is an Erlang list term as text. Returns the printed result."""
        expr = ('R = rpc:call(\'%s\', %s, %s, %s, 10000), io:format("~p~n", [R]), halt().'
                % (self.node, module, function, args_erl))
        p = subprocess.run([ERL, "-noinput", "-hidden", "-sname", "e2ectl_%d_%s" % (os.getpid(), secrets.token_hex(3)),
                            "-setcookie", self.cookie, "-erl_epmd_port", str(self.dist_port),
                            "-start_epmd", "false", "-dist_listen", "false", "-eval", expr],
                           env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                           cwd=os.path.join(self.dir, "run"))
        return p.stdout.decode(errors="replace").strip()

    def extauth_pids(self, bridge):
        return sorted(p for p in descendants(self.beam_pid) if bridge.is_instance(p) and pid_alive(p))

    @property
    def extauth_count(self):
        # extauth_pool_size is per virtual host: ejabberd runs one pool per host
        return self.pool_size * len(self.hosts)

    def wait_pool(self, bridge, n=None, exclude=(), timeout=15):
        n = self.extauth_count if n is None else n
        deadline = time.monotonic() + timeout
        while True:
            pids = [p for p in self.extauth_pids(bridge) if p not in exclude]
            if len(pids) >= n:
                return pids
            if time.monotonic() > deadline:
                raise CaseFailure("extauth pool: %d of %d processes after %ds (found %s)"
                                  % (len(pids), n, timeout, pids))
            time.sleep(0.05)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            kids = descendants(self.proc.pid)
            self.proc.send_signal(signal.SIGTERM)   # OTP: SIGTERM -> init:stop()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            # The port programs get EOF and must exit; anything left is a leak: end it by pid.
            time.sleep(0.2)
            for p in kids:
                if pid_alive(p) and cmdline(p):
                    log("leftover child %d %s after ejabberd stop: SIGKILL" % (p, cmdline(p)))
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass

    def cleanup(self, keep=False):
        self.stop()
        if keep:
            print("  (kept %s)" % self.dir, flush=True)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        if self in PENDING:
            PENDING.remove(self)


KEEP = False


def _atexit():
    """Stops every ejabberd still up and removes temp dirs; signals are held off meanwhile
    so a second Ctrl-C cannot leave a beam or a directory behind."""
    if not PENDING:
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        for obj in list(reversed(PENDING)):
            try:
                obj.cleanup(keep=KEEP)
            except Exception as e:
                print("cleanup of %r failed: %s" % (obj, e), file=sys.stderr)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


atexit.register(_atexit)


# --------------------------------------------------------------------------------------
# XMPP client helpers (slixmpp). All async cores return a short string result.

LOOP = asyncio.new_event_loop()
asyncio.set_event_loop(LOOP)


def run(coro):
    return LOOP.run_until_complete(coro)


_SSL_CTX = []


def _client(addr, jid, password, register=False, xep0077=False):
    # slixmpp builds an ssl.create_default_context() per client (~80 ms: loads the CA store);
    # no TLS is used here, so every client shares one.
    if not _SSL_CTX:
        _SSL_CTX.append(ssl.create_default_context())
    try:
        c = slixmpp.ClientXMPP(jid, password, ssl_context=_SSL_CTX[0])   # slixmpp >= 1.9
    except TypeError:
        orig = ssl.create_default_context                                  # slixmpp 1.8
        ssl.create_default_context = lambda *a, **k: _SSL_CTX[0]
        try:
            c = slixmpp.ClientXMPP(jid, password)
        finally:
            ssl.create_default_context = orig
    c.whitespace_keepalive = False
    # PLAIN without TLS on loopback: no STARTTLS (connect() args below), allow PLAIN unencrypted,
    # and only PLAIN (internal auth would also offer SCRAM).
    mechs = c.plugin["feature_mechanisms"]
    mechs.unencrypted_plain = True
    mechs.use_mech = "PLAIN"
    c.default_domain = addr[0]   # an IP: slixmpp does no DNS at all ...
    c.default_port = addr[1]     # ... and takes the port from here, not from connect(address=)
    if register:
        c.register_plugin("xep_0077")
        # slixmpp (>= 1.8) queues every stanza until the session has started, except
        # bind/session IQs; in-band registration happens before authentication.
        c._always_send_everything = True
    elif xep0077:
        c.register_plugin("xep_0077", pconfig={"create_account": False})
    return c


async def _xmpp(addr, jid, password, on_session=None, on_register=None, timeout=CLIENT_TIMEOUT, timing=None):
    """Connects, authenticates with SASL PLAIN and returns:
    'ok' (session started; or on_session(c)'s result), the SASL failure condition
    ('not-authorized', ...), 'timeout', 'connection-failed: ...', 'stream-error: ...',
    'disconnected'. With on_register, runs on_register(c) on the pre-auth register
    stream feature instead of logging in. Never takes longer than timeout (+1s teardown).
    timing (a list), if given, gets the seconds from start to the result (teardown excluded)."""
    t0 = time.monotonic()
    c = _client(addr, jid, password, register=on_register is not None,
                xep0077=on_session is not None)
    fut = LOOP.create_future()
    busy = []   # set while on_session/on_register runs: it owns the result then

    def done(v, force=False):
        if not fut.done() and (force or not busy):
            fut.set_result(v)

    async def session_start(_):
        if on_session is None:
            done("ok")
            return
        busy.append(1)
        try:
            r = await on_session(c)
        except Exception as e:
            r = "error: %r" % (e,)
        done(r, force=True)

    async def on_reg(_form):
        busy.append(1)
        try:
            r = await on_register(c)
        except Exception as e:
            r = "error: %r" % (e,)
        done(r, force=True)
        c.abort()

    def stream_error(st):
        c.e2e_stream_error = st["condition"]
        done("stream-error: %s" % st["condition"])

    c.e2e_stream_error = None
    c.add_event_handler("session_start", session_start)
    c.add_event_handler("failed_auth", lambda st: done(st["condition"] or "failed-auth"))
    c.add_event_handler("failed_all_auth", lambda _: done("failed-all-auth"))
    c.add_event_handler("connection_failed", lambda e: done("connection-failed: %s" % (e,)))
    c.add_event_handler("stream_error", stream_error)
    c.add_event_handler("disconnected", lambda _: done("disconnected"))
    if on_register is not None:
        c.add_event_handler("register", on_reg)
    if hasattr(c, "enable_plaintext"):
        # slixmpp >= 1.9 (PyPI): connect(host, port) and per-method switches
        c.enable_direct_tls = False
        c.enable_starttls = False
        c.enable_plaintext = True
        c.connect(addr[0], addr[1])
    else:
        # slixmpp 1.8 (Debian bookworm): no STARTTLS even if offered
        c.connect(address=addr, use_ssl=False, force_starttls=False, disable_starttls=True)
    try:
        return await asyncio.wait_for(fut, timeout)
    except asyncio.TimeoutError:
        return "timeout"
    finally:
        if timing is not None:
            timing.append(time.monotonic() - t0)
        c.cancel_connection_attempt()
        if c.transport:
            try:
                await asyncio.wait_for(c.disconnect(wait=0.5), 1.0)
            except Exception:
                pass
            c.abort()
        t = getattr(c, "_run_out_filters", None)
        if t is not None and not t.done():
            t.cancel()


async def _iq(c, iq, timeout):
    """Sends iq and waits for the reply with its id, whatever its 'from' (ejabberd answers an
    unregistration from the user's own full JID, which slixmpp's iq.send() never matches).
    Returns 'ok', the error condition, 'iq-timeout' or 'disconnected (stream error X)'."""
    from slixmpp.xmlstream.handler import Callback
    from slixmpp.xmlstream.matcher import MatcherId
    reply = LOOP.create_future()
    name = "e2e-iq-%s" % iq["id"]
    c.register_handler(Callback(name, MatcherId(iq["id"]),
                                lambda st: reply.done() or reply.set_result(st), once=True))
    c.send(iq)
    try:
        await asyncio.wait([reply, c.disconnected], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        c.remove_handler(name)
    if reply.done():
        st = reply.result()
        return "ok" if st["type"] == "result" else (st["error"]["condition"] or "iq-error")
    if c.disconnected.done():
        return "disconnected (stream error %s)" % c.e2e_stream_error
    return "iq-timeout"


def _register_iq(c, **fields):
    iq = c.Iq()
    iq["type"] = "set"
    for k, v in fields.items():
        iq["register"][k] = v
    return iq


async def alogin(addr, jid, password, timeout=CLIENT_TIMEOUT, timing=None):
    return await _xmpp(addr, jid, password, timeout=timeout, timing=timing)


async def aregister(addr, jid, password, timeout=CLIENT_TIMEOUT):
    """XEP-0077 registration on an unauthenticated stream."""
    async def reg(c):
        return await _iq(c, _register_iq(c, username=c.boundjid.user, password=password), timeout)
    return await _xmpp(addr, jid, password, on_register=reg, timeout=timeout)


async def achange_password(addr, jid, old, new, timeout=CLIENT_TIMEOUT):
    """XEP-0077 password change as the logged-in user."""
    async def chpw(c):
        iq = _register_iq(c, username=c.boundjid.user, password=new)
        iq["to"] = c.boundjid.domain
        return await _iq(c, iq, timeout)
    return await _xmpp(addr, jid, old, on_session=chpw, timeout=timeout)


async def aunregister(addr, jid, password, timeout=CLIENT_TIMEOUT):
    """XEP-0077 cancellation (<remove/>) as the logged-in user."""
    async def unreg(c):
        iq = _register_iq(c, remove=True)
        iq["to"] = c.boundjid.domain
        return await _iq(c, iq, timeout)
    return await _xmpp(addr, jid, password, on_session=unreg, timeout=timeout)


def case_no_in_band_password_change(ctx):
    """The README's advice for backends that cannot change passwords, on ejabberd 23.01: with
    mod_register left out of `modules`, a client's password change is refused by ejabberd
    itself, and no setpass reaches the bridge."""
    jid = "mercutio@%s" % DOMAIN
    before = ctx.store.entry(jid)
    r = ctx.change_password(jid, "queenmab", "a plague o' both")
    check(r != "ok", "in-band password change succeeded without mod_register")
    info("password change answered %r" % r)
    check(ctx.store.entry(jid) == before, "the users file entry changed")
    expect(ctx.login(jid, "queenmab"), "ok", "login with the unchanged password")
    with open(ctx.ej.out_path, encoding="utf-8", errors="replace") as f:
        check(not [l for l in f if 'command="setpass"' in l], "a setpass reached the bridge")


# --------------------------------------------------------------------------------------
# Context handed to cases

class Ctx:
    def __init__(self, bridge, keep=False, opts=None):
        self.bridge = bridge
        self.keep = keep
        self.opts = opts              # the command line (paths to helper servers)
        self.services = []            # helper servers (HttpApi, Idp): stopped at cleanup
        self.ej = None                # the group's Ejabberd
        self.extauth_program = None   # set by the group's setup
        self.auth = "external"
        self.users_file = None
        self.store = None             # FileStore / ApiStore: where accounts live, for checks
        self.users = {}               # jid -> password, as set up
        self.workdir = tempfile.mkdtemp(prefix="e2e-work-")
        PENDING.append(self)
        self.results = {}             # shared between cases of a group (e.g. load numbers)

    @property
    def addr(self):
        return self.ej.address

    # sync helpers: each finishes within CLIENT_TIMEOUT (+1s for teardown)
    def login(self, jid, password):
        return run(alogin(self.addr, jid, password))

    def register(self, jid, password):
        return run(aregister(self.addr, jid, password))

    def change_password(self, jid, old, new):
        return run(achange_password(self.addr, jid, old, new))

    def unregister(self, jid, password):
        return run(aunregister(self.addr, jid, password))

    def write_config(self, name, backends):
        """Writes a bridge config (the request deadline, then `backends`) into the workdir and
        makes the group's extauth_program use it."""
        path = os.path.join(self.workdir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write('# written by tests/e2e/run.py\ntimeout = "4s"\n' + backends)
        self.extauth_program = self.bridge.command(["--config", path])
        return path

    def cleanup(self, keep=False):
        for s in reversed(self.services):
            try:
                s.cleanup(keep=keep)
            except Exception as e:
                print("cleanup of %r failed: %s" % (s, e), file=sys.stderr)
        self.services = []
        if keep:
            print("  (kept %s)" % self.workdir, flush=True)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if self in PENDING:
            PENDING.remove(self)


# --------------------------------------------------------------------------------------
# Group "files": the users-file backend (a `type = "file"` backend in a config file)

PW_COLON = "pa:ss:w0rd:"
PW_UTF8 = "pässwörd✓"

FILES_USERS = {
    "romeo@%s" % DOMAIN: "iheartjuliet",
    "juliet@%s" % DOMAIN: "wherefore",
    "colon@%s" % DOMAIN: PW_COLON,
    "umlaut@%s" % DOMAIN: PW_UTF8,
    "mercutio@%s" % DOMAIN: "queenmab",
    "tybalt@%s" % DOMAIN: "princeofcats",
    "nurse@%s" % DOMAIN2: "angelica",
}


def setup_users_file(ctx, users):
    ctx.users = dict(users)
    ctx.users_file = os.path.join(ctx.workdir, "users")
    t0 = time.monotonic()
    write_users_file(ctx.bridge, ctx.users_file, ctx.users)
    log("users file with %d accounts in %.2fs" % (len(users), time.monotonic() - t0))
    ctx.store = FileStore(ctx.users_file, ctx.bridge.plain_passwords)
    if ctx.bridge.reads_config:
        # as an administrator configures it (and as the http/oauth2 groups do): the config
        # file path, the file backend's own table, the config loading and validation
        ctx.write_config("users.toml", """
[[backend]]
name = "local"
type = "file"
path = "%s"
""" % ctx.users_file)
    else:
        ctx.extauth_program = ctx.bridge.command(["--users", ctx.users_file])


def setup_files(ctx):
    setup_users_file(ctx, FILES_USERS)


def case_login_ok(ctx):
    expect(ctx.login("romeo@%s" % DOMAIN, "iheartjuliet"), "ok", "romeo, right password")
    expect(ctx.login("juliet@%s" % DOMAIN, "wherefore"), "ok", "juliet, right password")


def case_wrong_password(ctx):
    expect(ctx.login("romeo@%s" % DOMAIN, "iheartrosaline"), "not-authorized", "romeo, wrong password")
    expect(ctx.login("romeo@%s" % DOMAIN, "iheartjuliet "), "not-authorized", "romeo, trailing space")
    expect(ctx.login("romeo@%s" % DOMAIN, "wherefore"), "not-authorized", "romeo with juliet's password")


def case_unknown_user(ctx):
    expect(ctx.login("rosaline@%s" % DOMAIN, "iheartjuliet"), "not-authorized", "unknown user")


def case_uppercase_username(ctx):
    # ejabberd nodepreps the username (lowercases it) before asking the bridge
    expect(ctx.login("Romeo@%s" % DOMAIN, "iheartjuliet"), "ok", "Romeo (capitalised)")


def case_password_with_colon(ctx):
    jid = "colon@%s" % DOMAIN
    expect(ctx.login(jid, PW_COLON), "ok", "password %r" % PW_COLON)
    expect(ctx.login(jid, "pa"), "not-authorized", "prefix before the first ':'")
    expect(ctx.login(jid, PW_COLON[:-1]), "not-authorized", "without the trailing ':'")


def case_non_ascii_password(ctx):
    jid = "umlaut@%s" % DOMAIN
    expect(ctx.login(jid, PW_UTF8), "ok", "password %r" % PW_UTF8)
    expect(ctx.login(jid, "passwörd✓"), "not-authorized", "a different non-ASCII password")
    expect(ctx.login(jid, "pässwörd"), "not-authorized", "without the last character")


def case_second_host(ctx):
    expect(ctx.login("nurse@%s" % DOMAIN2, "angelica"), "ok", "nurse@%s" % DOMAIN2)
    expect(ctx.login("nurse@%s" % DOMAIN, "angelica"), "not-authorized", "nurse@%s (other host)" % DOMAIN)
    expect(ctx.login("romeo@%s" % DOMAIN2, "iheartjuliet"), "not-authorized", "romeo@%s (other host)" % DOMAIN2)


def case_change_password(ctx):
    jid = "mercutio@%s" % DOMAIN
    before = ctx.store.entry(jid)
    expect(ctx.change_password(jid, "queenmab", "a plague o' both"), "ok", "in-band password change")
    expect(ctx.login(jid, "a plague o' both"), "ok", "login with the new password")
    expect(ctx.login(jid, "queenmab"), "not-authorized", "login with the old password")
    ctx.store.check_changed(jid, before, "a plague o' both")
    # and back, with a password containing ':' and non-ASCII
    expect(ctx.change_password(jid, "a plague o' both", "w:ö✓"), "ok", "second password change")
    expect(ctx.login(jid, "w:ö✓"), "ok", "login after second change")
    expect(ctx.login(jid, "a plague o' both"), "not-authorized", "previous password after second change")


def case_register_then_login(ctx):
    jid = "benvolio@%s" % DOMAIN
    expect(ctx.login(jid, "peacemaker"), "not-authorized", "login before registration")
    expect(ctx.register(jid, "peacemaker"), "ok", "in-band registration")
    check(ctx.store.has(jid), "%s not in the %s after registration" % (jid, ctx.store.name))
    expect(ctx.login(jid, "peacemaker"), "ok", "login after registration")
    expect(ctx.login(jid, "warmonger"), "not-authorized", "wrong password after registration")
    # registering an existing account must not replace its password
    r = ctx.register("romeo@%s" % DOMAIN, "stolen")
    expect(r, "conflict", "registering an existing account")
    expect(ctx.login("romeo@%s" % DOMAIN, "stolen"), "not-authorized", "romeo with the re-registration password")
    expect(ctx.login("romeo@%s" % DOMAIN, "iheartjuliet"), "ok", "romeo's password after re-registration attempt")


def case_unregister_then_login(ctx):
    jid = "tybalt@%s" % DOMAIN
    expect(ctx.login(jid, "princeofcats"), "ok", "login before unregistration")
    expect(ctx.unregister(jid, "princeofcats"), "ok", "in-band unregistration")
    # ejabberd answers the IQ before it removes the account: poll briefly
    deadline = time.monotonic() + 3
    while ctx.store.has(jid) and time.monotonic() < deadline:
        time.sleep(0.05)
    check(not ctx.store.has(jid), "%s still in the %s" % (jid, ctx.store.name))
    expect(ctx.login(jid, "princeofcats"), "not-authorized", "login after unregistration")
    # re-register the same name with a new password
    expect(ctx.register(jid, "newcats"), "ok", "registering the removed name again")
    expect(ctx.login(jid, "newcats"), "ok", "login after re-registration")
    expect(ctx.login(jid, "princeofcats"), "not-authorized", "old password after re-registration")


# --------------------------------------------------------------------------------------
# Group "kill": ejabberd restarts a killed bridge process

KILL_USERS = {"romeo@%s" % DOMAIN: "iheartjuliet", "juliet@%s" % DOMAIN: "wherefore"}
KILL_USERS.update({"k%02d@%s" % (i, DOMAIN): "pw-k%02d" % i for i in range(10)})


def setup_kill(ctx):
    setup_users_file(ctx, KILL_USERS)


def _kill(pid):
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def _several_logins(ctx, n=8, pids=(), max_rounds=6, jobs=None):
    """Rounds of n logins (default: the kill group's k00..k09), 4 at a time, until every pid
    in pids has read a request (at most max_rounds). All logins must succeed. Concurrency
    matters: ejabberd picks the pool member with erlang:unique_integer() rem PoolSize
    (p1_rand:round_robin), a VM-wide counter that other code bumps too, so strictly
    sequential logins can all land on the same member."""
    before = {p: proc_rchar(p) for p in pids}
    if jobs is None:
        jobs = [("k%02d@%s" % (i % 10, DOMAIN), "pw-k%02d" % (i % 10)) for i in range(n)]
    for rnd in range(1, max_rounds + 1):
        stats = run(_load(ctx.addr, jobs, 4))
        check(not stats["bad"], "logins failed: %s" % stats["bad"])
        idle = [p for p in pids if before[p] is not None and proc_rchar(p) == before[p]]
        if not idle:
            log("every pool member answered after %d round(s) of %d logins" % (rnd, len(jobs)))
            return
    raise CaseFailure("bridge process(es) %s got no request during %d logins" % (idle, len(jobs) * max_rounds))


def case_kill_one_idle(ctx):
    ej, bridge = ctx.ej, ctx.bridge
    pids = ej.wait_pool(bridge)
    expect(len(pids), ej.extauth_count, "bridge processes under beam")
    victim = pids[0]
    t0 = time.monotonic()
    _kill(victim)
    # a login right away: ejabberd retries on the other pool member
    r = ctx.login("romeo@%s" % DOMAIN, "iheartjuliet")
    expect(r, "ok", "login right after SIGKILL of pid %d" % victim)
    new = ej.wait_pool(bridge, exclude=[victim])
    restarted = sorted(set(new) - set(pids))
    check(restarted, "no new bridge process after killing %d (pool %s)" % (victim, new))
    info("killed %d; pool %s -> %s; restart seen after %.2fs" % (victim, pids, new, time.monotonic() - t0))
    _several_logins(ctx, pids=new)
    check(all(pid_alive(p) for p in new), "a bridge process died during the logins after restart")


def case_kill_all(ctx):
    ej, bridge = ctx.ej, ctx.bridge
    time.sleep(1.1)   # extauth_sup allows pool_size restarts per second
    pids = ej.wait_pool(bridge)
    for p in pids:
        _kill(p)
    new = ej.wait_pool(bridge, exclude=pids)
    info("killed all %s; pool now %s" % (pids, new))
    _several_logins(ctx, pids=new)


def case_kill_under_load(ctx):
    ej, bridge = ctx.ej, ctx.bridge
    time.sleep(1.1)
    pids = ej.wait_pool(bridge)
    victim = pids[-1]
    total = 60
    jobs = [("k%02d@%s" % (i % 10, DOMAIN), "pw-k%02d" % (i % 10)) for i in range(total)]
    killed_at = []

    async def killer(res):
        while len(res) < total // 4:
            await asyncio.sleep(0.005)
        _kill(victim)
        killed_at.append(len(res))

    async def main():
        res = []
        k = asyncio.ensure_future(killer(res))
        stats = await _load(ctx.addr, jobs, 10, res)
        await asyncio.wait_for(k, 10)
        return stats

    stats = run(main())
    check(killed_at, "the killer never ran")
    info("SIGKILL %d after %d of %d logins; %s" % (victim, killed_at[0], total, _fmt_load(stats)))
    bad = stats["bad"]
    check(not bad, "%d of %d logins failed around the kill: %s" % (len(bad), total, bad[:5]))
    new = ej.wait_pool(bridge, exclude=[victim])
    check(set(new) - set(pids), "no replacement process (pool %s)" % new)
    _several_logins(ctx, 4, pids=new)


# --------------------------------------------------------------------------------------
# Group "load": 200 logins, 10 concurrent clients; external (bridge) vs internal (mnesia)

LOAD_LOGINS = 200
LOAD_CONCURRENCY = 10
LOAD_USERS = {"load%02d@%s" % (i, DOMAIN): "load-pw-%02d" % i for i in range(20)}


def setup_load(ctx):
    setup_users_file(ctx, LOAD_USERS)


async def _load(addr, jobs, concurrency, res=None, timeout=10.0):
    """Runs the (jid, password) logins with `concurrency` clients at a time."""
    res = [] if res is None else res
    queue = list(jobs)
    queue.reverse()

    async def worker():
        while queue:
            jid, pw = queue.pop()
            timing = []
            r = await alogin(addr, jid, pw, timeout=timeout, timing=timing)
            res.append((jid, r, timing[0]))   # connect .. session started (or refused)

    t0 = time.monotonic()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    wall = time.monotonic() - t0
    lat = sorted(x[2] for x in res)
    return {
        "n": len(res), "wall": wall, "rate": len(res) / wall if wall else 0.0,
        "p50": statistics.median(lat) if lat else 0, "p95": lat[int(0.95 * (len(lat) - 1))] if lat else 0,
        "mean": statistics.mean(lat) if lat else 0,
        "bad": [(j, r) for j, r, _ in res if r != "ok"],
    }


def _fmt_load(s):
    return ("%d logins in %.2fs = %.1f logins/s; latency mean %.1f ms, p50 %.1f ms, p95 %.1f ms"
            % (s["n"], s["wall"], s["rate"], s["mean"] * 1e3, s["p50"] * 1e3, s["p95"] * 1e3))


def _load_jobs(users, n):
    items = sorted(users.items())
    return [items[i % len(items)] for i in range(n)]


LOAD_SEQUENTIAL = 20   # plus this many one-at-a-time logins: latency without queueing


def _measure(addr, users):
    """Warm-up, then LOAD_SEQUENTIAL logins one at a time, then LOAD_LOGINS at LOAD_CONCURRENCY."""
    jobs = _load_jobs(users, LOAD_LOGINS)
    warm = run(_load(addr, jobs[:LOAD_CONCURRENCY], LOAD_CONCURRENCY))
    check(not warm["bad"], "warm-up logins failed: %s" % warm["bad"][:5])
    seq = run(_load(addr, jobs[:LOAD_SEQUENTIAL], 1))
    check(not seq["bad"], "sequential logins failed: %s" % seq["bad"][:5])
    stats = run(_load(addr, jobs, LOAD_CONCURRENCY))
    stats["seq"] = seq
    return stats


def _fmt_mem(pid, cpu0=0.0):
    st = proc_status(pid)
    return ("pid %d VmRSS %d kB VmHWM %d kB threads %s cpu %.2fs"
            % (pid, kb(st.get("VmRSS")), kb(st.get("VmHWM")), st.get("Threads", "?"), _cpu_s(pid) - cpu0))


INTERNAL_AUTH = {}   # the load group's internal-auth numbers, for the backend groups' comparisons


def _vs_internal(what, seq, conc):
    """One line comparing a backend's numbers with ejabberd's internal auth in this run."""
    ia = INTERNAL_AUTH.get("stats")
    if ia is None:
        return
    info("%s adds %.1f ms per login one at a time vs internal auth (mean %.1f vs %.1f ms); "
         "%d concurrent: %.1f vs %.1f logins/s" % (what, (seq["mean"] - ia["seq"]["mean"]) * 1e3, seq["mean"] * 1e3,
                                                   ia["seq"]["mean"] * 1e3, LOAD_CONCURRENCY, conc["rate"], ia["rate"]))


def case_load_external(ctx):
    ej, bridge = ctx.ej, ctx.bridge
    pids = ej.wait_pool(bridge)
    info("bridge processes at start: " + "; ".join(_fmt_mem(p) for p in pids))
    cpu0 = {p: _cpu_s(p) for p in pids}
    stats = _measure(ctx.addr, ctx.users)
    ctx.results["external"] = stats
    info("external, 1 at a time: %s" % _fmt_load(stats["seq"]))
    info("external, %d at a time: %s" % (LOAD_CONCURRENCY, _fmt_load(stats)))
    info("bridge processes after: " + "; ".join(_fmt_mem(p, cpu0.get(p, 0.0)) for p in ej.extauth_pids(bridge)))
    check(not stats["bad"], "%d of %d logins failed: %s" % (len(stats["bad"]), stats["n"], stats["bad"][:5]))
    expect(stats["n"], LOAD_LOGINS, "logins done")
    expect(sorted(ej.extauth_pids(bridge)), sorted(pids), "bridge pids after the load (none restarted)")


def _cpu_s(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            s = f.read()
        fields = s[s.rindex(b")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def case_load_internal(ctx):
    """Same load against ejabberd's internal auth (mnesia), in a second private ejabberd."""
    ej = Ejabberd("internal", auth="mnesia", hosts=ctx.ej.hosts)
    try:
        ej.start()
        t0 = time.monotonic()
        users = sorted(ctx.users.items())
        # register through rpc to ejabberd_auth:try_register/3 (no ejabberdctl)
        args = ",".join('{<<"%s">>,<<"%s">>,<<"%s">>}' % (j.split("@")[0], j.split("@")[1], p) for j, p in users)
        out = ej.rpc("lists", "map", '[fun({U,S,P}) -> ejabberd_auth:try_register(U,S,P) end, [%s]]' % args)
        check(out.strip() == "[" + ",".join(["ok"] * len(users)) + "]", "rpc try_register: %s" % out[-300:])
        log("registered %d users over rpc in %.2fs" % (len(users), time.monotonic() - t0))
        stats = _measure(ej.address, ctx.users)
        ctx.results["internal"] = INTERNAL_AUTH["stats"] = stats
        info("internal, 1 at a time: %s" % _fmt_load(stats["seq"]))
        info("internal, %d at a time: %s" % (LOAD_CONCURRENCY, _fmt_load(stats)))
        check(not stats["bad"], "%d of %d logins failed: %s" % (len(stats["bad"]), stats["n"], stats["bad"][:5]))
        ext = ctx.results.get("external")
        if ext:
            es, is_ = ext["seq"], stats["seq"]
            info("external auth adds %.1f ms per login one at a time (mean %.1f vs %.1f ms); "
                 "at %d concurrent: %.1f vs %.1f logins/s (%.1f vs %.1f ms of wall time per login)"
                 % ((es["mean"] - is_["mean"]) * 1e3, es["mean"] * 1e3, is_["mean"] * 1e3, LOAD_CONCURRENCY,
                    ext["rate"], stats["rate"], 1e3 / ext["rate"], 1e3 / stats["rate"]))
    finally:
        ej.cleanup(keep=ctx.keep)


# --------------------------------------------------------------------------------------
# Helper servers a group starts (the HTTP account API, the OAuth2 IdP)

REPO = os.path.dirname(os.path.dirname(HERE))
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    # runs in the child before exec: SIGKILL it when run.py dies, even by SIGKILL
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Service:
    """A server process for one group: stdout piped (readiness line), stderr to a log file in
    the group's workdir, its own session (Ctrl-C reaches run.py only), stopped by pid."""

    def __init__(self, name, argv, log_path, env=None):
        self.name, self.argv, self.log_path, self.env = name, list(argv), log_path, env
        self.proc = None
        PENDING.append(self)

    def start(self):
        err = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                         env=self.env, start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            err.close()

    def read_line(self, timeout):
        """The first stdout line (without newline), or raises after timeout / on exit."""
        import selectors
        buf = b""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError("%s: no stdout line after %ds\n%s" % (self.name, timeout, self.log_tail()))
                if sel.select(left):
                    chunk = os.read(self.proc.stdout.fileno(), 4096)
                    if not chunk:
                        self.proc.wait(timeout=5)
                        raise RuntimeError("%s exited with %s at startup\n%s"
                                           % (self.name, self.proc.returncode, self.log_tail()))
                    buf += chunk
        return buf.split(b"\n", 1)[0].decode("utf-8", "replace")

    def wait_port(self, port, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s at startup\n%s" % (self.name, self.proc.returncode, self.log_tail()))
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("%s: port %d not accepting after %ds" % (self.name, port, timeout))
                time.sleep(0.05)

    def log_tail(self, n=20):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "--- %s\n%s" % (self.log_path, "\n".join(f.read().splitlines()[-n:]))
        except OSError as e:
            return "--- %s: %s" % (self.log_path, e)

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for f in (self.proc.stdin, self.proc.stdout):
            if f:
                f.close()

    def cleanup(self, keep=False):
        self.stop()
        if self in PENDING:
            PENDING.remove(self)


def _http(method, url, form=None, auth=None, headers=None, timeout=10):
    """(status, body text) of one HTTP request to a loopback server (stdlib only)."""
    import base64
    import urllib.error
    import urllib.parse
    import urllib.request
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def _timed_login(ctx, jid, password):
    t0 = time.monotonic()
    r = ctx.login(jid, password)
    return r, time.monotonic() - t0


def _check_no_secrets_logged(ctx, secrets_):
    """Nothing in the bridge's stderr (erl.out) or ejabberd.log contains a password or token."""
    texts = {}
    for p in (ctx.ej.out_path, ctx.ej.log_path):
        with open(p, encoding="utf-8", errors="replace") as f:
            texts[os.path.basename(p)] = f.read()
    check('command="auth"' in texts["erl.out"], "no bridge request log lines in erl.out (is the bridge logging?)")
    for name, text in texts.items():
        for i, sec in enumerate(secrets_):
            check(sec not in text, "%s contains secret #%d (%d chars)" % (name, i, len(sec)))
    info("%d secrets checked against %s (%s bytes)"
         % (len(secrets_), ", ".join(texts), "+".join(str(len(t)) for t in texts.values())))


def _login_rounds(ctx, jobs, concurrency=2):
    stats = run(_load(ctx.addr, jobs, concurrency))
    check(not stats["bad"], "logins failed: %s" % stats["bad"][:5])
    return stats


# --------------------------------------------------------------------------------------
# Group "http": the mod_auth_http API backend against the example API server

HTTP_BASIC = "bridge:api-s3cr3t"
HTTP_USERS = dict(FILES_USERS)


class Restartable:
    """A helper server a case may stop and start again (self.service: the running Service)."""
    service = None

    def stop(self):
        if self.service is not None:
            self.service.cleanup()
            self.service = None

    def cleanup(self, keep=False):
        self.stop()


class HttpApi(Restartable):
    """examples/http_auth_server on a fixed loopback port, restartable (in-memory accounts)."""

    def __init__(self, binary, workdir, users):
        self.binary, self.workdir, self.users = binary, workdir, dict(users)
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port

    def start(self):
        argv = [self.binary, "--listen", "127.0.0.1:%d" % self.port, "--basic", HTTP_BASIC]
        for jid, pw in sorted(self.users.items()):
            argv += ["--user", "%s:%s" % (jid, pw)]
        self.service = Service("http_auth_server", argv, os.path.join(self.workdir, "http_auth_server.log"))
        t0 = time.monotonic()
        self.service.start()
        self.service.wait_port(self.port)
        log("http_auth_server on %s in %.2fs" % (self.url, time.monotonic() - t0))

    def call(self, method, jid, password=None):
        user, _, server = jid.partition("@")
        form = {"user": user, "server": server}
        if password is not None:
            form["pass"] = password
        return _http("POST", "%s/%s" % (self.url, method), form=form, auth=HTTP_BASIC)


class ApiStore:
    """Where the http group's accounts live: the example API server, asked directly."""
    name = "HTTP API"

    def __init__(self, api):
        self.api = api

    def has(self, jid):
        user, _, server = jid.partition("@")
        import urllib.parse
        st, body = _http("GET", "%s/user_exists?%s" % (self.api.url, urllib.parse.urlencode(
            {"user": user, "server": server})), auth=HTTP_BASIC)
        expect(st, 200, "GET user_exists status")
        return body.strip() == "true"

    def entry(self, jid):
        return None

    def check_changed(self, jid, before, new_password):
        st, body = self.api.call("check_password", jid, new_password)
        expect((st, body.strip()), (200, "true"), "the API's check_password with the new password")


def setup_http(ctx):
    binary = ctx.opts.http_server
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise RuntimeError("%s is missing: cargo build --example http_auth_server (or --http-server)" % binary)
    ctx.users = dict(HTTP_USERS)
    ctx.api = HttpApi(binary, ctx.workdir, ctx.users)
    ctx.services.append(ctx.api)
    ctx.api.start()
    ctx.store = ApiStore(ctx.api)
    with open(os.path.join(ctx.workdir, "api-credentials"), "w") as f:
        f.write(HTTP_BASIC + "\n")
    ctx.write_config("http.toml", """
[[backend]]
name = "api"
type = "http"
url = "%s"
credentials_file = "%s"
check_password_method = "POST"   # passwords in a form body, not in URLs
""" % (ctx.api.url, os.path.join(ctx.workdir, "api-credentials")))


def case_backend_restarted(ctx):
    """The API restarts between two logins (a deploy): every bridge process holds a keep-alive
    connection the old server closed; the next logins must all work."""
    pids = ctx.ej.extauth_pids(ctx.bridge)
    jobs = [(j, p) for j, p in sorted(HTTP_USERS.items()) if j.startswith(("romeo@", "juliet@", "nurse@"))] * 2
    _several_logins(ctx, pids=pids, jobs=jobs)   # a pooled connection in every pool member
    ctx.api.stop()
    ctx.api.start()
    stale = _tcp_states(ctx.api.port).get("CLOSE_WAIT", 0)
    stats = run(_load(ctx.addr, jobs * 2, 4))
    info("after the API restart: %d bridge connections in CLOSE_WAIT; %d of %d logins failed: %s"
         % (stale, len(stats["bad"]), stats["n"], stats["bad"][:4]))
    check(not stats["bad"], "logins failed right after the API restarted: %s" % stats["bad"][:4])
    expect(ctx.ej.extauth_pids(ctx.bridge), pids, "bridge processes (none restarted)")


def case_backend_down(ctx):
    """The API is stopped: logins fail at once (connection refused), not after ejabberd's 30 s;
    a listener that accepts and never answers costs a login the bridge's request timeout."""
    pids = ctx.ej.extauth_pids(ctx.bridge)
    r, ok_s = _timed_login(ctx, "romeo@%s" % DOMAIN, "iheartjuliet")
    expect(r, "ok", "login with the API up")
    ctx.api.stop()
    times = []
    for i in range(4):   # both pool members, most likely (ejabberd picks at random)
        r, dt = _timed_login(ctx, "romeo@%s" % DOMAIN, "iheartjuliet")
        expect(r, "not-authorized", "login %d with the API down (connection refused)" % (i + 1))
        times.append(dt)
    check(max(times) < 2.0, "a refused login took %.2fs with the API down (connection refused)" % max(times))
    # a silent API: the TCP handshake completes (backlog), no HTTP answer ever comes
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        silent.bind(("127.0.0.1", ctx.api.port))
        silent.listen(64)
        r, hung_s = _timed_login(ctx, "juliet@%s" % DOMAIN, "wherefore")
    finally:
        silent.close()
    expect(r, "not-authorized", "login with an API that never answers")
    check(hung_s < 4.5, "a login with a silent API took %.2fs (request_timeout 3 s, deadline 4 s)" % hung_s)
    info("login with the API up %.0f ms; API down (refused): %s ms; API silent: %.2f s"
         % (ok_s * 1e3, "/".join("%.0f" % (t * 1e3) for t in times), hung_s))
    expect(ctx.ej.extauth_pids(ctx.bridge), pids, "bridge processes (none restarted)")


def case_backend_back(ctx):
    """The API comes back on the same port: logins work at once, no ejabberd or bridge restart."""
    beam, pids = ctx.ej.beam_pid, ctx.ej.extauth_pids(ctx.bridge)
    if ctx.api.service is None:
        ctx.api.start()
    r, dt = _timed_login(ctx, "romeo@%s" % DOMAIN, "iheartjuliet")
    expect(r, "ok", "first login after the API came back")
    jobs = [(j, p) for j, p in sorted(HTTP_USERS.items()) if j.endswith(DOMAIN)] * 2
    before = {p: proc_rchar(p) for p in pids}
    stats = _login_rounds(ctx, jobs)
    idle = [p for p in pids if proc_rchar(p) == before[p]]
    info("first login after restart %.0f ms; then %s; pool members that answered: %d of %d"
         % (dt * 1e3, _fmt_load(stats), len(pids) - len(idle), len(pids)))
    expect(ctx.ej.beam_pid, beam, "beam pid")
    expect(ctx.ej.extauth_pids(ctx.bridge), pids, "bridge processes (none restarted)")


def case_http_load(ctx):
    """20 logins one at a time, then 100 with 10 concurrent, through the HTTP backend:
    latency, logins/s (against internal auth when the load group ran) and bridge memory."""
    pids = ctx.ej.extauth_pids(ctx.bridge)
    jobs = [(j, p) for j, p in sorted(HTTP_USERS.items()) if j in ("romeo@%s" % DOMAIN, "juliet@%s" % DOMAIN,
                                                                     "colon@%s" % DOMAIN, "umlaut@%s" % DOMAIN)]
    seq = _login_rounds(ctx, (jobs * 5)[:LOAD_SEQUENTIAL], 1)
    info("http, 1 at a time: %s" % _fmt_load(seq))
    stats = _login_rounds(ctx, (jobs * 25)[:100], LOAD_CONCURRENCY)
    info("http, %d at a time: %s" % (LOAD_CONCURRENCY, _fmt_load(stats)))
    _vs_internal("the HTTP backend", seq, stats)
    info("bridge processes: " + "; ".join(_fmt_mem(p) for p in ctx.ej.extauth_pids(ctx.bridge)))
    expect(ctx.ej.extauth_pids(ctx.bridge), pids, "bridge processes (none restarted)")


def case_http_no_secrets_logged(ctx):
    _check_no_secrets_logged(ctx, sorted(set(HTTP_USERS.values()) | {HTTP_BASIC.split(":", 1)[1], "peacemaker",
                                                                        "a plague o' both", "newcats"}))


# --------------------------------------------------------------------------------------
# Group "oauth2": the OAuth2 backend against a real django-oauth-toolkit IdP
# (tests/oauth2_server). example.net logs in with the password grant (identity from
# userinfo); example.org takes access tokens as passwords (introspection).

IDP_USERS = {"romeo": "iheartjuliet", "juliet": "wherefore:art thou", "mercutio": "pässwörd✓"}
IDP_INACTIVE = ("tybalt", "fightme")
IDP_CLIENTS = {"bridge-basic": "basic-secret", "bridge-post": "post-secret"}
TOKEN_DOMAIN = DOMAIN2
IDLE_DOMAIN = "example.com"   # a second IdP that closes idle connections after 1 s


class Idp(Restartable):
    """tests/oauth2_server (django-oauth-toolkit) on loopback; restartable on the same port
    and database (tokens survive a restart)."""

    def __init__(self, venv, workdir, name="idp"):
        self.venv, self.dir = venv, os.path.join(workdir, name)
        self.port = 0
        self.service = None
        self.url = self.issuer = None
        self.log_path = os.path.join(workdir, name + ".log")

    def start(self, idle_timeout=None):
        argv = [os.path.join(REPO, "tests", "oauth2_server", "run.sh"), self.venv, self.dir, str(self.port),
                "--exit-on-stdin-eof"]
        if idle_timeout is not None:
            argv += ["--idle-timeout", str(idle_timeout)]
        self.service = Service("oauth2 IdP", argv, self.log_path)
        t0 = time.monotonic()
        self.service.start()
        line = self.service.read_line(60)
        check(line.startswith("READY http://127.0.0.1:"), "IdP said %r, not READY" % line)
        self.url = line.split()[1]
        self.port = int(self.url.rsplit(":", 1)[1])
        self.issuer = self.url + "/o"
        log("IdP %s up in %.2fs" % (self.issuer, time.monotonic() - t0))

    def token(self, user, password, scope="openid profile", client="bridge-post"):
        """An access token from the password grant, as an XMPP client with an OAuth2 login
        would get one (client_secret_post)."""
        import json
        st, body = _http("POST", self.issuer + "/token/", form={
            "grant_type": "password", "username": user, "password": password, "scope": scope,
            "client_id": client, "client_secret": IDP_CLIENTS[client]})
        expect(st, 200, "IdP token endpoint status for %s" % user)
        return json.loads(body)["access_token"]

    def revoke(self, token, client="bridge-post"):
        st, _ = _http("POST", self.issuer + "/revoke_token/", form={
            "token": token, "client_id": client, "client_secret": IDP_CLIENTS[client]})
        expect(st, 200, "IdP revocation status")

    def introspect_active(self, token):
        import json
        st, body = _http("POST", self.issuer + "/introspect/", form={"token": token},
                         auth="bridge-basic:" + IDP_CLIENTS["bridge-basic"])
        expect(st, 200, "IdP introspection status")
        return json.loads(body).get("active") is True


def setup_oauth2(ctx):
    venv = ctx.opts.idp_venv
    if not os.path.isfile(os.path.join(venv, ".extauth-idp-requirements.sha256")):
        raise RuntimeError("no IdP virtualenv at %s: tests/oauth2_server/setup.sh %s (or --idp-venv)" % (venv, venv))
    v = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                        "import importlib.metadata as m; print(', '.join('%s %s' % (p, m.version(p)) for p in "
                        "('django-oauth-toolkit', 'Django', 'oauthlib', 'waitress')))"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    info("IdP: %s" % v.stdout.decode(errors="replace").strip())
    ctx.idp = Idp(venv, ctx.workdir)
    ctx.services.append(ctx.idp)
    ctx.idp.start()
    ctx.idp_idle = Idp(venv, ctx.workdir, name="idp-idle")
    ctx.services.append(ctx.idp_idle)
    ctx.idp_idle.start(idle_timeout=1)
    ctx.tokens = []   # every token handed out: none may reach a log
    secret_files = {}
    for client, secret in IDP_CLIENTS.items():
        secret_files[client] = os.path.join(ctx.workdir, "%s.secret" % client)
        with open(secret_files[client], "w") as f:
            f.write(secret + "\n")
    ctx.write_config("oauth2.toml", """
[[backend]]
name = "idp-password"
type = "oauth2"
issuer = "%(issuer)s"              # endpoints by discovery
client_id = "bridge-basic"
client_secret_file = "%(basic)s"
client_auth = "basic"
mode = "password_grant"
scope = "openid profile"
verify = "userinfo"                 # whose token is it: preferred_username

[[backend]]
name = "idp-token"
type = "oauth2"
issuer = "%(issuer)s"
client_id = "bridge-post"
client_secret_file = "%(post)s"
client_auth = "post"
mode = "token"                      # the password is an access token
validate = "introspection"
audience = "any"                    # tokens of any client of the test IdP (check warns)
required_scope = "openid"

[[backend]]
name = "idp-idle"
type = "oauth2"
issuer = "%(idle_issuer)s"         # this IdP closes idle connections after 1 s
client_id = "bridge-basic"
client_secret_file = "%(basic)s"
mode = "password_grant"
verify = "introspection"

[[route]]
domains = ["%(pw_domain)s"]
backends = ["idp-password"]

[[route]]
domains = ["%(idle_domain)s"]
backends = ["idp-idle"]

[[route]]
domains = ["%(token_domain)s"]
backends = ["idp-token"]
""" % {"issuer": ctx.idp.issuer, "basic": secret_files["bridge-basic"], "post": secret_files["bridge-post"],
       "pw_domain": DOMAIN, "token_domain": TOKEN_DOMAIN, "idle_issuer": ctx.idp_idle.issuer,
       "idle_domain": IDLE_DOMAIN})


def _token(ctx, user, scope="openid profile"):
    t = ctx.idp.token(user, IDP_USERS[user], scope=scope)
    ctx.tokens.append(t)
    return t


def case_password_grant_login(ctx):
    for user, pw in sorted(IDP_USERS.items()):
        expect(ctx.login("%s@%s" % (user, DOMAIN), pw), "ok", "%s with password %r" % (user, pw))
    # ejabberd lowercases the username before asking; the IdP's usernames are lowercase
    expect(ctx.login("Romeo@%s" % DOMAIN, "iheartjuliet"), "ok", "Romeo (capitalised)")


def case_password_grant_refused(ctx):
    romeo = "romeo@%s" % DOMAIN
    expect(ctx.login(romeo, "iheartrosaline"), "not-authorized", "romeo, wrong password")
    expect(ctx.login(romeo, "wherefore:art thou"), "not-authorized", "romeo with juliet's password")
    expect(ctx.login(romeo, "iheartjuliet "), "not-authorized", "romeo, trailing space")
    expect(ctx.login("juliet@%s" % DOMAIN, "wherefore"), "not-authorized", "juliet, password cut at ':'")
    expect(ctx.login("rosaline@%s" % DOMAIN, "iheartjuliet"), "not-authorized", "unknown user")
    expect(ctx.login("%s@%s" % (IDP_INACTIVE[0], DOMAIN), IDP_INACTIVE[1]), "not-authorized",
           "inactive IdP user with the right password")
    # the password-grant host takes no tokens: a valid token of romeo is a wrong password there
    expect(ctx.login(romeo, _token(ctx, "romeo")), "not-authorized", "romeo's access token on the password host")


def case_token_login(ctx):
    for user in ("romeo", "mercutio"):
        tok = _token(ctx, user)
        jid = "%s@%s" % (user, TOKEN_DOMAIN)
        expect(ctx.login(jid, tok), "ok", "%s with an access token as the password" % user)
        expect(ctx.login(jid, tok), "ok", "%s, the same token again" % user)


def case_token_of_another_user(ctx):
    romeo, juliet = "romeo@%s" % TOKEN_DOMAIN, "juliet@%s" % TOKEN_DOMAIN
    tok_juliet = _token(ctx, "juliet")
    check(ctx.idp.introspect_active(tok_juliet), "juliet's token is not active at the IdP")
    expect(ctx.login(romeo, tok_juliet), "not-authorized", "romeo with juliet's valid token")
    expect(ctx.login(juliet, tok_juliet), "ok", "juliet with her own token")
    expect(ctx.login(romeo, "iheartjuliet"), "not-authorized", "romeo's password on the token host")
    expect(ctx.login(romeo, "A" * 30), "not-authorized", "a made-up token")
    tok_read = _token(ctx, "romeo", scope="read")   # valid, but without the required `openid`
    expect(ctx.login(romeo, tok_read), "not-authorized", "romeo's token without the required scope")


def case_token_revoked(ctx):
    romeo = "romeo@%s" % TOKEN_DOMAIN
    tok = _token(ctx, "romeo")
    expect(ctx.login(romeo, tok), "ok", "romeo's token before revocation")
    ctx.idp.revoke(tok)
    check(not ctx.idp.introspect_active(tok), "token still active at the IdP after revocation")
    # auth_use_cache: false and no bridge cache: the very next login asks the IdP
    expect(ctx.login(romeo, tok), "not-authorized", "romeo's token right after revocation")


def case_register_refused(ctx):
    """An IdP cannot create accounts: in-band registration fails and creates nothing."""
    jid = "benvolio@%s" % DOMAIN
    r = ctx.register(jid, "peacemaker")
    check(r != "ok", "in-band registration on an IdP-backed host succeeded")
    info("registration answered %r" % r)
    expect(ctx.login(jid, "peacemaker"), "not-authorized", "login after the refused registration")


def case_password_change_refused_but_shown_as_done(ctx):
    """ejabberd 23.01 takes any reply to setpass as success: the IdP cannot change passwords,
    the bridge answers 0 and logs the refusal at warn, yet the client is told it worked."""
    jid = "romeo@%s" % DOMAIN
    r = ctx.change_password(jid, "iheartjuliet", "a-new-password")
    expect(r, "ok", "what ejabberd tells the client about a refused password change")
    expect(ctx.login(jid, "a-new-password"), "not-authorized", "login with the 'changed' password")
    expect(ctx.login(jid, "iheartjuliet"), "ok", "login with the old password")
    with open(ctx.ej.out_path, encoding="utf-8", errors="replace") as f:
        warned = [l for l in f if 'command="setpass"' in l and "WARN" in l]
    check(warned, "no warn-level setpass line in the bridge's log")


def case_idp_down(ctx):
    """IdP stopped: logins on both hosts fail at once (connection refused); restarted on the
    same port and database: logins (and tokens issued before) work again, no restart of
    ejabberd or the bridge."""
    beam, pids = ctx.ej.beam_pid, ctx.ej.extauth_pids(ctx.bridge)
    tok = _token(ctx, "romeo")
    expect(ctx.login("romeo@%s" % TOKEN_DOMAIN, tok), "ok", "token login with the IdP up")
    ctx.idp.stop()
    times = []
    try:
        for i in range(3):
            for jid, pw in (("romeo@%s" % DOMAIN, "iheartjuliet"), ("romeo@%s" % TOKEN_DOMAIN, tok)):
                r, dt = _timed_login(ctx, jid, pw)
                expect(r, "not-authorized", "%s with the IdP down (try %d)" % (jid, i + 1))
                times.append(dt)
    finally:
        ctx.idp.start()   # also when a check failed: the later cases need it
    check(max(times) < 2.0, "a login took %.2fs with the IdP down (connection refused)" % max(times))
    r1, dt1 = _timed_login(ctx, "romeo@%s" % DOMAIN, "iheartjuliet")
    expect(r1, "ok", "password-grant login right after the IdP came back")
    r2, dt2 = _timed_login(ctx, "romeo@%s" % TOKEN_DOMAIN, tok)
    expect(r2, "ok", "the token issued before the restart, right after it")
    _login_rounds(ctx, [("%s@%s" % (u, DOMAIN), p) for u, p in sorted(IDP_USERS.items())] * 2)
    info("IdP down: logins refused in %s ms; back: first logins %.0f ms (password grant), %.0f ms (token)"
         % ("/".join("%.0f" % (t * 1e3) for t in times), dt1 * 1e3, dt2 * 1e3))
    expect(ctx.ej.beam_pid, beam, "beam pid")
    expect(ctx.ej.extauth_pids(ctx.bridge), pids, "bridge processes (none restarted)")


def _tcp_states(port):
    """{state name: count} of this machine's TCP connections whose remote end is 127.0.0.1:port."""
    names = {"01": "ESTABLISHED", "08": "CLOSE_WAIT", "06": "TIME_WAIT"}
    out = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[2] == "0100007F:%04X" % port:
                st = names.get(fields[3], fields[3])
                out[st] = out.get(st, 0) + 1
    return out


def case_idp_closes_idle_connections(ctx):
    """A second IdP (host IDLE_DOMAIN) closes idle keep-alive connections after 1 s, as web
    servers do (Apache after 5 s, nginx after 75 s): logins after an idle pause must work."""
    pids = ctx.ej.extauth_pids(ctx.bridge)
    jobs = [("%s@%s" % (u, IDLE_DOMAIN), p) for u, p in sorted(IDP_USERS.items())] * 2
    bad, seen = [], []
    for rnd in range(3):
        stats = run(_load(ctx.addr, jobs, 4))
        bad += [(rnd, j, r) for j, r in stats["bad"]]
        time.sleep(2.5)   # the IdP closes every pooled connection meanwhile
        seen.append(_tcp_states(ctx.idp_idle.port))
    info("connections to the idle-closing IdP after each pause: %s" % seen)
    info("%d of %d logins after idle pauses failed: %s" % (len(bad), 3 * len(jobs), bad[:6]))
    check(not bad, "logins failed after the IdP closed idle connections: %s" % bad[:6])
    expect(ctx.ej.extauth_pids(ctx.bridge), pids, "bridge processes (none restarted)")


def case_oauth2_load(ctx):
    """Logins/s through the IdP: password-grant logins, then token logins, 20 one at a time
    and 60 with 10 concurrent each."""
    pw_jobs = [("%s@%s" % (u, DOMAIN), p) for u, p in sorted(IDP_USERS.items())]
    tok_jobs = [("%s@%s" % (u, TOKEN_DOMAIN), _token(ctx, u)) for u in sorted(IDP_USERS)]
    for what, jobs in (("password grant + userinfo", pw_jobs), ("token + introspection", tok_jobs)):
        seq = _login_rounds(ctx, (jobs * 7)[:LOAD_SEQUENTIAL], 1)
        stats = _login_rounds(ctx, (jobs * 20)[:60], LOAD_CONCURRENCY)
        info("oauth2 %s, 1 at a time: %s" % (what, _fmt_load(seq)))
        info("oauth2 %s, %d at a time: %s" % (what, LOAD_CONCURRENCY, _fmt_load(stats)))
        _vs_internal("oauth2 " + what, seq, stats)
    info("bridge processes: " + "; ".join(_fmt_mem(p) for p in ctx.ej.extauth_pids(ctx.bridge)))


def case_oauth2_no_secrets_logged(ctx):
    _check_no_secrets_logged(ctx, sorted(set(IDP_USERS.values()) | set(IDP_CLIENTS.values())
                                         | {IDP_INACTIVE[1], "iheartrosaline"} | set(ctx.tokens)))


# --------------------------------------------------------------------------------------
# Group "shared": two ejabberd nodes of one service, each with its own pool of bridges,
# sharing one private redis-server ([shared]): what one node changes or counts, the other
# sees at its next login.

SHARED_DOMAIN = "example.test"
SHARED_REDIS = "redis-server"          # Debian's package (tests/e2e/setup.sh installs it)
SHARED_PREFIX = "e2e:"
SHARED_MAX_FAILURES = 4
SHARED_USERS = {
    "romeo@%s" % SHARED_DOMAIN: "old-romeo-pw",        # case password_change_across_nodes
    "mercutio@%s" % SHARED_DOMAIN: "old-mercutio-pw",  # case control_without_shared
    "guessed@%s" % SHARED_DOMAIN: "right-guessed-pw",  # case guessing_across_nodes: never logged in before
    "bystander@%s" % SHARED_DOMAIN: "bystander-pw",    # logs in throughout the lockout of another account
}


class Skip(Exception):
    """Raised by a group's setup: the group's cases are reported SKIP, not FAIL."""


def _write_secret(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o600)   # whatever the umask


class RedisStore:
    """One private redis-server on a free loopback port: the password in a 0600 config file
    (not on its command line), no persistence, its own dir; started and stopped by pid."""

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "redis")
        os.makedirs(self.dir, mode=0o700)
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.password_file = os.path.join(workdir, "redis-password")   # what the bridges read
        _write_secret(self.password_file, self.password + "\n")
        self.conf = os.path.join(self.dir, "redis.conf")
        _write_secret(self.conf, "\n".join([
            "port %d" % self.port,
            "bind 127.0.0.1",
            "requirepass %s" % self.password,
            'save ""',
            "appendonly no",
            "daemonize no",
            "dir %s" % self.dir,
            "logfile %s" % os.path.join(self.dir, "redis.log"),
            "",
        ]))
        self.url = "redis://127.0.0.1:%d/0" % self.port
        self.service = None

    def start(self):
        self.service = Service("redis-server", [shutil.which(SHARED_REDIS), self.conf],
                               os.path.join(self.dir, "redis.stderr"))
        t0 = time.monotonic()
        self.service.start()
        self.service.wait_port(self.port, timeout=10)
        log("redis-server pid %d on 127.0.0.1:%d in %.2fs" % (self.service.proc.pid, self.port,
                                                             time.monotonic() - t0))

    @property
    def pid(self):
        return self.service.proc.pid if self.service and self.service.proc else None

    def cli(self, *args):
        """redis-cli against this server (the password from the environment, not argv)."""
        p = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port)] + list(args),
                           env=dict(os.environ, REDISCLI_AUTH=self.password), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=10)
        return p.stdout.decode(errors="replace")

    def cleanup(self, keep=False):
        if self.service is not None:
            self.service.cleanup(keep=keep)   # SIGTERM by pid, then SIGKILL
            self.service = None


def _shared_config(ctx, node, shared=True):
    """A node's bridge config: the one users file (one source of truth for passwords), the
    node's own state_dir (its own generations file: nothing but the store links the nodes),
    its own JSON log file, the cache and the throttle, and [shared] (unless shared=False)."""
    state = os.path.join(ctx.workdir, "state-%s" % node)
    os.makedirs(state, mode=0o700, exist_ok=True)
    logfile = os.path.join(ctx.workdir, "bridge-%s.log" % node)
    text = """# written by tests/e2e/run.py (group shared, node %(node)s)
timeout = "4s"
state_dir = "%(state)s"

[log]
level = "info"
format = "json"
target = "file"
file = "%(logfile)s"

[cache]
enabled = true
ttl = "10m"

[throttle]
enabled = true
max_failures = %(max_failures)d
window = "15m"
lockout = "5m"
""" % {"node": node, "state": state, "logfile": logfile, "max_failures": SHARED_MAX_FAILURES}
    if shared:
        text += """
[shared]
url = "%s"
password_file = "%s"
key_file = "%s"
key_prefix = "%s"
""" % (ctx.redis.url, ctx.redis.password_file, ctx.shared_key, SHARED_PREFIX)
    text += """
[[backend]]
name = "local"
type = "file"
path = "%s"
""" % ctx.users_file
    path = os.path.join(ctx.workdir, "bridge-%s.toml" % node)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    p = subprocess.run([ctx.bridge.path, "check", "--config", path], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    out = p.stdout.decode(errors="replace")
    if p.returncode != 0:
        raise RuntimeError("extauth-bridge check --config %s: exit %d\n%s" % (path, p.returncode, out))
    log("check --config %s: ok; %s" % (os.path.basename(path),
                                       "; ".join(l.strip() for l in out.splitlines() if "shared" in l.lower())[:300]))
    return path, logfile


def _start_node(ctx, name, config, pool_size=2):
    """A second (third) ejabberd node of the service: same virtual host, its own dirs and
    ports, its own pool of bridges; returns it up, with a stable pool."""
    ej = Ejabberd(name, extauth_program=ctx.bridge.command(["--config", config]), pool_size=pool_size,
                  hosts=(SHARED_DOMAIN,))
    try:
        ej.start()
        pids = ej.wait_pool(ctx.bridge)
        time.sleep(1.1)
        now = ej.extauth_pids(ctx.bridge)
        if sorted(now) != sorted(pids):
            raise RuntimeError("node %s: bridge processes not stable (%s, then %s): %s"
                               % (name, pids, now, ej.bridge_errors()))
    except Exception:
        ej.cleanup(keep=ctx.keep)
        raise
    return ej


def setup_shared(ctx):
    if shutil.which(SHARED_REDIS) is None:
        raise Skip("%s not installed (tests/e2e/setup.sh installs it: apt-get install -y redis-server)"
                   % SHARED_REDIS)
    ctx.redis = RedisStore(ctx.workdir)
    ctx.services.append(ctx.redis)   # stopped last: after both nodes
    ctx.redis.start()
    # one key for every credential hash, the same file on both nodes
    ctx.shared_key = os.path.join(ctx.workdir, "shared.key")
    p = subprocess.run([ctx.bridge.path, "generate", "shared-key", ctx.shared_key], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    if p.returncode != 0:
        raise RuntimeError("generate shared-key: exit %d: %s" % (p.returncode, p.stdout.decode(errors="replace")))
    # ONE users file for both nodes: the passwords have one source of truth; a change on A
    # reaches B's caches only through the store (each node has its own state_dir)
    ctx.users = dict(SHARED_USERS)
    ctx.users_file = os.path.join(ctx.workdir, "users")
    write_users_file(ctx.bridge, ctx.users_file, ctx.users)
    ctx.store = FileStore(ctx.users_file, ctx.bridge.plain_passwords)
    path_a, ctx.log_a = _shared_config(ctx, "a")
    path_b, ctx.log_b = _shared_config(ctx, "b")
    ctx.extauth_program = ctx.bridge.command(["--config", path_a])   # node A: the group's ctx.ej
    ctx.ej_b = _start_node(ctx, "shared_b", path_b)
    ctx.services.append(ctx.ej_b)
    log("node B %s on port %d, redis pid %d" % (ctx.ej_b.node, ctx.ej_b.port, ctx.redis.pid))


def _on(addr, jid, password):
    return run(alogin(addr, jid, password))


def _bridge_log(path, user=None):
    """The bridge's JSON request lines (one object per line; flattened fields), optionally
    for one user, in order."""
    import json
    out = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if obj.get("fields"):   # not flattened: fields nested
                    obj = dict(obj, **obj["fields"])
                if obj.get("message") != "request" or obj.get("command") != "auth":
                    continue
                if user is not None and obj.get("user") != user:
                    continue
                out.append(obj)
    except OSError:
        pass
    return out


def _outcomes(path, user, since=0):
    """The outcomes the bridge logged for user, once its log has settled: log lines are written
    by a thread of their own just after the reply, so a line may land a moment after the client
    saw the answer. Rereads until two reads 150 ms apart agree (at most 2 s)."""
    seen = [o.get("outcome") for o in _bridge_log(path, user)[since:]]
    deadline = time.time() + 2.0
    while time.time() < deadline:
        time.sleep(0.15)
        again = [o.get("outcome") for o in _bridge_log(path, user)[since:]]
        if again == seen:
            break
        seen = again
    return seen


def case_password_change_across_nodes(ctx):
    """B serves romeo's old password from the store; a client on A changes it in-band; at the
    very next login on B the old password is refused and the new one accepted."""
    jid, user, old, new = "romeo@%s" % SHARED_DOMAIN, "romeo", SHARED_USERS["romeo@%s" % SHARED_DOMAIN], "new-romeo-pw"
    a, b = ctx.ej.address, ctx.ej_b.address
    expect(_on(b, jid, old), "ok", "old password on B (asks the users file)")
    expect(_on(b, jid, old), "ok", "old password on B again")
    seen = _outcomes(ctx.log_b, user)
    expect(seen, ["yes", "cached_shared"], "B's outcomes for romeo before the change")
    before = ctx.store.entry(jid)
    expect(ctx.change_password(jid, old, new), "ok", "in-band password change on A")
    ctx.store.check_changed(jid, before, new)
    # the change's own login on A was answered from the entry B put in the store
    expect(_outcomes(ctx.log_a, user)[:1], ["cached_shared"], "A's outcome for the login before the change")
    n_b = len(seen)
    expect(_on(b, jid, old), "not-authorized", "old password on B at the very next login")
    expect(_on(b, jid, new), "ok", "new password on B")
    expect(_on(a, jid, new), "ok", "new password on A")
    expect(_on(a, jid, old), "not-authorized", "old password on A")
    after = _outcomes(ctx.log_b, user, n_b)
    expect(after, ["no", "yes"], "B's outcomes for romeo after the change (old, new)")
    keys = ctx.redis.cli("--scan", "--pattern", SHARED_PREFIX + "*").split()
    check(keys and all(k.startswith(SHARED_PREFIX) for k in keys), "no %s* keys in the store: %r" % (SHARED_PREFIX, keys))
    check(not [k for k in keys if user in k or old in k or new in k], "a key in the store names the user or a password")
    info("B before the change: %s; after: %s; A: %s; %d keys in the store (%s)"
         % (seen, after, _outcomes(ctx.log_a, user), len(keys), _key_kinds(keys)))


def _key_kinds(keys):
    return ", ".join(sorted({k.split(":")[1] for k in keys if k.count(":") >= 2}))


def _keys_without_ttl(redis):
    """Every key in the store must expire: the keys whose TTL is not positive."""
    keys = redis.cli("--scan", "--pattern", "*").split()
    forever = []
    for k in keys:
        ttl = redis.cli("TTL", k).strip()
        if not (ttl.isdigit() and int(ttl) > 0):   # -1: no TTL; -2: gone meanwhile (fine, but odd here)
            forever.append("%s (TTL %s)" % (k, ttl))
    return keys, forever


def case_control_without_shared(ctx):
    """The control for password_change_across_nodes: a third node C like B but without
    [shared] serves mercutio's old password from its own cache after the change on A (what
    B would do without the store); B refuses it."""
    jid, user, old, new = ("mercutio@%s" % SHARED_DOMAIN, "mercutio", SHARED_USERS["mercutio@%s" % SHARED_DOMAIN],
                           "new-mercutio-pw")
    path_c, log_c = _shared_config(ctx, "c", shared=False)
    c = _start_node(ctx, "shared_c", path_c, pool_size=1)   # one bridge: the one that cached it
    try:
        expect(_on(c.address, jid, old), "ok", "old password on C")
        expect(_on(c.address, jid, old), "ok", "old password on C again")
        expect(_on(ctx.ej_b.address, jid, old), "ok", "old password on B")
        expect(ctx.change_password(jid, old, new), "ok", "in-band password change on A")
        n_c = len(_bridge_log(log_c, user))
        expect(_on(ctx.ej_b.address, jid, old), "not-authorized", "old password on B (shared) after the change")
        expect(_on(c.address, jid, old), "ok", "old password on C (no [shared]) after the change: served from its cache")
        expect(_outcomes(log_c, user, n_c), ["cached"], "C's outcome for the old password after the change")
        expect(_on(c.address, jid, new), "ok", "new password on C (a cache miss: the users file)")
        info("C (no [shared]) after the change on A: old password %s; B (shared): refused"
             % "/".join(_outcomes(log_c, user, n_c)[:1]))
    finally:
        c.cleanup(keep=ctx.keep)


def case_guessing_across_nodes(ctx):
    """A guesser alternating A, B, A, B with distinct wrong passwords for an account that has
    not logged in before: after max_failures (4) in all, the right password is refused on
    both nodes (the lock is in the store, not 4 per bridge process); another account is not
    affected."""
    jid, user, right = "guessed@%s" % SHARED_DOMAIN, "guessed", SHARED_USERS["guessed@%s" % SHARED_DOMAIN]
    nodes = [("A", ctx.ej.address, ctx.log_a), ("B", ctx.ej_b.address, ctx.log_b)]
    check(not _bridge_log(ctx.log_a, user) and not _bridge_log(ctx.log_b, user),
          "%s logged in before the guessing (a trusted password would pass a lockout)" % jid)
    for i in range(SHARED_MAX_FAILURES):
        name, addr, _ = nodes[i % 2]
        expect(_on(addr, jid, "wrong-guess-%d" % i), "not-authorized", "wrong guess %d on %s" % (i + 1, name))
    wrong = {name: _outcomes(path, user) for name, _, path in nodes}
    expect(wrong, {"A": ["no"] * (SHARED_MAX_FAILURES // 2), "B": ["no"] * (SHARED_MAX_FAILURES // 2)},
           "outcomes of the %d wrong guesses (each asked the users file)" % SHARED_MAX_FAILURES)
    # locked now: each node has 2 bridge processes, each of which saw at most 2 of the
    # failures, so only a shared count refuses the right password here
    for name, addr, _ in nodes + nodes:
        expect(_on(addr, jid, right), "not-authorized", "the right password on %s after %d wrong ones in all"
               % (name, SHARED_MAX_FAILURES))
    locked = {name: _outcomes(path, user)[SHARED_MAX_FAILURES // 2:] for name, _, path in nodes}
    expect(locked, {"A": ["throttled"] * 2, "B": ["throttled"] * 2},
           "outcomes of the right password on each node after the guessing")
    expect(_on(ctx.ej.address, jid, "wrong-guess-extra"), "not-authorized", "one more wrong guess on A")
    for name, addr, _ in nodes:
        expect(_on(addr, "bystander@%s" % SHARED_DOMAIN, SHARED_USERS["bystander@%s" % SHARED_DOMAIN]), "ok",
               "another account on %s during the lockout" % name)
    reasons = sorted({o.get("reason", "") for _, _, path in nodes for o in _bridge_log(path, user)
                      if o.get("outcome") == "throttled"})
    # neither the store's password nor the shared key reaches a log (the bridges' JSON files,
    # their stderr in erl.out, ejabberd.log) on either node
    with open(ctx.shared_key, encoding="utf-8") as f:
        key_hex = f.read().strip()
    for path in (ctx.log_a, ctx.log_b, ctx.ej.out_path, ctx.ej.log_path, ctx.ej_b.out_path, ctx.ej_b.log_path):
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        check(ctx.redis.password not in text, "%s holds the store's password" % path)
        check(not key_hex or key_hex not in text, "%s holds the shared key" % path)
    keys, forever = _keys_without_ttl(ctx.redis)
    check(not forever, "keys in the store without a TTL: %s" % forever)
    info("%d keys in the store (%s), all with a TTL" % (len(keys), _key_kinds(keys)))
    info("guesses: A %s, B %s; then the right password: A %s, B %s (%s)"
         % (wrong["A"], wrong["B"], locked["A"], locked["B"], "; ".join(reasons)[:160]))


# --------------------------------------------------------------------------------------
# Groups and the runner

class Group:
    """A bridge configuration (made by setup, which sets ctx.extauth_program, e.g. with
    ctx.write_config) and its cases."""

    def __init__(self, name, setup, cases, pool_size=2, auth="external", hosts=(DOMAIN, DOMAIN2), fake_ok=True,
                 register=True):
        self.name, self.setup, self.cases, self.pool_size, self.auth = name, setup, cases, pool_size, auth
        self.hosts = hosts
        self.register = register
        self.fake_ok = fake_ok   # fake_extauth.py only knows the users file


GROUPS = [
    Group("files", setup_files, [
        case_login_ok, case_wrong_password, case_unknown_user, case_uppercase_username,
        case_password_with_colon, case_non_ascii_password, case_second_host,
        case_change_password, case_register_then_login, case_unregister_then_login,
    ]),
    # ejabberd without mod_register: what the README advises where setpass cannot work
    Group("nochange", setup_files, [case_no_in_band_password_change], hosts=(DOMAIN,), register=False),
    # one host, so the bridge processes under beam are exactly that host's pool
    Group("kill", setup_kill, [case_kill_one_idle, case_kill_all, case_kill_under_load], hosts=(DOMAIN,)),
    Group("load", setup_load, [case_load_external, case_load_internal], hosts=(DOMAIN,)),
    Group("http", setup_http, [
        case_login_ok, case_wrong_password, case_unknown_user, case_uppercase_username,
        case_password_with_colon, case_non_ascii_password, case_second_host,
        case_change_password, case_register_then_login, case_unregister_then_login,
        case_backend_restarted, case_backend_down, case_backend_back, case_http_load, case_http_no_secrets_logged,
    ], fake_ok=False),
    Group("oauth2", setup_oauth2, [
        case_password_grant_login, case_password_grant_refused, case_token_login, case_token_of_another_user,
        case_token_revoked, case_register_refused, case_password_change_refused_but_shown_as_done, case_idp_down, case_idp_closes_idle_connections,
        case_oauth2_load, case_oauth2_no_secrets_logged,
    ], hosts=(DOMAIN, TOKEN_DOMAIN, IDLE_DOMAIN), fake_ok=False),
    # two nodes (ctx.ej = A, ctx.ej_b = B) of one service sharing a private redis-server
    Group("shared", setup_shared, [
        case_password_change_across_nodes, case_control_without_shared, case_guessing_across_nodes,
    ], hosts=(SHARED_DOMAIN,), fake_ok=False),
]


def case_name(group, fn):
    return "%s/%s" % (group.name, fn.__name__[len("case_"):] if fn.__name__.startswith("case_") else fn.__name__)


class _Alarm(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Alarm("case took longer than %ds" % CASE_TIMEOUT)


def run_group(group, bridge, keep, tally, opts=None):
    ctx = Ctx(bridge, keep=keep, opts=opts)
    ej = None
    try:
        try:
            try:
                group.setup(ctx)
            except Skip as e:
                for fn in group.cases:
                    print("SKIP %s: %s" % (case_name(group, fn), e), flush=True)
                    tally[2] += 1
                return
            ej = Ejabberd(group.name, auth=group.auth, extauth_program=ctx.extauth_program,
                          pool_size=group.pool_size, hosts=group.hosts, register=group.register)
            ctx.ej = ej
            ej.start()
            if group.auth == "external":
                pids = ej.wait_pool(bridge)
                time.sleep(1.1)   # a bridge that dies at startup is restarted in a loop: catch that here
                now = ej.extauth_pids(bridge)
                if sorted(now) != sorted(pids):
                    raise RuntimeError("bridge processes are not stable (%s, 1.1s later %s): crash loop?\n%s"
                                       % (pids, now, ej.log_tail()))
        except Exception as e:
            reason = "group setup failed: %s" % (e,)
            if ej is not None and ej.proc is not None:
                # erl.out holds the bridge's stderr: a config error says why the pool never came up
                said = ej.bridge_errors()
                if said:
                    reason += " | the bridge said: " + " | ".join(said)
            for fn in group.cases:
                print("FAIL %s: %s" % (case_name(group, fn), reason.splitlines()[0]), flush=True)
                tally[1] += 1
            print(reason, flush=True)
            return
        for fn in group.cases:
            name = case_name(group, fn)
            t0 = time.monotonic()
            signal.signal(signal.SIGALRM, _on_alarm)
            signal.alarm(CASE_TIMEOUT)
            try:
                fn(ctx)
                err = None
            except (CaseFailure, _Alarm) as e:
                err = str(e)
            except Exception as e:
                err = "%s: %s" % (type(e).__name__, e)
                if VERBOSE:
                    traceback.print_exc()
            finally:
                signal.alarm(0)
            dt = time.monotonic() - t0
            if err is None:
                print("PASS %s (%.2fs)" % (name, dt), flush=True)
                tally[0] += 1
            else:
                err = err.replace("\n", " | ")
                print("FAIL %s: %s (%.2fs)" % (name, err, dt), flush=True)
                tally[1] += 1
                if ej.proc.poll() is not None:
                    print(ej.log_tail(), flush=True)
    finally:
        if ej is not None:
            if VERBOSE and ej.proc is not None:
                log("ejabberd log: %d 'External authentication program' error lines"
                    % ej.log_text().count("External authentication program"))
            ej.cleanup(keep=keep)
        ctx.cleanup(keep=keep)


def versions(bridge):
    try:
        ej = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "ejabberd"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, timeout=10).stdout.decode() or "?"
    except Exception:
        ej = "?"
    try:
        otp = subprocess.run([ERL, "-noshell", "-eval",
                              'io:format("~s (erts ~s)", [erlang:system_info(otp_release), '
                              'erlang:system_info(version)]), halt().'],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=20,
                             env=dict(os.environ, HOME=tempfile.gettempdir())).stdout.decode()
    except Exception:
        otp = "?"
    return ("ejabberd %s, Erlang/OTP %s, slixmpp %s, Python %s, bridge: %s %s"
            % (ej, otp, slixmpp.__version__, sys.version.split()[0], bridge.name, bridge.version()))


def main(argv=None):
    global VERBOSE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--bridge", help="path to the extauth-bridge binary")
    src.add_argument("--fake", action="store_true", help="use fake_extauth.py (harness development)")
    ap.add_argument("--group", help="comma-separated groups (default: all; with --fake: %s): %s"
                    % (",".join(g.name for g in GROUPS if g.fake_ok), ",".join(g.name for g in GROUPS)))
    ap.add_argument("--http-server", help="the example API server for the http group "
                    "(default: examples/http_auth_server beside --bridge, else target/debug/examples/)")
    ap.add_argument("--idp-venv", default=os.environ.get("EXTAUTH_TEST_IDP_VENV") or os.path.join(REPO, "target", "idp-venv"),
                    help="tests/oauth2_server virtualenv for the oauth2 group (default: $EXTAUTH_TEST_IDP_VENV "
                    "or target/idp-venv)")
    ap.add_argument("--budget", type=float, default=BUDGET,
                    help="seconds the whole run may take, every group's setup and cases (default %d): "
                    "a run over it fails" % BUDGET)
    ap.add_argument("--keep", action="store_true", help="keep temp dirs (configs, logs) for inspection")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    VERBOSE = args.verbose
    logging.basicConfig(level=logging.WARNING, format="  slixmpp %(levelname)s %(message)s")
    # slixmpp logs an ERROR for every refused login ("No appropriate login method")
    logging.getLogger("slixmpp").setLevel(logging.WARNING if args.verbose else logging.CRITICAL)
    if args.fake:
        bridge = FakeBridge()
    else:
        if not (os.path.isfile(args.bridge) and os.access(args.bridge, os.X_OK)):
            print("run.py: --bridge %s: not an executable file" % args.bridge, file=sys.stderr)
            return 2
        bridge = Bridge(args.bridge)
        if args.http_server is None:   # beside the bridge, else the debug build (what ci.sh uses)
            beside = os.path.join(os.path.dirname(bridge.path), "examples", "http_auth_server")
            debug = os.path.join(REPO, "target", "debug", "examples", "http_auth_server")
            args.http_server = beside if os.path.exists(beside) or not os.path.exists(debug) else debug
    if args.group is None:
        args.group = ",".join(g.name for g in GROUPS if g.fake_ok or not args.fake)
    wanted = [g.strip() for g in args.group.split(",") if g.strip()]
    by_name = {g.name: g for g in GROUPS}
    unknown = [g for g in wanted if g not in by_name]
    if unknown:
        print("run.py: unknown group(s) %s; known: %s" % (unknown, ", ".join(by_name)), file=sys.stderr)
        return 2
    if args.fake and not all(by_name[g].fake_ok for g in wanted):
        print("run.py: --fake only runs %s" % ",".join(g.name for g in GROUPS if g.fake_ok), file=sys.stderr)
        return 2
    global EJABBERD_LIB
    EJABBERD_LIB = find_ejabberd_lib()
    if EJABBERD_LIB is None:
        print("run.py: ejabberd not installed: run tests/e2e/setup.sh", file=sys.stderr)
        return 2
    log("ERL_LIBS=%s" % EJABBERD_LIB)

    global KEEP
    KEEP = args.keep

    def on_term(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)   # also when started in the background (SIGINT ignored)

    print("# " + versions(bridge), flush=True)
    tally = [0, 0, 0]   # passed, failed, skipped
    t0 = time.monotonic()
    try:
        for name in wanted:
            run_group(by_name[name], bridge, args.keep, tally, opts=args)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        tally[1] += 1
    finally:
        _atexit()
    wall = time.monotonic() - t0
    print("# total %.1fs (budget %.0fs)" % (wall, args.budget), flush=True)
    # A run that creeps past its budget would, some day, push CI past its own limit with
    # nothing failing: it fails here first, as one more case.
    if wall > args.budget:
        print("FAIL e2e/time_budget: the run took %.1fs, over its %.0fs budget" % (wall, args.budget), flush=True)
        tally[1] += 1
    if tally[2]:
        print("# %d skipped" % tally[2], flush=True)
    print("%d passed, %d failed" % (tally[0], tally[1]), flush=True)
    return 0 if tally[1] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
