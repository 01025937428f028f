"""Plugins of every test folder: a real PostgreSQL (`pg_cluster`, `pg_url`) from tests/pg.py, and how the tests
are shared among xdist workers (tests/scheduling.py)."""

pytest_plugins = ("tests.pg", "tests.scheduling")
