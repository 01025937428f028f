"""HTTP/1.1 wire helpers for the builtin router: message heads, body framing, hop-by-hop rules.

Just enough of RFC 9112 for a reverse proxy that streams. A head is parsed once
into plain bytes; `BodyReader` hands a body over piece by piece, so no body is
ever held whole in memory. This module knows nothing of routes or counters.

It is strict where leniency lets one message be read two ways (bare CR or LF,
both Content-Length and Transfer-Encoding, conflicting lengths, folded
headers): a proxy and the server behind it must agree on where a request ends,
or one client can smuggle a request past the other. For the same reason a
request is refused (400) unless its method and header names are tokens, its
target is visible ASCII, its header values hold no control character but HTAB
(no NUL, RFC 9110 §5.5) and it has exactly one Host (RFC 9112 §3.2; none is
allowed in HTTP/1.0): the proxy never forwards what the server behind it might
read another way. tests/routers/test_request_parsing.py holds the request
parser to `h11`'s verdicts, with the few deliberate differences named there.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass

from stagewise.errors import BadMessageError

MAX_HEAD = 64 * 1024
"""Longest message head (and chunk-size or trailer line) accepted, in bytes."""
READ_SIZE = 64 * 1024
"""Largest piece of a body read at once; bounds the memory one transfer holds."""

NO_BODY, LENGTH, CHUNKED, UNTIL_CLOSE = 0, 1, 2, 3
"""How a body is delimited: none, by Content-Length, chunked, or by the connection closing."""

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
"""Headers that describe one connection, never forwarded (RFC 9110 §7.6.1)."""

_REASONS = {
    100: b"Continue",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    409: b"Conflict",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


_HEX_DIGITS = b"0123456789abcdefABCDEF"
_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
"""method SP request-target SP HTTP-version (RFC 9112 §3): a token, visible ASCII, one digit each."""
_FIELD_NAME = re.compile(_TOKEN)
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
"""HTAB, SP, visible ASCII and obs-text (RFC 9110 §5.5): no NUL, no other control character."""


@dataclass(slots=True)
class Head:
    """A parsed message head: start line parts, headers as sent, and a lower-case index."""

    start: tuple[bytes, bytes, bytes]
    """method, target, version of a request; version, status, reason of a response."""
    headers: list[tuple[bytes, bytes]]
    index: dict[bytes, bytes]
    """Lower-case name → value; repeated headers joined as RFC 9110 §5.3 allows."""


def parse_head(data: bytes, *, request: bool) -> Head:
    """Parse a head that `readuntil(b"\\r\\n\\r\\n")` returned."""
    if data.count(b"\n") != data.count(b"\r\n") or data.count(b"\r") != data.count(b"\r\n"):
        raise BadMessageError(400, "bare CR or LF in message head")
    lines = data[:-4].split(b"\r\n")
    start = _request_line(lines[0]) if request else _status_line(lines[0])
    headers, index = _fields(lines[1:], request=request)
    if request and b"host" not in index and start[2] != b"HTTP/1.0":
        raise BadMessageError(400, "no Host header")
    return Head(start, headers, index)


def _request_line(line: bytes) -> tuple[bytes, bytes, bytes]:
    """(method, target, version) of a request line (RFC 9112 §3)."""
    request_line = _REQUEST_LINE.fullmatch(line)
    if request_line is None:
        raise BadMessageError(400, "malformed request line")
    method, target, major, minor = request_line.groups()
    if major != b"1":
        raise BadMessageError(505, "only HTTP/1.0 and HTTP/1.1 are spoken here")
    # a later 1.x is served as 1.1, the highest minor version spoken here (RFC 9110 §2.5)
    return method, target, b"HTTP/1.0" if minor == b"0" else b"HTTP/1.1"


def _status_line(line: bytes) -> tuple[bytes, bytes, bytes]:
    """(version, status, reason) of an upstream's status line."""
    version, _, rest = line.partition(b" ")
    status, _, reason = rest.partition(b" ")
    if not version.startswith(b"HTTP/1.") or len(status) != 3 or not status.isdigit():
        raise BadMessageError(502, "malformed status line from upstream")
    return version, status, reason


def _fields(lines: list[bytes], *, request: bool) -> tuple[list[tuple[bytes, bytes]], dict[bytes, bytes]]:
    """The header fields as sent, and indexed by lower-case name (repeats joined, conflicts refused)."""
    headers: list[tuple[bytes, bytes]] = []
    index: dict[bytes, bytes] = {}
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep or _FIELD_NAME.fullmatch(name) is None:
            raise BadMessageError(400, "malformed header line")
        if request and _FIELD_VALUE.fullmatch(value) is None:
            raise BadMessageError(400, "control character in a header value")
        value = value.strip(b" \t")
        headers.append((name, value))
        key = name.lower()
        seen = index.get(key)
        if seen is None:
            index[key] = value
        elif key == b"content-length":
            if seen != value:
                raise BadMessageError(400, "conflicting Content-Length headers")
        elif key == b"host" and request:
            raise BadMessageError(400, "more than one Host header")
        else:
            index[key] = seen + (b"; " if key == b"cookie" else b", ") + value
    return headers, index


def tokens(value: bytes | None) -> frozenset[bytes]:
    """The lower-cased tokens of a comma-separated header such as Connection."""
    if not value:
        return frozenset()
    return frozenset(t.strip().lower() for t in value.split(b","))


def _content_length(value: bytes) -> int:
    parts = {p.strip() for p in value.split(b",")}
    if len(parts) != 1:
        raise BadMessageError(400, "conflicting Content-Length values")
    (text,) = parts
    if not text.isdigit() or len(text) > 18:
        raise BadMessageError(400, "invalid Content-Length")
    return int(text)


