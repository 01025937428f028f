"""What more than one router backend needs: process helpers, tallies, weight shares.

    process   liveness, waiting and logs of the daemons the routers run (known by pid and /proc)
    tallies   per-release request, error and latency tallies, serialisable
    shares    release weights turned into per-server weights (HAProxy, nginx)

Nothing here knows one backend; the backends (`builtin`, `haproxy`, `nginx`)
import this package and `stagewise.core`, never each other.
"""
