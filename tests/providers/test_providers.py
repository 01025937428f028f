"""The providers against the real thing: a real Prometheus scraping a real exporter, a real HTTP
server, real programs. No provider is faked here."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from stagewise.analysis.providers import Target, fill, get_provider
from stagewise.analysis.providers.prometheus import SETTLE, CounterTracker, fill_promql
from stagewise.analysis.providers.router import RouterProvider
from stagewise.basics.ports import free_port
from stagewise.core.spec import AnalysisTemplate, CommandTemplate, HttpTemplate, PrometheusTemplate, RouterTemplate
from stagewise.core.stats import ReleaseStats, RouterStats
from stagewise.errors import ProviderError, UnknownDriverError
from tests.providers.prom import running_prometheus, wait_for_series
from tests.serving import serving

pytestmark = pytest.mark.timeout(90)

TARGET = Target(service="shop", baseline="v1", candidate="v2", window=30)
EXPOSITION = """\
# TYPE stagewise_router_requests_total counter
stagewise_router_requests_total{service="shop",release="v1"} 1000
stagewise_router_requests_total{service="shop",release="v2"} 200
# TYPE stagewise_router_errors_total counter
stagewise_router_errors_total{service="shop",release="v1"} 10
stagewise_router_errors_total{service="shop",release="v2"} 30
# TYPE stagewise_router_request_duration_seconds histogram
stagewise_router_request_duration_seconds_bucket{service="shop",release="v1",le="0.0138778"} 900
stagewise_router_request_duration_seconds_bucket{service="shop",release="v1",le="+Inf"} 1000
stagewise_router_request_duration_seconds_sum{service="shop",release="v1"} 9.5
stagewise_router_request_duration_seconds_count{service="shop",release="v1"} 1000
stagewise_router_request_duration_seconds_bucket{service="shop",release="v2",le="0.0138778"} 100
stagewise_router_request_duration_seconds_bucket{service="shop",release="v2",le="+Inf"} 200
stagewise_router_request_duration_seconds_sum{service="shop",release="v2"} 4.0
stagewise_router_request_duration_seconds_count{service="shop",release="v2"} 200
# TYPE demo_server_responses_total counter
demo_server_responses_total{server="v1.0:a"} 10
demo_server_responses_total{server="v100:b"} 1000
demo_server_responses_total{server="v1+b:c"} 7
demo_server_responses_total{server="v11b:d"} 500
"""


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/metrics":
            body, status = EXPOSITION.encode(), 200
        elif self.path.startswith("/status/"):
            body, status = b"as asked", int(self.path.rsplit("/", 1)[1])
        elif self.path == "/slow":
            threading.Event().wait(0.5)
            body, status = b"late", 200
        else:
            body, status = b"v2 ok", 200 if self.path == "/v2/healthz" else 404
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class Web(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A probe that gave up on /slow closed its end: expected here, and no traceback on the test's stderr."""


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    with serving(Web(("127.0.0.1", 0), Handler)) as address:
        yield address


