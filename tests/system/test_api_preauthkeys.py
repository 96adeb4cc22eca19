"""REST /api/v1/preauthkey: create (by user id, by name, with tags), list with masked keys,
filters, expire (by id and the 0.22 {user, key} form), delete; rejected inputs change nothing."""

import datetime as dt
import json

import pytest

from helpers import AUTH_KEY_RE, assert_problem, now, parse_time, rfc3339

PAK_FIELDS = {"user", "id", "key", "reusable", "ephemeral", "used", "expiration", "createdAt",
              "aclTags"}


def _create(s, **body):
    return s.api("POST", "/api/v1/preauthkey", body)


def _key(s, user, **kw):
    body = {"user": user, "expiration": rfc3339(now() + dt.timedelta(hours=1))}
    body.update(kw)
    return s.api_ok("POST", "/api/v1/preauthkey", body)["preAuthKey"]


def _prefix(key):
    return key.split("-")[2]


def test_create_preauthkey_by_user_id_shape(mserver):
    u = mserver.create_user()
    exp = now() + dt.timedelta(hours=2)
    st, body = _create(mserver, user=u["id"], reusable=True, ephemeral=False,
                       expiration=rfc3339(exp))
    assert st == 200, body
    k = body["preAuthKey"]
    assert PAK_FIELDS <= set(k), set(k)
    assert AUTH_KEY_RE.fullmatch(k["key"]), k["key"]
    assert k["user"]["id"] == u["id"] and k["user"]["name"] == u["name"]
    assert isinstance(k["id"], str) and k["id"].isdigit()
    assert k["reusable"] is True and k["ephemeral"] is False and k["used"] is False
    assert abs((parse_time(k["expiration"]) - exp).total_seconds()) < 2
    assert abs((parse_time(k["createdAt"]) - now()).total_seconds()) < 60
    assert k["aclTags"] == []


def test_create_preauthkey_by_user_name(mserver):
    u = mserver.create_user()
    st, body = _create(mserver, user=u["name"], ephemeral=True,
                       expiration=rfc3339(now() + dt.timedelta(hours=1)))
    assert st == 200, body
    k = body["preAuthKey"]
    assert k["user"] == u["name"], k  # 0.22.3's request, 0.22.3's shape: the user by name
    assert k["ephemeral"] is True and k["reusable"] is False


def test_create_preauthkey_with_tags(mserver):
    u = mserver.create_user()
    k = mserver.api_ok("POST", "/api/v1/preauthkey",
                       {"user": u["id"], "aclTags": ["tag:a", "tag:b"],
                        "expiration": rfc3339(now() + dt.timedelta(hours=1))})["preAuthKey"]
    assert sorted(k["aclTags"]) == ["tag:a", "tag:b"]
    listed = [p for p in mserver.preauthkeys() if p["id"] == k["id"]]
    assert len(listed) == 1 and sorted(listed[0]["aclTags"]) == ["tag:a", "tag:b"]


def test_create_tag_only_preauthkey_without_user(mserver):
    k = mserver.api_ok("POST", "/api/v1/preauthkey",
                       {"aclTags": ["tag:server"],
                        "expiration": rfc3339(now() + dt.timedelta(hours=1))})["preAuthKey"]
    assert AUTH_KEY_RE.fullmatch(k["key"])
    assert k["aclTags"] == ["tag:server"]


def test_keys_are_unique(mserver):
    u = mserver.create_user()
    keys = {_key(mserver, u["id"])["key"]
            for _ in range(5)}
    assert len(keys) == 5
    assert len({_prefix(k) for k in keys}) == 5


@pytest.mark.parametrize("user", ["987654321", "ghostuser"])
def test_create_preauthkey_unknown_user_is_404(mserver, user):
    before = mserver.preauthkeys()
    st, body = _create(mserver, user=user, expiration=rfc3339(now() + dt.timedelta(hours=1)))
    assert_problem(st, body, 404, f"unknown user {user}")
    assert mserver.preauthkeys() == before


@pytest.mark.parametrize("expiration", ["banana", "2024-13-45T00:00:00Z", "tomorrow", "1h",
                                        "2030-01-01"])
def test_create_preauthkey_bad_expiration_is_400(mserver, expiration):
    u = mserver.create_user()
    before = mserver.preauthkeys()
    st, body = _create(mserver, user=u["id"], expiration=expiration)
    assert_problem(st, body, 400, f"expiration {expiration!r}")
    assert mserver.preauthkeys() == before


def test_create_preauthkey_past_expiration_is_400(mserver):
    u = mserver.create_user()
    before = mserver.preauthkeys()
    st, body = _create(mserver, user=u["id"], expiration=rfc3339(now() - dt.timedelta(hours=1)))
    assert_problem(st, body, 400, "expiration in the past")
    assert mserver.preauthkeys() == before


@pytest.mark.parametrize("tags", [["foo"], ["tag:"], ["tag:ok", "bad"], ["tag:has space"],
                                  ["TAG:x"], "tag:a"])
def test_create_preauthkey_bad_tag_is_400(mserver, tags):
    u = mserver.create_user()
    before = mserver.preauthkeys()
    st, body = _create(mserver, user=u["id"], aclTags=tags,
                       expiration=rfc3339(now() + dt.timedelta(hours=1)))
    assert_problem(st, body, 400, f"tags {tags!r}")
    assert mserver.preauthkeys() == before


def test_create_preauthkey_no_user_no_tags_is_400(mserver):
    before = mserver.preauthkeys()
    st, body = _create(mserver, expiration=rfc3339(now() + dt.timedelta(hours=1)))
    assert_problem(st, body, 400, "no user, no tags")
    st, body = _create(mserver, aclTags=[], expiration=rfc3339(now() + dt.timedelta(hours=1)))
    assert_problem(st, body, 400, "no user, empty tags")
    assert mserver.preauthkeys() == before


