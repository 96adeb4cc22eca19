"""headscale 0.22.3's REST paths answer in 0.22.3's shapes: /api/v1/machine... with
{"machine"}/{"machines"} holding its Machine (forcedTags/validTags/invalidTags, Go's zero time
for unset times, "" for an unset key, lastSuccessfulUpdate), the routes API's machine the same,
users by name as its User {id, name, createdAt}, and pre-auth keys created or listed for a
user named by name with that user's name as their "user".

Side by side with the real headscale v0.22.3 (tests/lib/install-headscale.sh builds it; the
comparison is skipped without it): a node made on each with 0.22.3's debug machine (keyed by a
node key's text) + machine register, and every 0.22.3 path's answer compared member by member
after times, keys and addresses are normalised."""

import json
import os
import re
import secrets
import tempfile
from pathlib import Path

import pytest

from helpers import free_port, unique
from refserver import OURS_BIN, REPO, Side

REF_022 = os.environ.get("HEADSCALE_REF_022", str(REPO / ".cache/headscale/v0.22.3/headscale"))
needs_022 = pytest.mark.skipif(not os.access(REF_022, os.X_OK),
                               reason="no headscale v0.22.3 binary "
                                      "(tests/lib/install-headscale.sh v0.22.3)")
ZERO = "0001-01-01T00:00:00Z"
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


class Side022(Side):
    """headscale v0.22.3 with its flat configuration, on loopback and SQLite."""

    def __init__(self, binary):  # noqa: super().__init__ writes a current-layout config
        self.name, self.binary = "headscale-0.22.3", binary
        self.tmp = tempfile.mkdtemp(prefix="ref022-")
        self.port = free_port()
        self.cfg = os.path.join(self.tmp, "config.yaml")
        derp = os.path.join(self.tmp, "derp.yaml")
        Path(derp).write_text(json.dumps({"regions": {}}))
        cfg = {
            "server_url": f"http://127.0.0.1:{self.port}",
            "listen_addr": f"127.0.0.1:{self.port}",
            "metrics_listen_addr": f"127.0.0.1:{free_port()}",
            "grpc_listen_addr": f"127.0.0.1:{free_port()}",
            "private_key_path": os.path.join(self.tmp, "private.key"),
            "noise": {"private_key_path": os.path.join(self.tmp, "noise.key")},
            "ip_prefixes": ["100.64.0.0/10", "fd7a:115c:a1e0::/48"],
            "derp": {"server": {"enabled": False}, "urls": [], "paths": [derp],
                     "auto_update_enabled": False},
            "disable_check_updates": True,
            "db_type": "sqlite3", "db_path": os.path.join(self.tmp, "db.sqlite"),
            "unix_socket": os.path.join(self.tmp, "hs.sock"),
            "unix_socket_permission": "0770",
            "dns_config": {"magic_dns": False, "base_domain": "example.com",
                           "nameservers": ["1.1.1.1"]},
            "log": {"level": "info"},
        }
        self._start(binary, cfg)


@pytest.fixture(scope="module")
def pair():
    made = []
    try:
        made.append(Side("ours", OURS_BIN))
        made.append(Side022(REF_022))
        yield made
    finally:
        for s in made:
            s.stop()


def make_node(side, user, name):
    """A node named name registered for user the 0.22.3 way → (the debug answer, its id)."""
    key = "nodekey:" + secrets.token_hex(32)
    made = side.ok("POST", "/api/v1/debug/machine", {"user": user, "key": key, "name": name})
    reg = side.ok("POST", f"/api/v1/machine/register?user={user}&key={key}")
    return made, reg["machine"]["id"]


def shape(v):
    """A JSON value with what differs by nature replaced by its kind."""
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [shape(x) for x in v]
    if isinstance(v, str):
        if v == ZERO:
            return "<zero time>"
        if TIME_RE.match(v):
            return "<time>"
        if re.match(r"^(mkey|nodekey|discokey):[0-9a-f]{64}$", v):
            return v.split(":")[0] + ":<key>"
        if re.match(r"^(100\.64\.|fd7a:)", v):
            return "<address>"
    return v


def user_on_both(pair, prefix):
    """Makes a user of one new name on each side → that name."""
    user = unique(prefix)
    for s in pair:
        s.ok("POST", "/api/v1/user", {"name": user})
    return user


def machine_shape(m):
    """shape() of a Machine, its keys and addresses reduced to what both can agree on: ours
    are the node's real Noise keys, 0.22.3's debug machine keeps the text it was given."""
    m = shape(m)
    for k in ("machineKey", "nodeKey", "discoKey"):
        m[k] = "<key or empty>"
    m["ipAddresses"] = sorted(m["ipAddresses"])
    # 0.22.3 leaves a machine registered from its debug call UNSPECIFIED and never seen;
    # ours says CLI and, as 0.29 does, counts the registration as seen
    m["registerMethod"] = "<method>"
    for k in ("lastSeen", "lastSuccessfulUpdate"):
        assert m[k] in ("<time>", "<zero time>"), m
        m[k] = "<time or zero time>"
    return m


