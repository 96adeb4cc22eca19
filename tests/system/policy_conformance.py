#!/usr/bin/env python3
"""Policy conformance: our policy compiler against what Tailscale's coordination service sent.

The corpus (shared/testdata/policy-conformance/*.jsonl, described in its README.md) pairs a
policy and a small tailnet with every node's captured packet filter, peers, peer AllowedIPs,
SSH policy and capabilities. For each case this writes the policy and the topology to files,
runs `headscale debug policy --policy P --topology T -o json` and compares the answer node by
node after normalising both sides the same way:

  packet filter  flattened, per (destination, port range, protocol), to the union of source
                 address ranges merged into maximal ranges ("*" stays a token, as source and
                 as destination); app-capability grants per (destination, capability, value).
                 Rule order, entry order, duplicates and merged-versus-split rules disappear.
  peers          as sorted lists.
  AllowedIPs     per peer that the capture shows, as sets; a peer the map leaves out has
                 exactly its own /32 and /128.
  SSH policy     where the capture has one: rules in order, principals as a set.
  capabilities   nodeattrs cases only, leaving out the tailnet and role defaults.

A rejected policy (api_response_code != 200) passes when the command exits non-zero without
crashing. Nodes' `addresses` (disable-ipv4) and `peer_cap_map` are not compared: they are
reported, not scored.

Script:  python3 tests/system/policy_conformance.py [--filter SUBSTR] [--verbose] [--jobs N]
         python3 tests/system/policy_conformance.py --self-check
The script always exits 0: it is a report. tests/system/test_policy_conformance.py holds the
pass-rate gate. HS_BIN names the binary (default <repo>/build/headscale)."""

import argparse
import collections
import concurrent.futures
import ipaddress
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORPUS_DIR = REPO.parent / "shared" / "testdata" / "policy-conformance"
DEFAULT_BIN = os.environ.get("HS_BIN", str(REPO / "build" / "headscale"))
CASE_TIMEOUT = 60  # seconds for one `debug policy` run
DIFF_LINES = 15    # per failing case, unless verbose

DEFAULT_PROTOS = (6, 17, 1, 58)  # an omitted IPProto: TCP, UDP, ICMP, ICMPv6
PROTO_NAMES = {1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 47: "gre", 50: "esp", 51: "ah",
               58: "icmpv6", 132: "sctp"}
STAR = "*"

# Capabilities the capture shows that come from the tailnet or the user's role rather than
# from nodeAttrs (README, "Semantics observed"). Some are written as full URLs.
DEFAULT_CAPS = ("file-sharing", "ssh", "tailnet-lock", "is-owner", "is-admin",
                "probe-udp-lifetime", "ssh-behavior-v1", "ssh-env-vars", "store-appc-routes",
                "tailnet-display-name", "default-auto-update")
CAP_URL = "https://tailscale.com/cap/"


def is_default_cap(key):
    return key in DEFAULT_CAPS or (key.startswith(CAP_URL) and key[len(CAP_URL):] in DEFAULT_CAPS)


# ---- addresses as ranges ----

def parse_range(text):
    """An address form as (version, first, last) integers, or STAR. Raises ValueError."""
    if text == STAR:
        return STAR
    if "-" in text:
        lo, hi = (ipaddress.ip_address(p.strip()) for p in text.split("-", 1))
        if lo.version != hi.version or int(lo) > int(hi):
            raise ValueError(f"bad range {text!r}")
        return (lo.version, int(lo), int(hi))
    if "/" in text:
        net = ipaddress.ip_network(text, strict=False)
        return (net.version, int(net.network_address), int(net.broadcast_address))
    ip = ipaddress.ip_address(text)
    return (ip.version, int(ip), int(ip))


def merge_ranges(ranges):
    """Sorted maximal ranges: overlapping and adjacent ranges of one family become one."""
    out = []
    for v, lo, hi in sorted(ranges):
        if out and out[-1][0] == v and lo <= out[-1][2] + 1:
            if hi > out[-1][2]:
                out[-1] = (v, out[-1][1], hi)
        else:
            out.append((v, lo, hi))
    return tuple(out)


def subtract_ranges(a, b):
    """Parts of the merged ranges a not covered by the merged ranges b."""
    out = []
    for v, lo, hi in a:
        cur = lo
        for bv, blo, bhi in b:
            if bv != v or bhi < cur or blo > hi:
                continue
            if blo > cur:
                out.append((v, cur, blo - 1))
            cur = max(cur, bhi + 1)
            if cur > hi:
                break
        if cur <= hi:
            out.append((v, cur, hi))
    return tuple(out)


