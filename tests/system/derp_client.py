"""A small DERP client for the relay's system tests (tailscale-protocol.md §7).

It speaks the real protocol — HTTP upgrade, ServerKey, ClientInfo sealed with NaCl crypto_box,
ServerInfo — and also lets a test step outside it: raw bytes after the upgrade, oversized or
unknown frames, a client that never reads or never sends ClientInfo.

NaCl box (Curve25519-XSalsa20-Poly1305) comes from libsodium through ctypes: the product links
libsodium already, so the tests need no extra Python package.

Frames: u8 type · u32 BE payload length · payload."""

import ctypes
import ctypes.util
import json
import os
import struct
import time

MAGIC = b"DERP\xf0\x9f\x94\x91"
KEY_LEN = 32
NONCE_LEN = 24
MAC_LEN = 16
MAX_PACKET = 64 << 10

SERVER_KEY = 0x01
CLIENT_INFO = 0x02
SERVER_INFO = 0x03
SEND_PACKET = 0x04
RECV_PACKET = 0x05
KEEP_ALIVE = 0x06
NOTE_PREFERRED = 0x07
PEER_GONE = 0x08
PING = 0x12
PONG = 0x13
HEALTH = 0x14

GONE_DISCONNECTED = 0
GONE_NOT_HERE = 1


def _sodium():
    name = ctypes.util.find_library("sodium") or "libsodium.so.23"
    lib = ctypes.CDLL(name)
    if lib.sodium_init() < 0:
        raise OSError("sodium_init failed")
    return lib


_na = _sodium()


def keypair():
    """→ (public, private): a fresh Curve25519 pair, the DERP (= WireGuard node) key."""
    pk = ctypes.create_string_buffer(KEY_LEN)
    sk = ctypes.create_string_buffer(KEY_LEN)
    _na.crypto_box_keypair(pk, sk)
    return pk.raw, sk.raw


def box(msg, nonce, their_pub, my_priv):
    out = ctypes.create_string_buffer(len(msg) + MAC_LEN)
    if _na.crypto_box_easy(out, msg, ctypes.c_ulonglong(len(msg)), nonce, their_pub,
                           my_priv) != 0:
        raise ValueError("crypto_box_easy failed")
    return out.raw


def box_open(sealed, nonce, their_pub, my_priv):
    if len(sealed) < MAC_LEN:
        raise ValueError("box too short")
    out = ctypes.create_string_buffer(len(sealed) - MAC_LEN)
    if _na.crypto_box_open_easy(out, sealed, ctypes.c_ulonglong(len(sealed)), nonce,
                                their_pub, my_priv) != 0:
        raise ValueError("box does not open")
    return out.raw


def frame(ftype, payload=b""):
    return struct.pack(">BI", ftype, len(payload)) + payload


