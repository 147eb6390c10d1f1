"""The real image, built and run with podman as Kubernetes would run it.

Each test is one thing a user of the image relies on: the image is built
as documented; the API and worker containers do the work; the exec probes
answer inside the container as the kubelet sees them; ``podman stop``
(SIGTERM, then SIGKILL after the grace period) loses no task;
``submit_tasks.py`` works from a throwaway pod; and all of it runs as the
non-root user on a read-only root filesystem with only ``/tmp`` writable.
"""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path

import pytest
import requests

from testing import servers
from testing.processes import wait_for_state
from tests.container.conftest import Stack, deploy_env, service_env
from tests.container.podman import APP_UID, REPO, Container, Containers, Podman
from workqueue.client import TaskClient
from workqueue.settings import Settings

# The first test builds the image: from nothing (debootstrap, pip) that
# takes minutes, beyond the suite's default per-test limit.
# One pytest-xdist worker runs every container test: one image build, one podman at a time.
pytestmark = [pytest.mark.container, pytest.mark.xdist_group("podman"), pytest.mark.timeout(1500)]

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def post_task(stack: Stack, task: str, *args: object) -> str:
    auth = {"Authorization": f"Bearer {stack.token}"}
    response = requests.post(f"{stack.url}/tasks", json={"task": task, "args": list(args)}, headers=auth, timeout=10)
    assert response.status_code == 202, response.text
    assert response.headers["Location"].endswith(f"/tasks/{response.json()['id']}")
    return response.json()["id"]


# 1. The image -----------------------------------------------------------------


