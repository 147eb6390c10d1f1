"""The OpenAPI 3.1 document, generated from the task definitions.

Served at ``/openapi.json``; the fuzz test (schemathesis) reads it, so what
is documented here is what is checked.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask

from api.limits import LISTED_STATES, MAX_BODY_BYTES, MAX_EVENTS_SECONDS, MAX_LIMIT, MAX_WAIT_SECONDS
from workqueue.bulk import DEFAULT_LIMIT as BULK_DEFAULT_LIMIT
from workqueue.bulk import MAX_LIMIT as BULK_MAX_LIMIT
from workqueue.catalogue import Catalogue
from workqueue.idempotency import MAX_KEY_LENGTH, RESERVED_PREFIXES


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, ref: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def _submission_schema(tasks: Catalogue) -> dict[str, Any]:
    """Each task may be submitted with positional ``args`` or with ``kwargs``.

    (The API also accepts a mix, as Celery does; the document describes the
    two plain forms, which is what the fuzzer's positive cases exercise.)
    """
    variants = []
    for spec in tasks.values():
        schema = spec.schema
        variants.append(
            {
                "title": f"{spec.name} (args)",
                "type": "object",
                "properties": {
                    "task": {"const": spec.name},
                    "args": {
                        "type": "array",
                        "prefixItems": list(schema["properties"].values()),
                        "items": False,
                        "minItems": spec.required,
                    },
                },
                "required": ["task", "args"],
                "additionalProperties": False,
            }
        )
        variants.append(
            {
                "title": f"{spec.name} (kwargs)",
                "type": "object",
                "properties": {"task": {"const": spec.name}, "kwargs": schema},
                "required": ["task", "kwargs"],
                "additionalProperties": False,
            }
        )
    return {"oneOf": variants}


def _bulk_schema(tasks: Catalogue, since_required: bool = True) -> dict[str, Any]:
    since = {"type": "string", "format": "date-time", "description": "ISO 8601; UTC when it names no zone"}
    if not since_required:
        since = {**since, "type": ["string", "null"], "description": since["description"] + "; null: any time"}
    return {
        "type": "object",
        "properties": {
            "task": {"type": "string", "enum": sorted(tasks)},
            "since": since,
            "limit": {"type": "integer", "minimum": 1, "maximum": BULK_MAX_LIMIT, "default": BULK_DEFAULT_LIMIT},
            "cursor": {"type": ["string", "null"], "description": "next_cursor of the previous call (null: start)"},
        },
        "required": ["task", "since"] if since_required else ["task"],
        "additionalProperties": False,
    }


def _bulk_responses() -> dict[str, Any]:
    return {
        "200": _json("What was done, and next_cursor to continue (null: nothing left)", "BulkAction"),
        "400": _error("Body is not valid JSON, or the cursor is not one this API gave out"),
        "413": _error(f"Body larger than {MAX_BODY_BYTES} bytes"),
        "415": _error("Content-Type is not application/json"),
        "422": _error("Unknown task, a since that is not an ISO 8601 time, or limit out of range"),
        "501": _error("The embedded result store keeps no index"),
        "503": _error("Broker or result store unavailable: repeat the call (it is idempotent)"),
        "504": _error("A retry was not confirmed by the broker: repeat the call (it is published again)"),
    }


TASK_ID = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
# The reserved prefixes are out of the pattern too: a fuzzer (or a client
# generator) reading this schema must not offer a key the API refuses.
_NOT_RESERVED = f"(?!{'|'.join(map(re.escape, RESERVED_PREFIXES))})"
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "One key, one task: repeating a request with its key returns the original task (200); after a 504, "
        "it publishes the same task again (202). Keys starting with schedule: or batch: are refused (400)."
    ),
    "schema": {"type": "string", "pattern": f"^{_NOT_RESERVED}[ -~]{{1,{MAX_KEY_LENGTH}}}$"},
}


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    parameter = {"name": name, "in": "query", "required": False, "schema": schema}
    return {**parameter, "description": description} if description else parameter


def document(tasks: Catalogue, secured: bool = False) -> dict[str, Any]:
    """The OpenAPI document; ``secured``: /tasks* need a bearer token (API_AUTH=required)."""
    doc = _document(tasks)
    if secured:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, operations in doc["paths"].items():
            if path.startswith("/tasks"):
                for name, operation in operations.items():
                    if name != "parameters":
                        operation["security"] = [{"bearer": []}]
                        operation["responses"]["401"] = _error("Missing or wrong bearer token")
                        if name != "get":
                            operation["responses"]["403"] = _error("The token may only read (API_READ_TOKENS)")
    return doc


def serialized(app: Flask, tasks: Catalogue, secured: bool) -> bytes:
    """The document as the bytes ``/openapi.json`` serves (made once per process)."""
    return app.json.dumps(document(tasks, secured)).encode()


def _document(tasks: Catalogue) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "workqueue",
            "version": "0.2.0",
            "description": "Submit background tasks and read their results.",
        },
        "paths": {
            "/catalogue": {
                "get": {
                    "summary": "The catalogue of submittable tasks and their argument schemas",
                    "responses": {"200": _json("Catalogue", "Catalogue")},
                },
            },
            "/tasks": {
                "get": {
                    "summary": "Submitted tasks, newest first; a page may hold fewer than limit when filtered",
                    "parameters": [
                        _query("state", {"type": "string", "enum": list(LISTED_STATES)}),
                        _query("task", {"type": "string", "enum": sorted(tasks)}),
                        _query("cursor", {"type": "string"}, "next_cursor of the previous page"),
                        _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
                    ],
                    "responses": {
                        "200": _json("A page of tasks", "TaskList"),
                        "400": _error("The cursor is not one this API gave out"),
                        "422": _error("Unknown state or task, or limit out of range"),
                        "501": _error("The embedded result store keeps no index"),
                        "503": _error("Result store unavailable"),
                    },
                },
                "post": {
                    "summary": "Submit a task; 202 once the broker confirmed it",
                    "parameters": [IDEMPOTENCY_KEY],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _submission_schema(tasks)}},
                    },
                    "responses": {
                        "200": _json("This Idempotency-Key's original task (nothing new accepted)", "Task"),
                        "202": _json("Accepted and confirmed by the broker", "Task"),
                        "400": _error("Body is not valid JSON, or a malformed or reserved Idempotency-Key"),
                        "409": _error(
                            "This Idempotency-Key was used for another request, or its first request is in progress"
                        ),
                        "413": _error(f"Body larger than {MAX_BODY_BYTES} bytes"),
                        "415": _error("Content-Type is not application/json"),
                        "422": _error("Unknown task or invalid arguments"),
                        "503": _error(
                            "Nothing was queued: broker or result store unavailable (unavailable), the broker "
                            "blocks publishers (broker_blocked), Redis is full (result_store_full) or read-only "
                            "(result_store_read_only); see Retry-After"
                        ),
                        "504": _error(
                            "Written but not confirmed in time: it may or may not be queued. Repeat the request "
                            "with Idempotency-Key: error.idempotency_key until answered 200 or 202"
                        ),
                    },
                },
            },
            "/tasks/{task_id}": {
                "parameters": [TASK_ID],
                "get": {
                    "summary": "State and result of a task; with wait=N, as soon as it is final or after N seconds",
                    "parameters": [_query("wait", {"type": "number", "minimum": 0, "maximum": MAX_WAIT_SECONDS})],
                    "responses": {
                        "200": _json("The task", "Task"),
                        "404": _error("No task with this id was submitted"),
                        "422": _error(f"wait is not a number from 0 to {MAX_WAIT_SECONDS}"),
                        "501": _error("wait > 0 on the embedded result store, which sends no notifications"),
                        "503": _error("Result store unavailable, or this process holds API_MAX_WAITS waits"),
                    },
                },
                "delete": {
                    "summary": "Revoke a task that has not finished",
                    "responses": {
                        "202": _json("Revocation sent", "Task"),
                        "404": _error("No task with this id was submitted"),
                        "409": _error("The task already finished"),
                        "503": _error("Broker or result store unavailable"),
                    },
                },
            },
            "/tasks/{task_id}/events": {
                "parameters": [TASK_ID],
                "get": {
                    "summary": "Server-Sent Events: the task at each state change, until a final state",
                    "parameters": [_query("timeout", {"type": "number", "minimum": 1, "maximum": MAX_EVENTS_SECONDS})],
                    "responses": {
                        "200": {"description": "event: state, data: the Task", "content": {"text/event-stream": {}}},
                        "404": _error("No task with this id was submitted"),
                        "422": _error("timeout out of range"),
                        "501": _error("The embedded result store sends no notifications"),
                        "503": _error("Result store unavailable, or this process holds API_MAX_WAITS streams"),
                    },
                },
            },
            "/tasks/{task_id}/retry": {
                "parameters": [TASK_ID],
                "post": {
                    "summary": "Submit a failed or revoked task again, with its arguments; 202 with the new task",
                    "responses": {
                        "202": _json("The new task, linked by retry_of", "Task"),
                        "404": _error("No task with this id was submitted, or its record expired"),
                        "409": _error("The task is not FAILURE or REVOKED, was already retried, or is being retried"),
                        "422": _error("Its arguments are no longer valid against today's catalogue"),
                        "501": _error("The embedded result store keeps no records for retries"),
                        "503": _error("Broker or result store unavailable"),
                        "504": _error("Written but not confirmed in time: repeat the retry to publish it again"),
                    },
                },
            },
            "/tasks/bulk/retry": {
                "post": {
                    "summary": (
                        "Retry every FAILURE task of a name submitted since a time: at most limit per call "
                        "(1,000 index entries read), then next_cursor; idempotent (a task is retried once); recorded"
                    ),
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _bulk_schema(tasks)}}},
                    "responses": _bulk_responses(),
                }
            },
            "/tasks/bulk/revoke": {
                "post": {
                    "summary": (
                        "Revoke every queued task (no state stored yet) of a name, since a time if given: bounded "
                        "like bulk/retry; idempotent (revoked tasks are skipped); recorded"
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _bulk_schema(tasks, since_required=False)}},
                    },
                    "responses": _bulk_responses(),
                }
            },
            "/tasks/bulk/actions": {
                "get": {
                    "summary": "The recorded bulk actions, newest first: who (a token's fingerprint), when, how many",
                    "parameters": [_query("limit", {"type": "integer", "minimum": 1, "maximum": 200})],
                    "responses": {
                        "200": _json("Recorded bulk actions", "BulkActionLog"),
                        "422": _error("limit out of range"),
                        "501": _error("The embedded result store keeps no record"),
                        "503": _error("Result store unavailable"),
                    },
                }
            },
            "/healthz": {"get": {"summary": "The process is alive", "responses": {"200": {"description": "Alive"}}}},
            "/readyz": {
                "get": {
                    "summary": "Broker and result store are reachable",
                    "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready"}},
                }
            },
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Metrics"}}}},
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
                }
            },
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "task_id": {"type": "string", "format": "uuid"},
                                "idempotency_key": {"type": "string"},
                            },
                            "required": ["code", "message"],
                        }
                    },
                    "required": ["error"],
                },
                "Task": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "format": "uuid"},
                        "task": {"type": ["string", "null"]},
                        "state": {"type": "string"},
                        "result": {},
                        "error": {"type": "object"},
                        "progress": {},
                        "retries": {"type": "integer"},
                        "retry_of": {"type": "string", "format": "uuid"},
                        "retried_by": {"type": "string", "format": "uuid"},
                        "revoke_requested": {
                            "type": "boolean",
                            "description": "A revoke was asked for and no worker has acted on it yet",
                        },
                        "unconfirmed": {
                            "type": "boolean",
                            "description": "Its publish was never confirmed and no worker took it: repeat the request",
                        },
                        "via": {
                            "type": "string",
                            "description": "celery: sent to Celery directly, recorded by a worker",
                        },
                        "submitted_at": {"type": ["string", "null"]},
                        "completed_at": {"type": ["string", "null"]},
                    },
                    "required": ["id", "state"],
                },
                "TaskList": {
                    "type": "object",
                    "properties": {
                        "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}},
                        "next_cursor": {"type": ["string", "null"]},
                    },
                    "required": ["tasks", "next_cursor"],
                },
                "BulkAction": {
                    "type": "object",
                    "properties": {
                        "action": {"type": "string", "enum": ["retry_failed", "revoke_queued"]},
                        "task": {"type": "string"},
                        "since": {"type": ["string", "null"]},
                        "who": {"type": "string", "description": "sha256: and 12 hex digits of the token's SHA-256"},
                        "at": {"type": "string"},
                        "scanned": {"type": "integer"},
                        "matched": {"type": "integer"},
                        "acted": {"type": "integer"},
                        "skipped": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "cursor": {"type": ["string", "null"]},
                        "next_cursor": {"type": ["string", "null"]},
                        "tasks": {"type": "array", "items": {"type": "object"}},
                    },
                    "required": ["action", "task", "who", "at", "scanned", "acted", "next_cursor"],
                },
                "BulkActionLog": {
                    "type": "object",
                    "properties": {"actions": {"type": "array", "items": {"$ref": "#/components/schemas/BulkAction"}}},
                    "required": ["actions"],
                },
                "Catalogue": {
                    "type": "object",
                    "properties": {"tasks": {"type": "array", "items": {"type": "object"}}},
                    "required": ["tasks"],
                },
            }
        },
    }
