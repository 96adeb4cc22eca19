"""Harness for the system tests.

Fixtures:
  db              "sqlite" or "postgres" (module-scoped parameter; --db=sqlite|postgres|both)
  pg_cluster      one throwaway PostgreSQL per session (tests/lib/pgtmp.sh), started lazily
  mserver         one running server per test module and database, with an admin API key;
                  tests sharing it use unique names, so they do not depend on order
  server_factory  make(**kw) → a fresh Server of the test's own (started unless start=False)

The binary comes from $HS_BIN (default /work/main/build/headscale). When a test fails, the
log of every server alive during the test is printed; a sanitizer report in a server log fails
the test that was running.

No secret in a server log: every key and secret the tests make or read through the harness
(pre-auth and API keys in CLI output and API answers, the server's Noise and DERP private keys,
machine and DERP private keys of our Python clients, OIDC client secrets) is collected, and
each server's log is searched for them, and for any "privkey:<hex>", when the server is cleaned
up (its directory goes then). A find fails the session, naming a kept copy of the log and the
line."""

import json
import os
import re
import shutil
import tempfile

import pytest

import derp_client
import helpers
import noise_client
import tailnet
from helpers import Db, PgCluster, Server


def pytest_addoption(parser):
    parser.addoption("--db", default="both", choices=("sqlite", "postgres", "both"),
                     help="database backends to run the system tests on")


def _dbs(config):
    opt = config.getoption("--db")
    return ["sqlite", "postgres"] if opt == "both" else [opt]


def pytest_generate_tests(metafunc):
    if "db" in metafunc.fixturenames:
        metafunc.parametrize("db", _dbs(metafunc.config), indirect=True, scope="module")


def pytest_sessionstart(session):
    if not os.access(helpers.HS_BIN, os.X_OK):
        raise pytest.UsageError(f"headscale binary not found or not executable: {helpers.HS_BIN}"
                                " (set HS_BIN)")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory):
    cluster = PgCluster(str(tmp_path_factory.mktemp("pg")))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def db(request):
    kind = request.param
    if kind == "postgres":
        return Db("postgres", request.getfixturevalue("pg_cluster"))
    return Db("sqlite")


@pytest.fixture(scope="module")
def mserver(db):
    s = Server(db)
    try:
        s.start()
        s.ensure_api_key()
        yield s
        s.stop(check=True)
    finally:
        s.cleanup()


def _failed(request):
    rep = getattr(request.node, "rep_call", None)
    return rep is not None and rep.failed


@pytest.fixture
def server_factory(db, request):
    made = []

    def make(start=True, api_key=True, db_override=None, **kw):
        s = Server(db_override or db, **kw)
        made.append(s)
        if start:
            s.start()
            if api_key:
                s.ensure_api_key()
        return s

    yield make
    errors = []
    for s in made:
        if _failed(request):
            print(f"\n===== server log {s.tmp} ({s.db.kind}), last 200 lines =====")
            print(s.log_tail(200))
        try:
            s.stop(check=True)
        except AssertionError as e:
            errors.append(str(e))
        finally:
            s.cleanup()
    assert not errors, "\n\n".join(errors)


@pytest.fixture(autouse=True)
def _server_watch(request):
    """Remembers where each live server's log stood before the test; afterwards prints the new
    part when the test failed, and fails on any sanitizer line that appeared."""
    start = {id(s): len(s.log_text()) for s in helpers.LIVE_SERVERS}
    yield
    failed = _failed(request)
    bad, died = [], []
    for s in list(helpers.LIVE_SERVERS):
        text = s.log_text()[start.get(id(s), 0):]
        if failed:
            lines = text.splitlines()[-200:]
            print(f"\n===== server log {s.tmp} ({s.db.kind}), last {len(lines)} lines "
                  "of this test =====")
            print("\n".join(lines))
        bad += helpers.sanitizer_lines(text)
        if s.proc is not None and s.proc.poll() is not None:
            # It died under this test. Restart it on the same data so that the tests after
            # this one (sharing a module server) still run, and fail this one.
            died.append(f"headscale serve ({s.db.kind}) died with rc {s.proc.returncode} "
                        f"during this test; log:\n" + "\n".join(text.splitlines()[-40:]))
            s.proc = None
            try:
                s.start()
            except AssertionError as e:
                died.append(f"restart failed: {e}")
    assert not died, "\n\n".join(died)
    assert not bad, "sanitizer report in a server log during this test:\n" + "\n".join(bad)


# ---- test_tailnet.py (real Tailscale clients in a network namespace; see tailnet.py) ----

def pytest_configure(config):
    config.addinivalue_line(
        "markers", "smoke: the tailnet subset (login, peers, ping) run on every client version "
        "of $HS_TS_VERSIONS; the other tailnet tests run on the first version only")


# ---- no secret in a server log (see the module docstring) ----

_HEX = re.compile(r"[0-9a-fA-F]{16,}")
_HSKEY = re.compile(r"hskey-(?:auth|api)-[0-9a-f]{12}-([0-9a-f]{64})")
_KEY_FIELD = re.compile(r'"key"\s*:\s*"([0-9a-fA-F]{16,})"')  # 0.22.3's pre-auth keys
_PRIVKEY = re.compile(r"privkey:[0-9a-fA-F]{16}")
# headscale's own console lines (a reference server run on the same files): not ours to judge
_ZEROLOG_LINE = re.compile(r"^\S+ (?:TRC|DBG|INF|WRN|ERR|FTL|PNC) ")


