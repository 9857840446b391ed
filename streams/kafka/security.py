"""How the service's Kafka clients authenticate and encrypt (COMM_KAFKA_SECURITY_*).

One mapping from settings onto every Kafka client the service opens: Faust's
consumer and producer (``faust_options``; the outbox relay publishes through
Faust's producer) and plain aiokafka clients such as the admin client that
creates topics (``client_options``). ``explain`` turns what a refused connection
raised into a message that names the variable to change.
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka import errors
from faust.auth import SASLCredentials, SSLCredentials

from streams.settings import SASL_PROTOCOLS, TLS_PROTOCOLS, Settings, SettingsError


class BrokerSecurityError(RuntimeError):
    """The broker refused the connection as configured (certificate, protocol,
    credentials); the message names the variable. Retrying would not help."""


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL: the brokers are verified (with the CA
    of COMM_KAFKA_CA_FILE, or the system's), with their host names; a client
    certificate for mutual TLS. None without TLS.

    The settings have loaded the files once already; this reads them again (a
    file changed since then still stops start-up naming the variable).
    """
    if settings.kafka_security_protocol not in TLS_PROTOCOLS:
        return None
    ca_file = settings.kafka_ca_file
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(f"COMM_KAFKA_CA_FILE: cannot load {ca_file}: {_reason(exc)}") from None
    if settings.kafka_client_cert_file is not None and settings.kafka_client_key_file is not None:
        try:
            # An empty password: an encrypted key fails instead of prompting on the terminal.
            context.load_cert_chain(settings.kafka_client_cert_file, settings.kafka_client_key_file, password="")
        except (ssl.SSLError, OSError) as exc:
            raise SettingsError(
                f"COMM_KAFKA_CLIENT_CERT_FILE, COMM_KAFKA_CLIENT_KEY_FILE: cannot load "
                f"{settings.kafka_client_cert_file} with {settings.kafka_client_key_file}: {_reason(exc)}"
            ) from None
    return context


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _sasl(settings: Settings) -> tuple[str, str, str]:
    # The settings refuse SASL without all three (streams/settings.py).
    assert settings.kafka_sasl_mechanism is not None
    assert settings.kafka_sasl_username is not None
    assert settings.kafka_sasl_password is not None
    return (
        settings.kafka_sasl_mechanism,
        settings.kafka_sasl_username.get_secret_value(),
        settings.kafka_sasl_password.get_secret_value(),
    )


def faust_options(settings: Settings) -> dict[str, Any]:
    """Options for ``faust.App`` (``broker_credentials``).

    Faust maps ``SASLCredentials`` onto aiokafka's SASL_SSL exactly when it has
    an SSL context (``faust.transport.drivers.aiokafka.credentials_to_aiokafka_auth``),
    so SASL_SSL always hands it one.
    """
    protocol = settings.kafka_security_protocol
    context = ssl_context(settings)
    credentials: SASLCredentials | SSLCredentials
    if protocol in SASL_PROTOCOLS:
        mechanism, username, password = _sasl(settings)
        credentials = SASLCredentials(username=username, password=password, mechanism=mechanism, ssl_context=context)
    elif context is not None:
        credentials = SSLCredentials(context)
    else:
        return {}
    return {"broker_credentials": credentials}


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for an aiokafka client (producer, consumer, admin).

    They hold the SASL password in clear, as aiokafka needs it: never log them.
    """
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if protocol in SASL_PROTOCOLS:
        mechanism, username, password = _sasl(settings)
        options.update(sasl_mechanism=mechanism, sasl_plain_username=username, sasl_plain_password=password)
    return options


def explain(exc: BaseException, settings: Settings, address: str) -> BrokerSecurityError | None:
    """What a refused connection to ``address`` means, naming the variable to change;
    None if it is no security problem (the broker is down or not reachable yet)."""
    protocol = settings.kafka_security_protocol
    # A TLS alert that arrives after the handshake (TLS 1.3: the broker refusing
    # our certificate) reaches aiokafka's reader, which reports a closed connection.
    if isinstance(exc, errors.KafkaConnectionError) and isinstance(exc.__cause__, ssl.SSLError):
        exc = exc.__cause__
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or _reason(exc)
        if exc.verify_code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
            return BrokerSecurityError(
                f"COMM_KAFKA_BROKER: the certificate of the broker at {address} is not valid for that host ({reason})"
            )
        trusted = f"the CA in {settings.kafka_ca_file}" if settings.kafka_ca_file else "the system's CA certificates"
        return BrokerSecurityError(
            f"COMM_KAFKA_CA_FILE: the certificate of the broker at {address} is not signed by {trusted} "
            f"({reason}); set COMM_KAFKA_CA_FILE to the CA certificate that signed it"
        )
    if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        reason = _reason(exc)
        if "certificate" in reason:  # the broker refused ours: missing or not trusted
            return BrokerSecurityError(
                f"COMM_KAFKA_CLIENT_CERT_FILE: the broker at {address} refused the client certificate ({reason})"
            )
        return BrokerSecurityError(
            f"COMM_KAFKA_SECURITY_PROTOCOL={protocol}: the TLS handshake with the broker at {address} failed "
            f"({reason}); does the broker listen with TLS on that port?"
        )
    if isinstance(exc, errors.UnsupportedSaslMechanismError):
        return BrokerSecurityError(
            f"COMM_KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism}: the broker at {address} does not offer it"
        )
    # aiokafka's SCRAM client fails with KeyError or ValueError on a server's
    # refusal in the SCRAM exchange itself (RFC 5802 "e=unknown-user", as Tansu
    # sends), a Kafka broker answers with SaslAuthenticationFailed.
    scram = protocol in SASL_PROTOCOLS and str(settings.kafka_sasl_mechanism).startswith("SCRAM-")
    scram_refused = scram and isinstance(exc, KeyError | ValueError)
    if scram_refused or isinstance(exc, errors.SaslAuthenticationFailed | errors.AuthenticationFailedError):
        return BrokerSecurityError(
            f"COMM_KAFKA_SASL_USERNAME, COMM_KAFKA_SASL_PASSWORD: the broker at {address} refused the "
            f"credentials with COMM_KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism}"
        )
    return None
