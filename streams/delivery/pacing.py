"""Sending at the send rate's slots (COMM_SMTP_RATE_LIMIT) within one claim.

The slots of a claim are times on this host's monotonic clock, an interval apart
from each other and from every other worker's (streams/persistence/send_rate.py).
Whichever connection is free takes the next one, waits for it, and sends. A send
that would start more than ``LATE`` after its slot gives the slot up instead: the
process was held up (a busy event loop, a starved CPU), and sending now would
crowd the holder of the next slot, maybe another worker's, closer than the rate
allows. The email takes the next slot of the claim, and one left without a slot
goes back to the queue: the rate is then slower, never faster.

So that a host held up every time still delivers, the first slot of a claim after
one that sent nothing is not given up: at most one late send per such claim.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

# How late a send may start after its slot (seconds): well above a healthy
# worker's timer jitter (about a millisecond), well below the interval of rates
# providers set (70 ms at 14/s).
LATE = 0.02


class Slots:
    """The send slots of one claim, in order, taken one per email."""

    def __init__(self, deadlines: Iterable[float], clock: Callable[[], float] = time.monotonic) -> None:
        self._slots = deque(deadlines)
        self._late_first = False
        self.clock = clock
        self.used = 0
        self.missed = 0

    def allow_late_first(self) -> None:
        """The claim before sent nothing: send at the first slot however late."""
        self._late_first = True

    def __len__(self) -> int:
        return len(self._slots)

    def next(self) -> float | None:
        """The next slot still good to send at (None: none left); the ones missed by
        more than ``LATE`` are given up."""
        now = self.clock()
        while self._slots and now - self._slots[0] > LATE and not self._late_first:
            self._slots.popleft()
            self.missed += 1
        return self._slots[0] if self._slots else None

    def take(self) -> None:
        """Send now, at the next slot (``next`` said it is due)."""
        self._slots.popleft()
        self._late_first = False
        self.used += 1

    @property
    def sent_none(self) -> bool:
        """Every slot was missed: the next claim may send its first one late."""
        return self.used == 0 and self.missed > 0
