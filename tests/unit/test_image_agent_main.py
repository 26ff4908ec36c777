"""The agent's conversation over a socket pair: Hello first, Goodbye last, Cancel honoured."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyti.protocol import (
    CLOSED,
    NEED_DATA,
    Cancel,
    Connection,
    Goodbye,
    Hello,
    Role,
    Start,
    TaskFinished,
    TaskStarted,
)
from pyti.protocol.blocking import GuestPort

sys.path.insert(0, str(Path(__file__).parents[2] / "guest_agent"))

from pyti_agent import __main__ as agent


class Host:
    """The host's end: a Connection over one side of a socket pair."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.conn = Connection(Role.HOST)

    def next(self) -> object:
        while True:
            event = self.conn.next_event()
            if event is not NEED_DATA:
                return event
            self.conn.receive_data(self.sock.recv(65536))

    def send(self, message: object) -> None:
        self.sock.sendall(self.conn.send(message))  # type: ignore[arg-type]


@pytest.fixture
def pair(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Host, GuestPort]]:
    monkeypatch.setattr(agent, "GOODBYE_LINGER", 0.01)
    host_sock, guest_sock = socket.socketpair()
    with host_sock, guest_sock:
        yield Host(host_sock), GuestPort(guest_sock.fileno())


def run_agent(port: GuestPort) -> tuple[threading.Thread, list[int]]:
    status: list[int] = []
    thread = threading.Thread(target=lambda: status.append(agent.serve(port)), daemon=True)
    thread.start()
    return thread, status


def test_hello_then_goodbye_for_an_empty_start(pair: tuple[Host, GuestPort]) -> None:
    host, port = pair
    thread, status = run_agent(port)
    hello = host.next()
    assert isinstance(hello, Hello)
    assert hello.python_version == "{}.{}.{}".format(*sys.version_info[:3])
    host.send(Start(run_id="r1", tasks=()))
    assert host.next() == Goodbye(reason="done")
    host.sock.shutdown(socket.SHUT_WR)
    thread.join(5)
    assert status == [0]


def test_the_snapshot_marker_comes_just_before_hello(
    pair: tuple[Host, GuestPort], capsys: pytest.CaptureFixture[str]
) -> None:
    from pyti.console import MARKER

    host, port = pair
    thread, _ = run_agent(port)
    assert isinstance(host.next(), Hello)
    assert MARKER.decode() in capsys.readouterr().err.splitlines()
    host.send(Cancel(reason="done"))
    assert host.next() == Goodbye(reason="cancelled")
    thread.join(5)


def test_cancel_before_start_says_goodbye_cancelled(pair: tuple[Host, GuestPort]) -> None:
    host, port = pair
    thread, status = run_agent(port)
    assert isinstance(host.next(), Hello)
    host.send(Cancel(reason="user"))
    assert host.next() == Goodbye(reason="cancelled")
    thread.join(5)
    assert status == [0]


def test_a_failing_task_is_reported_as_error(
    pair: tuple[Host, GuestPort], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Tasks:
        @staticmethod
        def TaskContext(**_: object) -> object:
            return object()

        @staticmethod
        def run_task(name: str, ctx: object) -> TaskFinished:
            raise RuntimeError("boom")

    monkeypatch.setattr(agent, "_load_tasks", lambda: Tasks)
    monkeypatch.setattr(agent, "_work_dir", lambda: "/tmp")
    host, port = pair
    thread, _ = run_agent(port)
    assert isinstance(host.next(), Hello)
    host.send(Start(run_id="r1", tasks=("test",)))
    assert host.next() == TaskStarted(task="test")
    finished = host.next()
    assert isinstance(finished, TaskFinished)
    assert (finished.task, finished.outcome, finished.exit_code) == ("test", "error", None)
    assert host.next() == Goodbye(reason="done")
    host.sock.close()
    thread.join(5)


def test_host_closing_before_start_ends_the_agent(pair: tuple[Host, GuestPort]) -> None:
    host, port = pair
    thread, _ = run_agent(port)
    assert isinstance(host.next(), Hello)
    host.sock.shutdown(socket.SHUT_WR)
    thread.join(5)
    assert not thread.is_alive()
    assert host.next() in (Goodbye(reason="cancelled"), CLOSED)


def test_the_agent_sees_whether_a_host_holds_the_other_end() -> None:
    # virtio-console reports POLLHUP while no host is connected; a socket pair after its
    # peer closed reports it the same way
    left, right = socket.socketpair()
    with left:
        with right:
            assert agent._host_connected(left.fileno())
        assert not agent._host_connected(left.fileno())
