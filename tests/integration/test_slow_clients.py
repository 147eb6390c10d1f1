"""Slow and hostile clients cannot stop the API from serving others.

400 real sockets against a real ``run.sh api``: 200 send their request
headers a byte at a time and never finish them, 200 send complete headers
of a ``POST /tasks`` and then trickle its body.  While they all hang,
``GET /healthz`` and ``POST /tasks`` from other clients keep answering
quickly; and each slow connection is cut once ``API_READ_TIMEOUT`` has run
out (for headers since it connected, for a body since its headers
arrived), a body too slow being answered 408 first.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import selectors
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
from prometheus_client.parser import text_string_to_metric_families

from testing.faults import BLOCKED_P99_SECONDS, report
from testing.processes import Api
from testing.servers import wait_until

pytestmark = pytest.mark.integration

SLOW_CLIENTS = 200  # of each kind
READ_TIMEOUT = 6  # API_READ_TIMEOUT of the API under test, seconds
# How late a cut may come past READ_TIMEOUT: gunicorn's timers, plus a
# loaded two-core CI machine.
CUT_SLACK = 2.0
MEASURE_SECONDS = 4.5  # inside READ_TIMEOUT: every slow client still hangs meanwhile
P99_BOUND_MS = BLOCKED_P99_SECONDS * 1000
DRIP_INTERVAL = 0.2  # one byte per slow connection this often
BODY = json.dumps({"task": "add", "args": [2, 3]}).encode()


@dataclass
class SlowConnection:
    sock: socket.socket
    kind: str  # "headers" or "body"
    started: float  # when the server's deadline for it began (connected, or headers sent)
    cut_after: float | None = None  # seconds from ``started`` to the server closing it
    answer: bytes = b""


@dataclass
class SlowClients:
    """Sockets that dribble a byte each ``DRIP_INTERVAL`` until the server cuts them."""

    port: int
    connections: list[SlowConnection] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def open(self, count: int) -> None:
        for _ in range(count):
            self._connect("headers", b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ")
            self._connect(
                "body",
                b"POST /tasks HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n{",
            )

    def _connect(self, kind: str, opening: bytes) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.sendall(opening)
        sock.setblocking(False)
        self.connections.append(SlowConnection(sock, kind, time.monotonic()))

    def open_ones(self) -> list[SlowConnection]:
        return [c for c in self.connections if c.cut_after is None]

    def run(self) -> None:
        """Drip into every open connection; note when the server closes each (a thread)."""
        with selectors.DefaultSelector() as selector:
            for connection in self.connections:
                selector.register(connection.sock, selectors.EVENT_READ, connection)
            next_drip = time.monotonic()
            while not self.stop.is_set() and self.open_ones():
                for key, _ in selector.select(timeout=0.02):
                    connection = key.data
                    if self._read(connection):
                        selector.unregister(connection.sock)
                if time.monotonic() >= next_drip:
                    next_drip += DRIP_INTERVAL
                    for connection in self.open_ones():
                        with contextlib.suppress(OSError):  # closed by the server: the read above notices
                            connection.sock.send(b"a")

    def _read(self, connection: SlowConnection) -> bool:
        """Read what the server sent; True once it closed the connection."""
        try:
            data = connection.sock.recv(65536)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        connection.answer += data
        if data:
            return False
        connection.cut_after = time.monotonic() - connection.started
        return True

    def close(self) -> None:
        self.stop.set()
        for connection in self.connections:
            connection.sock.close()


@contextlib.contextmanager
def slow_clients(port: int, count: int) -> Iterator[SlowClients]:
    clients = SlowClients(port)
    dripper = threading.Thread(target=clients.run, name="slow-clients", daemon=True)
    try:
        clients.open(count)
        dripper.start()
        yield clients
    finally:
        clients.close()
        if dripper.is_alive():
            dripper.join(10)


def timed_request(port: int, method: str, path: str) -> tuple[float, int]:
    """One request on a new connection, as a probe or a new client makes it: (ms, status)."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        if method == "POST":
            connection.request("POST", path, BODY, {"Content-Type": "application/json"})
        else:
            connection.request(method, path)
        response = connection.getresponse()
        response.read()
        if response.status == 503:
            assert int(response.headers["Retry-After"]) > 0
        return (time.perf_counter() - started) * 1000, response.status
    finally:
        connection.close()


def measure(port: int, seconds: float) -> dict[str, list[tuple[float, int]]]:
    """``GET /healthz`` and ``POST /tasks``, alternating, for ``seconds``."""
    samples: dict[str, list[tuple[float, int]]] = {"healthz": [], "post": []}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples["healthz"].append(timed_request(port, "GET", "/healthz"))
        samples["post"].append(timed_request(port, "POST", "/tasks"))
    return samples


def p99(samples: list[tuple[float, int]]) -> float:
    ordered = sorted(ms for ms, _ in samples)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


@pytest.fixture
def api(broker_url, backend_url):
    api = Api(broker_url, backend_url, API_WORKER_CLASS="gevent", API_READ_TIMEOUT=str(READ_TIMEOUT))
    try:
        yield api.start().wait_ready()
    finally:
        api.stop()


