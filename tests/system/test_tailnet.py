"""Real Tailscale clients against the server, inside a private network namespace (tailnet.py).

Parametrized over the database (db fixture of conftest.py) and the client version
($HS_TS_VERSIONS, default "v1.102.3,v1.80.3"): the first version runs every test, the others
only the tests marked `smoke` (login, peers visible, ping). Clients are built by
tests/lib/install-tailscale.sh; a version not built is skipped (set HS_TS_REQUIRE=1 to fail
instead). Needs root (ip netns).

Most tests share one module-scoped world per (db, version): a server, derper and three nodes
n1..n3 joined with one reusable key. A test that needs more nodes adds its own and removes them
at its end; none relies on another having run. Server restarts get a world of their own."""

import base64
import json
import os
import socket
import struct
import subprocess
import time

import pytest

import tailnet
from tailnet import poll

try:
    import noise_client as nc  # needs the cryptography package
    _NC_ERROR = None
except ImportError as e:
    nc, _NC_ERROR = None, e

VERSIONS = tailnet.versions()
FULL = VERSIONS[0]


def pytest_generate_tests(metafunc):
    if "tsver" in metafunc.fixturenames:
        smoke = metafunc.definition.get_closest_marker("smoke") is not None
        vs = VERSIONS if smoke else VERSIONS[:1]
        metafunc.parametrize("tsver", vs, indirect=True, scope="module")


@pytest.fixture(scope="module")
def tsver(request):
    v = request.param
    if os.geteuid() != 0:
        pytest.skip("tailnet tests need root (ip netns)")
    if not tailnet.have_version(v):
        msg = (f"Tailscale {v} not built in {tailnet.TS_CACHE}/{v} "
               f"(tests/lib/install-tailscale.sh {v})")
        if os.environ.get("HS_TS_REQUIRE"):
            pytest.fail(msg)
        pytest.skip(msg)
    return v


def _new_world(tmp_path_factory, db, tsver, tag, **kw):
    d = tmp_path_factory.mktemp(f"tn-{tag}-{db.kind[:2]}-{tsver.replace('.', '')}")
    return tailnet.World(d, db, tsver, policy_text=tailnet.ALLOW_ALL_POLICY, **kw)


@pytest.fixture(scope="module")
def world(tmp_path_factory, db, tsver):
    """Server + derper + n1..n3 joined with one reusable pre-auth key, all Running.

    Ours cuts full maps into cached zstd frames of tuning.map_peer_run peers (default 256);
    here runs of 2, so every full map these clients decode is several frames."""
    ours = {"tuning": {"map_peer_run": 2}} if tailnet.FLAVOR != "headscale" else None
    with _new_world(tmp_path_factory, db, tsver, "w", server_overrides=ours) as w:
        key = w.key(reusable=True)
        nodes = [w.node(f"n{i}") for i in (1, 2, 3)]
        for n in nodes:
            n.up(key)
        for n in nodes:
            n.wait_running()
        w.base = nodes
        yield w


@pytest.fixture(scope="module")
def rworld(tmp_path_factory, db, tsver):
    """A world of its own for server restarts: r1, r2 Running."""
    with _new_world(tmp_path_factory, db, tsver, "r") as w:
        key = w.key(reusable=True)
        w.base = [w.node("r1"), w.node("r2")]
        for n in w.base:
            n.up(key)
        for n in w.base:
            n.wait_running()
        yield w


@pytest.fixture(autouse=True)
def _tailnet_logs(request):
    """Before a test: every process of the live worlds still runs (a derper killed from outside
    is restarted, a dead client fails the test with its exit status instead of a confusing
    timeout). On failure: prints the tails of the client and derper logs of every live world
    (the server log is printed by conftest's _server_watch)."""
    gone = []
    for w in list(tailnet.LIVE_WORLDS):
        for name, rc in w.dead():
            gone.append(f"{name} of {w.dir} exited with rc {rc} before this test")
            if name == "derper":
                w.derper.start()
    if gone:
        pytest.fail("processes died between tests (killed from outside?):\n" + "\n".join(gone))
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for w in list(tailnet.LIVE_WORLDS):
            print(f"\n===== tailnet world {w.dir} ({w.db.kind}, {w.version}) =====")
            print(w.logs(60))


