"""Hosts for tests and the demo: Linux network namespaces, each with its own sshd, user and address.

The ssh platform must be tested against real machines reached over real SSH, and
this machine is all there is. So each "host" here is:

- a network namespace (`ip netns`) with one veth link to a bridge in the root
  namespace; the addresses (a private /24, one per fleet) exist only on that
  bridge and inside the namespaces, so traffic to them never leaves the machine;
- Debian's OpenSSH server (`/usr/sbin/sshd -D`) running inside the namespace on
  the host's address, with its own host key and its own configuration;
- its own Unix user and home directory, so hosts share no root directory and
  no process (each sees its own by uid), and a test can count a host's
  processes by its uid.

A host "goes down" by setting its bridge port down (`down`): packets to it are
lost, as when a cable is pulled, and SSH to it hangs until its timeouts.

Several fleets may exist at once (pytest-xdist workers, other sessions of the
test suite): each takes a random name prefix and a /24 nobody uses, under a
file lock, and records itself under `REGISTRY`; a fleet whose owner process is
gone (a crashed run) is swept away before a new one is made. `close` removes
everything it made — sshd processes, the host users' processes, namespaces,
the bridge, users, files — and runs also when creation fails midway.

Root only. This module must never touch a namespace, link or user it did not
create (everything it removes carries its prefix and is listed in its record).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stagewise.basics import files, waiting
from stagewise.basics import proc as procfs  # `proc` names an sshd process here
from stagewise.errors import HostsUnavailableError

REGISTRY = Path("/run/stagewise-test-hosts")
"""One JSON record per live fleet: what to remove if its owner dies."""
SSHD = "/usr/sbin/sshd"
SUBNET_PREFIX = "10.77"
"""Fleets take 10.77.X.0/24 for a free X: private, and used here only inside namespaces."""
SSHD_READY_TIMEOUT = 10.0
KILL_TIMEOUT = 2.0
"""Seconds to go on killing the processes of a test host's user until none is left."""


def unavailable_reason() -> str | None:
    """Why namespace hosts cannot be made on this machine, or None when they can."""
    if os.geteuid() != 0:
        return "namespace hosts need root (ip netns, useradd, sshd)"
    for program in (SSHD, shutil.which("ip"), shutil.which("useradd"), shutil.which("ssh-keygen")):
        if program is None or not Path(program).exists():
            return "namespace hosts need openssh-server, openssh-client, iproute2 and passwd (apt-get install)"
    return None


@dataclass
class TestHost:
    """One namespace host."""

    index: int
    netns: str
    user: str
    home: str
    address: str
    link: str
    """The bridge-side end of its veth pair: set down to take the host off the network."""
    directory: str
    sshd_pid: int = 0
    uid: int = 0

    @property
    def target(self) -> str:
        return f"{self.user}@{self.address}"


@dataclass
class FleetRecord:
    """What a fleet made; enough for anyone to remove it."""

    prefix: str
    owner_pid: int
    owner_start: int
    directory: str
    bridge: str
    subnet: str
    hosts: list[TestHost] = field(default_factory=list)


