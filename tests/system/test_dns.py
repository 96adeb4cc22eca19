"""DNS as the clients see it: the whole DNS configuration in both config layouts (current `dns`,
headscale 0.22.3's `dns_config`), read back from real tailscaled clients (`tailscale status
--json`, `tailscale dns status`) and resolved through the client's own resolver (`tailscale dns
query`); the extra-records file followed while serving; a rename reaching the peers; bad input
(a records file that does not parse, a missing one, nameservers a client cannot use); and the
DNSConfig of a map side by side with headscale v0.29.3 (bench/run.sh builds it), with
/bootstrap-dns. Needs root (ip netns) and the clients of tests/lib/install-tailscale.sh."""

import http.client
import json
import os
import subprocess
import time

import pytest

import helpers
import noise_client
import tailnet
from tailnet import poll

VERSION = tailnet.versions()[0]
BASE = "ts.example.org"
RECORD = {"Name": "db." + BASE, "Type": "A", "Value": "100.64.0.99"}
REF_BIN = os.environ.get("HS_REF_BIN", os.path.join(
    helpers.REPO, ".cache", "headscale", "v0.29.3", "headscale"))
REF022_BIN = os.path.join(helpers.REPO, ".cache", "headscale", "v0.22.3", "headscale")
CHANGE_DEADLINE = 15.0  # seconds for an edited records file to show in a client's answers


@pytest.fixture(scope="module")
def tsver():
    if os.geteuid() != 0:
        pytest.skip("tailnet tests need root (ip netns)")
    if not tailnet.have_version(VERSION):
        msg = f"Tailscale {VERSION} not built in {tailnet.TS_CACHE}/{VERSION}"
        if os.environ.get("HS_TS_REQUIRE"):
            pytest.fail(msg)
        pytest.skip(msg)
    return VERSION


def write_records(path, records):
    """Replaces the file as editors do: a new file renamed over the old one."""
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(records if isinstance(records, str) else json.dumps(records))
    os.replace(tmp, path)


def current_layout(server):
    """server_setup: the `dns` section of the current layout, records in a file."""
    server.records = os.path.join(server.tmp, "records.json")
    write_records(server.records, [RECORD])
    server.config["dns"] = {
        "magic_dns": True, "base_domain": BASE, "override_local_dns": True,
        "nameservers": {"global": [tailnet.SERVER_IP],
                        "split": {"corp.example": ["198.18.0.53"]}},
        "search_domains": ["search.example"], "extra_records_path": server.records}
    server.write_config()


def legacy_layout(server):
    """server_setup: headscale 0.22.3's flat layout with its dns_config section."""
    cur = server.config
    db = cur["database"]
    if db["type"] == "sqlite":
        dbkeys = {"db_type": "sqlite3", "db_path": db["sqlite"]["path"]}
    else:
        pg = db["postgres"]
        dbkeys = {"db_type": "postgres", "db_host": pg["host"], "db_port": pg["port"],
                  "db_name": pg["name"], "db_user": pg["user"], "db_pass": pg["pass"]}
    server.config = {
        "server_url": cur["server_url"], "listen_addr": cur["listen_addr"],
        "metrics_listen_addr": cur["metrics_listen_addr"],
        "noise": {"private_key_path": cur["noise"]["private_key_path"]},
        "ip_prefixes": ["100.64.0.0/10", "fd7a:115c:a1e0::/48"],
        "derp": cur["derp"], "disable_check_updates": True, **dbkeys,
        "dns_config": {"override_local_dns": False, "nameservers": [tailnet.SERVER_IP],
                       "restricted_nameservers": {"corp.example": ["198.18.0.53"]},
                       "domains": ["search.example"], "magic_dns": True,
                       "base_domain": "example.com",
                       "extra_records": [{"name": "grafana.example.com", "type": "A",
                                          "value": "100.64.0.77"}]},
        "unix_socket": cur["unix_socket"], "log": cur["log"],
        "ephemeral_node_inactivity_timeout": "30m",
    }
    server.write_config()


