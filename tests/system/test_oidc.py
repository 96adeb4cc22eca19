"""OIDC: `headscale mockoidc`, the stand-in provider, checked as any OpenID client would see it,
and node logins through it (and through a provider the test scripts itself, for the tokens a
real provider would never send).

The provider's tokens are verified here with the `cryptography` package against the key set
it publishes, independently of the C code that signs them. Node logins are driven with the
control-protocol client of noise_client.py and a plain HTTP client as the browser; a real
tailscaled logs in the same way in test_tailscale_up_through_the_provider."""

import base64
import hashlib
import json
import os
import subprocess
import time
import urllib.parse
import http.client
import threading
import http.server

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

import helpers
import tailnet
from noise_client import ControlClient

CLIENT_ID = "hs-test-client"
CLIENT_SECRET = "hs-test-secret"
ALICE = {"Subject": "sub-alice", "Email": "alice@example.org", "EmailVerified": True,
         "PreferredUsername": "alice", "Groups": ["eng", "ops"]}
BOB = {"Subject": "sub-bob", "Email": "bob@other.test", "EmailVerified": False,
       "PreferredUsername": "bob", "Groups": []}


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class MockOidc:
    """`headscale mockoidc` on 127.0.0.1:port, started with the given users."""

    def __init__(self, tmp_path, users, ttl=None, port=None):
        self.port = port or helpers.free_port()
        self.issuer = f"http://127.0.0.1:{self.port}/oidc"
        env = dict(os.environ, MOCKOIDC_CLIENT_ID=CLIENT_ID, MOCKOIDC_CLIENT_SECRET=CLIENT_SECRET,
                   MOCKOIDC_ADDR="127.0.0.1", MOCKOIDC_PORT=str(self.port),
                   MOCKOIDC_USERS=json.dumps(users))
        if ttl:
            env["MOCKOIDC_ACCESS_TTL"] = ttl
        self.log_path = tmp_path / f"mockoidc-{self.port}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([helpers.HS_BIN, "mockoidc"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        end = time.monotonic() + helpers.START_DEADLINE
        while True:
            try:
                self.discovery = self.get_json("/oidc/.well-known/openid-configuration")[1]
                break
            except OSError:
                assert self.proc.poll() is None, self.log_path.read_text()
                assert time.monotonic() < end, "mockoidc did not answer"
                time.sleep(0.1)

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()

    def get_json(self, path, headers=None):
        status, _, body = self.request("GET", path, headers=headers)
        return status, json.loads(body)

    def authorize(self, redirect="http://client.test/cb?keep=1", state="st", nonce="nc",
                  scope="openid profile email groups", challenge=None, method=None):
        q = {"scope": scope, "state": state, "client_id": CLIENT_ID, "response_type": "code",
             "redirect_uri": redirect, "nonce": nonce}
        if challenge:
            q.update(code_challenge=challenge, code_challenge_method=method)
        status, headers, body = self.request("GET", "/oidc/authorize?" + urllib.parse.urlencode(q))
        return status, headers.get("Location"), body

    def token(self, code, verifier=None, secret=CLIENT_SECRET):
        form = {"grant_type": "authorization_code", "code": code, "client_id": CLIENT_ID,
                "client_secret": secret, "redirect_uri": "http://client.test/cb"}
        if verifier:
            form["code_verifier"] = verifier
        status, _, body = self.request(
            "POST", "/oidc/token", urllib.parse.urlencode(form),
            {"Content-Type": "application/x-www-form-urlencoded"})
        return status, json.loads(body)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=helpers.STOP_DEADLINE)
        self.log.close()
        text = self.log_path.read_text(errors="replace")
        assert not helpers.sanitizer_lines(text), text


@pytest.fixture
def mock(tmp_path):
    m = MockOidc(tmp_path, [ALICE, BOB])
    yield m
    m.stop()


