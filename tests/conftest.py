"""Fixtures every test folder may use: a real PostgreSQL (`pg_cluster`, `pg_url`) from tests/pg.py."""

pytest_plugins = ("tests.pg",)
