"""Faults while writing: `headscale serve` killed with SIGKILL in the middle of a stream of
writes keeps every write it answered (nothing committed is lost) and starts again on an intact
database; on SQLite, a full disk refuses writes with a clear error, changes nothing, and writes
work again once there is room."""

import os
import random
import sqlite3
import subprocess
import threading
import time

import pytest

from helpers import unique


class Writer(threading.Thread):
    """Creates users, each with a pre-auth key, until stopped or the server stops answering;
    remembers what the server said it stored."""

    def __init__(self, s, prefix):
        super().__init__(daemon=True)
        self.s, self.prefix = s, prefix
        self.users, self.keys = [], []
        self.stop = threading.Event()

    def run(self):
        for i in range(2000):
            if self.stop.is_set():
                return
            try:
                st, body = self.s.api("POST", "/api/v1/user", {"name": f"{self.prefix}{i}"})
                if st != 200:
                    return
                self.users.append(body["user"]["name"])
                st, body = self.s.api("POST", "/api/v1/preauthkey",
                                      {"user": body["user"]["id"], "reusable": True})
                if st != 200:
                    return
                self.keys.append(body["preAuthKey"]["id"])
            except OSError:
                return


def wait(pred, what, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def sqlite_intact(path):
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


def test_kill9_during_writes_keeps_every_answered_write(server_factory, db):
    s = server_factory()
    rng = random.Random()
    for rnd in range(3):
        w = Writer(s, f"k{rnd}-")
        w.start()
        target = rng.randint(3, 30)  # a random point in the stream of writes
        wait(lambda: len(w.keys) >= target, f"{target} writes answered")
        s.kill9()
        w.join(timeout=30)
        assert not w.is_alive()
        if db.kind == "sqlite":
            assert sqlite_intact(s.sqlite_path)
        s.start()
        stored_users = set(s.user_names())
        lost = [u for u in w.users if u not in stored_users]
        assert not lost, f"round {rnd}: answered but lost after kill -9: {lost}"
        stored_keys = {str(k["id"]) for k in s.preauthkeys()}
        lost = [k for k in w.keys if str(k) not in stored_keys]
        assert not lost, f"round {rnd}: pre-auth keys answered but lost: {lost}"
    assert s.api("POST", "/api/v1/user", {"name": unique("after")})[0] == 200


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs for the database (root in the test's mount namespace is enough)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def fill(path):
    """Fills the file system of path; returns the filler file."""
    filler = os.path.join(path, "filler")
    with open(filler, "wb") as f:
        try:
            for _ in range(64):
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            pass
    return filler


def test_full_disk_refuses_writes_and_recovers(server_factory, db, small_disk):
    if db.kind != "sqlite":
        pytest.skip("the database file is ours only on SQLite")
    s = server_factory(start=False, overrides={"database": {"sqlite": {
        "path": os.path.join(small_disk, "db.sqlite")}}})
    s.start()
    s.ensure_api_key()
    before = s.user_names()
    filler = fill(small_disk)
    refused = 0
    for i in range(200):  # past whatever the WAL and the page cache still absorb
        st, body = s.api("POST", "/api/v1/user", {"name": f"full{i}"})
        if st != 200:
            refused += 1
            assert st == 500 and "disk is full" in body.get("message", ""), (st, body)
            break
    assert refused, "a full disk took 200 new users"
    assert "disk is full" in s.log_text() or "database or disk is full" in s.log_text()
    assert s.api("GET", "/api/v1/user")[0] == 200, "reads still work"
    os.unlink(filler)
    st, body = s.api("POST", "/api/v1/user", {"name": "roomy"})
    assert st == 200, (st, body)
    names = s.user_names()
    assert "roomy" in names and set(before) <= set(names)
    s.stop()
    assert sqlite_intact(s.sqlite_path)
    s.start()
    assert "roomy" in s.user_names()
