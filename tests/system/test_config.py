"""Configuration: configtest on good and bad configs, serve refusing a bad config quickly and
naming the key, a 0.22.3-style config, and HEADSCALE_* environment overrides."""

import json
import os
import socket
import time

import pytest

from helpers import DELETE, JsonServer, free_port, unique

# Missing prefixes / noise.private_key_path / database.sqlite.path are not listed: headscale
# refuses them, this product deliberately falls back to defaults (core/config/config_keys.c).
BAD_CONFIGS = [
    # (id, overrides, words of which at least one must appear in the error output)
    ("pg_port_not_a_number",
     {"database": {"type": "postgres", "postgres": {"host": "127.0.0.1", "port": "abc",
                                                    "name": "x", "user": "postgres"}}},
     ["database.postgres.port"]),
    ("server_url_without_scheme", {"server_url": "127.0.0.1:8080"}, ["server_url"]),
    ("unknown_database_type", {"database": {"type": "mysql"}}, ["database.type"]),
    ("bad_v4_prefix", {"prefixes": {"v4": "100.64.0.0/99"}}, ["prefixes.v4"]),
    ("magic_dns_without_base_domain", {"dns": {"base_domain": DELETE}}, ["base_domain"]),
    ("server_url_inside_base_domain", {"server_url": "http://hs.example.com:8080"},
     ["server_url", "base_domain"]),
    ("bad_sqlite_wal_bool", {"database": {"sqlite": {"write_ahead_log": "maybe"}}},
     ["database.sqlite.write_ahead_log"]),
    ("bad_policy_mode", {"policy": {"mode": "sometimes"}}, ["policy.mode"]),
]


def _bad_server(server_factory, overrides):
    s = server_factory(start=False)
    from helpers import deep_merge
    deep_merge(s.config, overrides)
    s.write_config()
    return s


def test_configtest_ok(server_factory):
    s = server_factory(start=False)
    r = s.cli("configtest")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "Error" not in r.stderr


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_configtest_bad_value_names_key(server_factory, case):
    _, overrides, words = case
    s = _bad_server(server_factory, overrides)
    r = s.cli("configtest", timeout=30)
    assert r.returncode != 0, f"configtest accepted a bad config:\n{r.stdout}\n{r.stderr}"
    out = r.stderr + r.stdout
    assert any(w in out for w in words), f"error does not name {words}:\n{out}"


@pytest.mark.parametrize("case", BAD_CONFIGS[:4], ids=[c[0] for c in BAD_CONFIGS[:4]])
def test_serve_bad_config_exits_quickly_and_names_key(server_factory, case):
    _, overrides, words = case
    s = _bad_server(server_factory, overrides)
    t0 = time.monotonic()
    p = s.spawn()
    try:
        rc = p.wait(timeout=20)
    except Exception:
        p.kill()
        p.wait(timeout=10)
        raise AssertionError("serve with a bad config kept running")
    assert rc != 0
    assert time.monotonic() - t0 < 10
    log = s.log_text()
    assert any(w in log for w in words), f"serve error does not name {words}:\n{log}"
    assert not os.path.exists(s.socket_path) or not _answers(s.socket_path)


def _answers(path):
    try:
        with socket.socket(socket.AF_UNIX) as c:
            c.settimeout(2)
            c.connect(path)
        return True
    except OSError:
        return False


def test_configtest_yaml_syntax_error(server_factory):
    s = server_factory(start=False)
    with open(s.cfg_path, "a") as f:
        f.write("\nlisten_addr: [unclosed\n")
    r = s.cli("configtest")
    assert r.returncode != 0
    assert (r.stderr + r.stdout).strip()


def test_configtest_duplicate_key_is_error(server_factory):
    s = server_factory(start=False)
    with open(s.cfg_path, "a") as f:
        f.write(f"\nserver_url: http://127.0.0.1:{s.port}\n")
    r = s.cli("configtest")
    assert r.returncode != 0, r.stderr
    assert "server_url" in r.stderr + r.stdout