# ---------------------------------------------------------------- helpers

def self_ips(node):
    return sorted(node.ips())


def server_id(world, node):
    sn = poll(lambda: world.server.node_by_name(node.name), 20,
              f"{node.name} in headscale nodes list")
    return int(sn["id"])


def assert_sees(observer, target, timeout=60):
    """observer has target as a peer with the right HostName and addresses, Online."""
    want = self_ips(target)
    p = observer.wait_peer(
        target.name, lambda p: p.get("Online") is True and sorted(p.get("TailscaleIPs") or [])
        == want, timeout=timeout,
        what=f"{observer.name} to see {target.name} Online with {want}")
    assert p["HostName"] == target.name
    return p


def assert_alive(world):
    """The base clients are still Running and still answer pings."""
    n1, n2 = world.base[0], world.base[1]
    for n in (n1, n2):
        assert n.state() == "Running", f"{n.name} left Running: {n.state()}"
    r = n1.wait_ping(n2.ip4, timeout=30)
    assert "pong" in r.stdout
    assert world.server.running, "server died"


def cli_supports(world, *cmd):
    """Whether the server CLI lists cmd[-1] among the subcommands of cmd[:-1] (the CLI is being
    completed; an unknown subcommand makes cobra-style CLIs print the parent's help)."""
    r = world.server.cli(*cmd[:-1], "--help")
    text = r.stdout + r.stderr
    if "Available Commands" not in text:
        return False
    listed = text.split("Available Commands", 1)[1].split("\n\n", 1)[0]
    return any(line.split()[:1] == [cmd[-1]] for line in listed.splitlines()[1:])


def require_cli(world, *cmd):
    if not cli_supports(world, *cmd):
        pytest.fail(f"server CLI lacks `headscale {' '.join(cmd)}`")


# ---------------------------------------------------------------- 1. join and see peers

@pytest.mark.smoke
def test_three_nodes_see_each_other(world):
    n = world.base
    for a in n:
        st = a.status()
        assert st["BackendState"] == "Running"
        assert st["Self"]["HostName"] == a.name
        ips = self_ips(a)
        assert any(":" not in ip for ip in ips), f"{a.name} has no IPv4: {ips}"
        for b in n:
            if b is not a:
                assert_sees(a, b)
    # three distinct nodes on the server, with the clients' addresses
    ips = [tuple(self_ips(x)) for x in n]
    assert len(set(ips)) == 3, ips
    for x in n:
        sn = world.server.node_by_name(x.name)
        assert sn, f"{x.name} not in nodes list"
        sips = sorted(sn.get("ip_addresses", []))
        assert sips == self_ips(x), (sn, self_ips(x))


# ---------------------------------------------------------------- 2. data through the tailnet

@pytest.mark.smoke
def test_ping_between_nodes(world):
    n1, n2, n3 = world.base
    for src, dst in ((n1, n2), (n2, n3), (n3, n1)):
        r = src.wait_ping(dst.ip4)
        assert "pong" in r.stdout, r.stdout


def test_tcp_payload_through_socks5(world):
    n1, n2 = world.base[0], world.base[1]
    echo = tailnet.EchoServer(world.ns)
    try:
        payload = os.urandom(256 * 1024) + b"end-of-payload"

        def roundtrip():
            s = tailnet.socks5_connect(world.ns, n1.socks_port, n2.ip4, echo.port)
            try:
                s.settimeout(30)
                return tailnet.echo_roundtrip(s, payload)
            finally:
                s.close()

        got = poll(lambda: roundtrip() or None, 45, "SOCKS5 echo through the tailnet")
        assert len(got) == len(payload), f"got {len(got)} of {len(payload)} bytes"
        assert got == payload, "payload corrupted through the tailnet"
        assert echo.connections >= 1
    finally:
        echo.close()


