"""Replicas: several `headscale serve` processes on one PostgreSQL database (the same database
and noise key, nothing else shared) are one server. Real clients are pinned each to one replica
(its own --login-server), so the test knows which replica serves whom: a node registered on B
is a peer of a client on A; an operator's change on one replica (rename, policy, delete)
reaches clients on the other; announcements missed while a replica's listening connection was
down are found from the change numbers and everything is read again.

SQLite serves one process: a second `serve` on the same file is refused."""

import contextlib
import copy
import json
import os
import re
import signal
import threading
import time

import pytest

import helpers
import tailnet

ALLOW_ALL = '{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}'
NOBODY = '{"acls": []}'


def need_postgres(db):
    if db.kind != "postgres":
        pytest.skip("replicas share a PostgreSQL database (SQLite: see the refusal test)")


def start_replica(w, port, overrides=None, server_url=None, env=None):
    """Another serve on w's database and noise key, listening on port (its server_url there
    unless given; env: its own)."""
    a = w.server
    r = tailnet.Server(w.ns, w.db, os.path.join(w.dir, "derpmap.yaml"), overrides=overrides,
                       env=env)
    cfg = r.config
    cfg["database"] = copy.deepcopy(a.config["database"])
    cfg["noise"] = dict(a.config["noise"])
    cfg["listen_addr"] = f"0.0.0.0:{port}"
    cfg["metrics_listen_addr"] = f"127.0.0.1:{port + 1000}"
    r.port = port
    r.url = f"http://{tailnet.CONTROL_HOST}:{port}"
    cfg["server_url"] = server_url or r.url
    r.write_config()
    r.start()
    return r


def join(w, name, server):
    n = w.node(name)
    n.server = server
    n.up(server.preauth_key(server.user_id("alice"), reusable=True))
    n.wait_running()
    return n


def node_id(server, name):
    node = tailnet.poll(lambda: server.node_by_name(name), 30, f"{name} in the node list")
    return str(node["id"])


def set_policy(server, text):
    path = os.path.join(server.tmp, "policy.json")
    with open(path, "w") as f:
        f.write(text)
    server.cli_ok("policy", "set", "-f", path)


@contextlib.contextmanager
def pinned_pair(tmp_path, db):
    """A world whose server A has a replica B; n1 joined on A, n2 on B → (w, b, n1, n2)."""
    need_postgres(db)
    with tailnet.World(tmp_path, db, tailnet.versions()[0]) as w:
        b = start_replica(w, 8081)
        try:
            yield w, b, join(w, "n1", w.server), join(w, "n2", b)
        finally:
            b.stop()  # clean and sanitizer-clean, unless the test killed it


def dns_name(peer):
    return (peer or {}).get("DNSName", "").split(".")[0]


def test_change_on_one_replica_reaches_clients_on_another(tmp_path, db):
    with pinned_pair(tmp_path, db) as (w, b, n1, n2):
        # Each replica learns of the node the other registered.
        n1.wait_peer("n2", what="n1 (on A) to see n2, registered on B")
        n2.wait_peer("n1", what="n2 (on B) to see n1, registered on A")
        n1.wait_ping(n2.ip4)

        # A rename on A reaches the renamed node's own replica, B.
        w.server.cli_ok("nodes", "rename", "-i", node_id(w.server, "n2"), "second")
        tailnet.poll(lambda: dns_name(n2.status()["Self"]) == "second", 30,
                     "n2 (on B) to hear its new name given on A")
        n1.wait_peer("n2", lambda p: dns_name(p) == "second", timeout=30)

        # A policy stored through B is in force on A: nobody, then everybody again.
        set_policy(b, NOBODY)
        n1.wait_no_peer("n2", timeout=30)
        set_policy(b, ALLOW_ALL)
        n1.wait_peer("n2", timeout=30, what="n2 back in n1's peers (policy set on B)")

        # A node deleted through B leaves the peers of A's clients.
        b.cli_ok("nodes", "delete", "-i", node_id(b, "n2"), "--force")
        n1.wait_no_peer("n2", timeout=30)