def format_range(r):
    if r == STAR:
        return STAR
    v, lo, hi = r
    make = ipaddress.IPv4Address if v == 4 else ipaddress.IPv6Address
    if lo == hi:
        return str(make(lo))
    size = hi - lo + 1
    if size & (size - 1) == 0 and lo % size == 0:
        bits = (32 if v == 4 else 128) - size.bit_length() + 1
        return f"{make(lo)}/{bits}"
    return f"{make(lo)}-{make(hi)}"


class Sources:
    """A union of source addresses: the "*" token plus merged ranges."""
    __slots__ = ("star", "ranges")

    def __init__(self, star=False, ranges=()):
        self.star, self.ranges = star, ranges

    def __eq__(self, other):
        return (isinstance(other, Sources) and self.star == other.star
                and self.ranges == other.ranges)

    def text(self, limit=6):
        items = ([STAR] if self.star else []) + [format_range(r) for r in self.ranges]
        more = f" ... (+{len(items) - limit})" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more


def _sources(parsed):
    star = any(p == STAR for p in parsed)
    return Sources(star, merge_ranges(p for p in parsed if p != STAR))


# ---- packet filters ----

def _canon_json(v):
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def normalize_filter(rules):
    """{key: Sources}. Keys are ("port", dst, (first, last), proto) for DstPorts and
    ("cap", dst, name, canonical value) for CapGrant; dst is a range or STAR."""
    acc = collections.defaultdict(list)
    for rule in rules or []:
        srcs = [parse_range(s) for s in rule.get("SrcIPs") or []]
        protos = rule.get("IPProto") or DEFAULT_PROTOS
        for dp in rule.get("DstPorts") or []:
            dst = parse_range(dp["IP"])
            ports = (dp["Ports"]["First"], dp["Ports"]["Last"])
            for proto in protos:
                acc[("port", dst, ports, proto)].extend(srcs)
        for grant in rule.get("CapGrant") or []:
            for d in grant.get("Dsts") or []:
                dst = parse_range(d)
                for name, value in (grant.get("CapMap") or {}).items():
                    acc[("cap", dst, name, _canon_json(value))].extend(srcs)
    return {k: _sources(v) for k, v in acc.items() if v}  # no sources: allows nothing


def _what_text(k):
    """What a key grants at its destination: the ports, or the capability and its value."""
    if k[0] == "port":
        first, last = k[2]
        if (first, last) == (0, 65535):
            return "ports *"
        return f"port {first}" if first == last else f"ports {first}-{last}"
    value = "" if k[3] == "null" else " " + _clip(k[3], 60)
    return f"cap {k[2]}{value}"


def _src_diff(e, o):
    if o is None:
        return "missing", f"from {e.text()}"
    if e is None:
        return "extra  ", f"from {o.text()}"
    miss = Sources(e.star and not o.star, subtract_ranges(e.ranges, o.ranges))
    extra = Sources(o.star and not e.star, subtract_ranges(o.ranges, e.ranges))
    parts = ([f"missing src {miss.text()}"] if miss.star or miss.ranges else []) + (
        [f"extra src {extra.text()}"] if extra.star or extra.ranges else [])
    return "differs", "; ".join(parts)


def _proto_text(protos):
    order = sorted(protos, key=lambda p: (DEFAULT_PROTOS.index(p) if p in DEFAULT_PROTOS
                                          else len(DEFAULT_PROTOS), p))
    return " [" + ",".join(PROTO_NAMES.get(p, str(p)) for p in order) + "]" if order else ""


def diff_filter(exp, ours):
    """Lines describing how our normalised filter differs from the expected one. Differences
    that are the same for several protocols, then for several destinations, share a line."""
    by_dst = collections.OrderedDict()  # (status, dst, what, detail) -> protocols
    for k in sorted(set(exp) | set(ours), key=lambda k: (k[0], str(k[1]), str(k[2:]))):
        e, o = exp.get(k), ours.get(k)
        if e != o:
            status, detail = _src_diff(e, o)
            protos = by_dst.setdefault((status, k[1], _what_text(k), detail), [])
            if k[0] == "port":
                protos.append(k[3])
    grouped = collections.OrderedDict()  # (status, what, detail, protocols) -> destinations
    for (status, dst, what, detail), protos in by_dst.items():
        grouped.setdefault((status, what, detail, tuple(protos)), []).append(format_range(dst))
    return [f"{status} dst {', '.join(dsts)} {what}{_proto_text(protos)} {detail}"
            for (status, what, detail, protos), dsts in grouped.items()]


