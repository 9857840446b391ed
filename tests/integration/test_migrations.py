"""The alembic migrations create exactly the schema the models describe, on
PostgreSQL and SQLite, and running them again changes nothing. A failing upgrade
reports its own error and leaves no migration lock behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from streams.persistence.db import Database, alembic_config
from tests.services import postgres_database


def test_migrations_match_the_models(database):
    database.migrate()  # a second time: nothing to do
    with database.engine.connect() as connection:
        command.check(alembic_config(connection))  # raises when models and schema differ


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database of each kind with no schema yet."""
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'test.db'}")
        yield db
        db.dispose()
    else:
        with postgres_database() as url:
            db = Database(url)
            yield db
            db.dispose()


def advisory_locks(db: Database) -> int:
    """Advisory locks held in this database (tests of others may share the server),
    seen from a connection of its own."""
    observer = create_engine(db.url)
    try:
        with observer.connect() as connection:
            return connection.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                )
            ).scalar_one()
    finally:
        observer.dispose()


def migrate_within(db: Database, seconds: float) -> None:
    """``db.migrate()``, failing the test instead of hanging when it waits on a lock."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            db.migrate()
            outcome.append(None)
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert outcome, f"migrate did not finish within {seconds}s (waiting for a migration lock?)"
    if outcome[0] is not None:
        raise outcome[0]


def test_a_failing_upgrade_raises_its_own_error_and_leaves_no_lock(empty_database):
    db = empty_database
    # A table in the way of migration 0003 makes the upgrade fail.
    with db.engine.begin() as connection:
        connection.execute(text("CREATE TABLE phone_calls (conflict INTEGER)"))

    with pytest.raises(DBAPIError) as failure:
        db.migrate()
    message = str(failure.value)
    assert "phone_calls" in message and "already exists" in message, message
    assert "transaction is aborted" not in message

    if db.dialect == "postgresql":
        assert advisory_locks(db) == 0  # the migration lock went with the failed transaction

    with db.engine.begin() as connection:
        connection.execute(text("DROP TABLE phone_calls"))
    migrate_within(db, 60)  # the same engine (and its pooled connection) migrates now
    if db.dialect == "postgresql":
        assert advisory_locks(db) == 0
        other_worker = Database(db.url.render_as_string(hide_password=False))
        try:
            migrate_within(other_worker, 60)  # another worker is not kept waiting either
        finally:
            other_worker.dispose()
    with db.engine.connect() as connection:
        command.check(alembic_config(connection))


def test_concurrent_workers_take_turns_migrating_postgresql():
    with postgres_database() as url:
        workers = [Database(url) for _ in range(3)]
        try:
            failures: list[BaseException] = []

            def run(db: Database) -> None:
                try:
                    migrate_within(db, 60)
                except BaseException as exc:  # reported by the test thread
                    failures.append(exc)

            threads = [threading.Thread(target=run, args=(db,)) for db in workers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert failures == []
            assert advisory_locks(workers[0]) == 0
            with workers[0].engine.connect() as connection:
                command.check(alembic_config(connection))
        finally:
            for db in workers:
                db.dispose()
