"""/metrics on metrics_listen_addr (issue 16): a listener of its own serving the Prometheus text
format (0.0.4) and /health, nothing else. The text is read by prometheus_client's parser and
checked line by line against the format (# HELP and # TYPE before each family's samples,
counters ending in _total); headscale's metric names where headscale has the measure
(headscale_nodestore_nodes, headscale_mapresponse_sent_total), ours with the headscale_ prefix
otherwise, and the process_ metrics. A node registering with a pre-auth key and opening a map
stream (noise_client) moves the connection, session, online and map counts; its stream
closing moves them back. DERP clients (derp_client, over plain HTTP) move the embedded relay's
counts. The main listener has no /metrics."""

import copy
import http.client
import json
import re
import socket
import time

import pytest

import derp_client as dc
from helpers import free_port, parse_time, unique
from noise_client import ControlClient

prom = pytest.importorskip("prometheus_client.parser",
                           reason="needs prometheus_client (deploy/install-deps.sh)")
pytest.importorskip("h2", reason="needs the h2 package (pip install h2)")
pytest.importorskip("nacl", reason="needs PyNaCl for the DERP client (pip install pynacl)")

# Family names as the parser gives them (a counter's without _total) and their types.
FAMILIES = {
    "headscale_nodestore_nodes": "gauge",
    "headscale_nodes_online": "gauge",
    "headscale_policy_compiles": "counter",
    "headscale_policy_compile_seconds": "counter",
    "headscale_map_sessions": "gauge",
    "headscale_mapresponse_sent": "counter",
    "headscale_mapresponse_sent_bytes": "counter",
    "headscale_mapresponse_ended": "counter",
    "headscale_mapresponse_endpoint_updates": "counter",
    "headscale_map_batch_window_seconds": "histogram",
    "headscale_map_batch_duration_seconds": "histogram",
    "headscale_map_batch_size": "histogram",
    "headscale_store_operation_duration_seconds": "histogram",
    "headscale_registrations": "counter",
    "headscale_control_connections": "gauge",
    "headscale_control_connections_accepted": "counter",
    "headscale_control_streams": "gauge",
    "headscale_control_requests": "counter",
    "headscale_control_bad_frames": "counter",
    "process_cpu_seconds": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_start_time_seconds": "gauge",
}

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-z_]+="[^"\\\n]*"(,[a-z_]+="[^"\\\n]*")*\})?'
                    r' (-?[0-9.e+-]+|NaN|[+-]Inf)$')


def get(addr, path, method="GET"):
    host, port = addr.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.getheader("Content-Type"), r.read()
    finally:
        c.close()


def check_format(text):
    """Every line is # HELP, # TYPE or a sample of the family announced just before it."""
    helped, typed, family = set(), {}, None
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in helped, f"{name}: two families"
            helped.add(name)
            family = None
        elif line.startswith("# TYPE "):
            _, _, name, typ = line.split()
            assert name in helped and name not in typed, line
            assert typ in ("counter", "gauge", "histogram"), line
            assert typ != "counter" or name.endswith("_total"), f"counter {name} lacks _total"
            typed[name] = typ
            family = name
        else:
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name = m.group(1)
            if typed.get(family) == "histogram":
                name = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name == family, f"{line!r} outside its family ({family})"
    return typed


def scrape(s):
    st, ctype, body = get(s.config["metrics_listen_addr"], "/metrics")
    assert st == 200, body
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    text = body.decode()
    check_format(text)
    return {f.name: f for f in prom.text_string_to_metric_families(text)}


def value(fams, family, **labels):
    (v,) = [x.value for x in fams[family].samples
            if all(x.labels.get(k) == w for k, w in labels.items())]
    return v


def histogram(fams, family, **labels):
    """(count, sum) of one histogram, after checking its buckets: le ascending, counts
    cumulative, +Inf equal to _count."""
    samples = [x for x in fams[family].samples
               if all(x.labels.get(k) == w for k, w in labels.items())]
    buckets = [(float(x.labels["le"]), x.value) for x in samples
               if x.name == family + "_bucket"]
    (count,) = [x.value for x in samples if x.name == family + "_count"]
    (total,) = [x.value for x in samples if x.name == family + "_sum"]
    assert len(buckets) >= 2 and buckets[-1][0] == float("inf"), buckets
    assert [b[0] for b in buckets] == sorted(b[0] for b in buckets), buckets
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), f"not cumulative: {buckets}"
    assert buckets[-1][1] == count, (buckets, count)
    assert total >= 0
    return count, total


