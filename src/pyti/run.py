"""`pyti run`: one package, one throwaway VM, one stored result.

The phases, in order: the guest image (built on first use), the accelerator, the setup
disk (resolved and downloaded on the host without running package code), the boot,
then the guest's tasks whose frames are stored and shown as they arrive. However the
run ends, exactly one outcome is stored (`pyti.outcomes`), and the VM is gone.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from pyti import __version__, accel, image, paths, snapshot
from pyti.channel import ChannelLimits, EndKind, GuestChannel
from pyti.config import Settings
from pyti.deadlines import Deadlines, deadline_factor
from pyti.errors import MissingImage, QemuFailed, UsageError
from pyti.machine import End, Machine, MachineConfig, MachineResult, open_machine
from pyti.outcomes import VmEnd
from pyti.protocol import Hello, Metadata, Output
from pyti.recorder import RunRecorder
from pyti.render import Phase
from pyti.results import RunResult
from pyti.setup import GuestTarget, SetupDisk, prepare

log = logging.getLogger(__name__)

PYTHON_SUITES = {python: suite for suite, python in image.SUITES.items()}
DISK_FULL_MARKERS = (b"No space left on device", b"Disk quota exceeded")

# How each machine end maps onto the run's VM end; NORMAL and STOPPED defer to the channel.
_MACHINE_ENDS = {
    End.PANIC: VmEnd.PANIC,
    End.OOM: VmEnd.OOM,
    End.GUEST_RESET: VmEnd.EOF,
    End.BOOT_FAILED: VmEnd.EOF,
    End.BOOT_TIMEOUT: VmEnd.BOOT_TIMEOUT,
    End.SILENCE: VmEnd.SILENCE,
    End.NO_PROGRESS: VmEnd.NO_PROGRESS,
    End.RUN_TIMEOUT: VmEnd.TOTAL_TIMEOUT,
    End.QEMU_CRASH: VmEnd.QEMU_CRASH,
    End.CANCELLED: VmEnd.CANCELLED,
}

# A channel that ended badly asks the machine to stop with this end.
_CHANNEL_STOPS = {
    EndKind.SILENCE: End.SILENCE,
    EndKind.NO_PROGRESS: End.NO_PROGRESS,
}


@dataclass(frozen=True, kw_only=True)
class RunRequest:
    spec: str
    settings: Settings
    test_args: tuple[str, ...] = ()
    with_requirements: tuple[str, ...] = ()
    image_name: str | None = None
    quality: bool = False

    @property
    def tasks(self) -> tuple[str, ...]:
        return ("install", "test", "quality") if self.quality else ("install", "test")


def suite_for(python: str) -> str:
    try:
        return PYTHON_SUITES[python]
    except KeyError:
        known = ", ".join(sorted(PYTHON_SUITES))
        raise UsageError(f"no guest image has Python {python}; choose one of {known}") from None


def pick_image(request: RunRequest, recorder: RunRecorder) -> image.Image:
    """The named image, or the suite's image for --python (built on first use)."""
    if request.image_name is not None:
        from pyti.image import cache

        found = cache.load(cache.images_dir() / request.image_name)
        if found is None:
            raise MissingImage(
                f"no usable image named {request.image_name!r}; see `pyti image list`"
            )
        return found
    suite = suite_for(request.settings.python)
    return image.ensure_image(suite, lambda line: recorder.phase(Phase.IMAGE, line))


def vm_end(machine: MachineResult, channel_end: EndKind | None) -> VmEnd:
    """One VM end from what the machine and the channel each saw; the machine's cause wins."""
    mapped = _MACHINE_ENDS.get(machine.end)
    if mapped is not None:
        return mapped
    if channel_end is None:
        return VmEnd.EOF
    return VmEnd.from_channel(str(channel_end))


class _Session:
    """The conversation with one guest: Hello, Start, then frames until the channel ends."""

    def __init__(self, request: RunRequest, recorder: RunRecorder) -> None:
        self.request = request
        self.recorder = recorder
        self.disk_full_seen = False
        self.metadata: Metadata | None = None

    async def converse(
        self, channel: GuestChannel, machine: Machine, start_tasks: Sequence[str]
    ) -> None:
        async for message in channel:
            if isinstance(message, Hello):
                machine.mark_ready()
                self.recorder.phase(Phase.BOOT, f"agent {message.agent_version} ready")
                start = snapshot.fresh_start(
                    str(self.recorder.run_id), start_tasks, self.request.test_args
                )
                if await channel.send(start):
                    machine.mark_running()
                continue
            if isinstance(message, Metadata):
                self.metadata = message
            self.recorder.message(message)
            if isinstance(message, Output) and self._disk_full(message.data):
                self.disk_full_seen = True
                self.recorder.host_finding(
                    "disk-full", "the guest ran out of scratch space", message.task
                )

    def _disk_full(self, data: bytes) -> bool:
        return not self.disk_full_seen and any(marker in data for marker in DISK_FULL_MARKERS)


