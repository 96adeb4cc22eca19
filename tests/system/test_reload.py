"""SIGHUP: the config file read again and put in force under connected clients.

The tailnet part runs one private network namespace per database backend: the server with TLS
on :8443 (test_derp_relay's TlsServer: a CA made here, the embedded DERP relay as the only
region), the policy in a file, the extra records in a file, log level info; two real tailscaled
that trust the CA and relay through our DERP server (TS_DEBUG_ALWAYS_USE_DERP). One SIGHUP then
brings a renewed certificate, a new policy, a region from a derp.paths file (the home region
stays as it was: a client drops its relay connection to a region whose definition changes), another extra records file and log level debug; the map streams, the relay
connections and the TCP connections behind them are counted before and after (/metrics on the
metrics listener, ss in the namespace) and every one is still there, while the clients show the
new DERP map and resolve the new record and a new handshake gets the new certificate. Broken
files then keep what is in force, each with one line saying why.

Without a namespace: keys that need a restart are named and not applied, a config file that
does not parse changes nothing, and log.format json writes lines shaped as headscale's."""

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time

import pytest

import conftest
import helpers
import noise_client
import tailnet as tn
import test_derp_relay as dr

VERSIONS = [v for v in tn.versions() if tn.have_version(v)]
REF_BIN = os.environ.get("HS_REF_BIN", os.path.join(
    helpers.REPO, ".cache", "headscale", "v0.29.3", "headscale"))
