"""Our server and a real headscale v0.29.3 side by side, for the tests that compare the two:
each Side is one server on loopback with SQLite and the policy in the database, started from
the same config, with an admin API key. The reference binary is the one
tests/lib/install-headscale.sh builds (or $HEADSCALE_REF); without one, `needs_ref` skips.

A test module takes the `sides` fixture (import it from here): a fresh pair per module and
database (ours on SQLite or PostgreSQL as --db says, headscale on SQLite), ours first, so the two databases see the same requests in the same order and hand out the same
ids."""

import http.client
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from helpers import SANITIZER_PATTERNS, free_port

REPO = Path(__file__).resolve().parents[2]
CANDIDATES = [os.environ.get("HEADSCALE_REF", ""),
              str(REPO / ".cache/headscale/v0.29.3/headscale")]
REF_BIN = next((p for p in CANDIDATES if p and os.access(p, os.X_OK)), None)
OURS_BIN = os.environ.get("HS_BIN", str(REPO / "build/headscale"))

needs_ref = pytest.mark.skipif(REF_BIN is None, reason="no headscale v0.29.3 binary "
                               "(tests/lib/install-headscale.sh builds it)")

DERP_YAML = """regions:
  900:
    regionid: 900
    regioncode: t
    regionname: loopback
    nodes:
      - name: 900a
        regionid: 900
        hostname: 127.0.0.1
        ipv4: 127.0.0.1
        ipv6: none
        stunport: -1
        derpport: {port}
"""


class Side:
    """One server (ours or headscale's) on loopback, policy in the database; SQLite, or for
    ours a fresh database on the session's PostgreSQL when db (conftest's fixture) says so."""

    pg = pg_dbname = None  # also for subclasses with a start of their own

    def __init__(self, name, binary, db=None, policy_file=None):
        self.name, self.binary = name, binary
        self.pg, self.pg_dbname = (db.pg, db.pg.create_db()) if db and db.kind == "postgres" \
            else (None, None)
        self.tmp = tempfile.mkdtemp(prefix=f"ref-{name}-")
        self.port = free_port()
        self.cfg = os.path.join(self.tmp, "config.yaml")
        derp = os.path.join(self.tmp, "derp.yaml")
        Path(derp).write_text(DERP_YAML.format(port=free_port()))
        cfg = {
            "server_url": f"http://127.0.0.1:{self.port}",
            "listen_addr": f"127.0.0.1:{self.port}",
            "metrics_listen_addr": f"127.0.0.1:{free_port()}",
            "grpc_listen_addr": f"127.0.0.1:{free_port()}",
            "noise": {"private_key_path": os.path.join(self.tmp, "noise.key")},
            "prefixes": {"v4": "100.64.0.0/10", "v6": "fd7a:115c:a1e0::/48",
                         "allocation": "sequential"},
            "derp": {"server": {"enabled": False}, "urls": [], "paths": [derp],
                     "auto_update_enabled": False, "update_frequency": "24h"},
            "disable_check_updates": True,
            "unix_socket": os.path.join(self.tmp, "hs.sock"),
            "unix_socket_permission": "0770",
            "log": {"level": "info", "format": "text"},
            "policy": {"mode": "database"},
            "dns": {"magic_dns": True, "base_domain": "example.com",
                    "override_local_dns": False, "nameservers": {"global": []}},
            "database": {"type": "sqlite",
                         "sqlite": {"path": os.path.join(self.tmp, "db.sqlite"),
                                    "write_ahead_log": True}},
        }
        if name == "ours":
            del cfg["grpc_listen_addr"]
        if policy_file is not None:  # the policy from a file ("" for none): file mode
            cfg["policy"] = {"mode": "file", "path": policy_file}
        if self.pg:
            cfg["database"] = {"type": "postgres",
                               "postgres": {"host": self.pg.host, "port": self.pg.port,
                                            "name": self.pg_dbname, "user": "postgres",
                                            "pass": ""}}
        self._start(binary, cfg)

    def _start(self, binary, cfg):
        """Writes cfg as the config, starts the server on it, waits until it is healthy and
        makes the admin API key."""
        Path(self.cfg).write_text(json.dumps(cfg))  # JSON is YAML to both
        self.log = open(os.path.join(self.tmp, "server.log"), "ab")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HEADSCALE_")}
        self.proc = subprocess.Popen([binary, "-c", self.cfg, "serve"], stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=self.tmp, env=self.env,
                                     stdin=subprocess.DEVNULL)
        self._wait_healthy()
        out = self.cli("apikeys", "create", "-e", "1d")
        assert out.returncode == 0, out.stderr
        self.key = out.stdout.strip().splitlines()[-1].strip()

    def cli(self, *args):
        return subprocess.run([self.binary, "-c", self.cfg, *args], capture_output=True,
                              text=True, timeout=30, cwd=self.tmp, env=self.env)

    def _wait_healthy(self):
        end = time.monotonic() + 60
        while time.monotonic() < end:
            assert self.proc.poll() is None, f"{self.name} exited at start"
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/health")
                ok = c.getresponse().status == 200
                c.close()
                if ok:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: not healthy")

    def request(self, method, path, data=None, headers=None, auth=True):
        """One request with raw bytes → (status, content type, body parsed as JSON, or its
        text when it is not JSON)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        hdrs = {"Authorization": f"Bearer {self.key}"} if auth else {}
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        c.request(method, path, data, hdrs)
        r = c.getresponse()
        raw = r.read()
        ctype = r.getheader("Content-Type", "")
        c.close()
        try:
            return r.status, ctype, json.loads(raw)
        except ValueError:
            return r.status, ctype, raw.decode("utf-8", "replace")

    def api(self, method, path, body=None):
        st, _, resp = self.request(method, path,
                                   json.dumps(body).encode() if body is not None else None)
        return st, resp

    def ok(self, method, path, body=None):
        st, resp = self.api(method, path, body)
        assert st == 200, f"{self.name}: {method} {path} {body!r} → {st} {resp!r}"
        return resp

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        if self.pg:
            self.pg.psql(f'DROP DATABASE IF EXISTS "{self.pg_dbname}"', check=False)
        log = Path(self.tmp, "server.log").read_text(errors="replace")
        found = [p for p in SANITIZER_PATTERNS if p in log]
        assert not found, f"{self.name}: sanitizer report in {self.tmp}/server.log: {found}"
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def sides(db):
    """Ours on the module's database (--db), headscale on SQLite."""
    made = []
    try:
        made.append(Side("ours", OURS_BIN, db))
        made.append(Side("headscale", REF_BIN))
        yield made
    finally:
        for s in made:
            s.stop()


def both(sides, fn):
    """fn(side) on each → {name: result}."""
    return {s.name: fn(s) for s in sides}


def same(got, what):
    assert got["ours"] == got["headscale"], f"{what}: ours {got['ours']!r}, " \
                                            f"headscale {got['headscale']!r}"
    return got["ours"]


def poll_same(sides, fn, want, what, timeout=10):
    end = time.monotonic() + timeout
    while True:
        got = both(sides, fn)
        if all(v == want for v in got.values()):
            return
        if time.monotonic() > end:
            raise AssertionError(f"{what}: wanted {want!r} from both, got {got!r}")
        time.sleep(0.1)