def _world(tmp_path_factory, db, tsver, tag, setup):
    d = tmp_path_factory.mktemp(f"dns-{tag}-{db.kind[:2]}")
    return tailnet.World(d, db, tsver, policy_text=tailnet.ALLOW_ALL_POLICY, server_setup=setup)


def _bring_up(w, names, user="alice"):
    key = w.key(user, reusable=True)
    nodes = [w.node(n) for n in names]
    for n in nodes:
        n.up(key)
    for n in nodes:
        n.wait_running()
    for a in nodes:
        for b in nodes:
            if a is not b:
                a.wait_peer(b.name)
    return nodes


@pytest.fixture(scope="module")
def cworld(tmp_path_factory, db, tsver):
    with _world(tmp_path_factory, db, tsver, "cur", current_layout) as w:
        w.a, w.b = _bring_up(w, ["d1", "d2"])
        yield w


@pytest.fixture(scope="module")
def lworld(tmp_path_factory, db, tsver):
    with _world(tmp_path_factory, db, tsver, "022", legacy_layout) as w:
        w.a, w.b = _bring_up(w, ["l1", "l2"])
        w.c, = _bring_up(w, ["l3"], user="bob")
        w.a.wait_peer("l3")
        yield w


@pytest.fixture(autouse=True)
def _tailnet_logs(request):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for w in list(tailnet.LIVE_WORLDS):
            print(f"\n===== tailnet world {w.dir} ({w.db.kind}) =====")
            print(w.logs(60))


# ---------------------------------------------------------------- what the client shows

def dns_status(node):
    """`tailscale dns status --all` → {section title: [its lines]} (the text form)."""
    r = node.cli("dns", "status", "--all")
    assert r.returncode == 0, r.stderr
    sections, cur = {}, None
    for line in r.stdout.splitlines():
        if line and not line.startswith(" ") and line.rstrip().endswith(":"):
            cur = sections.setdefault(line.rstrip()[:-1], [])
        elif cur is not None and line.strip().startswith("- "):
            cur.append(line.strip()[2:])
        elif cur is not None and line.strip().split(":")[0].isdigit():  # "0: 198.18.0.1"
            cur.append(line.split(":", 1)[1].strip())
        elif line.startswith("MagicDNS:"):
            sections["MagicDNS"] = [line]
    return sections


def query(node, name):
    """`tailscale dns query NAME` through the client's resolver → the A answers."""
    r = node.cli("dns", "query", name)
    if r.returncode != 0:
        return []
    return [ln.split()[-1] for ln in r.stdout.splitlines() if "TypeA" in ln.split()]


def wait_answer(node, name, want, timeout=CHANGE_DEADLINE):
    return poll(lambda: query(node, name) == want, timeout,
                f"{node.name}: {name} to resolve to {want}")


def server_id(world, name):
    sn = poll(lambda: world.server.node_by_name(name), 20, f"{name} in nodes list")
    return int(sn["id"])


# ---------------------------------------------------------------- the current layout

def test_current_layout_client_shows_dns(cworld):
    a, b = cworld.a, cworld.b
    st = a.status()
    assert st["MagicDNSSuffix"] == BASE
    assert st["Self"]["DNSName"] == f"{a.name}.{BASE}."
    assert a.peer(b.name)["DNSName"] == f"{b.name}.{BASE}."
    s = dns_status(a)
    assert any(f"suffix = {BASE}" in ln for ln in s["MagicDNS"]), s
    assert s["Resolvers (in preference order)"] == [tailnet.SERVER_IP]
    assert [r.split() for r in s["Split DNS Routes"]] == [["corp.example", "->", "198.18.0.53"]]
    assert sorted(s["Search Domains"]) == sorted(["search.example", BASE])
    assert [r.split() for r in s["Additional DNS Records"]] == [
        ["[A]", RECORD["Name"], "->", RECORD["Value"]]]


def test_current_layout_names_resolve(cworld):
    a, b = cworld.a, cworld.b
    assert query(a, f"{b.name}.{BASE}") == [b.ip4]
    assert query(a, b.name) == [b.ip4], "the base domain is a search domain"
    assert query(a, RECORD["Name"]) == [RECORD["Value"]]


