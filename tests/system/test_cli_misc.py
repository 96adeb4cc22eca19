"""CLI: nodes listing on an empty tailnet, version, generate, usage errors, a stopped server,
and remote mode (HEADSCALE_CLI_ADDRESS + HEADSCALE_CLI_API_KEY over TCP)."""

import json
import os
import re
import shlex
import subprocess
import time

import pytest

from helpers import API_KEY_RE, HS_BIN, unique


@pytest.mark.parametrize("argv", [("nodes", "list"), ("node", "ls"), ("machines", "list"),
                                  ("machine", "list"), ("nodes", "show")])
def test_nodes_list_empty(mserver, argv):
    r = mserver.cli_ok(*argv)
    assert "Error" not in r.stderr


def test_nodes_list_json_empty_is_null(mserver):
    # headscale marshals the reply's nil slice: null, and [] in YAML
    assert mserver.cli_json("nodes", "list") is None
    assert mserver.cli_ok("nodes", "list", "-o", "yaml").stdout == "[]\n\n"


def test_nodes_list_by_user_empty(mserver):
    name = unique()
    mserver.cli_ok("users", "create", name)
    assert mserver.cli_json("nodes", "list", "-u", name) is None


def test_version(mserver):
    r = mserver.cli_ok("version")
    assert r.stdout.strip(), "version printed nothing"
    assert re.search(r"\d+\.\d+", r.stdout) or "dev" in r.stdout, r.stdout


def test_version_json(mserver):
    r = mserver.cli_ok("version", "-o", "json", config=False)
    data = json.loads(r.stdout)
    assert "version" in data


def test_version_without_config(tmp_path, mserver):
    # version must not need a config file at all
    r = mserver.cli("version", config=False, env={"HEADSCALE_CONFIG": str(tmp_path / "nope.yaml")})
    assert r.returncode == 0, r.stderr


def test_generate_private_key(mserver):
    r = mserver.cli_ok("generate", "private-key")
    assert re.fullmatch(r"privkey:[0-9a-f]{64}", r.stdout.strip()), r.stdout
    r2 = mserver.cli_ok("gen", "private-key")
    assert r2.stdout.strip() != r.stdout.strip(), "two generated keys are equal"


def test_generate_private_key_json(mserver):
    data = mserver.cli_json("generate", "private-key")
    assert re.fullmatch(r"privkey:[0-9a-f]{64}", data["private_key"]), data


@pytest.mark.parametrize("argv", [("frobnicate",), ("users", "frobnicate"),
                                  ("users", "list", "--no-such-flag"), ("--bogus", "users", "list"),
                                  ("users", "list", "-o"), ("preauthkeys", "create", "--reusable=maybe")])
def test_unknown_command_or_flag_prints_usage(mserver, argv):
    r = mserver.cli(*argv)
    assert r.returncode != 0, (argv, r.stdout)
    out = r.stdout + r.stderr
    assert "Usage" in out or "usage" in out, out


def test_bad_output_format_is_error(mserver):
    r = mserver.cli("-o", "xml", "users", "list")
    assert r.returncode != 0, r.stdout
    assert r.stderr.strip()


def test_help_exits_zero(mserver):
    r = mserver.cli("--help")
    assert r.returncode == 0
    assert "users" in r.stdout and "preauthkeys" in r.stdout
    r = mserver.cli("users", "--help")
    assert r.returncode == 0 and "create" in r.stdout


@pytest.mark.parametrize("topic", [(), ("users",), ("users", "create"), ("nodes", "ls")])
def test_help_command_is_the_help_flag(mserver, topic):
    r = mserver.cli("help", *topic)
    assert r.returncode == 0 and r.stdout == mserver.cli(*topic, "--help").stdout, r.stderr
    assert "Usage:" in r.stdout


def test_help_for_an_unknown_command_says_so(mserver):
    r = mserver.cli("help", "users", "frobnicate")
    assert r.returncode == 0 and '"frobnicate"' in r.stderr, (r.stdout, r.stderr)
    assert r.stdout == mserver.cli("users", "--help").stdout


