"""Private RabbitMQ and Redis servers for the tests.

Each server gets its own free port, data directory and process group, so
fault tests can stop, restart and SIGSTOP it without touching anything
else on the machine.  Every process started here is recorded in
``Process.registry`` and killed by ``kill_all`` (pytest's session
teardown and ``atexit``); a run that died hard leaves an ``owner`` file
that the next run uses to kill its leftovers (``reap_leftovers``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from testing.certs import Certificates
from workqueue.processes import process_alive

BASE_DIR = Path(tempfile.gettempdir()) / "workqueue-test-servers"
RABBITMQ_SCRIPTS = Path("/usr/lib/rabbitmq/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


class Process:
    """A child process in its own process group, killed with its children."""

    registry: list[Process] = []

    def __init__(self, argv: Sequence[str], env: dict[str, str], log_path: Path, cwd: str | None = None) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # closed in wait()/kill()
        self.popen = subprocess.Popen(
            self.argv, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.pid = self.popen.pid
        Process.registry.append(self)
        _record_owner(log_path.parent, self.pid)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def freeze(self, timeout: float = 10.0) -> None:
        """SIGSTOP the whole group, and return once every process of it is stopped.

        ``killpg`` returns before the kernel has stopped each thread of a busy
        process: a test that acts at once may still be answered by it (a
        publish confirmed by a broker meant to be frozen).
        """
        self.signal_group(signal.SIGSTOP)
        wait_until(lambda: all(_state(member) in ("T", "t", "Z", None) for member in group_members(self.pid)),
                   timeout, f"process group {self.pid} to stop")  # fmt: skip

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        finally:
            if self.popen.returncode is not None:
                self._finish()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL of the whole group if it does not exit in time."""
        if self.alive():
            self.signal_group(signal.SIGCONT)  # a SIGSTOPped process cannot handle SIGTERM
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        self.kill()
        return self.popen.returncode

    def kill(self) -> None:
        self.signal_group(signal.SIGCONT)
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        self._finish()

    def _finish(self) -> None:
        if self in Process.registry:
            Process.registry.remove(self)
        self._log.close()

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s child processes (of its main thread), from the kernel."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def group_members(pgid: int) -> list[Path]:
    """``/proc/<pid>`` of every live process of process group ``pgid`` (each ``Process`` leads its own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry.name)) == pgid:
                    found.append(entry)
    return found


def _state(proc: Path) -> str | None:
    """The state letter of ``/proc/<pid>`` (T: stopped), or None once it is gone."""
    try:
        return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def command_lines(pgid: int) -> dict[int, str]:
    """The command line of every live process of process group ``pgid``, by pid."""
    lines = {}
    for entry in group_members(pgid):
        with contextlib.suppress(OSError):
            lines[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return lines


def kill_all() -> None:
    for process in list(Process.registry):
        process.kill()


def _record_owner(directory: Path, pid: int) -> None:
    """Note which test run owns ``pid`` so a later run can reap it."""
    with open(directory / "pids", "a", encoding="ascii") as handle:
        handle.write(f"{pid}\n")
    owner = directory / "owner"
    if not owner.exists():
        owner.write_text(str(os.getpid()))


def reap_leftovers() -> None:
    """Kill servers left by earlier test runs that died without cleaning up."""
    if not BASE_DIR.exists():
        return
    for directory in BASE_DIR.iterdir():
        owner_file = directory / "owner"
        try:
            owner = int(owner_file.read_text())
        except (OSError, ValueError):
            owner = 0
        if owner and process_alive(owner):
            continue  # another live test run (e.g. a parallel session)
        pids_file = directory / "pids"
        if pids_file.exists():
            for line in pids_file.read_text().split():
                with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                    os.killpg(int(line), signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)


class Startable(Protocol):
    def start(self) -> object: ...

    def destroy(self) -> None: ...


S = TypeVar("S", bound=Startable)


@contextlib.contextmanager
def started(server: S) -> Iterator[S]:
    """Start ``server`` (a node, a cluster, a set of sentinels); stop it and delete its data when the block ends."""
    try:
        server.start()
        yield server
    finally:
        server.destroy()


def new_server_dir(name: str) -> Path:
    """A directory of this run's own; its owner is recorded at once, so a parallel run never reaps it."""
    BASE_DIR.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=BASE_DIR))
    (directory / "owner").write_text(str(os.getpid()))
    return directory