BASE = "example.com"
RECORD = {"Name": "db." + BASE, "Type": "A", "Value": "100.64.0.99"}
NEW_RECORD = {"Name": "db." + BASE, "Type": "A", "Value": "100.64.0.98"}
EXTRA_REGION = 950
SERIAL_OLD, SERIAL_NEW = 0x5EED01, 0x5EED02
POLICY = {"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}
NEW_POLICY = {"hosts": {"reloaded": "100.64.0.200/32"},
              "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}
DEADLINE = 20.0

needs_tailnet = pytest.mark.skipif(not VERSIONS or os.geteuid() != 0,
                                   reason="needs root and Tailscale clients in .cache/tailscale "
                                          "(tests/lib/install-tailscale.sh)")


# ---------------------------------------------------------------- files

def replace_file(path, data):
    """Writes a new file and renames it over the old one, as config tools do."""
    tmp = path + ".new"
    with open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    os.replace(tmp, path)


def sign_cert(tls_dir, serial, out):
    """A server certificate for make_certs' key and names, with the given serial, into out."""
    r = subprocess.run(["openssl", "x509", "-req", "-in", os.path.join(tls_dir, "server.csr"),
                        "-CA", os.path.join(tls_dir, "ca.pem"),
                        "-CAkey", os.path.join(tls_dir, "ca.key"), "-set_serial", str(serial),
                        "-out", out, "-days", "2",
                        "-extfile", os.path.join(tls_dir, "server.ext")],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr


def extra_region_map(path):
    """A derp.paths file with one STUN-only region: in the clients' map, never their home."""
    replace_file(path, json.dumps({"Regions": {str(EXTRA_REGION): {
        "RegionID": EXTRA_REGION, "RegionCode": "extra", "RegionName": "Extra",
        "Nodes": [{"Name": "950a", "RegionID": EXTRA_REGION, "HostName": "127.0.0.9",
                   "STUNOnly": True, "STUNPort": 3479}]}}}))


# ---------------------------------------------------------------- the world

class World(dr.Relay):
    """dr.Relay's server and two relaying nodes, with a policy file, an extra records file,
    certificates of known serials and log level info."""

    def open(self):
        self.ns = tn.Namespace(self.dir).__enter__()
        self.tls_dir = os.path.join(self.dir, "tls")
        ca, _, key = dr.make_certs(self.tls_dir)
        self.cert = os.path.join(self.tls_dir, "live.pem")
        sign_cert(self.tls_dir, SERIAL_OLD, self.cert)
        self.node_env = {"SSL_CERT_FILE": ca, "TS_DEBUG_ALWAYS_USE_DERP": "true"}
        s = self.server = dr.TlsServer(self.ns, self.db, self.cert, key, ca)
        s.policy_path = os.path.join(s.tmp, "policy.json")
        replace_file(s.policy_path, json.dumps(POLICY))
        s.records = os.path.join(s.tmp, "records.json")
        replace_file(s.records, json.dumps([RECORD]))
        s.config["policy"] = {"mode": "file", "path": s.policy_path}
        s.config["dns"]["extra_records_path"] = s.records
        s.config["log"] = {"level": "info", "format": "text"}
        s.write_config()
        s.start()
        self.join_nodes("reloader", "rl")
        self.ping_via_derp(self.n1, self.n2)
        self.ping_via_derp(self.n2, self.n1)
        return self

    def sighup(self, *expect):
        """SIGHUP, then waits for a log line with each of expect → the reload's log text."""
        start = len(self.server.log_text())
        self.server.proc.send_signal(signal.SIGHUP)
        for e in expect:
            tn.poll(lambda: e in self.server.log_text()[start:], DEADLINE,
                    f"{e!r} in the server log after SIGHUP")
        return self.server.log_text()[start:]

    def metrics(self):
        st, _, body = self.ns.http("GET", "127.0.0.1", 9090, "/metrics")
        assert st == 200, st
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#") and "{" not in line.split(" ")[0]:
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def connections(self):
        """The established TCP connections to the server's port, as the kernel sees them."""
        r = subprocess.run(["ip", "netns", "exec", self.ns.name, "ss", "-Htn", "state",
                            "established", f"( sport = :{dr.TLS_PORT} )"],
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
        return {tuple(line.split()[-2:]) for line in r.stdout.splitlines() if line.strip()}

    def snapshot(self):
        """Counts, and the connections that lasted over two seconds: the clients' latency
        probes (HTTPS, UDP being blocked here) come and go on their own."""
        m = self.metrics()
        tcp = self.connections()
        time.sleep(2)
        return {"streams": m["headscale_control_streams"],
                "derp": m["headscale_derp_clients"],
                "accepted": m["headscale_control_connections_accepted_total"],
                "tcp": tcp & self.connections()}

    def serial(self, sock=None):
        """The serial of the certificate a TLS connection got (a new one unless sock)."""
        s = sock or self.server.tls_socket()
        try:
            return int(s.getpeercert()["serialNumber"], 16)
        finally:
            if sock is None:
                s.close()

    def derp_map(self, node):
        r = node.cli("debug", "derp-map")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def resolves(self, node, name):
        r = node.cli("dns", "query", name)
        if r.returncode != 0:
            return []
        return [ln.split()[-1] for ln in r.stdout.splitlines() if "TypeA" in ln.split()]


@pytest.fixture(scope="module")
def world(db, tmp_path_factory):
    w = World(tmp_path_factory.mktemp(f"reload-{db.kind}"), db, versions=VERSIONS[:1] * 2)
    with contextlib.closing(w):
        try:
            w.open()
        except BaseException:
            print(w.logs(), w.server.log_tail(100) if w.server else "", sep="\n")
            raise
        yield w


@pytest.fixture(autouse=True)
def _world_logs(request):
    yield
    rep = getattr(request.node, "rep_call", None)
    w = request.node.funcargs.get("world") if hasattr(request.node, "funcargs") else None
    if rep is not None and rep.failed and w is not None:
        print(w.logs())


def policy_text(server):
    """The policy in force, as `headscale policy get` prints it."""
    return server.cli_ok("policy", "get").stdout


def assert_kept(before, after):
    """Nothing was dropped: as many streams and relay clients, no new control connection,
    and every TCP connection there was is still established."""
    assert after["streams"] == before["streams"] >= 2, (before, after)
    assert after["derp"] == before["derp"] >= 2, (before, after)
    assert after["accepted"] == before["accepted"], (before, after)
    lost = before["tcp"] - after["tcp"]
    assert not lost, f"connections closed by the reload: {lost}"


# ---------------------------------------------------------------- under connected clients

@needs_tailnet
def test_sighup_applies_everything_and_keeps_every_connection(world):
    s, n1, n2 = world.server, world.n1, world.n2
    held = world.server.tls_socket()  # a connection made before: it keeps its certificate
    try:
        assert world.serial(held) == SERIAL_OLD
        assert world.resolves(n1, RECORD["Name"]) == [RECORD["Value"]]
        before = world.snapshot()
        log_from = len(s.log_text())
        policy_text(s)
        assert " debug " not in s.log_text()[log_from:], "level info hides debug lines"

        sign_cert(world.tls_dir, SERIAL_NEW, world.cert + ".new")
        os.replace(world.cert + ".new", world.cert)
        replace_file(s.policy_path, json.dumps(NEW_POLICY))
        extra = os.path.join(s.tmp, "extra-derp.json")
        extra_region_map(extra)
        records2 = os.path.join(s.tmp, "records2.json")
        replace_file(records2, json.dumps([NEW_RECORD]))
        s.config["derp"]["paths"] = [extra]
        s.config["dns"]["extra_records_path"] = records2
        s.config["log"]["level"] = "debug"
        s.write_config()
        text = world.sighup("reload: log.level info -> debug", "reload: policy changed",
                            "reload: DERP map changed", "reload: TLS certificate changed",
                            "reload: extra records now from " + records2)
        assert "needs a restart" not in text, text
        assert "%X" % SERIAL_NEW in text and "%X" % SERIAL_OLD in text, text

        # in force
        held.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert held.recv(4096).startswith(b"HTTP/1.1 200"), "the old connection still serves"
        assert world.serial(held) == SERIAL_OLD
        assert world.serial() == SERIAL_NEW
        assert json.loads(policy_text(s)) == NEW_POLICY
        log_from = len(s.log_text())
        policy_text(s)
        tn.poll(lambda: " debug api: GET /api/v1/policy" in s.log_text()[log_from:], DEADLINE,
                "a debug line at log level debug")
        for n in (n1, n2):
            tn.poll(lambda: str(EXTRA_REGION) in world.derp_map(n)["Regions"], DEADLINE,
                    f"{n.name} to get region {EXTRA_REGION}")
            tn.poll(lambda: world.resolves(n, NEW_RECORD["Name"]) == [NEW_RECORD["Value"]],
                    DEADLINE, f"{n.name} to resolve the new record")

        # and nothing dropped: the same streams and relay connections carry traffic
        assert_kept(before, world.snapshot())
        world.ping_via_derp(n1, n2)
        assert_kept(before, world.snapshot())
    finally:
        held.close()


@needs_tailnet
def test_broken_files_keep_what_is_in_force(world):
    s, n1 = world.server, world.n1
    serial = world.serial()
    policy = policy_text(s)
    regions = sorted(world.derp_map(n1)["Regions"])
    records = s.config["dns"]["extra_records_path"]
    record = world.resolves(n1, NEW_RECORD["Name"]) or world.resolves(n1, RECORD["Name"])
    assert record, "some record resolves before"
    good = {p: open(p, "rb").read()
            for p in (world.cert, s.policy_path, records, *s.config["derp"]["paths"])}
    before = world.snapshot()
    try:
        replace_file(world.cert, b"-----BEGIN CERTIFICATE-----\nnot base64\n")
        replace_file(s.policy_path, '{"acls": [}')
        for p in s.config["derp"]["paths"]:
            replace_file(p, "regions: [")
        replace_file(records, "[{")
        text = world.sighup("reload: TLS certificate not reloaded", "reload: policy not reloaded",
                            "reload: DERP map not reloaded", "extra_records_path")
        for what in ("TLS certificate", "policy", "DERP map"):
            lines = [ln for ln in text.splitlines() if f"reload: {what} not reloaded" in ln]
            assert len(lines) == 1, (what, text)
            assert " stays" in lines[0], lines
        assert world.serial() == serial
        assert policy_text(s) == policy
        assert sorted(world.derp_map(n1)["Regions"]) == regions
        assert (world.resolves(n1, NEW_RECORD["Name"])
                or world.resolves(n1, RECORD["Name"])) == record
        assert_kept(before, world.snapshot())
    finally:
        for p, data in good.items():
            replace_file(p, data)
        world.sighup("reload: TLS certificate unchanged", "reload: policy unchanged")


# ---------------------------------------------------------------- without clients

def test_keys_that_need_a_restart_are_named_and_left(server_factory):
    s = server_factory(overrides={"log": {"level": "info"}})
    port, old_v4 = s.port, s.config["prefixes"]["v4"]
    s.config["listen_addr"] = f"127.0.0.1:{helpers.free_port()}"
    s.config["prefixes"]["v4"] = "100.96.0.0/12"
    s.config["log"]["level"] = "warn"
    s.write_config()
    start = len(s.log_text())
    s.proc.send_signal(signal.SIGHUP)
    line = tn.poll(lambda: [ln for ln in s.log_text()[start:].splitlines()
                            if "needs a restart" in ln], DEADLINE, "the restart line")
    assert "listen_addr" in line[0] and "prefixes.v4" in line[0], line
    assert "log.level" not in line[0], "log.level is applied, not left for a restart"
    assert s.api_ok("GET", "/api/v1/user") is not None, f"still on port {port}"
    assert old_v4 != s.config["prefixes"]["v4"]
    # log.level warn is in force: an info line is no longer written
    start = len(s.log_text())
    s.proc.send_signal(signal.SIGHUP)
    tn.poll(lambda: "needs a restart" in s.log_text()[start:], DEADLINE, "the second reload")
    assert "reload: SIGHUP" not in s.log_text()[start:], "info lines hidden at level warn"


def test_config_that_does_not_parse_changes_nothing(server_factory):
    s = server_factory(overrides={"log": {"level": "info"}})
    good = open(s.cfg_path).read()
    with open(s.cfg_path, "a") as f:
        f.write("log:\n  level: [\n")
    start = len(s.log_text())
    s.proc.send_signal(signal.SIGHUP)
    line = tn.poll(lambda: [ln for ln in s.log_text()[start:].splitlines()
                            if "reload: nothing reloaded" in ln], DEADLINE, "the refusal")
    assert f"{s.cfg_path}:" in line[0], line
    assert s.running and s.api_ok("GET", "/api/v1/user") is not None
    with open(s.cfg_path, "w") as f:
        f.write(good.replace("level: info", "level: banana"))
    start = len(s.log_text())
    s.proc.send_signal(signal.SIGHUP)
    line = tn.poll(lambda: [ln for ln in s.log_text()[start:].splitlines()
                            if "reload: nothing reloaded" in ln], DEADLINE, "the refusal")
    assert "log.level" in line[0], line


def _json_lines(text):
    return [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]


def _shape(rec):
    """What headscale's zerolog fixes in a line: level first, time (Unix seconds) and message
    last."""
    keys = list(rec)
    return (keys[0], tuple(keys[-2:]), type(rec["time"]).__name__)


def test_json_lines_shaped_as_headscale(server_factory, tmp_path):
    s = server_factory(overrides={"log": {"level": "info", "format": "text"}})
    s.config["log"] = {"level": "debug", "format": "json"}
    s.write_config()
    start = len(s.log_text())
    s.proc.send_signal(signal.SIGHUP)
    tn.poll(lambda: _json_lines(s.log_text()[start:]), DEADLINE, "JSON lines after SIGHUP")
    s.api_ok("GET", "/api/v1/user")
    recs = tn.poll(lambda: [r for r in _json_lines(s.log_text()[start:])
                            if r["level"] == "debug"], DEADLINE, "a debug line in JSON")
    ours = _json_lines(s.log_text()[start:])
    assert all(_shape(r) == ("level", ("time", "message"), "int") for r in ours), ours
    assert abs(recs[0]["time"] - time.time()) < 60, recs[0]
    if not os.access(REF_BIN, os.X_OK):
        pytest.skip(f"headscale v0.29.3 not built at {REF_BIN} (bench/run.sh)")
    # headscale itself, with the same setting, until it stops (no DERP map: it refuses to run)
    port = helpers.free_port()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(json.dumps({
        "server_url": f"http://127.0.0.1:{port}", "listen_addr": f"127.0.0.1:{port}",
        "metrics_listen_addr": f"127.0.0.1:{helpers.free_port()}",
        "grpc_listen_addr": f"127.0.0.1:{helpers.free_port()}",
        "noise": {"private_key_path": str(tmp_path / "noise.key")},
        "prefixes": {"v4": "100.64.0.0/10", "v6": "fd7a:115c:a1e0::/48"},
        "database": {"type": "sqlite", "sqlite": {"path": str(tmp_path / "db.sqlite")}},
        "derp": {"server": {"enabled": False}, "urls": [], "paths": []},
        "dns": {"magic_dns": False, "override_local_dns": False},
        "unix_socket": str(tmp_path / "hs.sock"), "disable_check_updates": True,
        "log": {"level": "debug", "format": "json"}}))
    r = subprocess.run([REF_BIN, "-c", str(cfg), "serve"], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL, cwd=str(tmp_path))
    theirs = _json_lines(r.stdout + r.stderr)
    assert theirs, r.stdout + r.stderr
    assert {_shape(t) for t in theirs} == {("level", ("time", "message"), "int")}, theirs
    assert {t["level"] for t in theirs} <= {"trace", "debug", "info", "warn", "error"}
    assert {r["level"] for r in ours} <= {"trace", "debug", "info", "warn", "error"}


def test_secret_scan_finds_a_secret_in_a_log(server_factory):
    """The session-wide check of conftest.py sees what the harness collected: the pre-auth key
    made here, the server's Noise private key, any privkey:<hex>; key prefixes and public keys
    are not secrets. (A copy of its scanner, so that this test's planted lines do not fail the
    session.)"""
    scan = conftest.SecretScan()
    s = server_factory()
    uid = s.create_user()["id"]
    scan.add_from_text(s.cli_ok("preauthkeys", "-u", uid, "create", "-e", "1h").stdout)
    scan.server_secrets(s)
    key = s.cli_json("preauthkeys", "-u", uid, "list")[0]
    secret = helpers.AUTH_KEY_RE.search(
        s.cli_ok("preauthkeys", "-u", uid, "create", "-e", "1h").stdout).group(0)
    noise = open(s.config["noise"]["private_key_path"]).read().strip()
    log = os.path.join(s.tmp, "planted.log")
    with open(log, "w") as f:
        f.write(f"{s.log_text()}"
                f"a key prefix is fine: {key['key'][:23]}\n"
                f"a public key is fine: {noise_client.key_text(bytes(32), 'nodekey:')}\n")
    scan.scan(log)
    assert scan.finds == [], "the server's own log and public values pass"
    scan.add_from_text(secret)
    with open(log, "a") as f:
        f.write(f"key {secret.upper()}\n{noise.split(':', 1)[1]}\nprivkey:{'ab' * 32}\n")
    scan.scan(log)
    assert len(scan.finds) == 3, scan.finds
    assert secret[-64:] not in "".join(scan.finds), "the report does not repeat the secret"
