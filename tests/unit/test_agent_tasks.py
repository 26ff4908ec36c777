"""run_task with a fake context: a real setup dir (manifest + dists written here), uv for
the venv and the offline install, the unittest runner for the tests. No VM, no network."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import sys
import tarfile
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import pytest

from pyti.protocol import Finding, Metadata, Output, TaskFinished, TestResult
from pyti.protocol.manifest import SetupManifest

AGENT_DIR = Path(__file__).resolve().parents[2] / "guest_agent"
sys.path.insert(0, str(AGENT_DIR))

from pyti_agent import install, privileges, quality, tasks  # noqa: E402

pytestmark = pytest.mark.skipif(
    shutil.which(install.find_uv()) is None, reason="uv is not installed"
)


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def make_wheel(dists: Path, name: str, version: str, files: dict[str, str]) -> str:
    file_name = f"{name}-{version}-py3-none-any.whl"
    dist_info = f"{name}-{version}.dist-info"
    contents = {path: textwrap.dedent(text).encode() for path, text in files.items()}
    contents[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    )
    contents[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: pyti-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [_record_line(path, data) for path, data in contents.items()]
    record.append(f"{dist_info}/RECORD,,")
    contents[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(dists / file_name, "w") as zf:
        for path, data in contents.items():
            zf.writestr(path, data)
    return file_name


def make_sdist(dists: Path, name: str, version: str, files: dict[str, str]) -> str:
    file_name = f"{name}-{version}.tar.gz"
    with tarfile.open(dists / file_name, "w:gz") as tf:
        for path, text in files.items():
            data = textwrap.dedent(text).encode()
            info = tarfile.TarInfo(f"{name}-{version}/{path}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return file_name


def write_setup(
    setup: Path,
    *,
    name: str,
    sdist: str | None,
    wheel: str | None,
    runner: str = "unittest",
    runner_args: tuple[str, ...] = (),
) -> SetupManifest:
    dists = setup / "dists"
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in dists.iterdir()}
    manifest = SetupManifest(
        spec=name,
        package_name=name,
        package_version="1.0",
        sdist=sdist,
        wheel=wheel,
        install=(f"{name}==1.0",),
        build_requirements=(),
        files=files,
        runner=runner,
        runner_args=runner_args,
    )
    (setup / "manifest.cbor").write_bytes(manifest.to_cbor())
    return manifest


class FakeHost:
    def __init__(self) -> None:
        self.messages: list[object] = []
        self.lock = threading.Lock()

    def send(self, message: object) -> None:
        with self.lock:
            self.messages.append(message)

    def of(self, cls: type) -> list:  # type: ignore[type-arg]
        return [m for m in self.messages if isinstance(m, cls)]

    def output(self, task: str) -> str:
        return b"".join(m.data for m in self.of(Output) if m.task == task).decode(errors="replace")


def context(tmp_path: Path, manifest: SetupManifest | None, host: FakeHost) -> tasks.TaskContext:
    return tasks.TaskContext(
        send=host.send,
        manifest=manifest,
        setup_dir=tmp_path / "setup",
        work_dir=tmp_path / "work",
        cancelled=threading.Event(),
        test_args=(),
        user=privileges.User(uid=None, gid=None),
    )


FLAT_PACKAGE = {
    "flatpkg/__init__.py": """
        def answer():
            return 42
    """,
}
FLAT_TESTS = {
    "tests/__init__.py": "",
    "tests/test_answer.py": """
        import unittest
        import flatpkg

        class TestAnswer(unittest.TestCase):
            def test_answer(self):
                self.assertEqual(flatpkg.answer(), 42)

            def test_installed_copy(self):
                self.assertIn("site-packages", flatpkg.__file__)

            def test_wrong(self):
                self.assertEqual(flatpkg.answer(), 41)
    """,
}


def flat_setup(tmp_path: Path, **kwargs: object) -> SetupManifest:
    dists = tmp_path / "setup" / "dists"
    dists.mkdir(parents=True)
    wheel = make_wheel(dists, "flatpkg", "1.0", FLAT_PACKAGE)
    # The sdist's copy of the package differs: if the tests saw it, test_answer would fail.
    source = {"flatpkg/__init__.py": "def answer():\n    return 0\n", **FLAT_TESTS}
    sdist = make_sdist(dists, "flatpkg", "1.0", source)
    return write_setup(tmp_path / "setup", name="flatpkg", sdist=sdist, wheel=wheel, **kwargs)  # type: ignore[arg-type]


def test_install_then_unittest_on_the_installed_copy_of_a_flat_layout(tmp_path: Path) -> None:
    manifest = flat_setup(tmp_path, runner_args=("discover", "-s", "tests", "-t", "."))
    host = FakeHost()
    ctx = context(tmp_path, manifest, host)

    installed = tasks.run_task("install", ctx)
    tested = tasks.run_task("test", ctx)

    assert installed.outcome == "passed", host.output("install")
    assert tested.outcome == "failed", host.output("test")
    assert tested.exit_code == 1
    assert dict(tested.counts) == {"passed": 2, "failed": 1}
    results = {r.nodeid: r.outcome for r in host.of(TestResult)}
    assert results == {
        "tests.test_answer.TestAnswer.test_answer": "passed",
        "tests.test_answer.TestAnswer.test_installed_copy": "passed",
        "tests.test_answer.TestAnswer.test_wrong": "failed",
    }
    paths = [f.detail for f in host.of(Finding) if f.kind == "import-path"]
    assert len(paths) == 1
    assert paths[0].startswith("flatpkg -> ") and "site-packages" in paths[0]
    assert "moved flatpkg aside" in host.output("test")
    [environment] = [f.detail for f in host.of(Finding) if f.kind == "environment"]
    assert environment.startswith("TZ=UTC tzdata=")
    assert isinstance(tested, TaskFinished)


def test_a_package_without_tests_gets_no_tests_after_an_import_check(tmp_path: Path) -> None:
    dists = tmp_path / "setup" / "dists"
    dists.mkdir(parents=True)
    wheel = make_wheel(dists, "notests", "1.0", {"notests/__init__.py": "X = 1\n"})
    sdist = make_sdist(dists, "notests", "1.0", {"notests/__init__.py": "X = 1\n"})
    manifest = write_setup(tmp_path / "setup", name="notests", sdist=sdist, wheel=wheel)
    host = FakeHost()
    ctx = context(tmp_path, manifest, host)

    assert tasks.run_task("install", ctx).outcome == "passed"
    tested = tasks.run_task("test", ctx)

    assert tested.outcome == "no-tests", host.output("test")
    assert tested.exit_code == 5
    [finding] = [f for f in host.of(Finding) if f.kind == "no-tests"]
    assert "import of notests works" in finding.detail
    assert finding.task == "test"


def test_a_tampered_dist_is_an_error_naming_the_file(tmp_path: Path) -> None:
    manifest = flat_setup(tmp_path)
    wheel = tmp_path / "setup" / "dists" / "flatpkg-1.0-py3-none-any.whl"
    wheel.write_bytes(wheel.read_bytes() + b"tampered")
    host = FakeHost()

    finished = tasks.run_task("install", context(tmp_path, manifest, host))

    assert finished.outcome == "error"
    assert "flatpkg-1.0-py3-none-any.whl: sha256" in host.output("install")
    assert not (tmp_path / "work" / "venv").exists()


def test_an_unlisted_file_in_dists_is_refused(tmp_path: Path) -> None:
    manifest = flat_setup(tmp_path)
    (tmp_path / "setup" / "dists" / "extra-1.0.tar.gz").write_bytes(b"x")
    host = FakeHost()

    finished = tasks.run_task("install", context(tmp_path, manifest, host))

    assert finished.outcome == "error"
    assert "extra-1.0.tar.gz: not listed in the manifest" in host.output("install")


def test_a_missing_dependency_is_install_failed(tmp_path: Path) -> None:
    dists = tmp_path / "setup" / "dists"
    dists.mkdir(parents=True)
    wheel = make_wheel(dists, "lonely", "1.0", {"lonely.py": "X = 1\n"})
    files = {wheel: hashlib.sha256((dists / wheel).read_bytes()).hexdigest()}
    manifest = SetupManifest(
        spec="lonely",
        package_name="lonely",
        package_version="1.0",
        sdist=None,
        wheel=wheel,
        install=("lonely==1.0", "absent==2.0"),
        build_requirements=(),
        files=files,
    )
    host = FakeHost()

    finished = tasks.run_task("install", context(tmp_path, manifest, host))

    assert finished.outcome == "install-failed", host.output("install")
    assert finished.exit_code not in (0, None)


BROKEN_BACKEND = {
    "pyproject.toml": """
        [build-system]
        requires = []
        build-backend = "backend"
        backend-path = ["."]
    """,
    "backend.py": """
        def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
            raise RuntimeError("this sdist cannot be built")

        def build_sdist(sdist_directory, config_settings=None):
            raise RuntimeError("no")
    """,
}


def test_an_sdist_that_fails_to_build_is_build_failed(tmp_path: Path) -> None:
    dists = tmp_path / "setup" / "dists"
    dists.mkdir(parents=True)
    sdist = make_sdist(dists, "unbuildable", "1.0", BROKEN_BACKEND)
    manifest = write_setup(tmp_path / "setup", name="unbuildable", sdist=sdist, wheel=None)
    host = FakeHost()

    finished = tasks.run_task("install", context(tmp_path, manifest, host))

    assert finished.outcome == "build-failed", host.output("install")
    assert "this sdist cannot be built" in host.output("install")


def test_without_a_manifest_tasks_are_skipped(tmp_path: Path) -> None:
    host = FakeHost()

    finished = tasks.run_task("test", context(tmp_path, None, host))

    assert finished.outcome == "skipped"


def test_output_sink_keeps_head_and_tail_of_a_flood(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "OUTPUT_HEAD", 10)
    monkeypatch.setattr(tasks, "OUTPUT_TAIL", 10)
    monkeypatch.setattr(tasks, "OUTPUT_CHUNK", 4)
    host = FakeHost()
    sink = tasks.OutputSink("test", host.send)

    for i in range(10):
        sink("stdout", f"line{i}\n".encode())
    sink.close()

    text = host.output("test")
    assert text.startswith("line0\nline")
    assert text.endswith("line8\nline9\n")
    assert "bytes of output omitted" in text
    assert all(len(m.data) <= 4 for m in host.of(Output) if b"omitted" not in m.data)


DYNAMIC_BACKEND = {
    "pyproject.toml": """
        [build-system]
        requires = []
        build-backend = "backend"
        backend-path = ["."]
    """,
    "backend.py": """
        import os
        import sys

        def get_requires_for_build_wheel(config_settings=None):
            return []

        def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
            # Dependencies computed at build time: what a static reader cannot see.
            deps = ["attrs>=23"] + (["tomli"] if sys.version_info < (3, 99) else [])
            dist_info = os.path.join(metadata_directory, "dyn-1.0.dist-info")
            os.makedirs(dist_info)
            lines = ["Metadata-Version: 2.1", "Name: dyn", "Version: 1.0"]
            lines += [f"Requires-Dist: {d}" for d in deps]
            with open(os.path.join(dist_info, "METADATA"), "w") as f:
                f.write("\\n".join(lines) + "\\n")
            return "dyn-1.0.dist-info"
    """,
}

WHEEL_ONLY_BACKEND = {
    "pyproject.toml": DYNAMIC_BACKEND["pyproject.toml"],
    "backend.py": """
        import os
        import zipfile

        def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
            name = "dyn-1.0-py3-none-any.whl"
            with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as zf:
                text = "Name: dyn\\nVersion: 1.0\\nRequires-Dist: six\\n"
                zf.writestr("dyn-1.0.dist-info/METADATA", text)
            return name
    """,
}


@pytest.mark.parametrize(
    ("files", "expected"),
    [(DYNAMIC_BACKEND, b"Requires-Dist: attrs>=23"), (WHEEL_ONLY_BACKEND, b"Requires-Dist: six")],
)
def test_metadata_task_sends_the_backends_prepared_metadata(
    tmp_path: Path, files: dict[str, str], expected: bytes
) -> None:
    dists = tmp_path / "setup" / "dists"
    dists.mkdir(parents=True)
    sdist = make_sdist(dists, "dyn", "1.0", files)
    manifest = write_setup(tmp_path / "setup", name="dyn", sdist=sdist, wheel=None)
    host = FakeHost()

    finished = tasks.run_task("metadata", context(tmp_path, manifest, host))

    assert finished.outcome == "passed", host.output("metadata")
    [meta] = host.of(Metadata)
    assert (meta.name, meta.version) == ("dyn", "1.0")
    assert expected in meta.metadata


def test_metadata_task_reports_a_failing_backend_as_build_failed(tmp_path: Path) -> None:
    dists = tmp_path / "setup" / "dists"
    dists.mkdir(parents=True)
    sdist = make_sdist(dists, "unbuildable", "1.0", BROKEN_BACKEND)
    manifest = write_setup(tmp_path / "setup", name="unbuildable", sdist=sdist, wheel=None)
    host = FakeHost()

    finished = tasks.run_task("metadata", context(tmp_path, manifest, host))

    assert finished.outcome == "build-failed"
    assert host.of(Metadata) == []
    assert "this sdist cannot be built" in host.output("metadata")


def test_quality_task_counts_ruff_findings_by_rule(tmp_path: Path) -> None:
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists():
        pytest.skip("ruff is not in this venv")
    dists = tmp_path / "setup" / "dists"
    dists.mkdir(parents=True)
    source = {"messy/__init__.py": "import os\nimport sys\ndef f():\n    unused = 1\n"}
    sdist = make_sdist(dists, "messy", "1.0", source)
    manifest = write_setup(tmp_path / "setup", name="messy", sdist=sdist, wheel=None)
    (tmp_path / "setup" / "tools").mkdir()
    (tmp_path / "setup" / "tools" / "ruff").symlink_to(ruff)
    host = FakeHost()

    finished = tasks.run_task("quality", context(tmp_path, manifest, host))

    assert finished.outcome == "passed", host.output("quality")
    [finding] = host.of(Finding)
    detail = json.loads(finding.detail)
    assert detail["rules"] == {"F401": 2, "F841": 1}
    assert dict(finished.counts) == {"violations": 3, "rules": 2}


def test_quality_task_without_ruff_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quality.shutil, "which", lambda *a, **k: None)
    manifest = flat_setup(tmp_path)
    host = FakeHost()

    finished = tasks.run_task("quality", context(tmp_path, manifest, host))

    assert finished.outcome == "skipped"
    assert "ruff is not available" in host.output("quality")


def test_cancel_kills_the_test_process_group(tmp_path: Path) -> None:
    dists = tmp_path / "setup" / "dists"
    dists.mkdir(parents=True)
    wheel = make_wheel(dists, "slow", "1.0", {"slow/__init__.py": ""})
    pid_file = tmp_path / "child.pid"
    test = f"""
        import subprocess, sys, time, unittest

        class T(unittest.TestCase):
            def test_hangs(self):
                child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
                open({str(pid_file)!r}, "w").write(str(child.pid))
                time.sleep(600)
    """
    sdist = make_sdist(dists, "slow", "1.0", {"test_slow.py": test})
    manifest = write_setup(tmp_path / "setup", name="slow", sdist=sdist, wheel=wheel)
    host = FakeHost()
    ctx = context(tmp_path, manifest, host)
    assert tasks.run_task("install", ctx).outcome == "passed"

    def cancel_when_started() -> None:
        for _ in range(200):
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.05)
        ctx.cancelled.set()

    threading.Thread(target=cancel_when_started, daemon=True).start()
    finished = tasks.run_task("test", ctx)

    assert finished.outcome == "error"
    assert finished.exit_code is None
    assert not alive(int(pid_file.read_text()))


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for a reaper (the killed test was its parent)."""
    for _ in range(40):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.05)
    return True