def test_extra_records_file_edit_reaches_clients(cworld):
    """The file is followed: an edit shows in every client's answers within seconds, with
    no restart; a record dropped stops resolving."""
    a, b = cworld.a, cworld.b
    pid = cworld.server.proc.pid
    path = cworld.server.records
    try:
        t0 = time.monotonic()
        write_records(path, [dict(RECORD, Value="100.64.0.98"),
                             {"Name": "new." + BASE, "Type": "A", "Value": "100.64.0.97"}])
        wait_answer(a, RECORD["Name"], ["100.64.0.98"])
        took = time.monotonic() - t0
        wait_answer(b, "new." + BASE, ["100.64.0.97"])
        print(f"records file edit -> answer on the client: {took:.2f}s")
        write_records(path, [RECORD])
        wait_answer(b, RECORD["Name"], [RECORD["Value"]])
        poll(lambda: query(b, "new." + BASE) == [], CHANGE_DEADLINE,
             "the dropped record to stop resolving")
        assert cworld.server.proc.pid == pid and cworld.server.running, "no restart"
        assert "changed (2 records before, 1 now)" in cworld.server.log_text()
    finally:
        write_records(path, [RECORD])


@pytest.mark.parametrize("bad,reason", [
    ("[{\"Name\": \"db.ts.example.org\", \"Type\": \"A\", ", "not valid JSON"),
    (json.dumps([{"Name": "x." + BASE, "Type": "MX", "Value": "mail"}]), "must be A or AAAA"),
    (json.dumps([{"Name": "x." + BASE, "Type": "A", "Value": "fd7a::1"}]), "not an IPv4"),
    (json.dumps({"Name": "x." + BASE}), "JSON list"),
])
def test_extra_records_bad_file_keeps_old(cworld, bad, reason):
    """A file that does not parse: a log line says why, the records in force stay."""
    a = cworld.a
    path = cworld.server.records
    log_from = len(cworld.server.log_text())
    try:
        write_records(path, bad)
        line = poll(lambda: [ln for ln in cworld.server.log_text()[log_from:].splitlines()
                             if "extra_records_path" in ln and reason in ln], 10,
                    f"a log line saying {reason!r}")
        assert "records in force stay" in line[0], line
        assert query(a, RECORD["Name"]) == [RECORD["Value"]]
        assert [r.split() for r in dns_status(a)["Additional DNS Records"]] == [
            ["[A]", RECORD["Name"], "->", RECORD["Value"]]]
    finally:
        write_records(path, [dict(RECORD, Value="100.64.0.96")])
        wait_answer(a, RECORD["Name"], ["100.64.0.96"])  # a good file applies again
        write_records(path, [RECORD])
        wait_answer(a, RECORD["Name"], [RECORD["Value"]])


def test_extra_records_file_deleted_and_back(cworld):
    """Deleted: a warning, the records in force stay; put back: applied again."""
    a = cworld.a
    path = cworld.server.records
    log_from = len(cworld.server.log_text())
    try:
        os.unlink(path)
        poll(lambda: "the records in force stay until it is back"
             in cworld.server.log_text()[log_from:], 10, "a warning about the missing file")
        assert query(a, RECORD["Name"]) == [RECORD["Value"]]
        write_records(path, [dict(RECORD, Value="100.64.0.95")])
        wait_answer(a, RECORD["Name"], ["100.64.0.95"])
    finally:
        write_records(path, [RECORD])
        wait_answer(a, RECORD["Name"], [RECORD["Value"]])


def test_rename_reaches_peer_names(cworld):
    a, b = cworld.a, cworld.b
    new = "renamed-" + b.name
    cworld.server.cli_ok("nodes", "rename", "-i", server_id(cworld, b.name), new)
    try:
        t0 = time.monotonic()
        a.wait_peer(b.name, lambda p: p.get("DNSName") == f"{new}.{BASE}.", timeout=30,
                    what=f"{a.name} to see {new}.{BASE}.")
        print(f"rename -> peer sees the new name: {time.monotonic() - t0:.2f}s")
        wait_answer(a, f"{new}.{BASE}", [b.ip4])
        assert query(a, f"{b.name}.{BASE}") != [b.ip4], "the old name is gone"
        assert b.status()["Self"]["DNSName"] == f"{new}.{BASE}."
    finally:
        cworld.server.cli_ok("nodes", "rename", "-i", server_id(cworld, new), b.name)


