"""The Debian package, as an operator gets it: deploy/build-deb.sh builds it with
dpkg-buildpackage, apt installs it (with the Depends it declares) into a fresh Debian root made
by debootstrap, and there the binary runs, `headscale configtest` passes on the packaged
config as the service user, `headscale serve` started the way the systemd unit says (its
ExecStart, User, WorkingDirectory, UMask, RuntimeDirectory) answers /health in a network
namespace of its own, using only the system calls and socket families the unit allows (under
systemd a refused call would only fail with EPERM), the root booted with systemd
(systemd-nspawn) runs both units with their whole sandbox, and `dpkg --purge` takes away what
the package made.

The root is debootstrapped once per Debian suite (the build machine's) into
.cache/debootstrap/<suite>/root; the packages apt fetches for the Depends are kept in
.cache/debootstrap/<suite>/archives. Each install goes to an overlay of the cached root, so
the cache stays untouched. Needs root (chroot, mounts, namespaces); the package tools come
from deploy/install-deps.sh."""

import gzip
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time

import pytest

import helpers

SUITE_DIR = os.path.join(helpers.REPO, ".cache", "debootstrap")
MIRROR = os.environ.get("HS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
TOOLS = ("debootstrap", "dpkg-buildpackage", "dh", "help2man", "systemd-analyze", "strace",
         "systemd-nspawn", "unshare", "nsenter", "curl")
UNIT_DIR = "/lib/systemd/system"
DEADLINE = 20.0


def run(argv, timeout=600, check=True, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, **kw)
    if check:
        assert r.returncode == 0, (f"{' '.join(argv)} -> rc {r.returncode}\n"
                                   f"stdout: {r.stdout[-4000:]}\nstderr: {r.stderr[-4000:]}")
    return r


def in_root(root, *argv, user=None, **kw):
    spec = [f"--userspec={user}:{user}"] if user else []
    return run(["chroot"] + spec + [root] + list(argv), **kw)


def suite():
    with open("/etc/os-release") as f:
        m = re.search(r"^VERSION_CODENAME=(\w+)", f.read(), re.M)
    return m.group(1) if m else "bookworm"


@pytest.fixture(scope="module")
def tools():
    if os.geteuid() != 0:
        pytest.skip("needs root: chroot, network namespaces, dpkg in a fresh root")
    if not all(shutil.which(t) for t in TOOLS):
        run(["bash", os.path.join(helpers.REPO, "deploy", "install-deps.sh")], check=False)
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        pytest.skip(f"cannot install {', '.join(missing)} (deploy/install-deps.sh failed)")


@pytest.fixture(scope="module")
def deb(tools, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("deb"))
    r = run(["bash", os.path.join(helpers.REPO, "deploy", "build-deb.sh"), out])
    path = r.stdout.strip().splitlines()[-1]
    assert path.endswith(".deb") and os.path.isfile(path), r.stdout[-2000:]
    assert not os.path.exists(os.path.join(helpers.REPO, "debian")), \
        "build-deb.sh left a debian/ folder in the source tree"
    return path


@pytest.fixture(scope="module")
def base_root(tools):
    """A minimal Debian root of the build machine's suite, with systemd for its unit
    checks, debootstrapped once (a half-made one is made again)."""
    top = os.path.join(SUITE_DIR, suite())
    root = os.path.join(top, "root")
    if not os.path.exists(os.path.join(top, "complete")):
        shutil.rmtree(top, ignore_errors=True)
        os.makedirs(top)
        r = run(["debootstrap", "--variant=minbase", "--include=systemd", suite(),
                 root + ".tmp", MIRROR], check=False, timeout=900)
        if r.returncode != 0:
            shutil.rmtree(top, ignore_errors=True)
            pytest.skip(f"debootstrap {suite()} from {MIRROR} failed (mirror unreachable?): "
                        + (r.stdout + r.stderr)[-500:])
        os.rename(root + ".tmp", root)
        open(os.path.join(top, "complete"), "w").close()
    os.makedirs(os.path.join(top, "archives", "partial"), exist_ok=True)
    return top


def apt(root, archives, args):
    """apt-get in the root, its downloads kept in archives for the next run."""
    return run(["unshare", "--mount", "sh", "-c",
                f"mount --bind {archives} {root}/var/cache/apt/archives && exec chroot {root} "
                "env DEBIAN_FRONTEND=noninteractive apt-get -q -o APT::Sandbox::User=root "
                + args], check=False)


def install(base_root, deb, workdir):
    """The cached root under an overlay of its own (the cache stays as it is), with the
    package installed by apt, which must find everything the package needs through its
    Depends. uninstall() takes it away."""
    root, upper, work = (os.path.join(workdir, d) for d in ("root", "upper", "work"))
    for d in (root, upper, work):
        os.makedirs(d)
    run(["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={base_root}/root,upperdir={upper},workdir={work}", root])
    try:
        shutil.copy(deb, os.path.join(root, "tmp", "headscale-c.deb"))
        archives = os.path.join(base_root, "archives")
        args = "install -y --no-install-recommends /tmp/headscale-c.deb"
        r = apt(root, archives, args)
        if r.returncode != 0:  # the root's package lists may be behind the mirror by now
            apt(root, archives, "update")
            r = apt(root, archives, args)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    except BaseException:
        uninstall(root)
        raise
    return root


def uninstall(root):
    run(["umount", "--lazy", root])
    shutil.rmtree(os.path.dirname(root), ignore_errors=True)


@pytest.fixture(scope="module")
def root(base_root, deb, tmp_path_factory):
    path = install(base_root, deb, str(tmp_path_factory.mktemp("installed")))
    yield path
    uninstall(path)


def stat_of(root, path):
    st = os.lstat(root + path)
    return oct(st.st_mode & 0o7777), st.st_uid, st.st_gid


def ids(root, name):
    """(uid, gid, shell) of the user name in the root's passwd."""
    with open(root + "/etc/passwd") as f:
        for line in f:
            p = line.rstrip("\n").split(":")
            if p[0] == name:
                return int(p[2]), int(p[3]), p[6]
    return None


def unit_values(root, unit, key):
    """Every value of key= in the installed unit, in order."""
    with open(root + UNIT_DIR + "/" + unit) as f:
        return [line.split("=", 1)[1].strip() for line in f if line.startswith(key + "=")]


def test_package_declares_its_runtime_libraries(root, deb):
    fields = run(["dpkg-deb", "-f", deb, "Package", "Version", "Depends", "Provides"]).stdout
    depends = {d.split()[0] for d in re.search(r"^Depends: (.*)$", fields, re.M)
               .group(1).split(", ")}
    assert re.search(r"^Provides: headscale$", fields, re.M), fields
    with open(os.path.join(helpers.REPO, "CMakeLists.txt")) as f:
        version = re.search(r"project\(headscale-c VERSION ([0-9.]+)", f.read()).group(1)
    assert re.search(rf"^Version: {re.escape(version)}\b", fields, re.M), fields
    ldd = in_root(root, "ldd", "/usr/bin/headscale").stdout
    assert "not found" not in ldd, ldd
    # The libraries the binary itself names; their own dependencies are their packages'.
    needed = re.findall(r"NEEDED\s+(\S+)", run(["objdump", "-p",
                                                 root + "/usr/bin/headscale"]).stdout)
    assert len(needed) >= 12, needed  # the twelve pkg-config libraries at least
    for name in needed:
        lib = re.search(rf"^\s*{re.escape(name)} => (/\S+)", ldd, re.M).group(1)
        owner = in_root(root, "dpkg", "-S", os.path.realpath(root + lib)[len(root):],
                        check=False)
        if owner.returncode != 0:  # usrmerge: dpkg knows the /lib spelling
            owner = in_root(root, "dpkg", "-S", lib)
        pkg = owner.stdout.split(":")[0]
        assert pkg in depends, f"{lib} comes from {pkg}, not in Depends: {sorted(depends)}"


def test_installed_files_user_and_modes(root):
    version = json.loads(in_root(root, "headscale", "version", "-o", "json").stdout)
    if os.path.exists(os.path.join(helpers.REPO, ".git")):  # built out of tree, yet it knows
        head = run(["git", "-C", helpers.REPO, "rev-parse", "HEAD"]).stdout.strip()
        assert version["commit"] == head, version
    assert "configtest" in in_root(root, "headscale", "--help").stdout

    uid, gid, shell = ids(root, "headscale")
    assert uid < 1000 and shell == "/usr/sbin/nologin", (uid, shell)
    assert stat_of(root, "/var/lib/headscale") == ("0o750", uid, gid)
    assert stat_of(root, "/etc/headscale/config.yaml") == ("0o640", 0, gid)
    conffiles = in_root(root, "dpkg-query", "-W", "-f=${Conffiles}", "headscale-c").stdout
    assert "/etc/headscale/config.yaml" in conffiles, conffiles

    # The packaged config is the example with the CLI socket open to the group.
    with open(os.path.join(helpers.REPO, "deploy", "config-example.yaml")) as f:
        example = f.read()
    with open(root + "/etc/headscale/config.yaml") as f:
        packaged = f.read()
    assert packaged == example.replace('unix_socket_permission: "0700"',
                                       'unix_socket_permission: "0770"')

    for shell_name, path in (("bash", "/usr/share/bash-completion/completions/headscale"),
                             ("zsh", "/usr/share/zsh/vendor-completions/_headscale"),
                             ("fish", "/usr/share/fish/vendor_completions.d/headscale.fish")):
        with open(root + path) as f:
            assert f.read() == in_root(root, "headscale", "completion", shell_name).stdout
    with gzip.open(root + "/usr/share/man/man1/headscale.1.gz", "rt") as f:
        man = f.read()
    assert "configtest" in man and "/var/lib/headscale" in man

    # dh_installsystemd enabled the server unit (not the template: it has no instance).
    wants = root + "/etc/systemd/system/multi-user.target.wants/"
    assert os.readlink(wants + "headscale.service") == UNIT_DIR + "/headscale.service"
    assert not [n for n in os.listdir(wants) if n.startswith("headscale@")]


@pytest.mark.parametrize("unit", ["headscale.service", "headscale@replica1.service",
                                  "headscale-webadmin.service"])
def test_units_verify_and_score(root, unit):
    r = run(["systemd-analyze", "verify", f"--root={root}", "--man=no",
             f"{UNIT_DIR}/{unit}"], check=False)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    r = run(["systemd-analyze", "security", "--offline=true", f"--root={root}", "--man=no",
             f"{UNIT_DIR}/{unit}"])
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout).group(1))
    print(f"systemd-analyze security {unit}: {score}")
    assert score <= 2.0, r.stdout
    if "@" in unit:  # the instance name picks the config and the socket's folder
        assert unit_values(root, "headscale@.service", "ExecStart") == \
            ["/usr/bin/headscale serve -c /etc/headscale/%i.yaml"]
        assert unit_values(root, "headscale@.service", "RuntimeDirectory") == ["headscale-%i"]