# ---- peers, AllowedIPs, SSH, capabilities ----

def _canon_prefix(text):
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        return text


def _own_ips(node):
    return {_canon_prefix(node[k] + suffix) for k, suffix in (("ipv4", "/32"), ("ipv6", "/128"))
            if node.get(k)}


def _missing_extra(missing, extra):
    return ((f" missing {', '.join(sorted(missing))}" if missing else "")
            + (f" extra {', '.join(sorted(extra))}" if extra else ""))


def diff_allowed_ips(exp_node, our_node, nodes):
    lines = []
    exp_map = exp_node.get("peer_allowed_ips") or {}
    our_map = our_node.get("peer_allowed_ips") or {}
    for peer in sorted(set(exp_node.get("peers") or []) | set(exp_map)):
        own = _own_ips(nodes.get(peer, {}))
        e = {_canon_prefix(p) for p in exp_map[peer]} if peer in exp_map else own
        o = {_canon_prefix(p) for p in our_map[peer]} if peer in our_map else own
        if e != o:
            lines.append(f"AllowedIPs of {peer}:" + _missing_extra(e - o, o - e))
    return lines


def _canon_principal(p):
    p = dict(p)
    if isinstance(p.get("nodeIP"), str):
        try:
            p["nodeIP"] = str(ipaddress.ip_address(p["nodeIP"]))
        except ValueError:
            pass
    return _canon_json(p)


def normalize_ssh(rules):
    out = []
    for r in rules or []:
        r = dict(r)
        r["principals"] = [json.loads(p) for p in
                           sorted({_canon_principal(p) for p in r.get("principals") or []})]
        out.append(_canon_json(r))
    return out


def _clip(s, n=300):
    return s if len(s) <= n else s[:n - 3] + "..."


def diff_ssh(exp, ours):
    e, o = normalize_ssh(exp), normalize_ssh(ours)
    if e == o:
        return []
    lines = [f"ssh: {len(e)} rule(s) expected, {len(o)} ours"]
    for i in range(max(len(e), len(o))):
        if i >= len(e) or i >= len(o) or e[i] != o[i]:
            lines.append(f"ssh rule {i}: expected {_clip(e[i]) if i < len(e) else '(none)'}")
            lines.append(f"ssh rule {i}: ours     {_clip(o[i]) if i < len(o) else '(none)'}")
            break
    return lines


def policy_caps(capmap):
    return {k: _canon_json(v) for k, v in (capmap or {}).items() if not is_default_cap(k)}


def diff_caps(exp, ours):
    e, o = policy_caps(exp), policy_caps(ours)
    lines = []
    for k in sorted(set(e) | set(o)):
        if e.get(k) != o.get(k):
            lines.append(f"cap {k}: expected {_clip(e.get(k, '(absent)'), 120)}, "
                         f"ours {_clip(o.get(k, '(absent)'), 120)}")
    return lines


# ---- one node, one case ----

def compare_node(case, name, exp, ours):
    """Lines describing every difference for one node (empty when it conforms)."""
    lines = []
    try:
        fl = diff_filter(normalize_filter(exp.get("packet_filter_rules")),
                         normalize_filter(ours.get("packet_filter_rules")))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        fl = [f"filter does not parse: {e!r}"]
    lines += [f"filter: {ln}" for ln in fl]
    ep, op = sorted(exp.get("peers") or []), sorted(ours.get("peers") or [])
    if ep != op:
        lines.append("peers:" + _missing_extra(set(ep) - set(op), set(op) - set(ep)))
    lines += diff_allowed_ips(exp, ours, case["nodes"])
    if "ssh_policy" in exp:
        lines += diff_ssh(exp["ssh_policy"], ours.get("ssh_policy"))
    if case["category"] == "nodeattrs" and "cap_map" in exp:
        lines += diff_caps(exp["cap_map"], ours.get("cap_map"))
    return lines