def test_missed_announcements_are_read_again(tmp_path, db):
    with pinned_pair(tmp_path, db) as (w, b, n1, n2):
        n2.wait_peer("n1")
        # B stopped, its listening connection closed by the database, then a change on A: its
        # announcement cannot reach B. B, continued, reconnects and must notice.
        # The change waits until both feeds' backends are gone: a backend told to end may
        # still take one more announcement before it does, and B would then miss nothing.
        pg, dbname = w.db.pg, w.server.pg_dbname
        os.kill(b.proc.pid, signal.SIGSTOP)
        try:
            pids = pg.psql("SELECT pid FROM pg_stat_activity WHERE application_name = "
                           "'headscale feed'", dbname=dbname).split()
            assert len(pids) == 2, pids  # A's and B's
            pg.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE pid IN ({','.join(pids)})", dbname=dbname)
            tailnet.poll(lambda: pg.psql(f"SELECT count(*) FROM pg_stat_activity "
                                         f"WHERE pid IN ({','.join(pids)})",
                                         dbname=dbname).strip() == "0",
                         10, "the two feeds' backends to end")
            w.server.cli_ok("nodes", "rename", "-i", node_id(w.server, "n1"), "renamed")
        finally:
            os.kill(b.proc.pid, signal.SIGCONT)
        n2.wait_peer("n1", lambda p: dns_name(p) == "renamed", timeout=30,
                     what="n2 (on B) to see the rename B missed")
        assert "reading every user, node and policy again" in b.log_text()


def test_sqlite_refuses_a_second_serve(db, server_factory):
    if db.kind != "sqlite":
        pytest.skip("SQLite only")
    first = server_factory()
    second = server_factory(start=False, api_key=False)
    second.config["database"] = copy.deepcopy(first.config["database"])
    second.write_config()
    p = second.spawn()
    rc = p.wait(timeout=helpers.START_DEADLINE)
    assert rc != 0
    assert "is in use by another headscale serve" in second.log_text(), second.log_text()
    assert first.api("GET", "/api/v1/user")[0] == 200  # the first one is unharmed


def online(peer):
    return bool((peer or {}).get("Online"))


def test_presence_is_shared_and_a_dead_replicas_nodes_go_offline(tmp_path, db):
    """A node connected to B is online for A's clients; it goes offline for them when its
    stream on B closes, and when B dies (kill -9) within B's lease (30 s), once the replica
    elected for such work removes B's rows."""
    with pinned_pair(tmp_path, db) as (w, b, n1, n2):
        n3 = join(w, "n3", b)
        n1.wait_peer("n2", online, timeout=30, what="n2 (on B) online for n1 (on A)")
        n1.wait_peer("n3", online, timeout=30, what="n3 (on B) online for n1 (on A)")
        n2.wait_peer("n1", online, timeout=30, what="n1 (on A) online for n2 (on B)")

        n2.stop()  # its stream on B closes
        n1.wait_peer("n2", lambda p: not online(p), timeout=30,
                     what="n2 offline for n1 once its stream on B closed")

        b.kill9()
        n1.wait_peer("n3", lambda p: not online(p), timeout=60,
                     what="n3 offline for n1 once B's lease ran out")
        assert n1.peer("n3") is not None, "an offline node stays a peer"
        assert "replicas whose lease ran out are offline" in w.server.log_text()


def test_replicas_with_clocks_off_keep_presence_by_the_database_clock(tmp_path, db):
    """Leases are timed by the database's clock, not the replicas' (libfaketime,
    helpers.FakeClock): B's clock 2 minutes behind must not make A (elected) take B's lease for
    run out, so B's node stays online for A's clients over several renewals; C's clock
    2 minutes ahead must not keep C's node online for long after C dies (kill -9): the lease
    is 30 s."""
    need_postgres(db)
    (tmp_path / "behind").mkdir()
    (tmp_path / "ahead").mkdir()
    behind = helpers.FakeClock(str(tmp_path / "behind"), "-2m")
    ahead = helpers.FakeClock(str(tmp_path / "ahead"), "+2m")
    with tailnet.World(tmp_path, db, tailnet.versions()[0]) as w:
        b = start_replica(w, 8081, env=behind.env())
        c = start_replica(w, 8082, env=ahead.env())
        try:
            n1, n2, n3 = join(w, "n1", w.server), join(w, "n2", b), join(w, "n3", c)
            n1.wait_peer("n2", online, timeout=30, what="n2 (on B, clock behind) online")
            n1.wait_peer("n3", online, timeout=30, what="n3 (on C, clock ahead) online")
            end = time.monotonic() + 25  # over two renewals (10 s) of every lease
            while time.monotonic() < end:
                assert online(n1.peer("n2")), "n2 (on B) went offline for n1 (on A)"
                assert online(n1.peer("n3")), "n3 (on C) went offline for n1 (on A)"
                time.sleep(0.5)
            for r in (w.server, b, c):
                assert "lease had run out" not in r.log_text()
                assert "replicas whose lease ran out" not in r.log_text()

            c.kill9()
            died = time.monotonic()
            n1.wait_peer("n3", lambda p: not online(p), timeout=60,
                         what="n3 offline for n1 once C's lease ran out")
            assert time.monotonic() - died < 50, "C's nodes stayed online past its lease"
            assert online(n1.peer("n2")), "B's node is still online"
        finally:
            b.stop()
            if c.running:
                c.stop()


