"""Logging: the configuration every process of the service uses, and the two ways
the service logs trouble without personal data or floods.

An exception's message can carry whatever the failing code held (a repr of a
request, a template's context), so failures are logged by type and place only.

With ``COMM_LOG_FORMAT=json`` every line is one JSON object (python-json-logger):
``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message`` and, as fields of their
own, the ids in context: those set with ``log_context`` (``event_id``,
``therapist_id``, ``email_id``, ``phone_call_id``) and those of the Kafka record
being processed (``topic``, ``partition``, ``offset``). Ids only: names, addresses
and patient details are never put in context.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import logging.config
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

from pythonjsonlogger.json import JsonFormatter

LOG_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"
JSON_FIELDS = "%(levelname)s %(name)s %(message)s"
# Framework loggers are noisy at INFO (every service start/stop line), and their
# DEBUG lines carry record keys and values (patient details on their way through
# the internal topics): with COMM_LOG_LEVEL=DEBUG they go to INFO, no further.
QUIET_LOGGERS = ("faust", "mode", "aiokafka", "kafka", "alembic", "aiosmtplib", "aiohttp")
# SQLAlchemy's engine logs statements with their parameters from INFO on.
SILENT_LOGGERS = ("sqlalchemy",)
# The ids a log line may carry as fields.
CONTEXT_IDS = ("event_id", "therapist_id", "email_id", "phone_call_id")

LogFormat = Literal["text", "json"]
# Returns ids of what is being processed (e.g. the Kafka record), or nothing.
ContextSource = Callable[[], Mapping[str, object] | None]

_context: contextvars.ContextVar[Mapping[str, object]] = contextvars.ContextVar(
    "commsvc_log_context", default=MappingProxyType({})
)


def _known(ids: Mapping[str, object]) -> dict[str, object]:
    unknown = set(ids) - set(CONTEXT_IDS)
    if unknown:
        raise ValueError(f"not an id for log context: {sorted(unknown)}")
    return {k: v for k, v in ids.items() if v is not None}


@contextlib.contextmanager
def log_context(**ids: object) -> Iterator[None]:
    """Within the block (and the tasks it starts), log lines carry these ids too."""
    token = _context.set({**_context.get(), **_known(ids)})
    try:
        yield
    finally:
        _context.reset(token)


def bind_log_context(**ids: object) -> None:
    """From here on in the running task (or thread), log lines carry exactly these
    ids: a loop over messages calls it for each message, so that nothing of the
    previous one stays."""
    _context.set(_known(ids))


class ContextFilter(logging.Filter):
    """Puts the ids in context on each record (as attributes, for the formatter)."""

    def __init__(self, sources: Sequence[ContextSource] = ()) -> None:
        super().__init__()
        self.sources = tuple(sources)

    def filter(self, record: logging.LogRecord) -> bool:
        ids: dict[str, object] = {}
        for source in self.sources:
            ids.update(source() or {})
        ids.update(_context.get())
        for key, value in ids.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def logging_config(level: str, log_format: LogFormat = "text", sources: Sequence[ContextSource] = ()) -> dict[str, Any]:
    formatters: dict[str, Any] = {
        "text": {"format": LOG_FORMAT},
        "json": {
            "()": JsonFormatter,
            "fmt": JSON_FIELDS,
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",
        },
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {log_format: formatters[log_format]},
        "filters": {"context": {"()": ContextFilter, "sources": list(sources)}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": log_format, "filters": ["context"]},
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            **{name: {"level": "INFO" if level == "DEBUG" else "WARNING"} for name in QUIET_LOGGERS},
            **{name: {"level": "WARNING"} for name in SILENT_LOGGERS},
        },
    }


def configure_logging(level: str, log_format: LogFormat = "text", sources: Sequence[ContextSource] = ()) -> None:
    logging.config.dictConfig(logging_config(level, log_format, sources))


def log_failure(log: logging.Logger, what: str, exc: BaseException) -> None:
    frames = traceback.extract_tb(exc.__traceback__)
    where = " <- ".join(f"{f.name} ({f.filename.rsplit('/', 1)[-1]}:{f.lineno})" for f in reversed(frames[-4:]))
    log.error("%s: %s at %s", what, type(exc).__name__, where or "?")


class ThrottledWarning:
    """Logs a recurring problem once, then at most every ``every`` seconds."""

    def __init__(self, logger: logging.Logger, every: float = 30.0) -> None:
        self.logger = logger
        self.every = every
        self.last = 0.0

    def __call__(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.logger.warning(message, *args)
