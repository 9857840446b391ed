"""Field types shared by the wire schemas: bounded ids and texts, single-line names."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationInfo,
)

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

_CONTROL = re.compile(r"[\r\n\x00]")


def single_line(value: str) -> str:
    # Names end up in email headers; a line break there could inject headers.
    if _CONTROL.search(value):
        raise ValueError("must not contain line breaks or NUL characters")
    return value


Line = Annotated[str, AfterValidator(single_line)]

# Ids and texts are bounded by the database columns they end up in: a value that
# could never be stored is refused here (DLQ), not retried forever downstream.
Id = Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]
Status = Annotated[str, Field(min_length=1, max_length=32)]
Short = Annotated[str, AfterValidator(single_line), Field(max_length=64)]
Name = Annotated[str, AfterValidator(single_line), Field(min_length=1, max_length=255)]


class WireModel(BaseModel):
    # Producers may add fields (CONTRACT: "extend it freely"); unknown ones are kept.
    model_config = ConfigDict(extra="allow", frozen=True)


# Free-text fields are bounded (COMM_MAX_TEXT_FIELD_BYTES, handed in as validation
# context); without a context, this default.
DEFAULT_MAX_TEXT_BYTES = 8 * 1024


def within_text_limit(value: str | None, info: ValidationInfo) -> str | None:
    if value is None:
        return value
    limit = (info.context or {}).get("max_text_bytes", DEFAULT_MAX_TEXT_BYTES)
    size = len(value.encode("utf-8"))
    if size > limit:
        raise ValueError(
            f"is {size} bytes, over the limit of {limit} bytes for a text field (COMM_MAX_TEXT_FIELD_BYTES)"
        )
    return value
