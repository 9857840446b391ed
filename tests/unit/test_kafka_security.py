"""Kafka security settings (COMM_KAFKA_SECURITY_*) mapped onto every client: Faust's
consumers and producer, and plain aiokafka clients; inconsistent settings and
refused connections named by their variable, the password nowhere.

The broker cannot log a user in here (see tests/e2e/test_kafka_tls.py), so that
SASL reaches aiokafka as it should is shown by these mappings."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiokafka import errors
from aiokafka.admin import AIOKafkaAdminClient
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers import aiokafka as aiokafka_driver

from streams.kafka import admin
from streams.kafka.app import create_app
from streams.kafka.security import BrokerSecurityError, client_options, explain, faust_options
from streams.settings import Settings, SettingsError

PASSWORD = "Pw-9c1e-never-shown"
ADDRESS = "kafka-1.example:9093"


class Files:
    """A CA, a broker certificate it signed, and a client certificate with its key."""

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        self.ca_file = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.broker = self.ca.issue_cert("kafka-1.example")
        client = self.ca.issue_cert("commsvc@example")
        self.cert_file, self.key_file = directory / "client.crt", directory / "client.key"
        client.cert_chain_pems[0].write_to_path(str(self.cert_file))
        client.private_key_pem.write_to_path(str(self.key_file))


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


def settings(**environ: str) -> Settings:
    return Settings.from_environ({f"COMM_KAFKA_{name.upper()}": value for name, value in environ.items()})


def sasl(protocol: str, mechanism: str = "SCRAM-SHA-512", **more: str) -> Settings:
    return settings(
        security_protocol=protocol, sasl_mechanism=mechanism, sasl_username="commsvc", sasl_password=PASSWORD, **more
    )


def faust_auth(s: Settings) -> dict[str, Any]:
    """What Faust hands aiokafka for these settings."""
    options = faust_options(s)
    return dict(aiokafka_driver.credentials_to_aiokafka_auth(options.get("broker_credentials")))


def trusts(context: ssl.SSLContext, ca: trustme.CA) -> bool:
    return ssl.PEM_cert_to_DER_cert(ca.cert_pem.bytes().decode()) in context.get_ca_certs(binary_form=True)


# -- the mapping -------------------------------------------------------------------


def test_plaintext_is_the_default_and_sets_nothing():
    s = settings()
    assert s.kafka_security_protocol == "PLAINTEXT"
    assert faust_options(s) == {}
    assert faust_auth(s) == {"security_protocol": "PLAINTEXT"}
    assert client_options(s) == {"security_protocol": "PLAINTEXT"}


def test_ssl_verifies_the_broker_with_the_ca_file(files: Files):
    s = settings(security_protocol="SSL", ca_file=str(files.ca_file))
    [credentials] = faust_options(s).values()
    assert isinstance(credentials, SSLCredentials)
    for options in (faust_auth(s), client_options(s)):
        assert options.keys() == {"security_protocol", "ssl_context"}
        assert options["security_protocol"] == "SSL"
        context = options["ssl_context"]
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert trusts(context, files.ca)
        assert len(context.get_ca_certs()) == 1  # only that CA, not the system's as well


def test_ssl_without_a_ca_file_verifies_with_the_system_cas():
    context = client_options(settings(security_protocol="SSL"))["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_mutual_tls_presents_the_client_certificate(files: Files):
    s = settings(
        security_protocol="SSL",
        ca_file=str(files.ca_file),
        client_cert_file=str(files.cert_file),
        client_key_file=str(files.key_file),
    )
    # The context holds the certificate: a TLS server that requires one accepts it.
    for options in (faust_auth(s), client_options(s)):
        assert handshake(options["ssl_context"], files, require_client_cert=True) is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext(mechanism: str):
    s = sasl("SASL_PLAINTEXT", mechanism)
    [credentials] = faust_options(s).values()
    assert isinstance(credentials, SASLCredentials)
    expected = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "commsvc",
        "sasl_plain_password": PASSWORD,
    }
    assert client_options(s) == expected
    assert faust_auth(s) == {**expected, "ssl_context": None}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_is_sasl_over_tls_for_faust_and_for_aiokafka(mechanism: str, files: Files):
    s = sasl("SASL_SSL", mechanism, ca_file=str(files.ca_file))
    for options in (faust_auth(s), client_options(s)):
        assert options["security_protocol"] == "SASL_SSL"
        assert options["sasl_mechanism"] == mechanism
        assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("commsvc", PASSWORD)
        assert trusts(options["ssl_context"], files.ca)


def test_sasl_ssl_with_mutual_tls(files: Files):
    s = sasl(
        "SASL_SSL",
        ca_file=str(files.ca_file),
        client_cert_file=str(files.cert_file),
        client_key_file=str(files.key_file),
    )
    options = client_options(s)
    assert options["security_protocol"] == "SASL_SSL"
    assert handshake(options["ssl_context"], files, require_client_cert=True) is None


def test_secrets_may_come_from_files(tmp_path: Path):
    (tmp_path / "user").write_text("commsvc\n")
    (tmp_path / "password").write_text(PASSWORD + "\n")
    s = Settings.from_environ(
        {
            "COMM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "COMM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "COMM_KAFKA_SASL_USERNAME_FILE": str(tmp_path / "user"),
            "COMM_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "password"),
        }
    )
    options = client_options(s)
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("commsvc", PASSWORD)


async def test_every_client_of_the_faust_app_connects_as_configured(
    files: Files, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    s = sasl("SASL_SSL", "SCRAM-SHA-256", ca_file=str(files.ca_file))
    s = s.model_copy(update={"data_dir": tmp_path})
    app = create_app(s)
    # the producer (the relay publishes through it)
    producer = app.producer
    connects = {**producer._settings_default(), **producer._settings_auth()}
    # the group consumer and Faust's client-only consumer
    made: list[dict[str, Any]] = []

    class Recording:
        def __init__(self, **kwargs: Any) -> None:
            made.append(kwargs)

    monkeypatch.setattr(aiokafka_driver.aiokafka, "AIOKafkaConsumer", Recording)
    thread = app.consumer._thread
    try:
        thread._create_worker_consumer(app.transport)
        thread._create_client_consumer(app.transport)
    finally:
        thread.thread_loop.close()  # the consumer thread's own loop, never started here
    for options in (connects, *made):
        assert options["security_protocol"] == "SASL_SSL"
        assert options["sasl_mechanism"] == "SCRAM-SHA-256"
        assert options["sasl_plain_username"] == "commsvc"
        assert trusts(options["ssl_context"], files.ca)
    assert len(made) == 2


async def test_the_admin_client_takes_the_options(files: Files):
    s = sasl("SASL_SSL", ca_file=str(files.ca_file))
    client = admin._admin_client(s)
    assert isinstance(client, AIOKafkaAdminClient)
    assert client._client._security_protocol == "SASL_SSL"
    assert client._client._sasl_mechanism == "SCRAM-SHA-512"
    assert trusts(client._client._ssl_context, files.ca)
    await client.close()


# -- inconsistent settings stop start-up, naming the variable ------------------------


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"security_protocol": "SASL_SSL", "sasl_username": "u", "sasl_password": PASSWORD},
            "COMM_KAFKA_SASL_MECHANISM: required with COMM_KAFKA_SECURITY_PROTOCOL=SASL_SSL",
        ),
        (
            {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_password": PASSWORD},
            "COMM_KAFKA_SASL_USERNAME: required with COMM_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT",
        ),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256", "sasl_username": "u"},
            "COMM_KAFKA_SASL_PASSWORD: required with COMM_KAFKA_SECURITY_PROTOCOL=SASL_SSL",
        ),
        (
            {"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": PASSWORD},
            "COMM_KAFKA_SASL_MECHANISM: set, but COMM_KAFKA_SECURITY_PROTOCOL=PLAINTEXT uses no SASL",
        ),
        ({"security_protocol": "SSL", "sasl_mechanism": "MD5"}, "COMM_KAFKA_SASL_MECHANISM: Input should be"),
        ({"security_protocol": "TLS"}, "COMM_KAFKA_SECURITY_PROTOCOL: Input should be"),
        ({"security_protocol": "SSL", "ca_file": "/nonexistent/ca.pem"}, "COMM_KAFKA_CA_FILE: no such file"),
        ({"ca_file": "{ca}"}, "COMM_KAFKA_CA_FILE: set, but COMM_KAFKA_SECURITY_PROTOCOL=PLAINTEXT uses no TLS"),
        (
            {"security_protocol": "SSL", "client_cert_file": "{cert}"},
            "COMM_KAFKA_CLIENT_CERT_FILE, COMM_KAFKA_CLIENT_KEY_FILE: mutual TLS needs the certificate and its key",
        ),
        (
            {"security_protocol": "SSL", "client_key_file": "{key}"},
            "COMM_KAFKA_CLIENT_CERT_FILE, COMM_KAFKA_CLIENT_KEY_FILE: mutual TLS needs the certificate and its key",
        ),
        ({"security_protocol": "SSL", "ca_file": "{key}"}, "COMM_KAFKA_CA_FILE: not a PEM CA certificate"),
        (
            {"security_protocol": "SSL", "client_cert_file": "{ca}", "client_key_file": "{key}"},
            "COMM_KAFKA_CLIENT_CERT_FILE, COMM_KAFKA_CLIENT_KEY_FILE: not a PEM certificate with its unencrypted key",
        ),
    ],
)
def test_inconsistent_settings_name_the_variable(files: Files, environ: dict[str, str], message: str):
    paths = {"ca": files.ca_file, "cert": files.cert_file, "key": files.key_file}
    environ = {name: value.format(**paths) for name, value in environ.items()}
    with pytest.raises(SettingsError) as raised:
        settings(**environ)
    assert message in str(raised.value)
    assert PASSWORD not in str(raised.value)


def test_an_unreadable_ca_file_names_the_variable(files: Files, tmp_path: Path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    with pytest.raises(SettingsError, match=f"COMM_KAFKA_CA_FILE: not a PEM CA certificate: {garbage}"):
        settings(security_protocol="SSL", ca_file=str(garbage))


def test_an_encrypted_key_is_refused_instead_of_prompting(files: Files, tmp_path: Path):
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(files.key_file.read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(SettingsError, match="COMM_KAFKA_CLIENT_CERT_FILE, COMM_KAFKA_CLIENT_KEY_FILE"):
        settings(security_protocol="SSL", client_cert_file=str(files.cert_file), client_key_file=str(encrypted))


def test_a_key_of_another_certificate_is_refused(files: Files, tmp_path: Path):
    other = tmp_path / "other.key"
    files.ca.issue_cert("someone-else@example").private_key_pem.write_to_path(str(other))
    with pytest.raises(SettingsError, match="not a PEM certificate with its unencrypted key"):
        settings(security_protocol="SSL", client_cert_file=str(files.cert_file), client_key_file=str(other))


def test_a_ca_file_removed_after_the_settings_were_read_still_names_the_variable(files: Files):
    s = settings(security_protocol="SSL", ca_file=str(files.ca_file))
    files.ca_file.unlink()
    with pytest.raises(SettingsError, match="COMM_KAFKA_CA_FILE: cannot load"):
        client_options(s)


# -- the password is never shown ------------------------------------------------------


def test_the_password_is_in_no_repr_and_no_log(files: Files, caplog: pytest.LogCaptureFixture, tmp_path: Path):
    caplog.set_level(logging.DEBUG)
    s = sasl("SASL_SSL", ca_file=str(files.ca_file)).model_copy(update={"data_dir": tmp_path})
    credentials = faust_options(s)["broker_credentials"]
    app = create_app(s)
    shown = [
        repr(s),
        str(s),
        repr(s.model_dump()),
        repr(credentials),
        str(credentials),
        repr(app.conf.broker_credentials),
    ]
    assert all(PASSWORD not in text for text in shown)
    assert "commsvc" in repr(credentials)  # the user name may be shown
    assert PASSWORD not in caplog.text


# -- a refused connection, explained --------------------------------------------------


def handshake(
    client: ssl.SSLContext, files: Files, *, server_name: str = "kafka-1.example", require_client_cert: bool = False
) -> BaseException | None:
    """A TLS handshake in memory between ``client`` and a broker with ``files.broker``;
    what the client raised, if anything."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    files.broker.configure_cert(server)
    if require_client_cert:
        files.ca.configure_trust(server)
        server.verify_mode = ssl.CERT_REQUIRED
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(c_in, c_out, server_hostname=server_name)
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    server_failed = False
    for _ in range(10):
        for name, side in (("client", client_side), ("server", server_side)):
            if done[name]:
                continue
            try:
                side.do_handshake()
                done[name] = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                if name == "client":
                    return exc
                done[name] = server_failed = True
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    else:
        raise AssertionError("the handshake did not finish")
    # TLS 1.3: a refused client certificate shows on the client's first read.
    if not server_failed:
        server_side.write(b"ok")
        c_in.write(s_out.read())
    try:
        client_side.read()
    except ssl.SSLError as exc:
        return exc
    return None


