"""The policy in force, in the running server: set with `headscale policy set` (database mode)
or re-read on SIGHUP (file mode); a policy that does not load or compile is refused and the
one in force stays (GET /api/v1/policy); `headscale policy check`. Its effect on maps is seen
through our own control-protocol client (tests/system/noise_client.py): peers and
PacketFilter of full maps, and the deltas live map streams get when the policy changes; the
real-traffic checks with tailscaled are in the tailnet tests."""

import os
import signal
import time

import pytest

import noise_client
from helpers import assert_problem, unique

POLICY_ALL = '{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}\n'
# The users are created per test with unique names: policies are made from them.


def policy_ab(a, b):
    """a's devices may reach b's on port 22, and the policy's own test says so."""
    return ('{\n  // %s may ssh to %s\n  "acls": [{"action": "accept", "src": ["%s@"],'
            ' "dst": ["%s@:22"]}],\n  "tests": [{"src": "%s@", "accept": ["%s@:22"]}],\n}\n'
            % (a, b, a, b, a, b))


# Fails whatever the tailnet: only port 22 is open, its test wants 80.
POLICY_FAILING_TEST = ('{"hosts": {"srv": "100.100.0.1"},'
                       ' "acls": [{"action": "accept", "src": ["*"], "dst": ["srv:22"]}],'
                       ' "tests": [{"src": "100.64.0.1", "accept": ["srv:80"]}]}\n')
POLICY_SYNTAX_ERROR = '{"acls": [}\n'


# ---------------------------------------------------------------- a control client

class Client(noise_client.ControlClient):
    """One node of a test server, registered with a pre-auth key of a user."""

    def __init__(self, server):
        super().__init__(server.port)
        self.server = server

    def register(self, user_id, request_tags=None, refused=False):
        """Registers with a pre-auth key of the user (Hostinfo.RequestTags when given);
        refused=True expects the server to say no → its RegisterResponse."""
        key = self.server.cli_json("preauthkeys", "-u", str(user_id), "create",
                                   "-e", "1h")["key"]
        hostinfo = {"Hostname": unique("n"), "OS": "linux"}
        if request_tags is not None:
            hostinfo["RequestTags"] = request_tags
        self.hostinfo = hostinfo
        st, _, resp = super().register(auth_key=key)
        assert st == 200, (st, resp)
        if refused:
            assert not resp.get("MachineAuthorized") and resp.get("Error"), resp
            return resp
        assert resp.get("MachineAuthorized"), resp
        self.hostinfo = {"Hostname": "h", "OS": "linux"}
        self.id = self.full_map()["Node"]["ID"]
        return self


def peer_ids(full):
    return sorted(p["ID"] for p in full.get("Peers") or [])


def told(msgs, before):
    """The peer ids and last PacketFilter a node holds after msgs, from the peers it had. A node
    whose session pins no compiled policy yet (no batch since its first map) is sent a whole
    map instead of a delta after a policy change; that replaces its peers."""
    peers, pf = set(before), None
    for m in msgs:
        if "Peers" in m:
            peers = {p["ID"] for p in m["Peers"] or []}
        peers |= {p["ID"] for p in m.get("PeersChanged") or []}
        peers -= set(m.get("PeersRemoved") or [])
        if "PacketFilter" in m:
            pf = m["PacketFilter"]
    return peers, pf


def merged(msgs):
    """What a run of deltas says: peers added/removed, the last PacketFilter (or None)."""
    added, removed, pf = set(), set(), None
    for m in msgs:
        added |= {p["ID"] for p in m.get("PeersChanged") or []}
        removed |= set(m.get("PeersRemoved") or [])
        if "PacketFilter" in m:
            pf = m["PacketFilter"]
    return added, removed, pf


def allows_all(pf):
    """Some rule opens every port of every address (the sources are "*" without a policy,
    the tailnet's ranges with one that says "*")."""
    return any(d.get("IP") == "*" and d.get("Ports") == {"First": 0, "Last": 65535}
               for r in pf or [] for d in r.get("DstPorts") or [])


