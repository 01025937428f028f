"""The builtin router's request parser against h11's, on generated raw request heads.

A reverse proxy must never forward a request that the server behind it might
read another way, so the builtin router refuses what RFC 9110/9112 call
invalid. To check that it refuses exactly that, the same generated heads —
request lines and header fields made of every class of octet: tokens, visible
ASCII, obs-text, control characters, NUL, bare CR and LF, whitespace before
the colon, folded lines, good and bad Host, Content-Length and
Transfer-Encoding combinations — go to our parser (`wire.parse_head` and
`wire.request_framing`, what both the fast and the stream path call) and to
`h11`, an independent implementation of RFC 9112, and the test fails where
the two disagree on accept or reject.

Where we deliberately differ from h11, `DELIBERATE` names the case with the
RFC section that allows our choice; for those the test still checks our side
(we refuse). The fast path's shortcut (`rewrite.plain_request_head`) may only
take heads both parsers accept.

The proxy itself answers 400 to such requests on either path; the last tests
send them through a running router and check that nothing reaches the upstream.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import h11
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stagewise.basics.ports import free_port
from stagewise.core.routes import Endpoint, RouteTable
from stagewise.errors import BadMessageError
from stagewise.routers.builtin import BuiltinRouter
from stagewise.routers.builtin.rewrite import plain_request_head
from stagewise.routers.builtin.wire import parse_head, request_framing
from tests.routers.conftest import raw_connection, read_response

T = TypeVar("T")
CASES = 5000
"""Generated heads per run (derandomized: the same ones each run, so a failure reproduces)."""


def ours(head: bytes) -> bool:
    """Whether the builtin router accepts the request head (both of its paths parse it with these)."""
    try:
        request_framing(parse_head(head, request=True).index)
    except BadMessageError:
        return False
    return True


def h11s(head: bytes) -> bool:
    """Whether h11, as a server, accepts the request head."""
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(head)
    try:
        event = connection.next_event()
    except h11.RemoteProtocolError:
        return False
    return isinstance(event, h11.Request)


def _field_lines(head: bytes) -> list[bytes]:
    return head[:-4].split(b"\r\n")[1:]


def _bare_cr_or_lf(head: bytes) -> bool:
    return head.count(b"\n") != head.count(b"\r\n") or head.count(b"\r") != head.count(b"\r\n")


def _obs_fold(head: bytes) -> bool:
    return any(line[:1] in (b" ", b"\t") for line in _field_lines(head))


def _other_ctl_in_a_value(head: bytes) -> bool:
    ctl = re.compile(rb"[\x01-\x08\x0e-\x1f\x7f]")  # what h11 retains: not NUL, HTAB, LF, VT, FF, CR
    return any(ctl.search(line.partition(b":")[2]) for line in _field_lines(head))


def _length_and_chunked(head: bytes) -> bool:
    names = {line.partition(b":")[0].lower() for line in _field_lines(head)}
    return {b"content-length", b"transfer-encoding"} <= names


def _later_minor_without_one_host(head: bytes) -> bool:
    if re.fullmatch(rb"\S+ \S+ HTTP/1\.[2-9]", head.split(b"\r\n", 1)[0]) is None:
        return False
    return sum(line.partition(b":")[0].lower() == b"host" for line in _field_lines(head)) != 1


def _major_version_not_1(head: bytes) -> bool:
    return re.fullmatch(rb"\S+ \S+ HTTP/[02-9]\.[0-9]", head.split(b"\r\n", 1)[0]) is not None


DELIBERATE: dict[str, Callable[[bytes], bool]] = {
    # RFC 9112 §2.2: a recipient MAY take a bare LF as a line end (h11 does); a bare CR MUST be refused or
    # replaced. We refuse both: a server behind us that splits lines differently would see other headers.
    "bare CR or LF": _bare_cr_or_lf,
    # RFC 9112 §5.2: a server MUST either refuse obs-fold with 400 or replace it with SP (h11 replaces).
    "obs-fold": _obs_fold,
    # RFC 9110 §5.5: CTLs other than NUL, CR and LF in a field value are invalid, which recipients MAY
    # retain (h11 does, but for VT and FF); we refuse them rather than forward them to a server unknown.
    "control character in a field value": _other_ctl_in_a_value,
    # RFC 9112 §6.3 (3): Content-Length with Transfer-Encoding "ought to be handled as an error" — it is
    # the classic request smuggling — or forwarded without the Content-Length (h11 lets chunked win).
    "Content-Length and Transfer-Encoding": _length_and_chunked,
    # RFC 9110 §2.5: HTTP/1.2 and later minor versions are served as 1.1, so RFC 9112 §3.2 holds them to
    # exactly one Host; h11 checks Host only on a request that says exactly HTTP/1.1.
    "HTTP/1.x after 1.1 without exactly one Host": _later_minor_without_one_host,
    # RFC 9110 §15.6.6: 505 for a major version not supported; h11's grammar takes any DIGIT.DIGIT and
    # leaves the version to the application.
    "major version other than 1": _major_version_not_1,
}


# -- generated heads --------------------------------------------------------------------------------

TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
OCTET_CLASSES = {
    "tchar": TCHAR,
    "vchar": bytes(range(0x21, 0x7F)),
    "space": b" \t",
    "obs-text": bytes(range(0x80, 0x100)),
    "ctl": bytes([*range(0x01, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]),
    "nul": b"\x00",
    "cr-lf": b"\r\n",
}


def mostly(clean: st.SearchStrategy[T], *others: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """`clean` nine times in ten, else one of `others`: most heads are nearly right, as attacks are."""
    dirty = st.one_of(*others)
    return st.integers(0, 9).flatmap(lambda i: dirty if i == 9 else clean)


def octets(*classes: str, max_size: int = 12) -> st.SearchStrategy[bytes]:
    """Strings of octets drawn from the named classes, mostly from the first."""
    alphabet = b"".join(OCTET_CLASSES[c] for c in classes)
    byte = mostly(st.sampled_from(OCTET_CLASSES[classes[0]]), st.sampled_from(alphabet))
    return st.lists(byte, max_size=max_size).map(bytes)


METHODS = mostly(
    st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"get", b"M-SEARCH"]),
    octets("tchar", max_size=8).filter(bool),
    octets("tchar", "vchar", "ctl", "nul", "obs-text", "space", max_size=8).filter(bool),
)
TARGETS = mostly(
    st.sampled_from([b"/", b"/a/b?c=d&e", b"*", b"http://example.com/x", b"/%00"]),
    octets("vchar", "obs-text", "ctl", "nul", "space", max_size=10).filter(bool),
)
VERSIONS = st.sampled_from([b"HTTP/1.1"] * 24 + [b"HTTP/1.0"] * 8 + [
    b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9", b"http/1.1", b"HTTP/11", b"HTTP/1.", b"HTTP/1.1 ", b"HTTP /1.1"])
REQUEST_LINE_GAPS = st.sampled_from([b" "] * 30 + [b"  ", b"\t", b""])
NAMES = mostly(
    st.sampled_from([b"X-Things", b"Accept", b"Cookie", b"Connection", b"Upgrade", b"Expect",
                     b"Content-Length", b"Transfer-Encoding", b"X-Forwarded-For", b"Keep-Alive", b"TE"]),
    octets("tchar", max_size=10).filter(bool),
    octets("tchar", "vchar", "space", "ctl", "nul", "obs-text", max_size=10),
)
VALUES = mostly(
    octets("vchar", "space", max_size=16),
    octets("vchar", "space", "obs-text", "ctl", "nul", "cr-lf", max_size=16),
)
LENGTHS = st.sampled_from([b"0", b"5", b"5, 5", b"5,6", b"+5", b"", b"-1", b"abc", b" 7 ", b"05", b"1e3"])
CODINGS = st.sampled_from([b"chunked", b"Chunked", b"gzip, chunked", b"chunked, gzip", b"identity", b"",
                           b"chunked, chunked"])
COLONS = st.sampled_from([b":"] * 30 + [b" :", b"\t:", b""])
LINE_ENDS = st.sampled_from([b"\r\n"] * 40 + [b"\n", b"\r\n ", b"\r\n\t", b"\r"])


@st.composite
def request_heads(draw: st.DrawFn) -> bytes:
    gap = draw(REQUEST_LINE_GAPS)
    line = draw(METHODS) + gap + draw(TARGETS) + draw(REQUEST_LINE_GAPS) + draw(VERSIONS)
    fields: list[tuple[bytes, bytes, bytes]] = []
    for _ in range(draw(st.sampled_from([1, 1, 1, 1, 0, 2]))):
        fields.append((draw(st.sampled_from([b"Host", b"host", b"HOST"])), b":",
                       draw(st.sampled_from([b" example.com", b" a:8080", b"", b" a b"]))))
    if draw(st.booleans()):
        fields.append((b"Content-Length", b":", b" " + draw(LENGTHS)))
    if draw(st.integers(0, 5)) == 0:
        fields.append((b"Transfer-Encoding", b":", b" " + draw(CODINGS)))
    for _ in range(draw(st.integers(0, 3))):
        fields.append((draw(NAMES), draw(COLONS), draw(VALUES)))
    order = draw(st.permutations(range(len(fields))))
    head = line + b"\r\n"
    for i in order:
        name, colon, value = fields[i]
        head += name + colon + value + draw(LINE_ENDS)
    head += b"\r\n"
    end = head.find(b"\r\n\r\n")
    # the proxy reads a head up to the first empty line, whatever came before: so does this test
    return head[: end + 4] if end >= 0 else head + b"\r\n\r\n"


GENERATED = 0


@settings(max_examples=CASES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(request_heads())
@example(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n")
@example(b"G\x01T / HTTP/1.1\r\nHost: a\r\n\r\n")
@example(b"GET / HTTP/1.1\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
@example(b"GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\n")
@example(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: a\r\nX(y: 1\r\n\r\n")
def compare_with_h11(head: bytes) -> None:
    global GENERATED
    GENERATED += 1
    accepted = ours(head)
    if plain_request_head(head) is not None:
        assert accepted, "the fast path's shortcut took a head the parser refuses"
    deliberate = [why for why, applies in DELIBERATE.items() if applies(head)]
    if deliberate:
        assert not accepted, f"accepted a head refused on purpose ({deliberate}): {head!r}"
        return
    assert accepted == h11s(head), f"ours {'accepts' if accepted else 'refuses'}, h11 does not: {head!r}"


def test_the_parser_accepts_and_rejects_what_h11_does() -> None:
    global GENERATED
    GENERATED = 0
    compare_with_h11()
    print(f"\ndifferential request parsing: {GENERATED} heads compared with h11, no disagreement")
    assert GENERATED >= CASES


# -- through a running router ------------------------------------------------------------------------

BAD = {
    "NUL in a header value": b"GET / HTTP/1.1\r\nHost: t\r\nX-Note: a\x00b\r\n\r\n",
    "control character in the method": b"G\x01T / HTTP/1.1\r\nHost: t\r\n\r\n",
    "NUL in the target": b"GET /\x00 HTTP/1.1\r\nHost: t\r\n\r\n",
    "no Host": b"GET / HTTP/1.1\r\n\r\n",
}
"""Requests the proxy once forwarded as they came."""
STREAM_PATH_FIRST = b"GET / HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n"
"""An HTTP/1.0 request moves the connection to the stream path, where the next request is parsed."""


@pytest.mark.integration
@pytest.mark.timeout(40)
@pytest.mark.parametrize("path", ["fast", "stream"])
@pytest.mark.parametrize("what", list(BAD))
async def test_an_invalid_request_is_answered_400_and_never_forwarded(
    router: BuiltinRouter, upstreams: Any, what: str, path: str
) -> None:
    port = free_port()
    endpoints = (Endpoint(id="a1", release="v1", address=upstreams["a1"].address),)
    await router.apply(table=RouteTable(service=f"bad-{path}", listen=f"127.0.0.1:{port}", stable="v1",
                                        endpoints=endpoints))
    before = upstreams["a1"].requests
    async with raw_connection(port) as (reader, writer):
        if path == "stream":
            writer.write(STREAM_PATH_FIRST)
            assert (await read_response(reader)).status == 200
            before += 1
        writer.write(BAD[what])
        response = await read_response(reader)
    assert response.status == 400, response
    assert upstreams["a1"].requests == before, "the invalid request reached the upstream"
    await router.stop(service=f"bad-{path}")
