"""The simulation loop: the real state machine, planner and judges on a virtual clock.

Each tick does what the controller does each pass — observe the instances
and the router's counters, ask `engine.decide` for the delivery's next state
(the very function the controller calls: it judges the analysis runs,
advances the state machine and recompiles the plan when the rollback
starts), and make the world match the desired one — and then lets one tick
of users through the route table. Only the data plane and the platform are
simulated; every decision is taken by the code that takes it in production.

Two shortcuts keep an hour of simulated delivery under a second of wall
time; they only decide *when* `decide` is called, and neither changes a
decision:

* The state machine is pure and its answer only changes when its inputs do:
  when an instance gets ready or dies, a verdict changes, a timer (pause,
  bake, progress deadline) runs out, a person acts, or its previous call
  moved. In between it would answer "no change", so `decide` is not called.
* The judges are fed (`decide(..., judge=True)`) when something can change
  their verdict: when the candidate had enough new errors to possibly push
  the error-rate e-value over its bound (they are the only events that
  raise it; see `_may_fail`), when an analysis reaches its duration, and at
  least every `MAX_QUIET` seconds. Increments are cumulative, so a judge
  that is fed less often sees the same requests in fewer, larger
  increments. Latency and non-sequential judges are fed every tick. A tick
  that feeds the judges also asks the state machine, which then answers
  "no change" unless a verdict moved.

`exact=True` turns both shortcuts off (every tick calls `decide` and feeds
the judges); `tests/sim` checks that it reaches the same outcomes.

A person is modelled too, for what no analysis decides: an error-rate alert
over all requests, and someone acting `human.delay` after it fires if it
still fires then — aborting the delivery, or undoing a promoted release by
redeploying the previous one (a recreate, the fastest redeploy).

Pure: no clock, no I/O; all randomness from one seeded `random.Random`.
"""

from __future__ import annotations

import math
import random
from collections import deque

from stagewise.analysis.judges.sequential import GRID_HIGH
from stagewise.core.delivery import AnalysisRun, Delivery, Observation, Phase, abort, progress_since
from stagewise.core.plan import World
from stagewise.core.spec import BlueGreenStrategy, FullStrategy, ReleaseSpec, ServiceSpec
from stagewise.core.stats import RouterStats
from stagewise.core.verdict import OPEN, Outcome
from stagewise.engine import decide
from stagewise.sim.result import RunResult, Sample
from stagewise.sim.scenario import Fleet as FleetModel
from stagewise.sim.scenario import Human, ReleaseBehaviour, Traffic
from stagewise.sim.traffic import Served, Users
from stagewise.sim.world import Fleet, Instance, make_world
from stagewise.strategies import compile_plan

MAX_QUIET = 600.0
"""Longest time the judges go unfed while an analysis is open."""
NO_DATA_EVERY = 5.0
"""How often a judge waiting for data (NoData) is fed."""


def simulate(
    spec: ServiceSpec,
    stable: ReleaseSpec,
    *,
    traffic: Traffic,
    fleet: FleetModel,
    behaviours: dict[str, ReleaseBehaviour],
    human: Human | None,
    seed: int,
    tick: float = 1.0,
    horizon: float = 7200.0,
    exact: bool = False,
    record: bool = False,
    strategy: str | None = None,
    count_users: bool = True,
) -> RunResult:
    """Deliver `spec`'s release over `stable` on a simulated fleet; what it measured.

    `count_users`: count the distinct users who reached the candidate (a draw per request).
    """
    run = _Run(spec, stable, traffic=traffic, fleet=fleet, behaviours=behaviours, human=human,
               seed=seed, tick=tick, exact=exact, record=record, strategy=strategy, count_users=count_users)
    return run.play(horizon)


