"""Every command of the README, as written, against a real ``./dev.sh up`` in a fresh copy of the checkout.

The commands are read from the README's ``sh`` blocks, so the README cannot
drift from what works.  A copy of the checkout (the files git would commit,
with this checkout's ``.venv`` linked in, so nothing is installed again)
gets ``./dev.sh up``: on RabbitMQ and Redis (private ones, named in its
environment as a user would configure them), then ``--embedded``.  Each
command then runs through ``bash`` in the copy, in an environment that
names no server: the tools must find ``./dev.sh up``'s by themselves.

What is checked, for each command:
* it exits 0 (``python3 submit_tasks.py`` runs until Ctrl+C: it is
  interrupted after its first result, and exits 130);
* a ``curl`` gets the HTTP status the README shows (``# 202``; 200 when it
  shows none), or, on the embedded store, ``501`` with the JSON error for
  the routes the README says need Redis;
* what the README shows under a ``$`` command appears: every ``"key":`` it
  shows, and the shown value of ``state`` (a final state exactly, a
  running one as "not final yet"), ``task``, ``result`` and the other
  plain values it shows.  A ``GET`` (and a request repeated with an
  ``Idempotency-Key``) is repeated until it matches, for up to 30 s, as a
  reader would look again.

Two substitutions are made, nothing else: ``<id>`` is the id of the last
task submitted with ``POST /tasks`` (the README says so), and the port 8000
becomes the port this test's ``./dev.sh up`` listens on, so a server
already on 8000 cannot answer in its place.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.faults import report
from testing.processes import _SCRUBBED_PREFIXES, REPO, wait_for_readyz
from testing.servers import Process, free_port, wait_until

pytestmark = pytest.mark.integration

README = REPO / "README.md"
# The session itself: the test starts it with exactly these words.
SESSIONS = {"rabbitmq-and-redis": "./dev.sh up", "embedded": "./dev.sh up --embedded"}
NOT_RUN = {"./dev.sh test": "this test runs inside it"}
UNTIL_INTERRUPTED = {"python3 submit_tasks.py"}  # "until Ctrl+C"
COMMAND_SECONDS = 120
MATCH_SECONDS = 30
FINAL_STATES = {"SUCCESS", "FAILURE", "REVOKED"}
# Plain values the README shows that must be as shown (state is compared by its own rule).
COMPARED = ("task", "result", "retries", "type", "message", "revoke_requested", "next_cursor", "name", "summary")
PAIR = re.compile(r'"(\w+)":("(?:[^"\\]|\\.)*"|true|false|null|-?\d+(?:\.\d+)?)(?=[,}\]])')
STATUS_MARK = "\n@@HTTP "


@dataclasses.dataclass
class Command:
    text: str  # as written, continuation lines joined
    shown: str = ""  # the output the README shows under it (comments cut)
    status: int | None = None  # the HTTP status the README gives in a comment

    @property
    def words(self) -> str:
        """The command without its comment."""
        return re.sub(r"\s+#.*$", "", self.text).strip()


def readme_commands(text: str) -> list[Command]:
    """The commands of the README's ``sh`` blocks, in order."""
    commands: list[Command] = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        lines = block.splitlines()
        session = any(line.startswith("$ ") for line in lines)
        pending = ""
        for line in lines:
            if pending:
                pending += "\n" + line
                if not line.endswith("\\"):
                    commands.append(Command(pending))
                    pending = ""
                continue
            if session and not line.startswith("$ "):
                if line.strip() and commands:  # output shown under the last command
                    output, _, comment = line.partition("   #")
                    commands[-1].shown += output.rstrip() + "\n"
                    commands[-1].status = commands[-1].status or _status(comment)
                continue
            line = line.removeprefix("$ ") if session else line
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line.endswith("\\"):
                pending = line
            else:
                commands.append(Command(line))
    for command in commands:
        command.status = command.status or _status(command.text.partition(" #")[2])
    return commands


def _status(comment: str) -> int | None:
    found = re.match(r"\s*#?\s*(\d{3})\b", comment)
    return int(found.group(1)) if found else None


def needs_redis(text: str) -> list[tuple[str, re.Pattern[str]]]:
    """(method, path pattern) of the routes the README says answer 501 on the embedded store."""
    listed = " ".join(paragraph for paragraph in text.split("\n\n") if "`501`" in paragraph)
    routes = []
    for method, path in re.findall(r"`(GET|POST|DELETE) (/tasks[^`]*)`", listed):
        pattern = re.escape(path).replace(re.escape("<id>"), "[0-9a-f-]{36}").replace(re.escape("N"), r"\d+")
        routes.append((method, re.compile(pattern + r"$")))
    return routes