# ---------------------------------------------------------------- headscale 0.22.3's layout

def test_022_layout_client_shows_dns(lworld):
    """<name>.<user>.<base_domain>, the own user's domain a search domain, every user among
    the peers a MagicDNS route; override_local_dns false: fallback resolvers."""
    a, b, c = lworld.a, lworld.b, lworld.c
    st = a.status()
    assert st["Self"]["DNSName"] == f"{a.name}.alice.example.com."
    assert a.peer(c.name)["DNSName"] == f"{c.name}.bob.example.com."
    assert st["MagicDNSSuffix"] == "alice.example.com", st["MagicDNSSuffix"]
    s = dns_status(a)
    assert s["Fallback Resolvers"] == [tailnet.SERVER_IP]
    # as headscale 0.22.3 (test_022_dns_config_same_as_headscale_022): never the base domain
    assert sorted(s["Search Domains"]) == ["alice.example.com", "search.example"]
    # (routes answered by MagicDNS itself, such as each user's domain, are not listed)
    assert [r.split() for r in s["Split DNS Routes"]] == [["corp.example", "->", "198.18.0.53"]]
    assert s["Resolvers (in preference order)"] == []
    assert [r.split() for r in s["Additional DNS Records"]] == [
        ["[A]", "grafana.example.com", "->", "100.64.0.77"]]
    assert "bob.example.com" in dns_status(c)["Search Domains"]


def test_022_layout_names_resolve(lworld):
    a, b, c = lworld.a, lworld.b, lworld.c
    assert query(a, f"{b.name}.alice.example.com") == [b.ip4]
    assert query(a, b.name) == [b.ip4], "own user's domain is searched"
    assert query(a, f"{c.name}.bob.example.com") == [c.ip4]
    assert query(c, f"{a.name}.alice.example.com") == [a.ip4]
    assert query(a, "grafana.example.com") == ["100.64.0.77"]


def test_022_layout_rename_reaches_peer(lworld):
    a, c = lworld.a, lworld.c
    new = "renamed-" + c.name
    lworld.server.cli_ok("nodes", "rename", "-i", server_id(lworld, c.name), new)
    try:
        a.wait_peer(c.name, lambda p: p.get("DNSName") == f"{new}.bob.example.com.",
                    timeout=30, what=f"{a.name} to see {new}.bob.example.com.")
        wait_answer(a, f"{new}.bob.example.com", [c.ip4])
    finally:
        lworld.server.cli_ok("nodes", "rename", "-i", server_id(lworld, new), c.name)


# ---------------------------------------------------------------- bad input at start

def _dns_server(server_factory, dns):
    s = server_factory(start=False, api_key=False)
    s.config["dns"] = dict(s.config["dns"], **dns)
    s.write_config()
    return s


def _start_fails(s):
    p = s.spawn()
    try:
        rc = p.wait(timeout=helpers.START_DEADLINE)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise AssertionError("server started:\n" + s.log_tail())
    assert rc != 0
    return s.log_text()


@pytest.mark.parametrize("content,reason", [
    (None, "No such file"),
    ("[{\"Name\": ", "not valid JSON"),
    (json.dumps([{"Name": "a.example", "Type": "TXT", "Value": "x"}]), "must be A or AAAA"),
    ("dir", "is a directory"),
])
def test_extra_records_file_bad_at_start(server_factory, content, reason):
    s = _dns_server(server_factory, {})
    path = os.path.join(s.tmp, "records.json")
    if content == "dir":
        os.mkdir(path)
    elif content is not None:
        with open(path, "w") as f:
            f.write(content)
    s.config["dns"]["extra_records_path"] = path
    s.write_config()
    log = _start_fails(s)
    assert any("extra_records_path" in ln and reason in ln for ln in log.splitlines()), log