def test_tcp_payload_with_tailscale_nc(world):
    n2, n3 = world.base[1], world.base[2]
    echo = tailnet.EchoServer(world.ns)
    try:
        payload = os.urandom(4096).hex().encode() + b"\n"
        argv = [tailnet.ts_bin(n2.version, "tailscale"), f"--socket={n2.sock}", "nc",
                n3.ip4, str(echo.port)]

        def once():
            p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=n2.env)
            try:
                p.stdin.write(payload)
                p.stdin.flush()
                got = b""
                end = time.monotonic() + 15
                os.set_blocking(p.stdout.fileno(), False)
                while len(got) < len(payload) and time.monotonic() < end:
                    try:
                        chunk = p.stdout.read(65536)
                    except BlockingIOError:
                        chunk = None
                    if chunk:
                        got += chunk
                    elif p.poll() is not None:
                        break
                    else:
                        time.sleep(0.05)
                return got
            finally:
                p.kill()
                p.wait(10)

        got = poll(lambda: once() or None, 45, "tailscale nc echo")
        assert got == payload
    finally:
        echo.close()


# ---------------------------------------------------------------- 3. a node joins later

def test_fourth_node_joins_without_reconnect(world):
    pids = {n.name: n.proc.popen.pid for n in world.base}
    n4 = world.join(world.unique_name("late"))
    try:
        for n in world.base:
            assert_sees(n, n4)
            assert n.proc.alive and n.proc.popen.pid == pids[n.name], "client restarted"
            assert n.state() == "Running"
        for n in world.base:
            assert_sees(n4, n)
        assert "pong" in world.base[0].wait_ping(n4.ip4).stdout
    finally:
        world.discard(n4)


# ---------------------------------------------------------------- 4. admin changes reach peers

def test_admin_delete_node(world):
    require_cli(world, "nodes", "delete")
    x = world.join(world.unique_name("del"))
    try:
        n1, n2 = world.base[0], world.base[1]
        assert_sees(n1, x)
        nid = server_id(world, x)
        world.server.cli_ok("nodes", "delete", "-i", nid, "--force")
        assert world.server.node_by_name(x.name) is None
        n1.wait_no_peer(x.name, timeout=30)
        n2.wait_no_peer(x.name, timeout=30)
        assert_alive(world)
    finally:
        world.discard(x)


def test_admin_expire_node(world):
    require_cli(world, "nodes", "expire")
    x = world.join(world.unique_name("exp"))
    try:
        n1 = world.base[0]
        assert_sees(n1, x)
        world.server.cli_ok("nodes", "expire", "-i", server_id(world, x))
        n1.wait_peer(x.name, lambda p: p.get("Expired") is True, timeout=30,
                     what=f"{n1.name} to see {x.name} Expired")
        x.wait_state("NeedsLogin", timeout=30)
        assert_alive(world)
    finally:
        world.discard(x)


def test_admin_rename_node(world):
    require_cli(world, "nodes", "rename")
    x = world.join(world.unique_name("ren"))
    try:
        n1 = world.base[0]
        before = assert_sees(n1, x)["DNSName"]
        assert before.startswith(x.name + "."), before
        new = "renamed-" + x.name
        world.server.cli_ok("nodes", "rename", "-i", server_id(world, x), new)
        p = n1.wait_peer(x.name, lambda p: p.get("DNSName", "").startswith(new + "."),
                         timeout=30, what=f"{n1.name} to see DNSName {new}.…")
        assert p["DNSName"].endswith(".")
        assert p["DNSName"][len(new):] == before[len(x.name):], (before, p["DNSName"])
    finally:
        world.discard(x)


def test_admin_move_node(world):
    require_cli(world, "nodes", "move")
    x = world.join(world.unique_name("mov"))
    try:
        n1 = world.base[0]
        before = assert_sees(n1, x)["UserID"]
        bob = world.users["bob"]
        world.server.cli_ok("nodes", "move", "-i", server_id(world, x), "-u", bob)
        p = n1.wait_peer(x.name, lambda p: p.get("UserID") != before, timeout=30,
                         what=f"{n1.name} to see {x.name}'s UserID change")
        assert p["UserID"] == bob, (before, p["UserID"], bob)
        sn = world.server.node_by_name(x.name)
        assert int(sn["user"]["id"]) == bob
    finally:
        world.discard(x)


