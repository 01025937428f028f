"""Which strategy fits: scores from the team's inputs, each point with its reason.

Every strategy starts at 50. Each input that matters moves a strategy's
score up or down, and says why in a sentence that names the input — so the
ranking can be argued with. Two facts rule a strategy out instead of
weakening it: without spare capacity blue-green cannot run its second slot,
and a zero-downtime requirement excludes full, which stops every instance
before starting the new ones. Missing metrics only weaken canary (a canary
nobody measures is a slow manual rollout, but still a small one).

The weights are deliberate and few; they encode the usual guidance (the
table in docs/architecture.md and `words`, from the delivery-strategies guide) and what stagewise's
own planner does — a canary's promotion, for one, briefly runs the candidate
at full size beside the stable release.

Scores can tie (they are capped at 100). A tie is never left to the order of
a list: the team's risk tolerance decides it, by the guide's table (`WORDS`)
— with a low or medium tolerance the strategy of lower risk wins, with a
high one the simpler strategy; if they are alike there too, the faster
rollback. The recommendation says so when a tie decided it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from stagewise.advisor.inputs import Inputs
from stagewise.advisor.words import WORDS
from stagewise.core.spec import StrategyName

STRATEGIES: tuple[StrategyName, ...] = ("full", "phased", "canary", "blue-green")
BASE = 50
LARGE_USER_BASE = 100_000
SMALL_USER_BASE = 1_000

SCHEMA_ADVICE = (
    "--schema-change: keep every release backward compatible, whatever the strategy — "
    "old and new code meet the same data during a delivery and again after a rollback. "
    "Expand (add the new columns or tables; write both shapes), migrate (backfill; move reads "
    "to the new shape in a later release), contract (drop the old shape only once no release "
    "that needs it can come back)."
)


@dataclass
class Ranked:
    strategy: StrategyName
    score: int = BASE
    reasons: list[str] = field(default_factory=list)
    ruled_out: bool = False

    def add(self, points: int, why: str) -> None:
        self.score += points
        self.reasons.append(f"{points:+d} {why}" if points else why)

    def rule_out(self, why: str) -> None:
        self.ruled_out = True
        self.reasons.insert(0, f"ruled out: {why}")


RISK_ORDER = ("very low", "low", "high")
COMPLEXITY_ORDER = ("low", "medium", "high")
ROLLBACK_ORDER = ("instant", "fast", "medium", "slow")


@dataclass
class Tie:
    """Strategies that scored the same at the top of the ranking, and what put one first."""

    strategies: list[StrategyName]
    """Tied strategies, in the order the rule puts them (the first is recommended)."""
    score: int
    decided_by: str
    """The input that decides the tie, as typed: `--risk-tolerance low`."""
    rule: str
    """The rule, in words, with the guide's words for each tied strategy."""

    def __str__(self) -> str:
        return f"{' and '.join(self.strategies)} tie at {self.score}; {self.rule}"


@dataclass
class Recommendation:
    recommendation: StrategyName
    ranking: list[Ranked]
    advice: list[str]
    """Advice that holds whatever the strategy (schema changes)."""
    tie: Tie | None = None
    """Set when the recommended strategy tied with another one."""

    def as_json(self) -> dict[str, object]:
        tie = None if self.tie is None else {
            "strategies": self.tie.strategies, "score": self.tie.score, "decided_by": self.tie.decided_by,
            "rule": self.tie.rule}
        return {
            "recommendation": self.recommendation,
            "ranking": [{"strategy": r.strategy, "score": r.score, "reasons": r.reasons, "ruled_out": r.ruled_out}
                        for r in self.ranking],
            "tie": tie,
        }


def tie_order(inputs: Inputs, strategy: StrategyName) -> tuple[int, int]:
    """Where `strategy` goes among strategies of equal score: risk tolerance decides, by the guide's table."""
    words = WORDS[strategy]
    first = (COMPLEXITY_ORDER.index(words.complexity) if inputs.risk_tolerance == "high"
             else RISK_ORDER.index(words.risk))
    return first, ROLLBACK_ORDER.index(words.rollback)


def _tie(inputs: Inputs, ranking: list[Ranked]) -> Tie | None:
    top = ranking[0]
    tied = [r.strategy for r in ranking if not r.ruled_out and r.score == top.score]
    if top.ruled_out or len(tied) < 2:
        return None
    decided_by = inputs.given("risk_tolerance")
    if inputs.risk_tolerance == "high":
        first = "the simpler strategy (" + ", ".join(f"{s} {WORDS[s].complexity} complexity" for s in tied) + ")"
    else:
        first = "the strategy of lower risk (" + ", ".join(f"{s} {WORDS[s].risk} risk" for s in tied) + ")"
    rollback = ", ".join(f"{s} {WORDS[s].rollback}" for s in tied)
    rule = (f"with {decided_by} a tie goes to {first}, then to the faster rollback ({rollback}), "
            "as the guide's table has them")
    return Tie(strategies=tied, score=top.score, decided_by=decided_by, rule=rule)


