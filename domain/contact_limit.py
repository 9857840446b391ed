"""The weekly contact limit (CONTRACT §5.1), computed over a sliding window of send times.

At most one contact-request email per therapist in any window of ``interval``,
measured between send times: a new one may go out at ``now`` only when the latest
earlier one was sent at least ``interval`` before. The window is half-open, so
exactly ``interval`` after the previous send is allowed.

The interval is a duration, not a calendar step: all arithmetic is done in UTC,
because Python adds a timedelta to a zoned datetime in wall-clock time (and
compares two datetimes of the same zone as if they were naive), which would make
a "week" across a DST change 167 or 169 hours long.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


def next_contact_at(sent_at: Iterable[datetime], interval: timedelta) -> datetime | None:
    """The first instant a new contact email may be sent, or None if there is no history."""
    latest = max((t.astimezone(UTC) for t in sent_at), default=None)
    return None if latest is None else latest + interval


def may_contact(sent_at: Iterable[datetime], now: datetime, interval: timedelta) -> bool:
    allowed_from = next_contact_at(sent_at, interval)
    return allowed_from is None or now.astimezone(UTC) >= allowed_from


def sliding_window(sent_at: Iterable[datetime], now: datetime, interval: timedelta) -> tuple[datetime, ...]:
    """The send times that still constrain a send at ``now`` or later, oldest first.

    Anything sent at or before ``now - interval`` can no longer block a send, so it
    is dropped from the history that is kept.
    """
    horizon = now.astimezone(UTC) - interval
    return tuple(sorted(u for u in (t.astimezone(UTC) for t in sent_at) if u > horizon))


@dataclass(frozen=True)
class ClaimCandidate:
    """A due email a worker is about to claim for sending."""

    email_id: int
    therapist_id: int
    limited: bool  # counts toward the contact limit (confirmations do not)


@dataclass(frozen=True)
class Claim:
    email_id: int


@dataclass(frozen=True)
class HoldBack:
    """Not now: back in the queue until ``until``."""

    email_id: int
    until: datetime


def check_claims(
    candidates: Iterable[ClaimCandidate],
    last_sent: Mapping[int, datetime],
    being_sent: Collection[int],
    now: datetime,
    interval: timedelta,
) -> list[Claim | HoldBack]:
    """The weekly rule checked once more just before sending, one decision per candidate, in order.

    The decision to write an email was taken against the therapist's history as
    the therapist agent saw it; this check is against what was really sent
    (``last_sent``: the latest limited send per therapist) and what other workers
    are sending right now (``being_sent``: therapists with a limited email
    claimed elsewhere). Of several limited emails for one therapist among the
    candidates only the first may go. A held-back email waits until the limit
    allows it, or one ``interval`` from ``now`` when that time has already come
    (it is blocked by a send in progress or earlier in this claim).
    """
    decisions: list[Claim | HoldBack] = []
    limited_here: set[int] = set()
    for candidate in candidates:
        if candidate.limited:
            previous = last_sent.get(candidate.therapist_id)
            allowed_at = next_contact_at(() if previous is None else (previous,), interval)
            if (
                candidate.therapist_id in limited_here
                or candidate.therapist_id in being_sent
                or (allowed_at is not None and now < allowed_at)
            ):
                until = allowed_at if allowed_at is not None and allowed_at > now else now + interval
                decisions.append(HoldBack(candidate.email_id, until))
                continue
            limited_here.add(candidate.therapist_id)
        decisions.append(Claim(candidate.email_id))
    return decisions
