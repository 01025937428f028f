"""command: run a program; exit status 0 passes, anything else fails (Argo's Job metric).

For checks that are code: a smoke test, a query against the candidate's
database, a script that already exists. The argv (`args`) may name
{{service}}, {{release}}, {{baseline}} or {{candidate}}; it runs without a
shell, with STAGEWISE_SERVICE, STAGEWISE_BASELINE and STAGEWISE_CANDIDATE in its
environment, killed at `latencyLimit` (default 60 s). Its value is the
candidate's — 0 passed, 1 failed — and the tail of its output is kept as
evidence, so the status page says why it failed. A program that cannot be
started at all is a provider error (the spec is wrong), not a failed check.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

from stagewise.analysis.providers import Measurement, Target, fill, not_mine
from stagewise.core.spec import AnalysisTemplate, CommandTemplate
from stagewise.errors import ProviderError

DEFAULT_TIMEOUT = 60.0
OUTPUT_KEPT = 2000
"""Characters of output kept as evidence (the end, where the error usually is)."""


class CommandProvider:
    """Implements `Provider` for `provider: command`."""

    async def measure(self, *, template: AnalysisTemplate, target: Target) -> Measurement:
        if not isinstance(template, CommandTemplate):
            raise not_mine("command", template)
        argv = [fill(a, target=target, release=target.candidate) for a in template.args]
        timeout = template.latency_limit or DEFAULT_TIMEOUT
        env = dict(os.environ, STAGEWISE_SERVICE=target.service, STAGEWISE_BASELINE=target.baseline,
                   STAGEWISE_CANDIDATE=target.candidate)
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True,
            )
        except OSError as exc:
            raise ProviderError(f"cannot run {argv[0]!r}: {exc.strerror or exc}", delay=60.0) from exc
        timed_out = False
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout)
        except TimeoutError:
            timed_out = True
            output = await _kill(proc)
        except asyncio.CancelledError:
            # the run ended (or the controller stops): leave no program behind, no pipe open
            await asyncio.shield(_kill(proc))
            raise
        code = proc.returncode
        passed = code == 0 and not timed_out
        evidence: dict[str, object] = {
            "provider": "command", "argv": argv, "exit_status": code, "timed_out": timed_out,
            "seconds": round(time.monotonic() - started, 3),
            "output": output.decode("utf-8", "replace")[-OUTPUT_KEPT:],
        }
        return Measurement(values=(None, 0.0 if passed else 1.0), evidence=evidence)


async def _kill(proc: asyncio.subprocess.Process) -> bytes:
    """Kill the program and everything it started (its own session); what it wrote until then."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 9)
    output, _ = await proc.communicate()
    return output
