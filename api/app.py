"""Flask application factory (``gunicorn 'api.app:create_app()'``)."""

from __future__ import annotations

from typing import Any

from flask import Flask

from api import auth, bulk, dashboard, errors, limits, metrics, openapi
from api.routes import bp
from workqueue import tracing
from workqueue.client import TaskClient
from workqueue.settings import Settings


def create_app(settings: Settings | None = None, client: TaskClient | None = None, **config: Any) -> Flask:
    """Build the API for ``settings`` (read from the environment if omitted)."""
    settings = settings or (client.settings if client else Settings.from_env())
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=limits.MAX_BODY_BYTES, **config)
    app.json.sort_keys = False  # fields in the order the views build them
    auth.install(app, settings)  # first: no token with API_AUTH=required refuses to build the app
    app.extensions["workqueue"] = client = client or TaskClient(settings)
    # Built once per process: anyone may ask for it, so a loop of requests
    # must not rebuild it (and it changes only with the catalogue).
    app.extensions["workqueue-openapi"] = openapi.serialized(
        app, client.catalogue, secured=settings.api_auth == "required"
    )
    app.register_blueprint(bp)
    app.register_blueprint(bulk.bp)
    dashboard.install(app, settings)  # /dashboard: the browser's view, signed in with the same tokens
    errors.register(app)
    metrics.instrument(app)
    tracing.instrument_flask(app, settings)  # OTEL_EXPORTER_OTLP_ENDPOINT set only
    return app
