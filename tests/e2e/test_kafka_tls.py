"""Kafka over TLS end to end: the worker reaches the broker only through TLS (with
a client certificate) and an email arrives; a broker whose certificate the worker
does not trust stops start-up naming COMM_KAFKA_CA_FILE.

Tansu's own TLS listener does not complete a handshake with aiokafka, so a private
Tansu listens in plain TCP on a port only a TLS-terminating proxy uses
(tests/tls_proxy.py), and advertises the proxy's address: the metadata sends every
client to the proxy.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import trustme

from streams.demo.broker import LocalBroker, broker_binary
from streams.kafka.security import client_options
from streams.settings import Settings
from tests.e2e.harness import FAST, Service, WorkerProcess, plain_text
from tests.events import match_created, therapist_created
from tests.tls_proxy import Certificates, TlsProxy, tcp_peer_ports
from tests.waiting import until

PASSWORD = "Geheim-7f3a-nicht-loggen"


class TlsOnlyBroker(LocalBroker):
    """A Tansu that clients reach only through ``proxy`` (TLS, client certificate
    required): its plain port is known to the proxy alone, and it advertises the
    proxy's address. With ``authentication``, Tansu requires SASL (SCRAM)."""

    def __init__(self, certificates: Certificates, log_path: Path, *, authentication: bool = False) -> None:
        super().__init__(log_path=log_path)
        self.authentication = authentication
        self.proxy = TlsProxy(("127.0.0.1", self.port), certificates.server_context(client_ca=certificates.ca))

    @property
    def url(self) -> str:
        return f"kafka://{self.proxy.address}"

    @property
    def bootstrap(self) -> str:
        return self.proxy.address

    def start(self, timeout: float = 20.0) -> TlsOnlyBroker:
        self.proxy.start()
        assert self.log_path is not None
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    broker_binary(),
                    "broker",
                    "--listener-url",
                    f"tcp://127.0.0.1:{self.port}",
                    "--advertised-listener-url",
                    f"tcp://{self.proxy.address}",
                    "--storage-engine",
                    "memory://tansu/",
                    *(["--authentication"] if self.authentication else []),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "RUST_LOG": "warn"},
            )
        self.wait_until_listening(timeout)
        return self

    def stop(self) -> None:
        super().stop()
        self.proxy.stop()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_broker(certificates: Certificates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsOnlyBroker]:
    with TlsOnlyBroker(certificates, tmp_path_factory.mktemp("broker") / "tansu.log") as running:
        yield running


@pytest.fixture
def tls_settings(certificates: Certificates) -> dict[str, str]:
    cert, key = certificates.client_files()
    return {
        "COMM_KAFKA_SECURITY_PROTOCOL": "SSL",
        "COMM_KAFKA_CA_FILE": str(certificates.ca_file),
        "COMM_KAFKA_CLIENT_CERT_FILE": str(cert),
        "COMM_KAFKA_CLIENT_KEY_FILE": str(key),
    }


@pytest.fixture
async def tls_service(
    make_service: Callable[..., AbstractAsyncContextManager[Service]],
    tls_broker: TlsOnlyBroker,
    tls_settings: dict[str, str],
) -> AsyncIterator[Service]:
    # The test's own producer and consumer connect as the worker does.
    options: dict[str, Any] = client_options(Settings.from_environ(tls_settings))
    async with make_service(broker=tls_broker, client_options=options, **tls_settings) as svc:
        yield svc


