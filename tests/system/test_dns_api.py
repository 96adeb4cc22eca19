"""DNS settings changed through the REST API (GET/PUT/DELETE /api/v1/dns, ours: headscale
changes DNS only in its config file) and read back from real tailscaled clients: a saved
nameserver, split domain, search domain, extra record and MagicDNS switch reach every client
within seconds with no restart (`tailscale dns status`, `tailscale status --json`, `tailscale
dns query`); bad input is refused with a clear message and changes nothing; the saved settings
survive a restart and win over the config file's (said once in the log); DELETE goes back to
the file's; and on PostgreSQL a change saved through one replica reaches the clients of
another. Needs root (ip netns) and the clients of tests/lib/install-tailscale.sh."""

import time

import pytest

import tailnet
from tailnet import poll
from test_dns import dns_status, query, tsver, wait_answer  # noqa: F401 (tsver: a fixture)
from test_replicas import join, need_postgres, start_replica

BASE = "ts.example.org"
RECORD = {"name": "db." + BASE, "type": "A", "value": "100.64.0.99"}
CHANGE_DEADLINE = 15.0  # seconds for a saved setting to show in a client's answers
FILE_DNS = {
    "magic_dns": True, "base_domain": BASE, "override_local_dns": True,
    "nameservers": {"global": [tailnet.SERVER_IP]},
    "search_domains": ["search.example"], "extra_records": [RECORD]}
NEW = {
    "nameservers": {"global": [tailnet.SERVER_IP, "198.18.0.54"],
                    "split": {"lab.example": ["198.18.0.55"]}},
    "searchDomains": ["new.example"],
    "extraRecords": [{"name": "api." + BASE, "type": "A", "value": "100.64.0.50"}],
}


def file_dns(server):
    """server_setup: the config file's dns section (records in the file, not a records file)."""
    server.config["dns"] = dict(FILE_DNS)
    server.write_config()


@pytest.fixture(scope="module")
def world(tmp_path_factory, db, tsver):  # noqa: F811
    d = tmp_path_factory.mktemp(f"dnsapi-{db.kind[:2]}")
    with tailnet.World(d, db, tsver, policy_text=tailnet.ALLOW_ALL_POLICY,
                       server_setup=file_dns) as w:
        w.server.ensure_api_key()
        key = w.key("alice", reusable=True)
        w.a, w.b = w.node("a1"), w.node("a2")
        for n in (w.a, w.b):
            n.up(key)
        for n in (w.a, w.b):
            n.wait_running()
        w.a.wait_peer(w.b.name)
        yield w


@pytest.fixture(autouse=True)
def _back_to_file(world):
    """Every test starts and ends on the config file's settings."""
    world.server.api_ok("DELETE", "/api/v1/dns")
    yield
    if world.server.running:
        world.server.api_ok("DELETE", "/api/v1/dns")


def shows_new(node):
    """node's client shows every setting of NEW."""
    s = dns_status(node)
    return (s.get("Resolvers (in preference order)") == [tailnet.SERVER_IP, "198.18.0.54"]
            and [r.split() for r in s.get("Split DNS Routes", [])]
            == [["lab.example", "->", "198.18.0.55"]]
            and sorted(s.get("Search Domains", [])) == sorted([BASE, "new.example"])
            and [r.split() for r in s.get("Additional DNS Records", [])]
            == [["[A]", "api." + BASE, "->", "100.64.0.50"]])


def shows_file(node):
    s = dns_status(node)
    return (s.get("Resolvers (in preference order)") == [tailnet.SERVER_IP]
            and not s.get("Split DNS Routes")
            and sorted(s.get("Search Domains", [])) == sorted([BASE, "search.example"])
            and [r.split() for r in s.get("Additional DNS Records", [])]
            == [["[A]", RECORD["name"], "->", RECORD["value"]]])


def test_get_shows_the_file_settings(world):
    got = world.server.api_ok("GET", "/api/v1/dns")
    assert got["source"] == "config" and got["updatedAt"] is None, got
    assert got["baseDomain"] == BASE and got["magicDns"] is True
    assert got["nameservers"] == {"global": [tailnet.SERVER_IP], "split": {}}
    assert got["searchDomains"] == ["search.example"]
    assert got["extraRecords"] == [RECORD]
    assert shows_file(world.a)


def test_put_reaches_every_client_without_restart(world):
    a, b, server = world.a, world.b, world.server
    pid = server.proc.pid
    t0 = time.monotonic()
    got = server.api_ok("PUT", "/api/v1/dns", NEW)
    assert got["source"] == "database" and got["updatedAt"], got
    assert got["searchDomains"] == ["new.example"] and got["magicDns"] is True, got
    wait_answer(a, "api." + BASE, ["100.64.0.50"], CHANGE_DEADLINE)
    took = time.monotonic() - t0
    poll(lambda: shows_new(a) and shows_new(b), CHANGE_DEADLINE,
         "both clients to show the saved nameservers, split, search domain and record")
    print(f"PUT /api/v1/dns -> the client resolves the new record: {took:.2f}s")
    assert query(b, RECORD["name"]) == [], "the records were replaced"
    assert query(a, b.name) == [b.ip4], "names of peers still resolve"
    assert server.api_ok("GET", "/api/v1/dns") == got
    assert server.proc.pid == pid and server.running, "no restart"
    assert "new settings saved through the API: sending every node" in server.log_text()


