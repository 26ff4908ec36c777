"""The `pyti image build/list/rm` commands: parse, call pyti.image, render one line each."""

from __future__ import annotations

from typing import Annotated

import typer

from pyti.image.suites import DEFAULT_SUITE, SUITES

SuiteOption = Annotated[
    list[str] | None,
    typer.Option("--suite", "-s", help=f"Debian suite: {', '.join(SUITES)} (repeatable)."),
]


def register(image_app: typer.Typer) -> None:
    image_app.command("build")(build)
    image_app.command("list")(list_)
    image_app.command("rm")(rm)


def build(
    suite: SuiteOption = None,
    all_suites: Annotated[bool, typer.Option("--all", help="Every known suite.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if cached.")] = False,
) -> None:
    """Build the guest image of a suite (cached: instant when nothing changed)."""
    import time

    from pyti.image import ensure_image, find_image
    from pyti.image.manage import remove_images

    suites = list(SUITES) if all_suites else (suite or [DEFAULT_SUITE])
    for name in suites:
        started = time.monotonic()
        if force:
            remove_images([], suite=name)
        cached = find_image(name) is not None
        image = ensure_image(name, progress=lambda message: typer.echo(message, err=True))
        how = "cached" if cached else f"built in {time.monotonic() - started:.0f} s"
        size = sum(p.stat().st_size for p in (image.root, image.kernel, image.initrd))
        typer.echo(
            f"{image.name}: python {image.python_version}, kernel {image.kernel_version}, "
            f"{size / 1e6:.0f} MB, {how}"
        )


def list_() -> None:
    """List the built images (current = what this checkout boots)."""
    from pyti.image.manage import disk_usage, list_images

    images = list_images()
    if not images:
        typer.echo("no images; build one with: pyti image build")
        return
    for item in images:
        typer.echo(
            f"{item.name:<24} {item.status:<8} python {item.python_version:<7} "
            f"kernel {item.kernel_version:<22} {item.size / 1e6:5.0f} MB "
            f"({item.own / 1e6:.0f} MB its own)  {item.built_at}"
        )
    typer.echo(
        f"{len(images)} images, {disk_usage() / 1e6:.0f} MB on disk "
        "(a root or kernel shared by images counts once)"
    )


def rm(
    names: Annotated[
        list[str] | None, typer.Argument(help="Image names (pyti image list).")
    ] = None,
    suite: Annotated[
        str | None, typer.Option("--suite", "-s", help="Every image of a suite.")
    ] = None,
    all_images: Annotated[bool, typer.Option("--all", help="Every image.")] = False,
) -> None:
    """Remove images (and the root filesystems no image uses any more)."""
    from pyti.errors import UsageError
    from pyti.image.manage import remove_images

    if not names and suite is None and not all_images:
        raise UsageError("name an image, or pass --suite SUITE or --all")
    freed = remove_images(names or [], suite=suite, everything=all_images)
    typer.echo(f"freed {freed / 1e6:.1f} MB")
