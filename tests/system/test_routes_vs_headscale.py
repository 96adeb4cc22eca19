"""Routes side by side with headscale v0.29.3 (the binary tests/lib/install-headscale.sh builds; set
HEADSCALE_REF to another path, or the test is skipped without one): the same steps on both
servers, through REST and the Noise test client, and the answers compared — node JSON
(approvedRoutes, availableRoutes, subnetRoutes in lists, by id and after approve_routes),
exit-route pairing, approving unannounced routes, bad input, autoApprovers.

Differences we keep on purpose are asserted as such: a prefix with host bits set
("10.9.0.1/24") is refused here (headscale stores it as typed, and it then matches no
announced route), and a malformed prefix is a 400 here where headscale 0.29 answers 500."""

import http.client
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from helpers import free_port, unique
from noise_client import ControlClient

REPO = Path(__file__).resolve().parents[2]
CANDIDATES = [os.environ.get("HEADSCALE_REF", ""),
              str(REPO / ".cache/headscale/v0.29.3/headscale")]
REF_BIN = next((p for p in CANDIDATES if p and os.access(p, os.X_OK)), None)
OURS_BIN = os.environ.get("HS_BIN", str(REPO / "build/headscale"))

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

pytestmark = pytest.mark.skipif(REF_BIN is None, reason="no headscale v0.29.3 binary")


