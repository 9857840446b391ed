"""Real services for integration and end-to-end tests: PostgreSQL databases on the
running server, SQLite files, a Tansu broker, an SMTP server, worker processes."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text

ADMIN_URL = os.environ.get("COMM_TEST_POSTGRES_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, empty database on the running PostgreSQL server; dropped afterwards."""
    name = f"commsvc_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class PrivateCluster:
    """A PostgreSQL cluster of the test's own (initdb + pg_ctl), which a test may stop
    and start to simulate a database outage. The server binaries refuse to run as
    root, so they run as the ``postgres`` user when the tests run as root."""

    def __init__(self) -> None:
        import shutil
        import subprocess
        import tempfile

        from streams.demo.broker import free_port

        self._subprocess = subprocess
        self.bindir = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        self.root = tempfile.mkdtemp(prefix="commsvc-pg-")
        self.data = os.path.join(self.root, "data")
        self.port = free_port()
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        self._subprocess.run(
            [*self.as_postgres, os.path.join(self.bindir, tool), *args],
            check=True,
            capture_output=True,
            cwd=self.root,
        )

    def start(self) -> PrivateCluster:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", self.data, "-o", options, "-l", os.path.join(self.root, "log"), "-w", "start")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        import shutil

        with contextlib.suppress(Exception):  # already stopped
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
