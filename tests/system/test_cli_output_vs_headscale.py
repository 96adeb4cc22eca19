"""`headscale ... -o json|json-line|yaml` side by side with the real headscale CLI: the same
commands on ours and on headscale v0.29.3 (and, for the route commands only it has, v0.22.3
with its own configuration layout), each run in the three formats, and the outputs compared
after parsing: the same members, the same types, equal values except keys and times (times
must be {seconds, nanos} on both). The layout is compared too: -o json is Go's MarshalIndent
with a TAB, json-line one line, yaml yaml.v3's indentation with the same keys on the same
lines, each output ending as fmt.Println leaves it.

Both servers see the same requests in the same order, so ids agree and are compared.

One difference lies below the CLI, in what the servers store: a node registered from the CLI
(auth register, nodes register) has no expiry here, and the zero time ("0001-01-01", printed
as {"seconds": -62135596800}) in headscale; it is taken out of headscale's node before the
comparison, where ours has none."""

import json
import re
import secrets

import yaml

from helpers import unique
from noise_client import ControlClient
from refserver import needs_ref, sides  # noqa: F401 (sides: fixture)
from test_api_v022 import needs_022, pair  # noqa: F401 (pair: fixture)

FORMATS = ("json", "json-line", "yaml")
ZERO_TIME = {"seconds": -62135596800}
KEY_RE = re.compile(r"^(hskey-(auth|api)-|(mkey|nodekey|discokey|privkey):)")
POLICY = {"tagOwners": {"tag:a": ["alice@"]}, "acls": [{"action": "accept", "src": ["*"],
                                                         "dst": ["*:*"]}]}


def unset_expiry(ours, ref):
    """ref with the zero expiry of a registered node as ours has it (left out, or null in
    yaml) where ours has none."""
    if isinstance(ours, list) and isinstance(ref, list) and len(ours) == len(ref):
        return [unset_expiry(a, b) for a, b in zip(ours, ref)]
    if not (isinstance(ours, dict) and isinstance(ref, dict) and ref.get("id")
            and ours.get("expiry") is None and (ref.get("expiry") or {}).get("seconds") ==
            ZERO_TIME["seconds"]):
        return ref
    ref = {k: v for k, v in ref.items() if k != "expiry"}
    if "expiry" in ours:
        ref["expiry"] = None
    return {k: ref[k] for k in ours if k in ref} | ref  # ours' order


def normal(v):
    """What must agree between the two: keys and times reduced to their kind, and a
    {"Result": message} to its member (the message is in our words)."""
    if isinstance(v, dict):
        if set(v) == {"Result"}:
            return {"Result": type(v["Result"])}
        if v and set(v) <= {"seconds", "nanos"}:
            assert all(isinstance(x, int) for x in v.values()), v
            return "<time>"
        return {k: normal(x) for k, x in v.items()}
    if isinstance(v, list):
        return [normal(x) for x in v]
    if isinstance(v, str) and KEY_RE.match(v):
        return KEY_RE.match(v).group(1) + "<key>"
    return v


