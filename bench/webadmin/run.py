#!/usr/bin/env python3
"""The web admin's page times at scale: a server (SQLite) with N registered nodes,
headscale-webadmin and nginx as deploy/webadmin-local.sh configures them, and timed GETs of the
overview and the nodes list through nginx (TLS, FastCGI, the API) from one signed-in session,
and of the policy preview (a draft against the policy in force, the matrix grouped by owner at
this size) through the page and through the API alone.

  bench/webadmin/run.py [--nodes 5000] [--runs 20] [--bin-dir build] [--out FILE.md]

Times are wall time at the client over loopback, keep-alive: nginx, FastCGI, the webadmin's
API calls and the server's answers, and the page's transfer. Nodes are made with
/api/v1/debug/node and /api/v1/auth/register (registered, not connected: all offline)."""

import argparse
import concurrent.futures as cf
import datetime as dt
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import uuid

import requests
import urllib3

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "system"))
import helpers  # noqa: E402

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

PAGES = [("overview", "/admin/"), ("nodes page 1", "/admin/nodes"),
         ("nodes page 50, by last seen", "/admin/nodes?page=50&sort=lastseen"),
         ("nodes search", "/admin/nodes?q=bench-4242"),
         ("nodes of one user (id 4), offline", "/admin/nodes?user=4&status=offline")]


def port_pair():
    """A free port whose next one is free too (webadmin-local.sh puts the plain HTTP server
    there)."""
    for _ in range(100):
        p = helpers.free_port()
        with socket.socket() as a:
            try:
                a.bind(("127.0.0.1", p + 1))
                return p
            except OSError:
                continue
    raise AssertionError("no two free ports in a row")


def make_nodes(srv, n, users=10):
    names = [f"bench{i}" for i in range(users)]
    for u in names:
        srv.api_ok("POST", "/api/v1/user", {"name": u})

    def one(i):
        auth = "hskey-authreq-" + uuid.uuid4().hex[:24]
        user = names[i % users]
        srv.api_ok("POST", "/api/v1/debug/node", {"user": user, "key": auth,
                                                  "name": f"bench-{i}"})
        srv.api_ok("POST", "/api/v1/auth/register", {"user": user, "authId": auth})

    with cf.ThreadPoolExecutor(8) as ex:
        list(ex.map(one, range(n)))


def sign_in(url, key):
    s = requests.Session()
    s.trust_env = False  # a CA bundle from the environment would override verify=False
    s.verify = False
    page = s.get(url + "/admin/signin", timeout=30)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    r = s.post(url + "/admin/signin", data={"api_key": key, "csrf": csrf}, timeout=30)
    assert "Overview" in r.text, r.text[:500]
    return s


# In force: every user reaches every other; the draft closes bench9 off and opens a port.
IN_FORCE = '{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}'
DRAFT = ('{"groups": {"group:most": [%s]},\n "acls": [\n'
         '  {"action": "accept", "src": ["group:most"], "dst": ["group:most:*"]},\n'
         '  {"action": "accept", "src": ["bench9@"], "dst": ["bench0@:22"]},\n ],\n'
         ' "tests": [{"src": "bench9@", "accept": ["bench0@:22"], "deny": ["bench1@:22"]}]}'
         % ", ".join(f'"bench{i}@"' for i in range(9)))


def timed(s, url, runs, post=None):
    ms = []
    for _ in range(runs):
        t = time.perf_counter()
        r = s.post(url, timeout=60, **post) if post else s.get(url, timeout=60)
        ms.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, (url, r.status_code, r.text[:300])
    return statistics.median(ms), sorted(ms)[max(0, int(len(ms) * 0.95) - 1)], len(r.content)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--bin-dir", default=os.path.join(REPO, "build"))
    ap.add_argument("--out")
    a = ap.parse_args()
    helpers.HS_BIN = os.path.join(a.bin_dir, "headscale")
    srv = helpers.Server(helpers.Db("sqlite"), overrides={"log": {"level": "warn"}})
    procs = []
    try:
        srv.start()
        srv.ensure_api_key()
        t = time.monotonic()
        make_nodes(srv, a.nodes)
        print(f"made {a.nodes} nodes in {time.monotonic() - t:.1f} s", flush=True)
        d = os.path.join(srv.tmp, "web")
        port = port_pair()
        env = dict(os.environ, WEBADMIN_PORT=str(port),
                   HEADSCALE_URL=f"http://127.0.0.1:{srv.port}")
        subprocess.run([os.path.join(REPO, "deploy", "webadmin-local.sh"), "--config-only", d],
                       check=True, env=env, timeout=60)
        procs.append(subprocess.Popen([os.path.join(a.bin_dir, "headscale-webadmin"),
                                       "--server", f"http://127.0.0.1:{srv.port}", "--templates",
                                       os.path.join(REPO, "templates"), "--listen",
                                       os.path.join(d, "webadmin.sock")]))
        procs.append(subprocess.Popen(["nginx", "-c", os.path.join(d, "nginx.conf"), "-p", d]))
        url = f"https://127.0.0.1:{port}"
        end = time.monotonic() + 20
        while True:
            try:
                if requests.get(url + "/admin/signin", verify=False, timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < end, "nginx and the webadmin did not answer"
            time.sleep(0.1)
        s = sign_in(url, srv.api_key)
        rows = [(name, *timed(s, url + path, a.runs)) for name, path in PAGES]
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {srv.api_key}"
        rows.append((f"(GET /api/v1/node alone, no nginx)",
                     *timed(api, f"http://127.0.0.1:{srv.port}/api/v1/node", a.runs)))
        srv.api_ok("PUT", "/api/v1/policy", {"policy": IN_FORCE})
        csrf = re.search(r'name="csrf" value="([^"]+)"', s.get(url + "/admin/policy").text)
        rows.append(("policy preview (POST /admin/policy/preview)",
                     *timed(s, url + "/admin/policy/preview", a.runs,
                            {"data": {"policy": DRAFT, "csrf": csrf.group(1)}})))
        rows.append(("(POST /api/v1/policy/preview alone, no nginx)",
                     *timed(api, f"http://127.0.0.1:{srv.port}/api/v1/policy/preview", a.runs,
                            {"json": {"policy": DRAFT}})))
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        srv.stop(check=False)
        srv.cleanup()
    lines = [f"# Web admin page times, {a.nodes} nodes ({dt.date.today()})", "",
             f"`bench/webadmin/run.py --nodes {a.nodes} --runs {a.runs}` on this machine "
             "(2 shared cores), release build, SQLite. Wall time at the client over loopback "
             "with keep-alive: nginx (TLS), FastCGI, the webadmin's API calls and the server's "
             "answers, and the transfer of the page.", "",
             "| page | median ms | p95 ms | bytes |", "|---|---|---|---|"]
    lines += [f"| {n} | {m:.1f} | {p:.1f} | {b} |" for n, m, p, b in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
