#!/usr/bin/env python3
"""Side-by-side scale benchmark driver (called by bench/run.sh).

For each server in --servers it makes a private directory, writes a config (same settings for
every server apart from ports and paths; one DERP map file with a single region on 127.0.0.1),
starts the server (PostgreSQL from tests/lib/pgtmp.sh for ours-postgres), creates a user and a
reusable pre-auth key (and an API key) with the server's own CLI, runs bench/loadgen against it
(connect storm, steady state, propagation, policy change, restart: --scenarios), stops it, and
finally writes

    <out>/<date>-<nodes>.md      side-by-side table with ratios ours/headscale
    <out>/<date>-<nodes>.json    [{"server","db","nodes","scenario","metric","value","unit"}, ...]
    <out>/<date>-<nodes>.raw.json  the loadgen's own output per server (latency lists etc.)
    <out>/<date>-<nodes>-cdf.png  propagation latency CDFs (if matplotlib imports)
    <out>/rss-vs-n.png            server RSS vs N over every <date>-<N>.json in <out>

Every wait has a deadline; every process it starts is stopped by PID."""

import argparse
import datetime as dt
import glob
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PGTMP = os.path.join(REPO, "tests", "lib", "pgtmp.sh")
AUTH_KEY_RE = re.compile(r"hskey-auth-[0-9A-Za-z_-]+|[0-9a-f]{48}")
API_KEY_RE = re.compile(r"hskey-api-[0-9A-Za-z_-]+")
# Storm and steady state always run (the others build on them); these can be left out.
OPTIONAL_SCENARIOS = ("propagation", "policy", "failover", "kill", "soak", "restart")
SCENARIOS = ("storm", "steady") + OPTIONAL_SCENARIOS

DERP_MAP_YAML = """\
# One region on loopback, so that no client or server looks for Tailscale's public DERP map.
regions:
  900:
    regionid: 900
    regioncode: bench
    regionname: Bench loopback
    nodes:
      - name: 900a
        regionid: 900
        hostname: 127.0.0.1
        ipv4: 127.0.0.1
        ipv6: none
        stunport: -1
        derpport: {derpport}
"""


# Replicas mode: one nginx front port per replica; a front sends to its own replica and, when
# that one refuses or is gone, to the others (backups), as a balancer in front of replicas does.
NGINX_CONF = """\
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 16384; }}  # 2 per node (client + upstream)
http {{
    access_log off;
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
{fronts}
}}
"""
NGINX_FRONT = """\
    upstream to{i} {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{front};
        location / {{
            proxy_pass http://to{i};
            proxy_next_upstream error timeout;
            proxy_connect_timeout 2s;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 1d;
            proxy_send_timeout 1d;
        }}
    }}
"""


def nginx_conf(d, fronts, ports):
    """nginx.conf text: front i → replica i first, the others as backups."""
    parts = []
    for i, front in enumerate(fronts):
        order = ports[i:] + ports[:i]
        servers = [f"        server 127.0.0.1:{order[0]} max_fails=1 fail_timeout=10s;"]
        servers += [f"        server 127.0.0.1:{p} backup;" for p in order[1:]]
        parts.append(NGINX_FRONT.format(i=i, front=front, servers="\n".join(servers)))
    return NGINX_CONF.format(d=d, fronts="".join(parts))


def uses_policies(a):
    """The policy and soak scenarios set policies over REST: users, tags, keys per node."""
    return "policy" in a.scenarios or "soak" in a.scenarios


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_yaml(path, obj):
    # JSON is valid YAML 1.2 and both servers read it through a YAML parser; avoids a PyYAML
    # dependency for the driver.
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)


def server_config(tmp, port, db, pg=None, grpc=False, policy_db=False):
    cfg = {
        "server_url": f"http://127.0.0.1:{port}",
        "listen_addr": f"127.0.0.1:{port}",
        "metrics_listen_addr": f"127.0.0.1:{free_port()}",
        "noise": {"private_key_path": os.path.join(tmp, "noise_private.key")},
        "prefixes": {"v4": "100.64.0.0/10", "v6": "fd7a:115c:a1e0::/48",
                     "allocation": "sequential"},
        "derp": {"server": {"enabled": False}, "urls": [],
                 "paths": [os.path.join(tmp, "derp.yaml")],
                 "auto_update_enabled": False, "update_frequency": "24h"},
        "disable_check_updates": True,
        "unix_socket": os.path.join(tmp, "hs.sock"),
        "unix_socket_permission": "0770",
        "log": {"level": "info", "format": "text"},
        "policy": {"mode": "file", "path": ""},
        "dns": {"magic_dns": True, "base_domain": "bench.example.com",
                "override_local_dns": True, "nameservers": {"global": ["1.1.1.1"]}},
        "logtail": {"enabled": False},
    }
    if policy_db:
        # the policy scenario sets policies over REST (PUT /api/v1/policy), which both servers
        # allow only with the policy kept in the database
        cfg["policy"] = {"mode": "database"}
    if grpc:
        cfg["grpc_listen_addr"] = f"127.0.0.1:{free_port()}"
        cfg["grpc_allow_insecure"] = False
    else:
        # ours: the load generator is one address for thousands of clients connecting at
        # once, which the per-address caps on connections, handshakes and DERP clients would
        # otherwise refuse
        cfg["tuning"] = {"http_max_connections_per_ip": 0, "handshake_rate_limit": 0,
                         "derp_max_clients_per_ip": 0}
    if db == "sqlite":
        cfg["database"] = {"type": "sqlite",
                           "sqlite": {"path": os.path.join(tmp, "db.sqlite"),
                                      "write_ahead_log": True}}
    else:
        cfg["database"] = {"type": "postgres",
                           "postgres": {"host": pg["PGHOST"], "port": int(pg["PGPORT"]),
                                        "name": pg.get("PGDATABASE", "headscale"),
                                        "user": pg.get("PGUSER", "postgres"), "pass": ""}}
    return cfg