class Result:
    """One case's outcome. diff holds case-level lines; nodes holds (node, lines) for every
    node that differs."""
    __slots__ = ("id", "category", "passed", "diff", "nodes", "notes")

    def __init__(self, case, passed, diff=(), notes=(), nodes=()):
        self.id, self.category = case["id"], case["category"]
        self.passed, self.diff = passed, list(diff)
        self.notes, self.nodes = list(notes), list(nodes)

    def summary(self):
        """One line: the first difference."""
        if self.diff:
            return self.diff[0]
        if self.nodes:
            name, lines = self.nodes[0]
            return _clip(f"node {name}: {lines[0]}", 200)
        return "passed" if self.passed else "failed"

    def lines(self, verbose=False):
        """The diff to print: everything when verbose, else the case-level lines and the first
        differing node, cut at DIFF_LINES, then the names of the other nodes that differ."""
        out = list(self.diff)
        for name, lines in self.nodes if verbose else self.nodes[:1]:
            out += [f"node {name}:"] + [f"  {ln}" for ln in lines]
        if not verbose and len(out) > DIFF_LINES:
            out = out[:DIFF_LINES] + [f"... {len(out) - DIFF_LINES} more lines (--verbose)"]
        if not verbose and len(self.nodes) > 1:
            others = [n for n, _ in self.nodes[1:]]
            out.append(f"also differ: {len(others)} more node(s): {_clip(', '.join(others), 120)}")
        return out


def _notes(case):
    notes = []
    if "capture_error" in case:
        notes.append("capture_error: advisory capture")
    for name, exp in sorted(case["expect"].items()):
        if "addresses" in exp:
            notes.append(f"{name}: own addresses {exp['addresses']} not compared")
    return notes


def compare_case(case, ours):
    """Compares a parsed `debug policy -o json` answer with an accepted case's expect."""
    nodes = []
    for name in sorted(case["expect"]):
        if name not in ours:
            lines = ["missing from our answer"]
        else:
            lines = compare_node(case, name, case["expect"][name], ours[name])
        if lines:
            nodes.append((name, lines))
    return Result(case, not nodes, notes=_notes(case), nodes=nodes)


# Which of two routers of one prefix is its primary depends on the order they registered in,
# and the corpus does not record it. What the captures show: in routes.jsonl, metapod is the
# primary over butterfree in every case (76 of them), which neither name order nor address
# order gives, but the order of the Pokédex (metapod #11, butterfree #12) does, and it also
# fits the other pairs of that file. The grant captures fit name order (blastoise over
# squirtle, ha-a1 over ha-a2), which is what the command uses without ids. So the routes
# captures get node ids in Pokédex order: the registration order they most likely had.
POKEDEX = {"bulbasaur": 1, "ivysaur": 2, "venusaur": 3, "charmander": 4, "squirtle": 7,
           "wartortle": 8, "blastoise": 9, "caterpie": 10, "metapod": 11, "butterfree": 12,
           "weedle": 13, "kakuna": 14, "beedrill": 15, "pidgey": 16, "pidgeotto": 17,
           "rattata": 19, "raticate": 20, "spearow": 21, "fearow": 22}


def topology_nodes(case):
    if case["category"] != "routes":
        return case["nodes"]
    return {name: dict(node, id=POKEDEX[name]) if name in POKEDEX else node
            for name, node in case["nodes"].items()}


def write_inputs(case, tmp):
    if "policy_text" in case:
        policy, text = Path(tmp) / "policy.hujson", case["policy_text"]
    else:
        policy, text = Path(tmp) / "policy.json", json.dumps(case["policy"], indent=1)
    policy.write_text(text)
    topology = Path(tmp) / "topology.json"
    topology.write_text(json.dumps({"users": case["users"], "nodes": topology_nodes(case)}))
    return str(policy), str(topology)


def _message(stderr):
    """The command's error: with -o json it is {"error": "..."} on stderr."""
    try:
        return _clip(str(json.loads(stderr)["error"]), 200)
    except (ValueError, KeyError, TypeError):
        text = stderr.strip()
        return _clip(text.splitlines()[0] if text else "(no message)", 200)


def run_case(case, hs_bin=DEFAULT_BIN):
    with tempfile.TemporaryDirectory(prefix="polconf-") as tmp:
        policy, topology = write_inputs(case, tmp)
        try:
            p = subprocess.run([hs_bin, "debug", "policy", "--policy", policy,
                                "--topology", topology, "-o", "json"],
                               capture_output=True, text=True, timeout=CASE_TIMEOUT)
        except subprocess.TimeoutExpired:
            return Result(case, False, [f"timed out after {CASE_TIMEOUT} s"])
    if p.returncode < 0:
        return Result(case, False, [f"killed by signal {-p.returncode}: {_message(p.stderr)}"])
    if case["api_response_code"] != 200:
        if p.returncode != 0:
            return Result(case, True)
        why = f"{case['api_response_code']}: {_clip(case.get('error', ''), 160)}"
        return Result(case, False, [f"accepted a policy Tailscale rejects ({why})"])
    if p.returncode != 0:
        return Result(case, False, [f"rejected (exit {p.returncode}): {_message(p.stderr)}"],
                      _notes(case))
    try:
        ours = json.loads(p.stdout)
    except json.JSONDecodeError as e:
        return Result(case, False, [f"output is not JSON: {e}"])
    return compare_case(case, ours)


