"""The `pyti` command: thin typer commands that call the library and render.

Every `PytiError` becomes one line on stderr and its exit code; a traceback
only with `--debug`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from typer._click.exceptions import ClickException

from pyti import __version__
from pyti.errors import EXIT_INTERRUPTED, PytiError
from pyti.image.cli import register as register_image_commands

app = typer.Typer(
    name="pyti",
    help="Test a Python package inside a throwaway, network-less QEMU guest.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
image_app = typer.Typer(help="Build and manage guest images.", no_args_is_help=True)
cache_app = typer.Typer(help="Inspect and clear pyti's caches.", no_args_is_help=True)
app.add_typer(image_app, name="image")
app.add_typer(cache_app, name="cache")
register_image_commands(image_app)

err = Console(stderr=True, highlight=False, soft_wrap=True)
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        print(f"pyti {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command(context_settings={"allow_interspersed_args": True})
def run(
    spec: Annotated[
        str, typer.Argument(help="A requirement (attrs==23.2.0), sdist/wheel path or URL, or .")
    ],
    test_args: Annotated[
        list[str] | None,
        typer.Argument(metavar="[-- TEST-ARGS...]", help="Passed to the test runner."),
    ] = None,
    *,
    python: Annotated[
        str | None, typer.Option(help="The guest's Python: 3.11 (bookworm) or 3.13 (trixie).")
    ] = None,
    image_name: Annotated[
        str | None, typer.Option("--image", help="A built image by name (pyti image list).")
    ] = None,
    with_: Annotated[
        list[str] | None, typer.Option("--with", help="Another requirement for the tests.")
    ] = None,
    accel: Annotated[str | None, typer.Option(help="auto, kvm or tcg.")] = None,
    memory: Annotated[int | None, typer.Option(help="Guest memory in MiB.")] = None,
    cpus: Annotated[int | None, typer.Option(help="Guest CPUs.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Total time limit in seconds.")] = None,
    offline: Annotated[bool, typer.Option(help="Use cached downloads only.")] = False,
    snapshots: Annotated[
        bool | None,
        typer.Option(
            "--snapshots/--no-snapshots",
            help="Resume a saved VM instead of booting (default: on; made on first use).",
        ),
    ] = None,
    index_url: Annotated[str | None, typer.Option(help="A PEP 503/691 index.")] = None,
    extra_index_url: Annotated[
        list[str] | None, typer.Option(help="Another index (repeatable).")
    ] = None,
    quality: Annotated[
        bool, typer.Option("--quality", help="Also report ruff statistics (never fails the run).")
    ] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the result as JSON here.")
    ] = None,
    junit_path: Annotated[
        Path | None, typer.Option("--junit-xml", help="Write a JUnit XML report here.")
    ] = None,
) -> None:
    """Test SPEC inside a throwaway, network-less VM and report per-test results."""
    from pyti.config import load_settings
    from pyti.recorder import RunRecorder
    from pyti.render import make_renderer
    from pyti.report import write_reports
    from pyti.results import RunInfo
    from pyti.run import RunRequest, run_sync
    from pyti.store import Store

    project_dir = Path(spec) if spec in {".", ".."} or Path(spec).is_dir() else None
    settings = load_settings(
        {
            "python": python,
            "accel": accel,
            "memory_mb": memory,
            "cpus": cpus,
            "total_timeout": timeout,
            "offline": offline or None,
            "snapshots": snapshots,
            "index_url": index_url,
            "extra_index_urls": extra_index_url,
        },
        project_dir=project_dir,
    )
    request = RunRequest(
        spec=spec,
        settings=settings,
        test_args=tuple(test_args or ()),
        with_requirements=tuple(with_ or ()),
        image_name=image_name,
        quality=quality,
    )
    console = Console(highlight=False, soft_wrap=True)
    with Store() as store, make_renderer(console, sys.stdout) as renderer:
        recorder = RunRecorder(
            store, renderer, RunInfo(spec=spec, python=settings.python), requested=request.tasks
        )
        result = run_sync(request, recorder)
    write_reports(result, json_path=json_path, junit_path=junit_path)
    raise typer.Exit(result.exit_code or 0)


@app.command()
def doctor(
    accel: Annotated[
        str | None, typer.Option(help="Skip the KVM probe and report this accelerator.")
    ] = None,
) -> None:
    """Check QEMU, the accelerator, caches and disk; name the fix for anything missing."""
    from pyti.config import load_settings
    from pyti.doctor import check, render

    settings = load_settings({"accel": accel})
    report = check(accel=accel and settings.accel)
    render(report, typer.echo)
    raise typer.Exit(0 if report.ok else 3)


@app.command()
def fetch(
    spec: Annotated[str, typer.Argument(help="A requirement, sdist/wheel path or URL, or a dir.")],
    *,
    python: Annotated[str, typer.Option(help="The guest's Python: 3.11 or 3.13.")] = "3.11",
    with_: Annotated[
        list[str] | None, typer.Option("--with", help="Another requirement for the tests.")
    ] = None,
    offline: Annotated[bool, typer.Option(help="Use only pyti's download cache.")] = False,
    index_url: Annotated[str | None, typer.Option(help="A PEP 503/691 index.")] = None,
    extra_index_url: Annotated[list[str] | None, typer.Option(help="More indexes.")] = None,
) -> None:
    """Prepare (and cache) the setup disk for SPEC without booting anything."""
    import trio

    from pyti.setup import DEFAULT_INDEX, prepare, target_for_python
    from pyti.setup.summary import summary_lines

    indexes = (index_url or DEFAULT_INDEX, *(extra_index_url or ()))
    disk = trio.run(
        lambda: prepare(
            spec,
            target=target_for_python(python),
            with_requirements=with_ or (),
            index_urls=indexes,
            offline=offline,
        )
    )
    for line in summary_lines(disk):
        typer.echo(line)


@app.command()
def runs(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many runs.")] = 20,
) -> None:
    """List the stored runs, newest first."""
    from pyti.render import runs_lines
    from pyti.store import Store

    with Store() as store:
        for line in runs_lines(store.list_runs(limit)):
            typer.echo(line)


@app.command()
def show(
    run_id: Annotated[
        int | None,
        typer.Argument(metavar="[RUN]", help="A run id from `pyti runs` (default: the latest)."),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
    console: Annotated[bool, typer.Option("--console", help="Print its console log.")] = False,
) -> None:
    """Show one stored run: inputs, tasks, failed tests with reports, findings."""
    from pyti.errors import UsageError
    from pyti.render import show_lines
    from pyti.report import json_bytes
    from pyti.store import Store

    with Store() as store:
        if run_id is None:
            latest = store.list_runs(1)
            if not latest:
                raise UsageError("no runs in the store yet: pyti run PACKAGE")
            run_id = latest[0].id
        try:
            result = store.load_run(run_id)
        except KeyError:
            raise UsageError(f"no run {run_id} in the store; `pyti runs` lists them") from None
    if json_:
        typer.echo(json_bytes(result).decode(), nl=False)
    elif console:
        typer.echo(result.console, nl=not result.console.endswith("\n"))
    else:
        for line in show_lines(result):
            typer.echo(line)


@cache_app.command("info")
def cache_info() -> None:
    """Show where the caches live and how big they are."""
    from pyti.doctor import cache_lines

    for line in cache_lines():
        typer.echo(line)


@cache_app.command("clear")
def cache_clear(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Remove everything in pyti's cache (images, downloads, setup disks). Results are kept."""
    from pyti.cache import clear

    if not yes and not typer.confirm("Remove pyti's whole cache?"):
        raise typer.Exit(1)
    freed = clear()
    typer.echo(f"freed {freed / 1e6:.1f} MB")


def main() -> None:
    try:
        # Outside standalone mode click returns an Exit's code instead of exiting.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except PytiError as error:
        if _state["debug"]:
            raise
        # Not markup: messages quote package names and uv's words, e.g. "pkg[extra]".
        err.print(f"pyti: error: {error}", markup=False, highlight=False)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        err.print("pyti: interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        err.print("pyti: aborted")
        sys.exit(1)
    except ClickException as usage:  # usage errors arrive here in non-standalone mode
        usage.show()
        sys.exit(usage.exit_code)
