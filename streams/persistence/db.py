"""Engine, sessions and migrations.

The same code runs on PostgreSQL (psycopg 3) and SQLite. Units of work are plain
synchronous functions taking a Session; ``Database.run`` executes one in a worker
thread inside a transaction, so agents never block the event loop on the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import ARRAY, ColumnElement, Engine, any_, create_engine, event, literal, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import QueryableAttribute, Session, sessionmaker

log = logging.getLogger(__name__)
T = TypeVar("T")

# Any constant works; it only has to be the same for every worker.
_MIGRATION_LOCK = 7_215_004_311


def normalise_url(url: str) -> URL:
    """``postgresql://`` and ``postgres://`` mean psycopg 3 here."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create_db_engine(url: str) -> Engine:
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30}, pool_pre_ping=True)
        _serialise_sqlite_writers(engine)
        return engine
    return create_engine(
        parsed,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=5,
        connect_args={"connect_timeout": 5, "application_name": "communication-service"},
    )


def _serialise_sqlite_writers(engine: Engine) -> None:
    """Begin every transaction IMMEDIATE: two threads that both read and then write
    would otherwise fail with "database is locked" instead of waiting their turn."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.engine = create_db_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def transaction(self, work: Callable[..., T], *args: Any) -> T:
        with self.sessions.begin() as session:
            return work(session, *args)

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """Run ``work(session, *args)`` in one transaction, off the event loop."""
        return await asyncio.to_thread(self.transaction, work, *args)

    def migrate(self) -> None:
        """Create or upgrade the schema; concurrent workers take turns on PostgreSQL.

        On PostgreSQL the whole upgrade is one transaction holding a transaction-level
        advisory lock: commit or rollback releases it, so a failed upgrade raises its
        own error and leaves no lock behind on the pooled connection (a session-level
        lock would need an unlock, which fails in the aborted transaction). SQLite has
        no advisory locks; alembic commits each migration there itself.
        """
        with self.engine.connect() as connection:
            if self.dialect == "postgresql":
                with connection.begin():  # alembic runs inside it (an external transaction)
                    connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
                    command.upgrade(alembic_config(connection), "head")
            else:
                command.upgrade(alembic_config(connection), "head")
                connection.commit()

    def dispose(self) -> None:
        self.engine.dispose()


def is_transient(error: BaseException) -> bool:
    """A database error that trying again later can cure (the server is down,
    restarting, unreachable, or the connection broke), as opposed to one the same
    statement would hit again (a value too long, a constraint violated)."""
    if isinstance(error, OperationalError | InterfaceError | DisconnectionError):
        return True
    return isinstance(error, DBAPIError) and bool(error.connection_invalidated)


async def run_retrying(
    database: Database,
    work: Callable[..., T],
    *args: Any,
    warn: Callable[[str, str], None],
    first_delay: float = 0.5,
    max_delay: float = 30.0,
) -> T:
    """``database.run(work, *args)``, waiting out transient errors with backoff;
    other errors are raised (retrying them would block forever)."""
    delay = first_delay
    while True:
        try:
            return await database.run(work, *args)
        except SQLAlchemyError as exc:
            if not is_transient(exc):
                raise
            warn("database unavailable (%s); retrying", type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


def one_of(
    session: Session, column: QueryableAttribute[Any] | ColumnElement[Any], values: Sequence[Any]
) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL ``column = ANY(array)``: one parameter
    instead of one per value, so psycopg parses the statement once, not at every
    call (it caches only short statements)."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(literal(list(values), ARRAY(column.expression.type)))
    return column.in_(values)


def alembic_config(connection: Any = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("streams.persistence.migrations")))
    config.attributes["connection"] = connection
    return config
