"""Persistence and process behaviour: state survives kill -9 and a clean restart on both
databases, a second `serve` on the same unix socket is refused, and secrets are not stored
(or logged) in clear."""

import datetime as dt
import os
import subprocess
import time

import pytest
import yaml

from helpers import API_KEY_RE, AUTH_KEY_RE, HS_BIN, free_port, now, rfc3339, unique
from noise_client import ControlClient


def _populate(s):
    users = [s.create_user() for _ in range(3)]
    paks = [
        s.api_ok("POST", "/api/v1/preauthkey",
                 {"user": users[0]["id"], "reusable": True,
                  "expiration": rfc3339(now() + dt.timedelta(hours=3))})["preAuthKey"],
        s.api_ok("POST", "/api/v1/preauthkey",
                 {"user": users[1]["id"], "ephemeral": True, "aclTags": ["tag:ci"],
                  "expiration": rfc3339(now() + dt.timedelta(hours=1))})["preAuthKey"],
    ]
    extra_key = API_KEY_RE.search(s.cli_ok("apikeys", "create", "-e", "2d").stdout).group(0)
    s.api_ok("PUT", "/api/v1/policy", {"policy": '{"acls": [], // persisted\n}'})
    return users, paks, extra_key


def _snapshot(s):
    return {
        "users": s.users(),
        "preauthkeys": s.preauthkeys(),
        "apikeys": s.apikeys_state(),
        "policy": s.api_ok("GET", "/api/v1/policy"),
        "cli_users": sorted(u["name"] for u in s.cli_json("users", "list")),
    }


def _check_restored(s, before, users, paks, extra_key):
    after = _snapshot(s)
    assert after["users"] == before["users"]
    assert after["preauthkeys"] == before["preauthkeys"]
    assert after["apikeys"] == before["apikeys"]
    assert after["policy"] == before["policy"]
    assert after["cli_users"] == before["cli_users"]
    for u in users:
        assert u["name"] in after["cli_users"]
    listed = {p["id"]: p["key"] for p in after["preauthkeys"]}
    for p in paks:
        assert listed[p["id"]] == f"hskey-auth-{p['key'].split('-')[2]}-***"
    assert s.api("GET", "/api/v1/user", key=extra_key)[0] == 200
    # ids keep counting up after a restart
    new = s.create_user()
    assert int(new["id"]) > max(int(u["id"]) for u in users)


def test_state_survives_kill9(server_factory):
    s = server_factory()
    users, paks, extra_key = _populate(s)
    before = _snapshot(s)
    s.kill9()
    s.start()
    _check_restored(s, before, users, paks, extra_key)


def test_state_survives_clean_restart(server_factory):
    s = server_factory()
    users, paks, extra_key = _populate(s)
    before = _snapshot(s)
    s.stop()
    assert not os.path.exists(s.socket_path), "unix socket left behind after a clean stop"
    s.start()
    _check_restored(s, before, users, paks, extra_key)


def test_restart_after_kill9_reuses_stale_socket(server_factory):
    s = server_factory()
    s.kill9()
    assert os.path.exists(s.socket_path)
    s.start()
    s.cli_ok("users", "list")


def second_config(s):
    """s's config for a second serve: on SQLite a database of its own, so that what is refused
    is the socket or address under test, not the database (one serve per SQLite file)."""
    cfg2 = dict(s.config)
    if s.db.kind == "sqlite":
        cfg2["database"] = {"type": "sqlite",
                            "sqlite": {"path": os.path.join(s.tmp, "second.sqlite")}}
    return cfg2


def test_second_serve_on_same_socket_is_refused(server_factory):
    s = server_factory()
    name = unique()
    s.cli_ok("users", "create", name)
    cfg2 = second_config(s)
    port2 = free_port()
    cfg2["listen_addr"] = f"127.0.0.1:{port2}"
    cfg2["server_url"] = f"http://127.0.0.1:{port2}"
    cfg2["metrics_listen_addr"] = f"127.0.0.1:{free_port()}"
    path2 = os.path.join(s.tmp, "config2.yaml")
    with open(path2, "w") as f:
        yaml.safe_dump(cfg2, f)
    log2 = os.path.join(s.tmp, "second.log")
    with open(log2, "wb") as out:
        p = subprocess.Popen([HS_BIN, "-c", path2, "serve"], stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=s._env())
    try:
        rc = p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=10)
        raise AssertionError("second serve on the same socket kept running")
    text = open(log2, errors="replace").read()
    assert rc != 0, text
    assert "socket" in text.lower() or s.socket_path in text, text
    # the first one keeps working, over the socket and over TCP
    assert os.path.exists(s.socket_path)
    assert name in [u["name"] for u in s.cli_json("users", "list")]
    assert s.api("GET", "/api/v1/user")[0] == 200


def test_second_serve_on_same_listen_addr_is_refused(server_factory):
    s = server_factory()
    cfg2 = second_config(s)
    cfg2["unix_socket"] = os.path.join(s.tmp, "second.sock")
    cfg2["metrics_listen_addr"] = f"127.0.0.1:{free_port()}"
    path2 = os.path.join(s.tmp, "config2.yaml")
    with open(path2, "w") as f:
        yaml.safe_dump(cfg2, f)
    r = subprocess.run([HS_BIN, "-c", path2, "serve"], capture_output=True, text=True,
                       timeout=30, stdin=subprocess.DEVNULL, env=s._env())
    assert r.returncode != 0
    assert s.config["listen_addr"] in r.stdout + r.stderr or "address" in (r.stdout + r.stderr).lower()
    assert s.api("GET", "/api/v1/user")[0] == 200


