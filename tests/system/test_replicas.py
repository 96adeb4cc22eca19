"""Replicas: several `headscale serve` processes on one PostgreSQL database (the same database
and noise key, nothing else shared) are one server. Real clients are pinned each to one replica
(its own --login-server), so the test knows which replica serves whom: a node registered on B
is a peer of a client on A; an operator's change on one replica (rename, policy, delete)
reaches clients on the other; announcements missed while a replica's listening connection was
down are found from the change numbers and everything is read again.

SQLite serves one process: a second `serve` on the same file is refused."""

import copy
import os
import signal

import pytest

import helpers
import tailnet

ALLOW_ALL = '{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}'
NOBODY = '{"acls": []}'


def need_postgres(db):
    if db.kind != "postgres":
        pytest.skip("replicas share a PostgreSQL database (SQLite: see the refusal test)")


def start_replica(w, port):
    """Another serve on w's database and noise key, listening on port."""
    a = w.server
    r = tailnet.Server(w.ns, w.db, os.path.join(w.dir, "derpmap.yaml"))
    cfg = r.config
    cfg["database"] = copy.deepcopy(a.config["database"])
    cfg["noise"] = dict(a.config["noise"])
    cfg["listen_addr"] = f"0.0.0.0:{port}"
    cfg["metrics_listen_addr"] = f"127.0.0.1:{port + 1000}"
    r.port = port
    r.url = cfg["server_url"] = f"http://{tailnet.CONTROL_HOST}:{port}"
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


def dns_name(peer):
    return (peer or {}).get("DNSName", "").split(".")[0]


def test_change_on_one_replica_reaches_clients_on_another(tmp_path, db):
    need_postgres(db)
    with tailnet.World(tmp_path, db, tailnet.versions()[0]) as w:
        b = start_replica(w, 8081)
        try:
            n1 = join(w, "n1", w.server)
            n2 = join(w, "n2", b)
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
        finally:
            b.stop()


def test_missed_announcements_are_read_again(tmp_path, db):
    need_postgres(db)
    with tailnet.World(tmp_path, db, tailnet.versions()[0]) as w:
        b = start_replica(w, 8081)
        try:
            n1 = join(w, "n1", w.server)
            n2 = join(w, "n2", b)
            n2.wait_peer("n1")
            # B stopped, its listening connection closed by the database, then a change on A:
            # its announcement cannot reach B. B, continued, reconnects and must notice.
            os.kill(b.proc.pid, signal.SIGSTOP)
            try:
                killed = w.db.pg.psql("SELECT count(pg_terminate_backend(pid)) FROM "
                                      "pg_stat_activity WHERE application_name = "
                                      "'headscale feed'", dbname=w.server.pg_dbname)
                assert int(killed.strip()) == 2, killed  # A's and B's
                w.server.cli_ok("nodes", "rename", "-i", node_id(w.server, "n1"), "renamed")
            finally:
                os.kill(b.proc.pid, signal.SIGCONT)
            n2.wait_peer("n1", lambda p: dns_name(p) == "renamed", timeout=30,
                         what="n2 (on B) to see the rename B missed")
            assert "reading every user, node and policy again" in b.log_text()
        finally:
            b.stop()


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
    need_postgres(db)
    with tailnet.World(tmp_path, db, tailnet.versions()[0]) as w:
        b = start_replica(w, 8081)
        try:
            n1 = join(w, "n1", w.server)
            n2 = join(w, "n2", b)
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
        finally:
            b.stop(check=False)