def syscall_groups():
    """Every @group of `systemd-analyze syscall-filter`, as a set of plain system calls."""
    text = run(["systemd-analyze", "syscall-filter", "--no-pager"]).stdout
    groups, cur = {}, None
    for line in text.splitlines():
        s = line.strip()
        if line.startswith("@"):
            cur = groups.setdefault(s, [])
        elif cur is not None and s and not s.startswith("#"):
            cur.append(s)

    def expand(name):
        out = set()
        for entry in groups[name]:
            out |= expand(entry) if entry.startswith("@") else {entry}
        return out
    return {name: expand(name) for name in groups}


def allowed_syscalls(root):
    groups = syscall_groups()
    allow, deny = set(), set()
    for value in unit_values(root, "headscale.service", "SystemCallFilter"):
        target = deny if value.startswith("~") else allow
        for entry in value.lstrip("~").split():
            target |= groups[entry] if entry.startswith("@") else {entry}
    return allow - deny


def start_as_unit(root, trace, log_path):
    """headscale serve as headscale.service would start it, bar the sandbox systemd adds:
    its RuntimeDirectory made as systemd makes it, then ExecStart as User=, in
    WorkingDirectory= with UMask=, in a network namespace of its own, under strace."""
    unit = "headscale.service"
    user = unit_values(root, unit, "User")[0]
    uid, gid, _ = ids(root, user)
    rundir = "/run/" + unit_values(root, unit, "RuntimeDirectory")[0]
    os.makedirs(root + rundir)
    os.chown(root + rundir, uid, gid)
    os.chmod(root + rundir, int(unit_values(root, unit, "RuntimeDirectoryMode")[0], 8))
    inner = (f"cd {unit_values(root, unit, 'WorkingDirectory')[0]} && "
             f"umask {unit_values(root, unit, 'UMask')[0]} && "
             f"exec {unit_values(root, unit, 'ExecStart')[0]}")
    outer = (f"ip link set lo up && mount -t proc proc {root}/proc && "
             f"exec chroot --userspec={user}:{user} {root} /bin/sh -c '{inner}'")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["strace", "-f", "-qq", "-o", trace, "unshare", "--net",
                                 "--mount", "sh", "-c", outer], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    proc.log_path = log_path
    return proc


