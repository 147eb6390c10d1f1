"""A task module that redefines a reference task's name (test_catalogue loads it)."""

from workqueue.catalogue import task


@task
def add(x: int, y: int) -> int:
    """Another add."""
    return x + y
