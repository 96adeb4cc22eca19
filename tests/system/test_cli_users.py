"""CLI `users ...` in local mode (unix socket): create, list in every output format, aliases,
rename (0.22 positional and flag forms), destroy/delete with and without --force, and errors."""

import json

import pytest
import yaml

from helpers import assert_cli_error, unique

# headscale's User through yaml.v3: every member, under its lowercased Go field name
USER_YAML_FIELDS = {"id", "name", "createdat", "displayname", "email", "providerid", "provider",
                    "profilepicurl"}


def _by_name(s, name):
    return [u for u in s.users() if u["name"] == name]


def test_users_create_then_visible_over_rest(mserver):
    name = unique()
    r = mserver.cli_ok("users", "create", name)
    assert r.stderr.count("Error") == 0
    assert len(_by_name(mserver, name)) == 1


def test_users_create_with_profile_flags(mserver):
    name = unique()
    mserver.cli_ok("users", "create", name, "-d", "Disp Name", "-e", "x@example.org",
                   "-p", "https://example.org/p.png")
    (u,) = _by_name(mserver, name)
    assert u["displayName"] == "Disp Name"
    assert u["email"] == "x@example.org"
    assert u["profilePicUrl"] == "https://example.org/p.png"


def test_users_list_table(mserver):
    name = unique()
    mserver.cli_ok("users", "create", name)
    r = mserver.cli_ok("users", "list")
    lines = r.stdout.splitlines()
    assert lines, "empty table"
    header = lines[0]
    assert "ID" in header and "Name" in header, header
    row = [l for l in lines if name in l]
    assert len(row) == 1, r.stdout
    uid = _by_name(mserver, name)[0]["id"]
    assert row[0].split()[0].strip("| ") == uid or f" {uid} " in f" {row[0]} ", row[0]


def test_users_list_json_is_proto_shape_tab_indented(mserver):
    name = unique()
    mserver.cli_ok("users", "create", name, "--email", f"{name}@example.org")
    r = mserver.cli_ok("-o", "json", "users", "list")
    data = json.loads(r.stdout)
    assert isinstance(data, list)
    mine = [u for u in data if u["name"] == name]
    assert len(mine) == 1
    # encoding/json of the gRPC User: snake_case, empty members left out, a number id
    assert set(mine[0]) == {"id", "name", "created_at", "email"}, mine[0]
    assert mine[0]["id"] == int(_by_name(mserver, name)[0]["id"])
    assert mine[0]["email"] == f"{name}@example.org"
    stamp = mine[0]["created_at"]
    assert set(stamp) <= {"seconds", "nanos"} and isinstance(stamp["seconds"], int), stamp
    assert "\n\t" in r.stdout, "json output is not TAB-indented"
    assert [u["name"] for u in data] == [u["name"] for u in mserver.users()]


def test_users_list_json_line_is_one_line(mserver):
    name = unique()
    mserver.cli_ok("users", "create", name)
    r = mserver.cli_ok("-o", "json-line", "users", "list")
    assert len(r.stdout.strip().splitlines()) == 1, r.stdout
    assert name in [u["name"] for u in json.loads(r.stdout)]


def test_users_list_yaml(mserver):
    name = unique()
    mserver.cli_ok("users", "create", name)
    r = mserver.cli_ok("-o", "yaml", "users", "list")
    data = yaml.safe_load(r.stdout)
    assert isinstance(data, list)
    (mine,) = [u for u in data if u["name"] == name]
    assert set(mine) == USER_YAML_FIELDS, mine
    assert mine["email"] == "" and isinstance(mine["id"], int), mine
    assert set(mine["createdat"]) == {"seconds", "nanos"}, mine


def test_users_list_filters(mserver):
    name = unique()
    mserver.cli_ok("users", "create", name)
    mserver.cli_ok("users", "create", unique())
    uid = _by_name(mserver, name)[0]["id"]
    by_name = mserver.cli_json("users", "list", "-n", name)
    assert [u["id"] for u in by_name] == [int(uid)]
    by_id = mserver.cli_json("users", "list", "-i", uid)
    assert [u["name"] for u in by_id] == [name]


def test_json_output_on_empty_filter_is_null(mserver):
    assert mserver.cli_json("users", "list", "-n", unique("nobody")) is None


@pytest.mark.parametrize("alias", ["user", "namespaces", "ns", "namespace"])
def test_users_aliases(mserver, alias):
    name = unique()
    mserver.cli_ok(alias, "create", name)
    data = mserver.cli_json(alias, "list")
    assert name in [u["name"] for u in data]


@pytest.mark.parametrize("sub", ["ls", "show"])
def test_users_list_aliases(mserver, sub):
    name = unique()
    mserver.cli_ok("users", "c", name)
    assert name in [u["name"] for u in mserver.cli_json("users", sub)]