def test_unknown_key_is_not_fatal(server_factory):
    s = server_factory(start=False)
    s.config["some_future_key"] = {"x": 1}
    s.write_config()
    r = s.cli("configtest")
    assert r.returncode == 0, r.stderr


LEGACY_SQLITE = """\
---
server_url: http://127.0.0.1:{port}
listen_addr: 127.0.0.1:{port}
metrics_listen_addr: 127.0.0.1:{mport}
grpc_listen_addr: 127.0.0.1:{gport}
grpc_allow_insecure: false
private_key_path: {tmp}/private.key
noise:
  private_key_path: {tmp}/noise.key
ip_prefixes:
  - fd7a:115c:a1e0::/48
  - 100.64.0.0/10
derp:
  server:
    enabled: false
  urls: []
  paths: []
  auto_update_enabled: false
  update_frequency: 24h
disable_check_updates: true
ephemeral_node_inactivity_timeout: 30m
node_update_check_interval: 10s
{db}
acl_policy_path: {tmp}/acl.hujson
dns_config:
  override_local_dns: true
  nameservers:
    - 1.1.1.1
  domains: []
  magic_dns: true
  base_domain: example.com
unix_socket: {tmp}/headscale.sock
unix_socket_permission: "0770"
log:
  format: text
  level: debug
logtail:
  enabled: false
randomize_client_port: false
"""

LEGACY_DB = {
    "sqlite": "db_type: sqlite3\ndb_path: {tmp}/db.sqlite",
    "postgres": ("db_type: postgres\ndb_host: {pghost}\ndb_port: {pgport}\ndb_name: {pgdb}\n"
                 "db_user: postgres\ndb_pass: \"\"\ndb_ssl: false"),
}

LEGACY_POLICY = '{\n  // 0.22 acl file\n  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],\n}\n'


def _legacy(server_factory, db, start=True):
    s = server_factory(start=False,
                       raw_config=LEGACY_SQLITE.replace("{db}", LEGACY_DB[db.kind]))
    with open(os.path.join(s.tmp, "acl.hujson"), "w") as f:
        f.write(LEGACY_POLICY)
    if start:
        s.start()
        s.ensure_api_key()
    return s


def test_legacy_022_config_configtest(server_factory, db):
    s = _legacy(server_factory, db, start=False)
    r = s.cli("configtest")
    assert r.returncode == 0, (r.stdout, r.stderr)


def test_legacy_022_config_serves(server_factory, db):
    s = _legacy(server_factory, db)
    name = unique()
    s.cli_ok("users", "create", name)
    assert name in s.user_names()
    # acl_policy_path is the policy file
    assert s.api_ok("GET", "/api/v1/policy")["policy"] == LEGACY_POLICY
    # the gRPC address is ignored (with a warning), nothing listens there
    assert "grpc_listen_addr" in s.log_text()
    gport = int(s.config["grpc_listen_addr"].rsplit(":", 1)[1])
    with socket.socket() as c:
        c.settimeout(2)
        assert c.connect_ex(("127.0.0.1", gport)) != 0, "something listens on grpc_listen_addr"
    if db.kind == "sqlite":
        assert os.path.exists(os.path.join(s.tmp, "db.sqlite"))


def test_env_overrides_listen_addr(server_factory):
    s = server_factory(start=False)
    cfg_port = s.port
    s.port = free_port()
    s.env["HEADSCALE_LISTEN_ADDR"] = f"127.0.0.1:{s.port}"
    s.start()
    s.ensure_api_key()
    assert s.api("GET", "/api/v1/user")[0] == 200
    with socket.socket() as c:
        c.settimeout(2)
        assert c.connect_ex(("127.0.0.1", cfg_port)) != 0, "still listening on the file's port"


def test_env_overrides_sqlite_path(server_factory, db):
    if db.kind != "sqlite":
        pytest.skip("sqlite only")
    s = server_factory(start=False)
    other = os.path.join(s.tmp, "other.sqlite")
    s.env["HEADSCALE_DATABASE_SQLITE_PATH"] = other
    s.start()
    s.ensure_api_key()
    s.create_user()
    assert os.path.exists(other)
    assert not os.path.exists(s.sqlite_path), "the file's sqlite path was used anyway"


