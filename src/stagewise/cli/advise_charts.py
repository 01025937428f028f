"""Charts for `stagewise compare --report`: traffic share and errors over time, per strategy.

matplotlib through its object API and the Agg renderer only — no pyplot, no
global state, no display — so a report renders the same in a terminal, in CI
and under `filterwarnings = error`.
"""

from __future__ import annotations

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stagewise.sim.compare import Summary
from stagewise.sim.result import RunResult


def strategy_chart(name: str, summary: Summary) -> Figure:
    """The good and the bad release of the recorded seed, side by side."""
    figure = Figure(figsize=(10, 3.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    for ax, which, runs in ((axes[0], "good release", summary.good), (axes[1], "bad release", summary.bad)):
        run = next((r for r in runs if r.timeline), None)
        ax.set_title(f"{name}: {which}" + (f" — {run.outcome}" if run else ""), fontsize=10)
        ax.set_xlabel("seconds")
        if run is None:
            continue
        _plot(ax, run)
    return figure


def _plot(ax: Axes, run: RunResult) -> None:
    t = [s.t for s in run.timeline]
    ax.plot(t, [100 * s.candidate_share for s in run.timeline], color="tab:blue", label="share on the new release")
    ax.set_ylabel("% of requests")
    ax.set_ylim(-2, 102)
    errors = ax.twinx()
    errors.plot(t, [100 * s.error_rate for s in run.timeline], color="tab:red", linewidth=0.8,
                label="failed requests")
    errors.set_ylabel("% failed", color="tab:red")
    if run.decided_at is not None:
        ax.axvline(run.decided_at, color="black", linestyle="--", linewidth=0.8, label="rollback decided")
    handles = ax.get_legend_handles_labels()[0] + errors.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=7, loc="center right")
