"""Fakes for the layers above the drivers: a clock, a platform, routers with scripted traffic.

They implement the same Protocols as the real drivers, in memory and on a
clock you move by hand, so a whole delivery runs in milliseconds:

    clock = FakeClock()
    platform, router = FakePlatform(clock), FakeRouter(clock, rate=100)
    router.error_rate["v3"] = 0.1          # the bad release fails 10% of requests
    controller = Controller(tmp, clock=clock, routers={"builtin": router}, platforms={"local": platform})

Never use them to test a driver: a driver is tested against the real thing.
"""

from stagewise.testing.fakes import FakeClock, FakePlatform, FakeRouter, SteadyRouter

__all__ = ["FakeClock", "FakePlatform", "FakeRouter", "SteadyRouter"]
