"""Subnet routes and exit nodes, the operator's side (issue 11, part A): routes announced by
clients (Hostinfo.RoutableIPs, sent here by the Noise test client as tailscaled sends them
for --advertise-routes / --advertise-exit-node), approved through both of headscale's
vocabularies — 0.26+ `nodes approve-routes` / POST /api/v1/node/{id}/approve_routes and
0.22.3's route ids (`routes list|enable|disable|delete`, /api/v1/routes) — and by the
policy's autoApprovers. Node JSON fields as headscale 0.29 fills them: approvedRoutes,
availableRoutes (announced) and subnetRoutes (primary routes, plus approved exit routes in
lists). What peers receive is part B's (test_routes_map*)."""

import json
import time

from helpers import assert_cli_error, assert_problem, unique
from noise_client import ControlClient

EXIT = ["0.0.0.0/0", "::/0"]


def user_key(server, user):
    return server.cli_json("preauthkeys", "-u", str(user["id"]), "create", "--reusable",
                           "-e", "1h")["key"]


def router(server, key, routes, online=True):
    """A node announcing routes; online (a map stream open) unless told otherwise."""
    c = ControlClient(server.port)
    c.hostinfo = {"Hostname": unique("r"), "OS": "linux", "RoutableIPs": routes}
    st, _, resp = c.register(auth_key=key)
    assert st == 200 and resp.get("MachineAuthorized"), (st, resp)
    if online:
        c.id = c.open_stream()["Node"]["ID"]
    else:
        c.id = c.full_map()["Node"]["ID"]
    return c


def listed(server, node_id):
    return next(n for n in server.api_ok("GET", "/api/v1/node")["nodes"]
                if n["id"] == str(node_id))


def poll(fn, timeout=10.0, what=""):
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def approve(server, node_id, routes):
    return server.api_ok("POST", f"/api/v1/node/{node_id}/approve_routes",
                         {"routes": routes})["node"]


# ---- the current vocabulary ----

def test_announced_routes_wait_for_approval(mserver):
    key = user_key(mserver, mserver.create_user())
    r = router(mserver, key, ["10.1.0.0/24"] + EXIT)
    try:
        n = listed(mserver, r.id)
        assert n["availableRoutes"] == ["10.1.0.0/24"] + EXIT
        assert n["approvedRoutes"] == [] and n["subnetRoutes"] == []
    finally:
        r.close()


def test_approve_routes_cli_and_rest(mserver):
    key = user_key(mserver, mserver.create_user())
    r = router(mserver, key, ["10.2.0.0/24"] + EXIT)
    try:
        n = mserver.cli_json("nodes", "approve-routes", "-i", r.id, "-r", "10.2.0.0/24")
        assert n["approved_routes"] == ["10.2.0.0/24"]
        assert n["subnet_routes"] == ["10.2.0.0/24"]  # online, the only one: primary
        # one exit route approves both; sorted as headscale sorts (length before address)
        n = approve(mserver, r.id, ["10.2.0.0/24", "::/0"])
        assert n["approvedRoutes"] == ["0.0.0.0/0", "10.2.0.0/24", "::/0"]
        assert n["subnetRoutes"] == ["10.2.0.0/24"]  # approve_routes: primaries only
        # lists add the approved exit routes; GET by id leaves subnetRoutes empty (0.29)
        assert listed(mserver, r.id)["subnetRoutes"] == ["10.2.0.0/24"] + EXIT
        assert mserver.api_ok("GET", f"/api/v1/node/{r.id}")["node"]["subnetRoutes"] == []
        # list-routes: the node, from the list
        rows = mserver.cli_json("nodes", "list-routes", "-i", r.id)
        assert [x["id"] for x in rows] == [r.id]
        assert rows[0]["subnet_routes"] == ["10.2.0.0/24"] + EXIT
        table = mserver.cli_ok("nodes", "list-routes").stdout
        assert "Serving (Primary)" in table and "10.2.0.0/24" in table
        # an empty list clears
        n = mserver.cli_json("nodes", "approve-routes", "-i", r.id, "-r", "")
        assert "approved_routes" not in n and "subnet_routes" not in n, n  # empty: left out
        assert listed(mserver, r.id)["subnetRoutes"] == []
    finally:
        r.close()


def test_primary_needs_an_online_router(mserver):
    key = user_key(mserver, mserver.create_user())
    a = router(mserver, key, ["10.3.0.0/24"] + EXIT)
    b = router(mserver, key, ["10.3.0.0/24"])
    try:
        approve(mserver, a.id, ["10.3.0.0/24", "0.0.0.0/0"])
        approve(mserver, b.id, ["10.3.0.0/24"])
        assert listed(mserver, a.id)["subnetRoutes"] == ["10.3.0.0/24"] + EXIT
        assert listed(mserver, b.id)["subnetRoutes"] == []
        a.close()  # a goes offline: b takes the prefix; a's exit routes stay listed
        poll(lambda: listed(mserver, b.id)["subnetRoutes"] == ["10.3.0.0/24"], what="failover")
        assert listed(mserver, a.id)["subnetRoutes"] == EXIT
    finally:
        a.close()
        b.close()


