"""Smoke run of the scale benchmark harness (bench/run.sh) so that it cannot rot: 20 simulated
Tailscale nodes (Tailscale's own control client over ts2021) against our server on SQLite,
a few seconds of steady state, the propagation events, a 200-rule policy set over REST (the
nodes belong to several users and tags for it), an HA failover (every node announces a route,
nodes 0 and 1 the same one; the primary's stream is closed), then a server restart with every node
reconnecting (about 10 s: over plain HTTP the client's Noise dial to a server that is down
waits out its 10 s timeout). A second, short soak run churns 20 nodes (leaves, joins, endpoint
and policy changes) and compares every node's followed map with a fresh full map. Checks that
the result files are written and hold sane figures; the figures themselves are benchmark
output, not asserted targets."""

import json
import os
import shutil
import subprocess

import pytest

import helpers

RUN_SH = os.path.join(helpers.REPO, "bench", "run.sh")
NODES = 20


def run_bench(out, *args):
    """bench/run.sh on NODES nodes against our server on SQLite: its report's file stem, the
    records, the raw results and the report's text."""
    if shutil.which("go") is None:
        pytest.skip("Go toolchain not installed (bench/loadgen is Go)")
    stamp_env = dict(os.environ)
    stamp_env.pop("HEADSCALE_CONFIG", None)
    r = subprocess.run([RUN_SH, "--nodes", str(NODES), "--servers", "ours-sqlite",
                        "--out-dir", str(out), "--ours-bin", os.path.abspath(helpers.HS_BIN)]
                       + list(args),
                       capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
                       env=stamp_env)
    assert r.returncode == 0, f"bench/run.sh rc {r.returncode}\n{r.stdout}\n{r.stderr[-4000:]}"
    mds = sorted(p for p in os.listdir(out) if p.endswith(f"-{NODES}.md"))
    assert mds, f"no report in {os.listdir(out)}\n{r.stderr[-2000:]}"
    stem = mds[-1][:-3]
    with open(out / f"{stem}.json") as f:
        records = json.load(f)
    with open(out / f"{stem}.raw.json") as f:
        raw = json.load(f)
    with open(out / f"{stem}.md") as f:
        md = f.read()
    return {"dir": out, "stem": stem, "records": records, "raw": raw, "md": md}


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return run_bench(out, "--duration", "5",
                     "--scenarios", "storm,steady,propagation,policy,failover,restart")


def metric(records, scenario, name):
    hits = [r for r in records if r["scenario"] == scenario and r["metric"] == name]
    assert len(hits) == 1, f"{scenario}/{name}: {len(hits)} records"
    return hits[0]["value"]


def test_records_have_the_agreed_shape(bench_run):
    recs = bench_run["records"]
    assert recs, "empty result list"
    for r in recs:
        assert set(r) == {"server", "db", "nodes", "scenario", "metric", "value", "unit"}, r
        assert r["server"] == "ours" and r["db"] == "sqlite" and r["nodes"] == NODES, r
        assert isinstance(r["value"], (int, float)), r
    names = {r["metric"] for r in recs}
    for need in ("rss_per_node_kib", "cpu_s_per_change", "propagation_p50_ms",
                 "propagation_p99_ms", "connect_all_s", "bytes_per_update",
                 "storm_api_list_p99_ms", "restart_all_back_s", "restart_api_list_p50_ms",
                 "restart_api_list_p99_ms", "restart_api_list_max_ms"):
        assert need in names, f"metric {need} missing"


def test_all_nodes_connected(bench_run):
    recs = bench_run["records"]
    assert metric(recs, "storm", "connected_nodes") == NODES
    assert 0 < metric(recs, "storm", "connect_all_s") < 120
    # every node's first map listed every other node
    assert metric(recs, "storm", "peers_in_first_map_min") >= 0
    assert metric(recs, "steady", "server_rss_kib") > 1000
    assert metric(recs, "steady", "rss_per_node_kib") > 0


def test_every_change_observed_by_all(bench_run):
    recs = bench_run["records"]
    for kind in ("endpoint", "join", "delete"):
        sc = f"propagation-{kind}"
        assert metric(recs, sc, "observed_fraction") == 1.0, f"{kind} not seen by every node"
        assert metric(recs, sc, "recipients") >= NODES - 1
        p50 = metric(recs, sc, "propagation_p50_ms")
        p99 = metric(recs, sc, "propagation_p99_ms")
        assert 0 < p50 <= p99 < 30000, (kind, p50, p99)
        assert metric(recs, sc, "bytes_per_update") > 0
        assert metric(recs, sc, "cpu_s_per_change") >= 0
    assert metric(recs, "propagation", "propagation_p99_ms") > 0


def test_policy_change_reaches_every_node(bench_run):
    recs = bench_run["records"]
    assert metric(recs, "policy", "policy_rules") == 200
    # after the join and the delete there are NODES live nodes, and every one of them had its
    # PacketFilter changed by the new policy (the initial one allowed everything)
    assert metric(recs, "policy", "policy_nodes") == NODES
    assert metric(recs, "policy", "policy_changed_nodes") == NODES
    assert metric(recs, "policy", "policy_unchanged_nodes") == 0
    p50 = metric(recs, "policy", "policy_p50_ms")
    assert 0 < p50 <= metric(recs, "policy", "policy_p99_ms") \
        <= metric(recs, "policy", "policy_max_ms") < 30000
    assert 0 < metric(recs, "policy", "policy_api_ms") < 30000
    assert metric(recs, "policy", "policy_server_cpu_s") >= 0
    assert metric(recs, "policy", "policy_bytes_per_node") > 0
    # the new policy hides some peers, never all of them
    before = metric(recs, "policy", "policy_peers_before")
    assert 0 < metric(recs, "policy", "policy_peers_after_min") < before
    raw = bench_run["raw"]["ours-sqlite"]["policy"]
    assert len(raw["latency_ms"]) == NODES and not raw.get("missing"), raw
    assert "| policy | policy_p99_ms |" in bench_run["md"]


