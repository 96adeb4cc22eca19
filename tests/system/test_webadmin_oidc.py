"""The web admin's sign-in through an OpenID provider: test_webadmin.py's stack (a real server
in a network namespace, headscale-webadmin, nginx with TLS, headless Chromium) with
`headscale mockoidc` beside the server in the namespace, reached by the browser through a
relay on the same port, so that one issuer URL serves the browser and the web admin.

mockoidc signs in the next user of its list at each authorization, so the tests take them in
order: ALICE (an administrator by group), BOB (verified, but no administrator), CAROL (an
administrator by e-mail address), then ALICE again."""

import os
import json
import re
import urllib.parse

import pytest
import requests

import helpers
import tailnet
from test_webadmin import SESSION_COOKIE, WAIT, Relay, Stack, png_size
from test_webadmin import pytestmark, web  # noqa: F401 (the same skip, the same fixture)
from selenium.webdriver.common.by import By  # noqa: E402

CLIENT_ID = "hs-webadmin"
CLIENT_SECRET = "wa-client-secret-0123456789"
STATE_COOKIE = "__Host-wa_oidc"
ALICE = {"Subject": "sub-alice", "Email": "alice@example.org", "EmailVerified": True,
         "PreferredUsername": "alice", "Groups": ["eng", "hs-admins"]}
BOB = {"Subject": "sub-bob", "Email": "bob@example.org", "EmailVerified": True,
       "PreferredUsername": "bob", "Groups": ["eng"]}
CAROL = {"Subject": "sub-carol", "Email": "carol@example.org", "EmailVerified": True,
         "PreferredUsername": "carol", "Groups": []}


