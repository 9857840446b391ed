"""What the therapist agent works on: inbox messages with the records they came in."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from streams.messages import inbox
from streams.messages.bundles import MemberRecord
from streams.messages.codec import encode

T = TypeVar("T")


@dataclass(frozen=True)
class Item:
    """An inbox message and the record it came in (None: handled outside a stream)."""

    message: inbox.InboxMessage
    event: Any
    bundled: bool = False

    @property
    def record(self) -> Any:
        """What a dead letter of this message copies: its record, or for a message of
        a bundle, the message alone (with the bundle's place)."""
        message = self.event.message
        if not self.bundled:
            return message
        therapist_id = getattr(self.message, "therapist_id", None)
        key = None if therapist_id is None else str(therapist_id).encode()
        return MemberRecord(message.topic, message.partition, message.offset, key, encode(self.message))


@dataclass(frozen=True)
class Refusal:
    """An inbox message that was not applied, and why."""

    item: Item
    error: BaseException


def by_therapist(items: Iterable[Item]) -> dict[int, list[Item]]:
    """The items per therapist, each group in order (therapists in order of appearance)."""
    groups: dict[int, list[Item]] = {}
    for item in items:
        if isinstance(item.message, inbox.Tick):
            raise ValueError("a tick is not about one therapist")
        groups.setdefault(item.message.therapist_id, []).append(item)
    return groups


def across_partitions(writes: Mapping[int, tuple[T, Any]]) -> Iterator[tuple[int, tuple[T, Any]]]:
    """The table writes of a batch (therapist -> (state, the event it is written in)),
    taking the partitions in turn. With one record per producer batch (Tansu), a
    changelog record waits until the one before it in its partition has gone out,
    and Faust sends them one after another: writes in a row for one partition would
    go out one per broker round trip, taken in turn up to one per partition."""
    runs: dict[int | None, list[tuple[int, tuple[T, Any]]]] = {}
    for therapist_id, write in writes.items():
        event = write[1]
        runs.setdefault(None if event is None else event.message.partition, []).append((therapist_id, write))
    for turn in itertools.zip_longest(*runs.values()):
        yield from (write for write in turn if write is not None)
