"""The worker's local table state on a real file system: data directory slots
(one per worker, re-taken after a restart), the store options Faust gets, and
the RocksDB databases they open."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import faust
import faust.streams as faust_streams
import pytest
from yarl import URL

from streams.kafka import store
from streams.settings import Settings
from tests.waiting import until_blocking


def settings(data_dir: Path, **environ: str) -> Settings:
    return Settings.from_environ({"COMM_DATA_DIR": str(data_dir), "COMM_APP_ID": "commsvc", **environ})


def hold_slot(app_dir: Path) -> subprocess.Popen[str]:
    """Another worker process on this host: claims a slot and keeps it until killed."""
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from streams.kafka.store import claim_slot
        print(claim_slot(Path({str(app_dir)!r})).name, flush=True)
        sys.stdin.read()
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "worker-0"
    return holder


def test_workers_sharing_a_data_dir_get_a_slot_each_and_a_restarted_one_takes_its_own_back(tmp_path: Path):
    app_dir = tmp_path / "commsvc"
    other = hold_slot(app_dir)
    try:
        assert store.claim_slot(app_dir) == app_dir / "worker-1"
        # Two apps in one process do not share one either.
        assert store.claim_slot(app_dir) == app_dir / "worker-2"
    finally:
        other.kill()  # however a worker ends, the kernel releases its lock
        other.communicate()
    assert store.claim_slot(app_dir) == app_dir / "worker-0"


def test_rocksdb_options_name_the_worker_directory_and_a_sized_block_cache(tmp_path: Path):
    options = store.faust_options(settings(tmp_path, COMM_ROCKSDB_BLOCK_CACHE="16MiB"))
    url = URL(options["store"])
    assert url.scheme == store.ROCKSDB_SCHEME
    assert url.query["block_cache"] == str(16 * 1024 * 1024)
    assert options["datadir"] == str(tmp_path / "commsvc" / "worker-0")


def test_default_block_cache_is_far_below_fausts(tmp_path: Path):
    url = URL(store.faust_options(settings(tmp_path))["store"])
    assert int(url.query["block_cache"]) == 8 * 1024 * 1024


def test_memory_store_needs_no_slot(tmp_path: Path):
    options = store.faust_options(settings(tmp_path, COMM_STORE="memory"))
    assert URL(options["store"]).scheme == store.MEMORY_SCHEME
    assert options["datadir"] == str(tmp_path / "commsvc" / "memory")
    assert not list((tmp_path / "commsvc").glob("worker-*"))


@pytest.mark.parametrize("kind", ["rocksdb", "memory"])
def test_a_data_dir_that_cannot_be_written_is_named(tmp_path: Path, kind: str):
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a directory")
    with pytest.raises(store.DataDirError, match=r"^COMM_DATA_DIR: cannot write .* Not a directory"):
        store.faust_options(settings(in_the_way, COMM_STORE=kind))


def test_faust_puts_the_table_in_the_worker_directory_with_our_store(tmp_path: Path):
    data_dir = tmp_path / "odd {name}"  # Faust formats its datadir: braces stay literal
    app = faust.App("commsvc", **store.faust_options(settings(data_dir)))
    table = app.Table("therapists", partitions=4)
    assert isinstance(table.data, store.RocksDBStore)
    assert table.data.use_rocksdict
    worker_dir = data_dir / "commsvc" / "worker-0"
    assert app.conf.datadir == worker_dir
    assert table.data.partition_path(2) == worker_dir / "v1" / "tables" / "therapists-2.db"

    memory_app = faust.App("commsvc", **store.faust_options(settings(data_dir, COMM_STORE="memory")))
    assert isinstance(memory_app.Table("therapists", partitions=4).data, store.MemoryStore)


def test_partition_databases_keep_their_data_and_share_one_block_cache(tmp_path: Path):
    options = store.ServiceRocksDBOptions(block_cache_bytes=4 * 1024 * 1024)
    first, second = (options.open(tmp_path / f"therapists-{p}.db") for p in (0, 1))
    for db in (first, second):
        for n in range(2000):
            db[f"{n}".encode()] = b"x" * 1000
        db.flush()
    before = options.block_cache.get_usage()
    assert first[b"7"] == second[b"1999"] == b"x" * 1000
    assert options.block_cache.get_usage() > before  # both read through the one cache
    assert options.block_cache.get_usage() <= 4 * 1024 * 1024
    for db in (first, second):
        db.close()

    reopened = options.open(tmp_path / "therapists-0.db")
    assert reopened[b"1999"] == b"x" * 1000
    reopened.close()
    # RocksDB's own info log does not pile up, one file per open.
    for _ in range(5):
        options.open(tmp_path / "therapists-1.db").close()
    until_blocking(
        lambda: len(list((tmp_path / "therapists-1.db").glob("LOG*"))) <= store.INFO_LOGS_KEPT,
        5,
        "old RocksDB info logs to be removed",
    )


class _Message:
    def __init__(self, partition: int) -> None:
        self.partition = partition


class _Event:
    def __init__(self, partition: int) -> None:
        self.message = _Message(partition)


def test_iterating_the_table_during_an_event_covers_its_partition_only(tmp_path: Path):
    app = faust.App("commsvc", **store.faust_options(settings(tmp_path)))
    data = app.Table("therapists", partitions=2).data
    for partition, keys in ((0, [b"1", b"4"]), (1, [b"2", b"3"])):
        for key in keys:
            data._db_for_partition(partition).put(key, b"{}")
    event = _Event(1)
    # What Faust's stream sets for each event it hands to an agent.
    token = faust_streams._current_event.set(weakref.ref(event))
    try:
        assert sorted(data.keys()) == [2, 3]  # what a tick of partition 1 sees
    finally:
        faust_streams._current_event.reset(token)
