"""Guest images: `pyti image build/list/rm` and what `pyti run` boots.

See docs/images.md for the layout, the disks and the cache. The names below load lazily,
so that importing `pyti.image.cli` for the command line stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyti.image.suites import DEFAULT_SUITE, SUITES

if TYPE_CHECKING:
    from pyti.image.build import ensure_image, find_image
    from pyti.image.cache import Image

__all__ = ["DEFAULT_SUITE", "SUITES", "Image", "ensure_image", "find_image"]


def __getattr__(name: str) -> Any:
    if name in ("ensure_image", "find_image"):
        from pyti.image import build

        return getattr(build, name)
    if name == "Image":
        from pyti.image.cache import Image

        return Image
    raise AttributeError(f"module 'pyti.image' has no attribute {name!r}")
