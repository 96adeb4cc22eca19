"""CLI `preauthkeys ...` and `apikeys ...` in local mode, with the 0.22 and 0.28+ flag forms,
and rejected inputs that must leave the keys as they were."""

import datetime as dt
import json

import pytest

from helpers import API_KEY_RE, AUTH_KEY_RE, assert_cli_error, now, parse_time, unique


def _user(s):
    name = unique()
    s.cli_ok("users", "create", name)
    uid = [u["id"] for u in s.users() if u["name"] == name][0]
    return name, uid


def _key_in(out):
    m = AUTH_KEY_RE.search(out)
    assert m, f"no pre-auth key in output: {out!r}"
    return m.group(0)


def _pak(s, key):
    prefix = key.split("-")[2]
    mine = [p for p in s.preauthkeys() if p["key"] == f"hskey-auth-{prefix}-***"]
    assert len(mine) == 1, (key, s.preauthkeys())
    return mine[0]


# ---- preauthkeys ----

def test_preauthkeys_create_full_flags(mserver):
    name, uid = _user(mserver)
    r = mserver.cli_ok("preauthkeys", "-u", name, "create", "--reusable", "--ephemeral",
                       "-e", "2h", "--tags", "tag:a,tag:b")
    p = _pak(mserver, _key_in(r.stdout))
    assert p["reusable"] is True and p["ephemeral"] is True and p["used"] is False
    assert sorted(p["aclTags"]) == ["tag:a", "tag:b"]
    assert p["user"]["id"] == uid
    left = (parse_time(p["expiration"]) - now()).total_seconds()
    assert 2 * 3600 - 120 < left <= 2 * 3600 + 5, left


def test_preauthkeys_create_defaults(mserver):
    name, _ = _user(mserver)
    p = _pak(mserver, _key_in(mserver.cli_ok("preauthkeys", "-u", name, "create").stdout))
    assert p["reusable"] is False and p["ephemeral"] is False and p["aclTags"] == []
    left = (parse_time(p["expiration"]) - now()).total_seconds()
    assert 3600 - 120 < left <= 3600 + 5, left  # default -e 1h


def test_preauthkeys_create_legacy_namespace_flag(mserver):
    name, uid = _user(mserver)
    p = _pak(mserver, _key_in(mserver.cli_ok("preauthkeys", "-n", name, "create").stdout))
    assert p["user"]["id"] == uid


def test_preauthkeys_create_by_user_id(mserver):
    _, uid = _user(mserver)
    p = _pak(mserver, _key_in(mserver.cli_ok("preauthkeys", "-u", uid, "create").stdout))
    assert p["user"]["id"] == uid


def test_preauthkeys_user_flag_before_subcommand(mserver):
    name, uid = _user(mserver)
    p = _pak(mserver, _key_in(mserver.cli_ok("-u", name, "preauthkeys", "create").stdout))
    assert p["user"]["id"] == uid


def test_preauthkeys_user_flag_after_subcommand(mserver):
    name, uid = _user(mserver)
    p = _pak(mserver, _key_in(mserver.cli_ok("preauthkeys", "create", "-u", name,
                                             "--reusable").stdout))
    assert p["user"]["id"] == uid and p["reusable"] is True


def test_preauthkeys_create_json_output(mserver):
    name, uid = _user(mserver)
    data = mserver.cli_json("preauthkeys", "-u", name, "create", "-e", "30m")
    assert AUTH_KEY_RE.fullmatch(data["key"]), data
    assert data["user"]["id"] == int(uid)


@pytest.mark.parametrize("alias", ["preauthkey", "authkey", "pre"])
def test_preauthkeys_aliases(mserver, alias):
    name, _ = _user(mserver)
    key = _key_in(mserver.cli_ok(alias, "-u", name, "new").stdout)
    _pak(mserver, key)


