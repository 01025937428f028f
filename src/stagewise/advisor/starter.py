"""A starter Service spec for the recommended strategy, shaped by the team's inputs.

It runs the sample service bundled with stagewise, so `stagewise apply` works
on it as it is; a team replaces `run.command` with its own. Every choice that
came from an input carries a comment saying which, so the spec explains
itself. `tests/advisor` loads every variant with the spec loader: what this
writes, `stagewise validate` accepts.
"""

from __future__ import annotations

from stagewise.advisor.inputs import Inputs
from stagewise.advisor.rules import LARGE_USER_BASE
from stagewise.core.spec import StrategyName

DEFAULT_REPLICAS = 4


def starter_spec(strategy: StrategyName, inputs: Inputs, *, name: str = "my-service") -> str:
    """The YAML text of a commented Service spec delivering with `strategy`."""
    replicas = inputs.replicas or DEFAULT_REPLICAS
    metrics = inputs.metrics is not False
    body = {"full": _full, "phased": _phased, "canary": _canary, "blue-green": _blue_green}[strategy](inputs)
    analysis = _ANALYSIS if metrics else (
        "  # no live metrics (--no-metrics): no analysis gates; add templates here once metrics exist\n"
        "  analysis: {}\n")
    return (
        f"# Starter spec from `stagewise recommend`: strategy {strategy}.\n"
        "# It runs the sample service bundled with stagewise; replace run.command with your own.\n"
        "# Check it with `stagewise validate FILE`, deliver it with `stagewise apply FILE`.\n"
        + (f"# {_schema_note()}\n" if inputs.schema_change else "")
        + "apiVersion: stagewise.dev/v1alpha1\n"
        "kind: Service\n"
        "metadata:\n"
        f"  name: {name}\n"
        "spec:\n"
        "  listen: 127.0.0.1:8080\n"
        f"  replicas: {replicas}\n"
        "  release:\n"
        "    version: v1\n"
        "    run:\n"
        '      command: ["python3", "-m", "stagewise.examples.sample_service", "--port", "{port}", '
        '"--version", "v1"]\n'
        "    readiness: {http: /healthz, timeout: 30s}\n"
        "  strategy:\n"
        + body
        + analysis
        + "  progressDeadline: 10m\n"
    )


_ANALYSIS = (
    "  analysis:\n"
    "    errors: {provider: router, metric: error-rate, judge: sequential, alpha: 0.05}\n"
    "    latency: {provider: router, metric: latency, judge: sequential, alpha: 0.05, margin: 0.2}\n"
)


def _schema_note() -> str:
    return ("--schema-change: keep this release backward compatible (expand, migrate, contract): "
            "old and new code share the data during the delivery and after a rollback.")


def _full(inputs: Inputs) -> str:
    return ("    full: {}                         # recreate: stop the old release, start the new one "
            "everywhere\n")


def _phased(inputs: Inputs) -> str:
    gate = "      analysis: {templates: [errors], duration: 2m}   # each step must look healthy\n" \
        if inputs.metrics is not False else ""
    if inputs.users is not None and inputs.users >= LARGE_USER_BASE:
        return (
            "    phased:\n"
            f"      # {inputs.given('users')}: cohorts of users; a user keeps the release they got\n"
            "      cohorts:\n"
            "        key: {header: X-User-Id}     # requests without it stay on the stable release\n"
            "        steps: [1, 5, 20, 50, 100]   # percent of users on the new release\n"
            "      bake: 5m                       # time each cohort runs before the next\n"
            + gate
        )
    bake = "10m" if inputs.metrics is False else "2m"
    return (
        "    phased:\n"
        "      waves: [1, 25%, 100%]          # one instance, then a quarter, then the rest\n"
        "      maxUnavailable: 1              # instances out of service at once\n"
        "      maxFailPercent: 0              # any failed instance stops the delivery\n"
        f"      bake: {bake}                       # time each wave runs before the next"
        + (" (no metrics: a person watches)\n" if inputs.metrics is False else "\n")
        + gate
    )


def _canary(inputs: Inputs) -> str:
    careful = inputs.risk_tolerance == "low" or inputs.user_impact == "high"
    first, looks = (5, "5m") if careful else (10, "2m")
    why = f"  # {inputs.given('risk_tolerance')}, {inputs.given('user_impact')}" if careful else ""
    if inputs.metrics is False:
        return (
            "    canary:\n"
            "      # no live metrics (--no-metrics): each step waits for `stagewise promote`\n"
            "      steps:\n"
            f"        - setWeight: {first}{why}\n"
            "        - pause: {}\n"
            "        - setWeight: 50\n"
            "        - pause: {}\n"
        )
    return (
        "    canary:\n"
        "      steps:\n"
        f"        - setWeight: {first}{why}\n"
        f"        - analysis: {{templates: [errors, latency], duration: {looks}}}\n"
        "        - setWeight: 25\n"
        f"        - analysis: {{templates: [errors, latency], duration: {looks}}}\n"
        "        - setWeight: 50\n"
        f"        - analysis: {{templates: [errors, latency], duration: {looks}}}\n"
        "      analysis: {templates: [errors], startingStep: 0}   # watches every step until promotion\n"
    )


def _blue_green(inputs: Inputs) -> str:
    warm = "30m" if inputs.rollback == "low" else "10m"
    lines = [
        "    blueGreen:\n",
        '      preview: {header: {X-Preview: "1"}}   # testers reach the new slot with this header\n',
    ]
    if inputs.metrics is not False:
        lines += [
            "      prePromotionAnalysis: {templates: [errors, latency], duration: 5m}\n",
            "      autoPromotion: {after: 5m}            # switch by itself once the analysis passed\n",
        ]
    else:
        lines.append("      # no live metrics (--no-metrics): validate the preview by hand, then "
                     "`stagewise promote`\n")
    lines.append(f"      scaleDownDelay: {warm}                # the old slot stays warm: until then a rollback"
                 " is a switch back"
                 + (f" ({inputs.given('rollback')})\n" if inputs.rollback == "low" else "\n"))
    return "".join(lines)
