"""STARTTLS, implicit TLS and SMTP AUTH against a real aiosmtpd server, with a
certificate the test generates (trustme); credentials never leak into logs."""

from __future__ import annotations

import gc
import logging
import ssl
import warnings
from datetime import UTC, datetime

import aiosmtplib
import pytest
import trustme
from aiosmtpd.smtp import AuthResult, LoginPassword

from streams.delivery.mailer import SendError, SmtpMailer, SmtpUnavailable
from streams.delivery.mime import OutgoingEmail, build_message
from streams.demo.smtp_capture import SmtpCapture
from streams.settings import Settings

PASSWORD = "geheimes-Passwort-7f3a"
SENT_AT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
MESSAGE = OutgoingEmail(
    message_id="<tls-1@therapieplatz.example>",
    sender_email="vermittlung@therapieplatz.example",
    sender_name="Vermittlung",
    recipient_email="eva@praxis.example",
    recipient_name="Eva Müller",
    subject="Anfrage",
    body_text="Text",
    body_html="<p>Text</p>",
)


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == b"mailer"
        and auth_data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd replies 535 itself


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1", "localhost")
    directory = tmp_path_factory.mktemp("tls")
    ca_file = directory / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return ca_file, context


def settings(port: int, security: str, ca_file=None, **extra: str) -> Settings:
    environ = {
        "COMM_SMTP_HOST": "127.0.0.1",
        "COMM_SMTP_PORT": str(port),
        "COMM_SMTP_SECURITY": security,
        "COMM_SMTP_TIMEOUT": "5s",
        **extra,
    }
    if ca_file is not None:
        environ["COMM_SMTP_CA_FILE"] = str(ca_file)
    return Settings.from_environ(environ)


@pytest.fixture
def starttls_server(ca):
    _, context = ca
    server = SmtpCapture(
        tls_context=context,
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
        auth_require_tls=True,
    ).start()
    yield server
    server.stop()


async def test_starttls_with_login(starttls_server, ca, caplog):
    ca_file, _ = ca
    caplog.set_level(logging.DEBUG)
    mailer = SmtpMailer(
        settings(starttls_server.port, "starttls", ca_file, COMM_SMTP_USERNAME="mailer", COMM_SMTP_PASSWORD=PASSWORD)
    )
    await mailer.send(build_message(MESSAGE, SENT_AT))
    await mailer.send(build_message(MESSAGE, SENT_AT))
    await mailer.close()
    assert len(starttls_server.messages) == 2
    assert PASSWORD not in caplog.text


async def test_wrong_password_is_an_unavailable_server_not_a_failed_email(starttls_server, ca, caplog):
    ca_file, _ = ca
    caplog.set_level(logging.DEBUG)
    mailer = SmtpMailer(
        settings(
            starttls_server.port,
            "starttls",
            ca_file,
            COMM_SMTP_USERNAME="mailer",
            COMM_SMTP_PASSWORD="falsch-" + PASSWORD,
        )
    )
    with pytest.raises(SmtpUnavailable) as failure:
        await mailer.send(build_message(MESSAGE, SENT_AT))
    assert "535" in str(failure.value)
    assert PASSWORD not in str(failure.value) and PASSWORD not in caplog.text
    assert starttls_server.messages == []


async def test_server_requiring_starttls_refuses_a_plain_session(starttls_server):
    mailer = SmtpMailer(settings(starttls_server.port, "none"))
    with pytest.raises(SendError):
        await mailer.send(build_message(MESSAGE, SENT_AT))
    await mailer.close()
    assert starttls_server.messages == []


async def test_untrusted_certificate_is_refused(starttls_server):
    mailer = SmtpMailer(settings(starttls_server.port, "starttls"))  # system CAs only
    with pytest.raises(SmtpUnavailable, match=r"(?i)certificate"):
        await mailer.send(build_message(MESSAGE, SENT_AT))


async def test_implicit_tls(ca):
    ca_file, context = ca
    server = SmtpCapture(ssl_context=context).start()
    try:
        mailer = SmtpMailer(settings(server.port, "tls", ca_file))
        await mailer.send(build_message(MESSAGE, SENT_AT))
        await mailer.close()
    finally:
        server.stop()
    assert [r.message["Message-ID"] for r in server.messages] == ["<tls-1@therapieplatz.example>"]


async def test_stopping_the_server_closes_a_tls_session_it_holds(starttls_server, ca):
    """aiosmtpd's own stop() leaves the socket of an open TLS session behind (the
    collector then reports it during some later test); the capture cuts it."""
    ca_file, _ = ca
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=starttls_server.port,
        start_tls=True,
        tls_context=ssl.create_default_context(cafile=str(ca_file)),
        timeout=5,
    )
    await client.connect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        starttls_server.stop()
        gc.collect()
    client.close()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
