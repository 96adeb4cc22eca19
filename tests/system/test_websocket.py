"""DERP and the control protocol over WebSocket (RFC 6455), as the browser client and a tailscaled
built with Tailscale's `ts_debug_websockets` tag speak them (see WS_NOTES.md).

  DERP     GET /derp, Upgrade: websocket, Sec-WebSocket-Protocol: derp → 101; the DERP byte
           stream then travels in binary messages, frames not aligned to messages.
  ts2021   GET /ts2021?X-Tailscale-Handshake=<url-escaped base64 initiation>, Upgrade: websocket,
           Sec-WebSocket-Protocol: tailscale-control-protocol → 101; binary messages carry the
           bytes of the raw upgraded stream (handshake response, then Noise records with HTTP/2).

Raw-client tests run against one server per transport (plain HTTP and TLS on 127.0.0.1, no root
needed), embedded DERP with verify_clients off, SQLite only. The real-client test needs root,
tailscaled built by tests/lib/install-tailscale-ws.sh, and reuses test_derp_relay's world."""

import base64
import http.client
import json
import os
import socket
import ssl
import struct
import time
import urllib.parse

import pytest

import derp_client as dc
import helpers
import noise_client
import tailnet as tn
import test_derp_relay as dr

HOST = "127.0.0.1"
WS_REFUSED = "the server refused the WebSocket upgrade"


# ---------------------------------------------------------------- server

class WsServer(helpers.Server):
    """headscale serve on 127.0.0.1 with the embedded relay (verify_clients off, so any key
    may relay), over plain HTTP or TLS."""

    # the namespace-free parts of tailnet.Server's CLI helpers
    user_id = tn.Server.user_id
    create_user_cli = tn.Server.create_user_cli
    preauth_key = tn.Server.preauth_key
    nodes = tn.Server.nodes
    node_by_name = tn.Server.node_by_name

    def __init__(self, db, tls_dir=None):
        super().__init__(db)
        self.tls = tls_dir is not None
        self.ctx = None
        cfg = self.config
        cfg["derp"] = {"urls": [], "paths": [], "auto_update_enabled": False,
                       "server": {"enabled": True, "region_id": 902, "region_code": "hsws",
                                  "region_name": "HS WebSocket Test",
                                  "stun_listen_addr": f"127.0.0.1:{helpers.free_port()}",
                                  "private_key_path": os.path.join(self.tmp, "derp.key"),
                                  "automatically_add_embedded_derp_region": True,
                                  "verify_clients": False}}
        if self.tls:
            ca, cert, key = dr.make_certs(tls_dir)
            self.ctx = ssl.create_default_context(cafile=ca)
            cfg["server_url"] = f"https://{HOST}:{self.port}"
            cfg["tls_cert_path"] = cert
            cfg["tls_key_path"] = key
        self.write_config()

    @property
    def kind(self):
        return "tls" if self.tls else "http"

    def connect(self, timeout=10.0):
        s = socket.create_connection((HOST, self.port), timeout=timeout)
        if not self.tls:
            return s
        try:
            return self.ctx.wrap_socket(s, server_hostname=HOST)
        except BaseException:
            s.close()
            raise

    def get(self, path, headers=None, timeout=10.0):
        """One GET over this server's transport → (status, headers (lower), body bytes)."""
        if self.tls:
            c = http.client.HTTPSConnection(HOST, self.port, timeout=timeout, context=self.ctx)
        else:
            c = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            c.request("GET", path, headers=headers or {})
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def wait_healthy(self, url=None, deadline=helpers.START_DEADLINE):
        if not self.tls:
            return super().wait_healthy(url, deadline)

        def ok():
            rc = self.proc.poll()
            if rc is not None:
                raise RuntimeError(f"headscale serve exited with {rc} during start:\n"
                                   + self.log_tail())
            st, _, _ = self.get("/health", timeout=2)
            return st == 200

        try:
            tn.poll(ok, deadline, "/health over TLS", interval=0.1)
        except RuntimeError as e:
            raise AssertionError(str(e)) from None

    # ---- DERP clients ----
    def derp(self, timeout=10.0):
        return dc.DerpConn(self.connect(timeout), f"{HOST}:{self.port}", timeout)

    def plain_derp(self):
        """A DERP client over Upgrade: DERP (handshake done)."""
        c = self.derp()
        c.handshake()
        return c

    def ws_derp(self, split=None, timeout=10.0):
        """A DERP client over WebSocket (handshake done); fails the test when refused."""
        c = self.derp(timeout)
        try:
            st = c.ws_upgrade(split=split)
            assert st == 101, (
                f"{WS_REFUSED}: GET /derp (Upgrade: websocket, Sec-WebSocket-Protocol: derp) "
                f"over {self.kind} → HTTP {st} {c.ws.body[:200]!r}")
            assert c.ws.subprotocol == "derp", \
                f"101 without Sec-WebSocket-Protocol: derp: {c.http_headers!r}"
            c.read_server_key()
            c.client_info()
            c.read_server_info()
        except BaseException:
            c.close()
            raise
        return c