def test_magic_dns_switched_off_and_on(world):
    a, server = world.a, world.server
    server.api_ok("PUT", "/api/v1/dns", {"magicDns": False})
    poll(lambda: not a.status()["CurrentTailnet"]["MagicDNSEnabled"], CHANGE_DEADLINE,
         "MagicDNS off in tailscale status --json")
    assert dns_status(a)["MagicDNS"] == ["MagicDNS: disabled tailnet-wide."]
    server.api_ok("PUT", "/api/v1/dns", {"magicDns": True})
    poll(lambda: a.status()["CurrentTailnet"]["MagicDNSEnabled"], CHANGE_DEADLINE,
         "MagicDNS on again")


@pytest.mark.parametrize("body,reason", [
    ({"nameservers": {"global": ["1.1.1.300"]}}, "is not an IP address"),
    ({"searchDomains": ["bad..example"]}, "is not a domain name"),
    ({"searchDomains": [f"d{i}.example" for i in range(65)]}, "more than 64"),
    ({"extraRecords": [{"name": "x." + BASE, "type": "A", "value": "fd7a::1"}]},
     "not an IPv4 address"),
    ({"nameservers": {"split": {"lab.example": []}}}, "at least one nameserver"),
    ({"magic_dns": False}, "unknown member"),
    ({"baseDomain": "other.example"}, "baseDomain cannot change"),
    ({"magicDns": "no"}, "true or false"),
    ([1, 2], "expected a JSON object"),
])
def test_bad_input_refused_and_nothing_changes(world, body, reason):
    server = world.server
    server.api_ok("PUT", "/api/v1/dns", {"searchDomains": ["kept.example"]})
    before = server.api_ok("GET", "/api/v1/dns")
    st, err = server.api("PUT", "/api/v1/dns", body)
    assert st == 400, (st, err)
    assert reason in err["message"] and "invalid DNS settings" in err["message"], err
    assert server.api_ok("GET", "/api/v1/dns") == before


def test_oversize_and_broken_bodies_refused(world):
    server = world.server
    before = server.api_ok("GET", "/api/v1/dns")
    huge = b'{"searchDomains": ["' + b"a" * (2 << 20) + b'"]}'
    st, _ = server.api("PUT", "/api/v1/dns", raw_body=huge)
    assert st in (400, 413), st
    st, err = server.api("PUT", "/api/v1/dns", raw_body=b'{"magicDns": tru')
    assert st == 400 and "not valid JSON" in err["message"], (st, err)
    assert server.api_ok("GET", "/api/v1/dns") == before
    # The client still gets the file's settings (the fixture's DELETE reaches it
    # asynchronously, so wait for it rather than read it once).
    poll(lambda: shows_file(world.a), CHANGE_DEADLINE, "the file's settings on the client")


def test_saved_settings_survive_a_restart_and_delete_goes_back(world):
    a, server = world.a, world.server
    saved = server.api_ok("PUT", "/api/v1/dns", NEW)
    poll(lambda: shows_new(a), CHANGE_DEADLINE, "the saved settings on the client")
    server.stop()
    log_from = len(server.log_text())
    server.start()
    assert server.api_ok("GET", "/api/v1/dns") == saved
    started = server.log_text()[log_from:]
    assert started.count("the settings saved through the API are in force") == 1, started
    a.wait_running()
    poll(lambda: shows_new(a), 60, "the saved settings after the restart")

    back = server.api_ok("DELETE", "/api/v1/dns")
    assert back["source"] == "config" and back["searchDomains"] == ["search.example"], back
    poll(lambda: shows_file(a), CHANGE_DEADLINE, "the config file's settings again")
    wait_answer(a, RECORD["name"], [RECORD["value"]])
    assert query(a, "api." + BASE) == []
    assert server.api_ok("DELETE", "/api/v1/dns") == back, "deleting twice is fine"


def test_saved_on_one_replica_reaches_clients_of_another(tmp_path, db, tsver):  # noqa: F811
    need_postgres(db)
    with tailnet.World(tmp_path, db, tsver, server_setup=file_dns) as w:
        b = start_replica(w, 8081)
        try:
            b.stop()  # replicas share one config: the same dns section
            file_dns(b)
            b.start()
            b.ensure_api_key()
            n1 = join(w, "n1", w.server)
            b.api_ok("PUT", "/api/v1/dns", {"searchDomains": ["replica.example"]})
            poll(lambda: "replica.example" in dns_status(n1).get("Search Domains", []),
                 CHANGE_DEADLINE, "n1 (on A) to get the search domain saved on B")
            w.server.ensure_api_key()
            assert w.server.api_ok("GET", "/api/v1/dns")["source"] == "database"
            b.api_ok("DELETE", "/api/v1/dns")
            poll(lambda: "search.example" in dns_status(n1).get("Search Domains", []),
                 CHANGE_DEADLINE, "n1 (on A) back on the file's settings deleted on B")
        finally:
            b.stop()
