"""A small Tailscale control-protocol (TS2021) initiator for the bad-input system tests.

Implements the client side of Tailscale's controlbase Noise channel
(Noise_IK_25519_ChaChaPoly_BLAKE2s with Tailscale's prologue and framing, big-endian transport
nonces) and, on top of it, just enough HTTP/2 (through the `h2` package) to send one request.
It is a test tool: it lets tests send well-formed handshakes, handshakes sealed for the wrong
server key, oversized frames and malformed bodies, and report what the server answered.

Framing (all integers big-endian):
  initiation  u16 version · 0x01 · u16 96 · e(32) · enc(s)(48) · tag(16)     101 bytes
  response    0x02 · u16 48 · e(32) · tag(16)                                  51 bytes
  error       0x03 · u16 len · text
  record      0x04 · u16 len · ciphertext (≤ 4093, so the frame is ≤ 4096)
"""

import base64
import hashlib
import hmac
import json
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
        if body:
            self.conn.send_data(sid, body, end_stream=True)
        self._flush()
        status, rhdrs, rbody = None, {}, b""
        deadline = time.monotonic() + timeout
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