# ---- the corpus ----

def load_cases(corpus=CORPUS_DIR, substr=None):
    cases = []
    for path in sorted(Path(corpus).glob("*.jsonl")):
        with open(path) as f:
            for line in f:
                if line.strip():
                    case = json.loads(line)
                    if not substr or substr in case["id"]:
                        cases.append(case)
    return cases


def run_all(cases, hs_bin=DEFAULT_BIN, jobs=2):
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(lambda c: run_case(c, hs_bin), cases))


def _perturbed(expect_node, rng):
    """The same answer written differently: rules reversed, each split per source, sources
    shuffled, DstPorts reversed, SSH principals shuffled, peers shuffled."""
    node = json.loads(json.dumps(expect_node))
    rules = []
    for r in reversed(node.get("packet_filter_rules") or []):
        for s in reversed(r["SrcIPs"]):
            split = dict(r, SrcIPs=[s])
            if "DstPorts" in split:
                split["DstPorts"] = list(reversed(split["DstPorts"]))
            rules.append(split)
    node["packet_filter_rules"] = rules
    rng.shuffle(node["peers"])
    for r in node.get("ssh_policy") or []:
        rng.shuffle(r["principals"])
    return node


def self_check(cases):
    """Each accepted case's expect against itself, then against a reshuffled copy: both must
    conform 100 %, or the normaliser is wrong."""
    rng = random.Random(1)
    results = []
    for case in cases:
        if case["api_response_code"] != 200:
            continue
        same = compare_case(case, case["expect"])
        shuffled = compare_case(case, {n: _perturbed(e, rng) for n, e in case["expect"].items()})
        results.append(Result(case, same.passed and shuffled.passed, nodes=same.nodes + [
            (f"{n} (reshuffled)", lines) for n, lines in shuffled.nodes]))
    return results


# ---- report ----

def report(results, verbose=False, out=sys.stdout):
    by_cat = collections.OrderedDict()
    for r in sorted(results, key=lambda r: r.category):
        by_cat.setdefault(r.category, []).append(r)
    for cat, rs in by_cat.items():
        ok = sum(r.passed for r in rs)
        print(f"{cat:<10} {ok:4d}/{len(rs):<4d} {100.0 * ok / len(rs):6.1f} %", file=out)
    total, ok = len(results), sum(r.passed for r in results)
    print(f"{'total':<10} {ok:4d}/{total:<4d} {pass_rate(results):6.1f} %", file=out)
    notes = [(r.id, n) for r in results for n in r.notes]
    if notes:
        print(f"\nnot compared ({len(notes)}):", file=out)
        for cid, n in notes:
            print(f"  {cid}: {n}", file=out)
    failed = [r for r in results if not r.passed]
    if failed:
        print(f"\nfailures ({len(failed)}):", file=out)
    for r in sorted(failed, key=lambda r: r.id):
        print(f"- {r.id}", file=out)
        for line in r.lines(verbose):
            print(f"    {line}", file=out)


def pass_rate(results):
    return 100.0 * sum(r.passed for r in results) / len(results) if results else 0.0


def main(argv=None):
    ap = argparse.ArgumentParser(description="Compare `headscale debug policy` with the "
                                 "Tailscale captures in the policy conformance corpus.")
    ap.add_argument("--filter", help="only cases whose id contains this text")
    ap.add_argument("--verbose", action="store_true", help="every difference of every case")
    ap.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    ap.add_argument("--self-check", action="store_true",
                    help="check the normaliser on the corpus alone (no binary is run)")
    ap.add_argument("--bin", default=DEFAULT_BIN, help="headscale binary (default $HS_BIN or "
                    "<repo>/build/headscale)")
    ap.add_argument("--corpus", default=str(CORPUS_DIR), help="corpus directory")
    args = ap.parse_args(argv)
    cases = load_cases(args.corpus, args.filter)
    if not cases:
        print(f"no cases in {args.corpus}" + (f" matching {args.filter!r}" if args.filter else ""))
        return 0
    if args.self_check:
        report(self_check(cases), args.verbose)
        return 0
    if not os.access(args.bin, os.X_OK):
        print(f"headscale binary not found or not executable: {args.bin} (set HS_BIN or --bin)")
        return 0
    report(run_all(cases, args.bin, args.jobs), args.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