@pytest.fixture
def clients():
    made = []

    def make(server, user_id):
        c = Client(server).register(user_id)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def wait_for(pred, what, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------- database mode

def test_policy_set_takes_effect_and_bad_one_keeps_old(server_factory, clients, tmp_path):
    s = server_factory()
    alice, bob = s.create_user(), s.create_user()
    a = clients(s, alice["id"])
    b = clients(s, bob["id"])
    a2 = clients(s, alice["id"])
    full = a.full_map()
    assert peer_ids(full) == sorted([b.id, a2.id]), "no policy: everyone sees everyone"
    assert allows_all(full["PacketFilter"])
    for c in (a, b, a2):
        c.open_stream()
    for c in (a, b, a2):
        c.drain()

    good = policy_ab(alice["name"], bob["name"])
    f = tmp_path / "good.hujson"
    f.write_text(good)
    r = s.cli_ok("policy", "check", "-f", str(f))
    assert "tests pass" in r.stdout
    r = s.cli_ok("policy", "set", "-f", str(f))
    assert "policy is in force" in r.stdout
    assert s.api_ok("GET", "/api/v1/policy")["policy"] == good

    # alice's devices reach bob's: a and a2 see b, not each other; b sees both.
    added, removed, pf = merged(a.drain())
    assert removed == {a2.id} and not added, (added, removed)
    assert pf == [], "nothing may reach alice's laptop any more: an empty filter"
    assert told(a2.drain(), {a.id, b.id}) == ({b.id}, [])  # a delta or a whole map
    added, removed, pf = merged(b.drain())
    assert not added and not removed, "bob's node sees the same peers"
    assert pf and not allows_all(pf), f"port 22 from alice only: {pf}"
    assert any(d["Ports"]["First"] == 22 for rule in pf for d in rule["DstPorts"]), pf
    assert peer_ids(a.full_map()) == [b.id]
    assert peer_ids(b.full_map()) == sorted([a.id, a2.id])

    # The same policy in other words (a comment more): nobody is told anything.
    f.write_text("// reworded\n" + good)
    s.cli_ok("policy", "set", "-f", str(f))
    for c in (a, b, a2):
        assert c.drain(quiet=1.0) == [], f"node {c.id}: no change, no message"

    # Refused: its own test fails, or it does not parse. Nothing stored, nothing sent.
    before = s.api_ok("GET", "/api/v1/policy")
    for bad in (POLICY_FAILING_TEST, POLICY_SYNTAX_ERROR):
        f.write_text(bad)
        r = s.cli("policy", "check", "-f", str(f))
        assert r.returncode != 0 and "Error" in r.stderr, (r.stdout, r.stderr)
        r = s.cli("policy", "set", "-f", str(f))
        assert r.returncode != 0 and "Error" in r.stderr, (r.stdout, r.stderr)
        st, body = s.api("PUT", "/api/v1/policy", {"policy": bad})
        assert_problem(st, body, 400, f"PUT {bad!r}")
        st, body = s.api("POST", "/api/v1/policy/check", {"policy": bad})
        assert_problem(st, body, 400, f"check {bad!r}")
    assert "test(s) failed" in s.api("PUT", "/api/v1/policy",
                                     {"policy": POLICY_FAILING_TEST})[1]["detail"]
    assert s.api_ok("GET", "/api/v1/policy") == before
    for c in (a, b, a2):
        assert c.drain(quiet=1.0) == [], f"node {c.id}: a refused policy changes nothing"

    # Back to allow-all: a and a2 see each other again, filters open up.
    f.write_text(POLICY_ALL)
    s.cli_ok("policy", "set", "-f", str(f))
    added, removed, pf = merged(a.drain())
    assert added == {a2.id} and not removed and allows_all(pf)
    added, removed, pf = merged(b.drain())
    assert not added and not removed and allows_all(pf)


def test_stored_policy_in_force_after_restart(server_factory, clients):
    s = server_factory()
    alice, bob = s.create_user(), s.create_user()
    a = clients(s, alice["id"])
    clients(s, bob["id"])
    a2 = clients(s, alice["id"])
    good = policy_ab(alice["name"], bob["name"])
    s.api_ok("PUT", "/api/v1/policy", {"policy": good})
    s.stop()
    s.start()
    assert s.api_ok("GET", "/api/v1/policy")["policy"] == good
    assert a2.id not in peer_ids(a.full_map())


# ---------------------------------------------------------------- requested tags

TAGGED_DEVICES = 2147455555


def test_requested_tags_follow_tag_owners(server_factory):
    s = server_factory()
    alice, bob = s.create_user(), s.create_user()
    pol = ('{"tagOwners": {"tag:web": ["%s@"]},'
           ' "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}' % alice["name"])
    s.api_ok("PUT", "/api/v1/policy", {"policy": pol})

    web = Client(s).register(alice["id"], request_tags=["tag:web"])
    node = web.full_map()["Node"]
    assert node.get("Tags") == ["tag:web"], node
    assert node["User"] == TAGGED_DEVICES, "a tagged node belongs to its tags"
    assert "KeyExpiry" not in node, "tagged nodes do not expire"

    resp = Client(s).register(bob["id"], request_tags=["tag:web"], refused=True)
    assert "not permitted" in resp["Error"], resp
    resp = Client(s).register(alice["id"], request_tags=["tag:web", "tag:db"], refused=True)
    assert "not permitted" in resp["Error"], resp
    names = [n.get("given_name") for n in s.cli_json("nodes", "list") or []]
    assert len(names) == 1, f"refused registrations leave no node: {names}"


# ---------------------------------------------------------------- file mode, SIGHUP

def sighup_and_wait(s, marker, before):
    s.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: s.log_text().count(marker) > before, f"log line {marker!r}")


