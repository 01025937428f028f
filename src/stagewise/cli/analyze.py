"""`stagewise analyze`: replay a recording through a judge, offline.

Each input line is one request, in time order:

    {"t": 12.5, "release": "baseline", "status": 200, "latency_ms": 31.2}

or, with `--metric value`, one sample of a gauge (one per release and scrape,
or per instance and scrape):

    {"t": 12.5, "release": "candidate", "value": 0.43}

The replay (`analysis.judges.replay`) consults the judge at the judge's own
cadence — after every line for `sequential`, once per `--interval` for
`threshold` and `mannwhitney` — and stops at the first Failed or Successful.
At the end of the input without a decision it asks the judge for the verdict
of a run that ends there: Successful when nothing was detected, NoData with
too little data. So a recording of an incident shows which judge would have
caught it, and when.

The file is read as a stream, line by line: a recording of millions of
requests takes memory for one line and the judge's state, and `--progress`
draws a bar on the terminal while it goes.

Exit 0 whatever the verdict; 2 for bad input, with the line number.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from stagewise.analysis.judges.replay import Request, Sample, replay_requests, replay_values
from stagewise.core.durations import parse_duration
from stagewise.core.spec import AnalysisTemplate, PrometheusTemplate, RouterTemplate
from stagewise.errors import ReplayInputError

EXIT_OK, EXIT_BAD_INPUT = 0, 2
ARMS = ("baseline", "candidate")
ARM_INDEX = {"baseline": 0, "candidate": 1}
FLAGGER_DEFAULTS = {"error-rate": 0.01, "latency": 500.0}
"""threshold without --max: Flagger's builtin checks (success rate ≥ 99 %, request duration ≤ 500 ms)."""
REQUEST_EXAMPLE = '{"t": 1.5, "release": "candidate", "status": 200, "latency_ms": 12.3}'
SAMPLE_EXAMPLE = '{"t": 15, "release": "candidate", "value": 0.43}'


_DECODER = json.JSONDecoder()


def _load(raw: bytes | str, number: int, example: str) -> dict[str, Any]:
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
        row, end = _DECODER.raw_decode(text)  # json.loads without its wrappers: a third of a replay's time
        if not text[end:].isspace() and end != len(text):
            row = json.loads(text)  # trailing text: let json.loads say what is wrong with it
    except json.JSONDecodeError:
        row = _load_slowly(raw, number)
    except UnicodeDecodeError as exc:
        raise ReplayInputError(f"line {number}: not UTF-8 text ({exc.reason})") from None
    if not isinstance(row, dict):
        raise ReplayInputError(f"line {number}: expected an object such as {example}")
    return row


