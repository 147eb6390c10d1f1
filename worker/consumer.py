"""The worker's consumer: Celery's, without the native delayed delivery step.

With quorum queues Celery adds a step that declares its delayed-delivery
exchanges on every broker of the URL list and binds the task queues to
them.  It does nothing for this project: task queues sit on the direct
``celery`` exchange, which native delayed delivery does not serve (Celery
says so in a warning at every start).  And it costs: it retries each
listed node it cannot reach (1, 3 and 5 s), so a worker whose connection
failed over to another node of a cluster with one node down stayed
unready for 17 s before it consumed again
(``tests/integration/test_rabbitmq_cluster.py``).
"""

from __future__ import annotations

from celery.worker.consumer import Consumer as CeleryConsumer

DELAYED_DELIVERY = "celery.worker.consumer.delayed_delivery:DelayedDelivery"


class Consumer(CeleryConsumer):
    class Blueprint(CeleryConsumer.Blueprint):
        default_steps = [step for step in CeleryConsumer.Blueprint.default_steps if step != DELAYED_DELIVERY]
