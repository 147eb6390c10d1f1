"""Celery application factory.

``create_celery(settings, role=...)`` builds a configured app; nothing is
created at import time.  The factory knows nothing of the worker process:
``worker/main.py`` adds the tasks and the probe, shutdown and metrics
bootsteps to the app it builds with it.  The *worker* role retries the broker and the result store
patiently; the *client* role (the API, ``submit_tasks.py``) gives up within
``api_dependency_timeout`` so an HTTP request is answered 503 instead of
hanging.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from celery import Celery
from kombu import Queue

from workqueue import embedded_broker, result_store, tls
from workqueue.settings import REDIS_COMMAND_CONNECTIONS, Settings

Role = Literal["worker", "client"]
DEFAULT_QUEUE = "celery"


def celery_config(settings: Settings, role: Role) -> dict[str, Any]:
    """Celery configuration for ``settings`` (ARCHITECTURE.md, "Reliability")."""
    client = role == "client"
    timeout = settings.api_dependency_timeout
    config: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        # JSON only: pickle in a message is remote code execution.
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # At-least-once: ack after the task ran, and give the message back
        # when the process running it dies (celery/celery#1628).
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_default_queue": DEFAULT_QUEUE,
        # A worker declares and consumes its own queues (WORKER_QUEUES); a
        # client publishes to each task's queue, declared as it goes.
        "task_queues": [make_queue(settings, name) for name in settings.worker_queues]
        if not client
        else [make_queue(settings, DEFAULT_QUEUE)],
        "task_default_delivery_mode": "persistent",
        "task_track_started": settings.task_track_started,
        # Ours, read by the result store (workqueue/started_state.py).
        "workqueue_started_delay": settings.task_started_delay,
        "result_extended": True,
        "result_expires": settings.result_expires,
        "task_time_limit": settings.task_time_limit,
        "task_soft_time_limit": settings.task_soft_time_limit,
        "worker_prefetch_multiplier": settings.worker_prefetch_multiplier,
        "worker_concurrency": settings.worker_concurrency,
        "worker_max_tasks_per_child": settings.worker_max_tasks_per_child,
        "worker_max_memory_per_child": settings.worker_max_memory_per_child_kb,
        # With acks_late the broker redelivers what a lost connection leaves
        # unacked; cancelling the local copies avoids running them twice.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_hijack_root_logger": True,
        # Task events cost throughput; only Flower reads them (WORKER_SEND_EVENTS).
        "worker_send_task_events": settings.worker_send_events,
        "task_send_sent_event": settings.worker_send_events,
        # The worker keeps trying the broker forever (its readiness probe
        # says it is not connected); the clients give up quickly.
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": 1 if client else None,
        "broker_connection_timeout": timeout if client else 4.0,
        "broker_heartbeat": 30,
        # The worker retries a publish (a task's retry, a chord callback); a
        # client never does: a retried publish that had landed is a duplicate
        # (TaskClient publishes once and says when the outcome is unknown).
        "task_publish_retry": not client,
        "task_publish_retry_policy": (
            {"max_retries": 1, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.1}
            if client
            else {"max_retries": 5, "interval_start": 0, "interval_step": 0.5, "interval_max": 2}
        ),
        # A client's Redis connections are capped (commands + its waits'
        # pub/sub connections); past the cap a request gets 503, and Redis'
        # maxclients is never reached by one process.
        "redis_max_connections": settings.api_max_waits + REDIS_COMMAND_CONNECTIONS if client else None,
        "redis_socket_connect_timeout": timeout if client else 5.0,
        "redis_socket_timeout": timeout if client else 10.0,
        "redis_retry_on_timeout": not client,
        "redis_backend_health_check_interval": 10,
        "result_backend_transport_options": {
            "retry_policy": {
                "max_retries": 0 if client else 20,
                "interval_start": 0,
                "interval_step": 1,
                "interval_max": 5,
            }
        },
        # Storing a result must survive a Redis blip in the worker: the task
        # already ran and its message is about to be acked.
        "result_backend_always_retry": not client,
        "result_backend_max_retries": 30,
        # One result backend (one Redis connection pool) per client, not one
        # per thread: under gevent every connection's greenlet is a "thread",
        # and each would open its own connections to Redis.
        "result_backend_thread_safe": client,
    }
    if settings.broker_tls:
        config["broker_use_ssl"] = tls.amqp_options(settings)
    if settings.result_backend_tls:
        config["redis_backend_use_ssl"] = tls.redis_options(settings)
    if settings.result_backend_sentinel:
        # Celery's sentinel:// backend asks these sentinels for the master of this name.
        config["result_backend_transport_options"]["master_name"] = settings.redis_sentinel_master
    if settings.broker_is_amqp:
        # Publisher confirms: the API answers 202 only once RabbitMQ took
        # responsibility for the message.
        config["broker_transport_options"] = {"confirm_publish": True}
        if settings.queue_type == "quorum":
            config["task_default_queue_type"] = "quorum"
            config["worker_detect_quorum_queues"] = True
    else:
        config.update(_embedded_broker(settings))
    return config


def make_queue(settings: Settings, name: str) -> Queue:
    """A durable task queue (quorum when QUEUE_TYPE says so), declared alike by API and workers."""
    arguments = {"x-queue-type": "quorum"} if settings.queue_type == "quorum" and settings.broker_is_amqp else {}
    return Queue(name, routing_key=name, durable=True, queue_arguments=arguments or None)


def _embedded_broker(settings: Settings) -> dict[str, Any]:
    """kombu's filesystem transport: a broker-less try-out, no guarantees."""
    base = settings.local_data_dir
    folders = {name: os.path.join(base, name) for name in ("queue", "processed", "control")}
    for path in folders.values():
        os.makedirs(path, exist_ok=True)
    return {
        "broker_transport": embedded_broker.TRANSPORT,  # kombu's, with whole message files
        "broker_transport_options": {
            "data_folder_in": folders["queue"],
            "data_folder_out": folders["queue"],
            "processed_folder": folders["processed"],
            "control_folder": folders["control"],
            "store_processed": False,
            "polling_interval": 0.1,  # the default 1 s would dominate latency
        },
    }


def create_celery(settings: Settings | None = None, role: Role = "worker") -> Celery:
    """A Celery app for ``settings`` (read from the environment if omitted)."""
    settings = settings or Settings.from_env()
    _prepare_result_store(settings)
    app = Celery("workqueue", set_as_current=False)
    app.config_from_object(celery_config(settings, role))
    result_store.use_for(app, settings.result_backend)  # one round trip per stored state
    app.workqueue_settings = settings  # read it with settings_of(app); never in app.conf
    return app


def settings_of(app: Celery) -> Settings:
    """The settings ``app`` was built from (``create_celery``).

    Kept on the app object, not in ``app.conf``: the configuration is what
    ``celery inspect conf`` and Flower show, printing values Celery does not
    know with ``repr``, and these settings hold the broker and Redis
    passwords and the API's tokens.  (Celery masks the passwords of
    ``broker_url`` and ``result_backend`` itself.)
    """
    settings = getattr(app, "workqueue_settings", None)
    if settings is None:
        raise LookupError("this Celery app was not built by workqueue.celery_app.create_celery")
    return settings


def _prepare_result_store(settings: Settings) -> None:
    if settings.result_backend.startswith("file://"):
        os.makedirs(settings.result_backend.removeprefix("file://"), exist_ok=True)


def close_celery(app: Celery) -> None:
    """Close the broker connection pools and the result store's sockets."""
    app.close()
    client = getattr(app.backend, "client", None)
    if client is not None:
        client.connection_pool.disconnect()
