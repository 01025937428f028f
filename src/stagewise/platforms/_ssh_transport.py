"""The ssh platform's transport: OpenSSH's own client, one multiplexed connection per host, kept open.

Why OpenSSH's `ssh` and not a Python SSH library (asyncssh):

- It honours ssh_config exactly as the user's own `ssh` does — aliases,
  `ProxyJump`, `User`, `IdentityFile`, `Match`, certificates, agents — because
  it *is* that `ssh`. A host that `ssh web1` reaches, stagewise reaches; a
  library re-implements a subset and differs at the edges (the bastion
  complaints of other deployers come from exactly there).
- With ControlMaster/ControlPersist a command over an open master costs one
  small process and one channel, no handshake: the first command to a host
  pays the connection (~0.1 s on a LAN), the next ones a few milliseconds.
- It is on every machine that deploys to hosts, and its security fixes come
  with the system's updates; nothing to vendor.

Measured (`benchmarks/ssh_transport.py`, 4 namespace hosts on a loaded 2-core
machine): asyncssh connects faster (~150 ms against ~400 ms for the first
command) and runs a small command over an open connection in ~15 ms against
~27 ms for a new `ssh` client over the master, and many at once on a master
are slower still (each is a process). The platform runs one command at a time
per host and lists a host at most once a second, so that difference is ~1%
of a host's time and invisible in a delivery (seconds of readiness and
analysis); the fidelity to the user's ssh_config is not, so OpenSSH it is.

Every call uses `BatchMode=yes` (no password, passphrase or host-key prompt
ever; a missing key fails at once), `StrictHostKeyChecking=yes` (an unknown or
changed host key is refused, never accepted), `ConnectTimeout` and
`ServerAliveInterval` (a host lost mid-command is noticed within seconds, not
at TCP's timeout), and the master's socket under the state directory
(`ControlPath=…/%C`, a hash of the connection's identity, short enough for a
Unix socket).

Remote commands are always `sh -c SCRIPT stagewise ARG...` with the script a
fixed text of `_ssh_scripts` and every argument quoted by `shlex.quote`:
nothing from a spec, a host or an instance is ever interpolated into a script.

Exit status 255 is OpenSSH's own failure: the host key (refused, named as
such, with the fix), the login (permission denied), or the network (the host
is unreachable: its own kind of failure, never a failed release). A command
that outlives its timeout is killed and its host counted unreachable too.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

from stagewise.basics import programs
from stagewise.core.platform_spec import HostSpec, SshSpec, split_target
from stagewise.errors import HostKeyError, HostUnreachableError, PlatformError, PlatformRefusedError

SERVER_ALIVE_INTERVAL = 1
SERVER_ALIVE_COUNT = 3
"""A master whose host stops answering is given up after about 3 s (interval × count)."""
CONTROL_PERSIST = 120
"""Seconds a master outlives its last command: a restarted controller finds it still open."""
CLOSE_TIMEOUT = 5.0
"""Seconds `ssh -O exit` may take to ask a master to exit."""
SOCKET_PATH_MAX = 107
"""Unix socket paths are limited to 108 bytes with the final NUL."""
SOCKET_NAME_LENGTH = 1 + 40 + 17
"""What ssh adds to the directory: '/', %C (40 hex digits), and while it binds a master a temporary suffix
('.' and 16 random characters) that it renames away."""


@dataclass(frozen=True)
class Result:
    status: int
    stdout: str
    stderr: str


def control_dir(state_dir: Path) -> Path:
    """Where the masters' sockets live: under the state directory, or under /tmp when that path is too long."""
    preferred = state_dir / "ssh" / "cm"
    if len(str(preferred)) + SOCKET_NAME_LENGTH <= SOCKET_PATH_MAX:
        return preferred
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"stagewise-cm-{os.getuid()}-{digest}"


