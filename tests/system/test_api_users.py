"""REST /api/v1/user: create, list/filter, get (0.22 path), rename (by id and by name),
delete, and every rejected input leaving the user table as it was."""

import re

import pytest

from helpers import assert_problem, now, parse_time, unique
import datetime as dt

USER_FIELDS = {"id", "name", "createdAt", "displayName", "email", "providerId", "provider",
               "profilePicUrl"}


def test_create_user_shape(mserver):
    name = unique()
    t0 = now() - dt.timedelta(seconds=5)
    st, body = mserver.api("POST", "/api/v1/user", {"name": name})
    assert st == 200, body
    u = body["user"]
    assert USER_FIELDS <= set(u), set(u) ^ USER_FIELDS
    assert isinstance(u["id"], str) and re.fullmatch(r"[1-9][0-9]*", u["id"]), u["id"]
    assert u["name"] == name
    created = parse_time(u["createdAt"])
    assert t0 <= created <= now() + dt.timedelta(seconds=5)
    for k in ("displayName", "email", "providerId", "provider", "profilePicUrl"):
        assert u[k] == "", (k, u[k])


def test_create_user_with_profile_fields(mserver):
    name = unique()
    u = mserver.api_ok("POST", "/api/v1/user", {"name": name, "displayName": "Alice A.",
                                                "email": "alice@example.org",
                                                "pictureUrl": "https://example.org/a.png"})["user"]
    assert u["displayName"] == "Alice A."
    assert u["email"] == "alice@example.org"
    assert u["profilePicUrl"] == "https://example.org/a.png"


def test_user_ids_are_increasing(mserver):
    a = mserver.create_user()
    b = mserver.create_user()
    assert int(b["id"]) > int(a["id"])


def test_duplicate_user_is_409(mserver):
    u = mserver.create_user()
    before = mserver.users()
    st, body = mserver.api("POST", "/api/v1/user", {"name": u["name"]})
    assert_problem(st, body, 409, "duplicate user")
    assert mserver.users() == before


@pytest.mark.parametrize("name", ["", "a", "1abc", "bad name", "x/y", "-dash",
                                  "UPPER?", "emoji\u2603", "tab\tname", None, 5])
def test_invalid_user_name_is_400(mserver, name):
    before = mserver.users()
    st, body = mserver.api("POST", "/api/v1/user", {"name": name})
    assert_problem(st, body, 400, f"name {name!r}")
    assert mserver.users() == before


def test_missing_name_is_400(mserver):
    before = mserver.users()
    st, body = mserver.api("POST", "/api/v1/user", {"displayName": "x"})
    assert_problem(st, body, 400, "no name")
    assert mserver.users() == before


def test_list_users_sorted_by_id(mserver):
    mserver.create_user()
    mserver.create_user()
    users = mserver.users()
    ids = [int(u["id"]) for u in users]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    for u in users:
        assert USER_FIELDS <= set(u)


def test_list_users_filter_by_name_and_id(mserver):
    u = mserver.create_user()
    mserver.create_user()
    body = mserver.api_ok("GET", f"/api/v1/user?name={u['name']}")
    assert [x["id"] for x in body["users"]] == [u["id"]]
    body = mserver.api_ok("GET", f"/api/v1/user?id={u['id']}")
    assert [x["name"] for x in body["users"]] == [u["name"]]


def test_list_users_filter_no_match_is_empty_list(mserver):
    body = mserver.api_ok("GET", f"/api/v1/user?name={unique('nobody')}")
    assert body == {"users": []} or body.get("users") == []


def test_get_user_by_name_022_path(mserver):
    u = mserver.create_user()
    body = mserver.api_ok("GET", f"/api/v1/user/{u['name']}")
    assert body["user"]["id"] == u["id"]
    assert body["user"]["name"] == u["name"]


def test_get_unknown_user_is_404(mserver):
    st, body = mserver.api("GET", f"/api/v1/user/{unique('ghost')}")
    assert_problem(st, body, 404, "unknown user")