def test_users_rename_positional_022(mserver):
    old, new = unique(), unique("r")
    mserver.cli_ok("users", "create", old)
    uid = _by_name(mserver, old)[0]["id"]
    mserver.cli_ok("users", "rename", old, new)
    assert not _by_name(mserver, old)
    assert _by_name(mserver, new)[0]["id"] == uid


def test_users_rename_by_id_flag(mserver):
    old, new = unique(), unique("r")
    mserver.cli_ok("users", "create", old)
    uid = _by_name(mserver, old)[0]["id"]
    mserver.cli_ok("users", "rename", "-i", uid, "-r", new)
    assert _by_name(mserver, new)[0]["id"] == uid


def test_users_rename_by_name_flag(mserver):
    old, new = unique(), unique("r")
    mserver.cli_ok("users", "create", old)
    mserver.cli_ok("users", "mv", "-n", old, "--new-name", new)
    assert _by_name(mserver, new) and not _by_name(mserver, old)


def test_users_rename_errors_change_nothing(mserver):
    a, b = unique(), unique()
    mserver.cli_ok("users", "create", a)
    mserver.cli_ok("users", "create", b)
    before = mserver.users()
    assert_cli_error(mserver.cli("users", "rename", a, b), what="rename onto existing")
    assert_cli_error(mserver.cli("users", "rename", unique("ghost"), unique()),
                     what="rename unknown")
    assert_cli_error(mserver.cli("users", "rename", "-n", a), what="rename without new name")
    assert_cli_error(mserver.cli("users", "rename", a, "1bad"), what="rename to invalid")
    assert mserver.users() == before


def test_users_destroy_positional_force(mserver):
    name = unique()
    mserver.cli_ok("users", "create", name)
    mserver.cli_ok("users", "destroy", name, "--force")
    assert not _by_name(mserver, name)


def test_users_destroy_by_name_flag_force(mserver):
    name = unique()
    mserver.cli_ok("users", "create", name)
    mserver.cli_ok("users", "destroy", "-n", name, "--force")
    assert not _by_name(mserver, name)


def test_users_delete_by_id_force(mserver):
    name = unique()
    mserver.cli_ok("users", "create", name)
    uid = _by_name(mserver, name)[0]["id"]
    mserver.cli_ok("users", "delete", "-i", uid, "--force")
    assert not _by_name(mserver, name)


def test_users_destroy_force_flag_before_subcommand(mserver):
    name = unique()
    mserver.cli_ok("users", "create", name)
    mserver.cli_ok("--force", "users", "destroy", name)
    assert not _by_name(mserver, name)


def test_users_destroy_without_force_no_tty_is_refused(mserver):
    name = unique()
    mserver.cli_ok("users", "create", name)
    r = mserver.cli("users", "destroy", name)
    assert_cli_error(r, what="destroy without --force, stdin not a tty")
    assert len(_by_name(mserver, name)) == 1


def test_users_destroy_without_force_answer_no_is_refused(mserver):
    name = unique()
    mserver.cli_ok("users", "create", name)
    r = mserver.cli("users", "destroy", name, input="n\n")
    assert len(_by_name(mserver, name)) == 1, (r.stdout, r.stderr)


def test_users_destroy_unknown_is_error(mserver):
    before = mserver.users()
    r = mserver.cli("users", "destroy", unique("ghost"), "--force")
    assert r.returncode == 1
    assert r.stderr.startswith("Error") or "\nError" in r.stderr, r.stderr
    r = mserver.cli("users", "delete", "-i", "987654321", "--force")
    assert_cli_error(r, what="delete unknown id")
    assert mserver.users() == before


def test_users_create_duplicate_is_error(mserver):
    name = unique()
    mserver.cli_ok("users", "create", name)
    before = mserver.users()
    r = mserver.cli("users", "create", name)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Error" in r.stderr
    assert mserver.users() == before


@pytest.mark.parametrize("bad", ["a", "1abc", "bad name", "x/y", "bad\u2603"])
def test_users_create_invalid_name_is_error(mserver, bad):
    before = mserver.users()
    r = mserver.cli("users", "create", bad)
    assert r.returncode == 1 and "Error" in r.stderr, (r.returncode, r.stdout, r.stderr)
    assert mserver.users() == before


def test_users_create_without_name_is_usage_error(mserver):
    before = mserver.users()
    r = mserver.cli("users", "create")
    assert r.returncode != 0 and r.stderr.strip()
    assert mserver.users() == before


def test_error_as_json_with_output_json(mserver):
    r = mserver.cli("-o", "json", "users", "destroy", unique("ghost"), "--force")
    assert r.returncode == 1
    found = None
    for stream in (r.stderr, r.stdout):
        try:
            found = json.loads(stream)
            break
        except ValueError:
            continue
    assert isinstance(found, dict) and found.get("error"), (r.stdout, r.stderr)
