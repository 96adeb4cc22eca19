"""Faults, each with an asserted outcome.

While writing: `headscale serve` killed with SIGKILL in the middle of a stream of writes keeps
every write it answered (nothing committed is lost) and starts again on an intact database; on
SQLite, a full disk refuses writes with a clear error, changes nothing, and writes work again
once there is room.

On the network (PostgreSQL restarts are in test_replicas.py):
- PostgreSQL partitioned away (its packets dropped, nothing closed): two replicas notice
  within database.postgres.unreachable_timeout plus their feed's 2 s check, an admin write
  fails with a clear error and changes nothing, clients keep their maps and streams, and once
  the link is back a change reaches every client and nothing committed before is lost.
- Half-open TCP: a client whose network vanishes (no FIN, no RST) loses its map stream, is
  offline for its peers, and its DERP connection goes, within
  tuning.unreachable_client_timeout plus a little.
- A client that stops reading its map stream while maps pile up is cut off at the per-stream
  backlog (CONTROL_MAX_STREAM_BACKLOG) with a log line, the server's memory stays bounded and
  a client that reads gets its maps promptly. A DERP client that stops reading while another
  floods it loses packets past its queue (DERP_TX_PACKET_LIMIT) and is closed with a log line,
  the server's memory stays bounded, others relay meanwhile (PeerGone and the TLS case:
  test_derp_relay.py)."""

import json
import os
import random
import socket
import sqlite3
import subprocess
import threading
import time

import pytest

import derp_client as dc
import helpers
import tailnet
from helpers import unique
from tailnet import poll
from test_replicas import dns_name, join, node_id, start_replica


class Writer(threading.Thread):
    """Creates users, each with a pre-auth key, until stopped or the server stops answering;
    remembers what the server said it stored."""

    def __init__(self, s, prefix):
        super().__init__(daemon=True)
        self.s, self.prefix = s, prefix
        self.users, self.keys = [], []
        self.stop = threading.Event()

    def run(self):
        for i in range(2000):
            if self.stop.is_set():
                return
            try:
                st, body = self.s.api("POST", "/api/v1/user", {"name": f"{self.prefix}{i}"})
                if st != 200:
                    return
                self.users.append(body["user"]["name"])
                st, body = self.s.api("POST", "/api/v1/preauthkey",
                                      {"user": body["user"]["id"], "reusable": True})
                if st != 200:
                    return
                self.keys.append(body["preAuthKey"]["id"])
            except OSError:
                return


def sqlite_intact(path):
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


