"""Tailnet harness: a private network namespace with a control server (HS_BIN), Tailscale's own
derper as DERP relay, and real tailscaled/tailscale clients (built by tests/lib/install-tailscale.sh
into .cache/tailscale/<version>/).

  Namespace  `ip netns add hs-<random>`, lo up, a veth pair 198.18.0.1/24 + 198.18.0.2/24 inside
             it (no route out); runs processes inside it (Proc) and makes sockets inside it
             (setns in a helper thread), so the test process itself can talk to the server.
  Derper     `derper -dev` (plain HTTP :3340, STUN :3478) and the DERP map file for the server.
  Server     helpers.Server running inside the namespace; CLI over its unix socket.
  Node       tailscaled (userspace networking, SOCKS5 on 127.0.0.1:P) + the tailscale CLI.
  World      all of the above with users and keys; a context manager whose exit kills every
             process and deletes the namespace, whatever happened.

Opt-in, World(node_netns=True): every node gets a namespace of its own (NodeNamespace), joined
by a veth pair to a bridge in the server's namespace (198.18.1.1/24 there, 198.18.1.N in the
node's, a route to 198.18.0.0/24 and nothing else), plus a small relay on 127.0.0.1:8080 of the
node's namespace to the server (so the control URL stays loopback, see CONTROL_HOST). A node's
SOCKS5 proxy, echo servers and non-tailnet dials then live in its own namespace, so a path that
the policy forbids is really absent.

Every wait is a poll with a deadline and every subprocess has a timeout. Logs live in the
world's directory (pytest's tmp dir); World.logs() gives their tails for failure reports."""

import atexit
import ctypes
import http.client
import inspect
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid

import yaml

import helpers

REPO = helpers.REPO
TS_CACHE = os.environ.get("HS_TS_CACHE", os.path.join(REPO, ".cache", "tailscale"))
SERVER_IP = "198.18.0.1"
# The clients' control URL host. Loopback (the clients share the server's namespace) on
# purpose: for an http:// URL on a host that is not loopback/private (198.18.0.1 is neither),
# tailscale also tries HTTPS :443, and after any Noise redial within 2 minutes of the last one
# it dials *only* :443 ("controlhttp: forcing port 443 dial due to recent noise dial",
# control/controlhttp/client.go forceNoise443) -- so after a server restart a client would
# never come back on plain HTTP. The server still listens on 0.0.0.0, so raw tests can use
# SERVER_IP; DERP and peer endpoints stay on the veth addresses.
CONTROL_HOST = os.environ.get("HS_TS_CONTROL_HOST", "127.0.0.1")
PEER_IP = "198.18.0.2"
# node_netns worlds: a bridge in the server's namespace, one veth per node namespace
BRIDGE = "hsbr0"
NODE_NET = "198.18.1"
BRIDGE_IP = f"{NODE_NET}.1"
HS_PORT = 8080
DERP_PORT = 3340
STUN_PORT = 3478
DERP_REGION = 900

CMD_TIMEOUT = 30.0
UP_TIMEOUT = 60

# "ours" unless HS_BIN is the reference headscale (a local test peer, .cache/headscale-ref/)
FLAVOR = os.environ.get("HS_FLAVOR") or (
    "headscale" if "headscale-ref" in os.path.realpath(helpers.HS_BIN) else "ours")

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000

# Namespaces not yet deleted: removed at interpreter exit even if a fixture never got to it.
_LIVE_NS = []
LIVE_WORLDS = []


def versions():
    """Client versions to test: $HS_TS_VERSIONS (comma list); the first gets the full set."""
    raw = os.environ.get("HS_TS_VERSIONS", "v1.102.3,v1.80.3")
    return [v.strip() for v in raw.split(",") if v.strip()]


def ts_bin(version, name):
    return os.path.join(TS_CACHE, version, name)


def have_version(version):
    return all(os.access(ts_bin(version, b), os.X_OK) for b in ("tailscale", "tailscaled",
                                                                  "derper"))