def verify_jwt(token, jwks):
    """Checks an RS256 JWT against the key set with `cryptography`; → its claims."""
    head, body, sig = token.split(".")
    header = json.loads(unb64url(head))
    assert header["alg"] == "RS256"
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    pub = rsa.RSAPublicNumbers(int.from_bytes(unb64url(key["e"]), "big"),
                               int.from_bytes(unb64url(key["n"]), "big")).public_key()
    pub.verify(unb64url(sig), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return json.loads(unb64url(body))


def code_from(location, state="st"):
    q = urllib.parse.parse_qs(urllib.parse.urlparse(location).query)
    assert q["state"] == [state] and q["keep"] == ["1"], location
    return q["code"][0]


def test_mockoidc_discovery_and_keys(mock):
    d = mock.discovery
    assert d["issuer"] == mock.issuer
    for name, path in (("authorization_endpoint", "/authorize"), ("token_endpoint", "/token"),
                       ("userinfo_endpoint", "/userinfo"),
                       ("jwks_uri", "/.well-known/jwks.json")):
        assert d[name] == mock.issuer + path
    assert "S256" in d["code_challenge_methods_supported"]
    status, jwks = mock.get_json("/oidc/.well-known/jwks.json")
    assert status == 200 and len(jwks["keys"]) == 1
    assert jwks["keys"][0]["kty"] == "RSA" and len(unb64url(jwks["keys"][0]["n"])) == 256


def test_mockoidc_login_with_pkce_takes_users_in_order(mock):
    _, jwks = mock.get_json("/oidc/.well-known/jwks.json")
    verifier = b64url(os.urandom(32))
    challenge = b64url(hashlib.sha256(verifier.encode()).digest())
    subjects = []
    for nonce in ("n1", "n2", "n3"):
        status, location, _ = mock.authorize(nonce=nonce, challenge=challenge, method="S256")
        assert status == 302
        code = code_from(location)
        status, tok = mock.token(code, verifier)
        assert status == 200, tok
        claims = verify_jwt(tok["id_token"], jwks)
        assert claims["iss"] == mock.issuer and claims["aud"] == [CLIENT_ID]
        assert claims["nonce"] == nonce and claims["exp"] > time.time()
        subjects.append(claims["sub"])
        if claims["sub"] == ALICE["Subject"]:
            assert claims["email"] == ALICE["Email"] and claims["email_verified"] is True
            assert claims["groups"] == ALICE["Groups"]
            assert claims["preferred_username"] == "alice"
        if claims["sub"] == BOB["Subject"]:
            assert "email_verified" not in claims  # false is left out, as the library does
        status, info = mock.get_json("/oidc/userinfo",
                                     {"Authorization": "Bearer " + tok["access_token"]})
        assert status == 200 and info["sub"] == claims["sub"]
        # The code is good once.
        status, err = mock.token(code, verifier)
        assert status == 401 and err["error"] == "invalid_grant"
    # Once the list is used up, its default user.
    assert subjects == [ALICE["Subject"], BOB["Subject"], "1234567890"]


def test_mockoidc_refuses_bad_requests(mock):
    verifier = b64url(os.urandom(32))
    challenge = b64url(hashlib.sha256(verifier.encode()).digest())
    _, location, _ = mock.authorize(challenge=challenge, method="S256")
    code = code_from(location)
    status, err = mock.token(code, b64url(os.urandom(32)))
    assert status == 401 and err["error"] == "invalid_grant"
    status, err = mock.token(code, verifier, secret="wrong")
    assert status == 401 and err["error"] == "invalid_client"
    status, tok = mock.token(code, verifier)  # the failures above did not spend the code
    assert status == 200 and tok["id_token"]
    status, _, body = mock.authorize(scope="profile email")
    assert status == 400 and json.loads(body)["error"] == "invalid_scope"
    status, _, body = mock.authorize(challenge="x", method="S512")
    assert status == 400
    head, body, sig = tok["access_token"].split(".")
    forged = b64url(json.dumps({**json.loads(unb64url(body)), "sub": "x"}).encode())
    status, err = mock.get_json("/oidc/userinfo",
                                {"Authorization": f"Bearer {head}.{forged}.{sig}"})
    assert status == 401


def test_mockoidc_needs_its_environment(tmp_path):
    base = dict(os.environ, MOCKOIDC_CLIENT_ID="c", MOCKOIDC_CLIENT_SECRET="s",
                MOCKOIDC_ADDR="127.0.0.1", MOCKOIDC_PORT=str(helpers.free_port()),
                MOCKOIDC_USERS="[]")
    for name in ("MOCKOIDC_CLIENT_ID", "MOCKOIDC_PORT", "MOCKOIDC_USERS"):
        env = {k: v for k, v in base.items() if k != name}
        r = subprocess.run([helpers.HS_BIN, "mockoidc"], env=env, capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 1 and f"{name} is not set" in r.stderr, r.stderr
    for name, value, needle in (("MOCKOIDC_USERS", "{not json", "MOCKOIDC_USERS"),
                                ("MOCKOIDC_ACCESS_TTL", "soon", "MOCKOIDC_ACCESS_TTL")):
        r = subprocess.run([helpers.HS_BIN, "mockoidc"], env={**base, name: value},
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and needle in r.stderr, r.stderr


def test_mockoidc_access_ttl(tmp_path):
    m = MockOidc(tmp_path, [ALICE], ttl="1h30m")
    try:
        _, location, _ = m.authorize()
        status, tok = m.token(code_from(location))
        assert status == 200 and tok["expires_in"] == 5400
        _, jwks = m.get_json("/oidc/.well-known/jwks.json")
        claims = verify_jwt(tok["id_token"], jwks)
        assert 5390 <= claims["exp"] - time.time() <= 5410
    finally:
        m.stop()


# ---- node logins ----

def loopback_http(method, host, port, path, headers=None, timeout=30):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


class Browser:
    """A plain HTTP client that keeps cookies per host:port and does not follow redirects;
    http is how it reaches servers (loopback here, or a namespace's Namespace.http)."""

    def __init__(self, http=loopback_http):
        self.cookies = {}
        self.http = http

    def get(self, url):
        u = urllib.parse.urlsplit(url)
        jar = self.cookies.setdefault(u.netloc, {})
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())} if jar else {}
        st, h, body = self.http("GET", u.hostname, u.port,
                                u.path + ("?" + u.query if u.query else ""), headers=headers)
        if "set-cookie" in h:
            k, _, v = h["set-cookie"].split(";", 1)[0].partition("=")
            jar[k.strip()] = v.strip()
        return st, h, body.decode(errors="replace")


def oidc_config(issuer, **extra):
    cfg = {"issuer": issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
           "scope": ["openid", "profile", "email", "groups"]}
    cfg.update(extra)
    if cfg["client_secret"] is helpers.DELETE:
        del cfg["client_secret"]
    return {"oidc": cfg}


def start_login(server, hostname=None):
    """A control client asking to log in without a key → (client, AuthURL)."""
    c = ControlClient(server.port)
    c.hostinfo = {"Hostname": hostname or helpers.unique("h"), "OS": "linux"}
    st, _, resp = c.register()
    assert st == 200 and resp.get("AuthURL"), (st, resp)
    return c, resp["AuthURL"]


def browse_login(auth_url, browser=None):
    """Follows the AuthURL as a browser would: server → provider → callback.
    → (status, page, the provider's authorization URL)."""
    b = browser or Browser()
    st, h, body = b.get(auth_url)
    assert st == 302, (st, body)
    authorize = h["location"]
    st, h, body = b.get(authorize)
    assert st == 302, (st, body)
    st, _, page = b.get(h["location"])
    return st, page, authorize


def users_by_name(server):
    return {u["name"]: u for u in server.users()}


def test_login_through_the_provider(server_factory, tmp_path):
    """A node logs in as the provider's user: the waiting client is answered, the user is
    created once from the claims (identified by issuer and subject), logging in again finds
    the same user."""
    m = MockOidc(tmp_path, [ALICE, ALICE], ttl="1h")
    secret = tmp_path / "secret"
    secret.write_text(CLIENT_SECRET + "\n")
    try:
        s = server_factory(overrides=oidc_config(
            m.issuer, client_secret=helpers.DELETE, client_secret_path=str(secret),
            pkce={"enabled": True, "method": "S256"}, use_expiry_from_token=True,
            extra_params={"domain_hint": "example.org"}))
        c, url = start_login(s, "laptop")
        st, page, authorize = browse_login(url)
        assert st == 200 and "laptop" in page and "alice" in page, page
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(authorize).query)
        assert q["code_challenge_method"] == ["S256"] and q["domain_hint"] == ["example.org"]
        assert q["redirect_uri"] == [f"http://127.0.0.1:{s.port}/oidc/callback"]
        st, _, resp = c.register(followup=url)
        assert st == 200 and resp["MachineAuthorized"] is True, resp
        alice = users_by_name(s)["alice"]
        assert alice["provider"] == "oidc" and alice["email"] == ALICE["Email"]
        assert alice["providerId"] == f"{m.issuer}/{ALICE['Subject']}"
        node = s.api_ok("GET", "/api/v1/node")["nodes"][0]
        assert node["user"]["name"] == "alice" and node["registerMethod"] == "REGISTER_METHOD_OIDC"
        expiry = helpers.parse_time(node["expiry"]).timestamp()
        assert 3500 < expiry - time.time() < 3700, node["expiry"]  # the token's exp
        # Again (a second device of the same person): the same user.
        c2, url2 = start_login(s, "phone")
        st, page, _ = browse_login(url2)
        assert st == 200, page
        assert [u["name"] for u in s.users()].count("alice") == 1
        assert len(s.api_ok("GET", "/api/v1/node")["nodes"]) == 2
    finally:
        m.stop()