def test_extra_records_file_exclusive_with_list(server_factory):
    s = _dns_server(server_factory, {"extra_records": [dict(name="a.example", type="A",
                                                            value="100.64.0.1")]})
    path = os.path.join(s.tmp, "records.json")
    write_records(path, [])
    s.config["dns"]["extra_records_path"] = path
    s.write_config()
    r = s.cli("configtest")
    assert r.returncode != 0
    assert "cannot be used together with dns.extra_records" in r.stdout + r.stderr


def test_nameserver_clients_cannot_use_warns(server_factory):
    """headscale passes such entries on; we start, leave them out, and say so."""
    s = _dns_server(server_factory, {"nameservers": {
        "global": ["1.1.1.1", "not-a-resolver"], "split": {"corp.example": ["tls://x"]}}})
    s.start()
    log = s.log_text()
    assert "not-a-resolver" in log and "left out" in log, log
    assert "tls://x" in log


# ---------------------------------------------------------------- side by side with headscale

class _Ref(helpers.Server):
    """A real headscale (v0.29.3 unless told) with the same kind of config (its own SQLite
    database), served and driven by its own binary."""

    def __init__(self, db, binary=REF_BIN, **kw):
        super().__init__(db, **kw)
        self.binary = binary


DIFF_DNS = {
    "magic_dns": True, "base_domain": BASE, "override_local_dns": True,
    "nameservers": {"global": ["1.1.1.1", "2606:4700:4700::1111",
                               "https://dns.nextdns.io/abc123"],
                    "split": {"corp.example": ["10.0.0.1", "https://dns.nextdns.io/corp"],
                              "lab.example": ["10.0.0.2"]}},
    "search_domains": ["a.example", "b.example"],
}


def _first_map(s, records_file=None):
    """Starts s (embedded DERP, for /bootstrap-dns) with DIFF_DNS; registers one node and
    opens its map stream → (DNSConfig, Node.Name, the /bootstrap-dns answer, Domain)."""
    dns = dict(DIFF_DNS)
    if records_file:
        dns["extra_records_path"] = records_file
    else:
        dns["extra_records"] = [{"name": "db." + BASE, "type": "A", "value": "100.64.0.99"},
                                {"name": "v6." + BASE, "type": "AAAA", "value": "fd7a::99"}]
    s.config["dns"] = dns
    s.config["derp"] = {
        "server": {"enabled": True, "region_id": 999, "region_code": "headscale",
                   "region_name": "Headscale Embedded DERP",
                   "stun_listen_addr": f"127.0.0.1:{helpers.free_port()}",
                   "private_key_path": os.path.join(s.tmp, "derp.key"), "ipv4": "127.0.0.1"},
        "urls": [], "paths": [], "auto_update_enabled": False}
    s.write_config()
    s.start()
    s.cli_ok("users", "create", "alice")
    uid = [u for u in s.cli_json("users", "list") if u["name"] == "alice"][0]["id"]
    key = s.cli_json("preauthkeys", "-u", str(uid), "create", "-e", "1h")["key"]
    _, first = noise_client.joined_stream(s.port, key)
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    boot = helpers.http_request(conn, "GET", "/bootstrap-dns")
    return first["DNSConfig"], first["Node"]["Name"], boot, first.get("Domain")


def _normal(dns):
    """What a client makes of it: record order and an empty route's null/[] do not count."""
    d = json.loads(json.dumps(dns))
    d["ExtraRecords"] = sorted(d.get("ExtraRecords") or [], key=json.dumps)
    d["Routes"] = {k: v or [] for k, v in (d.get("Routes") or {}).items()}
    return d


@pytest.mark.parametrize("from_file", [False, True], ids=["records-in-config", "records-file"])
def test_dns_config_same_as_headscale(server_factory, tmp_path, from_file):
    if not os.access(REF_BIN, os.X_OK):
        pytest.skip(f"headscale v0.29.3 not built at {REF_BIN} (bench/run.sh builds it)")
    records = None
    if from_file:
        records = str(tmp_path / "records.json")
        write_records(records, [RECORD, {"Name": "v6." + BASE, "Type": "AAAA",
                                         "Value": "fd7a::99"}])
    ref = _Ref(helpers.Db("sqlite"))
    try:
        want = _first_map(ref, records)
    finally:
        ref.cleanup()
    ours = server_factory(start=False, api_key=False)
    got = _first_map(ours, records)
    assert _normal(got[0]) == _normal(want[0])
    assert got[1] == want[1]
    assert got[2][0] == want[2][0] == 200
    assert got[2][1].get("content-type") == want[2][1].get("content-type")
    assert got[2][2] == want[2][2] == {"127.0.0.1": ["127.0.0.1"]}
    assert got[3] == want[3] == "127.0.0.1", "the tailnet name: server_url's host"


