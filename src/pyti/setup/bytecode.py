"""Bytecode for the guest, compiled on the host: the first test run does not pay for it.

Under TCG the guest compiles slowly: a first `pytest` in a new venv spends seconds
compiling pytest, pluggy and friends to bytecode. When the host's Python has the
guest's minor version (same bytecode magic), the host compiles every pure `.py`
file of each wheel to an *unchecked-hash* pyc (PEP 552: never revalidated against
the source, so file times do not matter) and ships them beside the wheel as
`<wheel>.pyti-bytecode`, a zip of `__pycache__/*.pyc` members. The agent unpacks
it into the venv after installing.

`compile()` only parses: nothing from the package runs on the host. Each pyc
records the path the guest installs the file at, so tracebacks (and pytest's
filtering of its own frames) read as they would after a guest-side compile.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import os
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pyti import paths
from pyti.setup.model import GuestTarget

log = logging.getLogger(__name__)

SUFFIX = ".pyti-bytecode"
# The agent's venv (guest_agent/pyti_agent/install.py: WorkLayout under /home/pyti/work).
GUEST_SITE = "/home/pyti/work/venv/lib/python{version}/site-packages"
MAX_SOURCE = 4 << 20  # one .py file
MAX_TOTAL = 256 << 20  # all sources of one wheel
MAX_MEMBERS = 20_000


def guest_site(target: GuestTarget) -> str:
    return GUEST_SITE.format(version=target.python_version)


def can_compile_for(target: GuestTarget) -> bool:
    return sys.version_info[:2] == target.python_tuple and sys.implementation.name == "cpython"


def _sources(wheel: zipfile.ZipFile) -> Iterable[tuple[str, zipfile.ZipInfo]]:
    infos = wheel.infolist()
    if len(infos) > MAX_MEMBERS:
        return
    total = 0
    for info in infos:
        name = info.filename
        if not name.endswith(".py") or info.is_dir() or info.file_size > MAX_SOURCE:
            continue
        parts = name.split("/")
        # Only importable files: not scripts or headers under .data/, no odd paths.
        if any(p in {"", ".", ".."} for p in parts) or parts[0].endswith((".data", ".dist-info")):
            continue
        total += info.file_size
        if total > MAX_TOTAL:
            return
        yield name, info


def compile_wheel(wheel_path: Path, site: str) -> bytes:
    """A zip of `dir/__pycache__/name.cpython-XY.pyc` for each .py of the wheel."""
    tag = sys.implementation.cache_tag
    out = io.BytesIO()
    with (
        zipfile.ZipFile(wheel_path) as wheel,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
    ):
        for name, info in _sources(wheel):
            source = wheel.read(info)
            try:
                code = compile(source, f"{site}/{name}", "exec", dont_inherit=True, optimize=0)
            except (SyntaxError, ValueError, MemoryError, RecursionError):
                continue  # the guest's import will report it, as it would natively
            pyc = _unchecked_hash_pyc(code, source)
            directory, _, filename = name.rpartition("/")
            member = f"{directory}/__pycache__/{filename[:-3]}.{tag}.pyc".lstrip("/")
            entry = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, pyc)
    return out.getvalue()


def _unchecked_hash_pyc(code: Any, source: bytes) -> bytes:
    from importlib import _bootstrap_external  # the stdlib's own pyc writer

    data: bytes = _bootstrap_external._code_to_hash_pyc(  # type: ignore[attr-defined]
        code, importlib.util.source_hash(source), checked=False
    )
    return data


def cached_bytecode(wheel_path: Path, wheel_sha256: str, target: GuestTarget) -> Path:
    """The bytecode archive for a wheel, compiled once per (wheel, Python, site)."""
    site = guest_site(target)
    key = hashlib.sha256(f"{wheel_sha256}|{sys.implementation.cache_tag}|{site}".encode())
    target_path = paths.cache_dir() / "bytecode" / f"{key.hexdigest()}.zip"
    if target_path.is_file():
        return target_path
    target_path.parent.mkdir(parents=True, exist_ok=True)
    data = compile_wheel(wheel_path, site)
    fd, tmp = tempfile.mkstemp(dir=target_path.parent, prefix=".bytecode-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, target_path)
    log.debug("compiled %s for %s", wheel_path.name, site)
    return target_path
