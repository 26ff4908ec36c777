"""Dependencies with only sdists: uv's words parsed, the re-resolution loop, static reads."""

from __future__ import annotations

import hashlib
import io
import stat
import tarfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from pyti.errors import ResolutionFailed
from pyti.setup import resolve, sdist_only
from pyti.setup.index import IndexFile, make_file
from pyti.setup.model import GuestTarget

PY311 = GuestTarget("3.11", "x86_64-manylinux_2_36")


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYTI_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


# uv 0.13.9's stderr, verbatim, for `uv pip compile --no-build` of these requirements.
UV_HDFS = """\
error: No solution found when resolving dependencies
  cause: Because all of:
             hdfs<=2.5.2
             hdfs>=2.5.4,<=2.5.8
          have no usable wheels and only the following versions of hdfs are available:
             hdfs<=2.5.2
             hdfs==2.5.3
             hdfs>=2.5.4
         we can conclude that all of:
             hdfs<2.5.3
             hdfs>2.5.3,<=2.5.8
          cannot be used.
         And because hdfs==2.5.3 has no wheels with a matching Python implementation tag \
(e.g., `cp311`) and only the following versions of hdfs are available:
             hdfs<=2.5.8
             hdfs>=2.6.0
         we can conclude that hdfs<2.6.0 cannot be used. (1)

         Because all versions of docopt have no usable wheels and hdfs>=2.6.0,<=2.7.0 depends \
on docopt, we can conclude that hdfs>=2.6.0,<=2.7.0 cannot be used.
         And because we know from (1) that hdfs<2.6.0 cannot be used, we can conclude that \
hdfs<=2.7.0 cannot be used.
         And because hdfs>=2.7.1 has no usable wheels and you require hdfs, we can conclude \
that your requirements are unsatisfiable.

hint: Wheels are required for `hdfs` because building from source is disabled for all \
packages (i.e., with `--no-build`)

hint: You require CPython 3.11 (`cp311`), but we only found wheels for `hdfs` (v2.5.3) with \
the following Python implementation tag: `py2`

hint: Wheels are required for `docopt` because building from source is disabled for all \
packages (i.e., with `--no-build`)
"""

UV_COVERALLS = """\
error: No solution found when resolving dependencies
  cause: Because docopt>=0.6.1 has no usable wheels and coveralls==3.3.1 depends on \
docopt>=0.6.1, we can conclude that coveralls==3.3.1 cannot be used.
         And because you require coveralls==3.3.1, we can conclude that your requirements \
are unsatisfiable.

hint: Wheels are required for `docopt` because building from source is disabled for all \
packages (i.e., with `--no-build`)
"""

UV_DOCOPT_BELOW = """\
error: No solution found when resolving dependencies
  cause: Because docopt<=0.6.1 has no usable wheels and only the following versions of \
docopt are available:
             docopt<=0.6.1
             docopt>=0.6.2
         we can conclude that docopt<0.6.2 cannot be used.
         And because you require docopt<0.6.2, we can conclude that your requirements are \
unsatisfiable.

hint: Wheels are required for `docopt` because building from source is disabled for all \
packages (i.e., with `--no-build`)
"""

UV_CONFLICT = """\
error: No solution found when resolving dependencies
  cause: Because you require attrs<20 and attrs>=23, we can conclude that your requirements \
are unsatisfiable.
"""


@pytest.mark.parametrize(
    ("stderr", "names"),
    [
        (UV_HDFS, ("docopt", "hdfs")),
        (UV_COVERALLS, ("docopt",)),
        (UV_DOCOPT_BELOW, ("docopt",)),
        (UV_CONFLICT, ()),
    ],
)
def test_uv_explanations_name_the_projects_without_wheels(
    stderr: str, names: tuple[str, ...]
) -> None:
    assert resolve.no_usable_wheels(stderr) == names


