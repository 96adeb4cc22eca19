"""What an unauthenticated client can make the server keep (issue 18, item 1), through our own
control-protocol client (noise_client.ControlClient): a flood of interactive registrations
from fresh keys stays within tuning.register_cache_max_entries, pending registrations expire
on schedule (tuning.register_cache_expiration) and start no faster than the table turns over,
a Hostinfo over 16 KiB is refused and a pending registration keeps at most 4 KiB of it (what
map requests resend left out), one address is rate limited (tuning.register_rate_limit: 429
with Retry-After) while a pre-auth key login from it still works, and a login follow-up only
waits for its own machine's registration. A registered node's Hostinfo and Endpoints are held
to their limits before its peers see them."""

import json
import sqlite3
import threading
import time

import pytest

from helpers import unique
from noise_client import ControlClient

pytest.importorskip("h2", reason="needs the h2 package (pip install h2)")

KIB = 1024
NO_RATE_LIMIT = {"register_rate_limit": 0}


def pending(server):
    """Rows in the registrations table."""
    if server.db.kind == "sqlite":
        db = sqlite3.connect(f"file:{server.sqlite_path}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute("SELECT count(*) FROM registrations").fetchone()[0]
        finally:
            db.close()
    out = server.db.pg.psql("SELECT count(*) FROM registrations", dbname=server.pg_dbname)
    return int(out.strip())


def wait_for(pred, what, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def start_login(client, session=None, **kw):
    """A fresh node key asking to log in without a key → its AuthURL."""
    client.new_node_key()
    st, _, resp = client.register(session=session, **kw)
    assert st == 200 and isinstance(resp, dict) and resp.get("AuthURL"), (st, resp)
    return resp["AuthURL"]


def reg_id(url):
    return url.rsplit("/", 1)[1]


def user_key(server, reusable=True):
    user = server.create_user()
    args = ["preauthkeys", "-u", str(user["id"]), "create", "-e", "1h"]
    return user, server.cli_json(*(args + (["--reusable"] if reusable else [])))["key"]


def test_flood_of_pending_registrations_is_bounded(server_factory):
    """From any number of addresses (no per-address limit here): the table holds at most
    register_cache_max_entries, and new ones start no faster than it turns over by itself
    (that many per register_cache_expiration), so a flood writes a bounded number of rows."""
    s = server_factory(overrides={"tuning": {"register_cache_max_entries": 20, **NO_RATE_LIMIT}})
    urls, busy = [], []
    for m in range(3):  # machines with fresh keys, 50 logins each, 15 KB of Hostinfo apiece
        c = ControlClient(s.port)
        sock, h2 = c.connect()
        try:
            for i in range(50):
                c.new_node_key()
                c.hostinfo = {"Hostname": f"flood{m}-{i}", "OS": "linux",
                              "DeviceModel": "x" * (3 * KIB),
                              "RoutableIPs": [f"10.{k // 256}.{k % 256}.0/24" for k in range(700)]}
                st, hdrs, resp = c.register(session=h2)
                if st == 200 and isinstance(resp, dict) and resp.get("AuthURL"):
                    urls.append(resp["AuthURL"])
                else:
                    assert st == 429 and "too many new logins waiting" in resp, (st, resp)
                    busy.append(int(hdrs["retry-after"]))
        finally:
            sock.close()
    assert len(urls) == 20 and len(busy) == 130, (len(urls), len(busy))
    assert all(1 <= b <= 60 for b in busy), set(busy)
    assert pending(s) == 20, "the count bound holds whatever the flood"
    # The ones made live out their time: an operator can still complete the first.
    user = s.create_user()
    s.cli_ok("nodes", "register", "--user", user["name"], "--key", reg_id(urls[0]))
    assert [n["name"] for n in s.api_ok("GET", "/api/v1/node")["nodes"]] == ["flood0-0"]


def test_pending_registrations_expire_on_schedule(server_factory):
    s = server_factory(overrides={"tuning": {"register_cache_expiration": "2s",
                                             **NO_RATE_LIMIT}})
    c = ControlClient(s.port)
    urls = [start_login(c) for _ in range(5)]
    assert pending(s) == 5
    t0 = time.monotonic()
    wait_for(lambda: pending(s) == 0, "the expired registrations to be deleted", 20)
    assert time.monotonic() - t0 < 15, "deleted within the sweep interval after expiry"
    user = s.create_user()
    r = s.cli("nodes", "register", "--user", user["name"], "--key", reg_id(urls[0]))
    assert r.returncode != 0, r.stdout


def test_oversize_hostinfo_is_refused_and_nothing_stored(server_factory):
    s = server_factory(overrides={"tuning": NO_RATE_LIMIT})
    _, key = user_key(s)
    c = ControlClient(s.port)
    c.hostinfo = {"Hostname": "big", "OS": "linux", "DeviceModel": "x" * 1000 * 1000}
    st, _, resp = c.register()
    assert st == 200 and "Hostinfo too large" in resp.get("Error", ""), (st, resp)
    assert not resp.get("AuthURL") and not resp.get("MachineAuthorized"), resp
    st, _, resp = c.register(auth_key=key)
    assert st == 200 and "Hostinfo too large" in resp.get("Error", ""), (st, resp)
    assert pending(s) == 0
    assert s.api_ok("GET", "/api/v1/node")["nodes"] == []
    # A pending registration keeps the client's identity, at most 4 KiB of it: what map
    # requests resend (here 12 KB of routes) is left out, a padded identity refused.
    routes = [f"10.{k // 256}.{k % 256}.0/24" for k in range(600)]
    c.hostinfo = {"Hostname": "fits", "OS": "linux", "DeviceModel": "x" * (3 * KIB),
                  "RoutableIPs": routes, "RequestTags": []}
    url = start_login(c)
    assert pending(s) == 1
    c.hostinfo = {"Hostname": "padded", "OS": "linux", "DeviceModel": "x" * (5 * KIB)}
    st, _, resp = c.register()
    assert st == 200 and "Hostinfo too large for a login" in resp.get("Error", ""), (st, resp)
    assert pending(s) == 1
    # The node an operator makes of it is complete once its first map request comes.
    user = s.create_user()
    s.cli_ok("nodes", "register", "--user", user["name"], "--key", reg_id(url))
    c.hostinfo = {"Hostname": "fits", "OS": "linux", "RoutableIPs": routes}
    assert c.lite_update() == 200
    (node,) = s.api_ok("GET", "/api/v1/node")["nodes"]
    assert node["name"] == "fits" and len(node.get("availableRoutes", [])) == 600, node
    # A pre-auth key login keeps up to 16 KiB.
    c2 = ControlClient(s.port)
    c2.hostinfo = {"Hostname": "keyed", "OS": "linux", "DeviceModel": "x" * (15 * KIB)}
    st, _, resp = c2.register(auth_key=key)
    assert st == 200 and resp.get("MachineAuthorized"), (st, resp)


def test_registered_node_reports_are_held_to_the_limits(server_factory):
    s = server_factory(overrides={"tuning": NO_RATE_LIMIT})
    _, key = user_key(s)
    viewer, node = ControlClient(s.port), ControlClient(s.port)
    for c in (viewer, node):
        c.hostinfo = {"Hostname": unique("n"), "OS": "linux"}
        st, _, resp = c.register(auth_key=key)
        assert st == 200 and resp.get("MachineAuthorized"), resp
    name = node.hostinfo["Hostname"]
    # A port list too long for the limit loses its plain ports, keeps the PeerAPI ones.
    ports = [{"Proto": "peerapi4", "Port": 40000}]
    ports += [{"Proto": "tcp", "Port": p, "Description": "daemon"} for p in range(1, 3000)]
    node.hostinfo = {"Hostname": name, "OS": "linux", "Services": ports}
    node.endpoints = [f"198.18.{i // 250}.{i % 250}:41641" for i in range(500)]
    node.endpoints += ["garbage", "[2001:db8::1]:99999"]
    assert node.lite_update() == 200
    peer = next(p for p in viewer.full_map()["Peers"] if p["Hostinfo"].get("Hostname") == name)
    assert [sv["Proto"] for sv in peer["Hostinfo"].get("Services", [])] == ["peerapi4"]
    assert len(peer["Endpoints"]) == 64, len(peer["Endpoints"])
    assert peer["Endpoints"][0] == "198.18.0.0:41641"
    # A Hostinfo too large even so is not taken; the endpoints of the same request are.
    node.hostinfo = {"Hostname": name, "OS": "linux", "DeviceModel": "y" * 100 * KIB}
    node.endpoints = ["198.18.9.9:41641"]
    assert node.lite_update() == 200
    peer = next(p for p in viewer.full_map()["Peers"] if p["Hostinfo"].get("Hostname") == name)
    assert "DeviceModel" not in peer["Hostinfo"], len(json.dumps(peer["Hostinfo"]))
    assert peer["Endpoints"] == ["198.18.9.9:41641"]


def test_rate_limit_answers_429_while_a_key_login_still_works(server_factory):
    s = server_factory(overrides={"tuning": {"register_rate_limit": 5}})
    c = ControlClient(s.port)
    sock, h2 = c.connect()
    try:
        for _ in range(5):
            start_login(c, session=h2)
        c.new_node_key()
        st, hdrs, body = c.register(session=h2)
    finally:
        sock.close()
    assert st == 429, (st, body)
    assert 1 <= int(hdrs.get("retry-after", "0")) <= 60, hdrs
    assert "too many" in body and "try again in" in body, body
    assert pending(s) == 5
    # A pre-auth key login from the same address is not counted, nor a known node coming back.
    _, key = user_key(s)
    other = ControlClient(s.port)
    st, _, resp = other.register(auth_key=key)
    assert st == 200 and resp.get("MachineAuthorized"), (st, resp)
    st, _, resp = other.register()
    assert st == 200 and resp.get("MachineAuthorized"), (st, resp)


class Waiter(threading.Thread):
    """A follow-up request held in the background → .result (status, headers, response)."""

    def __init__(self, client, url, timeout=60):
        super().__init__(daemon=True)
        self.client, self.url, self.timeout = client, url, timeout
        self.result = None
        self.error = None
        self.start()

    def run(self):
        try:
            self.result = self.client.register(followup=self.url, timeout=self.timeout)
        except Exception as e:  # noqa: BLE001 (reported by the test)
            self.error = e

    def answer(self, timeout):
        self.join(timeout)
        assert not self.is_alive(), f"follow-up for {self.url} still held after {timeout}s"
        assert self.error is None, self.error
        return self.result


def test_followups_wait_only_for_their_own_registration(server_factory):
    s = server_factory(overrides={"tuning": {"register_cache_max_entries": 3,
                                             "register_cache_expiration": "8s",
                                             **NO_RATE_LIMIT}})
    a, b = ControlClient(s.port), ControlClient(s.port)
    url_a = start_login(a)
    # Another machine may not wait on it (nor learn anything of it).
    st, _, resp = b.register(followup=url_a, timeout=10)
    assert st == 200 and resp.get("Error") == "unknown login URL", (st, resp)
    # A login URL never handed out is not held: a fresh one comes back at once.
    fake = s.config["server_url"] + "/register/hskey-authreq-" + "0" * 24
    st, _, resp = b.register(followup=fake, timeout=10)
    assert st == 200 and resp.get("AuthURL") not in (None, "", fake), (st, resp)
    # Its own machine waits until an operator registers it.
    w = Waiter(a, url_a)
    w.join(1.5)
    assert w.is_alive(), f"answered before the operator acted: {w.result}"
    user = s.create_user()
    s.cli_ok("nodes", "register", "--user", user["name"], "--key", reg_id(url_a))
    st, _, resp = w.answer(20)
    assert st == 200 and resp.get("MachineAuthorized"), (st, resp)
    # Asking again for the same registration supersedes the older request, which is told.
    c = ControlClient(s.port)
    url_c = start_login(c)
    first = Waiter(c, url_c)
    first.join(1.0)
    second = Waiter(c, url_c, timeout=30)
    st, _, resp = first.answer(10)
    assert resp.get("Error") == "login request superseded", resp
    # A registration that expires ends the wait of its follow-up.
    st, _, resp = second.answer(20)
    assert st == 200 and "timed out" in resp.get("Error", ""), (st, resp)
    wait_for(lambda: pending(s) <= 2, "the expired registration to go", 15)
