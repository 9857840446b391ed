"""Rendering a stored email again from its batch entries as they are now: after an
erasure, the email must no longer hold the erased patient's details, while the
other patients in it stay readable.

The email is rendered as email_creation made it: its template, the therapist's
directory entry, the patients of its batch entries in their order, the sender it
was sent as, and the context it was made with (a follow-up email names the date
of the email it follows up; the opt-out link of contact and follow-up emails).
The templates and the directory entry are today's, so wording or a title that
changed since shows in the new body; the stored subject is kept (it is what the
therapist saw, and it holds no patient data).

A manual email is not rendered again: its content was written by staff (or its
template filled with a context that is not stored).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.batching import derived_key
from domain.decisions import CONTACT_REQUEST, FOLLOW_UP, MANUAL
from domain.therapist import TherapistProfile
from streams.email.context import Identity, email_context, opt_out_context
from streams.email.rendering import RenderedEmail, RenderError
from streams.persistence.db import one_of
from streams.persistence.email_creation import Render
from streams.persistence.models import Email, EmailBatch, TherapistDirectoryEntry


def rerender(session: Session, email: Email, render: Render, identity: Identity) -> RenderedEmail | None:
    """``email`` rendered from its batch entries as they are now; None when it cannot
    be (a manual email, no template, a template that no longer renders)."""
    if email.kind == MANUAL or not email.template:
        return None
    therapist = _profile(session, email)
    sender = replace(identity, sender_email=email.sender_email, sender_name=email.sender_name)
    requests = [batch.as_request() for batch in email.batches]
    context = {
        **email_context(therapist, requests, sender),
        **_made_with(session, email),
        **opt_out_context(sender, email.kind, email.therapist_id, email.recipient_email),
    }
    try:
        return render(email.template, context, email.therapist_id)
    except RenderError:
        return None


def _profile(session: Session, email: Email) -> TherapistProfile | None:
    """The therapist as the directory knows them now, at the address the email went to."""
    entry = session.get(TherapistDirectoryEntry, email.therapist_id)
    if entry is None:
        return None
    return TherapistProfile(
        therapist_id=email.therapist_id,
        email=email.recipient_email,
        first_name=entry.first_name or "",
        last_name=entry.last_name or "",
        title=entry.title,
        salutation=entry.salutation,
        phone=entry.phone,
    )


def _made_with(session: Session, email: Email) -> dict[str, Any]:
    """The decision's own context: a follow-up email names when the email it follows
    up was sent. That email is found by the follow-up's key, which is derived from its
    id (streams/agents/therapist.py), among the contact emails about the same requests."""
    if email.kind != FOLLOW_UP or not email.placement_request_ids:
        return {}
    candidates = session.execute(
        select(Email.id, Email.sent_at)
        .join(EmailBatch)
        .where(
            Email.therapist_id == email.therapist_id,
            Email.kind == CONTACT_REQUEST,
            Email.id != email.id,
            one_of(session, EmailBatch.placement_request_id, list(email.placement_request_ids)),
        )
        .distinct()
    )
    for email_id, sent_at in candidates:
        if derived_key("follow_up", email_id) == email.email_key:
            return {"original_sent_at": sent_at.isoformat()} if sent_at is not None else {}
    return {}
