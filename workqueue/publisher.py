"""Publishing task messages: one publisher confirm each, never twice, aware of broker alarms.

Celery's own ``send_task`` retries a failed publish (the same message again:
a duplicate when the first one did land) and, after a confirm timeout,
closes the connection with a handshake that waits forever on a broker that
stopped reading it (a resource alarm).  Here every outcome is told apart:

* ``BrokerBlocked``: RabbitMQ blocks publishers (memory or disk alarm; it
  says so with ``connection.blocked``).  Nothing was written.
* ``NotPublished``: no connection could be made, or the broker refused the
  message (nack).  Nothing is queued.
* ``PublishUnconfirmed``: the message was written but its confirm did not
  come in time (or the connection died after the write).  Its fate is
  unknown: it may still be queued when the broker catches up.

Each publish takes a connection from a pool of idle ones (or opens one), so
concurrent requests (threads or gevent greenlets) never wait for each
other's confirms, and connections are reused.  Before each publish the
connection is read
without blocking: that delivers pending ``connection.blocked``/``unblocked``
frames and finds a connection the broker has closed (idle past the
heartbeat) before anything is written on it.  A connection whose publish
went unconfirmed is never reused nor closed with a handshake; while the
broker blocks publishers it is kept ("parked") only to hear
``connection.unblocked``, which is how the API recovers by itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from amqp.exceptions import MessageNacked
from celery import Celery
from kombu import Connection, Producer, Queue

from workqueue import tracing
from workqueue.celery_app import DEFAULT_QUEUE
from workqueue.settings import Settings

READINESS_ROUTING_KEY = "workqueue.readiness-probe"  # no queue has this name: the broker drops it
# Set on a second publish of a task id whose first publish was never
# confirmed: the worker then checks that the task is not finished already.
REPUBLISHED_HEADER = "workqueue_republished"


class BrokerBlocked(RuntimeError):
    """RabbitMQ blocks publishing (resource alarm); nothing was written."""

    def __init__(self, reason: str) -> None:
        # RabbitMQ's connection.blocked carries no detail py-amqp passes on;
        # its log names the alarm (memory high watermark or disk free limit).
        super().__init__(f"RabbitMQ blocks publishers: a resource alarm (memory or disk) is in effect ({reason})")
        self.reason = reason


class PublishUnconfirmed(RuntimeError):
    """Written, but not confirmed in time: the task may or may not be queued.

    ``TaskClient`` says how to make sure it runs: repeat the request with
    ``idempotency_key``, or repeat the retry of ``retry_of``.
    """

    def __init__(self, task_id: str, cause: BaseException) -> None:
        super().__init__(f"task {task_id}: no publisher confirm ({type(cause).__name__}: {cause})")
        self.task_id = task_id
        self.idempotency_key: str | None = None
        self.retry_of: str | None = None


class NotPublished(RuntimeError):
    """Nothing is queued: no connection, or the broker refused the message."""


class FlowControl:
    """Whether RabbitMQ blocks this process's publishing connections."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.since: float | None = None

    def block(self, reason: str) -> None:
        self.reason = reason or "connection blocked"
        self.since = time.monotonic()

    def unblock(self) -> None:
        self.reason = None
        self.since = None