@dataclass(frozen=True)
class _PassEnd:
    """How one boot of the guest ended."""

    end: VmEnd
    detail: str
    console: str
    metadata: Metadata | None


@dataclass(frozen=True)
class _Context:
    request: RunRequest
    recorder: RunRecorder
    image: image.Image
    accel: str
    target: GuestTarget


async def _prepare(
    context: _Context, tasks: Sequence[str], dependencies: Sequence[str] | None = None
) -> SetupDisk:
    settings = context.request.settings
    return await prepare(
        context.request.spec,
        target=context.target,
        with_requirements=context.request.with_requirements,
        index_urls=(settings.index_url, *settings.extra_index_urls),
        offline=settings.offline,
        # -- TEST-ARGS travel in Start, not on the disk: the agent adds them after the
        # project's own runner arguments, and the cached disk does not depend on them.
        tasks=tasks,
        dependencies=dependencies,
    )


# How a VM resumed from a snapshot ends when the snapshot itself is bad (QEMU cannot load
# it, or the agent never says Hello): the pass is then made again with a cold boot.
_BAD_SNAPSHOT_ENDS = frozenset({End.QEMU_CRASH, End.BOOT_FAILED, End.BOOT_TIMEOUT, End.GUEST_RESET})


async def _guest_pass(context: _Context, disk: SetupDisk, tasks: Sequence[str]) -> _PassEnd:
    """Boot the guest once with `disk` (or resume its snapshot), run `tasks`, and say how
    the VM ended."""
    settings, recorder = context.request.settings, context.recorder
    config = _machine_config(context, disk)
    saved = await snapshot.ensure(config) if settings.snapshots else None
    if saved is not None:
        recorder.phase(Phase.BOOT, f"{context.accel}, resuming a saved VM")
        restored = dataclasses.replace(config, restore=saved)
        try:
            end, result = await _run_pass(context, restored, tasks)
        except QemuFailed as exc:  # QEMU refused the snapshot before QMP was up
            snapshot.invalidate(saved, str(exc))
        else:
            if result.boot_seconds is not None or result.end not in _BAD_SNAPSHOT_ENDS:
                return end
            snapshot.invalidate(saved, result.summary())
    recorder.phase(Phase.BOOT, context.accel)
    end, _ = await _run_pass(context, config, tasks)
    return end


def _machine_config(context: _Context, disk: SetupDisk) -> MachineConfig:
    settings, recorder = context.request.settings, context.recorder
    deadlines = Deadlines(total=settings.total_timeout, no_progress=settings.no_progress_timeout)
    log_path = paths.data_dir() / "logs" / f"run-{recorder.run_id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    return MachineConfig.from_image(
        context.image,
        setup_disk=disk.path,
        accel=context.accel,
        memory_mb=settings.memory_mb,
        cpus=settings.cpus,
        scratch_mb=settings.scratch_mb,
        deadlines=deadlines,
        log_path=log_path,
        name=f"run{recorder.run_id}",
    )


async def _run_pass(
    context: _Context, config: MachineConfig, tasks: Sequence[str]
) -> tuple[_PassEnd, MachineResult]:
    recorder = context.recorder
    deadlines = config.deadlines
    factor = deadline_factor(context.accel)
    limits = ChannelLimits(
        silence_timeout=deadlines.silence,
        no_progress_timeout=deadlines.no_progress,
        accel_factor=factor,
    )
    session = _Session(context.request, recorder)
    channel_end: EndKind | None = None
    async with open_machine(config) as machine:
        channel = GuestChannel(machine.port, limits, name=config.name)
        with trio.move_on_after(deadlines.total * factor) as total_scope:
            await session.converse(channel, machine, tasks)
        if total_scope.cancelled_caught:
            machine.request_stop(End.RUN_TIMEOUT, "the run's total time limit")
        elif channel.end is not None:
            channel_end = channel.end.kind
            if channel.end.clean:
                machine.session_complete()
            elif channel_end in _CHANNEL_STOPS:
                machine.request_stop(_CHANNEL_STOPS[channel_end], channel.end.detail)
            elif not channel.end.clean:
                machine.request_stop(End.STOPPED, channel.end.detail)
        await channel.aclose()
    result = machine.result
    assert result is not None
    if result.oom_lines:
        recorder.host_finding("oom", result.oom_lines[0])
    end = vm_end(result, channel_end)
    detail = "" if end is VmEnd.NORMAL else _detail(result, channel)
    return _PassEnd(end, detail, result.console, session.metadata), result


