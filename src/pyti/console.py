"""The guest console (ttyS0) as pyti keeps it: capped, and scanned for kernel verdicts.

A guest can print without end; this keeps the first `head` and the last `tail` bytes and
counts what it dropped, so a console flood costs bounded memory and never fills a disk.
Lines are scanned as they pass (before capping) for a kernel panic, which ends the VM at
once without waiting for a deadline, and for the OOM killer.

"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyti.capped import CappedLog
from pyti.protocol import SNAPSHOT_MARKER

HEAD_BYTES = 64 * 1024
TAIL_BYTES = 192 * 1024
MAX_LINE = 4096  # a longer "line" is scanned by its first MAX_LINE bytes only

PANIC_MARKERS = (b"Kernel panic - not syncing",)
OOM_MARKERS = (b"Out of memory:", b"invoked oom-killer", b"Memory cgroup out of memory")
# The agent's snapshot point (pyti.protocol.SNAPSHOT_MARKER); only a whole line counts.
MARKER = SNAPSHOT_MARKER.encode()
# Panics that are the OOM killer giving up ("Out of memory and no killable processes...").
OOM_PANIC_MARKERS = (b"Out of memory", b"deadlocked on memory")


@dataclass
class ConsoleVerdicts:
    """What the kernel said on the console that decides how a VM ended."""

    panic_line: str | None = None
    oom_lines: list[str] = field(default_factory=list)
    marker_seen: bool = False  # the agent's snapshot point (MARKER) went by


class Console:
    """Feed it console bytes; it keeps a capped copy and the verdict lines."""

    def __init__(self, head: int = HEAD_BYTES, tail: int = TAIL_BYTES) -> None:
        self.log = CappedLog(head, tail)
        self.verdicts = ConsoleVerdicts()
        self._line = bytearray()

    def feed(self, data: bytes | bytearray) -> None:
        self.log.write(bytes(data))
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            self._append(data[start:end])
            self._scan(bytes(self._line))
            self._line.clear()
            start = end + 1
        self._append(data[start:])

    def _append(self, piece: bytes | bytearray) -> None:
        room = MAX_LINE - len(self._line)
        if room > 0:
            self._line += piece[:room]

    def _scan(self, line: bytes) -> None:
        if line.rstrip(b"\r") == MARKER:
            self.verdicts.marker_seen = True
        if any(marker in line for marker in PANIC_MARKERS):
            if self.verdicts.panic_line is None:
                self.verdicts.panic_line = _text(line)
                if any(marker in line for marker in OOM_PANIC_MARKERS):
                    self.verdicts.oom_lines.append(_text(line))
        elif any(marker in line for marker in OOM_MARKERS) and len(self.verdicts.oom_lines) < 20:
            self.verdicts.oom_lines.append(_text(line))

    def text(self) -> str:
        return _text(self.log.getvalue())

    def tail_lines(self, count: int) -> list[str]:
        return self.text().splitlines()[-count:]

    def finish(self) -> None:
        """The stream ended: scan a last line that had no newline."""
        if self._line:
            self._scan(bytes(self._line))
            self._line.clear()


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace").replace("\r", "")
