"""ACME (tls_letsencrypt_*, acme_url, acme_email) against pebble, Let's Encrypt's test CA.

Everything runs inside one private network namespace (tailnet.Namespace): pebble's directory
on https://127.0.0.1:14000/dir (its own TLS trusted by the server through SSL_CERT_FILE, as
headscale would), pebble-challtestsrv as the DNS server pebble asks (every name is 127.0.0.1),
and our server with tls_letsencrypt_hostname "localhost" on :8443 (TLS-ALPN-01 is validated
there) and tls_letsencrypt_listen :5002 (pebble's HTTP-01 port). The certificate is checked by
verifying handshakes against pebble's root (fetched from its management port) for the name
localhost, which the test process and tailscaled also resolve to 127.0.0.1. Pebble is built by
tests/lib/install-pebble.sh into .cache/pebble/<version>/; PEBBLE_VA_NOSLEEP=1, every order
does its challenge (PEBBLE_AUTHZREUSE=0), and pebble still refuses some nonces (its default),
which the client must ride out.

The end-to-end test (issuance over HTTP-01, a real tailscaled logging in over the issued
certificate and relaying through the embedded DERP on it) runs on every backend; the other
tests are about the certificate alone and run on SQLite."""

import http.client
import json
import os
import ssl
import stat
import urllib.request

import pytest

import helpers
import tailnet as tn
from test_derp_relay import TlsServer

PEBBLE_VERSION = os.environ.get("HS_PEBBLE_VERSION", "v2.10.3")
PEBBLE_DIR = os.path.join(tn.REPO, ".cache", "pebble", PEBBLE_VERSION)
ACME_HOST = "localhost"
TLS_PORT = 8443
HTTP01_PORT = 5002
ACME_PORT = 14000
PEBBLE_MGMT_PORT = 15000
DNS_PORT = 8053
DNS_MGMT_PORT = 8055
DIRECTORY = f"https://127.0.0.1:{ACME_PORT}/dir"
ISSUE_TIMEOUT = 60

VERSIONS = [v for v in tn.versions() if tn.have_version(v)]

pytestmark = pytest.mark.skipif(
    not os.access(os.path.join(PEBBLE_DIR, "pebble"), os.X_OK) or os.geteuid() != 0,
    reason="needs root and pebble in .cache/pebble (tests/lib/install-pebble.sh)")


class Pebble:
    """pebble and its DNS server in the namespace. validity: certificate lifetime in seconds."""

    def __init__(self, ns, workdir, validity=90 * 86400):
        self.ns = ns
        self.dir = workdir
        self.minica = os.path.join(PEBBLE_DIR, "pebble.minica.pem")
        conf = {"pebble": {
            "listenAddress": f"127.0.0.1:{ACME_PORT}",
            "managementListenAddress": f"127.0.0.1:{PEBBLE_MGMT_PORT}",
            "certificate": os.path.join(PEBBLE_DIR, "localhost.pem"),
            "privateKey": os.path.join(PEBBLE_DIR, "localhost.key"),
            "httpPort": HTTP01_PORT, "tlsPort": TLS_PORT, "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
            "retryAfter": {"authz": 1, "order": 1}, "keyAlgorithm": "ecdsa",
            "profiles": {"default": {"description": "test", "validityPeriod": validity}}}}
        self.conf_path = os.path.join(workdir, "pebble.json")
        with open(self.conf_path, "w") as f:
            json.dump(conf, f)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PEBBLE_VA_NOSLEEP": "1",
               "PEBBLE_AUTHZREUSE": "0"}
        self.dns = tn.Proc(ns, "challtestsrv", [
            os.path.join(PEBBLE_DIR, "pebble-challtestsrv"), "-dnsserver",
            f"127.0.0.1:{DNS_PORT}", "-http01", "", "-https01", "", "-doh", "", "-tlsalpn01", "",
            "-management", f"127.0.0.1:{DNS_MGMT_PORT}", "-defaultIPv4", "127.0.0.1",
            "-defaultIPv6", ""], os.path.join(workdir, "challtestsrv.log"), env=env, cwd=workdir)
        self.proc = tn.Proc(ns, "pebble", [
            os.path.join(PEBBLE_DIR, "pebble"), "-config", self.conf_path, "-dnsserver",
            f"127.0.0.1:{DNS_PORT}"], os.path.join(workdir, "pebble.log"), env=env,
            cwd=workdir)
        self.roots_path = os.path.join(workdir, "pebble-roots.pem")

    def _get(self, port, path):
        ctx = ssl.create_default_context(cafile=self.minica)

        def fetch():
            with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", context=ctx,
                                        timeout=5) as r:
                return r.read()
        return self.ns.call(fetch)

    def start(self):
        self.dns.start()
        self.proc.start()
        tn.poll(lambda: b"newOrder" in self._get(ACME_PORT, "/dir"), 30,
                "pebble's directory")
        # The roots of the certificates it issues: new ones at every start of pebble.
        with open(self.roots_path, "wb") as f:
            f.write(self._get(PEBBLE_MGMT_PORT, "/roots/0"))
        return self

    def stop(self):
        self.proc.stop()
        self.dns.stop()

    def log(self):
        return tn.tail(self.proc.log_path, 100000)

    def orders(self):
        return self.log().count("Added order")


