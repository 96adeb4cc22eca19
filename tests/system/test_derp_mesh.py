"""The DERP mesh: the embedded relays of several servers act as one region (derper's
--mesh-with / --mesh-psk-file; our derp.server.mesh_with / mesh_key_path).

Each test runs one or two `headscale serve` processes on loopback, each with the embedded
DERP on, its own DERP key and database, meshed through each other's /derp (plain HTTP, or
HTTPS with a test CA in the TLS tests). Raw DERP
clients (derp_client.py) connect to different servers and send packets to each other's keys:
a packet for a key held by the other server must be forwarded there. The last test meshes one
of ours with Tailscale's own derper (built by tests/lib/install-tailscale.sh) both ways.

verify_clients is off: the raw clients are no nodes of the tailnet (mesh peers are admitted by
the mesh key whatever verify_clients says; a test checks that with it on)."""

import http.client
import os
import secrets
import socket
import ssl
import subprocess

import pytest

import derp_client as dc
import helpers
import tailnet as tn
from test_derp_relay import make_certs

DERPER_VERSION = "v1.102.3"
DEADLINE = 20.0  # for a mesh link to come up (first retry after 1 s, doubling)
WATCH_CONNS = 0x10
PEER_PRESENT = 0x09


def write_key(path, key=None):
    with open(path, "w") as f:
        f.write((key or secrets.token_hex(32)) + "\n")
    os.chmod(path, 0o600)
    return path


def derp_config(key_path, peers, verify=False):
    return {"derp": {"server": {
        "enabled": True, "verify_clients": verify,
        "stun_listen_addr": f"127.0.0.1:{helpers.free_port()}",
        "mesh_key_path": key_path, "mesh_with": list(peers)}}}


def mesh_servers(server_factory, tmp_path, n=2, keys=None, full=True):
    """n servers (not started) meshed with each other (full) or each with the first only.
    keys: per server, the mesh key text (default: one shared key)."""
    shared = secrets.token_hex(32)
    servers = [server_factory(start=False) for _ in range(n)]
    for i, s in enumerate(servers):
        key = write_key(str(tmp_path / f"mesh{i}.key"), (keys or [shared] * n)[i])
        peers = [f"http://127.0.0.1:{o.port}" for j, o in enumerate(servers)
                 if j != i and (full or i == 0 or j == 0)]
        helpers.deep_merge(s.config, derp_config(key, peers))
        s.write_config()
    return servers