def test_approving_unannounced_routes_is_allowed(mserver):
    """headscale 0.29 stores them; they are served once announced."""
    key = user_key(mserver, mserver.create_user())
    r = router(mserver, key, ["10.4.0.0/24"])
    try:
        n = approve(mserver, r.id, ["192.168.44.0/24"])
        assert n["approvedRoutes"] == ["192.168.44.0/24"] and n["subnetRoutes"] == []
        assert listed(mserver, r.id)["subnetRoutes"] == []
    finally:
        r.close()


def test_bad_approvals_change_nothing(mserver):
    key = user_key(mserver, mserver.create_user())
    r = router(mserver, key, ["10.5.0.0/24"])
    try:
        approve(mserver, r.id, ["10.5.0.0/24"])
        for bad in ["banana", "10.5.0.1/24", "10.5.0.0/33", "10.5.0.0", "fe80::1%eth0/64", ""]:
            st, body = mserver.api("POST", f"/api/v1/node/{r.id}/approve_routes",
                                   {"routes": ["10.6.0.0/24", bad]})
            assert_problem(st, body, 400, bad)
            assert f'"{bad}"' in body["detail"], body
        for body in [{"routes": "10.6.0.0/24"}, {"routes": [7]}]:
            st, resp = mserver.api("POST", f"/api/v1/node/{r.id}/approve_routes", body)
            assert_problem(st, resp, 400, body)
        res = mserver.cli("nodes", "approve-routes", "-i", r.id, "-r", "10.6.0.0/24,nope")
        assert_cli_error(res, "nope")
        assert listed(mserver, r.id)["approvedRoutes"] == ["10.5.0.0/24"]
        st, body = mserver.api("POST", "/api/v1/node/987654/approve_routes",
                               {"routes": ["10.6.0.0/24"]})
        assert_problem(st, body, 404, "unknown node")
        assert_cli_error(mserver.cli("nodes", "list-routes", "-i", "987654"), "not found")
    finally:
        r.close()


# ---- 0.22.3's route ids ----

# headscale 0.22.3's Route as its CLI prints it: false and nil members left out
ROUTE_KEYS = {"id", "machine", "prefix", "advertised", "created_at", "updated_at"}


def routes_of(server, node_id):
    return {x["prefix"]: x for x in
            server.api_ok("GET", f"/api/v1/machine/{node_id}/routes")["routes"]}


def test_routes_022_enable_disable_delete(mserver):
    key = user_key(mserver, mserver.create_user())
    r = router(mserver, key, ["10.7.0.0/24"] + EXIT)
    try:
        rows = mserver.cli_json("routes", "list", "-i", r.id)
        assert sorted(x["prefix"] for x in rows) == sorted(["10.7.0.0/24"] + EXIT)
        for x in rows:
            assert set(x) == ROUTE_KEYS, x
            assert x["advertised"] is True and x["machine"]["id"] == r.id, x
        ids = {x["prefix"]: str(x["id"]) for x in rows}
        # the same ids every time, and in the all-routes list
        assert {x["prefix"]: x["id"] for x in routes_of(mserver, r.id).values()} == ids
        every = mserver.api_ok("GET", "/api/v1/routes")["routes"]
        assert {x["id"] for x in every} >= set(ids.values())

        mserver.cli_ok("routes", "enable", "-r", ids["10.7.0.0/24"])
        got = routes_of(mserver, r.id)
        assert got["10.7.0.0/24"]["enabled"] and got["10.7.0.0/24"]["isPrimary"]
        assert listed(mserver, r.id)["approvedRoutes"] == ["10.7.0.0/24"]
        # one exit route switches both
        mserver.api_ok("POST", f"/api/v1/routes/{ids['::/0']}/enable")
        got = routes_of(mserver, r.id)
        assert got["0.0.0.0/0"]["enabled"] and got["::/0"]["enabled"]
        assert not got["0.0.0.0/0"]["isPrimary"]  # exit routes have none
        assert listed(mserver, r.id)["approvedRoutes"] == ["0.0.0.0/0", "10.7.0.0/24", "::/0"]
        table = mserver.cli_ok("routes", "list", "-i", r.id).stdout
        assert "Machine" in table and "Primary" in table and "10.7.0.0/24" in table
        mserver.cli_ok("routes", "disable", "-r", ids["0.0.0.0/0"])
        got = routes_of(mserver, r.id)
        assert not got["0.0.0.0/0"]["enabled"] and not got["::/0"]["enabled"]
        assert listed(mserver, r.id)["approvedRoutes"] == ["10.7.0.0/24"]
        # delete: approval gone, and the route (still announced) comes back under a new id
        mserver.cli_ok("routes", "delete", "-r", ids["10.7.0.0/24"])
        got = routes_of(mserver, r.id)
        assert listed(mserver, r.id)["approvedRoutes"] == []
        assert got["10.7.0.0/24"]["id"] != ids["10.7.0.0/24"]
        assert not got["10.7.0.0/24"]["enabled"]
    finally:
        r.close()