def test_kill9_during_writes_keeps_every_answered_write(server_factory, db):
    s = server_factory()
    rng = random.Random()
    for rnd in range(3):
        w = Writer(s, f"k{rnd}-")
        w.start()
        target = rng.randint(3, 30)  # a random point in the stream of writes
        poll(lambda: len(w.keys) >= target, 30, f"{target} writes answered", interval=0.05)
        s.kill9()
        w.join(timeout=30)
        assert not w.is_alive()
        if db.kind == "sqlite":
            assert sqlite_intact(s.sqlite_path)
        s.start()
        stored_users = set(s.user_names())
        lost = [u for u in w.users if u not in stored_users]
        assert not lost, f"round {rnd}: answered but lost after kill -9: {lost}"
        stored_keys = {str(k["id"]) for k in s.preauthkeys()}
        lost = [k for k in w.keys if str(k) not in stored_keys]
        assert not lost, f"round {rnd}: pre-auth keys answered but lost: {lost}"
    assert s.api("POST", "/api/v1/user", {"name": unique("after")})[0] == 200


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs for the database (root in the test's mount namespace is enough)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def fill(path):
    """Fills the file system of path; returns the filler file."""
    filler = os.path.join(path, "filler")
    with open(filler, "wb") as f:
        try:
            for _ in range(64):
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            pass
    return filler


def test_full_disk_refuses_writes_and_recovers(server_factory, db, small_disk):
    if db.kind != "sqlite":
        pytest.skip("the database file is ours only on SQLite")
    s = server_factory(start=False, overrides={"database": {"sqlite": {
        "path": os.path.join(small_disk, "db.sqlite")}}})
    s.start()
    s.ensure_api_key()
    before = s.user_names()
    filler = fill(small_disk)
    refused = 0
    for i in range(200):  # past whatever the WAL and the page cache still absorb
        st, body = s.api("POST", "/api/v1/user", {"name": f"full{i}"})
        if st != 200:
            refused += 1
            assert st == 500 and "disk is full" in body.get("message", ""), (st, body)
            break
    assert refused, "a full disk took 200 new users"
    assert "disk is full" in s.log_text() or "database or disk is full" in s.log_text()
    assert s.api("GET", "/api/v1/user")[0] == 200, "reads still work"
    os.unlink(filler)
    st, body = s.api("POST", "/api/v1/user", {"name": "roomy"})
    assert st == 200, (st, body)
    names = s.user_names()
    assert "roomy" in names and set(before) <= set(names)
    s.stop()
    assert sqlite_intact(s.sqlite_path)
    s.start()
    assert "roomy" in s.user_names()


# ---- the network ----

def need_clients():
    if os.geteuid() != 0:
        pytest.skip("needs root (ip netns)")
    if not tailnet.have_version(tailnet.versions()[0]):
        pytest.skip(f"Tailscale {tailnet.versions()[0]} not built (tests/lib/install-tailscale.sh)")


def link(ns, dev, state):
    tailnet._ip("-n", ns.name, "link", "set", dev, state)


# ---- PostgreSQL partitioned away ----

PG_NET = "198.18.2"
PG_ADDR = f"{PG_NET}.2"
PG_PORT = 5432
PG_TIMEOUT = 2  # database.postgres.unreachable_timeout here, in seconds
FEED_CHECK = 2  # a quiet feed is checked with a round trip this often (QUIET_CHECK_MS)
FEED_LOST = "the connection that hears other replicas was lost"


class PgLink(tailnet.Namespace):
    """PostgreSQL seen over a network link the test can cut: a namespace of its own, joined by
    a veth pair to the servers' namespace, where threads of this process relay
    PG_ADDR:PG_PORT to the cluster's unix socket. cut() takes the link down on PostgreSQL's
    side: every packet between the servers and the relay is dropped, nothing is closed."""

    def __init__(self, workdir, server_ns, pg):
        super().__init__(workdir)
        self.server_ns = server_ns
        self.upstream = os.path.join(pg.host, f".s.PGSQL.{pg.port}")
        self.socks = []
        self.closing = threading.Event()

    def _links(self):
        s, n = self.server_ns.name, self.name
        tailnet._ip("-n", s, "link", "add", "hspg", "type", "veth", "peer", "name", "pg0",
                    "netns", n)
        tailnet._ip("-n", s, "addr", "add", f"{PG_NET}.1/24", "dev", "hspg")
        tailnet._ip("-n", s, "link", "set", "hspg", "up")
        tailnet._ip("-n", n, "addr", "add", f"{PG_ADDR}/24", "dev", "pg0")
        tailnet._ip("-n", n, "link", "set", "pg0", "up")

    def start_relay(self):
        listener = self.listen(PG_ADDR, PG_PORT)
        listener.settimeout(0.5)
        self.socks.append(listener)
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener):
        while not self.closing.is_set():
            try:
                down, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            up = socket.socket(socket.AF_UNIX)
            try:
                up.connect(self.upstream)
            except OSError:
                down.close()
                up.close()
                continue
            self.socks += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=tailnet.pipe, args=(a, b), daemon=True).start()

    def cut(self):
        link(self, "pg0", "down")

    def heal(self):
        link(self, "pg0", "up")

    def close(self):
        self.closing.set()
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.socks.clear()
        super().close()


def _seen_in_logs(servers, needle, t0, timeout):
    """Polls the servers' logs (from their length now on) for needle → {port: seconds from t0
    to when it was first seen}."""
    marks = {s.port: len(s.log_text()) for s in servers}
    seen = {}

    def check():
        for s in servers:
            if s.port not in seen and needle in s.log_text()[marks[s.port]:]:
                seen[s.port] = time.monotonic() - t0
        return len(seen) == len(servers)

    poll(check, timeout, f"{needle!r} in every replica's log", interval=0.1)
    return seen


class PeerWatch(threading.Thread):
    """Checks every 0.2 s that each node still runs and still sees its peer; notes lapses."""

    def __init__(self, pairs):
        super().__init__(daemon=True)
        self.pairs = pairs
        self.lapses = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            for node, peer in self.pairs:
                try:
                    st = node.status()
                    names = [p.get("HostName") for p in (st.get("Peer") or {}).values()]
                    if st.get("BackendState") != "Running" or peer not in names:
                        self.lapses.append(f"{node.name}: {st.get('BackendState')}, "
                                           f"peers {names}")
                except Exception as e:  # noqa: BLE001 - a CLI hiccup is not the question
                    print("status failed:", e)
            self.stop.wait(0.2)


