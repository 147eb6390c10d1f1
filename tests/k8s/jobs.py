"""Running the chart's Job and CronJob containers locally, with the labels the Job controller gives their pods.

``tests/k8s/local.py``'s ``Cluster`` runs a container's exact args and
environment against private servers; the schedule and batch pods also read
labels of their own pod through the downward API (``JOB_NAME``, ``JOB_UID``),
which the Job controller sets (``batch.kubernetes.io/job-name``,
``batch.kubernetes.io/controller-uid``). ``JobCluster`` fills them from
``pod_labels``, as the kubelet would.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from dev.manifests import pod_spec
from testing.servers import RabbitMQ, Redis, started
from tests.k8s.local import Cluster, for_deploy

_LABEL_FIELD = re.compile(r"metadata\.labels\['([^']+)'\]")


class JobCluster(Cluster):
    pod_labels: dict[str, str]

    def env(self, c: dict[str, Any], runtime: str) -> dict[str, str]:
        from_labels = [e for e in c.get("env", []) if "fieldRef" in e.get("valueFrom", {})]
        plain = {**c, "env": [e for e in c.get("env", []) if e not in from_labels]}
        env = super().env(plain, runtime)
        for entry in from_labels:
            match = _LABEL_FIELD.fullmatch(entry["valueFrom"]["fieldRef"]["fieldPath"])
            assert match, entry  # only pod labels are read this way
            env[entry["name"]] = self.pod_labels[match[1]]
        return env

    def use_config(self, data: dict[str, str]) -> None:
        """A rendered ConfigMap's settings (e.g. TASK_ROUTES), the servers staying where they are here."""
        here = {key: self.config[key] for key in ("RABBITMQ_HOST", "RABBITMQ_PORT", "REDIS_HOST", "REDIS_PORT")}
        self.config = {**data, **here}


def job_pod_labels(job_name: str, uid: str) -> dict[str, str]:
    """The labels the Job controller (Kubernetes >= 1.27) puts on a Job's pods."""
    return {
        "batch.kubernetes.io/job-name": job_name,
        "job-name": job_name,
        "batch.kubernetes.io/controller-uid": uid,
        "controller-uid": uid,
    }


@contextlib.contextmanager
def cluster_with_a_worker() -> Iterator[JobCluster]:
    """Private servers and the worker Deployment of deploy/ (init step, then container), as test_manifests runs it."""
    with started(RabbitMQ()) as rabbitmq, started(Redis()) as redis_server:
        local = for_deploy(rabbitmq, redis_server, JobCluster)
        try:
            (init,) = pod_spec(local.objects[("Deployment", "workqueue-worker")])["initContainers"]
            assert local.run(init, "worker", timeout=60).returncode == 0
            local.start(local.container("Deployment", "workqueue-worker", "worker"), "worker")
            yield local
        finally:
            local.stop()
