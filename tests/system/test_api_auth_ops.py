"""Pending logins and addresses, operator side: POST /api/v1/auth/approve and /reject,
/api/v1/debug/node (a made-up pending login), /api/v1/node/backfillips, and the CLI commands
over them (auth approve|reject, debug create-node, nodes backfillips).

The pending logins here come from `debug create-node`; test_tailnet.py has a real client
logging in interactively and being approved or refused. Where headscale v0.29.3 is built
(tests/lib/install-headscale.sh), the same calls go to it too and the answers are compared."""

import json
import secrets

import pytest

from helpers import assert_cli_error, unique
from refserver import needs_ref, sides  # noqa: F401  (fixture)

ZERO_TIME = "0001-01-01T00:00:00Z"


def auth_id():
    return "hskey-authreq-" + secrets.token_hex(12)


def debug_node(server, user, key=None, name=None, routes=()):
    key = key or auth_id()
    body = server.api_ok("POST", "/api/v1/debug/node",
                         {"user": user, "key": key, "name": name or unique("dbg"),
                          "routes": list(routes)})
    return key, body["node"]


def node_names(server):
    return {n["name"] for n in server.api_ok("GET", "/api/v1/node")["nodes"]}


@pytest.fixture(scope="module")
def alice(mserver):
    name = unique("alice")
    mserver.api_ok("POST", "/api/v1/user", {"name": name})
    return name


# ---------------------------------------------------------------- debug/node

def test_debug_node_echoes_the_node_to_be(mserver, alice):
    name = unique("dbg")
    key, n = debug_node(mserver, alice, name=name, routes=["10.9.0.0/24"])
    assert n["id"] == "0" and n["name"] == name and n["givenName"] == "", n
    assert n["user"]["name"] == alice, n
    assert n["availableRoutes"] == ["10.9.0.0/24"] and n["approvedRoutes"] == [], n
    assert n["ipAddresses"] == [] and n["online"] is False, n
    assert n["lastSeen"] == n["expiry"] == n["createdAt"] == ZERO_TIME, n
    assert n["registerMethod"] == "REGISTER_METHOD_UNSPECIFIED", n
    assert n["machineKey"].startswith("mkey:") and n["nodeKey"].startswith("nodekey:"), n
    assert name not in node_names(mserver), "a debug node is only pending until registered"
    reg = mserver.api_ok("POST", "/api/v1/auth/register", {"user": alice, "authId": key})
    assert reg["node"]["name"] == name and reg["node"]["machineKey"] == n["machineKey"], reg
    assert reg["node"]["registerMethod"] == "REGISTER_METHOD_CLI", reg
    assert name in node_names(mserver)


@pytest.mark.parametrize("body, status", [
    ({"key": "hskey-authreq-" + "a" * 24, "name": "x"}, 400),                 # no user
    ({"user": "nobody-here", "key": "hskey-authreq-" + "b" * 24, "name": "x"}, 404),
    ({"user": "ALICE", "key": "bad", "name": "x"}, 400),
    ({"user": "ALICE", "key": "hskey-authreq-" + "c" * 23, "name": "x"}, 400),        # short
    ({"user": "ALICE", "key": "hskey-authreq-" + "c" * 23 + "!", "name": "x"}, 400),  # not URL-safe
    ({"user": "ALICE", "key": "hskey-authreq-" + "d" * 24, "name": "x", "routes": ["junk"]}, 400),
    ({"user": "ALICE", "key": "hskey-authreq-" + "e" * 24, "name": "x", "routes": "10.0.0.0/8"},
     400),
])
def test_debug_node_bad_input(mserver, alice, body, status):
    body = {k: alice if v == "ALICE" else v for k, v in body.items()}
    st, resp = mserver.api("POST", "/api/v1/debug/node", body)
    assert st == status, (st, resp)
    # nothing was left pending under the id
    st, _ = mserver.api("POST", "/api/v1/auth/reject", {"authId": body["key"]})
    assert st in (400, 404), st


def test_debug_node_id_taken(mserver, alice):
    key, _ = debug_node(mserver, alice)
    st, resp = mserver.api("POST", "/api/v1/debug/node",
                           {"user": alice, "key": key, "name": "again"})
    assert st == 409, (st, resp)