def test_admin_tag_node(world):
    require_cli(world, "nodes", "tag")
    x = world.join(world.unique_name("tag"))
    try:
        n1 = world.base[0]
        assert not assert_sees(n1, x).get("Tags")
        world.server.cli_ok("nodes", "tag", "-i", server_id(world, x), "-t", "tag:x")
        p = n1.wait_peer(x.name, lambda p: p.get("Tags") == ["tag:x"], timeout=30,
                         what=f"{n1.name} to see {x.name} tagged tag:x")
        assert p["Online"] is True
        # still reachable under the allow-all policy
        assert "pong" in n1.wait_ping(x.ip4).stdout
    finally:
        world.discard(x)


# ---------------------------------------------------------------- 5. interactive login

def test_interactive_login_register(world):
    y = world.node(world.unique_name("web"))
    try:
        y.up_async()
        url = poll(lambda: y.status().get("AuthURL"), 30, f"{y.name} AuthURL")
        prefix = world.server.url + "/register/"
        assert url.startswith(prefix), url
        reg_id = url[len(prefix):]
        assert reg_id and "/" not in reg_id, url
        st, hdrs, body = world.ns.http("GET", tailnet.SERVER_IP, tailnet.HS_PORT,
                                       "/register/" + reg_id)
        text = body.decode("utf-8", "replace")
        assert st == 200, (st, text[:500])
        assert "text/html" in hdrs.get("content-type", ""), hdrs
        assert "headscale nodes register" in text, text[:2000]
        assert reg_id in text
        require_cli(world, "nodes", "register")
        world.server.cli_ok("nodes", "register", "--user", "alice", "--key", reg_id)
        y.wait_running(timeout=60)
        sn = world.server.node_by_name(y.name)
        assert sn and sn["user"]["name"] == "alice", sn
        assert_sees(world.base[0], y)
    finally:
        world.discard(y)


def auth_url_id(world, node):
    """The registration id of the AuthURL node is shown after `tailscale up` without a key."""
    url = poll(lambda: node.status().get("AuthURL"), 30, f"{node.name} AuthURL")
    prefix = world.server.url + "/register/"
    assert url.startswith(prefix), url
    return url[len(prefix):]


def test_interactive_login_rejected(world):
    """`headscale auth reject` refuses a pending login: `tailscale up` stops with the message,
    and no node is made."""
    y = world.node(world.unique_name("rej"))
    try:
        p = y.up_async()
        reg_id = auth_url_id(world, y)
        require_cli(world, "auth", "reject")
        world.server.cli_ok("auth", "reject", "--auth-id", reg_id)
        rc = p.wait(timeout=60)
        with open(y.up_log, errors="replace") as f:
            out = f.read()
        assert rc != 0, out
        assert "login refused by the server's administrator" in out, out
        assert y.state() != "Running"
        assert world.server.node_by_name(y.name) is None
        r = world.server.cli("auth", "register", "--auth-id", reg_id, "--user", "alice")
        assert r.returncode != 0, "a refused login was completed afterwards"
        assert world.server.node_by_name(y.name) is None
    finally:
        world.discard(y, delete=False)


def test_interactive_relogin_approved(world):
    """A node that logged out logs in again without a key; `headscale auth approve` lets it
    through as the node it was (same id, same user) and the client runs again."""
    z = world.join(world.unique_name("appr"))
    try:
        before = world.server.node_by_name(z.name)
        r = z.cli("logout", timeout=30)
        assert r.returncode == 0, r.stderr
        z.wait_state("NeedsLogin", timeout=30)
        z.up_async()
        reg_id = auth_url_id(world, z)
        require_cli(world, "auth", "approve")
        world.server.cli_ok("auth", "approve", "--auth-id", reg_id)
        z.wait_running(timeout=60)
        after = world.server.node_by_name(z.name)
        assert after["id"] == before["id"], (before, after)
        assert after["user"]["name"] == "alice", after
        assert after["node_key"] != before["node_key"], "logout and login give a new node key"
        assert_sees(world.base[0], z)
    finally:
        world.discard(z)


def test_register_page_unknown_id(world):
    st, _, body = world.ns.http("GET", tailnet.SERVER_IP, tailnet.HS_PORT,
                                "/register/" + "z" * 24)
    # headscale renders the page for any well-formed id; what matters is no crash
    assert st in (200, 400, 404), (st, body[:300])
    assert world.server.running


# ---------------------------------------------------------------- 6. ephemeral nodes