def _secrets(s):
    api_key = API_KEY_RE.search(s.cli_ok("apikeys", "create", "-e", "1d").stdout).group(0)
    u = s.create_user()
    pak = s.api_ok("POST", "/api/v1/preauthkey",
                   {"user": u["id"], "expiration": rfc3339(now() + dt.timedelta(hours=1))})
    pak_key = pak["preAuthKey"]["key"]
    r = s.cli_ok("preauthkeys", "-u", u["name"], "create", "--reusable")
    cli_pak = AUTH_KEY_RE.search(r.stdout).group(0)
    keys = [api_key, pak_key, cli_pak, s.api_key]
    return keys


def _assert_no_secret(blob, keys, where):
    for k in keys:
        secret = k[-64:]
        assert secret.encode() not in blob, f"secret of {k[:22]}… found in {where}"
        assert secret.upper().encode() not in blob, f"secret (upper) of {k[:22]}… in {where}"
        assert bytes.fromhex(secret) not in blob, f"raw secret bytes of {k[:22]}… in {where}"


def test_secrets_not_stored_in_clear(server_factory, db):
    s = server_factory()
    keys = _secrets(s)
    if db.kind == "sqlite":
        blob = b""
        for suffix in ("", "-wal", "-shm", "-journal"):
            p = s.sqlite_path + suffix
            if os.path.exists(p):
                blob += open(p, "rb").read()
        where = "the SQLite files"
    else:
        blob = db.pg.dump(s.pg_dbname)
        where = "pg_dump"
    # sanity: we are looking at the right data (the prefixes are stored)
    for k in keys:
        prefix = k.split("-")[2]
        assert prefix.encode() in blob, f"prefix {prefix} not in {where}: wrong file?"
    _assert_no_secret(blob, keys, where)
    s.stop()
    if db.kind == "sqlite":
        blob = b"".join(open(s.sqlite_path + x, "rb").read()
                        for x in ("", "-wal") if os.path.exists(s.sqlite_path + x))
        _assert_no_secret(blob, keys, "the SQLite files after shutdown")


def test_secrets_not_in_postgres_tables(server_factory, db):
    if db.kind != "postgres":
        pytest.skip("postgres only")
    s = server_factory()
    keys = _secrets(s)
    tables = db.pg.psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
                        dbname=s.pg_dbname).split()
    assert tables, "no tables in the headscale database"
    text = ""
    for t in tables:
        text += db.pg.psql(f'SELECT * FROM "{t}"', dbname=s.pg_dbname)
    for k in keys:
        assert k[-64:] not in text and k[-64:].upper() not in text


def test_secrets_not_logged(server_factory):
    s = server_factory()
    keys = _secrets(s)
    for k in keys:
        assert s.api("GET", "/api/v1/apikey", key=k)[0] in (200, 401)
    s.api("GET", "/api/v1/user", key="hskey-api-" + keys[0].split("-")[2] + "-" + "f" * 64)
    log = s.log_text().encode()
    _assert_no_secret(log, keys, "the server log")


def test_sigterm_shutdown_is_clean_and_quick(server_factory):
    s = server_factory()
    s.create_user()
    t0 = time.monotonic()
    assert s.stop() == 0
    assert time.monotonic() - t0 < 10


def _peer_endpoints(viewer, node):
    """node's Endpoints in viewer's full map (None when viewer does not list it)."""
    key = "nodekey:" + node.node_key.hex()
    for p in viewer.full_map().get("Peers") or []:
        if p.get("Key") == key:
            return p.get("Endpoints") or []
    return None


def test_reports_are_stored_on_sigterm(server_factory):
    """What a node reports reaches its peers at once and is stored by the state's writer,
    each node's newest values once. With tuning.node_write_interval longer than the test,
    only the writing on SIGTERM can store it: three reports make one row write, and after the
    restart the peers get the node's last report, not an earlier one."""
    s = server_factory(overrides={"tuning": {"node_write_interval": "1h"},
                                  "database": {"debug": True}})
    user = s.create_user()
    key = s.cli_json("preauthkeys", "-u", str(user["id"]), "create", "--reusable",
                     "-e", "1h")["key"]
    node, viewer = ControlClient(s.port), ControlClient(s.port)
    for c in (node, viewer):
        c.hostinfo = {"Hostname": unique("persist"), "OS": "linux"}
        st, _, resp = c.register(auth_key=key)
        assert st == 200 and resp.get("MachineAuthorized"), (st, resp)
    mark = len(s.log_text())
    for port in (41641, 41642, 41643):
        node.endpoints = [f"192.0.2.7:{port}"]
        assert node.lite_update() == 200
    assert _peer_endpoints(viewer, node) == ["192.0.2.7:41643"], "peers hear reports at once"

    assert s.stop() == 0
    writes = [line for line in s.log_text()[mark:].splitlines()
              if "store: sql: UPDATE nodes" in line and "endpoints = " in line]
    assert len(writes) == 1, writes
    s.start()
    assert _peer_endpoints(viewer, node) == ["192.0.2.7:41643"], \
        "the last report was stored when the server stopped"
