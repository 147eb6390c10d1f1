"""Three private RabbitMQ nodes joined into one cluster, on this machine.

Each node is a ``testing.servers.RabbitMQ`` (own ports, data directory and
process group) sharing one HOME (one Erlang cookie), with distribution on
the loopback interface only and CLI distribution ports of its own; nodes 2
and 3 join node 1 (``stop_app``, ``join_cluster``, ``start_app``).  A node
stopped or SIGKILLed and started again rejoins from its data directory.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess

from testing import servers
from testing.servers import RABBITMQ_SCRIPTS, RabbitMQ, new_server_dir


class Cluster:
    def __init__(self, size: int = 3) -> None:
        self.home = new_server_dir("cluster-home")
        cookie = self.home / ".erlang.cookie"
        cookie.write_text("WORKQUEUETESTCLUSTERCOOKIE")
        cookie.chmod(0o400)  # Erlang refuses a cookie others can read
        self.nodes = [
            RabbitMQ(
                home=self.home,
                extra_env={
                    "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
                    "RABBITMQ_CTL_DIST_PORT_MIN": str(35000 + 100 * number),
                    "RABBITMQ_CTL_DIST_PORT_MAX": str(35000 + 100 * number + 99),
                },
            )
            for number in range(size)
        ]

    @property
    def url(self) -> str:
        """Every node, in kombu's failover form (what RABBITMQ_HOST with several hosts builds)."""
        return ";".join(node.url for node in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        first = self.nodes[0].node
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first)
            node.ctl("start_app")
        assert set(self.running()) == {node.node for node in self.nodes}

    def running(self, asking: RabbitMQ | None = None) -> list[str]:
        """The nodes running, as one of them (the first alive) sees it."""
        node = asking or next(n for n in self.nodes if n.process is not None)
        return list(json.loads(node.ctl("cluster_status", "--formatter", "json"))["running_nodes"])

    def upgrade(self, node: RabbitMQ, command: str) -> subprocess.CompletedProcess:
        """A shell command with the RabbitMQ CLI on PATH, against ``node`` (as a pod's preStop runs it)."""
        env = {**node.env(), "PATH": f"{RABBITMQ_SCRIPTS}:/usr/bin:/bin"}
        return subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=600)

    def destroy(self) -> None:
        for node in self.nodes:
            node.destroy()
        shutil.rmtree(self.home, ignore_errors=True)


def started(size: int = 3) -> contextlib.AbstractContextManager[Cluster]:
    """``Cluster(size)`` started, destroyed when the block ends."""
    return servers.started(Cluster(size))