def test_ephemeral_logout_deletes_node(world):
    e = world.join(world.unique_name("eph"), ephemeral=True)
    try:
        n1 = world.base[0]
        assert_sees(n1, e)
        assert world.server.node_by_name(e.name) is not None
        r = e.cli("logout", timeout=30)
        assert r.returncode == 0, r.stderr
        poll(lambda: world.server.node_by_name(e.name) is None, 30,
             f"ephemeral {e.name} to leave `headscale nodes list`")
        n1.wait_no_peer(e.name, timeout=30)
        assert_alive(world)
    finally:
        world.discard(e, delete=False)


@pytest.mark.slow
def test_ephemeral_inactivity_deletes_node(world):
    """An ephemeral node that vanishes (kill -9) is deleted after the inactivity timeout (70s)."""
    e = world.join(world.unique_name("ephk"), ephemeral=True)
    try:
        n1 = world.base[0]
        assert_sees(n1, e)
        t0 = time.monotonic()
        e.kill9()
        n1.wait_peer(e.name, lambda p: p.get("Online") is False, timeout=60,
                     what=f"{e.name} to go offline for {n1.name}")
        poll(lambda: world.server.node_by_name(e.name) is None, 70 + 90,
             f"ephemeral {e.name} to be deleted after inactivity", interval=2)
        assert time.monotonic() - t0 >= 60, "deleted long before the inactivity timeout"
        n1.wait_no_peer(e.name, timeout=30)
    finally:
        world.discard(e, delete=True)


# ---------------------------------------------------------------- 7. key kinds

def test_single_use_key_works_once(world):
    key = world.key(reusable=False)
    a = world.join(world.unique_name("once"), key=key)
    b = world.node(world.unique_name("twice"))
    try:
        r = b.up(key, timeout=20, check=False)
        out = (r.stdout + r.stderr)
        assert r.returncode != 0, f"second login with a single-use key succeeded: {out}"
        assert out.strip(), "no error shown to the user"
        assert b.state() != "Running"
        assert world.server.node_by_name(b.name) is None
        assert a.state() == "Running"
        assert_sees(world.base[0], a)
    finally:
        world.discard(b, delete=True)
        world.discard(a)


def test_reusable_key_works_for_several(world):
    key = world.key(reusable=True)
    made = []
    try:
        for _ in range(3):
            made.append(world.join(world.unique_name("multi"), key=key))
        for m in made:
            assert world.server.node_by_name(m.name) is not None
            assert_sees(world.base[0], m)
        assert len({tuple(self_ips(m)) for m in made}) == 3
    finally:
        for m in made:
            world.discard(m)


# ---------------------------------------------------------------- 8. server restart

@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_server_restart_clients_reconnect(rworld, how):
    w = rworld
    r1, r2 = w.base
    if not w.server.running:  # an earlier restart test left it down
        w.server.start()
    for n in w.base:
        n.wait_running(timeout=60)
    assert_sees(r1, r2)
    ids = {n.name: server_id(w, n) for n in w.base}
    ips = {n.name: self_ips(n) for n in w.base}
    pids = {n.name: n.proc.popen.pid for n in w.base}
    if how == "sigterm":
        w.server.stop(check=True)
    else:
        w.server.kill9()
    w.server.start()
    for n in w.base:
        n.wait_running(timeout=90)
    for a, b in ((r1, r2), (r2, r1)):
        assert_sees(a, b, timeout=90)
    assert "pong" in r1.wait_ping(r2.ip4).stdout
    # BackendState stays Running and the cached netmap keeps peers Online even when a client
    # never gets its control session back, so prove the map stream is live: the server sees
    # both online, and a change made now reaches the other client.
    poll(lambda: all((w.server.node_by_name(n.name) or {}).get("online")
                     for n in w.base), 60, "both nodes online on the server again")
    new = f"{r2.name}-{how}"
    w.server.cli_ok("nodes", "rename", "-i", ids[r2.name], new)
    r1.wait_peer(r2.name, lambda p: p.get("DNSName", "").startswith(new + "."), timeout=60,
                 what=f"{r1.name} to get the rename of {r2.name} after the restart")
    for n in w.base:
        assert n.proc.popen.pid == pids[n.name]
        assert server_id(w, n) == ids[n.name], "node id changed across restart"
        assert self_ips(n) == ips[n.name], "tailnet IPs changed across restart"
    assert len(w.server.nodes()) == 2