@pytest.fixture(scope="module", params=["http", "tls"])
def ws_server(request, db, tmp_path_factory):
    if db.kind != "sqlite":
        pytest.skip("WebSocket transport: SQLite is enough")
    tls_dir = str(tmp_path_factory.mktemp("ws-tls")) if request.param == "tls" else None
    s = WsServer(db, tls_dir)
    try:
        s.start()
        yield s
        s.stop(check=True)
    finally:
        s.cleanup()


@pytest.fixture
def clients(ws_server):
    """→ make(kind, **kw): a DERP client ('ws' or 'plain'), closed after the test."""
    made = []

    def make(kind="ws", **kw):
        c = ws_server.ws_derp(**kw) if kind == "ws" else ws_server.plain_derp()
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def relay_ok(src, dst, data, what=""):
    src.send_packet(dst.pub, data)
    got_src, got = dst.recv_packet(timeout=10)
    assert got_src == src.pub, f"{what}: packet from {got_src.hex()}, not {src.pub.hex()}"
    assert got == data, (f"{what}: {len(got)} bytes arrived for {len(data)} sent, equal prefix "
                         f"{len(os.path.commonprefix([got, data]))}")


def check_others(ws_a, plain_b):
    """The bystanders (one WebSocket, one plain client) still relay to each other and answer."""
    relay_ok(ws_a, plain_b, os.urandom(700), "bystander WebSocket → plain")
    relay_ok(plain_b, ws_a, os.urandom(700), "bystander plain → WebSocket")
    assert ws_a.ping(timeout=5) < 5 and plain_b.ping(timeout=5) < 5


def expect_dropped(c, what, timeout=5):
    """The server ends this WebSocket connection within timeout (a close frame first is
    optional) → the close code it sent, or None."""
    t0 = time.monotonic()
    closed = c.ws.wait_closed(timeout)
    assert closed, (f"{what}: the connection is still open {timeout} s later "
                    f"(close frame: {c.ws.got_close}, code {c.ws.close_code})")
    print(f"{what}: closed after {time.monotonic() - t0:.2f} s, close frame "
          f"{c.ws.got_close}, code {c.ws.close_code} {c.ws.close_reason!r}")
    return c.ws.close_code


def wait_pong(ws, payload, what, timeout=5):
    """Reads the WebSocket (answering pings, buffering data for later) until a pong with
    payload arrives; fails clearly on a close or when none comes."""
    deadline = time.monotonic() + timeout
    while payload not in ws.pongs:
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            ev = ws.next_event(left)
        except TimeoutError:
            raise AssertionError(f"{what}: no pong within {timeout} s") from None
        if ev[0] == "data":
            ws._pending += ev[1]  # DERP bytes: keep them for the DerpConn
        assert ev[0] not in ("close", "eof"), \
            f"{what}: the connection closed instead of a pong (close code {ws.close_code})"
    ws.pongs.remove(payload)


# ---------------------------------------------------------------- (i) relaying