def test_a_broker_certificate_from_another_ca_names_COMM_KAFKA_CA_FILE(files: Files, tmp_path: Path):
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    s = sasl("SASL_SSL", ca_file=str(other))
    refused = handshake(client_options(s)["ssl_context"], files)
    assert isinstance(refused, ssl.SSLCertVerificationError)
    explained = explain(refused, s, ADDRESS)
    assert isinstance(explained, BrokerSecurityError)
    assert str(explained).startswith(
        f"COMM_KAFKA_CA_FILE: the certificate of the broker at {ADDRESS} is not signed by the CA in {other}"
    )
    assert PASSWORD not in str(explained)


def test_without_a_ca_file_the_message_says_the_system_cas_do_not_trust_it(files: Files):
    s = settings(security_protocol="SSL")
    refused = handshake(client_options(s)["ssl_context"], files)
    assert isinstance(refused, ssl.SSLCertVerificationError)
    assert "not signed by the system's CA certificates" in str(explain(refused, s, ADDRESS))
    assert "set COMM_KAFKA_CA_FILE" in str(explain(refused, s, ADDRESS))


def test_a_certificate_for_another_host_names_COMM_KAFKA_BROKER(files: Files):
    s = settings(security_protocol="SSL", ca_file=str(files.ca_file))
    refused = handshake(client_options(s)["ssl_context"], files, server_name="kafka-2.example")
    assert isinstance(refused, ssl.SSLCertVerificationError)
    assert str(explain(refused, s, ADDRESS)).startswith(
        f"COMM_KAFKA_BROKER: the certificate of the broker at {ADDRESS} is not valid for that host"
    )


