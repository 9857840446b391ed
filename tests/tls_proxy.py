"""A TLS-terminating TCP proxy for the tests: clients speak TLS to it, it forwards
the plain bytes to a server that has no TLS of its own (Tansu, whose TLS listener
does not complete a handshake with aiokafka).

It runs its own event loop in a thread, as the SMTP capture does, so that a test
blocking its loop (waiting for a worker process to stop) does not stall the
connections of the worker it waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import trustme

from streams.demo.broker import free_port


@dataclass
class Certificates:
    """A CA of the test's own and a server certificate it signed, as PEM files."""

    directory: Path
    ca: trustme.CA = field(default_factory=trustme.CA)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca_file = self.directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.server = self.ca.issue_cert("127.0.0.1", "localhost")

    def server_context(self, *, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
        """The proxy's side; with ``client_ca`` it requires a client certificate it signed."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.configure_cert(context)
        if client_ca is not None:
            client_ca.configure_trust(context)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def client_files(self, name: str = "client") -> tuple[Path, Path]:
        """A client certificate (for mutual TLS) signed by this CA: (cert, key) files."""
        issued = self.ca.issue_cert(f"{name}@commsvc.example")
        cert, key = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(key))
        return cert, key


class TlsProxy:
    """Listens with TLS on 127.0.0.1:``port`` and forwards every connection to
    ``upstream`` in plain TCP. Counts what it saw, for tests to assert on."""

    def __init__(self, upstream: tuple[str, int], context: ssl.SSLContext, port: int | None = None) -> None:
        self.upstream = upstream
        self.context = context
        self.port = port or free_port()
        self.accepted = 0  # TLS handshakes completed
        self.refused = 0  # connections whose handshake failed
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tls-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TlsProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> TlsProxy:
        return self.start()

    def __exit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType] | None) -> None:
        self.stop()

    async def _listen(self) -> asyncio.Server:
        # The handshake is done by hand (start_tls) so that a failed one is counted
        # and closed quietly instead of being logged by asyncio as an error.
        return await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                await writer.start_tls(self.context, ssl_handshake_timeout=10)
            except (ssl.SSLError, OSError, TimeoutError):
                self.refused += 1
                return
            self.accepted += 1
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                return
            try:
                await _pipe_both(reader, writer, up_reader, up_writer)
            finally:
                await _close(up_writer)
        finally:
            await _close(writer)
            self._tasks.discard(task)


async def _pipe_both(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """Until either side closes."""
    pipes = [asyncio.create_task(_pipe(reader, up_writer)), asyncio.create_task(_pipe(up_reader, writer))]
    try:
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pipe in pipes:
            pipe.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)


async def _pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ssl.SSLError):
        while data := await source.read(65536):
            target.write(data)
            await target.drain()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 2)


def tcp_peer_ports(pid: int) -> Iterator[int]:
    """The remote ports of the established IPv4/IPv6 TCP connections of process
    ``pid`` (from /proc: which sockets it holds, and where they lead)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = fd.readlink().name
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                remote, state, inode = fields[2], fields[3], fields[9]
                if state == "01" and inode in inodes:  # TCP_ESTABLISHED
                    yield int(remote.rsplit(":", 1)[1], 16)
