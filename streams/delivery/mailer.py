"""Sending over SMTP with aiosmtplib: one connection reused for a run of messages.

``Mailer`` is the port; ``SmtpMailer`` the adapter. Failures are reported as
``SendError`` with ``temporary`` telling whether trying again later can help
(4xx replies, refused or dropped connections, timeouts) or not (5xx replies, and
a message that cannot be built or sent as it is: an address without IDNA form, a
non-ASCII local part for a server without SMTPUTF8).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from abc import ABC, abstractmethod

import aiosmtplib

from domain.recipient_failure import concerns_recipient
from streams.delivery.addresses import AddressError, needs_smtputf8
from streams.delivery.mime import RawMessage
from streams.settings import Settings

log = logging.getLogger(__name__)


class SendError(Exception):
    """``recipient``: a permanent failure saying the address cannot be reached
    (domain.recipient_failure); email to it is then suppressed."""

    def __init__(self, message: str, *, temporary: bool, code: int | None = None, recipient: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary
        self.code = code
        self.recipient = recipient and not temporary


class SmtpUnavailable(SendError):
    """No session with the server could be set up (connect, TLS or login failed).

    Nothing about the message was tried, so it is not the message's failure: the
    delivery loop waits for the server instead of spending the email's attempts.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, temporary=True)


class Mailer(ABC):
    """One connection to the SMTP server, reused for a run of messages.

    ``send`` raises ``SendError`` when the message was not accepted, and
    ``SmtpUnavailable`` when no session could be set up (nothing was tried)."""

    @abstractmethod
    async def send(self, message: RawMessage) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...


def classify(exc: BaseException) -> SendError:
    """Map an aiosmtplib (or socket) failure onto temporary/permanent."""
    if isinstance(exc, SendError):
        return exc
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        temporary = all(400 <= code < 500 for code in codes)
        detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
        recipient = any(concerns_recipient(r.code, r.message, at_rcpt=True) for r in exc.recipients)
        return SendError(
            f"recipient refused: {detail}", temporary=temporary, code=codes[0] if codes else None, recipient=recipient
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code >= 400:
        at_rcpt = isinstance(exc, aiosmtplib.SMTPRecipientRefused)
        recipient = concerns_recipient(exc.code, exc.message, at_rcpt=at_rcpt)
        return SendError(f"{exc.code} {exc.message}", temporary=exc.code < 500, code=exc.code, recipient=recipient)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return SendError(f"authentication failed: {exc}", temporary=False)
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | asyncio.TimeoutError | TimeoutError):
        return SendError("timed out talking to the SMTP server", temporary=True)
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPConnectError | OSError):
        return SendError(f"connection to the SMTP server failed: {exc}", temporary=True)
    if isinstance(exc, AddressError):
        return SendError(str(exc), temporary=False, recipient=exc.recipient)
    if isinstance(exc, ValueError):
        # A message that cannot be built or sent as it is (UnicodeError and
        # idna.IDNAError are ValueErrors too; so are aiosmtplib's refusals of an
        # address): it would fail the same way at every attempt.
        return SendError(f"the message cannot be sent as it is: {type(exc).__name__}: {exc}", temporary=False)
    return SendError(f"{type(exc).__name__}: {exc}", temporary=True)


class SmtpMailer(Mailer):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: aiosmtplib.SMTP | None = None

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.settings.smtp_security == "none":
            return None
        return ssl.create_default_context(
            cafile=str(self.settings.smtp_ca_file) if self.settings.smtp_ca_file else None
        )

    async def _connect(self) -> aiosmtplib.SMTP:
        settings = self.settings
        security = settings.smtp_security
        client = aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            timeout=settings.smtp_timeout.total_seconds(),
            use_tls=security == "tls",
            start_tls=security == "starttls",
            tls_context=self._tls_context(),
        )
        try:
            await client.connect()
            if settings.smtp_username is not None and settings.smtp_password is not None:
                await client.login(settings.smtp_username.get_secret_value(), settings.smtp_password.get_secret_value())
        except BaseException:
            client.close()
            raise
        return client

    async def _session(self) -> tuple[aiosmtplib.SMTP, bool]:
        """The open connection, or a new one (``True`` when new)."""
        if self._client is not None:
            return self._client, False
        try:
            self._client = await self._connect()
        except Exception as exc:
            await self._drop()
            raise SmtpUnavailable(f"cannot open an SMTP session: {classify(exc)}") from exc
        return self._client, True

    async def send(self, message: RawMessage) -> None:
        # A connection the server closed while idle fails before anything was
        # accepted, so it is safe to reconnect once and send again.
        for attempt in (1, 2):
            client, fresh = await self._session()
            try:
                options = await _mail_options(client, message)
                await client.sendmail(message.sender, list(message.recipients), message.data, mail_options=options)
                return
            except aiosmtplib.SMTPServerDisconnected as exc:
                await self._drop()
                if fresh or attempt == 2:
                    raise classify(exc) from exc
                log.info("SMTP connection was closed by the server; reconnecting")
            except SendError:
                raise  # the message's failure, found before sending: the connection is fine
            except Exception as exc:
                error = classify(exc)
                if not isinstance(exc, aiosmtplib.SMTPResponseException) or exc.code == 421:
                    await self._drop()
                raise error from exc

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # the connection is gone either way
                log.debug("closing a broken SMTP connection failed", exc_info=True)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            try:
                await asyncio.wait_for(client.quit(), timeout=5)
            except Exception:
                client.close()


async def _mail_options(client: aiosmtplib.SMTP, message: RawMessage) -> list[str]:
    """``["SMTPUTF8"]`` for a message that needs it (RFC 6531), when the server
    offers it (as EHLO told); without it such a message fails for good."""
    if not message.smtputf8:
        return []
    if client.is_ehlo_or_helo_needed:
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError as exc:
            if exc.code < 500:
                raise
            # A server that does not know EHLO offers no extension (sendmail
            # falls back to HELO for the ASCII messages).
    if client.supports_extension("smtputf8"):
        return ["SMTPUTF8"]
    recipient = any(needs_smtputf8(r) for r in message.recipients)
    whose = "recipient" if recipient else "sender"
    raise SendError(
        f"the {whose} address has a non-ASCII local part and the SMTP server does not offer SMTPUTF8",
        temporary=False,
        recipient=recipient,
    )


def smtp_mailers(settings: Settings) -> list[Mailer]:
    """One mailer (one connection) per COMM_SMTP_CONNECTIONS."""
    return [SmtpMailer(settings) for _ in range(settings.smtp_connections)]