class _Run:
    def __init__(self, spec: ServiceSpec, stable: ReleaseSpec, *, traffic: Traffic, fleet: FleetModel,
                 behaviours: dict[str, ReleaseBehaviour], human: Human | None, seed: int, tick: float,
                 exact: bool, record: bool, strategy: str | None, count_users: bool) -> None:
        self.rng = random.Random(seed)
        self.spec, self.stable, self.tick, self.exact, self.record, self.human = (
            spec, stable, tick, exact, record, human)
        self.replicas = spec.spec.replicas
        candidate = spec.spec.release.version
        self.fleet = Fleet(self.rng, startup={name: b.startup if b.startup is not None else fleet.startup
                                              for name, b in behaviours.items()},
                           jitter=fleet.startup_jitter,
                           crash_chance={name: b.crash_on_start for name, b in behaviours.items()})
        for _ in range(self.replicas):  # the stable fleet is up and serving when the delivery starts
            self.fleet.seq += 1
            self.fleet.instances.append(Instance(self.fleet.seq, stable.version, 0.0, False, ready=True))
        latency = any(t.metric == "latency" for t in spec.spec.analysis.values())
        self.users = Users(traffic, behaviours, self.rng, latency=latency,
                           tracked=candidate if count_users else None, who=random.Random(f"users-{seed}"))
        self.delivery = Delivery(service=spec.name, spec=spec, stable=stable)
        self.plan = compile_plan(spec, stable)
        self.serving = stable
        self.result = RunResult(strategy=strategy or spec.spec.strategy.name, candidate=candidate, seed=seed,
                                steps=len(self.plan.steps))
        self.preview = self._preview(spec)
        # only the sequential error-rate judge is known to need new candidate errors to fail
        self.every_tick = any(t.judge != "sequential" or t.metric != "error-rate"
                              for t in spec.spec.analysis.values())
        self.world = World(instances={stable.version: self.replicas}, stable=stable.version)
        self.routes = make_world(self.fleet, self.world, 0.0, preview=self.preview)
        self.world_version = self.fleet.version
        self.desired: World | None = None
        """The world of the engine's last decision."""
        # what the shortcuts remember (see the module docstring)
        self.moved = True
        self.acted = False
        self.last_look = 0.0
        self.errors_at_look = 0
        self.requests_at_look = (0, 0)
        self.one_sided = False
        self.seen = -1
        self.timer = 0.0
        self.refreshing = False
        self.asked_at = 0.0
        self.window: deque[tuple[int, int]] = deque(maxlen=max(1, round((human.alert_window if human else 60)
                                                                        / tick)))
        self.window_sums = (0, 0)
        self.human_due: float | None = None
        self.promoted_at: float | None = None

    # --- the loop ---------------------------------------------------------------------------

    def play(self, horizon: float) -> RunResult:
        t, dt, r = 0.0, self.tick, self.result
        while t < horizon:
            self.fleet.settle(t)
            self._person(t)
            self._control(t)
            served = self.users.flow(self.routes, t, dt)
            self._measure(t, dt, served)
            t += dt
            if self._finished(t):
                break
        r.ended_at = t
        r.outcome = self.delivery.phase.value if self.delivery.phase.terminal else "Unfinished"
        if r.undone:
            r.outcome = "Undone"
        r.serving = self.serving.version
        counter = self.users.counters.get(r.candidate)
        r.candidate_errors = counter.errors if counter else 0
        r.candidate_users = self.users.exposure.count
        return r

    def _control(self, t: float) -> None:
        d = self.delivery
        if not d.phase.terminal:
            look = self._look_due(t)
            if look or self._advance_due(t):
                self._decide(t, judge=look)
                d = self.delivery
        world = self.desired if not d.phase.terminal else None
        if world is None:
            v = self.serving.version
            world = self.world if self.world.instances == {v: self.replicas} else World(
                instances={v: self.replicas}, stable=v)
        if (world is not self.world and world != self.world) or self.fleet.version != self.world_version:
            self.routes = make_world(self.fleet, world, t, preview=self.preview)
            self.world, self.world_version = world, self.fleet.version

    def _decide(self, t: float, *, judge: bool) -> None:
        """One tick of the engine, as the controller runs it; then what the shortcuts remember of it."""
        d = self.delivery
        if self.refreshing and self.asked_at < t - self.tick:
            # the passes skipped since would each have answered "no change" and noted progress
            d.progress_at = t - self.tick
        stats = self.users.stats()
        obs = Observation(now=t, ready=self.fleet.counts(ready=True), live=self.fleet.counts(ready=False),
                          failures=dict(self.fleet.failures), stats=stats)
        decision = decide(d, self.plan, obs, judge=judge)
        moved = decision.delivery
        if judge:
            for run in moved.analysis.values():
                del run.history[:-2]  # charts are drawn from the simulator's own timeline
            self._looked(d, stats, t)
        self.plan, self.desired = decision.plan, decision.world
        self.seen = self.fleet.version
        self.asked_at = t
        self.acted = False
        self.moved = bool(decision.events) or _fingerprint(moved) != _fingerprint(d)
        # a running analysis and a timed pause count as progress on every pass: no deadline runs then
        self.refreshing = not self.moved and moved.progress_at == t
        if moved.phase is Phase.ABORTING and d.phase is not Phase.ABORTING:
            self._decided(t, moved.abort_reason or "")
        if moved.phase is Phase.SUCCEEDED and d.phase is not Phase.SUCCEEDED:
            self.serving = moved.candidate
            self.promoted_at = t
        if moved.phase.terminal and not d.phase.terminal:
            if self.result.finished_at is None:
                self.result.finished_at = t
            if moved.phase is not Phase.SUCCEEDED and moved.stable is not None:
                self.serving = moved.stable
        self.delivery = moved
        step = moved.current(self.plan)
        since = progress_since(moved, step, t)
        # while a timed pause runs no deadline runs either (core.delivery.progress_since): its end is the timer
        pausing = since == t and moved.progress_at < t
        timers = [] if self.refreshing or pausing else [since + moved.spec.spec.progress_deadline + 1e-6]
        if step is not None and step.pause and moved.ready_at is not None:
            timers.append(moved.ready_at + step.pause)
        self.timer = min(timers, default=math.inf)

    def _looked(self, d: Delivery, stats: RouterStats, t: float) -> None:
        """Note what the judges were just shown, for `_look_due`."""
        b = stats.release(d.stable.version if d.stable else "")
        c = stats.release(d.candidate.version)
        # a judge holds a one-sided increment until the other arm shows up: look again next tick
        self.one_sided = b.requests == self.requests_at_look[0] or c.requests == self.requests_at_look[1]
        self.last_look = t
        self.requests_at_look = (b.requests, c.requests)
        self.errors_at_look = c.errors

    # --- when to ask (the shortcuts) ---------------------------------------------------------

    def _look_due(self, t: float) -> bool:
        d = self.delivery
        if d.phase is Phase.ABORTING:
            return False
        open_runs = [run for run in d.analysis.values() if run.verdict.outcome in OPEN]
        if not open_runs:
            return False
        if self.exact or self.one_sided or t - self.last_look >= MAX_QUIET:
            return True
        if self.every_tick:
            return True
        counters = self.users.counters
        candidate = counters.get(d.candidate.version)
        new_errors = candidate.errors - self.errors_at_look if candidate is not None else 0
        if new_errors > 0 and candidate is not None:
            baseline = counters.get(d.stable.version if d.stable else "")
            n_c = candidate.requests - self.requests_at_look[1]
            n_b = (baseline.requests if baseline else 0) - self.requests_at_look[0]
            share = n_c / (n_b + n_c) if n_b + n_c > 0 else 1.0
            if any(self._may_fail(run, new_errors, share) for run in open_runs):
                return True
        for run in open_runs:
            if run.duration is not None and self.last_look < run.started_at + run.duration <= t:
                return True
            if run.verdict.outcome is Outcome.NO_DATA and t - self.last_look >= NO_DATA_EVERY:
                return True
        return False

    def _may_fail(self, run: AnalysisRun, new_errors: int, share: float) -> bool:
        """Whether `new_errors` more candidate errors could make the run's error-rate judge fail.

        The sequential judge's e-value is a mean of likelihood ratios, one per
        alternative ρ1 (up to GRID_HIGH·ρ0), of where the increment's errors
        fell. With the candidate taking `share` p of the increment's requests,
        one candidate error multiplies a ratio by q(ρ1)/q(ρ0) =
        (ρ1/ρ0)·(pρ0 + 1 − p)/(pρ1 + 1 − p), which is below both ρ1/ρ0 and
        1/p (for ρ0 ≥ 1); a baseline error multiplies it by at most 1. So
        while e-value × min(GRID_HIGH, 1/p)^errors stays below the bound,
        feeding the judge now cannot change its verdict.
        """
        growth = min(GRID_HIGH, 1.0 / share) ** new_errors if share > 0 else math.inf
        metrics = run.verdict.evidence.get("metrics") or []
        if not metrics:  # not judged yet: a fresh e-process stands at 1
            templates = self.delivery.spec.spec.analysis
            alpha = min((templates[n].alpha for n in run.templates if n in templates), default=0.05)
            return growth >= 1.0 / alpha
        for metric in metrics:
            evidence = metric.get("evidence") or {}
            e_value, bound = evidence.get("e_value"), evidence.get("threshold")
            if not isinstance(e_value, (int, float)) or not isinstance(bound, (int, float)):
                return True
            if e_value * growth >= bound:
                return True
        return False

    def _advance_due(self, t: float) -> bool:
        if self.exact or self.moved or self.acted or t >= self.timer:
            return True
        return self.fleet.version != self.seen

    @staticmethod
    def _outcomes(d: Delivery) -> tuple[tuple[str, Outcome], ...]:
        return tuple((k, run.verdict.outcome) for k, run in sorted(d.analysis.items()))

    # --- the person ----------------------------------------------------------------------------

    def _person(self, t: float) -> None:
        human = self.human
        if human is None or self.result.decided_at is not None:
            return
        requests, errors = self.window_sums
        firing = requests > 0 and errors / requests >= human.alert_error_rate
        if firing and self.human_due is None:
            self.human_due = t + human.delay
        if self.human_due is None or t < self.human_due:
            return
        self.human_due = None
        if not firing:
            return
        d = self.delivery
        if not d.phase.terminal and d.stable is not None:
            d, _ = abort(d, self.plan, now=t, reason=f"a person aborted: the error-rate alert fired "
                         f"(more than {human.alert_error_rate:.1%} of requests failing)")
            self.plan = compile_plan(d.spec, d.stable, abort_world=d.abort_world)
            self.delivery = d
            self.acted = True
            self._decided(t, d.abort_reason or "", by="person")
        elif d.phase is Phase.SUCCEEDED and self.serving == d.candidate and d.stable is not None:
            self._undo(t, d.stable, d.candidate)

    def _undo(self, t: float, previous: ReleaseSpec, current: ReleaseSpec) -> None:
        """`stagewise undo` with a recreate: the previous release back on every instance."""
        body = self.spec.spec.model_copy(update={"release": previous, "strategy": FullStrategy()})
        spec = self.spec.model_copy(update={"spec": body})
        self.delivery = Delivery(service=spec.name, spec=spec, stable=current, created_at=t, updated_at=t,
                                 progress_at=t, undo=True)
        self.plan = compile_plan(spec, current)
        self.acted = True
        self.result.undone = True
        self._decided(t, "a person undid the promoted release: the error-rate alert fired", by="person (undo)")

    def _decided(self, t: float, reason: str, *, by: str | None = None) -> None:
        r = self.result
        if r.decided_at is not None:
            return
        r.decided_at, r.reason = t, reason
        if by is None:
            by = ("deadline" if reason.startswith("progress deadline")
                  else "instances" if "instance(s)" in reason else "analysis")
        r.decided_by = by

    # --- measuring ------------------------------------------------------------------------------

    def _measure(self, t: float, dt: float, served: Served) -> None:
        r, routes, cand = self.result, self.routes, self.result.candidate
        k = served.by_release.get(cand, 0)
        r.requests += served.requests
        r.failed_requests += served.errors
        r.candidate_requests += k
        if k and r.first_candidate_at is None:
            r.first_candidate_at = t
        if not routes.endpoints:
            r.downtime += dt
        r.peak_extra = max(r.peak_extra, len(self.fleet.instances) - self.replicas)
        reaching = routes.reaching
        if r.full_at is None and reaching == {cand} and r.decided_at is None:
            r.full_at = t
        if r.decided_at is not None:
            if cand in reaching:
                r.gone_at = None
            elif r.gone_at is None:
                r.gone_at = t
            back = self.stable.version
            if r.recovered_at is None and reaching == {back} and routes.endpoints.get(back, 0) >= self.replicas:
                r.recovered_at = t
        n, e = self.window_sums
        if len(self.window) == self.window.maxlen:
            old_n, old_e = self.window[0]
            n, e = n - old_n, e - old_e
        self.window.append((served.requests, served.errors))
        self.window_sums = (n + served.requests, e + served.errors)
        if self.record:
            n = max(1, served.requests)
            r.timeline.append(Sample(t=t, candidate_share=k / n, error_rate=served.errors / n))

    def _finished(self, t: float) -> bool:
        if not self.delivery.phase.terminal or self.human_due is not None:
            return False
        if any(not i.ready for i in self.fleet.instances) or len(self.fleet.instances) != self.replicas:
            return False
        if self.result.decided_at is None and self.human is not None and self.promoted_at is not None:
            # a promoted release: give the alert time to fire and a person time to act
            return t >= self.promoted_at + self.human.alert_window + self.tick
        return True

    @staticmethod
    def _preview(spec: ServiceSpec) -> bool:
        strategy = spec.spec.strategy
        if not isinstance(strategy, BlueGreenStrategy):
            return True
        return bool(strategy.blue_green.preview.header or strategy.blue_green.preview.listen)


def _fingerprint(d: Delivery) -> tuple[object, ...]:
    return (d.phase, d.step, d.ready_at, d.paused, d.release_gate, d.abort_reason,
            tuple((k, run.verdict.outcome) for k, run in sorted(d.analysis.items())))