def test_image_is_built_as_documented(podman: Podman, image: str) -> None:
    config = podman.inspect_image(image)["Config"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert config["User"] == f"{APP_UID}:{APP_UID}"  # numeric: runAsNonRoot can verify it
    assert config["Entrypoint"] == ["/app/run.sh"]
    assert config["Cmd"] == ["worker"]
    assert config["WorkingDir"] == "/app"
    assert set(config["ExposedPorts"]) == {"8000/tcp", "9808/tcp"}
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert "RUNTIME_DIR" not in env  # its default (under /tmp) is written once, in workqueue/settings.py
    assert env["PATH"].split(":")[:2] == ["/opt/venv/bin", "/app"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "workqueue"
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.base.name"]

    size_mb = podman.inspect_image(image)["Size"] / 1e6
    print(f"\nimage {image[:12]}: {size_mb:.0f} MB on {labels['org.opencontainers.image.base.name']}")
    assert size_mb < 400


def test_image_holds_only_the_app_and_its_dependencies(containers: Containers) -> None:
    result = containers.run_once("listing", "sh", "-c", "ls -A /app; echo; ls /opt/venv/bin")
    assert result.returncode == 0, result.stderr
    app_files, venv_bin = result.stdout.split("\n\n")
    assert set(app_files.split()) == {
        "run.sh", "celery_status.sh", "submit_tasks.py", "workqueue", "api", "worker", "cli", "loadtest"
    }  # fmt: skip
    assert {"python3", "celery", "gunicorn"} <= set(venv_bin.split())


# 2. API and worker containers do the work -------------------------------------


def test_tasks_submitted_over_http_to_the_api_container_get_results(stack: Stack) -> None:
    ids = {
        "add": post_task(stack, "add", 2, 3),
        "mul": post_task(stack, "mul", 6, 7),
        "xsum": post_task(stack, "xsum", [1, 2, 3, 4]),
        "pi": post_task(stack, "pi", 10),
        "dump_context": post_task(stack, "dump_context", 1, "two"),
    }
    auth = {"Authorization": f"Bearer {stack.token}"}
    results = {
        name: wait_for_state(stack.url, task_id, {"SUCCESS"}, headers=auth)["result"] for name, task_id in ids.items()
    }
    assert requests.get(f"{stack.url}/tasks/{ids['add']}", timeout=10).status_code == 401  # no token
    assert results["add"] == 5
    assert results["mul"] == 42
    assert results["xsum"] == 10
    assert results["pi"] == "3.1415926535"
    # It ran in the worker container, not in some other worker.
    assert results["dump_context"]["hostname"] == f"celery@{stack.worker.name}"
    catalogue = requests.get(f"{stack.url}/catalogue", timeout=10)
    assert catalogue.status_code == 200


def test_the_containers_main_processes_are_celery_and_gunicorn(stack: Stack) -> None:
    # PID 1 is the real server (run.sh exec's it), so SIGTERM reaches it.
    worker_pid1 = stack.worker.exec("cat", "/proc/1/cmdline").stdout.replace("\0", " ")
    api_pid1 = stack.api.exec("cat", "/proc/1/cmdline").stdout.replace("\0", " ")
    assert "celery" in worker_pid1 and "worker" in worker_pid1, worker_pid1
    assert "gunicorn" in api_pid1, api_pid1


# 3. Exec probes inside the container --------------------------------------------


def test_probes_in_the_container_pass_when_healthy_and_readiness_fails_without_broker(
    containers: Containers, private_rabbitmq: servers.RabbitMQ, backend_url: str
) -> None:
    # A short heartbeat limit: a liveness probe that still passes several
    # limits after the broker went away does not depend on the broker.
    worker = containers.start(
        "probed-worker", env=service_env(private_rabbitmq.url, backend_url, WORKER_HEARTBEAT_MAX_AGE="3")
    )
    try:
        worker.wait_probe("--ready")
        for flag in ("--live", "--ready"):
            probe = worker.exec("celery_status.sh", flag)
            assert (probe.returncode, probe.stdout, probe.stderr) == (0, "", ""), flag

        private_rabbitmq.stop()
        unready = None

        def readiness_fails() -> bool:
            nonlocal unready
            unready = worker.exec("celery_status.sh", "--ready")
            return unready.returncode == 1

        servers.wait_until(readiness_fails, 30, "--ready to fail with the broker stopped", interval=0.5)
        assert unready is not None and "not connected to the broker" in unready.stdout
        for _ in range(4):  # over twice WORKER_HEARTBEAT_MAX_AGE
            live = worker.exec("celery_status.sh", "--live")
            assert live.returncode == 0, f"liveness failed without the broker: {live.stdout}\n{worker.logs()}"
            time.sleep(2)

        private_rabbitmq.start()
        worker.wait_probe("--ready", timeout=120)  # the worker reconnects by itself
    finally:
        containers.remove(worker)


# 4. podman stop with tasks in flight ---------------------------------------------


def test_stopping_the_worker_container_with_tasks_in_flight_loses_nothing(
    containers: Containers, private_rabbitmq: servers.RabbitMQ, backend_url: str
) -> None:
    grace = 10  # terminationGracePeriodSeconds
    task_seconds = 12  # longer than the grace period: only the shutdown timeout saves it
    env = service_env(private_rabbitmq.url, backend_url, WORKER_SHUTDOWN_TIMEOUT="3", WORKER_CONCURRENCY="2")
    client = TaskClient(Settings(broker_url=private_rabbitmq.url, result_backend=backend_url).validated())

    def states(ids: list[str]) -> list[str]:
        return [(view or {}).get("state", "?") for view in client.describe_many(ids).values()]

    first = containers.start("stopped-worker", env=env)
    try:
        first.wait_probe("--ready")
        # Two running (concurrency 2), one waiting in the queue.
        ids = [client.submit("sleep", {"seconds": task_seconds}) for _ in range(3)]
        servers.wait_until(
            lambda: sum(s in ("STARTED", "PROGRESS") for s in states(ids)) == 2, 60, "two tasks in flight"
        )
        elapsed = first.stop(grace)
        log = first.logs(200)
        assert elapsed < grace, f"the worker took {elapsed:.1f} s, past the {grace} s grace period:\n{log}"
        assert first.exit_code() == 0, f"worker exit code {first.exit_code()}:\n{log}"
        assert "SUCCESS" not in states(ids)  # they were cut short, not finished

        second = containers.start("restarted-worker", env=env)
        deadline = time.monotonic() + 3 * task_seconds + 60

        def all_succeeded() -> bool:
            if time.monotonic() > deadline:
                raise TimeoutError(f"tasks ended {states(ids)}; new worker log:\n{second.logs()}")
            return states(ids) == ["SUCCESS"] * len(ids)

        servers.wait_until(all_succeeded, 3 * task_seconds + 90, "every task to succeed after the restart", 0.5)
    finally:
        containers.remove(first)
        client.celery.pool.force_close_all()  # app.close() leaves the producer's connection open
        client.close()


# 5. submit_tasks.py from a throwaway pod ------------------------------------------


@pytest.mark.parametrize(
    ("command", "stdin"),
    [
        pytest.param(["python3", "submit_tasks.py"], None, id="python3-submit_tasks.py"),
        pytest.param(["submit"], None, id="run.sh-submit"),
        # The book's way: kubectl run -it --rm ... -- /bin/sh, then type the command.
        pytest.param(["/bin/sh"], "python3 submit_tasks.py {args}\n", id="shell"),
    ],
)
def test_submit_tasks_in_a_throwaway_container_prints_results(
    stack: Stack, containers: Containers, tmp_path: Path, command: list[str], stdin: str | None
) -> None:
    # The variables as deploy/'s ConfigMap and Secret give them, as env files.
    config, secret = deploy_env(stack.broker_url, stack.backend_url)
    env_files = []
    for name, values in (("configmap.env", config), ("secret.env", secret)):
        (tmp_path / name).write_text("".join(f"{key}={value}\n" for key, value in values.items()))
        env_files.append(tmp_path / name)
    args = ["--count", "3", "--interval", "1", "--timeout", "60"]
    if stdin is None:
        argv, text = [*command, *args], None
    else:
        argv, text = command, stdin.format(args=" ".join(args))

    result = containers.run_once("submit", *argv, env_files=env_files, input=text)

    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout}\n{result.stderr}"
    assert "submitted 3, succeeded 3, failed 0, timed out 0" in result.stdout, result.stdout
    assert result.stdout.count("(SUCCESS in") == 3, result.stdout


# 6. Non-root, read-only root, only /tmp writable ---------------------------------


@pytest.mark.parametrize("role", ["api", "worker"])
def test_containers_run_as_the_non_root_user_with_only_tmp_writable(stack: Stack, role: str) -> None:
    container: Container = getattr(stack, role)
    assert container.inspect()["HostConfig"]["ReadonlyRootfs"] is True
    ids = container.exec("sh", "-c", "id -u; id -g")
    assert ids.stdout.split() == [str(APP_UID), str(APP_UID)], ids
    # The runtime directory (probe files, gunicorn/prometheus scratch) is in /tmp.
    assert container.exec("sh", "-c", "ls /tmp/workqueue").returncode == 0
    assert container.exec("touch", "/tmp/workqueue/written-by-test").returncode == 0
    for path in ("/app/x", "/app/worker/x", "/opt/venv/x", "/x", "/var/tmp/x", "/run/x", "/etc/x"):
        attempt = container.exec("touch", path)
        assert attempt.returncode != 0, f"{path} is writable in the {role} container"
        assert "Read-only file system" in attempt.stderr, attempt.stderr


def test_throwaway_container_runs_as_the_non_root_user(containers: Containers) -> None:
    result = containers.run_once("whoami", "sh", "-c", "id -u; touch /tmp/ok && touch /app/no")
    assert result.stdout.split() == [str(APP_UID)]
    assert result.returncode != 0 and "Read-only file system" in result.stderr


# The load-test image (EXTRAS=loadtest) runs the load-test Job's command -------


def test_load_test_image_runs_the_jobs_locust_command_against_the_api_container(
    podman: Podman, stack: Stack, tmp_path: Path
) -> None:
    image_id, seconds = podman.build("localhost/workqueue-loadtest:test", extras="loadtest")
    print(f"\nbuilt the load-test image ({image_id[:12]}) in {seconds:.1f} s")
    # As the Job runs it: read-only root, non-root, matplotlib's cache in /tmp,
    # the report in a folder that outlives the container (the PVC).
    tmp_path.chmod(0o777)
    loaders = Containers(podman, image_id)
    try:
        result = loaders.run_once(
            "loadtest", "loadtest", "--host", stack.url, "--users", "3", "--spawn-rate", "3", "--duration", "4",
            "--out", "/reports/run",
            env={"MPLCONFIGDIR": "/tmp/matplotlib", "BROKER_URL": stack.broker_url,
                 "RESULT_BACKEND": stack.backend_url, "API_TOKENS": stack.token},
            volumes=[f"{tmp_path}:/reports"], timeout=300,
        )  # fmt: skip
    finally:
        loaders.remove_all()
    assert result.returncode == 0, f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["submitted"] > 0 and summary["completed"] == summary["submitted"]
    assert (tmp_path / "run" / "latency.png").stat().st_size > 5000
