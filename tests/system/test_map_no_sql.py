"""No SQL on the map path (issue 13, part 1): a map request (a streaming poll, a lite update)
and the registration of a known node find their node and user in the state, which the notify
bus keeps current, not in the database. With database.debug every statement is logged: none
may read the nodes or users table for such requests. Writes stay (the client's reports and
last_seen, taken in memory and stored by the state's writer, which reads nothing back); the
requests below report nothing new, so the only statement they may cause is the stream's
last_seen update."""

from helpers import unique
from noise_client import ControlClient
from tailnet import poll


def sql_since(server, mark):
    """The statements logged after offset mark of the server's log."""
    return [line.split("store: sql: ", 1)[1] for line in server.log_text()[mark:].splitlines()
            if "store: sql: " in line]


def node_reads(stmts):
    """The statements that read nodes or users."""
    return [q for q in stmts
            if q.startswith("SELECT") and (" FROM nodes" in q or " FROM users" in q)]


def joined(server):
    user = server.create_user()
    key = server.cli_json("preauthkeys", "-u", str(user["id"]), "create", "-e", "1h")["key"]
    c = ControlClient(server.port)
    c.hostinfo = {"Hostname": unique("nosql"), "OS": "linux"}
    c.endpoints = ["192.0.2.7:41641"]
    st, _, resp = c.register(auth_key=key)
    assert st == 200 and resp.get("MachineAuthorized"), (st, resp)
    return c


def test_map_requests_and_known_registration_read_no_nodes(server_factory):
    s = server_factory(overrides={"database": {"debug": True}})
    c = joined(s)
    # The first map reports the disco key, Hostinfo and endpoints (the writer stores them).
    c.full_map()
    mark = len(s.log_text())

    assert c.lite_update() == 200
    st, _, resp = c.register()  # a known node key: tailscaled restarting
    assert st == 200 and resp.get("MachineAuthorized"), (st, resp)
    assert resp["User"]["DisplayName"], resp
    first = c.open_stream()
    assert first["Node"]["Key"] == "nodekey:" + c.node_key.hex(), first["Node"]
    # The stream's last_seen is written by the state's writer after its first map (within
    # tuning.node_write_interval): wait for it, then one more request before reading the log.
    poll(lambda: any(q.startswith("UPDATE nodes") and "last_seen" in q
                     for q in sql_since(s, mark)),
         10, "the stream's last_seen update")
    assert c.lite_update() == 200

    stmts = sql_since(s, mark)
    assert stmts, "database.debug logged no statement at all"
    assert not node_reads(stmts), node_reads(stmts)


def test_map_request_answers_unknown_and_foreign_keys_as_before(server_factory):
    s = server_factory(overrides={"database": {"debug": True}})
    c = joined(s)
    mark = len(s.log_text())

    stranger = ControlClient(s.port)  # a node key nobody registered
    st, _, body = stranger.post("/machine/map", stranger.map_request(False))
    assert st == 404, (st, body)

    thief = ControlClient(s.port)  # c's node key from another machine
    thief.node_key = c.node_key
    st, _, body = thief.post("/machine/map", thief.map_request(False))
    assert st == 401, (st, body)
    st, _, body = thief.register()
    assert st == 401, (st, body)

    assert not node_reads(sql_since(s, mark)), node_reads(sql_since(s, mark))


def test_key_rotation_finds_the_node_without_a_key_lookup(server_factory):
    """A rotation writes the new key (the bus then re-reads that row by id); the node it
    rotates is found in the state, not by a SELECT on its keys. The next map finds the node
    under its new key at once: the bus applied the write before the register answer."""
    s = server_factory(overrides={"database": {"debug": True}})
    c = joined(s)
    c.full_map()
    mark = len(s.log_text())

    old = c.new_node_key()
    st, _, resp = c.register(old_node_key=old)
    assert st == 200 and resp.get("MachineAuthorized"), (st, resp)
    m = c.full_map()
    assert m["Node"]["Key"] == "nodekey:" + c.node_key.hex(), m["Node"]

    by_key = [q for q in node_reads(sql_since(s, mark))
              if "node_key" in q.split("WHERE", 1)[-1] or
              "machine_key" in q.split("WHERE", 1)[-1]]
    assert not by_key, by_key
