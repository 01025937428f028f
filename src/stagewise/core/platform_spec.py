"""The `platform:` of a Service spec: local processes, or a fleet of hosts over SSH.

A host is written as OpenSSH writes it — `[user@]address[:port]`, or an
ssh_config alias — or as a mapping `{target, address, labels}` when the address
routers connect to differs from the SSH target (a bastion in front, a private
network behind). What OpenSSH does with the target (aliases, `ProxyJump`,
`IdentityFile` from `ssh.config`) is OpenSSH's business: nothing here parses
ssh_config.

`maxUnreachable` (a count or a percentage of the hosts, default 0) is how
many hosts a delivery may lose and still go on; `unreachable_limit` and
`too_many_unreachable` are the one place that decides it, read by the state
machine.

Pure: it states what is valid and computes from the spec alone.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from stagewise.core.spec_common import Duration, Model

_TARGET = re.compile(
    r"(?:(?P<user>[A-Za-z0-9_][A-Za-z0-9_.-]*)@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9_.-]*)"
    r"(?::(?P<port>\d{1,5}))?"
)


def split_target(target: str) -> tuple[str | None, str, int | None]:
    """(user, host, port) of `[user@]host[:port]`; the host without IPv6 brackets."""
    match = _TARGET.fullmatch(target)
    if match is None:
        raise ValueError(f"expected [user@]address[:port] or an ssh_config alias, got {target!r}")
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"port {port} of {target!r} is outside 1–65535")
    return match["user"], match["host"].strip("[]"), port


def _host_value(value: Any) -> Any:
    return {"target": value} if isinstance(value, str) else value


class HostSpec(Model):
    target: str
    """What `ssh` is given: `[user@]address[:port]` or an ssh_config alias."""
    address: str | None = None
    """The address routers connect to on this host; default: the target's address (an alias: its HostName)."""
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        split_target(value)  # also refuses a leading '-': a target is never taken for an option of ssh
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_.:\-]+|\[[0-9A-Fa-f:.]+\]", value):
            raise ValueError(f"expected a host name or IP address, got {value!r}")
        return value.strip("[]") if value is not None else None

    @property
    def name(self) -> str:
        """How the host is named in messages and records: its target."""
        return self.target


Host = Annotated[HostSpec, BeforeValidator(_host_value)]


class SshSpec(Model):
    identity: str | None = None
    """The private key to log in with (`ssh -i`); default: OpenSSH's own choice."""
    known_hosts: str | None = None
    """A known_hosts file of the hosts' keys (`UserKnownHostsFile`); default: OpenSSH's."""
    config: str | None = None
    """An ssh_config file (`ssh -F`): aliases, `ProxyJump`, `User`, honoured as OpenSSH does."""
    jump: str | None = None
    """A bastion to go through (`ssh -J`)."""
    connect_timeout: Duration = 5.0
    """How long connecting to a host may take before it counts as unreachable."""
    max_parallel: Annotated[int, Field(ge=1, le=256)] = 16
    """Hosts worked on at once (copies, starts, stops)."""


def _count_or_percent(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a count such as 1 or a percentage such as '25%', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"expected 0 or more, got {value}")
        return value
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", value)
        if match and float(match[1]) <= 100:
            return value.strip()
        if value.strip().isdigit():
            return int(value)
    raise ValueError(f"expected a count such as 1 or a percentage such as '25%', got {value!r}")


class PlatformSpec(Model):
    kind: Literal["local", "ssh"] = "local"
    """What starts and stops instances."""
    hosts: list[Host] = Field(default_factory=list)
    """ssh: the hosts instances run on, in order (waves go through them in this order)."""
    ssh: SshSpec = SshSpec()
    """ssh: how to reach the hosts."""
    max_unreachable: Annotated[int | str, BeforeValidator(_count_or_percent)] = 0
    """ssh: hosts (count or percentage) a delivery may lose and go on without; one more rolls it back."""
    root: str = "~/.stagewise"
    """ssh: where releases, instance records and logs live on each host (`~` is the login's home)."""
    keep_releases: Annotated[int, Field(ge=2, le=1000)] = 5
    """ssh: unpacked releases kept on each host; never the stable or the candidate is pruned."""
    per_host: Annotated[int, Field(ge=1, le=1000)] | None = None
    """ssh: instances on each host; then `replicas` is this times the number of hosts."""

    @field_validator("root")
    @classmethod
    def _root(cls, value: str) -> str:
        if not value or "\n" in value or "\0" in value:
            raise ValueError(f"expected a directory path, got {value!r}")
        return value

    @model_validator(mode="after")
    def _fits_kind(self) -> PlatformSpec:
        if self.kind == "ssh":
            if not self.hosts:
                raise ValueError("kind: ssh needs hosts: a list of [user@]address[:port] or ssh_config aliases")
            targets = [h.target for h in self.hosts]
            twice = sorted({t for t in targets if targets.count(t) > 1})
            if twice:
                raise ValueError(f"a host is listed more than once: {', '.join(twice)}")
        elif self.hosts or self.per_host is not None:
            raise ValueError("hosts and perHost are for kind: ssh")
        return self


def unreachable_limit(platform: PlatformSpec) -> int:
    """How many hosts may be unreachable while a delivery goes on."""
    value = platform.max_unreachable
    if isinstance(value, str):
        return math.floor(len(platform.hosts) * float(value.rstrip("%").strip()) / 100)
    return value


def too_many_unreachable(platform: PlatformSpec, unreachable: dict[str, str]) -> str | None:
    """Why the delivery must roll back for its unreachable hosts, or None while it may go on."""
    limit = unreachable_limit(platform)
    if len(unreachable) <= limit:
        return None
    lost = "; ".join(f"{host}: {why}" for host, why in sorted(unreachable.items()))
    return (f"{len(unreachable)} of {len(platform.hosts)} host(s) unreachable, more than maxUnreachable "
            f"{platform.max_unreachable} allows ({lost})")


def host_quotas(platform: PlatformSpec, replicas: int) -> list[int]:
    """Instances per host, in host order, when `replicas` are spread evenly (the first hosts take the rest)."""
    count = len(platform.hosts)
    return [replicas // count + (1 if i < replicas % count else 0) for i in range(count)]
