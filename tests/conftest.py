from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.persistence.db import Database
from tests.services import postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated database of each kind the service supports."""
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'test.db'}")
        db.migrate()
        yield db
        db.dispose()
    else:
        with postgres_database() as url:
            db = Database(url)
            db.migrate()
            yield db
            db.dispose()


def pytest_collection_finish(session: pytest.Session) -> None:
    """What the imports and the collection built lives for the whole run: moved out of
    the collector's sight (gc.freeze), so that the collection after each test scans
    only what tests made since (about 0.35 s a test otherwise)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def collect_garbage_after_each_test() -> Iterator[None]:
    """Resources a test leaves unclosed are reported when they are collected; collect
    at the end of each test, so the report names that test and not a later one."""
    yield
    gc.collect()
