"""Table-value encoding (issue 19, points 2 and 5): what writing and reading one
therapist's aggregate costs as its waiting requests grow, with the standard
library's json (the encoding before orjson) beside orjson (the table's codec now).

Each state is built by the domain's rules (``match_created`` for K requests), as
the therapist agent leaves it, so its replay memory holds the K events too. For
each K: the encoded bytes, and the median of ``--repeats`` timings of encoding
(state -> bytes) and decoding (bytes -> state), in microseconds.

    .venv/bin/python bench/bench_codec.py [--sizes 1 10 100 500] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from domain.placement import PlacementRequest  # noqa: E402
from domain.therapist import TherapistProfile  # noqa: E402
from domain.therapist_state import TherapistState  # noqa: E402
from streams.messages.codec import dumps, loads, state_from_wire, state_to_wire  # noqa: E402

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def state_with(waiting: int) -> TherapistState:
    state = TherapistState(7)
    profile = TherapistProfile(7, "praxis7@example.org", "Eva", "Müller", title="Dr.", salutation="Frau")
    state.therapist_upserted(str(uuid.UUID(int=0)), NOW - timedelta(days=90), profile, NOW)
    for r in range(1, waiting + 1):
        request = PlacementRequest(r, 10_000 + r, NOW - timedelta(days=r % 300), {})
        state.match_created(str(uuid.UUID(int=r)), request, NOW)
    return state


def timed(work, repeats: int, inner: int) -> float:
    """Median µs of one call, over ``repeats`` runs of ``inner`` calls."""
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(inner):
            work()
        runs.append((time.perf_counter() - started) / inner * 1e6)
    return statistics.median(runs)


def stdlib_dumps(document: object) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100, 500])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(
        "| waiting requests | bytes | bytes per request | encode, json (µs) | encode, orjson (µs) "
        "| decode, json (µs) | decode, orjson (µs) |"
    )
    print("|---|---|---|---|---|---|---|")
    for k in args.sizes:
        state = state_with(k)
        raw = dumps(state_to_wire(state))
        assert stdlib_dumps(state_to_wire(state)) == raw  # the same bytes, either way
        inner = max(20, 20_000 // (k + 10))
        results = [
            timed(lambda: stdlib_dumps(state_to_wire(state)), args.repeats, inner),  # noqa: B023
            timed(lambda: dumps(state_to_wire(state)), args.repeats, inner),  # noqa: B023
            timed(lambda: state_from_wire(json.loads(raw)), args.repeats, inner),  # noqa: B023
            timed(lambda: state_from_wire(loads(raw)), args.repeats, inner),  # noqa: B023
        ]
        print(f"| {k} | {len(raw):,} | {len(raw) / k:,.0f} | " + " | ".join(f"{r:,.1f}" for r in results) + " |")


if __name__ == "__main__":
    main()
