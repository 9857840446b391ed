"""Logging failures without personal data.

An exception's message can carry whatever the failing code held (a repr of a
request, a template's context), so failures are logged by type and place only.
"""

from __future__ import annotations

import logging
import traceback


def log_failure(log: logging.Logger, what: str, exc: BaseException) -> None:
    frames = traceback.extract_tb(exc.__traceback__)
    where = " <- ".join(f"{f.name} ({f.filename.rsplit('/', 1)[-1]}:{f.lineno})" for f in reversed(frames[-4:]))
    log.error("%s: %s at %s", what, type(exc).__name__, where or "?")
