"""Payload schemas of ``communication-commands`` (CONTRACT §3)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    EmailStr,
    Field,
    StrictBool,
    model_validator,
)

from streams.messages.fields import Id, Line, WireModel

Outcome = Literal["accepted", "rejected", "no_capacity", "needs_info"]


class CreateEmail(WireModel):
    therapist_id: Id
    template: str | None = Field(None, min_length=1, max_length=64)
    context: dict[str, Any] | None = None
    subject: Line | None = Field(None, min_length=1, max_length=255)
    body_html: str | None = Field(None, min_length=1)
    body_text: str | None = None
    placement_request_ids: list[Id] = Field(default_factory=list)
    recipient_email: Annotated[EmailStr, Field(max_length=255)] | None = None
    recipient_name: Line | None = Field(None, max_length=255)
    queue: StrictBool = True
    respect_contact_limit: StrictBool = True

    @model_validator(mode="after")
    def _content(self) -> CreateEmail:
        from_template = self.template is not None
        written = self.subject is not None or self.body_html is not None
        if from_template == written:
            raise ValueError("give either template (and optionally context) or subject and body_html")
        if written and (self.subject is None or self.body_html is None):
            raise ValueError("subject and body_html are both needed when no template is given")
        return self


class UpdateEmail(WireModel):
    email_id: Id
    subject: Line | None = Field(None, min_length=1, max_length=255)
    body_html: str | None = Field(None, min_length=1)
    body_text: str | None = None
    status: str | None = None

    @model_validator(mode="after")
    def _something(self) -> UpdateEmail:
        if all(v is None for v in (self.subject, self.body_html, self.body_text, self.status)):
            raise ValueError("nothing to change: give subject, body_html, body_text or status")
        return self


class Response(WireModel):
    placement_request_id: Id
    outcome: Outcome


class RecordEmailResponse(WireModel):
    email_id: Id
    received_at: AwareDatetime
    content: str | None = None
    responses: list[Response] = Field(default_factory=list)


class UpdateEmailBatch(WireModel):
    email_id: Id
    placement_request_id: Id
    outcome: Outcome
    notes: str | None = None


class ScheduleCall(WireModel):
    therapist_id: Id
    placement_request_ids: list[Id] = Field(min_length=1)
    scheduled_at: AwareDatetime | None = None
    notes: str | None = None


class UpdateCall(WireModel):
    phone_call_id: Id
    scheduled_at: AwareDatetime | None = None
    notes: str | None = None

    @model_validator(mode="after")
    def _something(self) -> UpdateCall:
        if self.scheduled_at is None and self.notes is None:
            raise ValueError("nothing to change: give scheduled_at or notes")
        return self


class CancelCall(WireModel):
    phone_call_id: Id
    reason: str | None = Field(None, max_length=500)


class CallRequestOutcome(WireModel):
    placement_request_id: Id
    outcome: Outcome
    notes: str | None = None


class CallOutcome(WireModel):
    phone_call_id: Id
    status: Literal["completed", "no_answer", "busy", "wrong_number"]
    notes: str | None = None
    outcomes: list[CallRequestOutcome] = Field(default_factory=list)


class LiftEmailSuppression(WireModel):
    therapist_id: Id
    reason: str | None = Field(None, max_length=500)


class RecordBounce(WireModel):
    """A bounce or complaint reported after the SMTP server accepted the email (from
    the platform's bounce processor)."""

    email_id: Id | None = None
    message_id: str | None = Field(None, min_length=3, max_length=255)
    type: Literal["hard", "soft", "complaint"]
    diagnostic: str | None = Field(None, max_length=1000)
    received_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _which(self) -> RecordBounce:
        if self.email_id is None and self.message_id is None:
            raise ValueError("give email_id or message_id: which email bounced")
        return self


class SetContactPreference(WireModel):
    therapist_id: Id
    channel: Literal["email", "phone_only"]
    reason: str | None = Field(None, max_length=500)


class ErasePatient(WireModel):
    patient_id: Id
    reason: str | None = Field(None, max_length=500)


COMMANDS: dict[str, type[WireModel]] = {
    "communication.lift_email_suppression": LiftEmailSuppression,
    "communication.create_email": CreateEmail,
    "communication.update_email": UpdateEmail,
    "communication.record_email_response": RecordEmailResponse,
    "communication.update_email_batch": UpdateEmailBatch,
    "communication.schedule_phone_call": ScheduleCall,
    "communication.update_phone_call": UpdateCall,
    "communication.cancel_phone_call": CancelCall,
    "communication.record_call_outcome": CallOutcome,
    "communication.record_bounce": RecordBounce,
    "communication.set_contact_preference": SetContactPreference,
    "communication.erase_patient": ErasePatient,
}
