"""Wall-clock steps (issue 19): while real clients are connected, the server's wall clock jumps
2 h ahead of the host's, then back to 2 h behind it.

What is wall-clock by nature follows the new time: a node key expiring in 1 h is expired after
the step forward (its peers are told) and valid again after the step back (they are told too);
a pre-auth key expiring in 1 h is refused after the step forward and honoured after the step
back. What is a duration does not move: map streams stay open, keep-alives keep their interval
(no burst, no pause), and an ephemeral node is removed once it has really been offline for the
inactivity timeout: not at once after the step forward, not hours late after the step back.

The server (and its CLI) runs under libfaketime with an offset the test rewrites
(helpers.FakeClock); clients, PostgreSQL and the test keep the host's clock. Replicas whose
clocks are off are in test_replicas.py."""

import datetime as dt
import time

import helpers
import tailnet
from tailnet import poll

KEEPALIVE_S = 1
EPHEMERAL_S = 66  # the shortest inactivity timeout allowed (headscale's rule: over 65 s)
STEADY_S = 5  # how long each step is watched for streams dropped and keep-alives bunched


def metric(w, name):
    st, _, body = w.ns.http("GET", "127.0.0.1", 9090, "/metrics")
    assert st == 200, st
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in the server's metrics")


def keepalives(w):
    return metric(w, 'headscale_mapresponse_sent_total{status="ok",type="keepalive"}')


def listed(w, node):
    return w.server.node_by_name(node.name)


def online(w, node):
    return bool((listed(w, node) or {}).get("online"))


def expired_for(viewer, node):
    return bool((viewer.peer(node.name) or {}).get("Expired"))


def went_offline(w, node):
    """Stops node's client; → the monotonic time the server shows it offline."""
    node.stop()
    poll(lambda: not online(w, node), 30, f"{node.name} offline")
    return time.monotonic()


def assert_removed_on_time(w, node, offline_at):
    """node, offline since offline_at (monotonic), is removed once the inactivity timeout has
    passed, give or take the collector's second: not before, not much after."""
    gone = poll(lambda: listed(w, node) is None and time.monotonic(),
                offline_at + EPHEMERAL_S + 10 - time.monotonic(), f"{node.name} removed")
    assert gone - offline_at >= EPHEMERAL_S - 2, \
        f"{node.name} removed {gone - offline_at:.1f} s after it went offline"


def assert_steady(w, steady):
    """For STEADY_S: the steady nodes stay Running and online (no stream dropped), and the
    keep-alives of their streams keep coming at their interval (jittered up to 1/6 and sent
    on the server's one-second tick): none missing, none bunched."""
    start, k0 = time.monotonic(), keepalives(w)
    streams = metric(w, "headscale_map_sessions")  # the steady nodes' and any others'
    while time.monotonic() < start + STEADY_S:  # bounded by STEADY_S
        for n in steady:
            assert online(w, n), f"{n.name} went offline after the step"
        time.sleep(0.3)
    for n in steady:
        assert n.state() == "Running", f"{n.name}: {n.state()}"
    took, sent = time.monotonic() - start, keepalives(w) - k0
    most = max(streams, len(steady)) * (took / KEEPALIVE_S + 1)
    least = len(steady) * took / (KEEPALIVE_S * 7 / 6 + 1) * 0.7
    assert least <= sent <= most, f"{sent} keep-alives in {took:.1f} s for {len(steady)} streams"


def test_wall_clock_steps_forward_and_back(tmp_path, db):
    clock = helpers.FakeClock(str(tmp_path))
    with tailnet.World(tmp_path, db, tailnet.versions()[0], ephemeral_timeout=f"{EPHEMERAL_S}s",
                       server_overrides={"tuning": {"keepalive_interval": f"{KEEPALIVE_S}s"}},
                       server_setup=lambda s: s.env.update(clock.env())) as w:
        a = w.join("a")
        b = w.join("b")
        e1 = w.join("e1", ephemeral=True)
        e2 = w.join("e2", ephemeral=True)
        a.wait_peer("b", lambda p: not p.get("Expired"))
        in_an_hour = helpers.rfc3339(helpers.now() + dt.timedelta(hours=1))
        w.server.cli_ok("nodes", "expire", "-i", listed(w, b)["id"], "-e", in_an_hour)
        key = w.key(expiration="1h")  # by the server's clock, now the host's
        e1_offline = went_offline(w, e1)

        clock.set("+2h")
        e2_offline = went_offline(w, e2)  # by the new wall time
        poll(lambda: expired_for(a, b), 15, "a to see b expired by the new wall time")
        assert_steady(w, [a])
        x = w.node("x")
        r = x.up(key, timeout=20, check=False)
        assert r.returncode != 0, "a pre-auth key 1 h past its expiry was accepted"
        assert listed(w, x) is None
        assert listed(w, e1), "e1 removed at the step, long before its inactivity timeout"

        clock.set("-2h")
        poll(lambda: not expired_for(a, b), 15, "a to see b valid again by the wall clock")
        assert_steady(w, [a])
        x.up(key)  # 3 h before its expiry now
        x.wait_running()
        a.wait_peer("x")
        # by the wall clock now, e1 went offline 2 h and e2 4 h from now: their timeout runs on
        assert_removed_on_time(w, e1, e1_offline)
        assert_removed_on_time(w, e2, e2_offline)
        w.server.stop()  # clean, and sanitizer-clean under the preloaded clock