@pytest.fixture(scope="module")
def prometheus(web: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_prometheus(tmp_path_factory.mktemp("prometheus"), [web]) as url:
        wait_for_series(url, "stagewise_router_requests_total")
        yield url


def measure(template: AnalysisTemplate, target: Target = TARGET):  # type: ignore[no-untyped-def]
    return asyncio.run(get_provider(template.provider).measure(template=template, target=target))


def test_prometheus_query_gives_one_value_per_release(prometheus: str) -> None:
    template = PrometheusTemplate(
        provider="prometheus", address=prometheus, judge="threshold", threshold_range={"max": 0.05},
        query='sum(stagewise_router_errors_total{service="{{service}}",release="{{release}}"})'
              ' / sum(stagewise_router_requests_total{service="{{service}}",release="{{release}}"})',
    )
    m = measure(template)
    assert m.values == (pytest.approx(0.01), pytest.approx(0.15))
    assert 'release="v2"' in m.evidence["queries"]["v2"]


def test_prometheus_fills_a_regex_matcher_with_the_release_escaped(prometheus: str) -> None:
    """`v1.0` must not match `v100`'s servers, nor `v1+b` those of `v11b`: the name is matched as written."""
    template = PrometheusTemplate(provider="prometheus", address=prometheus, judge="threshold",
                                query='sum(demo_server_responses_total{server=~"{{release}}:.+"})')
    m = measure(template, Target(service="shop", baseline="v1.0", candidate="v1+b", window=30))
    assert m.values == (10.0, 7.0), m.evidence["queries"]
    assert m.evidence["queries"]["v1.0"] == r'sum(demo_server_responses_total{server=~"v1\\.0:.+"})'


@pytest.mark.parametrize(("query", "filled"), [
    (r'x{a="{{release}}"}', r'x{a="v1.0\\\"q"}'),  # a string: its backslash and quote escaped
    (r'x{a=~"{{release}}"}', r'x{a=~"v1\\.0\\\\\"q"}'),  # a regex in a string: regex, then string escapes
    (r"""x{a!~ '{{release}}'}""", r"""x{a!~ 'v1\\.0\\\\"q'}"""),
    (r"x{a=~`{{release}}`}", r'x{a=~`v1\.0\\"q`}'),  # a raw string: the regex escape only
    (r'rate(x{a="{{service}}"}[{{window}}]) # {{release}} "', r'rate(x{a="shop"}[30s]) # {{release}} "'),
])
def test_prometheus_placeholders_are_escaped_for_their_context(query: str, filled: str) -> None:
    assert fill_promql(query, target=TARGET, release=r'v1.0\"q') == filled


def test_prometheus_counts_mode_reads_the_router_metrics(prometheus: str) -> None:
    m = measure(PrometheusTemplate(provider="prometheus", address=prometheus, metric="latency"))
    assert m.counts is not None
    baseline, candidate = m.counts
    assert (baseline.requests, baseline.errors, candidate.requests, candidate.errors) == (1000, 10, 200, 30)
    assert sum(baseline.latency_buckets) == 1000 and sum(candidate.latency_buckets) == 200
    assert candidate.quantile_ms(0.4) == pytest.approx(13.8778)  # the le="0.0138778" bucket


def test_prometheus_empty_result_is_no_data(prometheus: str) -> None:
    template = PrometheusTemplate(provider="prometheus", address=prometheus, judge="threshold",
                                query='sum(no_such_metric{release="{{release}}"})')
    assert measure(template).values == (None, None)


def test_prometheus_errors_are_reported_in_its_words(prometheus: str) -> None:
    template = PrometheusTemplate(provider="prometheus", address=prometheus, judge="threshold", query="sum(rate(x[",)
    with pytest.raises(ProviderError, match="bad_data"):
        measure(template)


def test_prometheus_unreachable_is_a_provider_error() -> None:
    template = PrometheusTemplate(provider="prometheus", address=f"http://127.0.0.1:{free_port()}",
                                judge="threshold", query="up")
    with pytest.raises(ProviderError, match="did not answer"):
        measure(template)


def test_http_probe_passes_on_expected_status_and_fails_otherwise(web: str) -> None:
    ok = measure(HttpTemplate(provider="http", judge="threshold", url=f"http://{web}/{{{{release}}}}/healthz"))
    assert ok.values == (None, 0.0) and ok.evidence["status"] == 200 and ok.evidence["url"].endswith("/v2/healthz")
    bad = measure(HttpTemplate(provider="http", judge="threshold", url=f"http://{web}/status/503"))
    assert bad.values == (None, 1.0) and bad.evidence["status"] == 503
    allowed = measure(HttpTemplate(provider="http", judge="threshold", url=f"http://{web}/status/503",
                                       expected_status=[503]))
    assert allowed.values == (None, 0.0)


def test_http_probe_slower_than_its_limit_or_refused_fails(web: str) -> None:
    slow = measure(HttpTemplate(provider="http", judge="threshold", url=f"http://{web}/slow", latency_limit=0.1))
    assert slow.values == (None, 1.0) and "Timeout" in slow.evidence["error"]
    refused = measure(HttpTemplate(provider="http", judge="threshold", url=f"http://127.0.0.1:{free_port()}/"))
    assert refused.values == (None, 1.0) and "Connect" in refused.evidence["error"]


def test_command_exit_status_decides_and_output_is_kept() -> None:
    ok = measure(CommandTemplate(provider="command", judge="threshold",
                                  args=[sys.executable, "-c", "import os; print(os.environ['STAGEWISE_CANDIDATE'])"]))
    assert ok.values == (None, 0.0) and ok.evidence["output"].strip() == "v2"
    bad = measure(CommandTemplate(provider="command", judge="threshold",
                                   args=[sys.executable, "-c", "print('smoke: cart is empty'); raise SystemExit(3)",
                                         "{{release}}"]))
    assert bad.values == (None, 1.0) and bad.evidence["exit_status"] == 3
    assert "cart is empty" in bad.evidence["output"] and bad.evidence["argv"][-1] == "v2"


def test_command_past_its_timeout_is_killed_and_fails() -> None:
    m = measure(CommandTemplate(provider="command", judge="threshold", latency_limit=0.3,
                                 args=[sys.executable, "-c", "import time; time.sleep(30)"]))
    assert m.values == (None, 1.0) and m.evidence["timed_out"] is True and m.evidence["seconds"] < 10


def test_command_that_cannot_start_is_a_provider_error(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="cannot run"):
        measure(CommandTemplate(provider="command", judge="threshold", args=[str(tmp_path / "missing")]))


def test_router_provider_picks_the_two_releases() -> None:
    stats = RouterStats(boot="b", releases={"v1": ReleaseStats(requests=5), "v2": ReleaseStats(requests=7)})
    m = asyncio.run(RouterProvider(stats).measure(template=RouterTemplate(), target=TARGET))
    assert m.counts is not None and (m.counts[0].requests, m.counts[1].requests) == (5, 7)
    with pytest.raises(ProviderError):
        asyncio.run(RouterProvider(None).measure(template=RouterTemplate(), target=TARGET))


def test_placeholders_and_unknown_providers() -> None:
    assert fill("{{ service }}/{{release}}[{{window}}] {{baseline}}>{{candidate}}", target=TARGET,
                release="v2") == "shop/v2[30s] v1>v2"
    with pytest.raises(UnknownDriverError, match="expected one of: command, http, prometheus"):
        get_provider("graphite")


def test_counters_are_followed_series_by_series_as_increase_counts_them() -> None:
    tracker = CounterTracker()
    a, b = (("instance", "a"),), (("instance", "b"),)
    assert tracker.totals("q", [(a, 10.0)]) == {a: 10.0}
    assert tracker.totals("q", [(a, 20.0), (b, 3.0)]) == {a: 20.0, b: 3.0}  # a new series brings its value
    assert tracker.totals("q", [(a, 5.0), (b, 4.0)]) == {a: 25.0, b: 4.0}  # a fell: restarted, so +5 not -15
    assert tracker.totals("q", [(b, 6.0)]) == {a: 25.0, b: 6.0}  # a missing (a failed scrape) keeps its total
    assert tracker.totals("q", [(a, 7.0), (b, 6.0)]) == {a: 27.0, b: 6.0}  # and counts what it gained meanwhile


def test_prometheus_counters_of_a_release_without_series_are_no_data(prometheus: str) -> None:
    template = PrometheusTemplate(provider="prometheus", address=prometheus, metric="error-rate",
                                  query='stagewise_router_errors_total{release="{{release}}"}',
                                  total='stagewise_router_requests_total{release="{{release}}"}')
    m = measure(template)
    assert m.counts is not None and (m.counts[0].requests, m.counts[1].errors) == (1000, 30)
    # both releases read at one whole second in the past, when the scrapes up to it have been stored
    assert m.evidence["time"] == int(m.evidence["time"]) <= time.time() - SETTLE
    with pytest.raises(ProviderError, match="no series for release v9"):
        measure(template, Target(service="shop", baseline="v1", candidate="v9", window=30))


def test_prometheus_gauge_is_the_mean_of_the_instances(prometheus: str) -> None:
    template = PrometheusTemplate(provider="prometheus", address=prometheus, metric="value",
                                  bounds={"min": 0, "max": 10_000},
                                  query='demo_server_responses_total{server=~"{{release}}.*"}')
    m = measure(template, Target(service="shop", baseline="v1", candidate="v9", window=30))
    assert m.values == (pytest.approx((10 + 1000 + 7 + 500) / 4), None)
