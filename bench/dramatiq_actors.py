"""The Dramatiq peers for bench/drain.py: a no-op actor, with or without a stored result.

Dramatiq acks after the actor returns (acks late) and publishes persistent
messages, like ours.  ``BENCH_DRAMATIQ_RESULTS=1`` adds its Redis results
middleware storing every result (one pipelined Redis round trip per message):
the peer with our guarantees.  Without it the actor counts in Redis instead
(one ``INCR``), the peer of earlier runs, which stores nothing.
"""

import os

import dramatiq
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

STORE_RESULTS = os.environ.get("BENCH_DRAMATIQ_RESULTS") == "1"

broker = RabbitmqBroker(url=os.environ["BENCH_BROKER_URL"])
if STORE_RESULTS:
    broker.add_middleware(Results(backend=RedisBackend(url=os.environ["BENCH_REDIS_URL"]), store_results=True))
dramatiq.set_broker(broker)
_counter = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])


@dramatiq.actor(queue_name="dramatiq-bench", max_retries=0)
def noop(x: int) -> int:
    if not STORE_RESULTS:
        _counter.incr("dramatiq-done")
    return x