def test_the_no_usable_wheels_clause_names_a_project_without_the_hint() -> None:
    text = "cause: Because all versions of Py_Thing have no usable wheels and you require py-thing"
    assert resolve.no_usable_wheels(text) == ("py-thing",)
    assert resolve.no_usable_wheels("Because docopt>=0.6.1 has no usable wheels") == ("docopt",)


@pytest.mark.parametrize(
    ("stderr", "name", "allowed"),
    [
        (UV_COVERALLS, "docopt", ">=0.6.1"),  # a dependent's requirement
        (UV_DOCOPT_BELOW, "docopt", "<0.6.2"),  # the user's requirement
        (UV_HDFS, "docopt", ""),  # "depends on docopt": any version
        ("x depends on foo[bar]{python_full_version >= '3.8'}>=1,<2, we", "foo", "<2,>=1"),
        ("you require foo>=1 and y depends on foo!=1.5", "foo", "!=1.5,>=1"),
    ],
)
def test_uv_explanations_give_the_versions_required(stderr: str, name: str, allowed: str) -> None:
    assert resolve.required_versions(stderr, name) == SpecifierSet(allowed)


def write_script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


async def test_compile_pins_passes_excludes_and_raises_no_usable_wheels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "stderr.txt").write_text(UV_COVERALLS)
    fake_uv = write_script(
        tmp_path / "uv",
        "#!/bin/sh\n"
        f'echo "$@" > {tmp_path}/argv\n'
        'while [ "$1" != "--excludes" ] && [ -n "$1" ]; do shift; done\n'
        f'[ -n "$2" ] && cp "$2" {tmp_path}/excludes\n'
        f"cat {tmp_path}/stderr.txt >&2\nexit 1\n",
    )
    monkeypatch.setattr(resolve, "uv_binary", lambda: str(fake_uv))
    options = resolve.Options(("https://pypi.org/simple",))
    with pytest.raises(resolve.NoUsableWheels) as caught:
        await resolve.compile_pins(["coveralls==3.3.1"], PY311, options, excludes=["six", "a-b"])
    assert caught.value.projects == {"docopt": SpecifierSet(">=0.6.1")}
    assert (tmp_path / "excludes").read_text() == "six\na-b\n"
    assert "--no-build" in (tmp_path / "argv").read_text().split()
    assert str(caught.value).startswith("No solution found")


def sdist_pin(name: str, version: str = "1.0", requires: Sequence[str] = ()) -> resolve.SdistPin:
    return resolve.SdistPin(
        name, version, f"{name}-{version}.tar.gz", "ab" * 32, Path("/x"), tuple(requires), ()
    )


def pins(names: Sequence[str]) -> tuple[resolve.Pin, ...]:
    return tuple(resolve.Pin(n, "1", f"{n}-1-py3-none-any.whl", "u", "0", None) for n in names)


class World:
    """A fake uv: who depends on what, and which projects have only sdists."""

    def __init__(self, graph: dict[str, list[str]], sdist_only: set[str]) -> None:
        self.graph, self.sdist_only = graph, sdist_only
        self.calls: list[tuple[list[str], list[str]]] = []

    async def compile(
        self,
        requirements: Sequence[str],
        target: GuestTarget,
        options: resolve.Options,
        excludes: Sequence[str] = (),
    ) -> tuple[resolve.Pin, ...]:
        self.calls.append((list(requirements), list(excludes)))
        todo = [Requirement(r).name for r in requirements]
        seen: set[str] = set()
        while todo:
            name = todo.pop()
            if name in seen or name in excludes:
                continue
            seen.add(name)
            if name not in self.sdist_only:  # uv never sees what a wheel-less project needs
                todo += self.graph.get(name, [])
        missing = sorted(seen & self.sdist_only)
        if missing:
            raise resolve.NoUsableWheels(
                "No solution found\n  cause: "
                + f"all versions of {missing[0]} have no usable wheels",
                {name: SpecifierSet() for name in missing},
            )
        return pins(sorted(seen))

    async def lookup(self, name: str, allowed: SpecifierSet) -> resolve.SdistPin:
        if name == "needs-build":
            raise ResolutionFailed(f"{name} 1.0 has only an sdist ... need a build")
        return sdist_pin(name, requires=self.graph.get(name, []))