class Side:
    """One server (ours or headscale's) on loopback, SQLite, policy in the database."""

    def __init__(self, name, binary):
        self.name, self.binary = name, binary
        self.tmp = tempfile.mkdtemp(prefix=f"rt-{name}-")
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
        Path(self.cfg).write_text(json.dumps(cfg))  # JSON is YAML to both
        self.log = open(os.path.join(self.tmp, "server.log"), "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEADSCALE_")}
        self.proc = subprocess.Popen([binary, "-c", self.cfg, "serve"], stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=self.tmp, env=env,
                                     stdin=subprocess.DEVNULL)
        self._wait_healthy()
        out = subprocess.run([binary, "-c", self.cfg, "apikeys", "create", "-e", "1d"],
                             capture_output=True, text=True, timeout=30, cwd=self.tmp, env=env)
        assert out.returncode == 0, out.stderr
        self.key = out.stdout.strip().splitlines()[-1].strip()

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

    def api(self, method, path, body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Authorization": f"Bearer {self.key}"}
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        c.request(method, path, data, hdrs)
        r = c.getresponse()
        raw = r.read()
        c.close()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, raw.decode("utf-8", "replace")

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


@pytest.fixture(scope="module")
def sides():
    made = []
    try:
        made.append(Side("ours", OURS_BIN))
        made.append(Side("headscale", REF_BIN))
        yield made
    finally:
        for s in made:
            s.stop()


def user_key(side, name):
    uid = side.ok("POST", "/api/v1/user", {"name": name})["user"]["id"]
    k = side.ok("POST", "/api/v1/preauthkey",
                {"user": uid, "reusable": True, "expiration": "2099-01-01T00:00:00Z"})
    return k["preAuthKey"]["key"]


def router(side, key, routes, hostname):
    c = ControlClient(side.port)
    c.hostinfo = {"Hostname": hostname, "OS": "linux", "RoutableIPs": routes}
    st, _, resp = c.register(auth_key=key)
    assert st == 200 and resp.get("MachineAuthorized"), (side.name, st, resp)
    c.id = c.open_stream(require_peers=False)["Node"]["ID"]
    return c


def route_fields(node):
    return {k: node[k] for k in ("approvedRoutes", "availableRoutes", "subnetRoutes")}


def listed(side, node_id):
    return next(n for n in side.ok("GET", "/api/v1/node")["nodes"] if n["id"] == str(node_id))


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


def test_routes_side_by_side(sides):
    user = unique("rt")
    host = unique("rh")
    keys = both(sides, lambda s: user_key(s, user))
    clients = {s.name: router(s, keys[s.name], ["10.9.0.0/24", "0.0.0.0/0", "::/0"], host)
               for s in sides}
    ids = {name: c.id for name, c in clients.items()}
    try:
        # the node object: same members, same route fields
        got = both(sides, lambda s: listed(s, ids[s.name]))
        assert set(got["ours"]) == set(got["headscale"]), (set(got["ours"]) ^
                                                            set(got["headscale"]))
        same({k: route_fields(v) for k, v in got.items()}, "announced, nothing approved")

        def approve(routes):
            return lambda s: route_fields(s.ok("POST", f"/api/v1/node/{ids[s.name]}/approve_routes",
                                               {"routes": routes})["node"])
        r = same(both(sides, approve(["10.9.0.0/24", "::/0"])), "approve subnet + one exit")
        assert r["approvedRoutes"] == ["0.0.0.0/0", "10.9.0.0/24", "::/0"], r
        assert r["subnetRoutes"] == ["10.9.0.0/24"]
        r = same(both(sides, lambda s: route_fields(listed(s, ids[s.name]))), "list")
        assert r["subnetRoutes"] == ["10.9.0.0/24", "0.0.0.0/0", "::/0"], r
        same(both(sides, lambda s: route_fields(
            s.ok("GET", f"/api/v1/node/{ids[s.name]}")["node"])), "get by id")
        same(both(sides, approve(["0.0.0.0/0"])), "one exit route alone")
        r = same(both(sides, approve(["192.168.9.0/24", "10.9.0.0/24"])), "unannounced route")
        assert r["approvedRoutes"] == ["10.9.0.0/24", "192.168.9.0/24"], r
        # malformed: both refuse and keep what they had (status differs: 400 vs 0.29's 500)
        for bad in ["banana", "10.9.0.0/33"]:
            st = both(sides, lambda s: s.api("POST", f"/api/v1/node/{ids[s.name]}/approve_routes",
                                             {"routes": ["10.8.0.0/24", bad]})[0])
            assert st["ours"] == 400 and st["headscale"] >= 400, (bad, st)
        same(both(sides, lambda s: listed(s, ids[s.name])["approvedRoutes"]), "unchanged")
        # host bits set: headscale stores it as typed, we refuse
        st = both(sides, lambda s: s.api("POST", f"/api/v1/node/{ids[s.name]}/approve_routes",
                                         {"routes": ["10.9.0.1/24"]})[0])
        assert st == {"ours": 400, "headscale": 200}, st
        r = same(both(sides, approve([])), "cleared")
        assert r["approvedRoutes"] == [] and r["subnetRoutes"] == []
    finally:
        for c in clients.values():
            c.close()


def test_auto_approvers_side_by_side(sides):
    alice, bob = unique("al"), unique("bo")
    keys = {who: both(sides, lambda s, w=who: user_key(s, w)) for who in (alice, bob)}
    policy = json.dumps({
        "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
        "autoApprovers": {"routes": {"10.40.0.0/16": [f"{alice}@"]},
                          "exitNode": [f"{alice}@"]},
    })
    both(sides, lambda s: s.ok("PUT", "/api/v1/policy", {"policy": policy}))
    ha, hb = unique("ha"), unique("hb")
    a = {s.name: router(s, keys[alice][s.name], ["10.40.1.0/24", "10.50.0.0/24", "0.0.0.0/0",
                                                 "::/0"], ha) for s in sides}
    b = {s.name: router(s, keys[bob][s.name], ["10.40.2.0/24"], hb) for s in sides}
    try:
        poll_same(sides, lambda s: listed(s, a[s.name].id)["approvedRoutes"],
                  ["0.0.0.0/0", "10.40.1.0/24", "::/0"], "alice's routes auto-approved")
        same(both(sides, lambda s: route_fields(listed(s, a[s.name].id))), "alice's node")
        same(both(sides, lambda s: route_fields(
            s.ok("GET", f"/api/v1/node/{a[s.name].id}")["node"])), "alice's node, stored")
        r = same(both(sides, lambda s: route_fields(listed(s, b[s.name].id))), "bob: pending")
        assert r["approvedRoutes"] == [], r
    finally:
        for c in list(a.values()) + list(b.values()):
            c.close()