def recommend(inputs: Inputs) -> Recommendation:
    """The strategies ranked for `inputs`, best first, with the reasons for and against each."""
    rank = {name: Ranked(name) for name in STRATEGIES}
    for weigh in _RULES:
        weigh(inputs, rank)
    advice = [SCHEMA_ADVICE] if inputs.schema_change else []
    for r in rank.values():
        r.score = max(0, min(100, r.score))
    ranking = sorted(rank.values(), key=lambda r: (r.ruled_out, -r.score, tie_order(inputs, r.strategy)))
    tie = _tie(inputs, ranking)
    if tie is not None:
        ranking[0].reasons.append(f"first of a tie: {tie}")
    return Recommendation(recommendation=ranking[0].strategy, ranking=ranking, advice=advice, tie=tie)


Ranks = dict[StrategyName, Ranked]
"""Each strategy's score and reasons so far, by name."""


def _weigh_risk_tolerance(inputs: Inputs, rank: Ranks) -> None:
    """The team's appetite for risk."""
    bg, canary, full, phased = rank["blue-green"], rank["canary"], rank["full"], rank["phased"]
    g = inputs.given
    if inputs.risk_tolerance == "low":
        full.add(-25, f"{g('risk_tolerance')}: full sends every user to the new release at once")
        canary.add(15, f"{g('risk_tolerance')}: canary tries a small share of requests first and takes it back "
                       "by setting the weight to 0")
        phased.add(10, f"{g('risk_tolerance')}: phased moves a wave or a cohort at a time")
        bg.add(10, f"{g('risk_tolerance')}: blue-green validates the release before any user reaches it")
    elif inputs.risk_tolerance == "medium":
        phased.add(5, f"{g('risk_tolerance')}: phased limits a bad release to the first wave or cohort")
        canary.add(5, f"{g('risk_tolerance')}: canary limits a bad release to a share of requests")
    else:
        full.add(15, f"{g('risk_tolerance')}: the simplest, cheapest strategy is acceptable")
        canary.add(-5, f"{g('risk_tolerance')}: canary's steps and analysis buy safety this team does not need")


def _weigh_user_impact(inputs: Inputs, rank: Ranks) -> None:
    """How many users a failure would hurt, and how badly."""
    bg, canary, full, phased = rank["blue-green"], rank["canary"], rank["full"], rank["phased"]
    g = inputs.given
    if inputs.user_impact == "high":
        full.add(-20, f"{g('user_impact')}: a failure would reach every user at once with full")
        canary.add(10, f"{g('user_impact')}: canary compares with the stable release on live traffic, "
                       "suited to critical systems")
        bg.add(10, f"{g('user_impact')}: blue-green switches back at once while the old slot is warm")
        phased.add(5, f"{g('user_impact')}: phased keeps most users on the stable release until a wave proves out")
    elif inputs.user_impact == "low":
        full.add(10, f"{g('user_impact')}: a brief failure costs little, so a plain recreate will do")
        canary.add(-5, f"{g('user_impact')}: the machinery of a canary is hard to justify")
        bg.add(-5, f"{g('user_impact')}: a second environment is hard to justify")


def _weigh_complexity(inputs: Inputs, rank: Ranks) -> None:
    """How complex the system is."""
    bg, canary, full, phased = rank["blue-green"], rank["canary"], rank["full"], rank["phased"]
    g = inputs.given
    if inputs.complexity == "low":
        full.add(10, f"{g('complexity')}: a small system is what full suits; few ways to fail unseen")
        canary.add(-5, f"{g('complexity')}: a canary's weights and analysis outweigh the system itself")
        bg.add(-5, f"{g('complexity')}: a second slot doubles a small system")
    elif inputs.complexity == "medium":
        phased.add(5, f"{g('complexity')}: phased adds few moving parts (waves, bake time)")
    else:
        full.add(-10, f"{g('complexity')}: a complex system fails in ways only live traffic shows; full "
                      "shows them to everyone")
        canary.add(10, f"{g('complexity')}: canary finds what tests miss on a small share of live traffic")
        bg.add(5, f"{g('complexity')}: blue-green validates a complex deployment before the switch")
        phased.add(5, f"{g('complexity')}: phased surfaces problems wave by wave")