async def test_sdist_only_dependencies_are_excluded_and_their_own_deps_resolved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # pkg -> docopt (sdist only) -> legacy (sdist only, found only in round two) -> six
    world = World(
        {"pkg": ["docopt", "attrs"], "docopt": ["legacy"], "legacy": ["six"]},
        {"docopt", "legacy"},
    )
    monkeypatch.setattr(resolve, "compile_pins", world.compile)
    result = await resolve.resolve(["pkg==1"], ["pytest"], PY311, resolve.Options(()), world.lookup)
    assert [s.name for s in result.sdists] == ["docopt", "legacy"]
    assert [p.name for p in result.pins] == ["attrs", "pkg", "pytest", "six"]
    assert result.kept == ("pytest",)
    assert world.calls == [
        (["pkg==1", "pytest"], []),
        (["pkg==1", "pytest", "legacy"], ["docopt"]),
        (["pkg==1", "pytest", "legacy", "six"], ["docopt", "legacy"]),
    ]


async def test_without_a_lookup_a_dependency_without_wheels_fails_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World({"pkg": ["docopt"]}, {"docopt"})
    monkeypatch.setattr(resolve, "compile_pins", world.compile)
    with pytest.raises(resolve.NoUsableWheels, match="docopt have no usable wheels"):
        await resolve.resolve(["pkg==1"], [], PY311, resolve.Options(()))


async def test_the_versions_uv_and_the_requirements_allow_reach_the_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[str, SpecifierSet]] = []

    async def fake(
        requirements: Sequence[str],
        target: GuestTarget,
        options: resolve.Options,
        excludes: Sequence[str] = (),
    ) -> tuple[resolve.Pin, ...]:
        if "docopt" not in excludes:
            raise resolve.NoUsableWheels(
                UV_COVERALLS, {"docopt": resolve.required_versions(UV_COVERALLS, "docopt")}
            )
        return pins(["coveralls"])

    async def lookup(name: str, allowed: SpecifierSet) -> resolve.SdistPin:
        asked.append((name, allowed))
        return sdist_pin(name, "0.6.2")

    monkeypatch.setattr(resolve, "compile_pins", fake)
    requirements = ["coveralls==3.3.1", "docopt<0.7", 'docopt<0.5; sys_platform == "win32"']
    result = await resolve.resolve(requirements, [], PY311, resolve.Options(()), lookup)
    assert asked == [("docopt", SpecifierSet(">=0.6.1,<0.7"))]
    assert [s.requirement for s in result.sdists] == ["docopt==0.6.2"]


async def test_a_test_dependency_whose_sdist_needs_a_build_is_dropped_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World({"pkg": ["docopt"], "pytest-thing": ["needs-build"]}, {"docopt", "needs-build"})
    monkeypatch.setattr(resolve, "compile_pins", world.compile)
    result = await resolve.resolve(
        ["pkg==1"], ["pytest", "pytest-thing"], PY311, resolve.Options(()), world.lookup
    )
    assert result.kept == ("pytest",)
    assert result.dropped == (
        ("pytest-thing", "needs-build 1.0 has only an sdist ... need a build"),
    )
    assert [s.name for s in result.sdists] == ["docopt"]


async def test_a_strict_dependency_whose_sdist_needs_a_build_fails_the_resolution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World({"pkg": ["needs-build"]}, {"needs-build"})
    monkeypatch.setattr(resolve, "compile_pins", world.compile)
    with pytest.raises(ResolutionFailed, match=r"needs-build 1\.0 has only an sdist"):
        await resolve.resolve(["pkg==1"], ["pytest"], PY311, resolve.Options(()), world.lookup)


