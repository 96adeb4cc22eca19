"""A bare headscale 0.22.3 config (no dns_config, no ip_prefixes, no magic_dns) served side
by side by headscale v0.22.3 and by ours: the first map a node gets shows that the 0.22.3
layout takes 0.22.3's defaults where they differ from 0.29's (IPv4 only, MagicDNS off)."""

import os

import pytest

import helpers
from test_dns import REF022_BIN, _Ref, first_map_022


def test_bare_022_config_same_defaults_as_headscale_022(server_factory):
    if not os.access(REF022_BIN, os.X_OK):
        pytest.skip(f"headscale v0.22.3 not built at {REF022_BIN}")
    ref = _Ref(helpers.Db("sqlite"), binary=REF022_BIN)
    try:
        want = first_map_022(ref)
    finally:
        ref.cleanup()
    got = first_map_022(server_factory(start=False, api_key=False))
    assert want["Node"]["Addresses"] == ["100.64.0.1/32"], want["Node"]
    assert got["Node"]["Addresses"] == want["Node"]["Addresses"], "IPv4 only"
    assert got["Node"]["Name"].rstrip(".") == want["Node"]["Name"].rstrip("."), "no MagicDNS name"
    # Nothing to configure: 0.22.3 sends an empty DNSConfig (a null field), so do we.
    assert {k: v for k, v in (want.get("DNSConfig") or {}).items() if v is not None} == {}
    assert {k: v for k, v in (got.get("DNSConfig") or {}).items() if v is not None} == {}
    assert got.get("Domain") == want.get("Domain") == "headscale.net"
