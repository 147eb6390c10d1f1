"""Every request has a bounded cost: the worst of each kind, in a loop, leaves the API healthy.

Against a real ``run.sh api`` (gunicorn, two gevent workers, auth on as the
chart deploys it), a load process sends in a loop the most expensive
request of each kind a client can send: unauthenticated requests to every
open route, 401, 403, 404 and 405 answers (with 256 KB bodies and made-up
methods), the invalid body that cost seconds of CPU to validate, and the
worst valid body (a full ``xsum``, published with a confirm).  Meanwhile
this process, doing nothing else, times ``GET /healthz`` and reads the
memory of the API's processes: the p99 must stay under 500 ms and the
memory under the chart's API limit (``charts/workqueue/values.yaml``).

Metric label values come from fixed sets: made-up methods and paths add no
series to ``/metrics``.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import secrets
import statistics
import threading
import time
from collections import Counter

import pytest
import requests
import yaml

from testing.faults import BLOCKED_P99_SECONDS, report
from testing.processes import REPO, Api
from testing.servers import group_members

pytestmark = pytest.mark.integration

FULL_TOKEN = f"cost-{secrets.token_hex(16)}"
READ_TOKEN = f"cost-read-{secrets.token_hex(16)}"
LOAD_SECONDS = 20
LOAD_THREADS = 2
# Valid submissions are queued with no worker to run them (a virtual host and
# a Redis of the test's own, dropped after it): at most this many, ~200 KB each.
MAX_VALID_SUBMISSIONS = 120
SIZES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def api_memory_limit() -> int:
    """The API container's memory limit in the chart's default values, in bytes."""
    values = yaml.safe_load((REPO / "charts" / "workqueue" / "values.yaml").read_text())
    limit = values["api"]["resources"]["limits"]["memory"]
    number, unit = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", limit).groups()
    return int(number) * SIZES[unit]


def worst_requests(base: str, full_token: str, read_token: str) -> dict[str, dict]:
    """The most expensive request of each kind, as keyword arguments of ``requests.request``."""
    full = {"Authorization": f"Bearer {full_token}"}
    # 256 KiB within every documented limit: 10,000 numbers of the longest repr, and padding.
    longest = [-1234567.8901234567 - i for i in range(10_000)]
    valid = json.dumps({"task": "xsum", "args": [longest]})
    # What took ~2.6 s of CPU and ~134 MB to validate: 40,000 wrong items (and too many of them).
    invalid = json.dumps({"task": "xsum", "args": [["x"] * 40_000]})
    big = "x" * (256 * 1024 - 100)
    assert len(valid) <= 256 * 1024 and len(invalid) <= 256 * 1024
    json_headers = {"Content-Type": "application/json"}
    return {
        "GET /healthz": {"method": "GET", "url": f"{base}/healthz"},
        "GET /readyz": {"method": "GET", "url": f"{base}/readyz"},
        "GET /metrics": {"method": "GET", "url": f"{base}/metrics"},
        "GET /openapi.json": {"method": "GET", "url": f"{base}/openapi.json"},
        "GET /catalogue": {"method": "GET", "url": f"{base}/catalogue"},
        "401 POST /tasks, 256 KB body": {
            "method": "POST", "url": f"{base}/tasks", "data": big, "headers": json_headers,
        },
        "401 wrong token": {
            "method": "GET", "url": f"{base}/tasks?limit=500", "headers": {"Authorization": "Bearer " + "y" * 4000},
        },
        "403 read token POST": {
            "method": "POST", "url": f"{base}/tasks", "data": valid,
            "headers": {**json_headers, "Authorization": f"Bearer {read_token}"},
        },
        "404 long path and query": {"method": "GET", "url": f"{base}/{'a/' * 1000}?{'q=1&' * 400}"},
        "405 made-up method": {"method": "BREW", "url": f"{base}/healthz"},
        "405 PUT /catalogue, 256 KB body": {"method": "PUT", "url": f"{base}/catalogue", "data": big},
        "422 worst invalid body": {
            "method": "POST", "url": f"{base}/tasks", "data": invalid, "headers": {**json_headers, **full},
        },
        "413 oversize body": {
            "method": "POST", "url": f"{base}/tasks", "data": big * 2, "headers": {**json_headers, **full},
        },
        "202 worst valid body": {
            "method": "POST", "url": f"{base}/tasks", "data": valid, "headers": {**json_headers, **full},
        },
    }  # fmt: skip


def load(base: str, tokens: tuple[str, str], seconds: float, threads: int, results: multiprocessing.Queue) -> None:
    """The load process: ``threads`` clients, each sending every kind of worst request in turn."""
    kinds = worst_requests(base, *tokens)
    started = time.monotonic()
    deadline = started + seconds
    valid_sent = [0]
    lock = threading.Lock()
    counts: Counter[str] = Counter()

    def client() -> None:
        with requests.Session() as session:
            while time.monotonic() < deadline:
                for kind, request in kinds.items():
                    if kind.startswith("202"):
                        # Spread over the whole run: the share of the cap that the time elapsed allows.
                        with lock:
                            allowed = MAX_VALID_SUBMISSIONS * (time.monotonic() - started) / seconds
                            if valid_sent[0] >= allowed:
                                continue
                            valid_sent[0] += 1
                    try:
                        status = session.request(**request, timeout=30).status_code
                        outcome = f"{kind} -> {status}"
                    except requests.RequestException as exc:
                        outcome = f"{kind} -> {type(exc).__name__}"
                    with lock:
                        counts[outcome] += 1

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put(dict(counts))


def api_rss(pgid: int) -> int:
    """Resident memory of every process of the API (gunicorn's master and its workers), in bytes."""
    total = 0
    for entry in group_members(pgid):
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue  # it exited meanwhile
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        total += int(found[1]) * 1024 if found else 0
    return total


@pytest.fixture
def api(own_vhost, private_redis):
    server = Api(own_vhost.url, private_redis.url, API_TOKENS=FULL_TOKEN, API_READ_TOKENS=READ_TOKEN)
    try:
        server.start().wait_ready()
        yield server
    finally:
        server.stop()


def series(base: str) -> set[str]:
    """The request metric's series (their label sets) as /metrics shows them."""
    text = requests.get(f"{base}/metrics", timeout=10).text
    return set(re.findall(r"^workqueue_api_requests_total\{([^}]*)\}", text, re.M))


def test_the_worst_request_of_each_kind_in_a_loop_leaves_healthz_fast_and_memory_bounded(api):
    base = api.url
    assert api.process is not None
    limit = api_memory_limit()
    context = multiprocessing.get_context("spawn")  # the load runs apart from this process' timing thread
    results = context.Queue()
    arguments = (base, (FULL_TOKEN, READ_TOKEN), LOAD_SECONDS, LOAD_THREADS, results)
    loader = context.Process(target=load, args=arguments, daemon=True)
    latencies: list[float] = []
    rss: list[int] = [api_rss(api.process.pid)]
    failures: list[str] = []
    loader.start()
    try:
        started = time.monotonic()
        with requests.Session() as session:
            while loader.is_alive() and time.monotonic() - started < LOAD_SECONDS + 60:
                began = time.perf_counter()
                try:
                    if session.get(f"{base}/healthz", timeout=5).status_code != 200:
                        failures.append("healthz not 200")
                except requests.RequestException as exc:
                    failures.append(type(exc).__name__)
                latencies.append(time.perf_counter() - began)
                rss.append(api_rss(api.process.pid))
                time.sleep(0.02)
        counts = results.get(timeout=60)
    finally:
        loader.join(10)
        if loader.is_alive():
            loader.kill()
    assert not failures, failures[:5]
    by_kind = Counter({outcome.split(" -> ")[0]: n for outcome, n in counts.items()})
    assert set(by_kind) == set(worst_requests(base, FULL_TOKEN, READ_TOKEN)), "every kind was sent"
    errors = [outcome for outcome in counts if outcome.endswith(("Error", "Timeout")) or "-> 5" in outcome]
    latencies.sort()
    p50, p99 = statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]
    report(
        f"[fault figures] request cost: {sum(counts.values())} worst requests of {len(by_kind)} kinds in "
        f"{LOAD_SECONDS} s; /healthz n={len(latencies)} p50={p50 * 1000:.1f}ms p99={p99 * 1000:.1f}ms "
        f"max={latencies[-1] * 1000:.1f}ms; API RSS max={max(rss) / 2**20:.0f}MiB (limit {limit / 2**20:.0f}MiB); "
        + ", ".join(f"{outcome}: {n}" for outcome, n in sorted(counts.items()))
    )
    assert not errors, f"{errors}\nAPI log:\n{api.log()[-8000:]}"  # the log says why (read on failure only)
    for outcome in counts:  # each kind got the answer it stands for
        kind, status = outcome.split(" -> ")
        assert kind[:3] == status or not kind[0].isdigit(), outcome
    assert p99 < BLOCKED_P99_SECONDS, f"/healthz p99 {p99 * 1000:.0f} ms under load"
    assert len(latencies) >= 200, "enough /healthz samples for a p99"
    assert max(rss) < limit, f"API processes reached {max(rss) / 2**20:.0f} MiB"


def test_made_up_methods_and_paths_create_no_metric_series(api):
    """Label values come from fixed sets, so a client cannot grow /metrics."""
    base = api.url

    def junk(round_: int) -> None:
        with requests.Session() as session:
            for i in range(60):
                method = f"M{round_}X{i}"
                session.request(method, f"{base}/healthz", timeout=10)
                session.request(method, f"{base}/tasks/{secrets.token_hex(8)}", timeout=10)
                session.get(f"{base}/no/such/path/{round_}/{i}", timeout=10)
                session.get(f"{base}/healthz?{secrets.token_hex(4)}=1", timeout=10)

    series(base)  # the scrape itself is a series
    junk(1)
    after_first = series(base)
    junk(2)
    after_second = series(base)
    assert after_second == after_first, sorted(after_second - after_first)[:5]
    shown = "\n".join(after_second)
    assert "M1X" not in shown and "M2X" not in shown and "/no/such" not in shown
    assert 'method="other"' in shown and 'route="unmatched"' in shown
    report(f"[fault figures] metric series: {len(after_second)} after 480 requests of made-up methods and paths")