def test_preauthkeys_list_by_user_and_all(mserver):
    a, _ = _user(mserver)
    b, _ = _user(mserver)
    ka = _key_in(mserver.cli_ok("preauthkeys", "-u", a, "create").stdout)
    kb = _key_in(mserver.cli_ok("preauthkeys", "-u", b, "create").stdout)
    pa, pb = ka.split("-")[2], kb.split("-")[2]
    r = mserver.cli_ok("preauthkeys", "-u", a, "list")
    assert pa in r.stdout and pb not in r.stdout, r.stdout
    assert ka[-64:] not in r.stdout, "full secret shown by list"
    assert "ID" in r.stdout.splitlines()[0]
    r = mserver.cli_ok("preauthkeys", "list")
    assert pa in r.stdout and pb in r.stdout
    data = mserver.cli_json("preauthkeys", "list")
    assert {f"hskey-auth-{pa}-***", f"hskey-auth-{pb}-***"} <= {p["key"] for p in data}
    assert ka[-64:] not in json.dumps(data) and kb[-64:] not in json.dumps(data)


def test_preauthkeys_expire_full_key_022(mserver):
    name, _ = _user(mserver)
    key = _key_in(mserver.cli_ok("preauthkeys", "-u", name, "create").stdout)
    other = _key_in(mserver.cli_ok("preauthkeys", "-u", name, "create").stdout)
    mserver.cli_ok("preauthkeys", "-u", name, "expire", key)
    assert parse_time(_pak(mserver, key)["expiration"]) <= now() + dt.timedelta(seconds=1)
    assert parse_time(_pak(mserver, other)["expiration"]) > now()


def test_preauthkeys_expire_by_id(mserver):
    name, _ = _user(mserver)
    key = _key_in(mserver.cli_ok("preauthkeys", "-u", name, "create").stdout)
    pid = _pak(mserver, key)["id"]
    mserver.cli_ok("preauthkeys", "expire", "-i", pid)
    assert parse_time(_pak(mserver, key)["expiration"]) <= now() + dt.timedelta(seconds=1)


def test_preauthkeys_delete_by_id(mserver):
    name, _ = _user(mserver)
    key = _key_in(mserver.cli_ok("preauthkeys", "-u", name, "create").stdout)
    pid = _pak(mserver, key)["id"]
    mserver.cli_ok("preauthkeys", "delete", "-i", pid)
    assert pid not in [p["id"] for p in mserver.preauthkeys()]


def test_preauthkeys_unknown_user_is_error(mserver):
    before = mserver.preauthkeys()
    r = mserver.cli("preauthkeys", "-u", unique("ghost"), "create")
    assert r.returncode == 1 and "Error" in r.stderr, (r.returncode, r.stdout, r.stderr)
    assert not AUTH_KEY_RE.search(r.stdout)
    r = mserver.cli("preauthkeys", "-u", "987654321", "create")
    assert_cli_error(r, what="unknown user id")
    assert mserver.preauthkeys() == before


@pytest.mark.parametrize("exp", ["banana", "-1h", "0x10", "1fortnight"])
def test_preauthkeys_bad_expiration_is_error(mserver, exp):
    name, _ = _user(mserver)
    before = mserver.preauthkeys()
    r = mserver.cli("preauthkeys", "-u", name, "create", "-e", exp)
    assert_cli_error(r, what=f"-e {exp}")
    assert mserver.preauthkeys() == before


@pytest.mark.parametrize("tags", ["foo", "tag:", "tag:ok,bad"])
def test_preauthkeys_bad_tags_is_error(mserver, tags):
    name, _ = _user(mserver)
    before = mserver.preauthkeys()
    assert_cli_error(mserver.cli("preauthkeys", "-u", name, "create", "--tags", tags),
                     what=f"--tags {tags}")
    assert mserver.preauthkeys() == before


def test_preauthkeys_create_without_user_or_tags_is_error(mserver):
    before = mserver.preauthkeys()
    assert_cli_error(mserver.cli("preauthkeys", "create"), what="no user, no tags")
    assert mserver.preauthkeys() == before


def test_preauthkeys_expire_and_delete_unknown_is_error(mserver):
    name, _ = _user(mserver)
    before = mserver.preauthkeys()
    assert_cli_error(mserver.cli("preauthkeys", "expire", "-i", "987654321"), what="expire id")
    assert_cli_error(mserver.cli("preauthkeys", "-u", name, "expire",
                                 "hskey-auth-000000000000-" + "0" * 64), what="expire key")
    assert_cli_error(mserver.cli("preauthkeys", "delete", "-i", "987654321"), what="delete id")
    assert_cli_error(mserver.cli("preauthkeys", "expire"), what="expire without key")
    assert mserver.preauthkeys() == before


