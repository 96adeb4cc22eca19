"""A bare headscale 0.22.3 config (no dns_config, no ip_prefixes, no magic_dns) served side
by side by headscale v0.22.3 and by ours: the first map a node gets shows that the 0.22.3
layout takes 0.22.3's defaults where they differ from 0.29's (IPv4 only, MagicDNS off)."""

import json
import os

import pytest

import helpers
import noise_client
from test_dns import REF022_BIN, _Ref


def _first_map(s):
    s.config = {
        "server_url": f"http://127.0.0.1:{s.port}", "listen_addr": f"127.0.0.1:{s.port}",
        "private_key_path": os.path.join(s.tmp, "private.key"),
        "noise": {"private_key_path": os.path.join(s.tmp, "noise.key")},
        "derp": s.config["derp"], "disable_check_updates": True,
        "db_type": "sqlite3", "db_path": os.path.join(s.tmp, "db.sqlite"),
        "unix_socket": s.socket_path,
    }
    s.write_config()
    s.start()
    s.cli_ok("users", "create", "alice")
    # headscale 0.22.3 prints its config warnings on stdout too: the JSON is what follows.
    out = s.cli_ok("preauthkeys", "-u", "alice", "create", "-e", "1h", "-o", "json").stdout
    key = json.loads(out[out.index("{"):])["key"]
    c = noise_client.ControlClient(s.port)
    c.hostinfo = {"Hostname": "laptop", "OS": "linux"}
    st, _, resp = c.register(auth_key=key)
    assert st == 200 and resp.get("MachineAuthorized"), resp
    try:
        return c.open_stream(require_peers=False)
    finally:
        c.close()


def test_bare_022_config_same_defaults_as_headscale_022(server_factory):
    if not os.access(REF022_BIN, os.X_OK):
        pytest.skip(f"headscale v0.22.3 not built at {REF022_BIN}")
    ref = _Ref(helpers.Db("sqlite"), binary=REF022_BIN)
    try:
        want = _first_map(ref)
    finally:
        ref.cleanup()
    got = _first_map(server_factory(start=False, api_key=False))
    assert want["Node"]["Addresses"] == ["100.64.0.1/32"], want["Node"]
    assert got["Node"]["Addresses"] == want["Node"]["Addresses"], "IPv4 only"
    assert got["Node"]["Name"].rstrip(".") == want["Node"]["Name"].rstrip("."), "no MagicDNS name"
    # Nothing to configure: 0.22.3 sends an empty DNSConfig (a null field), so do we.
    assert {k: v for k, v in (want.get("DNSConfig") or {}).items() if v is not None} == {}
    assert {k: v for k, v in (got.get("DNSConfig") or {}).items() if v is not None} == {}
    assert got.get("Domain") == want.get("Domain") == "headscale.net"
