"""The Celery-defaults peer for bench/drain.py: the framework's own ceiling.

A plain app with nothing but a broker: Celery's defaults ack a message when
its task starts (a worker killed mid-task loses it), prefetch 4 per process,
store no result and log warnings only.  None of our guarantees, so this is
what Celery itself can do on this machine.
"""

import os

from celery import Celery

QUEUE = "celery-default-bench"

app = Celery("celery-default", broker=os.environ["BENCH_BROKER_URL"], set_as_current=False)
app.conf.task_default_queue = QUEUE


@app.task(name="noop")
def noop(x: int) -> int:
    return x
