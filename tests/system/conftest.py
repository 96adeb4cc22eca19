"""Harness for the system tests.

Fixtures:
  db              "sqlite" or "postgres" (module-scoped parameter; --db=sqlite|postgres|both)
  pg_cluster      one throwaway PostgreSQL per session (tests/lib/pgtmp.sh), started lazily
  mserver         one running server per test module and database, with an admin API key;
                  tests sharing it use unique names, so they do not depend on order
  server_factory  make(**kw) → a fresh Server of the test's own (started unless start=False)

The binary comes from $HS_BIN (default /work/main/build/headscale). When a test fails, the
log of every server alive during the test is printed; a sanitizer report in a server log fails
the test that was running."""

import os

import pytest

import helpers
from helpers import Db, PgCluster, Server


def pytest_addoption(parser):
    parser.addoption("--db", default="both", choices=("sqlite", "postgres", "both"),
                     help="database backends to run the system tests on")


def _dbs(config):
    opt = config.getoption("--db")
    return ["sqlite", "postgres"] if opt == "both" else [opt]


def pytest_generate_tests(metafunc):
    if "db" in metafunc.fixturenames:
        metafunc.parametrize("db", _dbs(metafunc.config), indirect=True, scope="module")


def pytest_sessionstart(session):
    if not os.access(helpers.HS_BIN, os.X_OK):
        raise pytest.UsageError(f"headscale binary not found or not executable: {helpers.HS_BIN}"
                                " (set HS_BIN)")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory):
    cluster = PgCluster(str(tmp_path_factory.mktemp("pg")))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def db(request):
    kind = request.param
    if kind == "postgres":
        return Db("postgres", request.getfixturevalue("pg_cluster"))
    return Db("sqlite")


@pytest.fixture(scope="module")
def mserver(db):
    s = Server(db)
    try:
        s.start()
        s.ensure_api_key()
        yield s
        s.stop(check=True)
    finally:
        s.cleanup()


def _failed(request):
    rep = getattr(request.node, "rep_call", None)
    return rep is not None and rep.failed


@pytest.fixture
def server_factory(db, request):
    made = []

    def make(start=True, api_key=True, db_override=None, **kw):
        s = Server(db_override or db, **kw)
        made.append(s)
        if start:
            s.start()
            if api_key:
                s.ensure_api_key()
        return s

    yield make
    errors = []
    for s in made:
        if _failed(request):
            print(f"\n===== server log {s.tmp} ({s.db.kind}), last 200 lines =====")
            print(s.log_tail(200))
        try:
            s.stop(check=True)
        except AssertionError as e:
            errors.append(str(e))
        finally:
            s.cleanup()
    assert not errors, "\n\n".join(errors)


@pytest.fixture(autouse=True)
def _server_watch(request):
    """Remembers where each live server's log stood before the test; afterwards prints the new
    part when the test failed, and fails on any sanitizer line that appeared."""
    start = {id(s): len(s.log_text()) for s in helpers.LIVE_SERVERS}
    yield
    failed = _failed(request)
    bad, died = [], []
    for s in list(helpers.LIVE_SERVERS):
        text = s.log_text()[start.get(id(s), 0):]
        if failed:
            lines = text.splitlines()[-200:]
            print(f"\n===== server log {s.tmp} ({s.db.kind}), last {len(lines)} lines "
                  "of this test =====")
            print("\n".join(lines))
        bad += helpers.sanitizer_lines(text)
        if s.proc is not None and s.proc.poll() is not None:
            # It died under this test. Restart it on the same data so that the tests after
            # this one (sharing a module server) still run, and fail this one.
            died.append(f"headscale serve ({s.db.kind}) died with rc {s.proc.returncode} "
                        f"during this test; log:\n" + "\n".join(text.splitlines()[-40:]))
            s.proc = None
            try:
                s.start()
            except AssertionError as e:
                died.append(f"restart failed: {e}")
    assert not died, "\n\n".join(died)
    assert not bad, "sanitizer report in a server log during this test:\n" + "\n".join(bad)


# ---- test_tailnet.py (real Tailscale clients in a network namespace; see tailnet.py) ----

def pytest_configure(config):
    config.addinivalue_line(
        "markers", "smoke: the tailnet subset (login, peers, ping) run on every client version "
        "of $HS_TS_VERSIONS; the other tailnet tests run on the first version only")