def request_framing(index: dict[bytes, bytes]) -> tuple[int, int]:
    """How a request body is delimited, and its length when known (RFC 9112 §6.3)."""
    te = index.get(b"transfer-encoding")
    if te is not None:
        if b"content-length" in index:
            raise BadMessageError(400, "both Content-Length and Transfer-Encoding")
        if te.lower() != b"chunked":
            raise BadMessageError(501, "only the chunked transfer coding is supported")
        return CHUNKED, 0
    length = index.get(b"content-length")
    if length is None:
        return NO_BODY, 0
    n = _content_length(length)
    return (LENGTH, n) if n else (NO_BODY, 0)


def response_framing(method: bytes, status: int, index: dict[bytes, bytes]) -> tuple[int, int]:
    """How a response body is delimited, and its length when known (RFC 9112 §6.3)."""
    if method == b"HEAD" or status < 200 or status in (204, 304):
        return NO_BODY, 0
    te = index.get(b"transfer-encoding")
    if te is not None:
        return (CHUNKED, 0) if te.lower().rsplit(b",", 1)[-1].strip() == b"chunked" else (UNTIL_CLOSE, 0)
    length = index.get(b"content-length")
    if length is None:
        return UNTIL_CLOSE, 0
    try:
        n = _content_length(length)
    except BadMessageError as exc:
        raise BadMessageError(502, f"upstream sent {exc}") from exc
    return (LENGTH, n) if n else (NO_BODY, 0)


class BodyReader:
    """Hands a body over piece by piece, decoding chunked framing.

    Cancel-safe: state changes only after a stream read has returned, and
    asyncio's stream reads consume nothing when cancelled, so a cancelled
    `read()` can simply be called again (the retry of a request relies on it).
    """

    __slots__ = ("_kind", "_left", "_reader", "done", "trailers")

    def __init__(self, reader: asyncio.StreamReader, kind: int, length: int = 0) -> None:
        self._reader = reader
        self._kind = kind
        self._left = length if kind == LENGTH else -1
        """LENGTH: bytes left. CHUNKED: bytes left in this chunk, -1 size line next,
        -2 CRLF after chunk data next, -3 inside the trailer section."""
        self.done = kind == NO_BODY
        self.trailers: list[bytes] = []
        """Raw trailer lines (with CRLF) of a chunked body."""

    async def read(self) -> bytes:
        """The next piece of the body; b"" once it has all been read.

        Raises BadMessageError for bad framing and IncompleteReadError when the peer
        closes before the body ends.
        """
        if self.done:
            return b""
        if self._kind == UNTIL_CLOSE:
            data = await self._reader.read(READ_SIZE)
            self.done = not data
            return data
        if self._kind == LENGTH:
            data = await self._reader.read(min(self._left, READ_SIZE))
            if not data:
                raise asyncio.IncompleteReadError(b"", self._left)
            self._left -= len(data)
            self.done = self._left == 0
            return data
        return await self._read_chunked()

    async def _read_chunked(self) -> bytes:
        while True:
            if self._left > 0:
                data = await self._reader.read(min(self._left, READ_SIZE))
                if not data:
                    raise asyncio.IncompleteReadError(b"", self._left)
                self._left -= len(data)
                if self._left == 0:
                    self._left = -2
                return data
            if self._left == -2:
                if await self._reader.readexactly(2) != b"\r\n":
                    raise BadMessageError(400, "chunk data not followed by CRLF")
                self._left = -1
            line = await self._line()
            if self._left == -3:
                if line == b"\r\n":
                    self.done = True
                    return b""
                self.trailers.append(line)
                continue
            size = line.split(b";", 1)[0].strip(b" \t\r\n")
            if not size or len(size) > 15 or size.lstrip(_HEX_DIGITS):
                raise BadMessageError(400, "malformed chunk size")
            n = int(size, 16)
            self._left = n if n else -3

    async def _line(self) -> bytes:
        try:
            return await self._reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError:
            raise BadMessageError(400, "chunk line too long") from None


def frame_chunk(data: bytes) -> list[bytes]:
    """One chunk of chunked transfer coding, as pieces for `writelines`."""
    return [b"%x\r\n" % len(data), data, b"\r\n"]


def last_chunk(trailers: Iterable[bytes] = ()) -> bytes:
    return b"0\r\n" + b"".join(trailers) + b"\r\n"


def end_to_end(headers: Iterable[tuple[bytes, bytes]], connection: frozenset[bytes]) -> list[tuple[bytes, bytes]]:
    """Headers minus hop-by-hop ones, those named by Connection, and framing headers."""
    out = []
    for name, value in headers:
        key = name.lower()
        if key in HOP_BY_HOP or key == b"content-length" or key in connection:
            continue
        out.append((name, value))
    return out


def build_head(start_line: bytes, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    parts = [start_line, b"\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def plain_response(status: int, text: str, *, close: bool, content_type: bytes = b"text/plain") -> bytes:
    """A complete small response, e.g. the proxy's own 502 explaining why."""
    body = text.encode()
    if content_type.startswith(b"text/plain") and not body.endswith(b"\n"):
        body += b"\n"
    headers = [
        (b"Content-Type", content_type + (b"; charset=utf-8" if content_type.startswith(b"text/") else b"")),
        (b"Content-Length", b"%d" % len(body)),
    ]
    if close:
        headers.append((b"Connection", b"close"))
    return build_head(b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Unknown")), headers) + body