def _unix_api(server, method, path, body=None):
    """REST over the server's unix socket (trusted: no API key to look up)."""
    conn = helpers.UnixHTTPConnection(server.socket_path, timeout=30)
    data = None if body is None else json.dumps(body).encode()
    st, _, got = helpers.http_request(conn, method, path, data,
                                      {"Content-Type": "application/json"} if data else {})
    return st, got


def test_postgres_partition_is_noticed_refused_and_healed(tmp_path, db):
    if db.kind != "postgres":
        pytest.skip("a partition from PostgreSQL (SQLite is a file of the server's own)")
    need_clients()
    links = []

    def through_link(server):
        pg = PgLink(str(tmp_path), server.ns, db.pg)
        links.append(pg)
        pg.create()
        pg.start_relay()
        server.config["database"]["postgres"].update(
            {"host": PG_ADDR, "port": PG_PORT, "unreachable_timeout": f"{PG_TIMEOUT}s"})
        server.write_config()

    try:
        with tailnet.World(tmp_path, db, tailnet.versions()[0], server_setup=through_link) as w:
            a = w.server
            b = start_replica(w, 8081)  # the same database settings: through the link too
            try:
                _partition_and_heal(w, a, b, links[0])
            finally:
                b.stop()
    finally:
        for pg in links:
            pg.close()


def _partition_and_heal(w, a, b, pg):
    n1, n2 = join(w, "n1", a), join(w, "n2", b)
    n1.wait_peer("n2")
    n2.wait_peer("n1")
    kept = unique("kept")
    assert _unix_api(a, "POST", "/api/v1/user", {"name": kept})[0] == 200
    watch = PeerWatch([(n1, "n2"), (n2, "n1")])
    watch.start()
    try:
        t0 = time.monotonic()
        pg.cut()
        # Both replicas notice: their feeds' next round trip is not answered.
        bound = FEED_CHECK + 2 * PG_TIMEOUT + 2
        noticed = _seen_in_logs([a, b], FEED_LOST, t0, bound + 10)
        print(f"partition noticed after {noticed} s (bound {bound} s)")
        assert max(noticed.values()) <= bound, noticed
        # An admin write fails with a clear error, within the timeout, and changes nothing.
        refused = unique("refused")
        t1 = time.monotonic()
        st, body = _unix_api(a, "POST", "/api/v1/user", {"name": refused})
        took = time.monotonic() - t1
        print(f"write during the partition: {st} {body} after {took:.1f} s")
        assert st == 500 and "the database did not answer" in (body or {}).get("message", ""), \
            (st, body)
        assert took <= 3 * PG_TIMEOUT + 2, took
        # A later one fails as fast or faster: the pool knows the database is out of reach.
        t1 = time.monotonic()
        assert _unix_api(a, "POST", "/api/v1/user", {"name": refused})[0] == 500
        again = time.monotonic() - t1
        print(f"the next write failed after {again:.1f} s")
        assert again <= PG_TIMEOUT + 2, again
        # The outage goes on: the log says so every 10 s, not at every attempt. Clients keep
        # their maps and streams meanwhile (the watch runs all along).
        mark = len(a.log_text())
        poll(lambda: "still cannot connect after" in a.log_text()[mark:], 30,
             "A to log that the database is still out of reach", interval=0.2)
        outage_lines = a.log_text()[mark:].count("store: postgres: ")
        assert outage_lines <= 5, a.log_text()[mark:]
        held = time.monotonic() - t0
        t2 = time.monotonic()
        pg.heal()
        poll(lambda: a.ns.http("GET", tailnet.SERVER_IP, a.port, "/health", timeout=5)[0] == 200,
             30, "A's /health passing again")
        print(f"partition held {held:.1f} s; /health passes again "
              f"{time.monotonic() - t2:.1f} s after healing")
    finally:
        watch.stop.set()
        watch.join(30)
    assert not watch.lapses, watch.lapses[:3]
    # Nothing committed before is lost, nothing refused was written.
    names = [u["name"] for u in _unix_api(a, "GET", "/api/v1/user")[1]["users"]]
    assert kept in names and refused not in names, names
    # A change made now reaches the clients of both replicas (B through its new feed).
    a.cli_ok("nodes", "rename", "-i", node_id(a, "n2"), "healed")
    n1.wait_peer("n2", lambda p: dns_name(p) == "healed", timeout=30,
                 what="n1 (on A) to see n2 renamed after the partition")
    poll(lambda: dns_name(n2.status()["Self"]) == "healed", 30,
         "n2 (on B) to hear its new name through B's new feed")


