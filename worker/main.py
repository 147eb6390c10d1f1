"""The ``celery -A worker.main`` entry point: the one module that builds an app on import."""

from worker.celery_app import create_celery

app = create_celery()
