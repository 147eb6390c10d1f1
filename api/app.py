"""Flask application factory (``gunicorn 'api.app:create_app()'``)."""

from __future__ import annotations

from typing import Any

from celery import Celery
from flask import Flask

from api import errors, metrics, openapi
from api.routes import bp
from worker.celery_app import create_celery
from worker.settings import Settings
from worker.submission import dependency_errors


def create_app(settings: Settings | None = None, celery_app: Celery | None = None, **config: Any) -> Flask:
    """Build the API for ``settings`` (read from the environment if omitted)."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=openapi.MAX_BODY_BYTES, JSON_SORT_KEYS=False, **config)
    app.json.sort_keys = False
    celery = celery_app or create_celery(settings, role="client")
    app.extensions["celery"] = celery
    app.extensions["dependency_errors"] = dependency_errors(celery)
    app.register_blueprint(bp)
    errors.register(app)
    metrics.instrument(app)
    return app