# ---------------------------------------------------------------- behind nginx, DERP mesh

MESH_KEY = "5a" * 32
# nginx as the replicas' balancer: {http} holds the upstreams and servers.
NGINX_CONF = """
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    {http}
}}
"""
# A front port proxying to an upstream: Upgrade passed on (/ts2021, /derp), streams unbuffered.
FRONT = """
    server {{
        listen 0.0.0.0:{port};
        location / {{
            proxy_pass http://{upstream};
            proxy_next_upstream error timeout;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 1d;
            proxy_send_timeout 1d;
        }}
    }}
"""


def start_nginx(w, name, http):
    d = os.path.join(w.dir, name)
    os.makedirs(d)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(d=d, http=http))
    return tailnet.Proc(w.ns, "nginx", ["nginx", "-c", conf, "-p", d],
                        os.path.join(d, "nginx.out")).start()


DERP_MAP = """regions:
  {region}:
    regionid: {region}
    regioncode: lb
    regionname: Replicas
    nodes:
      - name: lb
        regionid: {region}
        hostname: {ip}
        ipv4: {ip}
        ipv6: none
        derpport: {port}
        stunport: 3481
        insecurefortests: true
"""


def meshed(server, port, stun_port, derp_map, mesh_key, mesh_url=""):
    """Config of a replica behind nginx: listens on port, its embedded DERP meshed with the
    other replicas it finds in the database (offered at mesh_url, or where the server works
    out), the DERP map naming nginx as the region's only node."""
    cfg = server.config
    server.port = port
    cfg["listen_addr"] = f"0.0.0.0:{port}"
    cfg["metrics_listen_addr"] = f"127.0.0.1:{port + 1000}"
    cfg["derp"] = {"urls": [], "paths": [derp_map], "auto_update_enabled": False,
                   "server": {"enabled": True, "region_id": tailnet.DERP_REGION,
                              "stun_listen_addr": f"0.0.0.0:{stun_port}",
                              "automatically_add_embedded_derp_region": False,
                              "verify_clients": True, "mesh_key_path": mesh_key,
                              "mesh_url": mesh_url}}
    server.write_config()


def pong_via_derp(src, dst, timeout=45):
    """A pong src → dst relayed by the replicas' region (TS_DEBUG_ALWAYS_USE_DERP: there is
    no direct path, so `tailscale ping` exits 1 even after its pongs)."""
    def ok():
        r = src.cli("ping", "--c", "2", "--timeout", "5s", dst.ip4, timeout=30)
        return "via DERP(lb)" in r.stdout

    tailnet.poll(ok, timeout, f"{src.name} → {dst.name} pong via DERP(lb)", interval=0.5)


def gauge(server, name):
    st, _, body = server.ns.http("GET", "127.0.0.1", server.port + 1000, "/metrics")
    assert st == 200, st
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in the metrics of the replica on {server.port}")


def mesh_found(server):
    """How many other replicas' relays the replica found in the database (/debug/overview)."""
    st, _, body = server.ns.http("GET", "127.0.0.1", server.port + 1000, "/debug/overview")
    assert st == 200, st
    return json.loads(body)["replica"]["derp_mesh_found"]


