"""A small DERP client for the relay's system tests (tailscale-protocol.md §7).

It speaks the real protocol — HTTP upgrade, ServerKey, ClientInfo sealed with NaCl crypto_box,
ServerInfo — and also lets a test step outside it: raw bytes after the upgrade, oversized or
unknown frames, a client that never reads or never sends ClientInfo.

NaCl box (Curve25519-XSalsa20-Poly1305) comes from libsodium through ctypes: the product links
libsodium already, so the tests need no extra Python package.

Frames: u8 type · u32 BE payload length · payload.

DERP over WebSocket (what tailscaled built with `ts_debug_websockets` and the browser client
do): GET /derp with Upgrade: websocket and Sec-WebSocket-Protocol: derp, then the same DERP byte
stream inside binary messages, not aligned to frames. `WebSocket` below is a small RFC 6455
client with a socket-like face (sendall/recv/settimeout/close), so DerpConn — and
noise_client.NoiseConn for /ts2021 — run over it unchanged; `DerpConn.ws_upgrade()` does the
handshake. It also builds bad frames on request (unmasked, text, huge lengths, fragments)."""

import base64
import ctypes
import ctypes.util
import hashlib
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


# ---------------------------------------------------------------- WebSocket (RFC 6455)

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
# What Tailscale's WebSocket client (coder/websocket behind tailscale's net/wsconn) accepts per
# message by default: bigger messages from the server make it close with 1009.
TS_CLIENT_MAX_MESSAGE = 32768


class WsProtocolError(AssertionError):
    """The server broke RFC 6455 (or the expectations of Tailscale's client)."""


