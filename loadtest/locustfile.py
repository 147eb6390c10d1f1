"""Locust users that drive the HTTP API the way users do.

Each user submits a task from a realistic mix, then polls ``GET
/tasks/<id>`` until it is done.  Two latencies are recorded separately:
* ``POST /tasks`` — enqueue latency (Locust's own request statistics);
* ``TASK <name>`` — completion latency, submit to terminal state, fired
  as a custom request event (a failure if the task did not succeed).
Polls are grouped under ``GET /tasks/[id]``.  With ``API_TOKENS`` set
(the API's setting) every request carries the first token.

A user always finishes the task it started before it stops (run with
``--stop-timeout``), so every submitted task is accounted for.  Locust's
CSV files are periodic snapshots that can miss the last completions, so
the final totals are written to ``$WORKQUEUE_LOADTEST_TOTALS`` once every
user has stopped, and every submission and completion with its time to
``$WORKQUEUE_LOADTEST_EVENTS`` (the plots are drawn from these, from the
first second on, rather than from Locust's smoothed snapshots).
"""

from __future__ import annotations

import csv
import json
import os
import random
import time

from locust import HttpUser, between, events, task

from workqueue.settings import Settings

TERMINAL = {"SUCCESS", "FAILURE", "REVOKED"}
POLL_SECONDS = 0.02
TASK_TIMEOUT_SECONDS = 120.0

# (weight, task, body) — mostly short tasks, some CPU, some waiting.
MIX = [
    (60, "add", lambda: {"args": [random.randint(0, 1000), random.randint(0, 1000)]}),
    (20, "xsum", lambda: {"args": [[random.random() for _ in range(20)]]}),
    (10, "pi", lambda: {"kwargs": {"digits": 200}}),
    (10, "sleep", lambda: {"kwargs": {"seconds": 0.1}}),
]


class TaskSubmitter(HttpUser):
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        # An API that requires a token (API_TOKENS, as the chart deploys it)
        # gets the first one; the API's own setting, so a run needs no extra flag.
        tokens = Settings.from_env().api_tokens
        if tokens:
            self.client.headers["Authorization"] = f"Bearer {tokens[0]}"

    @task
    def submit_and_wait(self) -> None:
        _, name, body = random.choices(MIX, weights=[w for w, _, _ in MIX])[0]
        started = time.perf_counter()
        with self.client.post(
            "/tasks", json={"task": name, **body()}, name="POST /tasks", catch_response=True
        ) as response:
            if response.status_code != 202:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return
            location = response.headers["Location"]
        state, error = "PENDING", None
        while state not in TERMINAL:
            if time.perf_counter() - started > TASK_TIMEOUT_SECONDS:
                error = RuntimeError(f"no result within {TASK_TIMEOUT_SECONDS} s (last state {state})")
                break
            time.sleep(POLL_SECONDS)
            with self.client.get(location, name="GET /tasks/[id]", catch_response=True) as poll:
                if poll.status_code != 200:
                    poll.failure(f"{poll.status_code}")
                    continue
                state = poll.json()["state"]
        if error is None and state != "SUCCESS":
            error = RuntimeError(f"task ended {state}")
        self.environment.events.request.fire(
            request_type="TASK",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=error,
            context={},
        )


# (epoch seconds, type, name, response time in ms, succeeded) of each submission and completion.
RECORDED: list[tuple[float, str, str, float, bool]] = []


@events.request.add_listener
def record(request_type, name, response_time, exception=None, **kwargs) -> None:  # Locust's hook signature
    if request_type in ("POST", "TASK"):  # not the polls
        RECORDED.append((time.time(), request_type, name, response_time, exception is None))


@events.quitting.add_listener
def write_events(environment, **kwargs) -> None:  # Locust's hook signature
    path = os.environ.get("WORKQUEUE_LOADTEST_EVENTS")
    if not path:
        return
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time", "type", "name", "response_time_ms", "ok"])
        writer.writerows((f"{t:.4f}", kind, name, f"{ms:.2f}", int(ok)) for t, kind, name, ms, ok in RECORDED)


@events.quitting.add_listener
def write_totals(environment, **kwargs) -> None:  # Locust's hook signature
    path = os.environ.get("WORKQUEUE_LOADTEST_TOTALS")
    if not path:
        return
    totals = [
        {
            "type": entry.method,
            "name": entry.name,
            "requests": entry.num_requests,
            "failures": entry.num_failures,
            "percentiles_ms": {f"{int(q * 100)}%": entry.get_response_time_percentile(q) for q in (0.5, 0.95, 0.99)},
        }
        for entry in environment.stats.entries.values()
    ]
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(totals, handle, indent=2)