def test_behind_nginx_clients_relay_over_the_mesh_and_survive_a_replica(tmp_path, db):
    """Two replicas behind nginx (the clients know one URL, and nginx is their DERP region
    too); every client relays (TS_DEBUG_ALWAYS_USE_DERP), so two clients on different
    replicas reach each other only over the DERP mesh, which the replicas set up from the
    database alone (no mesh_with: A offers the address it works out, B its mesh_url). Then
    one replica is killed: its clients come back through nginx to the other with a current
    map and relay again, and the survivor drops the dead relay once its lease runs out."""
    need_postgres(db)
    d = str(tmp_path)
    derp_map = os.path.join(d, "derp-nginx.yaml")
    with open(derp_map, "w") as f:
        f.write(DERP_MAP.format(region=tailnet.DERP_REGION, ip=tailnet.SERVER_IP,
                                port=tailnet.HS_PORT))
    mesh_key = os.path.join(d, "mesh.key")
    with open(mesh_key, "w") as f:
        f.write(MESH_KEY + "\n")
    os.chmod(mesh_key, 0o600)
    peers = [f"{tailnet.SERVER_IP}:8081", f"{tailnet.SERVER_IP}:8082"]
    b_url = f"http://{tailnet.SERVER_IP}:8082/derp"

    def setup(a):
        meshed(a, 8081, 3481, derp_map, mesh_key)

    with tailnet.World(tmp_path, db, tailnet.versions()[0], server_setup=setup,
                       node_env={"TS_DEBUG_ALWAYS_USE_DERP": "true"}) as w:
        a = w.server
        b = tailnet.Server(w.ns, w.db, derp_map)
        b.config["database"] = copy.deepcopy(a.config["database"])
        b.config["noise"] = dict(a.config["noise"])
        b.url = b.config["server_url"] = a.url  # nginx: what clients dial
        meshed(b, 8082, 3482, derp_map, mesh_key, b_url)
        b.start()
        offered = re.search(r"DERP relay is offered to the others at (\S+)", a.log_text())
        assert offered and offered.group(1).endswith(":8081/derp"), a.log_text()[-2000:]
        tailnet.poll(lambda: f"mesh peer {offered.group(1)}: a replica on the database"
                     in b.log_text(), 30, "B to find A's relay in the database")
        tailnet.poll(lambda: f"mesh peer {b_url}: a replica on the database" in a.log_text(),
                     30, "A to find B's relay at its mesh_url at a lease renewal")
        tailnet.poll(lambda: (mesh_found(a), mesh_found(b)) == (1, 1), 10,
                     "/debug/overview to count the relay each replica found")
        servers = "".join(f"server {p} max_fails=1 fail_timeout=2s; " for p in peers)
        nginx = start_nginx(w, "nginx", "upstream headscale { " + servers + "}" +
                            FRONT.format(port=tailnet.HS_PORT, upstream="headscale"))
        try:
            key = a.preauth_key(a.user_id("alice"), reusable=True)
            nodes = [w.node(f"m{i}") for i in range(4)]
            for n in nodes:
                n.up(key)
            for n in nodes:
                n.wait_running()
            # nginx's round robin spread the connections: each replica holds map streams and
            # DERP clients of its own (besides the other replica's mesh connection)
            for s in (a, b):
                assert gauge(s, "headscale_control_streams") >= 1, s.port
                tailnet.poll(lambda: gauge(s, "headscale_derp_clients") >= 2, 30,
                             f"a DERP client on the replica on {s.port}")
            for x in nodes:
                for y in nodes:
                    if x is not y:
                        pong_via_derp(x, y)

            b.kill9()
            a.cli_ok("nodes", "rename", "-i", node_id(a, "m0"), "after")
            for n in nodes[1:]:
                n.wait_peer("m0", lambda p: dns_name(p) == "after", timeout=90,
                            what=f"{n.name} to get a current map after B died")
            for n in nodes[1:]:
                pong_via_derp(n, nodes[0], timeout=90)
            # B's lease (30 s) runs out: the elected A deletes it and drops its relay
            tailnet.poll(lambda: f"mesh peer {b_url}: no longer a replica on the database"
                         in a.log_text(), 60, "A to drop the dead replica's relay")
            tailnet.poll(lambda: mesh_found(a) == 0, 10, "A's count to drop to none")
        finally:
            nginx.stop()
            b.stop(check=False)


# ---------------------------------------------------------------- three replicas

