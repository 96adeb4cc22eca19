"""A small Tailscale control-protocol (TS2021) initiator for the bad-input system tests.

Implements the client side of Tailscale's controlbase Noise channel
(Noise_IK_25519_ChaChaPoly_BLAKE2s with Tailscale's prologue and framing, big-endian transport
nonces) and, on top of it, just enough HTTP/2 (through the `h2` package) to send one request.
It is a test tool: it lets tests send well-formed handshakes, handshakes sealed for the wrong
server key, oversized frames and malformed bodies, and report what the server answered.

ControlClient (at the end) is one node on top of it: register requests, one-shot full maps
and a streaming map poll, as the system tests drive the server's control protocol.

Framing (all integers big-endian):
  initiation  u16 version · 0x01 · u16 96 · e(32) · enc(s)(48) · tag(16)     101 bytes
  response    0x02 · u16 48 · e(32) · tag(16)                                  51 bytes
  error       0x03 · u16 len · text
  record      0x04 · u16 len · ciphertext (≤ 4093, so the frame is ≤ 4096)
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import socket
import struct
import time

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives import serialization

PROTOCOL_NAME = b"Noise_IK_25519_ChaChaPoly_BLAKE2s"
MAX_FRAME = 4096
MAX_CIPHERTEXT = MAX_FRAME - 3
MAX_PLAINTEXT = MAX_CIPHERTEXT - 16
EARLY_MAGIC = b"\xff\xff\xffTS"
DEFAULT_CAPVER = 113


class NoiseError(Exception):
    pass


class ServerError(NoiseError):
    """The server sent a type-3 error frame (or a non-101 HTTP answer)."""


def _blake2s(*parts):
    h = hashlib.blake2s()
    for p in parts:
        h.update(p)
    return h.digest()


def _hkdf2(ck, ikm):
    """HKDF (RFC 5869) with HMAC-BLAKE2s, empty info, 64 bytes out → two 32-byte keys."""
    prk = hmac.new(ck, ikm, hashlib.blake2s).digest()
    t1 = hmac.new(prk, b"\x01", hashlib.blake2s).digest()
    t2 = hmac.new(prk, t1 + b"\x02", hashlib.blake2s).digest()
    return t1, t2


def _raw_pub(priv):
    return priv.public_key().public_bytes(serialization.Encoding.Raw,
                                          serialization.PublicFormat.Raw)


def _dh(priv, pub_bytes):
    out = priv.exchange(X25519PublicKey.from_public_bytes(pub_bytes))
    if out == bytes(32):
        raise NoiseError("X25519 produced an all-zero shared secret")
    return out


def new_private_key():
    return X25519PrivateKey.generate()


def key_from_text(text, prefix="mkey:"):
    """'mkey:<64 hex>' → 32 raw bytes."""
    assert text.startswith(prefix), f"expected {prefix}…, got {text!r}"
    raw = bytes.fromhex(text[len(prefix):])
    assert len(raw) == 32, text
    return raw


def key_text(raw, prefix):
    return prefix + raw.hex()


class Handshake:
    """The initiator's symmetric state for one IK handshake."""

    def __init__(self, server_pub, machine_priv, version=DEFAULT_CAPVER):
        self.version = version
        self.server_pub = server_pub
        self.machine_priv = machine_priv
        self.h = _blake2s(PROTOCOL_NAME)
        self.ck = self.h
        self._mix_hash(b"Tailscale Control Protocol v%d" % version)
        self._mix_hash(server_pub)
        self.eph = X25519PrivateKey.generate()

    def _mix_hash(self, data):
        self.h = _blake2s(self.h, data)

    def _mix_dh(self, priv, pub):
        self.ck, k = _hkdf2(self.ck, _dh(priv, pub))
        return k

    def _encrypt_and_hash(self, k, pt):
        ct = ChaCha20Poly1305(k).encrypt(bytes(12), pt, self.h)
        self._mix_hash(ct)
        return ct

    def _decrypt_and_hash(self, k, ct):
        try:
            pt = ChaCha20Poly1305(k).decrypt(bytes(12), ct, self.h)
        except Exception as e:  # cryptography raises InvalidTag
            raise NoiseError(f"handshake response does not decrypt: {e!r}") from e
        self._mix_hash(ct)
        return pt

    def initiation(self):
        """The 101-byte message 1 (-> e, es, s, ss)."""
        e_pub = _raw_pub(self.eph)
        self._mix_hash(e_pub)
        k = self._mix_dh(self.eph, self.server_pub)
        enc_s = self._encrypt_and_hash(k, _raw_pub(self.machine_priv))
        k = self._mix_dh(self.machine_priv, self.server_pub)
        tag = self._encrypt_and_hash(k, b"")
        body = e_pub + enc_s + tag
        assert len(body) == 96
        return struct.pack(">HBH", self.version, 1, len(body)) + body

    def finish(self, resp):
        """Consumes the 51-byte message 2 (<- e, ee, se) → (tx_key, rx_key)."""
        if len(resp) != 51 or resp[0] != 2 or struct.unpack(">H", resp[1:3])[0] != 48:
            raise NoiseError(f"bad handshake response: {resp[:8].hex()}… ({len(resp)} bytes)")
        re_pub, tag = resp[3:35], resp[35:51]
        self._mix_hash(re_pub)
        self._mix_dh(self.eph, re_pub)  # ee
        k = self._mix_dh(self.machine_priv, re_pub)  # se
        self._decrypt_and_hash(k, tag)
        c1, c2 = _hkdf2(self.ck, b"")
        return c1, c2


