"""The OpenAPI 3.1 document, generated from the task catalogue.

Served at ``/openapi.json``; the fuzz test (schemathesis) reads it, so what
is documented here is what is checked.
"""

from __future__ import annotations

from typing import Any

from worker.catalogue import CATALOGUE

MAX_BODY_BYTES = 256 * 1024


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


def _submission_schema() -> dict[str, Any]:
    """Each task may be submitted with positional ``args`` or with ``kwargs``.

    (The API also accepts a mix, as Celery does; the document describes the
    two plain forms, which is what the fuzzer's positive cases exercise.)
    """
    variants = []
    for spec in CATALOGUE.values():
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


TASK_ID = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "workqueue",
            "version": "0.1.0",
            "description": "Submit background tasks and read their results.",
        },
        "paths": {
            "/tasks": {
                "get": {
                    "summary": "The catalogue of submittable tasks and their argument schemas",
                    "responses": {"200": _json("Catalogue", "Catalogue")},
                },
                "post": {
                    "summary": "Submit a task; 202 once the broker confirmed it",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _submission_schema()}},
                    },
                    "responses": {
                        "202": _json("Accepted and confirmed by the broker", "Task"),
                        "400": _error("Body is not valid JSON"),
                        "413": _error(f"Body larger than {MAX_BODY_BYTES} bytes"),
                        "415": _error("Content-Type is not application/json"),
                        "422": _error("Unknown task or invalid arguments"),
                        "503": _error("Broker or result store unavailable; see Retry-After"),
                    },
                },
            },
            "/tasks/{task_id}": {
                "parameters": [TASK_ID],
                "get": {
                    "summary": "State and result of a task",
                    "responses": {
                        "200": _json("The task", "Task"),
                        "404": _error("No task with this id was submitted"),
                        "503": _error("Result store unavailable"),
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
            "/healthz": {"get": {"summary": "The process is alive", "responses": {"200": {"description": "Alive"}}}},
            "/readyz": {
                "get": {
                    "summary": "Broker and result store are reachable",
                    "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready"}},
                }
            },
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Metrics"}}}},
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
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
                        "submitted_at": {"type": ["string", "null"]},
                        "completed_at": {"type": ["string", "null"]},
                    },
                    "required": ["id", "state"],
                },
                "Catalogue": {
                    "type": "object",
                    "properties": {"tasks": {"type": "array", "items": {"type": "object"}}},
                    "required": ["tasks"],
                },
            }
        },
    }
