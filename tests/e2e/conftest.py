"""Session fixtures for the guest images: built once, cached in ~/.cache/pyti across runs."""

from __future__ import annotations

import sys

import pytest

from pyti.image import Image, ensure_image


def _ensure(suite: str) -> Image:
    return ensure_image(suite, progress=lambda message: print(message, file=sys.stderr))


@pytest.fixture(scope="session")
def bookworm_image() -> Image:
    return _ensure("bookworm")


@pytest.fixture(scope="session")
def trixie_image() -> Image:
    return _ensure("trixie")
