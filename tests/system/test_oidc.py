"""OIDC: `headscale mockoidc`, the stand-in provider, checked as any OpenID client would see it.

The provider's tokens are verified here with the `cryptography` package against the key set
it publishes, independently of the C code that signs them."""

import base64
import hashlib
import json
import os
import subprocess
import time
import urllib.parse
import http.client

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

import helpers

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
