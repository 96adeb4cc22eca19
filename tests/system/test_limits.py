"""Abuse limits (issue 19) seen from outside, each hit by one client while another carries on:
a request head over 8 KiB is answered 431 whether it is a connection's first or a later one;
one address starting Noise handshakes faster than tuning.handshake_rate_limit is answered 429
before any key work, while other addresses and trusted proxies still connect and register;
the embedded DERP relay refuses clients past tuning.derp_max_clients(_per_ip) with a 503
before the upgrade, while the clients it holds still relay.
The connection caps and the request deadline are in test_http_front.py, the registration
limits in test_register_limits.py."""

import base64
import socket
import time

import pytest

import derp_client as dc
from helpers import embedded_derp
from noise_client import (ControlClient, Handshake, new_private_key, read_http_head,
                          recv_exact, upgrade_request)
from test_http_front import _connect, _read_response, _status
from test_register_limits import NO_RATE_LIMIT, user_key

pytest.importorskip("h2", reason="needs the h2 package (pip install h2)")

HEAD_MAX = 8192  # HTTP1_MAX_HEAD


def _health(s, src="127.0.0.1"):
    c = _connect(s, src)
    try:
        c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return _status(_read_response(c))
    finally:
        c.close()


def _long_head(size):
    return b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * size + b"\r\n\r\n"


@pytest.mark.parametrize("second", [False, True], ids=["first request", "after a good one"])
def test_request_head_over_the_limit_is_431(mserver, second):
    c = _connect(mserver, "127.0.0.2")
    try:
        if second:
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _status(_read_response(c)) == 200
        # Sent in pieces, as a slow client would: the limit holds however it arrives.
        data = _long_head(HEAD_MAX)
        for i in range(0, len(data), 1000):
            c.sendall(data[i:i + 1000])
        resp = _read_response(c)
    finally:
        c.close()
    assert _status(resp) == 431, resp[:300]
    assert b"request head too large" in resp
    # A head just under the limit is served, and so is everyone else.
    c = _connect(mserver)
    try:
        c.sendall(_long_head(HEAD_MAX - 200))
        assert _status(_read_response(c)) == 200
    finally:
        c.close()


def _upgrade_from(s, src, server_pub):
    """A /ts2021 upgrade with a valid initiation from address src → (101, "") once the Noise
    handshake completed, or (status, body) of a refusal."""
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10, source_address=(src, 0))
    try:
        hs = Handshake(server_pub, new_private_key())
        sock.sendall(upgrade_request(f"127.0.0.1:{s.port}",
                                     base64.b64encode(hs.initiation()).decode()))
        deadline = time.monotonic() + 10
        status, _, rest = read_http_head(sock, deadline)
        if status == 101:
            rest += recv_exact(sock, max(0, 51 - len(rest)), deadline)
            hs.finish(rest[:51])  # raises unless the server completed the handshake
            return 101, ""
        while chunk := sock.recv(4096):
            rest += chunk
        return status, rest.decode("utf-8", "replace")
    finally:
        sock.close()


def test_handshake_rate_limit_refuses_one_address_while_others_carry_on(server_factory):
    s = server_factory(overrides={"trusted_proxies": ["127.0.0.3"],
                                  "tuning": {"handshake_rate_limit": 3}})
    pub = ControlClient(s.port).server_pub()
    # Three at once is the address's burst; the next is refused before the handshake.
    for _ in range(3):
        assert _upgrade_from(s, "127.0.0.2", pub) == (101, "")
    status, body = _upgrade_from(s, "127.0.0.2", pub)
    assert status == 429, body
    assert "too many Noise handshakes" in body and "tuning.handshake_rate_limit" in body, body
    # Another address logs in meanwhile.
    _, key = user_key(s)
    st, _, resp = ControlClient(s.port).register(auth_key=key)
    assert st == 200 and resp.get("MachineAuthorized"), (st, resp)
    # A trusted proxy carries many clients: not limited.
    for _ in range(5):
        assert _upgrade_from(s, "127.0.0.3", pub) == (101, "")
    # The refused address still gets plain HTTP.
    assert _health(s, "127.0.0.2") == 200
    assert "tuning.handshake_rate_limit" in s.log_text()


# ---- the embedded DERP relay: clients in total and per address ----

def _derp_from(s, src):
    """A DERP connection from address src, upgrade answered → (DerpConn, status, body)."""
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10, source_address=(src, 0))
    c = dc.DerpConn(sock, f"127.0.0.1:{s.port}")
    status = c.upgrade()
    body = b""
    if status != 101:
        body = c.buf
        while chunk := sock.recv(4096):
            body += chunk
    return c, status, body.decode("utf-8", "replace")


def _derp_client(s, src, held):
    c, status, body = _derp_from(s, src)
    held.append(c)
    assert status == 101, (status, body)
    c.read_server_key()
    c.client_info()
    c.read_server_info()
    return c


