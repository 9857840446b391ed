"""A local SMTP server (aiosmtpd) that keeps every message it receives, and can
write each one as an ``.eml`` file. The demo's mail capture; the tests' SMTP peer."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes, message_from_string, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from streams.demo.broker import free_port


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    received_at: float  # time.time() when the server accepted it

    @property
    def message(self) -> EmailMessage:
        # An SMTPUTF8 message has UTF-8 headers (RFC 6532); the email package reads
        # those only from text (from bytes, a non-ASCII local part turns into
        # surrogates). Bodies stay intact as long as they are not 8bit (ours are base64).
        headers = self.raw.partition(b"\r\n\r\n")[0]
        if headers.isascii():
            parsed = message_from_bytes(self.raw, policy=policy.default)
        else:
            try:
                parsed = message_from_string(self.raw.decode("utf-8"), policy=policy.default)
            except UnicodeDecodeError:
                parsed = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


# What a responder may ask for instead of accepting a message.
DROP = "drop"  # close the connection without a reply
STALL = "stall"  # say nothing for ``stall_seconds``, then accept


class CaptureHandler:
    def __init__(self, output_dir: Path | None = None) -> None:
        self.output_dir = output_dir
        self.messages: list[Received] = []
        self.refused: list[tuple[Received, str]] = []
        self.changed = threading.Condition()
        # Tests may decide per message: a reply such as "451 try later", DROP, STALL
        # or None to accept.
        self.responder: Callable[[Received], str | None] | None = None
        self.stall_seconds = 10.0
        # Seconds each accepted message takes, to simulate a slower server.
        self.delay = 0.0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        received = Received(
            envelope.mail_from,
            tuple(envelope.rcpt_tos),
            bytes(envelope.original_content or envelope.content),
            time.time(),
        )
        reply = self.responder(received) if self.responder else None
        if reply is not None:
            with self.changed:
                self.refused.append((received, reply))
            if reply == DROP:
                server.transport.close()
                return "421 closing"  # never reaches the client
            if reply != STALL:
                return reply
            await asyncio.sleep(self.stall_seconds)
            if server.transport is None or server.transport.is_closing():
                # The client gave up before the final reply: like a real server,
                # do not deliver what it never saw confirmed.
                return "451 client went away"
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.changed:
            self.messages.append(received)
            if self.output_dir is not None:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                name = f"{len(self.messages):04d}-{received.rcpt_tos[0].replace('@', '_at_')}.eml"
                (self.output_dir / name).write_bytes(received.raw)
            self.changed.notify_all()
        return "250 Message accepted for delivery"

    def wait_for(self, count: int, timeout: float) -> list[Received]:
        """Block until at least ``count`` messages arrived (or raise TimeoutError)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(self.messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(self.messages)} of {count} emails arrived within {timeout}s")
                self.changed.wait(remaining)
            return list(self.messages)


class _Controller(Controller):
    """aiosmtpd's controller, remembering its clients' connections: its stop()
    closes the loop without closing them, and each leaves a socket open."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self.opened = 0  # client connections accepted so far

    def factory(self) -> Any:
        session = super().factory()  # type: ignore[no-untyped-call]
        connection_made = session.connection_made

        def remember(transport: asyncio.BaseTransport) -> None:
            self.connections.add(transport)
            self.opened += 1
            connection_made(transport)

        session.connection_made = remember
        return session

    def cut_connections(self) -> None:
        """Close every client connection now (from another thread)."""

        async def cut() -> None:
            for transport in list(self.connections):
                transport.abort()  # type: ignore[attr-defined]
            await asyncio.sleep(0)  # the transports release their sockets

        asyncio.run_coroutine_threadsafe(cut(), self.loop).result(timeout=10)


class SmtpCapture:
    """``smtputf8``: offer SMTPUTF8 (RFC 6531) and take UTF-8 addresses; off by
    default, as aiosmtpd has it. ``controller``: more options for aiosmtpd's
    ``Controller`` and its ``SMTP`` server (``ssl_context``, ``require_starttls``...)."""

    def __init__(
        self,
        output_dir: Path | None = None,
        port: int | None = None,
        handler: CaptureHandler | None = None,
        *,
        smtputf8: bool = False,
        **controller: Any,
    ) -> None:
        self.handler = handler or CaptureHandler(output_dir)
        self.port = port or free_port()
        self.controller_options = {"enable_SMTPUTF8": smtputf8, **controller}
        self.controller = self._new_controller()
        self.running = False

    def _new_controller(self) -> _Controller:
        return _Controller(self.handler, hostname="127.0.0.1", port=self.port, **self.controller_options)

    def start(self) -> SmtpCapture:
        if not self.running:
            self.controller.start()
            self.running = True
        return self

    def stop(self) -> None:
        """Stop listening and cut the open connections."""
        if self.running:
            self.controller.cut_connections()
            self.controller.stop()
            self.running = False

    def restart(self) -> None:
        """(Stop and) listen again on the same port; open connections are cut."""
        self.stop()
        self.controller = self._new_controller()
        self.start()

    @property
    def messages(self) -> list[Received]:
        with self.handler.changed:
            return list(self.handler.messages)
