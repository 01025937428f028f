"""The builtin router: a Python asyncio reverse proxy, one process per service, and its driver.

`BuiltinRouter` (`driver`) is what the rest of stagewise uses; it runs
`python -m stagewise.routers.builtin.proxy` (also `stagewise router`) and talks
to it over a Unix socket. Everything else in this package is the data plane
inside that process:

    proxy          the process: listeners, route table swaps, the admin API, shutdown
    plan           a route table compiled for the request path; how a request picks an endpoint
    fast           plain requests served by protocol callbacks (the client side) ...
    fast_upstream  ... and the pooled upstream connection that answers them
    streams        every other request, on asyncio streams
    exchange       one request/response with an upstream on streams, retrying stale connections
    rewrite        the one rewrite of request and response heads both paths send
    wire           HTTP/1.1 message heads and body framing (strict: no request smuggling)
    pool           keep-alive connections per endpoint
    counters       per-release counters and their renderings

It imports `stagewise.core` and `stagewise.routers.common` only, never another router.
"""

from stagewise.routers.builtin.driver import BuiltinRouter

__all__ = ["BuiltinRouter"]