def _dependencies_from(metadata: Metadata, target: GuestTarget) -> list[str]:
    """The package's own requirements, as its build backend computed them in the guest."""
    from pyti.setup.metadata import applies, parse_core_metadata, without_marker

    core = parse_core_metadata(metadata.metadata)
    return [without_marker(req) for req in core.requires_dist if applies(req, target, extra="")]


async def execute(request: RunRequest, recorder: RunRecorder) -> RunResult:
    """Run everything after the recorder exists; every way out ends the recorder once."""
    settings = request.settings
    recorder.phase(Phase.IMAGE)
    guest_image = await trio.to_thread.run_sync(pick_image, request, recorder)
    choice = await trio.to_thread.run_sync(
        lambda: accel.choose(settings.accel, kernel=guest_image.kernel, initrd=guest_image.initrd)
    )
    recorder.update_info(
        image_id=guest_image.image_id,
        python=guest_image.python_version,
        accelerator=choice.accel,
        pyti_version=__version__,
    )
    recorder.phase(Phase.IMAGE, f"{guest_image.name} ({choice})")
    major_minor = ".".join(guest_image.python_version.split(".")[:2])
    target = GuestTarget(python_version=major_minor, platform_tag=guest_image.platform_tag)
    context = _Context(request, recorder, guest_image, choice.accel, target)

    recorder.phase(Phase.RESOLVE)
    disk = await _prepare(context, tasks=request.tasks)
    if any(f.kind == "dynamic-metadata" for f in disk.findings):
        # The dependencies need the package's own build backend: ask the guest for its
        # metadata first (package code runs only there), then resolve for real.
        recorder.phase(Phase.RESOLVE, "dependencies are dynamic: building metadata in the guest")
        # The disk already holds the sdist and its build requirements, and the agent runs
        # the tasks named in Start: no second disk is needed for this pass.
        first = await _guest_pass(context, disk, ("metadata",))
        if first.end is not VmEnd.NORMAL or first.metadata is None:
            return recorder.finish(first.end, error=first.detail, console=first.console)
        dependencies = _dependencies_from(first.metadata, target)
        recorder.host_finding(
            "dynamic-metadata",
            f"dependencies built in the guest: {', '.join(dependencies) or 'none'}",
        )
        disk = await _prepare(context, tasks=request.tasks, dependencies=dependencies)
    _record_disk(recorder, disk, guest_image)
    last = await _guest_pass(context, disk, disk.manifest.tasks)
    return recorder.finish(last.end, error=last.detail, console=last.console)


def _record_disk(recorder: RunRecorder, disk: SetupDisk, guest_image: image.Image) -> None:
    recorder.update_info(
        package_name=disk.manifest.package_name,
        package_version=disk.manifest.package_version,
        setup_digest=disk.digest,
        resolved=dict(disk.resolved),
        inputs={"image": guest_image.image_id, "setup-disk": disk.digest, "pyti": __version__},
    )
    for finding in disk.findings:
        recorder.host_finding(finding.kind, finding.detail)


def _detail(result: MachineResult, channel: GuestChannel) -> str:
    parts = [result.summary()]
    if channel.end is not None and not channel.end.clean:
        parts.append(f"channel: {channel.end.kind}: {channel.end.detail}")
    if result.log_path is not None:
        parts.append(f"log: {result.log_path}")
    return "; ".join(parts)


def run_sync(request: RunRequest, recorder: RunRecorder) -> RunResult:
    """Run in a fresh trio loop; PytiErrors end the recorder as a failed run and re-raise."""

    async def main() -> RunResult:
        try:
            return await execute(request, recorder)
        except Exception as error:  # a bug still ends the stored run, as `error`
            recorder.fail(error)
            raise

    try:
        return trio.run(main)
    except KeyboardInterrupt:
        recorder.interrupt()
        raise


__all__ = ["RunRequest", "execute", "run_sync", "suite_for", "vm_end"]