def test_routes_022_bad_input(mserver):
    key = user_key(mserver, mserver.create_user())
    r = router(mserver, key, ["10.8.0.0/24"])
    try:
        approve(mserver, r.id, ["10.8.0.0/24", "192.168.88.0/24"])
        got = routes_of(mserver, r.id)
        assert got["192.168.88.0/24"]["advertised"] is False
        assert got["192.168.88.0/24"]["enabled"] is True
        mserver.cli_ok("routes", "disable", "-r", got["192.168.88.0/24"]["id"])
        # enabling a route the node does not announce: 0.22's "not available"
        res = mserver.cli("routes", "enable", "-r", got["192.168.88.0/24"]["id"])
        assert_cli_error(res, "not available")
        assert listed(mserver, r.id)["approvedRoutes"] == ["10.8.0.0/24"]
        for path in ["/api/v1/routes/987654/enable", "/api/v1/routes/987654/disable"]:
            st, body = mserver.api("POST", path)
            assert_problem(st, body, 404, path)
        st, body = mserver.api("DELETE", "/api/v1/routes/987654")
        assert_problem(st, body, 404, "delete")
        assert_cli_error(mserver.cli("routes", "enable", "-r", "987654"), "not found")
        res = mserver.cli("routes", "enable", "-r", "abc")
        assert res.returncode != 0 and "abc" in res.stderr
        res = mserver.cli("routes", "enable")
        assert res.returncode != 0 and "route" in res.stderr
        st, body = mserver.api("GET", "/api/v1/machine/987654/routes")
        assert_problem(st, body, 404, "unknown node")
        assert listed(mserver, r.id)["approvedRoutes"] == ["10.8.0.0/24"]
    finally:
        r.close()


# ---- autoApprovers ----

def auto_policy(user, subnet="10.20.0.0/16"):
    return json.dumps({
        "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
        "autoApprovers": {"routes": {subnet: [f"{user}@"]}, "exitNode": [f"{user}@"]},
    })


def test_auto_approvers(server_factory):
    s = server_factory()
    alice, bob = s.create_user(unique("alice")), s.create_user(unique("bob"))
    s.api_ok("PUT", "/api/v1/policy", {"policy": auto_policy(alice["name"])})
    a = router(s, user_key(s, alice), ["10.20.1.0/24", "10.30.0.0/24"] + EXIT)
    b = router(s, user_key(s, bob), ["10.20.2.0/24"])
    try:
        # alice's route inside the approved prefix and her exit routes: no operator action;
        # they are stored (GET by id reads the store)
        want = ["0.0.0.0/0", "10.20.1.0/24", "::/0"]
        poll(lambda: s.api_ok("GET", f"/api/v1/node/{a.id}")["node"]["approvedRoutes"] == want,
             what="auto-approval")
        assert listed(s, a.id)["subnetRoutes"] == ["10.20.1.0/24"] + EXIT
        # bob is not an approver: pending
        assert listed(s, b.id)["approvedRoutes"] == []
        # a policy naming bob approves his announced route when it is put in force
        s.api_ok("PUT", "/api/v1/policy", {"policy": auto_policy(bob["name"])})
        poll(lambda: listed(s, b.id)["approvedRoutes"] == ["10.20.2.0/24"],
             what="approval at policy change")
        # auto-approval only adds: alice keeps hers
        assert listed(s, a.id)["approvedRoutes"] == want
        # announcing a new route later is approved at announce time
        b.hostinfo = dict(b.hostinfo, RoutableIPs=["10.20.2.0/24", "10.20.3.0/24"])
        assert b.lite_update() == 200
        poll(lambda: listed(s, b.id)["approvedRoutes"] == ["10.20.2.0/24", "10.20.3.0/24"],
             what="approval at announce time")
    finally:
        a.close()
        b.close()


def test_openapi_lists_route_operations(mserver):
    doc = mserver.api_ok("GET", "/api/v1/openapi.json", key=None)
    paths = doc["paths"]
    assert "post" in paths["/api/v1/node/{nodeId}/approve_routes"]
    assert "get" in paths["/api/v1/routes"]
    assert "post" in paths["/api/v1/routes/{routeId}/enable"]
    assert "post" in paths["/api/v1/routes/{routeId}/disable"]
    assert "delete" in paths["/api/v1/routes/{routeId}"]
    assert "get" in paths["/api/v1/machine/{machineId}/routes"]


def test_route_ids_usable_before_any_list(server_factory):
    """0.22 scripts enable route 1 right after the first node announced: ids are given out
    when an id is first used, not only when listed."""
    s = server_factory()
    r = router(s, user_key(s, s.create_user()), ["10.9.9.0/24"])
    try:
        s.cli_ok("routes", "enable", "-r", "1")
        assert listed(s, r.id)["approvedRoutes"] == ["10.9.9.0/24"]
        (row,) = s.cli_json("routes", "list")
        assert (row["id"], row["prefix"], row["enabled"]) == (1, "10.9.9.0/24", True)
    finally:
        r.close()
