from __future__ import annotations

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
