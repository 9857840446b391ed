"""Phone calls: their statuses, what an outcome leads to, and reminders (CONTRACT §5.5)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class CallStatus(enum.StrEnum):
    SCHEDULED = "scheduled"
    COMPLETED = "completed"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    WRONG_NUMBER = "wrong_number"
    CANCELLED = "cancelled"


# Outcomes a person may record for a call (record_call_outcome ``status``).
OUTCOMES = frozenset({CallStatus.COMPLETED, CallStatus.NO_ANSWER, CallStatus.BUSY, CallStatus.WRONG_NUMBER})
RETRIED = frozenset({CallStatus.NO_ANSWER, CallStatus.BUSY})


@dataclass(frozen=True)
class Reschedule:
    """Try again at the next free slot; this will be attempt ``attempt``."""

    attempt: int


@dataclass(frozen=True)
class Finish:
    """The call ends with ``status``; ``alert`` says why a person should look, if so."""

    status: CallStatus
    alert: str | None = None


def after_outcome(outcome: CallStatus, attempt: int, max_attempts: int) -> Reschedule | Finish:
    """What happens after attempt number ``attempt`` ended with ``outcome``."""
    if outcome not in OUTCOMES:
        raise ValueError(f"{outcome} is not an outcome of a call")
    if outcome in RETRIED:
        if attempt < max_attempts:
            return Reschedule(attempt + 1)
        return Finish(outcome, f"nobody answered after {attempt} attempt(s) ({outcome}); the maximum is {max_attempts}")
    if outcome is CallStatus.WRONG_NUMBER:
        return Finish(outcome, "the phone number is wrong; the therapist's contact data needs checking")
    return Finish(outcome)


def change_refusal(status: CallStatus) -> str | None:
    """Why a call in ``status`` cannot be moved, cancelled or given an outcome."""
    if status is not CallStatus.SCHEDULED:
        return f"the call is {status}, not scheduled"
    return None
