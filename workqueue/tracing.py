"""OpenTelemetry traces, on when OTEL_EXPORTER_OTLP_ENDPOINT is set (the ``otel`` extra).

One trace per submission: the API's request span (Flask instrumentation),
a producer span around the publish, whose context goes into the task
message's headers (``traceparent``, W3C Trace Context), and the worker's
task span (Celery instrumentation), which Celery's instrumentation parents
on the context it reads from those headers.  Our publish path is our own
(``workqueue/publisher.py`` sends with kombu, not ``send_task``), so
Celery's instrumentation never sees it: the injection is done here.

Nothing here imports OpenTelemetry unless tracing is on: every import is
inside a function that runs only when ``Settings.otel_exporter_otlp_endpoint``
is set, so a deployment without the extra never loads it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from workqueue.settings import Settings

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_provider: Any = None  # the process' TracerProvider once set up (OpenTelemetry allows one)


def enabled(settings: Settings) -> bool:
    return bool(settings.otel_exporter_otlp_endpoint)


def setup(settings: Settings, service_name: str) -> Any:
    """The process' TracerProvider exporting to the OTLP/HTTP endpoint (once per process); None when off."""
    global _provider
    if not enabled(settings):
        return None
    with _lock:
        if _provider is not None:
            return _provider
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import OTELResourceDetector, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win over our default name.
        resource = Resource.create({"service.name": service_name}).merge(OTELResourceDetector().detect())
        provider = TracerProvider(resource=resource)
        endpoint = settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"  # the variable's meaning
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        trace.set_tracer_provider(provider)
        _provider = provider
        logger.info("tracing: exporting spans of %s to %s", service_name, endpoint)
        return provider


def instrument_flask(app: Any, settings: Settings) -> None:
    """Server spans for every request of ``app`` (metrics and probes excluded)."""
    if setup(settings, "workqueue-api") is None:
        return
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    FlaskInstrumentor().instrument_app(app, excluded_urls="/metrics,/readyz,/healthz")


def instrument_celery(settings: Settings) -> None:
    """Task spans in the worker, children of the context in the message headers."""
    if setup(settings, "workqueue-worker") is None:
        return
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    instrumentor = CeleryInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


class _NoSpan:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def publish_span(settings: Settings, task_name: str, task_id: str, queue: str, headers: dict[str, Any]) -> Any:
    """A context manager: a producer span around one publish, its context written into ``headers``.

    Off, a no-op that imports nothing.
    """
    if not enabled(settings) or _provider is None:
        return _NoSpan()
    return _PublishSpan(task_name, task_id, queue, headers)


class _PublishSpan:
    def __init__(self, task_name: str, task_id: str, queue: str, headers: dict[str, Any]) -> None:
        self.task_name, self.task_id, self.queue, self.headers = task_name, task_id, queue, headers
        self._manager: Any = None

    def __enter__(self) -> None:
        from opentelemetry import propagate, trace

        tracer = trace.get_tracer("workqueue.publisher")
        self._manager = tracer.start_as_current_span(
            f"publish {self.task_name}",
            kind=trace.SpanKind.PRODUCER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "send",
                "messaging.destination.name": self.queue,
                "messaging.message.id": self.task_id,
            },
        )
        self._manager.__enter__()
        propagate.inject(self.headers)  # traceparent (and tracestate) of the producer span

    def __exit__(self, *exc: Any) -> None:
        self._manager.__exit__(*exc)


def current_trace_id(settings: Settings) -> str | None:
    """The id of the trace the current span belongs to (32 hex digits); None when off or outside a span.

    An HTTP submission's request span, the publish span and the worker's
    task span share it, so the submission record keeps it for the dashboard.
    """
    if not enabled(settings) or _provider is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def trace_id_of(traceparent: Any) -> str | None:
    """The trace id of a W3C ``traceparent`` header (``00-<trace id>-<span id>-<flags>``), or None."""
    if not isinstance(traceparent, str):
        return None
    parts = traceparent.split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or parts[1].strip("0123456789abcdef") or parts[1] == "0" * 32:
        return None
    return parts[1]