def requests_counted(port: int) -> dict[tuple[str, str, str], float]:
    """``workqueue_api_requests_total`` by (route, method, status), merged over gunicorn's workers."""
    text = http_get(port, "/metrics")
    return {
        (sample.labels["route"], sample.labels["method"], sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "workqueue_api_requests"
        for sample in family.samples
        if sample.name == "workqueue_api_requests_total"
    }


def http_get(port: int, path: str) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        return connection.getresponse().read().decode()
    finally:
        connection.close()


def test_slow_clients_neither_stop_others_nor_hang_on_forever(api):
    measure(api.port, 0.3)  # first connections to RabbitMQ and Redis
    before = measure(api.port, 1.0)  # the same requests without slow clients, for the figures
    with slow_clients(api.port, SLOW_CLIENTS) as clients:
        under_attack = measure(api.port, MEASURE_SECONDS)
        still_hanging = len(clients.open_ones())
        deadline = time.monotonic() + READ_TIMEOUT + CUT_SLACK + 1
        while clients.open_ones() and time.monotonic() < deadline:
            time.sleep(0.05)
        cut = {kind: [c for c in clients.connections if c.kind == kind] for kind in ("headers", "body")}

    slowest = {kind: max((c.cut_after or float("inf")) for c in conns) for kind, conns in cut.items()}
    fastest = {kind: min((c.cut_after or float("inf")) for c in conns) for kind, conns in cut.items()}
    answered_408 = sum(c.answer.startswith(b"HTTP/1.1 408") for c in cut["body"])
    report(
        f"[fault figures] slow-clients: slow_connections={len(clients.connections)} "
        f"still_hanging_after_measuring={still_hanging} "
        f"healthz_p99_ms={p99(under_attack['healthz']):.1f} (idle {p99(before['healthz']):.1f}) "
        f"post_p99_ms={p99(under_attack['post']):.1f} (idle {p99(before['post']):.1f}) "
        f"requests={len(under_attack['healthz']) + len(under_attack['post'])} "
        f"read_timeout={READ_TIMEOUT}s headers_cut_after={fastest['headers']:.1f}-{slowest['headers']:.1f}s "
        f"bodies_cut_after={fastest['body']:.1f}-{slowest['body']:.1f}s bodies_answered_408={answered_408}"
    )

    assert still_hanging == len(clients.connections), "every slow client was still hanging while others were served"
    assert {status for _, status in under_attack["healthz"]} == {200}
    assert {status for _, status in under_attack["post"]} == {202}
    assert len(under_attack["post"]) >= 50, "too few requests to speak of a p99"
    assert p99(under_attack["healthz"]) < P99_BOUND_MS
    assert p99(under_attack["post"]) < P99_BOUND_MS
    for kind in ("headers", "body"):
        assert slowest[kind] <= READ_TIMEOUT + CUT_SLACK, f"slow {kind} were not cut in time"
        assert fastest[kind] >= READ_TIMEOUT - 0.5, f"slow {kind} were cut before API_READ_TIMEOUT"
    assert answered_408 == SLOW_CLIENTS, "a body too slow is answered 408 before the cut"
    body_answer = next(c.answer for c in cut["body"])
    assert json.loads(body_answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
    # prometheus-client's multiprocess mode still merges the gevent workers:
    # the 408s are counted like any other answer.
    assert requests_counted(api.port)[("/tasks", "POST", "408")] == SLOW_CLIENTS


STALLED_POSTS = 20
# API_DEPENDENCY_TIMEOUT is 1 s: a connect, a Redis command or a publisher
# confirm gives up after it.  Generous for a loaded CI machine.
DEPENDENCY_BOUND_MS = 5000


def test_a_hung_dependency_holds_only_the_requests_that_need_it(private_rabbitmq, private_redis):
    """gevent: every wait on RabbitMQ or Redis must yield to other requests (monkey-patched sockets).

    Each server in turn is SIGSTOPped (it accepts connections and never
    answers: a hung node, not a refused connection).  Submissions waiting on
    it get 503 + Retry-After within the dependency timeout (or, for a
    publish written on an already open broker connection, 504: its confirm
    never came, the message may still be queued); meanwhile
    ``/healthz`` keeps answering at once, which it could not if one blocking
    call froze the worker process.
    """
    api = Api(private_rabbitmq.url, private_redis.url, API_WORKER_CLASS="gevent", API_WORKERS="1")
    figures = []
    try:
        api.start().wait_ready()
        for name, server in (("redis", private_redis), ("rabbitmq", private_rabbitmq)):
            assert timed_request(api.port, "POST", "/tasks")[1] == 202
            assert server.process is not None
            server.process.freeze()
            try:
                with ThreadPoolExecutor(STALLED_POSTS) as pool:
                    stalled = [pool.submit(timed_request, api.port, "POST", "/tasks") for _ in range(STALLED_POSTS)]
                    time.sleep(0.1)  # the submissions are waiting on the stopped server
                    healthz = measure_healthz(api.port, 0.8)
                    posts = [future.result() for future in stalled]
            finally:
                server.process.signal_group(signal.SIGCONT)
            figures.append(
                f"{name}_stopped: healthz_p99_ms={p99(healthz):.1f} n={len(healthz)} "
                f"posts_503={sum(status == 503 for _, status in posts)}/{STALLED_POSTS} "
                f"slowest_503_ms={max(ms for ms, _ in posts):.0f}"
            )
            statuses = [status for _, status in posts]
            assert set(statuses) <= ({503, 504} if name == "rabbitmq" else {503}), posts
            assert statuses.count(503) >= STALLED_POSTS // 2, posts  # 504s: at most the pooled connections
            assert max(ms for ms, _ in posts) < DEPENDENCY_BOUND_MS
            assert {status for _, status in healthz} == {200}
            assert p99(healthz) < P99_BOUND_MS, f"{name} stopped: /healthz waited on it"
            wait_until(lambda: timed_request(api.port, "POST", "/tasks")[1] == 202, 30, f"{name} back")
    finally:
        report("[fault figures] hung-dependency (gevent): " + " ".join(figures))
        api.stop()


def measure_healthz(port: int, seconds: float) -> list[tuple[float, int]]:
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(timed_request(port, "GET", "/healthz"))
    return samples
