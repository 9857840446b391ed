"""Internationalised addresses (issue 12) over SMTP to a real aiosmtpd server, with
and without SMTPUTF8: the domain goes in its IDNA form; a non-ASCII local part
needs SMTPUTF8 and fails at once, for good, where the server does not offer it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.delivery.mailer import SendError, SmtpMailer
from streams.delivery.mime import OutgoingEmail, build_message, message_id_for
from streams.demo.smtp_capture import CaptureHandler, SmtpCapture
from streams.settings import Settings

SENT_AT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


class RecordingHandler(CaptureHandler):
    """Also keeps the MAIL FROM parameters of each message (but SIZE) and counts sessions."""

    def __init__(self) -> None:
        super().__init__()
        self.mail_options: list[list[str]] = []
        self.mail_commands = 0
        self.connections = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.mail_commands += 1
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.mail_options.append([o.upper() for o in envelope.mail_options if not o.upper().startswith("SIZE=")])
        return await super().handle_DATA(server, session, envelope)


def outgoing(recipient_email: str, n: int = 1, **changes: str) -> OutgoingEmail:
    values = {
        "message_id": message_id_for(f"key-{n}", "vermittlung@therapieplatz.example"),
        "sender_email": "vermittlung@therapieplatz.example",
        "sender_name": "Therapieplatz-Vermittlung",
        "recipient_email": recipient_email,
        "recipient_name": "Dr. Jürgen Müller",
        "subject": "Anfrage für Frau Groß",
        "body_text": "Sehr geehrter Herr Dr. Müller,\n\nÄ ö ü ß",
        "body_html": "<p>Sehr geehrter Herr Dr. Müller,</p>",
        **changes,
    }
    return OutgoingEmail(**values)


def server(*, smtputf8: bool):
    capture = SmtpCapture(handler=RecordingHandler(), smtputf8=smtputf8)
    capture.start()
    return capture


@pytest.fixture
def plain_smtp():
    capture = server(smtputf8=False)
    yield capture
    capture.stop()


@pytest.fixture
def utf8_smtp():
    capture = server(smtputf8=True)
    yield capture
    capture.stop()


def mailer_for(smtp: SmtpCapture) -> SmtpMailer:
    return SmtpMailer(Settings.from_environ({"COMM_SMTP_HOST": "127.0.0.1", "COMM_SMTP_PORT": str(smtp.port)}))


@pytest.mark.parametrize("smtputf8", [False, True])
async def test_an_umlaut_domain_arrives_in_its_idna_form(smtputf8: bool):
    smtp = server(smtputf8=smtputf8)
    try:
        mailer = mailer_for(smtp)
        await mailer.send(build_message(outgoing("praxis@müller.de"), SENT_AT))
        await mailer.close()
    finally:
        smtp.stop()
    [received] = smtp.messages
    assert received.rcpt_tos == ("praxis@xn--mller-kva.de",)
    assert received.mail_from == "vermittlung@therapieplatz.example"
    assert smtp.handler.mail_options == [[]]  # no SMTPUTF8 asked for: the message is ASCII
    assert received.raw.isascii()
    [to] = received.message["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Dr. Jürgen Müller", "praxis@xn--mller-kva.de")
    assert received.message["Subject"] == "Anfrage für Frau Groß"


async def test_a_non_ascii_local_part_arrives_with_smtputf8(utf8_smtp):
    mailer = mailer_for(utf8_smtp)
    await mailer.send(build_message(outgoing("jürgen@müller.de"), SENT_AT))
    await mailer.send(build_message(outgoing("eva@praxis.example", 2), SENT_AT))  # the same connection
    await mailer.close()
    first, second = utf8_smtp.messages
    assert first.rcpt_tos == ("jürgen@xn--mller-kva.de",)
    assert utf8_smtp.handler.mail_options[0] == ["SMTPUTF8"]
    assert utf8_smtp.handler.mail_options[1] == []  # asked for only where needed
    [to] = first.message["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Dr. Jürgen Müller", "jürgen@xn--mller-kva.de")
    assert b"<j\xc3\xbcrgen@xn--mller-kva.de>" in first.raw  # UTF-8 in the header (RFC 6532)
    parts = {part.get_content_type(): part.get_content() for part in first.message.iter_parts()}
    assert parts["text/plain"].endswith("Ä ö ü ß")
    assert second.rcpt_tos == ("eva@praxis.example",)
    assert utf8_smtp.handler.connections == 1


async def test_a_non_ascii_local_part_fails_at_once_and_for_good_without_smtputf8(plain_smtp):
    mailer = mailer_for(plain_smtp)
    with pytest.raises(SendError) as failure:
        await mailer.send(build_message(outgoing("jürgen@müller.de"), SENT_AT))
    error = failure.value
    assert (error.temporary, error.recipient) == (False, True)
    assert str(error) == (
        "the recipient address has a non-ASCII local part and the SMTP server does not offer SMTPUTF8"
    )
    assert plain_smtp.handler.mail_commands == 0  # nothing was tried on the server
    # The connection is fine: the next message goes out on it.
    await mailer.send(build_message(outgoing("eva@praxis.example", 2), SENT_AT))
    await mailer.close()
    assert [r.rcpt_tos for r in plain_smtp.messages] == [("eva@praxis.example",)]
    assert plain_smtp.handler.connections == 1


async def test_a_non_ascii_sender_local_part_without_smtputf8_is_not_the_recipients_fault(plain_smtp):
    mailer = mailer_for(plain_smtp)
    with pytest.raises(SendError) as failure:
        await mailer.send(
            build_message(outgoing("eva@praxis.example", sender_email="vermittlung-ä@x.example"), SENT_AT)
        )
    await mailer.close()
    assert (failure.value.temporary, failure.value.recipient) == (False, False)
    assert "sender address has a non-ASCII local part" in str(failure.value)
    assert plain_smtp.messages == []
