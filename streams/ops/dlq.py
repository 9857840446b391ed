"""``commsvc dlq list|show``: the dead-letter topic as an operator sees it.

A dead-letter record (``streams/kafka/dead_letters.py``, CONTRACT §5.8) is named by
its own place in the DLQ topic, ``PARTITION:OFFSET``; the ``partition`` and
``offset`` inside it are those of the message it holds. Listing never prints the
values (they hold patient data); ``show`` does, for one record.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any
from uuid import UUID

from aiokafka import TopicPartition

from domain.durations import parse_duration
from streams.ops.topic_reader import Broker, end_offsets, open_reader, read_to_end, within

# The fields of one line of ``commsvc dlq list --json``, in this order.
SUMMARY_FIELDS = (
    "id",
    "received_at",
    "source_topic",
    "source_partition",
    "source_offset",
    "key",
    "event_type",
    "event_id",
    "reason",
)
_NEVER = datetime.min.replace(tzinfo=UTC)
_ID = re.compile(r"\s*(\d+)\s*:\s*(\d+)\s*")


class DlqError(RuntimeError):
    """What an operator asked for cannot be done; the message says why."""


def parse_id(text: str) -> tuple[int, int]:
    """``"2:17"`` -> (2, 17)."""
    match = _ID.fullmatch(text)
    if match is None:
        raise DlqError(
            f"invalid record id {text!r}: expected PARTITION:OFFSET, e.g. 0:12 (as `commsvc dlq list` shows)"
        )
    return int(match.group(1)), int(match.group(2))


def _decoded(text: Any, encoding: Any) -> bytes | None:
    if not isinstance(text, str):
        return None
    if encoding == "base64":
        return base64.b64decode(text)
    return text.encode("utf-8")


@dataclass(frozen=True)
class DeadLetter:
    """One record of the DLQ topic, as the worker wrote it."""

    partition: int
    offset: int
    fields: dict[str, Any]
    # Why the record itself could not be read as a dead letter (None: it could).
    unreadable: str | None = None
    # The envelope's id and type, read from the value when the record does not name them.
    value_ids: tuple[str | None, str | None] = field(default=(None, None))

    @classmethod
    def from_bytes(cls, partition: int, offset: int, raw: bytes | None, *, keep_value: bool = True) -> DeadLetter:
        """``keep_value=False``: the value is read for its ids, then dropped (a listing
        of many records need not hold every patient's data in memory)."""
        try:
            fields = json.loads(raw or b"")
        except (UnicodeDecodeError, json.JSONDecodeError):
            return cls(partition, offset, {}, "not a dead-letter record (not JSON)")
        if not isinstance(fields, dict):
            return cls(partition, offset, {}, "not a dead-letter record (not a JSON object)")
        ids = _envelope_ids(cls(partition, offset, fields).value)
        if not keep_value:
            fields.pop("value", None)
        return cls(partition, offset, fields, value_ids=ids)

    @property
    def id(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def reason(self) -> str | None:
        return self.unreadable or _text(self.fields.get("reason"))

    @property
    def received_at(self) -> str | None:
        return _text(self.fields.get("received_at"))

    @property
    def received(self) -> datetime | None:
        try:
            received = datetime.fromisoformat(self.received_at or "")
        except ValueError:
            return None
        return received if received.tzinfo is not None else received.replace(tzinfo=UTC)  # the worker writes UTC

    @property
    def source_topic(self) -> str | None:
        return _text(self.fields.get("source_topic"))

    @property
    def source_partition(self) -> int | None:
        return _int(self.fields.get("partition"))

    @property
    def source_offset(self) -> int | None:
        return _int(self.fields.get("offset"))

    @property
    def key(self) -> bytes | None:
        """The original key, as it was on the source topic."""
        return _decoded(self.fields.get("key"), self.fields.get("key_encoding"))

    @property
    def key_text(self) -> str | None:
        """The key as the record shows it (base64 when it is not UTF-8)."""
        return _text(self.fields.get("key"))

    @property
    def event_id(self) -> str | None:
        return _text(self.fields.get("event_id")) or self.value_ids[0]

    @property
    def event_type(self) -> str | None:
        return _text(self.fields.get("event_type")) or self.value_ids[1]

    @property
    def value(self) -> bytes | None:
        """The original value, as it was on the source topic (None: not in the record)."""
        return _decoded(self.fields.get("value"), self.fields.get("value_encoding"))

    @property
    def value_omitted(self) -> str | None:
        """Why the value is not in the record (it was too large), if it is not."""
        return _text(self.fields.get("value_omitted"))

    def summary(self) -> dict[str, Any]:
        """One line of ``dlq list --json``: no value, no patient data."""
        return {
            "id": self.id,
            "received_at": self.received_at,
            "source_topic": self.source_topic,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "key": self.key_text,
            "event_type": self.event_type,
            "event_id": self.event_id,
            "reason": self.reason,
        }


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _envelope_ids(value: bytes | None) -> tuple[str | None, str | None]:
    """The event_id and event_type a value's envelope names, where it can be read."""
    if value is None:
        return None, None
    try:
        document = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None, None
    if not isinstance(document, dict):
        return None, None
    return _text(document.get("event_id")), _text(document.get("event_type"))


def usable_event_id(text: str | None) -> str | None:
    """``text`` as the worker would remember it (the canonical UUID), if it is one."""
    if text is None:
        return None
    try:
        return str(UUID(text))
    except ValueError:
        return None


# -- reading --------------------------------------------------------------------


async def read_all(broker: Broker) -> tuple[list[DeadLetter], dict[int, int]]:
    """Every record of the DLQ topic up to its end offsets now (without their values),
    and those offsets."""
    topic = broker.settings.topic_dlq
    async with open_reader(broker) as consumer:
        ends = await end_offsets(consumer, broker, topic)
        records = [
            DeadLetter.from_bytes(r.partition, r.offset, r.value, keep_value=False)
            async for r in read_to_end(consumer, broker, topic, ends=ends)
        ]
    return records, ends


async def fetch(broker: Broker, record_id: str) -> DeadLetter:
    """The record named ``PARTITION:OFFSET``; DlqError naming what is wrong with the id."""
    partition, offset = parse_id(record_id)
    topic = broker.settings.topic_dlq
    async with open_reader(broker) as consumer:
        ends = await end_offsets(consumer, broker, topic)
        if not ends:
            raise DlqError(f"the topic {topic} does not exist (yet): no dead letters")
        if partition not in ends:
            raise DlqError(f"{topic} has no partition {partition} (it has {len(ends)}: 0 to {max(ends)})")
        if offset >= ends[partition]:
            raise DlqError(f"no record {record_id} in {topic}: partition {partition} ends at offset {ends[partition]}")
        tp = TopicPartition(topic, partition)
        start = await within(consumer.beginning_offsets([tp]), broker.timeout, f"the broker at {broker.address}")
        if offset < start[tp]:
            raise DlqError(
                f"no record {record_id} in {topic}: partition {partition} now starts at offset "
                f"{start[tp]} (older records were removed by the topic's retention)"
            )
        only = read_to_end(consumer, broker, topic, start={partition: offset}, ends={partition: offset + 1})
        async with aclosing(only):
            async for record in only:
                return DeadLetter.from_bytes(record.partition, record.offset, record.value)
    raise DlqError(f"no record {record_id} in {topic} (removed by retention or compaction)")


# -- list -----------------------------------------------------------------------


def parse_since(text: str, now: datetime, zone: tzinfo) -> datetime:
    """A time (RFC 3339; without an offset, in ``zone``) or a duration back from now (``24h``, ``7d``)."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        since = datetime.fromisoformat(text.strip())
    except ValueError:
        raise DlqError(
            f"--since {text!r}: expected a time such as 2026-11-30T08:00:00+01:00 (or 2026-11-30) "
            "or a duration back from now such as 24h or 7d"
        ) from None
    return since if since.tzinfo is not None else since.replace(tzinfo=zone)


def select(
    records: Iterable[DeadLetter], *, since: datetime | None = None, reason: str | None = None, limit: int | None = None
) -> list[DeadLetter]:
    """The records that match, oldest first; with ``limit``, the ``limit`` most recent of them."""
    chosen = []
    for record in records:
        if since is not None and (record.received is None or record.received < since):
            continue
        if reason is not None and reason.casefold() not in (record.reason or "").casefold():
            continue
        chosen.append(record)
    chosen.sort(key=lambda r: (r.received or _NEVER, r.partition, r.offset))
    if limit is not None:
        chosen = chosen[-limit:] if limit > 0 else []
    return chosen


def format_line(record: DeadLetter) -> str:
    """One line of ``dlq list``: where it came from, what it was, and why it was refused."""
    source = f"{record.source_topic or '?'}[{_or_dash(record.source_partition)}]@{_or_dash(record.source_offset)}"
    return "  ".join(
        [
            record.id,
            record.received_at or "-",
            source,
            f"key={_or_dash(record.key_text)}",
            record.event_type or "-",
            record.event_id or "-",
            record.reason or "-",
        ]
    )


def _or_dash(value: Any) -> str:
    return "-" if value is None else str(value)


async def run_list(
    broker: Broker,
    *,
    since: str | None,
    reason: str | None,
    limit: int | None,
    as_json: bool,
    now: datetime,
    out: Callable[[str], None],
    err: Callable[[str], None],
) -> int:
    cutoff = parse_since(since, now, broker.settings.timezone) if since is not None else None
    records, ends = await read_all(broker)
    topic = broker.settings.topic_dlq
    if not records:
        empty = "is empty" if ends else "does not exist (yet)"
        err(f"{topic} {empty}: no dead letters")
        return 0
    chosen = select(records, since=cutoff, reason=reason, limit=limit)
    for record in chosen:
        out(json.dumps(record.summary(), ensure_ascii=False) if as_json else format_line(record))
    read_up_to = ", ".join(f"{p}:{end}" for p, end in sorted(ends.items()))
    err(f"{len(chosen)} of {len(records)} record(s) in {topic} (read up to offsets {read_up_to})")
    return 0


# -- show -----------------------------------------------------------------------


def format_record(record: DeadLetter) -> str:
    """``dlq show``: every field, then the value (indented when it is JSON)."""
    lines = [
        f"id:           {record.id}",
        f"received_at:  {_or_dash(record.received_at)}",
        f"source:       {_or_dash(record.source_topic)} partition {_or_dash(record.source_partition)} "
        f"offset {_or_dash(record.source_offset)}",
        f"key:          {_or_dash(record.key_text)}"
        + (" (base64)" if record.fields.get("key_encoding") == "base64" else ""),
        f"event_type:   {_or_dash(record.event_type)}",
        f"event_id:     {_or_dash(record.event_id)}",
        f"reason:       {_or_dash(record.reason)}",
    ]
    value = record.value
    if value is None:
        lines.append(f"value:        none ({record.value_omitted or 'the record holds no value'})")
        return "\n".join(lines)
    if record.fields.get("value_encoding") == "base64":
        lines.append(f"value ({len(value)} bytes, not UTF-8; base64):")
        lines.append(str(record.fields.get("value")))
        return "\n".join(lines)
    lines.append(f"value ({len(value)} bytes):")
    try:
        lines.append(json.dumps(json.loads(value), indent=2, ensure_ascii=False))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        lines.append(value.decode("utf-8"))
    return "\n".join(lines)


def show_json(record: DeadLetter) -> dict[str, Any]:
    """The record as the worker wrote it, with its id."""
    if record.unreadable is not None:
        return {"id": record.id, "error": record.reason}
    return {"id": record.id, **record.fields}


async def run_show(
    broker: Broker,
    record_id: str,
    *,
    as_json: bool,
    value_only: bool,
    out: Callable[[str], None],
    out_bytes: Callable[[bytes], None],
) -> int:
    record = await fetch(broker, record_id)
    if value_only:
        value = record.value
        if value is None:
            raise DlqError(f"{record.id} holds no value: {record.value_omitted or 'none was recorded'}")
        out_bytes(value)
    elif as_json:
        out(json.dumps(show_json(record), ensure_ascii=False, indent=2))
    else:
        out(format_record(record))
    return 0
