"""The shared codec between the guest agent and the host (stdlib + cbor2 only).

The guest image carries this package as /opt/pyti/pyti/protocol; it must never import
anything else from pyti.
"""

from __future__ import annotations

from .codec import (
    CLOSED,
    DEFAULT_MAX_FRAME_SIZE,
    NEED_DATA,
    Connection,
    Event,
    LocalProtocolError,
    ProtocolVersionMismatch,
    Role,
    Signal,
    check_cbor,
    decode_body,
    encode,
)
from .messages import (
    PROTOCOL_VERSION,
    SNAPSHOT_MARKER,
    Cancel,
    Finding,
    Goodbye,
    Heartbeat,
    Hello,
    InvalidMessage,
    Message,
    Metadata,
    Output,
    ProtocolError,
    Start,
    TaskFinished,
    TaskStarted,
    TestResult,
    UnknownMessage,
    clean_text,
    truncate_text,
)

__all__ = [
    "CLOSED",
    "DEFAULT_MAX_FRAME_SIZE",
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "SNAPSHOT_MARKER",
    "Cancel",
    "Connection",
    "Event",
    "Finding",
    "Goodbye",
    "Heartbeat",
    "Hello",
    "InvalidMessage",
    "LocalProtocolError",
    "Message",
    "Metadata",
    "Output",
    "ProtocolError",
    "ProtocolVersionMismatch",
    "Role",
    "Signal",
    "Start",
    "TaskFinished",
    "TaskStarted",
    "TestResult",
    "UnknownMessage",
    "check_cbor",
    "clean_text",
    "decode_body",
    "encode",
    "truncate_text",
]
