"""Bounces and complaints reported after the SMTP server accepted an email
(``communication.record_bounce``): which of them stop email to an address.

A hard bounce or a complaint stops it at once. Soft bounces (a full mailbox, a
server down for days) are counted per address, one per email, in the order the
emails were sent; ``limit`` of them in a row stop it too. A successful delivery
ends the row, but it cannot be recognised when its email is sent: every soft
bounce comes after the send of its own email. So an email sent after the last
counted one ends the row once an email sent after it bounces and it did not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

HARD = "hard"
SOFT = "soft"
COMPLAINT = "complaint"


@dataclass(frozen=True)
class Bounce:
    """What the bounce processor reported, with what the database knows of the email."""

    type: str  # HARD | SOFT | COMPLAINT
    address: str  # the address the email was sent to
    email_id: int
    sent_at: datetime
    # The first later email to the same address that had been sent when the report
    # came (None: none); if it did not bounce, it ended the row.
    next_sent_at: datetime | None = None


@dataclass(frozen=True)
class SoftBounces:
    """Soft-bounced emails in a row to ``address``."""

    address: str
    count: int
    last_sent_at: datetime  # the send time of the latest email counted
    # The first email sent after that one, if any: it ends the row unless it bounces.
    next_sent_at: datetime | None = None


def counted(previous: SoftBounces | None, bounce: Bounce) -> SoftBounces:
    """The row after a soft bounce; ``previous`` is the row for the same address."""
    if previous is None:
        return SoftBounces(bounce.address, 1, bounce.sent_at, bounce.next_sent_at)
    if bounce.sent_at <= previous.last_sent_at:
        # A second report about an email already counted (or about an older one).
        return previous
    delivered_between = previous.next_sent_at is not None and previous.next_sent_at < bounce.sent_at
    later = [t for t in (bounce.next_sent_at, previous.next_sent_at) if t is not None and t > bounce.sent_at]
    return SoftBounces(
        previous.address,
        1 if delivered_between else previous.count + 1,
        bounce.sent_at,
        min(later, default=None),
    )


def sent(row: SoftBounces | None, sent_at: datetime) -> SoftBounces | None:
    """An email went out: remembered as the first after the row's last, if it is."""
    if row is None or sent_at <= row.last_sent_at:
        return row
    if row.next_sent_at is not None and row.next_sent_at <= sent_at:
        return row
    return SoftBounces(row.address, row.count, row.last_sent_at, sent_at)


def stops_email(bounce_type: str, soft_count: int, limit: int) -> bool:
    return bounce_type in (HARD, COMPLAINT) or soft_count >= limit


def suppression_reason(bounce: Bounce, soft_count: int) -> str:
    """Why the address is suppressed, for ``email_suppressed`` (never the bounce's
    diagnostic text, which may contain the address)."""
    if bounce.type == HARD:
        return f"hard bounce reported for email {bounce.email_id}"
    if bounce.type == COMPLAINT:
        return f"complaint (marked as spam) reported for email {bounce.email_id}"
    return f"{soft_count} soft bounces in a row, the last for email {bounce.email_id}"
