"""Blocking adapter for the guest agent: frames over a file descriptor (the virtio port).

One `Connection` sees both directions, because the conversation rules link them (the
guest may send TaskStarted only for a task the host's Start asked for). A lock guards
it: the heartbeat thread and the task threads send while the main thread reads. The
lock is not held during a blocking read, so a read never delays a heartbeat.

Standard library and cbor2 only (through the codec): this runs in the guest.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

from .codec import CLOSED, NEED_DATA, Connection, Role
from .messages import Message, ProtocolError, UnknownMessage

READ_SIZE = 64 * 1024


class GuestPort:
    """The guest's end of the channel over `fd` (opened read-write by the caller)."""

    def __init__(self, fd: int, *, connection: Connection | None = None) -> None:
        self.fd = fd
        self._conn = connection or Connection(Role.GUEST)
        self._lock = threading.Lock()
        self._unknown = 0

    @property
    def connection(self) -> Connection:
        return self._conn

    def send(self, message: Message) -> None:
        """Write one frame; thread-safe, frames never interleave."""
        with self._lock:
            frame = self._conn.send(message)
            view = memoryview(frame)
            while view:
                written = os.write(self.fd, view)
                view = view[written:]

    def receive(self) -> Message | None:
        """The next message from the host, blocking; None when the host closed the port.

        Raises ProtocolError on a broken frame. Unknown message types (a newer host) are
        skipped.
        """
        while True:
            with self._lock:
                event = self._conn.next_event()
            if event is CLOSED:
                return None
            if event is NEED_DATA:
                data = os.read(self.fd, READ_SIZE)
                with self._lock:
                    self._conn.receive_data(data)
                continue
            if isinstance(event, UnknownMessage):
                self._unknown += 1
                continue
            assert isinstance(event, Message)
            return event

    def __iter__(self) -> Iterator[Message]:
        """Messages from the host until it closes the port."""
        while (message := self.receive()) is not None:
            yield message


__all__ = ["GuestPort", "ProtocolError"]