def poll(fn, timeout, what, interval=0.2):
    """Calls fn() until it returns a truthy value or the deadline passes; → that value.
    Exceptions from fn count as 'not yet' (the last one is reported)."""
    end = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = fn()
            if v:
                return v
            last = v
        except (AssertionError, OSError, ValueError, subprocess.SubprocessError) as e:
            last = e
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def _ip(*args, check=True):
    r = subprocess.run(["ip"] + list(args), capture_output=True, text=True, timeout=CMD_TIMEOUT,
                       stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {r.stderr.strip()}")
    return r


def tail(path, n=80):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except FileNotFoundError:
        return "(no log)"


def _die_with_parent():
    """preexec_fn: the child gets SIGKILL if the test process dies (kept across exec)."""
    _libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def sweep_stale_namespaces():
    """Deletes namespaces left by earlier test processes that died (named hs-<pid>-<hex>),
    killing what still runs inside them. Namespaces of live processes are left alone."""
    r = _ip("netns", "list", check=False)
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if len(parts) != 3 or parts[0] != "hs" or not parts[1].isdigit():
            continue
        if os.path.exists(f"/proc/{parts[1]}"):
            continue
        for pid in _ip("netns", "pids", name, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        _ip("netns", "del", name, check=False)


_swept = False


class Proc:
    """A process running inside a namespace, in its own process group, logging to a file."""

    def __init__(self, ns, name, argv, log_path, env=None, cwd=None):
        self.ns = ns
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.popen = None

    def start(self):
        assert not self.alive, f"{self.name} already running"
        log = open(self.log_path, "ab")
        try:
            self.popen = subprocess.Popen(["ip", "netns", "exec", self.ns.name] + self.argv,
                                          stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd,
                                          start_new_session=True,
                                          preexec_fn=_die_with_parent)
        finally:
            log.close()
        self.ns.procs.append(self)
        return self

    @property
    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def _signal(self, sig):
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout=10.0):
        """SIGTERM, then SIGKILL after timeout → returncode."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.popen.wait(timeout=10)
        self._signal(signal.SIGKILL)  # stragglers in the group
        return self.popen.returncode

    def kill9(self):
        if self.popen is None:
            return
        self._signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def log(self, n=80):
        return tail(self.log_path, n)


class Namespace:
    def __init__(self, workdir):
        self.name = f"hs-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.workdir = workdir
        self.procs = []
        self.created = False
        self._next_port = 10800

    def __enter__(self):
        self.create()
        return self

    def __exit__(self, *exc):
        self.close()

    def create(self):
        global _swept
        if not _swept:
            sweep_stale_namespaces()
            _swept = True
        _ip("netns", "add", self.name)
        self.created = True
        _LIVE_NS.append(self)
        try:
            _ip("-n", self.name, "link", "set", "lo", "up")
            self._links()
        except Exception:
            self.close()
            raise

    def _links(self):
        n = self.name
        _ip("-n", n, "link", "add", "hsv0", "type", "veth", "peer", "name", "hsv1")
        _ip("-n", n, "addr", "add", f"{SERVER_IP}/24", "dev", "hsv0")
        _ip("-n", n, "addr", "add", f"{PEER_IP}/24", "dev", "hsv1")
        _ip("-n", n, "link", "set", "hsv0", "up")
        _ip("-n", n, "link", "set", "hsv1", "up")

    def port(self):
        """A TCP port for a listener inside the namespace (nothing else runs there)."""
        self._next_port += 1
        return self._next_port

    def close(self):
        for p in reversed(self.procs):
            try:
                p.stop(timeout=5)
            except Exception:  # teardown goes on whatever happens
                pass
        self.procs.clear()
        if self.created:
            # anything still inside (a child that escaped its group) dies with the namespace
            r = _ip("netns", "pids", self.name, check=False)
            for pid in r.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            _ip("netns", "del", self.name, check=False)
            self.created = False
        if self in _LIVE_NS:
            _LIVE_NS.remove(self)

    # ---- sockets inside the namespace ----
    def call(self, fn):
        """Runs fn() on a helper thread that has joined this network namespace → its result.
        Sockets keep the namespace they were created in, so they can be used from any thread."""
        out, err = [], []

        def run():
            try:
                fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
                try:
                    if _libc.setns(fd, _CLONE_NEWNET) != 0:
                        e = ctypes.get_errno()
                        raise OSError(e, os.strerror(e))
                finally:
                    os.close(fd)
                out.append(fn())
            except BaseException as e:  # handed to the caller
                err.append(e)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(30)
        if err:
            raise err[0]
        assert out, "namespace helper thread did not finish"
        return out[0]

    def socket(self, family=socket.AF_INET, kind=socket.SOCK_STREAM):
        return self.call(lambda: socket.socket(family, kind))

    def connect(self, host, port, timeout=10.0):
        s = self.socket()
        s.settimeout(timeout)
        try:
            s.connect((host, port))
        except BaseException:
            s.close()
            raise
        return s

    def listen(self, host, port):
        s = self.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(16)
        return s

    def http(self, method, host, port, path, body=None, headers=None, timeout=10.0):
        """One HTTP/1.1 request from inside the namespace → (status, headers, body bytes)."""
        ns = self

        class Conn(http.client.HTTPConnection):
            def connect(self):
                self.sock = ns.connect(self.host, self.port, self.timeout)

        c = Conn(host, port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def add_bridge(self):
        """A bridge with BRIDGE_IP/24 for node namespaces (node_netns worlds)."""
        n = self.name
        _ip("-n", n, "link", "add", BRIDGE, "type", "bridge")
        _ip("-n", n, "addr", "add", f"{BRIDGE_IP}/24", "dev", BRIDGE)
        _ip("-n", n, "link", "set", BRIDGE, "up")


class NodeNamespace(Namespace):
    """A node's own namespace: lo, and eth0 (NODE_NET.<index>/24) whose veth peer is a port of
    the server namespace's bridge; a route to the server's 198.18.0.0/24, no default route."""

    def __init__(self, workdir, server_ns, index):
        super().__init__(workdir)
        assert 2 <= index <= 254, f"node namespace index {index} out of range"
        self.server_ns = server_ns
        self.index = index
        self.addr = f"{NODE_NET}.{index}"

    def _links(self):
        n, s = self.name, self.server_ns.name
        port = f"hsp{self.index}"
        _ip("-n", s, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", n)
        _ip("-n", s, "link", "set", port, "master", BRIDGE)
        _ip("-n", s, "link", "set", port, "up")
        _ip("-n", n, "addr", "add", f"{self.addr}/24", "dev", "eth0")
        _ip("-n", n, "link", "set", "eth0", "up")
        _ip("-n", n, "route", "add", "198.18.0.0/24", "via", BRIDGE_IP)


def pipe(a, b):
    """Copies a → b until a ends, then passes the half-close on (RELAY_SRC runs it too)."""
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    try:
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass


# A TCP relay (listen host, port → target host, port), run inside a node namespace so that
# its loopback control URL reaches the server. Threads, half-close passed on, no timeouts on
# established streams (long polls).
RELAY_SRC = r"""
import socket, sys, threading
lh, lp, th, tp = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((lh, lp))
srv.listen(128)
print("relay listening", lh, lp, "->", th, tp, flush=True)
""" + inspect.getsource(pipe) + r"""
def serve(c):
    try:
        u = socket.create_connection((th, tp), timeout=10)
        u.settimeout(None)
    except OSError as e:
        print("relay: upstream:", e, flush=True)
        c.close()
        return
    t = threading.Thread(target=pipe, args=(u, c), daemon=True)
    t.start()
    pipe(c, u)
    t.join()
    c.close()
    u.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


@atexit.register
def _cleanup_namespaces():
    for ns in list(_LIVE_NS):
        ns.close()


class EchoServer:
    """TCP echo on 127.0.0.1:port inside a namespace (a userspace tailscaled forwards inbound
    tailnet TCP there)."""

    def __init__(self, ns, port=None):
        self.port = port or ns.port()
        self.sock = ns.listen("127.0.0.1", self.port)
        self.sock.settimeout(0.5)
        self.stopping = False
        self.connections = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _serve(c):
        c.settimeout(30)
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    break
                c.sendall(data)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


def socks5_connect(ns, proxy_port, host, port, timeout=15.0):
    """Connects through a SOCKS5 proxy at 127.0.0.1:proxy_port inside ns → connected socket."""
    s = ns.connect("127.0.0.1", proxy_port, timeout)
    try:
        s.sendall(b"\x05\x01\x00")
        rep = _recv_n(s, 2)
        assert rep == b"\x05\x00", f"SOCKS5 method reply {rep!r}"
        s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(host) + struct.pack(">H", port))
        rep = _recv_n(s, 10)
        assert rep[1] == 0, f"SOCKS5 connect to {host}:{port} refused: code {rep[1]}"
        return s
    except BaseException:
        s.close()
        raise