# ---------------------------------------------------------------- approve / reject

@pytest.mark.parametrize("path", ["/api/v1/auth/approve", "/api/v1/auth/reject"])
@pytest.mark.parametrize("body", [{}, {"authId": "nope"}, {"authId": "hskey-authreq-x"},
                                  {"authId": 5}])
def test_verdict_bad_id(mserver, path, body):
    st, resp = mserver.api("POST", path, body)
    assert st == 400, (st, resp)


@pytest.mark.parametrize("path", ["/api/v1/auth/approve", "/api/v1/auth/reject"])
def test_verdict_unknown_id(mserver, path):
    st, resp = mserver.api("POST", path, {"authId": auth_id()})
    assert st == 404, (st, resp)


def test_reject_is_final(mserver, alice):
    key, n = debug_node(mserver, alice)
    assert mserver.api_ok("POST", "/api/v1/auth/reject", {"authId": key}) == {}
    assert mserver.api_ok("POST", "/api/v1/auth/reject", {"authId": key}) == {}  # again: fine
    for path, body in [("/api/v1/auth/register", {"user": alice, "authId": key}),
                       ("/api/v1/auth/approve", {"authId": key})]:
        st, resp = mserver.api("POST", path, body)
        assert st == 404, (path, st, resp)
    st, _ = mserver.api("POST", f"/api/v1/node/register?user={alice}&key={key}")
    assert st == 404
    assert n["name"] not in node_names(mserver)


def test_approve_new_machine_needs_a_user(mserver, alice):
    key, n = debug_node(mserver, alice)
    st, resp = mserver.api("POST", "/api/v1/auth/approve", {"authId": key})
    assert st == 400, (st, resp)
    assert n["name"] not in node_names(mserver)
    # still pending: register completes it
    mserver.api_ok("POST", "/api/v1/auth/register", {"user": alice, "authId": key})
    assert n["name"] in node_names(mserver)
    st, _ = mserver.api("POST", "/api/v1/auth/reject", {"authId": key})
    assert st == 404, "a completed login cannot be refused afterwards"


# ---------------------------------------------------------------- CLI

def test_cli_auth_verdicts(mserver, alice):
    key, n = debug_node(mserver, alice)
    assert mserver.cli_json("auth", "reject", "--auth-id", key) == {}
    r = mserver.cli("auth", "reject", "--auth-id", auth_id())
    assert r.returncode != 0 and "no pending login" in r.stderr, r.stderr
    key2, _ = debug_node(mserver, alice)
    r = mserver.cli("auth", "approve", "--auth-id", key2)
    assert r.returncode != 0 and "auth register" in r.stderr, r.stderr
    assert_cli_error(mserver.cli("auth", "approve"), "auth-id")
    assert_cli_error(mserver.cli("auth", "reject"), "auth-id")


def test_cli_debug_create_node(mserver, alice):
    key, name = auth_id(), unique("cli-dbg")
    n = mserver.cli_json("debug", "create-node", "-u", alice, "-k", key, "--name", name,
                         "-r", "10.1.0.0/24,10.2.0.0/24", "-r", "10.3.0.0/24")
    assert n["name"] == name and "id" not in n, n  # not a node yet: id 0, left out
    assert n["available_routes"] == ["10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/24"], n
    r = mserver.cli_ok("auth", "register", "--auth-id", key, "-u", alice)
    assert name in r.stdout or name in node_names(mserver), r.stdout
    assert name in node_names(mserver)
    assert_cli_error(mserver.cli("debug", "create-node", "-u", alice, "--name", "x"), "key")


# ---------------------------------------------------------------- backfillips

def node_ips(server, name):
    for n in server.api_ok("GET", "/api/v1/node")["nodes"]:
        if n["name"] == name:
            return n["ipAddresses"]
    raise AssertionError(f"no node {name}")


def register_debug(server, user, name):
    key, _ = debug_node(server, user, name=name)
    server.api_ok("POST", "/api/v1/auth/register", {"user": user, "authId": key})


