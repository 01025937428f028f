"""When to reconcile a failing service again, and whether its failure is news.

A reconcile that fails is not simply tried again on the next tick (four
times a second), filling the log with the same line:

- a `TemporaryError` says when another try is worth it (`delay`: an HAProxy
  restarting answers within a second, a refused Prometheus query not for
  half a minute), and the service is left alone until then;
- anything else — a `PermanentError` (a configuration a router refuses, a
  program that does not exist) or a bug — fails the same way until
  something changes, so it is tried again with exponential backoff, from
  `FIRST_BACKOFF` doubling up to `MAX_BACKOFF`: a fix made outside
  stagewise (a program installed, a port freed) is still picked up within
  `MAX_BACKOFF`.

A failure is news when its message differs from the service's last one: it is
reported then, once, not on every retry. A person's verb on the service
(apply, promote, abort, undo, ...) ends the wait at once: what changed may be
the fix, and an abort must not queue behind a backoff.

Holds no clock and does no I/O: time is an argument; reporting is the
controller's job.
"""

from __future__ import annotations

from dataclasses import dataclass

from stagewise.errors import PermanentError, StagewiseError, TemporaryError

FIRST_BACKOFF = 1.0
"""Seconds before the first retry of a failure that a retry will not cure by itself."""
MAX_BACKOFF = 60.0
"""Longest wait between two retries of such a failure."""


@dataclass
class Failing:
    """A service whose last reconcile failed."""

    message: str
    """What the last failure said (a new message is news)."""
    failures: int
    """Failures in a row with this message."""
    retry_at: float
    """The service is not reconciled before this time."""
    permanent: bool
    """Retried with backoff (True), or after the error's own delay."""


def wait_after(exc: StagewiseError, failures: int) -> float:
    """Seconds to leave a service alone after its `failures`-th failure in a row, `exc`."""
    if isinstance(exc, TemporaryError) and not isinstance(exc, PermanentError):
        return max(0.0, exc.delay)
    return min(MAX_BACKOFF, FIRST_BACKOFF * 2.0 ** min(failures - 1, 32))


class Retries:
    """The failing services, and when each may be reconciled again."""

    def __init__(self) -> None:
        self._failing: dict[str, Failing] = {}

    def due(self, service: str, now: float) -> bool:
        """Whether `service` may be reconciled at `now`."""
        failing = self._failing.get(service)
        return failing is None or now >= failing.retry_at

    def failed(self, service: str, exc: StagewiseError, now: float) -> Failing | None:
        """Note that reconciling `service` failed with `exc`; the failure when it is news, else None."""
        before = self._failing.get(service)
        message = str(exc)
        same = before is not None and before.message == message
        failures = before.failures + 1 if before is not None and same else 1  # another failure starts over
        permanent = not isinstance(exc, TemporaryError) or isinstance(exc, PermanentError)
        failing = Failing(message=message, failures=failures, retry_at=now + wait_after(exc, failures),
                          permanent=permanent)
        self._failing[service] = failing
        return None if same else failing

    def succeeded(self, service: str) -> Failing | None:
        """Note that reconciling `service` succeeded; the failure it recovered from, if any."""
        return self._failing.pop(service, None)

    def wake(self, service: str) -> None:
        """Reconcile `service` on the next tick, and start its backoff over (a person acted on it)."""
        failing = self._failing.get(service)
        if failing is not None:
            failing.retry_at = float("-inf")
            failing.failures = 0

    def failing(self, service: str) -> Failing | None:
        return self._failing.get(service)

    def everyone_failing(self) -> dict[str, Failing]:
        """Every failing service, by name (a copy)."""
        return dict(self._failing)
