"""Attacks by another local user on the files the server makes (issue 18, item 5), each run
as a second unprivileged user (`hsother`, created here when missing) through `runuser -u`; the
tests themselves run as root.

- Key files: the old writer opened a predictable "<key>.tmp.<pid>" with O_CREAT|O_TRUNC, so a
  user who could write the key's directory planted a file there (and got the private key) or a
  symlink (and had root overwrite its target). A key in a directory every user can write, or
  one others may write, is refused: anyone could have planted their own.
"""

import os
import pwd
import stat
import subprocess

import pytest

import helpers
from helpers import Server

OTHER = "hsother"
KNOWN_KEY = "privkey:" + "42" * 32  # what a planted key file holds: the attacker knows it

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (runs a second user)")


@pytest.fixture(scope="module")
def other():
    """→ the pwd entry of a second unprivileged user (created when missing)."""
    try:
        return pwd.getpwnam(OTHER)
    except KeyError:
        r = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                            "--shell", "/usr/sbin/nologin", OTHER],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f"useradd {OTHER}: {r.stderr}"
        return pwd.getpwnam(OTHER)


def as_other(*argv, check=False):
    r = subprocess.run(["runuser", "-u", OTHER, "--"] + [str(a) for a in argv],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    if check:
        assert r.returncode == 0, f"{argv} as {OTHER}: rc {r.returncode}: {r.stderr}"
    return r


@pytest.fixture
def made(request):
    """→ make(db, **kw): a Server not yet started, whose directory the other user may pass
    through (not write); stopped and removed afterwards."""
    servers = []

    def make(db, **kw):
        s = Server(db, **kw)
        servers.append(s)
        os.chmod(s.tmp, 0o711)
        return s

    yield make
    failed = getattr(request.node, "rep_call", None)
    for s in servers:
        if failed is not None and failed.failed:
            print(f"\n===== server log {s.tmp} ({s.db.kind}) =====\n{s.log_tail(80)}")
        try:
            s.stop(check=False)
        finally:
            s.cleanup()


def mkdir(path, mode, uid=0, gid=0):
    os.mkdir(path)
    os.chown(path, uid, gid)
    os.chmod(path, mode)  # after mkdir: the umask does not decide it
    return path


def write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def read(path):
    with open(path) as f:
        return f.read()


def wait_refused(s, needle, deadline=helpers.START_DEADLINE):
    """Starts s and expects it to exit non-zero with needle in its log → the log."""
    p = s.spawn()
    try:
        rc = p.wait(timeout=deadline)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise AssertionError(f"the server started ({needle!r} expected):\n{s.log_tail()}")
    log = s.log_text()
    assert rc != 0, f"exit status {rc}:\n{log}"
    assert needle in log, f"no {needle!r} in the log:\n{log}"
    s.check_sanitizers()
    return log


# ---------------------------------------------------------------- item 5: key files

@pytest.mark.parametrize("plant", ["file", "symlink"])
def test_planted_temporary_key_file_gets_nothing(db, other, made, plant):
    """The other user may write the key's directory (through its group) and plants the name
    the old writer used for the server's pid: a file of theirs to read the key from, or a
    symlink to a file of root's to have it overwritten. The server (after a warning) writes
    its key elsewhere and touches neither."""
    s = made(db)
    keys = mkdir(os.path.join(s.tmp, "keys"), 0o770, 0, other.pw_gid)
    key = os.path.join(keys, "noise.key")
    victim = os.path.join(s.tmp, "victim")
    write(victim, "root's own file\n")
    s.config["noise"]["private_key_path"] = key
    s.write_config()
    # sh's pid is the server's (exec keeps it): the other user plants "<key>.tmp.<that pid>"
    # before the server runs, as one watching /proc for new processes would.
    plant_sh = ('umask 0; if [ "$2" = symlink ]; then ln -s "$3" "$1.tmp.$4"; '
                'else : > "$1.tmp.$4"; fi')
    outer = (f'runuser -u {OTHER} -- sh -c \'{plant_sh}\' plant "$1" "$2" "$3" "$$" || exit 99\n'
             'shift 3\nexec "$@"')
    log = open(s.log_path, "ab")
    try:
        s.proc = subprocess.Popen(["sh", "-c", outer, "sh", key, plant, victim, helpers.HS_BIN,
                                   "-c", s.cfg_path, "serve"], stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env=s._env(), cwd=s.tmp)
    finally:
        log.close()
    planted = f"{key}.tmp.{s.proc.pid}"
    s.wait_healthy()

    st = os.lstat(key)
    assert stat.S_ISREG(st.st_mode) and st.st_uid == 0, "the key is not root's own file"
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    assert read(key).startswith("privkey:")
    r = as_other("cat", key)
    assert r.returncode != 0 and "privkey" not in r.stdout, "the other user reads the key"
    assert read(victim) == "root's own file\n", "root's file was overwritten through a symlink"
    if plant == "file":
        r = as_other("cat", planted)
        assert r.returncode == 0, f"the planted file is gone (it became the key?): {r.stderr}"
        assert r.stdout == "", "the key went into the planted file"
    else:
        assert os.path.islink(planted) and os.readlink(planted) == victim
    assert sorted(os.listdir(keys)) == sorted(["noise.key", os.path.basename(planted)])
    assert "its members could plant or replace this private key" in s.log_text()


def test_key_in_a_directory_everyone_can_write_is_refused(db, other, made):
    """In a directory every user can write, the other user plants a whole key file (one whose
    private half they know) before the first start; the server refuses to use it."""
    s = made(db)
    keys = mkdir(os.path.join(s.tmp, "keys"), 0o777)
    key = os.path.join(keys, "noise.key")
    as_other("sh", "-c", f'umask 077; echo "{KNOWN_KEY}" > "{key}"', check=True)
    s.config["noise"]["private_key_path"] = key
    s.write_config()
    wait_refused(s, f"refusing {key}: {keys} is writable by every user")
    assert os.listdir(keys) == ["noise.key"] and read(key).strip() == KNOWN_KEY


def test_key_file_others_may_write_is_refused(db, made):
    s = made(db)
    key = os.path.join(s.tmp, "noise.key")
    write(key, KNOWN_KEY + "\n", 0o666)
    wait_refused(s, f"refusing {key}: other users may write it (mode 0666)")


def test_sqlite_database_in_a_directory_everyone_can_write_is_refused(db, made):
    if db.kind != "sqlite":
        pytest.skip("the database file is SQLite's")
    s = made(db)
    d = mkdir(os.path.join(s.tmp, "data"), 0o777)
    s.config["database"]["sqlite"]["path"] = os.path.join(d, "db.sqlite")
    s.write_config()
    wait_refused(s, f"refusing {d}/db.sqlite: {d} is writable by every user")
    assert os.listdir(d) == [], "the database was created there anyway"
