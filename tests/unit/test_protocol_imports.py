"""pyti.protocol is copied into the guest alone: it may import only the stdlib and cbor2."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "pyti" / "protocol"


def test_every_module_imports_only_the_stdlib_cbor2_or_its_siblings() -> None:
    allowed = set(sys.stdlib_module_names) | {"cbor2", "__future__"}
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


def test_it_works_from_a_copy_laid_out_like_the_guest(tmp_path: Path) -> None:
    # /opt/pyti in the guest: pyti/__init__.py (empty) and pyti/protocol/, nothing else.
    root = tmp_path / "opt"
    (root / "pyti").mkdir(parents=True)
    (root / "pyti" / "__init__.py").write_text("")
    shutil.copytree(PACKAGE, root / "pyti" / "protocol", ignore=shutil.ignore_patterns("*.pyc"))
    script = (
        "import sys, os\n"
        "from pyti.protocol import Connection, Role, Hello, Goodbye\n"
        "from pyti.protocol.blocking import GuestPort\n"
        "r, w = os.pipe()\n"
        "port = GuestPort(w)\n"
        "port.send(Hello(protocol_version=1, agent_version='a', python_version='3', "
        "image_id='i', boot_id='b'))\n"
        "port.send(Goodbye())\n"
        "host = Connection(Role.HOST)\n"
        "host.receive_data(os.read(r, 4096))\n"
        "print(type(host.next_event()).__name__, type(host.next_event()).__name__)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'typer', 'rich'))\n"
        "print(bad)\n"
        "import pyti.protocol\n"
        f"print(pyti.protocol.__file__.startswith({str(root)!r}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path[:0] = [{str(root)!r}]\n{script}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["Hello Goodbye", "[]", "True"]