def test_ws_clients_relay_byte_exact(ws_server, clients):
    a = clients("ws")
    b = clients("ws", split=1000)  # b's DERP frames span WebSocket messages of 1000 bytes
    for size in (1, 1200, 9000):
        relay_ok(a, b, os.urandom(size), f"WebSocket → WebSocket, {size} B")
        relay_ok(b, a, os.urandom(size), f"WebSocket (1000 B messages) → WebSocket, {size} B")
    relay_ok(b, a, os.urandom(64 << 10), "WebSocket (1000 B messages) → WebSocket, 64 KiB")
    # Several DERP frames in one WebSocket message.
    pkts = [os.urandom(n) for n in (100, 2000, 5)]
    a.sock.sendall(b"".join(dc.frame(dc.SEND_PACKET, b.pub + p) for p in pkts))
    for p in pkts:
        src, got = b.recv_packet(timeout=10)
        assert (src, got) == (a.pub, p), "three SendPackets in one message: wrong delivery"
    assert a.ping() < 5 and b.ping() < 5, "no DERP Pong over WebSocket"


def test_ws_64k_packet_reaches_ws_client_in_small_messages(ws_server, clients):
    """Tailscale's WebSocket client reads at most 32768 bytes per message (coder/websocket's
    default, which tailscale's net/wsconn keeps) and fails with 1009 above: a 64 KiB packet
    must reach it spread over several messages. (derper's bufio writes it in one; ours must
    not.)"""
    p, w = clients("plain"), clients("ws")
    relay_ok(p, w, os.urandom(64 << 10), "64 KiB packet, plain → WebSocket")
    assert w.ws.max_message <= dc.TS_CLIENT_MAX_MESSAGE, (
        f"the server sent a {w.ws.max_message}-byte WebSocket message; Tailscale's client "
        f"closes with 1009 above {dc.TS_CLIENT_MAX_MESSAGE}")


def test_ws_client_may_send_64k_packet_in_one_message(ws_server, clients):
    """tailscaled's DERP client writes through a 4 KiB bufio.Writer, so a large packet leaves
    as one WebSocket message of up to ~64 KiB: the server must take messages that big (derper
    stops at 32 KiB; WireGuard packets are small enough that nobody notices there)."""
    w, p = clients("ws"), clients("plain")
    relay_ok(w, p, os.urandom(64 << 10), "64 KiB packet in one message, WebSocket → plain")
    assert w.ping() < 5


def test_ws_and_plain_clients_relay_to_each_other(ws_server, clients):
    w = clients("ws")
    p = clients("plain")
    for size in (1, 1200, 9000):
        relay_ok(w, p, os.urandom(size), f"WebSocket → plain DERP, {size} B")
        relay_ok(p, w, os.urandom(size), f"plain DERP → WebSocket, {size} B")
    # PeerGone(not here) reaches a WebSocket client too.
    nobody = os.urandom(32)
    w.send_packet(nobody, b"anyone?")
    got = w.wait_frame(dc.PEER_GONE, skip=(dc.KEEP_ALIVE, dc.HEALTH))
    assert got == nobody + bytes([dc.GONE_NOT_HERE]), got.hex()


# ---------------------------------------------------------------- (ii) bad input

def test_ws_unmasked_client_frame_drops_that_client(ws_server, clients):
    a, b = clients("ws"), clients("plain")
    bad = clients("ws")
    # A client frame without a mask (RFC 6455 5.1: the server must close the connection).
    bad.sock.send_raw(dc.ws_frame(dc.OP_BINARY, dc.frame(dc.PING, os.urandom(8)), mask=False))
    # Any close code or none (derper itself answers 1000): what matters is that it closes.
    expect_dropped(bad, "unmasked client frame")
    check_others(a, b)


def test_ws_text_frame_drops_that_client(ws_server, clients):
    a, b = clients("ws"), clients("plain")
    bad = clients("ws")
    bad.sock.send_frame(dc.OP_TEXT, b"hello, this is text")
    code = expect_dropped(bad, "text message")
    assert code in (None, 1003, 1002, 1007, 1008), \
        f"text message: close code {code} (Tailscale's own server answers 1003)"
    check_others(a, b)


def test_ws_frame_length_2_63_drops_that_client(ws_server, clients):
    a, b = clients("ws"), clients("plain")
    bad = clients("ws")
    # A 64-bit length with the top bit set is malformed (RFC 6455 5.2). A DERP ping follows as
    # payload; the server must not wait for the rest.
    bad.sock.send_raw(dc.ws_frame(dc.OP_BINARY, dc.frame(dc.PING, os.urandom(8)),
                                  length=1 << 63))
    expect_dropped(bad, "frame length 2^63")
    check_others(a, b)


