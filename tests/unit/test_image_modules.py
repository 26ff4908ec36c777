"""Module resolution from depmod's files: closure, order, built-ins, softdeps."""

from __future__ import annotations

import pytest

from pyti.errors import ImageBuildFailed
from pyti.image.modules import ModuleIndex, module_name

# Shaped like bookworm 6.1: virtio is a module, ext4 wants crc32c by softdep.
V = "kernel/drivers/virtio"
DEP = f"""\
{V}/virtio_ring.ko:
{V}/virtio.ko: {V}/virtio_ring.ko
{V}/virtio_mmio.ko: {V}/virtio.ko {V}/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: {V}/virtio.ko {V}/virtio_ring.ko
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
"""
SOFTDEP = "# Soft dependencies extracted from modules themselves.\nsoftdep ext4 pre: crc32c\n"
ALIAS = (
    "alias crc32c crc32c_intel\nalias crc32c crc32c_generic\nalias crypto-crc32c crc32c_generic\n"
)


def index(builtin: str = "") -> ModuleIndex:
    return ModuleIndex.parse(dep=DEP, builtin=builtin, softdep=SOFTDEP, alias=ALIAS)


def test_module_names_drop_directories_suffixes_and_dashes() -> None:
    assert module_name("kernel/fs/ext4/ext4.ko.xz") == "ext4"
    assert module_name("kernel/arch/x86/crypto/crc32c-intel.ko") == "crc32c_intel"
    assert module_name("virtio_blk.ko.zst") == "virtio_blk"


def test_dependencies_come_before_the_modules_that_need_them() -> None:
    order = index().resolve(["virtio_blk", "virtio_mmio"])
    assert order == ["virtio_ring", "virtio", "virtio_blk", "virtio_mmio"]


def test_builtin_modules_are_left_out() -> None:
    builtin = "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\n"
    assert index(builtin).resolve(["virtio_blk"]) == ["virtio_blk"]


def test_a_wanted_module_that_is_built_in_is_skipped() -> None:
    builtin = "kernel/drivers/char/virtio_console.ko\n"
    assert index(builtin).resolve(["virtio_console"]) == []


def test_softdep_alias_resolves_to_the_generic_implementation_first() -> None:
    order = index().resolve(["ext4"])
    assert order[0] == "crc32c_generic"
    assert "crc32c_intel" not in order
    assert order[-1] == "ext4"
    assert set(order) == {"crc32c_generic", "crc16", "mbcache", "jbd2", "ext4"}


def test_unknown_module_is_a_build_failure() -> None:
    with pytest.raises(ImageBuildFailed, match="nosuch"):
        index().resolve(["nosuch"])


def test_dependency_cycle_is_a_build_failure() -> None:
    cyclic = ModuleIndex.parse(dep="a.ko: b.ko\nb.ko: a.ko\n", builtin="")
    with pytest.raises(ImageBuildFailed, match="cycle"):
        cyclic.resolve(["a"])


def test_each_module_is_listed_once() -> None:
    order = index().resolve(["virtio_mmio", "virtio_blk", "virtio_mmio"])
    assert len(order) == len(set(order))


def test_optional_module_is_skipped_when_the_kernel_lacks_it() -> None:
    assert index().resolve(["pvpanic_mmio?", "virtio_ring"]) == ["virtio_ring"]


def test_optional_module_is_loaded_when_present() -> None:
    assert index().resolve(["virtio?"]) == ["virtio_ring", "virtio"]
