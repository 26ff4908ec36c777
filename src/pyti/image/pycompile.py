"""Byte-compile the agent and codec with the guest's own Python, at image build.

They reach the guest on a fresh overlay each boot, so without .pyc files the guest would
compile them on every boot (~0.2 s under TCG, on the way to Hello). The host's Python may
be another version than the guest's (trixie has 3.13), so the build runs the guest's
interpreter itself: unsquashfs takes python3.X, its pure-Python stdlib and the few shared
libraries it links out of root.sqfs, and the unpacked dynamic loader runs it on the host.
This is Debian's python3 from the suite, never code of a package under test.

The .pyc files are "unchecked-hash" (PEP 552): valid regardless of file mtimes, which the
initramfs does not keep.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from pyti.errors import ImageBuildFailed
from pyti.image.commands import require

_LIBDIR = "usr/lib/x86_64-linux-gnu"

_COMPILE = """
import json, py_compile, sys
for source, dfile, cfile in json.load(sys.stdin):
    py_compile.compile(source, cfile=cfile, dfile=dfile, doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
print(sys.implementation.cache_tag)
"""


def _extract_python(root_sqfs: Path, minor: str, dest: Path) -> Path:
    stdlib = f"usr/lib/python{minor}"
    patterns = [
        f"usr/bin/python{minor}",
        f"{stdlib}/*.py",
        *(f"{stdlib}/{pkg}" for pkg in ("encodings", "importlib", "collections", "re", "json")),
        f"{_LIBDIR}/ld-linux-x86-64.so.2",
        *(f"{_LIBDIR}/{lib}*" for lib in ("libc.so", "libm.so", "libz.so", "libexpat.so")),
    ]
    result = subprocess.run(
        [require("unsquashfs"), "-n", "-q", "-d", str(dest), str(root_sqfs), *patterns],
        capture_output=True,
        check=False,
    )
    python = dest / "usr" / "bin" / f"python{minor}"
    if result.returncode not in (0, 2) or not python.exists():
        detail = result.stderr.decode("utf-8", "replace")[-500:]
        raise ImageBuildFailed(f"cannot unpack the guest's python{minor}: {detail}")
    return python


def compile_files(
    root_sqfs: Path, python_version: str, files: dict[str, bytes]
) -> tuple[str, dict[str, bytes]]:
    """(cache tag, {guest path of the .pyc: bytes}) for {guest path of the .py: source}."""
    minor = ".".join(python_version.split(".")[:2])
    with tempfile.TemporaryDirectory(prefix="pyti-pyc-") as tmp_name:
        tmp = Path(tmp_name)
        python = _extract_python(root_sqfs, minor, tmp / "runtime")
        jobs = []
        for index, (guest_path, source) in enumerate(sorted(files.items())):
            src = tmp / f"{index}.py"
            src.write_bytes(source)
            jobs.append((str(src), guest_path, str(tmp / f"{index}.pyc")))
        loader = tmp / "runtime" / _LIBDIR / "ld-linux-x86-64.so.2"
        result = subprocess.run(
            [
                str(loader),
                "--library-path",
                str(loader.parent),
                str(python),
                "-I",
                "-S",
                "-c",
                _COMPILE,
            ],
            input=json.dumps(jobs).encode(),
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            detail = result.stderr.decode("utf-8", "replace")[-1000:]
            raise ImageBuildFailed(f"byte-compiling the agent with python{minor} failed: {detail}")
        tag = result.stdout.decode().strip()
        out = {}
        for _, guest_path, cfile in jobs:
            directory, _, name = guest_path.rpartition("/")
            stem = name.removesuffix(".py")
            out[f"{directory}/__pycache__/{stem}.{tag}.pyc"] = Path(cfile).read_bytes()
    return tag, out