def _derp_refused(s, src, why):
    c, status, body = _derp_from(s, src)
    c.close()
    assert status == 503 and why in body, (status, body)


def test_derp_client_caps_refuse_clearly_while_others_carry_on(server_factory, tmp_path):
    s = server_factory(overrides={
        "trusted_proxies": ["127.0.0.3"],
        "tuning": {"derp_max_clients": 6, "derp_max_clients_per_ip": 3},
        **embedded_derp(903, tmp_path / "derp.key")})
    held = []
    try:
        # Three from one address is its share; the fourth is refused before the upgrade.
        mine = [_derp_client(s, "127.0.0.2", held) for _ in range(3)]
        _derp_refused(s, "127.0.0.2", "too many DERP clients from your address")
        # Another address joins meanwhile and relays to one of the first three.
        other = _derp_client(s, "127.0.0.1", held)
        other.send_packet(mine[0].pub, b"still relayed")
        assert mine[0].recv_packet() == (other.pub, b"still relayed")
        # A trusted proxy is not capped per address, only by the total: 4 held, 2 more fit.
        for _ in range(2):
            _derp_client(s, "127.0.0.3", held)
        _derp_refused(s, "127.0.0.4", "the DERP server is busy")
        # A client that goes gives its place back.
        mine[1].close()
        deadline = time.monotonic() + 10
        while True:
            c, status, _ = _derp_from(s, "127.0.0.2")
            held.append(c)
            if status == 101 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == 101
    finally:
        for c in held:
            c.close()
    assert "tuning.derp_max_clients" in s.log_text()


# ---- HTTP/2 request bodies held by the control loop ----

REFUSED_STREAM = 7  # RFC 9113 §7


def _events(h2s, deadline):
    """Reads once from the Noise connection → the h2 events it carried (answers flushed)."""
    events = h2s.conn.receive_data(h2s.n.read(max(0.01, deadline - time.monotonic())))
    h2s._flush()
    return events


def _hold_body(h2s, size, timeout=15):
    """Opens a POST and sends size bytes of a longer body, then waits until the server has
    seen them (a PING answered after them) → the error code the stream was reset with, or
    None while the server holds the body."""
    import h2.events
    conn = h2s.conn
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"),
                            (":authority", h2s.authority), (":path", "/machine/register"),
                            ("content-length", str(2 * size))])
    h2s._flush()
    deadline = time.monotonic() + timeout
    sent, reset, acked = 0, None, False
    while reset is None and not acked:
        assert time.monotonic() < deadline, f"stream {sid}: {sent} of {size} bytes sent"
        room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size,
                   size - sent)
        if sent < size and room > 0:
            conn.send_data(sid, b"x" * room)
            sent += room
            if sent == size:
                conn.ping(b"hsbudget")
            h2s._flush()
            continue
        for ev in _events(h2s, deadline):
            if isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                reset = ev.error_code
            elif isinstance(ev, h2.events.PingAckReceived):
                acked = True
    return reset


def test_h2_body_budgets_refuse_streams_while_others_carry_on(server_factory):
    s = server_factory(overrides={"tuning": {"control_max_body_buffer_mib": 3,
                                             **NO_RATE_LIMIT}})
    part = 900 * 1024
    socks = []
    try:
        # One connection: two bodies held, the third would pass its 2 MiB share.
        a = ControlClient(s.port)
        sock, conn_a = a.connect()
        socks.append(sock)
        assert _hold_body(conn_a, part) is None
        assert _hold_body(conn_a, part) is None
        assert _hold_body(conn_a, part) == REFUSED_STREAM
        # Another connection may hold one more (2.7 MiB in all); a third connection's body
        # would pass the 3 MiB everyone shares.
        sock, conn_b = ControlClient(s.port).connect()
        socks.append(sock)
        assert _hold_body(conn_b, part) is None
        sock, conn_c = ControlClient(s.port).connect()
        socks.append(sock)
        assert _hold_body(conn_c, part) == REFUSED_STREAM
        # Small requests still pass, on a refused connection and from a new client.
        st, _, body = conn_c.request("POST", "/machine/register", b'{"Version": 68}')
        assert st not in (-1, None), body
        _, key = user_key(s)
        st, _, resp = ControlClient(s.port).register(auth_key=key)
        assert st == 200 and resp.get("MachineAuthorized"), (st, resp)
        # Bodies given up give their bytes back.
        socks.pop(0).close()
        deadline = time.monotonic() + 10
        while _hold_body(conn_c, part) is not None:
            assert time.monotonic() < deadline, "the closed connection's bodies still count"
    finally:
        for sock in socks:
            sock.close()
    # Refusals are logged at most once in 10 s: the first one says which budget.
    assert "refused: request bodies held would pass the connection's share" in s.log_text()