def ws_accept(key):
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (both text)."""
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def ws_frame(opcode, payload=b"", fin=True, mask=True, rsv=0, length=None, mask_key=None):
    """One client frame. length overrides the header's payload length (for bad-input tests);
    mask=False sends it unmasked (a protocol error for a client)."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack(">BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack(">BBH", b0, mbit | 126, n)
    else:
        head = struct.pack(">BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = mask_key if mask_key is not None else os.urandom(4)
    return head + key + _xor(payload, key)


def _xor(data, key):
    if not data:
        return b""
    k = (key * (len(data) // 4 + 1))[:len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(len(data), "big")


def close_payload(code=None, reason=b""):
    return b"" if code is None else struct.pack(">H", code) + reason


class _BufferedReader:
    """Reads from self.sock into self.buf with a deadline; EOF and resets raise Closed."""

    def _fill(self, deadline, head=False):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no data from the {self.peer_name} in time" +
                               (" (HTTP head)" if head else ""))
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError) as e:
            raise Closed(f"connection reset: {e}") from e
        if not chunk:
            raise Closed("the server closed the connection" +
                         (" before its HTTP answer" if head else ""))
        self.buf += chunk

    def _take(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


class WebSocket(_BufferedReader):
    """Client side of RFC 6455 over a connected (plain or TLS) socket.

    handshake() sends the GET with Upgrade: websocket and checks the 101 answer (Connection,
    Upgrade, Sec-WebSocket-Accept, the subprotocol). After that:
      sendall(data)  one masked binary message (or several of at most `split` bytes each)
      recv(n)        payload bytes of the next data frame(s); pings are answered with pongs,
                     a close frame is answered with a close and recv returns b"" (EOF), like a
                     socket. A text message or a bad server frame raises WsProtocolError.
    What happened is recorded: pings/pongs seen, close_code/close_reason, the largest server
    message, whether the server sent a close frame before closing TCP."""

    def __init__(self, sock, timeout=10.0):
        self.sock = sock
        self.timeout = timeout
        self.buf = b""
        self.status = None
        self.headers = {}
        self.body = b""
        self.subprotocol = None
        self.split = None           # sendall: at most this many bytes per message
        self.pings = []             # payloads of pings the server sent (answered)
        self.pongs = []             # payloads of pongs the server sent
        self.close_code = None      # from the server's close frame (None: none, or no code)
        self.close_reason = b""
        self.got_close = False      # the server sent a close frame
        self.sent_close = False
        self.eof = False            # TCP closed (after or without a close frame)
        self.messages = 0           # data messages received
        self.max_message = 0        # largest data message received (payload bytes)
        self._msg_len = 0           # bytes of the data message being received
        self._in_message = False    # a fragmented data message is in progress
        self._pending = b""         # payload bytes not yet handed out by recv()

    # ---- handshake ----
    def handshake(self, host, path="/derp", protocols=("derp",), headers=None, method="GET",
                  key=None, version="13", check=True):
        """→ HTTP status. With check, a 101 must be a valid WebSocket answer choosing one of
        protocols (a refusal is returned, not raised: the caller asserts on the status)."""
        self.key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: Upgrade",
                 "Upgrade: websocket"]
        if version is not None:
            lines.append(f"Sec-WebSocket-Version: {version}")
        if self.key:
            lines.append(f"Sec-WebSocket-Key: {self.key}")
        if protocols:
            lines.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        deadline = time.monotonic() + self.timeout
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise WsProtocolError("HTTP head too long")
            self._fill(deadline, head=True)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        if self.status != 101:
            # Keep what body came (best effort; refusals are short) for the failure message.
            try:
                n = int(self.headers.get("content-length", "0"))
                while len(self.buf) < min(n, 4096):
                    self._fill(time.monotonic() + 1, head=True)
            except (OSError, EOFError, TimeoutError, ValueError):
                pass
            self.body = self.buf
            return self.status
        if check:
            h = self.headers
            toks = lambda v: [t.strip().lower() for t in v.split(",")]
            if "upgrade" not in toks(h.get("connection", "")):
                raise WsProtocolError(f"101 without Connection: Upgrade: {h!r}")
            if "websocket" not in toks(h.get("upgrade", "")):
                raise WsProtocolError(f"101 without Upgrade: websocket: {h!r}")
            if h.get("sec-websocket-accept") != ws_accept(self.key):
                raise WsProtocolError(f"Sec-WebSocket-Accept {h.get('sec-websocket-accept')!r}, "
                                      f"expected {ws_accept(self.key)!r}")
            proto = h.get("sec-websocket-protocol")
            if protocols and proto not in protocols:
                raise WsProtocolError(f"101 chose subprotocol {proto!r}, offered {protocols}")
            if h.get("sec-websocket-extensions"):
                raise WsProtocolError("101 with extensions nobody asked for: "
                                      f"{h['sec-websocket-extensions']!r}")
            self.subprotocol = proto
        return self.status

    peer_name = "server (WebSocket)"

    # ---- raw bytes ----
    def send_raw(self, data):
        self.sock.sendall(data)

    def send_frame(self, opcode, payload=b"", **kw):
        self.sock.sendall(ws_frame(opcode, payload, **kw))

    def send_close(self, code=1000, reason=b""):
        self.sent_close = True
        self.send_frame(OP_CLOSE, close_payload(code, reason))

    # ---- frames from the server ----
    def _parse_head(self):
        """→ (header length, fin, rsv, opcode, masked, payload length) from self.buf, or None
        while the header is incomplete."""
        if len(self.buf) < 2:
            return None
        b0, b1 = self.buf[0], self.buf[1]
        n, hl = b1 & 0x7F, 2
        if n == 126:
            if len(self.buf) < 4:
                return None
            n, hl = struct.unpack(">H", self.buf[2:4])[0], 4
        elif n == 127:
            if len(self.buf) < 10:
                return None
            n, hl = struct.unpack(">Q", self.buf[2:10])[0], 10
        return hl, bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, bool(b1 & 0x80), n

    def recv_frame(self, timeout=None):
        """→ (fin, opcode, payload) of the next server frame, checked against RFC 6455 (raises
        WsProtocolError); raises Closed on EOF. Nothing is answered here. A timeout leaves a
        partly received frame in the buffer for the next call."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            h = self._parse_head()
            if h is not None:
                hl, fin, rsv, op, masked, n = h
                problem = None
                if n >> 63:
                    problem = "a 64-bit length above 2^63"
                elif masked:
                    problem = "a mask (RFC 6455 5.1: server frames must not be masked)"
                elif rsv:
                    problem = f"RSV bits {rsv:03b} (no extension agreed)"
                elif op >= 0x8 and (n > 125 or not fin):
                    problem = f"control opcode {op:#x} but {n} bytes, fin={fin}"
                elif op not in (OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG):
                    problem = f"reserved opcode {op:#x}"
                elif n > (16 << 20):
                    problem = f"{n} bytes"
                if problem:
                    raise WsProtocolError(f"bad WebSocket frame from the server: {problem}; "
                                          f"it starts {self.buf[:40]!r}")
                if len(self.buf) >= hl + n:
                    payload = self.buf[hl:hl + n]
                    self.buf = self.buf[hl + n:]
                    return fin, op, payload
            try:
                self._fill(deadline)
            except Closed:
                self.eof = True
                raise

    def _handle_control(self, op, payload):
        if op == OP_PING:
            self.pings.append(payload)
            if not self.sent_close:
                self.send_frame(OP_PONG, payload)
        elif op == OP_PONG:
            self.pongs.append(payload)
        elif op == OP_CLOSE:
            self.got_close = True
            if len(payload) == 1:
                raise WsProtocolError("close frame with a 1-byte payload")
            if len(payload) >= 2:
                self.close_code = struct.unpack(">H", payload[:2])[0]
                self.close_reason = payload[2:]
            if not self.sent_close:  # echo it, as RFC 6455 5.5.1 asks
                try:
                    self.send_close(self.close_code or 1000)
                except OSError:
                    pass

    def next_event(self, timeout=None):
        """Reads one frame, handling control frames → ('data', payload, fin) |
        ('ping'|'pong'|'close', payload) | ('eof', b'')."""
        try:
            fin, op, payload = self.recv_frame(timeout)
        except Closed:
            return ("eof", b"")
        if op >= 0x8:
            self._handle_control(op, payload)
            return ({OP_PING: "ping", OP_PONG: "pong", OP_CLOSE: "close"}[op], payload)
        if op == OP_TEXT:
            raise WsProtocolError(f"text message from the server ({payload[:40]!r}); "
                                  "DERP and ts2021 use binary messages only")
        if op == OP_BINARY:
            if self._in_message:
                raise WsProtocolError("new data frame inside a fragmented message")
            self._msg_len = 0
        elif not self._in_message:
            raise WsProtocolError("continuation frame without a message to continue")
        self._in_message = not fin
        self._msg_len += len(payload)
        if fin:
            self.messages += 1
            self.max_message = max(self.max_message, self._msg_len)
        return ("data", payload, fin)

    # ---- socket face ----
    def recv(self, n=65536):
        """Up to n payload bytes; b"" once the server closed (close frame or TCP)."""
        deadline = time.monotonic() + (self.timeout if self._timeout is None else self._timeout)
        while not self._pending:
            if self.got_close or self.eof:
                return b""
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no WebSocket data from the server in time")
            ev = self.next_event(left)
            if ev[0] == "data":
                self._pending += ev[1]
            elif ev[0] in ("close", "eof"):
                return b""
        out, self._pending = self._pending[:n], self._pending[n:]
        return out

    _timeout = None

    def settimeout(self, t):
        self._timeout = t

    def gettimeout(self):
        return self._timeout

    def sendall(self, data):
        """data as binary message(s) of at most self.split bytes each (one message if None)."""
        if self.split:
            for i in range(0, max(len(data), 1), self.split):
                self.send_frame(OP_BINARY, data[i:i + self.split])
        else:
            self.send_frame(OP_BINARY, data)

    def setsockopt(self, *a):
        return self.sock.setsockopt(*a)

    def wait_closed(self, timeout):
        """Reads (discarding data, answering pings) until the server closes the TCP connection
        → True, or timeout → False. got_close/close_code say whether a close frame came first."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                ev = self.next_event(left)
                if ev[0] == "eof":
                    return True
        except TimeoutError:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class DerpConn(_BufferedReader):
    """One connection to a DERP server over an already connected (maybe TLS) socket."""

    peer_name = "DERP server"

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
        self.ws = None  # the WebSocket after ws_upgrade()

    # ---- bytes ----
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
                self._fill(deadline)
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
            self._fill(deadline)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.http_status = int(lines[0].split()[1])
        self.http_headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.http_headers[k.strip().lower()] = v.strip()
        return self.http_status

    def ws_upgrade(self, path="/derp", protocols=("derp",), split=None, **kw):
        """Replaces the socket with a WebSocket after GET path with Upgrade: websocket and the
        derp subprotocol → status (101: the DERP byte stream follows inside binary messages).
        split: sendall sends messages of at most that many bytes (frames spanning messages)."""
        ws = WebSocket(self.sock, self.timeout)
        self.http_status = ws.handshake(self.host, path, protocols, **kw)
        self.http_headers = ws.headers
        self.ws = ws
        ws.split = split
        if self.http_status == 101:
            self.sock = ws
        return self.http_status

    def ws_handshake(self, pub=None, priv=None, **kw):
        """ws_upgrade + ServerKey + ClientInfo + ServerInfo → the ServerInfo JSON."""
        st = self.ws_upgrade(**kw)
        assert st == 101, (f"GET /derp with Upgrade: websocket, Sec-WebSocket-Protocol: derp → "
                           f"{st}, not 101 (body {self.ws.body[:200]!r}): WebSocket DERP refused")
        self.read_server_key()
        self.client_info(pub, priv)
        return self.read_server_info()

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