def _load_slowly(raw: bytes | str, number: int) -> Any:
    """json.loads, for a line the fast path refused (leading blanks) or to word its error."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ReplayInputError(f"line {number}: not JSON ({exc.msg} at column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise ReplayInputError(f"line {number}: not UTF-8 text ({exc.reason})") from None


def _number(value: Any) -> bool:
    """A JSON number (never a boolean)."""
    return (type(value) is float or type(value) is int) and math.isfinite(value)


def _check_time(t: Any, number: int) -> float:
    if not _number(t):
        raise ReplayInputError(f"line {number}: t must be a number of seconds, got {t!r}")
    return float(t)


def _check_order(t: float, number: int, previous_t: float | None) -> None:
    if previous_t is not None and t < previous_t:
        raise ReplayInputError(f"line {number}: t {t:g} is before the previous line's {previous_t:g} "
                       "(lines must be in time order)")


def _check_release(release: Any, number: int) -> int:
    arm = ARM_INDEX.get(release) if isinstance(release, str) else None
    if arm is None:
        raise ReplayInputError(f'line {number}: release must be "baseline" or "candidate", got {release!r}')
    return arm


def parse_line(text: bytes | str, number: int, previous_t: float | None) -> Request:
    """(t, arm, status, latency_ms) of one request line; ReplayInputError naming the line otherwise."""
    row = _load(text, number, REQUEST_EXAMPLE)
    missing = [k for k in ("t", "release", "status", "latency_ms") if k not in row]
    if missing:
        raise ReplayInputError(f"line {number}: missing {', '.join(missing)}")
    t = _check_time(row["t"], number)
    arm = _check_release(row["release"], number)
    status, latency = row["status"], row["latency_ms"]
    if type(status) is not int or not 100 <= status <= 599:
        raise ReplayInputError(f"line {number}: status must be an HTTP status (100-599), got {status!r}")
    if not _number(latency) or latency < 0:
        raise ReplayInputError(f"line {number}: latency_ms must be a number ≥ 0, got {latency!r}")
    _check_order(t, number, previous_t)
    return t, arm, status, float(latency)


def parse_sample(text: bytes | str, number: int, previous_t: float | None) -> Sample:
    """(t, arm, value) of one gauge line; ReplayInputError naming the line otherwise."""
    row = _load(text, number, SAMPLE_EXAMPLE)
    missing = [k for k in ("t", "release", "value") if k not in row]
    if missing:
        raise ReplayInputError(f"line {number}: missing {', '.join(missing)}")
    t = _check_time(row["t"], number)
    arm = _check_release(row["release"], number)
    if not _number(row["value"]):
        raise ReplayInputError(f"line {number}: value must be a finite number, got {row['value']!r}")
    _check_order(t, number, previous_t)
    return t, arm, float(row["value"])


def rows(lines: Iterable[bytes | str], parse: Any) -> Iterator[Any]:
    """The parsed rows of `lines`, blank lines skipped; each checked to be in time order."""
    previous: float | None = None
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        row = parse(raw, number, previous)
        previous = row[0]
        yield row


def replay(lines: Iterable[bytes | str], template: AnalysisTemplate) -> dict[str, Any]:
    """Replay `lines` (requests, or gauge samples for metric value) through the template's judge."""
    if template.metric == "value":
        return replay_values(rows(lines, parse_sample), template)
    return replay_requests(rows(lines, parse_line), template)