def _recv_n(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"closed after {len(buf)}/{n} bytes")
        buf += chunk
    return buf


def echo_roundtrip(s, payload):
    """Sends payload, reads the same number of bytes back → the bytes read."""
    got = b""

    def reader():
        nonlocal got
        try:
            while len(got) < len(payload):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except OSError:  # timed out, or the caller closed the socket after giving up
            pass

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    s.sendall(payload)
    t.join(s.gettimeout() or 30)
    return got


def write_derp_map(path):
    dm = {"regions": {DERP_REGION: {
        "regionid": DERP_REGION, "regioncode": "test", "regionname": "Test Region",
        "nodes": [{"name": "900a", "regionid": DERP_REGION, "hostname": SERVER_IP,
                   "ipv4": SERVER_IP, "ipv6": "none", "derpport": DERP_PORT,
                   "stunport": STUN_PORT, "insecurefortests": True}]}}}
    with open(path, "w") as f:
        yaml.safe_dump(dm, f, sort_keys=False)
    return path


class Derper:
    def __init__(self, ns, version, workdir):
        self.ns = ns
        self.dir = os.path.join(workdir, "derper")
        os.makedirs(self.dir, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.dir}
        self.proc = Proc(ns, "derper", [ts_bin(version, "derper"), "-dev"],
                         os.path.join(self.dir, "derper.log"), env=env, cwd=self.dir)

    def start(self, timeout=20):
        self.proc.start()

        def ready():
            assert self.proc.alive, f"derper exited:\n{self.proc.log()}"
            st, _, _ = self.ns.http("GET", SERVER_IP, DERP_PORT, "/derp/probe", timeout=2)
            return st == 200

        poll(ready, timeout, "derper to answer /derp/probe")
        return self

    def stop(self):
        self.proc.stop()


