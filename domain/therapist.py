"""The therapist directory entry, as far as the rules need it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TherapistProfile:
    therapist_id: int
    email: str
    first_name: str
    last_name: str
    title: str | None = None
    salutation: str | None = None
    phone: str | None = None
    timezone: str | None = None
    contact_blocked: bool = False
    # weekday name -> [{"start": "HH:MM", "end": "HH:MM"}, …] in the therapist's zone
    availability: Mapping[str, Sequence[Mapping[str, str]]] = field(default_factory=dict)