# ---- half-open TCP: a client whose network vanishes ----

CLIENT_TIMEOUT = 3  # tuning.unreachable_client_timeout here, in seconds


def _derp_in(ns):
    """A DERP client of the server's embedded relay, connected from namespace ns."""
    c = dc.DerpConn(ns.connect(tailnet.SERVER_IP, tailnet.HS_PORT),
                    f"{tailnet.SERVER_IP}:{tailnet.HS_PORT}")
    c.handshake()
    return c


def test_half_open_client_is_cut_off_and_offline_for_peers(tmp_path, db):
    need_clients()
    # The clients relay through the world's derper; raw clients test the embedded relay.
    overrides = {"tuning": {"unreachable_client_timeout": f"{CLIENT_TIMEOUT}s"},
                 **helpers.embedded_derp(904, tmp_path / "derp.key", "127.0.0.1:3479",
                                         add_region=False)}
    with tailnet.World(tmp_path, db, tailnet.versions()[0], node_netns=True,
                       server_overrides=overrides) as w:
        key = w.key(reusable=True)
        n1, n2 = w.join("n1", key=key), w.join("n2", key=key)
        n1.wait_peer("n2", lambda p: p.get("Online"), what="n2 online for n1")
        # A DERP client in a namespace of its own, and one beside the server that sends to it.
        far_ns = w.node_namespace()
        far, near = _derp_in(far_ns), _derp_in(w.ns)
        try:
            near.send_packet(far.pub, b"are you there")
            assert far.recv_packet() == (near.pub, b"are you there")
            t0 = time.monotonic()
            for ns in (n2.ns, far_ns):  # their side of the link: nothing is sent, not even RST
                link(ns, "eth0", "down")
            bound = CLIENT_TIMEOUT + 3
            gone = near.wait_frame(dc.PEER_GONE, timeout=bound + 20,
                                   skip=(dc.KEEP_ALIVE, dc.HEALTH, dc.PONG))
            derp_s = time.monotonic() - t0
            assert gone == far.pub + bytes([dc.GONE_DISCONNECTED]), gone.hex()
            n1.wait_peer("n2", lambda p: not p.get("Online"), timeout=bound + 20,
                         what="n2 offline for n1")
            map_s = time.monotonic() - t0
            print(f"half-open: DERP connection gone after {derp_s:.1f} s, node offline for its "
                  f"peer after {map_s:.1f} s (bound {bound} s)")
            assert derp_s <= bound and map_s <= bound, (derp_s, map_s)
            # The others carry on.
            assert near.ping() < 2
            assert n1.state() == "Running"
        finally:
            far.close()
            near.close()


# ---- a client that stops reading its map stream ----

STREAM_BACKLOG = 32 << 20  # CONTROL_MAX_STREAM_BACKLOG
NOT_READING = "client not reading"
BIG_PEERS = 150
BIG_HOSTINFO = 14000  # bytes of each peer's Hostinfo: full maps of about 2 MiB


def _rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class Reader(threading.Thread):
    """Reads a client's map stream all along; keeps the names of the peers each message
    carried."""

    def __init__(self, client):
        super().__init__(daemon=True)
        self.client = client
        self.names = []
        self.error = None
        self.stop = threading.Event()

    def run(self):
        try:
            while not self.stop.is_set():
                m = self.client.next_message(0.5)
                if m is not None:
                    peers = (m.get("Peers") or []) + (m.get("PeersChanged") or [])
                    self.names.append({p.get("Name", "").split(".")[0] for p in peers})
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