# One front port per replica: its clients go there first and to the others when it is down.
THREE_UPSTREAM = """
    upstream to{i} {{
        server 127.0.0.1:{first} max_fails=1 fail_timeout=2s;
        server 127.0.0.1:{second} backup;
        server 127.0.0.1:{third} backup;
    }}
"""
FRONTS = (8090, 8091, 8092)
TAGGED = ('{"tagOwners": {"tag:srv": ["alice@"]},'
          ' "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}')


def three_nginx(w, ports, more=""):
    """nginx with a front port per replica (FRONTS[i] → ports[i], the others as backups), and
    the servers and upstreams in more."""
    http = "".join(THREE_UPSTREAM.format(i=i, first=ports[i], second=ports[(i + 1) % 3],
                                         third=ports[(i + 2) % 3]) +
                   FRONT.format(port=FRONTS[i], upstream=f"to{i}") for i in range(3))
    return start_nginx(w, "nginx3", http + more)


class Front:
    """What a Node logs in to (its login_server() reads .url): one of nginx's front ports."""
    def __init__(self, port):
        self.url = f"http://{tailnet.CONTROL_HOST}:{port}"


def homes(w, servers):
    """Node name → index in servers of the replica holding its map stream (presence rows)."""
    rows = w.db.pg.psql("SELECT n.given_name, r.name FROM presence p JOIN replicas r USING "
                        "(origin) JOIN nodes n ON n.id = p.node_id", dbname=w.server.pg_dbname)
    pids = {s.proc.pid: i for i, s in enumerate(servers) if s.proc is not None}
    out = {}
    for line in rows.splitlines():
        name, replica = line.split("|")
        out[name] = pids.get(int(replica.rsplit(":", 1)[1]))
    return out


def tags(peer):
    return list((peer or {}).get("Tags") or [])


def test_three_replicas_behind_nginx_share_changes_and_outlive_the_elected_one(tmp_path, db):
    """Three replicas behind nginx; each client enters through the front port of one replica
    (the others its backups). Changes made through A reach the clients on B and C; a node that
    joins on C is seen on A. Then A, the replica elected for the work done once, is killed
    right after a committed change: its clients come back through nginx to B or C with a map
    that has the change, the election moves, and the node that died with A goes offline in
    everyone's view within the lease."""
    need_postgres(db)
    with tailnet.World(tmp_path, db, tailnet.versions()[0]) as w:
        a = w.server
        b, c = start_replica(w, 8081), start_replica(w, 8082)
        servers = (a, b, c)
        nginx = three_nginx(w, [s.port for s in servers])
        try:
            set_policy(a, TAGGED)
            a.ensure_api_key()
            key = a.preauth_key(a.user_id("alice"), reusable=True)

            def enter(name, i):
                n = w.node(name)
                n.server = Front(FRONTS[i])
                n.up(key)
                n.wait_running()
                return n

            n1, n1b, n2, n3 = enter("n1", 0), enter("n1b", 0), enter("n2", 1), enter("n3", 2)
            want = {"n1": 0, "n1b": 0, "n2": 1, "n3": 2}
            tailnet.poll(lambda: homes(w, servers) == want, 30,
                         f"each node's stream on the replica of its front port {want}")
            for x in (n1, n2, n3):
                for y in ("n1", "n2", "n3"):
                    if x.name != y:
                        x.wait_peer(y, online, timeout=30, what=f"{y} online for {x.name}")

            # Through A: a rename of B's node, a tag on C's node, a policy for everyone.
            a.cli_ok("nodes", "rename", "-i", node_id(a, "n2"), "two")
            tailnet.poll(lambda: dns_name(n2.status()["Self"]) == "two", 30,
                         "n2 (on B) to hear its new name given on A")
            n3.wait_peer("n2", lambda p: dns_name(p) == "two", timeout=30,
                         what="n3 (on C) to see n2's new name")
            st, body = a.api("POST", f"/api/v1/node/{node_id(a, 'n3')}/tags",
                             {"tags": ["tag:srv"]})
            assert st == 200, (st, body)
            n2.wait_peer("n3", lambda p: tags(p) == ["tag:srv"], timeout=30,
                         what="n2 (on B) to see the tag given to n3 (on C) on A")
            set_policy(a, NOBODY)
            n2.wait_no_peer("n3", timeout=30)
            n3.wait_no_peer("n1", timeout=30)
            set_policy(a, TAGGED)
            n3.wait_peer("n1", timeout=30, what="n1 back for n3 (policy set on A)")

            # A node that joins on C is seen on A; expired and deleted through A, it is
            # seen expired and then gone on B and C.
            n4 = enter("n4", 2)
            n1.wait_peer("n4", online, timeout=30, what="n1 (on A) to see n4, joined on C")
            a.cli_ok("nodes", "expire", "-i", node_id(a, "n4"))
            n2.wait_peer("n4", lambda p: p.get("Expired") is True, timeout=30,
                         what="n2 (on B) to see n4 expired on A")
            a.cli_ok("nodes", "delete", "-i", node_id(a, "n4"), "--force")
            n2.wait_no_peer("n4", timeout=30)
            n3.wait_no_peer("n4", timeout=30)
            w.discard(n4, delete=False)

            # A holds the election (it started first). A change committed through A, then A
            # dies with one of its clients' hosts.
            elected = "this replica now does the work done once"
            assert elected in a.log_text() and elected not in b.log_text() + c.log_text()
            a.cli_ok("nodes", "rename", "-i", node_id(a, "n1"), "one")
            a.kill9()
            n1b.kill9()
            n2.wait_peer("n1", lambda p: dns_name(p) == "one", timeout=60,
                         what="the rename committed on A just before it died")
            n3.wait_peer("n1", lambda p: dns_name(p) == "one" and online(p), timeout=90,
                         what="n1 back online through nginx on another replica")
            tailnet.poll(lambda: homes(w, servers).get("one") in (1, 2), 30,
                         "n1's stream on B or C")
            b.cli_ok("nodes", "rename", "-i", node_id(b, "two"), "deux")
            n1.wait_peer("n2", lambda p: dns_name(p) == "deux", timeout=30,
                         what="n1, moved off A, to get a current map")
            n2.wait_peer("n1b", lambda p: not online(p), timeout=60,
                         what="n1b, gone with A, offline once A's lease ran out")
            n3.wait_peer("n1b", lambda p: not online(p), timeout=30)
            assert elected in b.log_text() + c.log_text(), "the election moved"
            assert "replicas whose lease ran out are offline" in b.log_text() + c.log_text(), \
                "the replica elected after A removes A's rows"
        finally:
            nginx.stop()
            c.stop()
            b.stop()


