"""The RFC 5322 message for a stored email: multipart/alternative, text and HTML."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime


@dataclass(frozen=True)
class OutgoingEmail:
    message_id: str
    sender_email: str
    sender_name: str
    recipient_email: str
    recipient_name: str
    subject: str
    body_text: str
    body_html: str


def message_id_for(email_key: str, sender_email: str) -> str:
    """Derived from the email's stable key: a re-send carries the same Message-ID."""
    domain = sender_email.rpartition("@")[2] or "communication-service.invalid"
    return f"<{email_key}@{domain}>"


def _address(name: str, email: str) -> Address:
    username, _, domain = email.rpartition("@")
    return Address(display_name=_one_line(name), username=username, domain=domain)


def _one_line(value: str) -> str:
    """Header values never carry a line break (no header injection)."""
    return " ".join(value.split())


def build_message(email: OutgoingEmail, sent_at: datetime) -> EmailMessage:
    message = EmailMessage(policy=SMTP)
    message["From"] = _address(email.sender_name, email.sender_email)
    message["To"] = _address(email.recipient_name, email.recipient_email)
    message["Subject"] = _one_line(email.subject)
    message["Message-ID"] = email.message_id
    message["Date"] = format_datetime(sent_at)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(email.body_text, subtype="plain", charset="utf-8")
    message.add_alternative(email.body_html, subtype="html", charset="utf-8")
    return message
