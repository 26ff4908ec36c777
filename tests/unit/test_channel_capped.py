"""CappedLog keeps head and tail, counts the middle, and bounds its memory."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyti.capped import CappedLog


def test_under_the_cap_everything_is_kept() -> None:
    log = CappedLog(head=4, tail=4)
    log.write(b"abc")
    log.write(b"defgh")
    assert log.getvalue() == b"abcdefgh"
    assert (log.total, log.kept, log.omitted) == (8, 8, 0)


def test_one_byte_over_the_cap_is_omitted_and_marked() -> None:
    log = CappedLog(head=4, tail=4)
    log.write(b"abcdefghi")
    assert log.getvalue() == b"abcd\n[... 1 bytes omitted ...]\nfghi"
    assert log.omitted == 1


def test_head_only_and_tail_only() -> None:
    head_only = CappedLog(head=2, tail=0)
    head_only.write(b"hello")
    assert head_only.getvalue() == b"he\n[... 3 bytes omitted ...]\n"
    tail_only = CappedLog(head=0, tail=2)
    tail_only.write(b"hello")
    assert tail_only.getvalue() == b"\n[... 3 bytes omitted ...]\nlo"


def test_memory_stays_bounded_under_many_small_writes() -> None:
    log = CappedLog(head=10, tail=100)
    for i in range(100_000):
        log.write(b"%d\n" % i)
    assert len(log._tail) <= 2 * 100
    assert log.getvalue().endswith(b"99999\n")
    assert len(log) == log.total


def test_negative_caps_are_refused() -> None:
    with pytest.raises(ValueError):
        CappedLog(head=-1, tail=0)


@given(st.lists(st.binary(max_size=50), max_size=30), st.integers(0, 40), st.integers(0, 40))
def test_head_and_tail_match_the_whole_stream(chunks: list[bytes], head: int, tail: int) -> None:
    log = CappedLog(head=head, tail=tail)
    for chunk in chunks:
        log.write(chunk)
    whole = b"".join(chunks)
    assert log.total == len(whole)
    assert log.head == whole[:head]
    rest = whole[head:]
    assert log.tail == (rest[-tail:] if tail else b"")
    if log.omitted:
        assert (
            log.getvalue() == log.head + b"\n[... %d bytes omitted ...]\n" % log.omitted + log.tail
        )
    else:
        assert log.getvalue() == whole