def given_name(w, server, node):
    return w.db.pg.psql(f"SELECT given_name FROM nodes WHERE id = {int(node)}",
                        dbname=server.pg_dbname).strip()


def test_postgres_restart_under_load_leaves_no_client_stale(tmp_path, db):
    """PostgreSQL stopped as a crash stops it and started again while both replicas take a
    stream of renames: the replicas reconnect (pool and change feed), read everything again,
    and every client ends up seeing the names the database holds, with no further change to
    carry them there."""
    with pinned_pair(tmp_path, db) as (w, b, n1, n2):
        a = w.server
        a.ensure_api_key()
        b.api_key = a.api_key  # one database, one key
        n1.wait_peer("n2")
        n2.wait_peer("n1")
        ids = {"n1": node_id(a, "n1"), "n2": node_id(a, "n2")}
        stop = threading.Event()
        done = {"ok": 0, "failed": 0}

        def rename_loop(server, name):
            i = 0
            while not stop.is_set() and i < 5000:
                i += 1
                try:
                    st, _ = server.api("POST", f"/api/v1/node/{ids[name]}/rename/{name}-{i}")
                except OSError:
                    st = 0
                done["ok" if st == 200 else "failed"] += 1

        lost = []

        def watch(node, peer):  # a database outage is no reason to tell a client a peer left
            while not stop.is_set():
                try:
                    if node.peer(peer) is None:
                        lost.append(f"{peer} left {node.name}'s peers")
                except Exception as e:  # noqa: BLE001 - a CLI hiccup is not the question
                    print("status failed:", e)
                stop.wait(0.2)

        threads = [threading.Thread(target=rename_loop, args=(s, n), daemon=True)
                   for s, n in ((a, "n1"), (b, "n2"))]
        threads += [threading.Thread(target=watch, args=(x, y), daemon=True)
                    for x, y in ((n1, "n2"), (n2, "n1"))]
        for t in threads:
            t.start()
        try:
            tailnet.poll(lambda: done["ok"] >= 20, 30, "renames going through before the restart")
            w.db.pg.restart()
            before = done["ok"]
            tailnet.poll(lambda: done["ok"] >= before + 20, 60,
                         "renames going through again after the restart")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        assert done["failed"] > 0, "the restart was not felt at all"
        assert not lost, lost[:3]

        want1, want2 = given_name(w, a, ids["n1"]), given_name(w, a, ids["n2"])
        n2.wait_peer("n1", lambda p: dns_name(p) == want1, timeout=30,
                     what=f"n2 (on B) to see n1's stored name {want1}")
        n1.wait_peer("n2", lambda p: dns_name(p) == want2, timeout=30,
                     what=f"n1 (on A) to see n2's stored name {want2}")
        tailnet.poll(lambda: dns_name(n1.status()["Self"]) == want1, 30, "n1's own name")
        tailnet.poll(lambda: dns_name(n2.status()["Self"]) == want2, 30, "n2's own name")
        for s in (a, b):
            assert "reading every user, node and policy again" in s.log_text(), s.port
        n1.wait_ping(n2.ip4)


