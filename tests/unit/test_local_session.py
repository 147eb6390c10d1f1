"""The session file of ``./dev.sh up``: tools take its servers when the shell names none, and only while it runs."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

from workqueue import local_session
from workqueue.settings import Settings

SERVERS = {"BROKER_URL": "amqp://guest:p%40ss@127.0.0.1:5999//", "RESULT_BACKEND": "redis://127.0.0.1:6999/0"}


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_tools_take_the_sessions_servers_when_the_shell_names_none(tmp_path):
    path = local_session.write({**SERVERS, local_session.API_URL: "http://127.0.0.1:8123"}, tmp_path / "s.env")
    environment = local_session.applied({"HOME": "/home/me"}, path)
    settings = Settings.from_env(environment)
    assert (settings.broker_url, settings.result_backend) == (SERVERS["BROKER_URL"], SERVERS["RESULT_BACKEND"])
    assert environment[local_session.API_URL] == "http://127.0.0.1:8123"
    assert local_session.source({}, path).startswith("the running ./dev.sh up")


def test_a_shell_that_names_any_server_keeps_its_own(tmp_path):
    path = local_session.write(SERVERS, tmp_path / "s.env")
    for own in ({"RABBITMQ_HOST": "rabbit"}, {"REDIS_PORT": "7000"}, {"RESULT_BACKEND": "redis://r:1/0"}):
        environment = local_session.applied(own, path)
        assert "BROKER_URL" not in environment and environment.items() >= own.items()
        assert local_session.source(own, path).startswith("the environment")


def test_a_session_whose_dev_sh_up_is_gone_is_ignored(tmp_path):
    path = local_session.write(SERVERS, tmp_path / "s.env", pid=dead_pid())
    assert local_session.read(path) is None
    assert "BROKER_URL" not in local_session.applied({}, path)
    assert "nothing is configured and no ./dev.sh up runs" in local_session.source({}, path)


def test_settings_the_shell_gives_itself_win_and_a_token_never_meets_an_open_api(tmp_path):
    path = local_session.write({**SERVERS, "TASK_MODULES": "mine.tasks", "API_TOKENS": "t" * 24}, tmp_path / "s.env")
    environment = local_session.applied({"TASK_MODULES": "yours.tasks"}, path)
    assert environment["TASK_MODULES"] == "yours.tasks" and environment["API_TOKENS"] == "t" * 24
    assert "API_TOKENS" not in local_session.applied({"API_AUTH": "off"}, path)


def test_the_file_is_its_owners_only_quoted_for_a_shell_and_removed_by_its_session_alone(tmp_path):
    path = local_session.write({"BROKER_URL": "amqp://u:it's@h//"}, tmp_path / "s.env")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # URLs may hold passwords
    sourced = subprocess.run(
        ["bash", "-c", f'set -a; . "{path}"; printf %s "$BROKER_URL"'], capture_output=True, text=True, check=True
    )
    assert sourced.stdout == "amqp://u:it's@h//" == local_session.read(path)["BROKER_URL"]  # type: ignore[index]
    local_session.remove(path, pid=os.getpid() + 1)  # another session's stop leaves it
    assert path.exists()
    local_session.remove(path)
    assert not path.exists()