def test_without_the_venv_module_uv_makes_the_venv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import venv

    def broken(*args: object, **kwargs: object) -> None:
        raise ImportError("no venv module in this image")

    monkeypatch.setattr(venv.EnvBuilder, "create", broken)
    manifest = flat_setup(tmp_path)
    host = FakeHost()

    finished = tasks.run_task("install", context(tmp_path, manifest, host))

    assert finished.outcome == "passed", host.output("install")
    assert "using uv venv" in host.output("install")
    assert "Creating virtual environment" in host.output("install")  # uv's own words


def test_a_hostile_sdist_is_not_extracted_and_the_test_task_says_why(tmp_path: Path) -> None:
    dists = tmp_path / "setup" / "dists"
    dists.mkdir(parents=True)
    wheel = make_wheel(dists, "evil", "1.0", {"evil/__init__.py": ""})
    with tarfile.open(dists / "evil-1.0.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("evil-1.0/../../escaped.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    manifest = write_setup(tmp_path / "setup", name="evil", sdist="evil-1.0.tar.gz", wheel=wheel)
    host = FakeHost()
    ctx = context(tmp_path, manifest, host)
    assert tasks.run_task("install", ctx).outcome == "passed"

    finished = tasks.run_task("test", ctx)

    assert finished.outcome == "error"
    assert "absolute or parent path" in host.output("test")
    assert not list(tmp_path.rglob("escaped.txt"))


def test_metadata_build_requirements_come_from_the_setup_disk(tmp_path: Path) -> None:
    # The backend lives in a build requirement (a wheel on the setup disk), not in-tree.
    dists = tmp_path / "setup" / "dists"
    dists.mkdir(parents=True)
    backend = DYNAMIC_BACKEND["backend.py"]
    make_wheel(dists, "dynbackend", "1.0", {"dynbackend.py": backend})
    pyproject = """
        [build-system]
        requires = ["dynbackend==1.0"]
        build-backend = "dynbackend"
    """
    sdist = make_sdist(dists, "dyn", "1.0", {"pyproject.toml": pyproject})
    manifest = write_setup(tmp_path / "setup", name="dyn", sdist=sdist, wheel=None)
    host = FakeHost()

    finished = tasks.run_task("metadata", context(tmp_path, manifest, host))

    assert finished.outcome == "passed", host.output("metadata")
    [meta] = host.of(Metadata)
    assert b"Requires-Dist: attrs>=23" in meta.metadata