def server_pid(proc):
    """strace's child once it is headscale (unshare, sh and chroot exec in turn): before
    that it may still be in this network namespace, where 127.0.0.1:8080 is another's."""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        for kid in run(["pgrep", "-P", str(proc.pid)], check=False).stdout.split():
            try:
                if os.readlink(f"/proc/{kid}/exe").endswith("/usr/bin/headscale"):
                    return int(kid)
            except OSError:
                pass
        assert proc.poll() is None, "strace exited at once:\n" + serve_log(proc)
        time.sleep(0.05)
    raise AssertionError("headscale did not start:\n" + serve_log(proc))


def serve_log(proc):
    with open(proc.log_path, errors="replace") as f:
        return f.read()


def wait_log(proc, needle):
    end = time.monotonic() + DEADLINE
    while needle not in serve_log(proc):
        assert proc.poll() is None, f"headscale serve exited {proc.returncode}:\n" \
                                    + serve_log(proc)
        assert time.monotonic() < end, f"{needle!r} not logged:\n" + serve_log(proc)
        time.sleep(0.05)


def health_in_ns(pid):
    return run(["nsenter", f"--net=/proc/{pid}/ns/net", "curl", "-s", "--max-time", "2",
                "http://127.0.0.1:8080/health"], check=False).stdout


