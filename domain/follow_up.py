"""Follow-up (CONTRACT §5.4): which requests of a sent email are still open, and
whether the therapist is called about them or gets a follow-up email."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from domain.placement import ACCEPTED, CLOSING_STATUSES


@dataclass(frozen=True)
class RequestInEmail:
    placement_request_id: int
    response_outcome: str | None  # the therapist's answer, if any
    request_status: str | None  # the matching service's status since the email
    # Taken over since the email was sent: booked into a phone call (the email
    # bounced and the request went to the phone). That call follows it up.
    taken_over: bool = False


def is_open(request: RequestInEmail) -> bool:
    """Unanswered, not accepted, not closed and not taken over: still worth a call."""
    if request.response_outcome is not None or request.taken_over:
        return False
    return request.request_status not in CLOSING_STATUSES | {ACCEPTED}


def open_requests(requests: Iterable[RequestInEmail]) -> list[RequestInEmail]:
    return [r for r in requests if is_open(r)]


@dataclass(frozen=True)
class TherapistOnFile:
    """What the therapist directory says about the therapist of the email."""

    deleted: bool
    contact_blocked: bool
    has_phone_hours: bool


class NoFollowUpReason(enum.StrEnum):
    ANSWERED = "answered"  # answered as a whole, without an outcome per request
    NOTHING_OPEN = "nothing_open"  # every request was answered, closed or taken over
    NOT_TO_BE_CONTACTED = "not_to_be_contacted"  # therapist deleted or blocked


@dataclass(frozen=True)
class NoFollowUp:
    reason: NoFollowUpReason


@dataclass(frozen=True)
class FollowUpCall:
    """Call the therapist about these requests at the next free slot."""

    placement_request_ids: tuple[int, ...]


@dataclass(frozen=True)
class FollowUpByEmail:
    """A follow-up email about these requests (the therapist agent decides it, since
    it is subject to the weekly contact limit). ``no_call_slot`` is why a call that
    was meant could not be booked; then staff are told (alert ``no_call_slot``)."""

    placement_request_ids: tuple[int, ...]
    no_call_slot: str | None = None


def decide_follow_up(
    answered: bool, requests: Sequence[RequestInEmail], therapist: TherapistOnFile | None
) -> NoFollowUp | FollowUpCall | FollowUpByEmail:
    """What follows up a sent contact email that is due for it.

    ``answered``: a response to the email arrived; ``therapist`` is None when the
    directory does not know the therapist (then there is no phone to call).
    """
    if answered and not any(r.response_outcome for r in requests):
        return NoFollowUp(NoFollowUpReason.ANSWERED)
    still_open = tuple(r.placement_request_id for r in open_requests(requests))
    if not still_open:
        return NoFollowUp(NoFollowUpReason.NOTHING_OPEN)
    if therapist is not None and (therapist.deleted or therapist.contact_blocked):
        return NoFollowUp(NoFollowUpReason.NOT_TO_BE_CONTACTED)
    if therapist is not None and therapist.has_phone_hours:
        return FollowUpCall(still_open)
    return FollowUpByEmail(still_open)


def without_call(call: FollowUpCall, no_slot_reason: str) -> FollowUpByEmail:
    """No free slot for the call: a follow-up email instead, and staff are told why."""
    return FollowUpByEmail(call.placement_request_ids, no_call_slot=no_slot_reason)