def test_a_broker_that_requires_a_client_certificate_names_COMM_KAFKA_CLIENT_CERT_FILE(files: Files):
    s = settings(security_protocol="SSL", ca_file=str(files.ca_file))
    refused = handshake(client_options(s)["ssl_context"], files, require_client_cert=True)
    assert isinstance(refused, ssl.SSLError)
    assert str(explain(refused, s, ADDRESS)).startswith(
        f"COMM_KAFKA_CLIENT_CERT_FILE: the broker at {ADDRESS} refused the client certificate"
    )


def test_a_tls_alert_behind_a_closed_connection_is_found(files: Files):
    s = settings(security_protocol="SSL", ca_file=str(files.ca_file))
    refused = handshake(client_options(s)["ssl_context"], files, require_client_cert=True)
    assert refused is not None
    closed = errors.KafkaConnectionError(f"Connection at {ADDRESS} closed")
    closed.__cause__ = refused
    assert str(explain(closed, s, ADDRESS)).startswith("COMM_KAFKA_CLIENT_CERT_FILE: the broker at")


@pytest.mark.parametrize(
    "refusal",
    [
        lambda: errors.SaslAuthenticationFailed("Authentication failed: Invalid username or password"),
        lambda: errors.AuthenticationFailedError(),
        lambda: KeyError("v"),  # aiokafka's SCRAM client on the server's "e=unknown-user"
        lambda: ValueError("Server sent wrong signature!"),
    ],
)
def test_refused_credentials_name_the_sasl_variables_but_not_the_password(refusal: Callable[[], BaseException]):
    s = sasl("SASL_SSL")
    explained = explain(refusal(), s, ADDRESS)
    assert str(explained) == (
        f"COMM_KAFKA_SASL_USERNAME, COMM_KAFKA_SASL_PASSWORD: the broker at {ADDRESS} refused the credentials "
        "with COMM_KAFKA_SASL_MECHANISM=SCRAM-SHA-512"
    )