# ---------------------------------------------------------------- 9. bad input

def need_noise():
    if nc is None:
        pytest.skip(f"noise_client unavailable (pip install cryptography): {_NC_ERROR}")


def _raw(world, timeout=10):
    return world.ns.connect(tailnet.SERVER_IP, tailnet.HS_PORT, timeout)


def _server_pub(world):
    st, _, body = world.ns.http("GET", tailnet.SERVER_IP, tailnet.HS_PORT, "/key?v=113")
    assert st == 200, (st, body)
    return nc.key_from_text(json.loads(body)["publicKey"], "mkey:")


def _http_complete(data):
    """True when data holds a whole non-101 HTTP/1.x response (head + Content-Length body): a
    server may keep such a connection open for the next request, so there is no EOF to wait
    for."""
    if not data.startswith(b"HTTP/1.") or b"\r\n\r\n" not in data:
        return False
    head, body = data.split(b"\r\n\r\n", 1)
    if _status_of(data) == 101:
        return False
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            return len(body) >= int(v.strip() or 0)
    return False


def _drain(sock, timeout=10):
    """Reads until EOF/reset, a complete HTTP answer, or the deadline → (bytes, closed)."""
    data = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end and not _http_complete(data):
        sock.settimeout(max(0.05, end - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return data, False
        except (ConnectionResetError, BrokenPipeError):
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def _status_of(data):
    if not data.startswith(b"HTTP/1."):
        return None
    return int(data.split(b" ", 2)[1])


def _assert_rejected_http(data, closed, what):
    st = _status_of(data)
    if st is None:
        assert closed, f"{what}: neither an HTTP answer nor a close: {data[:200]!r}"
        return
    assert 400 <= st < 500, f"{what}: expected a 4xx, got {data[:300]!r}"


def test_bad_garbage_bytes(world):
    for path in ("/ts2021", "/machine/register"):
        s = _raw(world)
        try:
            s.sendall(os.urandom(2048) + b"\r\n\r\n")
            data, closed = _drain(s)
            st = _status_of(data)
            assert st is None or 400 <= st < 500, (path, data[:300])
            assert closed or st is not None, (path, "connection left hanging", data[:200])
        finally:
            s.close()
    # an HTTP request line followed by garbage upgrade data
    s = _raw(world)
    try:
        s.sendall(b"POST /ts2021 HTTP/1.1\r\nHost: x\r\nUpgrade: tailscale-control-protocol\r\n"
                  b"Connection: upgrade\r\nX-Tailscale-Handshake: %s\r\n\r\n"
                  % base64.b64encode(os.urandom(101)))
        data, closed = _drain(s)
        st = _status_of(data)
        if st == 101:
            body = data.split(b"\r\n\r\n", 1)[1]
            assert not body or body[0] == 3, f"random initiation got a handshake answer: {data!r}"
        else:
            _assert_rejected_http(data, closed, "random initiation")
    finally:
        s.close()
    assert_alive(world)


def test_bad_truncated_handshake(world):
    need_noise()
    pub = _server_pub(world)
    msg1 = nc.Handshake(pub, nc.new_private_key()).initiation()
    for cut in (0, 3, 50, 100):
        s = _raw(world)
        try:
            s.sendall(nc.upgrade_request(f"{tailnet.SERVER_IP}:{tailnet.HS_PORT}",
                                         base64.b64encode(msg1[:cut]).decode()))
            data, closed = _drain(s)
            st = _status_of(data)
            if st == 101:
                body = data.split(b"\r\n\r\n", 1)[1]
                assert body[:1] in (b"", b"\x03"), f"cut {cut}: answered {body[:60]!r}"
                assert closed, f"cut {cut}: connection left open after 101"
            else:
                _assert_rejected_http(data, closed, f"initiation cut to {cut} bytes")
        finally:
            s.close()
    # a request whose head never finishes, then a close
    s = _raw(world)
    try:
        s.sendall(b"POST /ts2021 HTTP/1.1\r\nHost: x\r\nUpgrade: tailscale-con")
    finally:
        s.close()
    assert_alive(world)


def test_bad_upgrade_without_handshake_header(world):
    need_noise()
    for upgrade in ("tailscale-control-protocol", None, "websocket"):
        s = _raw(world)
        try:
            s.sendall(nc.upgrade_request("x", None, upgrade=upgrade))
            data, closed = _drain(s)
            st = _status_of(data)
            # headscale answers a missing Upgrade header with 500 "Internal error" (and a hint
            # about reverse proxies in its log); a 4xx is as good
            assert st is not None and st != 101 and (400 <= st < 500 or
                                                     (upgrade is None and st == 500)), \
                (upgrade, data[:300])
        finally:
            s.close()
    assert_alive(world)


def test_bad_handshake_for_wrong_server_key(world):
    need_noise()
    wrong = nc._raw_pub(nc.new_private_key())
    s = _raw(world)
    try:
        with pytest.raises((nc.ServerError, nc.NoiseError, EOFError, ConnectionError)):
            nc.handshake(s, f"{tailnet.SERVER_IP}:{tailnet.HS_PORT}", wrong)
    finally:
        s.close()
    assert_alive(world)


def test_bad_oversized_noise_frame(world):
    need_noise()
    pub = _server_pub(world)
    s = _raw(world)
    try:
        conn = nc.handshake(s, f"{tailnet.SERVER_IP}:{tailnet.HS_PORT}", pub)
        big = conn.seal(b"\x00" * 8000)  # a record of 8019 bytes > 4096
        try:
            s.sendall(struct.pack(">BH", 4, len(big)) + big)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data, closed = _drain(s, timeout=10)
        assert closed, "server kept the connection after an oversized Noise frame"
    finally:
        s.close()
    # a length field of 0xffff with nothing after it, on a fresh session
    s = _raw(world)
    try:
        nc.handshake(s, f"{tailnet.SERVER_IP}:{tailnet.HS_PORT}", pub)
        s.sendall(b"\x04\xff\xff" + b"\x00" * 100)
        _, closed = _drain(s, timeout=10)
        assert closed, "server kept the connection after a 0xffff length header"
    finally:
        s.close()
    assert_alive(world)


def test_bad_json_to_machine_register(world):
    need_noise()
    pytest.importorskip("h2", reason="needs the h2 package (pip install h2)")
    pub = _server_pub(world)
    before = len(world.server.nodes())
    bodies = [b'{"Version": 113, "NodeKey": ', b"[1,2,3]", b"\x00\xff\xfe garbage",
              b'{"Version": 113, "NodeKey": "nodekey:zz", "Auth": {"AuthKey": 5}}',
              b'{"Version": "x", "NodeKey": 7}']
    s = _raw(world)
    try:
        conn = nc.handshake(s, f"{tailnet.SERVER_IP}:{tailnet.HS_PORT}", pub)
        h2s = nc.H2Session(conn, f"{tailnet.SERVER_IP}:{tailnet.HS_PORT}")
        for body in bodies:
            try:
                st, _, rbody = h2s.request("POST", "/machine/register", body)
            except EOFError:
                break  # closing the session is a rejection too
            text = rbody.decode("utf-8", "replace")
            if st == 200:
                try:
                    doc = json.loads(text)
                except ValueError:
                    doc = {}
                assert doc.get("Error"), f"{body!r} accepted: {st} {text[:300]}"
                assert not doc.get("MachineAuthorized"), text
            else:
                assert 400 <= st < 500, f"{body!r} → {st} {text[:300]}"
    finally:
        s.close()
    assert len(world.server.nodes()) == before
    assert_alive(world)


def test_bad_plain_http_machine_endpoints(world):
    for method, path, body in (("POST", "/machine/register", b"{not json"),
                               ("POST", "/machine/map", os.urandom(64)),
                               ("GET", "/machine/" + "a" * 64, None),
                               ("POST", "/ts2021", b"x" * 10000)):
        st, _, data = world.ns.http(method, tailnet.SERVER_IP, tailnet.HS_PORT, path, body,
                                    {"Content-Type": "application/json"})
        ok = 400 <= st < 500 or (path == "/ts2021" and st == 500)  # no Upgrade: as headscale
        assert ok, (method, path, st, data[:200])
    assert_alive(world)
