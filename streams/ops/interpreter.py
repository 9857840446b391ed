"""Interpreter settings for the service's long-running processes (the worker and
the delivery process), measured in ``bench/bench_delivery.py`` (BENCHMARKS.md).

- Garbage collection. With CPython's default thresholds the collector ran every
  700 allocations, and each full collection walked every object startup built
  (about 180,000 in the worker, 165,000 in the delivery process: 45 ms each, seen
  during send bursts). Both processes collect the youngest generation after 50,000
  allocations instead, and what startup built (modules, the app, compiled
  templates, the tables recovered) is frozen out of the collector's reach once it
  is up (``gc.freeze``). Reference counting still frees what is no longer used;
  only reference cycles among the frozen objects would stay, and startup leaves
  none worth the walks.
- The delivery process's GIL switch interval: 1 ms instead of 5 ms. Its event
  loop answers the SMTP server while its database thread claims and records; at
  5 ms a reply that arrived could wait that long behind the thread's Python work.
"""

from __future__ import annotations

import gc
import sys

# Youngest, middle and oldest generation: a collection of the middle one every 20
# of the youngest, of the oldest every 10 of the middle one (CPython: 700, 10, 10).
GC_THRESHOLD = (50_000, 20, 10)
DELIVERY_SWITCH_INTERVAL = 0.001  # seconds (CPython: 0.005)


def tune_collector() -> None:
    """Collect less often; call at the start of a long-running process."""
    gc.set_threshold(*GC_THRESHOLD)


def freeze_startup() -> None:
    """Keep what startup built out of every later collection; call once it is up."""
    gc.collect()
    gc.freeze()


def tune_delivery_process() -> None:
    tune_collector()
    sys.setswitchinterval(DELIVERY_SWITCH_INTERVAL)