def wait_health(proc, pid):
    end = time.monotonic() + DEADLINE
    while '"pass"' not in (last := health_in_ns(pid)):
        assert proc.poll() is None and time.monotonic() < end, \
            f"/health answered {last!r}:\n" + serve_log(proc)
        time.sleep(0.1)


def used_by_server(trace):
    """The system calls and socket families of the traced process from its exec of
    /usr/bin/headscale on (unshare and chroot before it need more)."""
    with open(trace) as f:
        lines = f.read().splitlines()
    start = next(i for i, ln in enumerate(lines)
                 if re.match(r'\d+ +execve\("/usr/bin/headscale".* = 0$', ln))
    calls, families = set(), set()
    for ln in lines[start:]:
        m = re.match(r"\d+ +(?:<\.\.\. )?(\w+)[( ]", ln)
        if m and m.group(1) not in ("exited", "killed"):
            calls.add(m.group(1))
        m = re.match(r"\d+ +socket\((AF_\w+)", ln)
        if m:
            families.add(m.group(1))
    return calls, families


def test_configtest_and_serve_as_the_unit_says(root, tmp_path):
    user = unit_values(root, "headscale.service", "User")[0]
    uid, gid, _ = ids(root, user)
    r = in_root(root, "headscale", "configtest", user=user)
    assert "configuration is valid" in r.stderr + r.stdout, r.stderr
    for key in ("noise_private.key", "db.sqlite"):
        assert stat_of(root, "/var/lib/headscale/" + key) == ("0o600", uid, gid)

    trace = str(tmp_path / "strace.txt")
    proc = start_as_unit(root, trace, str(tmp_path / "serve.log"))
    pid = None
    try:
        pid = server_pid(proc)
        wait_health(proc, pid)
        # The CLI as root, over the socket the packaged config names.
        assert stat_of(root, "/run/headscale/headscale.sock") == ("0o770", uid, gid)
        in_root(root, "headscale", "users", "create", "alice")
        assert "alice" in in_root(root, "headscale", "users", "list").stdout
        # systemctl reload: the unit's ExecReload, with the root's /bin/kill.
        reload = unit_values(root, "headscale.service", "ExecReload")[0]
        in_root(root, *reload.replace("$MAINPID", str(pid)).split())
        wait_log(proc, "SIGHUP")
        wait_health(proc, pid)
        os.kill(pid, signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE) == 0, serve_log(proc)
    finally:
        if proc.poll() is None:
            if pid:  # strace killed alone would leave it running
                os.kill(pid, signal.SIGKILL)
            proc.kill()
            proc.wait(timeout=DEADLINE)

    # What a unit's SystemCallFilter or RestrictAddressFamilies refuses would fail the
    # server under systemd: it used none of that.
    calls, families = used_by_server(trace)
    print(f"headscale serve used {len(calls)} system calls: {' '.join(sorted(calls))}; "
          f"socket families {' '.join(sorted(families))}")
    assert len(calls) > 20, sorted(calls)
    assert calls <= allowed_syscalls(root), sorted(calls - allowed_syscalls(root))
    allowed_families = set(unit_values(root, "headscale.service",
                                       "RestrictAddressFamilies")[0].split())
    assert families and families <= allowed_families, families


