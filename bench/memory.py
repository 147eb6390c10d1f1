"""Resident memory of the API pod and the worker pod, at rest and after N tasks, against the chart.

Against one private RabbitMQ and Redis, ``run.sh api`` (API_TOKENS set,
API_WORKERS default) and ``run.sh worker`` (the chart's workerConcurrency
and workerMaxMemoryPerChildKb, production settings otherwise) run as the
pods would.  ``run.sh`` exec's its server, so the started pid is gunicorn's
master (resp. Celery's main process); its children in /proc are the
gunicorn workers (resp. the prefork pool processes).  For each process:
* RSS (``VmRSS``): every page it maps, shared or not;
* PSS (``/proc/<pid>/smaps_rollup``): shared pages split between the
  processes sharing them.  Prefork children and gunicorn workers share most
  of their pages with their parent after the fork, so the sum of RSS counts
  those pages several times; the sum of PSS counts each page once and is the
  figure a pod's memory is compared with.  PSS also splits libraries mapped
  by processes outside the pod here (the other service, this script), which
  a container would be charged in full: the pod's real figure lies between
  the PSS and RSS sums;
* USS (private pages): what exiting the process would free.
Read at rest (ready, then a few seconds) and after N ``add`` tasks submitted
over HTTP (``POST /tasks`` through keep-alive sessions from a few threads:
the API's own path, so its memory is what is exercised) and all finished
(results read back through ``TaskClient``).  Each pod's PSS total is
compared with the chart's requests and limits (charts/workqueue/values.yaml),
and the pool processes' peak RSS (``VmHWM``, what Celery compares) with
config.workerMaxMemoryPerChildKb.

    .venv/bin/python -m bench.memory [--tasks 10000] [--threads 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

import requests
import yaml

from bench.common import (
    REPO,
    Api,
    Worker,
    authorized_session,
    descendants,
    private_servers,
    running,
    secured_api,
    submit_add,
)
from testing.faults import make_client, unfinished
from testing.servers import wait_until
from workqueue.settings import Settings

VALUES = REPO / "charts" / "workqueue" / "values.yaml"
AT_REST_SECONDS = 5.0
MIB = 1024  # kB


@dataclass(frozen=True)
class Memory:
    """One process's memory, in kB."""

    rss: int
    pss: int
    uss: int
    peak_rss: int  # VmHWM: Celery's max-memory-per-child check reads this (ru_maxrss)


@dataclass(frozen=True)
class Sample:
    role: str
    pid: int
    memory: Memory


def kb_fields(text: str) -> dict[str, int]:
    """``Name:  123 kB`` lines of a /proc file as {name: kB}; other lines (smaps_rollup's header) are skipped."""
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            found[name] = int(parts[0])
    return found


def read_memory(pid: int) -> Memory:
    status = kb_fields(Path(f"/proc/{pid}/status").read_text())
    rollup = kb_fields(Path(f"/proc/{pid}/smaps_rollup").read_text())
    return Memory(
        rss=status["VmRSS"],
        pss=rollup["Pss"],
        uss=rollup["Private_Clean"] + rollup["Private_Dirty"],
        peak_rss=status["VmHWM"],
    )


def server_pid(service: Api | Worker, program: str) -> int:
    """The started pid, checked to be ``program`` itself (run.sh exec'd it) rather than a shell."""
    assert service.process is not None
    pid = service.process.pid
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    if program not in cmdline:
        raise RuntimeError(f"pid {pid} is {cmdline!r}, not {program}: did run.sh stop exec'ing its server?")
    return pid


def pod_samples(root: int, main_role: str, child_role: str, children: int) -> list[Sample]:
    """The server process and its ``children``, read again while a pool is replacing one of them."""
    found: list[Sample] = []

    def complete() -> bool:
        nonlocal found
        pids = descendants(root)
        if len(pids) != children:
            return False
        try:
            found = [Sample(main_role, root, read_memory(root))]
            found += [Sample(f"{child_role} {n}", pid, read_memory(pid)) for n, pid in enumerate(pids, 1)]
        except (OSError, KeyError):  # one exited meanwhile (a zombie's status has no VmRSS)
            return False
        return True

    wait_until(complete, 30, f"{children} x {child_role} under pid {root}")
    return found


def submit_over_http(api_url: str, n: int, threads: int) -> tuple[list[str], float]:
    """Submit ``n`` adds through ``POST /tasks`` from ``threads`` keep-alive sessions; (ids, seconds)."""
    sessions = [authorized_session() for _ in range(threads)]

    def share(session: requests.Session, numbers: range) -> list[str]:
        return [submit_add(session, api_url, i, i) for i in numbers]

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(threads) as pool:
            shares = list(pool.map(share, sessions, [range(t, n, threads) for t in range(threads)]))
    finally:
        for session in sessions:
            session.close()
    return [task_id for ids in shares for task_id in ids], time.monotonic() - started


def wait_finished(broker_url: str, backend_url: str, ids: Sequence[str], timeout: float) -> None:
    """Until every task is final, re-reading only those that were not yet (one MGET per 1,000)."""
    client = make_client(broker_url, backend_url, Path(tempfile.gettempdir()))
    try:
        pending = list(ids)
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} of {len(ids)} tasks not finished after {timeout:.0f} s")
            time.sleep(0.5)
            pending = unfinished(client, pending)
    finally:
        client.close()


def mebibytes(quantity: str | int) -> float:
    """A Kubernetes memory quantity (``128Mi``, ``1Gi``, ``500M``, bytes) in MiB."""
    text = str(quantity)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text.removesuffix(suffix)) * factor / 2**20
    return float(text) / 2**20


