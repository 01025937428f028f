"""The nginx router: a whole configuration per table, checked with `nginx -t`, loaded by a graceful reload.

    driver   `NginxRouter`: runs and reloads one nginx per service, reads stats
    config   the nginx configuration for one route table
    logs     per-release counters from nginx's JSON access log
    runtime  who the workers run as when nginx starts as root, and the one folder they write in

It imports `stagewise.core` and `stagewise.routers.common` only, never another router.
"""

from stagewise.routers.nginx.driver import NginxRouter

__all__ = ["NginxRouter"]
