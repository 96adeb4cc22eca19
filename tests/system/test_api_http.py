"""REST API plumbing: /health, OpenAPI, API-key authentication over TCP, the unix socket
without a key, unknown paths, wrong methods and oversized bodies."""

import os
import stat
import subprocess

import pytest

from helpers import API_KEY_RE, assert_problem, unique


def test_health_passes_without_key(mserver):
    st, hdrs, body = mserver.api_full("GET", "/health", key=None)
    assert st == 200
    assert body == {"status": "pass"}


def test_openapi_served_without_key(mserver):
    st, hdrs, body = mserver.api_full("GET", "/api/v1/openapi.json", key=None)
    assert st == 200, body
    assert isinstance(body, dict) and body.get("swagger") == "2.0", body
    assert "json" in hdrs.get("content-type", "")
    assert "paths" in body and "/api/v1/user" in body["paths"]


def _assert_401(st, hdrs, body, what):
    """headscale 0.29.3's answer, word for word: it tells no caller why its key failed."""
    assert st == 401, f"{what}: expected 401, got {st} {body!r}"
    assert body == "Unauthorized", f"{what}: 401 body: {body!r}"
    assert hdrs.get("content-type") == "text/plain; charset=utf-8", hdrs


@pytest.mark.parametrize("path", ["/api/v1/user", "/api/v1/apikey", "/api/v1/preauthkey",
                                  "/api/v1/node", "/api/v1/policy"])
def test_api_without_key_is_401(mserver, path):
    st, hdrs, body = mserver.api_full("GET", path, key=None)
    _assert_401(st, hdrs, body, f"GET {path} without key")


@pytest.mark.parametrize("header", [
    "Bearer garbage",
    "Bearer ",
    "Bearer hskey-api-000000000000-" + "0" * 64,   # well-formed, unknown
    "Bearer hskey-api-zzzz",
    "Basic dXNlcjpwYXNz",
    "hskey-api-000000000000-" + "0" * 64,          # no scheme
])
def test_api_with_bad_key_is_401(mserver, header):
    st, hdrs, body = mserver.api_full("GET", "/api/v1/user", key=None,
                                      headers={"Authorization": header})
    _assert_401(st, hdrs, body, f"Authorization: {header!r}")


def test_api_known_prefix_wrong_secret_is_401(mserver):
    r = mserver.cli_ok("apikeys", "create", "-e", "1h")
    key = API_KEY_RE.search(r.stdout).group(0)
    forged = key[:-64] + ("0" * 64 if key[-64:] != "0" * 64 else "1" * 64)
    st, hdrs, body = mserver.api_full("GET", "/api/v1/user", key=forged)
    _assert_401(st, hdrs, body, "right prefix, wrong secret")
    st, _, _ = mserver.api_full("GET", "/api/v1/user", key=key)
    assert st == 200


def test_unauthenticated_post_changes_nothing(mserver):
    name = unique()
    st, _, _ = mserver.api_full("POST", "/api/v1/user", {"name": name}, key=None)
    assert st == 401
    st, _, _ = mserver.api_full("POST", "/api/v1/user", {"name": name}, key="garbage")
    assert st == 401
    assert name not in mserver.user_names()


def test_expired_api_key_is_401(mserver):
    r = mserver.cli_ok("apikeys", "create", "-e", "1h")
    key = API_KEY_RE.search(r.stdout).group(0)
    assert mserver.api("GET", "/api/v1/user", key=key)[0] == 200
    prefix = key[len("hskey-api-"):len("hskey-api-") + 12]
    mserver.cli_ok("apikeys", "expire", "-p", prefix)
    st, hdrs, body = mserver.api_full("GET", "/api/v1/user", key=key)
    _assert_401(st, hdrs, body, "expired key")


def test_unix_socket_needs_no_key(mserver):
    name = unique()
    st, body = mserver.api("POST", "/api/v1/user", {"name": name}, unix=True)
    assert st == 200, body
    assert body["user"]["name"] == name
    st, body = mserver.api("GET", "/api/v1/user", unix=True)
    assert st == 200
    assert name in [u["name"] for u in body["users"]]


def test_unix_socket_with_curl(mserver):
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "--unix-socket",
                        mserver.socket_path, "http://localhost/api/v1/apikey"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert '"apiKeys"' in r.stdout


def test_unix_socket_file_mode(mserver):
    mode = stat.S_IMODE(os.stat(mserver.socket_path).st_mode)
    assert stat.S_ISSOCK(os.stat(mserver.socket_path).st_mode)
    assert mode == 0o770, oct(mode)


def test_unix_socket_permission_setting_is_applied(server_factory):
    s = server_factory(api_key=False, overrides={"unix_socket_permission": "0700"})
    mode = stat.S_IMODE(os.stat(s.socket_path).st_mode)
    assert mode == 0o700, oct(mode)


@pytest.mark.parametrize("path", ["/api/v1/nonexistent", "/api/v1/user/1/frobnicate",
                                  "/api/v2/nothing-here", "/api/v1/"])
def test_unknown_endpoint_is_404(mserver, path):
    st, body = mserver.api("GET", path)
    assert st == 404, (st, body)


@pytest.mark.parametrize("method,path", [
    ("PATCH", "/api/v1/user"),
    ("PUT", "/api/v1/user"),
    ("DELETE", "/api/v1/user"),
    ("PUT", "/api/v1/apikey"),
    ("POST", "/api/v1/node"),
    ("DELETE", "/api/v1/policy"),
])
def test_wrong_method_is_405(mserver, method, path):
    before = mserver.users()
    st, body = mserver.api(method, path, raw_body=b"{}")
    assert st == 405, (method, path, st, body)
    assert mserver.users() == before


def test_body_over_1mib_is_413_and_changes_nothing(mserver):
    name = unique()
    pad = "x" * (1024 * 1024 + 10)
    raw = ('{"name":"%s","displayName":"%s"}' % (name, pad)).encode()
    st, body = mserver.api("POST", "/api/v1/user", raw_body=raw)
    assert st == 413, (st, str(body)[:200])
    assert body["code"] == 8 and body["status"] == 413 and body["details"] == [], body
    assert name not in mserver.user_names()
    # the server keeps serving
    assert mserver.api("GET", "/api/v1/user")[0] == 200


def test_policy_body_over_1mib_is_413(mserver):
    before = mserver.policy()
    pol = '{"acls":[]}' + " " * (1024 * 1024 + 1)
    st, body = mserver.api("PUT", "/api/v1/policy", {"policy": pol})
    assert st == 413, (st, str(body)[:200])
    assert mserver.policy() == before


@pytest.mark.parametrize("raw", [b"{", b"not json", b"[]", b"\x00\xff\xfe", b'{"name": 5}',
                                 b'"str"', b""])
def test_malformed_user_body_is_400(mserver, raw):
    before = mserver.users()
    st, body = mserver.api("POST", "/api/v1/user", raw_body=raw)
    assert_problem(st, body, 400, f"body {raw!r}")
    assert mserver.users() == before


def test_error_bodies_carry_both_shapes(mserver):
    """headscale 0.29's gateway error (what its go-swagger clients decode), typed
    application/json as 0.29 types it, with RFC 7807's members beside it."""
    st, hdrs, body = mserver.api_full("GET", "/api/v1/node/999999999")
    assert st == 404, body
    assert hdrs.get("content-type") == "application/json", hdrs
    assert body["code"] == 5 and body["details"] == [] and body["message"], body
    assert body["type"] == "about:blank" and body["title"] == "Not Found", body
    assert body["status"] == 404 and body["detail"] == body["message"], body