@pytest.mark.parametrize("raw", [b"{", b"[]", b'{"user": {"id": 1}}', b'{"reusable": "yes"}'])
def test_create_preauthkey_malformed_body_is_400(mserver, raw):
    before = mserver.preauthkeys()
    st, body = mserver.api("POST", "/api/v1/preauthkey", raw_body=raw)
    assert_problem(st, body, 400, f"body {raw!r}")
    assert mserver.preauthkeys() == before


def test_list_masks_keys_and_never_shows_secret(mserver):
    u = mserver.create_user()
    k = _key(mserver, u["id"])
    st, hdrs, body = mserver.api_full("GET", "/api/v1/preauthkey")
    assert st == 200
    mine = [p for p in body["preAuthKeys"] if p["id"] == k["id"]]
    assert len(mine) == 1
    assert mine[0]["key"] == f"hskey-auth-{_prefix(k['key'])}-***"
    assert PAK_FIELDS <= set(mine[0])
    assert k["key"][-64:] not in json.dumps(body)
    for p in body["preAuthKeys"]:
        assert not AUTH_KEY_RE.search(p["key"]), p


def test_list_filter_by_user_022(mserver):
    a = mserver.create_user()
    b = mserver.create_user()
    ka = _key(mserver, a["id"])
    kb = _key(mserver, b["id"])
    body = mserver.api_ok("GET", f"/api/v1/preauthkey?user={a['name']}")
    ids = [p["id"] for p in body["preAuthKeys"]]
    assert ka["id"] in ids and kb["id"] not in ids
    assert all(p["user"] == a["name"] for p in body["preAuthKeys"])  # 0.22.3's shape


def test_list_all_contains_every_user(mserver):
    a = mserver.create_user()
    b = mserver.create_user()
    ka = _key(mserver, a["id"])
    kb = _key(mserver, b["name"])
    ids = [p["id"] for p in mserver.preauthkeys()]
    assert ka["id"] in ids and kb["id"] in ids
    assert [int(i) for i in ids] == sorted(int(i) for i in ids)


def test_expire_preauthkey_by_id(mserver):
    u = mserver.create_user()
    k = _key(mserver, u["id"])
    assert parse_time(k["expiration"]) > now()
    body = mserver.api_ok("POST", "/api/v1/preauthkey/expire", {"id": k["id"]})
    assert body == {}
    (p,) = [p for p in mserver.preauthkeys() if p["id"] == k["id"]]
    assert parse_time(p["expiration"]) <= now() + dt.timedelta(seconds=1)


def test_expire_preauthkey_user_and_key_022(mserver):
    u = mserver.create_user()
    k = _key(mserver, u["id"])
    other = _key(mserver, u["id"])
    body = mserver.api_ok("POST", "/api/v1/preauthkey/expire", {"user": u["name"], "key": k["key"]})
    assert body == {}
    keys = {p["id"]: p for p in mserver.preauthkeys()}
    assert parse_time(keys[k["id"]]["expiration"]) <= now() + dt.timedelta(seconds=1)
    assert parse_time(keys[other["id"]]["expiration"]) > now(), "the other key was expired too"


def test_expire_unknown_preauthkey_is_404(mserver):
    before = mserver.preauthkeys()
    st, body = mserver.api("POST", "/api/v1/preauthkey/expire", {"id": "987654321"})
    assert_problem(st, body, 404, "expire unknown id")
    u = mserver.create_user()
    st, body = mserver.api("POST", "/api/v1/preauthkey/expire",
                           {"user": u["name"], "key": "hskey-auth-000000000000-" + "0" * 64})
    assert_problem(st, body, 404, "expire unknown key")
    assert mserver.preauthkeys() == before


def test_expire_preauthkey_without_id_is_400(mserver):
    before = mserver.preauthkeys()
    st, body = mserver.api("POST", "/api/v1/preauthkey/expire", {})
    assert_problem(st, body, 400, "expire without id")
    st, body = mserver.api("POST", "/api/v1/preauthkey/expire", {"id": "abc"})
    assert st in (400, 404), (st, body)
    assert mserver.preauthkeys() == before


def test_expire_with_wrong_user_changes_nothing(mserver):
    a = mserver.create_user()
    b = mserver.create_user()
    k = _key(mserver, a["id"])
    st, body = mserver.api("POST", "/api/v1/preauthkey/expire", {"user": b["name"], "key": k["key"]})
    (p,) = [p for p in mserver.preauthkeys() if p["id"] == k["id"]]
    assert parse_time(p["expiration"]) > now(), "another user's key was expired"
    assert st in (400, 404), (st, body)


def test_delete_preauthkey(mserver):
    u = mserver.create_user()
    k = _key(mserver, u["id"])
    keep = _key(mserver, u["id"])
    assert mserver.api_ok("DELETE", f"/api/v1/preauthkey?id={k['id']}") == {}
    ids = [p["id"] for p in mserver.preauthkeys()]
    assert k["id"] not in ids and keep["id"] in ids


def test_delete_unknown_preauthkey_is_404(mserver):
    before = mserver.preauthkeys()
    st, body = mserver.api("DELETE", "/api/v1/preauthkey?id=987654321")
    assert_problem(st, body, 404, "delete unknown id")
    st, body = mserver.api("DELETE", "/api/v1/preauthkey")
    assert_problem(st, body, 400, "delete without id")
    assert mserver.preauthkeys() == before
