"""prometheus-client's multiprocess mode, decided in one place.

Under gunicorn and Celery's prefork pool the metrics are written by several
processes.  ``run.sh`` sets ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's
own variable, read by the library when it is imported) to an emptied
directory per service; a scrape then merges what every process wrote.
Without it (tests, a solo pool) a scrape shows this process's own metrics.

prometheus-client keeps one file per process and type, and a process that
exits leaves its counters behind (they still count).  Celery replaces pool
processes (``WORKER_MAX_TASKS_PER_CHILD``, ``WORKER_MAX_MEMORY_PER_CHILD_KB``)
and gunicorn its workers, so the directory grew by a few files per
replacement and every scrape read them all.  Each scrape therefore first
folds the files of exited processes into one archive per type (their sums
are kept, so no counter ever goes back), under a file lock shared by every
process that scrapes: the directory holds the live processes' files and at
most one archive per type.

A scrape also leaves out a file another process has just created and not
yet sized: prometheus-client creates it empty and then extends it, and read
in between it failed the whole scrape (``GET /metrics`` answered 500 once
in a fresh-clone run, while the API's workers made their first metrics).
Such a file holds no value yet, so nothing is missed.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.registry import Collector

from workqueue.processes import process_alive

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# Types whose values of exited processes still count, summed (a gauge of an
# exited process counts no more: its file is dropped).
SUMMED_TYPES = ("counter", "histogram", "summary")
ARCHIVE = "archive"  # "<type>_archive.db": the sums of exited processes


def multiprocess_mode() -> bool:
    return MULTIPROC_DIR_VARIABLE in os.environ


def scrape_registry() -> CollectorRegistry:
    """A registry that collects every process's metrics (or this process's)."""
    registry = CollectorRegistry()
    if multiprocess_mode():
        registry.register(_Compacting(os.environ[MULTIPROC_DIR_VARIABLE]))
    else:
        registry.register(_ThisProcess())
    return registry


def process_exited(pid: int) -> None:
    """Drop an exited process's live gauges from the shared directory."""
    if multiprocess_mode():
        prometheus_multiprocess.mark_process_dead(pid)


def compact(directory: str) -> int:
    """Fold the files of exited processes into one archive per type; the number of files folded.

    The caller holds the directory's lock (``_locked``).
    """
    folded = 0
    for path in glob.glob(os.path.join(directory, "*.db")):
        *kind, pid = os.path.basename(path)[: -len(".db")].split("_")
        if not pid.isdigit() or process_alive(int(pid)):
            continue  # an archive, or a live process's file
        if kind[0] in SUMMED_TYPES and _has_header(path):  # one that died creating its file counted nothing
            archive = MmapedDict(os.path.join(directory, f"{kind[0]}_{ARCHIVE}.db"))
            try:
                for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(path):
                    total, _ = archive.read_value(key)
                    archive.write_value(key, total + value, timestamp)
            finally:
                archive.close()
        with contextlib.suppress(FileNotFoundError):  # gunicorn's arbiter drops a dead worker's live gauges too
            os.remove(path)
        folded += 1
    return folded


@contextlib.contextmanager
def _locked(directory: str) -> Iterator[None]:
    """The directory's lock: a fold and a read never interleave (a scrape would see a sum twice, or not at all)."""
    with open(os.path.join(directory, ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# Smaller than its header (the 4-byte "used" count and its padding): a file
# being created, before prometheus-client has sized it.
HEADER_BYTES = 8


def _has_header(path: str) -> bool:
    """False for a file being created, and for one gone since the listing."""
    try:
        return os.path.getsize(path) >= HEADER_BYTES
    except FileNotFoundError:
        return False


class _Compacting(Collector):
    """prometheus-client's multiprocess collector, after folding the files of exited processes."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def collect(self) -> Iterator[Any]:
        with _locked(self.directory):
            compact(self.directory)
            files = [path for path in glob.glob(os.path.join(self.directory, "*.db")) if _has_header(path)]
            found = list(prometheus_multiprocess.MultiProcessCollector.merge(files, accumulate=True))
        yield from found


class _ThisProcess(Collector):
    """The default registry's metrics, without registering anything in it."""

    def collect(self) -> Iterator[Any]:
        yield from REGISTRY.collect()