def assert_no_node_or_user(server, users_before):
    assert server.api_ok("GET", "/api/v1/node")["nodes"] == []
    assert sorted(u["name"] for u in server.users()) == users_before


@pytest.mark.parametrize("oidc, refused, why", [
    ({"allowed_groups": ["eng"]}, BOB, "not in a group allowed"),
    ({"allowed_domains": ["example.org"]}, BOB, "not verified"),
    ({"allowed_domains": ["example.org"], "email_verified_required": False}, BOB,
     "e-mail domain may not"),
    ({"allowed_users": ["alice@example.org"], "email_verified_required": False}, BOB,
     "account may not"),
])
def test_allowed_lists(server_factory, tmp_path, oidc, refused, why):
    """Someone the allowed_* lists leave out sees a page saying why, and nothing is created;
    the login stays pending, and the next person, who is in, completes it."""
    m = MockOidc(tmp_path, [refused, ALICE])
    try:
        s = server_factory(overrides=oidc_config(m.issuer, **oidc))
        before = sorted(u["name"] for u in s.users())
        c, url = start_login(s)
        st, page, _ = browse_login(url)
        assert st == 403 and why in page and "Access refused" in page, (st, page)
        assert_no_node_or_user(s, before)
        # The login stays open: the same link, followed again, signs in the next person.
        st, page, _ = browse_login(url)
        assert st == 200, page
        assert "alice" in users_by_name(s)
        st, _, resp = c.register(followup=url)
        assert resp["MachineAuthorized"] is True, resp
    finally:
        m.stop()