def copy_of_the_checkout(target: Path) -> Path:
    """The files git would commit (tracked and new, not ignored), and this checkout's ``.venv`` linked in."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for name in filter(None, listing.split("\0")):
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    (target / ".venv").symlink_to(REPO / ".venv")
    return target


def user_env(**extra: str) -> dict[str, str]:
    """A shell that names no server (nor a Python for run.sh)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith((*_SCRUBBED_PREFIXES, "PYTHON", "VIRTUAL_ENV"))}
    return {**env, **extra}


@dataclasses.dataclass
class Session:
    clone: Path
    port: int
    env: dict[str, str]  # the commands' shell
    mode: str
    logs: Path
    last_id: str = ""
    count: int = 0

    def run(self, command: Command) -> tuple[int, str]:
        """Run ``command`` through bash in the copy: (exit status, output)."""
        text = re.sub(r"(localhost|127\.0\.0\.1):8000\b", rf"\1:{self.port}", command.text)
        text = text.replace("<id>", self.last_id)
        self.count += 1
        log = self.logs / f"{self.count:02d}.log"
        process = Process(["bash", "-c", text], self.env, log, cwd=str(self.clone))
        try:
            if command.words in UNTIL_INTERRUPTED:
                wait_until(lambda: " -> " in log.read_text(errors="replace"), 60, f"a result from {text!r}")
                process.signal_group(signal.SIGINT)  # Ctrl+C in a terminal
            code = process.wait(COMMAND_SECONDS)
        finally:
            process.kill()
        return code, log.read_text(errors="replace")


@pytest.fixture(params=list(SESSIONS), ids=list(SESSIONS))
def session(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Session]:
    """A copy of the checkout with ``./dev.sh up`` running in it (the README's own words)."""
    mode = request.param
    words = SESSIONS[mode]
    assert f"\n{words} " in README.read_text(), f"the README no longer says {words!r}"
    clone = copy_of_the_checkout(tmp_path / "clone")
    port = free_port()
    server_env = user_env(PORT=str(port), WORKER_METRICS_PORT="0")  # 9808 may be another worker's
    if mode == "rabbitmq-and-redis":
        rabbitmq, redis = request.getfixturevalue("own_vhost"), request.getfixturevalue("private_redis")
        server_env.update(BROKER_URL=rabbitmq.url, RESULT_BACKEND=redis.url)  # as a user configures them
    bin_dir = tmp_path / "bin"  # curl, telling this test each answer's status on stderr
    bin_dir.mkdir()
    (bin_dir / "curl").write_text(
        f"#!/usr/bin/env bash\nexec {shutil.which('curl')} --write-out '%{{stderr}}{STATUS_MARK.strip(chr(10))} "
        '%{http_code}\\n\' "$@"\n'
    )
    (bin_dir / "curl").chmod(0o755)
    env = user_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    up = Process(["bash", "-c", words], server_env, tmp_path / "up.log", cwd=str(clone))
    try:
        wait_for_readyz(f"http://127.0.0.1:{port}", up.alive, up.log_tail, 120, words)
        logs = tmp_path / "commands"
        logs.mkdir()
        yield Session(clone, port, env, mode, logs)
        up.signal(signal.SIGINT)  # Ctrl+C stops both services
        assert up.wait(60) == 0, up.log_tail()
    finally:
        up.kill()
    assert not (clone / ".workqueue-data" / "session.env").exists(), "a stopped session leaves no session file"


def http_status(output: str) -> tuple[str, int]:
    body, _, status = output.rpartition(STATUS_MARK.lstrip("\n"))
    return body.rstrip("\n"), int(status.split()[0])


def mismatches(shown: str, actual: str) -> list[str]:
    """What the README shows that the actual output lacks (see the module's docstring)."""
    problems = []
    for key in dict.fromkeys(re.findall(r'"(\w+)":', shown)):
        if f'"{key}":' not in actual:
            problems.append(f"no {key!r}")
    actual_pairs: dict[str, set[str]] = {}
    for key, value in PAIR.findall(actual):
        actual_pairs.setdefault(key, set()).add(value)
    for key, value in dict.fromkeys(PAIR.findall(shown)):
        found = actual_pairs.get(key, set())
        if key == "state":
            state = json.loads(value)
            states = {json.loads(v) for v in found}
            if state in FINAL_STATES and state not in states:
                problems.append(f"state {states or 'none'}, not {state}")
            if state not in FINAL_STATES and not states - FINAL_STATES:
                problems.append(f"state {states or 'none'}, not one still running like {state}")
        elif key in COMPARED and value not in found:
            problems.append(f"{key} {sorted(found) or 'missing'}, not {value}")
    if "event: state" in shown and "event: state" not in actual:
        problems.append("no event: state")
    return problems