@pytest.mark.parametrize("length", [(1 << 63) - 1, 1 << 40], ids=["2^63-1", "2^40"])
def test_ws_huge_frame_length_harms_nobody(ws_server, clients, length):
    """A legal but absurd frame length: a server that collects whole messages refuses it at
    once (1009); one that streams the payload into the DERP parser may keep reading. Either
    way nothing is allocated for it and nobody else notices."""
    a, b = clients("ws"), clients("plain")
    bad = clients("ws")
    bad.sock.send_raw(dc.ws_frame(dc.OP_BINARY, dc.frame(dc.PING, os.urandom(8)),
                                  length=length))
    closed = bad.ws.wait_closed(2)
    print(f"frame length {length}: closed within 2 s: {closed}, code {bad.ws.close_code}")
    check_others(a, b)
    assert ws_server.running, "the server died"


def test_ws_fragmented_message_is_reassembled(ws_server, clients):
    a, b = clients("ws"), clients("plain")
    sender, receiver = clients("ws"), clients("ws")
    data = os.urandom(3000)
    fr = dc.frame(dc.SEND_PACKET, receiver.pub + data)
    ws = sender.sock
    # One message in four frames, a ping between two of them (control frames may interleave).
    ws.send_frame(dc.OP_BINARY, fr[:3], fin=False)
    ws.send_frame(dc.OP_CONT, fr[3:40], fin=False)
    ws.send_frame(dc.OP_PING, b"between fragments")
    ws.send_frame(dc.OP_CONT, fr[40:2000], fin=False)
    ws.send_frame(dc.OP_CONT, fr[2000:], fin=True)
    src, got = receiver.recv_packet(timeout=10)
    assert (src, got) == (sender.pub, data), "fragmented message: packet not delivered intact"
    wait_pong(ws, b"between fragments", "ping between the fragments of a message")
    # An empty final continuation frame is fine too.
    fr2 = dc.frame(dc.SEND_PACKET, receiver.pub + b"tail")
    ws.send_frame(dc.OP_BINARY, fr2, fin=False)
    ws.send_frame(dc.OP_CONT, b"", fin=True)
    assert receiver.recv_packet(timeout=10) == (sender.pub, b"tail")
    check_others(a, b)


def test_ws_ping_gets_pong(ws_server, clients):
    c = clients("ws")
    for payload in (b"", b"p", os.urandom(125)):
        c.sock.send_frame(dc.OP_PING, payload)
        wait_pong(c.sock, payload, f"WebSocket ping of {len(payload)} bytes")
    assert c.ping() < 5, "DERP ping after WebSocket pings"


def test_ws_close_frame_is_answered_and_closed(ws_server, clients):
    a, b = clients("ws"), clients("plain")
    c = clients("ws")
    c.sock.send_close(1000, b"bye")
    t0 = time.monotonic()
    closed = c.sock.wait_closed(5)
    assert c.sock.got_close, "no close frame in answer to the client's close (RFC 6455 5.5.1)"
    assert c.sock.close_code in (None, 1000), f"close answered with code {c.sock.close_code}"
    assert closed, "the server answered the close but kept the TCP connection open 5 s"
    print(f"close handshake done in {time.monotonic() - t0:.3f} s")
    check_others(a, b)


def test_ws_close_frame_tells_peers_at_once(ws_server, clients):
    a = clients("plain")
    c = clients("ws")
    relay_ok(a, c, b"hi", "plain → WebSocket")
    relay_ok(c, a, b"hi", "WebSocket → plain")
    c.sock.send_close(1001)
    got = a.wait_frame(dc.PEER_GONE, timeout=5, skip=(dc.KEEP_ALIVE, dc.HEALTH, dc.PONG))
    assert got == c.pub + bytes([dc.GONE_DISCONNECTED]), got.hex()
    a.send_packet(c.pub, b"still there?")
    got = a.wait_frame(dc.PEER_GONE, timeout=5, skip=(dc.KEEP_ALIVE, dc.HEALTH, dc.PONG))
    assert got == c.pub + bytes([dc.GONE_NOT_HERE]), got.hex()


