"""Guest images: `pyti image build/list/rm` and what `pyti run` boots.

See docs/images.md for the layout, the disks and the cache.
"""

from __future__ import annotations

from pyti.image.build import ensure_image, find_image
from pyti.image.cache import Image
from pyti.image.suites import DEFAULT_SUITE, SUITES

__all__ = ["DEFAULT_SUITE", "SUITES", "Image", "ensure_image", "find_image"]
