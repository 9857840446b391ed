"""The RFC 5322 message for a stored email: multipart/alternative, text and HTML.

Written straight to bytes: the headers are folded by the same compat32 policy the
``email`` package's generator uses, and the two parts are base64 (as ``MIMEText``
with utf-8 writes them), so the message is byte for byte what
``MIMEMultipart(...).as_bytes()`` gives (a test holds the two side by side), at
a tenth of its cost or less. It is built at every send, and sent as-is.

Addresses go as ``streams.delivery.addresses`` writes them, the domain in its IDNA form, in
the envelope and in From and To. An address with a non-ASCII local part is written
in UTF-8 (RFC 6532, the display name still RFC 2047); such a message is sent only
with SMTPUTF8 (``RawMessage.smtputf8``). Every other message is plain ASCII.
"""

from __future__ import annotations

import base64
import functools
import random
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.policy import compat32
from email.utils import format_datetime, formataddr
from typing import Any

from streams.delivery.addresses import AddressError, ascii_domain, needs_smtputf8, smtp_address
from streams.delivery.tracking import EmailTracking

# Header values never carry a line break (no header injection).
from streams.email.rendering import one_line

# compat32 with the line ending SMTP wants.
_SMTP_COMPAT = compat32.clone(linesep="\r\n")
# A header value that compat32 writes unchanged when its line is short enough:
# printable ASCII words, single spaces between them.
_PLAIN = re.compile(r"[!-~]+(?: [!-~]+)*")
_MAX_LINE = 78


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
    # More headers, as delivery adds them (List-Unsubscribe: streams.email.unsubscribe).
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RawMessage:
    """What goes over SMTP: the envelope (domains in IDNA form) and the message bytes."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes

    @property
    def smtputf8(self) -> bool:
        """An address has a non-ASCII local part: the message needs SMTPUTF8."""
        return needs_smtputf8(self.sender) or any(needs_smtputf8(r) for r in self.recipients)


def message_id_for(email_key: str, sender_email: str) -> str:
    """Derived from the email's stable key: a re-send carries the same Message-ID.
    Its domain is the sender's, in IDNA form."""
    try:
        domain = ascii_domain(sender_email.rpartition("@")[2])
    except AddressError:
        domain = ""  # the sender address then fails the send; the email can still be stored
    return f"<{email_key}@{domain or 'communication-service.invalid'}>"


def _envelope_address(address: str, *, recipient: bool) -> str:
    try:
        return smtp_address(address)
    except AddressError as exc:
        whose = "recipient" if recipient else "sender"
        raise AddressError(f"the {whose} address cannot be sent: {exc}", recipient=recipient) from exc


def _address_header(name: str, display_name: str, address: str) -> bytes:
    """``From``/``To``: the display name RFC 2047 encoded when not ASCII, the address
    as given (ASCII, or UTF-8 for an SMTPUTF8 message)."""
    display_name = one_line(display_name)
    if address.isascii():
        return _header(name, formataddr((display_name, address), charset="utf-8"))
    if not display_name:
        return f"{name}: {address}\r\n".encode()
    # Folded with "<@>" holding the address's place (one word: no fold inside it),
    # which formataddr writes last; the UTF-8 address then takes it.
    head, _, tail = _header(name, formataddr((display_name, "@"), charset="utf-8")).rpartition(b"<@>")
    return head + b"<" + address.encode("utf-8") + b">" + tail


def _header(name: str, value: str) -> bytes:
    """``name: value`` folded as the compat32 policy folds it."""
    if len(name) + 2 + len(value) <= _MAX_LINE and _PLAIN.fullmatch(value):
        return f"{name}: {value}\r\n".encode("ascii")
    return _folded(name, value)


@functools.lru_cache(maxsize=256)
def _folded(name: str, value: str) -> bytes:
    # Folding is slow (RFC 2047 words are measured character by character); the
    # values that need it repeat: subjects come from a handful of templates.
    header: Any = value if value.isascii() else Header(value, "utf-8")  # the policy takes a Header too
    return _SMTP_COMPAT.fold_binary(name, header)


def build_message(email: OutgoingEmail, sent_at: datetime, tracking: EmailTracking | None = None) -> RawMessage:
    """Raises ``AddressError`` for an address that cannot be sent (a domain without
    IDNA form), ``recipient`` telling whose. ``tracking`` (opt-in, see
    streams.delivery.tracking) changes the HTML part as sent, not the stored email."""
    sender = _envelope_address(email.sender_email, recipient=False)
    recipient = _envelope_address(email.recipient_email, recipient=True)
    boundary = _boundary()
    headers = [
        ("Subject", one_line(email.subject)),
        ("Message-ID", one_line(email.message_id)),
        ("Date", format_datetime(sent_at)),
        ("Auto-Submitted", "auto-generated"),
        *((name, " ".join(value.split())) for name, value in email.headers),  # no line break in a value
    ]
    delimiter = b"--" + boundary.encode("ascii")
    data = b"".join(
        [
            # Too long for one line: folded, as compat32 folds it, before the ";".
            f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n'.encode("ascii"),
            b"MIME-Version: 1.0\r\n",
            _address_header("From", email.sender_name, sender),
            _address_header("To", email.recipient_name, recipient),
            *(_header(name, value) for name, value in headers),
            b"\r\n",
            delimiter,
            b"\r\n",
            _part("plain", email.body_text),
            b"\r\n",
            delimiter,
            b"\r\n",
            _part("html", email.body_html if tracking is None else tracking.html(email.body_html)),
            b"\r\n",
            delimiter,
            b"--\r\n",
        ]
    )
    return RawMessage(sender, (recipient,), data)


def _boundary() -> str:
    # As the email package makes one. It can never occur in the parts: base64 has
    # no "-".
    return "=" * 15 + f"{random.randrange(sys.maxsize):0{len(repr(sys.maxsize - 1))}d}" + "=="


def _part(subtype: str, body: str) -> bytes:
    """A text part as MIMEText(body, subtype, "utf-8") writes it: base64, lines of 76."""
    encoded = base64.b64encode(body.encode("utf-8"))
    lines = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "MIME-Version: 1.0\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode("ascii") + b"".join(line + b"\r\n" for line in lines)
