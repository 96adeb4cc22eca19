"""Subnet routes and exit nodes as real Tailscale clients use them: every node in a network
namespace of its own (tailnet.World(node_netns=True)), and the networks behind the routers in
namespaces of their own, reachable only through the router (or the exit node) that is
attached to them. So "reachable" means the packets really went through the tailnet and out of
that router: the far end's TCP echo server records who connected (the router's address on the
far network), and "refused" means no attempt got there.

One world per database, the tests in order (each leaves the routes as it found them):
  lan      198.19.5.0/24 on a bridge in its own namespace: the echo server at .10, router-1 at
           .1 and router-2 at .2 (each a veth from its node namespace).
  wan      198.19.7.0/24 likewise, the exit node at .1; the echo server on 198.19.8.10, one
           hop beyond (an exit node keeps its own attached networks out of what it offers).
  nodes    client (alice, --accept-routes), client-bob (bob, --accept-routes), router-1 and
           router-2 (alice, --advertise-routes 198.19.5.0/24), exit (alice,
           --advertise-exit-node).

Approval goes through the operator's commands (`headscale nodes approve-routes`). Every wait is
a poll with a deadline."""

import json
import os
import signal
import socket
import threading
import time

import pytest

import tailnet
from tailnet import poll

VERSION = tailnet.versions()[0]

LAN = "198.19.5"
LAN_ROUTE = f"{LAN}.0/24"
WAN = "198.19.7"
INTERNET = "198.19.8"  # one hop beyond WAN
FAR_PORT = 7000

ATTEMPT = 3.0       # one TCP attempt through the tailnet
REACH = 45.0        # a path starts working within this
REFUSE = 30.0       # a path stops working within this
REFUSED_IN_A_ROW = 2
# HA health probes as fast as the configuration allows, so a hung router is found quickly.
PROBES = {"node": {"routes": {"ha": {"probe_interval": "2s", "probe_timeout": "1s"}}}}