async def test_the_worker_reaches_the_broker_only_through_tls_and_an_email_arrives(
    tls_service: Service, tls_broker: TlsOnlyBroker
):
    accepted_before = tls_broker.proxy.accepted
    worker = await tls_service.up()
    await tls_service.therapists(therapist_created(1))
    await tls_service.matches(match_created(11, 1, "2026-01-15T10:00:00+01:00"))
    [email] = await tls_service.mailbox.wait_for("therapeut1@praxis.example", 1)
    assert "Pat11" in plain_text(email)
    await tls_service.wait_event("communication.email_sent", therapist_id=1)

    # Every Kafka connection the worker holds leads to the proxy, none to the
    # broker's plain port; the proxy saw the worker's handshakes (with its client
    # certificate: the proxy requires one).
    assert worker.process is not None
    peers = set(tcp_peer_ports(worker.process.pid))
    assert tls_broker.proxy.port in peers
    assert tls_broker.port not in peers
    assert tls_broker.proxy.accepted > accepted_before
    assert worker.terminate() < 10.0
    assert worker.process.returncode == 0


async def test_a_broker_certificate_from_another_ca_stops_start_up_naming_COMM_KAFKA_CA_FILE(
    make_service: Callable[..., AbstractAsyncContextManager[Service]],
    tls_broker: TlsOnlyBroker,
    tls_settings: dict[str, str],
    tmp_path: Path,
):
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    # SASL over TLS with a password: the password must not appear anywhere either.
    settings = {
        "COMM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "COMM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "COMM_KAFKA_SASL_USERNAME": "commsvc",
        "COMM_KAFKA_SASL_PASSWORD": PASSWORD,
        "COMM_KAFKA_CA_FILE": str(other_ca),
    }
    test_clients = client_options(Settings.from_environ(tls_settings))
    async with make_service(broker=tls_broker, client_options=test_clients, **settings) as svc:
        refused_before = tls_broker.proxy.refused
        worker = svc.worker()
        process = worker.process
        assert process is not None
        await until(lambda: process.poll() is not None, 40, lambda: f"the worker to exit:\n{worker.tail()}")
        log = worker.new_log().decode(errors="replace")
        assert process.returncode != 0, log
        assert "COMM_KAFKA_CA_FILE" in log, log
        assert str(other_ca) in log and "not signed by" in log, log
        assert "Traceback" not in log, log
        assert PASSWORD not in log
        assert tls_broker.proxy.refused > refused_before  # it was the handshake, not an unreachable broker


@pytest.fixture(scope="module")
def sasl_broker(certificates: Certificates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsOnlyBroker]:
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with TlsOnlyBroker(certificates, log, authentication=True) as running:
        yield running


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_sasl_ssl_credentials_the_broker_refuses_stop_start_up_without_showing_the_password(
    sasl_broker: TlsOnlyBroker, tls_settings: dict[str, str], tmp_path: Path, mechanism: str
):
    """Tansu's --authentication speaks SCRAM, but this build cannot hold a user: it
    creates users only for an authenticated client, and its memory store is empty
    at every start. So the worker's SCRAM exchange over TLS reaches the broker,
    which answers "unknown user"; the worker says which settings to check."""
    environ = {
        **FAST,
        **tls_settings,
        "COMM_KAFKA_BROKER": sasl_broker.url,
        "COMM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "COMM_KAFKA_SASL_MECHANISM": mechanism,
        "COMM_KAFKA_SASL_USERNAME": "commsvc",
        "COMM_KAFKA_SASL_PASSWORD": PASSWORD,
        "COMM_DATABASE_URL": f"sqlite:///{tmp_path / 'commsvc.db'}",
        "COMM_WEB_ENABLED": "false",
    }
    worker = WorkerProcess(environ, tmp_path / "worker.log").start()
    process = worker.process
    assert process is not None
    try:
        await until(lambda: process.poll() is not None, 40, lambda: f"the worker to exit:\n{worker.tail()}")
    finally:
        if worker.running:
            worker.kill()
    log = worker.new_log().decode(errors="replace")
    assert process.returncode != 0, log
    assert "COMM_KAFKA_SASL_USERNAME, COMM_KAFKA_SASL_PASSWORD: the broker at" in log, log
    assert f"refused the credentials with COMM_KAFKA_SASL_MECHANISM={mechanism}" in log, log
    assert "Traceback" not in log, log
    assert PASSWORD not in log