async def test_the_rounds_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    chain = {f"p{i}": [f"p{i + 1}"] for i in range(20)}
    world = World({"pkg": ["p0"], **chain}, set(chain))
    monkeypatch.setattr(resolve, "compile_pins", world.compile)
    with pytest.raises(ResolutionFailed, match=r"after 8 rounds \(p0, p1, .*p7\)"):
        await resolve.resolve(["pkg==1"], [], PY311, resolve.Options(()), world.lookup)
    assert len(world.calls) == resolve.MAX_SDIST_ROUNDS


def pkg_info(version: str, *headers: str) -> bytes:
    lines = [f"Metadata-Version: {version}", "Name: thing", "Version: 1.0", *headers]
    return "\n".join(lines).encode()


NO_STATIC: dict[str, bytes] = {
    "PKG-INFO": pkg_info("2.1", "Requires-Dist: six"),
    "setup.py": b"",
}


def test_dependencies_that_need_a_build_fail_naming_the_project_and_the_fix() -> None:
    with pytest.raises(ResolutionFailed) as caught:
        sdist_only.dependencies("thing", "1.0", NO_STATIC, None, PY311)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("thing 1.0 has only an sdist for the guest")
    assert "need a build" in message
    assert "fix: --extra-index-url an index that has a thing wheel" in message


def test_static_metadata_gives_the_dependencies_for_the_guest() -> None:
    members = {
        "PKG-INFO": pkg_info(
            "2.2", "Requires-Dist: six>=1", 'Requires-Dist: pywin32; sys_platform == "win32"'
        )
    }
    assert sdist_only.dependencies("thing", "1.0", members, None, PY311) == (("six>=1",), "")
    pyproject = {"project": {"name": "thing", "dependencies": ["attrs"]}}
    assert sdist_only.dependencies("thing", "1.0", {}, pyproject, PY311) == (("attrs",), "")


LEGACY: dict[str, bytes] = {
    "PKG-INFO": pkg_info("1.1", "Summary: old"),
    "thing.egg-info/PKG-INFO": pkg_info("1.1", "Summary: old"),
    "thing.egg-info/SOURCES.txt": b"",
}


def test_a_legacy_sdist_whose_egg_info_has_no_requires_txt_has_no_dependencies() -> None:
    assert sdist_only.dependencies("thing", "1.0", LEGACY, None, PY311) == (
        (),
        sdist_only.LEGACY_NOTE,
    )
    src_layout = {k.replace("thing.egg", "src/thing.egg"): v for k, v in LEGACY.items()}
    assert sdist_only.dependencies("thing", "1.0", src_layout, None, PY311)[0] == ()


@pytest.mark.parametrize(
    "members",
    [
        {**LEGACY, "thing.egg-info/requires.txt": b"six\n"},  # it declared some
        {"PKG-INFO": pkg_info("1.1")},  # no egg-info: distutils, or anything
        {**LEGACY, "thing.egg-info/PKG-INFO": pkg_info("1.1").replace(b"thing", b"other")},
    ],
)
def test_other_legacy_sdists_are_not_guessed(members: dict[str, bytes]) -> None:
    with pytest.raises(ResolutionFailed, match="need a build"):
        sdist_only.dependencies("thing", "1.0", members, None, PY311)


def index_file(filename: str, *, yanked: bool = False, python: str | None = None) -> IndexFile:
    made = make_file(filename, f"https://f/{filename}", "ab" * 32, python, yanked)
    assert made is not None
    return made


LISTING = [
    index_file("thing-0.5.tar.gz"),
    index_file("thing-0.6.tar.gz"),
    index_file("thing-0.6.zip"),
    index_file("thing-0.7.tar.gz", yanked=True),
    index_file("thing-0.8.tar.gz", python=">=3.12"),
    index_file("thing-0.9.tar.gz"),
    index_file("thing-0.9-py3-none-any.whl"),  # this version resolves without pyti's help
]