class AcmeServer(TlsServer):
    """TlsServer (embedded DERP on :8443) with its certificate from pebble instead of files."""

    def __init__(self, ns, db, pebble, challenge="HTTP-01"):
        super().__init__(ns, db, "", "", pebble.minica, TLS_PORT)
        if os.path.exists(pebble.roots_path):
            self.trust(pebble)
        self.env["SSL_CERT_FILE"] = pebble.minica
        self.url = f"https://{ACME_HOST}:{TLS_PORT}"
        self.cache_dir = os.path.join(self.tmp, "acme")
        cfg = self.config
        cfg["server_url"] = self.url
        del cfg["tls_cert_path"], cfg["tls_key_path"]
        cfg.update({"tls_letsencrypt_hostname": ACME_HOST,
                    "tls_letsencrypt_challenge_type": challenge,
                    "tls_letsencrypt_listen": f"0.0.0.0:{HTTP01_PORT}",
                    "tls_letsencrypt_cache_dir": self.cache_dir,
                    "acme_url": DIRECTORY, "acme_email": "ops@example.org"})
        self.write_config()

    def trust(self, pebble):
        """Verify against the roots of this pebble run (a restarted pebble has new ones)."""
        self.ctx = ssl.create_default_context(cafile=pebble.roots_path)

    def tls_socket(self, host=ACME_HOST, timeout=10.0):
        return super().tls_socket(host, timeout)

    def https(self, method, path, headers=None, host=ACME_HOST, timeout=10.0):
        return super().https(method, path, headers, host, timeout)

    def wait_healthy(self, url=None, deadline=ISSUE_TIMEOUT):
        super().wait_healthy(url, deadline)

    def serial(self):
        """The serial number of the certificate a new, verified handshake gets."""
        s = self.tls_socket()
        try:
            return s.getpeercert()["serialNumber"]
        finally:
            s.close()


class World:
    """What tailnet.Node needs: a namespace, a directory, the server and the nodes' env."""

    def __init__(self, workdir, ns, server, pebble):
        self.dir = workdir
        self.ns = ns
        self.server = server
        self.node_env = {"SSL_CERT_FILE": pebble.roots_path}
        self.bg = []


@pytest.fixture
def acme_env(tmp_path):
    """→ make(challenge, validity, start_pebble): a namespace, pebble, and an AcmeServer."""
    made = {}

    def make(db, challenge="HTTP-01", validity=90 * 86400, start_pebble=True):
        ns = made["ns"] = tn.Namespace(str(tmp_path)).__enter__()
        pebble = made["pebble"] = Pebble(ns, str(tmp_path), validity)
        if start_pebble:
            pebble.start()
        server = made["server"] = AcmeServer(ns, db, pebble, challenge)
        return ns, pebble, server

    yield make
    try:
        if "server" in made:
            try:
                made["server"].stop(check=True)
            finally:
                made["server"].cleanup()
    finally:
        if "ns" in made:
            made["ns"].close()


