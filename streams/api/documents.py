"""The JSON form of what the API reads: the read models' fields as they are named,
times in RFC 3339 with their offset (UTC, as stored: ``2026-11-23T09:15:00+00:00``),
statuses as their wire values (the German ones for emails)."""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any


def document(value: Any) -> Any:
    """``value`` as JSON types: dataclasses become objects, tuples lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: document(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): document(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [document(v) for v in value]
    return value


def rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("a naive time has no RFC 3339 form")
    return moment.astimezone(UTC).isoformat()


def dumps(value: Any) -> bytes:
    return json.dumps(document(value), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