class RssPeak(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak = pid, _rss(pid)
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(0.05):
            self.peak = max(self.peak, _rss(self.pid))


def _small_quarantine():
    """The sanitizer's quarantine of freed memory (256 MiB by default) would hide what the
    server holds: kept small, RSS follows live memory."""
    asan = os.environ.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    return {"ASAN_OPTIONS": asan + ":quarantine_size_mb=16"}


def test_slow_reader_is_cut_off_at_its_backlog_while_others_get_maps(server_factory):
    from noise_client import ControlClient
    from test_register_limits import NO_RATE_LIMIT, user_key
    s = server_factory(overrides={"tuning": NO_RATE_LIMIT}, env=_small_quarantine())
    _, key = user_key(s)
    for i in range(BIG_PEERS):  # peers whose Hostinfo makes every full map large
        c = ControlClient(s.port)
        c.hostinfo = {"Hostname": f"big{i}", "OS": "linux",
                      "OSVersion": os.urandom(BIG_HOSTINFO // 2).hex()}
        st, _, resp = c.register(auth_key=key)
        assert st == 200 and resp.get("MachineAuthorized"), (st, resp)
    clients = [ControlClient(s.port) for _ in range(2)]
    for i, c in enumerate(clients):
        c.hostinfo = {"Hostname": f"stream{i}", "OS": "linux"}
        assert c.register(auth_key=key)[0] == 200
    slow, good = clients
    size = len(json.dumps(slow.open_stream()))
    assert size > 0.7 * BIG_PEERS * BIG_HOSTINFO, size  # the premise: full maps are large
    slow_id = next(n["id"] for n in s.api_ok("GET", "/api/v1/node")["nodes"]
                   if n["name"] == "stream0")
    good.open_stream()
    reader = Reader(good)
    reader.start()
    peak = RssPeak(s.proc.pid)
    base = peak.peak
    peak.start()
    try:
        # Each rename of the slow client's node sends it a full map, which it does not read;
        # the reading client hears of each (a small delta) before the next, and after the cut.
        renames, worst, deadline = 0, 0.0, time.monotonic() + 120
        while True:
            cut = NOT_READING in s.log_text()
            assert time.monotonic() < deadline, f"{renames} full maps unread, no cut"
            renames += 1
            name = "final" if cut else f"slow{renames}"
            t0 = time.monotonic()
            s.api_ok("POST", f"/api/v1/node/{slow_id}/rename/{name}")
            poll(lambda: any(name in names for names in reader.names[-5:]), 10,
                 f"the reading client to hear of the rename to {name}", interval=0.02)
            worst = max(worst, time.monotonic() - t0)
            if cut:
                break
        print(f"slow reader cut after {renames - 1} full maps of {size >> 10} KiB; the reading "
              f"client heard of each rename within {worst:.2f} s")
        assert worst < 3, worst
        assert reader.error is None, reader.error
    finally:
        reader.stop.set()
        peak.stop.set()
        reader.join(10)
        peak.join(10)
    grew = peak.peak - base
    print(f"RSS {base >> 20} MiB before, peak {peak.peak >> 20} MiB (+{grew >> 20} MiB)")
    assert grew < 3 * STREAM_BACKLOG, f"RSS grew by {grew >> 20} MiB"
    # The slow client finds its stream reset behind what was sent before.
    ended = None
    for _ in range(200):
        try:
            if slow.next_message(5) is None:
                break
        except EOFError as e:
            ended = e
            break
    assert ended is not None and "StreamReset" in str(ended), ended
    slow.close()
    good.close()


DERP_FLOOD = 60 << 20  # bytes sent to a DERP client that reads none of them


def test_derp_reader_that_stops_reading_is_dropped_memory_bounded(server_factory, tmp_path):
    from test_limits import _derp_client
    s = server_factory(env=_small_quarantine(),
                       overrides=helpers.embedded_derp(905, tmp_path / "derp.key"))
    held = []
    peak = None
    try:
        stuck, sender, bystander = (_derp_client(s, "127.0.0.1", held) for _ in range(3))
        stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        peak = RssPeak(s.proc.pid)
        base = peak.peak
        peak.start()
        chunk = os.urandom(60000)
        t0 = time.monotonic()
        for _ in range(DERP_FLOOD // len(chunk)):  # the relay reads it all, drops what waits
            sender.send_packet(stuck.pub, chunk)
        flood_s = time.monotonic() - t0
        rtts = [bystander.ping(timeout=5) for _ in range(5)]

        def closed():  # judged stuck once bytes for it cannot be written for 5 s
            sender.send_packet(stuck.pub, chunk)
            return "not reading: closing" in s.log_text()

        poll(closed, 30, "the relay to close the client that does not read", interval=0.2)
        gone = time.monotonic() - t0
    finally:
        if peak:
            peak.stop.set()
            peak.join(10)
        for c in held:
            c.close()
    grew = peak.peak - base
    print(f"DERP: {DERP_FLOOD >> 20} MiB sent in {flood_s:.1f} s to a client that reads none; "
          f"closed after {gone:.1f} s; others' pings {max(rtts) * 1000:.0f} ms at most; RSS "
          f"+{grew >> 20} MiB")
    assert max(rtts) < 1, rtts
    assert grew < DERP_FLOOD // 2, f"RSS grew by {grew >> 20} MiB"