def test_purge_removes_what_the_package_made(base_root, deb, tmp_path):
    root = install(base_root, deb, str(tmp_path / "purge"))
    try:
        in_root(root, "headscale", "configtest", user="headscale")
        assert os.path.exists(root + "/var/lib/headscale/db.sqlite")
        in_root(root, "dpkg", "--purge", "headscale-c")
        for path in ("/usr/bin/headscale", "/usr/bin/headscale-webadmin",
                     "/usr/share/headscale", "/etc/headscale", "/var/lib/headscale",
                     UNIT_DIR + "/headscale.service", UNIT_DIR + "/headscale@.service",
                     "/etc/systemd/system/multi-user.target.wants/headscale.service"):
            assert not os.path.lexists(root + path), path
        assert ids(root, "headscale") is None
        with open(root + "/etc/group") as f:
            assert not re.search(r"^headscale:", f.read(), re.M)
        assert "headscale" not in in_root(root, "dpkg-statoverride", "--list",
                                          check=False).stdout
    finally:
        uninstall(root)


class Booted:
    """The root booted with systemd as its init (systemd-nspawn, loopback only)."""

    def __init__(self, root, log_path):
        self.root, self.log_path = root, log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["systemd-nspawn", "-q", "-D", root, "--boot", "--private-network",
                 "--register=no", "--keep-unit", "--console=read-only",
                 "--machine=hs-package-test"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.pid1 = None
        end = time.monotonic() + DEADLINE
        while not (self.pid1 and os.path.exists(f"/proc/{self.pid1}/root/run/systemd/private")):
            kids = run(["pgrep", "-P", str(self.proc.pid), "-x", "systemd"],
                       check=False).stdout.split()
            self.pid1 = int(kids[0]) if kids else None
            assert self.proc.poll() is None and time.monotonic() < end, self.log()
            time.sleep(0.1)
        state = self.sh("systemctl", "is-system-running", "--wait", check=False,
                        timeout=3 * DEADLINE).stdout.strip()
        assert state in ("running", "degraded"), state + "\n" + self.log()

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()[-3000:]

    def sh(self, *argv, **kw):
        """A command inside the booted root (all its namespaces)."""
        return run(["nsenter", "-t", str(self.pid1), "-a", "-r", "-w"] + list(argv), **kw)

    def health(self, port):
        return run(["nsenter", "-t", str(self.pid1), "--net", "curl", "-s", "--max-time", "2",
                    f"http://127.0.0.1:{port}/health"], check=False).stdout

    def wait_active(self, unit, port):
        end = time.monotonic() + DEADLINE
        while '"pass"' not in self.health(port):
            state = self.sh("systemctl", "is-active", unit, check=False).stdout.strip()
            assert state in ("active", "activating") and time.monotonic() < end, \
                f"{unit} {state}:\n" + self.journal(unit)
            time.sleep(0.1)
        return int(self.sh("systemctl", "show", "-p", "MainPID", "--value", unit).stdout)

    def journal(self, unit):
        return self.sh("journalctl", "-u", unit, "--no-pager", "-o", "cat",
                       check=False).stdout[-4000:]

    def poweroff(self):
        if self.proc.poll() is None:
            self.sh("systemctl", "poweroff", "--no-block", check=False)
            try:
                self.proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=DEADLINE)


def replica_config(root, name, port):
    """/etc/headscale/<name>.yaml for headscale@<name>: the packaged config with ports,
    database and socket of its own (the noise key is shared, as replicas share it)."""
    with open(root + "/etc/headscale/config.yaml") as f:
        text = f.read()
    for old, new in (("127.0.0.1:8080", f"127.0.0.1:{port}"),
                     ("127.0.0.1:9090", f"127.0.0.1:{port + 1000}"),
                     ("/var/lib/headscale/db.sqlite", f"/var/lib/headscale/{name}.sqlite"),
                     ("/var/run/headscale/", f"/var/run/headscale-{name}/")):
        assert old in text, old
        text = text.replace(old, new)
    with open(root + f"/etc/headscale/{name}.yaml", "w") as f:
        f.write(text)