class Server(helpers.Server):
    """helpers.Server running inside a namespace, with server_url http://198.18.0.1:8080."""

    def __init__(self, ns, db, derp_map, policy_text=None, overrides=None, env=None,
                 ephemeral_timeout="70s", keepalive="15s"):
        self.ns = ns
        super().__init__(db, policy_mode="file" if policy_text else "database",
                         policy_text=policy_text, env=env)
        self.port = HS_PORT
        self.url = f"http://{CONTROL_HOST}:{HS_PORT}"
        cfg = self.config
        cfg["server_url"] = self.url
        cfg["listen_addr"] = f"0.0.0.0:{HS_PORT}"
        cfg["metrics_listen_addr"] = "127.0.0.1:9090"
        cfg["derp"] = {"server": {"enabled": False}, "urls": [], "paths": [derp_map],
                       "auto_update_enabled": False}
        cfg.setdefault("tuning", {})["keepalive_interval"] = keepalive
        if FLAVOR == "headscale":
            cfg["ephemeral_node_inactivity_timeout"] = ephemeral_timeout
        else:
            cfg["node"] = {"ephemeral": {"inactivity_timeout": ephemeral_timeout}}
        helpers.deep_merge(cfg, overrides)
        self.write_config()

    def spawn(self, extra_env=None, args=None):
        log = open(self.log_path, "ab")
        try:
            return subprocess.Popen(["ip", "netns", "exec", self.ns.name, self.binary,
                                     "-c", self.cfg_path] + (args or ["serve"]),
                                    stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=self._env(extra_env),
                                    cwd=self.tmp, preexec_fn=_die_with_parent)
        finally:
            log.close()

    def wait_healthy(self, url=None, deadline=helpers.START_DEADLINE):
        def ok():
            rc = self.proc.poll()
            if rc is not None:
                raise RuntimeError(f"headscale serve exited with {rc} during start:\n"
                                   + self.log_tail())
            st, _, body = self.ns.http("GET", SERVER_IP, self.port, "/health", timeout=2)
            return st == 200

        try:
            poll(ok, deadline, "/health of the server in the namespace", interval=0.1)
        except RuntimeError as e:
            raise AssertionError(str(e)) from None

    def api_full(self, method, path, json_body=None, key=helpers.DEFAULT_KEY, raw_body=None,
                 headers=None, unix=False):
        hdrs = dict(headers or {})
        if key is helpers.DEFAULT_KEY:
            key = self.api_key
        if key is not None:
            hdrs["Authorization"] = f"Bearer {key}"
        body = raw_body if json_body is None else json.dumps(json_body).encode()
        if body is not None:
            hdrs.setdefault("Content-Type", "application/json")
        st, h, data = self.ns.http(method, SERVER_IP, self.port, path, body, hdrs)
        return st, h, helpers._decode(data, h.get("content-type", ""))

    # ---- CLI helpers that work with ours and with headscale ----
    def user_id(self, name):
        for u in self.cli_json("users", "list") or []:
            if u.get("name") == name:
                return int(u["id"])
        raise AssertionError(f"no user {name}")

    def create_user_cli(self, name):
        self.cli_ok("users", "create", name)
        return self.user_id(name)

    def preauth_key(self, user_id, reusable=False, ephemeral=False, expiration="1h"):
        args = ["preauthkeys", "-u", str(user_id), "create", "-e", expiration]
        if reusable:
            args.append("--reusable")
        if ephemeral:
            args.append("--ephemeral")
        data = self.cli_json(*args)
        key = data.get("key") if isinstance(data, dict) else None
        assert key, f"no key in {data!r}"
        return key

    def nodes(self):
        data = self.cli_json("nodes", "list")
        return data or []

    def node_by_name(self, name):
        for n in self.nodes():
            if name in (n.get("name"), n.get("given_name")):
                return n
        return None