def test_stray_and_replayed_callbacks(server_factory, tmp_path):
    """The callback must carry the state this browser was given, once: another browser's
    state, a replay after success, and a made-up state are refused without effect."""
    m = MockOidc(tmp_path, [ALICE, ALICE])
    try:
        s = server_factory(overrides=oidc_config(m.issuer))
        c, url = start_login(s)
        b = Browser()
        st, h, _ = b.get(url)
        st, h, _ = b.get(h["location"])
        callback = h["location"]
        st, _, page = Browser().get(callback)  # a browser without the cookie
        assert st == 400 and "started in this browser" in page, page
        st, _, page = b.get(callback)
        assert st == 200, page
        st, _, page = b.get(callback)  # the same answer again
        assert st == 400 and "used already" in page, page
        st, _, page = b.get(f"http://127.0.0.1:{s.port}/oidc/callback?state=x&code=y")
        assert st == 400
        assert len(s.api_ok("GET", "/api/v1/node")["nodes"]) == 1
    finally:
        m.stop()


def test_unreachable_issuer(server_factory, tmp_path):
    """only_start_if_oidc_is_available (the default) refuses to start while the provider does
    not answer, saying so; without it the server starts, logins say the provider is away,
    and work once it is back."""
    port = helpers.free_port()
    issuer = f"http://127.0.0.1:{port}/oidc"
    s = server_factory(start=False, overrides=oidc_config(issuer))
    r = s.cli("serve", timeout=60)
    assert r.returncode != 0
    assert "not starting" in r.stdout + r.stderr and issuer in r.stdout + r.stderr, r
    s2 = server_factory(overrides=oidc_config(issuer, only_start_if_oidc_is_available=False))
    assert "logins will try again" in s2.log_text()
    c, url = start_login(s2)
    st, _, page = Browser().get(url)
    assert st == 503 and "cannot be reached" in page, page
    m = MockOidc(tmp_path, [ALICE], port=port)
    try:
        st, page, _ = browse_login(url)
        assert st == 200, page
        st, _, resp = c.register(followup=url)
        assert resp["MachineAuthorized"] is True, resp
    finally:
        m.stop()


