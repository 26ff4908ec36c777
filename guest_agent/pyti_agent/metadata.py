"""The metadata task: the package's core metadata from its own build backend (PEP 517).

For sdists whose dependencies cannot be read statically (a setup.py that computes
them), the host asks for this first pass. In the guest, as user pyti:

1. extract the sdist; read `[build-system]` (the setuptools legacy backend when
   absent, as pip and uv do);
2. `uv venv` a build environment and install the build requirements offline from
   dists/ (the host put them there), then whatever `get_requires_for_build_wheel`
   adds;
3. call `prepare_metadata_for_build_wheel` (or, for a backend without it,
   `build_wheel` and take METADATA out of the wheel) through a small stdlib-only
   hook runner, the same protocol pyproject-hooks speaks;
4. send the METADATA bytes back as a Metadata frame.
"""

from __future__ import annotations

import email.parser
import json
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from . import install, privileges

if TYPE_CHECKING:
    from pyti.protocol import TaskFinished

    from .tasks import OutputSink, TaskContext

MAX_METADATA = 512 << 10
MAX_REQUIRES = 256
HOOK_TIMEOUT = 1800.0
LEGACY_BACKEND = "setuptools.build_meta:__legacy__"
LEGACY_REQUIRES = ("setuptools>=40.8.0",)

# The hook runner: stdlib only, run by the build environment's Python in the sdist root.
HOOK_RUNNER = """\
import importlib, json, os, sys, zipfile

def load(backend, backend_path):
    for entry in reversed(backend_path):
        sys.path.insert(0, os.path.abspath(entry))
    module_name, _, attrs = backend.partition(":")
    obj = importlib.import_module(module_name)
    for attr in filter(None, attrs.split(".")):
        obj = getattr(obj, attr)
    return obj

def main(command, backend, backend_path, result_file, work=None):
    hooks = load(backend, json.loads(backend_path))
    if command == "requires":
        hook = getattr(hooks, "get_requires_for_build_wheel", None)
        result = list(hook({})) if hook else []
    else:
        hook = getattr(hooks, "prepare_metadata_for_build_wheel", None)
        if hook is not None:
            result = os.path.join(work, hook(work, {}), "METADATA")
        else:
            wheel = os.path.join(work, hooks.build_wheel(work, {}))
            with zipfile.ZipFile(wheel) as zf:
                name = next(n for n in zf.namelist()
                            if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
                result = zf.extract(name, os.path.join(work, "from-wheel"))
    with open(result_file, "w") as f:
        json.dump(result, f)

main(*sys.argv[1:])
"""


