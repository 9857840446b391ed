"""Retry policy for sending (CONTRACT §5.6): exponential backoff with jitter."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failed send is tried (in all), and the backoff between tries."""

    max_attempts: int
    base: timedelta
    cap: timedelta


def backoff_delay(attempt: int, base: timedelta, cap: timedelta, jitter: float) -> timedelta:
    """Delay before retry number ``attempt`` (1 = first retry).

    Doubles per attempt up to ``cap``; ``jitter`` in [0, 1) spreads the delay over
    its upper half, so emails that failed together do not retry in lockstep.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    if not 0.0 <= jitter < 1.0:
        raise ValueError("jitter must be in [0, 1)")
    ceiling = min(cap, base * (1 << (attempt - 1)))
    return ceiling / 2 + (ceiling / 2) * jitter


def should_retry(temporary: bool, attempts_made: int, max_attempts: int) -> bool:
    return temporary and attempts_made < max_attempts