class Publisher:
    """Publishes Celery task messages with a publisher confirm, on a pool of connections.

    A publish takes an idle connection (or opens one) and gives it back after
    its confirm, so concurrent requests (threads or gevent greenlets) each
    have a connection of their own and reuse them.
    """

    def __init__(
        self,
        celery: Celery,
        errors: tuple[type[BaseException], ...],
        confirm_timeout: float,
        amqp: bool = True,
        settings: Settings | None = None,
        max_connections: int = 16,
    ) -> None:
        self.celery = celery
        self.settings = settings  # only read for tracing (workqueue/tracing.py)
        self.amqp = amqp  # False: the embedded filesystem transport (no confirms, no alarms)
        self.errors = errors
        self.confirm_timeout = confirm_timeout
        self.flow = FlowControl()
        self._lock = threading.Lock()
        # One slot per publish or probe in flight: at most this many connections
        # (beside parked ones), however many requests arrive at once.
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._idle: list[Producer] = []
        self._open: set[Connection] = set()
        self._parked: set[Connection] = set()
        self._transport_options = {
            **(celery.conf.broker_transport_options or {}),
            "on_blocked": self.flow.block,
            "on_unblocked": self.flow.unblock,
        }

    def publish(
        self, name: str, task_id: str, kwargs: dict[str, Any], queue: Queue | None = None, republished: bool = False
    ) -> None:
        """Publish one task message and wait for its confirm (see the module's outcomes).

        ``republished``: this id was published before without a confirm (the
        worker skips the copy if the task finished meanwhile).
        """
        with self._slot():
            self._publish(name, task_id, kwargs, queue, republished)

    def _publish(self, name: str, task_id: str, kwargs: dict[str, Any], queue: Queue | None, republished: bool) -> None:
        producer: Producer | None = self._acquire()
        try:
            self.check_flow()
            amqp = self.celery.amqp
            message = amqp.create_task_message(
                task_id, name, (), kwargs, create_sent_event=self.celery.conf.task_send_sent_event
            )
            # The worker measures queue wait time (submitted -> started) from it.
            headers: dict[str, Any] = {"workqueue_submitted_at": time.time()}
            if republished:
                headers[REPUBLISHED_HEADER] = 1
            span = nullcontext() if self.settings is None else tracing.publish_span(
                self.settings, name, task_id, queue.name if queue is not None else DEFAULT_QUEUE, headers
            )  # fmt: skip
            try:
                with span:  # tracing on: a producer span, its traceparent in the headers
                    amqp.send_task_message(
                        producer,
                        name,
                        message,
                        queue=queue,
                        retry=False,
                        confirm_timeout=self.confirm_timeout,
                        headers=headers,
                    )
            except MessageNacked as exc:
                self._discard(producer)
                producer = None
                raise NotPublished(f"the broker refused task {task_id} (nack)") from exc
            except (*self.errors, TimeoutError) as exc:
                self._discard(producer)
                producer = None
                raise PublishUnconfirmed(task_id, exc) from exc
        finally:
            if producer is not None:
                self._release(producer)

    def check_flow(self) -> None:
        """Raise ``BrokerBlocked`` while the broker blocks publishers; hear it unblock."""
        if self.flow.reason is None:
            return
        with self._lock:
            parked = list(self._parked)
        for connection in parked:
            try:
                connection.drain_events(timeout=0)  # connection.unblocked arrives here
            except TimeoutError:
                pass
            except self.errors:
                self._drop(connection)
        if not parked:
            # Nothing left to hear "unblocked" on: the next publish finds out again.
            self.flow.unblock()
        if self.flow.reason is not None:
            raise BrokerBlocked(self.flow.reason)
        with self._lock:
            unparked, self._parked = self._parked, set()
        for connection in unparked:
            self._drop(connection)

    def probe(self) -> None:
        """Publish an unroutable message (the broker drops it) to see publishing work.

        This is how ``/readyz`` notices a resource alarm before any task is
        submitted: RabbitMQ only blocks a connection once it publishes.
        """
        with self._slot():
            self._probe()

    def _probe(self) -> None:
        producer: Producer | None = self._acquire()
        try:
            self.check_flow()
            if not self.amqp:
                return  # kombu's filesystem transport would keep the unroutable message
            try:
                producer.publish(b"", routing_key=READINESS_ROUTING_KEY, retry=False, timeout=self.confirm_timeout)
            except (*self.errors, TimeoutError, MessageNacked) as exc:
                self._discard(producer)
                producer = None
                self.check_flow()
                raise NotPublished(f"readiness probe not confirmed: {type(exc).__name__}") from exc
        finally:
            if producer is not None:
                self._release(producer)

    def close(self) -> None:
        with self._lock:
            connections, self._open, self._parked, self._idle = self._open | self._parked, set(), set(), []
        for connection in connections:
            connection.collect()  # no close handshake: a blocked broker would never answer it

    @contextmanager
    def _slot(self) -> Iterator[None]:
        if not self._slots.acquire(timeout=self.confirm_timeout):
            raise NotPublished(f"all {self.max_connections} publishing connections stayed busy")
        try:
            yield
        finally:
            self._slots.release()

    def _acquire(self) -> Producer:
        """An idle producer whose connection is still good, or a new one."""
        while True:
            with self._lock:
                producer = self._idle.pop() if self._idle else None
            if producer is None:
                return self._connect()
            try:
                producer.connection.drain_events(timeout=0)
                return producer  # something was pending (a heartbeat): read, and still good
            except TimeoutError:
                return producer  # nothing pending: the usual case
            except self.errors:
                self._drop(producer.connection)  # closed by the broker; nothing was written on it

    def _connect(self) -> Producer:
        connection = self.celery.connection_for_write(transport_options=self._transport_options)
        try:
            # Two quick attempts (no 2 s back-off): an HTTP request is waiting.
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=self.confirm_timeout)
            connection.default_channel  # noqa: B018 - opened now, inside the error handling
            # Given the connection itself, the producer keeps it (``producer.connection``)
            # even after the broker closed its channel, so it can be dropped cleanly then.
            producer = Producer(connection, auto_declare=False)
        except self.errors as exc:
            connection.collect()
            raise NotPublished(f"cannot connect to the broker: {type(exc).__name__}: {exc}") from exc
        with self._lock:
            self._open.add(connection)
        return producer

    def _release(self, producer: Producer) -> None:
        with self._lock:
            if producer.connection in self._open:
                self._idle.append(producer)

    def _discard(self, producer: Producer) -> None:
        """Never reuse a connection whose publish failed; park it while the broker blocks."""
        connection = producer.connection
        with self._lock:
            self._open.discard(connection)
            if self.flow.reason is not None:
                self._parked.add(connection)
                return
        connection.collect()

    def _drop(self, connection: Connection) -> None:
        with self._lock:
            self._open.discard(connection)
            self._parked.discard(connection)
        connection.collect()