def bash_complete(script, *words):
    """What the bash script offers after `headscale WORDS...` (the last being typed)."""
    prog = (f"{script}\nCOMP_WORDS=(headscale {' '.join(shlex.quote(w) for w in words)})\n"
            f"COMP_CWORD={len(words)}; _headscale; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    r = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, PATH=f"{os.path.dirname(HS_BIN)}:/usr/bin:/bin"))
    assert r.returncode == 0, r.stderr
    return [w for w in r.stdout.splitlines() if w]


def test_bash_completion(mserver):
    script = mserver.cli_ok("completion", "bash").stdout
    assert bash_complete(script, "nod") == ["nodes"]
    assert bash_complete(script, "nodes", "li") == ["list", "list-routes"]
    assert bash_complete(script, "users", "") == ["create", "list", "destroy", "rename"]
    assert bash_complete(script, "nodes", "list", "--u") == ["--user"]
    assert bash_complete(script, "-c", "x.yaml", "policy", "get", "--b") == \
        ["--bypass-grpc-and-access-database-directly"]
    assert {"--help", "--user", "--tags", "--config"} <= set(
        bash_complete(script, "nodes", "list", "--"))
    for shell in ("zsh", "fish", "powershell"):
        assert "headscale __complete" in mserver.cli_ok("completion", shell).stdout


def test_cli_with_server_stopped_fails_fast(server_factory):
    s = server_factory(api_key=False)
    s.stop()
    t0 = time.monotonic()
    r = s.cli("users", "list", timeout=30)
    took = time.monotonic() - t0
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert took < 15, f"took {took:.1f}s"
    err_lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert err_lines, "no error message"
    assert any(s.socket_path in l or "socket" in l.lower() for l in err_lines), r.stderr
    assert len(err_lines) <= 3, f"not one clear line:\n{r.stderr}"
    assert r.stdout.strip() == ""


def test_health(mserver):
    r = mserver.cli_ok("health")
    assert r.stdout.strip() and "Error" not in r.stderr
    assert mserver.cli_json("health") == {"database_connectivity": True}


def test_health_with_server_stopped_fails(server_factory):
    s = server_factory(api_key=False)
    s.stop()
    r = s.cli("health", timeout=30)
    assert r.returncode == 1 and r.stderr.strip(), (r.returncode, r.stdout, r.stderr)
    assert r.stdout.strip() == ""


BYPASS = "--bypass-grpc-and-access-database-directly"


def test_policy_commands_on_the_database_of_a_stopped_server(server_factory, tmp_path):
    s = server_factory()
    user = unique()
    s.cli_ok("users", "create", user)
    good, bad = tmp_path / "good.hujson", tmp_path / "bad.hujson"
    good.write_text('{"acls": [{"action": "accept", "src": ["%s@"], "dst": ["*:*"]}]}' % user)
    bad.write_text('{"acls": [{"action": "accept", "src": ["tag:nobody"], "dst": ["*:*"]}]}')
    s.stop()

    r = s.cli("policy", "set", "-f", good, BYPASS)  # no terminal to ask on, no --force
    assert r.returncode == 1 and "--force" in r.stderr, (r.stdout, r.stderr)
    r = s.cli("policy", "get", BYPASS, "--force")
    assert r.returncode == 1 and "no policy has been stored" in r.stderr, (r.stdout, r.stderr)
    for cmd in ("check", "set"):
        r = s.cli("policy", cmd, "-f", bad, BYPASS, "--force")
        assert r.returncode == 1 and "tag:nobody" in r.stderr, (cmd, r.stdout, r.stderr)
    s.cli_ok("policy", "check", "-f", good, BYPASS, "--force")
    s.cli_ok("policy", "set", "-f", good, BYPASS, "--force")
    assert s.cli_ok("policy", "get", BYPASS, "--force").stdout.strip() == good.read_text()

    s.start()  # the server puts the policy written behind its back in force
    assert s.api_ok("GET", "/api/v1/policy")["policy"] == good.read_text()


def test_cli_with_missing_config_file_is_error(mserver, tmp_path):
    r = mserver.cli("-c", str(tmp_path / "missing.yaml"), "users", "list", config=False)
    # headscale only warns about a missing file and then uses defaults (socket in /var/run):
    # either way the command must not hang and must not claim success against our server
    assert r.returncode != 0 or "[]" not in r.stdout


# ---- remote mode ----

def _remote_env(s, key):
    env = {"HEADSCALE_CLI_ADDRESS": f"http://127.0.0.1:{s.port}"}
    if key is not None:
        env["HEADSCALE_CLI_API_KEY"] = key
    return env


def test_remote_mode_users_list(mserver):
    name = unique()
    mserver.cli_ok("users", "create", name)
    data = mserver.cli_json("users", "list", env=_remote_env(mserver, mserver.api_key))
    assert name in [u["name"] for u in data]


def test_remote_mode_create_user(mserver):
    name = unique()
    mserver.cli_ok("users", "create", name, env=_remote_env(mserver, mserver.api_key))
    assert name in mserver.user_names()


def test_remote_mode_without_key_is_error(mserver):
    name = unique()
    r = mserver.cli("users", "create", name, env=_remote_env(mserver, None))
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "HEADSCALE_CLI_API_KEY" in r.stderr + r.stdout
    assert name not in mserver.user_names()


def test_remote_mode_wrong_key_is_error(mserver):
    name = unique()
    for key in ("garbage", "hskey-api-000000000000-" + "0" * 64):
        r = mserver.cli("users", "create", name, env=_remote_env(mserver, key))
        assert r.returncode == 1, (key, r.returncode, r.stdout, r.stderr)
        assert "Error" in r.stderr or "error" in r.stderr.lower(), r.stderr
    assert name not in mserver.user_names()


def test_remote_mode_expired_key_is_error(mserver):
    key = API_KEY_RE.search(mserver.cli_ok("apikeys", "create", "-e", "1h").stdout).group(0)
    mserver.cli_ok("users", "list", env=_remote_env(mserver, key))
    mserver.cli_ok("apikeys", "expire", "-p", key.split("-")[2])
    r = mserver.cli("users", "list", env=_remote_env(mserver, key))
    assert r.returncode == 1, (r.stdout, r.stderr)


def test_remote_mode_unreachable_address_fails_fast(mserver):
    from helpers import free_port
    t0 = time.monotonic()
    r = mserver.cli("users", "list", env={"HEADSCALE_CLI_ADDRESS": f"http://127.0.0.1:{free_port()}",
                                          "HEADSCALE_CLI_API_KEY": mserver.api_key})
    assert r.returncode == 1
    assert time.monotonic() - t0 < 15
    assert r.stderr.strip()