def _weigh_rollback(inputs: Inputs, rank: Ranks) -> None:
    """How quickly the team could roll back by hand."""
    bg, canary, full, phased = rank["blue-green"], rank["canary"], rank["full"], rank["phased"]
    g = inputs.given
    if inputs.rollback == "low":
        full.add(-15, f"{g('rollback')}: full's rollback is a redeploy of the old release, with downtime")
        phased.add(-5, f"{g('rollback')}: phased rolls back by redeploying the updated instances")
        canary.add(10, f"{g('rollback')}: canary rolls back by itself, by moving the weight to 0")
        bg.add(10, f"{g('rollback')}: blue-green rolls back by switching to the warm old slot")
    elif inputs.rollback == "high":
        full.add(5, f"{g('rollback')}: the team can redeploy quickly if full goes wrong")


def _weigh_zero_downtime(inputs: Inputs, rank: Ranks) -> None:
    """Whether the service may go down during a delivery."""
    bg, canary, full, phased = rank["blue-green"], rank["canary"], rank["full"], rank["phased"]
    g = inputs.given
    if inputs.zero_downtime:
        full.rule_out(f"{g('zero_downtime')}: full stops every instance before the new ones are ready")
        bg.add(20, f"{g('zero_downtime')}: blue-green switches all traffic at once to a slot already running")
        canary.add(5, f"{g('zero_downtime')}: canary keeps the stable release at full size throughout")
        phased.add(5, f"{g('zero_downtime')}: phased takes at most maxUnavailable instances out at once")


def _weigh_spare_capacity(inputs: Inputs, rank: Ranks) -> None:
    """Whether there is room for a second set of instances."""
    bg, canary, phased = rank["blue-green"], rank["canary"], rank["phased"]
    g = inputs.given
    if inputs.spare_capacity is False:
        bg.rule_out(f"{g('spare_capacity')}: blue-green needs a second full set of instances")
        canary.add(0, f"note ({g('spare_capacity')}): a canary step needs only ceil(replicas × weight) extra "
                      "instances, but stagewise's promotion starts the candidate at full size before the "
                      "switch — plan for that brief peak")
        phased.add(5, f"{g('spare_capacity')}: phased waves replace instances in place: no extra capacity")
    elif inputs.spare_capacity:
        bg.add(10, f"{g('spare_capacity')}: there is room for blue-green's second slot")


def _weigh_metrics(inputs: Inputs, rank: Ranks) -> None:
    """Whether live metrics can judge a release."""
    bg, canary, phased = rank["blue-green"], rank["canary"], rank["phased"]
    g = inputs.given
    if inputs.metrics:
        canary.add(15, f"{g('metrics')}: live metrics let the analysis judge the canary against the stable "
                       "release serving beside it, and roll back by itself")
        phased.add(5, f"{g('metrics')}: each wave can be gated by analysis")
        bg.add(5, f"{g('metrics')}: pre-promotion analysis can check the preview slot")
    elif inputs.metrics is False:
        canary.add(-25, f"weakened: {g('metrics')} — nothing can judge the canary; it becomes a slow manual "
                        "rollout, and a bad release stays until someone notices")
        phased.add(10, f"{g('metrics')}: phased waves gate on readiness and bake time, which need no metrics")
        bg.add(-5, f"{g('metrics')}: without metrics the preview slot is validated by hand")


def _weigh_users(inputs: Inputs, rank: Ranks) -> None:
    """How many users the service has."""
    canary, full, phased = rank["canary"], rank["full"], rank["phased"]
    g = inputs.given
    if inputs.users is not None and inputs.users >= LARGE_USER_BASE:
        phased.add(15, f"{g('users')}: a large user base — phased cohorts expose a fixed share of users, "
                       "and a user keeps the release they got")
        canary.add(5, f"{g('users')}: enough traffic to judge a small canary quickly")
        full.add(-10, f"{g('users')}: a bad full release reaches all of them at once")
    elif inputs.users is not None and inputs.users < SMALL_USER_BASE:
        full.add(5, f"{g('users')}: few users: a staged rollout gains little")
        phased.add(-5, f"{g('users')}: cohorts of a few percent are a handful of people")
        canary.add(-5, f"{g('users')}: little traffic: analysis needs long to tell anything")


def _weigh_schema_change(inputs: Inputs, rank: Ranks) -> None:
    """Whether the release changes the data's schema: advice for every strategy, a cost for blue-green."""
    bg = rank["blue-green"]
    g = inputs.given
    if inputs.schema_change:
        bg.add(-5, f"{g('schema_change')}: both slots share the data: the schema must serve both, and a "
                   "switch back must find data the old release can read")
        for ranked in rank.values():
            ranked.reasons.append(SCHEMA_ADVICE)


_RULES: tuple[Callable[[Inputs, Ranks], None], ...] = (
    _weigh_risk_tolerance, _weigh_user_impact, _weigh_complexity, _weigh_rollback, _weigh_zero_downtime,
    _weigh_spare_capacity, _weigh_metrics, _weigh_users,
    _weigh_schema_change,
)
"""One rule per input: each adds to the strategies' scores and reasons what that input says."""