@pytest.mark.parametrize(
    ("allowed", "chosen"),
    [
        ("", "thing-0.6.tar.gz"),  # not yanked, fits 3.11, no wheel; .tar.gz over .zip
        ("<0.6", "thing-0.5.tar.gz"),
        ("==0.7", "thing-0.7.tar.gz"),  # yanked files serve exact pins
        (">=0.9", "thing-0.9.tar.gz"),  # only a version with a wheel is left: take it
    ],
)
def test_the_newest_allowed_sdist_is_chosen(allowed: str, chosen: str) -> None:
    assert sdist_only.newest_sdist(LISTING, "thing", SpecifierSet(allowed), PY311).filename == (
        chosen
    )


def test_no_allowed_sdist_fails_naming_the_project() -> None:
    with pytest.raises(ResolutionFailed, match=r"thing has no usable wheel .* no sdist of thing>1"):
        sdist_only.newest_sdist(LISTING, "thing", SpecifierSet(">1"), PY311)


def legacy_sdist() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in {
            "thing-1.0/PKG-INFO": pkg_info("1.1"),
            "thing-1.0/thing.egg-info/PKG-INFO": pkg_info("1.1"),
            "thing-1.0/setup.py": b"raise SystemExit('never run on the host')\n",
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def test_the_lookup_reads_the_index_once_and_downloads_the_sdist_verified() -> None:
    sdist = legacy_sdist()
    sha256 = hashlib.sha256(sdist).hexdigest()
    page = {
        "files": [
            {"filename": "thing-1.0.tar.gz", "url": "../../files/thing-1.0.tar.gz",
             "hashes": {"sha256": sha256}},
        ]
    }  # fmt: skip
    requests: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(str(request.url))
        if request.url.path.endswith("/thing/"):
            return httpx.Response(
                200, json=page, headers={"content-type": "application/vnd.pypi.simple.v1+json"}
            )
        return httpx.Response(200, content=sdist)

    options = resolve.Options(("https://idx.example/simple",))
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        lookup = sdist_only.SdistLookup(PY311, options, client)
        pin = await lookup("thing", SpecifierSet())
        again = await lookup("thing", SpecifierSet())
        other = await lookup("thing", SpecifierSet(">=1"))
    assert pin == again == other
    assert (pin.requirement, pin.filename, pin.sha256) == ("thing==1.0", "thing-1.0.tar.gz", sha256)
    assert pin.requires == () and pin.note == sdist_only.LEGACY_NOTE
    assert pin.build_requires == ("setuptools>=40.8", "wheel")
    assert pin.path.read_bytes() == sdist
    assert requests == [
        "https://idx.example/simple/thing/",
        "https://idx.example/files/thing-1.0.tar.gz",  # relative to the page
    ]


def test_a_requirement_the_chosen_version_breaks_is_reported_with_the_fix() -> None:
    chosen = [sdist_pin("docopt", "0.6.2")]
    sdist_only.check_versions(chosen, [("a 1", [Requirement("docopt>=0.6")])], PY311)
    sdist_only.check_versions(
        chosen, [("a 1", [Requirement('docopt<0.6; sys_platform == "win32"')])], PY311
    )
    with pytest.raises(ResolutionFailed) as caught:
        sdist_only.check_versions(
            chosen, [("a 1", [Requirement("six")]), ("b 2", [Requirement("docopt<0.6")])], PY311
        )
    assert str(caught.value) == (
        "docopt has only sdists for the guest; pyti chose 0.6.2, but b 2 requires docopt<0.6;"
        " fix: --with 'docopt<0.6'"
    )


async def test_build_requirements_resolve_together_else_one_sdist_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pyti import setup

    calls: list[list[str]] = []

    async def fake(
        requirements: Sequence[str], target: GuestTarget, options: resolve.Options
    ) -> tuple[resolve.Pin, ...]:
        calls.append(sorted(requirements))
        if "setuptools<60" in requirements and "setuptools>=70" in requirements:
            raise ResolutionFailed("conflict")
        return pins([Requirement(r).name for r in requirements])

    monkeypatch.setattr(resolve, "compile_pins", fake)
    old = resolve.SdistPin("old", "1", "old-1.tar.gz", "0", Path("/x"), (), ("setuptools<60",))
    new = resolve.SdistPin("new", "1", "new-1.tar.gz", "0", Path("/x"), (), ("setuptools>=70",))
    options = resolve.Options(())
    got = await setup._build_pins(["flit_core"], [new], PY311, options)
    assert [p.name for p in got] == ["flit_core", "setuptools"]
    assert calls == [["flit_core", "setuptools>=70"]]
    calls.clear()
    await setup._build_pins(None, [old, new], PY311, options)
    assert calls == [["setuptools<60", "setuptools>=70"], ["setuptools<60"], ["setuptools>=70"]]
    assert await setup._build_pins(None, [], PY311, options) == ()


UV_COVERALLS_BELOW = """\
error: No solution found when resolving dependencies
  cause: Because coveralls==3.3.1 depends on docopt>=0.6.1 and docopt==0.6.1 has no usable \
wheels, we can conclude that coveralls==3.3.1 depends on docopt>=0.6.2.
         And because you require coveralls==3.3.1 and docopt<0.6.2, we can conclude that your \
requirements are unsatisfiable.

hint: Wheels are required for `docopt` because building from source is disabled for all \
packages (i.e., with `--no-build`)
"""


def test_what_uv_concludes_is_not_taken_for_a_requirement() -> None:
    # "coveralls depends on docopt>=0.6.2" is uv's conclusion once 0.6.1 has no wheel
    assert resolve.required_versions(UV_COVERALLS_BELOW, "docopt") == SpecifierSet(">=0.6.1")


def hdfs_world(
    hdfs_has_an_older_wheel: bool,
) -> tuple[resolve.Lookup, Callable[..., Awaitable[tuple[resolve.Pin, ...]]], list[str]]:
    """uv names docopt and hdfs; hdfs 2.7.3's sdist needs a build, 2.7.0 has a wheel."""
    looked_up: list[str] = []

    async def fake(
        requirements: Sequence[str],
        target: GuestTarget,
        options: resolve.Options,
        excludes: Sequence[str] = (),
    ) -> tuple[resolve.Pin, ...]:
        if "docopt" not in excludes:
            names = resolve.no_usable_wheels(UV_HDFS)
            raise resolve.NoUsableWheels(UV_HDFS, {n: SpecifierSet() for n in names})
        if not hdfs_has_an_older_wheel:
            raise resolve.NoUsableWheels("hdfs has no usable wheels", {"hdfs": SpecifierSet()})
        return pins(["hdfs", "requests"])

    async def lookup(name: str, allowed: SpecifierSet) -> resolve.SdistPin:
        looked_up.append(name)
        if name == "hdfs":
            raise ResolutionFailed("hdfs 2.7.3 has only an sdist for the guest, ... need a build")
        return sdist_pin(name, "0.6.2")

    return lookup, fake, looked_up


async def test_a_project_whose_sdist_needs_a_build_waits_a_round_for_an_older_wheel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lookup, fake, looked_up = hdfs_world(hdfs_has_an_older_wheel=True)
    monkeypatch.setattr(resolve, "compile_pins", fake)
    result = await resolve.resolve(["hdfs"], [], PY311, resolve.Options(()), lookup)
    assert [s.requirement for s in result.sdists] == ["docopt==0.6.2"]
    assert [p.name for p in result.pins] == ["hdfs", "requests"]
    assert looked_up == ["docopt", "hdfs"]


async def test_a_project_named_again_after_waiting_fails_with_its_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lookup, fake, looked_up = hdfs_world(hdfs_has_an_older_wheel=False)
    monkeypatch.setattr(resolve, "compile_pins", fake)
    with pytest.raises(ResolutionFailed, match=r"^hdfs 2\.7\.3 has only an sdist"):
        await resolve.resolve(["hdfs"], [], PY311, resolve.Options(()), lookup)
    assert looked_up == ["docopt", "hdfs", "hdfs"]
