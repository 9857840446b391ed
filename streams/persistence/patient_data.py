"""Where the database keeps patient data, and what replaces it when it goes.

Patients' details (names, diagnoses, circumstances: special-category data, GDPR
Art. 9) must reach the therapist in the email; everywhere else the service keeps
as little of them, for as short a time, as it can. ``PATIENT_DATA`` names every
column that holds them, ``NO_PATIENT_DATA`` every other column that holds text a
person or a template wrote. tests/unit/test_data_map.py keeps both true: every JSON
or text column of the models (and every free-text string column) is in one of
them, and the table of patient-data columns in docs/data-protection.md is
``PATIENT_DATA``. A new such column is therefore a decision, written down here.

The markers below replace details that were erased or expired. They are plain
mappings so that everything that reads a ``patient`` object (the template
context, the API) goes on working: an erased patient's card in an email says
that the details were deleted, instead of being silently empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

# table.column -> what patient data it holds (and so why erasure and retention touch it).
PATIENT_DATA: dict[str, str] = {
    "waiting_requests.patient": "the details of a request waiting for its email, from match.created",
    "emails.body_html": "the email as rendered: every patient's details",
    "emails.body_text": "the email as rendered: every patient's details",
    "emails.response_content": "the therapist's answer as staff recorded it (free text)",
    "email_batches.patient": "the details one request was emailed with",
    "email_batches.response_notes": "staff notes on the answer about one request (free text)",
    "phone_calls.notes": "staff notes on a call (free text)",
    "phone_calls.outcome_notes": "staff notes on a call's outcome (free text)",
    "phone_call_batches.notes": "staff notes on one request discussed in a call (free text)",
    "outbox.value": "messages to the therapist agent about a failed or followed-up email carry its "
    "requests' details (from the batch entries) until relayed and purged; events carry ids only",
}

# table.column -> what it holds instead (text, but no patient data).
NO_PATIENT_DATA: dict[str, str] = {
    "emails.subject": "the template's subject (no patient data) or staff's subject of a manual email; "
    "published in email_created, so staff must not name a patient in it",
    "emails.recipient_email": "the therapist's address",
    "emails.recipient_name": "the therapist's name",
    "emails.sender_email": "the service's own address",
    "emails.sender_name": "the service's own name",
    "emails.message_id": "the RFC 5322 Message-ID, made of ids",
    "emails.placement_request_ids": "ids",
    "emails.error_message": "SMTP replies and template errors (the renderer blanks out context values)",
    "outbox.topic": "a topic name",
    "outbox.key": "a therapist or patient id",
    "outbox.failed_reason": "why the broker refused a message",
    "therapist_directory.email": "the therapist's address",
    "therapist_directory.first_name": "the therapist's name",
    "therapist_directory.last_name": "the therapist's name",
    "therapist_directory.availability": "the therapist's phone hours",
    "phone_calls.cancel_reason": "a reason code or staff's short reason, published in phone_call_cancelled",
}

# Model.field -> what it holds: every text field of the communication-events
# payloads (streams/messages/outputs.py) that is not a closed set of values. Events
# carry ids, times, statuses and counts; these are the exceptions, none of them a
# patient's details by design. Staff-written text is published as staff wrote it.
EVENT_TEXT: dict[str, str] = {
    "EmailCreated.template": "a template name",
    "EmailCreated.subject": "the email's subject (see emails.subject)",
    "EmailSent.message_id": "the Message-ID, made of ids",
    "EmailFailed.error": "an SMTP reply or the service's reason",
    "EmailSuppressed.address_hash": "SHA-256 of the therapist's address",
    "EmailSuppressed.reason": "the SMTP reply that refused the address",
    "EmailSuppressionLifted.address_hash": "SHA-256 of the therapist's address",
    "EmailSuppressionLifted.comment": "staff's reason for lifting it",
    "ContactPreferenceChanged.comment": "staff's or the therapist's reason",
    "PhoneCallUpdated.reason": "why requests left the call (the service's words)",
    "PhoneCallUpdated.notes": "staff's call notes as the command gave them (may name a patient: see the data map)",
    "RequestOutcome.notes": "staff's notes on one request of a call (may name a patient: see the data map)",
    "PhoneCallCancelled.reason": "a reason code or staff's short reason",
    "ListedCall.therapist_name": "the therapist's name",
    "ListedCall.phone": "the therapist's phone number",
    "CommandRejected.command_id": "an event id",
    "CommandRejected.command_type": "a command name",
    "CommandRejected.reason": "the service's reason, naming ids",
    "Alert.code": "an alert code",
    "Alert.message": "the service's message, naming ids",
}

# -- what replaces removed details ------------------------------------------------

ERASED_NOTE = "Die Angaben zu dieser Person wurden auf ihren Wunsch gelöscht."
# A patient's details after communication.erase_patient: the request itself stays
# (and still goes out), its card says why it is empty.
ERASED_PATIENT: dict[str, Any] = {"erased": True, "notes": ERASED_NOTE}
# Details forgotten by the retention job (COMM_CONTENT_RETENTION).
EXPIRED_PATIENT: dict[str, Any] = {"expired": True}

ERASED_EMAIL = (
    "Der Inhalt dieser E-Mail wurde gelöscht: Eine darin genannte Person hat die Löschung ihrer Daten verlangt."
)
EXPIRED_EMAIL = "Der Inhalt dieser E-Mail wurde nach Ablauf der Aufbewahrungsfrist gelöscht."


def holds_details(patient: Mapping[str, Any] | None) -> bool:
    """Whether ``patient`` still says anything about the person (not empty, not a marker)."""
    if not patient:
        return False
    return dict(patient) not in (ERASED_PATIENT, EXPIRED_PATIENT)


def placeholder_html(text: str) -> str:
    return f"<p>{escape(text)}</p>"