def wait_for(pred, what, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def registered_client(s, key):
    c = ControlClient(s.port)
    c.hostinfo = {"Hostname": unique("m"), "OS": "linux"}
    st, _, resp = c.register(auth_key=key)
    assert st == 200 and resp.get("MachineAuthorized"), (st, resp)
    return c


def test_metrics_families_and_types(server_factory):
    s = server_factory()
    fams = scrape(s)
    for name, typ in FAMILIES.items():
        assert name in fams, f"{name} missing"
        assert fams[name].type == typ, (name, fams[name].type)
    assert not [n for n in fams if n.startswith("headscale_derp_")], "DERP is off"
    kinds = {x.labels["type"] for x in fams["headscale_mapresponse_sent"].samples}
    assert kinds == {"full", "delta", "keepalive"}, kinds
    kinds = {x.labels["type"] for x in fams["headscale_mapresponse_sent_bytes"].samples}
    assert kinds == {"full", "delta", "keepalive"}, kinds
    assert value(fams, "headscale_nodestore_nodes") == 0
    assert value(fams, "headscale_map_sessions") == 0
    assert value(fams, "process_resident_memory_bytes") > 1 << 20
    assert 3 < value(fams, "process_open_fds") <= value(fams, "process_max_fds")
    assert time.time() - 600 < value(fams, "process_start_time_seconds") <= time.time()
    assert value(fams, "process_cpu_seconds") > 0

    maddr, main = s.config["metrics_listen_addr"], f"127.0.0.1:{s.port}"
    # /health as the main listener answers it; nothing else here, no /metrics there.
    assert get(maddr, "/health") == get(main, "/health")
    # headscale's answer to the byte: its JSON encoder ends the body with a newline
    assert get(maddr, "/health") == (200, "application/health+json; charset=utf-8",
                                     b'{"status":"pass"}\n')
    for path in ("/", "/key?v=113", "/api/v1/user", "/metrics/"):
        assert get(maddr, path)[0] == 404, path
    assert get(maddr, "/metrics", "POST")[0] == 405
    assert get(main, "/metrics")[0] == 404


def test_metrics_move_with_a_connected_node(server_factory):
    s = server_factory(overrides={"tuning": {"keepalive_interval": "1s"}})
    user = s.create_user()
    key = s.cli_json("preauthkeys", "-u", str(user["id"]), "create", "--reusable",
                     "-e", "1h")["key"]
    before = scrape(s)
    a = registered_client(s, key)
    a.open_stream(require_peers=False)
    # The session is listed a moment before its node is marked online.
    fams = wait_for(lambda: (f := scrape(s)) and value(f, "headscale_map_sessions") == 1 and
                    value(f, "headscale_nodes_online") == 1 and f, "the stream to count")
    assert value(fams, "headscale_nodestore_nodes") == 1
    assert value(fams, "headscale_nodes_online") == 1
    assert value(fams, "headscale_control_connections") >= 1
    assert value(fams, "headscale_control_streams") >= 1
    # /key is plain HTTP; the register request and the stream each came on a Noise connection.
    assert value(fams, "headscale_control_connections_accepted") >= \
        value(before, "headscale_control_connections_accepted") + 2
    assert value(fams, "headscale_control_requests") >= \
        value(before, "headscale_control_requests") + 2
    assert value(fams, "headscale_mapresponse_sent", type="full") >= \
        value(before, "headscale_mapresponse_sent", type="full") + 1
    # A full map carries at least the node itself, DERP map and DNS: hundreds of bytes.
    assert value(fams, "headscale_mapresponse_sent_bytes", type="full") >= \
        value(before, "headscale_mapresponse_sent_bytes", type="full") + 300
    # A new node has the policy compiled for it (and the clock moved doing it).
    assert value(fams, "headscale_policy_compiles") > value(before, "headscale_policy_compiles")
    assert value(fams, "headscale_policy_compile_seconds") > \
        value(before, "headscale_policy_compile_seconds")

    # Keep-alives go out on the open stream (tuning.keepalive_interval: 1s).
    fams = wait_for(lambda: (f := scrape(s)) and
                    value(f, "headscale_mapresponse_sent", type="keepalive") >= 1 and f,
                    "a keep-alive to count")
    assert value(fams, "headscale_mapresponse_sent_bytes", type="keepalive") >= \
        5 * value(fams, "headscale_mapresponse_sent", type="keepalive")  # a length, a JSON object
    # A second node: the first hears of it as a delta, sent in a batch.
    mid = scrape(s)
    b = registered_client(s, key)
    b.open_stream()
    # A message is counted as it is queued, its batch once the whole batch is out: wait for both.
    seen = {}

    def second_told():
        f = scrape(s)
        seen.update(online=value(f, "headscale_nodes_online"),
                    deltas=value(f, "headscale_mapresponse_sent", type="delta"),
                    batches=histogram(f, "headscale_map_batch_size")[0])
        return f if (seen["online"] == 2 and seen["deltas"] > want["deltas"] and
                     seen["batches"] > want["batches"]) else None

    want = {"deltas": value(mid, "headscale_mapresponse_sent", type="delta"),
            "batches": histogram(mid, "headscale_map_batch_size")[0]}
    try:
        fams = wait_for(second_told, "the second node online and a delta to the first")
    except AssertionError as e:  # which of the three never came, for the next look at it
        raise AssertionError(f"{e}: last seen {seen}, before {want}") from None
    assert value(fams, "headscale_map_sessions") == 2
    batches, nodes = histogram(fams, "headscale_map_batch_size")
    batches_mid, nodes_mid = histogram(mid, "headscale_map_batch_size")
    assert batches > batches_mid and nodes > nodes_mid, (batches, nodes, batches_mid, nodes_mid)
    assert histogram(fams, "headscale_map_batch_duration_seconds")[0] == batches
    # Each batch that carried a node change timed how long the first one waited.
    windows, waited = histogram(fams, "headscale_map_batch_window_seconds")
    assert windows > histogram(mid, "headscale_map_batch_window_seconds")[0]
    assert 0 < waited < 60 * windows
    assert value(fams, "headscale_mapresponse_sent_bytes", type="delta") > \
        value(mid, "headscale_mapresponse_sent_bytes", type="delta")

    # The first stream closes: the counts go back.
    a.sock.close()
    fams = wait_for(lambda: (f := scrape(s)) and value(f, "headscale_map_sessions") == 1 and
                    value(f, "headscale_nodes_online") == 1 and f, "the closed stream to go")
    assert value(fams, "headscale_nodestore_nodes") == 2
    assert value(fams, "headscale_mapresponse_ended", reason="done") == \
        value(before, "headscale_mapresponse_ended", reason="done") + 1

    # A lite update (OmitPeers, no stream) is headscale's endpoint update.
    assert b.lite_update() == 200
    assert value(scrape(s), "headscale_mapresponse_endpoint_updates", status="ok") == \
        value(before, "headscale_mapresponse_endpoint_updates", status="ok") + 1

    # Registrations by outcome: the two key logins above, a bad key, a pending login.
    def regs(f, auth, status):
        return value(f, "headscale_registrations", auth=auth, status=status)
    bad = ControlClient(s.port)
    st, _, resp = bad.register(auth_key="hskey-auth-" + "x" * 60)
    assert st != 200 or not resp.get("MachineAuthorized"), resp
    st, _, resp = ControlClient(s.port).register()
    assert st == 200 and resp.get("AuthURL"), resp
    fams = scrape(s)
    assert regs(fams, "authkey", "ok") == regs(before, "authkey", "ok") + 2
    assert regs(fams, "authkey", "refused") == regs(before, "authkey", "refused") + 1
    assert regs(fams, "interactive", "pending") == regs(before, "interactive", "pending") + 1
    b.sock.close()
    s.check_sanitizers()


STORE_OPS = ("select", "insert", "update", "delete", "other", "commit")


def test_store_latency_moves_with_writes(server_factory):
    s = server_factory()
    before = scrape(s)
    for op in STORE_OPS:
        histogram(before, "headscale_store_operation_duration_seconds", operation=op)
    s.create_user()
    fams = scrape(s)
    for op in ("insert", "commit", "select"):
        n0, t0 = histogram(before, "headscale_store_operation_duration_seconds", operation=op)
        n1, t1 = histogram(fams, "headscale_store_operation_duration_seconds", operation=op)
        assert n1 > n0 and t1 > t0, (op, n0, n1, t0, t1)
    # A rename is an UPDATE; a delete a DELETE: each moves its own kind.
    user = s.create_user()
    first = scrape(s)
    s.cli_ok("users", "rename", "-i", str(user["id"]), "-r", unique("r"))
    mid = scrape(s)
    s.cli_ok("users", "destroy", "-i", str(user["id"]), "--force")
    fams = scrape(s)
    for op, f0, f1 in (("update", first, mid), ("delete", mid, fams)):
        assert histogram(f1, "headscale_store_operation_duration_seconds", operation=op)[0] > \
            histogram(f0, "headscale_store_operation_duration_seconds", operation=op)[0], op
    s.check_sanitizers()


def debug_page(s, path):
    st, ctype, body = get(s.config["metrics_listen_addr"], path)
    assert ctype.startswith("application/json"), (path, ctype)
    return st, json.loads(body), body.decode()


def test_debug_pages_and_cancelled_streams(server_factory, db):
    s = server_factory()
    user = s.create_user()
    key = s.cli_json("preauthkeys", "-u", str(user["id"]), "create", "--reusable",
                     "-e", "1h")["key"]
    before = scrape(s)
    a, b = registered_client(s, key), registered_client(s, key)
    a.hostinfo["IPNVersion"] = "1.102.3-debugtest"
    first = a.open_stream(require_peers=False)
    node_id = first["Node"]["ID"]
    wait_for(lambda: value(scrape(s), "headscale_nodes_online") == 1, "the stream to count")

    st, ov, _ = debug_page(s, "/debug/overview")
    assert st == 200, ov
    assert ov["nodes"] == {"total": 2, "online": 1, "expired": 0, "ephemeral": 0}, ov
    assert ov["users"] == {user["name"]: 2} and ov["total_users"] == 1, ov
    assert ov["sessions"] == 1, ov
    assert ov["policy"]["mode"] == s.config.get("policy", {}).get("mode", "file"), ov
    assert ov["policy_version"] >= 1 and ov["primary_routes"] == 0, ov
    assert ov["derp"]["configured"] is (ov["derp"]["regions"] > 0), ov
    if db.kind == "postgres":  # the feed connects on its own thread: poll for it
        ov = wait_for(lambda: (o := debug_page(s, "/debug/overview")[1])["replica"]["listening"]
                      and o, "the replica feed to connect")
        assert ":" in ov["replica"]["id"] and ov["replica"]["applied_change"] > 0, ov
    else:
        assert ov["replica"] is None, ov

    st, bat, _ = debug_page(s, "/debug/batcher")
    assert st == 200 and bat == {"connected_nodes": {str(node_id): {
        "connected": True, "active_connections": 1}}, "total_nodes": 1}, bat
    st, derp, _ = debug_page(s, "/debug/derp")
    assert st == 200 and derp["configured"] == ov["derp"]["configured"], derp
    assert derp["total_regions"] == len(derp["regions"]) == ov["derp"]["regions"], derp

    st, node, text = debug_page(s, f"/debug/node?id={node_id}")
    assert st == 200, node
    assert node["id"] == node_id and node["online"] and node["user"] == user["name"], node
    assert node["client_version"] == "1.102.3-debugtest" and node["os"] == "linux", node
    (sess,) = node["sessions"]
    # The full map first, then perhaps a delta (its own coming online)
    assert sess["last_map_kind"] in ("full", "delta") and sess["messages_sent"] >= 1, sess
    assert sess["bytes_sent"] >= 300 and sess["capability_version"] == a.capver, sess
    assert abs(time.time() - parse_time(sess["opened_at"]).timestamp()) < 120, sess
    # Public facts only: not even the node's public keys.
    for k in (a.node_key, a.disco_key):
        assert k.hex() not in text and k.hex() not in json.dumps(ov), "a key on /debug"
    assert "privkey" not in text
    assert debug_page(s, "/debug/node?id=x")[0] == 400
    assert debug_page(s, "/debug/node")[0] == 400
    assert debug_page(s, "/debug/node?id=999999")[0] == 404
    assert get(s.config["metrics_listen_addr"], "/debug/nothing")[0] == 404
    assert get(f"127.0.0.1:{s.port}", "/debug/overview")[0] == 404

    # Deleting the node ends its stream from our side: headscale's "cancelled", not "done".
    s.cli_ok("nodes", "delete", "-i", str(node_id), "--force")
    fams = wait_for(lambda: (f := scrape(s)) and value(f, "headscale_map_sessions") == 0 and f,
                    "the deleted node's stream to end")
    assert value(fams, "headscale_mapresponse_ended", reason="cancelled") == \
        value(before, "headscale_mapresponse_ended", reason="cancelled") + 1
    assert value(fams, "headscale_mapresponse_ended", reason="done") == \
        value(before, "headscale_mapresponse_ended", reason="done")
    assert debug_page(s, "/debug/batcher")[1]["total_nodes"] == 0
    del b
    s.check_sanitizers()


MESH_FWD = "headscale_derp_mesh_packets_forwarded"


def test_derp_mesh_metrics_move_with_forwarded_packets(server_factory, tmp_path):
    from test_derp_mesh import meshed_pair
    a, b, a1, b1 = meshed_pair(server_factory, tmp_path)  # packets crossed both ways
    try:
        for s in (a, b):
            fams = wait_for(lambda: (f := scrape(s)) and
                            value(f, "headscale_derp_mesh_watchers") == 1 and f,
                            "the other server to watch this one")
            assert value(fams, "headscale_derp_mesh_peers") == 1
            assert fams["headscale_derp_mesh_peers"].type == "gauge"
            assert value(fams, MESH_FWD, direction="out") >= 1
            assert value(fams, MESH_FWD, direction="in") >= 1
        out_a = value(scrape(a), MESH_FWD, direction="out")
        in_b = value(scrape(b), MESH_FWD, direction="in")
        in_a = value(scrape(a), MESH_FWD, direction="in")
        payload = b"m" * 64
        a1.send_packet(b1.pub, payload)
        assert b1.recv_packet(timeout=5) == (a1.pub, payload)
        # One packet a1 → b1: out of a once, into b once, nothing into a.
        assert value(scrape(a), MESH_FWD, direction="out") == out_a + 1
        assert value(scrape(b), MESH_FWD, direction="in") == in_b + 1
        assert value(scrape(a), MESH_FWD, direction="in") == in_a
    finally:
        a1.close(), b1.close()
    b.stop()
    fams = wait_for(lambda: (f := scrape(a)) and value(f, "headscale_derp_mesh_peers") == 0 and
                    value(f, "headscale_derp_mesh_watchers") == 0 and f,
                    "a to see b's links go")
    a.check_sanitizers()


LAG = "headscale_replica_notify_lag_seconds"


def test_notify_lag_between_replicas(server_factory, db):
    a = server_factory()
    if db.kind == "sqlite":  # one server, no feed: nothing to measure
        assert LAG not in scrape(a)
        return
    b = server_factory(start=False, api_key=False)
    b.config["database"] = copy.deepcopy(a.config["database"])
    b.write_config()
    b.start()
    wait_for(lambda: debug_page(b, "/debug/overview")[1]["replica"]["listening"],
             "replica B to listen to the others")
    before = histogram(scrape(b), LAG)
    applied = debug_page(b, "/debug/overview")[1]["replica"]["applied_change"]
    a.create_user()
    a.create_user()
    fams = wait_for(lambda: (f := scrape(b)) and histogram(f, LAG)[0] >= before[0] + 2 and f,
                    "B to time A's two changes")
    n, total = histogram(fams, LAG)
    # From A's clock before its commit to B passing the change on: on one host, well under
    # a few seconds each, and not nothing.
    assert 0 < total - before[1] < 5 * (n - before[0]), (n, total, before)
    assert debug_page(b, "/debug/overview")[1]["replica"]["applied_change"] >= applied + 2
    b.check_sanitizers()
    a.check_sanitizers()


def test_metrics_address_taken_stops_the_start(server_factory):
    s = server_factory(start=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        s.config["metrics_listen_addr"] = "127.0.0.1:%d" % taken.getsockname()[1]
        s.write_config()
        proc = s.spawn()
        try:
            assert proc.wait(timeout=30) != 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert "cannot listen on " + s.config["metrics_listen_addr"] in s.log_text(), s.log_tail()
    s.check_sanitizers()


def test_derp_metrics_move_with_relay_clients(server_factory):
    s = server_factory(overrides={"derp": {"server": {
        "enabled": True, "stun_listen_addr": f"127.0.0.1:{free_port()}",
        "verify_clients": False}}}, start=False)
    s.config["derp"]["server"]["private_key_path"] = s.tmp + "/derp.key"
    s.write_config()
    s.start()
    fams = scrape(s)
    for name in ("headscale_derp_clients", "headscale_derp_packets_relayed",
                 "headscale_derp_bytes_relayed", "headscale_derp_packets_dropped",
                 "headscale_derp_bad_frames"):
        assert name in fams, name
    assert fams["headscale_derp_clients"].type == "gauge"
    assert value(fams, "headscale_derp_clients") == 0

    a, b = (dc.DerpConn(socket.create_connection(("127.0.0.1", s.port), timeout=10),
                        f"127.0.0.1:{s.port}") for _ in range(2))
    a.handshake()
    b.handshake()
    a.send_packet(b.pub, b"x" * 100)
    assert b.recv_packet() == (a.pub, b"x" * 100)
    a.send_packet(bytes(32), b"nobody")  # no such client: dropped
    fams = wait_for(lambda: (f := scrape(s)) and
                    value(f, "headscale_derp_packets_dropped") >= 1 and f, "a drop to count")
    assert value(fams, "headscale_derp_clients") == 2
    assert value(fams, "headscale_derp_packets_relayed") == 1
    assert value(fams, "headscale_derp_bytes_relayed") == 100
    a.close()
    wait_for(lambda: value(scrape(s), "headscale_derp_clients") == 1, "the client to go")
    b.close()
    s.check_sanitizers()