def client(port, pub=None, priv=None, tls=None):
    """A DERP client of the server on port (tls: an SSL context trusting its certificate)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if tls:
        s = tls.wrap_socket(s, server_hostname="127.0.0.1")
    c = dc.DerpConn(s, host=f"127.0.0.1:{port}")
    c.handshake(pub, priv)
    return c


def send_until_received(src, dst, deadline=DEADLINE):
    """src sends to dst's key (a fresh payload each try) until dst gets one → that payload.
    While the mesh link is coming up the packets are dropped (PeerGone frames come back)."""
    def attempt():
        payload = secrets.token_bytes(24)
        src.send_packet(dst.pub, payload)
        try:
            got_src, got = dst.recv_packet(timeout=0.5)
        except TimeoutError:
            return None
        assert got_src == src.pub, "a forwarded packet must carry the original sender's key"
        return got
    got = tn.poll(attempt, deadline, "a packet across the DERP mesh", interval=0)
    return got


def peer_gone(conn, key, timeout=10.0):
    """→ the reason byte of the next PeerGone about key (from the backlog or read now)."""
    end = tn.time.monotonic() + timeout
    while True:
        p = conn.wait_frame(dc.PEER_GONE, max(0.0, end - tn.time.monotonic()),
                            skip=(dc.KEEP_ALIVE, dc.HEALTH, dc.RECV_PACKET, dc.PONG))
        if p[:dc.KEY_LEN] == key:
            return p[dc.KEY_LEN] if len(p) > dc.KEY_LEN else 0


def log_has(server, text, timeout=DEADLINE):
    tn.poll(lambda: text in server.log_text(), timeout, f"{text!r} in the server log")


# ---------------------------------------------------------------- two of ours

def meshed_pair(server_factory, tmp_path):
    """Servers a and b meshed both ways, a client on each, packets through in both
    directions → (a, b, a1, b1)."""
    a, b = mesh_servers(server_factory, tmp_path)
    a.start(), b.start()
    a1, b1 = client(a.port), client(b.port)
    send_until_received(a1, b1)
    send_until_received(b1, a1)
    a1.backlog.clear()  # NotHere answers from before the link was up
    return a, b, a1, b1


def test_packets_cross_the_mesh_both_ways(server_factory, tmp_path):
    a, b, a1, b1 = meshed_pair(server_factory, tmp_path)
    try:
        # A local recipient still gets a plain local delivery (no detour through the mesh).
        a2 = client(a.port)
        payload = secrets.token_bytes(40)
        a2.send_packet(a1.pub, payload)
        assert a1.recv_packet(timeout=5) == (a2.pub, payload)
        a2.close()
    finally:
        a1.close(), b1.close()
    # The mesh key is a secret: never in a log.
    key = open(str(tmp_path / "mesh0.key")).read().strip()
    for s in (a, b):
        assert key not in s.log_text()
        assert "mesh peer http://127.0.0.1:" in s.log_text()


def test_leaving_client_stops_forwarding(server_factory, tmp_path):
    a, b, a1, b1 = meshed_pair(server_factory, tmp_path)
    try:
        gone = b1.pub
        b1.close()
        # B tells A the key left; A tells a1, which got packets from it (Disconnected = 0).
        assert peer_gone(a1, gone) == 0
        # From now on A has no route for it: a packet gets PeerGone(NotHere = 1) back.
        a1.send_packet(gone, b"\x00" * 16)
        assert peer_gone(a1, gone) == 1
        # The same key back on B is reachable again.
        b2 = client(b.port, b1.pub, b1.priv)
        send_until_received(a1, b2)
        b2.close()
    finally:
        a1.close()


def test_wrong_mesh_key_is_refused(server_factory, tmp_path):
    # C lists A but holds another key. A verifies clients: C's mesh client, without A's key,
    # is an unknown plain client there and is refused at ClientInfo.
    a, c = mesh_servers(server_factory, tmp_path, keys=[secrets.token_hex(32),
                                                        secrets.token_hex(32)], full=False)
    a.config["derp"]["server"]["mesh_with"] = []
    a.config["derp"]["server"]["verify_clients"] = True
    a.write_config()
    a.start(), c.start()
    log_has(c, f"mesh peer http://127.0.0.1:{a.port}: refused our ClientInfo")
    a_key = open(str(tmp_path / "mesh0.key")).read().strip()
    c_key = open(str(tmp_path / "mesh1.key")).read().strip()
    c1 = client(c.port)
    try:
        raw = socket.create_connection(("127.0.0.1", a.port), timeout=10)
        bad = dc.DerpConn(raw, host=f"127.0.0.1:{a.port}")
        bad.upgrade(), bad.read_server_key()
        bad.client_info(info={"version": 2, "meshKey": c_key})
        assert bad.closed_within(5), "verify_clients on: an unknown key is refused at ClientInfo"
        # With A's key the same kind of client is a mesh peer, admitted whatever
        # verify_clients says, and may watch: it is told about itself first.
        raw = socket.create_connection(("127.0.0.1", a.port), timeout=10)
        good = dc.DerpConn(raw, host=f"127.0.0.1:{a.port}")
        good.upgrade(), good.read_server_key()
        good.client_info(info={"version": 2, "meshKey": a_key})
        good.read_server_info()
        good.send_frame(WATCH_CONNS)
        present = good.wait_frame(PEER_PRESENT, skip=(dc.KEEP_ALIVE, dc.HEALTH))
        assert present[:dc.KEY_LEN] == good.pub, "the watcher's own connection is listed"
        # C learnt nothing from A: its client's packet to a key on A comes back NotHere.
        c1.send_packet(good.pub, b"\x00" * 16)
        assert peer_gone(c1, good.pub) == 1
        good.close()
    finally:
        c1.close()
    for s in (a, c):
        assert a_key not in s.log_text() and c_key not in s.log_text()


def test_wrong_mesh_key_cannot_watch(server_factory, tmp_path):
    a, = mesh_servers(server_factory, tmp_path, n=1)
    a.start()
    raw = socket.create_connection(("127.0.0.1", a.port), timeout=10)
    bad = dc.DerpConn(raw, host=f"127.0.0.1:{a.port}")
    bad.upgrade(), bad.read_server_key()
    bad.client_info(info={"version": 2, "meshKey": secrets.token_hex(32)})
    bad.read_server_info()  # admitted as a plain client (verify_clients is off)...
    bad.send_frame(WATCH_CONNS)
    assert bad.closed_within(5), "...but WatchConns without the mesh key must close it"
    log_has(a, "mesh frame 0x10 from a client without the mesh key")


def test_restarted_peer_is_remeshed(server_factory, tmp_path):
    a, b, a1, b1 = meshed_pair(server_factory, tmp_path)
    try:
        b1.close()
        b.stop()
        log_has(a, f"mesh peer http://127.0.0.1:{b.port}: connection closed by the peer")
        b.start()
        b2 = client(b.port)
        send_until_received(a1, b2, deadline=45)
        send_until_received(b2, a1)
        b2.close()
    finally:
        a1.close()


def test_mesh_over_tls(server_factory, tmp_path):
    """Replicas that serve TLS themselves are meshed through https:// entries: the peer's
    certificate is checked against the CAs the process trusts (here SSL_CERT_FILE)."""
    ca, cert, key = make_certs(str(tmp_path / "certs"))
    ctx = ssl.create_default_context(cafile=ca)
    a, b = mesh_servers(server_factory, tmp_path)
    for s, other in ((a, b), (b, a)):
        s.config.update({"server_url": f"https://127.0.0.1:{s.port}", "tls_cert_path": cert,
                         "tls_key_path": key})
        s.config["derp"]["server"]["mesh_with"] = [f"https://127.0.0.1:{other.port}"]
        s.write_config()
        s.env["SSL_CERT_FILE"] = ca
        s.wait_healthy = tls_health(s, ctx)
    a.start(), b.start()
    a1, b1 = client(a.port, tls=ctx), client(b.port, tls=ctx)
    try:
        send_until_received(a1, b1)
        send_until_received(b1, a1)
    finally:
        a1.close(), b1.close()


def tls_health(server, ctx):
    def wait(url=None, deadline=helpers.START_DEADLINE):
        def ok():
            assert server.proc.poll() is None, "exited:\n" + server.log_tail()
            c = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=2, context=ctx)
            try:
                c.request("GET", "/health")
                return c.getresponse().status == 200
            finally:
                c.close()
        tn.poll(ok, deadline, "/health over TLS")
    return wait


def test_mesh_refuses_an_untrusted_certificate(server_factory, tmp_path):
    ca, cert, key = make_certs(str(tmp_path / "certs"))
    a, b = mesh_servers(server_factory, tmp_path)
    b.config.update({"tls_cert_path": cert, "tls_key_path": key})
    b.wait_healthy = tls_health(b, ssl.create_default_context(cafile=ca))
    a.config["derp"]["server"]["mesh_with"] = [f"https://127.0.0.1:{b.port}"]
    a.write_config(), b.write_config()
    a.start(), b.start()  # a does not trust the test CA
    log_has(a, f"mesh peer https://127.0.0.1:{b.port}: TLS handshake failed: "
               "unable to get local issuer certificate")


# ---------------------------------------------------------------- with Tailscale's derper

def derper_bin():
    return tn.ts_bin(DERPER_VERSION, "derper")


@pytest.mark.skipif(not os.access(derper_bin(), os.X_OK),
                    reason=f"derper {DERPER_VERSION} not built (tests/lib/install-tailscale.sh)")
def test_meshes_with_tailscales_derper(server_factory, tmp_path):
    key = secrets.token_hex(32)
    dport = helpers.free_port()
    a, = mesh_servers(server_factory, tmp_path, n=1, keys=[key])
    a.config["derp"]["server"]["mesh_with"] = [f"http://127.0.0.1:{dport}/derp"]
    a.write_config()
    a.start()
    ddir = tmp_path / "derper"
    ddir.mkdir()
    log_path = str(ddir / "derper.log")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(ddir),
           "TS_DEBUG_USE_DERP_HTTP": "1"}  # its mesh client dials us in plain HTTP
    with open(log_path, "ab") as log:
        derper = subprocess.Popen(
            [derper_bin(), "-a", f"127.0.0.1:{dport}", "-http-port", "-1", "-stun=false",
             "-c", str(ddir / "derper.key"), "-hostname", "127.0.0.1",
             "--mesh-psk-file", write_key(str(ddir / "mesh.key"), key),
             "--mesh-with", f"127.0.0.1:{a.port}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            cwd=str(ddir))
    d1 = a1 = None
    try:
        def derper_up():
            assert derper.poll() is None, "derper exited:\n" + tn.tail(log_path)
            with socket.create_connection(("127.0.0.1", dport), timeout=1):
                return True
        tn.poll(derper_up, DEADLINE, "derper to listen")
        d1, a1 = client(dport), client(a.port)
        send_until_received(a1, d1)  # ours → derper: our mesh client, derper's server side
        send_until_received(d1, a1)  # derper → ours: derper's mesh client, our server side
        a1.backlog.clear()
        gone = d1.pub
        d1.close()
        d1 = None
        assert peer_gone(a1, gone) == 0, "derper's PeerGone reaches our client"
    except AssertionError:
        print("===== derper log =====\n" + tn.tail(log_path, 60))
        raise
    finally:
        for c in (d1, a1):
            if c:
                c.close()
        derper.terminate()
        try:
            derper.wait(timeout=10)
        except subprocess.TimeoutExpired:
            derper.kill()
            derper.wait(timeout=10)
