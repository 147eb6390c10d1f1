"""`schedules`: one CronJob per entry, checked against the catalogue at render time, and its run really submits once.

The first part reads the rendered CronJob; the second checks that the
catalogue-derived part of values.schema.json is up to date and refuses what
the CLI would refuse; the last runs the CronJob's exact container (args,
environment, the Job's labels through the downward API) against a private
RabbitMQ and Redis and a worker started from deploy/.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import helm_python
import jsonschema
import pytest

from cli.batch import EXIT_OK
from cli.submit_tasks import batch_items, parse_args
from dev import catalogue_schema
from dev import manifests as kube
from dev.manifests import pod_spec, render
from tests.k8s.jobs import JobCluster, cluster_with_a_worker, job_pod_labels
from tests.k8s.test_pod_security import pod_template, restricted_violations
from workqueue import catalogue
from workqueue.catalogue import ValidationFailed
from workqueue.client import TaskClient
from workqueue.settings import Settings

SCHEDULES = {
    "every-minute": {"schedule": "* * * * *", "task": "mul", "args": [6], "kwargs": {"y": 7}},
    "nightly": {
        "schedule": "30 2 * * 1-5",
        "timeZone": "Europe/Paris",
        "task": "sleep",
        "kwargs": {"seconds": 1},
        "suspend": True,
        "wait": True,
        "timeout": 900,
        "startingDeadlineSeconds": 60,
        "successfulJobsHistoryLimit": 1,
        "failedJobsHistoryLimit": 5,
        "backoffLimit": 0,
    },
}


@pytest.fixture(scope="module")
def cronjobs() -> dict[str, dict[str, Any]]:
    docs = render({"schedules": SCHEDULES})
    return {doc.name: doc.obj for doc in docs if doc.kind == "CronJob"}


def submit_container(cronjob: dict[str, Any]) -> dict[str, Any]:
    (c,) = pod_spec(cronjob)["containers"]
    return c


def cli_args(c: dict[str, Any], job_name: str) -> list[str]:
    """The args run.sh hands to submit_tasks.py, after the kubelet expanded $(JOB_NAME)."""
    assert c["args"][0] == "submit"
    return [arg.replace("$(JOB_NAME)", job_name) for arg in c["args"][1:]]


# --- the CronJobs ---------------------------------------------------------------


def test_one_cronjob_per_schedule_named_after_it(cronjobs: dict[str, dict[str, Any]]) -> None:
    assert set(cronjobs) == {"workqueue-schedule-every-minute", "workqueue-schedule-nightly"}
    assert [doc for doc in render() if doc.kind == "CronJob"] == []  # none by default


def test_schedule_timing_and_history_come_from_the_values(cronjobs: dict[str, dict[str, Any]]) -> None:
    minute, nightly = cronjobs["workqueue-schedule-every-minute"], cronjobs["workqueue-schedule-nightly"]
    assert minute["spec"]["schedule"] == "* * * * *" and "timeZone" not in minute["spec"]
    assert minute["spec"]["suspend"] is False
    assert (minute["spec"]["successfulJobsHistoryLimit"], minute["spec"]["failedJobsHistoryLimit"]) == (3, 3)
    assert minute["spec"]["startingDeadlineSeconds"] == 300
    assert nightly["spec"]["timeZone"] == "Europe/Paris" and nightly["spec"]["suspend"] is True
    assert nightly["spec"]["startingDeadlineSeconds"] == 60
    assert (nightly["spec"]["successfulJobsHistoryLimit"], nightly["spec"]["failedJobsHistoryLimit"]) == (1, 5)
    assert nightly["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 0  # 0 is kept, not defaulted
    for cronjob in cronjobs.values():
        # A run still going when the next is due makes that one skip: never two at once.
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
        job, args = cronjob["spec"]["jobTemplate"]["spec"], submit_container(cronjob)["args"]
        # The pod is ended soon after the run's own --timeout, never before it.
        assert job["activeDeadlineSeconds"] > int(args[args.index("--timeout") + 1])
        assert pod_spec(cronjob)["restartPolicy"] == "Never"


def test_a_run_submits_its_task_once_per_slot_with_arguments_the_cli_accepts(
    cronjobs: dict[str, dict[str, Any]],
) -> None:
    tasks = catalogue.load()
    c = submit_container(cronjobs["workqueue-schedule-every-minute"])
    args = parse_args(cli_args(c, "workqueue-schedule-every-minute-29000000"), list(tasks))
    assert args.batch_mode and args.task == ["mul"] and args.count == 0  # one task
    assert args.no_wait  # the default: exit once the broker confirmed it
    assert args.idempotency_key == "schedule:every-minute:workqueue-schedule-every-minute-29000000"
    (item,) = batch_items(args, tasks)
    assert (item.definition.name, item.kwargs) == ("mul", {"x": 6, "y": 7})
    nightly = parse_args(cli_args(submit_container(cronjobs["workqueue-schedule-nightly"]), "n-1"), list(tasks))
    assert not nightly.no_wait and nightly.timeout == 900  # wait: true waits for the result


def test_the_job_name_comes_from_the_pods_own_label(cronjobs: dict[str, dict[str, Any]]) -> None:
    c = submit_container(cronjobs["workqueue-schedule-every-minute"])
    (job_name,) = [e for e in c["env"] if e["name"] == "JOB_NAME"]
    # Set by the Job controller on every pod of a Job; the CronJob names its Jobs <cronjob>-<minutes since epoch>.
    assert job_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}
    assert "--idempotency-key" in c["args"] and "schedule:every-minute:$(JOB_NAME)" in c["args"]


def test_schedule_pods_are_restricted_clients_with_the_two_passwords_only(
    cronjobs: dict[str, dict[str, Any]],
) -> None:
    for cronjob in cronjobs.values():
        pod = pod_template(cronjob)
        assert restricted_violations(pod) == []
        # The client label is what the broker's and Redis' NetworkPolicies admit.
        assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "client"
        c = submit_container(cronjob)
        secrets = [e["valueFrom"]["secretKeyRef"]["key"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})]
        assert secrets == ["RABBITMQ_PASSWORD", "REDIS_PASSWORD"]
        assert c["envFrom"] == [{"configMapRef": {"name": "workqueue-config"}}]
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
        assert pod["spec"]["automountServiceAccountToken"] is False


def test_arguments_keep_a_literal_dollar_paren_from_the_kubelet() -> None:
    """The kubelet expands $(VAR) in args; a task argument that contains it is escaped as $$(."""
    values = {"schedules": {"s": {"schedule": "@daily", "task": "dump_context", "args": [1, "$(HOME)"]}}}
    (cronjob,) = [doc.obj for doc in render(values) if doc.kind == "CronJob"]
    args = submit_container(cronjob)["args"]
    assert args[args.index("--args") + 1] == '[1,"$$(HOME)"]'


def test_a_sample_schedule_ships_in_deploy_optional() -> None:
    files = kube.deploy_files()
    (path,) = [p for p in files if p.name.endswith("-cronjob.yaml")]
    assert path.parent.name == "optional"
    assert 'schedule: "0 3 * * *"' in files[path] and "--no-wait" in files[path]


def test_notes_list_the_schedules() -> None:
    notes = kube.notes({"schedules": SCHEDULES})
    assert 'workqueue-schedule-every-minute: mul at "* * * * *"' in notes
    assert 'workqueue-schedule-nightly: sleep at "30 2 * * 1-5" (Europe/Paris), suspended' in notes
    assert "create job --from=cronjob/" in notes


# --- render-time checks against the catalogue ----------------------------------------


def test_the_committed_schema_has_the_catalogue_as_generated_now() -> None:
    committed = json.loads((kube.CHART / "values.schema.json").read_text())
    assert catalogue_schema.apply(copy.deepcopy(committed)) == committed, "run `python -m dev.values_docs`"
    assert committed["definitions"]["taskCall"]["properties"]["task"]["enum"] == sorted(catalogue.load())


# (task, args, kwargs): the schema must accept exactly what TaskDefinition.bind accepts.
CALLS = [
    ("add", [1, 2], {}),
    ("add", [1], {"y": 2}),
    ("add", [], {"x": 1, "y": 2.5}),
    ("add", [1], {}),  # y missing
    ("add", [1, 2, 3], {}),  # one too many
    ("add", [1, 2], {"x": 1}),  # x twice
    ("add", ["1", 2], {}),  # not a number
    ("add", [], {"x": 1, "y": 2, "z": 3}),  # no such argument
    ("xsum", [[1, 2, 3]], {}),
    ("xsum", [], {"numbers": "123"}),
    ("pi", [], {"digits": 10}),
    ("pi", [], {"digits": -1}),
    ("pi", [], {"digits": 1.5}),
    ("sleep", [0.5], {}),
    ("dump_context", ["a", 1], {}),
    ("dump_context", [{"a": 1}, 1], {}),
    ("flaky", [], {}),
]


@pytest.mark.parametrize("task, args, kwargs", CALLS)
def test_the_schema_accepts_exactly_what_the_cli_accepts(task: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    schema = json.loads((kube.CHART / "values.schema.json").read_text())
    validator = jsonschema.Draft7Validator({"$ref": "#/definitions/taskCall", "definitions": schema["definitions"]})
    schema_ok = validator.is_valid({"task": task, "args": args, "kwargs": kwargs})
    try:
        catalogue.load()[task].bind(args, kwargs)
        cli_ok = True
    except ValidationFailed:
        cli_ok = False
    assert schema_ok == cli_ok


@pytest.mark.parametrize(
    "schedule, message",
    [
        ({"schedule": "@daily", "task": "nope"}, "/schedules/s/task"),
        ({"schedule": "@daily", "task": "pi", "kwargs": {"digits": "ten"}}, "/schedules/s/kwargs/digits"),
        ({"schedule": "@daily", "task": "add", "args": [1, 2, 3]}, "/schedules/s/args"),
        ({"schedule": "@daily", "task": "add", "args": [1]}, "/schedules/s"),
        ({"schedule": "0 3 * *", "task": "add", "args": [1, 2]}, "/schedules/s/schedule"),
        ({"schedule": "every day", "task": "add", "args": [1, 2]}, "/schedules/s/schedule"),
        ({"schedule": "TZ=UTC 0 3 * * *", "task": "add", "args": [1, 2]}, "/schedules/s/schedule"),
        ({"schedule": "@daily", "task": "add", "args": [1, 2], "timeZone": "Paris time"}, "/schedules/s/timeZone"),
        ({"schedule": "@daily", "task": "add", "args": [1, 2], "retries": 3}, "'retries' not allowed"),
        ({"task": "add", "args": [1, 2]}, "missing property 'schedule'"),
    ],
)
def test_render_refuses_a_wrong_schedule_naming_it(schedule: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(message)):
        render({"schedules": {"s": schedule}})


def test_render_refuses_a_name_too_long_for_the_jobs_of_its_cronjob() -> None:
    name = "x" * 34  # workqueue-schedule-<34> is 53 characters; Jobs add 11 to the 63 of a label value
    with pytest.raises(helm_python.HelmRenderError, match=re.escape(f"schedules.{name}: the CronJob name")):
        render({"schedules": {name: {"schedule": "@daily", "task": "add", "args": [1, 2]}}})
    assert render({"schedules": {name[:-1]: {"schedule": "@daily", "task": "add", "args": [1, 2]}}})


# --- the run, for real ------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[JobCluster]:
    with cluster_with_a_worker() as local:
        yield local


def submitted_id(stdout: str) -> str:
    return re.search(r"^submitted (\S+) mul\(x=6, y=7\)", stdout, re.M)[1]  # type: ignore[index]


def _client(cluster: JobCluster, c: dict[str, Any]) -> TaskClient:
    return TaskClient(Settings.from_env(cluster.env(c, "reader")))


@pytest.mark.integration
def test_a_slot_run_twice_submits_one_task_and_the_next_slot_another(cluster: JobCluster) -> None:
    (cronjob,) = [
        d.obj for d in render({"schedules": {"every-minute": SCHEDULES["every-minute"]}}) if d.kind == "CronJob"
    ]
    c = submit_container(cronjob)
    slot = "workqueue-schedule-every-minute-29000000"
    runs = []
    for uid in ("pod-of-first-job", "pod-of-the-same-slot-again"):
        cluster.pod_labels = job_pod_labels(slot, uid)
        runs.append(cluster.run(c, "schedule", timeout=120))
    for run in runs:
        assert run.returncode == EXIT_OK, run.stdout + run.stderr
        assert "(queued; not waited for)" in run.stdout
    ids = [submitted_id(run.stdout) for run in runs]
    assert ids[0] == ids[1] and "already submitted under its idempotency key" in runs[1].stdout
    cluster.pod_labels = job_pod_labels("workqueue-schedule-every-minute-29000001", "next-slot")
    later = cluster.run(c, "schedule", timeout=120)
    assert later.returncode == EXIT_OK, later.stdout + later.stderr
    client = _client(cluster, c)
    try:
        listed, _ = client.list_tasks(task="mul")
        assert {view["id"] for view in listed} == {ids[0], submitted_id(later.stdout)}  # two slots, two tasks
        # The worker ran it: not waited for by the run, the result is in the store all the same.
        assert client.wait(ids[0], 60)["result"] == 42  # type: ignore[index]
    finally:
        client.close()
