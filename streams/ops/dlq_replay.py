"""``commsvc dlq replay``: a dead letter's value, or a corrected one, back to the input
topic it came from, with its original key.

- **Checked first, as the worker will check it:** the value goes through the ingest
  or command agent's own parse step (``streams.agents.ingest``, ``parse_input`` with
  the same known events and limits, the clock-skew check of directory events, and a
  therapist's availability). What the worker would refuse is refused here, with the
  worker's reason, and nothing is published.
- **Twice has the effect of once:** the worker recognises an event it has seen by
  its ``event_id`` (per therapist; commands in ``processed_commands``), so a replay
  keeps the original's. A record without a usable one (none, or not a UUID), and a
  therapist event whose rest was applied when its availability was refused, get one
  derived from the record's own id (uuid5): the same at every replay of that record.
  A corrected value may leave ``event_id`` out (it is filled in) but not bring
  another one, which would make a second replay count again.
- **Inputs only:** a record from an internal topic (the therapist agent's inbox, the
  send commands) holds the service's own message, not an input; it is not replayed.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from aiokafka import AIOKafkaProducer

from streams.agents.ingest import IngestAgent, matching_ingest, therapist_ingest
from streams.kafka.topics import Topics, internal_topic_names
from streams.messages.commands import COMMANDS
from streams.messages.parsing import Rejection, parse_input
from streams.ops.dlq import DeadLetter, DlqError, fetch, usable_event_id
from streams.ops.topic_reader import Broker, BrokerUnavailable, within
from streams.settings import Settings

# Derived event ids live in a namespace of their own (uuid5 of "<dlq topic>:<id>").
REPLAY_NAMESPACE = uuid.UUID("5d0f6a52-3c1e-4be4-9f3b-0c7a2b1e9d41")
# The ingest agent's reason for an availability refused on its own (the rest applied).
PARTLY_APPLIED = "the rest of the event was applied"
# Set on every replayed message: which dead letter it came from.
REPLAY_HEADER = "commsvc-replay-of"

# What an internal topic holds, for the refusal.
_INTERNAL_ROLES = {
    "inbox": "the therapist agent's inbox",
    "send_commands": "the therapist agent's decisions for the sender agent",
    "changelog": "the therapist table's changelog",
}


class ReplayRefused(DlqError):
    """The record, or its corrected value, is not replayed; nothing was published."""


@dataclass(frozen=True)
class Replay:
    """What is about to be published, and what was changed to get there."""

    record_id: str
    topic: str
    key: bytes | None
    value: bytes
    event_type: str | None
    event_id: str
    corrected: bool
    notes: tuple[str, ...] = ()


# -- validation, as the worker does it -------------------------------------------


Check = Callable[[bytes], str | None]


def _ingest_check(agent: IngestAgent) -> Check:
    """The ingest agent's own parse step (limits, schema, clock skew), then its
    translation (which refuses an invalid availability). None: accepted."""

    def check(value: bytes) -> str | None:
        parsed = agent._parse(value)
        if isinstance(parsed, Rejection):
            return parsed.reason
        _, refused = agent.translate(parsed)
        if refused is not None:
            return f"payload.{refused} (the worker would apply the rest of the event and refuse the availability)"
        return None

    return check


def _command_check(settings: Settings) -> Check:
    """As the command agent parses (streams/agents/commands.py)."""

    def check(value: bytes) -> str | None:
        parsed = parse_input(value, COMMANDS, max_bytes=settings.max_command_bytes, limit_name="COMM_MAX_COMMAND_BYTES")
        return parsed.reason if isinstance(parsed, Rejection) else None

    return check


def input_checks(settings: Settings, clock: Callable[[], datetime]) -> dict[str, Check]:
    """Input topic -> how the worker validates what arrives there."""
    # The agents' parse steps publish nothing: they never touch the topics.
    no_topics = cast(Topics, None)
    return {
        settings.topic_matching: _ingest_check(matching_ingest(no_topics, clock, settings)),
        settings.topic_therapists: _ingest_check(therapist_ingest(no_topics, clock, settings)),
        settings.topic_commands: _command_check(settings),
    }


# -- the plan ---------------------------------------------------------------------


def derived_event_id(settings: Settings, record: DeadLetter) -> str:
    """The same for every replay of ``record``, and never an id another event has."""
    return str(uuid.uuid5(REPLAY_NAMESPACE, f"{settings.topic_dlq}:{record.id}"))


def replay_event_id(settings: Settings, record: DeadLetter) -> tuple[str, str | None]:
    """The event_id a replay of ``record`` carries, and why it is not the original's
    (None: it is)."""
    if PARTLY_APPLIED in (record.reason or ""):
        return derived_event_id(settings, record), (
            "the rest of the original event was applied when its availability was refused, so the original "
            "event_id would be taken for a duplicate"
        )
    original = usable_event_id(record.fields.get("event_id")) or usable_event_id(record.value_ids[0])
    if original is not None:
        return original, None
    return derived_event_id(settings, record), "the original has no usable event_id"


def refuse_internal(settings: Settings, record: DeadLetter) -> None:
    topic = record.source_topic
    for name, internal in internal_topic_names(settings).items():
        if topic == internal:
            raise ReplayRefused(
                f"{record.id} came from {topic}, an internal topic ({_INTERNAL_ROLES.get(name, name)}): it holds "
                "the service's own message, not an input, and publishing it again by hand could repeat a "
                "decision. It is not replayed; its reason says what went wrong"
            )
    inputs = (settings.topic_matching, settings.topic_therapists, settings.topic_commands)
    if topic not in inputs:
        raise ReplayRefused(
            f"{record.id} came from {topic or 'an unnamed topic'}, which is none of this configuration's "
            f"input topics ({', '.join(inputs)}; COMM_TOPIC_*): nothing to replay it to"
        )


def _with_event_id(value: bytes, event_id: str, replaceable: set[str], why: str | None) -> tuple[bytes, str | None]:
    """``value`` carrying ``event_id``, and a note when it had to be set; refused when
    the value names another event. A value that is no JSON object is left to the
    validation to refuse."""
    try:
        document = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return value, None
    if not isinstance(document, dict):
        return value, None
    given: Any = document.get("event_id")
    if isinstance(given, str) and usable_event_id(given) == event_id:
        return value, None
    if given is not None and given not in replaceable:
        raise ReplayRefused(
            f"the value's event_id {given!r} is not the one a replay of this record carries ({event_id}): "
            "a replay keeps it, so that replaying twice has the effect of once. Leave event_id out of the "
            "value (it is filled in) or set it to that one"
        )
    document["event_id"] = event_id
    because = f" ({why})" if why else ""
    if given is None:
        note = f"event_id {event_id} filled in{because}"
    else:
        note = f"event_id {given!r} replaced by {event_id}{because}"
    return json.dumps(document, ensure_ascii=False).encode("utf-8"), note


def plan(settings: Settings, record: DeadLetter, corrected: bytes | None, clock: Callable[[], datetime]) -> Replay:
    """What a replay of ``record`` (with the ``corrected`` value, if given) publishes;
    ReplayRefused saying why it publishes nothing."""
    if record.unreadable is not None:
        raise ReplayRefused(f"{record.id} is {record.unreadable}")
    refuse_internal(settings, record)
    assert record.source_topic is not None
    value = corrected if corrected is not None else record.value
    if value is None:
        raise ReplayRefused(
            f"{record.id} holds no value ({record.value_omitted or 'none was recorded'}); "
            "give a corrected one with --value-file"
        )
    event_id, why = replay_event_id(settings, record)
    replaceable = {
        text
        for text in (record.fields.get("event_id"), record.value_ids[0])
        if isinstance(text, str) and (why is not None or usable_event_id(text) is None)
    }
    value, note = _with_event_id(value, event_id, replaceable, why)
    reason = input_checks(settings, clock)[record.source_topic](value)
    if reason is not None:
        raise ReplayRefused(f"the worker would refuse the {'corrected ' if corrected else ''}value: {reason}")
    try:
        event_type = json.loads(value).get("event_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        event_type = None
    return Replay(
        record_id=record.id,
        topic=record.source_topic,
        key=record.key,
        value=value,
        event_type=event_type if isinstance(event_type, str) else None,
        event_id=event_id,
        corrected=corrected is not None,
        notes=() if note is None else (note,),
    )


def question(replay: Replay, value_file: str | None) -> str:
    what = f"the corrected value from {value_file}" if replay.corrected and value_file else "the original value"
    key = "no key" if replay.key is None else f"key {replay.key.decode('utf-8', 'backslashreplace')}"
    return (
        f"Publish {replay.event_type or 'the event'} {replay.event_id} ({what}, {len(replay.value)} bytes) "
        f"to {replay.topic} with {key}?"
    )


def ask_on_terminal(question: str) -> bool:
    """Ask on the terminal; without one, refuse (a script passes --yes)."""
    if not sys.stdin.isatty():
        raise DlqError("no terminal to ask for confirmation on: pass --yes to replay without asking")
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


# -- publishing --------------------------------------------------------------------


async def publish(broker: Broker, replay: Replay) -> tuple[int, int]:
    """Publish ``replay``, acknowledged by all in-sync replicas; its partition and offset."""
    producer = AIOKafkaProducer(acks="all", linger_ms=0, **broker.options)
    origin = f"{broker.settings.topic_dlq}:{replay.record_id}".encode()
    try:
        await broker.connect(producer.start)
        try:
            sent = await within(
                producer.send_and_wait(replay.topic, replay.value, key=replay.key, headers=[(REPLAY_HEADER, origin)]),
                broker.timeout,
                f"the broker at {broker.address}",
            )
        except BrokerUnavailable as exc:
            raise BrokerUnavailable(
                f"{exc}: the replay may or may not have been published; replaying again is safe "
                f"(it carries the same event_id {replay.event_id})"
            ) from None
    finally:
        await producer.stop()
    return int(sent.partition), int(sent.offset)


async def run_replay(
    broker: Broker,
    record_id: str,
    *,
    corrected: bytes | None,
    value_file: str | None,
    yes: bool,
    confirm: Callable[[str], bool],
    clock: Callable[[], datetime],
    out: Callable[[str], None],
    err: Callable[[str], None],
) -> int:
    record = await fetch(broker, record_id)
    replay = plan(broker.settings, record, corrected, clock)
    for note in replay.notes:
        err(note)
    if not yes and not confirm(question(replay, value_file)):
        err("nothing published")
        return 1
    partition, offset = await publish(broker, replay)
    out(
        f"replayed {record.id} to {replay.topic} (partition {partition}, offset {offset}): "
        f"{replay.event_type or 'event'} {replay.event_id}"
    )
    return 0