def check(session: Session, command: Command, redis_routes: list[tuple[str, re.Pattern[str]]]) -> str:
    """Run one command as the README says; the problem found, or ''."""
    repeatable = command.words.startswith("curl") and (
        "XPOST" not in command.words or "Idempotency-Key" in command.words
    )
    repeatable = repeatable and "XDELETE" not in command.words
    deadline = time.monotonic() + MATCH_SECONDS
    while True:
        code, output = session.run(command)
        problem = verdict(session, command, code, output, redis_routes)
        if not problem or not repeatable or time.monotonic() > deadline or problem.startswith("answered"):
            break
        time.sleep(0.5)
    if not problem and re.search(r"-XPOST \S+/tasks\s", command.words):
        session.last_id = json.loads(http_status(output)[0])["id"]
    return problem


def verdict(session: Session, command: Command, code: int, output: str, redis_routes) -> str:
    if command.words in UNTIL_INTERRUPTED:
        return "" if code == 130 else f"exit {code} after Ctrl+C, not 130:\n{output[-1500:]}"
    if code != 0:
        return f"exit {code}:\n{output[-1500:]}"
    if not command.words.startswith("curl"):
        return ""
    body, status = http_status(output)
    method = re.search(r"-X(\w+)", command.words).group(1) if "-X" in command.words else "GET"  # type: ignore[union-attr]
    path = "/" + re.search(r"localhost:8000(/[^\s']*)", command.words).group(1).lstrip("/")  # type: ignore[union-attr]
    path = path.replace("<id>", session.last_id)
    if session.mode == "embedded" and any(
        m == method and (p.match(path) or p.match(path.split("?")[0])) for m, p in redis_routes
    ):
        error = json.loads(body)["error"] if status == 501 else {}
        return "" if error.get("code") == "not_implemented" else f"answered {status}, not 501 JSON: {body[:300]}"
    expected = command.status or 200
    if status != expected:
        return f"answered {status}, not {expected}: {body[:300]}"
    problems = mismatches(command.shown, body)
    return f"{'; '.join(problems)} in {body[:600]}" if problems else ""


def test_every_readme_command_runs_as_written(session: Session):
    text = README.read_text()
    commands = readme_commands(text)
    redis_routes = needs_redis(text)
    assert len(redis_routes) == 4 and len(commands) >= 20, (redis_routes, [c.words for c in commands])
    started = time.monotonic()
    ran, failures = [], []
    for command in commands:
        if command.words in SESSIONS.values() or command.words in NOT_RUN:
            continue
        problem = check(session, command, redis_routes)
        ran.append(command.words)
        if problem:
            failures.append(f"$ {command.words}\n  {problem}")
    report(f"[readme commands] {session.mode}: {len(ran)} commands in {time.monotonic() - started:.0f} s")
    assert failures == [], "\n".join(failures)
    assert {c.words for c in commands} >= set(NOT_RUN) | UNTIL_INTERRUPTED, "the lists above name README commands"
    page = session.clone / "report" / "index.html"  # the load test's report, as the README says
    assert page.exists() and all(f'<img src="{n}"' in page.read_text() for n in ("submit_rate.png", "latency.png"))


def test_the_readme_parser_sees_commands_outputs_and_statuses():
    """The checker can fail: it finds what a block shows, and a wrong state or a missing key is a mismatch."""
    text = '```sh\n$ curl -s localhost:8000/x \\\n   -d \'{}\'\n{"id":"…","state":"SUCCESS","result":5}   # 202\n```\n'
    (command,) = readme_commands(text)
    assert command.words == "curl -s localhost:8000/x \\\n   -d '{}'" and command.status == 202
    assert mismatches(command.shown, '{"id":"a","state":"SUCCESS","result":5}') == []
    assert mismatches(command.shown, '{"id":"a","state":"PENDING","result":5}') == ["state {'PENDING'}, not SUCCESS"]
    assert mismatches(command.shown, '{"state":"SUCCESS","result":6}') == ["no 'id'", "result ['6'], not 5"]
    assert mismatches('{"state":"PROGRESS"}', '{"state":"PENDING"}') == []
    assert mismatches('{"state":"PROGRESS"}', '{"state":"SUCCESS"}') != []
    plain = readme_commands("```sh\n./run.sh x --y 1   # 2 words\n# a comment\npython3 z.py\n```\n")
    assert [c.words for c in plain] == ["./run.sh x --y 1", "python3 z.py"] and plain[0].status is None
