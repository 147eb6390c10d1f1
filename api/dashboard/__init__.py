"""The dashboard: a browser's view of every task, queue and worker, served by the API process.

A blueprint under ``/dashboard`` (``views.py``), rendered on the server with
Jinja2 templates, which Flask ships; a little JavaScript of its own
(``static/dashboard.js``: live updates by a light poll and Server-Sent
Events), no library, no build step, nothing from a CDN.  It reads what the
API keeps already (the task index, submission records, states, the event
stream) plus two small stores in Redis (``workqueue/throughput.py``,
``workqueue/workers.py``).  Access: ``session.py``.  See docs/dashboard.md.
"""

from __future__ import annotations

from flask import Flask

from api.dashboard import session, views
from workqueue.settings import Settings


def install(app: Flask, settings: Settings) -> None:
    session.configure(app, settings.dashboard_session_seconds)
    app.register_blueprint(views.bp)
