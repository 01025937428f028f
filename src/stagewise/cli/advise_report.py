"""`stagewise compare`'s findings: what each strategy is best for, the guide's words held
against the numbers, and the HTML report with its charts.

The words come from the advisor (`advisor.WORDS`), the numbers from the
simulator (`sim.compare`); this module is where the two meet, so that neither
package needs the other. Every finding is computed from the measured
medians: when the words and the numbers disagree, the report says so, and
why, with the numbers that show it.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from typing import Any

from stagewise.advisor import WORDS
from stagewise.sim.compare import Comparison, Summary

COLUMNS: list[tuple[str, str]] = [
    ("bad_requests", "bad requests"),
    ("bad_users", "users exposed"),
    ("detect_s", "decided after (s)"),
    ("rollback_s", "rollback (s)"),
    ("recovery_s", "recovered (s)"),
    ("rollout_s", "full rollout (s)"),
    ("peak_extra", "peak extra instances"),
    ("steps", "steps"),
    ("parts", "moving parts"),
    ("downtime_good_s", "downtime good (s)"),
    ("downtime_bad_s", "downtime bad (s)"),
]


@dataclass
class Finding:
    words: str
    """What the guide says, as a claim about the numbers."""
    holds: bool
    measured: str
    why: str = ""
    """When the numbers disagree (or only tie): the reason, in the terms of the simulated service."""


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.1f}"


def best_for(comparison: Comparison) -> dict[str, list[str]]:
    """Per strategy, the measured columns it is best at (not counting columns where all tie)."""
    labels = {
        "bad_requests": ("fewest bad requests", min), "bad_users": ("fewest users exposed", min),
        "detect_s": ("fastest decision", min), "rollback_s": ("fastest switch back", min),
        "rollout_s": ("fastest rollout", min), "peak_extra": ("least extra capacity", min),
        "parts": ("fewest moving parts", min), "downtime_good_s": ("no downtime", min),
    }
    out: dict[str, list[str]] = {name: [] for name in comparison.summaries}
    for column, (label, pick) in labels.items():
        values = {n: s.numbers.get(column) for n, s in comparison.summaries.items()}
        present = {n: v for n, v in values.items() if v is not None}
        if len(set(present.values())) <= 1:
            continue
        best = pick(present.values())
        for name, value in present.items():
            if value == best:
                out[name].append(label)
    return out


def findings(comparison: Comparison) -> list[Finding]:
    """The guide's words, each checked against the measured medians."""
    s = comparison.summaries
    if not all(name in s for name in WORDS):
        return []
    m = _Medians({name: summary.numbers for name, summary in s.items()})
    return [*_risk_findings(m, comparison), *_rollback_findings(m, comparison), *_cost_findings(m, s)]


class _Medians:
    """The strategies' medians, by column, and the comparisons the findings make of them."""

    def __init__(self, numbers: dict[str, dict[str, Any]]) -> None:
        self.n = numbers

    def v(self, name: str, column: str) -> float:
        value = self.n[name].get(column)
        return float(value) if value is not None else float("inf")

    def most(self, column: str, name: str) -> bool:
        return self.v(name, column) >= max(self.v(o, column) for o in self.n)

    def least(self, column: str, name: str) -> bool:
        return self.v(name, column) <= min(self.v(o, column) for o in self.n)

    def ties(self, column: str, name: str) -> list[str]:
        return [o for o in self.n if o != name and self.v(o, column) == self.v(name, column)]

    def row(self, column: str) -> str:
        return ", ".join(f"{name} {fmt(self.n[name].get(column))}" for name in self.n)


def _risk_findings(m: _Medians, comparison: Comparison) -> list[Finding]:
    """Risk: full high, blue-green very low; canary exposes the fewest requests."""
    s, testers = comparison.summaries, comparison.scenario.traffic.testers.share
    out = [
        Finding(f"full: risk {WORDS['full'].risk} — it exposes the most users", m.most("bad_users", "full"),
                f"users exposed: {m.row('bad_users')}", "" if m.most("bad_users", "full") else _why_full_exposure(s)),
        Finding(f"blue-green: risk {WORDS['blue-green'].risk} — it exposes the fewest users",
                m.least("bad_users", "blue-green"), f"users exposed: {m.row('bad_users')}",
                "" if m.least("bad_users", "blue-green") else _why_preview(s, testers)),
    ]
    holds = m.least("bad_requests", "canary")
    why = ""
    if not holds:
        winners = [o for o in m.n if m.v(o, "bad_requests") < m.v("canary", "bad_requests")]
        why = "; ".join(_why_fewer_requests(o, s, testers) for o in winners)
    out.append(Finding("canary exposes the fewest requests before rollback", holds,
                       f"bad requests: {m.row('bad_requests')}", why))
    return out


