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
from helpers import free_port
from noise_client import (ControlClient, Handshake, new_private_key, read_http_head,
                          recv_exact, upgrade_request)
from test_http_front import _connect, _read_response, _status
from test_register_limits import user_key

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
        "derp": {"server": {"enabled": True, "region_id": 903, "region_code": "hslim",
                            "region_name": "HS Limits Test",
                            "stun_listen_addr": f"127.0.0.1:{free_port()}",
                            "private_key_path": str(tmp_path / "derp.key"),
                            "automatically_add_embedded_derp_region": True,
                            "verify_clients": False}}})
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
