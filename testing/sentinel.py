"""A Redis master, a replica and three sentinels on this machine (what ``REDIS_SENTINELS`` points at).

Each is a private ``redis-server`` (own port, directory and process group,
cleaned up like every server of ``testing/servers.py``); the sentinels run
``redis-server <conf> --sentinel`` with a configuration written per run
(sentinels rewrite theirs).  A SIGKILLed master is replaced within a few
seconds (down after 1 s, failover timeout 5 s).
"""

from __future__ import annotations

import contextlib
import shutil

import redis

from testing import servers
from testing.servers import Process, Redis, free_port, new_server_dir, wait_until

MASTER_NAME = "mymaster"


class Sentinels:
    """The set: ``start()``, then ``sentinels`` (REDIS_SENTINELS) and ``master_address()``."""

    def __init__(self, count: int = 3) -> None:
        # No 5 s wait before the replica's first sync (Redis' default, to batch replicas).
        self.master = Redis(extra_args=["--repl-diskless-sync-delay", "0"])
        self.replica: Redis | None = None
        self.dir = new_server_dir("sentinels")
        self.ports = [free_port() for _ in range(count)]
        self.processes: list[Process] = []

    @property
    def sentinels(self) -> str:
        """``REDIS_SENTINELS``: host:port of each sentinel."""
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self, timeout: float = 30.0) -> None:
        self.master.start()
        self.replica = Redis(extra_args=["--replicaof", "127.0.0.1", str(self.master.port)])
        self.replica.start()
        for port in self.ports:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                f"sentinel failover-timeout {MASTER_NAME} 5000\n"
            )
            argv = [shutil.which("redis-server") or "redis-server", str(conf), "--sentinel"]
            self.processes.append(Process(argv, {}, self.dir / f"sentinel-{port}.log"))
        wait_until(self._settled, timeout, "the sentinels to see the master, its replica and each other", 0.2)

    def _settled(self) -> bool:
        try:
            assert self.replica is not None
            if self.replica.client().info("replication").get("master_link_status") != "up":
                return False  # its first sync is not done: a failover now would lose everything
            for port in self.ports:
                sentinel = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
                master = sentinel.sentinel_master(MASTER_NAME)
                if int(master["num-slaves"]) < 1 or int(master["num-other-sentinels"]) < len(self.ports) - 1:
                    return False
            return True
        except redis.RedisError:
            return False

    def master_address(self) -> tuple[str, int]:
        """What the sentinels say the master is now."""
        for port in self.ports:
            with contextlib.suppress(redis.RedisError):
                sentinel = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
                host, master_port = sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)
                return str(host), int(master_port)
        raise RuntimeError("no sentinel answered")

    def servers(self) -> list[Redis]:
        return [self.master, *([self.replica] if self.replica else [])]

    def destroy(self) -> None:
        for process in self.processes:
            process.kill()
        for server in self.servers():
            server.destroy()
        shutil.rmtree(self.dir, ignore_errors=True)


def started(count: int = 3) -> contextlib.AbstractContextManager[Sentinels]:
    """``Sentinels(count)`` started, destroyed when the block ends."""
    return servers.started(Sentinels(count))
