"""Logging: the configuration every process of the service uses, and the two ways
the service logs trouble without personal data or floods.

An exception's message can carry whatever the failing code held (a repr of a
request, a template's context), so failures are logged by type and place only.
"""

from __future__ import annotations

import logging
import logging.config
import time
import traceback
from typing import Any

LOG_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"
# Framework loggers are noisy at INFO (every service start/stop line).
QUIET_LOGGERS = ("faust", "mode", "aiokafka", "kafka", "alembic", "aiosmtplib")


def logging_config(level: str) -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": LOG_FORMAT}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {name: {"level": "WARNING" if level != "DEBUG" else level} for name in QUIET_LOGGERS},
    }


def configure_logging(level: str) -> None:
    logging.config.dictConfig(logging_config(level))


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