def _run(*argv: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, input=input, capture_output=True, text=True, check=False, timeout=30)
    if check and result.returncode != 0:
        raise HostsUnavailableError(f"{' '.join(argv[:4])} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def _start_time(pid: int) -> int | None:
    return procfs.start_time(pid)


@contextlib.contextmanager
def _registry_lock() -> Iterator[None]:
    REGISTRY.mkdir(parents=True, exist_ok=True)
    with files.locked(REGISTRY / ".lock"):
        yield


def _sweep_stale() -> None:
    """Remove the fleets of owners that are gone (a run that crashed or was SIGKILLed)."""
    for path in REGISTRY.glob("*.json"):
        try:
            data = json.loads(path.read_text())
            record = FleetRecord(**{**data, "hosts": [TestHost(**h) for h in data["hosts"]]})
        except (OSError, ValueError, TypeError, KeyError):
            continue
        if _start_time(record.owner_pid) == record.owner_start:
            continue
        _remove(record)
        path.unlink(missing_ok=True)


def _free_subnet() -> str:
    used = _run("ip", "-o", "-4", "addr", "show").stdout
    for _ in range(200):
        candidate = f"{SUBNET_PREFIX}.{secrets.randbelow(254) + 1}"
        if f" {candidate}." not in used:
            return candidate
    raise HostsUnavailableError(f"no free /24 left in {SUBNET_PREFIX}.0.0/16")


class Fleet:
    """N namespace hosts reachable over SSH with one client key; use as a context manager."""

    def __init__(self, count: int, *, base: Path | None = None) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise HostsUnavailableError(reason)
        self.count = count
        self.prefix = "sw" + secrets.token_hex(3)
        root = Path(base or "/tmp") / f"stagewise-hosts-{self.prefix}"
        self.directory = root
        self.identity = root / "id_ed25519"
        self.known_hosts = root / "known_hosts"
        self.record = FleetRecord(prefix=self.prefix, owner_pid=os.getpid(), owner_start=_start_time(os.getpid()) or 0,
                                  directory=str(root), bridge=f"{self.prefix}br", subnet="")
        self._sshd: list[subprocess.Popen[bytes]] = []

    # -- making -------------------------------------------------------------------------------

    def __enter__(self) -> Fleet:
        try:
            self.create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def hosts(self) -> list[TestHost]:
        return self.record.hosts

    def create(self) -> None:
        self.directory.mkdir(mode=0o755, parents=True)
        os.chmod(self.directory, 0o755)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "stagewise-test", "-f", str(self.identity))
        # One fleet made at a time on this machine: the subnet is chosen free, and useradd/userdel lock
        # /etc/passwd (a concurrent one fails instead of waiting).
        with _registry_lock():
            _sweep_stale()
            self.record.subnet = _free_subnet()
            self._save()
            _run("ip", "link", "add", self.record.bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{self.record.subnet}.1/24", "dev", self.record.bridge)
            _run("ip", "link", "set", self.record.bridge, "up")
            for i in range(1, self.count + 1):
                self._add_host(i)
        self._save()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        for host in self.hosts:
            self._start_sshd(host)
        self._wait_sshd()
        lines = []
        for h in self.hosts:
            kind, key = (Path(h.directory) / "ssh_host_ed25519_key.pub").read_text().split()[:2]
            lines.append(f"{h.address} {kind} {key}\n")
        self.known_hosts.write_text("".join(lines))
        os.chmod(self.known_hosts, 0o644)

    def _add_host(self, i: int) -> None:
        p = self.prefix
        host = TestHost(index=i, netns=f"{p}-h{i}", user=f"{p}h{i}", home="", address=f"{self.record.subnet}.{10 + i}",
                        link=f"{p}v{i}", directory=str(self.directory / f"h{i}"))
        self.hosts.append(host)
        self._save()  # recorded before it exists: a crash from here on leaves nothing unknown
        directory = Path(host.directory)
        directory.mkdir(mode=0o755)
        home = directory / "home"
        host.home = str(home)
        _run("useradd", "-M", "-d", str(home), "-s", "/bin/sh", "-p", "*", host.user)
        home.mkdir(mode=0o700)
        host.uid = int(_run("id", "-u", host.user).stdout)
        os.chown(home, host.uid, host.uid)
        _run("ip", "-batch", "-", input="\n".join([
            f"netns add {host.netns}",
            f"link add {host.link} type veth peer name {p}e{i}",
            f"link set {p}e{i} netns {host.netns}",
            f"link set {host.link} master {self.record.bridge}",
            f"link set {host.link} up",
        ]) + "\n")
        _run("ip", "-n", host.netns, "-batch", "-", input="\n".join([
            f"link set {p}e{i} name eth0",
            f"addr add {host.address}/24 dev eth0",
            "link set eth0 up",
            "link set lo up",
        ]) + "\n")
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / "ssh_host_ed25519_key"))
        (directory / "authorized_keys").write_text(Path(f"{self.identity}.pub").read_text())
        (directory / "sshd_config").write_text("\n".join([
            f"ListenAddress {host.address}:22",
            f"HostKey {directory / 'ssh_host_ed25519_key'}",
            f"PidFile {directory / 'sshd.pid'}",
            f"AuthorizedKeysFile {directory / 'authorized_keys'}",
            f"AllowUsers {host.user}",
            "StrictModes no", "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PermitRootLogin no", "MaxStartups 200", "MaxSessions 200", "LogLevel ERROR", "UseDNS no",
            "AcceptEnv none", "",
        ]))

    def _start_sshd(self, host: TestHost) -> None:
        log = open(Path(host.directory) / "sshd.log", "wb")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, SSHD, "-D", "-e", "-f", str(Path(host.directory) / "sshd_config")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._sshd.append(proc)
        host.sshd_pid = proc.pid
        self._save()

    def _wait_sshd(self) -> None:
        pending = list(self.hosts)

        def all_listen() -> bool:
            for host in list(pending):
                listening = _run("ip", "netns", "exec", host.netns, "cat", "/proc/net/tcp").stdout
                if ":0016 00000000:0000 0A" in listening:
                    pending.remove(host)
            return not pending

        if not waiting.blocking_until(all_listen, timeout=SSHD_READY_TIMEOUT, interval=0.02):
            logs = "; ".join((Path(h.directory) / "sshd.log").read_text()[-300:] for h in pending)
            raise HostsUnavailableError(f"sshd did not listen on {', '.join(h.address for h in pending)}: {logs}")

    def _save(self) -> None:
        REGISTRY.mkdir(parents=True, exist_ok=True)
        files.write_atomic(REGISTRY / f"{self.prefix}.json", json.dumps(asdict(self.record)))

    # -- using --------------------------------------------------------------------------------

    def down(self, host: TestHost) -> None:
        """Take the host off the network: its packets are dropped from now on."""
        _run("ip", "link", "set", host.link, "down")

    def up(self, host: TestHost) -> None:
        _run("ip", "link", "set", host.link, "up")

    def processes(self, host: TestHost, command: str) -> list[int]:
        """Pids of the host user's processes whose command line starts with `command` (a program and its first
        arguments: the shell scripts that start them carry the same words further along theirs)."""
        return [pid for pid, cmdline in _processes_of(host.uid) if cmdline.startswith(command)]

    def ssh_options(self) -> dict[str, str]:
        """The spec's `platform.ssh` for this fleet."""
        return {"identity": str(self.identity), "knownHosts": str(self.known_hosts)}

    # -- removing -----------------------------------------------------------------------------

    def close(self) -> None:
        for proc in self._sshd:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._sshd:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        with _registry_lock():
            _remove(self.record)
            (REGISTRY / f"{self.prefix}.json").unlink(missing_ok=True)


def _processes_of(uid: int) -> list[tuple[int, str]]:
    """(pid, command line) of each process that runs as `uid`."""
    found = []
    for pid in procfs.pids():
        argv = procfs.cmdline(pid) if procfs.owner(pid) == uid else None
        if argv is not None:
            found.append((pid, " ".join(argv)))
    return found


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of a test host's user, by pid (the user exists only for this fleet), until none is left
    (one may fork while the others are killed)."""
    def none_left() -> bool:
        pids = [pid for pid, _ in _processes_of(uid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return not pids

    waiting.blocking_until(none_left, timeout=KILL_TIMEOUT, interval=0.02)


def _remove(record: FleetRecord) -> None:
    """Remove what `record` lists, whatever part of it exists; never fails on a missing piece."""
    for host in record.hosts:
        if host.sshd_pid and _start_time(host.sshd_pid) is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(host.sshd_pid, signal.SIGKILL)
        if host.uid:
            _kill_uid(host.uid)
        _run("ip", "netns", "del", host.netns, check=False)
        _run("userdel", host.user, check=False)
    _run("ip", "link", "del", record.bridge, check=False)
    shutil.rmtree(record.directory, ignore_errors=True)
