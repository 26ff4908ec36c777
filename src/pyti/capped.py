"""A byte log that keeps only its head and its tail, the way CPAN Testers and crater cap logs.

Memory stays under `head + 2 * tail` bytes however much is written: the start of a log
says what ran, the end says how it failed, and the middle is counted, not kept.
"""

from __future__ import annotations

OMITTED = b"\n[... %d bytes omitted ...]\n"


class CappedLog:
    """Append-only bytes; `getvalue()` is the head, an omission marker, and the tail."""

    def __init__(self, head: int, tail: int) -> None:
        if head < 0 or tail < 0:
            raise ValueError("head and tail must not be negative")
        self.head_limit = head
        self.tail_limit = tail
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0  # every byte ever written, kept or not

    def write(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if not data or not self.tail_limit:
            return
        self._tail += data[-self.tail_limit :]
        # Trim lazily: a slice per write would copy `tail` bytes for every small chunk.
        if len(self._tail) > 2 * self.tail_limit:
            del self._tail[: len(self._tail) - self.tail_limit]

    @property
    def kept(self) -> int:
        """Bytes `getvalue()` returns from the log (without the marker)."""
        return len(self._head) + min(len(self._tail), self.tail_limit)

    @property
    def omitted(self) -> int:
        return self.total - self.kept

    @property
    def head(self) -> bytes:
        return bytes(self._head)

    @property
    def tail(self) -> bytes:
        return bytes(self._tail[-self.tail_limit :]) if self.tail_limit else b""

    def getvalue(self) -> bytes:
        if not self.omitted:
            return self.head + self.tail
        return self.head + OMITTED % self.omitted + self.tail

    def __len__(self) -> int:
        return self.total

    def __repr__(self) -> str:
        return f"CappedLog(total={self.total}, kept={self.kept}, omitted={self.omitted})"
