"""One realistic example per public message, for the AsyncAPI document.

Inputs and commands have hand-written payloads (the commands' are the README's).
Published payloads are filled in from their schema: a field takes the value given
here for its event type or for its name, else one its schema allows. So an output
event type added later gets a valid example without anyone writing one, and the
tests check every example against its model.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from streams.contract.catalogue import Message
from streams.messages.envelope import PRODUCER, SCHEMA_VERSION

# Ids and times recur across the examples as one story: therapist 7 (Dr. Müller) is
# emailed about placement requests 4711 and 4712 in email 42, and phoned in call 9.
_NAMESPACE = uuid.UUID("6f1c2b7e-3a55-4c1e-9d7a-0c4b2e8f5a10")
OCCURRED_AT = "2026-11-23T09:00:00+01:00"

PRODUCERS = {"input": "matching-service", "command": "staff-tool", "output": PRODUCER}
_THERAPIST_PRODUCER = "therapist-directory"

_PATIENT = {
    "registered_at": "2026-01-05T10:15:00+01:00",
    "first_name": "Anna",
    "last_name": "Schneider",
    "gender": "female",
    "age": 34,
    "insurance": "gesetzlich (Techniker Krankenkasse)",
    "diagnosis": "F32.1 Mittelgradige depressive Episode",
    "availability": "Mo-Fr ab 16 Uhr",
    "notes": "sucht eine Praxis mit Verhaltenstherapie",
}

_THERAPIST = {
    "therapist_id": 7,
    "email": "praxis.mueller@example.org",
    "first_name": "Sabine",
    "last_name": "Müller",
    "title": "Dr.",
    "salutation": "Frau",
    "phone": "+49 30 1234567",
    "timezone": "Europe/Berlin",
    "contact_blocked": False,
    "availability": {
        "monday": [{"start": "09:00", "end": "12:00"}],
        "thursday": [{"start": "14:00", "end": "17:30"}],
    },
}

INPUT_PAYLOADS: dict[str, dict[str, Any]] = {
    "match.created": {"placement_request_id": 4711, "therapist_id": 7, "patient_id": 1234, "patient": _PATIENT},
    "match.status_changed": {
        "placement_request_id": 4711,
        "therapist_id": 7,
        "patient_id": 1234,
        "new_status": "accepted",
        "old_status": "proposed",
    },
    "therapist.created": _THERAPIST,
    "therapist.updated": {**_THERAPIST, "phone": "+49 30 7654321"},
    "therapist.deleted": {"therapist_id": 7},
    # The commands' payloads are the README's (tests/unit/test_readme_examples.py
    # checks the README's against the same schemas).
    "communication.create_email": {
        "therapist_id": 7,
        "subject": "Rückfrage zu Ihrer Praxis",
        "body_html": "<p>Sehr geehrte Frau Dr. Müller, …</p>",
        "respect_contact_limit": False,
    },
    "communication.update_email": {"email_id": 42, "subject": "Terminabsprache", "status": "in_warteschlange"},
    "communication.record_email_response": {
        "email_id": 42,
        "received_at": "2026-11-23T10:15:00+01:00",
        "content": "Nr. 1 gern",
        "responses": [{"placement_request_id": 4711, "outcome": "accepted"}],
    },
    "communication.update_email_batch": {
        "email_id": 42,
        "placement_request_id": 4712,
        "outcome": "needs_info",
        "notes": "fragt nach Verfügbarkeit",
    },
    "communication.schedule_phone_call": {
        "therapist_id": 7,
        "placement_request_ids": [4711],
        "scheduled_at": "2026-11-24T10:05:00+01:00",
    },
    "communication.update_phone_call": {
        "phone_call_id": 9,
        "scheduled_at": "2026-11-25T14:00:00+01:00",
        "notes": "vormittags besser",
    },
    "communication.cancel_phone_call": {"phone_call_id": 9, "reason": "Praxis geschlossen"},
    "communication.record_call_outcome": {
        "phone_call_id": 9,
        "status": "completed",
        "outcomes": [{"placement_request_id": 4711, "outcome": "accepted", "notes": "ab Januar"}],
    },
    "communication.lift_email_suppression": {"therapist_id": 7, "reason": "Postfach wieder erreichbar"},
    "communication.record_bounce": {
        "message_id": "<20261123080012.42.7@therapieplatz.example>",
        "type": "hard",
        "diagnostic": "smtp; 550 5.1.1 user unknown",
    },
    "communication.set_contact_preference": {"therapist_id": 7, "channel": "phone_only"},
    "communication.erase_patient": {"patient_id": 1234, "reason": "Löschantrag nach Art. 17 DSGVO"},
}

# Values by field name, for the published payloads (nested objects included).
FIELD_VALUES: dict[str, Any] = {
    "therapist_id": 7,
    "email_id": 42,
    "patient_id": 1234,
    "placement_request_id": 4711,
    "placement_request_ids": [4711, 4712],
    "phone_call_id": 9,
    "message_id": "<20261123080012.42.7@therapieplatz.example>",
    "kind": "contact_request",
    "template": "batch_request",
    "subject": "Anfrage: Therapieplätze für 2 Patientinnen und Patienten",
    "status": "in_warteschlange",
    "sent_at": "2026-11-23T09:00:12+01:00",
    "received_at": "2026-11-23T10:15:00+01:00",
    "scheduled_at": "2026-11-30T10:05:00+01:00",
    "previous_scheduled_at": "2026-11-30T09:30:00+01:00",
    "next_attempt_at": "2026-11-23T09:01:00+01:00",
    "occurred_at": OCCURRED_AT,
    "date": "2026-11-30",
    "error": "421 4.7.0 Try again later",
    "retry_count": 1,
    "will_retry": True,
    "attempt": 2,
    "duration_minutes": 5,
    "outcome": "accepted",
    "channel": "email",
    "notes": "ab Januar",
    "content": "Nr. 1 gern",
    "command_id": str(uuid.uuid5(_NAMESPACE, "command")),
    "command_type": "communication.update_email",
    "severity": "error",
    "code": "email_failed",
    "message": "email 42 to therapist 7 failed for good: 550 5.1.1 mailbox unavailable",
    "address_hash": "3f5a1c0d8e2b4a6f9c7d1e0b2a4c6e8f0a1b3c5d7e9f1a2b4c6d8e0f1a3b5c7d",
    "phone": "+49 30 1234567",
    "email": "praxis.mueller@example.org",
    "first_name": "Sabine",
    "last_name": "Müller",
    "therapist_name": "Dr. Sabine Müller",
    "title": "Dr.",
    "timezone": "Europe/Berlin",
    "url": "https://portal.example.org/therapieplatz",
    "reason": "withdrawn",
}

# Values by event type and field name, where the name alone would mislead.
EVENT_FIELD_VALUES: dict[str, dict[str, Any]] = {
    "communication.email_created": {"status": "in_warteschlange"},
    # None leaves out a field that does not apply (it is never null where it is optional).
    "communication.placement_response": {"outcome": "accepted", "channel": "email", "phone_call_id": None},
    "communication.placement_dropped": {"reason": "withdrawn"},
    "communication.phone_call_scheduled": {"reason": "follow_up", "placement_request_ids": [4711]},
    "communication.phone_call_completed": {
        "status": "completed",
        "outcomes": [{"placement_request_id": 4711, "outcome": "accepted", "notes": "ab Januar"}],
    },
    "communication.phone_call_cancelled": {"reason": "Praxis geschlossen"},
    "communication.email_response_recorded": {"responses": [{"placement_request_id": 4711, "outcome": "accepted"}]},
    "communication.command_rejected": {
        "reason": "email 42 was sent already: only drafts and failed emails can be changed",
    },
    "communication.email_suppression_lifted": {"reason": "lifted_by_staff"},
    "communication.alert": {"severity": "error", "code": "email_failed", "phone_call_id": None},
    "communication.daily_call_list": {"therapist_id": None},
    "communication.phone_call_updated": {
        "placement_request_ids": [4711],
        "removed_placement_request_ids": [4712],
        "reason": "accepted by email",
        "notes": None,
    },
    "communication.email_updated": {"changed": ["subject"], "status": "entwurf"},
    "communication.bounce_recorded": {"type": "hard", "soft_bounce_count": 0, "suppressed": True},
    "communication.contact_preference_changed": {"channel": "phone_only", "source": "one_click", "comment": None},
    "communication.email_opened": {"first_opened_at": "2026-11-23T09:30:00+01:00", "open_count": 1},
    "communication.email_link_clicked": {"link_position": 1, "clicked_at": "2026-11-23T09:31:00+01:00"},
    "communication.patient_erased": {
        "therapist_id": None,
        "waiting_requests": 1,
        "emails": 1,
        "batch_entries": 1,
        "call_entries": 0,
        "delivered_emails": 1,
    },
    "communication.email_suppressed": {
        "reason": "550 5.1.1 <praxis.mueller@example.org>: mailbox unavailable",
    },
}

_BROKEN_VALUE = json.dumps(
    {
        "event_id": str(uuid.uuid5(_NAMESPACE, "broken")),
        "event_type": "match.created",
        "schema_version": 1,
        "occurred_at": "2026-11-23T08:59:58+01:00",
        "producer": "matching-service",
        "payload": {"placement_request_id": 4711, "therapist_id": 7, "patient_id": 1234, "patient": {}},
    },
    ensure_ascii=False,
)

DEAD_LETTER_VALUES: dict[str, Any] = {
    "reason": "invalid payload: payload.patient.registered_at: Field required",
    "source_topic": "matching-events",
    "partition": 3,
    "offset": 1842,
    "key": "4711",
    "value": _BROKEN_VALUE,
    "received_at": "2026-11-23T09:00:00.412000+01:00",
    "event_id": str(uuid.uuid5(_NAMESPACE, "broken")),
    "event_type": "match.created",
}

_BY_FORMAT = {
    "date-time": OCCURRED_AT,
    "date": "2026-11-23",
    "time": "09:00:00",
    "uuid": str(uuid.uuid5(_NAMESPACE, "uuid")),
    "email": "praxis.mueller@example.org",
    "uri": "https://portal.example.org/therapieplatz",
}


class _Filler:
    """Fills an instance in from a JSON Schema whose references point at ``defs``."""

    def __init__(self, defs: dict[str, Any], values: dict[str, Any]) -> None:
        self.defs = defs
        self.values = values

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = self.defs[node["$ref"].rsplit("/", 1)[-1]]
        return node

    def branches(self, node: dict[str, Any]) -> list[dict[str, Any]]:
        node = self.resolve(node)
        choices = node.get("anyOf") or node.get("oneOf")
        if not choices:
            return [node]
        return [self.resolve(choice) for choice in choices if self.resolve(choice).get("type") != "null"] or [node]

    def allows(self, node: dict[str, Any], value: Any) -> bool:
        return any(self._allows(branch, value) for branch in self.branches(node))

    def _allows(self, node: dict[str, Any], value: Any) -> bool:
        if "const" in node:
            return bool(node["const"] == value)
        if "enum" in node:
            return value in node["enum"]
        kinds: dict[str, type | tuple[type, ...]] = {
            "string": str,
            "integer": int,
            "number": (int, float),
            "boolean": bool,
            "array": list,
            "object": dict,
            "null": type(None),
        }
        wanted = node.get("type")
        if isinstance(wanted, str) and wanted in kinds:
            if isinstance(value, bool) and wanted != "boolean":
                return False
            return isinstance(value, kinds[wanted])
        return True

    def object(self, node: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        node = self.resolve(node)
        required = set(node.get("required", ()))
        values = {**self.values, **(overrides or {})}
        filled: dict[str, Any] = {}
        for name, field in node.get("properties", {}).items():
            if name in values and self.allows(field, values[name]):
                filled[name] = values[name]
            elif name in required:
                filled[name] = self.value(field, name)
        return filled

    def value(self, node: dict[str, Any], name: str) -> Any:
        node = self.resolve(node)
        if node.get("examples"):
            return node["examples"][0]
        if node.get("default") is not None:
            return node["default"]
        branch = self.branches(node)[0]
        if "const" in branch:
            return branch["const"]
        if branch.get("enum"):
            return branch["enum"][0]
        kind = branch.get("type")
        if kind == "object" or "properties" in branch:
            return self.object(branch)
        if kind == "array":
            return [self.value(branch.get("items", {}), name)]
        if kind == "boolean":
            return False
        if kind in ("integer", "number"):
            return max(int(branch.get("minimum", 1)), 1)
        if kind == "string":
            text = _BY_FORMAT.get(branch.get("format", ""), name.replace("_", " "))
            return text.ljust(int(branch.get("minLength", 0)), ".")
        return None


def _producer(message: Message) -> str:
    return _THERAPIST_PRODUCER if message.name.startswith("therapist.") else PRODUCERS[message.kind]


def _envelope(message: Message, payload: dict[str, Any]) -> dict[str, Any]:
    envelope: dict[str, Any] = {
        "event_id": str(uuid.uuid5(_NAMESPACE, message.name)),
        "event_type": message.name,
        "schema_version": SCHEMA_VERSION,
        "occurred_at": OCCURRED_AT,
        "producer": _producer(message),
        "payload": payload,
    }
    if message.kind == "output":
        envelope["causation_id"] = str(uuid.uuid5(_NAMESPACE, f"cause of {message.name}"))
    return envelope


def example(message: Message, schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """The whole message (the envelope with its payload, or the DLQ record) for one
    example; ``schema`` is the payload's, with references into ``defs``."""
    if message.kind == "dead_letter":
        return _Filler(defs, DEAD_LETTER_VALUES).object(schema)
    if message.name in INPUT_PAYLOADS:
        return _envelope(message, INPUT_PAYLOADS[message.name])
    filler = _Filler(defs, FIELD_VALUES)
    return _envelope(message, filler.object(schema, EVENT_FIELD_VALUES.get(message.name)))


def summary(message: Message) -> str:
    if message.kind == "dead_letter":
        return "a match.created whose patient has no registered_at, dead-lettered"
    if message.kind == "output":
        return "published by the service"
    return f"as {_producer(message)} sends it"
