"""Bundles: several internal messages of one partition in one record (issue 19).

Per record, Faust and the broker cost far more than the service's own work on it
(the consume, the produce and its acknowledgement), so the ingest agents put the
messages of a batch of inputs that go to one inbox partition into one record, and
the therapist agent does the same with its send commands. A bundle is
``{"kind": "bundle", "messages": [...]}``, the messages in their order, each in
its own JSON form; it goes to an explicit partition, the one its messages' keys
(therapist ids) lead to, so it is co-partitioned with the single messages of the
same therapists. A group of one is sent as the single message it holds, keyed as
before; single messages are read as they always were.

Bundles are kept well below the broker's message limit (1 MB by default): a group
is split before it grows past ``MAX_BUNDLE_BYTES``, and a message at least that
large (inputs may be up to COMM_MAX_EVENT_BYTES, 512 KiB at most) goes alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from aiokafka.partitioner import murmur2

from streams.messages.codec import M, from_wire_kind, loads

KIND = "bundle"
MAX_BUNDLE_BYTES = 256 * 1024

_OPEN = b'{"kind":"' + KIND.encode() + b'","messages":['
_CLOSE = b"]}"

T = TypeVar("T")


def partition_of(therapist_id: int, partitions: int) -> int:
    """Kafka's default partitioner for a keyed message, the key being the id as text."""
    digest: int = murmur2(str(therapist_id).encode())
    return (digest & 0x7FFFFFFF) % partitions


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One encoded message to pack, and what it stands for (``item``: e.g. the input
    event it came from, to be dead-lettered if its record is refused)."""

    partition: int
    key: bytes
    value: bytes
    item: T


@dataclass(frozen=True)
class Packed(Generic[T]):
    """One record to send: a bundle (``key`` None) or a single message."""

    partition: int
    key: bytes | None
    value: bytes
    items: tuple[T, ...]


def pack(entries: Iterable[Entry[T]], max_bytes: int = MAX_BUNDLE_BYTES) -> list[Packed[T]]:
    """The records for ``entries``: per partition (in the order partitions first
    appear), their messages in order, split so that no bundle exceeds ``max_bytes``."""
    groups: dict[int, list[list[Entry[T]]]] = {}
    sizes: dict[int, int] = {}
    for entry in entries:
        runs = groups.setdefault(entry.partition, [[]])
        size = len(entry.value) + 1
        if runs[-1] and sizes[entry.partition] + size > max_bytes:
            runs.append([])
            sizes[entry.partition] = 0
        runs[-1].append(entry)
        sizes[entry.partition] = sizes.get(entry.partition, 0) + size
    return [_record(partition, run) for partition, runs in groups.items() for run in runs]


def _record(partition: int, run: Sequence[Entry[T]]) -> Packed[T]:
    items = tuple(entry.item for entry in run)
    if len(run) == 1:
        return Packed(partition, run[0].key, run[0].value, items)
    return Packed(partition, None, _OPEN + b",".join(entry.value for entry in run) + _CLOSE, items)


@dataclass(frozen=True)
class Bundle(Generic[M]):
    """A decoded bundle: its messages in their order."""

    messages: tuple[M, ...]


def decode_record(raw: bytes | str, kinds: Mapping[str, type[M]], topic: str) -> M | Bundle[M]:
    """The single message ``raw`` holds, or the bundle of them."""
    wire = loads(raw)
    kind = wire.get("kind") if isinstance(wire, dict) else None
    if kind == KIND:
        return Bundle(tuple(from_wire_kind(member, kinds, topic) for member in wire["messages"]))
    return from_wire_kind(wire, kinds, topic)


def unpack(raw: bytes | str, kinds: Mapping[str, type[M]], topic: str) -> tuple[M, ...]:
    """The messages of a record, one or a bundle of them."""
    decoded = decode_record(raw, kinds, topic)
    return decoded.messages if isinstance(decoded, Bundle) else (decoded,)


@dataclass(frozen=True)
class MemberRecord:
    """One message of a consumed bundle, as a dead letter names it: where the bundle
    was (topic, partition, offset), the message's own key and its value alone."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
