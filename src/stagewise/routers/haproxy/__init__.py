"""The HAProxy router: a managed or external HAProxy driven through its Runtime API.

    driver   `HaproxyRouter`: runs or attaches to HAProxy, applies tables, reads stats
    config   what stagewise wants from HAProxy for a table, and the configuration that says it
    api      the Runtime API over the admin socket, errors translated
    logs     per-request latency from HAProxy's log lines on a datagram socket

It imports `stagewise.core` and `stagewise.routers.common` only, never another router.
"""

from stagewise.routers.haproxy.driver import HaproxyRouter

__all__ = ["HaproxyRouter"]
