"""The exceptions stagewise raises, in one tree.

    StagewiseError
    ├── PermanentError              retrying the same thing gives the same failure
    │   ├── SpecError               a spec file is malformed or invalid (file:line:column)
    │   ├── NotFoundError           a service or delivery that does not exist
    │   │   └── ServiceDeletedError the service was deleted; its history stays readable
    │   ├── ConflictError           a verb that does not fit the delivery's phase
    │   │   └── PreflightError      a host fails a check a delivery needs (ssh: hosts check)
    │   ├── ForbiddenError          the caller's role or name may not do this (an approver list, a viewer token)
    │   ├── TokenNeededError        a read without a valid token where reads need one (HTTP 401)
    │   ├── UnknownDriverError      a router/platform/judge/provider name with no backend
    │   ├── PlatformRefusedError    the platform cannot run what it was given (no such program)
    │   │   ├── HostKeyError        a host's SSH key is unknown or changed: refused, never accepted blindly
    │   │   └── HostsUnavailableError  namespace test hosts cannot be made here (not root, no sshd, no ip)
    │   ├── RouterConfigError       a router refused a route table or the configuration made of it
    │   ├── SettingsError           the server's settings file is unreadable or invalid (file:line:column)
    │   ├── StoreError              the state database is unusable as it is (not a database, corrupt)
    │   │   ├── SchemaTooNewError   the state directory was written by a newer stagewise
    │   │   └── StoreNotEmptyError  `store copy` found a target that holds data already (--force replaces it)
    │   └── ReplayInputError        `stagewise analyze` was given a line that is not a request or sample (says which)
    ├── TemporaryError(delay=)      worth retrying after `delay` seconds
    │   ├── RouterError             the data plane could not be reached or refused a table
    │   │   └── HaproxyCommandError HAProxy answered a Runtime API command with an error
    │   ├── PlatformError           an instance could not be started, probed or stopped
    │   │   └── HostUnreachableError  a host did not answer over SSH (its own kind: never a failed release)
    │   ├── ProviderError           a metric provider could not measure
    │   ├── NotifyError             a sink did not take a notification (the sender tries again later)
    │   ├── StoreBusyError          the state database is locked, or its disk full or failing
    │   ├── StoreUnreachableError   the database server cannot be reached, or the connection to it was lost
    │   ├── LeaseLostError          a write for a service whose lease this controller no longer holds at its epoch
    │   └── ServerUnreachableError  no stagewise server answers for a state directory (CLI exit code 3)
    ├── ServerRefusedError(status)  the server answered a CLI request with an HTTP error: its status tells
    └── ProxyError                  raised and handled inside the builtin router's process, never beyond it
        ├── BadMessageError(status) a message the proxy cannot handle; `status` is what the client is told
        ├── ListenerError           a listener of a route table could not be bound: the table is refused
        ├── UpstreamSilentError     the upstream closed or reset the connection before any response byte
        ├── UpstreamBrokenError     the upstream failed while answering, or could not be reached again
        └── ClientGoneError         the client went away, or sent a malformed body, mid-request

Drivers translate third-party exceptions into these at their boundary
(`raise RouterError(...) from exc`), so the controller only ever handles this tree:
it retries a TemporaryError after its `delay`, and any other error with capped
exponential backoff, reporting each failure once (controller/retries.py).
The command line turns any of them into a message and an exit code, never a
traceback. The builtin router's `ProxyError`s are its own control flow: each is
answered on the connection where it happened (a 400, a 502, a closed socket).

A few private signals stay beside the code that raises and catches them in the
same module (the spec reader's alias-bomb stop, the sample service's and the
load generator's, which must import nothing of stagewise): they never leave it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class StagewiseError(Exception):
    """Root of every error stagewise raises on purpose."""


class PermanentError(StagewiseError):
    """Retrying the same operation will fail the same way."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where it is, what is wrong, what would be right."""

    file: str
    line: int
    column: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class SpecError(PermanentError):
    """A spec could not be read or validated; `problems` says each thing wrong."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class NotFoundError(PermanentError):
    """The named service or delivery does not exist."""


class ServiceDeletedError(NotFoundError):
    """The service was deleted: it serves nothing any more, and its deliveries and events stay readable."""


class ConflictError(PermanentError):
    """The verb does not fit the current phase (promote a finished delivery, ...)."""


class ForbiddenError(PermanentError):
    """The caller may not do this: their token's role is too small, or they are not among a gate's approvers."""


class TokenNeededError(PermanentError):
    """A read came without a valid token on a server whose reads need one (HTTP 401; the dashboard shows its
    token page)."""


class UnknownDriverError(PermanentError, ValueError):
    """A backend name that is not registered; the message lists the valid names."""

    def __init__(self, kind: str, name: str, choices: list[str]) -> None:
        self.kind, self.name, self.choices = kind, name, choices
        super().__init__(f"unknown {kind} {name!r}; expected one of: {', '.join(sorted(choices))}")


class PlatformRefusedError(PermanentError):
    """The platform cannot do what it was asked as given: a program that does not exist or is not
    executable, a service name that cannot name a directory. Trying again only helps once that changes."""


class PreflightError(ConflictError):
    """A delivery was refused before its first instance started: a host fails a check it needs (unreachable,
    host key unknown, program missing, no disk, root not writable, clock skew); the message names each."""


class HostKeyError(PlatformRefusedError):
    """A host's SSH key is not in the known_hosts file, or differs from it: the connection is refused until a
    person verifies the key and adds it."""

    def __init__(self, host: str, message: str) -> None:
        self.host = host
        super().__init__(message)


class HostsUnavailableError(PlatformRefusedError):
    """Namespace test hosts (`stagewise.testing.hosts`) cannot be made here: not root, no sshd, no ip."""


class RouterConfigError(PermanentError):
    """A router refused a route table, or the configuration made of it (`nginx -t`, `haproxy -c`, a value
    the balancer cannot express): the same table fails the same way until it changes."""


class SettingsError(PermanentError):
    """The server's settings file cannot be read or is invalid; `problems` says each thing wrong, and where."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class StoreError(PermanentError):
    """The state database is unusable as it is: not a database, corrupt, or misused."""