def test_legacy_layout_login(server_factory, db, tmp_path):
    """A headscale 0.22.3 config: the user a login creates is named after the e-mail address
    without its domain (strip_email_domain, true by default there), an unverified address is
    taken (0.22.3 did not check), and the node's key lasts oidc.expiry."""
    from test_config import LEGACY_DB, LEGACY_POLICY, LEGACY_SQLITE
    carol = {"Subject": "sub-carol", "Email": "Carol.X@example.org", "EmailVerified": False,
             "PreferredUsername": "c", "Groups": []}
    m = MockOidc(tmp_path, [carol])
    try:
        text = LEGACY_SQLITE.replace("{db}", LEGACY_DB[db.kind]) + (
            f"oidc:\n  issuer: {m.issuer}\n  client_id: {CLIENT_ID}\n"
            f"  client_secret: {CLIENT_SECRET}\n  expiry: 30d\n")
        s = server_factory(start=False, raw_config=text)
        with open(os.path.join(s.tmp, "acl.hujson"), "w") as f:
            f.write(LEGACY_POLICY)
        s.start()
        s.ensure_api_key()
        c, url = start_login(s, "desk")
        st, page, _ = browse_login(url)
        assert st == 200 and "carol.x" in page, page
        user = users_by_name(s)["carol.x"]
        assert user["email"] == carol["Email"]
        node = s.api_ok("GET", "/api/v1/node")["nodes"][0]
        days = (helpers.parse_time(node["expiry"]).timestamp() - time.time()) / 86400
        assert 29.9 < days < 30.1, node["expiry"]
    finally:
        m.stop()


# ---- a provider the test scripts: tokens no real provider would send ----

def jwk_rsa(pub, kid):
    n = pub.public_numbers()
    return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": b64url(n.n.to_bytes(256, "big")), "e": b64url(n.e.to_bytes(3, "big"))}


def jwk_ec(pub, kid):
    n = pub.public_numbers()
    return {"kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
            "x": b64url(n.x.to_bytes(32, "big")), "y": b64url(n.y.to_bytes(32, "big"))}


