"""The Dramatiq peer for bench/drain.py: a no-op actor that counts in Redis.

Counting in Redis gives it one Redis write per message, like Celery storing
a result. Dramatiq acks after the actor returns (acks late), like ours.
"""

import os

import dramatiq
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker

dramatiq.set_broker(RabbitmqBroker(url=os.environ["BENCH_BROKER_URL"]))
_counter = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])


@dramatiq.actor(queue_name="dramatiq-bench", max_retries=0)
def noop(x: int) -> None:
    _counter.incr("dramatiq-done")