ALLOW_ALL = json.dumps({"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]})
# Members reach each other; only alice's devices may use the routed subnet. (A source of "*"
# would take in the subnet too: it could then reach bob, who would get the route for that.)
ALICE_ROUTE = json.dumps({"acls": [
    {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:member:*"]},
    {"action": "accept", "src": ["alice@"], "dst": [f"{LAN_ROUTE}:*"]},
]})


# ---- networks behind the routers -----------------------------------------------------------

class FarNetwork(tailnet.Namespace):
    """A network outside the tailnet: a bridge with <net>.10/24 in a namespace of its own, a
    veth to each node namespace attached (the node gets <net>.<host>/24 on `far0`), and a TCP
    echo server that records the source address of every connection: on <net>.10, or with
    `beyond` on <beyond>.10, one hop further (attached nodes route <beyond>.0/24 through
    <net>.10). An exit node does not carry traffic to its own directly attached networks
    (Tailscale keeps an exit node's LAN out of what it offers), hence the hop."""

    def __init__(self, workdir, net, beyond=None):
        super().__init__(workdir)
        self.net = net
        self.beyond = beyond
        self.ip = f"{beyond or net}.10"
        self.peers = []
        self.links = 0

    def _links(self):
        n = self.name
        tailnet._ip("-n", n, "link", "add", "farbr", "type", "bridge")
        tailnet._ip("-n", n, "addr", "add", f"{self.net}.10/24", "dev", "farbr")
        tailnet._ip("-n", n, "link", "set", "farbr", "up")
        if self.beyond:
            tailnet._ip("-n", n, "addr", "add", f"{self.ip}/32", "dev", "lo")

    def attach(self, node_ns, host):
        self.links += 1
        port = f"far{self.links}"
        tailnet._ip("-n", self.name, "link", "add", port, "type", "veth", "peer", "name",
                    "far0", "netns", node_ns.name)
        tailnet._ip("-n", self.name, "link", "set", port, "master", "farbr")
        tailnet._ip("-n", self.name, "link", "set", port, "up")
        tailnet._ip("-n", node_ns.name, "addr", "add", f"{self.net}.{host}/24", "dev", "far0")
        tailnet._ip("-n", node_ns.name, "link", "set", "far0", "up")
        if self.beyond:
            tailnet._ip("-n", node_ns.name, "route", "add", f"{self.beyond}.0/24", "via",
                        f"{self.net}.10")

    def serve(self):
        self.sock = self.listen(self.ip, FAR_PORT)
        self.sock.settimeout(0.5)
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                c, addr = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.peers.append(addr[0])
            threading.Thread(target=tailnet.EchoServer._serve, args=(c,), daemon=True).start()

    def close(self):
        if getattr(self, "thread", None):
            self.stopping = True
            self.thread.join(5)
            self.sock.close()
        super().close()


# ---- the world -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rworld(tmp_path_factory, db):
    if os.geteuid() != 0:
        pytest.skip("tailnet tests need root (ip netns)")
    if not tailnet.have_version(VERSION):
        pytest.skip(f"Tailscale {VERSION} not built in {tailnet.TS_CACHE}")
    d = tmp_path_factory.mktemp(f"routes-traffic-{db.kind[:2]}")
    with tailnet.World(d, db, VERSION, node_netns=True, users=("alice", "bob"),
                       server_overrides=PROBES, node_env=json.loads(os.environ.get("RM_NODE_ENV", "{}"))) as w:
        lan, wan = FarNetwork(str(d), LAN), FarNetwork(str(d), WAN, beyond=INTERNET)
        try:
            lan.create()
            wan.create()
            w.lan, w.wan = lan, wan
            _bring_up(w)
            lan.serve()
            wan.serve()
            yield w
        finally:
            lan.close()
            wan.close()


def _bring_up(w):
    keys = {u: w.key(u, reusable=True) for u in ("alice", "bob")}
    plan = {
        "client": ("alice", ["--accept-routes"]),
        "client-bob": ("bob", ["--accept-routes"]),
        "router-1": ("alice", [f"--advertise-routes={LAN_ROUTE}"]),
        "router-2": ("alice", [f"--advertise-routes={LAN_ROUTE}"]),
        "exit": ("alice", ["--advertise-exit-node"]),
    }
    # The far links come first: one appearing under a running tailscaled is a link change,
    # which makes it drop its control connection.
    w.n = {name: w.node(name, start=False) for name in plan}
    w.lan.attach(w.n["router-1"].ns, 1)
    w.lan.attach(w.n["router-2"].ns, 2)
    w.wan.attach(w.n["exit"].ns, 1)
    for n in w.n.values():
        n.start()
    errors = []

    def up(name):
        try:
            user, extra = plan[name]
            w.n[name].up(keys[user], extra=extra)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=up, args=(name,), daemon=True) for name in plan]
    for t in threads:
        t.start()
    for t in threads:
        t.join(tailnet.UP_TIMEOUT + 30)
    if errors:
        raise errors[0]
    for n in w.n.values():
        n.wait_running()
    w.ids = {name: node_id(w, name) for name in plan}


@pytest.fixture(autouse=True)
def _tailnet_logs(request):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for w in list(tailnet.LIVE_WORLDS):
            print(f"\n===== tailnet world {w.dir} ({w.db.kind}, {w.version}) =====")
            print(w.logs(60))


# ---- helpers -------------------------------------------------------------------------------

def node_id(w, name):
    sn = poll(lambda: w.server.node_by_name(name), 20, f"{name} in `headscale nodes list`")
    return int(sn["id"])


def approve(w, name, *routes):
    w.server.cli_ok("nodes", "approve-routes", "-i", w.ids[name], "-r", ",".join(routes))


def set_policy(w, text):
    path = os.path.join(w.dir, f"policy-{time.monotonic_ns()}.hujson")
    with open(path, "w") as f:
        f.write(text)
    w.server.cli_ok("policy", "set", "--file", path)


def attempt(src, far):
    """One TCP round trip from src's SOCKS5 proxy to far's echo server → (ok, via, why): via
    is the source address far saw (the router's or exit node's address there), or None."""
    before = len(far.peers)
    payload = os.urandom(12).hex().encode()
    ok, why = False, ""
    try:
        s = tailnet.socks5_connect(src.ns, src.socks_port, far.ip, FAR_PORT, timeout=ATTEMPT)
        try:
            s.settimeout(ATTEMPT)
            got = tailnet.echo_roundtrip(s, payload)
            ok = got == payload
            why = "" if ok else f"echo returned {got!r}"
        finally:
            s.close()
    except (OSError, AssertionError, EOFError) as e:
        why = repr(e)
    new = far.peers[before:]
    return ok, (new[-1] if new else None), why


def wait_via(src, far, via, deadline=REACH):
    """Polls until src reaches far and far sees the connection come from via."""
    def ok():
        good, seen, why = attempt(src, far)
        assert good, why
        assert seen == via, f"came from {seen}, not {via}"
        return True

    poll(ok, deadline, f"{src.name} → {far.ip}:{FAR_PORT} through {via}", interval=0.3)


def wait_refused(src, far, deadline=REFUSE):
    streak = [0]

    def refused():
        good, seen, why = attempt(src, far)
        if good or seen:
            streak[0] = 0
            raise AssertionError(f"still reachable (ok={good}, far end saw {seen})")
        streak[0] += 1
        return streak[0] >= REFUSED_IN_A_ROW

    poll(refused, deadline, f"{src.name} → {far.ip}:{FAR_PORT} to be refused", interval=0.2)


def peer_routes(viewer, name):
    """(AllowedIPs, PrimaryRoutes) of peer `name` in viewer's `tailscale status --json`."""
    p = viewer.peer(name)
    assert p is not None, f"{viewer.name} does not see {name}"
    return p.get("AllowedIPs") or [], p.get("PrimaryRoutes") or []


def wait_primary(viewer, name, route=LAN_ROUTE, deadline=REACH):
    def ok():
        allowed, primary = peer_routes(viewer, name)
        return route in allowed and route in primary

    poll(ok, deadline, f"{viewer.name} to see {name} as the primary of {route}", interval=0.3)


def server_primary(w, route=LAN_ROUTE):
    """The node ids the server says serve route now (`subnetRoutes` of `nodes list`)."""
    return sorted(int(n["id"]) for n in w.server.nodes()
                  if route in (n.get("subnet_routes") or []))


# ---- tests ---------------------------------------------------------------------------------

def two_routers(w, client):
    """Approves LAN_ROUTE on both routers and waits until client reaches the LAN through the
    one with the lower node id, the primary → (that one, the other, {router: its LAN address})."""
    first, second = sorted(("router-1", "router-2"), key=lambda name: w.ids[name])
    via = {"router-1": f"{LAN}.1", "router-2": f"{LAN}.2"}
    approve(w, first, LAN_ROUTE)
    approve(w, second, LAN_ROUTE)
    wait_primary(client, first)
    wait_via(client, w.lan, via[first])
    return first, second, via


def test_subnet_route_served_only_while_approved(rworld):
    """A route announced but not approved is not given to peers; approved, a peer with
    --accept-routes reaches the far network through the router; no longer approved, it
    cannot."""
    w = rworld
    client, r1 = w.n["client"], w.n["router-1"]
    wait_refused(client, w.lan)
    allowed, _ = peer_routes(client, "router-1")
    assert LAN_ROUTE not in allowed, "an unapproved route is not in AllowedIPs"

    approve(w, "router-1", LAN_ROUTE)
    wait_primary(client, "router-1")
    wait_via(client, w.lan, f"{LAN}.1")
    assert server_primary(w) == [w.ids["router-1"]]
    assert r1.peer("client") is not None

    approve(w, "router-1")  # none
    wait_refused(client, w.lan)
    allowed, primary = peer_routes(client, "router-1")
    assert LAN_ROUTE not in allowed and LAN_ROUTE not in primary
    assert server_primary(w) == []


def test_subnet_route_follows_the_policy(rworld):
    """Only alice's devices may use the routed subnet: bob's client does not get the route
    (and the far end sees nothing from it), alice's does."""
    w = rworld
    client, bob = w.n["client"], w.n["client-bob"]
    approve(w, "router-1", LAN_ROUTE)
    try:
        set_policy(w, ALICE_ROUTE)
        wait_via(client, w.lan, f"{LAN}.1")
        wait_refused(bob, w.lan)
        allowed, _ = peer_routes(bob, "router-1")
        assert LAN_ROUTE not in allowed, "bob sees the router, not its route"
        set_policy(w, ALLOW_ALL)
        wait_via(bob, w.lan, f"{LAN}.1")
    finally:
        set_policy(w, ALLOW_ALL)
        approve(w, "router-1")
    wait_refused(client, w.lan)


def test_ha_failover_and_no_flap(rworld):
    """Two routers for one route: the one with the lower node id is primary; when its
    tailscaled dies the other takes over without the operator, every peer is told (and a
    peer the policy keeps off the route is told without it: its delta is not the one the
    others share), and when the first comes back it does not take the route back (a lowest-id
    rule would)."""
    w = rworld
    client, bob = w.n["client"], w.n["client-bob"]
    set_policy(w, ALICE_ROUTE)
    first, second, via = two_routers(w, client)
    assert server_primary(w) == [w.ids[first]]
    _, standby = peer_routes(client, second)
    assert LAN_ROUTE not in standby, "the standby is not given to peers"

    w.n[first].kill9()
    started = time.monotonic()
    wait_primary(client, second)
    wait_via(client, w.lan, via[second])
    took = time.monotonic() - started
    print(f"failover: client reached the far network through {second} {took:.2f}s after "
          f"{first}'s tailscaled was killed")
    assert server_primary(w) == [w.ids[second]]
    # bob was told too (the old primary went offline in the same delta), without the route
    poll(lambda: (bob.peer(first) or {}).get("Online") is False, REACH,
         f"bob to see {first} offline", interval=0.3)
    allowed, primary = peer_routes(bob, second)
    assert LAN_ROUTE not in allowed and LAN_ROUTE not in primary, (allowed, primary)

    w.n[first].start()
    poll(lambda: (client.peer(first) or {}).get("Online"), REACH,
         f"{first} back online as the client sees it", interval=0.3)
    # No flap: with the lower id online again, the route stays where it is.
    for _ in range(5):
        wait_via(client, w.lan, via[second], deadline=10)
    assert server_primary(w) == [w.ids[second]]
    _, primary = peer_routes(client, first)
    assert LAN_ROUTE not in primary
    approve(w, first)
    approve(w, second)
    set_policy(w, ALLOW_ALL)
    wait_refused(client, w.lan)


def test_ha_probe_fails_over_a_hung_router(rworld):
    """A primary router whose tailscaled hangs (SIGSTOP: its kernel keeps the map stream's TCP
    connection open, so the server still sees it online) stops answering the HA health probes:
    the route moves to the other router, and peers reach the subnet through it. When the hung
    one wakes up it answers probes again but does not take the route back; that it counts as
    healthy again shows when the new primary then dies: the route comes back to it (with
    both unhealthy and the primary gone the route would have no router at all)."""
    w = rworld
    client = w.n["client"]
    set_policy(w, ALLOW_ALL)
    first, second, via = two_routers(w, client)

    hung = w.n[first].proc
    hung._signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        wait_primary(client, second)
        wait_via(client, w.lan, via[second])
        print(f"probe failover: {time.monotonic() - started:.2f}s after {first} hung")
        assert server_primary(w) == [w.ids[second]]
        hung_row = next(n for n in w.server.nodes() if int(n["id"]) == w.ids[first])
        assert hung_row.get("online") is True, "the failover came from the probe, not a close"
        assert "left a health probe unanswered" in w.server.log_tail(400)
    finally:
        hung._signal(signal.SIGCONT)

    # Awake again: answers the next probes, keeps out of the way (no flap).
    for _ in range(4):
        wait_via(client, w.lan, via[second], deadline=10)
    assert server_primary(w) == [w.ids[second]]
    w.n[second].kill9()
    try:
        wait_primary(client, first)
        wait_via(client, w.lan, via[first])
        assert server_primary(w) == [w.ids[first]]
    finally:
        w.n[second].start()
        poll(lambda: (client.peer(second) or {}).get("Online"), REACH,
             f"{second} back online as the client sees it", interval=0.3)
        approve(w, first)
        approve(w, second)
    wait_refused(client, w.lan)


def test_exit_node(rworld):
    """An approved exit node is offered to peers; a client that picks it reaches an address
    outside the tailnet through it (the far end sees the exit node's address)."""
    w = rworld
    client = w.n["client"]
    wait_refused(client, w.wan)
    allowed, _ = peer_routes(client, "exit")
    assert "0.0.0.0/0" not in allowed, "an unapproved exit node is not offered"

    approve(w, "exit", "0.0.0.0/0")  # approves ::/0 too
    poll(lambda: {"0.0.0.0/0", "::/0"} <= set(peer_routes(client, "exit")[0]), REACH,
         "the client to be offered the exit node", interval=0.3)
    exit_ip = w.n["exit"].ip4
    r = client.cli("set", f"--exit-node={exit_ip}")
    assert r.returncode == 0, r.stderr
    try:
        wait_via(client, w.wan, f"{WAN}.1")
        _, primary = peer_routes(client, "exit")
        assert "0.0.0.0/0" not in primary, "exit routes are not primary routes"
        wait_refused(w.n["client-bob"], w.wan)  # it did not pick the exit node
    finally:
        client.cli("set", "--exit-node=")
        approve(w, "exit")
    wait_refused(client, w.wan)
