"""The RFC 5322 message for a stored email: multipart/alternative, text and HTML.

Built once, as bytes, with the classic MIME classes: about three times faster
than ``EmailMessage`` with the SMTP policy, and sent as-is (aiosmtplib would
otherwise flatten the message again), which matters at hundreds of emails a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, formataddr

# Header values never carry a line break (no header injection).
from streams.rendering import one_line

# compat32 with the line ending SMTP wants.
_SMTP_COMPAT = compat32.clone(linesep="\r\n")


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


@dataclass(frozen=True)
class RawMessage:
    """What goes over SMTP: the envelope and the message bytes."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes


def message_id_for(email_key: str, sender_email: str) -> str:
    """Derived from the email's stable key: a re-send carries the same Message-ID."""
    domain = sender_email.rpartition("@")[2] or "communication-service.invalid"
    return f"<{email_key}@{domain}>"


def _address(name: str, email: str) -> str:
    return formataddr((one_line(name), email), charset="utf-8")


def _text(value: str) -> str | Header:
    value = one_line(value)
    return value if value.isascii() else Header(value, "utf-8")


def build_message(email: OutgoingEmail, sent_at: datetime) -> RawMessage:
    message = MIMEMultipart("alternative")
    message["From"] = _address(email.sender_name, email.sender_email)
    message["To"] = _address(email.recipient_name, email.recipient_email)
    message["Subject"] = _text(email.subject)  # type: ignore[assignment]  # a Header is allowed
    message["Message-ID"] = one_line(email.message_id)
    message["Date"] = format_datetime(sent_at)
    message["Auto-Submitted"] = "auto-generated"
    message.attach(MIMEText(email.body_text, "plain", "utf-8"))
    message.attach(MIMEText(email.body_html, "html", "utf-8"))
    return RawMessage(email.sender_email, (email.recipient_email,), message.as_bytes(policy=_SMTP_COMPAT))