class MetadataFailed(Exception):
    def __init__(self, outcome: str, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.exit_code = exit_code


def build_system(root: Path) -> tuple[tuple[str, ...], str, tuple[str, ...]]:
    """(requires, backend, backend-path) from pyproject.toml, with PEP 517's fallback."""
    try:
        data = tomllib.loads(privileges.read_text_capped(root / "pyproject.toml"))
    except FileNotFoundError:
        return LEGACY_REQUIRES, LEGACY_BACKEND, ()
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MetadataFailed("build-failed", f"pyproject.toml does not parse: {exc}") from exc
    table = data.get("build-system")
    if not isinstance(table, dict):
        return LEGACY_REQUIRES, LEGACY_BACKEND, ()
    requires = table.get("requires", list(LEGACY_REQUIRES))
    backend = table.get("build-backend", LEGACY_BACKEND)
    path = table.get("backend-path", [])
    if not (isinstance(requires, list) and all(isinstance(r, str) for r in requires)):
        raise MetadataFailed("build-failed", "build-system.requires is not a list of strings")
    if not isinstance(backend, str) or not (
        isinstance(path, list) and all(isinstance(p, str) for p in path)
    ):
        raise MetadataFailed("build-failed", "build-backend or backend-path is malformed")
    return tuple(requires[:MAX_REQUIRES]), backend, tuple(path)


def read_metadata(path: Path) -> tuple[str, str, bytes]:
    try:
        data = privileges.read_capped(path, MAX_METADATA)
    except OSError as exc:
        raise MetadataFailed("build-failed", f"no usable METADATA: {exc}") from exc
    headers = email.parser.BytesHeaderParser().parsebytes(data)
    name, version = headers.get("Name"), headers.get("Version")
    if not name or not version:
        raise MetadataFailed("build-failed", "METADATA lacks Name or Version")
    return str(name)[:256], str(version)[:256], data


def run(ctx: TaskContext, out: OutputSink, began: float) -> TaskFinished:
    from pyti.protocol import Metadata

    from .tasks import finished, verify_setup

    if not verify_setup(ctx, out):
        return finished("metadata", "error", None, began)
    try:
        name, version, data = _prepare(ctx, out)
    except MetadataFailed as exc:
        out.note(f"metadata: {exc}")
        return finished("metadata", exc.outcome, exc.exit_code, began)
    ctx.send(Metadata(name=name, version=version, metadata=data))
    out.note(f"metadata of {name} {version}: {len(data)} bytes")
    return finished("metadata", "passed", 0, began)


def _prepare(ctx: TaskContext, out: OutputSink) -> tuple[str, str, bytes]:
    from .tasks import extract_sdist

    user = ctx.run_as()
    layout = install.WorkLayout(ctx.work_dir)
    layout.prepare(user)
    root = extract_sdist(ctx, out, layout.work / "meta-src")
    if root is None:
        raise MetadataFailed("error", "the manifest names no sdist to prepare metadata from")
    requires, backend, backend_path = build_system(root)
    build = install.WorkLayout(layout.work / "build")
    build.work.mkdir(parents=True, exist_ok=True)
    if user.uid is not None and user.gid is not None:
        privileges.chown_tree(build.work, user)
    venv = install.make_venv(build, on_output=out, cancelled=ctx.cancelled, user=user)
    if not venv.ok:
        raise MetadataFailed("error", "uv venv for the build environment failed", venv.returncode)
    dists = ctx.setup_dir / "dists"
    runner = layout.work / "pyti_hooks.py"
    runner.write_text(HOOK_RUNNER)
    result_file = layout.tmp / "hook-result.json"
    hook_dir = layout.work / "hook-out"
    hook_dir.mkdir(exist_ok=True)
    if user.uid is not None and user.gid is not None:
        privileges.chown_tree(hook_dir, user)

    def install_requires(items: tuple[str, ...]) -> None:
        if not items:
            return
        step, _ = install.install_packages(
            build,
            dists=dists,
            targets=items,
            may_build=False,
            on_output=out,
            cancelled=ctx.cancelled,
            user=user,
            no_deps=False,
        )
        if step.outcome != "passed":
            raise MetadataFailed("build-failed", "installing build requirements failed")

    def hook(command: str) -> object:
        argv = [str(build.venv / "bin" / "python"), str(runner), command, backend]
        argv += [json.dumps(list(backend_path)), str(result_file), str(hook_dir)]
        result = privileges.run(
            argv,
            cwd=root,
            env=layout.env(),
            on_output=out,
            cancelled=ctx.cancelled,
            user=user,
            timeout=HOOK_TIMEOUT,
        )
        if not result.ok:
            raise MetadataFailed("build-failed", f"the {command} hook failed", result.returncode)
        try:
            value: object = json.loads(privileges.read_capped(result_file, MAX_METADATA))
        except (OSError, ValueError) as exc:
            raise MetadataFailed("build-failed", f"the {command} hook gave no result") from exc
        result_file.unlink()
        return value

    install_requires(requires)
    extra = hook("requires")
    if not (isinstance(extra, list) and all(isinstance(r, str) for r in extra)):
        raise MetadataFailed("build-failed", "get_requires_for_build_wheel gave no list")
    install_requires(tuple(extra[:MAX_REQUIRES]))
    path = hook("metadata")
    if not isinstance(path, str):
        raise MetadataFailed("build-failed", "the metadata hook gave no path")
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(hook_dir.resolve()):
        raise MetadataFailed("build-failed", "the metadata hook pointed outside its directory")
    return read_metadata(resolved)
