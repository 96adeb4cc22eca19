"""Routes side by side with headscale v0.29.3 (the binary tests/lib/install-headscale.sh builds; set
HEADSCALE_REF to another path, or the test is skipped without one): the same steps on both
servers, through REST and the Noise test client, and the answers compared — node JSON
(approvedRoutes, availableRoutes, subnetRoutes in lists, by id and after approve_routes),
exit-route pairing, approving unannounced routes, bad input, autoApprovers.

Differences we keep on purpose are asserted as such: a prefix with host bits set
("10.9.0.1/24") is refused here (headscale stores it as typed, and it then matches no
announced route), and a malformed prefix is a 400 here where headscale 0.29 answers 500."""

import json

from helpers import unique
from noise_client import ControlClient
from refserver import both, needs_ref, poll_same, same, sides  # noqa: F401 (sides: fixture)

pytestmark = needs_ref


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