def _rollback_findings(m: _Medians, comparison: Comparison) -> list[Finding]:
    """Rollback speed: blue-green instant, canary fast, phased medium, full slow."""
    s, sc = comparison.summaries, comparison.scenario
    holds = m.least("rollback_s", "blue-green")
    tied = m.ties("rollback_s", "blue-green")
    out = [Finding(f"blue-green: rollback {WORDS['blue-green'].rollback} — it switches back fastest", holds,
                   f"rollback, decision → no traffic on the bad release: {m.row('rollback_s')}",
                   (f"tied with {', '.join(tied)}: each stops traffic to the bad release with one route-table "
                    "change in the same controller pass (the simulator's tick is "
                    f"{fmt(sc.tick)}s); blue-green's switch back differs only after promotion, while the "
                    "old slot is still warm") if tied else "")]
    holds = m.most("rollback_s", "full") and not m.ties("rollback_s", "full")
    out.append(Finding(f"full: rollback {WORDS['full'].rollback} — it rolls back slowest", holds,
                       f"rollback: {m.row('rollback_s')}; decided after: {m.row('detect_s')}; "
                       f"recovered: {m.row('recovery_s')}",
                       "" if holds else _why_full_rollback(s["full"], sc.human.delay)))
    holds = m.v("phased", "rollback_s") > m.v("canary", "rollback_s")
    out.append(Finding(f"phased: rollback {WORDS['phased'].rollback}, slower than canary's "
                       f"{WORDS['canary'].rollback}", holds, f"rollback: {m.row('rollback_s')}; "
                       f"recovered: {m.row('recovery_s')}", "" if holds else _why_phased_rollback(s["phased"])))
    return out


def _cost_findings(m: _Medians, s: dict[str, Summary]) -> list[Finding]:
    """Capacity and complexity."""
    holds = m.most("peak_extra", "blue-green")
    tied = m.ties("peak_extra", "blue-green")
    out = [Finding("blue-green needs the most extra capacity (duplicate infrastructure)", holds,
                   f"peak extra instances: {m.row('peak_extra')}",
                   (f"tied with {', '.join(tied)}: stagewise's canary promotion starts the candidate at full "
                    "size beside the stable release before the switch, so for a good release a canary "
                    "peaks at a second full set too — briefly, for one start-up") if tied else "")]
    holds = m.least("parts", "full") and m.least("steps", "full")
    out.append(Finding(f"full: complexity {WORDS['full'].complexity} — the fewest steps and moving parts", holds,
                       f"steps: {m.row('steps')}; moving parts: {m.row('parts')}"))
    holds = m.v("phased", "parts") < min(m.v("canary", "parts"), m.v("blue-green", "parts"))
    out.append(Finding(f"phased: complexity {WORDS['phased'].complexity}, below canary's and blue-green's "
                       f"{WORDS['canary'].complexity}", holds,
                       f"moving parts: {m.row('parts')}; steps: {m.row('steps')}",
                       "" if holds else _why_complexity(s)))
    return out


def _why_full_exposure(s: dict[str, Summary]) -> str:
    worst = max(s, key=lambda name: s[name].numbers.get("bad_users") or 0)
    return (f"{worst} exposed more users than full: its bad release was not caught by analysis "
            f"({s[worst].deciders()}) and stayed until a person acted")


def _why_preview(s: dict[str, Summary], share: float) -> str:
    return (f"blue-green's pre-promotion analysis sees only the preview route ({share:.0%} of requests, "
            "from testers); with that little traffic it decides more slowly, and a bad release that "
            f"passes it reaches every user at the switch (bad runs decided by: {s['blue-green'].deciders()})")


def _why_fewer_requests(name: str, s: dict[str, Summary], share: float) -> str:
    if name == "blue-green":
        return (f"blue-green exposed fewer requests: its pre-promotion analysis judged the preview slot, which only "
                f"testers reach ({share:.0%} of requests); the bad release was caught there before any regular "
                "user met it")
    if name == "phased":
        return ("phased exposed fewer requests: its first wave's share of the traffic was caught as quickly "
                "as the canary's first weight")
    return f"{name} exposed fewer requests"