class Connection:
    """How to run commands on one host: ssh's argv, and what its failures mean."""

    def __init__(self, host: HostSpec, options: SshSpec, sockets: Path) -> None:
        self.host = host
        self.options = options
        self.sockets = sockets
        _, self.hostname, port = split_target(host.target)
        user = host.target.rpartition("@")[0] if "@" in host.target else None
        self._destination = f"{user}@{self.hostname}" if user else self.hostname
        self._port = port

    def argv(self) -> list[str]:
        """`ssh` and its options up to the destination; the remote command follows."""
        o = self.options
        argv = ["ssh"]
        if o.config is not None:
            argv += ["-F", o.config]
        for option in (
            "BatchMode=yes", "StrictHostKeyChecking=yes", "PasswordAuthentication=no",
            "KbdInteractiveAuthentication=no", f"ConnectTimeout={max(1, round(o.connect_timeout))}",
            f"ServerAliveInterval={SERVER_ALIVE_INTERVAL}", f"ServerAliveCountMax={SERVER_ALIVE_COUNT}",
            "ControlMaster=auto", f"ControlPath={self.sockets}/%C", f"ControlPersist={CONTROL_PERSIST}",
            "LogLevel=ERROR", "RequestTTY=no",
        ):
            argv += ["-o", option]
        if o.known_hosts is not None:
            argv += ["-o", f"UserKnownHostsFile={o.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
        if o.identity is not None:
            argv += ["-i", o.identity, "-o", "IdentitiesOnly=yes"]
        if o.jump is not None:
            argv += ["-J", o.jump]
        if self._port is not None:
            argv += ["-p", str(self._port)]
        return [*argv, "--", self._destination]

    async def run(self, script: str, args: list[str], *, timeout: float, stdin: Path | None = None) -> Result:
        """Run a fixed sh `script` with `args` on the host; raises on OpenSSH's own failures (exit 255)."""
        self.sockets.mkdir(parents=True, exist_ok=True, mode=0o700)
        remote = " ".join(shlex.quote(a) for a in ["sh", "-c", script, "stagewise", *args])
        # the client runs in a session of its own, killed whole at the limit; a master it starts
        # (ControlPersist) detaches into its own session and stays for the next command
        try:
            ended = await programs.run([*self.argv(), remote], timeout=timeout, stdin=stdin, errors_apart=True)
        except OSError as exc:
            raise PlatformRefusedError(f"cannot run ssh (install openssh-client): {exc}") from exc
        if ended.timed_out:
            raise HostUnreachableError(self.host.name, f"{self.host.name}: no answer within {timeout:g}s")
        result = Result(status=ended.code or 0, stdout=ended.output.decode(errors="replace"),
                        stderr=ended.errors.decode(errors="replace"))
        if result.status == 255:
            raise self.failure(result.stderr)
        return result

    def failure(self, stderr: str) -> PlatformError | PlatformRefusedError:
        """What an exit status 255 means, in words that say what to do."""
        name = self.host.name
        text = " ".join(stderr.split())
        if "Host key verification failed" in stderr or "HOST IDENTIFICATION HAS CHANGED" in stderr:
            changed = "HOST IDENTIFICATION HAS CHANGED" in stderr
            where = self.options.known_hosts or "~/.ssh/known_hosts"
            port = f"-p {self._port} " if self._port else ""
            what = "has CHANGED from the one in" if changed else "is not in"
            return HostKeyError(name, (
                f"{name}: its SSH host key {what} {where}; refused (StrictHostKeyChecking). Verify the key's "
                f"fingerprint with the host's administrator, then add it: ssh-keyscan {port}{self.hostname} >> "
                f"{where}" + (" (after removing the old line: ssh-keygen -R "
                              f"{self.hostname} -f {where})" if changed else "")))
        if "Permission denied" in stderr:
            return PlatformRefusedError(f"{name}: login refused ({text[-200:]}); check the user, "
                                        "ssh.identity and the host's authorized_keys")
        return HostUnreachableError(name, f"{name}: unreachable: {text[-200:] or 'ssh exited with 255'}")

    async def resolve_address(self, timeout: float) -> str:
        """The address routers connect to: the spec's, else the target's, an alias's HostName by `ssh -G`."""
        if self.host.address is not None:
            return self.host.address
        argv = self.argv()
        try:
            ended = await programs.run([*argv[:1], "-G", *argv[1:]], timeout=timeout, errors_apart=True)
        except OSError:
            return self.hostname
        for line in ended.output.decode(errors="replace").splitlines():
            key, _, value = line.partition(" ")
            if key == "hostname" and value:
                return value.strip()
        return self.hostname

    async def close(self) -> None:
        """Ask the master to exit (`ssh -O exit`); instances on the host keep running."""
        argv = self.argv()
        with contextlib.suppress(OSError):
            await programs.run([*argv[:1], "-O", "exit", *argv[1:]], timeout=CLOSE_TIMEOUT)
