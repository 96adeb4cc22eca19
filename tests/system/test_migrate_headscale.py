"""Migration in place from headscale, as an operator does it: real Tailscale clients registered
on a real headscale (v0.29.3 and v0.22.3, built into .cache/headscale/ by
tests/lib/install-headscale.sh) with two users, a node tagged by its key and one by the tags it
requested (0.22.3), an approved subnet route, an API key and (0.29) a policy in the database; headscale stopped; this server started on the very
same config.yaml, database and noise key. The clients must come back without a new login,
with their addresses and node keys, and reach each other; our CLI lists the same users and
nodes; the old API key works on our REST API; the backup is there and usable (SQLite: a file
beside the database, PostgreSQL: the schema headscale_backup).

And a database of tables we do not know is refused with a clear message and left byte for
byte as it was."""

import glob
import hashlib
import json
import os
import sqlite3

import pytest

import helpers
import tailnet

ROUTE = "10.99.0.0/24"
HS_CACHE = os.path.join(helpers.REPO, ".cache", "headscale")
# headscale 0.29 refuses clients older than 1.80; 0.22.3 predates the newest capabilities.
CLIENTS = {"v0.29.3": tailnet.versions()[0], "v0.22.3": "v1.80.3"}


def hs_bin(version):
    return os.path.join(HS_CACHE, version, "headscale")


