"""REST nodes (empty tailnet) and policy: database mode (set/get/check, invalid input keeps the
previous policy) and file mode (read-only, returns the file)."""

import pytest

from helpers import assert_problem, now, parse_time, unique

POLICY_A = """// test policy A
{
  // everyone may talk to everyone
  "acls": [
    {"action": "accept", "src": ["*"], "dst": ["*:*"]},   // trailing comma next
  ],
}
"""

POLICY_B = """{
  /* block comment */
  "tagOwners": {"tag:web": [],},
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:80,443"],},],
}
"""

INVALID_POLICIES = [
    "{",
    "[]",
    '{"acls": [], "frobnicate": 1}',
    "not json",
    '{"acls": {"action": "accept"}}',
    '{"acls": [{"action": "dance", "src": ["*"], "dst": ["*:*"]}]}',
    '{"acls": []} trailing',
]


# ---- nodes ----

def test_node_list_empty(mserver):
    assert mserver.api_ok("GET", "/api/v1/node") == {"nodes": []}


def test_node_list_filter_by_user_empty(mserver):
    u = mserver.create_user()
    assert mserver.api_ok("GET", f"/api/v1/node?user={u['name']}")["nodes"] == []


def test_machine_list_022(mserver):
    # 0.22.3's path, 0.22.3's answer (test_api_v022.py compares it with the real one)
    assert mserver.api_ok("GET", "/api/v1/machine") == {"machines": []}


@pytest.mark.parametrize("path", ["/api/v1/node/1", "/api/v1/node/987654321",
                                  "/api/v1/machine/1"])
def test_get_unknown_node_is_404(mserver, path):
    st, body = mserver.api("GET", path)
    assert_problem(st, body, 404, path)


def test_delete_unknown_node_is_404(mserver):
    st, body = mserver.api("DELETE", "/api/v1/node/987654321")
    assert_problem(st, body, 404, "delete unknown node")


@pytest.mark.parametrize("nid", ["abc", "-1", "1.5", "0x10"])
def test_get_node_malformed_id_is_400(mserver, nid):
    st, body = mserver.api("GET", f"/api/v1/node/{nid}")
    assert_problem(st, body, 400, nid)
    assert body["code"] == 3, body


# ---- policy, database mode ----

def test_policy_lifecycle_database_mode(server_factory):
    s = server_factory()
    st, body = s.api("GET", "/api/v1/policy")
    assert_problem(st, body, 500, "no policy yet")  # headscale 0.29's answer
    assert body["code"] == 2, body
    t0 = now()
    body = s.api_ok("PUT", "/api/v1/policy", {"policy": POLICY_A})
    assert body["policy"] == POLICY_A
    assert parse_time(body["updatedAt"]) >= t0.replace(microsecond=0)
    got = s.api_ok("GET", "/api/v1/policy")
    assert got["policy"] == POLICY_A
    assert got["updatedAt"] == body["updatedAt"]
    body = s.api_ok("PUT", "/api/v1/policy", {"policy": POLICY_B})
    assert s.api_ok("GET", "/api/v1/policy")["policy"] == POLICY_B
    # the CLI sees the same text
    r = s.cli_ok("policy", "get")
    assert "block comment" in r.stdout and "tag:web" in r.stdout
    # and it survives a restart
    s.stop()
    s.start()
    assert s.api_ok("GET", "/api/v1/policy")["policy"] == POLICY_B


@pytest.mark.parametrize("bad", INVALID_POLICIES)
def test_invalid_policy_put_is_400_and_keeps_previous(mserver, bad):
    marker = f"// marker {unique()}\n"
    mserver.api_ok("PUT", "/api/v1/policy", {"policy": marker + POLICY_A})
    before = mserver.api_ok("GET", "/api/v1/policy")
    st, body = mserver.api("PUT", "/api/v1/policy", {"policy": bad})
    assert_problem(st, body, 400, f"policy {bad!r}")
    assert mserver.api_ok("GET", "/api/v1/policy") == before


@pytest.mark.parametrize("raw", [b"{", b'{"policy": 5}', b'{"nopolicy": "x"}', b"[]"])
def test_policy_put_malformed_body_is_400(mserver, raw):
    mserver.api_ok("PUT", "/api/v1/policy", {"policy": f"// {unique()}\n" + POLICY_A})
    before = mserver.api_ok("GET", "/api/v1/policy")
    st, body = mserver.api("PUT", "/api/v1/policy", raw_body=raw)
    assert_problem(st, body, 400, f"body {raw!r}")
    assert mserver.api_ok("GET", "/api/v1/policy") == before


def test_policy_check_valid_and_invalid(mserver):
    mserver.api_ok("PUT", "/api/v1/policy", {"policy": f"// {unique()}\n" + POLICY_A})
    before = mserver.api_ok("GET", "/api/v1/policy")
    assert mserver.api_ok("POST", "/api/v1/policy/check", {"policy": POLICY_B}) == {}
    for bad in INVALID_POLICIES[:3]:
        st, body = mserver.api("POST", "/api/v1/policy/check", {"policy": bad})
        assert_problem(st, body, 400, f"check {bad!r}")
    # check never stores anything
    assert mserver.api_ok("GET", "/api/v1/policy") == before


def test_cli_policy_set_and_get(mserver, tmp_path):
    text = f"// cli {unique()}\n" + POLICY_B
    p = tmp_path / "pol.hujson"
    p.write_text(text)
    mserver.cli_ok("policy", "set", "-f", str(p))
    assert mserver.api_ok("GET", "/api/v1/policy")["policy"] == text
    assert mserver.cli_ok("policy", "get").stdout.strip() == text.strip()


def test_cli_policy_set_invalid_file_is_error(mserver, tmp_path):
    mserver.api_ok("PUT", "/api/v1/policy", {"policy": f"// {unique()}\n" + POLICY_A})
    before = mserver.api_ok("GET", "/api/v1/policy")
    p = tmp_path / "bad.hujson"
    p.write_text('{"acls": [], "frobnicate": 1}')
    r = mserver.cli("policy", "set", "-f", str(p))
    assert r.returncode != 0 and "Error" in r.stderr, (r.returncode, r.stdout, r.stderr)
    r = mserver.cli("policy", "set", "-f", str(tmp_path / "missing.hujson"))
    assert r.returncode != 0 and r.stderr.strip(), (r.returncode, r.stderr)
    assert mserver.api_ok("GET", "/api/v1/policy") == before


# ---- policy, file mode ----

def test_policy_file_mode_is_read_only(server_factory):
    s = server_factory(policy_mode="file", policy_text=POLICY_B)
    got = s.api_ok("GET", "/api/v1/policy")
    assert got["policy"] == POLICY_B
    st, body = s.api("PUT", "/api/v1/policy", {"policy": POLICY_A})
    assert_problem(st, body, 400, "PUT in file mode")
    assert s.api_ok("GET", "/api/v1/policy")["policy"] == POLICY_B
    with open(s.policy_path) as f:
        assert f.read() == POLICY_B
    r = s.cli_ok("policy", "get")
    assert "tag:web" in r.stdout


def test_invalid_policy_file_refuses_to_start(server_factory):
    s = server_factory(start=False, policy_mode="file", policy_text='{"acls": [}')
    p = s.spawn()
    try:
        rc = p.wait(timeout=20)
    except Exception:
        p.kill()
        p.wait(timeout=10)
        raise AssertionError("serve with an invalid policy file did not exit")
    assert rc != 0
    assert "polic" in s.log_text().lower()
