"""Where the table lives on the worker's host (COMM_STORE, COMM_DATA_DIR).

``rocksdb`` (the default): each partition of the table is a RocksDB database
(through rocksdict, the binding Faust supports) in a data directory of the
worker's own, ``<COMM_DATA_DIR>/<app id>/worker-<n>``. Faust keeps in each
database the changelog offset it holds, so a restarted worker reads only what the
changelog gained since, instead of all of it.

Two workers on one host must never share a directory: RocksDB lets one process
open a database, and Faust waits for the lock and then crashes. So a worker takes
the first slot ``n`` whose lock file it can lock (``flock``, held for the life of
the process and released by the kernel however it ends): a restarted worker takes
its slot back and finds its state, a second worker on the host gets the next slot.

``memory``: the table is rebuilt from the changelog at every start.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import rocksdict
from faust import stores
from faust.stores import memory, rocksdb
from faust.streams import current_event
from yarl import URL

from streams.settings import Settings, SettingsError

log = logging.getLogger(__name__)

ROCKSDB_SCHEME = "commsvc-rocksdb"
MEMORY_SCHEME = "commsvc-memory"
LOCK_FILE = "worker.lock"
# Left by a worker that stopped cleanly; see _discard_unless_stopped_cleanly.
CLEAN_STOP = "stopped-cleanly"
# Each partition's memtable becomes a table file at this size. Faust's 64 MiB (and
# up to three of them) would keep a worker's whole table in memtables and in the
# write-ahead log, which every start then replays.
WRITE_BUFFER_BYTES = 4 * 1024 * 1024
WRITE_BUFFERS = 2
# RocksDB starts an info log at every open and keeps 1000 by default.
INFO_LOGS_KEPT = 3

# Slot locks of this process: kept open (and locked) as long as it lives.
_held_locks: list[IO[bytes]] = []
# The slot directories they lock.
_claimed: list[Path] = []


class DataDirError(SettingsError):
    """The data directory cannot be used; the message names COMM_DATA_DIR."""


def faust_options(settings: Settings) -> dict[str, Any]:
    """Options for ``faust.App``: the store URL and the data directory."""
    app_dir = _app_dir(settings)
    if settings.store == "memory":
        # Faust creates a data directory even for the memory store (empty); it goes
        # here rather than into the working directory.
        datadir = _usable(app_dir / "memory")
        log.info("table state in memory (rebuilt from the changelog at every start)")
        _register_stores()
        return {"store": f"{MEMORY_SCHEME}://", "datadir": _faust_path(datadir)}
    datadir = claim_slot(app_dir)
    block_cache = int(settings.rocksdb_block_cache)
    log.info(
        "table state in RocksDB under %s (block cache %s for all partitions)",
        datadir,
        settings.rocksdb_block_cache.human_readable(),
    )
    _register_stores()
    return {"store": f"{ROCKSDB_SCHEME}://?block_cache={block_cache}", "datadir": _faust_path(datadir)}


def claim_slot(app_dir: Path) -> Path:
    """The first ``worker-<n>`` directory under ``app_dir`` that no other worker
    (process, or app in this process) holds; held until this process ends."""
    for number in itertools.count():
        directory = _usable(app_dir / f"worker-{number}")
        try:
            lock = open(directory / LOCK_FILE, "ab")  # noqa: SIM115 - held for the process's life
        except OSError as exc:
            raise _error(directory / LOCK_FILE, exc) from None
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        _held_locks.append(lock)
        _discard_unless_stopped_cleanly(directory)
        _claimed.append(directory)
        return directory
    raise AssertionError("unreachable")


def _discard_unless_stopped_cleanly(directory: Path) -> None:
    """Faust writes the table into RocksDB at once, but its changelog records and the
    agents' output only when the producer flushes: a worker that was killed or
    crashed may leave local state ahead of both (a batch run recorded whose send
    commands never left), which a replay would then take for done. So state is
    kept only from a worker that stopped cleanly; otherwise the slot starts empty
    and the table is rebuilt from the changelog, as with the memory store."""
    marker = directory / CLEAN_STOP
    if marker.exists():
        marker.unlink()  # from now on, a crash must be noticed at the next start
        return
    leftovers = [p for p in directory.iterdir() if p.name != LOCK_FILE]
    if not leftovers:
        return
    log.warning(
        "%s: the last worker here did not stop cleanly (killed or crashed); its table state is discarded "
        "and rebuilt from the changelog",
        directory,
    )
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def mark_clean_stop() -> None:
    """Record that this process's workers stopped cleanly (the producer flushed and
    the offsets committed), so that the next start may keep their state."""
    for directory in _claimed:
        (directory / CLEAN_STOP).touch()


def _app_dir(settings: Settings) -> Path:
    return settings.data_dir.absolute() / settings.app_id


def _usable(directory: Path) -> Path:
    """``directory``, created if need be and checked to be writable."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise _error(directory, exc) from None
    return directory


