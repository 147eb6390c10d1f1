"""The Celery worker process: entry point, tasks, probe, shutdown and metrics bootsteps."""