class Node:
    """One tailscaled (userspace networking) in the namespace, driven by the tailscale CLI over
    its unix socket from the test process."""

    def __init__(self, world, name, version):
        self.world = world
        self.name = name
        self.version = version
        self.dir = os.path.join(world.dir, name)
        os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)
        self.relay = None
        self.server = None
        self.addr = None  # its own address in a node_netns world
        if getattr(world, "node_netns", False):  # worlds of other tests (Relay) lack it
            self.ns = world.node_namespace()
            self.addr = self.ns.addr
            self.relay = Proc(self.ns, f"relay-{name}",
                              [sys.executable, "-c", RELAY_SRC, "127.0.0.1", str(HS_PORT),
                               SERVER_IP, str(HS_PORT)],
                              os.path.join(self.dir, "relay.log"),
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                              cwd=self.dir)
        else:
            self.ns = world.ns
        self.sock = os.path.join(self.dir, "ts.sock")
        self.socks_port = self.ns.port()
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self.dir,
            "TS_NO_LOGS_NO_SUPPORT": "true",
            "TS_LOGS_DIR": os.path.join(self.dir, "logs"),
            "TS_DEBUG_USE_DERP_HTTP": "1",
        }
        self.env.update(world.node_env)
        argv = [ts_bin(version, "tailscaled"), "--tun=userspace-networking",
                f"--statedir={self.dir}", f"--socket={self.sock}", "--port=0",
                f"--socks5-server=127.0.0.1:{self.socks_port}", "--no-logs-no-support"]
        self.proc = Proc(self.ns, f"tailscaled-{name}", argv,
                         os.path.join(self.dir, "tailscaled.log"), env=self.env, cwd=self.dir)
        self.up_log = os.path.join(self.dir, "up.log")

    def start(self, timeout=20):
        if self.relay is not None and not self.relay.alive:
            self.relay.start()

            def relay_ready():
                assert self.relay.alive, f"relay of {self.name} exited:\n{self.relay.log()}"
                return "relay listening" in self.relay.log(5)

            poll(relay_ready, timeout, f"the control relay in {self.name}'s namespace")
        self.proc.start()

        def ready():
            assert self.proc.alive, f"tailscaled {self.name} exited:\n{self.proc.log()}"
            return self.status(check=False) is not None

        poll(ready, timeout, f"tailscaled {self.name} to answer on its socket")
        return self

    def stop(self):
        self.proc.stop()

    def kill9(self):
        self.proc.kill9()

    # ---- CLI ----
    def cli(self, *args, timeout=CMD_TIMEOUT):
        argv = [ts_bin(self.version, "tailscale"), f"--socket={self.sock}"] + [str(a) for a in
                                                                               args]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           env=self.env, stdin=subprocess.DEVNULL, cwd=self.dir)
        if args[:1] != ("status",):  # polled often; its JSON would drown the log
            with open(self.up_log, "a") as f:
                f.write(f"$ tailscale {' '.join(map(str, args))}\n-> rc {r.returncode}\n"
                        f"{r.stdout}{r.stderr}\n")
        return r

    def login_server(self):
        """The world's server, or the one this node was pointed at (self.server: a replica)."""
        return (self.server or self.world.server).url

    def up(self, authkey=None, extra=(), timeout=UP_TIMEOUT, check=True):
        args = ["up", f"--login-server={self.login_server()}", f"--hostname={self.name}",
                "--accept-dns=false", f"--timeout={timeout}s"]
        if authkey:
            args.append(f"--authkey={authkey}")
        r = self.cli(*(args + list(extra)), timeout=timeout + 15)
        if check:
            assert r.returncode == 0, (f"tailscale up ({self.name}) → rc {r.returncode}\n"
                                       f"stdout: {r.stdout}\nstderr: {r.stderr}\n"
                                       f"{self._why_not_up()}")
        return r

    def _why_not_up(self):
        """What a failed `tailscale up` leaves to read: the client's state and health, the end
        of its log (the newest lines: the start of a log tells little), and the server's."""
        s = self.status(check=False) or {}
        server = self.server or self.world.server
        return (f"BackendState {s.get('BackendState')}, health {s.get('Health')}\n"
                f"tailscaled log, last lines:\n{self.proc.log(60)}\n"
                f"server log, last lines:\n{server.log_tail(40)}")

    def up_async(self, extra=()):
        """`tailscale up` without a key, in the background (interactive login) → Popen."""
        argv = [ts_bin(self.version, "tailscale"), f"--socket={self.sock}", "up",
                f"--login-server={self.login_server()}", f"--hostname={self.name}",
                "--accept-dns=false", f"--timeout={UP_TIMEOUT}s"] + list(extra)
        log = open(self.up_log, "ab")
        try:
            p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=self.env, cwd=self.dir,
                                 start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            log.close()
        self.world.bg.append(p)
        return p

    def status(self, check=True):
        r = self.cli("status", "--json", timeout=15)
        if r.returncode != 0 and not r.stdout.strip().startswith("{"):
            if check:
                raise AssertionError(f"tailscale status ({self.name}) failed: {r.stderr}")
            return None
        return json.loads(r.stdout)

    def state(self):
        s = self.status(check=False)
        return s.get("BackendState") if s else None

    def wait_state(self, want, timeout=60):
        return poll(lambda: self.state() == want, timeout,
                    f"{self.name} BackendState {want} (now {self.state()})")

    def wait_running(self, timeout=60):
        self.wait_state("Running", timeout)
        return self.status()

    def ips(self):
        s = self.status()
        return s.get("TailscaleIPs") or s["Self"].get("TailscaleIPs") or []

    @property
    def ip4(self):
        return next(ip for ip in self.ips() if ":" not in ip)

    def node_key(self):
        return self.status()["Self"]["PublicKey"]

    def peers(self):
        return list((self.status().get("Peer") or {}).values())

    def peer(self, hostname):
        for p in self.peers():
            if p.get("HostName") == hostname:
                return p
        return None

    def wait_peer(self, hostname, cond=None, timeout=60, what=None):
        """Polls until the peer with HostName hostname exists and cond(peer) holds → peer."""
        def check():
            p = self.peer(hostname)
            return p if p is not None and (cond is None or cond(p)) else None

        return poll(check, timeout, what or f"{self.name} to see peer {hostname}", interval=0.3)

    def wait_no_peer(self, hostname, timeout=60):
        poll(lambda: self.peer(hostname) is None, timeout,
             f"{hostname} to disappear from {self.name}'s peers", interval=0.3)

    def ping(self, ip, count=3, timeout=30):
        return self.cli("ping", "--c", count, "--timeout", "5s", ip, timeout=timeout)

    def wait_ping(self, ip, timeout=45):
        def ok():
            r = self.ping(ip)
            return r if r.returncode == 0 and "pong" in r.stdout else None

        return poll(ok, timeout, f"{self.name} pong from {ip}", interval=0.5)

    def log(self, n=60):
        return self.proc.log(n)