def test_ws_handshake_refusals(ws_server, clients):
    """Broken WebSocket handshakes get an HTTP error (no 101); the server carries on."""
    key = base64.b64encode(os.urandom(16)).decode()
    # RFC 6455 4.2.1/4.2.2: a GET with version 13 and a 16-byte key, else an HTTP error
    # (Tailscale's server: 400 for version and key, 405 for the method).
    cases = [
        ("Sec-WebSocket-Version 8", dict(version="8")),
        ("no Sec-WebSocket-Version", dict(version=None)),
        ("no Sec-WebSocket-Key", dict(key="")),
        ("Sec-WebSocket-Key of 8 bytes", dict(key=base64.b64encode(os.urandom(8)).decode())),
        ("POST instead of GET", dict(method="POST", key=key)),
    ]
    for what, kw in cases:
        c = ws_server.derp()
        try:
            st = c.ws_upgrade(**kw)
            assert 400 <= st < 500, f"{what}: HTTP {st}, expected a 4xx refusal"
        finally:
            c.close()
    check_others(clients("ws"), clients("plain"))


# ---------------------------------------------------------------- (iv) /ts2021

def ts2021_ws(srv, machine_priv=None, split=None):
    """Noise IK over a WebSocket /ts2021 → (NoiseConn, WebSocket)."""
    st, _, body = srv.get("/key?v=113")
    assert st == 200, (st, body)
    server_pub = noise_client.key_from_text(json.loads(body)["publicKey"], "mkey:")
    hs = noise_client.Handshake(server_pub, machine_priv or noise_client.new_private_key())
    init = base64.b64encode(hs.initiation()).decode()
    path = "/ts2021?" + urllib.parse.urlencode({"X-Tailscale-Handshake": init})
    sock = srv.connect()
    ws = dc.WebSocket(sock)
    try:
        st = ws.handshake(f"{HOST}:{srv.port}", path, ("tailscale-control-protocol",))
        assert st == 101, (f"{WS_REFUSED}: GET /ts2021?X-Tailscale-Handshake=… (Upgrade: "
                           f"websocket, Sec-WebSocket-Protocol: tailscale-control-protocol) "
                           f"over {srv.kind} → HTTP {st} {ws.body[:200]!r}")
        assert ws.subprotocol == "tailscale-control-protocol", ws.headers
        ws.split = split
        deadline = time.monotonic() + 10
        buf = b""
        while len(buf) < 3 or (buf[0] == 3 and len(buf) < 3 + struct.unpack(">H", buf[1:3])[0]) \
                or (buf[0] != 3 and len(buf) < 51):
            left = deadline - time.monotonic()
            assert left > 0, f"no handshake response over WebSocket ({len(buf)} bytes)"
            ws.settimeout(left)
            chunk = ws.recv(65536)
            assert chunk, (f"the server closed the WebSocket before its handshake response "
                           f"(close code {ws.close_code} {ws.close_reason!r})")
            buf += chunk
        if buf[0] == 3:
            n = struct.unpack(">H", buf[1:3])[0]
            raise AssertionError(f"Noise error frame: {buf[3:3 + n]!r}")
        tx, rx = hs.finish(buf[:51])
        return noise_client.NoiseConn(ws, tx, rx, leftover=buf[51:]), ws
    except BaseException:
        ws.close()
        raise