class SecretScan:
    """The secrets seen so far, and what the logs gave away. A log is searched whole: each run
    of hex digits is looked up in a set, by every length a hex secret has (a secret logged
    inside a longer run is still found), the few other secrets by substring."""

    def __init__(self):
        self.hex = set()
        self.lengths = set()
        self.other = set()
        self.finds = []
        self.kept = None  # where logs with a find are copied (made at the first)
        self.copies = {}

    def add(self, secret):
        """Hex of 16 digits or more, or any other text of 8 characters or more (shorter ones,
        test placeholders, would match ordinary words)."""
        if not isinstance(secret, str):
            return
        if len(secret) >= 16 and _HEX.fullmatch(secret):
            self.hex.add(secret.lower())
            self.lengths.add(len(secret))
        elif len(secret) >= 8 and not _HEX.fullmatch(secret):
            self.other.add(secret)

    def add_from_text(self, text):
        if not isinstance(text, str):
            text = json.dumps(text) if text is not None else ""
        if "hskey-" in text:
            for m in _HSKEY.finditer(text):
                self.add(m.group(1))
        if '"key"' in text:
            for m in _KEY_FIELD.finditer(text):
                self.add(m.group(1))

    def add_file(self, path, key=False):
        """A secret kept in a file; key: a private key as the server writes it, privkey:<hex>."""
        try:
            with open(path or "") as f:
                text = f.read().strip()
        except (OSError, UnicodeDecodeError):
            return
        self.add(text.split(":", 1)[-1] if key else text)

    def _hex_secret_in(self, run):
        run = run.lower()
        return any(run[i:i + n] in self.hex
                   for n in self.lengths for i in range(len(run) - n + 1))

    def _where(self, text):
        """Offsets in text where a secret or a privkey:<hex> starts."""
        at = [m.start() for m in _PRIVKEY.finditer(text)]
        at += [m.start() for m in _HEX.finditer(text) if self._hex_secret_in(m.group(0))]
        for secret in self.other:
            i = text.find(secret)
            while i >= 0:
                at.append(i)
                i = text.find(secret, i + 1)
        return at

    def scan(self, path):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            return
        lines = {}
        for pos in self._where(text):
            start = text.rfind("\n", 0, pos) + 1
            end = text.find("\n", pos)
            line = text[start:end if end >= 0 else len(text)]
            if not _ZEROLOG_LINE.match(line):
                lines.setdefault(text.count("\n", 0, start) + 1, line)
        for no in sorted(lines):
            self._keep(path, no, lines[no])

    def _keep(self, path, no, line):
        if self.kept is None:
            self.kept = tempfile.mkdtemp(prefix="hs-secret-logs-", dir="/tmp")
        if path not in self.copies:
            self.copies[path] = os.path.join(self.kept,
                                             f"{len(self.copies)}-{os.path.basename(path)}")
            shutil.copy(path, self.copies[path])
        shown = _HEX.sub(lambda m: m.group(0)[:8] + "…", line.strip())
        for secret in self.other:
            shown = shown.replace(secret, secret[:4] + "…")
        self.finds.append(f"{self.copies[path]}:{no}: {shown[:300]}")

    def server_secrets(self, server):
        cfg = server.config or {}
        self.add_file((cfg.get("noise") or {}).get("private_key_path"), key=True)
        derp_server = (cfg.get("derp") or {}).get("server") or {}
        self.add_file(derp_server.get("private_key_path")
                      or os.path.join(server.tmp, "derp_server_private.key"), key=True)
        oidc = cfg.get("oidc") or {}
        self.add(oidc.get("client_secret"))
        self.add_file(oidc.get("client_secret_path"))
        for k, v in server.env.items():
            if "SECRET" in k:
                self.add(v)


SECRETS = SecretScan()


def _collect_output(fn, pick):
    def wrapped(*args, **kw):
        out = fn(*args, **kw)
        SECRETS.add_from_text(pick(out))
        return out
    return wrapped


def _collect_key(fn, pick):
    def wrapped(*args, **kw):
        out = fn(*args, **kw)
        SECRETS.add(pick(out).hex())
        return out
    return wrapped


def _scan_then(cleanup):
    def wrapped(self):
        if self.binary == helpers.HS_BIN:
            SECRETS.server_secrets(self)
            SECRETS.scan(self.log_path)
        return cleanup(self)
    return wrapped


helpers.Server.cli = _collect_output(helpers.Server.cli, lambda r: r.stdout)
helpers.http_request = _collect_output(helpers.http_request, lambda r: r[2])
tailnet.Namespace.http = _collect_output(
    tailnet.Namespace.http, lambda r: r[2].decode("utf-8", "replace") if r[2] else "")
noise_client.new_private_key = _collect_key(noise_client.new_private_key,
                                            lambda k: k.private_bytes_raw())
derp_client.keypair = _collect_key(derp_client.keypair, lambda pair: pair[1])
helpers.Server.cleanup = _scan_then(helpers.Server.cleanup)


def pytest_sessionfinish(session, exitstatus):
    for s in list(helpers.LIVE_SERVERS):
        if s.binary == helpers.HS_BIN:
            SECRETS.server_secrets(s)
            SECRETS.scan(s.log_path)
    if not SECRETS.finds:
        return
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    msg = ("a server log holds a secret the tests made (copies kept):\n"
           + "\n".join(SECRETS.finds[:50]))
    if tr is not None:
        tr.write_sep("=", "secret in a server log", red=True)
        tr.write_line(msg)
    else:
        print(msg)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
