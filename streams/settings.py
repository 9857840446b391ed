"""One typed settings object, built from the environment (CONTRACT §6).

``Settings.from_environ`` takes any mapping, so tests hand it a plain dict. Secrets
may also come from a file named by ``<VARIABLE>_FILE`` and are never shown in
``repr`` or logs.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Mapping
from datetime import timedelta, tzinfo
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    ByteSize,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url

from domain.schedule import Schedule, parse_schedule
from streams.settings_mail import Duration, MailSettings, Positive

PREFIX = "COMM_"
# Variables whose value may instead be read from the file ``<NAME>_FILE`` names.
SECRET_VARIABLES = (
    "COMM_SMTP_USERNAME",
    "COMM_SMTP_PASSWORD",
    "COMM_DATABASE_URL",
    "COMM_KAFKA_SASL_USERNAME",
    "COMM_KAFKA_SASL_PASSWORD",
    "COMM_API_TOKEN",
    "COMM_UNSUBSCRIBE_SECRET",
    "COMM_TRACKING_SECRET",
)
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")
# COMM_WEB_HOST values that bind every interface: no address the other workers can use.
WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # noqa: S104 - compared with, not bound to
# An API token is guessed by no one: long, and sent in a header as it is.
MIN_TOKEN_LENGTH = 16


class SettingsError(ValueError):
    """A configuration value is invalid; the message names the variable."""


# What pydantic reads as a boolean.
_BOOLEAN_WORDS = frozenset({"true", "false", "1", "0", "yes", "no", "on", "off", "t", "f", "y", "n"})


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, which containers and
    ``taskset`` narrow), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Settings(MailSettings):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore", arbitrary_types_allowed=True)

    kafka_broker: str = Field("kafka://localhost:9092", alias="COMM_KAFKA_BROKER")
    # How every Kafka client of the service connects (see streams/kafka/security.py).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", alias="COMM_KAFKA_SECURITY_PROTOCOL"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, alias="COMM_KAFKA_SASL_MECHANISM"
    )
    kafka_sasl_username: SecretStr | None = Field(None, alias="COMM_KAFKA_SASL_USERNAME")
    kafka_sasl_password: SecretStr | None = Field(None, alias="COMM_KAFKA_SASL_PASSWORD")
    # CA bundle to verify the brokers with (default: the system's); for mutual TLS
    # a client certificate and its key.
    kafka_ca_file: Path | None = Field(None, alias="COMM_KAFKA_CA_FILE")
    kafka_client_cert_file: Path | None = Field(None, alias="COMM_KAFKA_CLIENT_CERT_FILE")
    kafka_client_key_file: Path | None = Field(None, alias="COMM_KAFKA_CLIENT_KEY_FILE")
    app_id: str = Field("communication-service", alias="COMM_APP_ID", min_length=1)
    database_url: SecretStr = Field(SecretStr("sqlite:///commsvc.db"), alias="COMM_DATABASE_URL")
    smtp_host: str = Field("localhost", alias="COMM_SMTP_HOST")
    smtp_port: int = Field(1025, alias="COMM_SMTP_PORT", ge=1, le=65535)
    smtp_username: SecretStr | None = Field(None, alias="COMM_SMTP_USERNAME")
    smtp_password: SecretStr | None = Field(None, alias="COMM_SMTP_PASSWORD")
    smtp_security: Literal["none", "starttls", "tls"] = Field("none", alias="COMM_SMTP_SECURITY")
    smtp_timeout: Positive = Field(timedelta(seconds=30), alias="COMM_SMTP_TIMEOUT")
    # A CA bundle to verify the SMTP server's certificate with (default: the system's).
    smtp_ca_file: Path | None = Field(None, alias="COMM_SMTP_CA_FILE")
    sender_email: str = Field("vermittlung@therapieplatz.example", alias="COMM_SENDER_EMAIL")
    sender_name: str = Field("Therapieplatz-Vermittlung", alias="COMM_SENDER_NAME")
    timezone: Any = Field(ZoneInfo("Europe/Berlin"), alias="COMM_TIMEZONE")
    contact_interval: Positive = Field(timedelta(days=7), alias="COMM_CONTACT_INTERVAL")
    follow_up_after: Positive = Field(timedelta(days=7), alias="COMM_FOLLOW_UP_AFTER")
    batch_schedule_text: str = Field("0 9 * * *", alias="COMM_BATCH_SCHEDULE")
    call_slot: Positive = Field(timedelta(minutes=5), alias="COMM_CALL_SLOT")
    call_reminder_before: Duration = Field(timedelta(minutes=15), alias="COMM_CALL_REMINDER_BEFORE")
    # Phone follow-up beyond the contract: notice before a call is booked, how far
    # ahead a slot is searched, staff calls per slot (unset: unlimited), and when
    # the day's call list goes out (cron or interval, in COMM_TIMEZONE).
    call_min_notice: Duration = Field(timedelta(hours=1), alias="COMM_CALL_MIN_NOTICE")
    call_horizon: Positive = Field(timedelta(weeks=4), alias="COMM_CALL_HORIZON")
    call_capacity: int | None = Field(None, alias="COMM_CALL_CAPACITY", ge=1)
    daily_call_list_text: str = Field("0 8 * * *", alias="COMM_DAILY_CALL_LIST")
    max_send_attempts: int = Field(5, alias="COMM_MAX_SEND_ATTEMPTS", ge=1)
    max_call_attempts: int = Field(3, alias="COMM_MAX_CALL_ATTEMPTS", ge=1)
    topic_matching: str = Field("matching-events", alias="COMM_TOPIC_MATCHING", min_length=1)
    topic_therapists: str = Field("therapist-events", alias="COMM_TOPIC_THERAPISTS", min_length=1)
    topic_commands: str = Field("communication-commands", alias="COMM_TOPIC_COMMANDS", min_length=1)
    topic_events: str = Field("communication-events", alias="COMM_TOPIC_EVENTS", min_length=1)
    topic_dlq: str = Field("communication-dlq", alias="COMM_TOPIC_DLQ", min_length=1)

    # -- operational settings beyond the contract --------------------------------
    # Partitions of the service's own topics and tables (fixed once data exists).
    partitions: int = Field(8, alias="COMM_PARTITIONS", ge=1)
    create_topics: bool = Field(True, alias="COMM_CREATE_TOPICS")
    replication_factor: int = Field(1, alias="COMM_REPLICATION_FACTOR", ge=1)
    # How often each worker checks whether a batch run is due on its partitions.
    tick_interval: Positive = Field(timedelta(seconds=1), alias="COMM_TICK_INTERVAL")
    # Therapists a batch run decides for before the inbox messages that arrived
    # meanwhile go in between (streams.agents.batch_runs).
    batch_run_slice: int = Field(50, alias="COMM_BATCH_RUN_SLICE", ge=1)
    # How long replayed events and settled requests are recognised.
    dedup_retention: Positive = Field(timedelta(days=90), alias="COMM_DEDUP_RETENTION")
    broker_session_timeout: Positive = Field(timedelta(seconds=10), alias="COMM_BROKER_SESSION_TIMEOUT")
    broker_heartbeat_interval: Positive = Field(timedelta(seconds=1), alias="COMM_BROKER_HEARTBEAT_INTERVAL")
    # How long a fetch may wait for data. Kafka answers as soon as data arrives;
    # Tansu waits the full time, so tests and the demo set it low.
    consumer_fetch_max_wait: Positive = Field(timedelta(milliseconds=1500), alias="COMM_CONSUMER_FETCH_MAX_WAIT")
    # Tansu needs 1 (one record per batch) for changelog recovery; Kafka does not.
    producer_max_batch_size: int | None = Field(None, alias="COMM_PRODUCER_MAX_BATCH_SIZE", ge=1)
    table_standby_replicas: int = Field(1, alias="COMM_TABLE_STANDBY_REPLICAS", ge=0)
    # Local table state: RocksDB files under the data directory (one directory per
    # app and worker, see streams/kafka/store.py), or memory (rebuilt from the
    # changelog at every start).
    store: Literal["rocksdb", "memory"] = Field("rocksdb", alias="COMM_STORE")
    data_dir: Path = Field(Path("commsvc-data"), alias="COMM_DATA_DIR")
    # RocksDB's block cache: one for all table partitions of a worker (Faust gives
    # each partition 2 GiB). 8 MiB holds every index and filter block and thousands
    # of hot values; misses come from the OS page cache, far faster than an event.
    rocksdb_block_cache: ByteSize = Field(ByteSize(8 * 1024 * 1024), alias="COMM_ROCKSDB_BLOCK_CACHE", ge=1024 * 1024)
    # The worker's web server: probes and metrics (see streams/ops/web.py).
    web_enabled: bool = Field(True, alias="COMM_WEB_ENABLED")
    web_host: str = Field("0.0.0.0", alias="COMM_WEB_HOST", min_length=1)  # noqa: S104 - probes come from outside
    web_port: int = Field(6066, alias="COMM_WEB_PORT", ge=1, le=65535)
    # How the other workers reach this one's web server (they forward API requests
    # about a therapist to the worker that owns the therapist's partition). Default:
    # COMM_WEB_HOST, or this host's name when that is a wildcard, and COMM_WEB_PORT.
    web_advertised_url: str | None = Field(None, alias="COMM_WEB_ADVERTISED_URL")
    # Bearer tokens of the read-only API (see streams/api/auth.py); with none, /api is off.
    api_token: SecretStr | None = Field(None, alias="COMM_API_TOKEN")
    api_tokens_file: Path | None = Field(None, alias="COMM_API_TOKENS_FILE")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", alias="COMM_LOG_LEVEL")
    log_format: Literal["text", "json"] = Field("text", alias="COMM_LOG_FORMAT")
    # A directory whose templates take precedence over the packaged ones.
    template_dir: Path | None = Field(None, alias="COMM_TEMPLATE_DIR")
    # Deliver from a child process of the worker, on a core of its own (see
    # streams/delivery/process.py); false: inside the worker's event loop. auto (the
    # default): true when the process may use a second CPU (BENCHMARKS.md).
    delivery_process: bool = Field("auto", alias="COMM_DELIVERY_PROCESS", validate_default=True)
    # SMTP connections a worker sends over at once. The priority classes keep their
    # order (streams/delivery/loop.py); within a class emails may arrive reordered.
    smtp_connections: int = Field(3, alias="COMM_SMTP_CONNECTIONS", ge=1, le=16)
    # How many due emails one worker claims from the database at a time.
    delivery_batch_size: int = Field(50, alias="COMM_DELIVERY_BATCH_SIZE", ge=1)
    # How long a worker's claim on an email lasts before another may take it over.
    delivery_lease: Positive = Field(timedelta(seconds=60), alias="COMM_DELIVERY_LEASE")
    poll_interval: Positive = Field(timedelta(seconds=1), alias="COMM_POLL_INTERVAL")
    # Published outbox rows are deleted after this (they may hold patient data on
    # their way to internal topics).
    outbox_retention: Positive = Field(timedelta(days=7), alias="COMM_OUTBOX_RETENTION")
    retry_backoff_base: Positive = Field(timedelta(seconds=30), alias="COMM_RETRY_BACKOFF")
    retry_backoff_max: Positive = Field(timedelta(hours=1), alias="COMM_RETRY_BACKOFF_MAX")
    # While no SMTP session can be opened: how long delivery waits at most between
    # tries, and after how long an alert is raised.
    smtp_outage_backoff_max: Positive = Field(timedelta(seconds=60), alias="COMM_SMTP_OUTAGE_BACKOFF_MAX")
    smtp_outage_alert_after: Duration = Field(timedelta(minutes=5), alias="COMM_SMTP_OUTAGE_ALERT_AFTER")
    # Input limits (issue 12): a larger input event, command or free-text field is
    # refused with a reason naming it, far below the broker's message limit, so one
    # large input can never stop the worker. No real patient record comes near them.
    max_event_bytes: int = Field(64 * 1024, alias="COMM_MAX_EVENT_BYTES", ge=1024, le=512 * 1024)
    max_command_bytes: int = Field(256 * 1024, alias="COMM_MAX_COMMAND_BYTES", ge=1024, le=768 * 1024)
    max_text_field_bytes: int = Field(8 * 1024, alias="COMM_MAX_TEXT_FIELD_BYTES", ge=64, le=64 * 1024)
    # How far ahead of this service's clock an input's occurred_at may be before the
    # event is refused (a producer with a wrong clock must not freeze a therapist).
    clock_skew_tolerance: Duration = Field(timedelta(minutes=5), alias="COMM_CLOCK_SKEW_TOLERANCE")

    _batch_schedule: Schedule = PrivateAttr()
    _daily_call_list: Schedule = PrivateAttr()
    _api_tokens: tuple[SecretStr, ...] = PrivateAttr(default=())

    @field_validator("timezone", mode="before")
    @classmethod
    def _zone(cls, value: Any) -> tzinfo:
        if isinstance(value, tzinfo):
            return value
        try:
            return ZoneInfo(str(value))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (expected an IANA name such as Europe/Berlin)") from exc

    @field_validator("delivery_process", mode="before")
    @classmethod
    def _auto_process(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return usable_cpus() >= 2
        if isinstance(value, str) and value.strip().lower() not in _BOOLEAN_WORDS:
            raise ValueError(f"expected true, false or auto, not {value!r}")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: SecretStr) -> SecretStr:
        try:
            make_url(value.get_secret_value())
        except Exception as exc:
            raise ValueError(
                "not a database URL (e.g. postgresql+psycopg://user@host/db or sqlite:///file.db)"
            ) from exc
        return value

    @model_validator(mode="after")
    def _schedule(self) -> Settings:
        try:
            schedule = parse_schedule(self.batch_schedule_text, self.timezone)
        except ValueError as exc:
            raise ValueError(f"COMM_BATCH_SCHEDULE: {exc}") from exc
        self._batch_schedule = schedule
        try:
            self._daily_call_list = parse_schedule(self.daily_call_list_text, self.timezone)
        except ValueError as exc:
            raise ValueError(f"COMM_DAILY_CALL_LIST: {exc}") from exc
        return self

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:
        protocol = self.kafka_security_protocol
        problems = []
        if protocol in SASL_PROTOCOLS:
            for name, value in (
                ("COMM_KAFKA_SASL_MECHANISM", self.kafka_sasl_mechanism),
                ("COMM_KAFKA_SASL_USERNAME", self.kafka_sasl_username),
                ("COMM_KAFKA_SASL_PASSWORD", self.kafka_sasl_password),
            ):
                if value is None:
                    problems.append(f"{name}: required with COMM_KAFKA_SECURITY_PROTOCOL={protocol}")
        else:
            for name, value in (
                ("COMM_KAFKA_SASL_MECHANISM", self.kafka_sasl_mechanism),
                ("COMM_KAFKA_SASL_USERNAME", self.kafka_sasl_username),
                ("COMM_KAFKA_SASL_PASSWORD", self.kafka_sasl_password),
            ):
                if value is not None:
                    problems.append(f"{name}: set, but COMM_KAFKA_SECURITY_PROTOCOL={protocol} uses no SASL")
        files = (
            ("COMM_KAFKA_CA_FILE", self.kafka_ca_file),
            ("COMM_KAFKA_CLIENT_CERT_FILE", self.kafka_client_cert_file),
            ("COMM_KAFKA_CLIENT_KEY_FILE", self.kafka_client_key_file),
        )
        for name, path in files:
            if path is None:
                continue
            if protocol not in TLS_PROTOCOLS:
                problems.append(f"{name}: set, but COMM_KAFKA_SECURITY_PROTOCOL={protocol} uses no TLS")
            elif not path.is_file():
                problems.append(f"{name}: no such file: {path}")
        if (self.kafka_client_cert_file is None) != (self.kafka_client_key_file is None):
            problems.append(
                "COMM_KAFKA_CLIENT_CERT_FILE, COMM_KAFKA_CLIENT_KEY_FILE: mutual TLS needs the certificate and its key"
            )
        if protocol in TLS_PROTOCOLS and not problems:
            problems.extend(self._tls_file_problems())
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _tls_file_problems(self) -> list[str]:
        """Load the CA and the client certificate as the Kafka clients will
        (streams/kafka/security.py): a file that is no PEM, or a key that does not
        fit its certificate, stops start-up naming the variable."""
        problems = []
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.kafka_ca_file is not None:
            try:
                context.load_verify_locations(cafile=self.kafka_ca_file)
            except OSError as exc:  # ssl.SSLError included
                problems.append(f"COMM_KAFKA_CA_FILE: not a PEM CA certificate: {self.kafka_ca_file} ({_why(exc)})")
        if self.kafka_client_cert_file is not None and self.kafka_client_key_file is not None:
            try:
                context.load_cert_chain(self.kafka_client_cert_file, self.kafka_client_key_file, password="")
            except OSError as exc:
                problems.append(
                    "COMM_KAFKA_CLIENT_CERT_FILE, COMM_KAFKA_CLIENT_KEY_FILE: not a PEM certificate with its "
                    f"unencrypted key: {self.kafka_client_cert_file}, {self.kafka_client_key_file} ({_why(exc)})"
                )
        return problems

    @field_validator("web_advertised_url")
    @classmethod
    def _advertised_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlsplit(value)
        try:
            valid = parsed.scheme in ("http", "https") and bool(parsed.hostname) and parsed.port != 0
        except ValueError:  # a port that is no number
            valid = False
        if not valid or parsed.path not in ("", "/") or parsed.query or parsed.fragment or "@" in parsed.netloc:
            raise ValueError(
                "not the address of this worker's web server: scheme, host and port, e.g. http://worker-1:6066"
            )
        return value.rstrip("/")

    @model_validator(mode="after")
    def _api(self) -> Settings:
        tokens: list[SecretStr] = []
        if self.api_token is not None:
            problem = _token_problem(self.api_token.get_secret_value())
            if problem:
                raise ValueError(f"COMM_API_TOKEN: {problem}")
            tokens.append(self.api_token)
        if self.api_tokens_file is not None:
            try:
                lines = self.api_tokens_file.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise ValueError(f"COMM_API_TOKENS_FILE: cannot read {self.api_tokens_file}: {why}") from None
            for number, line in enumerate(lines, 1):
                token = line.strip()
                if not token or token.startswith("#"):
                    continue
                problem = _token_problem(token)
                if problem:
                    raise ValueError(f"COMM_API_TOKENS_FILE: line {number}: {problem}")
                tokens.append(SecretStr(token))
            if not tokens:
                raise ValueError(f"COMM_API_TOKENS_FILE: {self.api_tokens_file} holds no token")
        self._api_tokens = tuple(tokens)
        return self

    @property
    def api_tokens(self) -> tuple[SecretStr, ...]:
        """Every token the API accepts (COMM_API_TOKEN and COMM_API_TOKENS_FILE); none: /api is off."""
        return self._api_tokens

    @property
    def web_url(self) -> str:
        """Where the other workers reach this worker's web server (COMM_WEB_ADVERTISED_URL or its default)."""
        if self.web_advertised_url is not None:
            return self.web_advertised_url
        host = socket.gethostname() if self.web_host in WILDCARD_HOSTS else self.web_host
        if ":" in host:  # an IPv6 address
            host = f"[{host}]"
        return f"http://{host}:{self.web_port}"

    @property
    def batch_schedule(self) -> Schedule:
        return self._batch_schedule

    @property
    def daily_call_list(self) -> Schedule:
        return self._daily_call_list

    @property
    def database_url_display(self) -> str:
        """The database URL with any password hidden, for logs."""
        return make_url(self.database_url.get_secret_value()).render_as_string(hide_password=True)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build from ``environ`` (default: ``os.environ``); raise SettingsError naming the variable."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {k: v for k, v in environ.items() if k.startswith(PREFIX)}
        for name in SECRET_VARIABLES:
            file_name = environ.get(f"{name}_FILE")
            if file_name and name not in values:
                try:
                    values[name] = Path(file_name).read_text(encoding="utf-8").rstrip("\r\n")
                except OSError as exc:
                    raise SettingsError(f"{name}_FILE: cannot read {file_name}: {exc.strerror}") from exc
        values.update(overrides)
        values = {k: v for k, v in values.items() if v != ""}  # set but empty = unset
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise SettingsError(_describe(exc)) from None


def _token_problem(token: str) -> str | None:
    """Why ``token`` cannot be an API token (it is never part of the answer)."""
    if len(token) < MIN_TOKEN_LENGTH:
        return f"a token must be at least {MIN_TOKEN_LENGTH} characters long"
    if not all("!" <= c <= "~" for c in token):
        return "a token may hold printable ASCII characters only, no spaces"
    return None


def _why(exc: OSError) -> str:
    """An OpenSSL or file error in words, without the source position."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    return exc.strerror or str(exc)


def _describe(error: ValidationError) -> str:
    """One line per problem, naming the variable and never echoing the value of a secret."""
    lines = []
    for problem in error.errors(include_input=False, include_url=False):
        location = ".".join(str(part) for part in problem["loc"])
        message = str(problem["msg"]).removeprefix("Value error, ")
        if location:
            lines.append(f"{location}: {message}")
            continue
        for line in message.splitlines():  # a model validator names its variables itself
            lines.append(line if ":" in line else f"configuration: {line}")
    return "invalid configuration:\n  " + "\n  ".join(lines)
