"""The embedded broker: kombu's filesystem transport, with message files that appear whole.

kombu's ``filesystem`` transport (5.7) creates a message's file under its
final name and only then writes it.  A consumer that lists the folder in
between moves the empty file away and fails on its JSON: a worker of
``./dev.sh up --embedded`` stopped consuming that way on a busy machine, and
the message was gone.  Here a message is written under a name no consumer
picks (it does not end in ``.<queue>.msg``) and renamed into place, which is
atomic on one filesystem.  Everything else is kombu's.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

# Celery's ``broker_transport``: it takes precedence over the URL's scheme.
TRANSPORT = "workqueue.embedded_broker:Transport"


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        # kombu's name: consumers take the files in sorted order, oldest first.
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        path = os.path.join(self.data_folder_out, name)
        partial = path + ".part"
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, path)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {path!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
