"""The therapist agent's table work, kept clear of the moments Faust takes the
table's partitions away.

Faust gives up a table's partitions while the agents still run: at a rebalance it
revokes them before it waits for the streams, and at a stop (``stream_wait_empty``
off, so that a worker stops with messages in hand) it stops the tables at once.
Its RocksDB store then forgets those partitions' databases, so a read finds no
state, and the write that follows replaces a therapist's whole state (profile,
waiting requests, replay memory) with what one message makes of nothing; a
fresh-clone CI run lost a therapist's profile that way at a SIGTERM.

So the app pauses the gate before it gives partitions up: no new batch starts,
the batch in hand may finish (for up to ``wait`` seconds), and only then are the
partitions revoked or the tables stopped. A rebalance resumes the gate once the
new assignment is in place; a stop leaves it closed. Table work that still finds
the tables gone raises ``TablesClosed``: its records are not acknowledged, so they
come again (after the restart, or to the partition's new owner), and every
decision published meanwhile carries a key downstream recognises."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

log = logging.getLogger(__name__)


class TablesClosed(Exception):
    """The table's partitions were given up while a batch was in hand."""


class TableGate:
    def __init__(self) -> None:
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._busy = 0
        self._tables_open = True
        self._stopping = False

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        """One batch of table work: it waits out a rebalance, and is refused at a stop."""
        await self._resumed.wait()
        if self._stopping:
            raise TablesClosed("the worker is stopping")
        self._busy += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._busy -= 1
            if not self._busy:
                self._idle.set()

    def check(self) -> None:
        """Before each table read or write: raise if the tables are gone."""
        if not self._tables_open:
            raise TablesClosed("the table's partitions were given up during the batch")

    async def pause(self, wait: float) -> None:
        """Before partitions are given up: hold new batches, let the one in hand finish."""
        self._resumed.clear()
        await self._quiesce(wait)

    def resume(self) -> None:
        """After a rebalance assigned the partitions anew."""
        if self._stopping:
            return
        self._tables_open = True
        self._resumed.set()

    async def stop(self, wait: float) -> None:
        """Before the tables stop: the batch in hand may finish; no other starts."""
        self._stopping = True
        self._resumed.set()  # a batch waiting out a rebalance gives up
        await self._quiesce(wait)

    async def _quiesce(self, wait: float) -> None:
        try:
            await asyncio.wait_for(self._idle.wait(), wait)
        except TimeoutError:
            log.warning(
                "the therapist agent's batch did not finish within %.0f s; its records are left unacknowledged",
                wait,
            )
        finally:
            self._tables_open = False
