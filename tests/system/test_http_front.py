"""The HTTP front door as an attacker meets it, over raw sockets (issue 18, items 2, 8):
API keys checked on the headers before any body is read, and 401 for any /api request
without a key, whatever its route."""

import concurrent.futures as cf
import fcntl
import select
import socket
import struct
import termios
import time

import pytest

from helpers import unique

TIMEOUT_S = 2  # tuning.http_request_timeout of the servers that test the deadline


# ---- raw HTTP ----

def _connect(s, src="127.0.0.1", timeout=10):
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(timeout)
    c.bind((src, 0))
    c.connect(("127.0.0.1", s.port))
    return c


def _read_response(c, deadline=10.0):
    """One response (head and Content-Length body), or what came before EOF/reset/timeout."""
    out = b""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        head, sep, body = out.partition(b"\r\n\r\n")
        if sep:
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v.strip())
            if len(body) >= length:
                return out
        c.settimeout(max(0.05, end - time.monotonic()))
        try:
            chunk = c.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        out += chunk
    return out


def _split(data):
    """(status, head, body) of each whole response in data, in order."""
    out = []
    while data.startswith(b"HTTP/1.1 "):
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v.strip())
        out.append((int(head.split(b" ")[1]), head, rest[:length]))
        data = rest[length:]
    return out


def _responses(data):
    """Status codes of the responses in data, in order."""
    return [st for st, _, _ in _split(data)]


def _read_responses(c, count, deadline=10.0):
    """Responses until count of them came, or the connection ended."""
    out = b""
    end = time.monotonic() + deadline
    while len(_responses(out)) < count and time.monotonic() < end:
        more = _read_response(c, end - time.monotonic())
        if not more:
            break
        out += more
    return out


def _status(data):
    codes = _responses(data)
    return codes[0] if codes else None


def _auth(s):
    return b"Authorization: Bearer " + s.api_key.encode() + b"\r\n"


def _rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _alive(s):
    st, body = s.api("GET", "/health", key=None)
    assert st == 200 and body == {"status": "pass"}, (st, body)


# ---- item 2: bodies are not read before the API key is checked ----

def test_unauthenticated_body_is_refused_at_the_headers(mserver):
    """The head announces a 1 MiB body and stops: the 401 must come without it."""
    c = _connect(mserver)
    try:
        c.sendall(b"POST /api/v1/user HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1048576\r\n\r\n")
        resp = _read_response(c, deadline=5)
    finally:
        c.close()
    assert _status(resp) == 401, resp[:300]
    assert resp.endswith(b"\r\n\r\nUnauthorized"), resp[-100:]


def _hold_body(s, size):
    """Sends a head and all but the last KiB of a body of size bytes, without a key, and
    returns the open socket. The server may stop reading: that is the point."""
    c = _connect(s, timeout=5)
    head = (b"POST /api/v1/user HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % size)
    body = b"x" * (size - 1024)
    try:
        c.sendall(head)
        c.sendall(body)
    except OSError:
        pass  # refused and closed while we were still sending
    return c


def _wait_sent(conns, deadline=15.0):
    """Until the server has taken (read, or dropped by closing) every byte we sent: only then
    does what it keeps show in its RSS, not in our socket buffers."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        queued = 0
        for c in conns:
            try:
                queued += struct.unpack("i", fcntl.ioctl(c.fileno(), termios.TIOCOUTQ,
                                                         b"\0\0\0\0"))[0]
            except OSError:
                pass
        if queued == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"{queued} bytes still unsent after {deadline} s")


def test_held_bodies_do_not_hold_memory(mserver):
    """100 connections without a key each push ~1 MiB of body and keep the connection open.
    The old server read them all (RSS +100 MiB); now each is answered 401 at its headers and
    nothing of the body is kept."""
    pid = mserver.proc.pid
    _alive(mserver)
    before = _rss_kib(pid)
    with cf.ThreadPoolExecutor(20) as ex:
        conns = list(ex.map(lambda _: _hold_body(mserver, 1 << 20), range(100)))
    try:
        _wait_sent(conns)
        during = _rss_kib(pid)
        grown_mib = (during - before) / 1024
        print(f"server RSS {before // 1024} MiB before, {during // 1024} MiB with 100 held "
              f"bodies (+{grown_mib:.1f} MiB)")
        # ASan keeps freed memory in quarantine, so transient buffers still count here; the
        # bodies themselves (100 MiB) must not.
        assert grown_mib < 40, f"RSS grew by {grown_mib:.1f} MiB under 100 held 1 MiB bodies"
        answers = [_read_response(c, deadline=5) for c in conns]
    finally:
        for c in conns:
            c.close()
    assert [_status(a) for a in answers] == [401] * 100, \
        sorted(set(a[:40] for a in answers))
    _alive(mserver)


# ---- item 8: 401 before routing ----

@pytest.mark.parametrize("method,path", [
    ("GET", "/api/v1/user"),
    ("GET", "/api/v1/nonexistent"),
    ("PATCH", "/api/v1/user"),          # a known path, a wrong method
    ("DELETE", "/api/v1/user/1"),
    ("POST", "/api/v1/node/1/frobnicate"),
    ("GET", "/api/v2/anything"),
    ("GET", "/api"),
])
def test_unauthenticated_api_is_401_whatever_the_route(mserver, method, path):
    """The same answer as headscale 0.29.3 for every /api path, so that none can be told
    from another without a key."""
    st, hdrs, body = mserver.api_full(method, path, key=None)
    assert st == 401, (method, path, st, body)
    assert hdrs.get("content-type") == "text/plain; charset=utf-8", hdrs
    assert body == "Unauthorized"
    st, hdrs, body = mserver.api_full(method, path, key="hskey-api-000000000000-" + "0" * 64)
    assert (st, body) == (401, "Unauthorized")


def test_openapi_stays_public(mserver):
    st, _, body = mserver.api_full("GET", "/api/v1/openapi.json", key=None)
    assert st == 200 and isinstance(body, dict) and "openapi" in body
