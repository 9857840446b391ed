"""What the demo saw on the output topics, as it happened."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Observed:
    started: float = field(default_factory=time.monotonic)
    sent: dict[int, list[tuple[float, int, str]]] = field(default_factory=lambda: defaultdict(list))
    templates: dict[int, str] = field(default_factory=dict)
    kinds: dict[int, str] = field(default_factory=dict)
    dropped: list[tuple[int, int, str]] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    calls: dict[int, tuple[str, list[int]]] = field(default_factory=dict)

    def now(self) -> float:
        return time.monotonic() - self.started


def say(observed: Observed, text: str) -> None:
    print(f"[{observed.now():5.1f}s] {text}", flush=True)