def layout(text):
    """Each line's indentation, dashes, key and how its value is written (plain, quoted, a
    block), without the value."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^([ -]*)(?:([^:'\"]*?):(?: |$))?(.*)$", line)
        value = m.group(3)
        style = value[:1] if value[:1] in ("'", '"', "|", "[", "{") else bool(value)
        out.append((m.group(1), m.group(2), style))
    return out


def check_layout(fmt, text, value):
    if fmt == "json":
        assert text == json.dumps(value, indent="\t", ensure_ascii=False) + "\n", text
    elif fmt == "json-line":
        assert text == json.dumps(value, separators=(",", ":"), ensure_ascii=False) + "\n", text
    else:
        assert text.endswith("\n\n"), repr(text)  # yaml.Marshal's newline, then Println's


def run(side, args, fmts):
    """args in each format on side → {fmt: (exit status, parsed output, text)}; an error is
    parsed from stderr."""
    got = {}
    for fmt in fmts:
        r = side.cli(*args, "-o", fmt)
        text = r.stdout if r.stdout.strip() else r.stderr
        try:
            value = yaml.safe_load(text) if fmt == "yaml" else json.loads(text)
        except ValueError as e:
            raise AssertionError(f"{side.name}: {args} -o {fmt} is not {fmt}: {text!r}") from e
        check_layout(fmt, text, value)
        got[fmt] = (r.returncode, value, text)
    return got


def compare(sides, *args, errors=False, fmts=FORMATS, adjust=unset_expiry):
    """args on every side in each of fmts, compared → ours, parsed from the first format.
    adjust(ours, theirs) → theirs takes out a difference below the CLI; the yaml layout is
    not compared where it did."""
    got = {s.name: run(s, args, fmts) for s in sides}
    ours = got.pop("ours")
    for name, ref in got.items():
        for fmt in fmts:
            (rc_a, a, text_a), (rc_b, b, text_b) = ours[fmt], ref[fmt]
            failed_b = rc_b != 0 or isinstance(b, dict) and "error" in b  # 0.22.3 exits 0
            assert (rc_a != 0, failed_b) == (errors, errors), (args, fmt, text_a, text_b)
            if errors:  # our own words: the same shape, another message
                assert set(a) == set(b) == {"error"}, (args, fmt, a, b)
                continue
            stored_differs = adjust(a, b) != b
            b = adjust(a, b)
            assert normal(a) == normal(b), f"{args} -o {fmt}:\nours {a!r}\n{name} {b!r}"
            if fmt == "yaml" and not stored_differs:
                assert layout(text_a) == layout(text_b), f"{args}:\n{text_a}\n{text_b}"
    return ours[fmts[0]][1]


def per_format(sides, args_of):
    """A step that can run once only (a create, a delete): args_of(fmt) in each format."""
    return [compare(sides, *args_of(fmt), fmts=(fmt,)) for fmt in FORMATS]


def both(sides, *args):
    """A step whose output is not compared (it differs by nature, e.g. a new secret)."""
    for s in sides:
        r = s.cli(*args)
        assert r.returncode == 0, (s.name, args, r.stdout, r.stderr)


def router(side, key, routes):
    c = ControlClient(side.port)
    c.hostinfo = {"Hostname": "router", "OS": "linux", "RoutableIPs": routes}
    st, _, resp = c.register(auth_key=key)
    assert st == 200 and resp.get("MachineAuthorized"), (side.name, st, resp)
    c.id = c.open_stream(require_peers=False)["Node"]["ID"]
    return c


@needs_ref
def test_users_keys_and_errors_print_as_headscale(sides):
    alice = compare(sides, "users", "create", "alice", fmts=("json",))
    assert alice["name"] == "alice" and isinstance(alice["id"], int), alice
    compare(sides, "users", "create", "bob", "--email", "bob@example.org", "-d", "Bob",
            fmts=("yaml",))
    users = compare(sides, "users", "list")
    assert [u["name"] for u in users] == ["alice", "bob"], users
    compare(sides, "users", "list", "-n", "bob")
    assert compare(sides, "users", "list", "-n", "nobody") is None  # a nil list
    per_format(sides, lambda fmt: ("users", "rename", "-i", "2", "-r", f"bob-{fmt}"))
    compare(sides, "users", "destroy", "--name", "nobody", "--force", errors=True)
    per_format(sides, lambda fmt: ("users", "create", f"carol-{fmt}"))
    per_format(sides, lambda fmt: ("users", "destroy", "--name", f"carol-{fmt}", "--force"))

    made = compare(sides, "preauthkeys", "create", "-u", str(alice["id"]), "--reusable",
                   "--tags", "tag:a", "-e", "1h")
    assert made["reusable"] is True and "used" not in made, made  # false: left out
    compare(sides, "preauthkeys", "create", "-u", str(alice["id"]), "--ephemeral")
    listed = compare(sides, "preauthkeys", "list")
    ids = iter(str(k["id"]) for k in listed)
    per_format(sides, lambda fmt: ("preauthkeys", "expire", "--id", next(ids)))
    compare(sides, "preauthkeys", "list")
    per_format(sides, lambda fmt: ("preauthkeys", "delete", "--id", next(ids)))
    compare(sides, "preauthkeys", "create", "-u", "999", errors=True)

    made = compare(sides, "apikeys", "create", "-e", "1d")  # the key, as a JSON string
    assert made.startswith("hskey-api-"), made
    keys = compare(sides, "apikeys", "list")
    assert [k["id"] for k in keys] == [1, 2, 3, 4], keys
    ids = iter(["2", "3", "4"])
    per_format(sides, lambda fmt: ("apikeys", "expire", "--id", next(ids)))
    ids = iter(["2", "3", "4"])
    per_format(sides, lambda fmt: ("apikeys", "delete", "--id", next(ids)))
    compare(sides, "health")
    compare(sides, "generate", "private-key")
    compare(sides, "nodes", "list")
    compare(sides, "nodes", "list-routes")


@needs_ref
def test_nodes_print_as_headscale(sides, tmp_path):
    user = unique("cn")
    uid = compare(sides, "users", "create", user, fmts=("json",))["id"]
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY).replace("alice@", f"{user}@"))
    both(sides, "policy", "set", "-f", str(policy))
    got = {s.name: s.cli("policy", "get", "-o", "json").stdout for s in sides}
    assert got["ours"] == got["headscale"], got  # HuJSON as stored, in every format

    auth_ids = {fmt: "hskey-authreq-" + secrets.token_hex(12) for fmt in FORMATS * 2}
    pending = per_format(sides, lambda fmt: ("debug", "create-node", "--name", f"box-{fmt}",
                                             "-u", user, "-k", auth_ids[fmt]))
    assert "id" not in pending[0] and pending[0]["name"] == "box-json", pending
    nodes = per_format(sides, lambda fmt: ("auth", "register", "--auth-id", auth_ids[fmt],
                                           "-u", user))
    nid = str(nodes[0]["id"])
    assert nodes[0]["user"]["id"] == uid and nodes[0]["register_method"] == 2, nodes  # CLI
    second = {fmt: "hskey-authreq-" + secrets.token_hex(12) for fmt in FORMATS}
    for fmt in FORMATS:
        both(sides, "debug", "create-node", "--name", f"more-{fmt}", "-u", user, "-k",
             second[fmt])
    per_format(sides, lambda fmt: ("nodes", "register", "-u", user, "-k", second[fmt]))
    refused = {fmt: "hskey-authreq-" + secrets.token_hex(12) for fmt in FORMATS}
    for fmt in FORMATS:
        both(sides, "debug", "create-node", "--name", f"no-{fmt}", "-u", user, "-k",
             refused[fmt])
    assert per_format(sides, lambda fmt: ("auth", "reject", "--auth-id", refused[fmt]))[0] == {}
    compare(sides, "nodes", "list")
    compare(sides, "nodes", "list", "-u", user)
    per_format(sides, lambda fmt: ("nodes", "rename", "-i", nid, f"renamed-{fmt}"))
    compare(sides, "nodes", "tag", "-i", nid, "-t", "tag:a")
    compare(sides, "nodes", "expire", "-i", nid)
    compare(sides, "nodes", "expire", "-i", nid, "--disable")
    compare(sides, "nodes", "rename", "-i", "999", "x", errors=True)

    keys = {s.name: json.loads(s.cli("preauthkeys", "create", "-u", str(uid), "--reusable",
                                     "-o", "json").stdout)["key"] for s in sides}
    routers = {s.name: router(s, keys[s.name], ["10.9.0.0/24", "0.0.0.0/0", "::/0"])
               for s in sides}
    try:
        rid = str(routers["ours"].id)
        assert rid == str(routers["headscale"].id)
        compare(sides, "nodes", "list-routes")
        compare(sides, "nodes", "approve-routes", "-i", rid, "-r", "10.9.0.0/24")
        rows = compare(sides, "nodes", "list-routes", "-i", rid)
        assert rows[0]["approved_routes"] == ["10.9.0.0/24"], rows
        compare(sides, "nodes", "approve-routes", "-i", rid, "-r", "")
        compare(sides, "nodes", "backfillips", "--force")
        ids = iter(str(n["id"]) for n in nodes)
        per_format(sides, lambda fmt: ("nodes", "delete", "-i", next(ids), "--force"))
        compare(sides, "nodes", "list", "-u", user)  # the router still online on both
    finally:
        for c in routers.values():
            c.close()


MACHINE_022_EXTRAS = {"user", "pre_auth_key", "preauthkey", "register_method", "registermethod"}


def machine_022(ours, ref):
    """The routes' machines as ours has them, where 0.22.3's route list differs below its
    CLI (test_api_v022 checks those members over REST): it leaves the machine's user,
    pre-auth key and register method unloaded, its keys without their "mkey:" prefixes and
    its IPv6 address first."""
    if isinstance(ours, list) and isinstance(ref, list) and len(ours) == len(ref):
        return [machine_022(a, b) for a, b in zip(ours, ref)]
    if not (isinstance(ours, dict) and isinstance(ref, dict) and "machine" in ref):
        return ref
    mine, theirs = ours["machine"], dict(ref["machine"])
    for k in MACHINE_022_EXTRAS:
        theirs.pop(k, None)
        if k in mine:
            theirs[k] = mine[k]
    for k, v in mine.items():
        if "key" in k and isinstance(v, str) and isinstance(theirs.get(k), str):
            theirs[k] = v
        if "addresses" in k and sorted(v) == sorted(theirs.get(k) or []):
            theirs[k] = v
    return dict(ref, machine={k: theirs[k] for k in mine if k in theirs} | theirs)


@needs_022
def test_022_route_commands_print_as_headscale_022(pair):
    """The commands only 0.22.3 has print its structs (Route with its Machine, whose User has
    a text id). The commands both versions have print as 0.29.3 does (its test is above)."""
    for s in pair:
        s.ok("POST", "/api/v1/user", {"name": "alice"})
    keys = {s.name: s.ok("POST", "/api/v1/preauthkey",
                         {"user": "alice", "reusable": True,
                          "expiration": "2099-01-01T00:00:00Z"})["preAuthKey"]["key"]
            for s in pair}
    routers = {s.name: router(s, keys[s.name], ["10.9.0.0/24"]) for s in pair}
    try:
        rows = compare(pair, "routes", "list", adjust=machine_022)
        assert [r["prefix"] for r in rows] == ["10.9.0.0/24"], rows
        assert rows[0]["machine"]["user"]["id"] == "1", rows  # 0.22.3's User: a text id
        rid = str(rows[0]["id"])
        compare(pair, "routes", "enable", "-r", rid)
        compare(pair, "routes", "list", "-i", str(routers["ours"].id), adjust=machine_022)
        compare(pair, "routes", "disable", "-r", rid)
        compare(pair, "routes", "enable", "-r", "999", errors=True)
    finally:
        for c in routers.values():
            c.close()
