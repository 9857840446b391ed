"""The life of an email and what each command may do to it.

    entwurf ──queue──▶ in_warteschlange ──claim──▶ wird_gesendet ──accepted──▶ gesendet
                              ▲   ▲                     │
                              │   └──temporary failure──┤
                              │                         └──failed for good──▶ fehlgeschlagen
                              └─────────────────re-queue──────────────────────────┘

Only drafts and failed emails can be edited (update_email); the only status a
command may set is in_warteschlange (queue a draft, re-queue a failed email).
Answers can be recorded only on an email that was sent.
"""

from __future__ import annotations

import enum


class EmailStatus(enum.StrEnum):
    DRAFT = "entwurf"
    QUEUED = "in_warteschlange"
    SENDING = "wird_gesendet"
    SENT = "gesendet"
    FAILED = "fehlgeschlagen"


EDITABLE = frozenset({EmailStatus.DRAFT, EmailStatus.FAILED})


def update_refusal(current: EmailStatus, requested: str | None) -> str | None:
    """Why ``update_email`` cannot change an email in ``current`` (None: it can)."""
    if current not in EDITABLE:
        return (
            f"only drafts ({EmailStatus.DRAFT}) and failed emails ({EmailStatus.FAILED}) can be changed; "
            f"this email is {current}"
        )
    if requested is not None and requested != EmailStatus.QUEUED:
        return f"status can only be set to {EmailStatus.QUEUED} (to send the email), not {requested!r}"
    return None


def response_refusal(current: EmailStatus) -> str | None:
    """Why an answer cannot be recorded on an email in ``current`` (None: it can)."""
    if current is not EmailStatus.SENT:
        return f"the email has not been sent (status {current}), so there is no answer to record"
    return None