def _error(path: Path, exc: OSError) -> DataDirError:
    return DataDirError(f"COMM_DATA_DIR: cannot write the worker's table state to {path}: {exc.strerror}")


def _faust_path(path: Path) -> str:
    # Faust formats its datadir with str.format (``{conf.name}``): braces stay literal.
    return str(path).replace("{", "{{").replace("}", "}}")


def _register_stores() -> None:
    stores.STORES.aliases.setdefault(ROCKSDB_SCHEME, f"{__name__}:RocksDBStore")
    stores.STORES.aliases.setdefault(MEMORY_SCHEME, f"{__name__}:MemoryStore")


class RecoveryReport:
    """Logs each recovery of the table: how long it took from the assignment of
    partitions to the table being recovered (the group join before it depends on
    the broker's session settings), and how many changelog records it read."""

    app: Any
    _assigned_at: float | None = None
    _records_read = 0

    async def on_rebalance(self, assigned: Any, revoked: Any, newly_assigned: Any, generation_id: int = 0) -> None:
        self._assigned_at = time.monotonic()
        self._records_read = 0
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)  # type: ignore[misc]

    def apply_changelog_batch(self, batch: Iterable[Any], to_key: Any, to_value: Any) -> None:
        events = list(batch)
        actives = self.app.assignor.assigned_actives()
        self._records_read += sum(1 for event in events if event.message.tp in actives)
        super().apply_changelog_batch(events, to_key, to_value)  # type: ignore[misc]

    async def on_recovery_completed(self, active_tps: Any, standby_tps: Any) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)  # type: ignore[misc]
        if self._assigned_at is None:
            return
        log.info(
            "table recovered in %.3fs from the assignment of partitions %s: %d changelog records read",
            time.monotonic() - self._assigned_at,
            sorted(tp.partition for tp in active_tps),
            self._records_read,
        )
        self._assigned_at = None


class MemoryStore(RecoveryReport, memory.Store):  # type: ignore[misc]
    """Faust's memory store, with the recovery report."""


class RocksDBStore(RecoveryReport, rocksdb.Store):  # type: ignore[misc]
    """Faust's RocksDB store on rocksdict, sized for this service: one block cache
    of COMM_ROCKSDB_BLOCK_CACHE for all partitions of the table (Faust gives each
    partition 2 GiB), and small memtables.

    While an event is processed, iterating the table covers the event's partition
    only, as Faust's own lookups during an event do. A batch run (on a tick of one
    partition) then decodes that partition's values, not those of every partition
    the worker owns: with eight partitions, an eighth of the work."""

    def __init__(self, url: str | URL, app: Any, table: Any, **kwargs: Any) -> None:
        url = URL(url)
        block_cache = int(url.query["block_cache"])
        kwargs["driver"] = "rocksdict"
        super().__init__(url.with_query(None), app, table, **kwargs)
        self.rocksdb_options = ServiceRocksDBOptions(block_cache)

    def _dbs_for_actives(self) -> Iterator[rocksdict.Rdict]:
        event = current_event()
        if event is None or self.table.is_global or self.table.use_partitioner:
            yield from super()._dbs_for_actives()
        else:
            yield self._db_for_partition(event.message.partition)


class ServiceRocksDBOptions(rocksdb.RocksDBOptions):  # type: ignore[misc]
    def __init__(self, block_cache_bytes: int) -> None:
        super().__init__(
            write_buffer_size=WRITE_BUFFER_BYTES, max_write_buffer_number=WRITE_BUFFERS, use_rocksdict=True
        )
        # Shared by every partition's database in this worker: one budget.
        self.block_cache = rocksdict.Cache(block_cache_bytes)

    def open(self, path: Path, *, read_only: bool = False) -> rocksdict.Rdict:
        db = rocksdict.Rdict(str(path), options=self.as_options(), access_type=rocksdict.AccessType.read_write())
        db.set_read_options(rocksdict.ReadOptions())
        return db

    def as_options(self) -> rocksdict.Options:
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        if self.max_open_files is not None:
            options.set_max_open_files(self.max_open_files)
        options.set_write_buffer_size(self.write_buffer_size)
        options.set_max_write_buffer_number(self.max_write_buffer_number)
        options.set_target_file_size_base(self.target_file_size_base)
        options.set_keep_log_file_num(INFO_LOGS_KEPT)
        tables = rocksdict.BlockBasedOptions()
        tables.set_bloom_filter(self.bloom_filter_size, block_based=True)
        tables.set_block_cache(self.block_cache)
        # Index and filter blocks count against the cache too, so it bounds them.
        tables.set_cache_index_and_filter_blocks(True)
        tables.set_pin_l0_filter_and_index_blocks_in_cache(True)
        tables.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(tables)
        return options