def upgrade_request(host, upgrade="DERP", path="/derp"):
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
    if upgrade:
        lines += [f"Upgrade: {upgrade}", "Connection: Upgrade"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Closed(EOFError):
    """The server closed the connection (or reset it)."""


class DerpConn:
    """One connection to a DERP server over an already connected (maybe TLS) socket."""

    def __init__(self, sock, host="127.0.0.1", timeout=10.0):
        self.sock = sock
        self.host = host
        self.timeout = timeout
        self.buf = b""
        self.server_key = None
        self.pub = self.priv = None
        self.http_status = None
        self.http_headers = {}
        self.backlog = []  # frames wait_frame() passed over, for a later wait_frame()

    # ---- bytes ----
    def _recv_some(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no data from the DERP server in time")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError) as e:
            raise Closed(f"connection reset: {e}") from e
        if not chunk:
            raise Closed("the server closed the connection")
        self.buf += chunk

    def _take(self, n, deadline):
        while len(self.buf) < n:
            self._recv_some(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send_raw(self, data):
        self.sock.sendall(data)

    def send_frame(self, ftype, payload=b""):
        self.sock.sendall(frame(ftype, payload))

    def recv_frame(self, timeout=None):
        """→ (type, payload); raises Closed on EOF, TimeoutError when nothing comes."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        ftype, n = struct.unpack(">BI", self._take(5, deadline))
        if n > (1 << 20):
            raise ValueError(f"frame of {n} bytes from the server")
        return ftype, self._take(n, deadline)

    def wait_frame(self, want, timeout=None, skip=(KEEP_ALIVE, HEALTH, PEER_GONE, RECV_PACKET,
                                                     PONG)):
        """→ the payload of the next frame of type `want`, from frames passed over earlier or
        read now. Frames of the types in skip are kept for later; any other type fails."""
        for i, (ftype, payload) in enumerate(self.backlog):
            if ftype == want:
                del self.backlog[i]
                return payload
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            ftype, payload = self.recv_frame(max(0.0, deadline - time.monotonic()))
            if ftype == want:
                return payload
            if ftype in skip:
                if ftype != KEEP_ALIVE and len(self.backlog) < 1000:
                    self.backlog.append((ftype, payload))
            else:
                raise AssertionError(f"unexpected DERP frame 0x{ftype:02x} ({len(payload)} B) "
                                     f"while waiting for 0x{want:02x}")

    def closed_within(self, timeout):
        """True when the server closes the connection within timeout (frames are drained)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.buf = b""
                self._recv_some(deadline)
        except Closed:
            return True
        except TimeoutError:
            return False

    # ---- protocol ----
    def upgrade(self, extra=b""):
        """Sends GET /derp with Upgrade: DERP (plus extra bytes right behind the request) and
        reads the HTTP answer → status. On 101 the ServerKey frame follows."""
        self.sock.sendall(upgrade_request(self.host) + extra)
        deadline = time.monotonic() + self.timeout
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise ValueError("HTTP head too long")
            self._recv_some(deadline)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.http_status = int(lines[0].split()[1])
        self.http_headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.http_headers[k.strip().lower()] = v.strip()
        return self.http_status

    def read_server_key(self):
        ftype, payload = self.recv_frame()
        assert ftype == SERVER_KEY, f"first frame 0x{ftype:02x}, not ServerKey"
        assert len(payload) >= 40 and payload[:8] == MAGIC, f"bad ServerKey {payload!r}"
        self.server_key = payload[8:40]
        return self.server_key

    def client_info(self, pub=None, priv=None, info=None):
        """Sends ClientInfo sealed for the server with our key (a fresh one by default)."""
        if pub is None:
            pub, priv = keypair()
        self.pub, self.priv = pub, priv
        body = json.dumps(info if info is not None else
                          {"version": 2, "CanAckPings": True, "IsProber": False,
                           "AppName": "hs-derp-test"}).encode()
        nonce = os.urandom(NONCE_LEN)
        self.send_frame(CLIENT_INFO, pub + nonce + box(body, nonce, self.server_key, priv))

    def read_server_info(self, timeout=None):
        payload = self.wait_frame(SERVER_INFO, timeout)
        msg = box_open(payload[NONCE_LEN:], payload[:NONCE_LEN], self.server_key, self.priv)
        return json.loads(msg)

    def handshake(self, pub=None, priv=None):
        """Upgrade + ServerKey + ClientInfo + ServerInfo → the ServerInfo JSON."""
        st = self.upgrade()
        assert st == 101, f"GET /derp → {st}, not 101"
        self.read_server_key()
        self.client_info(pub, priv)
        return self.read_server_info()

    def send_packet(self, dst, data):
        self.send_frame(SEND_PACKET, dst + data)

    def recv_packet(self, timeout=None):
        """→ (src key, packet) of the next RecvPacket."""
        p = self.wait_frame(RECV_PACKET, timeout, skip=(KEEP_ALIVE, HEALTH, PEER_GONE, PONG))
        return p[:KEY_LEN], p[KEY_LEN:]

    def ping(self, timeout=None):
        """Ping → waits for the Pong with the same 8 bytes → round trip seconds."""
        data = os.urandom(8)
        t0 = time.monotonic()
        self.send_frame(PING, data)
        deadline = t0 + (timeout if timeout is not None else self.timeout)
        while True:
            p = self.wait_frame(PONG, max(0.0, deadline - time.monotonic()),
                                skip=(KEEP_ALIVE, HEALTH, PEER_GONE, RECV_PACKET))
            if p == data:
                return time.monotonic() - t0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
