"""The shared core: settings, task definitions, the Celery app factory and TaskClient (no process of its own)."""