def policy(legacy):
    at = "" if legacy else "@"
    return json.dumps({"tagOwners": {"tag:srv": [f"bob{at}"], "tag:web": [f"alice{at}"]},
                       "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]})


def db_keys(cur, legacy):
    """The database part of the config, in the layout of the headscale version."""
    db = cur["database"]
    if not legacy:
        return {"database": db}
    if db["type"] == "sqlite":
        return {"db_type": "sqlite3", "db_path": db["sqlite"]["path"]}
    pg = db["postgres"]
    return {"db_type": "postgres", "db_host": pg["host"], "db_port": pg["port"],
            "db_name": pg["name"], "db_user": pg["user"], "db_pass": pg["pass"]}


def headscale_setup(version):
    """server_setup: the config an operator of that headscale version has (one file both
    servers read), and the real headscale binary to start on it."""
    legacy = version == "v0.22.3"

    def setup(server):
        cur = server.config
        cfg = {
            "server_url": cur["server_url"], "listen_addr": cur["listen_addr"],
            "metrics_listen_addr": cur["metrics_listen_addr"],
            "noise": {"private_key_path": cur["noise"]["private_key_path"]},
            "derp": cur["derp"], "disable_check_updates": True,
            "unix_socket": cur["unix_socket"], "unix_socket_permission": "0770",
            "log": {"level": "info", "format": "text"},
            **db_keys(cur, legacy),
        }
        if legacy:
            acl = os.path.join(server.tmp, "acl.json")
            with open(acl, "w") as f:
                f.write(policy(True))
            cfg.update({
                "private_key_path": os.path.join(server.tmp, "private.key"),
                "ip_prefixes": ["fd7a:115c:a1e0::/48", "100.64.0.0/10"],
                "acl_policy_path": acl,
                "ephemeral_node_inactivity_timeout": "30m",
                "dns_config": {"override_local_dns": False, "nameservers": ["1.1.1.1"],
                               "magic_dns": True, "base_domain": "example.com"},
            })
        else:
            cfg.update({
                "prefixes": {"v4": "100.64.0.0/10", "v6": "fd7a:115c:a1e0::/48",
                             "allocation": "sequential"},
                "policy": {"mode": "database"},
                "dns": {"magic_dns": True, "base_domain": "example.com",
                        "override_local_dns": False, "nameservers": {"global": []}},
            })
        server.config = cfg
        server.write_config()
        server.binary = hs_bin(version)

    return setup


class Operator:
    """The headscale CLI steps of the setup, in the words of each version."""

    def __init__(self, server, legacy):
        self.s = server
        self.legacy = legacy

    def user(self, name):
        self.s.cli_ok("users", "create", name)
        return next(u["id"] for u in self.s.cli_json("users", "list") if u["name"] == name)

    def key(self, name, uid, tags=()):
        args = ["preauthkeys", "-u", name if self.legacy else str(uid), "create",
                "--reusable", "-e", "1h"]
        if tags:
            args += ["--tags", ",".join(tags)]
        return self.s.cli_json(*args)["key"]

    def set_policy(self):
        if self.legacy:
            return  # 0.22.3 reads it from acl_policy_path
        path = os.path.join(self.s.tmp, "policy.json")
        with open(path, "w") as f:
            f.write(policy(False))
        self.s.cli_ok("policy", "set", "-f", path)

    def approve(self, node_name):
        if self.legacy:
            routes = tailnet.poll(lambda: [r for r in self.s.cli_json("routes", "list") or []
                                           if r["prefix"] == ROUTE], 30, "the announced route")
            self.s.cli_ok("routes", "enable", "-r", routes[0]["id"])
            return routes[0]["id"]
        else:
            node = tailnet.poll(lambda: self.s.node_by_name(node_name), 30, node_name)
            self.s.cli_ok("nodes", "approve-routes", "-i", node["id"], "-r", ROUTE)
            return None

    def api_key(self):
        return self.s.cli_ok("apikeys", "create", "-e", "90d").stdout.strip().splitlines()[-1]


def routed(peer):
    return ROUTE in (peer.get("PrimaryRoutes") or [])


def view(nodes):
    """What must survive the switch, as the clients see it: addresses and node keys."""
    return {n.name: (sorted(n.ips()), n.node_key()) for n in nodes}


def server_key(w):
    """The Noise public key the control server gives clients, and its private key file."""
    st, _, body = w.ns.http("GET", tailnet.SERVER_IP, tailnet.HS_PORT, "/key?v=113")
    assert st == 200, (st, body)
    with open(w.server.config["noise"]["private_key_path"], "rb") as f:
        return json.loads(body)["publicKey"], f.read()


def check_backup(server, legacy):
    nodes_table = "machines" if legacy else "nodes"
    if server.db.kind == "sqlite":
        path = server.config.get("db_path") or server.sqlite_path  # 0.22.3's key, or ours
        baks = glob.glob(path + ".*.bak")
        assert len(baks) == 1, f"one backup beside the database, found {baks}"
        assert os.stat(baks[0]).st_mode & 0o077 == 0, "the backup holds credentials: 0600"
        con = sqlite3.connect(f"file:{baks[0]}?mode=ro", uri=True)
        try:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            return con.execute(f"SELECT count(*) FROM {nodes_table}").fetchone()[0]
        finally:
            con.close()
    out = server.db.pg.psql(f"SELECT count(*) FROM headscale_backup.{nodes_table}",
                            dbname=server.pg_dbname)
    return int(out.strip())


@pytest.mark.parametrize("version", ["v0.29.3", "v0.22.3"])
def test_migrate_from_headscale(tmp_path_factory, db, version):
    tsver = CLIENTS[version]
    if not os.access(hs_bin(version), os.X_OK):
        pytest.skip(f"no headscale {version} (tests/lib/install-headscale.sh)")
    if not tailnet.have_version(tsver):
        pytest.skip(f"no tailscale {tsver}")
    legacy = version == "v0.22.3"
    d = tmp_path_factory.mktemp(f"mig-{version}-{db.kind[:2]}")
    with tailnet.World(d, db, tsver, users=(), server_setup=headscale_setup(version)) as w:
        try:
            run_migration(w, Operator(w.server, legacy), legacy)
        except BaseException:
            print(w.logs())
            print(f"===== server log =====\n{w.server.log_tail(200)}")
            raise


def run_migration(w, op, legacy):
    s = w.server
    alice, bob = op.user("alice"), op.user("bob")
    op.set_policy()
    key_a, key_b = op.key("alice", alice), op.key("bob", bob, tags=["tag:srv"])
    router, laptop, srv = w.node("router"), w.node("laptop"), w.node("srv")
    router.up(key_a, extra=[f"--advertise-routes={ROUTE}"])
    laptop.up(key_a)
    srv.up(key_b)
    nodes = [router, laptop, srv]
    if legacy:  # 0.22.3 gave requested tags at run time and did not store them
        nodes.append(w.node("web"))
        nodes[-1].up(key_a, extra=["--advertise-tags=tag:web"])
    for n in nodes:
        n.wait_running()
    route_id = op.approve("router")
    laptop.wait_peer("router", routed, what="the approved route on headscale")
    laptop.wait_ping(router.ip4)
    api_key = op.api_key()
    before = view(nodes)
    noise_before = server_key(w)

    try:
        s.stop(check=False)  # headscale's own exit status is not ours to judge
    except AssertionError:
        pass  # 0.22.3 waits for its open long polls; it was killed, as systemd would
    if legacy:
        duplicate_route(s)
    s.binary = helpers.HS_BIN
    s.start()
    # headscale's noise key file is read as it is, so clients talk to the same server key.
    assert server_key(w) == noise_before

    # The clients come back by themselves: same addresses, same node keys (no new login).
    for n in nodes:
        n.wait_running(timeout=90)
    tailnet.poll(lambda: view(nodes) == before, 60, "the clients' addresses and keys as before")
    laptop.wait_peer("router", routed, timeout=90, what="the approved route on ours")
    laptop.wait_ping(router.ip4, timeout=90)
    srv.wait_ping(laptop.ip4, timeout=90)
    assert all(n.state() == "Running" for n in nodes)

    assert sorted(u["name"] for u in s.cli_json("users", "list")) == ["alice", "bob"]
    # New rows take ids after the imported ones (PostgreSQL: the sequences were moved on).
    s.cli_ok("users", "create", "carol")
    assert {u["name"]: int(u["id"]) for u in s.cli_json("users", "list")}["carol"] == 3
    listed = {n["given_name"]: n for n in s.cli_json("nodes", "list")}
    assert set(listed) == {n.name for n in nodes}, listed
    for n in nodes:
        got = listed[n.name]["ip_addresses"]
        assert sorted(got) == before[n.name][0], listed[n.name]
    assert listed["srv"]["tags"] == ["tag:srv"], listed["srv"]
    if legacy:
        assert listed["web"]["tags"] == ["tag:web"], listed["web"]
    assert listed["laptop"]["user"]["name"] == "alice"
    assert ROUTE in listed["router"]["approved_routes"], listed["router"]
    if legacy:  # the duplicate row was folded into the first: one route, its id, enabled
        rows = [r for r in s.cli_json("routes", "list") if r["prefix"] == ROUTE]
        assert [(str(r["id"]), r["enabled"]) for r in rows] == [(str(route_id), True)], rows

    st, body = s.api("GET", "/api/v1/node", key=api_key)
    assert st == 200 and len(body["nodes"]) == len(nodes), (st, body)
    assert s.api("GET", "/api/v1/node", key=api_key[:-1] + ("A" if api_key[-1] != "A"
                                                            else "B"))[0] == 401
    if not legacy:
        assert json.loads(s.cli_ok("policy", "get").stdout)["tagOwners"]["tag:srv"] == ["bob@"]
    assert check_backup(s, legacy) == len(nodes)
    # A restart finds our schema and imports nothing again.
    s.stop()
    s.start()
    assert s.log_text().count("importing it") == 1
    assert len(s.cli_json("nodes", "list")) == len(nodes)


def duplicate_route(server):
    """0.22.3 had no unique key on (machine, prefix): two map requests announcing a route at
    once could both add it (seen in CI). Make sure the import meets such a pair: a second,
    disabled row for the approved route."""
    sql = ("INSERT INTO routes (created_at, updated_at, machine_id, prefix, advertised,"
           " enabled, is_primary) SELECT created_at, updated_at, machine_id, prefix, advertised,"
           " false, false FROM routes WHERE prefix = '%s'" % ROUTE)
    if server.db.kind == "sqlite":
        con = sqlite3.connect(server.config["db_path"])
        try:
            con.execute(sql + " LIMIT 1")
            con.commit()
        finally:
            con.close()
    else:
        server.db.pg.psql(sql + " LIMIT 1", dbname=server.pg_dbname)


def file_digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def pg_dump(server):
    """The database as pg_dump prints it, without the random key of its \\restrict lines."""
    return [line for line in server.db.pg.dump(server.pg_dbname).splitlines()
            if not line.startswith((b"\\restrict", b"\\unrestrict"))]


def test_unknown_database_is_refused(db, server_factory):
    s = server_factory(start=False)
    if db.kind == "sqlite":
        con = sqlite3.connect(s.sqlite_path)
        con.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
        con.execute("INSERT INTO invoices VALUES (1, 2.5)")
        con.commit()
        con.close()
        before = file_digest(s.sqlite_path)
    else:
        s.db.pg.psql("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL);"
                     "INSERT INTO invoices VALUES (1, 2.5)", dbname=s.pg_dbname)
        before = pg_dump(s)
    p = s.spawn()
    rc = p.wait(timeout=helpers.START_DEADLINE)
    assert rc != 0, "the server must not start on a database it does not know"
    log = s.log_text()
    assert "refusing the database" in log and "invoices" in log and "left untouched" in log, log
    if db.kind == "sqlite":
        assert file_digest(s.sqlite_path) == before
        assert not glob.glob(s.sqlite_path + "*.bak")
        assert not os.path.exists(s.sqlite_path + "-wal")
    else:
        assert pg_dump(s) == before
