"""Sending over SMTP with aiosmtplib to a real aiosmtpd server."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest

from streams.delivery.mailer import SendError, SmtpMailer
from streams.delivery.mime import OutgoingEmail, build_message, message_id_for
from streams.demo.smtp_capture import CaptureHandler, SmtpCapture
from streams.settings import Settings

SENT_AT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


class CountingHandler(CaptureHandler):
    def __init__(self) -> None:
        super().__init__()
        self.connections = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.connections += 1
        session.host_name = hostname
        return responses


def outgoing(n: int = 1, **changes) -> OutgoingEmail:
    values = dict(
        message_id=message_id_for(f"key-{n}", "vermittlung@therapieplatz.example"),
        sender_email="vermittlung@therapieplatz.example",
        sender_name="Therapieplatz-Vermittlung",
        recipient_email="eva@praxis.example",
        recipient_name="Dr. Eva Müller",
        subject="Anfrage: Therapieplatz",
        body_text="Sehr geehrte Frau Dr. Müller,\n\nÄ ö ü ß",
        body_html="<p>Sehr geehrte Frau Dr. Müller,</p><p>&Auml; ö ü ß</p>",
    )
    values.update(changes)
    return OutgoingEmail(**values)


@pytest.fixture
def smtp():
    capture = SmtpCapture(handler=CountingHandler())
    capture.start()
    yield capture
    capture.stop()


def mailer_for(smtp: SmtpCapture) -> SmtpMailer:
    return SmtpMailer(Settings.from_environ({"COMM_SMTP_HOST": "127.0.0.1", "COMM_SMTP_PORT": str(smtp.port)}))


async def test_multipart_message_with_stable_message_id(smtp):
    mailer = mailer_for(smtp)
    await mailer.send(build_message(outgoing(), SENT_AT))
    await mailer.close()
    [received] = smtp.messages
    message = received.message
    assert received.rcpt_tos == ("eva@praxis.example",)
    assert message["Message-ID"] == "<key-1@therapieplatz.example>"
    assert message["Subject"] == "Anfrage: Therapieplatz"
    [to] = message["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Dr. Eva Müller", "eva@praxis.example")
    assert message.get_content_type() == "multipart/alternative"
    parts = {part.get_content_type(): part.get_content() for part in message.iter_parts()}
    assert parts["text/plain"].startswith("Sehr geehrte Frau Dr. Müller,")
    assert "ß" in parts["text/plain"] and "<p>" in parts["text/html"]


async def test_one_connection_serves_a_run_of_messages(smtp):
    mailer = mailer_for(smtp)
    for n in range(5):
        await mailer.send(build_message(outgoing(n), SENT_AT))
    await mailer.close()
    assert len(smtp.messages) == 5
    assert smtp.handler.connections == 1


async def test_reconnects_after_the_server_dropped_the_connection(smtp):
    mailer = mailer_for(smtp)
    await mailer.send(build_message(outgoing(1), SENT_AT))
    smtp.restart()  # the server goes away and comes back: the open connection is dead
    await mailer.send(build_message(outgoing(2), SENT_AT))
    await mailer.close()
    assert [r.message["Message-ID"] for r in smtp.messages] == [
        "<key-1@therapieplatz.example>",
        "<key-2@therapieplatz.example>",
    ]


@pytest.mark.parametrize(
    ("reply", "temporary"),
    [
        ("451 4.3.0 Try again later", True),
        ("421 4.3.2 Service shutting down", True),
        ("550 5.1.1 Mailbox unavailable", False),
        ("554 5.7.1 Rejected", False),
    ],
)
async def test_failures_are_classified(smtp, reply, temporary):
    smtp.handler.responder = lambda received: reply
    mailer = mailer_for(smtp)
    with pytest.raises(SendError) as failure:
        await mailer.send(build_message(outgoing(), SENT_AT))
    await mailer.close()
    assert failure.value.temporary is temporary
    assert failure.value.code == int(reply[:3])


async def test_unreachable_server_is_a_temporary_failure():
    from streams.demo.broker import free_port

    mailer = SmtpMailer(
        Settings.from_environ(
            {"COMM_SMTP_HOST": "127.0.0.1", "COMM_SMTP_PORT": str(free_port()), "COMM_SMTP_TIMEOUT": "2s"}
        )
    )
    with pytest.raises(SendError) as failure:
        await mailer.send(build_message(outgoing(), SENT_AT))
    assert failure.value.temporary


def test_header_values_cannot_inject_headers():
    raw = build_message(
        outgoing(subject="Hallo\r\nBcc: spy@evil.example", recipient_name="Eva\nBcc: x@y"), SENT_AT
    ).data
    assert b"\r\nBcc:" not in raw and b"\nBcc:" not in raw
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed["Subject"] == "Hallo Bcc: spy@evil.example"
    assert parsed.get_all("Bcc") is None


def test_non_ascii_names_and_subjects_are_encoded_and_lines_end_in_crlf():
    raw = build_message(outgoing(subject="Anfrage für Frau Müller", recipient_name="Jürgen Groß"), SENT_AT).data
    assert raw.isascii() and b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed["Subject"] == "Anfrage für Frau Müller"
    assert parsed["To"].addresses[0].display_name == "Jürgen Groß"