@pytest.mark.parametrize("split", [None, 7], ids=["one-message-per-write", "7-byte-messages"])
def test_ts2021_register_over_websocket(ws_server, split):
    srv = ws_server
    uid = srv.create_user_cli(helpers.unique("ws"))
    authkey = srv.preauth_key(uid)
    node_pub = os.urandom(32)
    hostname = f"wsnode{os.urandom(3).hex()}"
    nconn, ws = ts2021_ws(srv, split=split)
    try:
        h2s = noise_client.H2Session(nconn, HOST)
        req = {"Version": 113, "NodeKey": "nodekey:" + node_pub.hex(),
               "OldNodeKey": "nodekey:" + "0" * 64, "Auth": {"AuthKey": authkey},
               "Hostinfo": {"Hostname": hostname, "OS": "linux"},
               "Expiry": "0001-01-01T00:00:00Z"}
        st, _, body = h2s.request("POST", "/machine/register", json.dumps(req).encode())
        assert st == 200, (st, body)
        resp = json.loads(body)
        assert resp.get("MachineAuthorized"), resp
        assert ws.max_message <= dc.TS_CLIENT_MAX_MESSAGE, ws.max_message
    finally:
        nconn.close()
    node = tn.poll(lambda: srv.node_by_name(hostname), 20, f"node {hostname} in the list")
    assert node, hostname


def test_ts2021_websocket_without_handshake_is_refused(ws_server, clients):
    """No X-Tailscale-Handshake: no Noise session (an HTTP error, or 101 then a close)."""
    ws = dc.WebSocket(ws_server.connect())
    try:
        st = ws.handshake(f"{HOST}:{ws_server.port}", "/ts2021",
                          ("tailscale-control-protocol",))
        if st == 101:
            assert ws.wait_closed(5), "101 without a handshake parameter, and still open 5 s"
        else:
            assert 400 <= st < 500, st
    finally:
        ws.close()
    # The server still works (DERP over WebSocket and plain).
    check_others(clients("ws"), clients("plain"))


# ---------------------------------------------------------------- (iii) real clients

# First and last of $HS_TS_VERSIONS (the same one twice if there is one), built with the tag.
WS_VERSIONS = [v + "-ws" for v in dr.VERSIONS[:1] + dr.VERSIONS[-1:]]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespace)")
def test_real_clients_relay_over_websocket_derp(db, tmp_path_factory):
    """Two tailscaled built with Tailscale's ts_debug_websockets tag and TS_DEBUG_DERP_WS_CLIENT
    =true (they then speak DERP only over WebSocket) relay through our embedded DERP over TLS:
    ping via DERP both ways and a byte-exact TCP transfer. The server listens on :443 because
    v1.80.3's WebSocket dialer ignores DERPPort."""
    if db.kind != "sqlite":
        pytest.skip("real WebSocket clients: SQLite is enough")
    missing = [v for v in WS_VERSIONS if not tn.have_version(v)]
    if not WS_VERSIONS or missing:
        pytest.skip(f"no WebSocket-enabled tailscaled for {missing or 'any version'}: run "
                    f"tests/lib/install-tailscale-ws.sh {' '.join(dr.VERSIONS)}")
    r = dr.Relay(tmp_path_factory.mktemp("derp-ws"), db, versions=WS_VERSIONS,
                 node_env={"TS_DEBUG_DERP_WS_CLIENT": "true"}, port=443)
    try:
        try:
            r.open()
        except BaseException:
            print(r.logs())
            if r.server is not None:
                print(r.server.log_tail(100))
            raise

        def ws_lines(n):
            return [l for l in n.log(2000).splitlines() if "websocket" in l.lower()]

        def connected():
            return all(any("websocket: connected to" in l for l in ws_lines(n)) for n in r.nodes)

        try:
            tn.poll(connected, 45, "both tailscaled to log 'websocket: connected to'",
                    interval=0.5)
        except AssertionError as e:
            detail = "\n".join(f"{n.name} ({n.version}):\n  " + "\n  ".join(ws_lines(n)[-8:])
                               for n in r.nodes)
            raise AssertionError(f"{WS_REFUSED} for real tailscaled WebSocket DERP clients: "
                                 f"{e}\nTheir WebSocket log lines:\n{detail}") from None
        for n in r.nodes:
            assert any("connecting websocket to https://127.0.0.1/derp" in l
                       for l in ws_lines(n)), (n.name, ws_lines(n))

        r.relays_both_ways("WebSocket DERP")
        # Still on WebSocket (no silent fallback; there is none in tailscaled, but check).
        for n in r.nodes:
            assert not any("websocket to" in l and "error" in l for l in ws_lines(n)[-3:]), \
                ws_lines(n)[-3:]
    except BaseException:
        print(r.logs())
        raise
    finally:
        r.close()
