"""Which database errors are waited out, and which are not (retrying them would
block the agent forever)."""

import pytest
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from streams.persistence.db import is_transient, run_retrying


def error(kind, invalidated=False):
    return kind("INSERT …", {}, Exception("driver message"), connection_invalidated=invalidated)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (error(OperationalError), True),  # server down, connection refused
        (error(DataError), False),  # a value too long for its column
        (error(IntegrityError), False),  # a constraint violated
        (error(DataError, invalidated=True), True),  # the connection broke underneath
    ],
)
def test_is_transient(exc, transient):
    assert is_transient(exc) is transient


class FlakyDatabase:
    """Stands in for Database.run: fails ``failures`` times, then answers."""

    def __init__(self, failures):
        self.failures = list(failures)
        self.calls = 0

    async def run(self, work, *args):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return work(None, *args)


async def test_transient_errors_are_waited_out():
    database = FlakyDatabase([error(OperationalError), error(OperationalError)])
    warnings = []
    result = await run_retrying(
        database, lambda session, x: x * 2, 21, warn=lambda *a: warnings.append(a), first_delay=0.001
    )
    assert result == 42 and database.calls == 3 and len(warnings) == 2


async def test_other_errors_are_raised_at_once():
    database = FlakyDatabase([error(DataError)])
    with pytest.raises(DataError):
        await run_retrying(database, lambda session: None, warn=lambda *a: None, first_delay=0.001)
    assert database.calls == 1