class SchemaTooNewError(StoreError):
    """The state directory was written by a newer stagewise; reading it could misread it."""


class ReplayInputError(PermanentError):
    """A line given to `stagewise analyze` that is not a request (or a gauge sample) as documented; says which
    line and why."""


class StoreNotEmptyError(StoreError):
    """`stagewise store copy` was pointed at a store that holds data already; `--force` replaces it."""


class TemporaryError(StagewiseError):
    """Worth retrying after `delay` seconds."""

    def __init__(self, message: str, *, delay: float = 1.0) -> None:
        self.delay = delay
        super().__init__(message)


class RouterError(TemporaryError):
    """The router could not be reached, or refused a route table."""


class PlatformError(TemporaryError):
    """An instance could not be started, probed or stopped."""


class HostUnreachableError(PlatformError):
    """A host did not answer over SSH (no route, connection refused or timed out, the link lost)."""

    def __init__(self, host: str, message: str, *, delay: float = 1.0) -> None:
        self.host = host
        super().__init__(message, delay=delay)


class ProviderError(TemporaryError):
    """A metric provider could not take a measurement."""


class NotifyError(TemporaryError):
    """A sink did not take a notification: unreachable, an answer other than 2xx, a command that failed."""


class HaproxyCommandError(RouterError):
    """HAProxy answered a Runtime API command with an error message."""


class StoreBusyError(TemporaryError):
    """The state database is locked by another writer, or the disk is full or failing; retry."""


class StoreUnreachableError(TemporaryError):
    """The database server cannot be reached (down, restarting, refusing connections), or the connection to it
    was lost mid-transaction, which then committed nothing; retry once it is back."""


class LeaseLostError(TemporaryError):
    """A controller's write for a service was refused: the lease it wrote under is no longer its own at that
    epoch (taken over after it expired, or moved on by another server's write), so nothing of it was committed.

    `holder` and `epoch` say who holds the service now (holder "" when nobody does)."""

    def __init__(self, message: str, *, service: str, holder: str, epoch: int, delay: float = 0.0) -> None:
        self.service = service
        self.holder = holder
        self.epoch = epoch
        super().__init__(message, delay=delay)


class ServerUnreachableError(TemporaryError):
    """No stagewise server answers for a state directory (the CLI's exit code 3); says why as far as it can tell."""


class ServerRefusedError(StagewiseError):
    """The server refused a request of the command line: `status` is its HTTP status, `detail` its words,
    `body` its whole JSON answer (a spec's `problems` among them). Permanent or not, the status tells."""

    def __init__(self, status: int, detail: str, body: dict[str, Any] | None = None) -> None:
        self.status, self.detail, self.body = status, detail, body or {}
        super().__init__(detail)


class ProxyError(StagewiseError):
    """Raised and handled inside the builtin router's process; each is answered on its own connection."""


class BadMessageError(ProxyError):
    """A message that cannot be handled; `status` is what the client is told."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class ListenerError(ProxyError):
    """A listener of the table could not be bound; the table is refused (409)."""


class UpstreamSilentError(ProxyError):
    """The upstream closed or reset the connection before any response byte."""


class UpstreamBrokenError(ProxyError):
    """The upstream failed while answering, or could not be reached again."""


class ClientGoneError(ProxyError):
    """The client went away or sent a malformed body mid-request."""