def test_env_override_bad_value_names_key(server_factory):
    s = server_factory(start=False)
    r = s.cli("configtest", env={"HEADSCALE_SERVER_URL": "no-scheme.example.org"})
    assert r.returncode != 0
    assert "server_url" in (r.stderr + r.stdout).lower()


def test_headscale_config_env_selects_file(server_factory):
    s = server_factory()
    r = s.cli("users", "list", config=False, env={"HEADSCALE_CONFIG": s.cfg_path})
    assert r.returncode == 0, r.stderr


def test_configtest_unreachable_postgres_fails_fast(server_factory):
    s = _bad_server(server_factory, {"database": {
        "type": "postgres", "sqlite": DELETE,
        "postgres": {"host": "127.0.0.1", "port": free_port(), "name": "nope",
                     "user": "postgres", "pass": ""}}})
    t0 = time.monotonic()
    r = s.cli("configtest", timeout=60)
    assert r.returncode != 0, r.stdout + r.stderr
    assert time.monotonic() - t0 < 30
    out = (r.stderr + r.stdout).lower()
    assert "postgres" in out or "database" in out, out


def test_serve_unknown_postgres_database_fails(server_factory, db):
    if db.kind != "postgres":
        pytest.skip("postgres only")
    s = _bad_server(server_factory, {"database": {"postgres": {"name": "hs_does_not_exist"}}})
    p = s.spawn()
    try:
        rc = p.wait(timeout=30)
    except Exception:
        p.kill()
        p.wait(timeout=10)
        raise AssertionError("serve kept running without its database")
    assert rc != 0
    assert "hs_does_not_exist" in s.log_text() or "database" in s.log_text().lower()


def test_serve_sqlite_in_missing_directory_creates_it(server_factory, db):
    if db.kind != "sqlite":
        pytest.skip("sqlite only")
    s = server_factory(start=False)
    path = os.path.join(s.tmp, "new", "dir", "db.sqlite")
    s.config["database"]["sqlite"]["path"] = path
    s.write_config()
    s.start()
    s.ensure_api_key()
    s.create_user()
    assert os.path.exists(path)


def test_serve_unusable_sqlite_path_fails_and_names_path(server_factory, db):
    if db.kind != "sqlite":
        pytest.skip("sqlite only")
    s = server_factory(start=False)
    bad = os.path.join(s.cfg_path, "db.sqlite")  # parent is a regular file
    s.config["database"]["sqlite"]["path"] = bad
    s.write_config()
    p = s.spawn()
    try:
        rc = p.wait(timeout=20)
    except Exception:
        p.kill()
        p.wait(timeout=10)
        raise AssertionError("serve kept running with an unusable sqlite path")
    assert rc != 0
    assert bad in s.log_text(), s.log_text()


def test_noise_key_generated_private_and_kept(server_factory):
    s = server_factory(api_key=False)
    path = s.config["noise"]["private_key_path"]
    st = os.stat(path)
    assert st.st_mode & 0o077 == 0, oct(st.st_mode)
    with open(path) as f:
        first = f.read()
    assert first.strip().startswith("privkey:"), first[:20]
    s.stop()
    s.start()
    with open(path) as f:
        assert f.read() == first, "noise key changed across a restart"


# ---------------------------------------------------------------- keys that do nothing here

INERT = {"grpc_listen_addr": "127.0.0.1:50443",
         "oidc": {"enabled": True}, "tuning": {"batcher_workers": 3},
         "preauth_keys": {"revoked_retention": "1h"}}
INERT_KEYS = ["grpc_listen_addr", "oidc.enabled", "tuning.batcher_workers",
              "preauth_keys.revoked_retention"]


def _inert_server(server_factory):
    from helpers import deep_merge
    s = server_factory(start=False)
    deep_merge(s.config, INERT)
    s.config["some_future_key"] = {"x": 1}
    s.write_config()
    return s


