"""The worker's consumer: Celery's, without native delayed delivery, reconnecting on recoverable channel errors.

With quorum queues Celery adds a step that declares its delayed-delivery
exchanges on every broker of the URL list and binds the task queues to
them.  It does nothing for this project: task queues sit on the direct
``celery`` exchange, which native delayed delivery does not serve (Celery
says so in a warning at every start).  And it costs: it retries each
listed node it cannot reach (1, 3 and 5 s), so a worker whose connection
failed over to another node of a cluster with one node down stayed
unready for 17 s before it consumed again
(``tests/integration/test_rabbitmq_cluster.py``).

``RESOURCE_LOCKED`` when the consumer declares its remote-control queue is
a reason to connect again, not to exit.  That queue is exclusive to the
connection that declared it.  When a cluster node dies with the worker's
connection, the other nodes keep the queue's record, owned by the dead
connection, until they have cleaned up after the node; a worker that
failed over within those milliseconds was refused the queue, and Celery
counts every channel error as unrecoverable: the worker exited (1 run in 14
of the node-kill test, under load).  AMQP itself sorts channel errors, and
py-amqp keeps the sorting (``RecoverableChannelError``: resource locked, no
consumers, content too large); the consumer now restarts on those, as on a
lost connection.  Celery's ``broker_channel_error_retry`` would retry every
channel error, including the ones that stay (``PRECONDITION_FAILED``, a
queue declared with other arguments; ``ACCESS_REFUSED``; ``NOT_FOUND``):
those still stop the worker with their message.
"""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

DELAYED_DELIVERY = "celery.worker.consumer.delayed_delivery:DelayedDelivery"


class Consumer(CeleryConsumer):
    class Blueprint(CeleryConsumer.Blueprint):
        default_steps = [step for step in CeleryConsumer.Blueprint.default_steps if step != DELAYED_DELIVERY]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Celery's loop restarts the consumer on these (reconnect, declare
        # again, under its restart-rate limit); they are also what it ignores
        # when a reject fails on a connection that is gone.
        self.connection_errors = (*self.connection_errors, *self.conninfo.recoverable_channel_errors)