def test_failover_reaches_every_node_given_the_route(bench_run):
    recs = bench_run["records"]
    assert metric(recs, "failover", "failover_routes_approved") == NODES
    nodes = metric(recs, "failover", "failover_nodes")
    # the 200-rule policy gives the route to some of the other nodes, never none of them
    assert 0 < nodes <= NODES - 2
    assert nodes + metric(recs, "failover", "failover_unrouted_nodes") == NODES - 2
    assert metric(recs, "failover", "failover_told_nodes") == nodes
    assert 0 < metric(recs, "failover", "failover_p50_ms") \
        <= metric(recs, "failover", "failover_p99_ms") < 30000
    assert "| failover | failover_p99_ms |" in bench_run["md"]


def test_api_polled_during_both_storms(bench_run):
    recs = bench_run["records"]
    for sc in ("storm", "restart"):
        assert metric(recs, sc, f"{sc}_api_list_count") >= 1
        assert metric(recs, sc, f"{sc}_api_list_errors") == 0
        p50 = metric(recs, sc, f"{sc}_api_list_p50_ms")
        assert 0 < p50 <= metric(recs, sc, f"{sc}_api_list_p99_ms") \
            <= metric(recs, sc, f"{sc}_api_list_max_ms") < 30000


def test_every_node_back_after_restart(bench_run):
    recs = bench_run["records"]
    # the join and the delete of the propagation events leave NODES live nodes, and the
    # failover's dead router one less
    live = NODES - 1
    assert metric(recs, "restart", "restart_nodes") == live
    assert metric(recs, "restart", "restart_back_nodes") == live
    down = metric(recs, "restart", "restart_down_s")
    assert 0 < metric(recs, "restart", "restart_exit_s") <= down < 60
    assert down < metric(recs, "restart", "restart_all_back_s") < 60
    assert metric(recs, "restart", "restart_attempts_mean") >= 1
    assert metric(recs, "restart", "restart_server_cpu_s") > 0
    assert metric(recs, "restart", "restart_server_rss_kib") > 1000
    raw = bench_run["raw"]["ours-sqlite"]
    assert len(raw["restart"]["back_ms"]) == live and not raw["restart"].get("error"), raw
    # the first process stopped cleanly on SIGTERM
    first = raw["first_server_exit"]
    assert first["returncode"] == 0, first
    tail = "\n".join(first["log_tail"])
    assert not helpers.sanitizer_lines(tail), tail
    assert "| restart | restart_all_back_s |" in bench_run["md"]


def test_report_and_raw(bench_run):
    md = bench_run["md"]
    assert "| scenario | metric | unit | ours-sqlite |" in md
    assert "connect_all_s" in md and "propagation_p99_ms" in md
    raw = bench_run["raw"]["ours-sqlite"]
    assert not raw.get("error"), raw
    assert raw["connected"] == NODES
    assert raw["server_alive_after"] is True
    tail = "\n".join(raw.get("server_log_tail", []))
    assert not helpers.sanitizer_lines(tail), tail
    # loadgen CPU is reported for each phase
    assert all("loadgen_cpu_s" in p for p in raw["phases"])


SOAK_S = 45


@pytest.fixture(scope="module")
def soak_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("soak")
    # 6 leave and 6 join a minute, 6 endpoint changes, the policy switched every 15 s
    run = run_bench(out, "--duration", str(SOAK_S), "--scenarios", "soak",
                    "--soak-churn", "6", "--soak-endpoints", "6", "--soak-policy-every", "15")
    assert run["stem"].endswith(f"-soak-{NODES}"), run["stem"]
    run["raw"] = run["raw"]["ours-sqlite"]
    return run


def test_soak_every_map_matches_a_fresh_one(soak_run):
    recs, sr = soak_run["records"], soak_run["raw"]["soak"]
    assert metric(recs, "soak", "soak_duration_s") >= SOAK_S
    # the churn happened: about 6 a minute each way, every leave kind, both policies
    assert metric(recs, "soak", "soak_joined") >= 3
    assert metric(recs, "soak", "soak_left") == metric(recs, "soak", "soak_joined")
    assert set(sr["left"]) == {"deleted", "logged out", "disconnected"}, sr["left"]
    assert metric(recs, "soak", "soak_endpoint_changes") >= 3
    assert metric(recs, "soak", "soak_policy_changes") >= 2
    assert metric(recs, "soak", "soak_policy_errors") == 0
    # every live node compared, and none differs once a change on its way has arrived
    assert metric(recs, "soak", "soak_compared_nodes") == NODES
    assert metric(recs, "soak", "soak_compare_errors") == 0
    assert metric(recs, "soak", "soak_differing_nodes") == 0, sr.get("examples")
    assert metric(recs, "soak", "soak_equal_nodes") \
        + metric(recs, "soak", "soak_equal_on_recheck_nodes") == NODES
    assert metric(recs, "soak", "soak_peers_mean") > 0
    # RSS sampled every 10 s, the trend and the log scan reported
    assert len(sr["samples"]) >= SOAK_S // 10
    assert all(s["server_rss_kib"] > 1000 for s in sr["samples"])
    assert "| soak | soak_rss_slope_kib_per_min |" in soak_run["md"]
    assert metric(recs, "total", "server_log_error_lines") == 0, \
        soak_run["raw"]["server_log_problems"]
