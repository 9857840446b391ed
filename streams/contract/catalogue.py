"""What the contract documents: the five public topics and every message on them,
each with the pydantic model of its payload. Built from the registries of the wire
models, so a new event type is documented as soon as it has a model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from streams.messages.commands import COMMANDS
from streams.messages.inputs import MATCHING_EVENTS, THERAPIST_EVENTS
from streams.messages.outputs import DEAD_LETTER, OUTPUT_EVENTS
from streams.settings import Settings

DEAD_LETTER_NAME = "dead_letter"

Kind = Literal["input", "command", "output", "dead_letter"]

# A message key is the entity id as a decimal string (CONTRACT §1).
_DECIMAL_KEY = {"type": "string", "pattern": "^[1-9][0-9]*$"}


@dataclass(frozen=True)
class Channel:
    """A public topic, under its default name (each is configurable)."""

    topic: str
    setting: str  # the variable that renames it
    action: Literal["receive", "send"]  # what the service does on it
    title: str
    description: str
    key_description: str
    key_schema: dict[str, Any]

    @property
    def id(self) -> str:
        return self.topic


@dataclass(frozen=True)
class Message:
    name: str  # the event type, or dead_letter
    channel: Channel
    kind: Kind
    payload: type[BaseModel]

    @property
    def enveloped(self) -> bool:
        return self.kind != "dead_letter"

    @property
    def published(self) -> bool:
        """Published by the service (its consumers rely on every field), rather than
        consumed by it (its producers rely on what is accepted)."""
        return self.channel.action == "send"


def _default(field: str) -> str:
    value = Settings.model_fields[field].default
    assert isinstance(value, str)
    return value


def _key(name: str) -> dict[str, Any]:
    return {**_DECIMAL_KEY, "description": f"the {name} as a decimal string", "examples": [_KEY_EXAMPLES[name]]}


_KEY_EXAMPLES = {"placement_request_id": "4711", "therapist_id": "7"}


MATCHING = Channel(
    topic=_default("topic_matching"),
    setting="COMM_TOPIC_MATCHING",
    action="receive",
    title="Matching events",
    description="Placement requests from the matching service: a patient proposed to a therapist, "
    "and the changes of that request's status.",
    key_description="placement_request_id",
    key_schema=_key("placement_request_id"),
)
THERAPISTS = Channel(
    topic=_default("topic_therapists"),
    setting="COMM_TOPIC_THERAPISTS",
    action="receive",
    title="Therapist events",
    description="The therapist directory: contact data and phone availability.",
    key_description="therapist_id",
    key_schema=_key("therapist_id"),
)
COMMANDS_CHANNEL = Channel(
    topic=_default("topic_commands"),
    setting="COMM_TOPIC_COMMANDS",
    action="receive",
    title="Commands",
    description="Operations requested by other services and staff tools. A well-formed command that "
    "cannot be carried out is answered with communication.command_rejected; a malformed one "
    "is dead-lettered.",
    key_description="therapist_id",
    key_schema=_key("therapist_id"),
)
EVENTS = Channel(
    topic=_default("topic_events"),
    setting="COMM_TOPIC_EVENTS",
    action="send",
    title="Communication events",
    description="Everything the service decided and did. Output events carry "
    '"producer": "communication-service" and, where they result from an input event or a '
    "command, its event_id as causation_id.",
    key_description="therapist_id",
    key_schema=_key("therapist_id"),
)
DLQ = Channel(
    topic=_default("topic_dlq"),
    setting="COMM_TOPIC_DLQ",
    action="send",
    title="Dead letters",
    description="Input that could not be accepted, with the reason and the original bytes, so that "
    "it can be fixed and replayed. Not an envelope: the record itself is the value.",
    key_description="the original message's key",
    key_schema={
        "type": ["string", "null"],
        "description": "the key of the original message, unchanged (null when it had none)",
        "examples": ["4711"],
    },
)

CHANNELS: tuple[Channel, ...] = (MATCHING, THERAPISTS, COMMANDS_CHANNEL, EVENTS, DLQ)


def messages() -> list[Message]:
    """Every public message, by channel, then by name."""
    sources: tuple[tuple[Channel, Kind, Mapping[str, type[BaseModel]]], ...] = (
        (MATCHING, "input", MATCHING_EVENTS),
        (THERAPISTS, "input", THERAPIST_EVENTS),
        (COMMANDS_CHANNEL, "command", COMMANDS),
        (EVENTS, "output", OUTPUT_EVENTS),
    )
    found: list[Message] = []
    for channel, kind, registry in sources:
        found.extend(
            Message(name=name, channel=channel, kind=kind, payload=model) for name, model in sorted(registry.items())
        )
    found.append(Message(name=DEAD_LETTER_NAME, channel=DLQ, kind="dead_letter", payload=DEAD_LETTER))
    return found
