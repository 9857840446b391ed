"""The hand-written message builder against the email package's own MIME classes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, formataddr

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.email_message import OutgoingEmail, _header, build_message
from streams.rendering import one_line

SMTP_COMPAT = compat32.clone(linesep="\r\n")
BOUNDARY = re.compile(rb"={15}\d{19}==")


def reference(email: OutgoingEmail, sent_at: datetime) -> bytes:
    """The message as MIMEMultipart/MIMEText write it (the builder before it was
    written out by hand)."""
    message = MIMEMultipart("alternative")
    message["From"] = formataddr((one_line(email.sender_name), email.sender_email), charset="utf-8")
    message["To"] = formataddr((one_line(email.recipient_name), email.recipient_email), charset="utf-8")
    subject = one_line(email.subject)
    message["Subject"] = subject if subject.isascii() else Header(subject, "utf-8")  # type: ignore[assignment]
    message["Message-ID"] = one_line(email.message_id)
    message["Date"] = format_datetime(sent_at)
    message["Auto-Submitted"] = "auto-generated"
    message.attach(MIMEText(email.body_text, "plain", "utf-8"))
    message.attach(MIMEText(email.body_html, "html", "utf-8"))
    return message.as_bytes(policy=SMTP_COMPAT)


def same_boundary(built: bytes, expected: bytes) -> tuple[bytes, bytes]:
    ours = BOUNDARY.findall(built)
    theirs = BOUNDARY.findall(expected)
    assert len(set(ours)) == 1 and len(ours) == 4, "one boundary, in the header and three delimiters"
    return built.replace(ours[0], b"B"), expected.replace(theirs[0], b"B")


words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=120)
names = st.one_of(words, st.sampled_from(["Dr. Eva Müller", 'Eva "Evi" M.', "O'Brien, Seán", "x" * 90]))
bodies = st.one_of(words, st.text(max_size=3000), st.sampled_from(["", "\n", "ä" * 500, "line\r\nline\n"]))


@settings(max_examples=300, deadline=None)
@given(
    sender_name=names,
    recipient_name=names,
    subject=st.one_of(words, st.sampled_from(["Anfrage für " + "Frau Müller, " * 12, "a" * 200, ""])),
    body_text=bodies,
    body_html=bodies,
    minutes=st.integers(min_value=0, max_value=10**6),
    offset=st.sampled_from([0, 60, 120, -300]),
)
def test_the_message_is_byte_for_byte_what_the_mime_classes_write(
    sender_name: str, recipient_name: str, subject: str, body_text: str, body_html: str, minutes: int, offset: int
) -> None:
    email = OutgoingEmail(
        "<key-1@therapieplatz.example>",
        "vermittlung@therapieplatz.example",
        sender_name,
        "t1@praxis.example",
        recipient_name,
        subject,
        body_text,
        body_html,
    )
    sent_at = datetime(2026, 1, 1, tzinfo=timezone(timedelta(minutes=offset))) + timedelta(minutes=minutes)
    built, expected = same_boundary(build_message(email, sent_at).data, reference(email, sent_at))
    assert built == expected


def test_the_parts_read_back_as_written() -> None:
    email = OutgoingEmail(
        "<key-2@therapieplatz.example>",
        "vermittlung@therapieplatz.example",
        "Therapieplatz-Vermittlung",
        "t2@praxis.example",
        "Dr. Jürgen Groß",
        "Anfrage für zwei Patientinnen",
        "Guten Tag,\nbitte antworten Sie. " + "ü" * 200,
        "<p>Guten Tag,</p>" * 40,
    )
    parsed = message_from_bytes(build_message(email, datetime(2026, 11, 23, 8, tzinfo=UTC)).data, policy=policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    plain, html = parsed.iter_parts()  # type: ignore[misc]
    assert plain.get_content() == email.body_text
    assert html.get_content() == email.body_html
    assert parsed["Subject"] == email.subject
    assert parsed["To"].addresses[0].display_name == "Dr. Jürgen Groß"


@settings(max_examples=500, deadline=None)
@given(
    name=st.sampled_from(["From", "To", "Subject", "Message-ID", "Date"]),
    value=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=120).map(one_line),
)
def test_a_header_is_folded_as_the_policy_folds_it(name: str, value: str) -> None:
    assert _header(name, value) == SMTP_COMPAT.fold_binary(name, value)
