"""The base of everything the service publishes: ``PublishedModel`` (the JSON it
writes), ``OutputPayload`` (a payload of communication-events) and the envelope
``Event[P]`` around it (CONTRACT §1), with ``encode_event``, the one way an output
event's bytes are made. The payload models themselves are in
``streams.messages.outputs``.

The JSON is what the service has always written: keys in field order, times as
``datetime.isoformat()`` (with the offset they carry, ``+00:00`` rather than ``Z``),
and a few keys left out rather than null when they do not apply (``OMITTED``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from streams.messages.codec import dumps
from streams.messages.envelope import SCHEMA_VERSION


def _iso(value: datetime) -> str:
    return value.isoformat()


# A time with its offset, written as ``isoformat()`` writes it (pydantic would write
# UTC as ``Z``, which the service never has).
Timestamp = Annotated[
    AwareDatetime,
    PlainSerializer(_iso, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


def _none(value: object) -> bool:
    return value is None


# Field metadata: the key is left out of the JSON, rather than written as null, when
# the field has no value (e.g. ``email_id`` of a ``placement_response`` by phone).
OMITTED = Field(exclude_if=_none)


class PublishedModel(BaseModel):
    """A model of something the service publishes. Fields marked ``OMITTED`` are not
    written when None, and are optional (never null) in the JSON Schema."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = handler(schema)
        target = handler.resolve_ref_schema(json_schema)
        for name, info in cls.model_fields.items():
            field = target.get("properties", {}).get(name)
            if field is None or info.exclude_if is not _none:
                continue
            field.pop("default", None)
            branches = [branch for branch in field.pop("anyOf", ()) if branch != {"type": "null"}]
            if len(branches) == 1:
                field.update(branches[0])
            elif branches:
                field["anyOf"] = branches
        return json_schema


class OutputPayload(PublishedModel):
    """A payload of communication-events. Each carries the therapist it concerns; the
    few that may concern none (an alert about the SMTP server, the daily call list)
    say so by their type."""

    EVENT_TYPE: ClassVar[str]

    therapist_id: int = Field(description="the therapist the event concerns; also the message key")


P = TypeVar("P", bound=OutputPayload)


class Event(PublishedModel, Generic[P]):
    """The envelope of an output event (CONTRACT §1), with its payload."""

    event_id: UUID
    event_type: str
    schema_version: int = SCHEMA_VERSION
    occurred_at: Timestamp
    producer: Literal["communication-service"] = "communication-service"  # PRODUCER
    payload: P
    causation_id: Annotated[
        str | None,
        OMITTED,
        Field(
            description="the event_id of the input event or command it results from (as that message gave it: "
            "a command refused for its size is answered with whatever id it carried)"
        ),
    ] = None

    @model_validator(mode="after")
    def _type_of_payload(self) -> Event[P]:
        if self.event_type != self.payload.EVENT_TYPE:
            raise ValueError(f"a {self.payload.EVENT_TYPE} payload in a {self.event_type} event")
        return self


_ENVELOPES: dict[type[OutputPayload], type[Event[Any]]] = {}


def event_model(payload: type[P]) -> type[Event[P]]:
    """``Event[payload]``, built once per payload model (pydantic builds its schema then)."""
    model = _ENVELOPES.get(payload)
    if model is None:
        model = _ENVELOPES[payload] = Event[payload]  # type: ignore[valid-type]
    return model


def event_of(payload: P, *, event_id: str | UUID, occurred_at: datetime, causation_id: str | None = None) -> Event[P]:
    return event_model(type(payload))(
        event_id=event_id if isinstance(event_id, UUID) else UUID(event_id),
        event_type=payload.EVENT_TYPE,
        occurred_at=occurred_at,
        payload=payload,
        causation_id=causation_id,
    )


def encode_event(
    payload: OutputPayload, *, event_id: str | UUID, occurred_at: datetime, causation_id: str | None = None
) -> bytes:
    """The JSON of an output event: the one way an output envelope is made."""
    event = event_of(payload, event_id=event_id, occurred_at=occurred_at, causation_id=causation_id)
    return dumps(event.model_dump(mode="json"))