def test_rename_user_by_id(mserver):
    u = mserver.create_user()
    new = unique("r")
    body = mserver.api_ok("POST", f"/api/v1/user/{u['id']}/rename/{new}")
    assert body["user"]["name"] == new
    assert body["user"]["id"] == u["id"]
    names = mserver.user_names()
    assert new in names and u["name"] not in names


def test_rename_user_by_name_022(mserver):
    u = mserver.create_user()
    new = unique("r")
    body = mserver.api_ok("POST", f"/api/v1/user/{u['name']}/rename/{new}")
    assert body["user"]["name"] == new
    assert body["user"]["id"] == u["id"]
    assert [x["name"] for x in mserver.users() if x["id"] == u["id"]] == [new]


def test_rename_to_existing_name_is_409(mserver):
    a = mserver.create_user()
    b = mserver.create_user()
    before = mserver.users()
    st, body = mserver.api("POST", f"/api/v1/user/{a['id']}/rename/{b['name']}")
    assert_problem(st, body, 409, "rename onto existing name")
    assert mserver.users() == before


@pytest.mark.parametrize("bad", ["a", "1abc", "bad%20name", "-x"])
def test_rename_to_invalid_name_is_400(mserver, bad):
    a = mserver.create_user()
    before = mserver.users()
    st, body = mserver.api("POST", f"/api/v1/user/{a['id']}/rename/{bad}")
    assert_problem(st, body, 400, f"rename to {bad!r}")
    assert mserver.users() == before


def test_rename_unknown_user_is_404(mserver):
    before = mserver.users()
    st, body = mserver.api("POST", f"/api/v1/user/987654321/rename/{unique()}")
    assert_problem(st, body, 404, "rename unknown id")
    st, body = mserver.api("POST", f"/api/v1/user/{unique('ghost')}/rename/{unique()}")
    assert_problem(st, body, 404, "rename unknown name")
    assert mserver.users() == before


def test_delete_user_by_id(mserver):
    u = mserver.create_user()
    body = mserver.api_ok("DELETE", f"/api/v1/user/{u['id']}")
    assert body == {}
    assert u["name"] not in mserver.user_names()
    st, _ = mserver.api("GET", f"/api/v1/user/{u['name']}")
    assert st == 404


def test_delete_user_by_name(mserver):
    u = mserver.create_user()
    body = mserver.api_ok("DELETE", f"/api/v1/user/{u['name']}")
    assert body == {}
    assert u["id"] not in [x["id"] for x in mserver.users()]


def test_delete_unknown_user_is_404(mserver):
    before = mserver.users()
    st, body = mserver.api("DELETE", "/api/v1/user/987654321")
    assert_problem(st, body, 404, "delete unknown id")
    st, body = mserver.api("DELETE", f"/api/v1/user/{unique('ghost')}")
    assert_problem(st, body, 404, "delete unknown name")
    assert mserver.users() == before


def test_deleted_user_name_can_be_reused_with_new_id(mserver):
    u = mserver.create_user()
    mserver.api_ok("DELETE", f"/api/v1/user/{u['id']}")
    again = mserver.create_user(u["name"])
    assert again["name"] == u["name"]
    assert again["id"] != u["id"]


def test_delete_user_removes_its_preauthkeys(mserver):
    u = mserver.create_user()
    k = mserver.api_ok("POST", "/api/v1/preauthkey", {"user": u["id"]})["preAuthKey"]
    mserver.api_ok("DELETE", f"/api/v1/user/{u['id']}")
    assert k["id"] not in [p["id"] for p in mserver.preauthkeys()]


def test_rename_is_reflected_in_preauthkey_owner(mserver):
    u = mserver.create_user()
    k = mserver.api_ok("POST", "/api/v1/preauthkey", {"user": u["id"]})["preAuthKey"]
    new = unique("r")
    mserver.api_ok("POST", f"/api/v1/user/{u['id']}/rename/{new}")
    (p,) = [p for p in mserver.preauthkeys() if p["id"] == k["id"]]
    assert p["user"]["name"] == new and p["user"]["id"] == u["id"]
