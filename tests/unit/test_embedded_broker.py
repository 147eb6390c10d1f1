"""The embedded broker never shows a consumer a message file that is still being written."""

from __future__ import annotations

import json
import os
import tempfile
from queue import Empty

import pytest
from kombu import Connection
from kombu.transport import filesystem

from workqueue import embedded_broker
from workqueue.celery_app import create_celery
from workqueue.settings import Settings


def channel(tmp_path, transport):
    tmp_path.mkdir(exist_ok=True)
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path), "store_processed": False}
    connection = Connection(f"filesystem://{tmp_path}", transport=transport, transport_options=options)
    return connection, connection.default_channel


def test_a_consumer_reading_while_a_message_is_written_finds_nothing_then_the_whole_message(tmp_path, monkeypatch):
    connection, chan = channel(tmp_path, embedded_broker.TRANSPORT)
    seen_mid_write = []
    rename = os.replace

    def replace_after_a_read(source, target):
        # The file is written and not yet renamed: what a consumer polling now would get.
        try:
            seen_mid_write.append(chan._get("tasks"))
        except Empty:
            seen_mid_write.append("nothing")
        rename(source, target)

    monkeypatch.setattr(os, "replace", replace_after_a_read)
    chan._put("tasks", {"body": "whole"})
    monkeypatch.undo()
    assert seen_mid_write == ["nothing"]
    assert chan._size("tasks") == 1 and chan._get("tasks") == {"body": "whole"}
    assert os.listdir(tmp_path) == []
    connection.release()


def test_kombus_own_transport_shows_a_consumer_the_empty_file(tmp_path, monkeypatch):
    """The negative control: the race the embedded broker closes, made certain."""
    connection, chan = channel(tmp_path / "queue", "filesystem")
    assert type(chan) is filesystem.Channel
    # kombu moves a file it takes to the temporary folder before reading it: this test's own.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    failures = []
    lock = filesystem.lock

    def read_then_lock(handle, flags):
        # kombu's _put has created the file under its final name and locks it before writing.
        try:
            chan._get("tasks")
        except json.JSONDecodeError as exc:
            failures.append(exc)
        lock(handle, flags)

    monkeypatch.setattr(filesystem, "lock", read_then_lock)
    chan._put("tasks", {"body": "whole"})
    monkeypatch.undo()
    assert len(failures) == 1, "a consumer took the file before its message was written"
    with pytest.raises(Empty):
        chan._get("tasks")  # and the message is lost to the queue
    connection.release()


def test_the_embedded_mode_uses_it(tmp_path):
    settings = Settings(broker_url=f"filesystem://{tmp_path / 'broker'}", result_backend=f"file://{tmp_path / 'r'}")
    app = create_celery(settings.validated(), role="client")
    with app.connection_for_write() as connection:
        assert type(connection.default_channel) is embedded_broker.Channel
