"""`just codec-compat` runs the protocol tests against the guests' cbor2; this proves which."""

from __future__ import annotations

import importlib.metadata
import os
import types

import cbor2
import pytest


def cbor2_flavour() -> str:
    # cbor2 5.x swaps in its C extension when it imports, 6.x is a Rust extension;
    # trixie's python3-cbor2 has no extension, so its `loads` is a Python function.
    pure = isinstance(cbor2.loads, types.FunctionType)
    return f"{importlib.metadata.version('cbor2')} {'pure' if pure else 'native'}"


def test_the_cbor2_under_test_is_the_one_asked_for() -> None:
    expected = os.environ.get("PYTI_EXPECT_CBOR2")
    if not expected:
        pytest.skip("only under `just codec-compat` (PYTI_EXPECT_CBOR2 unset)")
    assert cbor2_flavour() == expected