def private_file(d, name, text):
    path = os.path.join(d, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    return path


class Provider:
    """configure hook of Stack: mockoidc in the world's namespace on a port the browser
    reaches through a relay on the same port, and the web admin's options for it."""

    def __init__(self, users):
        self.users = users
        self.relay = None
        self.issuer = None
        self.service_key = None

    def __call__(self, stack, d):
        port = helpers.free_port()
        self.issuer = f"http://127.0.0.1:{port}/oidc"
        env = dict(os.environ, MOCKOIDC_CLIENT_ID=CLIENT_ID, MOCKOIDC_CLIENT_SECRET=CLIENT_SECRET,
                   MOCKOIDC_ADDR="127.0.0.1", MOCKOIDC_PORT=str(port),
                   MOCKOIDC_USERS=json.dumps(self.users), MOCKOIDC_ACCESS_TTL="1h")
        tailnet.Proc(stack.world.ns, "mockoidc", [helpers.HS_BIN, "mockoidc"],
                     os.path.join(d, "mockoidc.log"), env=env).start()
        tailnet.poll(lambda: stack.world.ns.http(
            "GET", "127.0.0.1", port, "/oidc/.well-known/openid-configuration")[0] == 200,
            20, "mockoidc in the namespace")
        self.relay = Relay(stack.world.ns, port, listen=port)
        srv = stack.world.server
        st, body = srv.api("POST", "/api/v1/apikey", {"expiration": "2099-01-01T00:00:00Z"})
        assert st == 200, body
        self.service_key = body["apiKey"]
        return ["--public-url", stack.url, "--oidc-issuer", self.issuer,
                "--oidc-client-id", CLIENT_ID, "--oidc-name", "Example ID",
                "--oidc-scope", "openid profile email groups",
                "--oidc-client-secret-file", private_file(d, "oidc-secret", CLIENT_SECRET),
                "--api-key-file", private_file(d, "api-key", self.service_key),
                "--oidc-admin-group", "hs-admins", "--oidc-admin-email", "Carol@Example.org",
                "--oidc-admin-user", "https://elsewhere.example/sub-bob"]


@pytest.fixture(scope="module")
def stack(db, tmp_path_factory):
    """test_webadmin's stack with the provider (its `web` fixture takes this one)."""
    provider = Provider([ALICE, BOB, CAROL] + [ALICE] * 8)
    with Stack(tmp_path_factory.mktemp(f"webadmin-oidc-{db.kind}"), db, provider) as s:
        s.provider = provider
        try:
            yield s
        finally:
            if provider.relay:
                provider.relay.close()


def api_keys(web):
    return {k["prefix"]: k for k in web.world.server.api_ok("GET", "/api/v1/apikey")["apiKeys"]}


def expired(rfc3339):
    return helpers.parse_time(rfc3339) <= helpers.now()


def test_admin_signs_in_through_the_provider(web):
    """ALICE, of the admin group: the button → mockoidc → the callback → the nodes page. Her
    session's API key is a new one, listed on the API keys page, expiring with the session."""
    before = api_keys(web)
    web.driver.delete_all_cookies()
    web.go("/admin/signin")
    button = web.driver.find_element(By.ID, "signin_oidc")
    assert button.text == "Sign in with Example ID"
    assert web.driver.find_element(By.ID, "api_key"), "the API key form stays"
    web.shot("signin-oidc")
    assert png_size(os.path.join(web.shots, "signin-oidc.png")) == (1280, 800)
    button.click()
    tailnet.poll(lambda: web.driver.current_url.rstrip("/").endswith("/admin"), WAIT,
                 f"the overview after the provider (at {web.driver.current_url})")
    assert web.session_cookie(), "no session"
    web.go("/admin/nodes")
    assert web.driver.current_url.endswith("/admin/nodes") and "Nodes" in web.text()
    assert web.driver.find_element(By.ID, "signout")
    minted = set(api_keys(web)) - set(before)
    assert len(minted) == 1, (before, api_keys(web))
    prefix = minted.pop()
    web.go("/admin/apikeys")
    assert prefix in web.text()
    key = api_keys(web)[prefix]
    expires = (helpers.parse_time(key["expiration"])
               - helpers.parse_time(key["createdAt"])).total_seconds()
    assert 11.9 * 3600 < expires < 12.1 * 3600, key  # --session-max's default
    # the state cookie was spent at the callback
    assert web.driver.get_cookie(STATE_COOKIE) is None


def test_not_an_administrator_is_refused(web):
    """BOB is verified at the provider but named in no list (the --oidc-admin-user with his
    subject is another issuer's): the refusal page and no session."""
    before = api_keys(web)
    web.driver.delete_all_cookies()
    web.go("/admin/signin")
    web.driver.find_element(By.ID, "signin_oidc").click()
    web.wait_text("Not an administrator")
    assert web.driver.find_element(By.ID, "who").text == BOB["Email"]
    web.shot("not-an-administrator")
    assert not web.session_cookie()
    assert set(api_keys(web)) == set(before), "a key was made for a refused user"
    web.go("/admin/nodes")
    assert web.driver.current_url.endswith("/admin/signin")


def http_sign_in(web):
    """CAROL's sign-in with a plain HTTP client → (callback URL, state cookie, answer)."""
    r = requests.get(web.url + "/admin/oidc/start", verify=False, allow_redirects=False,
                     timeout=10)
    assert r.status_code == 303, r.text
    state = r.cookies.get(STATE_COOKIE)
    cookie_line = next(v for v in r.raw.headers.getlist("Set-Cookie") if STATE_COOKIE in v)
    assert "HttpOnly" in cookie_line and "Secure" in cookie_line and "SameSite=Lax" in cookie_line
    authorize = r.headers["Location"]
    q = urllib.parse.parse_qs(urllib.parse.urlparse(authorize).query)
    assert q["code_challenge_method"] == ["S256"] and q["state"] == [state] and q["nonce"]
    assert q["redirect_uri"] == [web.url + "/admin/oidc/callback"]
    r = requests.get(authorize, allow_redirects=False, timeout=10)
    assert r.status_code == 302, r.text
    callback = r.headers["Location"]
    answer = requests.get(callback, cookies={STATE_COOKIE: state}, verify=False,
                          allow_redirects=False, timeout=20)
    return callback, state, answer


def test_replayed_callback_is_refused(web):
    """CAROL (an administrator by e-mail address, any case) signs in once; the same callback
    again, with the same state cookie, is refused, as it is in a browser without the cookie."""
    callback, state, r = http_sign_in(web)
    assert r.status_code == 200 and "carol@example.org" in r.text, r.text
    assert SESSION_COOKIE in r.cookies
    keys = api_keys(web)
    again = requests.get(callback, cookies={STATE_COOKIE: state}, verify=False,
                         allow_redirects=False, timeout=20)
    assert again.status_code == 400 and "used already or expired" in again.text, again.text
    assert SESSION_COOKIE not in again.cookies
    bare = requests.get(callback, verify=False, allow_redirects=False, timeout=20)
    assert bare.status_code == 400 and "started in this browser" in bare.text
    assert SESSION_COOKIE not in bare.cookies
    assert set(api_keys(web)) == set(keys), "a replay made a key"
    # the session that did begin works
    page = requests.get(web.url + "/admin/nodes", verify=False, timeout=10,
                        cookies={SESSION_COOKIE: r.cookies[SESSION_COOKIE]})
    assert page.status_code == 200 and 'id="nodes"' in page.text


def test_sign_out_expires_the_session_key(web):
    """ALICE again: signed in, then signed out; the key made for her session is expired (the
    API says so) and the old session cookie opens nothing."""
    before = api_keys(web)
    web.driver.delete_all_cookies()
    web.go("/admin/signin")
    web.driver.find_element(By.ID, "signin_oidc").click()
    tailnet.poll(lambda: web.driver.current_url.rstrip("/").endswith("/admin"), WAIT,
                 "the overview after the provider")
    cookie = web.session_cookie()
    prefix, = set(api_keys(web)) - set(before)
    assert not expired(api_keys(web)[prefix]["expiration"])
    web.submit("signout")
    assert web.driver.current_url.endswith("/admin/signin")
    assert expired(api_keys(web)[prefix]["expiration"]), api_keys(web)[prefix]
    r = requests.get(web.url + "/admin/nodes", cookies={SESSION_COOKIE: cookie}, verify=False,
                     allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["Location"].endswith("/admin/signin")
    assert re.search(r"webadmin: alice@example.org signed in", web.webadmin.log(200))


def restart_webadmin(web, extra=()):
    rc = web.webadmin.stop()
    assert rc == 0, web.webadmin.log(20)
    web.webadmin.argv = web.base_argv + list(extra)
    web.webadmin.start()
    tailnet.poll(web._ready, 20, "the webadmin to answer again")


def test_a_session_ending_unused_expires_its_key(web):
    """With --session-idle 3s: ALICE signs in and leaves; the program is restarted in between
    (the sessions file keeps what is still to be done); once the session has ended, the next
    request to the web admin, anyone's, has its key expired through the API."""
    web.base_argv = list(web.webadmin.argv)
    try:
        restart_webadmin(web, ["--session-idle", "3s"])
        before = api_keys(web)
        _, _, r = http_sign_in(web)
        assert r.status_code == 200 and "alice@example.org" in r.text, r.text
        cookie = r.cookies[SESSION_COOKIE]
        prefix, = set(api_keys(web)) - set(before)
        restart_webadmin(web, ["--session-idle", "3s"])
        assert not expired(api_keys(web)[prefix]["expiration"])

        def key_expired():
            requests.get(web.url + "/admin/signin", verify=False, timeout=10)
            return expired(api_keys(web)[prefix]["expiration"])
        tailnet.poll(key_expired, 30, "the unused session's key to expire")
        r = requests.get(web.url + "/admin/nodes", cookies={SESSION_COOKIE: cookie},
                         verify=False, allow_redirects=False, timeout=10)
        assert r.status_code == 303 and r.headers["Location"].endswith("/admin/signin")
    finally:
        restart_webadmin(web)
