"""`batch`: a hook Job that submits copies of one task, waits for all and fails if any failed.

The CLI itself is tested in tests/integration/test_batch.py; here the
rendered Job's exact container (args, environment, the Job's UID through the
downward API) runs against a private RabbitMQ and Redis and a worker started
from deploy/, and its exit codes are the ones its podFailurePolicy expects.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import helm_python
import pytest

from cli.batch import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from cli.submit_tasks import batch_items, parse_args
from dev import manifests as kube
from dev.manifests import pod_spec, render
from tests.k8s.jobs import JobCluster, cluster_with_a_worker, job_pod_labels
from tests.k8s.test_pod_security import pod_template, restricted_violations
from tests.k8s.test_upgrades import immutable_changes
from workqueue import catalogue

BATCH = {"enabled": True, "task": "pi", "kwargs": {"digits": 100}}


def batch_job(values: dict[str, Any] | None = None) -> dict[str, Any]:
    (job,) = [d.obj for d in render({"batch": {**BATCH, **(values or {})}}) if d.name == "workqueue-batch"]
    return job


def submit_container(job: dict[str, Any]) -> dict[str, Any]:
    (c,) = pod_spec(job)["containers"]
    return c


def test_no_batch_job_by_default() -> None:
    assert [d for d in render() if d.name == "workqueue-batch"] == []


def test_the_job_runs_the_values_batch_with_arguments_the_cli_accepts() -> None:
    job = batch_job({"task": "add", "args": [2], "kwargs": {"y": 3}, "count": 4, "timeout": 120})
    c = submit_container(job)
    assert c["args"][0] == "submit"
    tasks = catalogue.load()
    args = parse_args([a.replace("$(JOB_UID)", "uid-1") for a in c["args"][1:]], list(tasks))
    assert args.batch_mode and not args.no_wait and args.timeout == 120  # waits for every result
    assert args.idempotency_key == "batch:uid-1"
    items = batch_items(args, tasks)
    assert len(items) == 4 and {(i.definition.name, tuple(i.kwargs.items())) for i in items} == {
        ("add", (("x", 2), ("y", 3)))
    }
    (uid,) = [e for e in c["env"] if e["name"] == "JOB_UID"]
    # The Job's UID: the same for every pod of one Job (a retried pod replays), new for each Job (each upgrade).
    assert uid["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/controller-uid']"
    (init,) = pod_spec(job)["initContainers"]
    assert init["args"] == ["wait"]


def test_failed_tasks_and_bad_input_fail_the_job_at_once_and_lost_pods_are_retried() -> None:
    job = batch_job({"backoffLimit": 3})
    assert job["spec"]["backoffLimit"] == 3
    (rule,) = job["spec"]["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["containerName"] == "submit"
    assert rule["onExitCodes"] == {"containerName": "submit", "operator": "In", "values": [EXIT_FAILED, EXIT_BAD_INPUT]}
    assert pod_spec(job)["restartPolicy"] == "Never"  # podFailurePolicy requires it


def test_the_job_is_an_upgrade_safe_hook_and_a_restricted_client_pod() -> None:
    job = batch_job()
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"
    pod = pod_template(job)
    assert restricted_violations(pod) == []
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "client"
    # A changed batch changes the pod template, immutable in a Job: fine for a hook, which Helm recreates.
    before = render({"batch": BATCH})
    after = render({"batch": {"enabled": True, "task": "add", "args": [1, 1], "count": 9}})
    assert immutable_changes(before, after) == []


def test_wrong_task_or_arguments_are_refused_at_render_time_naming_the_value() -> None:
    with pytest.raises(helm_python.HelmValuesError, match="/batch/task"):
        render({"batch": {"enabled": True}})  # no task given
    with pytest.raises(helm_python.HelmValuesError, match="/batch/task"):
        batch_job({"task": "nope"})
    with pytest.raises(helm_python.HelmValuesError, match="/batch/kwargs/digits"):
        batch_job({"kwargs": {"digits": "many"}})


def test_notes_say_where_the_log_is() -> None:
    assert "logs job/workqueue-batch" in kube.notes({"batch": BATCH})


# --- the Job, for real ---------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[JobCluster]:
    with cluster_with_a_worker() as local:
        yield local


def submitted_ids(stdout: str) -> list[str]:
    return re.findall(r"^submitted (\S+) ", stdout, re.M)


@pytest.mark.integration
def test_the_jobs_command_succeeds_when_every_task_does_and_a_retried_pod_replays(cluster: JobCluster) -> None:
    job = batch_job({"task": "add", "args": [2, 3], "kwargs": {}, "count": 3, "timeout": 90})
    cluster.pod_labels = job_pod_labels("workqueue-batch", "0b7e-first-job")
    (init,) = pod_spec(job)["initContainers"]
    waited = cluster.run(init, "batch-wait", timeout=60)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    c = submit_container(job)
    first = cluster.run(c, "batch", timeout=120)
    assert first.returncode == EXIT_OK, first.stdout + first.stderr
    assert "batch: 3 tasks, 3 submitted, 3 succeeded, 0 failed, 0 still pending" in first.stdout
    # The pod retried after a node loss: same Job, same UID, nothing submitted twice.
    again = cluster.run(c, "batch", timeout=120)
    assert again.returncode == EXIT_OK, again.stdout + again.stderr
    assert len(set(submitted_ids(first.stdout))) == 3
    assert submitted_ids(again.stdout) == submitted_ids(first.stdout)
    assert again.stdout.count("(already submitted under its idempotency key)\n") == 3


@pytest.mark.integration
def test_the_jobs_command_fails_with_the_exit_code_that_fails_the_job(cluster: JobCluster) -> None:
    # flaky(failures=10) fails after its 3 retries (1 + 2 + 4 s).
    job = batch_job({"task": "flaky", "args": [10], "kwargs": {}, "count": 1, "timeout": 60})
    cluster.pod_labels = job_pod_labels("workqueue-batch", "0b7e-failing-job")
    done = cluster.run(submit_container(job), "batch-fails", timeout=120)
    assert done.returncode == EXIT_FAILED, done.stdout + done.stderr
    assert "1 succeeded" not in done.stdout and "0 succeeded, 1 failed" in done.stdout
    assert done.returncode in job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"]
