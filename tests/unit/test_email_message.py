"""The hand-written message builder against the email package's own MIME classes;
addresses as SMTP carries them (issue 12)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, message_from_string, policy
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, formataddr

import idna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.delivery.addresses import AddressError, ascii_domain, needs_smtputf8, smtp_address
from streams.delivery.mailer import classify
from streams.delivery.mime import OutgoingEmail, _header, build_message, message_id_for
from streams.email.rendering import one_line

SMTP_COMPAT = compat32.clone(linesep="\r\n")
BOUNDARY = re.compile(rb"={15}\d{19}==")


def idna_form(address: str) -> str:
    local, _, domain = address.rpartition("@")
    return address if domain.isascii() else f"{local}@{idna.encode(domain, uts46=True).decode()}"


def reference(email: OutgoingEmail, sent_at: datetime) -> bytes:
    """The message as MIMEMultipart/MIMEText write it (the builder before it was
    written out by hand), with the addresses' domains in their IDNA form."""
    message = MIMEMultipart("alternative")
    message["From"] = formataddr((one_line(email.sender_name), idna_form(email.sender_email)), charset="utf-8")
    message["To"] = formataddr((one_line(email.recipient_name), idna_form(email.recipient_email)), charset="utf-8")
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
    recipient_domain=st.sampled_from(["praxis.example", "Praxis.Example", "müller.de", "ÄRZTE-straße.example"]),
)
def test_the_message_is_byte_for_byte_what_the_mime_classes_write(
    sender_name: str,
    recipient_name: str,
    subject: str,
    body_text: str,
    body_html: str,
    minutes: int,
    offset: int,
    recipient_domain: str,
) -> None:
    email = OutgoingEmail(
        "<key-1@therapieplatz.example>",
        "vermittlung@therapieplatz.example",
        sender_name,
        f"t1@{recipient_domain}",
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


# -- addresses as SMTP carries them (issue 12) ---------------------------------------


@pytest.mark.parametrize(
    ("address", "sent_as"),
    [
        ("praxis@müller.de", "praxis@xn--mller-kva.de"),
        ("praxis@MÜLLER.de", "praxis@xn--mller-kva.de"),  # UTS 46 maps to lower case
        ("praxis@\uff4düller.de", "praxis@xn--mller-kva.de"),  # ... and full-width letters to ASCII
        ("info@straße.de", "info@xn--strae-oqa.de"),  # IDNA 2008 keeps the ß (2003 made it "ss")
        ("info@praxis.bücher.example", "info@praxis.xn--bcher-kva.example"),
        ("info@тест.рф", "info@xn--e1aybc.xn--p1ai"),
        ("praxis@xn--mller-kva.de", "praxis@xn--mller-kva.de"),
        ("Eva.Mueller@Praxis.Example", "Eva.Mueller@Praxis.Example"),  # ASCII: untouched
        ("müller@praxis.de", "müller@praxis.de"),  # the local part has no ASCII form
        ("jürgen@müller.de", "jürgen@xn--mller-kva.de"),
        ('"a@b"@müller.de', '"a@b"@xn--mller-kva.de'),  # the domain follows the last "@"
    ],
)
def test_the_domain_is_sent_in_its_idna_form(address: str, sent_as: str) -> None:
    assert smtp_address(address) == sent_as


@pytest.mark.parametrize(
    "address",
    [
        "x@☃.de",  # a symbol, not a letter
        "x@-müller.de",  # a label cannot start with a hyphen
        "x@mü" + "l" * 70 + ".de",  # a label longer than 63 characters
        "x@müller..de",  # an empty label
        "no-at-sign.de",
        "x@",
        "@müller.de",
    ],
)
def test_an_address_without_an_idna_form_is_refused(address: str) -> None:
    with pytest.raises(AddressError) as refused:
        smtp_address(address)
    assert address not in str(refused.value)


@pytest.mark.parametrize(
    ("domain", "expected"),
    [("müller.de", "xn--mller-kva.de"), ("praxis.example", "praxis.example"), ("B_C.example", "B_C.example")],
)
def test_ascii_domains_pass_as_they_are(domain: str, expected: str) -> None:
    assert ascii_domain(domain) == expected


@pytest.mark.parametrize(
    ("address", "needed"),
    [("praxis@xn--mller-kva.de", False), ("eva@praxis.example", False), ("müller@praxis.de", True)],
)
def test_only_a_non_ascii_local_part_needs_smtputf8(address: str, needed: bool) -> None:
    assert needs_smtputf8(smtp_address(address)) is needed


def international(**changes: str) -> OutgoingEmail:
    values = {
        "message_id": message_id_for("key-3", "vermittlung@therapieplatz.example"),
        "sender_email": "vermittlung@therapieplatz.example",
        "sender_name": "Therapieplatz-Vermittlung",
        "recipient_email": "praxis@müller.de",
        "recipient_name": "Dr. Eva Müller",
        "subject": "Anfrage",
        "body_text": "Guten Tag",
        "body_html": "<p>Guten Tag</p>",
        **changes,
    }
    return OutgoingEmail(**values)


SENT_AT = datetime(2026, 11, 23, 8, tzinfo=UTC)


def test_an_umlaut_domain_goes_in_idna_form_in_envelope_and_headers() -> None:
    sender = "vermittlung@thérapie.example"
    email = international(sender_email=sender, message_id=message_id_for("key-3", sender))
    raw = build_message(email, SENT_AT)
    assert (raw.sender, raw.recipients) == ("vermittlung@xn--thrapie-cya.example", ("praxis@xn--mller-kva.de",))
    assert not raw.smtputf8 and raw.data.isascii()
    parsed = message_from_bytes(raw.data, policy=policy.default)
    [to] = parsed["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Dr. Eva Müller", "praxis@xn--mller-kva.de")
    assert parsed["From"].addresses[0].addr_spec == "vermittlung@xn--thrapie-cya.example"
    assert parsed["Message-ID"] == "<key-3@xn--thrapie-cya.example>"


@pytest.mark.parametrize("name", ["Dr. Jürgen Groß", "Eva", "", "Dr. Eva Müller-Lüdenscheidt, " * 8, 'a<@>b "c"'])
def test_a_non_ascii_local_part_is_written_in_utf8_for_smtputf8(name: str) -> None:
    raw = build_message(international(recipient_email="jürgen@müller.de", recipient_name=name), SENT_AT)
    assert raw.smtputf8 and raw.recipients == ("jürgen@xn--mller-kva.de",)
    head = raw.data.partition(b"\r\n\r\n")[0]
    assert b"j\xc3\xbcrgen@xn--mller-kva.de>" in head or b"To: j\xc3\xbcrgen@xn--mller-kva.de\r\n" in head
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))
    # RFC 6532: the headers are UTF-8 text, which the email package reads as text
    parsed = message_from_string(raw.data.decode("utf-8"), policy=policy.default)
    [to] = parsed["To"].addresses
    assert (to.display_name, to.addr_spec) == (one_line(name).strip(), "jürgen@xn--mller-kva.de")
    assert parsed["Subject"] == "Anfrage" and parsed["From"].addresses[0].addr_spec == raw.sender