class Run:
    """One server under test."""

    def __init__(self, name, binary, args):
        self.name = name                      # ours-sqlite | ours-postgres | headscale
        self.server = "headscale" if name == "headscale" else "ours"
        self.db = "postgres" if name.endswith("postgres") else "sqlite"
        self.binary = binary
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix=f"hsb-{self.server[:2]}-", dir="/tmp")
        self.port = free_port()
        self.proc = None
        self.pg = None
        self.first_exit = None  # after a restart: how the first server process ended
        self.cfg_path = os.path.join(self.tmp, "config.yaml")
        self.log_path = os.path.join(self.tmp, "server.log")
        self.replicas = []  # replicas mode: the other serve processes (Replica)
        self.nginx = None
        self.fronts = []    # replicas mode: nginx front port per replica, this one first

    def cli(self, *a, timeout=60):
        r = subprocess.run([self.binary, "-c", self.cfg_path] + [str(x) for x in a],
                           capture_output=True, text=True, timeout=timeout, cwd=self.tmp,
                           stdin=subprocess.DEVNULL, env=self.env())
        if r.returncode != 0:
            raise RuntimeError(f"{self.name}: headscale {' '.join(map(str, a))} → rc "
                               f"{r.returncode}\n{r.stdout}\n{r.stderr}")
        return r.stdout

    def env(self):
        e = {k: v for k, v in os.environ.items()
             if not k.startswith("HEADSCALE_") and k not in ("GODEBUG",)}
        return e

    def start(self):
        """Database, config, server; then the user, pre-auth key and API key."""
        if self.db == "postgres":
            out = subprocess.run([PGTMP, "start", self.tmp], capture_output=True, text=True,
                                 timeout=180)
            if out.returncode != 0:
                raise RuntimeError(f"pgtmp start: {out.stderr}")
            self.pg = {}
            for line in out.stdout.splitlines():
                if "=" in line:
                    k, v = line.split("=", 1)
                    self.pg[k.strip()] = v.strip().strip("'\"")
        with open(os.path.join(self.tmp, "derp.yaml"), "w") as f:
            f.write(DERP_MAP_YAML.format(derpport=free_port()))
        cfg = server_config(self.tmp, self.port, self.db, self.pg,
                            grpc=(self.server == "headscale"),
                            policy_db=uses_policies(self.args))
        write_yaml(self.cfg_path, cfg)
        self.spawn()
        self.wait_healthy(0.1)
        # user + reusable pre-auth key, through the server's own CLI
        self.cli("users", "create", "bench")
        users = json.loads(self.cli("users", "list", "-o", "json"))
        uid = next(u["id"] for u in users if u.get("name") == "bench")
        out = self.cli("preauthkeys", "create", "--user", uid, "--reusable",
                       "--expiration", "24h", "-o", "json")
        try:
            body = json.loads(out)
            self.authkey = body.get("key") or body.get("preAuthKey", {}).get("key")
        except ValueError:
            m = AUTH_KEY_RE.search(out)
            self.authkey = m.group(0) if m else None
        if not self.authkey:
            raise RuntimeError(f"{self.name}: no pre-auth key in {out!r}")
        # an API key for polling GET /api/v1/node during the storms (same REST path on both)
        out = self.cli("apikeys", "create", "--expiration", "24h")
        m = API_KEY_RE.search(out)
        self.apikey = m.group(0) if m else (out.strip().splitlines() or [""])[-1].strip()
        if not self.apikey:
            raise RuntimeError(f"{self.name}: no API key in {out!r}")
        if uses_policies(self.args):
            self.policy_tailnet()
        log(f"{self.name}: pid {self.proc.pid} on :{self.port}, dir {self.tmp}")
        if self.args.replicas > 1:
            self.start_replicas(cfg)

    def start_replicas(self, cfg):
        """Replicas 1..k-1: the same database and noise key, their own ports and socket; then
        nginx with one front per replica."""
        for i in range(1, self.args.replicas):
            r = Replica(self, i, cfg)
            self.replicas.append(r)
            r.start()
        d = os.path.join(self.tmp, "nginx")
        os.makedirs(d)
        self.fronts = [free_port() for _ in range(self.args.replicas)]
        ports = [self.port] + [r.port for r in self.replicas]
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx_conf(d, self.fronts, ports))
        with open(os.path.join(d, "nginx.out"), "ab") as out:
            self.nginx = subprocess.Popen(["nginx", "-c", conf, "-p", d], stdout=out,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        end = time.monotonic() + 30
        for front in self.fronts:
            while True:
                if self.nginx.poll() is not None:
                    raise RuntimeError(f"nginx exited {self.nginx.returncode}")
                try:
                    socket.create_connection(("127.0.0.1", front), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > end:
                        raise RuntimeError(f"nginx front :{front} not listening")
                    time.sleep(0.05)
        log(f"{self.name}: {self.args.replicas} replicas on :{','.join(map(str, ports))}, "
            f"nginx fronts :{','.join(map(str, self.fronts))}")

    def urls(self):
        """What the loadgen dials: the server, or one nginx front per replica."""
        if self.fronts:
            return ",".join(f"http://127.0.0.1:{p}" for p in self.fronts)
        return f"http://127.0.0.1:{self.port}"

    def kill_replica(self, i, node_id, name):
        """SIGKILL replica i (not 0, whose process the figures follow), then rename node_id
        through replica 0: (kill unix ns, rename done unix ns)."""
        r = self.replicas[i - 1]
        t_kill = time.time_ns()
        r.proc.kill()
        r.proc.wait(timeout=30)
        self.cli("nodes", "rename", "-i", node_id, name)
        return t_kill, time.time_ns()

    def api(self, method, path, body=None, timeout=60):
        """One REST call with the run's API key: (status, parsed body or text)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, path, body=None if body is None else json.dumps(body),
                      headers={"Authorization": f"Bearer {self.apikey}",
                               "Content-Type": "application/json"})
            r = c.getresponse()
            data = r.read().decode("utf-8", "replace")
        finally:
            c.close()
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, data

    def policy_tailnet(self):
        """The policy scenario's tailnet: its users and one reusable pre-auth key per user and
        per tag (over REST: hundreds of CLI runs would take minutes), keys.txt with each node's
        key (line i = node i), and the initial policy (its groups and tagOwners, every node
        allowed to reach every other) set over REST like the change will be."""
        lay = policy_layout(self.args.nodes)
        exp = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        t0 = time.monotonic()
        uids = []
        for u in lay["users"]:
            st, body = self.api("POST", "/api/v1/user", {"name": u})
            if st != 200:
                raise RuntimeError(f"{self.name}: POST /api/v1/user {u} → {st}: {body}")
            uids.append(body["user"]["id"])

        def key(uid, tags=()):
            req = {"user": uid, "reusable": True, "ephemeral": False, "expiration": exp}
            if tags:
                req["aclTags"] = list(tags)
            st, body = self.api("POST", "/api/v1/preauthkey", req)
            if st != 200 or not body.get("preAuthKey", {}).get("key"):
                raise RuntimeError(f"{self.name}: POST /api/v1/preauthkey {req} → {st}: {body}")
            return body["preAuthKey"]["key"]

        ukeys = [key(uid) for uid in uids]
        tkeys = [key(uids[0], [t]) for t in lay["tags"]]  # created by an admin
        self.keys_path = os.path.join(self.tmp, "keys.txt")
        with open(self.keys_path, "w") as f:
            for kind, k in lay["owner"]:
                f.write((ukeys if kind == "user" else tkeys)[k] + "\n")
        self.policy_initial = json.dumps(make_policy(lay, initial=True), indent=2)
        self.policy_new = json.dumps(make_policy(lay), indent=2)
        st, body = self.api("PUT", "/api/v1/policy", {"policy": self.policy_initial})
        if st != 200:
            raise RuntimeError(f"{self.name}: initial policy refused ({st}): {body}")
        for name, text in (("policy-initial.json", self.policy_initial),
                           ("policy-new.json", self.policy_new)):
            with open(os.path.join(self.tmp, name), "w") as f:
                f.write(text)
        log(f"{self.name}: policy tailnet: {len(uids)} users, {len(tkeys)} tags, keys and "
            f"initial policy in {time.monotonic() - t0:.1f} s")

    def spawn(self):
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "-c", self.cfg_path, "serve"], stdout=logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=self.tmp, env=self.env())
        logf.close()

    def wait_healthy(self, every, deadline=60):
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode} at start:\n"
                                   + self.log_tail())
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/health")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    return
            except OSError:
                pass
            time.sleep(every)
        raise RuntimeError(f"{self.name}: /health not answering after {deadline} s\n"
                           + self.log_tail())

    def restart(self):
        """SIGTERM, wait for the exit, start again on the same config and database.
        Returns (old process's CPU jiffies just before the SIGTERM, sigterm/exit/up unix ns);
        the old process's exit code and last log lines go to self.first_exit."""
        old = self.proc
        jiffies = pid_jiffies(old.pid)
        t_term = time.time_ns()
        old.send_signal(signal.SIGTERM)
        try:
            old.wait(timeout=60)
        except subprocess.TimeoutExpired:
            old.kill()
            old.wait(timeout=10)
            log(f"{self.name}: did not stop within 60 s of SIGTERM, killed")
        t_exit = time.time_ns()
        self.first_exit = {"returncode": old.returncode,
                           "log_tail": self.log_tail(15).splitlines()}
        with open(self.log_path, "ab") as f:
            f.write(b"\n===== bench: restarted =====\n")
        self.spawn()
        self.wait_healthy(0.01)  # fine-grained: the clients are retrying meanwhile
        t_up = time.time_ns()
        log(f"{self.name}: restarted (pid {self.proc.pid}): exit after "
            f"{(t_exit - t_term) / 1e9:.2f} s, up after {(t_up - t_term) / 1e9:.2f} s")
        return jiffies, t_term, t_exit, t_up

    def log_tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
        except FileNotFoundError:
            return ""

    def stop(self):
        for p in [self.nginx] + [r.proc for r in self.replicas] + [self.proc]:
            stop_proc(p)
        self.nginx, self.replicas, self.proc = None, [], None
        if self.pg is not None:
            subprocess.run([PGTMP, "stop", self.tmp], capture_output=True, timeout=120)
            self.pg = None

    def cleanup(self, keep_log_to=None):
        if keep_log_to:
            try:
                shutil.copy(self.log_path, keep_log_to)
            except OSError:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)


def stop_proc(proc):
    """SIGTERM, and SIGKILL after 30 s; None or a process already gone is fine."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class Replica:
    """Another `serve` of a Run on its database and noise key (replicas mode). It starts and
    waits like its Run, through the same methods (they read only the attributes set here)."""
    env, spawn, wait_healthy, log_tail = Run.env, Run.spawn, Run.wait_healthy, Run.log_tail

    def __init__(self, run, i, cfg):
        self.name, self.binary, self.tmp = f"{run.name} replica {i}", run.binary, run.tmp
        self.port = free_port()
        cfg = json.loads(json.dumps(cfg))
        cfg["server_url"] = f"http://127.0.0.1:{self.port}"
        cfg["listen_addr"] = f"127.0.0.1:{self.port}"
        cfg["metrics_listen_addr"] = f"127.0.0.1:{free_port()}"
        cfg["unix_socket"] = os.path.join(run.tmp, f"hs{i}.sock")
        self.cfg_path = os.path.join(run.tmp, f"config{i}.yaml")
        self.log_path = os.path.join(run.tmp, f"server{i}.log")
        write_yaml(self.cfg_path, cfg)
        self.proc = None

    def start(self):
        self.spawn()
        self.wait_healthy(0.1)


# ---------------------------------------------------------------------------------------------
# the policy scenario's tailnet and policies

POLICY_TAGS = ("web", "api", "db", "cache", "ci", "mon", "log", "vpn", "dns", "mail", "git",
               "build", "queue", "search", "media", "backup", "proxy", "auth", "metrics",
               "storage")
POLICY_DEVICES_PER_USER = 5
POLICY_RULES = 200
# The soak: its short steady state before the churn, and where its RSS trend starts.
SOAK_STEADY_S = 10
SOAK_RSS_FROM_S = 600


def policy_layout(nodes):
    """Who node i logs in as. The first quarter of the nodes are tagged (one tag each, the 20
    tags in contiguous blocks); the rest, and the propagation scenario's joiner (node `nodes`),
    belong to users of 5 devices each, in order. Nodes log in roughly in index order and both
    servers hand out addresses sequentially, so a user's or a tag's nodes hold neighbouring
    addresses, as they would after a migration in bulk (scattered addresses would make every
    filter longer for both servers alike)."""
    total = nodes + 1
    tagged = nodes // 4
    nusers = max(1, -(-(total - tagged) // POLICY_DEVICES_PER_USER))
    owner = []
    for i in range(total):
        if i < tagged:
            owner.append(("tag", i * len(POLICY_TAGS) // tagged))
        else:
            owner.append(("user", (i - tagged) // POLICY_DEVICES_PER_USER))
    return {"users": [f"user{k + 1}" for k in range(nusers)],
            "tags": [f"tag:{t}" for t in POLICY_TAGS], "owner": owner}


def make_policy(lay, initial=False):
    """Headscale's policy v2 (users written "name@"), valid for both servers. Groups: admins
    (the first two users), four departments and 20 teams as slices of the users; every tag
    owned by admins and ops. The initial policy allows everything; the new one has
    POLICY_RULES rules: admins to everything (so every node's filter changes), autogroup:self,
    ICMP between all members (so members keep seeing one another), monitoring, service
    dependencies between tags, then rules generated from a fixed seed: team → tag, user →
    user, team → team, tag → tag and user → tag on assorted ports, ranges and protocols."""
    import random
    users = [u + "@" for u in lay["users"]]
    tags = lay["tags"]
    nu = len(users)

    def part(lo, hi):
        a = min(int(lo * nu), nu - 1)
        return users[a:max(a + 1, int(hi * nu))]

    groups = {"group:admins": users[:2],
              "group:eng": part(0, 0.40), "group:ops": part(0.40, 0.55),
              "group:sales": part(0.55, 0.80), "group:finance": part(0.80, 1.0)}
    for t in range(20):
        groups[f"group:team{t + 1:02d}"] = part(t / 20, (t + 1) / 20)
    pol = {"groups": groups, "tagOwners": {t: ["group:admins", "group:ops"] for t in tags}}
    if initial:
        pol["acls"] = [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]
        return pol

    def r(src, dst, proto=None):
        rule = {"action": "accept", "src": src, "dst": dst}
        if proto:
            rule["proto"] = proto
        return rule

    acls = [
        r(["group:admins"], ["*:*"]),
        r(["autogroup:member"], ["autogroup:self:*"]),
        r(["autogroup:member"], ["autogroup:member:*"], "icmp"),
        r(["tag:mon"], ["*:9100,9090"]),
        r(["autogroup:tagged"], ["tag:log:514,6514"], "udp"),
        r(["group:ops"], [f"{t}:22" for t in tags]),
        r(["group:eng"], ["tag:web:80,443", "tag:api:443", "tag:git:22,443"]),
        r(["tag:web"], ["tag:api:8080"]),
        r(["tag:api"], ["tag:db:5432", "tag:cache:6379", "tag:queue:5672"]),
        r(["tag:ci"], ["tag:git:22,443", "tag:build:*"]),
        r(["group:sales"], ["tag:mail:25,587,993"]),
        r(["group:finance"], ["tag:storage:445"]),
        r(["autogroup:member"], ["tag:dns:53"], "udp"),
        r(["autogroup:member"], ["tag:vpn:1194,51820"], "udp"),
        r(["tag:backup"], ["tag:db:22", "tag:storage:22"]),
        r(["tag:proxy"], ["tag:web:80,443", "tag:auth:8443"]),
        r(["tag:metrics", "tag:mon"], ["tag:metrics:9090-9099"]),
        r(["group:eng", "group:ops"], ["tag:ci:443", "tag:build:8000-8999"], "tcp"),
    ]
    rng = random.Random(POLICY_RULES)
    ports = ["22", "80,443", "443", "3389", "5900", "8000-8999", "5432", "6379", "9000-9100",
             "8080,8443", "*"]
    teams = [f"group:team{t + 1:02d}" for t in range(20)]
    k = 0
    while len(acls) < POLICY_RULES:
        kind, p = k % 5, rng.choice(ports)
        if kind == 0:
            acls.append(r([rng.choice(teams)], [f"{rng.choice(tags)}:{p}"]))
        elif kind == 1:
            a, b = rng.choice(users), rng.choice(users)
            acls.append(r([a], [f"{b}:{p}", f"{rng.choice(users)}:22"]))
        elif kind == 2:
            acls.append(r([rng.choice(teams), rng.choice(teams)], [f"{rng.choice(teams)}:{p}"]))
        elif kind == 3:
            acls.append(r([rng.choice(tags)], [f"{rng.choice(tags)}:{p}"]))
        else:
            acls.append(r([rng.choice(users)], [f"{rng.choice(tags)}:{p}"],
                          "tcp" if p != "*" else None))
        k += 1
    pol["acls"] = acls
    return pol


def cpu_jiffies():
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def pid_jiffies(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        fs = s[s.rindex(")") + 2:].split()
        return int(fs[11]) + int(fs[12])
    except (OSError, ValueError):
        return 0


def loadgen_argv(run, a, out_path, log_path):
    soak = "soak" in a.scenarios
    argv = [a.loadgen, "-url", run.urls(), "-authkey", run.authkey,
            "-nodes", str(a.nodes), "-concurrency", str(a.concurrency),
            "-server-pid", str(run.proc.pid),
            # with the soak, --duration is the soak's length and steady state is short
            "-steady", str(min(a.duration, SOAK_STEADY_S) if soak else a.duration),
            "-connect-timeout", f"{a.connect_timeout}s", "-event-timeout", f"{a.event_timeout}s",
            "-settle", f"{a.settle}s", "-out", out_path, "-log", log_path,
            "-label", run.name, "-driver"]
    if "propagation" in a.scenarios:
        argv += ["-ep-changes", str(a.ep_changes), "-delete-cmd",
                 f"{run.binary} -c {run.cfg_path} nodes delete --identifier {{id}} --force"]
    else:
        argv += ["-ep-changes", "0", "-join=false", "-delete-event=false"]
    if "policy" in a.scenarios:
        argv += ["-policy", "-policy-timeout", f"{a.policy_timeout}s"]
    if uses_policies(a):
        argv += ["-authkeys-file", run.keys_path]
    if soak:
        argv += ["-soak", f"{a.duration}s", "-soak-churn", str(a.soak_churn),
                 "-soak-endpoints", str(a.soak_endpoints),
                 "-soak-policy-every", f"{a.soak_policy_every}s", "-delete-cmd",
                 f"{run.binary} -c {run.cfg_path} nodes delete --identifier {{id}} --force"]
    if "failover" in a.scenarios:
        argv += ["-failover", "-routers", str(a.routers)]
    if "kill" in a.scenarios:
        argv.append("-kill")
    if "restart" in a.scenarios:
        argv.append("-restart")
    return argv


class ApiPoller:
    """GET /api/v1/node with the run's API key: one request in flight, one started every
    interval (back to back when slower), timed from its start until the whole body was read.
    It runs in this (mostly idle) process rather than in the loadgen, whose thousands of busy
    goroutines would delay the poller more than the server does."""

    def __init__(self, run, interval_ms):
        self.run, self.interval = run, interval_ms / 1000.0
        self.samples = []  # (start unix ns, ms, error or None, nodes listed)
        self.stop_ev = threading.Event()
        self.thread = None

    def start(self):
        if self.interval <= 0 or self.thread is not None:
            return
        self.stop_ev.clear()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def stop(self):
        if self.thread is not None:
            self.stop_ev.set()
            self.thread.join(timeout=120)
            self.thread = None

    def loop(self):
        conn = None
        nxt = time.monotonic()
        while not self.stop_ev.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.run.port, timeout=60)
            t_ns, t0 = time.time_ns(), time.monotonic()
            err, nodes = None, 0
            try:
                conn.request("GET", "/api/v1/node",
                             headers={"Authorization": f"Bearer {self.run.apikey}"})
                r = conn.getresponse()
                body = r.read()
                if r.status != 200:
                    err = f"http {r.status}: {body[:120]!r}"
                elif not body:
                    err = "http 200 with an empty body"
                nodes = body.count(b'"machineKey"')
            except (OSError, http.client.HTTPException) as e:
                err = f"{type(e).__name__}: {e}"
                conn.close()
                conn = None
            self.samples.append((t_ns, (time.monotonic() - t0) * 1000, err, nodes))
            nxt = max(nxt + self.interval, time.monotonic())
            self.stop_ev.wait(max(0, nxt - time.monotonic()))
        if conn is not None:
            conn.close()

    def summary(self, win):
        """The samples started inside win ({"from_ns","to_ns"}), in the shape records_for
        reads; None when there was no polling."""
        if self.interval <= 0 or not win:
            return None
        lat, errors, last_err, nodes, timeline = [], 0, None, 0, []
        for t_ns, ms, err, n in self.samples:
            if not win["from_ns"] <= t_ns <= win["to_ns"]:
                continue
            timeline.append([round((t_ns - win["from_ns"]) / 1e6, 1), round(ms, 1)])
            if err:
                errors, last_err = errors + 1, err
            else:
                lat.append(ms)
                nodes = n
        lat.sort()
        return {"interval_ms": self.interval * 1000, "count": len(lat), "errors": errors,
                "latency_ms": lat, "p50_ms": pctl(lat, 0.5), "p99_ms": pctl(lat, 0.99),
                "max_ms": pctl(lat, 1.0), "nodes_in_last_response": nodes,
                "last_error": last_err,
                "timeline_ms": timeline}  # [ms from the window's start, latency ms] in order


class Driver:
    """Serves the loadgen's lines on its stdout: "POLL start|stop" switch the API poller on and
    off; "RESTART" restarts the server and is answered on its stdin with
    "UP <pid> <sigterm ns> <exit ns> <health ns>" (or "FAIL <why>"); "POLICY" sets the new
    policy (PUT /api/v1/policy) and is answered with "SET <t0 ns> <answered ns> <http status>"
    (or "FAIL <why>"), T0 taken just before the request's first byte."""

    def __init__(self, run, proc, poller):
        self.run, self.proc, self.poller = run, proc, poller
        self.old_jiffies = None  # CPU of the first server process just before its SIGTERM
        self.error = None
        self.policy_note = None  # how the PUT ended when it did not answer
        self.restarting = False  # the server is down on purpose
        self.kill_cpu = None  # KillCpu, from the replica kill on
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        for line in self.proc.stdout:
            line = line.strip()
            if line == "POLL start":
                self.poller.start()
            elif line == "POLL stop":
                self.poller.stop()
            elif line == "RESTART":
                self.restart()
            elif line == "POLICY":
                self.set_policy(run_policy_new=True)
            elif line.startswith("POLICY "):
                self.set_policy(run_policy_new=line.split()[1] == "new")
            elif line == "APPROVE":
                self.approve_routes()
            elif line.startswith("KILL "):
                self.kill(line.split())
        self.poller.stop()

    def answer(self, reply):
        try:
            self.proc.stdin.write(reply)
            self.proc.stdin.flush()
        except OSError:
            pass  # the loadgen is gone: its exit is reported

    def set_policy(self, run_policy_new):
        """PUT the new policy (or, for the soak's turns, the initial one)."""
        run = self.run
        text = run.policy_new if run_policy_new else run.policy_initial
        body = json.dumps({"policy": text}).encode()
        hdrs = {"Authorization": f"Bearer {run.apikey}", "Content-Type": "application/json"}
        c = http.client.HTTPConnection("127.0.0.1", run.port,
                                       timeout=max(60, run.args.policy_timeout))
        t0 = None
        try:
            c.connect()  # the TCP handshake is not the server's work on the policy
            t0 = time.time_ns()
            c.request("PUT", "/api/v1/policy", body=body, headers=hdrs)
            r = c.getresponse()
            data = r.read()
            t1 = time.time_ns()
            if r.status == 200:
                reply = f"SET {t0} {t1} {r.status}\n"
            else:
                self.error = f"PUT /api/v1/policy → {r.status}: {data[:400]!r}"
                reply = "FAIL " + " ".join(self.error.split())[:300] + "\n"
        except (OSError, http.client.HTTPException) as e:
            # headscale closes a request's connection without an answer once its handler ran
            # past the server's 30 s write timeout (http.Server.WriteTimeout), though the
            # handler finished: if the policy in force is ours, time the PUT to the close.
            t1 = time.time_ns()
            why = f"{type(e).__name__}: {e}"
            st, cur = (run.api("GET", "/api/v1/policy", timeout=max(60, run.args.policy_timeout))
                       if t0 is not None else (0, None))
            if st == 200 and isinstance(cur, dict) and cur.get("policy") == text:
                self.policy_note = (f"PUT /api/v1/policy: the connection closed without an "
                                    f"answer after {(t1 - t0) / 1e9:.1f} s ({why}); "
                                    f"GET /api/v1/policy then showed the new policy in force")
                reply = f"SET {t0} {t1} 0\n"
            else:
                self.error = f"PUT /api/v1/policy: {why}; the policy in force is not the new one"
                reply = "FAIL " + " ".join(self.error.split())[:300] + "\n"
        finally:
            c.close()
        log(f"{run.name}: policy set: {reply.strip()}")
        self.answer(reply)

    def approve_routes(self):
        """Every route a node announces is approved (the failover scenario's routers), over
        REST: "APPROVED <count>" (or "FAIL <why>")."""
        run, n = self.run, 0
        try:
            st, body = run.api("GET", "/api/v1/node")
            if st != 200:
                raise RuntimeError(f"GET /api/v1/node → {st}")
            for node in body.get("nodes") or []:
                routes = node.get("availableRoutes") or []
                if not routes:
                    continue
                st, resp = run.api("POST", f"/api/v1/node/{node['id']}/approve_routes",
                                   {"routes": routes})
                if st != 200:
                    raise RuntimeError(f"approve_routes {node['id']} → {st}: {resp}")
                n += len(routes)
            reply = f"APPROVED {n}\n"
        except (OSError, RuntimeError, http.client.HTTPException) as e:
            self.error = f"approving routes: {e}"
            reply = "FAIL " + " ".join(self.error.split())[:300] + "\n"
        log(f"{run.name}: routes approved: {reply.strip()}")
        self.answer(reply)

    def kill(self, words):
        """"KILL <replica> <node id> <new name>": kill -9 that replica, rename the node through
        replica 0; answered "KILLED <kill ns> <renamed ns>" (or "FAIL <why>")."""
        try:
            if len(words) != 4 or not 1 <= int(words[1]) < self.run.args.replicas:
                raise RuntimeError(f"bad request {' '.join(words)!r}")
            t_kill, t_renamed = self.run.kill_replica(int(words[1]), words[2], words[3])
            self.kill_cpu = KillCpu(self.run, self.proc.pid, t_kill)
            reply = f"KILLED {t_kill} {t_renamed}\n"
        except Exception as e:  # noqa: BLE001 — reported to the loadgen and the report
            self.error = f"kill: {e}"
            reply = "FAIL " + " ".join(self.error.split())[:300] + "\n"
        log(f"{self.run.name}: {reply.strip()}")
        self.answer(reply)

    def restart(self):
        self.restarting = True
        try:
            j, t_term, t_exit, t_up = self.run.restart()
            self.old_jiffies = j
            reply = f"UP {self.run.proc.pid} {t_term} {t_exit} {t_up}\n"
        except Exception as e:  # noqa: BLE001 — reported to the loadgen and the report
            self.error = str(e)
            reply = "FAIL " + " ".join(str(e).split())[:300] + "\n"
        finally:
            self.restarting = False
        self.answer(reply)


class KillCpu:
    """Who used the CPU while the dead replica's nodes came back: the surviving replicas, the
    loadgen and the whole machine, sampled every 0.2 s for 60 s from the kill. The loadgen runs
    on the same two cores and decodes every reconnected node's full map, so this tells whether
    the server or the load generator set the pace."""

    def __init__(self, run, loadgen_pid, t_kill_ns):
        self.t_kill = t_kill_ns
        self.pids = [run.proc.pid] + [r.proc.pid for r in run.replicas if r.proc.poll() is None]
        self.loadgen_pid = loadgen_pid
        self.samples = []  # (unix ns, servers jiffies, loadgen jiffies, machine busy jiffies)
        threading.Thread(target=self.sample, daemon=True).start()

    def sample(self):
        end = time.monotonic() + 60
        while time.monotonic() < end:
            self.samples.append((time.time_ns(), sum(pid_jiffies(p) for p in self.pids),
                                 pid_jiffies(self.loadgen_pid), cpu_jiffies()[0]))
            time.sleep(0.2)

    def window(self, seconds):
        """CPU percentages (100 = one core) over [kill, kill + seconds], or None."""
        v = list(self.samples)
        end = self.t_kill + int(seconds * 1e9)
        inside = [x for x in v if x[0] <= end]
        if len(inside) < 2:
            return None
        a, b = inside[0], inside[-1]
        span = (b[0] - a[0]) / 1e9 * os.sysconf("SC_CLK_TCK") / 100
        if span <= 0:
            return None
        return {"servers_pct": (b[1] - a[1]) / span, "loadgen_pct": (b[2] - a[2]) / span,
                "machine_busy_pct": (b[3] - a[3]) / span, "window_s": (b[0] - a[0]) / 1e9}


def run_loadgen(run, a):
    out_path = os.path.join(run.tmp, "loadgen.json")
    log_path = os.path.join(run.tmp, "loadgen.log")
    argv = loadgen_argv(run, a, out_path, log_path)
    log(f"{run.name}: loadgen {a.nodes} nodes, scenarios {','.join(a.scenarios)}")
    t0 = time.monotonic()
    limit = 2 * a.connect_timeout + a.duration + 4 * (a.event_timeout + a.settle) + 300
    if "policy" in a.scenarios:
        limit += 2 * a.policy_timeout + a.settle
    if "soak" in a.scenarios:
        limit += a.duration + 900  # the churn's last actions, the quiet wait, the comparison
    busy0, _ = cpu_jiffies()
    srv0 = pid_jiffies(run.proc.pid)
    with open("/proc/loadavg") as f:
        load_before = f.read().split()[0]
    own0 = sum(os.times()[:2])
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env=os.environ.copy())
    poller = ApiPoller(run, a.api_poll_ms)
    driver = Driver(run, p, poller)
    lg_j = 0
    try:
        # the loadgen's own jiffies are read just before it exits (wait4 would lose them)
        while True:
            try:
                p.wait(timeout=1)
                break
            except subprocess.TimeoutExpired:
                lg_j = max(lg_j, pid_jiffies(p.pid))
                if time.monotonic() - t0 > limit:
                    raise
                if not driver.restarting and run.proc is not None and run.proc.poll() is not None:
                    p.kill()
                    p.wait(timeout=30)
                    raise RuntimeError(f"{run.name}: the server exited ({run.proc.returncode}) "
                                       f"during the run:\n{run.log_tail(30)}")
        driver.thread.join(timeout=120)
        p.stdin.close()
        p.stdout.close()
        busy1, _ = cpu_jiffies()
        srv1 = pid_jiffies(run.proc.pid)
        if driver.old_jiffies is not None:  # two server processes: the old one's share
            srv1 += driver.old_jiffies
        wall = time.monotonic() - t0
        tck = os.sysconf("SC_CLK_TCK")
        own = (sum(os.times()[:2]) - own0) * tck  # this process: the API poller
        other = (busy1 - busy0) - (srv1 - srv0) - lg_j - own
        machine_other_cpu_pct = 100.0 * max(0, other) / tck / max(wall, 1e-3)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=30)
        raise RuntimeError(f"{run.name}: loadgen did not finish within {limit:.0f} s")
    try:
        with open(out_path) as f:
            res = json.load(f)
    except (OSError, ValueError) as e:
        raise RuntimeError(f"{run.name}: loadgen rc {p.returncode}, no result ({e})")
    if driver.error:
        res["failed"] = (res.get("failed") or "") + f" driver: {driver.error}"
    if res.get("policy") is not None:
        res["policy"]["rules"] = POLICY_RULES
        res["policy"]["policy_bytes"] = len(run.policy_new)
        res["policy"]["users"] = len(policy_layout(a.nodes)["users"])
        if driver.policy_note:
            res["policy"]["api_note"] = driver.policy_note
    res["storm_api"] = poller.summary(res.get("storm_window"))
    kr = res.get("kill")
    if driver.kill_cpu and kr and kr.get("all_current_s", -1) > 0:
        kr["cpu"] = driver.kill_cpu.window(kr["all_current_s"])
    if res.get("restart"):
        res["restart"]["api"] = poller.summary(res["restart"].get("api_window"))
    res["loadgen_wall_s"] = time.monotonic() - t0
    res["machine_other_cpu_pct"] = machine_other_cpu_pct
    res["loadavg_before"] = float(load_before)
    try:
        with open(log_path) as f:
            res["loadgen_log_tail"] = f.read().splitlines()[-30:]
    except OSError:
        pass
    res["server_log_tail"] = run.log_tail(15).splitlines()
    res["server_log_problems"] = log_problems(run.log_path)
    if run.first_exit is not None:
        res["first_server_exit"] = run.first_exit
    res["server_alive_after"] = run.proc.poll() is None
    if not res["server_alive_after"]:
        res["failed"] = (res.get("failed") or "") + \
            f" server exited with {run.proc.returncode}"
    return res


def log_problems(path, keep=50):
    """The server log's warn and error lines: {"warn": n, "error": n, "lines": first `keep`}
    (text format: "<time> <level> <message>")."""
    out = {"warn": 0, "error": 0, "lines": []}
    try:
        with open(path, "rb") as f:
            for raw in f:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                parts = line.split(None, 2)
                if len(parts) >= 2 and parts[1] in ("warn", "error"):
                    out[parts[1]] += 1
                    if len(out["lines"]) < keep:
                        out["lines"].append(line)
    except OSError:
        pass
    return out


# ---------------------------------------------------------------------------------------------
# figures → records

def phase(res, name):
    for p in res.get("phases", []):
        if p["name"] == name:
            return p
    return None


def pctl(xs, q):
    xs = sorted(xs)
    if not xs:
        return None
    i = max(0, min(len(xs) - 1, int(q * len(xs) + 0.5) - 1))
    return xs[i]


def records_for(run_name, res, nodes):
    server = "headscale" if run_name == "headscale" else "ours"
    db = "postgres" if run_name.endswith("postgres") else "sqlite"
    recs = []

    def add(scenario, metric, value, unit):
        if value is None:
            return
        recs.append({"server": server, "db": db, "nodes": nodes, "scenario": scenario,
                     "metric": metric, "value": round(float(value), 4), "unit": unit})

    base = res.get("baseline", {})
    storm = phase(res, "storm")
    steady = phase(res, "steady")
    add("storm", "connected_nodes", res.get("connected"), "nodes")
    if res.get("connect_all_s", -1) >= 0:
        add("storm", "connect_all_s", res["connect_all_s"], "s")
    if res.get("converged_s"):
        add("storm", "converged_s", res["converged_s"], "s")
    add("storm", "drain_s", res.get("drain_s"), "s")
    drain = phase(res, "drain")
    if drain:
        add("storm", "server_cpu_to_converged_s", drain["server_cpu_s"], "s")
        add("storm", "loadgen_cpu_to_converged_s", drain["loadgen_cpu_s"], "s")
    fm = res.get("first_map_ms") or []
    add("storm", "first_map_p50_ms", pctl(fm, 0.5), "ms")
    add("storm", "first_map_p99_ms", pctl(fm, 0.99), "ms")
    add("storm", "peers_in_first_map_min", res.get("peers_in_first_map_min"), "peers")
    add("storm", "reconnects", res.get("reconnects"), "count")
    if storm:
        add("storm", "server_cpu_s", storm["server_cpu_s"], "s")
        add("storm", "server_rss_kib", storm["server_rss_kib"], "KiB")
        add("storm", "server_rss_peak_kib", storm["server_hwm_kib"], "KiB")
        add("storm", "loadgen_cpu_s", storm["loadgen_cpu_s"], "s")
        add("storm", "loadgen_cpu_pct", storm["loadgen_cpu_pct"], "%")
        add("storm", "loadgen_rss_kib", storm["loadgen_rss_kib"], "KiB")
    add("baseline", "server_rss_kib", base.get("server_rss_kib"), "KiB")
    if steady:
        add("steady", "server_rss_kib", steady["server_rss_kib"], "KiB")
        conn = max(1, res.get("connected") or 1)
        add("steady", "rss_per_node_kib",
            (steady["server_rss_kib"] - base.get("server_rss_kib", 0)) / conn, "KiB")
        add("steady", "server_cpu_pct", steady["server_cpu_pct"], "%")
        add("steady", "server_threads", steady["server_threads"], "threads")
        add("steady", "loadgen_cpu_pct", steady["loadgen_cpu_pct"], "%")
        add("steady", "duration_s", steady["wall_s"], "s")
    events = res.get("events") or []
    kinds = []
    for e in events:
        if e["kind"] not in kinds:
            kinds.append(e["kind"])
    all_lat, all_cpu, all_bytes = [], [], []
    for k in kinds:
        evs = [e for e in events if e["kind"] == k]
        lat = [x for e in evs for x in (e.get("latency_ms") or [])]
        rcpt = sum(e["recipients"] for e in evs)
        obs = sum(e["observed"] for e in evs)
        sc = f"propagation-{k}"
        add(sc, "observed_fraction", obs / rcpt if rcpt else 0, "ratio")
        add(sc, "recipients", rcpt / len(evs), "nodes")
        add(sc, "propagation_p50_ms", pctl(lat, 0.5), "ms")
        add(sc, "propagation_p99_ms", pctl(lat, 0.99), "ms")
        add(sc, "propagation_max_ms", pctl(lat, 1.0), "ms")
        cpu = sum(e["server_cpu_minus_idle_s"] for e in evs) / len(evs)
        add(sc, "cpu_s_per_change", cpu, "s")
        b = sum(e["map_bytes_per_recipient"] for e in evs) / len(evs)
        add(sc, "bytes_per_update", b, "B")
        add(sc, "wire_bytes_per_update", sum(e["wire_rx_bytes_per_recipient"] for e in evs)
            / len(evs), "B")
        add(sc, "server_write_bytes_per_recipient",
            sum(e["server_wchar_bytes"] / max(1, e["recipients"]) for e in evs) / len(evs), "B")
        add(sc, "loadgen_cpu_s", sum(e["loadgen_cpu_s"] for e in evs) / len(evs), "s")
        all_lat += lat
        all_cpu.append(cpu)
        all_bytes.append(b)
    if events:
        add("propagation", "propagation_p50_ms", pctl(all_lat, 0.5), "ms")
        add("propagation", "propagation_p99_ms", pctl(all_lat, 0.99), "ms")
        add("propagation", "propagation_max_ms", pctl(all_lat, 1.0), "ms")
        add("propagation", "cpu_s_per_change", sum(all_cpu) / len(all_cpu), "s")
        add("propagation", "bytes_per_update", sum(all_bytes) / len(all_bytes), "B")
    api_records(add, "storm", "storm", res.get("storm_api"))
    policy_records(add, res.get("policy"))
    failover_records(add, res.get("failover"))
    kill_records(add, res.get("kill"))
    soak_records(add, res.get("soak"))
    lp = res.get("server_log_problems")
    if lp:
        add("total", "server_log_warn_lines", lp["warn"], "lines")
        add("total", "server_log_error_lines", lp["error"], "lines")
    restart_records(add, res.get("restart"), phase(res, "restart"))
    add("machine", "other_processes_cpu_pct", res.get("machine_other_cpu_pct"), "%")
    add("machine", "loadavg_before", res.get("loadavg_before"), "load")
    tot = phase(res, "total")
    if tot:
        add("total", "loadgen_rss_peak_kib", tot["loadgen_hwm_kib"], "KiB")
        add("total", "server_rss_peak_kib", tot["server_hwm_kib"], "KiB")
    return recs


def api_records(add, scenario, prefix, api):
    """GET /api/v1/node as polled during a storm (the loadgen's apiResult)."""
    if not api:
        return
    add(scenario, f"{prefix}_api_list_count", api["count"], "requests")
    add(scenario, f"{prefix}_api_list_errors", api["errors"], "requests")
    if api["count"]:
        add(scenario, f"{prefix}_api_list_p50_ms", api["p50_ms"], "ms")
        add(scenario, f"{prefix}_api_list_p99_ms", api["p99_ms"], "ms")
        add(scenario, f"{prefix}_api_list_max_ms", api["max_ms"], "ms")


def failover_records(add, fr):
    """The failover scenario (the loadgen's failoverResult): percentiles over every node, one
    never told counting as later than any (left out where a percentile lands on it)."""
    if not fr or fr.get("error"):
        return
    sc = "failover"
    add(sc, "failover_routes_approved", fr["approved"], "routes")
    add(sc, "failover_nodes", fr["nodes"], "nodes")
    add(sc, "failover_told_nodes", fr["told"], "nodes")
    add(sc, "failover_unrouted_nodes", fr.get("unrouted", 0), "nodes")
    lat = (fr.get("latency_ms") or []) + [float("inf")] * (fr["nodes"] - fr["told"])
    for q, m in ((0.5, "failover_p50_ms"), (0.99, "failover_p99_ms"), (1.0, "failover_max_ms")):
        v = pctl(lat, q)
        if v is not None and v != float("inf"):
            add(sc, m, v, "ms")
    if fr["all_s"] >= 0:
        add(sc, "failover_all_s", fr["all_s"], "s")


def kill_records(add, kr):
    """The replica-kill scenario (the loadgen's killResult): times from the SIGKILL; a node
    that never saw the change counts as later than any (left out where a percentile lands)."""
    if not kr or kr.get("error"):
        return
    sc = "kill"
    add(sc, "kill_nodes", kr["nodes"], "nodes")
    add(sc, "kill_back_nodes", kr["back"], "nodes")
    add(sc, "kill_current_nodes", kr["current"], "nodes")
    lat = (kr.get("current_ms") or []) + [float("inf")] * (kr["nodes"] - kr["current"])
    for q, m in ((0.5, "kill_current_p50_ms"), (0.99, "kill_current_p99_ms"),
                 (1.0, "kill_current_max_ms")):
        v = pctl(lat, q)
        if v is not None and v != float("inf"):
            add(sc, m, v, "ms")
    if kr["all_current_s"] >= 0:
        add(sc, "kill_all_current_s", kr["all_current_s"], "s")
    add(sc, "kill_back_p99_ms", pctl(kr.get("back_ms") or [], 0.99), "ms")
    add(sc, "kill_rename_ms", kr["rename_ms"], "ms")
    add(sc, "kill_others_current_nodes", kr["others_current"], "nodes")
    add(sc, "kill_others_p99_ms", pctl(kr.get("others_ms") or [], 0.99), "ms")
    # what the clients read meanwhile: the dead replica's nodes their full maps, everyone the
    # deltas that tell who is back
    for who in ("dead", "others"):
        if kr.get(f"{who}_msgs"):
            add(sc, f"kill_{who}_msgs", kr[f"{who}_msgs"], "msgs")
            add(sc, f"kill_{who}_mib", kr[f"{who}_bytes"] / 2**20, "MiB")
    cpu = kr.get("cpu") or {}
    add(sc, "kill_servers_cpu_pct", cpu.get("servers_pct"), "%")
    add(sc, "kill_loadgen_cpu_pct", cpu.get("loadgen_pct"), "%")
    add(sc, "kill_machine_busy_pct", cpu.get("machine_busy_pct"), "%")


def policy_records(add, pr):
    """The policy scenario (the loadgen's policyResult)."""
    if not pr or pr.get("error"):
        return
    sc = "policy"
    add(sc, "policy_rules", pr.get("rules"), "rules")
    add(sc, "policy_nodes", pr["nodes"], "nodes")
    add(sc, "policy_changed_nodes", pr["changed"], "nodes")
    add(sc, "policy_timeout_s", pr["timeout_s"], "s")
    # percentiles over every node: one that never got its filter counts as later than any,
    # and a percentile that lands on one is left out (the report says "> timeout")
    lat = (pr.get("latency_ms") or []) + [float("inf")] * (pr["nodes"] - pr["changed"])
    for q, m in ((0.5, "policy_p50_ms"), (0.99, "policy_p99_ms"), (1.0, "policy_max_ms")):
        v = pctl(lat, q)
        if v is not None and v != float("inf"):
            add(sc, m, v, "ms")
    if pr["all_s"] >= 0:
        add(sc, "policy_all_s", pr["all_s"], "s")
    last = (pr.get("last_change_ms") or []) + [float("inf")] * (pr["nodes"] - pr["changed"])
    v = pctl(last, 0.99)
    if v is not None and v != float("inf"):
        add(sc, "policy_last_change_p99_ms", v, "ms")
    add(sc, "policy_api_ms", pr["api_ms"], "ms")
    add(sc, "policy_server_cpu_s", pr["server_cpu_s"], "s")
    add(sc, "policy_server_cpu_minus_idle_s", pr["server_cpu_minus_idle_s"], "s")
    if pr["all_s"] >= 0:
        add(sc, "policy_server_cpu_to_all_s", pr["server_cpu_to_all_s"], "s")
    add(sc, "policy_window_s", pr["window_s"], "s")
    add(sc, "policy_converged_s", pr.get("converged_s") or None, "s")
    add(sc, "policy_server_rss_kib", pr["server_rss_kib"], "KiB")
    add(sc, "policy_bytes_per_node", pr["map_bytes_per_node"], "B")
    add(sc, "policy_filter_json_bytes_p50", pctl(pr.get("filter_json_bytes") or [], 0.5), "B")
    add(sc, "policy_filter_json_bytes_max", pctl(pr.get("filter_json_bytes") or [], 1.0), "B")
    add(sc, "policy_message_json_bytes_p50", pctl(pr.get("message_json_bytes") or [], 0.5),
        "B")
    add(sc, "policy_wire_bytes_per_node", pr["wire_rx_bytes_per_node"], "B")
    add(sc, "policy_filter_messages_mean", pr["filter_messages_mean"], "messages")
    add(sc, "policy_unchanged_nodes", pr["unchanged"], "nodes")
    add(sc, "policy_multi_change_nodes", pr["multi_change"], "nodes")
    add(sc, "policy_full_map_nodes", pr["full_maps"], "nodes")
    after = pr.get("peers_after") or []
    add(sc, "policy_peers_before", pr["peers_before"], "peers")
    add(sc, "policy_peers_after_min", pctl(after, 0.0), "peers")
    add(sc, "policy_peers_after_p50", pctl(after, 0.5), "peers")
    add(sc, "policy_peers_removed_mean", pr["peers_removed_mean"], "peers")
    add(sc, "policy_reconnects", pr["reconnects"], "count")
    add(sc, "policy_loadgen_cpu_s", pr["loadgen_cpu_s"], "s")


def slope_per_min(points):
    """Least-squares slope of [(t seconds, value)] per minute (None under 3 points)."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    if den == 0:
        return None
    return 60 * sum((t - mt) * (v - mv) for t, v in points) / den


def soak_rss_window(sr):
    """The samples the RSS trend is taken over: from minute 10 on (from a sixth of the run on
    when it is shorter than an hour, so that a pilot has a trend too)."""
    start = min(SOAK_RSS_FROM_S, sr["duration_s"] / 6)
    return [s for s in sr.get("samples") or [] if s["t_s"] >= start]


def soak_records(add, sr):
    """The soak scenario (the loadgen's soakResult)."""
    if not sr or sr.get("error"):
        return
    sc = "soak"
    add(sc, "soak_duration_s", sr["duration_s"], "s")
    add(sc, "soak_joined", sr["joined"], "nodes")
    add(sc, "soak_join_failed", sr["join_failed"], "nodes")
    add(sc, "soak_left", sum(sr["left"].values()), "nodes")
    add(sc, "soak_leave_errors", sum(sr["leave_errors"].values()), "nodes")
    add(sc, "soak_endpoint_changes", sr["endpoint_changes"], "changes")
    add(sc, "soak_policy_changes", len(sr.get("policies") or []), "changes")
    add(sc, "soak_policy_errors", sr["policy_errors"], "changes")
    add(sc, "soak_compared_nodes", sr["compared"], "nodes")
    add(sc, "soak_equal_nodes", sr["equal"], "nodes")
    add(sc, "soak_equal_on_recheck_nodes", sr["equal_on_recheck"], "nodes")
    add(sc, "soak_differing_nodes", sr["differ"], "nodes")
    add(sc, "soak_compare_errors", sr["compare_errors"], "nodes")
    add(sc, "soak_online_differs_nodes", sr["online_differs_nodes"], "nodes")
    add(sc, "soak_self_reported_differs_nodes", sr["self_reported_differs_nodes"], "nodes")
    add(sc, "soak_peers_mean", sr["peers_mean"], "peers")
    add(sc, "soak_quiet_wait_s", sr["quiet_wait_s"], "s")
    samples = sr.get("samples") or []
    if samples:
        add(sc, "soak_server_rss_first_kib", samples[0]["server_rss_kib"], "KiB")
        add(sc, "soak_server_rss_last_kib", samples[-1]["server_rss_kib"], "KiB")
        add(sc, "soak_server_rss_max_kib", max(s["server_rss_kib"] for s in samples), "KiB")
        wall = samples[-1]["t_s"] - samples[0]["t_s"]
        if wall > 0:
            add(sc, "soak_server_cpu_pct",
                100 * (samples[-1]["server_cpu_s"] - samples[0]["server_cpu_s"]) / wall, "%")
            add(sc, "soak_loadgen_cpu_pct",
                100 * (samples[-1]["loadgen_cpu_s"] - samples[0]["loadgen_cpu_s"]) / wall, "%")
        loads = [s["loadavg_1m"] for s in samples]
        add(sc, "soak_loadavg_mean", sum(loads) / len(loads), "load")
        add(sc, "soak_loadavg_max", max(loads), "load")
        add(sc, "soak_reconnects", samples[-1]["reconnects"] - samples[0]["reconnects"], "count")
    win = soak_rss_window(sr)
    add(sc, "soak_rss_slope_kib_per_min",
        slope_per_min([(s["t_s"], s["server_rss_kib"]) for s in win]), "KiB/min")
    # departed nodes that were not deleted stay the server's: its RSS may follow their count
    add(sc, "soak_registered_nodes_slope_per_min",
        slope_per_min([(s["t_s"], s["registered_nodes"]) for s in win]), "nodes/min")
    if samples:
        add(sc, "soak_registered_nodes_first", samples[0]["registered_nodes"], "nodes")
        add(sc, "soak_registered_nodes_last", samples[-1]["registered_nodes"], "nodes")
    if win:
        add(sc, "soak_rss_trend_from_s", win[0]["t_s"], "s")
        add(sc, "soak_server_threads_last", win[-1]["server_threads"], "threads")
    add(sc, "soak_loadgen_rss_last_kib", samples[-1]["loadgen_rss_kib"] if samples else None,
        "KiB")


def restart_records(add, rr, ph):
    if not rr or rr.get("error"):
        return
    add("restart", "restart_nodes", rr["nodes"], "nodes")
    add("restart", "restart_back_nodes", rr["back"], "nodes")
    if rr["all_back_s"] >= 0:
        add("restart", "restart_all_back_s", rr["all_back_s"], "s")
        add("restart", "restart_all_back_after_up_s", rr["all_back_after_up_s"], "s")
    add("restart", "restart_exit_s", rr["exit_s"], "s")
    add("restart", "restart_down_s", rr["down_s"], "s")
    add("restart", "restart_converged_s", rr.get("converged_s") or None, "s")
    back = rr.get("back_ms") or []
    add("restart", "restart_back_p50_ms", pctl(back, 0.5), "ms")
    add("restart", "restart_back_p99_ms", pctl(back, 0.99), "ms")
    add("restart", "restart_stream_closed_max_ms", pctl(rr.get("break_ms") or [], 1.0), "ms")
    am = rr.get("attempt_ms") or []
    add("restart", "restart_map_after_attempt_p50_ms", pctl(am, 0.5), "ms")
    add("restart", "restart_map_after_attempt_p99_ms", pctl(am, 0.99), "ms")
    att = rr.get("attempts") or []
    if att:
        add("restart", "restart_attempts_mean", sum(att) / len(att), "requests")
        add("restart", "restart_attempts_max", max(att), "requests")
    api_records(add, "restart", "restart", rr.get("api"))
    if ph:
        add("restart", "restart_server_cpu_s", ph["server_cpu_s"], "s")
        add("restart", "restart_server_rss_kib", ph["server_rss_kib"], "KiB")
        add("restart", "restart_server_rss_peak_kib", ph["server_hwm_kib"], "KiB")
        add("restart", "restart_loadgen_cpu_s", ph["loadgen_cpu_s"], "s")


# ---------------------------------------------------------------------------------------------
# report

ORDER = [
    ("storm", "connected_nodes"), ("storm", "connect_all_s"), ("storm", "converged_s"),
    ("storm", "drain_s"), ("storm", "server_cpu_to_converged_s"),
    ("storm", "loadgen_cpu_to_converged_s"), ("storm", "first_map_p50_ms"),
    ("storm", "first_map_p99_ms"), ("storm", "server_cpu_s"), ("storm", "server_rss_kib"),
    ("storm", "server_rss_peak_kib"), ("storm", "reconnects"), ("storm", "loadgen_cpu_s"),
    ("storm", "loadgen_cpu_pct"), ("storm", "storm_api_list_count"),
    ("storm", "storm_api_list_errors"), ("storm", "storm_api_list_p50_ms"),
    ("storm", "storm_api_list_p99_ms"), ("storm", "storm_api_list_max_ms"),
    ("baseline", "server_rss_kib"),
    ("steady", "server_rss_kib"), ("steady", "rss_per_node_kib"), ("steady", "server_cpu_pct"),
    ("steady", "server_threads"), ("steady", "loadgen_cpu_pct"),
]
for _k in ("endpoint", "join", "delete"):
    for _m in ("observed_fraction", "propagation_p50_ms", "propagation_p99_ms",
               "propagation_max_ms", "cpu_s_per_change", "bytes_per_update",
               "wire_bytes_per_update", "server_write_bytes_per_recipient", "loadgen_cpu_s"):
        ORDER.append((f"propagation-{_k}", _m))
ORDER += [("propagation", "propagation_p50_ms"), ("propagation", "propagation_p99_ms"),
          ("propagation", "cpu_s_per_change"), ("propagation", "bytes_per_update"),
          ("total", "server_rss_peak_kib"), ("total", "loadgen_rss_peak_kib")]
ORDER += [("policy", m) for m in (
    "policy_rules", "policy_nodes", "policy_changed_nodes", "policy_timeout_s", "policy_p50_ms",
    "policy_p99_ms", "policy_max_ms", "policy_all_s", "policy_last_change_p99_ms",
    "policy_api_ms", "policy_server_cpu_s", "policy_server_cpu_minus_idle_s",
    "policy_server_cpu_to_all_s", "policy_window_s", "policy_converged_s",
    "policy_server_rss_kib", "policy_bytes_per_node", "policy_wire_bytes_per_node",
    "policy_filter_json_bytes_p50", "policy_filter_json_bytes_max",
    "policy_message_json_bytes_p50",
    "policy_filter_messages_mean", "policy_unchanged_nodes", "policy_multi_change_nodes",
    "policy_full_map_nodes", "policy_peers_before", "policy_peers_after_min",
    "policy_peers_after_p50", "policy_peers_removed_mean", "policy_reconnects",
    "policy_loadgen_cpu_s")]
ORDER += [("failover", m) for m in (
    "failover_routes_approved", "failover_nodes", "failover_told_nodes",
    "failover_unrouted_nodes", "failover_p50_ms",
    "failover_p99_ms", "failover_max_ms", "failover_all_s")]
ORDER += [("kill", m) for m in (
    "kill_nodes", "kill_back_nodes", "kill_current_nodes", "kill_current_p50_ms",
    "kill_current_p99_ms", "kill_current_max_ms", "kill_all_current_s", "kill_back_p99_ms",
    "kill_rename_ms", "kill_others_current_nodes", "kill_others_p99_ms",
    "kill_dead_msgs", "kill_dead_mib", "kill_others_msgs", "kill_others_mib",
    "kill_servers_cpu_pct", "kill_loadgen_cpu_pct", "kill_machine_busy_pct")]
ORDER += [("restart", m) for m in (
    "restart_nodes", "restart_back_nodes", "restart_all_back_s", "restart_all_back_after_up_s",
    "restart_exit_s", "restart_down_s", "restart_converged_s", "restart_back_p50_ms",
    "restart_back_p99_ms", "restart_stream_closed_max_ms", "restart_map_after_attempt_p50_ms",
    "restart_map_after_attempt_p99_ms", "restart_attempts_mean",
    "restart_attempts_max", "restart_api_list_count", "restart_api_list_errors",
    "restart_api_list_p50_ms", "restart_api_list_p99_ms", "restart_api_list_max_ms",
    "restart_server_cpu_s", "restart_server_rss_kib", "restart_server_rss_peak_kib",
    "restart_loadgen_cpu_s")]
ORDER += [("soak", m) for m in (
    "soak_duration_s", "soak_joined", "soak_join_failed", "soak_left", "soak_leave_errors",
    "soak_endpoint_changes", "soak_policy_changes", "soak_policy_errors",
    "soak_compared_nodes", "soak_equal_nodes", "soak_equal_on_recheck_nodes",
    "soak_differing_nodes", "soak_compare_errors", "soak_online_differs_nodes",
    "soak_self_reported_differs_nodes",
    "soak_peers_mean", "soak_quiet_wait_s", "soak_server_rss_first_kib",
    "soak_server_rss_last_kib", "soak_server_rss_max_kib", "soak_rss_trend_from_s",
    "soak_rss_slope_kib_per_min", "soak_registered_nodes_first", "soak_registered_nodes_last",
    "soak_registered_nodes_slope_per_min", "soak_server_threads_last", "soak_server_cpu_pct",
    "soak_loadgen_cpu_pct", "soak_loadgen_rss_last_kib", "soak_loadavg_mean",
    "soak_loadavg_max", "soak_reconnects")]
ORDER += [("total", "server_log_warn_lines"), ("total", "server_log_error_lines")]
ORDER += [("machine", "other_processes_cpu_pct"), ("machine", "loadavg_before")]


def fmt(v):
    if v is None:
        return "–"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.4g}"


def soak_notes(sr):
    """The soak's failures and findings, for the report's notes."""
    if not sr:
        return []
    if sr.get("error"):
        return [f"soak: {sr['error'][:300]}"]
    bits = []
    if sr["differ"] or sr["compare_errors"]:
        fields = ", ".join(f"{k} ×{v}" for k, v in sorted(sr["differing_fields"].items()))
        bits.append(f"soak: {sr['differ']} of {sr['compared']} nodes still differ from a fresh "
                    f"full map on the recheck ({fields}), {sr['compare_errors']} could not be "
                    f"compared; first: " + "; ".join(
                        json.dumps(e, separators=(",", ":"))[:300]
                        for e in (sr.get("examples") or [])[:3]))
    if sr["equal_on_recheck"]:
        bits.append(f"soak: {sr['equal_on_recheck']} nodes differed at the first comparison "
                    "and were equal when asked again (a change still on its way)")
    if sr.get("oddities"):
        bits.append("soak: messages a client would ignore: " + "; ".join(
            f"{k} ×{v}" for k, v in sorted(sr["oddities"].items())))
    for k in ("leave_errors", "endpoint_errors"):
        if sr.get(k):
            bits.append(f"soak {k.replace('_', ' ')}: " + "; ".join(
                f"{e} ×{c}" for e, c in list(sr[k].items())[:4]))
    if sr["join_failed"]:
        bits.append(f"soak: {sr['join_failed']} joiners never got a map")
    if sr["policy_errors"]:
        bits.append(f"soak: {sr['policy_errors']} policy changes failed: "
                    + "; ".join(p for p in sr["policies"] if " 200 " not in p)[:300])
    return bits


def write_report(a, runs_done, records, raw, stamp, versions):
    names = [r for r in a.servers if r in runs_done]
    idx = {}
    for rec in records:
        name = "headscale" if rec["server"] == "headscale" else f"ours-{rec['db']}"
        idx[(name, rec["scenario"], rec["metric"])] = rec
    lines = [f"# Scale benchmark, {a.nodes} nodes ({stamp})", ""]
    extra = f" --policy-timeout {a.policy_timeout:g}" if "policy" in a.scenarios else ""
    if a.replicas > 1:
        extra += f" --replicas {a.replicas}"
    if "soak" in a.scenarios:
        extra += (f" --soak-churn {a.soak_churn:g} --soak-endpoints {a.soak_endpoints:g}"
                  f" --soak-policy-every {a.soak_policy_every:g}")
    lines.append(f"Command: `bench/run.sh --nodes {a.nodes} --servers {','.join(a.servers)} "
                 f"--duration {a.duration} --scenarios {','.join(a.scenarios)}{extra}`  ")
    lines.append(f"Machine: {os.cpu_count()} cores, "
                 f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; "
                 f"everything on loopback, one process at a time.  ")
    lines.append("Servers: " + ", ".join(f"{k} = {v}" for k, v in versions.items()) + "  ")
    load = (f"Load: Tailscale's controlclient v1.102.3 (ts2021, HTTP/2, zstd maps), "
            f"login concurrency {a.concurrency}")
    if "propagation" in a.scenarios:
        load += f", {a.ep_changes} endpoint changes, 1 join, 1 delete"
    load += f"; steady state {min(a.duration, SOAK_STEADY_S) if 'soak' in a.scenarios else a.duration} s"
    if "policy" in a.scenarios:
        lay = policy_layout(a.nodes)
        load += (f"; then a {POLICY_RULES}-rule policy set over REST ({len(lay['users'])} users "
                 f"of {POLICY_DEVICES_PER_USER} devices, {len(lay['tags'])} tags on a quarter "
                 f"of the nodes; the initial policy allowed all)")
    if "failover" in a.scenarios:
        load += (f"; then an HA failover: {a.routers} nodes announce subnet routes in pairs, "
                 f"approved over REST, and the primary of one route closes its stream")
    if a.replicas > 1:
        load += (f"; {a.replicas} replicas on one PostgreSQL, node i through nginx front "
                 f"i mod {a.replicas} (the other replicas its backups); server CPU, RSS and "
                 f"threads are replica 0's only")
    if "kill" in a.scenarios:
        load += (f"; then replica {a.replicas - 1} killed (SIGKILL) and a node of replica 0 "
                 f"renamed through it: per node of the dead replica, the time until a message "
                 f"on its new stream carried the new name (a current map)")
    if "soak" in a.scenarios:
        load += (f"; then the soak for {a.duration:g} s: per minute {a.soak_churn:g} nodes leave for good (deleted, "
                 f"logged out or disconnected in turns) and {a.soak_churn:g} join, "
                 f"{a.soak_endpoints:g} send a new endpoint; every {a.soak_policy_every:g} s "
                 f"the other of two policies is set (allow-all, the {POLICY_RULES}-rule one); "
                 f"at the end every node's followed map is compared with a fresh full map")
    if "restart" in a.scenarios:
        load += "; then a server restart (SIGTERM, start again on the same database)"
    if a.api_poll_ms > 0:
        load += f"; GET /api/v1/node every {a.api_poll_ms} ms during both storms"
    lines.append(load + ".")
    lines.append("")
    ours = [n for n in names if n != "headscale"]
    hs = "headscale" in names and bool(ours)
    hdr = "| scenario | metric | unit | " + " | ".join(names)
    if hs:
        hdr += " | " + " | ".join(f"{o}/headscale" for o in ours)
    lines.append(hdr + " |")
    lines.append("|" + "---|" * (3 + len(names) + (len(ours) if hs else 0)))
    for sc, m in ORDER:
        vals = [idx.get((n, sc, m)) for n in names]
        if not any(vals):
            continue
        unit = next(v["unit"] for v in vals if v)
        row = f"| {sc} | {m} | {unit} | " + " | ".join(fmt(v["value"]) if v else "–"
                                                        for v in vals)
        if hs:
            h = idx.get(("headscale", sc, m))
            rats = []
            for o in ours:
                v = idx.get((o, sc, m))
                if v and h and h["value"]:
                    rats.append(f"{v['value'] / h['value']:.3g}")
                else:
                    rats.append("–")
            row += " | " + " | ".join(rats)
        lines.append(row + " |")
    lines.append("")
    if "policy" not in a.scenarios:
        lines.append("Scenario 4 (policy change) was not selected (`--scenarios ...,policy`).")
        lines.append("")
    lines.append("## Failures and notes")
    for n in a.servers:
        r = raw.get(n)
        if r is None:
            continue
        if isinstance(r, dict) and r.get("error"):
            lines.append(f"- **{n}**: did not run to the end: {r['error'][:600]}")
            continue
        bits = []
        if r.get("connected") != a.nodes:
            bits.append(f"only {r.get('connected')}/{a.nodes} nodes connected within "
                        f"{a.connect_timeout} s")
        if r.get("failed"):
            bits.append(r["failed"])
        for e in r.get("events") or []:
            if e["observed"] < e["recipients"]:
                bits.append(f"{e['kind']}: observed by {e['observed']}/{e['recipients']} "
                            f"within {a.event_timeout} s")
            if e.get("error"):
                bits.append(f"{e['kind']}: {e['error'][:200]}")
        if r.get("login_errors"):
            bits.append("login errors: " + "; ".join(f"{k} ×{v}"
                                                     for k, v in r["login_errors"].items()))
        pr = r.get("policy")
        if pr and pr.get("error"):
            bits.append(f"policy: {pr['error'][:300]}")
        elif pr:
            if pr["changed"] < pr["nodes"]:
                late = [q for q in ("p50", "p99", "max")
                        if pctl([0.0] * pr["changed"] + [1.0] * (pr["nodes"] - pr["changed"]),
                                {"p50": 0.5, "p99": 0.99, "max": 1.0}[q]) == 1.0]
                bits.append(f"policy: only {pr['changed']}/{pr['nodes']} nodes got their new "
                            f"PacketFilter within {pr['timeout_s']:.0f} s, so "
                            f"{'/'.join(late)} > {pr['timeout_s']:.0f} s (left out of the table; "
                            f"CPU figures stop at the timeout); first missing: "
                            + ", ".join(f"{m['hostname']} id {m['node_id']}"
                                        for m in (pr.get("missing") or [])[:5]))
            if pr["unchanged"]:
                bits.append(f"policy: {pr['unchanged']} nodes ended with the filter they had "
                            "before")
            if pr.get("api_note"):
                bits.append(f"policy: {pr['api_note']}")
            elif pr.get("api_status") != 200:
                bits.append(f"policy: PUT answered {pr.get('api_status')}")
        rr = r.get("restart")
        if rr and rr.get("error"):
            bits.append(f"restart: {rr['error'][:300]}")
        elif rr and rr["back"] < rr["nodes"]:
            bits.append(f"restart: only {rr['back']}/{rr['nodes']} nodes back within "
                        f"{a.connect_timeout} s")
        if rr and rr.get("errors"):
            bits.append("restart: failed map attempts (last per node): " + "; ".join(
                f"{k} ×{v}" for k, v in list(rr["errors"].items())[:4]))
        for key, what in (("storm_api", "storm"), ("restart", "restart")):
            api = (r.get(key) or {}).get("api") if key == "restart" else r.get(key)
            if api and api.get("errors"):
                bits.append(f"GET /api/v1/node during the {what}: {api['errors']} failed "
                            f"(last: {(api.get('last_error') or '')[:160]})")
        bits += soak_notes(r.get("soak"))
        lp = r.get("server_log_problems")
        if lp and (lp["warn"] or lp["error"]):
            bits.append(f"server log: {lp['warn']} warn and {lp['error']} error lines, first: "
                        + " / ".join(f"`{x[:200]}`" for x in lp["lines"][:5]))
        if r.get("stream_errors"):
            bits.append("stream errors (last per node): " + "; ".join(
                f"{k} ×{v}" for k, v in list(r["stream_errors"].items())[:5]))
        lines.append(f"- **{n}**: " + ("; ".join(bits) if bits else "ran clean"))
    lines.append("")
    lines.append("## How each figure is measured")
    lines.append("""
- *connect_all_s*: from the first login attempt to the last node's first non-keep-alive
  MapResponse (each node: GET /key, Noise handshake, /machine/register with the reusable key,
  streaming /machine/map). At most `concurrency` nodes are between "start login" and "first map"
  at a time. *first_map_p50/p99_ms*: per node, login start to its own first map.
  *converged_s*: from the storm's start until the last map message the storm caused was read by
  any node (the loadgen waits after the storm until no node has read a non-keep-alive message
  for 2 s; *drain_s* is that wait). At large N this tail is the deltas queued per stream, and
  when the loadgen's CPU is near 100 % it is also its own reading speed.
- *server_cpu_s*, *server_rss_kib*, *server_rss_peak_kib* (VmHWM), threads: /proc/<pid>/stat and
  /proc/<pid>/status of the server process, at the end of each phase. *rss_per_node_kib* =
  (steady-state RSS − RSS before the storm) / connected nodes.
- *server_cpu_pct* (steady): CPU-seconds over the idle period / its length × 100 (100 = one core).
- *propagation_*: per event the time from the loadgen's action (lite map update with a new
  endpoint; start of the new node's login; the CLI `nodes delete` command) until each other
  connected node had read a MapResponse showing it (the peer's new endpoint in
  Peers/PeersChanged/PeersChangedPatch; the new node key in Peers/PeersChanged; the ID in
  PeersRemoved or missing from a full Peers list). p50/p99/max over all recipients of all
  events of that kind. The join figure includes the joiner's own login (register round trip).
- *cpu_s_per_change*: server CPU-seconds from the action until everyone observed it plus the
  settle time, minus the steady-state idle rate over that window.
- *bytes_per_update*: per recipient, the bytes of non-keep-alive map frames (4-byte length +
  zstd body) it received in the event window. *wire_bytes_per_update*: TCP bytes its socket read
  in the window (Noise records + HTTP/2 frames + any keep-alive). *server_write_bytes_per_recipient*:
  the server's /proc/<pid>/io `wchar` delta (all write/send syscalls: sockets, database, logs)
  divided by the recipients.
- *storm_api_list_* / restart_api_list_*: `GET /api/v1/node` with an API key made by the
  server's CLI, from the benchmark driver's own process (not the busy loadgen), one request in
  flight and one started every `--api-poll-ms` (back to back when slower), from the storm's
  start (restart: from the new server answering /health) until the last map message that storm
  caused; latency is request start → whole body read, p50/p99/max over the 200s (*_count*);
  anything else counts in *_errors*.
- *policy_*: with every node idle (after steady state and any propagation events), the
  driver sets a new policy of *policy_rules* rules with `PUT /api/v1/policy` (API key); T0 is
  its clock just before the request. The initial policy (set over REST before the storm) had
  the same groups and tagOwners and one allow-all rule. Each node follows its packet filter as
  the client does (`PacketFilter` replaces the chunk "base", `PacketFilters` sets/deletes named
  chunks) and
  *policy_p50/p99/max_ms* are, per node, T0 → the first MapResponse that left it with a filter
  different from the one it held before T0 (its arrival at the loadgen); *policy_changed_nodes*
  counts the nodes that got one within *policy_timeout_s*, *policy_all_s* is the last of them.
  *policy_last_change_p99_ms*: per node, T0 → the last message that changed its filter (later
  than the first when a server sends a filter more than once); *policy_multi_change_nodes*
  counts those nodes, *policy_unchanged_nodes* the nodes whose filter at the end is still the
  old one. *policy_api_ms*: the PUT's own latency (request → whole answer read).
  *policy_server_cpu_s*: server CPU-seconds from just before the PUT until no node had read a
  map message for 2 s (*policy_window_s*; *_minus_idle_s* subtracts the steady-state idle rate
  over it; *policy_server_cpu_to_all_s* stops when the last node had its new filter).
  *policy_bytes_per_node*: map frames (length + zstd body) per node in the window;
  *policy_filter_json_bytes_**: the new filter's JSON as it came (per node), and
  *policy_message_json_bytes_p50* the whole MapResponse that brought it, zstd-decoded.
  *policy_peers_after_*: per node, the peers of its last full map in the window, else every
  other node minus the PeersRemoved it was sent (the initial policy showed every node to every
  other); *policy_full_map_nodes* counts the nodes that were sent a full map.
- *soak_*: after steady state the tailnet churns for *soak_duration_s* (see Load above);
  every node follows its map as the client's mapSession does (a non-empty Peers list replaces
  the peers; PeersRemoved, PeersChanged, PeersChangedPatch; the last Node, DNSConfig, DERPMap,
  Domain, SSHPolicy; the packet filter's chunks). When the churn is over and no map message
  flowed for 5 s, each live node asks again with the same node key, not streaming (one full
  map), and the two are compared: the set of peers and per peer its keys, endpoints, home
  DERP, addresses, allowed IPs, routes, name, tags, user, Hostinfo and every other field but
  LastSeen; the node itself; the packet filter, DNS, DERP map, domain, SSH policy.
  *soak_equal_nodes* were equal at once; a node that differed is asked again after another
  quiet spell (*soak_equal_on_recheck_nodes* were then equal, *soak_differing_nodes* were
  not). Online is compared but counted apart (*soak_online_differs_nodes*), and so are the
  fields of a node's own Node that it reported itself — endpoints, Hostinfo, home DERP, disco
  key — which the server does not send back to it (*soak_self_reported_differs_nodes*).
  *soak_rss_slope_kib_per_min*: least-squares slope of the server's RSS, sampled every 10 s,
  from *soak_rss_trend_from_s* (minute 10; a sixth of a shorter run) to the end. Nodes
  logged out or gone without a word stay the server's, so its node count grows by two
  thirds of the churn (*soak_registered_nodes_**, slope over the same window) and some RSS
  growth follows it (compare with *rss_per_node_kib* of a scale run).
  *soak_loadavg_mean/max*: the machine's 1-minute load average at the samples (2 cores,
  shared). *server_log_warn_lines / error_lines*: lines of those levels in the server's log
  over the whole run (the notes list the first).
- *restart_*: with every node idle, the server gets SIGTERM and is started again on the same
  config and database as soon as the old process is gone. Times are from the SIGTERM:
  *restart_exit_s* (old process gone), *restart_down_s* (new one answers /health),
  *restart_all_back_s* (every node read its first full map from the new server;
  *_after_up_s* counts from /health instead), *restart_back_p50/p99_ms* (per node),
  *restart_stream_closed_max_ms* (the last node noticed its stream end), *restart_converged_s*
  (last map message of the reconnect storm). The nodes retry on Tailscale's own map-poll
  backoff (controlclient.Auto's: n²·10 ms × 0.5–1.5 before attempt n+1, 30 s cap, reset by a
  map): after an outage of 1 s the next attempt comes up to ~0.45 s later, after 5 s up to
  ~1.3 s later; *restart_attempts_mean/max* are the map requests per node until one got a map.
  *restart_server_cpu_s / rss_kib / rss_peak_kib*: the new process from its start until the
  reconnect storm drained (start-up included).
- *machine/other_processes_cpu_pct*: CPU used on the machine during the server's run by
  processes other than the server and the loadgen (from /proc/stat; 100 = one core). This
  machine is shared: anything above a few % means the figures of that server are disturbed.
- *loadgen_cpu_s / loadgen_cpu_pct*: the load generator's own getrusage CPU in that phase
  (100 % = one core of the 2). When it is near 100 % during the storm, the loadgen (which has to
  zstd-decode and JSON-scan every map it is sent) shares the machine with the server and
  slows both; see the raw JSON for per-phase figures.
""")
    with open(os.path.join(a.out_dir, f"{stamp}-{a.nodes}.md"), "w") as f:
        f.write("\n".join(lines))


def plots(a, raw, stamp):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # noqa: BLE001
        log(f"no plots: matplotlib not importable ({e})")
        return []
    made = []
    kinds = ["endpoint", "join", "delete"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, k in zip(axes, kinds):
        for name, r in raw.items():
            if not isinstance(r, dict) or "events" not in r:
                continue
            evs = [e for e in r.get("events") or [] if e["kind"] == k]
            lat = sorted(x for e in evs for x in (e.get("latency_ms") or []))
            total = sum(e["recipients"] for e in evs)
            if not lat or not total:
                continue
            # y: fraction of *all* recipients, so a server that left some unserved tops out
            # below 1
            ys = [(i + 1) / total for i in range(len(lat))]
            ax.step(lat, ys, where="post", label=f"{name} ({len(lat)}/{total})")
        ax.set_xscale("log")
        ax.set_xlabel("ms from change to observation")
        ax.set_ylabel("fraction of recipients (all)")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{k} ({a.nodes} nodes)")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_lines():
            ax.legend()
    fig.tight_layout()
    p = os.path.join(a.out_dir, f"{stamp}-{a.nodes}-cdf.png")
    fig.savefig(p, dpi=90)
    plt.close(fig)
    made.append(p)
    soaks = {n: r["soak"] for n, r in raw.items()
             if isinstance(r, dict) and (r.get("soak") or {}).get("samples")}
    if soaks:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, sr in sorted(soaks.items()):
            ts = [x["t_s"] / 60 for x in sr["samples"]]
            ax.plot(ts, [x["server_rss_kib"] / 1024 for x in sr["samples"]], label=name)
        ax.set_xlabel("minutes into the soak")
        ax.set_ylabel("server RSS, MiB (every 10 s)")
        ax.set_ylim(bottom=0)
        ax.set_title(f"Soak, {a.nodes} nodes: server RSS")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        p = os.path.join(a.out_dir, f"{stamp}-{a.nodes}-rss.png")
        fig.savefig(p, dpi=90)
        plt.close(fig)
        made.append(p)
    # RSS vs N over every result file in the folder (the newest per N)
    per = {}
    for path in sorted(glob.glob(os.path.join(a.out_dir, "[0-9]*-*.json"))):
        if path.endswith(".raw.json") or "-replicas" in path or "-soak" in path:
            continue  # replicas runs: RSS is one replica's of several; soaks: churned
        try:
            with open(path) as f:
                recs = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(recs, list):
            continue
        for rec in recs:
            if (isinstance(rec, dict) and rec.get("scenario") == "steady"
                    and rec.get("metric") == "server_rss_kib"):
                name = "headscale" if rec["server"] == "headscale" else f"ours-{rec['db']}"
                per.setdefault(name, {})[rec["nodes"]] = rec["value"] / 1024
    if per:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for name, pts in sorted(per.items()):
            ns = sorted(pts)
            ax.plot(ns, [pts[n] for n in ns], marker="o", label=name)
        ax.set_xlabel("connected nodes (N)")
        ax.set_ylabel("server RSS, MiB (steady state)")
        ax.set_xscale("log")
        ax.set_title("Server RSS vs N")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        p = os.path.join(a.out_dir, "rss-vs-n.png")
        fig.savefig(p, dpi=90)
        plt.close(fig)
        made.append(p)
    return made


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, required=True)
    ap.add_argument("--servers", default="ours-sqlite,ours-postgres,headscale")
    ap.add_argument("--duration", type=float, default=60, help="steady-state seconds")
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--ep-changes", type=int, default=3)
    ap.add_argument("--connect-timeout", type=float, default=900)
    ap.add_argument("--event-timeout", type=float, default=60)
    ap.add_argument("--settle", type=float, default=2)
    ap.add_argument("--policy-timeout", type=float, default=120,
                    help="policy scenario: how long to wait for every node's new PacketFilter")
    ap.add_argument("--scenarios",
                    default=",".join(s for s in SCENARIOS
                                     if s not in ("policy", "failover", "kill", "soak")),
                    help="storm and steady always run; propagation, policy, failover, kill "
                         "and restart are optional (policy, failover and kill are not in the "
                         "default)")
    ap.add_argument("--soak-churn", type=float, default=None,
                    help="soak: nodes leaving (and as many joining) per minute "
                         "(default 1 %% of --nodes)")
    ap.add_argument("--soak-endpoints", type=float, default=None,
                    help="soak: endpoint changes per minute (default as --soak-churn)")
    ap.add_argument("--soak-policy-every", type=float, default=300,
                    help="soak: seconds between policy changes (0: none)")
    ap.add_argument("--routers", type=int, default=50,
                    help="failover scenario: nodes announcing subnet routes, two per route")
    ap.add_argument("--replicas", type=int, default=1,
                    help="ours-postgres only: this many serve processes on one database, "
                         "each behind its own nginx front (the others its backups); node i "
                         "dials front i modulo the count")
    ap.add_argument("--api-poll-ms", type=int, default=1000,
                    help="GET /api/v1/node this often during the storms (0: not at all)")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--loadgen", default="")
    ap.add_argument("--ours-bin", default="")
    ap.add_argument("--headscale-bin", default="")
    ap.add_argument("--headscale-version", default="")
    ap.add_argument("--ours-version", default="")
    ap.add_argument("--stamp", default=dt.date.today().isoformat())
    ap.add_argument("--keep", action="store_true",
                    help="keep each server's /tmp/hsb-* folder (logs, config, loadgen output)")
    ap.add_argument("--replot", action="store_true",
                    help="only redraw the PNGs from <out>/<stamp>-<nodes>.raw.json")
    ap.add_argument("--rerender", action="store_true",
                    help="only rewrite <out>/<stamp>-<nodes>.json and .md from its .raw.json "
                         "(for --servers, --scenarios and the options the report names)")
    a = ap.parse_args()
    if a.soak_churn is None:
        a.soak_churn = a.nodes / 100
    if a.soak_endpoints is None:
        a.soak_endpoints = a.soak_churn
    if a.replot or a.rerender:
        with open(os.path.join(a.out_dir, f"{a.stamp}-{a.nodes}.raw.json")) as f:
            raw = json.load(f)
    if a.replot:
        log("wrote " + ", ".join(plots(a, raw, a.stamp)))
        return 0
    if a.rerender:
        a.servers = [s.strip() for s in a.servers.split(",") if s.strip() in raw]
        a.scenarios = [s for s in SCENARIOS if s in a.scenarios.split(",")
                       or s not in OPTIONAL_SCENARIOS]
        records, versions = [], {}
        for name in a.servers:
            r = raw[name]
            versions[name] = r.get("server_version", name) if isinstance(r, dict) else name
            if isinstance(r, dict) and not r.get("error"):
                records += records_for(name, r, a.nodes)
        with open(os.path.join(a.out_dir, f"{a.stamp}-{a.nodes}.json"), "w") as f:
            json.dump(records, f, indent=1)
        write_report(a, a.servers, records, raw, a.stamp, versions)
        log(f"rewrote {a.out_dir}/{a.stamp}-{a.nodes}.json and .md")
        return 0
    if not a.loadgen or not a.ours_bin:
        ap.error("--loadgen and --ours-bin are required")
    a.loadgen = os.path.abspath(a.loadgen)
    a.ours_bin = os.path.abspath(a.ours_bin)
    if a.headscale_bin:
        a.headscale_bin = os.path.abspath(a.headscale_bin)
    a.servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    for s in a.servers:
        if s not in ("ours-sqlite", "ours-postgres", "headscale"):
            ap.error(f"unknown server {s}")
    a.scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    for s in a.scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s} (known: {','.join(SCENARIOS)})")
    a.scenarios = [s for s in SCENARIOS if s in a.scenarios or s not in OPTIONAL_SCENARIOS]
    if a.replicas > 1:
        a.stamp += f"-replicas{a.replicas}"  # beside, not over, a single-server run's files
    if "soak" in a.scenarios:
        a.stamp += "-soak"
    if a.replicas < 1 or (a.replicas > 1 and a.servers != ["ours-postgres"]):
        ap.error("--replicas K > 1 needs --servers ours-postgres (replicas share PostgreSQL)")
    if a.replicas > 1 and "restart" in a.scenarios:
        ap.error("--replicas: the restart scenario restarts one server; leave it out")
    if "kill" in a.scenarios and a.replicas < 2:
        ap.error("the kill scenario needs --replicas 2 or more")
    os.makedirs(a.out_dir, exist_ok=True)
    versions = {}
    records, raw, done = [], {}, []

    def write_all():
        # after every server, so that a run cut short keeps what it measured
        with open(os.path.join(a.out_dir, f"{a.stamp}-{a.nodes}.json"), "w") as f:
            json.dump(records, f, indent=1)
        with open(os.path.join(a.out_dir, f"{a.stamp}-{a.nodes}.raw.json"), "w") as f:
            json.dump(raw, f, indent=1)
        write_report(a, done, records, raw, a.stamp, versions)

    for name in a.servers:
        binary = a.headscale_bin if name == "headscale" else a.ours_bin
        versions[name] = (f"headscale {a.headscale_version}" if name == "headscale"
                          else f"ours {a.ours_version}".strip())
        run = Run(name, binary, a)
        try:
            run.start()
            res = run_loadgen(run, a)
            res["server_version"] = versions[name]
            raw[name] = res
            records += records_for(name, res, a.nodes)
            done.append(name)
            log(f"{name}: connected {res.get('connected')}/{a.nodes}, all in "
                f"{res.get('connect_all_s')} s")
        except Exception as e:  # noqa: BLE001 — record and go on with the next server
            log(f"{name}: FAILED: {e}")
            raw[name] = {"error": str(e), "server_log_tail": run.log_tail(60)}
            done.append(name)
        finally:
            run.stop()
            if a.keep:
                log(f"{name}: kept {run.tmp} (server.log, loadgen.log, loadgen.json)")
            else:
                run.cleanup()
        write_all()
    made = plots(a, raw, a.stamp)
    log("wrote " + ", ".join([f"{a.out_dir}/{a.stamp}-{a.nodes}.md",
                              f"{a.out_dir}/{a.stamp}-{a.nodes}.json"] + made))
    ok = all(isinstance(raw.get(n), dict) and not raw[n].get("error") for n in a.servers)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
