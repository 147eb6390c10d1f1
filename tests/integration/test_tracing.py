"""One trace from the HTTP request through the publish into the task (OTEL_EXPORTER_OTLP_ENDPOINT).

The API runs in this process (create_app's test client, the Flask
instrumentation as a pod has it) and its spans are read with the SDK's
InMemorySpanExporter, added to the provider that tracing.setup installed.
The worker is a real ``run.sh worker`` process (prefork pool, Celery
instrumentation), so its spans cannot reach an in-memory exporter: it
exports them with the real OTLP/HTTP exporter to a small receiver this test
serves, which decodes the protobuf requests with opentelemetry-proto (the
collector's own message types).  That also proves the exporter configuration
a deployment uses.  An in-process worker thread (celery.contrib.testing) was
the other choice; it would not be the worker the chart runs (no prefork
children, no run.sh).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from testing.processes import REPO, Worker
from testing.servers import wait_until
from workqueue import tracing

pytestmark = pytest.mark.integration


class OtlpReceiver:
    """An OTLP/HTTP traces endpoint (POST /v1/traces, protobuf) that keeps every span it receives."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.spans: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                assert self.path == "/v1/traces", self.path
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            receiver.spans.append(
                                {
                                    "service": resource.get("service.name"),
                                    "name": span.name,
                                    "kind": span.kind,
                                    "trace_id": span.trace_id.hex(),
                                    "span_id": span.span_id.hex(),
                                    "parent_id": span.parent_span_id.hex() or None,
                                    "attributes": {a.key: a.value for a in span.attributes},
                                }
                            )
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver()
    yield server
    server.close()


def test_one_trace_runs_from_the_request_through_the_publish_into_the_task(own_vhost, backend_url, receiver, app_for):
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

    app = app_for(own_vhost.url, backend_url, otel_exporter_otlp_endpoint=receiver.url)
    # What create_app installed (once per process).
    provider = tracing.setup(app.extensions["workqueue"].settings, "workqueue-api")
    assert provider is not None
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    http = app.test_client()
    worker = Worker(
        own_vhost.url,
        backend_url,
        name="traced",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_BSP_SCHEDULE_DELAY="100",  # ms: the pool process exports soon after the task
    )
    try:
        worker.start().wait_ready()
        task_id = http.post("/tasks", json={"task": "add", "args": [2, 3]}).get_json()["id"]
        assert http.get(f"/tasks/{task_id}?wait=30").get_json()["state"] == "SUCCESS"

        def worker_span() -> dict[str, Any] | None:
            return next(
                (s for s in receiver.spans if s["service"] == "workqueue-worker" and s["name"] == "run/workqueue.add"),
                None,
            )

        wait_until(lambda: worker_span() is not None, 30, "the worker's task span to be exported")
    finally:
        worker.stop()

    api_spans = memory.get_finished_spans()
    server = next(s for s in api_spans if s.kind == SpanKind.SERVER and s.name == "POST /tasks")
    publish = next(s for s in api_spans if s.kind == SpanKind.PRODUCER and s.name == "publish workqueue.add")
    task = worker_span()
    assert task is not None
    trace_id = format_trace_id(server.context.trace_id)
    # One trace: request -> publish -> task, each the parent of the next.
    assert publish.context.trace_id == server.context.trace_id
    assert publish.parent is not None and publish.parent.span_id == server.context.span_id
    assert publish.attributes["messaging.message.id"] == task_id
    assert task["trace_id"] == trace_id
    assert task["parent_id"] == format_span_id(publish.context.span_id)
    assert task["kind"] == 5  # SPAN_KIND_CONSUMER in the OTLP protobuf
    assert task["attributes"]["celery.task_name"].string_value == "workqueue.add"
    # The API's spans reach the OTLP endpoint too (the exporter a pod uses).
    provider.force_flush()
    exported = {s["span_id"] for s in receiver.spans if s["service"] == "workqueue-api"}
    assert format_span_id(server.context.span_id) in exported


def test_without_the_endpoint_opentelemetry_is_not_imported(own_vhost, backend_url, tmp_path):
    """The extra may be installed (as here) and tracing still never loads: the API, the client and the worker app."""
    script = """
import sys
from api.app import create_app
from workqueue.settings import Settings
import worker.main  # builds the worker app from the environment, as run.sh does
settings = Settings.from_env()
assert not settings.otel_exporter_otlp_endpoint
app = create_app(settings, TESTING=True)
response = app.test_client().post("/tasks", json={"task": "add", "args": [1, 2]})
assert response.status_code == 202, response.status_code
app.extensions["workqueue"].close()
# redis-py 8 loads opentelemetry's metrics API and SDK itself when they are installed
# (its own, off-by-default metrics); what tracing would load must be absent.
ours = ("opentelemetry.sdk.trace", "opentelemetry.instrumentation", "opentelemetry.exporter", "opentelemetry.propagate")
loaded = sorted(m for m in sys.modules if m.startswith(ours))
assert not loaded, loaded
from workqueue import tracing
assert tracing._provider is None
"""
    env = {
        "BROKER_URL": own_vhost.url,
        "RESULT_BACKEND": backend_url,
        "RUNTIME_DIR": str(tmp_path),
        "API_AUTH": "off",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