class RabbitMQ:
    """A private RabbitMQ node; ``stop()``/``start()`` keep its data (the PVC case)."""

    vhost = "/"  # the one its URL names

    def __init__(
        self,
        consumer_timeout_ms: int = 1_800_000,
        tls: Certificates | None = None,
        home: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.dir = new_server_dir("rabbitmq")
        self.home = home or self.dir / "home"  # nodes of one cluster share it: one Erlang cookie
        self.extra_env = extra_env or {}
        self.port = free_port()
        self.node = f"wqtest{self.port}@localhost"
        self.consumer_timeout_ms = consumer_timeout_ms
        self.tls = tls
        self.home.mkdir(exist_ok=True)
        (self.dir / "enabled_plugins").write_text("[].\n")
        config = f"consumer_timeout = {consumer_timeout_ms}\ndisk_free_limit.absolute = 50MB\nlog.console = false\n"
        if tls is not None:
            # TLS only: the plain listener is off, clients must verify us and may present a certificate.
            self.tls_port = free_port()
            config += (
                f"listeners.tcp = none\nlisteners.ssl.default = 127.0.0.1:{self.tls_port}\n"
                f"ssl_options.cacertfile = {tls.ca}\nssl_options.certfile = {tls.server_cert}\n"
                f"ssl_options.keyfile = {tls.server_key}\nssl_options.verify = verify_peer\n"
                "ssl_options.fail_if_no_peer_cert = false\n"
            )
        (self.dir / "rabbitmq.conf").write_text(config)
        self.process: Process | None = None

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"amqps://guest:guest@localhost:{self.tls_port}//"
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def env(self) -> dict[str, str]:
        d = self.dir
        return {
            **os.environ,
            "HOME": str(self.home),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.port + 20000 if self.port < 45000 else self.port - 20000),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq"),
            "RABBITMQ_PID_FILE": str(d / "pid"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            # The node's and the CLI's crash dumps stay with the node (Erlang's default is the cwd: the repo).
            "ERL_CRASH_DUMP": str(d / "erl_crash.dump"),
            **self.extra_env,
        }

    def start(self, timeout: float = 90.0) -> None:
        argv = [str(RABBITMQ_SCRIPTS / "rabbitmq-server")]
        self.process = Process(argv, self.env(), self.dir / "server.log")
        try:
            wait_until(self.accepting, timeout, f"RabbitMQ on port {self.port}", interval=0.2)
        except TimeoutError:
            tail = self.process.log_tail()
            self.stop()
            raise TimeoutError(f"RabbitMQ did not start; log tail:\n{tail}") from None

    def accepting(self) -> bool:
        """An AMQP handshake succeeds (the TCP port alone opens before boot ends)."""
        from kombu import Connection

        if self.process is None or not self.process.alive():
            raise RuntimeError(f"RabbitMQ exited; log tail:\n{self.process.log_tail() if self.process else ''}")
        ssl_options = {"ca_certs": str(self.tls.ca), "cert_reqs": 2} if self.tls is not None else False  # CERT_REQUIRED
        try:
            with Connection(self.url, connect_timeout=1, ssl=ssl_options) as connection:
                connection.connect()
            return True
        except Exception:  # any failure means "not yet"
            return False

    def stop(self) -> None:
        """Graceful stop (SIGTERM), as Kubernetes stops the broker pod."""
        if self.process is not None:
            self.process.stop(timeout=60)
            self.process = None

    def ctl(self, *args: str, stdin: str | None = None) -> str:
        """rabbitmqctl against this node; ``stdin`` keeps a secret (add_user's password) out of its arguments."""
        argv = [str(RABBITMQ_SCRIPTS / "rabbitmqctl"), "-n", self.node, *args]
        return subprocess.run(
            argv, env=self.env(), input=stdin, capture_output=True, text=True, check=True, timeout=60
        ).stdout

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class VirtualHost:
    """An empty virtual host of a test's own on a running node, deleted with its queues afterwards.

    As isolated as a node of its own (queues, exchanges, the broadcast
    revokes of its workers) for a test that does not stop, freeze or alarm
    the node, or count its connections; it costs two ``rabbitmqctl`` calls
    (~0.7 s) where booting a node costs 6-9 s.
    """

    def __init__(self, node: RabbitMQ, vhost: str) -> None:
        self.node = node
        self.vhost = vhost

    @property
    def url(self) -> str:
        return f"{self.node.url.rstrip('/')}/{self.vhost}"

    def start(self) -> None:
        self.node.ctl("add_vhost", self.vhost)
        self.node.ctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")

    def ctl(self, *args: str) -> str:
        """rabbitmqctl against the node (``-p <vhost>`` selects this host's objects)."""
        return self.node.ctl(*args)

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):  # the node may have gone with the session
            self.node.ctl("delete_vhost", self.vhost)


class Redis:
    """A private Redis server (no persistence unless asked)."""

    def __init__(
        self, appendonly: bool = False, tls: Certificates | None = None, extra_args: Sequence[str] = ()
    ) -> None:
        self.dir = new_server_dir("redis")
        self.port = free_port()
        self.appendonly = appendonly
        self.tls = tls
        self.extra_args = list(extra_args)  # e.g. --replicaof 127.0.0.1 <port>
        self.process: Process | None = None

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"rediss://localhost:{self.port}/0"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> None:
        listener = ["--port", str(self.port)]
        if self.tls is not None:  # TLS only, a certificate naming localhost alone; a client certificate is optional
            listener = [
                "--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls.localhost_only_cert),
                "--tls-key-file", str(self.tls.localhost_only_key), "--tls-ca-cert-file", str(self.tls.ca),
                "--tls-auth-clients", "optional",
            ]  # fmt: skip
        argv = [
            shutil.which("redis-server") or "redis-server",
            *listener, "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--dir", str(self.dir), "--daemonize", "no", *self.extra_args,
        ]  # fmt: skip
        self.process = Process(argv, dict(os.environ), self.dir / "server.log")
        wait_until(self.accepting, timeout, f"Redis on port {self.port}")

    def client(self) -> Any:
        """A redis-py client of this server (over TLS when it speaks only that)."""
        import redis

        if self.tls is not None:
            return redis.Redis(
                host="localhost", port=self.port, ssl=True, ssl_ca_certs=str(self.tls.ca), socket_connect_timeout=0.5
            )
        return redis.Redis(port=self.port, socket_connect_timeout=0.5)

    def accepting(self) -> bool:
        import redis

        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=20)
            self.process = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
