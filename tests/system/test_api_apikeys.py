"""REST /api/v1/apikey: create (usable as Bearer), list with masked prefixes, expire by prefix
or id, delete by prefix or id; rejected inputs change nothing."""

import datetime as dt
import json

import pytest

from helpers import API_KEY_RE, assert_problem, now, parse_time, rfc3339


def _create(s, hours=1):
    body = s.api_ok("POST", "/api/v1/apikey", {"expiration": rfc3339(now() + dt.timedelta(hours=hours))})
    assert set(body) == {"apiKey"}, body
    assert API_KEY_RE.fullmatch(body["apiKey"]), body
    return body["apiKey"]


def _prefix(key):
    return key.split("-")[2]


def _find(s, key):
    mine = [k for k in s.apikeys() if k["prefix"] == f"hskey-api-{_prefix(key)}-***"]
    assert len(mine) <= 1
    return mine[0] if mine else None


def test_created_api_key_works_as_bearer(mserver):
    key = _create(mserver)
    st, body = mserver.api("GET", "/api/v1/user", key=key)
    assert st == 200, body
    assert "users" in body


def test_api_key_default_expiry_is_about_90_days(mserver):
    body = mserver.api_ok("POST", "/api/v1/apikey", {})
    key = body["apiKey"]
    k = _find(mserver, key)
    assert k is not None
    days = (parse_time(k["expiration"]) - now()).total_seconds() / 86400
    assert 89 <= days <= 91, days


def test_list_api_keys_shape_and_masking(mserver):
    key = _create(mserver, hours=5)
    st, hdrs, body = mserver.api_full("GET", "/api/v1/apikey")
    assert st == 200
    assert key[-64:] not in json.dumps(body)
    k = _find(mserver, key)
    assert k is not None, "new key not listed"
    assert {"id", "prefix", "expiration", "createdAt", "lastSeen"} <= set(k), k
    assert isinstance(k["id"], str) and k["id"].isdigit()
    exp = parse_time(k["expiration"])
    assert abs((exp - (now() + dt.timedelta(hours=5))).total_seconds()) < 120
    assert abs((parse_time(k["createdAt"]) - now()).total_seconds()) < 120
    assert k["lastSeen"] is None, "a key never used has a lastSeen"
    for other in body["apiKeys"]:
        assert other["prefix"].endswith("***"), other
        assert not API_KEY_RE.search(other["prefix"])


def test_last_seen_updated_on_use(mserver):
    key = _create(mserver)
    mserver.api_ok("GET", "/api/v1/node", key=key)
    k = _find(mserver, key)
    assert k["lastSeen"] is not None
    assert abs((parse_time(k["lastSeen"]) - now()).total_seconds()) < 120


def test_expire_api_key_by_prefix(mserver):
    key = _create(mserver)
    other = _create(mserver)
    assert mserver.api_ok("POST", "/api/v1/apikey/expire", {"prefix": _prefix(key)}) == {}
    assert mserver.api("GET", "/api/v1/user", key=key)[0] == 401
    assert mserver.api("GET", "/api/v1/user", key=other)[0] == 200
    assert parse_time(_find(mserver, key)["expiration"]) <= now() + dt.timedelta(seconds=1)


def test_expire_api_key_by_masked_prefix(mserver):
    key = _create(mserver)
    st, body = mserver.api("POST", "/api/v1/apikey/expire",
                           {"prefix": f"hskey-api-{_prefix(key)}-***"})
    assert st == 200, body
    assert mserver.api("GET", "/api/v1/user", key=key)[0] == 401


def test_expire_api_key_by_id(mserver):
    key = _create(mserver)
    kid = _find(mserver, key)["id"]
    assert mserver.api_ok("POST", "/api/v1/apikey/expire", {"id": kid}) == {}
    assert mserver.api("GET", "/api/v1/user", key=key)[0] == 401


def test_expire_api_key_both_or_neither_is_400(mserver):
    key = _create(mserver)
    k = _find(mserver, key)
    st, body = mserver.api("POST", "/api/v1/apikey/expire", {"prefix": _prefix(key), "id": k["id"]})
    assert_problem(st, body, 400, "prefix and id")
    st, body = mserver.api("POST", "/api/v1/apikey/expire", {})
    assert_problem(st, body, 400, "neither")
    assert mserver.api("GET", "/api/v1/user", key=key)[0] == 200
    assert _find(mserver, key)["expiration"] == k["expiration"]


def test_expire_unknown_api_key_is_404(mserver):
    before = mserver.apikeys_state()
    st, body = mserver.api("POST", "/api/v1/apikey/expire", {"prefix": "000000000000"})
    assert_problem(st, body, 404, "unknown prefix")
    st, body = mserver.api("POST", "/api/v1/apikey/expire", {"id": "987654321"})
    assert_problem(st, body, 404, "unknown id")
    assert mserver.apikeys_state() == before


def test_delete_api_key_by_prefix(mserver):
    key = _create(mserver)
    assert mserver.api_ok("DELETE", f"/api/v1/apikey/{_prefix(key)}") == {}
    assert _find(mserver, key) is None
    assert mserver.api("GET", "/api/v1/user", key=key)[0] == 401


def test_delete_api_key_by_id(mserver):
    key = _create(mserver)
    kid = _find(mserver, key)["id"]
    assert mserver.api_ok("DELETE", f"/api/v1/apikey?id={kid}") == {}
    assert _find(mserver, key) is None
    assert mserver.api("GET", "/api/v1/user", key=key)[0] == 401


def test_delete_unknown_api_key_is_404(mserver):
    before = mserver.apikeys_state()
    st, body = mserver.api("DELETE", "/api/v1/apikey/000000000000")
    assert_problem(st, body, 404, "delete unknown prefix")
    st, body = mserver.api("DELETE", "/api/v1/apikey?id=987654321")
    assert_problem(st, body, 404, "delete unknown id")
    assert mserver.apikeys_state() == before


def test_delete_api_key_prefix_and_id_is_400(mserver):
    key = _create(mserver)
    other = _create(mserver)
    oid = _find(mserver, other)["id"]
    st, body = mserver.api("DELETE", f"/api/v1/apikey/{_prefix(key)}?id={oid}")
    assert_problem(st, body, 400, "prefix and id")
    assert _find(mserver, key) is not None and _find(mserver, other) is not None


@pytest.mark.parametrize("exp", ["banana", "2030-02-30T00:00:00Z", "90d"])
def test_create_api_key_bad_expiration_is_400(mserver, exp):
    before = mserver.apikeys_state()
    st, body = mserver.api("POST", "/api/v1/apikey", {"expiration": exp})
    assert_problem(st, body, 400, f"expiration {exp!r}")
    assert mserver.apikeys_state() == before


def test_api_key_cannot_be_used_after_deleting_itself(mserver):
    key = _create(mserver)
    st, body = mserver.api("DELETE", f"/api/v1/apikey/{_prefix(key)}", key=key)
    assert st == 200, body
    assert mserver.api("GET", "/api/v1/apikey", key=key)[0] == 401