class World:
    """Namespace + derper + server + users (alice, bob) + nodes, torn down on exit."""

    def __init__(self, workdir, db, version, policy_text=None, server_overrides=None,
                 node_env=None, ephemeral_timeout="70s", node_netns=False,
                 users=("alice", "bob"), server_setup=None):
        """node_netns: every node in a namespace of its own (see the module docstring).
        users: the users created at start. server_setup(server): called after the server's
        config is made and before it starts (e.g. to write another config layout)."""
        self.node_netns = node_netns
        self.user_names = tuple(users)
        self.server_setup = server_setup
        self.node_nses = []
        self.dir = str(workdir)
        self.db = db
        self.version = version
        self.policy_text = policy_text
        self.server_overrides = server_overrides
        self.ephemeral_timeout = ephemeral_timeout
        self.node_env = dict(node_env or {})
        self.ns = None
        self.derper = None
        self.server = None
        self.nodes = {}
        self.bg = []
        self.users = {}
        self._seq = 0

    def __enter__(self):
        LIVE_WORLDS.append(self)
        try:
            self.ns = Namespace(self.dir).__enter__()
            if self.node_netns:
                self.ns.add_bridge()
            self.derper = Derper(self.ns, self.version, self.dir).start()
            derp_map = write_derp_map(os.path.join(self.dir, "derpmap.yaml"))
            self.server = Server(self.ns, self.db, derp_map, policy_text=self.policy_text,
                                 overrides=self.server_overrides,
                                 ephemeral_timeout=self.ephemeral_timeout)
            if self.server_setup is not None:
                self.server_setup(self.server)
            self.server.start()
            for u in self.user_names:
                self.users[u] = self.server.create_user_cli(u)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def unique_name(self, prefix="n"):
        self._seq += 1
        return f"{prefix}{self._seq}-{uuid.uuid4().hex[:4]}"

    def node_namespace(self):
        """A new NodeNamespace on the bridge (node_netns worlds) → it, created."""
        index = 10 + len(self.node_nses)
        ns = NodeNamespace(self.dir, self.ns, index)
        self.node_nses.append(ns)
        ns.create()
        return ns

    def key(self, user="alice", **kw):
        return self.server.preauth_key(self.users[user], **kw)

    def node(self, name=None, start=True):
        name = name or self.unique_name()
        n = Node(self, name, self.version)
        self.nodes[name] = n
        if start:
            n.start()
        return n

    def join(self, name=None, key=None, user="alice", extra=(), wait=True, **keykw):
        """A new node logged in with key (or a fresh one for user) → Node (Running)."""
        n = self.node(name)
        n.up(key or self.key(user, **keykw), extra=extra)
        if wait:
            n.wait_running()
        return n

    def discard(self, node, delete=True):
        """Stops node's tailscaled and (delete=True) removes it from the server, best effort."""
        try:
            node.stop()
            if node.ns is not self.ns:
                node.ns.close()
        finally:
            self.nodes.pop(node.name, None)
            if delete and self.server and self.server.running:
                try:
                    sn = self.server.node_by_name(node.name)
                    if sn:
                        self.server.cli("nodes", "delete", "-i", sn["id"], "--force")
                except Exception:
                    pass

    def dead(self):
        """Processes of this world that should run but do not → [(name, returncode)]."""
        procs = [n.proc for n in self.nodes.values()]
        procs += [n.relay for n in self.nodes.values() if n.relay is not None]
        if self.derper:
            procs.append(self.derper.proc)
        return [(p.name, p.popen.returncode) for p in procs
                if p.popen is not None and p.popen.poll() is not None]

    def logs(self, n=60):
        out = []
        for name, rc in self.dead():
            out.append(f"!!!!! {name} is not running (rc {rc})")
        for node in list(self.nodes.values()):
            out.append(f"===== tailscaled {node.name} ({node.dir}) =====\n{node.log(n)}")
            out.append(f"===== tailscale CLI {node.name} =====\n{tail(node.up_log, n)}")
        if self.derper:
            out.append(f"===== derper =====\n{self.derper.proc.log(20)}")
        return "\n".join(out)

    def close(self):
        for p in self.bg:
            try:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
            except Exception:
                pass
        self.bg.clear()
        for node in list(self.nodes.values()):
            try:
                node.stop()
            except Exception:
                pass
        try:
            if self.server is not None:
                try:
                    self.server.stop(check=False)
                finally:
                    try:
                        shutil.copy(self.server.log_path, os.path.join(self.dir, "server.log"))
                    except OSError:
                        pass
                    self.server.cleanup()
        finally:
            for ns in self.node_nses:
                try:
                    ns.close()
                except Exception:
                    pass
            self.node_nses.clear()
            if self.ns is not None:
                self.ns.close()
            if self in LIVE_WORLDS:
                LIVE_WORLDS.remove(self)


ALLOW_ALL_POLICY = json.dumps({
    "tagOwners": {"tag:x": ["alice@"], "tag:y": ["alice@"]},
    "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
}, indent=2)