# The 0.22.3 layout side by side with headscale v0.22.3: split DNS, search domains, NextDNS,
# extra records and the per-user MagicDNS domains, with override_local_dns off and on.
DNS_022 = {
    "magic_dns": True, "base_domain": BASE,
    "nameservers": ["1.1.1.1", "https://dns.nextdns.io/abc123"],
    "restricted_nameservers": {"corp.example": ["10.0.0.1"], "lab.example": ["10.0.0.2"]},
    "extra_records": [{"name": "db." + BASE, "type": "A", "value": "100.64.0.99"}],
}


def first_map_022(s, **keys):
    """s served on a 0.22.3 flat config (what every server needs, plus keys); one node of user
    alice registered → the first message of its map stream."""
    s.config = {
        "server_url": f"http://127.0.0.1:{s.port}", "listen_addr": f"127.0.0.1:{s.port}",
        "private_key_path": os.path.join(s.tmp, "private.key"),
        "noise": {"private_key_path": os.path.join(s.tmp, "noise.key")},
        "derp": s.config["derp"], "disable_check_updates": True,
        "db_type": "sqlite3", "db_path": os.path.join(s.tmp, "db.sqlite"),
        "unix_socket": s.socket_path, **keys,
    }
    s.write_config()
    s.start()
    s.cli_ok("users", "create", "alice")
    # headscale 0.22.3 prints its config warnings on stdout too: the JSON is what follows.
    out = s.cli_ok("preauthkeys", "-u", "alice", "create", "-e", "1h", "-o", "json").stdout
    key = json.loads(out[out.index("{"):])["key"]
    c, first = noise_client.joined_stream(s.port, key)
    c.close()
    return first


def _dns_022(s, dns):
    """The first map on a 0.22.3 config with dns_config dns → (DNSConfig, Node.Name, Domain)."""
    keys = {"metrics_listen_addr": f"127.0.0.1:{helpers.free_port()}",
            "ip_prefixes": ["100.64.0.0/10", "fd7a:115c:a1e0::/48"],
            "log": {"level": "info"}, "dns_config": dns}
    if isinstance(s, _Ref):  # ours serves no gRPC and says so at start
        keys["grpc_listen_addr"] = f"127.0.0.1:{helpers.free_port()}"
    first = first_map_022(s, **keys)
    return first["DNSConfig"], first["Node"]["Name"], first.get("Domain")


def _normal_022(dns):
    """_normal, and what 0.22.3 sent that clients no longer read or that we send better:
    fields it sent as null, the deprecated Nameservers list, and NextDNS device metadata
    (which 0.22.3 added to Resolvers only; we add it to the fallback ones too, as headscale
    0.29 does)."""
    d = {k: v for k, v in _normal(dns).items() if v is not None}  # null: as if absent
    d.pop("Nameservers", None)
    d["Domains"] = sorted(d.get("Domains", []))  # 0.22.3 walked the split domains in map order
    for r in d.get("FallbackResolvers", []) + d.get("Resolvers", []):
        r["Addr"] = r["Addr"].split("?")[0]
    return d


