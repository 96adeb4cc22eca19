"""What the server says it is: GET /version and `headscale version [-o json]`.

/version carries headscale's fields (version, commit, buildTime, dirty). Its "version" is the
headscale API level as a semver version with ours as build metadata: web UIs gate features on
it, and headplane takes a server below 0.28 for an old one and then drops a node's tags when
saving them, so the check below parses it the way headplane's server-version.ts does. The
commit and build time come from git at build time (cmake/build_info.cmake); a tree without
git still builds and says "unknown"."""

import http.client
import json
import os
import re
import subprocess

import pytest

from helpers import HS_BIN, REPO, http_request, parse_time

# headplane app/server/headscale/api/server-version.ts: SEMVER_RE, then gte() on the numbers
HEADPLANE_SEMVER = re.compile(
    r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?$")


def headplane_gte(raw, target):
    m = HEADPLANE_SEMVER.match(raw.strip())
    assert m, f"headplane cannot parse {raw!r}: it would assume newest capabilities, by luck"
    have = tuple(int(x) for x in m.groups()[:3])
    want = tuple(int(x) for x in target.split("."))
    return have >= want


def get_version(server):
    st, hdrs, body = http_request(http.client.HTTPConnection("127.0.0.1", server.port, timeout=10),
                                  "GET", "/version")
    assert st == 200, (st, body)
    assert hdrs.get("content-type", "").startswith("application/json"), hdrs
    return body


def git(*args):
    return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True, timeout=30)


def test_version_unauthenticated_and_semver(mserver):
    v = get_version(mserver)
    assert set(v) >= {"version", "commit", "buildTime", "dirty"}, v
    assert headplane_gte(v["version"], "0.28.0"), v["version"]
    assert not headplane_gte(v["version"], "0.30.0"), v["version"]
    impl = v["implementation"]
    assert impl["name"] == "headscale-c", impl
    assert v["version"] == f'{impl["headscaleApi"]}+headscale-c.{impl["version"]}', v
    assert HEADPLANE_SEMVER.match(v["version"]).group(5) == f'headscale-c.{impl["version"]}'
    assert isinstance(v["dirty"], bool), v


def test_version_commit_and_build_time(mserver):
    v = get_version(mserver)
    if v["commit"] == "unknown":
        pytest.skip("this binary was built outside a git checkout")
    assert re.fullmatch(r"[0-9a-f]{40}", v["commit"]), v
    if git("rev-parse", "HEAD").returncode == 0:
        # the commit is one of this repository's (the binary may be older than HEAD)
        assert git("cat-file", "-e", v["commit"] + "^{commit}").returncode == 0, v["commit"]
    built = parse_time(v["buildTime"])
    assert built.year >= 2024, v["buildTime"]


def test_cli_version_matches_server(mserver):
    v = get_version(mserver)
    j = json.loads(mserver.cli_ok("version", "-o", "json", config=False).stdout)
    assert j == v
    human = mserver.cli_ok("version", config=False).stdout.splitlines()
    dirty = "-dirty" if v["dirty"] else ""
    assert human[0] == f'headscale version {v["version"]}{dirty}', human
    assert human[1] == f'commit: {v["commit"]}', human
    assert human[2] == f'build time: {v["buildTime"]}', human


def test_build_info_without_git(tmp_path):
    """A source tree without .git (a release tarball) builds and reports "unknown"."""
    src = tmp_path / "src"
    src.mkdir()
    out = tmp_path / "build_info.c"
    script = os.path.join(REPO, "cmake", "build_info.cmake")
    r = subprocess.run(["cmake", f"-DSRC={src}", f"-DOUT={out}", "-P", script],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert 'server_build_commit[] = "unknown";' in text, text
    assert "server_build_dirty = false;" in text, text
    assert re.search(r'server_build_time\[\] = "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ";', text), text


def test_build_info_in_git(tmp_path):
    """In this checkout the script finds HEAD, and rewrites its file only when that changes."""
    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    out = tmp_path / "build_info.c"
    script = os.path.join(REPO, "cmake", "build_info.cmake")
    argv = ["cmake", f"-DSRC={REPO}", f"-DOUT={out}", "-P", script]
    assert subprocess.run(argv, capture_output=True, timeout=60).returncode == 0
    assert f'server_build_commit[] = "{head.stdout.strip()}";' in out.read_text()
    first = out.stat().st_mtime_ns
    assert subprocess.run(argv, capture_output=True, timeout=60).returncode == 0
    assert out.stat().st_mtime_ns == first, "rewritten though nothing changed (would relink)"
