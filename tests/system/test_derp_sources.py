"""DERP map sources that cannot be loaded at start (an unreachable derp.urls entry, a missing
derp.paths file): the server starts anyway, logs the source, and keeps trying; once the
source serves a map, every open map stream is sent it.

headscale 0.22.3 starts the same way (and retries on derp.update_frequency with auto-update);
headscale 0.29.3 refuses to start ("getting DERPMap: ... connection refused"). We keep the
server up: a DERP map host being down for a moment should not take the control plane with
it."""

import json
import os
import time

import pytest

import noise_client
from helpers import JsonServer, free_port

MAP = {"Regions": {"901": {"RegionID": 901, "RegionCode": "late", "RegionName": "Late region",
                           "Nodes": [{"Name": "901a", "RegionID": 901,
                                      "HostName": "derp.invalid", "DERPPort": 443}]}}}


def _stream(s):
    s.cli_ok("users", "create", "alice")
    uid = [u for u in s.cli_json("users", "list") if u["name"] == "alice"][0]["id"]
    key = s.cli_json("preauthkeys", "-u", str(uid), "create", "-e", "1h")["key"]
    c = noise_client.ControlClient(s.port)
    st, _, resp = c.register(auth_key=key)
    assert st == 200 and resp.get("MachineAuthorized"), resp
    return c, c.open_stream(require_peers=False)


def _regions(msg):
    return ((msg or {}).get("DERPMap") or {}).get("Regions") or {}


def _wait_for_region(c, region, timeout):
    """Reads the stream until a message's DERPMap has region → that message, or None."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        msg = c.next_message(end - time.monotonic())
        if region in _regions(msg):
            return msg
    return None


@pytest.mark.parametrize("kind", ["url", "path"])
def test_unreachable_derp_source_is_retried(server_factory, kind):
    port = free_port()  # nothing listens there yet
    s = server_factory(start=False)
    where = (f"http://127.0.0.1:{port}/derp.json" if kind == "url"
             else os.path.join(s.tmp, "derp.json"))
    s.config["derp"][kind + "s"] = [where]
    s.write_config()
    s.start()  # a source that cannot be loaded is not fatal
    assert f"derp: {where}: cannot load the DERP map" in s.log_text(), s.log_tail()
    assert "trying again in" in s.log_text(), s.log_tail()

    c, first = _stream(s)
    try:
        assert _regions(first) == {}, first.get("DERPMap")
        if kind == "url":
            src = JsonServer(port, json.dumps(MAP).encode(), path="/derp.json")
        else:
            with open(where + ".tmp", "w") as f:
                json.dump(MAP, f)
            os.rename(where + ".tmp", where)
        try:
            # Retries come 5 s after start, then 10 s later, ...: well inside the deadline.
            msg = _wait_for_region(c, "901", 45)
        finally:
            if kind == "url":
                src.close()
        assert msg, "the client never got the DERP map\n" + s.log_tail()
        assert msg["DERPMap"]["Regions"]["901"]["RegionCode"] == "late"
        assert "derp: DERP map updated" in s.log_text()
    finally:
        c.close()