@pytest.mark.parametrize("override", [False, True], ids=["fallback", "override-local"])
def test_022_dns_config_same_as_headscale_022(server_factory, override):
    """What headscale v0.22.3 sends for its own dns_config: per-user domains (the viewer's as a
    search domain, routes for each user), reverse zones of the prefixes, split DNS, resolvers
    or fallback resolvers, extra records; without `domains` it searches the split-DNS domains
    and never the base domain. Kept differences: Node.Name carries the final dot as every
    later headscale sends it (clients accept both), and with `domains` set but
    override_local_dns off 0.22.3 dropped them with a warning where we keep them."""
    if not os.access(REF022_BIN, os.X_OK):
        pytest.skip(f"headscale v0.22.3 not built at {REF022_BIN}")
    dns = dict(DNS_022, override_local_dns=override)
    if override:
        dns["domains"] = ["search.example"]
    ref = _Ref(helpers.Db("sqlite"), binary=REF022_BIN)
    try:
        want = _dns_022(ref, dns)
    finally:
        ref.cleanup()
    got = _dns_022(server_factory(start=False, api_key=False), dns)
    assert _normal_022(got[0]) == _normal_022(want[0])
    assert got[0]["Domains"][-1] == want[0]["Domains"][-1] == "alice." + BASE
    assert got[1] == want[1] + "." == "laptop.alice." + BASE + "."
    assert got[2] == want[2] == BASE


# ---------------------------------------------------------------- what a live map stream gets

def _stream_client(s, user="alice"):
    s.cli_ok("users", "create", user)
    uid = [u for u in s.cli_json("users", "list") if u["name"] == user][0]["id"]
    key = s.cli_json("preauthkeys", "-u", str(uid), "create", "-e", "1h")["key"]
    c = noise_client.ControlClient(s.port)
    c.hostinfo = {"Hostname": "laptop", "OS": "linux"}
    st, _, resp = c.register(auth_key=key)
    assert st == 200 and resp.get("MachineAuthorized"), resp
    return c, c.open_stream()


def _next_dns(c, cond, timeout=10.0):
    """Reads the stream until a message carries a DNSConfig meeting cond → that message."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        msg = c.next_message(end - time.monotonic())
        if msg and "DNSConfig" in msg and cond(msg["DNSConfig"]):
            return msg
    raise AssertionError("no DNSConfig as expected on the stream")


def test_stream_gets_dns_update_alone(server_factory, tmp_path):
    """An edited records file reaches a live stream as a message with the DNSConfig alone."""
    records = str(tmp_path / "records.json")
    write_records(records, [RECORD])
    s = server_factory(start=False, api_key=False)
    s.config["dns"] = dict(s.config["dns"], extra_records_path=records)
    s.write_config()
    s.start()
    c, first = _stream_client(s)
    assert first["DNSConfig"]["ExtraRecords"] == [RECORD]
    write_records(records, [dict(RECORD, Value="100.64.0.98")])
    msg = _next_dns(c, lambda d: d.get("ExtraRecords") == [dict(RECORD, Value="100.64.0.98")])
    assert set(msg) == {"DNSConfig"}, msg
    assert msg["DNSConfig"]["Resolvers"] == first["DNSConfig"]["Resolvers"]


def test_policy_nextdns_attrs_reach_stream(server_factory):
    """nodeAttrs nextdns:<profile> and nextdns:no-device-info change the node's NextDNS
    resolver, and a policy change sends it."""
    s = server_factory(start=False, api_key=False)
    s.config["dns"] = dict(s.config["dns"], nameservers={
        "global": ["https://dns.nextdns.io/global"]})
    s.write_config()
    s.start()
    c, first = _stream_client(s)
    addr = first["DNSConfig"]["Resolvers"][0]["Addr"]
    assert addr == ("https://dns.nextdns.io/global?device_ip=100.64.0.1&device_model=linux"
                    "&device_name=laptop"), addr
    pol = {"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
           "nodeAttrs": [{"target": ["*"], "attr": ["nextdns:prof1"]}]}
    path = os.path.join(s.tmp, "p.json")
    for attrs, want in ((["nextdns:prof1"], "https://dns.nextdns.io/prof1?device_ip="),
                        (["nextdns:prof1", "nextdns:no-device-info"],
                         "https://dns.nextdns.io/prof1")):
        pol["nodeAttrs"][0]["attr"] = attrs
        with open(path, "w") as f:
            json.dump(pol, f)
        s.cli_ok("policy", "set", "-f", path)
        _next_dns(c, lambda d: d["Resolvers"][0]["Addr"] == want or (
            want.endswith("=") and d["Resolvers"][0]["Addr"].startswith(want)))
