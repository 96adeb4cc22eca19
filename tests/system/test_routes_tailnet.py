"""Routes announced by real Tailscale clients (`tailscale up --advertise-routes`,
`--advertise-exit-node`) in a private network namespace (tailnet.py): what tailscaled sends
reaches the node's availableRoutes, the policy's autoApprovers approve alice's routes and
exit node with no operator action, bob's stay pending until `nodes approve-routes`, and
0.22's `routes list` shows the same. Traffic through the routes is part B's."""

import json
import os

import pytest

import tailnet
from tailnet import poll

VERSIONS = tailnet.versions()

POLICY = json.dumps({
    "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
    "autoApprovers": {"routes": {"10.77.0.0/16": ["alice@"]}, "exitNode": ["alice@"]},
}, indent=2)


@pytest.fixture(scope="module")
def tsver():
    v = VERSIONS[0]
    if os.geteuid() != 0:
        pytest.skip("tailnet tests need root (ip netns)")
    if not tailnet.have_version(v):
        pytest.skip(f"Tailscale {v} not built in {tailnet.TS_CACHE}/{v}")
    return v


@pytest.fixture(scope="module")
def world(tmp_path_factory, db, tsver):
    d = tmp_path_factory.mktemp(f"tn-routes-{db.kind[:2]}")
    with tailnet.World(d, db, tsver, policy_text=POLICY) as w:
        yield w


def node_json(world, node_id):
    """The node as `nodes list -o json` prints it: an empty route list is left out."""
    n = next(n for n in world.server.nodes() if str(n["id"]) == node_id)
    return {k: n.get(k, []) for k in ("approved_routes", "available_routes", "subnet_routes")}


def test_real_clients_announce_and_get_approved(world):
    a = world.join(user="alice", extra=["--advertise-routes=10.77.1.0/24",
                                        "--advertise-exit-node"])
    b = world.join(user="bob", extra=["--advertise-routes=10.77.2.0/24"])
    ida = str(world.server.node_by_name(a.name)["id"])
    idb = str(world.server.node_by_name(b.name)["id"])
    want = ["0.0.0.0/0", "10.77.1.0/24", "::/0"]
    poll(lambda: node_json(world, ida)["approved_routes"] == want, 30,
         "alice's routes approved by autoApprovers")
    na = node_json(world, ida)
    assert sorted(na["available_routes"]) == sorted(want), na
    assert na["subnet_routes"] == ["10.77.1.0/24", "0.0.0.0/0", "::/0"], na
    nb = poll(lambda: (n := node_json(world, idb))["available_routes"] and n, 30,
              "bob's announcement")
    assert nb["available_routes"] == ["10.77.2.0/24"] and nb["approved_routes"] == [], nb
    n = world.server.cli_json("nodes", "approve-routes", "-i", idb, "-r", "10.77.2.0/24")
    assert n["approved_routes"] == ["10.77.2.0/24"] and n["subnet_routes"] == ["10.77.2.0/24"]
    rows = world.server.cli_json("routes", "list")
    got = {(str(r["machine"]["id"]), r["prefix"]): (r.get("advertised", False),
                                                    r.get("enabled", False)) for r in rows}
    for p in want:
        assert got[(ida, p)] == (True, True), got
    assert got[(idb, "10.77.2.0/24")] == (True, True), got
