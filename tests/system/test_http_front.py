"""The HTTP front door as an attacker meets it, over raw sockets (issue 18, items 2, 7, 8):
API keys checked on the headers before any body is read, an absolute deadline for a request's
head and body, caps on connections in total and per client address, requests whose framing
is ambiguous (RFC 9112 §6.3) or whose target carries %00 answered 400 before
libmicrohttpd sees them, and 401 for any /api request without a key, whatever its route."""

import concurrent.futures as cf
import fcntl
import http.client
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


# ---- item 2: an absolute deadline for a request's head and body ----

@pytest.fixture(scope="module")
def tserver(db):
    """A server whose requests must arrive whole within TIMEOUT_S seconds."""
    from helpers import Server
    s = Server(db, overrides={"tuning": {"http_request_timeout": f"{TIMEOUT_S}s"}})
    try:
        s.start()
        s.ensure_api_key()
        yield s
        s.stop(check=True)
    finally:
        s.cleanup()


def _drip_until_closed(c, limit=15.0, every=0.25, drop=b"a"):
    """Sends drop every `every` seconds until the server closes; seconds it took (or limit
    when it never did)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        try:
            c.send(drop)
        except OSError:
            break
        r, _, _ = select.select([c], [], [], every)
        if r:
            try:
                if not c.recv(65536):
                    break
            except OSError:
                break
    return time.monotonic() - t0


@pytest.mark.parametrize("where", ["first head", "body", "second head", "empty lines"])
def test_slow_drip_is_cut_at_the_request_deadline(tserver, where):
    """One byte every 0.25 s is progress to an idle timer; the request deadline runs from
    the request's first byte, whatever arrives after it (empty lines before a request, which
    are skipped, included)."""
    c = _connect(tserver, timeout=20)
    drop = b"a"
    try:
        if where == "empty lines":
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _status(_read_response(c)) == 200
            drop = b"\r\n"
        elif where == "body":
            c.sendall(b"POST /api/v1/user HTTP/1.1\r\nHost: x\r\n" + _auth(tserver) +
                      b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
        elif where == "second head":
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _status(_read_response(c)) == 200
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: ")
        else:
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: ")
        took = _drip_until_closed(c, drop=drop)
    finally:
        c.close()
    # The sweep runs each second; ASan and a busy machine add some more.
    assert TIMEOUT_S - 0.5 <= took < TIMEOUT_S + 3, f"{where}: closed after {took:.1f} s"
    _alive(tserver)


def test_request_in_pieces_within_the_deadline_succeeds(tserver):
    name = unique()
    body = b'{"name": "%s"}' % name.encode()
    c = _connect(tserver)
    try:
        c.sendall(b"POST /api/v1/user HTTP/1.1\r\nHost: x\r\n" + _auth(tserver) +
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        for b in body[:5], body[5:10], body[10:]:
            time.sleep(0.3)  # the pieces are the test: a slow client well within the deadline
            c.sendall(b)
        assert _status(_read_response(c)) == 200
    finally:
        c.close()
    assert name in tserver.user_names()


def test_idle_keepalive_connection_is_not_cut_by_the_request_deadline(tserver):
    """Between requests only the idle timeout applies: the deadline is per request."""
    c = _connect(tserver)
    try:
        c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _status(_read_response(c)) == 200
        time.sleep(TIMEOUT_S + 1.5)  # idle past the request deadline (and a sweep) on purpose
        c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _status(_read_response(c)) == 200
    finally:
        c.close()


# ---- item 2: caps on connections in total and per client address ----

def test_connection_caps_refuse_clearly_while_others_carry_on(server_factory):
    s = server_factory(overrides={"trusted_proxies": ["127.0.0.3"],
                                  "tuning": {"http_max_connections": 10,
                                             "http_max_connections_per_ip": 4}})
    held = []
    try:
        # Four silent connections from one address: its share.
        held += [_connect(s, "127.0.0.2") for _ in range(4)]
        c = _connect(s, "127.0.0.2")
        resp = _read_response(c, deadline=5)
        c.close()
        assert _status(resp) == 503, resp
        assert b"too many connections from your address" in resp
        # Everyone else is served meanwhile.
        c = _connect(s, "127.0.0.1")
        c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _status(_read_response(c)) == 200
        c.close()
        # A trusted proxy carries many clients: not capped per address.
        for _ in range(5):
            p = _connect(s, "127.0.0.3")
            p.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _status(_read_response(p)) == 200
            held.append(p)
        # 9 held; the 10th is the last the server takes.
        held.append(_connect(s, "127.0.0.4"))
        held[-1].sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _status(_read_response(held[-1])) == 200
        c = _connect(s, "127.0.0.5")
        resp = _read_response(c, deadline=5)
        c.close()
        assert _status(resp) == 503, resp
        assert b"the server is busy" in resp
    finally:
        for h in held:
            h.close()
    # Slots come back when their connections end.
    end = time.monotonic() + 10
    while True:
        c = _connect(s, "127.0.0.2")
        c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        st = _status(_read_response(c))
        c.close()
        if st == 200 or time.monotonic() > end:
            break
        time.sleep(0.1)
    assert st == 200
    assert "tuning.http_max_connections_per_ip" in s.log_text()


# ---- item 7: ambiguous framing and %00 are answered 400 before libmicrohttpd ----

BAD_FRAMING = {
    "CL and TE": (b"POST /api/v1/user HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", 400),
    "TE and CL": (b"POST /api/v1/user HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Length: 5\r\n", b"0\r\n\r\n", 400),
    "two different CL": (b"POST /api/v1/user HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                         b"Content-Length: 12\r\n", b"{}", 400),
    "two equal CL": (b"POST /api/v1/user HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                     b"Content-Length: 2\r\n", b"{}", 400),
    "CL list": (b"POST /api/v1/user HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\n", b"{}", 400),
    "CL not a number": (b"POST /api/v1/user HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n",
                        b"{}", 400),
    "chunked not last": (b"POST /api/v1/user HTTP/1.1\r\nHost: x\r\n"
                         b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n", 400),
    "unknown coding": (b"POST /api/v1/user HTTP/1.1\r\nHost: x\r\n"
                       b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n", 501),
    "broken chunk": (b"POST /api/v1/user HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n",
                     b"zz\r\n{}\r\n0\r\n\r\n", 400),
    "%00 in path": (b"GET /api/v1/user/alice%00xyz HTTP/1.1\r\nHost: x\r\n", b"", 400),
    "%00 in query": (b"GET /api/v1/user?name=alice%00xyz HTTP/1.1\r\nHost: x\r\n", b"", 400),
}


@pytest.mark.parametrize("second", [False, True], ids=["first request", "after a good one"])
@pytest.mark.parametrize("case", list(BAD_FRAMING))
def test_ambiguous_framing_and_nul_are_refused(mserver, case, second):
    head, body, expect = BAD_FRAMING[case]
    before = mserver.users()
    good = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" if second else b""
    c = _connect(mserver)
    try:
        c.sendall(good + head + _auth(mserver) + b"\r\n" + body)
        resp = _read_responses(c, 2 if second else 1)
    finally:
        c.close()
    assert _responses(resp) == ([200, expect] if second else [expect]), \
        f"{case}: {resp[:400]!r}"
    assert b"\r\nConnection: close" in _split(resp)[-1][1], resp[-300:]
    assert mserver.users() == before
    _alive(mserver)


def test_nul_cannot_shorten_a_user_name(mserver):
    """/api/v1/user/alice%00xyz used to answer for alice."""
    u = mserver.create_user()
    st, body = mserver.api("GET", f"/api/v1/user/{u['name']}%00xyz")
    assert st == 400, (st, body)
    st, _ = mserver.api("GET", f"/api/v1/user/{u['name']}")
    assert st == 200


def test_smuggled_request_does_not_run(mserver):
    """Content-Length covers the whole rest; chunked would end the body at once and run the
    rest as a second request. Whichever a proxy in front believes, nothing runs."""
    name = unique("smug")
    body = b'{"name": "%s"}' % name.encode()
    smuggled = (b"POST /api/v1/user HTTP/1.1\r\nHost: x\r\n" + _auth(mserver) +
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    outer_body = b"0\r\n\r\n" + smuggled
    c = _connect(mserver)
    try:
        c.sendall(b"POST /api/v1/user HTTP/1.1\r\nHost: x\r\n" + _auth(mserver) +
                  b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(outer_body)
                  + outer_body)
        resp = _read_responses(c, 2, deadline=5)
    finally:
        c.close()
    assert _responses(resp) == [400], resp[:400]
    assert name not in mserver.user_names()


def test_chunked_and_pipelined_requests_still_pass(mserver):
    """Framing is followed, not broken: a chunked body with an extension and a trailer, then
    two more requests on the same connection."""
    name = unique()
    body = b'{"name": "%s"}' % name.encode()
    chunked = b"5;x=y\r\n" + body[:5] + b"\r\n%x\r\n" % (len(body) - 5) + body[5:] + \
        b"\r\n0\r\nX-Trailer: t\r\n\r\n"
    c = _connect(mserver)
    try:
        c.sendall(b"POST /api/v1/user HTTP/1.1\r\nHost: x\r\n" + _auth(mserver) +
                  b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
                  chunked + b"\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /api/v1/user HTTP/1.1\r\nHost: x\r\n" + _auth(mserver) +
                  b"Connection: close\r\n\r\n")
        resp = _read_responses(c, 3)
    finally:
        c.close()
    assert _responses(resp) == [200, 200, 200], resp[:600]
    assert name in mserver.user_names()


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
    assert st == 200 and isinstance(body, dict) and body.get("swagger") == "2.0"


def test_ping_response_endpoint_refuses_what_no_probe_sent(mserver):
    """/machine/ping-response completes an HA health probe only with the id the probe sent
    (its only credential): a made-up id, an empty one, or another method get nothing done."""
    def ask(method, query):
        c = http.client.HTTPConnection("127.0.0.1", mserver.port, timeout=10)
        try:
            c.request(method, "/machine/ping-response" + query)
            r = c.getresponse()
            r.read()
            return r.status
        finally:
            c.close()

    assert ask("HEAD", "?id=" + "0" * 32) == 404
    assert ask("HEAD", "?id=" + "ab" * 40) == 404
    assert ask("HEAD", "?id=") == 400
    assert ask("HEAD", "") == 400
    assert ask("GET", "?id=" + "0" * 32) == 405
    assert ask("POST", "?id=" + "0" * 32) == 405