def _count(text, key, words):
    return sum(1 for line in text.splitlines() if f"{key}: {words}" in line)


def test_inert_keys_warn_once_in_configtest_and_at_start(server_factory):
    s = _inert_server(server_factory)
    r = s.cli("configtest", env={"HEADSCALE_DNS_BASEDOMAIN": "typo.example"})
    assert r.returncode == 0, r.stderr
    for key in INERT_KEYS:
        assert _count(r.stderr, key, "has no effect") == 1, (key, r.stderr)
    assert _count(r.stderr, "some_future_key", "unknown key") == 1, r.stderr
    assert _count(r.stderr, "HEADSCALE_DNS_BASEDOMAIN", "unknown environment variable") == 1
    s.start()
    log = s.log_text()
    for key in INERT_KEYS:
        assert _count(log, key, "has no effect") == 1, (key, s.log_tail())
    assert _count(log, "some_future_key", "unknown key") == 1, s.log_tail()
    # A CLI command is not the place to repeat them.
    r = s.cli("users", "list")
    assert r.returncode == 0 and "has no effect" not in r.stderr, r.stderr


def test_log_level_and_format(server_factory):
    s = _inert_server(server_factory)
    s.config["log"] = {"level": "warn", "format": "json"}
    s.write_config()
    s.start()
    recs = [json.loads(line) for line in s.log_text().splitlines() if line.startswith("{")]
    assert any("has no effect" in r["message"] for r in recs), s.log_tail()
    assert {r["level"] for r in recs} <= {"warn", "error"}, s.log_tail()
    s.stop()
    before = len(s.log_text())
    s.config["log"] = {"level": "debug", "format": "text"}
    s.write_config()
    s.start()
    text = s.log_text()[before:]
    assert " debug " in text and not any(line.startswith("{") for line in text.splitlines()), \
        s.log_tail()


# ---------------------------------------------------------------- tuning keys at work

def _raw_message(c, timeout):
    """The next message on c's map stream, keep-alives included, or None by timeout."""
    import h2.events
    import struct
    end = time.monotonic() + timeout
    while True:
        if len(c.buf) >= 4:
            (n,) = struct.unpack("<I", c.buf[:4])
            if len(c.buf) >= 4 + n:
                msg = json.loads(c.buf[4:4 + n])
                c.buf = c.buf[4 + n:]
                return msg
        left = end - time.monotonic()
        if left <= 0:
            return None
        try:
            data = c.h2.n.read(left)
        except (TimeoutError, socket.timeout):
            return None
        for ev in c.h2.conn.receive_data(data):
            if isinstance(ev, h2.events.DataReceived) and ev.stream_id == c.sid:
                c.buf += ev.data


def _streaming_client(s, key, host):
    import noise_client
    c = noise_client.ControlClient(s.port)
    c.hostinfo = {"Hostname": host, "OS": "linux"}
    st, _, resp = c.register(auth_key=key)
    assert st == 200 and resp.get("MachineAuthorized"), resp
    c.open_stream(require_peers=False)
    return c


