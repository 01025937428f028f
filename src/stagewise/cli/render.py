"""Rich renderings of what the server reports: status panels and history tables."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

PHASE_STYLE = {
    "Succeeded": "bold green", "RolledBack": "bold yellow", "Failed": "bold red",
    "Aborting": "yellow", "Paused": "cyan", "Waiting": "bold cyan", "Progressing": "blue", "Promoting": "magenta",
    "Pending": "dim",
}


def phase_text(phase: str | None) -> Text:
    return Text(phase or "-", style=PHASE_STYLE.get(phase or "", ""))


def status_panel(s: dict[str, Any]) -> RenderableType:
    d = s.get("delivery")
    head = Table.grid(padding=(0, 2))
    head.add_row("service", Text(s["service"], style="bold"), "listen", s["listen"])
    head.add_row("stable", s.get("stable") or "-", "strategy", s["strategy"])
    if s.get("holder"):
        head.add_row("held by", str(s["holder"]), "epoch", str(s.get("epoch")))
    parts: list[RenderableType] = [head]
    if d:
        line = Text.assemble(
            ("delivery ", "dim"), (f"#{d['id']} ", "bold"), (f"{d['from'] or '-'} → {d['to']} ", ""),
            (f"{d['strategy']} ", "dim"), phase_text(d["phase"]),
            (f"  step {d['step']}/{d['steps']}", ""),
        )
        parts.append(line)
        if d.get("abort_reason"):
            parts.append(Text(f"abort: {d['abort_reason']}", style="yellow"))
        parts += gate_lines(d)
        if d.get("message") and d["phase"] in ("Succeeded", "RolledBack", "Failed"):
            parts.append(Text(d["message"], style="dim"))
        weights = Text("traffic ")
        for release, w in sorted(d["weights"].items()):
            weights.append(f"{release} {w}%  ", style="bold" if release == d["to"] else "")
        parts.append(weights)
        steps = Table(box=None, show_header=False, padding=(0, 1))
        for step in d["plan"]:
            mark = {"done": "✓", "current": "▶", "pending": " "}[step["state"]]
            style = {"done": "dim", "current": "bold", "pending": ""}[step["state"]]
            steps.add_row(mark, str(step["index"]), Text(step["title"], style=style))
        parts.append(Panel(steps, title="rollback plan" if d["rolling_back"] else "plan", expand=False))
        for run in d["analysis"]:
            parts.append(Text.assemble((f"analysis {run['run']}: ", "dim"),
                                       phase_text_verdict(run["outcome"]), f"  {run['message']}"))
    parts += sink_lines(s.get("sinks") or [])
    events = s.get("events") or []
    if events:
        ev = Table(box=None, show_header=False, padding=(0, 1))
        for e in events[-8:]:
            ev.add_row(time.strftime("%H:%M:%S", time.localtime(e["at"])), e["kind"], e["message"])
        parts.append(Panel(ev, title="events", expand=False))
    return Panel(Group(*parts), title=f"stagewise · {s['service']}", expand=False)


def gate_lines(d: dict[str, Any]) -> list[Text]:
    """What a delivery waits for, who approved it, and a freeze override, one line each."""
    lines = [Text(f"waiting: {hold['message']}", style="cyan") for hold in (d.get("waiting") or {}).get("holds", [])]
    lines += [Text(f"approved by {a['by']} ({a['gate']})" + (f": {a['comment']}" if a["comment"] else ""), style="dim")
              for a in d.get("approvals", [])]
    if d.get("freeze_override"):
        lines.append(Text(f"freeze overridden: {d['freeze_override']}", style="yellow"))
    return lines


def sink_lines(sinks: list[dict[str, Any]]) -> list[Text]:
    """A line per notification sink that keeps failing."""
    return [Text(f"sink {s['sink']} ({s['kind']}) failing: {s['pending']} not sent, {s['attempts']} tries, last "
                 f"error: {s['last_error'] or '-'}" + (f"; {s['given_up']} given up" if s["given_up"] else ""),
                 style="bold red") for s in sinks if s["failing"]]


def phase_text_verdict(outcome: str) -> Text:
    style = {"Successful": "green", "Failed": "red", "NoData": "yellow", "Running": "blue"}.get(outcome, "")
    return Text(outcome, style=style)


def services_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="services")
    for col in ("service", "stable", "strategy", "delivery", "phase", "step", "traffic"):
        table.add_column(col)
    for s in rows:
        d = s.get("delivery") or {}
        table.add_row(
            s["service"], s.get("stable") or "-", s["strategy"],
            f"#{d['id']} {d['from'] or '-'} → {d['to']}" if d else "-",
            phase_text(d.get("phase")), f"{d['step']}/{d['steps']}" if d else "-",
            " ".join(f"{r} {w}%" for r, w in sorted(d.get("weights", {}).items())),
        )
    return table


def history_table(service: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"history · {service}")
    for col in ("#", "from → to", "strategy", "phase", "started", "took", "note"):
        table.add_column(col)
    for d in rows:
        took = f"{(d['finished_at'] or time.time()) - d['created_at']:.1f}s"
        note = d.get("abort_reason") or d.get("message") or ""
        table.add_row(str(d["id"]), f"{d['from'] or '-'} → {d['to']}" + (" (undo)" if d["undo"] else ""),
                      d["strategy"], phase_text(d["phase"]),
                      time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d["created_at"])), took, note)
    return table


def deletion_text(d: dict[str, Any]) -> str:
    """What `delete` did, in words: the processes it stopped or left running, by pid and address."""
    router = d["router"]
    addresses = ", ".join(router["addresses"])
    if router["external"]:
        where = f"router {router['kind']} (external: only this service's servers) for {addresses}"
    else:
        pids = f" (pid {', '.join(map(str, router['pids']))})" if router["pids"] else " (was not running)"
        where = f"router {router['kind']} on {addresses}{pids}"
    instances = [f"  {i['id']}: pid {i['pid']} on {i['address']}" for i in d["instances"]] or ["  (no instance)"]
    head = (f"{d['service']}: forgotten; still running, managed by no one:" if d["kept_running"]
            else f"{d['service']}: deleted; stopped:")
    ended = [f"delivery #{d['ended_delivery']} ended Failed where it stood"] if d.get("ended_delivery") else []
    return "\n".join([head, f"  {where}", *instances, *ended,
                      f"its deliveries and events stay: stagewise history {d['service']}"])
