"""How the builtin router rewrites message heads on their way through: written once, for both paths.

A head passes the proxy in one of two ways. Most go *as they came* (plus
X-Forwarded-For on a request, minus `Connection: keep-alive` on a response):
`plain_request_head` and `plain_response_head` recognise those with a few
byte searches and no parse, which is what keeps the fast path fast. Every
other head is parsed (`wire.parse_head`) and rebuilt by `request_headers` and
`response_head`: hop-by-hop headers and those named by Connection dropped,
framing headers set for the body as it will be sent.

The fast path (`fast`, `fast_upstream`) and the stream path (`streams`) call
these same functions, so a client cannot tell which path served it. A plain
head is, by construction, one whose full rewrite would change nothing but
what the plain functions change (tests/routers/test_fast_path.py checks it).

This module holds no state and does no I/O.
"""

from __future__ import annotations

import re

from stagewise.routers.builtin.wire import LENGTH, NO_BODY, UNTIL_CLOSE, Head, build_head, end_to_end, tokens

_REPLACED = frozenset({b"x-forwarded-for", b"expect"})
"""Request headers the proxy never passes on as they came: it sets X-Forwarded-For, and answers Expect itself."""

# -- requests ------------------------------------------------------------------------------------

_PLAIN_REQUEST = re.compile(
    rb"([A-Z]{1,16}) [\x21-\x7e]+ HTTP/1\.1\r\n"
    rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*\r\n)*\r\n")
"""A whole request head the strict parser accepts as it is: an upper-case method, a target of visible ASCII,
header names that are tokens and values of HTAB, SP, visible ASCII and obs-text (so no NUL, no other control
character, no bare CR or LF, no folded line, no whitespace before a colon) — RFC 9112 §3 and §5, RFC 9110 §5.5."""
_NOT_PLAIN = re.compile(
    rb"\r\n(?:connection:|keep-alive:|proxy-|te:|trailer:|upgrade:|expect:|x-forwarded-for:"
    rb"|content-length:|transfer-encoding:)")
"""A header to rewrite or a body, in a lower-cased head that `_PLAIN_REQUEST` matched (names end at the colon)."""


def plain_request_head(head: bytes) -> bytes | None:
    """The method of a request head the proxy may pass on as it came (plus X-Forwarded-For), else None.

    That is: HTTP/1.1, not HEAD, no body, exactly one Host, no hop-by-hop header, Expect or X-Forwarded-For
    to rewrite, and nothing `wire.parse_head` would refuse. Anything else takes the full parse.
    """
    match = _PLAIN_REQUEST.fullmatch(head)
    if match is None:
        return None
    method = match.group(1)
    lower = head[head.index(b"\r\n"): -2].lower()
    if method == b"HEAD" or lower.count(b"\r\nhost:") != 1 or _NOT_PLAIN.search(lower):
        return None
    return method


def request_headers(head: Head, connection: frozenset[bytes], client_ip: bytes) -> list[tuple[bytes, bytes]]:
    """The end-to-end headers of a parsed request, with the client added to X-Forwarded-For.

    Framing (Content-Length, Transfer-Encoding) and Upgrade are the caller's to add: only the stream
    path forwards bodies and upgrades.
    """
    headers = end_to_end(head.headers, connection | _REPLACED)
    prior = head.index.get(b"x-forwarded-for")
    headers.append((b"X-Forwarded-For", prior + b", " + client_ip if prior else client_ip))
    return headers


# -- responses -----------------------------------------------------------------------------------

_PLAIN_STATUS = re.compile(rb"HTTP/1\.1 ([2-5][0-9][0-9])[ \r]")
_REWRITTEN = re.compile(rb"\r\n(?:keep-alive[ \t]*:|proxy-|te[ \t]*:|trailer[ \t]*:|upgrade[ \t]*:|[ \t]|[^:\r]*\r\n)")
"""A header to rewrite, or a line `parse_head` would refuse (folded, without a colon), in a lower-cased head
after its status line; every alternative starts with CRLF, which lets the search skip ahead fast.
`Connection: keep-alive` alone is dropped without a full parse."""
_CONNECTION = re.compile(rb"\r\nconnection:[ \t]*([^\r]*)\r\n")
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]{1,18})[ \t]*\r\n")


def plain_response_head(head: bytes) -> tuple[int, int, bytes] | None:
    """(status, Content-Length, head to send) of a response the proxy passes on as it came, else None.

    That is: HTTP/1.1, a final status with a body, exactly one Content-Length and no Transfer-Encoding,
    no hop-by-hop header but `Connection: keep-alive` (dropped), no bare CR or LF, and nothing else
    `parse_head` would refuse. Anything else takes `response_head`.
    """
    match = _PLAIN_STATUS.match(head)
    if match is None or head.count(b"\n") != head.count(b"\r\n") or head.count(b"\r") != head.count(b"\r\n"):
        return None
    status = int(match.group(1))
    line_end = head.index(b"\r\n")
    lower = head[line_end:-2].lower()
    if (status in (204, 304) or lower.count(b"content-length") != 1 or b"transfer-encoding" in lower
            or b" :" in lower or b"\t:" in lower or _REWRITTEN.search(lower)):
        return None
    length = _CONTENT_LENGTH.search(lower)
    if length is None:
        return None
    connection = _CONNECTION.search(lower)
    if connection is not None:
        if connection.group(1).strip() != b"keep-alive" or lower.count(b"\r\nconnection") != 1:
            return None
        at = line_end + connection.start()
        head = head[:at] + head[at + connection.end() - connection.start() - 2:]
    return status, int(length.group(1)), head


def response_head(response: Head, kind: int, length: int, *, keep_client: bool,
                  http10: bool) -> tuple[bytes, bool, bool, bool]:
    """The head to send the client for a final (non-101) response whose body is framed `kind`, `length`.

    `keep_client`: whether the client connection may stay open as far as the caller knows. Returns the
    head, whether the upstream connection is reusable after this response, whether the client connection
    stays open, and whether the body must be chunked on the way (a body delimited by the close, to an
    HTTP/1.1 client; an HTTP/1.0 client gets it delimited by the close instead).
    """
    version, status_text, reason = response.start
    r_connection = tokens(response.index.get(b"connection"))
    reusable = b"close" not in r_connection and (version == b"HTTP/1.1" or b"keep-alive" in r_connection)
    headers = end_to_end(response.headers, r_connection)
    chunk_down = False
    if kind == LENGTH:
        headers.append((b"Content-Length", b"%d" % length))
    elif kind != NO_BODY:
        if kind == UNTIL_CLOSE:
            reusable = False
        if http10:
            keep_client = False
        else:
            chunk_down = True
            headers.append((b"Transfer-Encoding", b"chunked"))
    elif b"content-length" in response.index and int(status_text) >= 200 and status_text != b"204":
        headers.append((b"Content-Length", response.index[b"content-length"]))
    if not keep_client:
        headers.append((b"Connection", b"close"))
    elif http10:
        headers.append((b"Connection", b"keep-alive"))
    return build_head(b"HTTP/1.1 " + status_text + b" " + reason, headers), reusable, keep_client, chunk_down