def _with_progress(lines: Iterable[bytes], size: int, err: Console) -> Iterator[bytes]:
    """`lines`, drawing a bar of the bytes read on `err` as they go by."""
    columns = (TextColumn("replaying"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("replay", total=size)
        done = 0
        for number, raw in enumerate(lines):
            done += len(raw)
            if number % 20_000 == 0:
                progress.update(task, completed=done)
            yield raw
        progress.update(task, completed=done)


def analyze(
    input_file: Annotated[Path, typer.Option(
        "--input", help="JSON lines in time order: one request each, or (--metric value) one gauge sample each.")],
    judge_name: Annotated[Literal["sequential", "threshold", "mannwhitney"], typer.Option("--judge")] = "sequential",
    metric: Annotated[Literal["error-rate", "latency", "value"], typer.Option("--metric")] = "error-rate",
    alpha: Annotated[float | None, typer.Option(
        "--alpha", help="False-alarm rate (mannwhitney: 1 − confidence).")] = None,
    interval: Annotated[str, typer.Option("--interval", help="threshold, mannwhitney: time between checks.")] = "60s",
    maximum: Annotated[float | None, typer.Option(
        "--max", help="threshold: highest acceptable error rate (fraction), latency (ms) or value.")] = None,
    minimum: Annotated[float | None, typer.Option("--min", help="threshold: lowest acceptable value.")] = None,
    margin: Annotated[float | None, typer.Option(
        "--margin", help="sequential: allowed relative increase (value: relative shift).")] = None,
    direction: Annotated[Literal["increase", "decrease", "either"], typer.Option(
        "--direction", help="value: which shift of the candidate's mean fails it.")] = "increase",
    bounds: Annotated[str | None, typer.Option(
        "--bounds", help="sequential value: the range the values can take, MIN:MAX (such as 0:1).")] = None,
    failure_limit: Annotated[int, typer.Option("--failure-limit", help="Failed checks that fail.")] = 1,
    min_requests: Annotated[int, typer.Option("--min-requests", help="Requests per release to pass.")] = 50,
    min_samples: Annotated[int, typer.Option("--min-samples", help="value: pairs of samples to pass.")] = 10,
    no_data: Annotated[Literal["wait", "fail", "pass"], typer.Option("--no-data")] = "wait",
    as_json: Annotated[bool, typer.Option("--json", help="Only the JSON result.")] = False,
    progress: Annotated[bool, typer.Option("--progress", help="Draw a progress bar on the terminal.")] = False,
) -> None:
    """Replay recorded requests (or gauge samples) through a judge, offline; print the verdict and when it came."""
    err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
    fields: dict[str, Any] = {"judge": judge_name, "metric": metric, "failureLimit": failure_limit,
                              "minRequests": min_requests, "minSamples": min_samples, "noData": no_data,
                              "direction": direction}
    try:
        fields["interval"] = parse_duration(interval)
        fields.update(_optional(alpha=alpha, margin=margin, bounds=bounds))
        fields.update(_threshold_range(judge_name, metric, maximum, minimum))
    except ValueError as exc:
        _bad(err, str(exc))
    template = _template(err, fields)
    result = _replay_file(err, input_file, template, progress=progress)
    text = json.dumps(_clean(result), indent=None if as_json else 2, ensure_ascii=False, allow_nan=False)
    print(text)  # plain print: the JSON must not be wrapped or styled
    raise typer.Exit(EXIT_OK)


def _optional(*, alpha: float | None, margin: float | None, bounds: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"alpha": alpha, "margin": margin, "bounds": _bounds(bounds) if bounds else None}
    return {k: v for k, v in out.items() if v is not None}


def _bounds(text: str) -> dict[str, float]:
    low, sep, high = text.partition(":")
    try:
        if not sep:
            raise ValueError(text)
        return {"min": float(low), "max": float(high)}
    except ValueError:
        raise ValueError(f"--bounds: expected MIN:MAX such as 0:1, got {text!r}") from None


def _threshold_range(judge_name: str, metric: str, maximum: float | None, minimum: float | None) -> dict[str, Any]:
    if judge_name != "threshold":
        return {}
    if maximum is None and minimum is None:
        if metric == "value":
            raise ValueError("threshold on a value needs --max or --min: there is no default for your metric")
        maximum = FLAGGER_DEFAULTS[metric]
    return {"thresholdRange": {"min": minimum, "max": maximum}}


def _template(err: Console, fields: dict[str, Any]) -> AnalysisTemplate:
    """The template of the options; a value is what a prometheus query of it would give."""
    try:
        if fields["metric"] == "value":
            return PrometheusTemplate.model_validate({**fields, "provider": "prometheus",
                                                      "address": "recording", "query": "recording"})
        return RouterTemplate.model_validate(fields)
    except ValidationError as exc:
        return _bad(err, "; ".join(_option_error(e) for e in exc.errors()))


def _option_error(error: Any) -> str:
    where = ".".join(map(str, error["loc"]))
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _replay_file(err: Console, input_file: Path, template: AnalysisTemplate, *, progress: bool) -> dict[str, Any]:
    try:
        with input_file.open("rb") as stream:
            lines: Iterable[bytes] = stream
            if progress:
                lines = _with_progress(stream, input_file.stat().st_size, err)
            return replay(lines, template)
    except OSError as exc:
        return _bad(err, f"cannot read {input_file}: {exc.strerror or exc}")
    except ReplayInputError as exc:
        return _bad(err, f"{input_file}: {exc}")


def _clean(value: Any) -> Any:
    """JSON without NaN or infinities (a latency in the overflow bucket is "more than any bound": null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _bad(err: Console, message: str) -> NoReturn:
    err.print(f"error: {message}", highlight=False, markup=False)
    raise typer.Exit(EXIT_BAD_INPUT)