def sqlite_only(db):
    if db.kind != "sqlite":
        pytest.skip("the certificate alone: SQLite is enough")


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.skipif(not VERSIONS, reason="needs Tailscale clients in .cache/tailscale")
def test_http01_issues_and_a_client_logs_in(db, acme_env, tmp_path):
    ns, pebble, server = acme_env(db)
    server.start()
    assert pebble.orders() == 1
    assert (f"Attempting to validate w/ HTTP: http://{ACME_HOST}:{HTTP01_PORT}"
            "/.well-known/acme-challenge/") in pebble.log()
    # The cache: autocert's layout, private.
    assert mode(server.cache_dir) == 0o700
    for name in ("acme_account+key", ACME_HOST):
        assert mode(os.path.join(server.cache_dir, name)) == 0o600, name
    with open(os.path.join(server.cache_dir, ACME_HOST)) as f:
        text = f.read()
    assert "PRIVATE KEY-----" in text and text.count("BEGIN CERTIFICATE") >= 2
    # The HTTP-01 listener sends everything else to server_url, as headscale does.
    st, h, _ = ns.http("GET", "127.0.0.1", HTTP01_PORT, "/key?v=88")
    assert st == 302 and h["location"] == server.url + "/key?v=88"
    st, _, _ = ns.http("GET", "127.0.0.1", HTTP01_PORT, "/.well-known/acme-challenge/nope")
    assert st == 404
    # A real client trusts the issued certificate and logs in over it.
    world = World(str(tmp_path), ns, server, pebble)
    uid = server.create_user_cli("acmeuser")
    node = tn.Node(world, "acme1", VERSIONS[-1])
    node.env.pop("TS_DEBUG_USE_DERP_HTTP", None)  # DERP over the issued certificate too
    node.start()
    try:
        node.up(server.preauth_key(uid))
        node.wait_running()
        assert server.node_by_name("acme1") is not None
    finally:
        node.stop()


def test_tls_alpn01_issues(db, acme_env):
    sqlite_only(db)
    ns, pebble, server = acme_env(db, challenge="TLS-ALPN-01")
    server.start()
    assert pebble.orders() == 1
    assert "set VALID by completed challenge" in pebble.log()
    assert "Attempting to validate w/ HTTP" not in pebble.log()
    assert f"acme: answering the tls-alpn-01 challenge for {ACME_HOST}" in server.log_text()
    # No HTTP-01 listener with TLS-ALPN-01 (headscale opens none either).
    with pytest.raises(ConnectionRefusedError):
        ns.connect("127.0.0.1", HTTP01_PORT, timeout=2).close()
    # With no challenge pending, acme-tls/1 is not agreed to: the handshake goes on with the
    # real certificate and no protocol.
    ctx = ssl.create_default_context(cafile=pebble.roots_path)
    ctx.set_alpn_protocols(["acme-tls/1"])
    s = ctx.wrap_socket(ns.connect("127.0.0.1", TLS_PORT), server_hostname=ACME_HOST)
    try:
        assert s.selected_alpn_protocol() is None
    finally:
        s.close()


def test_restart_reuses_the_cached_certificate(db, acme_env):
    sqlite_only(db)
    ns, pebble, server = acme_env(db)
    server.start()
    first = server.serial()
    assert pebble.orders() == 1
    server.stop()
    server.start()
    assert server.serial() == first
    assert pebble.orders() == 1, "a new order although the cached certificate is good"
    assert "certificate for localhost from " + server.cache_dir in server.log_text()


def test_renewal_without_restart(db, acme_env):
    sqlite_only(db)
    # 30 s certificates: renewal is due after two thirds, 20 s.
    ns, pebble, server = acme_env(db, validity=30)
    server.start()
    pid = server.proc.pid
    first = server.serial()

    class Held(http.client.HTTPSConnection):
        def connect(self):
            self.sock = server.tls_socket()

    held = Held(ACME_HOST, TLS_PORT, context=server.ctx)  # a connection from before renewal
    try:
        assert get_health(held) == 200
        assert held.sock.getpeercert()["serialNumber"] == first
        second = tn.poll(lambda: (lambda s: s if s != first else None)(server.serial()), 45,
                         "a handshake with the renewed certificate", interval=0.5)
        assert second != first
        assert server.proc.pid == pid and server.running
        assert pebble.orders() >= 2
        # The connection from before keeps its certificate and keeps working.
        assert get_health(held) == 200
        assert held.sock.getpeercert()["serialNumber"] == first
    finally:
        held.close()


def get_health(conn):
    conn.request("GET", "/health")
    r = conn.getresponse()
    r.read()
    return r.status


def test_unreachable_ca_is_retried(db, acme_env):
    sqlite_only(db)
    ns, pebble, server = acme_env(db, start_pebble=False)
    server.proc = server.spawn()
    want = f"acme: no certificate for {ACME_HOST} from {DIRECTORY}: "
    tn.poll(lambda: server.log_text().count(want) >= 2, 30, "two failed attempts logged")
    assert "acme: trying again in 2 s" in server.log_text()
    assert "acme: trying again in 4 s" in server.log_text()
    assert server.running
    # Handshakes fail while there is no certificate; the CA coming back ends that, no restart.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        ssl.create_default_context().wrap_socket(
            ns.connect("127.0.0.1", TLS_PORT), server_hostname=ACME_HOST).close()
    pebble.start()
    server.trust(pebble)
    server.wait_healthy()
    assert "acme: new certificate for localhost" in server.log_text()
    assert pebble.orders() == 1
