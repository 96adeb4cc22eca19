"""Policy history and preview over REST (ours; headscale has neither), on SQLite and
PostgreSQL: every save is a version naming who saved it, a rollback stores an old text again
as the newest version and puts it in force, and a preview answers who may reach whom under a
draft for the real nodes without changing anything. Bad input is refused and changes nothing.
(test_policy_tailnet.py shows a rollback's effect on real clients.)"""

import secrets

from helpers import assert_problem, unique

OPEN = '{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}'


def closed(a, b):
    """a's nodes reach b's and not the other way; a test that passes and one that fails."""
    return ('{\n  "acls": [\n    {"action": "accept", "src": ["%s@"], "dst": ["%s@:*"]},\n  ],\n'
            '  "tests": [{"src": "%s@", "accept": ["%s@:22"]},\n'
            '            {"src": "%s@", "accept": ["%s@:22"]}],\n}\n' % (a, b, a, b, b, a))


def versions(s):
    return s.api_ok("GET", "/api/v1/policy/history")["versions"]


def node(s, user):
    key = "hskey-authreq-" + secrets.token_hex(12)
    s.api_ok("POST", "/api/v1/debug/node", {"user": user, "key": key, "name": unique("n")})
    return s.api_ok("POST", "/api/v1/auth/register", {"user": user, "authId": key})["node"]


def test_saves_are_versions_with_who_saved_them(mserver, tmp_path):
    s = mserver
    s.api_ok("PUT", "/api/v1/policy", {"policy": OPEN})
    path = tmp_path / "p.hujson"
    path.write_text(OPEN + "\n")
    s.cli_ok("policy", "set", "--file", str(path))
    v = versions(s)
    assert v[0]["savedBy"] == "cli" and v[0]["current"], v[0]
    assert v[1]["savedBy"] == s.api_key.split("-")[2], v[1]  # hskey-api-<prefix>-<secret>
    assert not v[1]["current"] and v[0]["size"] == len(OPEN) + 1, v
    one = s.api_ok("GET", f"/api/v1/policy/history/{v[1]['id']}")["version"]
    assert one["policy"] == OPEN and one["restoredFrom"] is None, one


def test_rollback_puts_the_old_text_in_force(mserver):
    s = mserver
    alice, bob = unique("alice"), unique("bob")
    for u in (alice, bob):
        s.api_ok("POST", "/api/v1/user", {"name": u})
        node(s, u)
    s.api_ok("PUT", "/api/v1/policy", {"policy": OPEN})
    old = versions(s)[0]["id"]
    s.api_ok("PUT", "/api/v1/policy", {"policy": closed(alice, bob).replace(
        '{"src": "%s@", "accept": ["%s@:22"]}' % (bob, alice), '{"src": "%s@", "deny": '
        '["%s@:22"]}' % (bob, alice))})
    r = s.api_ok("POST", f"/api/v1/policy/history/{old}/rollback")
    assert r["policy"] == OPEN
    assert s.api_ok("GET", "/api/v1/policy")["policy"] == OPEN
    v = versions(s)
    assert v[0]["id"] == r["versionId"] and v[0]["restoredFrom"] == old and v[0]["current"], v


def test_bad_input_changes_nothing(mserver):
    s = mserver
    s.api_ok("PUT", "/api/v1/policy", {"policy": OPEN})
    before, in_force = versions(s), s.api_ok("GET", "/api/v1/policy")
    for method, path, body, status in (
            ("POST", "/api/v1/policy/history/999999999/rollback", None, 404),
            ("POST", "/api/v1/policy/history/nope/rollback", None, 400),
            ("GET", "/api/v1/policy/history/999999999", None, 404),
            ("POST", "/api/v1/policy/preview", {"policy": '{\n  "acls": [\n  }'}, 400),
            ("POST", "/api/v1/policy/preview", {}, 400),
            ("POST", "/api/v1/policy/preview", {"policy": 7}, 400)):
        st, body_ = s.api(method, path, body)
        assert_problem(st, body_, status, f"{method} {path} {body!r}")
    st, body_ = s.api("POST", "/api/v1/policy/preview", {"policy": '{\n  "acls": [\n  }'})
    assert "line 3" in body_["message"], body_
    assert versions(s) == before
    assert s.api_ok("GET", "/api/v1/policy") == in_force


def test_preview_matrix_and_tests(mserver):
    s = mserver
    alice, bob = unique("alice"), unique("bob")
    ids = {}
    for u in (alice, bob):
        s.api_ok("POST", "/api/v1/user", {"name": u})
        ids[u] = node(s, u)["id"]
    s.api_ok("PUT", "/api/v1/policy", {"policy": OPEN})
    before = versions(s)
    p = s.api_ok("POST", "/api/v1/policy/preview", {"policy": closed(alice, bob)})
    m = p["matrix"]
    assert m["grouping"] == "node" and p["nodes"] == len(m["groups"]), m
    index = {g["id"]: i for i, g in enumerate(m["groups"])}
    a, b = index[ids[alice]], index[ids[bob]]
    # Open: every pair; the draft: alice's node to bob's only. Expected from the rules above.
    for g in range(len(m["groups"])):
        for h in range(len(m["groups"])):
            want_now = int(g != h)
            assert m["current"][g][h] == want_now, (g, h, m)
            assert m["draft"][g][h] == int(g == a and h == b), (g, h, m)
    assert m["changed"] == sum(m["draft"][g][h] != m["current"][g][h]
                               for g in range(len(m["groups"])) for h in range(len(m["groups"])))
    t = p["tests"]
    assert not t["passed"] and t["failed"] == 1, t
    assert t["results"][0]["passed"] and not t["results"][1]["passed"], t
    assert "expected accept" in t["results"][1]["message"], t
    assert versions(s) == before, "a preview stored nothing"
    assert s.api_ok("GET", "/api/v1/policy")["policy"] == OPEN


def test_file_mode_lists_but_does_not_roll_back(server_factory):
    s = server_factory(policy_mode="file", policy_text=OPEN)
    assert versions(s) == []
    st, body = s.api("POST", "/api/v1/policy/history/1/rollback")
    assert_problem(st, body, 400, "rollback in file mode")
    p = s.api_ok("POST", "/api/v1/policy/preview", {"policy": OPEN})
    assert p["tests"]["passed"] and p["matrix"]["changed"] == 0, p