def test_only_the_elected_replica_removes_inactive_ephemeral_nodes(tmp_path, db):
    """An ephemeral node on B whose client dies is removed once its inactivity timeout (70 s)
    has passed, by A (elected: it started first), not by every replica."""
    with pinned_pair(tmp_path, db) as (w, b, n1, n2):
        e = w.node("eph")
        e.server = b
        e.up(b.preauth_key(b.user_id("alice"), ephemeral=True))
        e.wait_running()
        n1.wait_peer("eph", online, timeout=30, what="the ephemeral node online for n1 (on A)")
        e.kill9()
        n1.wait_peer("eph", lambda p: not online(p), timeout=60)
        n1.wait_no_peer("eph", timeout=150)
        removed = "inactive: removing"
        assert removed in w.server.log_text(), "A is elected: it removes the node"
        assert removed not in b.log_text(), "B is not elected: it leaves the node to A"
        assert b.node_by_name("eph") is None


# ---------------------------------------------------------------- HA routes across replicas

HA_ROUTE = "198.19.5.0/24"
# Probes as fast as the configuration allows, so a hung router is found within seconds.
PROBES = {"node": {"routes": {"ha": {"probe_interval": "2s", "probe_timeout": "1s"}}}}
# Every replica's server_url: a round-robin front, as the one URL of a real deployment (a
# probe answered on a new connection through it would reach any replica).
ROUND_ROBIN = 8093
ALL_UPSTREAM = """
    upstream all {{ server 127.0.0.1:{0}; server 127.0.0.1:{1}; server 127.0.0.1:{2}; }}
"""


def primaries_seen(client, routers):
    """The routers client sees as primary of HA_ROUTE (one, when all is well)."""
    st = client.status()
    peers = {p.get("HostName"): p for p in (st.get("Peer") or {}).values()}
    return [r for r in routers if HA_ROUTE in (peers.get(r, {}).get("PrimaryRoutes") or [])]


def wait_primary_everywhere(clients, routers, want, timeout=60):
    tailnet.poll(lambda: all(primaries_seen(c, routers) == [want] for c in clients), timeout,
                 f"every client ({', '.join(c.name for c in clients)}) to see {want} as the "
                 f"primary of {HA_ROUTE}", interval=0.3)