def test_sighup_reloads_the_policy_file(server_factory, clients):
    s = server_factory(policy_mode="file", policy_text=POLICY_ALL)
    alice, bob = s.create_user(), s.create_user()
    a = clients(s, alice["id"])
    b = clients(s, bob["id"])
    a2 = clients(s, alice["id"])
    a.open_stream()
    a.drain()
    ok, refused = "reload: policy changed", "reload: policy not reloaded"

    good = policy_ab(alice["name"], bob["name"])
    write(s.policy_path, good)
    sighup_and_wait(s, ok, s.log_text().count(ok))
    assert s.api_ok("GET", "/api/v1/policy")["policy"] == good
    assert told(a.drain(), {a2.id, b.id}) == ({b.id}, [])  # a delta or a whole map
    assert peer_ids(a.full_map()) == [b.id]

    for bad, why in ((POLICY_SYNTAX_ERROR, s.policy_path),
                     (POLICY_FAILING_TEST, "test(s) failed")):
        write(s.policy_path, bad)
        sighup_and_wait(s, refused, s.log_text().count(refused))
        line = [ln for ln in s.log_text().splitlines() if refused in ln][-1]
        assert why in line, line
        assert s.api_ok("GET", "/api/v1/policy")["policy"] == good, "the old one stays"
        assert a.drain(quiet=1.0) == []
        assert peer_ids(a.full_map()) == [b.id]

    # A file that is gone is refused the same way; then a good one is taken again.
    os.unlink(s.policy_path)
    sighup_and_wait(s, refused, s.log_text().count(refused))
    assert s.api_ok("GET", "/api/v1/policy")["policy"] == good
    write(s.policy_path, POLICY_ALL)
    sighup_and_wait(s, ok, s.log_text().count(ok))
    assert s.api_ok("GET", "/api/v1/policy")["policy"] == POLICY_ALL
    added, removed, pf = merged(a.drain())
    assert added == {a2.id} and allows_all(pf)
    assert s.running


def test_policy_file_that_fails_its_tests_refuses_to_start(server_factory):
    s = server_factory(start=False, policy_mode="file", policy_text=POLICY_FAILING_TEST)
    p = s.spawn()
    try:
        rc = p.wait(timeout=20)
    except Exception:
        p.kill()
        p.wait(timeout=10)
        raise AssertionError("serve with a failing policy file did not exit")
    assert rc != 0
    assert "test(s) failed" in s.log_text() and s.policy_path in s.log_text()
