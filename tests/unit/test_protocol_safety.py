"""Untrusted CBOR: what the pre-scan refuses, and that lies about lengths cost nothing."""

from __future__ import annotations

import struct
import tracemalloc

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyti.protocol import (
    CLOSED,
    NEED_DATA,
    Connection,
    Goodbye,
    Hello,
    ProtocolError,
    Role,
    check_cbor,
    encode,
)
from pyti.protocol.codec import DEFAULT_MAX_DEPTH, decode_body

HELLO = Hello(protocol_version=1, agent_version="a", python_version="3", image_id="i",
              boot_id="b")  # fmt: skip


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def host_after_hello() -> Connection:
    host = Connection(Role.HOST)
    host.receive_data(encode(HELLO))
    assert host.next_event() == HELLO
    return host


# A map {"type": "goodbye", "reason": <item>} with a hand-made item in the value.
def goodbye_with(item: bytes) -> bytes:
    return b"\xa2" + cbor2.dumps("type") + cbor2.dumps("goodbye") + cbor2.dumps("reason") + item


@pytest.mark.parametrize(
    "item",
    [
        pytest.param(b"\xc1\x00", id="tag 1 (epoch datetime)"),
        pytest.param(b"\xc2\x41\x01", id="tag 2 (bignum)"),
        pytest.param(b"\xd8\x1c\x80", id="tag 28 (shareable)"),
        pytest.param(b"\xd8\x1d\x00", id="tag 29 (shared reference)"),
        pytest.param(b"\xd9\x01\x02\x80", id="tag 258 (set)"),
        pytest.param(b"\xdb" + b"\xff" * 8 + b"\x00", id="tag 2**64-1"),
        pytest.param(b"\x9f\xff", id="indefinite array"),
        pytest.param(b"\x7f\x61a\xff", id="indefinite text"),
        pytest.param(b"\xbf\xff", id="indefinite map"),
        pytest.param(b"\xf7", id="undefined"),
        pytest.param(b"\xe0", id="simple value 0"),
        pytest.param(b"\xf8\x20", id="simple value 32"),
        pytest.param(b"\xff", id="lone break"),
        pytest.param(b"\x1c", id="reserved additional info"),
        pytest.param(b"\xa1\x01\x02", id="integer map key"),
        pytest.param(b"\xa1\x80\x02", id="array map key"),
        pytest.param(b"\x62\xff\xfe", id="invalid UTF-8"),
    ],
)
def test_refused_items(item: bytes) -> None:
    host = host_after_hello()
    host.receive_data(frame(goodbye_with(item)))
    with pytest.raises(ProtocolError):
        host.next_event()


def test_the_same_frame_with_a_plain_value_is_fine() -> None:
    host = host_after_hello()
    host.receive_data(frame(goodbye_with(cbor2.dumps("bye"))))
    assert host.next_event() == Goodbye(reason="bye")


def nested_arrays(depth: int) -> bytes:
    return b"\x81" * depth + b"\x00"


def test_nesting_up_to_the_limit_passes_the_scan_and_one_more_fails() -> None:
    check_cbor(nested_arrays(DEFAULT_MAX_DEPTH))
    with pytest.raises(ProtocolError, match="nesting"):
        check_cbor(nested_arrays(DEFAULT_MAX_DEPTH + 1))


def test_deep_nesting_is_a_protocol_error_not_a_recursion_error() -> None:
    body = goodbye_with(nested_arrays(200_000))
    host = host_after_hello()
    host.receive_data(frame(body))
    with pytest.raises(ProtocolError, match="nesting"):
        host.next_event()


HUGE_HEADERS = [
    pytest.param(b"\x9a\xff\xff\xff\xff", id="array of 2**32-1"),
    pytest.param(b"\x9b\x00\x00\x00\x01\x00\x00\x00\x00", id="array of 2**32"),
    pytest.param(b"\x9b" + b"\xff" * 8, id="array of 2**64-1"),
    pytest.param(b"\xba\xff\xff\xff\xff", id="map of 2**32-1 pairs"),
    pytest.param(b"\xbb\x40\x00\x00\x00\x00\x00\x00\x00", id="map whose pair count doubles"),
    pytest.param(b"\x5a\xff\xff\xff\xff", id="bytes of 4 GiB"),
    pytest.param(b"\x7b" + b"\xff" * 8, id="text of 2**64-1 bytes"),
]


@pytest.mark.parametrize("header", HUGE_HEADERS)
def test_a_tiny_frame_claiming_a_huge_container_allocates_nothing(header: bytes) -> None:
    # Let other allocations settle, then measure only the decode.
    data = frame(goodbye_with(header))
    host = host_after_hello()
    host.receive_data(data)
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match=r"longer than its frame|more items"):
            host.next_event()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A list of 2**32 slots would be 32 GiB; anything under a megabyte is bookkeeping.
    assert peak < 1 << 20


@pytest.mark.parametrize("header", HUGE_HEADERS)
def test_a_huge_claim_at_the_top_level_is_refused_too(header: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_body(header)


def test_a_claim_that_exactly_fits_is_accepted_by_the_scan() -> None:
    check_cbor(b"\x83\x01\x02\x03")
    check_cbor(b"\x43abc")
    with pytest.raises(ProtocolError):
        check_cbor(b"\x84\x01\x02\x03")
    with pytest.raises(ProtocolError):
        check_cbor(b"\x44abc")


def test_floats_of_every_width_and_simple_values_are_allowed() -> None:
    for item in (b"\xf9\x3c\x00", b"\xfa\x3f\x80\x00\x00", cbor2.dumps(1.5), b"\xf4", b"\xf5",
                 b"\xf6"):  # fmt: skip
        check_cbor(item)


def valid_stream() -> bytes:
    return encode(HELLO) + encode(Goodbye(reason="done"))


@given(st.binary(max_size=200))
def test_garbage_raises_protocol_error_and_nothing_else(data: bytes) -> None:
    host = Connection(Role.HOST)
    host.receive_data(data)
    host.receive_data(b"")
    try:
        while host.next_event() not in (NEED_DATA, CLOSED):
            pass
    except ProtocolError:
        pass


@given(st.integers(0, 200), st.binary(min_size=1, max_size=8))
def test_mutated_valid_frames_raise_protocol_error_and_nothing_else(at: int, junk: bytes) -> None:
    data = bytearray(valid_stream())
    at %= len(data)
    data[at : at + len(junk)] = junk
    host = Connection(Role.HOST)
    host.receive_data(bytes(data))
    host.receive_data(b"")
    try:
        while host.next_event() not in (NEED_DATA, CLOSED):
            pass
    except ProtocolError:
        pass


def test_every_truncation_is_need_data_then_a_protocol_error_at_eof() -> None:
    data = valid_stream()
    first = len(encode(HELLO))
    for cut in range(1, len(data)):
        if cut == first:
            continue  # a frame boundary: a clean end
        host = Connection(Role.HOST)
        host.receive_data(data[:cut])
        events = []
        while (event := host.next_event()) is not NEED_DATA:
            events.append(event)
        host.receive_data(b"")
        with pytest.raises(ProtocolError, match="stream ended inside"):
            host.next_event()
