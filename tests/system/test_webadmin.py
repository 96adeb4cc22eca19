"""The web admin as an administrator meets it: a real server in a network namespace (tailnet.py's
World), headscale-webadmin (FastCGI) and nginx beside it, configured by
deploy/webadmin-local.sh from deploy/nginx-headscale.conf with TLS, and headless Chromium driven by Selenium through
chromedriver from the test process (a small relay carries 127.0.0.1:R into the namespace's
nginx). A real tailscaled joins with a key made in the browser.

Security checks: XSS payloads in a node's name and in a refused user name render as text, a
form posted without or with a wrong CSRF token is refused and changes nothing, a forged or
stale session cookie gets the sign-in page, and an expired API key cannot sign in.

Screenshots of every page at 1280x800 are kept under the test's tmp dir (webadmin-shots/)."""

import os
import re
import socket
import subprocess
import threading
import time
import uuid

import pytest
import requests
import urllib3

import helpers
import tailnet

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import (  # noqa: E402
    NoAlertPresentException, WebDriverException)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

REPO = helpers.REPO
WA_BIN = os.environ.get("HS_WEBADMIN_BIN",
                        os.path.join(os.path.dirname(helpers.HS_BIN), "headscale-webadmin"))
CHROMIUM = os.environ.get("HS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("HS_CHROMEDRIVER", "/usr/bin/chromedriver")
NGINX_PORT = 8443
SESSION_COOKIE = "__Host-wa_session"
WAIT = 30  # seconds for anything the browser waits for

pytestmark = pytest.mark.skipif(
    not (os.access(WA_BIN, os.X_OK) and os.access(CHROMIUM, os.X_OK)
         and os.access(CHROMEDRIVER, os.X_OK) and tailnet.have_version(tailnet.versions()[0])),
    reason="needs headscale-webadmin, chromium, chromedriver and a cached tailscale")


class Relay:
    """127.0.0.1:port of the test's namespace (listen, or any free one) → host:port inside
    ns, one thread pair per connection, until close()."""

    def __init__(self, ns, port, listen=0):
        self.ns = ns
        self.target = port
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", listen))
        self.srv.listen(64)
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            u = self.ns.connect("127.0.0.1", self.target)
            u.settimeout(None)
        except OSError:
            c.close()
            return
        c.settimeout(None)
        t = threading.Thread(target=tailnet.pipe, args=(u, c), daemon=True)
        t.start()
        tailnet.pipe(c, u)
        t.join(60)
        c.close()
        u.close()

    def close(self):
        self.srv.close()


def write_config(d):
    """deploy/webadmin-local.sh --config-only: deploy/nginx-headscale.conf with a self-signed
    certificate, the socket in d and the repository's static/ → nginx.conf's path."""
    subprocess.run([os.path.join(REPO, "deploy", "webadmin-local.sh"), "--config-only", d],
                   check=True, capture_output=True, timeout=60,
                   env=dict(os.environ, WEBADMIN_PORT=str(NGINX_PORT),
                            HEADSCALE_URL=f"http://127.0.0.1:{tailnet.HS_PORT}"))
    return os.path.join(d, "nginx.conf")


class Stack:
    """World + headscale-webadmin + nginx + the relay + Chromium. configure(stack, dir), when
    given, runs before the webadmin starts (stack.url known) and returns more arguments for
    it."""

    def __init__(self, tmp, db, configure=None):
        self.tmp = str(tmp)
        self.shots = os.path.join(self.tmp, "webadmin-shots")
        os.makedirs(self.shots, exist_ok=True)
        self.world = tailnet.World(os.path.join(self.tmp, "world"), db, tailnet.versions()[0],
                                   users=("alice",))
        self.driver = None
        self.relay = None
        self.webadmin = None
        self.configure = configure

    def __enter__(self):
        os.makedirs(self.world.dir, exist_ok=True)
        self.world.__enter__()
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        problems = self.close()
        assert not problems, "\n".join(problems)

    def _start(self):
        srv = self.world.server
        srv.ensure_api_key()
        d = os.path.join(self.tmp, "web")
        os.makedirs(d, exist_ok=True)
        sock = os.path.join(d, "webadmin.sock")
        self.relay = Relay(self.world.ns, NGINX_PORT)
        self.url = f"https://127.0.0.1:{self.relay.port}"
        extra = self.configure(self, d) if self.configure else []
        self.webadmin = tailnet.Proc(
            self.world.ns, "webadmin",
            [WA_BIN, "--server", f"http://127.0.0.1:{tailnet.HS_PORT}", "--templates",
             os.path.join(REPO, "templates"), "--listen", sock, "--sessions-file",
             os.path.join(d, "sessions")] + extra,
            os.path.join(d, "webadmin.log"), env=srv._env()).start()
        self.nginx = tailnet.Proc(self.world.ns, "nginx",
                                  ["nginx", "-c", write_config(d), "-p", d],
                                  os.path.join(d, "nginx.out")).start()
        tailnet.poll(lambda: self._ready(), 20, "nginx and the webadmin to answer")
        self.driver = browser(os.path.join(self.tmp, "chromium"))

    def _ready(self):
        assert self.webadmin.alive, f"webadmin exited:\n{self.webadmin.log()}"
        assert self.nginx.alive, f"nginx exited:\n{self.nginx.log()}"
        r = requests.get(self.url + "/admin/signin", verify=False, timeout=5)
        assert r.status_code == 200, (r.status_code, r.text[:300], self.webadmin.log(5))
        return True

    def close(self):
        """Stops everything; → problems of the webadmin (exit status, sanitizer reports)."""
        problems = []
        if self.driver is not None:
            self.driver.quit()
        if self.relay is not None:
            self.relay.close()
        if self.webadmin is not None:
            rc = self.webadmin.stop()
            bad = helpers.sanitizer_lines(tailnet.tail(self.webadmin.log_path, 100000))
            if rc != 0 or bad:
                problems.append(f"webadmin exited {rc} on SIGTERM:\n{self.webadmin.log(60)}")
        self.world.close()
        return problems

    def logs(self):
        return (f"===== webadmin =====\n{self.webadmin.log(80) if self.webadmin else ''}\n"
                + self.world.logs())

    # ---- browser steps ----
    def go(self, path):
        self.driver.get(self.url + path)

    def shot(self, name):
        path = os.path.join(self.shots, f"{name}.png")
        self.driver.save_screenshot(path)
        return path

    def sign_in(self, key=None):
        self.go("/admin/signin")
        self.driver.find_element(By.ID, "api_key").send_keys(key or self.world.server.api_key)
        self.submit("signin")

    def submit(self, button_id):
        """Presses a form's button and waits until the answer replaced the page."""
        button = self.driver.find_element(By.ID, button_id)
        button.click()
        WebDriverWait(self.driver, WAIT).until(lambda d: gone(button))
        WebDriverWait(self.driver, WAIT).until(
            lambda d: d.execute_script("return document.readyState") == "complete")


    def text(self):
        return self.driver.find_element(By.TAG_NAME, "body").text

    def wait_text(self, needle, path=None, timeout=WAIT):
        def seen():
            if path:
                self.go(path)
            return needle in self.text()
        tailnet.poll(seen, timeout, f"{needle!r} on {path or self.driver.current_url}")

    def session_cookie(self):
        c = self.driver.get_cookie(SESSION_COOKIE)
        return c and c["value"]

    def csrf(self):
        return self.driver.find_element(By.NAME, "csrf").get_attribute("value")


def gone(element):
    """Whether element left the page: stale, or (chromedriver, while the next document is
    replacing it) no longer in any document."""
    try:
        return expected_conditions.staleness_of(element)(None)
    except WebDriverException as e:
        if "does not belong to the document" in str(e):
            return True
        raise


def browser(profile):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--no-first-run", "--ignore-certificate-errors",
              "--window-size=1280,800", f"--user-data-dir={profile}"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    # The screenshots are of a 1280x800 viewport exactly.
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                      {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    d.set_page_load_timeout(WAIT)
    return d


@pytest.fixture(scope="module")
def stack(db, tmp_path_factory):
    with Stack(tmp_path_factory.mktemp(f"webadmin-{db.kind}"), db) as s:
        yield s


@pytest.fixture
def web(stack, request):
    yield stack
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(stack.logs())


def post(web, path, data, cookie):
    """A form post from outside the browser with the given session cookie → Response."""
    return requests.post(web.url + path, data=data, cookies={SESSION_COOKIE: cookie},
                         verify=False, allow_redirects=False, timeout=10)


def api_node(srv, name):
    """The node of that host name as the REST API lists it."""
    return next(n for n in srv.api_ok("GET", "/api/v1/node")["nodes"] if n["name"] == name)


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


# ---- tests ----

def test_sign_in_pages_and_headers(web):
    """Signing in with the admin key opens the overview; every page answers with a strict CSP,
    and the session cookie is HttpOnly, Secure and SameSite=Strict."""
    web.sign_in()
    web.wait_text("Overview")
    c = web.driver.get_cookie(SESSION_COOKIE)
    assert c and c["httpOnly"] and c["secure"] and c["sameSite"] == "Strict", c
    r = requests.get(web.url + "/admin/nodes", cookies={SESSION_COOKIE: c["value"]},
                     verify=False, timeout=10)
    assert r.status_code == 200 and 'id="nodes"' in r.text
    csp = r.headers.get("Content-Security-Policy", "")
    assert "default-src 'none'" in csp and "script-src 'self'" in csp, csp
    assert "unsafe-inline" not in csp
    assert not re.search(r"<script(?![^>]*\bsrc=)", r.text), "an inline script on the page"
    assert " style=" not in r.text and "<style" not in r.text
    # the API on the same origin, through the same nginx site
    st = requests.get(web.url + "/api/v1/user", verify=False, timeout=10,
                      headers={"Authorization": f"Bearer {web.world.server.api_key}"})
    assert st.status_code == 200 and "alice" in st.text


def test_user_key_node_rename_sign_out(web):
    """In the browser: a user, a pre-auth key for it (shown once); a real tailscaled joins with
    that key and shows on the nodes page; it is renamed there; then sign out."""
    user = helpers.unique("web")
    web.sign_in()
    web.go("/admin/users")
    web.driver.find_element(By.ID, "new-user").send_keys(user)
    web.submit("create-user")
    web.wait_text(user)
    assert user in [u["name"] for u in web.world.server.users()]
    web.shot("users")

    web.go("/admin/preauthkeys")
    Select(web.driver.find_element(By.ID, "pak-user")).select_by_visible_text(user)
    web.driver.find_element(By.ID, "pak-reusable").click()
    web.submit("create-key")
    key = web.driver.find_element(By.ID, "created-key").text
    assert helpers.AUTH_KEY_RE.fullmatch(key), key
    web.shot("preauthkeys")
    web.go("/admin/preauthkeys")
    assert key not in web.driver.page_source, "the full key is shown again"

    node = web.world.node()
    node.up(key)
    node.wait_running()
    web.wait_text(node.name, path="/admin/nodes")
    row = web.driver.find_element(By.XPATH, f"//tr[.//div[text()='{node.name}']]")
    assert user in row.text
    tailnet.poll(lambda: (web.go("/admin/nodes?status=online") or node.name in web.text()),
                 WAIT, "the node listed as online")
    web.shot("nodes")
    row = web.driver.find_element(By.XPATH, f"//tr[.//div[text()='{node.name}']]")
    row.find_element(By.CLASS_NAME, "node-name").click()
    web.wait_text(node.name)
    web.shot("node")
    new = "renamed-" + uuid.uuid4().hex[:6]
    box = web.driver.find_element(By.ID, "new_name")
    box.clear()
    box.send_keys(new)
    web.submit("rename")
    tailnet.poll(lambda: web.driver.find_element(By.ID, "node-title").text == new, WAIT,
                 "the new name on the node page")
    assert web.world.server.node_by_name(new) is not None

    web.go("/admin/")
    web.shot("overview")
    assert int(web.driver.find_element(By.ID, "count-online").text) >= 1
    web.go("/admin/apikeys")
    web.shot("apikeys")
    old = web.session_cookie()
    web.submit("signout")
    web.wait_text("Sign in")
    web.shot("signin")
    assert web.session_cookie() in (None, "")
    # the old cookie is dead on the server, not just in the browser
    r = requests.get(web.url + "/admin/nodes", cookies={SESSION_COOKIE: old}, verify=False,
                     allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["Location"].endswith("/admin/signin")
    for name in ("users", "preauthkeys", "nodes", "node", "overview", "apikeys", "signin"):
        assert png_size(os.path.join(web.shots, f"{name}.png")) == (1280, 800)


def test_routes_approve_and_disable(web):
    """A real node announcing a subnet route and an exit node: both listed as announced;
    approving the subnet route in the browser makes it approved and primary on the server;
    disabling takes it back."""
    srv = web.world.server
    user = srv.create_user()
    key = srv.preauth_key(user["id"])
    node = web.world.node()
    node.up(key, extra=("--advertise-routes=198.18.77.0/24", "--advertise-exit-node"))
    node.wait_running()
    web.sign_in()

    def row(prefix):
        return web.driver.find_element(
            By.CSS_SELECTOR, f'tr[data-prefix="{prefix}"][data-node="{node.name}"]')

    def click(prefix, then, what):
        """Presses the row's button and waits for the next page's row to say `then`."""
        button = row(prefix).find_element(By.TAG_NAME, "button")
        button.click()
        WebDriverWait(web.driver, WAIT).until(lambda d: gone(button))
        tailnet.poll(lambda: then in row(prefix).text, WAIT, what)

    tailnet.poll(lambda: web.go("/admin/routes") or
                 web.driver.find_elements(By.CSS_SELECTOR, f'tr[data-node="{node.name}"]'),
                 WAIT, "the announced route listed")
    assert "announced" in row("198.18.77.0/24").text
    assert "exit node" in row("0.0.0.0/0").text
    click("198.18.77.0/24", "primary", "the route approved and primary")
    web.shot("routes")
    assert api_node(srv, node.name)["approvedRoutes"] == ["198.18.77.0/24"]
    click("0.0.0.0/0", "approved", "the exit route approved")
    assert "approved" in row("::/0").text, "the other family's exit route with it"
    click("198.18.77.0/24", "announced", "the route disabled")
    assert sorted(api_node(srv, node.name)["approvedRoutes"]) == ["0.0.0.0/0", "::/0"]


def test_online_state_follows_without_reload(web):
    """webadmin.js keeps the online badges current: a node that stops shows offline on the
    page already open, with no reload (a mark set in the page survives)."""
    srv = web.world.server
    node = web.world.join(key=srv.preauth_key(srv.create_user()["id"]))
    web.sign_in()
    web.go("/admin/nodes?q=" + node.name)
    badge = web.driver.find_element(By.CSS_SELECTOR, "[data-live-node]")
    assert badge.text == "online"
    web.driver.execute_script("window.__stay = 1")
    node.stop()
    tailnet.poll(lambda: badge.text == "offline", WAIT, "the badge to turn offline")
    assert web.driver.execute_script("return window.__stay") == 1, "the page was reloaded"
    web.world.discard(node)


BAD_POLICY = """{
  // who may reach whom
  "acls": [
    {"action": "accept", "src": ["*"], "dst": ["*:*"]} "oops"
  ]
}
"""


def submit_draft(web, text, button):
    """Puts text in the policy editor and presses button."""
    box = web.driver.find_element(By.ID, "policy")
    web.driver.execute_script("arguments[0].value = arguments[1]", box, text)
    web.submit(button)


def test_policy_check_error_fix_save(web):
    """A draft with an error on line 4 is refused with that line shown and highlighted and the
    draft kept; fixed, it checks; saved, the server has it; a comment that is an XSS payload
    renders as text."""
    srv = web.world.server
    web.sign_in()
    web.go("/admin/policy")

    submit_draft(web, BAD_POLICY, "check")
    err = web.driver.find_element(By.ID, "error").text
    assert "line 4" in err, err
    bad = web.driver.find_elements(By.CSS_SELECTOR, "#excerpt li.bad")
    assert len(bad) == 1 and bad[0].get_attribute("value") == "4" and '"oops"' in bad[0].text
    assert web.driver.find_element(By.ID, "policy").get_attribute("value") == BAD_POLICY
    web.shot("policy-error")
    before = srv.api("GET", "/api/v1/policy")
    submit_draft(web, BAD_POLICY, "save")
    assert "line 4" in web.driver.find_element(By.ID, "error").text
    assert srv.api("GET", "/api/v1/policy") == before, "a refused draft changed the policy"

    good = BAD_POLICY.replace(' "oops"', "").replace("who may reach whom", XSS)
    submit_draft(web, good, "check")
    assert "valid" in web.driver.find_element(By.ID, "notice").text
    submit_draft(web, good, "save")
    tailnet.poll(lambda: "saved" in web.driver.find_element(By.ID, "notice").text, WAIT,
                 "the saved notice")
    assert srv.api_ok("GET", "/api/v1/policy")["policy"] == good
    assert web.driver.find_element(By.ID, "policy").get_attribute("value") == good
    no_script_ran(web)
    web.shot("policy")


ONLY_ALICE_BAD = """{
  // alice's nodes reach each other; nobody else reaches anyone
  "acls": [
    {"action": "accept", "src": ["alice@"], "dst": ["alice@:*"]},
    {"action": "accept", "src": ["alice@"] "dst": ["alice@:*"]},
  ],
  "tests": [{"src": "alice@", "accept": ["alice@:22"]}],
}
"""
ONLY_ALICE = ONLY_ALICE_BAD.replace(
    '    {"action": "accept", "src": ["alice@"] "dst": ["alice@:*"]},\n', "")


def test_policy_preview_history_rollback(web):
    """A draft with an error is previewed: refused with its line shown; fixed, the preview
    shows the draft's test passing and the matrix with exactly the cells the server says
    changed marked; saved, it is the version in force; the previous version compared (a line
    diff) and rolled back to, which puts the old text in force again."""
    srv = web.world.server
    other = "carol" + uuid.uuid4().hex[:6]
    srv.api_ok("POST", "/api/v1/user", {"name": other})
    for user in ("alice", "alice", other):
        key = "hskey-authreq-" + uuid.uuid4().hex[:24]
        srv.api_ok("POST", "/api/v1/debug/node", {"user": user, "key": key,
                                                  "name": "pv" + uuid.uuid4().hex[:6]})
        srv.api_ok("POST", "/api/v1/auth/register", {"user": user, "authId": key})
    if not srv.api_ok("GET", "/api/v1/policy/history")["versions"]:  # run alone
        srv.api_ok("PUT", "/api/v1/policy", {"policy": '{"acls": [{"action": "accept", '
                                                       '"src": ["*"], "dst": ["*:*"]}]}'})
    old = srv.api_ok("GET", "/api/v1/policy")["policy"]
    before = srv.api_ok("GET", "/api/v1/policy/history")["versions"]
    web.sign_in()
    web.go("/admin/policy")

    submit_draft(web, ONLY_ALICE_BAD, "preview")
    assert "line 5" in web.driver.find_element(By.ID, "error").text
    bad = web.driver.find_elements(By.CSS_SELECTOR, "#excerpt li.bad")
    assert len(bad) == 1 and bad[0].get_attribute("value") == "5", [b.text for b in bad]
    assert not web.driver.find_elements(By.ID, "matrix")

    submit_draft(web, ONLY_ALICE, "preview")
    want = srv.api_ok("POST", "/api/v1/policy/preview", {"policy": ONLY_ALICE})
    assert want["matrix"]["changed"] > 0, want
    changed = web.driver.find_elements(By.CSS_SELECTOR, "#matrix td.changed")
    assert len(changed) == want["matrix"]["changed"]
    assert all("was" in c.text for c in changed), [c.text for c in changed]
    rows = web.driver.find_elements(By.CSS_SELECTOR, "#matrix tbody tr")
    assert len(rows) == len(want["matrix"]["groups"])
    assert "passes" in web.driver.find_element(By.ID, "tests").text
    assert srv.api_ok("GET", "/api/v1/policy/history")["versions"] == before, "preview stored"
    web.shot("policy-preview")

    submit_draft(web, ONLY_ALICE, "save")
    tailnet.poll(lambda: "saved" in web.driver.find_element(By.ID, "notice").text, WAIT,
                 "the saved notice")
    assert srv.api_ok("GET", "/api/v1/policy")["policy"] == ONLY_ALICE
    prev = before[0]["id"]
    web.driver.find_element(By.CSS_SELECTOR, f"#version-{prev} a").click()
    WebDriverWait(web.driver, WAIT).until(lambda d: d.find_elements(By.ID, "diff"))
    adds = [e.text for e in web.driver.find_elements(By.CSS_SELECTOR, "#diff pre .add")]
    dels = [e.text for e in web.driver.find_elements(By.CSS_SELECTOR, "#diff pre .del")]
    assert any("alice@" in d for d in dels) and adds, (adds, dels)
    web.shot("policy-diff")
    web.submit("rollback")
    tailnet.poll(lambda: "newest" in web.driver.find_element(By.ID, "notice").text, WAIT,
                 "the rollback notice")
    assert srv.api_ok("GET", "/api/v1/policy")["policy"] == old
    newest = srv.api_ok("GET", "/api/v1/policy/history")["versions"][0]
    assert newest["restoredFrom"] == prev, newest
    no_script_ran(web)
    web.shot("policy-rolled-back")


def test_node_page_api(web):
    """GET /api/v1/node/page, which the nodes page and the overview read: filters, sort and
    paging done by the server, counts over all nodes as the full list has them, and bad
    parameters refused."""
    srv = web.world.server
    user = srv.create_user()
    for i in (3, 1, 4, 0, 2):
        auth = "hskey-authreq-" + uuid.uuid4().hex[:24]
        srv.api_ok("POST", "/api/v1/debug/node", {"user": user["name"], "key": auth,
                                                  "name": f"pg-{i}"})
        srv.api_ok("POST", "/api/v1/auth/register", {"user": user["name"], "authId": auth})
    every = srv.api_ok("GET", "/api/v1/node")["nodes"]
    page = srv.api_ok("GET", f"/api/v1/node/page?user={user['id']}&limit=2&offset=1")
    assert [n["givenName"] for n in page["nodes"]] == ["pg-1", "pg-2"]
    assert page["total"] == 5 and page["count"] == len(every)
    assert page["online"] == sum(1 for n in every if n["online"])
    assert page["nodes"][0] == next(n for n in every if n["id"] == page["nodes"][0]["id"])
    assert [n["givenName"] for n in srv.api_ok(
        "GET", "/api/v1/node/page?q=PG-4")["nodes"]] == ["pg-4"]
    assert srv.api_ok("GET", f"/api/v1/node/page?user={user['id']}&status=online")["total"] == 0
    for bad in ("limit=0", "limit=501", "offset=x", "status=asleep", "sort=size", "user=me"):
        st, body = srv.api("GET", "/api/v1/node/page?" + bad)
        assert st == 400, (bad, st, body)


def no_script_ran(web):
    try:
        web.driver.switch_to.alert
        raise AssertionError("an alert opened")
    except NoAlertPresentException:
        pass
    assert web.driver.execute_script("return window.__xss === undefined")
    # only our own script element, and no element with an event handler
    assert len(web.driver.find_elements(By.TAG_NAME, "script")) == 1
    assert not web.driver.find_elements(By.CSS_SELECTOR, "[onerror],[onload],[onclick]")


XSS = '<script>window.__xss=1;alert(1)</script><img src=x onerror="window.__xss=2">"\'&'


def test_xss_in_names_is_inert(web):
    """A node whose host name is an XSS payload is listed and shown with the payload as text;
    a user name that is one comes back in the refusal as text."""
    srv = web.world.server
    user = srv.create_user()
    auth_id = "hskey-authreq-" + uuid.uuid4().hex[:24]
    srv.api_ok("POST", "/api/v1/debug/node", {"user": user["name"], "key": auth_id,
                                              "name": XSS})
    node = srv.api_ok("POST", "/api/v1/auth/register", {"user": user["name"],
                                                        "authId": auth_id})["node"]
    web.sign_in()
    web.go(f"/admin/nodes?user={user['id']}")
    assert XSS in web.text(), web.text()
    no_script_ran(web)
    web.go(f"/admin/nodes/{node['id']}")
    assert web.driver.find_element(By.ID, "hostname").text == XSS
    no_script_ran(web)
    web.shot("node-xss")

    web.go("/admin/users")
    web.driver.find_element(By.ID, "new-user").send_keys(XSS)
    web.submit("create-user")
    err = web.driver.find_element(By.ID, "error").text
    assert XSS in err, err
    no_script_ran(web)


def test_csrf_token_required(web):
    """Posts with the session cookie but no CSRF token, or a wrong one, get 403 and change
    nothing; the same post with the page's token works (so the refusals are about the token)."""
    srv = web.world.server
    web.sign_in()
    web.go("/admin/users")
    cookie, token = web.session_cookie(), web.csrf()
    assert cookie and token
    names = [helpers.unique("csrf") for _ in range(3)]
    r1 = post(web, "/admin/users/create", {"name": names[0]}, cookie)
    r2 = post(web, "/admin/users/create", {"name": names[1], "csrf": token[:-2] + "xx"}, cookie)
    assert (r1.status_code, r2.status_code) == (403, 403), (r1.text, r2.text)
    assert "nothing was changed" in r1.text
    have = [u["name"] for u in srv.users()]
    assert names[0] not in have and names[1] not in have
    r3 = post(web, "/admin/users/create", {"name": names[2], "csrf": token}, cookie)
    assert r3.status_code == 303, r3.text
    assert names[2] in [u["name"] for u in srv.users()]
    # the sign-in form has its own token: a post without it does not sign in
    r = requests.post(web.url + "/admin/signin", data={"api_key": srv.api_key}, verify=False,
                      allow_redirects=False, timeout=10)
    assert r.status_code == 403 and SESSION_COOKIE not in r.cookies


def test_forged_or_stale_cookie_gets_sign_in(web):
    web.go("/admin/signin")
    web.driver.delete_all_cookies()
    forged = "A" * 43
    web.driver.add_cookie({"name": SESSION_COOKIE, "value": forged, "path": "/",
                           "secure": True})
    web.go("/admin/nodes")
    assert web.driver.current_url.endswith("/admin/signin")
    assert web.driver.find_elements(By.ID, "api_key")
    for bad in (forged, "x" * 300, "", "../../etc"):
        r = requests.get(web.url + "/admin/users", cookies={SESSION_COOKIE: bad}, verify=False,
                         allow_redirects=False, timeout=10)
        assert r.status_code == 303 and r.headers["Location"].endswith("/admin/signin"), bad
        r = post(web, "/admin/users/create", {"name": "forged", "csrf": "x"}, bad)
        assert r.status_code == 303
    assert "forged" not in [u["name"] for u in web.world.server.users()]


def test_expired_api_key_cannot_sign_in(web):
    srv = web.world.server
    out = srv.cli_ok("apikeys", "create", "-e", "1h").stdout
    key = helpers.API_KEY_RE.search(out).group(0)
    web.driver.delete_all_cookies()
    web.sign_in(key)
    web.wait_text("Overview")  # the key works while it is valid
    cookie = web.session_cookie()
    web.driver.delete_all_cookies()
    prefix = key.split("-")[2]
    srv.cli_ok("apikeys", "expire", "--prefix", prefix)
    # a session opened with it ends at its next call to the server
    r = requests.get(web.url + "/admin/users", cookies={SESSION_COOKIE: cookie}, verify=False,
                     allow_redirects=False, timeout=10)
    assert r.status_code == 401 and 'id="api_key"' in r.text, r.text
    web.sign_in(key)
    assert "not valid" in web.driver.find_element(By.ID, "error").text
    assert web.session_cookie() is None
    assert web.driver.find_elements(By.ID, "api_key")


def test_overview_chart_and_versions(web):
    """The overview draws the online count of the last 24 h as an inline SVG (from the
    server's own samples), and lists the server's version (GET /version) and the client
    versions in use: the real client's version string among them."""
    srv = web.world.server
    node = web.world.join(key=srv.preauth_key(srv.create_user()["id"]))
    client_version = node.status()["Version"]
    assert client_version
    web.sign_in()

    def shows_it():
        web.go("/admin/")
        rows = web.driver.find_elements(By.CSS_SELECTOR, "#versions tr.client-version")
        return any(client_version in r.text for r in rows)
    tailnet.poll(shows_it, WAIT, f"client version {client_version} on the overview")
    row = next(r for r in web.driver.find_elements(By.CSS_SELECTOR, "#versions tr.client-version")
               if client_version in r.text)
    stats = srv.api_ok("GET", "/api/v1/node/stats")
    want = next(v["nodes"] for v in stats["clientVersions"] if v["version"] == client_version)
    assert row.find_elements(By.TAG_NAME, "td")[2].text == str(want) and want >= 1
    assert web.driver.find_element(By.ID, "server-version").text.startswith(
        srv.api_ok("GET", "/version")["version"])

    chart = web.driver.find_element(By.ID, "online-chart")
    assert chart.tag_name == "svg" and chart.size == {"width": 720, "height": 180}, chart.size
    points = web.driver.find_element(By.ID, "online-series").get_attribute("points").split()
    history = stats["onlineHistory"]
    assert history["stepSeconds"] == 300 and 1 <= len(history["points"]) <= 288
    assert len(points) == len(history["points"])
    # the newest point is the latest sample (this node online), drawn to the chart's scale
    caption = web.driver.find_element(By.ID, "chart-caption").text
    now, peak = map(int, re.search(r"(\d+) now, (\d+) at most", caption).groups())
    assert 1 <= now <= peak, caption
    top = int(web.driver.find_element(By.CSS_SELECTOR, "#online-chart text.tick").text)
    assert top >= peak
    zero, scale_top = (int(web.driver.find_element(By.CSS_SELECTOR, f"#online-chart {c}")
                           .get_attribute("y1")) for c in ("line.axis", "line.grid"))
    assert int(points[-1].split(",")[1]) == zero - now * (zero - scale_top) // top
    assert not web.driver.find_elements(By.CSS_SELECTOR, "script:not([src])")
    web.shot("overview-chart")
    web.world.discard(node)


def test_derp_and_health_page(web):
    """The DERP page shows the map the server sends (the test's derper region, as the real
    client uses it), its sources, and the server's health and database state."""
    srv = web.world.server
    node = web.world.join(key=srv.preauth_key(srv.create_user()["id"]))
    relay = tailnet.poll(lambda: node.status()["Self"].get("Relay"), WAIT, "a home DERP region")
    web.sign_in()
    web.go("/admin/derp")
    assert web.driver.find_element(By.ID, "health-status").text == "pass"
    assert web.driver.find_element(By.ID, "health-database").text == "reachable"
    assert web.driver.find_element(By.ID, "derp-sources").text.startswith("1 of 1 loaded")
    dm = srv.api_ok("GET", "/api/v1/derpmap")
    regions = dm["derpMap"]["Regions"]
    rows = web.driver.find_elements(By.CSS_SELECTOR, "#derp-regions tr.derp-region")
    assert sorted(r.get_attribute("data-region") for r in rows) == sorted(regions)
    home = next(r for r in regions.values() if r["RegionCode"] == relay)
    row = next(r for r in rows if r.get_attribute("data-region") == str(home["RegionID"]))
    assert relay in row.text and home["RegionName"] in row.text
    for n in home["Nodes"]:
        assert n["Name"] in row.text and n["HostName"] in row.text
    assert "embedded" not in row.text and dm["embeddedRegionId"] is None
    web.shot("derp")
    web.world.discard(node)


def test_node_detail_facts_and_actions(web):
    """A real node's page shows its addresses, endpoints, client version, last seen and key
    expiry as the server and the client know them; tag, move, expire and delete work from it."""
    srv = web.world.server
    owner, other = srv.create_user(), srv.create_user()
    node = web.world.join(key=srv.preauth_key(owner["id"]))
    st = node.status()
    n = api_node(srv, node.name)
    web.sign_in()
    page = f"/admin/nodes/{n['id']}"
    def endpoints_reported():
        r = srv.api_ok("GET", f"/api/v1/node/{n['id']}/hostinfo")
        return r if r["endpoints"] else None
    reported = tailnet.poll(endpoints_reported, WAIT, "the node's endpoints reported")
    web.go(page)
    facts = web.driver.find_element(By.CSS_SELECTOR, "dl.facts").text
    for ip in st["Self"]["TailscaleIPs"]:
        assert ip in facts
    assert web.driver.find_element(By.ID, "client-version").text.startswith(st["Version"])
    eps = web.driver.find_element(By.ID, "endpoints").text.split()
    assert eps and set(eps) <= set(reported["endpoints"]), (eps, reported["endpoints"])
    assert "Key expiry" in facts and "Last seen" in facts
    web.shot("node-detail")

    Select(web.driver.find_element(By.ID, "move_user")).select_by_visible_text(other["name"])
    web.submit("move")
    assert not web.driver.find_elements(By.ID, "error"), web.text()
    assert api_node(srv, node.name)["user"]["name"] == other["name"]

    web.driver.find_element(By.ID, "tags").send_keys("tag:web")
    web.submit("set-tags")
    assert not web.driver.find_elements(By.ID, "error"), web.text()
    assert api_node(srv, node.name)["tags"] == ["tag:web"]
    assert "tag:web" in web.driver.find_element(By.CSS_SELECTOR, "dl.facts").text

    web.submit("expire")
    tailnet.poll(lambda: node.state() == "NeedsLogin", WAIT, "the client told its key expired")
    web.go(page)
    assert "expired" in web.driver.find_element(By.CSS_SELECTOR, "dl.facts").text

    web.submit("delete")
    assert web.driver.current_url.endswith("/admin/nodes")
    assert srv.node_by_name(node.name) is None
    web.world.discard(node, delete=False)


def test_screenshot_every_page(web):
    """Every page the navigation leads to (pages added later too), a node's page, the sign-in
    and an error page, each saved as a 1280x800 PNG."""
    web.sign_in()
    web.go("/admin/")
    links = {a.get_attribute("href") for a in
             web.driver.find_elements(By.CSS_SELECTOR, "header nav a")}
    assert any(h.endswith("/admin/derp") for h in links), links
    shots = []
    for href in sorted(links):
        web.driver.get(href)
        name = "page-" + (href.rstrip("/").rsplit("/", 1)[-1] or "overview")
        name = "page-overview" if name == "page-admin" else name
        assert web.driver.find_elements(By.TAG_NAME, "h1"), href
        shots.append(web.shot(name))
    srv = web.world.server
    user = srv.create_user()
    auth_id = "hskey-authreq-" + uuid.uuid4().hex[:24]
    srv.api_ok("POST", "/api/v1/debug/node", {"user": user["name"], "key": auth_id,
                                              "name": "shot-node"})
    node = srv.api_ok("POST", "/api/v1/auth/register", {"user": user["name"],
                                                        "authId": auth_id})["node"]
    web.go(f"/admin/nodes/{node['id']}")
    shots.append(web.shot("page-node"))
    web.go("/admin/no-such-page")
    assert web.driver.find_element(By.ID, "message").text == "No such page."
    shots.append(web.shot("page-error"))
    web.submit("signout")
    shots.append(web.shot("page-signin"))
    for path in shots:
        assert png_size(path) == (1280, 800), path



def test_session_survives_a_webadmin_restart(web):
    """With --sessions-file, a restart of the FastCGI program signs no one out: the same cookie
    opens the pages and its CSRF token still changes things; the file is 0600 and holds no
    session id or API key in the clear. Signing out still ends the session after that."""
    web.sign_in()
    web.go("/admin/users")
    cookie, token = web.session_cookie(), web.csrf()
    rc = web.webadmin.stop()
    assert rc == 0, web.webadmin.log(20)
    path = os.path.join(web.tmp, "web", "sessions")
    assert os.stat(path).st_mode & 0o777 == 0o600
    with open(path) as f:
        text = f.read()
    assert cookie not in text and web.world.server.api_key not in text
    web.webadmin.start()
    tailnet.poll(web._ready, 20, "the webadmin to answer again")
    r = requests.get(web.url + "/admin/users", cookies={SESSION_COOKIE: cookie}, verify=False,
                     allow_redirects=False, timeout=10)
    assert r.status_code == 200 and 'id="new-user"' in r.text, r.status_code
    name = helpers.unique("kept")
    r = post(web, "/admin/users/create", {"name": name, "csrf": token}, cookie)
    assert r.status_code == 303, r.text
    assert name in [u["name"] for u in web.world.server.users()]
    web.go("/admin/users")
    web.submit("signout")
    r = requests.get(web.url + "/admin/users", cookies={SESSION_COOKIE: cookie}, verify=False,
                     allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["Location"].endswith("/admin/signin")


def test_dns_change_in_browser_reaches_client(web):
    """The DNS page: a search domain and an extra record saved in the browser reach a real
    client within seconds (no restart); a bad nameserver is refused with the server's reason,
    the form keeps what was typed and nothing changes; going back to the config file's
    settings takes them away again."""
    from test_dns import dns_status, query  # the client's view, as test_dns reads it
    srv = web.world.server
    node = web.world.join()
    web.sign_in()
    web.go("/admin/dns")
    assert "config file's" in web.driver.find_element(By.ID, "dns-source").text
    assert web.driver.find_element(By.ID, "dns-base-domain").text == "example.com"
    assert web.driver.find_element(By.ID, "dns-magic").is_selected()

    def fill(field, text):
        box = web.driver.find_element(By.ID, field)
        web.driver.execute_script("arguments[0].value = arguments[1]", box, text)

    fill("dns-search", "webadmin.example\n")
    fill("dns-records", "dnsweb.example.com A 100.64.0.123\n")
    t0 = time.monotonic()
    web.submit("dns-save")
    assert "Saved" in web.driver.find_element(By.ID, "notice").text
    assert "saved here" in web.driver.find_element(By.ID, "dns-source").text
    tailnet.poll(lambda: query(node, "dnsweb.example.com") == ["100.64.0.123"], WAIT,
                 "the record saved in the browser to resolve on the client")
    print(f"DNS saved in the browser -> the client resolves it: "
          f"{time.monotonic() - t0:.2f}s")
    assert "webadmin.example" in dns_status(node)["Search Domains"]
    got = srv.api_ok("GET", "/api/v1/dns")
    assert got["source"] == "database" and got["searchDomains"] == ["webadmin.example"], got
    web.shot("dns")

    fill("dns-nameservers", "1.1.1.300\n")
    web.submit("dns-save")
    err = web.driver.find_element(By.ID, "error").text
    assert "1.1.1.300" in err and "not an IP address" in err, err
    assert web.driver.find_element(By.ID, "dns-nameservers").get_attribute("value").strip() \
        == "1.1.1.300", "the form keeps what was typed"
    assert srv.api_ok("GET", "/api/v1/dns") == got, "a refused form changed the settings"
    no_script_ran(web)

    web.go("/admin/dns")
    web.submit("dns-revert")
    assert "config file's" in web.driver.find_element(By.ID, "notice").text
    assert srv.api_ok("GET", "/api/v1/dns")["source"] == "config"
    tailnet.poll(lambda: query(node, "dnsweb.example.com") == [], WAIT,
                 "the record to stop resolving after going back to the file's settings")
    assert web.driver.find_elements(By.ID, "dns-revert") == []
    web.world.discard(node)