class ScriptedProvider:
    """Serves discovery, a key set and a token endpoint whose answers the test sets."""

    def __init__(self):
        self.port = helpers.free_port()
        self.issuer = f"http://127.0.0.1:{self.port}/idp"
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.discovery = json.dumps({
            "issuer": self.issuer, "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token", "jwks_uri": self.issuer + "/jwks"}).encode()
        self.jwks = json.dumps({"keys": [jwk_rsa(self.rsa.public_key(), "r1"),
                                         jwk_ec(self.ec.public_key(), "e1")]}).encode()
        self.token_body = b"{}"
        self.jwks_fetches = 0
        provider = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def reply(self, body):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path.endswith("/.well-known/openid-configuration"):
                    return self.reply(provider.discovery)
                if self.path.endswith("/jwks"):
                    provider.jwks_fetches += 1
                    return self.reply(provider.jwks)
                self.send_error(404)

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.reply(provider.token_body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def claims(self, nonce, **over):
        now = int(time.time())
        c = {"iss": self.issuer, "aud": CLIENT_ID, "sub": "s-1", "exp": now + 600, "iat": now,
             "nonce": nonce, "email": "dana@example.org", "email_verified": True,
             "preferred_username": "dana"}
        c.update(over)
        return c

    def sign(self, claims, alg="RS256", kid="r1", key=None):
        head = b64url(json.dumps({"alg": alg, "kid": kid, "typ": "JWT"}).encode())
        body = b64url(json.dumps(claims).encode())
        msg = f"{head}.{body}".encode()
        if alg == "ES256":
            r, s = decode_dss_signature((key or self.ec).sign(msg, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        elif alg == "none":
            sig = b""
        elif alg == "HS256":  # keyed with the public key: the classic algorithm confusion
            sig = hashlib.sha256(b"public key" + msg).digest()
        else:
            sig = (key or self.rsa).sign(msg, padding.PKCS1v15(), hashes.SHA256())
        return f"{head}.{body}.{b64url(sig)}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted():
    p = ScriptedProvider()
    yield p
    p.close()


def scripted_login(server, provider, make_token):
    """A login whose token endpoint answers with make_token(nonce) (a token, or the whole
    body as bytes) → (status, page)."""
    _, url = start_login(server)
    b = Browser()
    st, h, _ = b.get(url)
    assert st == 302
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(h["location"]).query)
    tok = make_token(q["nonce"][0])
    provider.token_body = tok if isinstance(tok, bytes) else json.dumps(
        {"id_token": tok, "access_token": "at", "token_type": "bearer"}).encode()
    st, _, page = b.get(f"http://127.0.0.1:{server.port}/oidc/callback?"
                        + urllib.parse.urlencode({"state": q["state"][0], "code": "c"}))
    return st, page


def test_tokens_that_must_be_refused(server_factory, scripted):
    """Each bad ID token is refused with a page naming what is wrong, and creates nothing; an
    ES256 token from the same provider is taken."""
    p = scripted
    s = server_factory(overrides=oidc_config(p.issuer))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = [
        ("signature does not verify", lambda n: p.sign(p.claims(n), key=other)),
        ("issued for another client", lambda n: p.sign(p.claims(n, aud="someone-else"))),
        ("has expired", lambda n: p.sign(p.claims(n, exp=int(time.time()) - 3600))),
        ("not valid yet", lambda n: p.sign(p.claims(n, nbf=int(time.time()) + 3600))),
        ("issued by someone else", lambda n: p.sign(p.claims(n, iss="http://evil.test"))),
        ("nonce is not this login", lambda n: p.sign(p.claims("not-" + n))),
        ("not a signed JWT", lambda n: p.sign(p.claims(n), alg="none")),
        ("not RS256 or ES256", lambda n: p.sign(p.claims(n), alg="HS256")),
        ("no usable key", lambda n: p.sign(p.claims(n), kid="rolled-away")),
        ("longer than", lambda n: p.sign(p.claims(n, pad="x" * 20000))),
        ("larger than", lambda n: json.dumps({"id_token": "a" * (10 << 20)}).encode()),
        ("not a JSON object", lambda n: b"<html>oops</html>"),
    ]
    for why, make in cases:
        fetches = p.jwks_fetches
        st, page = scripted_login(s, p, make)
        assert st in (400, 502) and why in page, (why, st, page)
        if why == "no usable key":
            assert p.jwks_fetches == fetches + 1  # looked for a rolled key once
    assert s.api_ok("GET", "/api/v1/node")["nodes"] == []
    assert "dana" not in users_by_name(s)
    st, page = scripted_login(s, p, lambda n: p.sign(p.claims(n), alg="ES256", kid="e1"))
    assert st == 200 and "dana" in page, page


@pytest.mark.parametrize("discovery, jwks, why", [
    (b"{not json", None, "not a JSON object"),
    (b'{"issuer": "http://elsewhere.test/idp"}', None, "names the issuer"),
    (None, b'{"no": "keys"}', 'no "keys" list'),
])
def test_bad_provider_documents_stop_the_start(server_factory, scripted, discovery, jwks, why):
    if discovery:
        scripted.discovery = discovery
    if jwks:
        scripted.jwks = jwks
    s = server_factory(start=False, overrides=oidc_config(scripted.issuer))
    r = s.cli("serve", timeout=60)
    assert r.returncode != 0 and why in r.stdout + r.stderr, r


# ---- a real client ----

MOCK_PORT = 5556  # mockoidc inside the world's own network namespace


def real_client_version():
    version = tailnet.versions()[0]
    if os.geteuid() != 0:
        pytest.skip("tailnet tests need root (ip netns)")
    if not tailnet.have_version(version):
        pytest.skip(f"Tailscale {version} not built in {tailnet.TS_CACHE}/{version}")
    return version


def mock_in_namespace(tmp_path, users):
    """server_setup hook: mockoidc with these users in the world's namespace, and the server
    configured to log in through it."""

    def setup(server):
        env = dict(os.environ, MOCKOIDC_CLIENT_ID=CLIENT_ID, MOCKOIDC_CLIENT_SECRET=CLIENT_SECRET,
                   MOCKOIDC_ADDR="127.0.0.1", MOCKOIDC_PORT=str(MOCK_PORT),
                   MOCKOIDC_USERS=json.dumps(users))
        tailnet.Proc(server.ns, "mockoidc", [helpers.HS_BIN, "mockoidc"],
                     str(tmp_path / "mockoidc.log"), env=env).start()
        tailnet.poll(lambda: server.ns.http("GET", "127.0.0.1", MOCK_PORT,
                                            "/oidc/.well-known/openid-configuration")[0] == 200,
                     20, "mockoidc in the namespace")
        helpers.deep_merge(server.config, oidc_config(f"http://127.0.0.1:{MOCK_PORT}/oidc"))
        server.write_config()

    return setup


def real_login(w, node):
    """`tailscale up` without a key; its AuthURL followed through the provider by a browser in
    the world's namespace; the node Running."""
    node.up_async()
    url = tailnet.poll(lambda: (node.status(check=False) or {}).get("AuthURL"), 60,
                       f"{node.name}'s AuthURL")
    st, page, _ = browse_login(url, Browser(w.ns.http))
    assert st == 200 and node.name in page, page
    node.wait_running(timeout=60)


def relogin(w, node):
    """An operator expires the node; it logs in through the provider again → its record."""
    sn = w.server.node_by_name(node.name)
    w.server.cli_ok("nodes", "expire", "-i", sn["id"])
    node.wait_state("NeedsLogin", timeout=30)
    real_login(w, node)
    return w.server.node_by_name(node.name)


def test_tailscale_up_through_the_provider(db, tmp_path):
    """A real tailscaled: `tailscale up` shows an AuthURL, the login goes through mockoidc
    (running in the test's network namespace), the node belongs to the provider's user and
    reaches Running. Expired by an operator, it logs in through the provider again and is
    the same node."""
    with tailnet.World(tmp_path, db, real_client_version(), users=(),
                       server_setup=mock_in_namespace(tmp_path, [ALICE, ALICE])) as w:
        n = w.node("oidc-laptop")
        real_login(w, n)
        first = w.server.node_by_name(n.name)
        assert first["user"]["name"] == "alice" and first["user"]["provider"] == "oidc", first
        again = relogin(w, n)
        assert again["id"] == first["id"] and not n.status()["Self"].get("Expired")
        assert len(w.server.nodes()) == 1


def test_callback_on_another_replica(db, tmp_path):
    """Two replicas on PostgreSQL and a balancer without stickiness: the browser follows the
    AuthURL on A and the provider sends it back to B (one host for both, so its cookie goes
    along). B finds the login in the database: the node registers and reaches Running. The
    same callback again is refused on either replica."""
    from test_replicas import need_postgres, start_replica
    need_postgres(db)
    with tailnet.World(tmp_path, db, real_client_version(), users=(),
                       server_setup=mock_in_namespace(tmp_path, [ALICE, ALICE])) as w:
        a = w.server
        # One server_url for both, as behind a balancer: the provider checks redirect_uri.
        b = start_replica(w, 8081, overrides={"oidc": a.config["oidc"]},
                          server_url=a.config["server_url"])
        try:
            n = w.node("oidc-laptop")
            n.up_async()
            url = tailnet.poll(lambda: (n.status(check=False) or {}).get("AuthURL"), 60,
                               f"{n.name}'s AuthURL")
            br = Browser(w.ns.http)
            st, h, body = br.get(url)
            assert st == 302 and urllib.parse.urlsplit(url).port == a.port, (st, url, body)
            st, h, body = br.get(h["location"])
            assert st == 302, (st, body)
            on_a = urllib.parse.urlsplit(h["location"])
            assert on_a.port == a.port and on_a.path == "/oidc/callback", on_a
            on_b = on_a._replace(netloc=f"{on_a.hostname}:{b.port}")
            br.cookies[on_b.netloc] = dict(br.cookies[on_a.netloc])
            st, _, page = br.get(on_b.geturl())
            assert st == 200 and n.name in page, page
            n.wait_running(timeout=60)
            for replay in (on_b, on_a):
                st, _, page = br.get(replay.geturl())
                assert st == 400 and "used already" in page, (replay.netloc, st, page)
            assert len(a.nodes()) == 1
            assert a.node_by_name(n.name)["user"]["name"] == "alice"
        finally:
            b.stop()


# group:eng is not defined here: its members are the users the provider puts in "eng".
GROUP_POLICY = """\
{
  "acls": [
    {"action": "accept", "src": ["group:eng"], "dst": ["srv@:*"]},
    {"action": "accept", "src": ["srv@"], "dst": ["srv@:*"]},
  ],
}
"""


def test_provider_group_in_the_policy(db, tmp_path):
    """A rule on a provider group, proven by TCP through the tailnet (every node in a
    namespace of its own): alice, whom the provider puts in "eng", reaches the server node;
    then the provider takes her out of "eng" (its next login says so), and after an operator
    expires her node and she logs in again, the path is refused while another node of the
    server's user still gets through. Her profile follows the provider too."""
    from test_policy_tailnet import ECHO_PORT, set_policy, wait_reachable, wait_refused

    left = dict(ALICE, Groups=["ops"], Email="alice@new.example.org")
    with tailnet.World(tmp_path, db, real_client_version(), node_netns=True, users=("srv",),
                       server_setup=mock_in_namespace(tmp_path, [ALICE, left])) as w:
        set_policy(w, GROUP_POLICY)
        tailnet.poll(lambda: 'group "group:eng" is not in groups' in w.server.log_text(), 10,
                     "the warning that no one holds group:eng yet")
        srv, other = w.join("srv-1", user="srv"), w.join("srv-2", user="srv")
        laptop = w.node("oidc-laptop")
        real_login(w, laptop)
        for n in (srv, other, laptop):
            n.ipv4 = n.ip4
        srv.echo = tailnet.EchoServer(srv.ns, ECHO_PORT)
        try:
            wait_reachable(laptop, srv)
            alice = relogin(w, laptop)["user"]
            assert alice["name"] == "alice" and alice["email"] == left["Email"], alice
            wait_refused(laptop, srv, control=other)
        finally:
            srv.echo.close()
