from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
)

from streams.messages.envelope import SCHEMA_VERSION, Envelope
from streams.messages.fields import DEFAULT_MAX_TEXT_BYTES, WireModel


class InputEvent(BaseModel):
    """A validated input: its envelope and its typed payload."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    envelope: Envelope
    payload: WireModel  # the model of its event type (inputs, commands)

    @property
    def event_id(self) -> str:
        return str(self.envelope.event_id)

    @property
    def event_type(self) -> str:
        return self.envelope.event_type

    @property
    def occurred_at(self) -> datetime:
        return self.envelope.occurred_at


class Rejection(BaseModel):
    model_config = ConfigDict(frozen=True)

    reason: str
    event_id: str | None = None
    event_type: str | None = None


def parse_input(
    value: bytes | None,
    known: dict[str, type[WireModel]],
    *,
    max_bytes: int | None = None,
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES,
    limit_name: str = "COMM_MAX_EVENT_BYTES",
) -> InputEvent | Rejection:
    """Validate a raw message against the envelope and the payload schema of its type.

    ``max_bytes``: a larger message is refused whole, naming its largest field."""
    if value is None:
        return Rejection(reason="empty message (no value)")
    if max_bytes is not None and len(value) > max_bytes:
        return oversize(value, max_bytes, limit_name)
    try:
        document = json.loads(value.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return Rejection(reason=f"not UTF-8 text (invalid byte at position {exc.start})")
    except json.JSONDecodeError as exc:
        return Rejection(reason=f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except RecursionError:
        return Rejection(reason=f"not accepted: nested deeper than {MAX_DEPTH} levels")
    if not isinstance(document, dict):
        return Rejection(reason=f"envelope must be a JSON object, not {type(document).__name__}")
    event_id = document.get("event_id") if isinstance(document.get("event_id"), str) else None
    event_type = document.get("event_type") if isinstance(document.get("event_type"), str) else None
    problem = unencodable(document)
    if problem is not None:
        return Rejection(reason=problem, event_id=event_id, event_type=event_type)
    try:
        envelope = Envelope.model_validate(document)
    except ValidationError as exc:
        return Rejection(reason=f"invalid envelope: {describe(exc)}", event_id=event_id, event_type=event_type)
    if envelope.schema_version != SCHEMA_VERSION:
        return Rejection(
            reason=f"schema_version: unsupported version {envelope.schema_version} (supported: {SCHEMA_VERSION})",
            event_id=event_id,
            event_type=event_type,
        )
    model = known.get(envelope.event_type)
    if model is None:
        return Rejection(
            reason=f"event_type: unknown event type {envelope.event_type!r} on this topic "
            f"(expected one of {', '.join(sorted(known))})",
            event_id=event_id,
            event_type=event_type,
        )
    try:
        payload = model.model_validate(envelope.payload, context={"max_text_bytes": max_text_bytes})
    except ValidationError as exc:
        return Rejection(
            reason=f"invalid payload: {describe(exc, 'payload')}", event_id=event_id, event_type=event_type
        )
    return InputEvent(envelope=envelope, payload=payload)


# What the service's own JSON (orjson: the table, the internal topics, the outbox)
# cannot hold. Python's json reads all of it, so it is refused here, with the field,
# rather than failing later where the message is written.
MAX_DEPTH = 64
_INT_RANGE = (-(2**63), 2**64 - 1)


def unencodable(document: Any) -> str | None:
    """Why ``document`` cannot be written as the service writes JSON (the first
    problem, naming its field but not its value), or None."""
    low, high = _INT_RANGE
    stack: list[tuple[str, Any, int]] = [("", document, 0)]
    while stack:
        where, value, depth = stack.pop()
        if isinstance(value, dict):
            if depth >= MAX_DEPTH:
                return f"{where or 'the message'}: nested deeper than {MAX_DEPTH} levels"
            stack.extend((f"{where}.{k}" if where else str(k), v, depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            if depth >= MAX_DEPTH:
                return f"{where or 'the message'}: nested deeper than {MAX_DEPTH} levels"
            stack.extend((f"{where}[{i}]", v, depth + 1) for i, v in enumerate(value))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int):
            if not low <= value <= high:
                return f"{where}: the integer is outside the 64-bit range this service can store"
        elif isinstance(value, float) and not math.isfinite(value):
            return f"{where}: NaN and Infinity are not JSON numbers"
    return None


def oversize(value: bytes, limit: int, limit_name: str) -> Rejection:
    """A message over the size limit, with the field that makes it large (if it is
    JSON) and its envelope's id and type where they can be read."""
    reason = f"the message is {len(value)} bytes, over the limit of {limit} bytes ({limit_name})"
    try:
        document = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return Rejection(reason=reason)
    if not isinstance(document, dict):
        return Rejection(reason=reason)
    path, size = largest_field(document)
    if path:
        reason += f"; its largest field is {path} ({size} bytes)"
    event_id, event_type = document.get("event_id"), document.get("event_type")
    return Rejection(
        reason=reason,
        event_id=event_id if isinstance(event_id, str) else None,
        event_type=event_type if isinstance(event_type, str) else None,
    )


def largest_field(document: Any, path: str = "") -> tuple[str, int]:
    """The dotted path of the largest text value in a JSON document, and its size."""
    best = ("", 0)
    stack: list[tuple[str, Any]] = [(path, document)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            size = len(value.encode("utf-8"))
            if size > best[1]:
                best = (where, size)
        elif isinstance(value, dict):
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))
    return best


def describe(error: ValidationError, prefix: str | None = None) -> str:
    """``field.path: message`` for each problem, without the input values."""
    problems = []
    for problem in error.errors(include_input=False, include_url=False, include_context=False):
        path = ".".join(str(part) for part in (prefix, *problem["loc"]) if part is not None)
        message = str(problem["msg"]).removeprefix("Value error, ")
        problems.append(f"{path}: {message}" if path else message)
    return "; ".join(problems)