def hold_primary_everywhere(clients, routers, want, seconds):
    """No client sees another primary for seconds (several probe cycles): no flap."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for c in clients:
            seen = primaries_seen(c, routers)
            assert seen == [want], f"{c.name} sees {seen} as the primary, not {want}"


def replicas_of(w, servers, name):
    """Indexes in servers of the live replicas with a map stream of node name."""
    rows = w.db.pg.psql("SELECT r.name FROM presence p JOIN replicas r USING (origin) JOIN "
                        f"nodes n ON n.id = p.node_id WHERE n.given_name = '{name}'",
                        dbname=w.server.pg_dbname)
    pids = {s.proc.pid: i for i, s in enumerate(servers) if s.proc is not None}
    return {pids.get(int(line.rsplit(":", 1)[1])) for line in rows.split()} - {None}


def published(w):
    """The primary of HA_ROUTE the elected replica published."""
    return w.db.pg.psql(f"SELECT node_id FROM route_primaries WHERE route = '{HA_ROUTE}'",
                        dbname=w.server.pg_dbname).strip()


def test_ha_primaries_are_one_decision_for_every_replica(tmp_path, db):
    """Two routers of one subnet route homed on two replicas (B and C), a client on each of
    three replicas: every client sees the same primary, and keeps seeing it while probes run
    (their answers come back to the replica that asked). The primary's tailscaled killed:
    every client moves to the standby, which keeps the route when the first comes back.
    The elected replica (A) killed: the next one starts from the published choice, and no
    client sees the route move. The primary hung (SIGSTOP, its stream stays open): the
    probes of its replica find it, and every replica's clients move to the other router."""
    need_postgres(db)
    rr = f"http://{tailnet.CONTROL_HOST}:{ROUND_ROBIN}"

    def setup(a):
        a.config["server_url"] = rr
        a.write_config()

    with tailnet.World(tmp_path, db, tailnet.versions()[0], server_overrides=PROBES,
                       server_setup=setup) as w:
        a = w.server
        b = start_replica(w, 8081, overrides=PROBES, server_url=rr)
        c = start_replica(w, 8082, overrides=PROBES, server_url=rr)
        servers = (a, b, c)
        ports = [s.port for s in servers]
        nginx = three_nginx(w, ports, ALL_UPSTREAM.format(*ports) +
                            FRONT.format(port=ROUND_ROBIN, upstream="all"))
        try:
            key = a.preauth_key(a.user_id("alice"), reusable=True)

            def enter(name, i, extra=()):
                n = w.node(name)
                n.server = Front(FRONTS[i])
                n.up(key, extra=extra)
                n.wait_running()
                return n

            advertise = [f"--advertise-routes={HA_ROUTE}"]
            r1, r2 = enter("r1", 1, advertise), enter("r2", 2, advertise)
            clients = [enter("c0", 0), enter("c1", 1), enter("c2", 2)]
            want = {"r1": 1, "r2": 2, "c0": 0, "c1": 1, "c2": 2}
            tailnet.poll(lambda: homes(w, servers) == want, 30,
                         f"each node's stream on the replica of its front port {want}")
            ids = {n.name: node_id(a, n.name) for n in (r1, r2)}
            for r in (r1, r2):
                a.cli_ok("nodes", "approve-routes", "-i", ids[r.name], "-r", HA_ROUTE)
            routers = ("r1", "r2")
            first, second = sorted(routers, key=lambda n: int(ids[n]))
            nodes = {"r1": r1, "r2": r2}

            wait_primary_everywhere(clients, routers, first)
            hold_primary_everywhere(clients, routers, first, 8)
            assert published(w) == ids[first]

            # The primary's tailscaled dies: its stream on its replica closes.
            nodes[first].kill9()
            wait_primary_everywhere(clients, routers, second)
            nodes[first].start()
            tailnet.poll(lambda: all(online(c.peer(first)) for c in clients), 60,
                         f"{first} back online for every client")
            hold_primary_everywhere(clients, routers, second, 8)
            assert published(w) == ids[second]

            # The elected replica dies (its client c0 comes back through nginx elsewhere).
            elected = "this replica now does the work done once"
            assert elected in a.log_text() and elected not in b.log_text() + c.log_text()
            a.kill9()
            tailnet.poll(lambda: elected in b.log_text() + c.log_text(), 30,
                         "the election to move to B or C")
            tailnet.poll(lambda: replicas_of(w, servers, "c0") & {1, 2}, 90,
                         "c0's stream on B or C")
            hold_primary_everywhere(clients, routers, second, 8)
            assert published(w) == ids[second]

            # The primary hangs: only its own replica can ask it; every replica's clients move.
            hung = nodes[second].proc
            hung._signal(signal.SIGSTOP)
            try:
                wait_primary_everywhere(clients, routers, first, timeout=30)
                assert published(w) == ids[first]
                assert "left a health probe unanswered" in \
                    servers[want[second]].log_text()
            finally:
                hung._signal(signal.SIGCONT)
        finally:
            nginx.stop()
            c.stop()
            b.stop()