def test_tuning_keepalive_and_batch_delay(server_factory):
    """tuning.keepalive_interval paces the keep-alives, tuning.batch_change_delay holds a
    change back (defaults: 50s and 20ms, so neither shows below without its key)."""
    s = server_factory(start=False)
    s.config["tuning"] = {"keepalive_interval": "1s", "batch_change_delay": "2s"}
    s.write_config()
    s.start()
    s.cli_ok("users", "create", "alice")
    uid = [u for u in s.cli_json("users", "list") if u["name"] == "alice"][0]["id"]
    key = s.cli_json("preauthkeys", "-u", str(uid), "create", "--reusable", "-e", "1h")["key"]
    a = _streaming_client(s, key, "a")
    b = _streaming_client(s, key, "b")
    try:
        t0, alive = time.monotonic(), 0
        while alive < 2 and time.monotonic() - t0 < 6:
            alive += _raw_message(a, 6 - (time.monotonic() - t0)) == {"KeepAlive": True}
        assert alive == 2 and time.monotonic() - t0 < 4, "no keep-alive every ~1s"

        bid = [n["id"] for n in s.cli_json("nodes", "list") if n["given_name"] == "b"][0]
        t0 = time.monotonic()
        s.cli_ok("nodes", "rename", "-i", str(bid), "b-renamed")
        seen = None
        while seen is None and time.monotonic() - t0 < 10:
            m = a.next_message(10 - (time.monotonic() - t0))
            peers = (m or {}).get("PeersChanged") or (m or {}).get("Peers") or []
            if any(p.get("Name", "").startswith("b-renamed") for p in peers):
                seen = time.monotonic() - t0
        assert seen is not None, "the rename never reached a\n" + s.log_tail()
        assert 1.8 <= seen < 6, f"the rename reached a after {seen:.2f}s, not after ~2s"
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------- cli.* keys at work

def _self_signed(d):
    """A self-signed certificate for 127.0.0.1 → (cert, key) paths."""
    import subprocess
    cert, key = os.path.join(d, "cli-test.pem"), os.path.join(d, "cli-test.key")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    return cert, key


class _FakeApi:
    """An HTTPS server that answers every GET with an empty user list, or (silent=True) a
    TCP listener that accepts and never answers."""

    def __init__(self, tmp, silent=False):
        import ssl
        self.port = free_port()
        if silent:
            self.sock = socket.create_server(("127.0.0.1", self.port))
            self.server = None
            return
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*_self_signed(tmp))
        self.server = JsonServer(self.port, b'{"users": []}', tls=ctx)

    def close(self):
        if self.server:
            self.server.close()
        else:
            self.sock.close()


def test_cli_insecure_and_timeout(server_factory):
    s = server_factory(start=False)
    api = _FakeApi(s.tmp)
    env = {"HEADSCALE_CLI_ADDRESS": f"https://127.0.0.1:{api.port}",
           "HEADSCALE_CLI_API_KEY": "hskey-api-000000000000-" + "0" * 64}
    try:
        r = s.cli("users", "list", env=env)
        assert r.returncode != 0, "a self-signed certificate was trusted without cli.insecure"
        r = s.cli("-o", "json", "users", "list", env=dict(env, HEADSCALE_CLI_INSECURE="true"))
        assert r.returncode == 0 and json.loads(r.stdout) is None, (r.stdout, r.stderr)  # no users
    finally:
        api.close()

    silent = _FakeApi(s.tmp, silent=True)
    env["HEADSCALE_CLI_ADDRESS"] = f"http://127.0.0.1:{silent.port}"
    try:
        for timeout, low, high in (("1s", 0.8, 3.5), ("4s", 3.8, 7)):
            t0 = time.monotonic()
            r = s.cli("users", "list", env=dict(env, HEADSCALE_CLI_TIMEOUT=timeout))
            took = time.monotonic() - t0
            assert r.returncode != 0, r.stdout
            assert low <= took < high, f"cli.timeout {timeout}: gave up after {took:.1f}s"
    finally:
        silent.close()


def test_database_debug_logs_statements(server_factory, db):
    s = server_factory(start=False)
    s.config["database"]["debug"] = True
    s.write_config()
    s.start()
    s.ensure_api_key()
    s.cli_ok("users", "create", "alice")
    uid = [u for u in s.cli_json("users", "list") if u["name"] == "alice"][0]["id"]
    key = s.cli_json("preauthkeys", "-u", str(uid), "create", "-e", "1h")["key"]
    log = s.log_text()
    assert "store: sql: INSERT INTO users" in log, s.log_tail()
    for secret in (key, key.split("-")[-1], s.api_key.split("-")[-1]):
        assert secret not in log, "a parameter reached the log"
    s.stop()
    before = len(s.log_text())
    s.config["database"]["debug"] = False
    s.write_config()
    s.start()
    s.cli_ok("users", "create", unique())
    assert "store: sql:" not in s.log_text()[before:]
