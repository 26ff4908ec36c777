"""Build (or reuse) each suite's image, boot it, and receive Hello with the right Python."""

from __future__ import annotations

import re

import pytest

from pyti.image import SUITES, Image
from pyti.launcher import boot_to_hello


async def _boots_to_hello(image: Image) -> None:
    result = await boot_to_hello(image, timeout=90)
    hello = result.hello
    assert hello.python_version.startswith(SUITES[image.suite] + ".")
    assert hello.python_version == image.python_version
    assert hello.image_id == image.image_id
    assert re.fullmatch(r"[0-9a-f-]{36}", hello.boot_id)
    assert hello.agent_version
    # the empty Start ran no task: the agent says Goodbye and the guest powers off
    assert result.goodbye is not None and result.goodbye.reason == "done"
    assert b"Kernel panic" not in result.console


async def test_bookworm_boots_to_hello(bookworm_image: Image) -> None:
    assert bookworm_image.platform_tag == "x86_64-manylinux_2_36"
    await _boots_to_hello(bookworm_image)


async def test_trixie_boots_to_hello(trixie_image: Image) -> None:
    assert trixie_image.platform_tag == "x86_64-manylinux_2_41"
    await _boots_to_hello(trixie_image)


@pytest.mark.parametrize("suite", ["bookworm"])
async def test_two_boots_have_different_boot_ids(suite: str, bookworm_image: Image) -> None:
    first = await boot_to_hello(bookworm_image, timeout=90)
    second = await boot_to_hello(bookworm_image, timeout=90)
    assert first.hello.boot_id != second.hello.boot_id