def _why_full_rollback(full: Summary, delay: float) -> str:
    n = full.numbers
    return (f"once decided, full stops the bad release at once ({fmt(n['rollback_s'])}s): its rollback removes the "
            "bad instances first, then starts the stable ones. What is slow about full is everything around it: "
            f"no analysis decides, so a person does, {fmt(n['detect_s'])}s after the first bad request (the alert, "
            f"then {fmt(delay)}s to act); and users find no instance at all for {fmt(n['downtime_bad_s'])}s while "
            f"the stable release starts again (recovered after {fmt(n['recovery_s'])}s)")


def _why_phased_rollback(phased: Summary) -> str:
    n = phased.numbers
    return (f"the bad release was caught in phased's first wave, whose one instance leaves the route table as "
            f"quickly as a canary's weight goes to 0 ({fmt(n['rollback_s'])}s); the redeploy of the stable release "
            f"on it takes a start-up (recovered after {fmt(n['recovery_s'])}s), and only a bad release caught "
            "in a later wave waits for several instances to be redeployed one by one")


def _why_complexity(s: dict[str, Summary]) -> str:
    parts = "; ".join(f"{name}: {', '.join(summary.parts) or 'none'}" for name, summary in s.items())
    return (f"counted from the plans, phased needs as many moving parts as the others ({parts}) and, with "
            f"maxUnavailable 1, the most steps ({s['phased'].steps}); what makes canary and blue-green harder in "
            "practice is what must work for them — weighted routing or a preview route, and metrics trusted "
            "enough to roll back by themselves")


def as_json(comparison: Comparison, wall: float) -> dict[str, Any]:
    labels = best_for(comparison)
    return {
        "scenario": comparison.scenario.name,
        "seeds": comparison.seeds,
        "wall_seconds": round(wall, 3),
        "strategies": {
            name: {
                **{k: v for k, v in s.numbers.items()},
                "outcomes": {"good": s.outcomes("good"), "bad": s.outcomes("bad")},
                "decided_by": s.deciders(),
                "moving_parts": s.parts,
                "best_for": labels[name],
                "words": vars(WORDS[name]) if name in WORDS else None,
            }
            for name, s in comparison.summaries.items()
        },
        "findings": [vars(f) for f in findings(comparison)],
    }


def html_report(comparison: Comparison, wall: float) -> str:
    """A self-contained HTML page: the table, the findings and one chart per strategy."""
    from stagewise.cli.advise_charts import strategy_chart

    sc = comparison.scenario
    labels = best_for(comparison)
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in COLUMNS)
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th>"
        + "".join(f"<td>{fmt(s.numbers.get(key))}</td>" for key, _ in COLUMNS)
        + f"<td>{html.escape(', '.join(labels[name]) or '-')}</td></tr>"
        for name, s in comparison.summaries.items()
    )
    items = "".join(
        f"<li class={'holds' if f.holds else 'differs'}><b>{'holds' if f.holds else 'disagrees'}:</b> "
        f"{html.escape(f.words)}<br><small>{html.escape(f.measured)}</small>"
        + (f"<br>{html.escape(f.why)}" if f.why else "") + "</li>"
        for f in findings(comparison)
    )
    charts = "".join(
        f"<h3>{html.escape(name)}</h3><img alt='{html.escape(name)}: traffic share and errors over time' "
        f"src='data:image/png;base64,{_png(strategy_chart(name, s))}'>"
        for name, s in comparison.summaries.items()
    )
    h = sc.human
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>stagewise compare: {html.escape(sc.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}.holds{{color:#225522}}.differs{{color:#992222}}
li{{margin-bottom:.6em}}</style></head><body>
<h1>stagewise compare: {html.escape(sc.name)}</h1>
<p>{html.escape(sc.description)}</p>
<p>{comparison.seeds} seeds per strategy and release, {wall:.1f}s of wall time. Each figure is the median over
the seeds; extra capacity is the largest seen. Fleet {sc.fleet.replicas} instances starting in
{fmt(sc.fleet.startup)}s; {fmt(sc.traffic.rate)} requests/s from {sc.traffic.users:,} users.
Bad requests and users: requests and distinct users that reached the bad release before it was gone.
Rollback: from the decision to roll back (the analysis verdict, or a person's decision) to no traffic on the
bad release. Where no analysis decides, a person does: an alert fires when
{h.alert_error_rate:.1%} of requests fail over {fmt(h.alert_window)}s, and someone acts {fmt(h.delay)}s later
if it still fires — aborting the delivery, or undoing a promoted release with a recreate.</p>
<table><tr><th>strategy</th>{head}<th>best for (measured)</th></tr>{rows}</table>
<h2>The usual words, against the numbers</h2><ul>{items}</ul>
<h2>Traffic share and errors over time (seed 0)</h2>{charts}
</body></html>
"""


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
