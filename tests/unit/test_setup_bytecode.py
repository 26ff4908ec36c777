from __future__ import annotations

import importlib.util
import marshal
import sys
import zipfile
from pathlib import Path

import pytest

from pyti.setup import bytecode
from pyti.setup.model import GuestTarget

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "guest_agent"))
from pyti_agent import install


def _wheel(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in members.items():
            wheel.writestr(name, text)
    return path


def test_pure_modules_get_unchecked_hash_pycs_naming_the_guest_path(tmp_path: Path) -> None:
    wheel = _wheel(
        tmp_path / "demo-1.0-py3-none-any.whl",
        {
            "demo/__init__.py": "X = 1\n",
            "demo/sub/mod.py": "def f():\n    return 2\n",
            "demo/broken.py": "def (:\n",
            "demo-1.0.dist-info/METADATA": "Name: demo\n",
            "demo-1.0.data/scripts/tool.py": "print('a script')\n",
        },
    )
    site = "/home/pyti/work/venv/lib/python3.11/site-packages"
    archive = zipfile.ZipFile(__import__("io").BytesIO(bytecode.compile_wheel(wheel, site)))
    tag = sys.implementation.cache_tag
    assert sorted(archive.namelist()) == [
        f"demo/__pycache__/__init__.{tag}.pyc",
        f"demo/sub/__pycache__/mod.{tag}.pyc",
    ]
    pyc = archive.read(f"demo/sub/__pycache__/mod.{tag}.pyc")
    assert pyc[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(pyc[4:8], "little") == 0b01  # hash-based, never checked
    assert pyc[8:16] == importlib.util.source_hash(b"def f():\n    return 2\n")
    code = marshal.loads(pyc[16:])
    assert code.co_filename == f"{site}/demo/sub/mod.py"


def test_only_a_guest_with_the_hosts_python_gets_host_bytecode() -> None:
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert bytecode.can_compile_for(GuestTarget(python_version=here))
    assert not bytecode.can_compile_for(GuestTarget(python_version="3.99"))


def test_the_agent_links_pycache_dirs_only_where_the_install_put_the_package(
    tmp_path: Path,
) -> None:
    tree, site = tmp_path / "tree", tmp_path / "site"
    for rel in ("demo/__pycache__", "demo/sub/__pycache__", "absent/__pycache__"):
        (tree / rel).mkdir(parents=True)
        (tree / rel / "x.pyc").write_bytes(b"pyc")
    (site / "demo" / "sub").mkdir(parents=True)
    (site / "demo" / "sub" / "__pycache__").mkdir()  # already there: left alone
    assert install.link_bytecode(tree, site) == 1
    assert (site / "demo" / "__pycache__").resolve() == (tree / "demo" / "__pycache__")
    assert not (site / "demo" / "sub" / "__pycache__").is_symlink()
    assert not (site / "absent").exists()


@pytest.mark.parametrize("name", ["../evil/__pycache__/x.pyc", "demo/__pycache__/../../x.pyc"])
def test_the_disk_tree_never_takes_odd_member_names(tmp_path: Path, name: str) -> None:
    from pyti.setup.image import _stage_bytecode

    archive = _wheel(tmp_path / "a.zip", {name: "x", "ok/__pycache__/m.pyc": "y"})
    _stage_bytecode(archive, tmp_path / "tree")
    found = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.pyc"))
    assert found == ["tree/ok/__pycache__/m.pyc"]