def pod_verdict(pod: str, samples: Sequence[Sample], tasks: int, resources: dict[str, Any]) -> str:
    """The pod's PSS total against the chart's request and limit, flagged past the request or half the limit."""
    total = sum(s.memory.pss for s in samples) / MIB
    rss = sum(s.memory.rss for s in samples) / MIB
    request, limit = resources["requests"]["memory"], resources["limits"]["memory"]
    flags = []
    if total > mebibytes(limit):
        flags.append("OVER THE LIMIT")
    elif total > mebibytes(limit) / 2:
        flags.append("above half the limit")
    flags.append("above the request" if total > mebibytes(request) else "within the request")
    # The container is charged somewhere between the PSS and the RSS sums (see the docstring).
    upper = f"; RSS sum {rss:.0f} MiB" + (", above the request" if rss > mebibytes(request) else "")
    return (
        f"{pod} pod: {total:.0f} MiB (PSS{upper}) after {tasks:,} tasks; chart request {request}, limit {limit}: "
        f"{', '.join(flags)} ({mebibytes(limit) / total:.1f}x headroom to the limit)"
    )


def pool_verdict(rest: Sequence[Sample], after: Sequence[Sample], settings: Settings, limit: str) -> list[str]:
    """Pool processes' peak RSS against workerMaxMemoryPerChildKb, and the chart's sizing rule with it."""
    children = [s for s in after if s.role.startswith("pool")]
    peak = max(s.memory.peak_rss for s in children)
    per_child = settings.worker_max_memory_per_child_kb / MIB
    replaced = len({s.pid for s in children} - {s.pid for s in rest})
    main = after[0].memory.pss / MIB
    budget = settings.worker_concurrency * per_child + main
    return [
        f"pool processes: peak RSS (VmHWM, what Celery checks) {peak / MIB:.0f} MiB; workerMaxMemoryPerChildKb "
        f"{settings.worker_max_memory_per_child_kb:,} kB ({per_child:.0f} MiB): peak at {peak / MIB / per_child:.0%}",
        f"  WORKER_MAX_TASKS_PER_CHILD={settings.worker_max_tasks_per_child}: "
        f"{replaced} of {len(children)} pool processes were replaced since the reading at rest",
        f"chart sizing rule: {settings.worker_concurrency} x {per_child:.0f} MiB + main process (PSS {main:.0f} MiB) "
        f"= {budget:.0f} MiB, limit {limit}: " + ("holds" if budget < mebibytes(limit) else "BROKEN"),
    ]


def table(pods: Sequence[tuple[str, list[Sample], list[Sample]]], tasks: int) -> list[str]:
    def cells(samples: Sequence[Sample], label: object) -> str:
        rss, pss, uss = (sum(getattr(s.memory, kind) for s in samples) / MIB for kind in ("rss", "pss", "uss"))
        return f"{label!s:>8}{rss:7.1f}{pss:7.1f}{uss:7.1f}"

    blank = f"{'-':>8}{'':21}"
    lines = [
        f"{'':30}{'at rest':^29}  {f'after {tasks:,} tasks':^29}".rstrip(),
        f"{'process (MiB)':30}" + "  ".join([f"{'pid':>8}{'RSS':>7}{'PSS':>7}{'USS':>7}"] * 2),
    ]
    for pod, rest, after in pods:
        for before, now in zip_longest(rest, after):
            role = (before or now).role
            left = cells([before], before.pid) if before else blank
            right = cells([now], now.pid) if now else blank
            lines.append(f"{pod + ': ' + role:30}{left}  {right}")
        lines.append(f"{pod + ' pod total':30}{cells(rest, '')}  {cells(after, '')}")
    return lines


def snapshot(api: Api, worker: Worker, api_workers: int, concurrency: int) -> tuple[list[Sample], list[Sample]]:
    """(API pod, worker pod) processes and their memory now."""
    return (
        pod_samples(server_pid(api, "gunicorn"), "gunicorn master", "gunicorn worker", api_workers),
        pod_samples(server_pid(worker, "celery"), "celery main", "pool process", concurrency),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=4, help="client threads submitting over HTTP")
    args = parser.parse_args()
    values = yaml.safe_load(VALUES.read_text())
    with private_servers() as (broker_url, backend_url):
        api = secured_api(broker_url, backend_url)
        # The pool as the chart sizes it (the ConfigMap's WORKER_* values).
        worker = Worker(
            broker_url,
            backend_url,
            name="memory",
            WORKER_CONCURRENCY=str(values["config"]["workerConcurrency"]),
            WORKER_MAX_MEMORY_PER_CHILD_KB=str(values["config"]["workerMaxMemoryPerChildKb"]),
        )
        api_workers = Settings.from_env(api.env).api_workers
        worker_settings = Settings.from_env(worker.env)
        counts = (api_workers, worker_settings.worker_concurrency)
        with running(api, worker):
            time.sleep(AT_REST_SECONDS)  # past start-up: imports done, first connections open
            rest = snapshot(api, worker, *counts)
            ids, seconds = submit_over_http(api.url, args.tasks, args.threads)
            wait_finished(broker_url, backend_url, ids, timeout=max(120.0, args.tasks / 20))
            after = snapshot(api, worker, *counts)
    print(f"submitted {args.tasks:,} adds over HTTP, {args.threads} threads, in {seconds:.1f} s; all finished")
    pods = [("api", rest[0], after[0]), ("worker", rest[1], after[1])]
    print("\n".join(table(pods, args.tasks)))
    for pod, _, now in pods:
        print(pod_verdict(pod, now, args.tasks, values[pod]["resources"]))
    worker_limit = values["worker"]["resources"]["limits"]["memory"]
    print("\n".join(pool_verdict(rest[1], after[1], worker_settings, worker_limit)))


if __name__ == "__main__":
    main()
