"""The production worker on Celery's stock Redis result backend, for bench/drain.py.

Everything as ``run.sh worker`` (same app, settings and bootsteps) except the
result store: Celery's ``RedisBackend`` with full ``result_extended``, as
before ``workqueue/result_store.py``.  The row it gives says what that
module buys.
"""

from worker.main import app

app.backend_cls = None  # Celery's backend for the result_backend URL
