"""Attacks by another local user on the files and the socket the server makes (issue 18, items
5 and 6), each run as a second unprivileged user (`hsother`, created here when missing) through
`runuser -u`; the tests themselves run as root.

- Key files: the old writer opened a predictable "<key>.tmp.<pid>" with O_CREAT|O_TRUNC, so a
  user who could write the key's directory planted a file there (and got the private key) or a
  symlink (and had root overwrite its target). A key in a directory every user can write, or
  one others may write, is refused: anyone could have planted their own.
- The CLI socket: a directory others can write lets them put their own server where the CLI
  looks; the server refuses to start there, and the CLI refuses to talk to a socket in such a
  place. The service-user layout (socket directory owned by the server's user, CLI run by
  root) keeps working."""

import os
import pwd
import signal
import stat
import subprocess
import textwrap
import time

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


# ---------------------------------------------------------------- item 6: the CLI socket

def _socket_in(s, d):
    s.config["unix_socket"] = os.path.join(d, "headscale.sock")
    s.socket_path = s.config["unix_socket"]
    s.write_config()
    return s.socket_path


def test_socket_directory_everyone_can_write_is_refused(db, made):
    s = made(db)
    d = mkdir(os.path.join(s.tmp, "run"), 0o777)
    sock = _socket_in(s, d)
    wait_refused(s, f"refusing unix_socket {sock}: {d} is writable by every user")
    assert not os.path.exists(sock)


def test_socket_directory_of_another_user_is_refused(db, other, made):
    s = made(db)
    d = mkdir(os.path.join(s.tmp, "run"), 0o755, other.pw_uid, other.pw_gid)
    sock = _socket_in(s, d)
    wait_refused(s, f"refusing unix_socket {sock}: {d} belongs to uid {other.pw_uid}")


def test_socket_directory_writable_by_group_warns(db, other, made):
    s = made(db)
    d = mkdir(os.path.join(s.tmp, "run"), 0o770, 0, other.pw_gid)
    sock = _socket_in(s, d)
    s.start()
    assert f"unix_socket {sock}: {d} is writable by its group" in s.log_text()
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o770
    s.cli_ok("users", "create", "groupwarn")


FAKE_SERVER = textwrap.dedent("""\
    import os, socket, sys
    path, log = sys.argv[1], sys.argv[2]
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    os.chmod(path, 0o777)
    s.listen(8)
    print("ready", flush=True)
    body = b'{"users":[{"id":"1","name":"fake-user","createdAt":"2020-01-01T00:00:00Z"}]}'
    while True:
        c, _ = s.accept()
        c.settimeout(5)
        data = b""
        try:
            while b"\\r\\n\\r\\n" not in data:
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        with open(log, "ab") as f:
            f.write(data)
        if data:
            c.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\n"
                      b"Content-Length: %d\\r\\nConnection: close\\r\\n\\r\\n" % len(body) + body)
        c.close()
""")


def test_cli_refuses_a_socket_another_user_could_have_replaced(db, other, made):
    """The server started in a safe directory; later the directory is opened to everyone (a
    mistake, or a package that chmods it) and the other user replaces the socket with a server
    of their own. The CLI refuses to send it anything instead of printing its answers."""
    s = made(db)
    d = mkdir(os.path.join(s.tmp, "run"), 0o755)
    sock = _socket_in(s, d)
    s.start()
    s.cli_ok("users", "create", "realuser")
    os.chmod(d, 0o777)
    script, reqlog = os.path.join(s.tmp, "fake.py"), os.path.join(s.tmp, "fake.log")
    write(script, FAKE_SERVER)
    write(reqlog, "", 0o666)
    # A session of its own: runuser forks the server, and killing runuser alone left it.
    fake = subprocess.Popen(["runuser", "-u", OTHER, "--", "python3", script, sock, reqlog],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        assert fake.stdout.readline().strip() == "ready", fake.stderr.read()
        assert os.stat(sock).st_uid == other.pw_uid
        r = s.cli("users", "list")
        assert "fake-user" not in r.stdout, "the CLI showed the other user's answer"
        assert r.returncode != 0
        assert f'refusing the headscale socket "{sock}": {d} is writable by every user' \
            in r.stderr, r.stderr
        assert read(reqlog) == "", "the request went to the other user's server"
    finally:
        os.killpg(fake.pid, signal.SIGKILL)
        fake.wait(timeout=10)
    os.chmod(d, 0o755)


def test_service_user_layout_works_for_root_cli(db, other, made):
    """The packaged layout: the server runs as its own user, owns its data and the socket's
    directory (as systemd's RuntimeDirectory makes it, in a directory of root's), and root
    runs the CLI. Both sides accept it."""
    s = made(db, pg_host="127.0.0.1")
    os.chmod(s.tmp, 0o755)
    data = mkdir(os.path.join(s.tmp, "lib"), 0o700, other.pw_uid, other.pw_gid)
    d = mkdir(os.path.join(s.tmp, "run"), 0o755, other.pw_uid, other.pw_gid)
    sock = _socket_in(s, d)
    s.config["noise"]["private_key_path"] = os.path.join(data, "noise.key")
    if db.kind == "sqlite":
        s.config["database"]["sqlite"]["path"] = os.path.join(data, "db.sqlite")
    s.write_config()
    log = open(s.log_path, "ab")
    try:
        s.proc = subprocess.Popen([helpers.HS_BIN, "-c", s.cfg_path, "serve"], stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env=s._env(), cwd=s.tmp, user=other.pw_uid,
                                  group=other.pw_gid, extra_groups=[])
    finally:
        log.close()
    s.wait_healthy()
    assert os.stat(sock).st_uid == other.pw_uid
    s.cli_ok("users", "create", "svcuser")
    assert "svcuser" in [u["name"] for u in s.cli_json("users", "list")]
    assert "refusing" not in s.log_text()
