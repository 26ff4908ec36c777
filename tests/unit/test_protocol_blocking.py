"""The guest's blocking adapter over real file descriptors (a socket pair)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from pyti.protocol import (
    CLOSED,
    NEED_DATA,
    PROTOCOL_VERSION,
    Cancel,
    Connection,
    Event,
    Heartbeat,
    Hello,
    ProtocolError,
    Role,
    Start,
    encode,
)
from pyti.protocol.blocking import GuestPort
from pyti.protocol.codec import encode_wire

HELLO = Hello(protocol_version=PROTOCOL_VERSION, agent_version="a", python_version="3.11",
              image_id="i", boot_id="b")  # fmt: skip


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    guest, host = socket.socketpair()
    with guest, host:
        yield guest, host


def read_events(sock: socket.socket, conn: Connection) -> list[Event]:
    events: list[Event] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            conn.receive_data(sock.recv(65536))
            continue
        events.append(event)
        if event is CLOSED:
            return events


def test_guest_port_sends_frames_and_reads_the_host(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    guest_sock, host_sock = pair
    port = GuestPort(guest_sock.fileno())
    port.send(HELLO)
    host_sock.sendall(
        encode_wire({"type": "from-the-future"})  # skipped by the guest
        + encode(Start(run_id="r", tasks=("test",)))
        + encode(Cancel(reason="enough"))
    )
    host_sock.shutdown(socket.SHUT_WR)
    assert list(port) == [Start(run_id="r", tasks=("test",)), Cancel(reason="enough")]
    assert port.receive() is None


def test_concurrent_senders_never_interleave_frames(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    guest_sock, host_sock = pair
    port = GuestPort(guest_sock.fileno())
    port.send(HELLO)
    per_thread = 200

    def beat(base: int) -> None:
        for i in range(per_thread):
            port.send(Heartbeat(seq=base + i))

    threads = [threading.Thread(target=beat, args=(n * 1000,)) for n in range(4)]
    host = Connection(Role.HOST)
    received: list[Event] = []
    reader = threading.Thread(target=lambda: received.extend(read_events(host_sock, host)))
    reader.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    guest_sock.shutdown(socket.SHUT_WR)
    reader.join(timeout=30)
    beats = [e.seq for e in received if isinstance(e, Heartbeat)]
    assert sorted(beats) == sorted(n * 1000 + i for n in range(4) for i in range(per_thread))
    for n in range(4):  # each thread's own frames keep their order
        own = [s for s in beats if n * 1000 <= s < n * 1000 + per_thread]
        assert own == sorted(own)


def test_a_broken_frame_from_the_host_raises_protocol_error(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    guest_sock, host_sock = pair
    port = GuestPort(guest_sock.fileno())
    port.send(HELLO)
    host_sock.sendall(b"\x00\x00\x00\x00")
    with pytest.raises(ProtocolError):
        port.receive()
