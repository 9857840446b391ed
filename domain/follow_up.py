"""Follow-up (CONTRACT §5.4): which requests of a sent email are still open."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from domain.placement import ACCEPTED, CLOSING_STATUSES


@dataclass(frozen=True)
class RequestInEmail:
    placement_request_id: int
    response_outcome: str | None  # the therapist's answer, if any
    request_status: str | None  # the matching service's status since the email


def is_open(request: RequestInEmail) -> bool:
    """Unanswered, not accepted and not closed: still worth a call."""
    if request.response_outcome is not None:
        return False
    return request.request_status not in CLOSING_STATUSES | {ACCEPTED}


def open_requests(requests: Iterable[RequestInEmail]) -> list[RequestInEmail]:
    return [r for r in requests if is_open(r)]
