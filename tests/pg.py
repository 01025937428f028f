"""A real PostgreSQL for the tests: Debian's server, a cluster in a temporary directory, a Unix socket only.

Each pytest process (each xdist worker) starts one cluster the first time a
test asks for it (`pg_cluster`), and every test gets a database of its own in
it (`pg_url`: created from template0, dropped after), so tests are
independent and run in parallel. The cluster listens on no TCP port at all:
only on a socket in its directory, at the fixed port number 5432 that names
the socket file, so a restart comes back at the same address, as a user's
does.

PostgreSQL refuses to run as root: as root, the server runs as Debian's
`postgres` user (created by the `postgresql` package) through `runuser`,
and the directory is handed to it. Where the server is not installed the
tests skip, except under CI (CI=true), where `scripts/test` installs it from
`scripts/system-packages` and a skip would hide a broken install step.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

SERVER_BINARIES = "/usr/lib/postgresql/*/bin"
"""Where Debian's postgresql-NN packages put initdb, pg_ctl and postgres; never the PATH's (it may hold others)."""
PORT = 5432
SUPERUSER = "postgres"
RUN_AS = "postgres"
"""The system user the server runs as when the tests run as root (Debian's package creates it)."""
_names = itertools.count()


def server_binaries() -> Path:
    """The newest Debian PostgreSQL server's bin directory; skips (fails under CI) when there is none."""
    found = sorted((p for p in Path("/").glob(SERVER_BINARIES.lstrip("/")) if (p / "pg_ctl").exists()),
                   key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if found:
        return found[-1]
    why = "PostgreSQL is not installed (apt-get install postgresql; listed in scripts/system-packages)"
    if os.environ.get("CI") == "true":
        pytest.fail(why + ": scripts/test should have installed it")
    pytest.skip(why)


class Cluster:
    """A PostgreSQL cluster in `root`, listening on a Unix socket in `root` only; start, stop and restart it."""

    def __init__(self, root: Path, binaries: Path) -> None:
        self.root = root
        self.bin = binaries
        self.data = root / "data"
        self.log = root / "postgresql.log"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam(RUN_AS)
            os.chown(root, owner.pw_uid, owner.pw_gid)
            self.as_user = ["runuser", "-u", RUN_AS, "--"]

    @property
    def socket_dir(self) -> str:
        return str(self.root)

    def url(self, database: str = "postgres") -> str:
        """A libpq URL for `database` through the cluster's socket."""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}&port={PORT}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}\n{self.logged()}"

    def init(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", SUPERUSER, "-E", "UTF8",
                  "--no-sync", "--no-instructions")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                "listen_addresses = ''\n"  # no TCP at all: the socket below only
                f"unix_socket_directories = '{self.socket_dir}'\n"
                f"port = {PORT}\n"
                "max_connections = 200\n"
                # Tests check what survives a killed client or a restarted server, never a power cut: skipping
                # the disk flushes keeps them fast on a machine shared by several test runs.
                "fsync = off\n"
                "full_page_writes = off\n")

    def start(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        """Stop (fast: open connections are cut) and start again at the same socket path and port."""
        self.stop()
        self.start()

    def logged(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def create_database(self) -> str:
        """A new, empty database; its name."""
        name = f"sw_{os.getpid()}_{next(_names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def running(self) -> bool:
        return subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "status"],
                              capture_output=True, timeout=30, check=False).returncode == 0

    def ensure_running(self) -> None:
        """Start it again if a test left it stopped."""
        if not self.running():
            self.start()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One running PostgreSQL cluster for this test process (each xdist worker has its own)."""
    binaries = server_binaries()
    root = Path(tempfile.mkdtemp(prefix="sw-pg-", dir="/tmp"))  # short: a socket path has at most 107 bytes
    cluster = Cluster(root, binaries)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        if (cluster.data / "postmaster.pid").exists():
            cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """A URL of a fresh database of its own in the session's cluster, dropped after the test."""
    name = pg_cluster.create_database()
    try:
        yield pg_cluster.url(name)
    finally:
        pg_cluster.ensure_running()  # a test that stops it may have failed before it started it again
        pg_cluster.drop_database(name)
