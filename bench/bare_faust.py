"""The framework's floor for the ingest benchmark: a bare Faust app that only
repartitions each event by therapist and makes one table update per event.

Run as ``python bench/bare_faust.py worker`` with BENCH_BROKER, BENCH_TOPIC,
BENCH_APP_ID and BENCH_PARTITIONS in the environment, and optionally BENCH_STORE and
BENCH_DATADIR (bench_ingest.py does this).
"""

from __future__ import annotations

import json
import os

import faust

app = faust.App(
    os.environ["BENCH_APP_ID"],
    broker=os.environ["BENCH_BROKER"],
    # The service's store (BENCH_STORE: rocksdb or memory), so that the floor is comparable.
    store="rocksdb://" if os.environ.get("BENCH_STORE") == "rocksdb" else "memory://",
    datadir=os.environ.get("BENCH_DATADIR", "bare-faust-data"),
    processing_guarantee="at_least_once",
    topic_partitions=int(os.environ["BENCH_PARTITIONS"]),
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=2,
    broker_heartbeat_interval=0.4,
    # 1 = one record per batch, which Tansu needs for table recovery; unset = Faust's default.
    **({"producer_max_batch_size": int(os.environ["BENCH_MAX_BATCH"])} if os.environ.get("BENCH_MAX_BATCH") else {}),
    table_standby_replicas=0,
    web_enabled=False,
)
source = app.topic(os.environ["BENCH_TOPIC"], key_serializer="raw", value_serializer="raw")
by_therapist = app.topic(
    f"{os.environ['BENCH_APP_ID']}-by-therapist",
    key_serializer="raw",
    value_serializer="raw",
    partitions=int(os.environ["BENCH_PARTITIONS"]),
    internal=True,
)
pending = app.Table("pending", default=None, partitions=int(os.environ["BENCH_PARTITIONS"]))


@app.agent(source)
async def repartition(stream):  # type: ignore[no-untyped-def]
    async for value in stream:
        event = json.loads(value)
        await by_therapist.send(key=str(event["payload"]["therapist_id"]).encode(), value=value)


@app.agent(by_therapist)
async def update(stream):  # type: ignore[no-untyped-def]
    async for value in stream:
        payload = json.loads(value)["payload"]
        key = payload["therapist_id"]
        requests = pending.get(key) or []
        pending[key] = [*requests, payload["placement_request_id"]]


if __name__ == "__main__":
    app.main()
