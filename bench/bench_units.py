"""CPU per email of the units of work on the delivery path, on PostgreSQL (a fresh
database on the local server), without Kafka or SMTP: storing send commands
(rendering included), claiming, building the MIME message, recording the sends,
relaying the outbox. For each, the least CPU time of several rounds: on a machine
with steal time the minimum is the steadiest figure.

    .venv/bin/python bench/bench_units.py [--emails 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from streams.delivery.mime import build_message  # noqa: E402
from streams.email.rendering import Renderer  # noqa: E402
from streams.persistence import delivery_queue, delivery_results, email_creation, outbox  # noqa: E402
from streams.persistence.db import Database  # noqa: E402
from tests.integration.test_persistence import CHANNELS, IDENTITY, command  # noqa: E402
from tests.services import postgres_database  # noqa: E402

STORE_BATCH = 100  # as the sender agent stores them
CLAIM = 50  # COMM_DELIVERY_BATCH_SIZE
RECORD_GROUP = 8  # streams.delivery.loop.RECORD_GROUP
RELAY_BATCH = 500  # streams.delivery.relay.BATCH


def cpu(work: Callable[[], object]) -> float:
    started = time.process_time()
    work()
    return time.process_time() - started


def one_round(database: Database, renderer: Renderer, round_: int, n: int) -> dict[str, float]:
    now = datetime.now(UTC)
    commands = [
        command(
            f"r{round_}-{i}",
            therapist_id=round_ * n + i + 1,
            requests=((round_ * n + i + 1, "2026-01-01T10:00:00+00:00"),),
            template="initial_contact",
        )
        for i in range(n)
    ]
    claimed: list[delivery_queue.ClaimedEmail] = []

    def store() -> None:
        for at in range(0, n, STORE_BATCH):
            batch = commands[at : at + STORE_BATCH]
            database.transaction(email_creation.store_send_commands, batch, renderer.render, IDENTITY, CHANNELS, now)

    def claim() -> None:
        due = now + timedelta(seconds=1)
        while found := database.transaction(
            delivery_queue.claim_due, "bench", due, CLAIM, timedelta(minutes=5), timedelta(days=7)
        ):
            claimed.extend(found)

    def build() -> None:
        for email in claimed:
            build_message(email.outgoing, now)

    def record() -> None:
        for at in range(0, len(claimed), RECORD_GROUP):
            sent = [(e.id, now) for e in claimed[at : at + RECORD_GROUP]]
            database.transaction(delivery_results.record_sent_many, sent, CHANNELS)

    def relay() -> None:
        while pending := database.transaction(outbox.unpublished, RELAY_BATCH):
            database.transaction(outbox.mark_published, [m.id for m in pending], now)

    costs = {name: cpu(work) for name, work in [("store", store), ("claim", claim), ("build", build)]}
    costs.update(record=cpu(record), relay=cpu(relay))
    if len(claimed) != n:
        raise RuntimeError(f"{len(claimed)} of {n} emails claimed")
    return costs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--emails", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    renderer = Renderer(ZoneInfo("Europe/Berlin"))
    with postgres_database() as url:
        database = Database(url)
        database.migrate()
        try:
            rounds = [one_round(database, renderer, r, args.emails) for r in range(args.rounds)]
        finally:
            database.dispose()
    print(f"CPU per email, least of {args.rounds} rounds of {args.emails} emails (PostgreSQL):\n")
    print("| unit of work | µs per email |\n|---|---|")
    for name in rounds[0]:
        print(f"| {name} | {min(r[name] for r in rounds) / args.emails * 1e6:.0f} |")


if __name__ == "__main__":
    main()