def test_a_recipient_domain_without_idna_form_fails_the_build_for_good() -> None:
    with pytest.raises(AddressError) as failure:
        build_message(international(recipient_email="x@☃.de"), SENT_AT)
    assert failure.value.recipient
    error = classify(failure.value)
    assert (error.temporary, error.recipient) == (False, True)
    assert "recipient address" in str(error) and "IDNA" in str(error)


def test_a_sender_domain_without_idna_form_fails_for_good_but_is_not_the_recipients_fault() -> None:
    with pytest.raises(AddressError) as failure:
        build_message(international(sender_email="vermittlung@☃.example"), SENT_AT)
    error = classify(failure.value)
    assert (error.temporary, error.recipient) == (False, False)
    assert "sender address" in str(error)
    # its Message-ID falls back to a domain of its own: the email can still be stored
    assert message_id_for("key-4", "vermittlung@☃.example") == "<key-4@communication-service.invalid>"


@pytest.mark.parametrize(
    "exc",
    [
        UnicodeEncodeError("ascii", "müller", 1, 2, "ordinal not in range(128)"),
        idna.IDNAError("Codepoint not allowed"),
        ValueError("Address contains prohibited characters"),  # as aiosmtplib refuses one
    ],
)
def test_an_exception_from_building_a_message_is_never_temporary(exc: Exception) -> None:
    assert classify(exc).temporary is False