def proc_status(booted, pid):
    text = booted.sh("cat", f"/proc/{pid}/status").stdout
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def fastcgi_get(path, uri):
    """The response to one FastCGI GET of uri (what nginx would send) on the unix socket."""
    def record(kind, content):
        return struct.pack(">BBHHBx", 1, kind, 1, len(content), 0) + content

    params = b"".join(bytes([len(k), len(v)]) + k.encode() + v.encode() for k, v in
                      (("REQUEST_METHOD", "GET"), ("DOCUMENT_URI", uri), ("QUERY_STRING", ""),
                       ("HTTPS", "on"), ("HTTP_HOST", "localhost")))
    begin = record(1, struct.pack(">HB5x", 1, 0))  # responder, close the connection after
    out = b""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(DEADLINE)
        s.connect(path)
        s.sendall(begin + record(4, params) + record(4, b"") + record(5, b""))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    while len(data) >= 8:
        _, kind, _, clen, plen = struct.unpack(">BBHHB", data[:7])
        if kind == 6:  # stdout
            out += data[8:8 + clen]
        data = data[8 + clen + plen:]
    return out.decode(errors="replace")


def test_units_run_under_systemd(base_root, deb, tmp_path):
    """The units themselves, sandbox and all, under systemd: the server unit the package
    enabled starts at boot, runs as headscale with CAP_NET_BIND_SERVICE alone, no new
    privileges and a seccomp filter, answers /health and the CLI, reloads, stops cleanly;
    the template runs a second server on its own config; the web admin answers FastCGI."""
    root = install(base_root, deb, str(tmp_path / "boot"))
    replica_config(root, "replica1", 8081)
    booted = Booted(root, str(tmp_path / "boot.log"))
    try:
        pid = booted.wait_active("headscale.service", 8080)
        uid, gid, _ = ids(root, "headscale")
        status = proc_status(booted, pid)
        assert status["Uid"].split()[:2] == [str(uid)] * 2, status["Uid"]
        assert int(status["CapEff"], 16) == 1 << 10, status["CapEff"]  # CAP_NET_BIND_SERVICE
        assert int(status["CapBnd"], 16) == 1 << 10, status["CapBnd"]
        assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2", status
        inside = f"/proc/{booted.pid1}/root"  # its /run is the container's own
        assert stat_of(inside, "/run/headscale") == ("0o750", uid, gid)
        assert stat_of(inside, "/run/headscale/headscale.sock") == ("0o770", uid, gid)
        booted.sh("headscale", "users", "create", "carol")
        assert "carol" in booted.sh("headscale", "users", "list").stdout

        booted.sh("systemctl", "reload", "headscale")
        end = time.monotonic() + DEADLINE
        while "SIGHUP" not in booted.journal("headscale.service"):
            assert time.monotonic() < end, booted.journal("headscale.service")
            time.sleep(0.1)
        assert booted.wait_active("headscale.service", 8080) == pid

        booted.sh("systemctl", "start", "headscale@replica1")
        booted.wait_active("headscale@replica1.service", 8081)
        assert "carol" not in booted.sh("headscale", "-c", "/etc/headscale/replica1.yaml",
                                        "users", "list").stdout
        assert os.path.exists(root + "/var/lib/headscale/replica1.sqlite")

        # The web admin, not enabled by the package: as a dynamic user in group www-data,
        # whose members alone (nginx) may open its socket.
        booted.sh("systemctl", "start", "headscale-webadmin")
        sock = inside + "/run/headscale-webadmin/webadmin.sock"
        end = time.monotonic() + DEADLINE
        while not os.path.exists(sock):
            assert time.monotonic() < end, booted.journal("headscale-webadmin")
            time.sleep(0.1)
        with open(root + "/etc/group") as f:
            www = int(re.search(r"^www-data:x:(\d+):", f.read(), re.M).group(1))
        assert stat_of(inside, "/run/headscale-webadmin")[::2] == ("0o750", www)
        assert stat_of(inside, "/run/headscale-webadmin/webadmin.sock")[::2] == ("0o660", www)
        page = fastcgi_get(sock, "/admin/")
        assert re.match(r"Status: 30[23]", page) and "/admin/signin" in page, page
        assert "<form" in fastcgi_get(sock, "/admin/signin")

        booted.sh("systemctl", "stop", "headscale", "headscale@replica1", "headscale-webadmin")
        for unit in ("headscale", "headscale@replica1", "headscale-webadmin"):
            r = booted.sh("systemctl", "show", "-p", "Result", "--value", unit)
            assert r.stdout.strip() == "success", booted.journal(unit)
        assert not os.path.exists(inside + "/run/headscale")
        assert os.path.exists(inside + "/var/lib/headscale/db.sqlite")
    finally:
        booted.poweroff()
        uninstall(root)
