"""Kept pub/sub connections (workqueue/subscriptions.py) against a real Redis."""

from __future__ import annotations

import redis

from workqueue.subscriptions import Subscribers


def connections(client: redis.Redis) -> int:
    return len(client.client_list())


def test_a_kept_connection_serves_the_next_subscriber_and_only_its_channel(backend_url):
    client = redis.Redis.from_url(backend_url)
    subscribers = Subscribers(client)
    try:
        with subscribers.subscribed("wq-test-a") as first:
            assert first.confirm(5)
            client.publish("wq-test-a", "for a")
            assert first.message(5)["data"] == b"for a"
        opened = connections(client)
        client.publish("wq-test-a", "late, for a")  # nobody listens any more
        with subscribers.subscribed("wq-test-b") as second:
            assert second.confirm(5)  # past a's unsubscribe confirmation
            assert connections(client) == opened  # the same connection, not a new one
            client.publish("wq-test-a", "for a again")
            client.publish("wq-test-b", "for b")
            assert second.message(5)["data"] == b"for b"
            assert second.message(0.2) is None
    finally:
        subscribers.close()
        client.close()


def test_a_subscriber_that_stops_early_is_kept_and_one_that_fails_is_not(backend_url):
    client = redis.Redis.from_url(backend_url)
    subscribers = Subscribers(client)

    def watch(channel: str):
        with subscribers.subscribed(channel) as subscription:
            subscription.confirm(5)
            yield 1
            yield 2

    try:
        early = watch("wq-test-c")
        assert next(early) == 1
        early.close()  # GeneratorExit inside the block, as when a waiter has its answer
        assert len(subscribers._idle) == 1
        try:
            with subscribers.subscribed("wq-test-d"):
                raise RuntimeError("the caller failed")
        except RuntimeError:
            pass
        assert subscribers._idle == []  # closed: its state is unknown
    finally:
        subscribers.close()
        client.close()
