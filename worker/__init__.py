"""Celery side of workqueue: settings, task catalogue, tasks, probes."""