# ---- apikeys ----

def _api_key(out):
    m = API_KEY_RE.search(out)
    assert m, f"no API key in output: {out!r}"
    return m.group(0)


def _ak(s, key):
    prefix = key.split("-")[2]
    mine = [k for k in s.apikeys() if k["prefix"] == f"hskey-api-{prefix}-***"]
    return mine[0] if mine else None


def test_apikeys_create_works_as_bearer(mserver):
    key = _api_key(mserver.cli_ok("apikeys", "create", "-e", "30d").stdout)
    assert mserver.api("GET", "/api/v1/user", key=key)[0] == 200
    days = (parse_time(_ak(mserver, key)["expiration"]) - now()).total_seconds() / 86400
    assert 29.9 < days <= 30.01, days


def test_apikeys_create_default_90d(mserver):
    key = _api_key(mserver.cli_ok("apikeys", "create").stdout)
    days = (parse_time(_ak(mserver, key)["expiration"]) - now()).total_seconds() / 86400
    assert 89.9 < days <= 90.01, days


def test_apikeys_list(mserver):
    key = _api_key(mserver.cli_ok("apikeys", "create", "-e", "1h").stdout)
    prefix = key.split("-")[2]
    r = mserver.cli_ok("apikeys", "list")
    assert prefix in r.stdout and key[-64:] not in r.stdout
    assert "ID" in r.stdout.splitlines()[0]
    data = mserver.cli_json("api", "ls")
    assert f"hskey-api-{prefix}-***" in [k["prefix"] for k in data]


def test_apikeys_expire_by_prefix(mserver):
    key = _api_key(mserver.cli_ok("apikeys", "create", "-e", "1h").stdout)
    mserver.cli_ok("apikeys", "expire", "-p", key.split("-")[2])
    assert mserver.api("GET", "/api/v1/user", key=key)[0] == 401


def test_apikeys_expire_by_masked_prefix_as_listed(mserver):
    key = _api_key(mserver.cli_ok("apikeys", "create", "-e", "1h").stdout)
    mserver.cli_ok("apikeys", "expire", "--prefix", f"hskey-api-{key.split('-')[2]}-***")
    assert mserver.api("GET", "/api/v1/user", key=key)[0] == 401


def test_apikeys_expire_by_id(mserver):
    key = _api_key(mserver.cli_ok("apikeys", "create", "-e", "1h").stdout)
    mserver.cli_ok("apikeys", "revoke", "-i", _ak(mserver, key)["id"])
    assert mserver.api("GET", "/api/v1/user", key=key)[0] == 401


def test_apikeys_delete_by_prefix_and_id(mserver):
    k1 = _api_key(mserver.cli_ok("apikeys", "create", "-e", "1h").stdout)
    k2 = _api_key(mserver.cli_ok("apikeys", "create", "-e", "1h").stdout)
    mserver.cli_ok("apikeys", "delete", "-p", k1.split("-")[2])
    mserver.cli_ok("apikeys", "delete", "-i", _ak(mserver, k2)["id"])
    assert _ak(mserver, k1) is None and _ak(mserver, k2) is None
    assert mserver.api("GET", "/api/v1/user", key=k1)[0] == 401
    assert mserver.api("GET", "/api/v1/user", key=k2)[0] == 401


def test_apikeys_bad_input_changes_nothing(mserver):
    key = _api_key(mserver.cli_ok("apikeys", "create", "-e", "1h").stdout)
    k = _ak(mserver, key)
    before = mserver.apikeys_state()
    assert_cli_error(mserver.cli("apikeys", "create", "-e", "banana"), what="-e banana")
    assert_cli_error(mserver.cli("apikeys", "expire"), what="expire neither")
    assert_cli_error(mserver.cli("apikeys", "expire", "-p", key.split("-")[2], "-i", k["id"]),
                     what="expire both")
    assert_cli_error(mserver.cli("apikeys", "delete"), what="delete neither")
    assert_cli_error(mserver.cli("apikeys", "expire", "-p", "000000000000"), what="unknown prefix")
    assert_cli_error(mserver.cli("apikeys", "delete", "-i", "987654321"), what="unknown id")
    assert mserver.apikeys_state() == before
    assert mserver.api("GET", "/api/v1/user", key=key)[0] == 200