def test_a_mechanism_the_broker_does_not_offer_names_COMM_KAFKA_SASL_MECHANISM():
    s = sasl("SASL_PLAINTEXT", "SCRAM-SHA-256")
    explained = explain(errors.UnsupportedSaslMechanismError("enabled: ['PLAIN']"), s, ADDRESS)
    assert str(explained).startswith("COMM_KAFKA_SASL_MECHANISM=SCRAM-SHA-256: the broker at")


@pytest.mark.parametrize(
    "failure",
    [ConnectionRefusedError(111, "Connect call failed"), TimeoutError(), errors.KafkaConnectionError("closed")],
)
def test_an_unreachable_broker_is_no_security_problem(failure: BaseException, files: Files):
    assert explain(failure, sasl("SASL_SSL", ca_file=str(files.ca_file)), ADDRESS) is None


def test_a_key_error_without_scram_is_not_taken_for_refused_credentials():
    assert explain(KeyError("v"), settings(security_protocol="SSL"), ADDRESS) is None
    assert explain(KeyError("v"), sasl("SASL_SSL", "PLAIN"), ADDRESS) is None


# -- start-up: a refusal stops at once, an unreachable broker is waited for --------


async def test_start_up_stops_at_once_on_a_refusal_and_waits_for_an_unreachable_broker(
    files: Files, monkeypatch: pytest.MonkeyPatch
):
    s = sasl("SASL_SSL", ca_file=str(files.ca_file)).model_copy(
        update={"kafka_broker": "kafka://kafka-1.example:9093;kafka://kafka-2.example:9093"}
    )
    attempts: list[tuple[str, int]] = []
    answers: list[BaseException] = []

    async def connect(host: str, port: int, **options: Any) -> Any:
        attempts.append((host, port))
        assert options["sasl_plain_password"] == PASSWORD and options["security_protocol"] == "SASL_SSL"
        raise answers.pop(0)

    monkeypatch.setattr(admin, "create_conn", connect)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    # Both brokers down, then the first refuses the credentials: no further retry.
    answers[:] = [ConnectionRefusedError(111, "refused"), TimeoutError(), errors.SaslAuthenticationFailed("no")]
    with pytest.raises(BrokerSecurityError, match="COMM_KAFKA_SASL_USERNAME, COMM_KAFKA_SASL_PASSWORD") as raised:
        await admin.ensure_topics(s, sleep=sleep)
    assert attempts == [("kafka-1.example", 9093), ("kafka-2.example", 9093), ("kafka-1.example", 9093)]
    assert slept == [0.5]
    assert PASSWORD not in str(raised.value)


async def test_plaintext_start_up_makes_no_extra_connection(monkeypatch: pytest.MonkeyPatch):
    async def connect(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no probe for PLAINTEXT")

    monkeypatch.setattr(admin, "create_conn", connect)
    await admin.check_connection(settings())