def _nonce(n):
    return b"\x00\x00\x00\x00" + struct.pack(">Q", n)


def recv_exact(sock, n, deadline):
    buf = b""
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out reading {n} bytes (got {len(buf)})")
        sock.settimeout(left)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def read_http_head(sock, deadline, limit=65536):
    """Reads an HTTP/1.1 response head → (status, headers dict lower-case, leftover bytes)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no HTTP response head (got {buf[:200]!r})")
        sock.settimeout(left)
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError(f"connection closed before the response head (got {buf[:200]!r})")
        buf += chunk
        if len(buf) > limit:
            raise NoiseError("response head too large")
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers, rest


def upgrade_request(host, handshake_b64=None, path="/ts2021", method="POST",
                    upgrade="tailscale-control-protocol"):
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if upgrade is not None:
        lines += [f"Upgrade: {upgrade}", "Connection: upgrade"]
    if handshake_b64 is not None:
        lines.append(f"X-Tailscale-Handshake: {handshake_b64}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class NoiseConn:
    """An established controlbase connection (client side)."""

    def __init__(self, sock, tx, rx, leftover=b"", timeout=10.0):
        self.sock = sock
        self.tx = ChaCha20Poly1305(tx)
        self.rx = ChaCha20Poly1305(rx)
        self.tx_n = 0
        self.rx_n = 0
        self.buf = leftover
        self.timeout = timeout
        self.early = None
        self._pending = b""  # plaintext read but not yet consumed

    # ---- raw frames ----
    def send_frame(self, ftype, payload):
        self.sock.sendall(struct.pack(">BH", ftype, len(payload) & 0xFFFF) + payload)

    def send_raw(self, data):
        self.sock.sendall(data)

    def write(self, data):
        """Encrypts data into records of at most MAX_PLAINTEXT bytes."""
        for i in range(0, max(len(data), 1), MAX_PLAINTEXT):
            chunk = data[i:i + MAX_PLAINTEXT]
            ct = self.tx.encrypt(_nonce(self.tx_n), chunk, None)
            self.tx_n += 1
            self.send_frame(4, ct)

    def seal(self, data):
        """One encrypted record body (no size check), for oversized-frame tests."""
        ct = self.tx.encrypt(_nonce(self.tx_n), data, None)
        self.tx_n += 1
        return ct

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out reading a Noise frame")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed by the server")
            self.buf += chunk

    def read_record(self, timeout=None):
        """→ plaintext of the next record; raises ServerError on a type-3 frame."""
        deadline = time.monotonic() + (timeout or self.timeout)
        self._fill(3, deadline)
        ftype, n = struct.unpack(">BH", self.buf[:3])
        self._fill(3 + n, deadline)
        body, self.buf = self.buf[3:3 + n], self.buf[3 + n:]
        if ftype == 3:
            raise ServerError(body.decode("utf-8", "replace"))
        if ftype != 4:
            raise NoiseError(f"unexpected frame type {ftype}")
        try:
            pt = self.rx.decrypt(_nonce(self.rx_n), body, None)
        except Exception as e:
            raise NoiseError(f"record {self.rx_n} does not decrypt: {e!r}") from e
        self.rx_n += 1
        return pt

    def read(self, timeout=None):
        """Next plaintext bytes (of any length ≥ 1), early payload already removed."""
        if self._pending:
            out, self._pending = self._pending, b""
            return out
        return self.read_record(timeout)

    def take_early_payload(self, timeout=None):
        """Reads the first plaintext bytes; strips the optional early payload (magic + u32 BE
        length + JSON) and keeps whatever follows it for read()."""
        deadline = time.monotonic() + (timeout or self.timeout)
        data = b""
        while len(data) < 9:
            data += self.read_record(max(0.01, deadline - time.monotonic()))
            if not data.startswith(EARLY_MAGIC[:len(data)]):
                break
        if data.startswith(EARLY_MAGIC) and len(data) >= 9:
            n = struct.unpack(">I", data[5:9])[0]
            while len(data) < 9 + n:
                data += self.read_record(max(0.01, deadline - time.monotonic()))
            self.early = json.loads(data[9:9 + n])
            data = data[9 + n:]
        self._pending = data
        return self.early

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def handshake(sock, host, server_pub, machine_priv=None, version=DEFAULT_CAPVER, timeout=10.0):
    """Performs the HTTP upgrade and the IK handshake on a connected socket → NoiseConn."""
    machine_priv = machine_priv or new_private_key()
    hs = Handshake(server_pub, machine_priv, version)
    msg1 = hs.initiation()
    sock.sendall(upgrade_request(host, base64.b64encode(msg1).decode()))
    deadline = time.monotonic() + timeout
    status, headers, rest = read_http_head(sock, deadline)
    if status != 101:
        raise ServerError(f"HTTP {status} instead of 101: {rest[:200]!r}")
    if headers.get("upgrade", "").lower() != "tailscale-control-protocol":
        raise NoiseError(f"101 without the right Upgrade header: {headers!r}")
    buf = rest
    while len(buf) < 3:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError("closed before the handshake response")
        buf += chunk
    if buf[0] == 3:
        n = struct.unpack(">H", buf[1:3])[0]
        while len(buf) < 3 + n:
            buf += recv_exact(sock, 3 + n - len(buf), deadline)
        raise ServerError(buf[3:3 + n].decode("utf-8", "replace"))
    while len(buf) < 51:
        buf += recv_exact(sock, 51 - len(buf), deadline)
    tx, rx = hs.finish(buf[:51])
    return NoiseConn(sock, tx, rx, leftover=buf[51:], timeout=timeout)


class H2Session:
    """HTTP/2 (h2 package) over a NoiseConn: one request at a time, enough for the tests."""

    def __init__(self, nconn, authority):
        import h2.config
        import h2.connection
        self.n = nconn
        self.authority = authority
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.n.take_early_payload()
        self._flush()

    def _flush(self):
        data = self.conn.data_to_send()
        if data:
            self.n.write(data)

    def _send_body(self, sid, body, deadline):
        """Sends body in frames the peer's flow-control window and frame size allow, reading
        (and acting on) its frames whenever the window is shut."""
        import h2.events
        off = 0
        while off < len(body):
            room = min(self.conn.local_flow_control_window(sid),
                       self.conn.max_outbound_frame_size, len(body) - off)
            if room > 0:
                self.conn.send_data(sid, body[off:off + room], end_stream=off + room == len(body))
                off += room
                self._flush()
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"flow-control window shut with {len(body) - off} bytes "
                                   "left to send")
            for ev in self.conn.receive_data(self.n.read(left)):
                if isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    raise EOFError(f"server ended the request while it was sent: {ev!r}")
            self._flush()

    def request(self, method, path, body=b"", headers=None, timeout=10.0):
        """→ (status, headers dict, body bytes); raises EOFError when the server closes."""
        import h2.events
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "http"), (":authority", self.authority),
                (":path", path)]
        if body:
            hdrs += [("content-type", "application/json"), ("content-length", str(len(body)))]
        hdrs += list((headers or {}).items())
        self.conn.send_headers(sid, hdrs, end_stream=not body)
        deadline = time.monotonic() + timeout
        if body:
            self._send_body(sid, body, deadline)
        self._flush()
        status, rhdrs, rbody = None, {}, b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete answer to {method} {path} "
                                   f"(status {status}, {len(rbody)} body bytes)")
            data = self.n.read(left)
            for ev in self.conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    rhdrs = dict(ev.headers)
                    status = int(rhdrs.get(":status", 0))
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    rbody += ev.data
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    return status or -1, rhdrs, rbody
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    self._flush()
                    return status, rhdrs, rbody
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    raise EOFError(f"GOAWAY from the server: {ev!r}")
            self._flush()


GO_ZERO_TIME = "0001-01-01T00:00:00Z"


class ControlClient:
    """One machine (its own machine key) speaking the control protocol to a server on
    loopback: Noise over plain HTTP, HTTP/2, register requests, one-shot full maps and a
    streaming map poll (no zstd). Every request but the stream goes over a connection of its
    own unless the caller passes one from connect()."""

    def __init__(self, port, host="127.0.0.1", capver=DEFAULT_CAPVER):
        self.port = port
        self.hostaddr = host
        self.authority = f"{host}:{port}"
        self.capver = capver
        self.machine = new_private_key()
        self.node_key = os.urandom(32)
        self.disco_key = os.urandom(32)
        self.hostinfo = {"Hostname": "h", "OS": "linux"}
        self.endpoints = None
        self.sock = None
        self.h2 = None
        self.sid = None
        self.buf = b""
        self.id = None
        self._server_pub = None

    # ---- connections ----
    def server_pub(self):
        if self._server_pub is None:
            conn = http.client.HTTPConnection(self.hostaddr, self.port, timeout=10)
            conn.request("GET", f"/key?v={self.capver}")
            body = conn.getresponse().read()
            conn.close()
            self._server_pub = key_from_text(json.loads(body)["publicKey"], "mkey:")
        return self._server_pub

    def connect(self):
        """→ (socket, H2Session) of a new Noise connection; close the socket when done."""
        sock = socket.create_connection((self.hostaddr, self.port), timeout=10)
        # A request is several Noise records: without this, Nagle holds the last one back
        # until the server's delayed ACK (40 ms a request).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            nconn = handshake(sock, self.authority, self.server_pub(), self.machine,
                              self.capver)
            return sock, H2Session(nconn, self.authority)
        except BaseException:
            sock.close()
            raise

    def post(self, path, obj, session=None, timeout=10.0):
        """POSTs obj as JSON → (status, headers, body bytes)."""
        body = obj if isinstance(obj, (bytes, bytearray)) else json.dumps(obj).encode()
        if session is not None:
            return session.request("POST", path, body, timeout=timeout)
        sock, h2 = self.connect()
        try:
            return h2.request("POST", path, body, timeout=timeout)
        finally:
            sock.close()

    # ---- registration ----
    def register_request(self, auth_key=None, followup=None, old_node_key=None, **extra):
        req = {"Version": self.capver, "NodeKey": "nodekey:" + self.node_key.hex(),
               "OldNodeKey": "nodekey:" + (old_node_key or bytes(32)).hex(),
               "Hostinfo": self.hostinfo, "Expiry": GO_ZERO_TIME}
        if auth_key:
            req["Auth"] = {"AuthKey": auth_key}
        if followup:
            req["Followup"] = followup
        req.update(extra)
        return req

    def register(self, session=None, timeout=10.0, **kw):
        """→ (status, headers, the RegisterResponse as a dict, or the text of a non-JSON
        answer)."""
        st, hdrs, body = self.post("/machine/register", self.register_request(**kw), session,
                                   timeout)
        try:
            return st, hdrs, json.loads(body)
        except ValueError:
            return st, hdrs, body.decode("utf-8", "replace")

    def new_node_key(self):
        """A fresh node key (tailscaled's regen); → the old one."""
        old, self.node_key = self.node_key, os.urandom(32)
        return old

    # ---- maps ----
    def map_request(self, stream, **extra):
        req = {"Version": self.capver, "NodeKey": "nodekey:" + self.node_key.hex(),
               "DiscoKey": "discokey:" + self.disco_key.hex(), "Stream": stream,
               "KeepAlive": stream, "OmitPeers": False, "Compress": "",
               "Hostinfo": self.hostinfo}
        if self.endpoints is not None:
            req["Endpoints"] = self.endpoints
        req.update(extra)
        return req

    def full_map(self, **extra):
        st, _, body = self.post("/machine/map", self.map_request(False, **extra))
        assert st == 200, (st, body)
        (n,) = struct.unpack("<I", body[:4])
        return json.loads(body[4:4 + n])

    def lite_update(self, **extra):
        """A map request that only reports (OmitPeers, no stream) → status."""
        st, _, body = self.post("/machine/map",
                                self.map_request(False, OmitPeers=True, **extra))
        return st

    def open_stream(self, require_peers=True):
        """Starts a streaming map poll → its first message (the full map). headscale leaves
        Peers out of a map with none: require_peers=False accepts that."""
        import h2.events  # noqa: F401 (the package the session uses)
        self.sock, self.h2 = self.connect()
        body = json.dumps(self.map_request(True)).encode()
        c = self.h2.conn
        self.sid = c.get_next_available_stream_id()
        c.send_headers(self.sid, [(":method", "POST"), (":scheme", "http"),
                                  (":authority", self.authority), (":path", "/machine/map"),
                                  ("content-type", "application/json"),
                                  ("content-length", str(len(body)))])
        c.send_data(self.sid, body, end_stream=True)
        self.h2._flush()
        first = self.next_message(10)
        assert first and ("Peers" in first or not require_peers and "Node" in first), first
        return first

    def next_message(self, timeout):
        """The next map message on the stream (keep-alives skipped), or None by timeout."""
        import h2.events
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack("<I", self.buf[:4])
                if len(self.buf) >= 4 + n:
                    msg = json.loads(self.buf[4:4 + n])
                    self.buf = self.buf[4 + n:]
                    if msg == {"KeepAlive": True}:
                        continue
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                data = self.h2.n.read(left)
            except (TimeoutError, socket.timeout):
                return None
            for ev in self.h2.conn.receive_data(data):
                if isinstance(ev, h2.events.DataReceived) and ev.stream_id == self.sid:
                    self.buf += ev.data
                    self.h2.conn.acknowledge_received_data(ev.flow_controlled_length, self.sid)
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset,
                                     h2.events.ConnectionTerminated)):
                    raise EOFError(f"map stream ended: {ev!r}")
            self.h2._flush()

    def drain(self, quiet=1.5, limit=15):
        """Every message until none came for `quiet` seconds."""
        msgs, end = [], time.monotonic() + limit
        while time.monotonic() < end:
            m = self.next_message(quiet)
            if m is None:
                return msgs
            msgs.append(m)
        raise AssertionError(f"node {self.id}: messages never stopped: {msgs[-3:]}")

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None


def joined_stream(port, auth_key, hostname="laptop"):
    """A new node registered with auth_key, its map stream open → (client, first message).
    headscale may leave Peers out of a first map with none; that is accepted."""
    c = ControlClient(port)
    c.hostinfo = {"Hostname": hostname, "OS": "linux"}
    st, _, resp = c.register(auth_key=auth_key)
    assert st == 200 and resp.get("MachineAuthorized"), resp
    return c, c.open_stream(require_peers=False)
