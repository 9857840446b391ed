"""Table writes outside Faust's own stream iteration.

Faust changelogs a table write to the partition of the event being processed, and
its RocksDB store writes into that partition's database: both read the event from
a context variable that the stream sets for each event it yields. An agent that
takes its events in batches (``noack_take``, streams.kafka.taking) runs outside that context, so it
names the event a write belongs to (one of the key's own partition) explicitly."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from faust import streams


@contextmanager
def processing(event: Any) -> Iterator[None]:
    """Within the block, ``event`` is the event being processed."""
    token = streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        streams._current_event.reset(token)