@needs_022
def test_machine_paths_answer_as_0223(pair):
    user = user_on_both(pair, "v22")
    made = {s.name: make_node(s, user, "box") for s in pair}
    ids = {k: v[1] for k, v in made.items()}
    ours, ref = pair
    a, b = made["ours"][0], made[ref.name][0]
    assert set(a) == set(b) == {"machine"}, (a, b)
    assert machine_shape(a["machine"]) == machine_shape(b["machine"]), (a, b)

    def compare(method, path_of, body=None, member=None):
        got = {}
        for s in pair:
            st, resp = s.api(method, path_of(ids[s.name]), body)
            assert st == 200, (s.name, method, path_of(ids[s.name]), st, resp)
            got[s.name] = resp
        a, b = got["ours"], got[ref.name]
        assert set(a) == set(b), (path_of("ID"), a, b)
        if member == "machine":
            assert machine_shape(a["machine"]) == machine_shape(b["machine"]), (path_of("ID"), a, b)
        elif member == "machines":
            assert [machine_shape(m) for m in a["machines"]] == \
                   [machine_shape(m) for m in b["machines"]], (a, b)
        else:
            assert shape(a) == shape(b), (path_of("ID"), a, b)
        return a

    compare("GET", lambda i: "/api/v1/machine", member="machines")
    compare("GET", lambda i: f"/api/v1/machine/{i}", member="machine")
    compare("GET", lambda i: f"/api/v1/machine?user={user}", member="machines")
    m = compare("POST", lambda i: f"/api/v1/machine/{i}/tags", {"tags": ["tag:a"]},
                member="machine")["machine"]
    assert (m["forcedTags"], m["validTags"], m["invalidTags"]) == (["tag:a"], [], []), m
    compare("POST", lambda i: f"/api/v1/machine/{i}/rename/renamed", member="machine")
    compare("POST", lambda i: f"/api/v1/machine/{i}/expire", member="machine")
    compare("POST", lambda i: f"/api/v1/machine/{i}/user?user={user}", member="machine")
    compare("GET", lambda i: f"/api/v1/machine/{i}/routes")
    compare("GET", lambda i: "/api/v1/routes")
    compare("GET", lambda i: f"/api/v1/user/{user}")
    compare("POST", lambda i: f"/api/v1/user/{user}/rename/{user}x")
    compare("DELETE", lambda i: f"/api/v1/machine/{i}")
    compare("GET", lambda i: "/api/v1/machine", member="machines")


def key_shape(k):
    k = shape(k)
    k["key"] = "<key>"  # 0.22.3: 48 hex digits, shown in full; ours: hskey-auth-..., masked
    return k


@needs_022
def test_preauthkeys_by_user_name_answer_as_0223(pair):
    user = user_on_both(pair, "k22")
    body = {"user": user, "reusable": True, "ephemeral": False,
            "expiration": "2099-01-01T00:00:00Z"}  # 0.22.3 drops aclTags without a policy
    made = {s.name: s.ok("POST", "/api/v1/preauthkey", body) for s in pair}
    ours, ref = made["ours"], made["headscale-0.22.3"]
    assert set(ours) == set(ref) == {"preAuthKey"}
    assert key_shape(ours["preAuthKey"]) == key_shape(ref["preAuthKey"]), (ours, ref)
    assert ours["preAuthKey"]["user"] == user
    listed = {s.name: s.ok("GET", f"/api/v1/preauthkey?user={user}") for s in pair}
    a, b = listed["ours"]["preAuthKeys"], listed["headscale-0.22.3"]["preAuthKeys"]
    assert [key_shape(k) for k in a] == [key_shape(k) for k in b], (a, b)


def test_v029_paths_keep_their_shapes(mserver):
    """The same nodes and users on 0.29's paths are 0.29's Node and User."""
    user = unique("v29")
    uid = mserver.api_ok("POST", "/api/v1/user", {"name": user})["user"]["id"]
    key = "hskey-authreq-" + secrets.token_hex(12)
    mserver.api_ok("POST", "/api/v1/debug/node", {"user": user, "key": key, "name": "b29"})
    node = mserver.api_ok("POST", "/api/v1/auth/register", {"user": user, "authId": key})["node"]
    assert "tags" in node and "forcedTags" not in node, node
    one = mserver.api_ok("GET", f"/api/v1/node/{node['id']}")["node"]
    assert "approvedRoutes" in one and "forcedTags" not in one, one
    machine = mserver.api_ok("GET", f"/api/v1/machine/{node['id']}")["machine"]
    assert machine["forcedTags"] == [] and "approvedRoutes" not in machine, machine
    assert set(machine["user"]) == {"id", "name", "createdAt"}, machine
    renamed = mserver.api_ok("POST", f"/api/v1/user/{uid}/rename/{user}y")["user"]
    assert "displayName" in renamed, "renamed by id: 0.29's User"
    renamed = mserver.api_ok("POST", f"/api/v1/user/{user}y/rename/{user}z")["user"]
    assert set(renamed) == {"id", "name", "createdAt"}, renamed
