"""Helpers for the system tests: a real `headscale serve` process, HTTP over TCP and over the
unix socket, config writing, and small checks shared by several test files.

Every wait here is a poll with a deadline, and every subprocess has a timeout, so a hung product
fails a test instead of hanging the suite."""

import datetime as dt
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

import yaml

HS_BIN = os.environ.get("HS_BIN", "/work/main/build/headscale")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PGTMP = os.path.join(REPO, "tests", "lib", "pgtmp.sh")

START_DEADLINE = 20.0  # seconds until /health must answer
STOP_DEADLINE = 20.0  # seconds for a clean SIGTERM shutdown
CLI_TIMEOUT = 30.0

SANITIZER_PATTERNS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer")

API_KEY_RE = re.compile(r"hskey-api-[0-9a-f]{12}-[0-9a-f]{64}")
AUTH_KEY_RE = re.compile(r"hskey-auth-[0-9a-f]{12}-[0-9a-f]{64}")

# Every Server not yet cleaned up, so conftest can show their logs when a test fails.
LIVE_SERVERS = []

# Sentinel for "use the server's own admin API key".
DEFAULT_KEY = object()


def unique(prefix="u"):
    """A user name unique to one test: starts with a letter, lower case, valid for headscale."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def embedded_derp(region_id, key_path, stun_addr=None, add_region=True):
    """Config overrides for the embedded DERP relay on listen_addr, verify_clients off (raw
    test clients have no node keys); STUN on a free loopback port unless stun_addr."""
    return {"derp": {"server": {
        "enabled": True, "region_id": region_id, "region_code": f"hs{region_id}",
        "region_name": f"HS Test {region_id}",
        "stun_listen_addr": stun_addr or f"127.0.0.1:{free_port()}",
        "private_key_path": str(key_path),
        "automatically_add_embedded_derp_region": add_region, "verify_clients": False}}}


class JsonServer:
    """Answers every GET on 127.0.0.1:port with body (JSON bytes), or only GETs of path
    when one is given (404 elsewhere), from a thread until close(); over TLS when tls (an
    ssl.SSLContext) is given."""

    def __init__(self, port, body, path=None, tls=None):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200 if path in (None, self.path) else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        if tls:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def parse_time(s):
    """RFC 3339 → aware datetime (accepts 'Z' and fractional seconds of any length)."""
    assert isinstance(s, str) and s, f"not a timestamp: {s!r}"
    m = re.fullmatch(
        r"(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})", s)
    assert m, f"not RFC 3339: {s!r}"
    frac = (m.group(3) or ".0")[1:7].ljust(6, "0")
    tz = "+00:00" if m.group(4) == "Z" else m.group(4)
    return dt.datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}.{frac}{tz}")


def now():
    return dt.datetime.now(dt.timezone.utc)


def rfc3339(t):
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeClock:
    """A wall clock of its own for the processes started with env(): libfaketime (Debian's
    libfaketime, preloaded) reads their offset from the real clock ("+0", "+2h", "-2m", ...)
    from a file that set() rewrites, at most a second late. Only CLOCK_REALTIME moves, as it
    does when a host's clock is stepped; the monotonic clock stays the host's."""

    LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"

    def __init__(self, folder, offset="+0"):
        assert os.path.exists(self.LIB), \
            f"{self.LIB} is missing: run deploy/install-deps.sh (package libfaketime)"
        self.path = os.path.join(folder, "faketime")
        self.set(offset)

    def set(self, offset):
        tmp = self.path + ".new"
        with open(tmp, "w") as f:
            f.write(offset + "\n")
        os.replace(tmp, self.path)  # a reader sees the old offset or the new, never half

    def env(self):
        return {"LD_PRELOAD": self.LIB, "FAKETIME_TIMESTAMP_FILE": self.path,
                "FAKETIME_CACHE_DURATION": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                # ASan wants to be first among the libraries; the preloaded one is harmless
                "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:verify_asan_link_order=0"}


def deep_merge(base, extra):
    for k, v in (extra or {}).items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_merge(base[k], v)
        elif v is _DELETE:
            base.pop(k, None)
        else:
            base[k] = v
    return base


class _Delete:
    def __repr__(self):
        return "DELETE"


_DELETE = _Delete()
DELETE = _DELETE  # use in config overrides to remove a key


def sanitizer_lines(text):
    return [l for l in text.splitlines() if any(p in l for p in SANITIZER_PATTERNS)]


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=10):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def _decode(data, ctype):
    if not data:
        return None
    text = data.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def http_request(conn, method, path, body=None, headers=None):
    """One request on a fresh connection → (status, headers dict (lower-case), parsed body)."""
    hdrs = dict(headers or {})
    if body is not None and "Content-Type" not in hdrs:
        hdrs["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        h = {k.lower(): v for k, v in r.getheaders()}
        return r.status, h, _decode(data, h.get("content-type", ""))
    finally:
        conn.close()


class Db:
    """Where a server keeps its data: 'sqlite' (a file in the server dir) or 'postgres' (a fresh
    database on the session's throwaway cluster, dropped when the owner is cleaned up)."""

    def __init__(self, kind, pg=None):
        self.kind = kind
        self.pg = pg

    def __repr__(self):
        return self.kind


class PgCluster:
    def __init__(self, workdir):
        self.workdir = workdir
        out = subprocess.run([PGTMP, "start", workdir], capture_output=True, text=True,
                             timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"pgtmp.sh start failed: {out.stderr}")
        env = {}
        for line in out.stdout.splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                env[k.strip()] = v.strip().strip("'\"")
        self.host = env["PGHOST"]
        self.port = int(env["PGPORT"])
        self.user = env.get("PGUSER", "postgres")

    def psql(self, sql, dbname="postgres", check=True):
        r = subprocess.run(["psql", "-h", self.host, "-p", str(self.port), "-U", self.user,
                            "-d", dbname, "-v", "ON_ERROR_STOP=1", "-Atq", "-c", sql],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {r.stderr}")
        return r.stdout

    def create_db(self):
        name = "hs_" + uuid.uuid4().hex
        self.psql(f'CREATE DATABASE "{name}"')
        return name

    def drop_db(self, name):
        # WITH (FORCE) ends leftover sessions of a server that was killed (PostgreSQL 13+).
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', check=False)

    def dump(self, name):
        r = subprocess.run(["pg_dump", "-h", self.host, "-p", str(self.port), "-U", self.user,
                            "--no-owner", name], capture_output=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def stop(self):
        subprocess.run([PGTMP, "stop", self.workdir], capture_output=True, timeout=120)

    def restart(self):
        """Stopped as a crash would stop it, then started again on the same port."""
        r = subprocess.run([PGTMP, "restart", self.workdir], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, f"pgtmp.sh restart failed: {r.stderr}"


def base_config(tmp, port, db, pg_dbname=None, pg_host=None, policy_mode="database",
                policy_path=None):
    cfg = {
        "server_url": f"http://127.0.0.1:{port}",
        "listen_addr": f"127.0.0.1:{port}",
        "metrics_listen_addr": f"127.0.0.1:{free_port()}",
        "unix_socket": os.path.join(tmp, "headscale.sock"),
        "unix_socket_permission": "0770",
        "noise": {"private_key_path": os.path.join(tmp, "noise.key")},
        "prefixes": {"v4": "100.64.0.0/10", "v6": "fd7a:115c:a1e0::/48",
                     "allocation": "sequential"},
        "dns": {"base_domain": "example.com", "magic_dns": True,
                "nameservers": {"global": ["1.1.1.1"]}},
        "policy": {"mode": policy_mode},
        "log": {"level": "debug", "format": "text"},
        "disable_check_updates": True,
        "derp": {"server": {"enabled": False}, "urls": [], "paths": [],
                 "auto_update_enabled": False},
    }
    if policy_path:
        cfg["policy"]["path"] = policy_path
    if db.kind == "sqlite":
        cfg["database"] = {"type": "sqlite",
                           "sqlite": {"path": os.path.join(tmp, "db.sqlite"),
                                      "write_ahead_log": True}}
    else:
        cfg["database"] = {"type": "postgres",
                           "postgres": {"host": pg_host or db.pg.host, "port": db.pg.port,
                                        "name": pg_dbname, "user": "postgres", "pass": ""}}
    return cfg


class Server:
    """A `headscale serve` process with its own directory, config, port and database."""

    def __init__(self, db, overrides=None, raw_config=None, policy_mode="database",
                 policy_text=None, pg_host=None, env=None):
        self.db = db
        self.binary = HS_BIN  # serve and CLI; a test may run another server on the same files
        self.tmp = tempfile.mkdtemp(prefix="hs-", dir="/tmp")  # short: unix socket path limit
        self.port = free_port()
        self.cfg_path = os.path.join(self.tmp, "config.yaml")
        self.log_path = os.path.join(self.tmp, "server.log")
        self.env = dict(env or {})
        self.proc = None
        self.api_key = None
        self.pg_dbname = db.pg.create_db() if db.kind == "postgres" else None
        self.policy_path = None
        if policy_text is not None:
            self.policy_path = os.path.join(self.tmp, "policy.hujson")
            with open(self.policy_path, "w") as f:
                f.write(policy_text)
        if raw_config is not None:
            subst = {"{tmp}": self.tmp, "{port}": str(self.port),
                     "{mport}": str(free_port()), "{gport}": str(free_port())}
            if db.kind == "postgres":
                subst.update({"{pghost}": db.pg.host, "{pgport}": str(db.pg.port),
                              "{pgdb}": self.pg_dbname})
            text = raw_config
            for k, v in subst.items():
                text = text.replace(k, v)
            with open(self.cfg_path, "w") as f:
                f.write(text)
            self.config = yaml.safe_load(text)
        else:
            self.config = base_config(self.tmp, self.port, db, self.pg_dbname, pg_host,
                                      policy_mode, self.policy_path)
            deep_merge(self.config, overrides)
            self.write_config()
        self.socket_path = self.config.get("unix_socket", os.path.join(self.tmp, "headscale.sock"))
        LIVE_SERVERS.append(self)

    # ---- config ----
    def write_config(self):
        with open(self.cfg_path, "w") as f:
            yaml.safe_dump(self.config, f, sort_keys=False)

    @property
    def sqlite_path(self):
        return self.config["database"]["sqlite"]["path"]

    # ---- process ----
    def _env(self, extra=None):
        e = dict(os.environ)
        e.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        e.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        for k in ("HEADSCALE_CLI_ADDRESS", "HEADSCALE_CLI_API_KEY", "HEADSCALE_CONFIG"):
            e.pop(k, None)
        e.update(self.env)
        e.update(extra or {})
        return e

    def spawn(self, extra_env=None, args=None):
        """Starts `headscale serve` without waiting; returns the Popen."""
        log = open(self.log_path, "ab")
        try:
            return subprocess.Popen([self.binary, "-c", self.cfg_path] + (args or ["serve"]),
                                    stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=self._env(extra_env),
                                    cwd=self.tmp)
        finally:
            log.close()

    def start(self, extra_env=None, health_url=None):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = self.spawn(extra_env)
        self.wait_healthy(health_url)
        return self

    def wait_healthy(self, url=None, deadline=START_DEADLINE):
        host, port = "127.0.0.1", self.port
        if url:
            host, port = url
        end = time.monotonic() + deadline
        last = None
        while time.monotonic() < end:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError(f"headscale serve exited with {rc} during start:\n"
                                     + self.log_tail())
            try:
                st, _, body = http_request(http.client.HTTPConnection(host, port, timeout=2),
                                           "GET", "/health")
                if st == 200 and isinstance(body, dict) and body.get("status") == "pass":
                    return
                last = (st, body)
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise AssertionError(f"/health not passing after {deadline}s (last: {last!r}):\n"
                             + self.log_tail())

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, check=True):
        """SIGTERM, wait, and (check=True) assert a clean exit and a clean sanitizer log."""
        if self.proc is None:
            return None
        p, self.proc = self.proc, None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
                raise AssertionError("headscale serve did not stop within "
                                     f"{STOP_DEADLINE}s of SIGTERM:\n" + self.log_tail())
        if check:
            assert p.returncode == 0, (f"headscale serve exited {p.returncode} on SIGTERM:\n"
                                       + self.log_tail())
            self.check_sanitizers()
        return p.returncode

    def kill9(self):
        if self.proc is None:
            return
        p, self.proc = self.proc, None
        p.kill()
        p.wait(timeout=10)

    def cleanup(self):
        if self.proc is not None:
            self.kill9()
        if self.pg_dbname:
            self.db.pg.drop_db(self.pg_dbname)
            self.pg_dbname = None
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self in LIVE_SERVERS:
            LIVE_SERVERS.remove(self)

    # ---- logs ----
    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=150):
        lines = self.log_text().splitlines()
        return "\n".join(lines[-n:])

    def check_sanitizers(self):
        bad = sanitizer_lines(self.log_text())
        assert not bad, "sanitizer report in server log:\n" + self.log_tail(300)

    # ---- CLI ----
    def cli(self, *args, env=None, timeout=CLI_TIMEOUT, config=True, input=None):
        argv = [self.binary] + (["-c", self.cfg_path] if config else []) + [str(a) for a in args]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           env=self._env(env), cwd=self.tmp,
                           stdin=subprocess.DEVNULL if input is None else None, input=input)
        bad = sanitizer_lines(r.stderr)
        assert not bad, f"sanitizer report from CLI {args}:\n{r.stderr}"
        return r

    def cli_ok(self, *args, **kw):
        r = self.cli(*args, **kw)
        assert r.returncode == 0, f"headscale {' '.join(map(str, args))} → rc {r.returncode}\n" \
                                  f"stdout: {r.stdout}\nstderr: {r.stderr}"
        return r

    def cli_json(self, *args, **kw):
        r = self.cli_ok("-o", "json", *args, **kw)
        try:
            return json.loads(r.stdout)
        except ValueError as e:
            raise AssertionError(f"not JSON from headscale -o json {args}: {r.stdout!r}") from e

    # ---- REST ----
    def api_full(self, method, path, json_body=None, key=DEFAULT_KEY, raw_body=None,
                 headers=None, unix=False):
        hdrs = dict(headers or {})
        if key is DEFAULT_KEY:
            key = self.api_key
        if key is not None and not unix:
            hdrs["Authorization"] = f"Bearer {key}"
        body = raw_body
        if json_body is not None:
            body = json.dumps(json_body).encode()
        conn = (UnixHTTPConnection(self.socket_path) if unix
                else http.client.HTTPConnection("127.0.0.1", self.port, timeout=10))
        return http_request(conn, method, path, body, hdrs)

    def api(self, method, path, json=None, key=DEFAULT_KEY, raw_body=None, headers=None,
            unix=False):
        st, _, body = self.api_full(method, path, json, key, raw_body, headers, unix)
        return st, body

    def api_ok(self, method, path, json=None, **kw):
        st, body = self.api(method, path, json, **kw)
        assert st == 200, f"{method} {path} {json!r} → {st} {body!r}"
        return body

    def ensure_api_key(self):
        """Creates the admin API key used by .api() (via the CLI over the unix socket)."""
        r = self.cli_ok("apikeys", "create", "-e", "1d")
        m = API_KEY_RE.search(r.stdout)
        assert m, f"no API key in output: {r.stdout!r}"
        self.api_key = m.group(0)
        return self.api_key

    # ---- convenience ----
    def create_user(self, name=None):
        name = name or unique()
        body = self.api_ok("POST", "/api/v1/user", {"name": name})
        return body["user"]

    def users(self):
        return self.api_ok("GET", "/api/v1/user")["users"]

    def user_names(self):
        return [u["name"] for u in self.users()]

    def preauthkeys(self):
        return self.api_ok("GET", "/api/v1/preauthkey")["preAuthKeys"]

    def apikeys(self):
        return self.api_ok("GET", "/api/v1/apikey")["apiKeys"]

    def apikeys_state(self):
        """API keys without lastSeen (which moves whenever the harness key is used)."""
        return sorted((k["id"], k["prefix"], k["expiration"], k["createdAt"])
                      for k in self.apikeys())

    def policy(self):
        return self.api("GET", "/api/v1/policy")


def assert_problem(status, body, expect, what=""):
    """A rejected request: the expected status and a JSON error body that says something."""
    assert status == expect, f"{what}: expected {expect}, got {status} {body!r}"
    assert isinstance(body, dict), f"{what}: error body is not JSON: {body!r}"
    text = " ".join(str(body.get(k, "")) for k in ("title", "detail", "message", "error"))
    assert text.strip(), f"{what}: error body says nothing: {body!r}"


def assert_cli_error(r, *needles, what=""):
    """A rejected CLI command: rc != 0, an 'Error' on stderr, and nothing claimed on stdout."""
    assert r.returncode != 0, f"{what}: expected failure, got rc 0\nstdout: {r.stdout}"
    err = r.stderr
    assert err.strip(), f"{what}: no message on stderr (stdout: {r.stdout!r})"
    for n in needles:
        assert n.lower() in (err + r.stdout).lower(), \
            f"{what}: {n!r} not in output\nstderr: {err}\nstdout: {r.stdout}"
