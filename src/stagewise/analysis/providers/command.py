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

import os

from stagewise.analysis.providers import Measurement, Target, fill, not_mine
from stagewise.basics import programs
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
        try:
            ended = await programs.run(argv, timeout=timeout, env=env)
        except OSError as exc:
            raise ProviderError(f"cannot run {argv[0]!r}: {exc.strerror or exc}", delay=60.0) from exc
        passed = ended.code == 0 and not ended.timed_out
        evidence: dict[str, object] = {
            "provider": "command", "argv": argv, "exit_status": ended.code, "timed_out": ended.timed_out,
            "seconds": round(ended.seconds, 3),
            "output": ended.output.decode("utf-8", "replace")[-OUTPUT_KEPT:],
        }
        return Measurement(values=(None, 0.0 if passed else 1.0), evidence=evidence)