def test_backfill_needs_confirmation(mserver):
    for q in ("", "?confirmed=false"):
        st, resp = mserver.api("POST", "/api/v1/node/backfillips" + q)
        assert st == 400, (q, st, resp)
    st, _ = mserver.api("POST", "/api/v1/node/backfillips?confirmed=maybe")
    assert st == 400
    assert mserver.api_ok("POST", "/api/v1/node/backfillips?confirmed=true") == {"changes": []}
    r = mserver.cli("nodes", "backfillips")  # no terminal, no --force
    assert r.returncode != 0 and "--force" in r.stderr, r.stderr


def test_backfill_after_prefix_changes(server_factory):
    s = server_factory(overrides={"prefixes": {"v6": ""}})  # "" turns a family off
    user = unique("bf")
    s.api_ok("POST", "/api/v1/user", {"name": user})
    names = [unique("bf"), unique("bf")]
    for name in names:
        register_debug(s, user, name)
    for name in names:
        ips = node_ips(s, name)
        assert len(ips) == 1 and ":" not in ips[0], ips
    s.stop()
    s.config["prefixes"]["v6"] = "fd7a:115c:a1e0::/48"
    s.write_config()
    s.start()
    got = s.cli_json("nodes", "backfillips", "--force")
    assert len(got["changes"]) == 2, got
    v6 = [next(ip for ip in node_ips(s, n) if ":" in ip) for n in names]
    assert len(set(v6)) == 2 and all(ip.startswith("fd7a:115c:a1e0:") for ip in v6), v6
    assert s.api_ok("POST", "/api/v1/node/backfillips?confirmed=true") == {"changes": []}
    # v4 prefix gone: v4 addresses are taken away, v6 stays
    s.stop()
    s.config["prefixes"]["v4"] = ""
    s.write_config()
    s.start()
    got = s.api_ok("POST", "/api/v1/node/backfillips?confirmed=true")
    assert len(got["changes"]) == 2, got
    assert [node_ips(s, n) for n in names] == [[ip] for ip in v6]


# ---------------------------------------------------------------- side by side with headscale

def normalised(node):
    """A node answer with what differs by nature blanked: random keys, the user's creation."""
    n = json.loads(json.dumps(node))
    for k in ("machineKey", "nodeKey"):
        n[k] = n[k].split(":")[0] + ":<random>"
    if n.get("user"):
        n["user"]["createdAt"] = "<time>"
    return n


@needs_ref
def test_same_answers_as_headscale(sides):  # noqa: F811
    def call(method, path, body=None):
        return {s.name: s.api(method, path, body) for s in sides}

    def code(answer):
        st, body = answer
        return st, body.get("code") if isinstance(body, dict) else None

    user = unique("side")
    for s in sides:
        s.ok("POST", "/api/v1/user", {"name": user})
    key = auth_id()
    got = call("POST", "/api/v1/debug/node",
               {"user": user, "key": key, "name": "side-node", "routes": ["10.7.0.0/24"]})
    assert got["ours"][0] == got["headscale"][0] == 200, got
    assert normalised(got["ours"][1]["node"]) == normalised(got["headscale"][1]["node"]), got
    for path in ("/api/v1/auth/approve", "/api/v1/auth/reject"):
        for body in ({"authId": "nope"}, {}):
            got = call("POST", path, body)
            assert code(got["ours"]) == code(got["headscale"]) == (400, 3), (path, body, got)
        got = call("POST", path, {"authId": auth_id()})
        assert code(got["ours"]) == code(got["headscale"]) == (404, 5), (path, got)
    got = call("POST", "/api/v1/auth/reject", {"authId": key})
    assert got["ours"] == got["headscale"] == (200, {}), got
    got = call("POST", "/api/v1/node/backfillips?confirmed=true")
    assert got["ours"] == got["headscale"] == (200, {"changes": []}), got
    # Deliberate differences, asserted exactly so that a change on either side shows:
    # a refused login stays refused (headscale leaves it pending: approve answers 200 and
    # a register completes it) ...
    got = call("POST", "/api/v1/auth/approve", {"authId": key})
    assert (code(got["ours"]), got["headscale"]) == ((404, 5), (200, {})), got
    # ... and an unconfirmed backfill is the caller's mistake, 400 (headscale: 500 UNKNOWN).
    got = call("POST", "/api/v1/node/backfillips")
    assert (code(got["ours"]), code(got["headscale"])) == ((400, 3), (500, 2)), got
