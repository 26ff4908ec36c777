"""One guest VM: QEMU owned by a trio nursery, driven over QMP, ending in a classified result.

Use::

    async with trio.open_nursery() as nursery:
        machine = Machine(MachineConfig.from_image(image, setup_disk=disk, accel="tcg"))
        await nursery.start(machine.run)       # QEMU is up, the guest is booting
        ... read frames from machine.port; on Hello: machine.mark_ready() ...
        result = await machine.shutdown()      # after Goodbye: let the guest power off

or `async with open_machine(config) as machine: ...`. Deadlines (boot, total, power-off) are
enforced here; the channel's timers (silence, no progress) end the VM via `request_stop`.

Ending: the guest powers off by itself; else QMP `system_powerdown`, then `quit`, then SIGKILL.
The cleanup runs in `finally` (also on cancellation) and is idempotent: QEMU is reaped, the
VM's directory removed. QEMU also dies with the pyti process (see pyti.spawn).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from pyti.capped import CappedLog
from pyti.console import Console, ConsoleVerdicts
from pyti.deadlines import Deadlines
from pyti.errors import QemuFailed, VmStateError
from pyti.qemu_argv import SANDBOX_OPTION, VmConfig, build_argv
from pyti.qmp import Qmp, open_qmp
from pyti.spawn import OwnedProcess, spawn
from pyti.vmdir import VmDir
from pyti.vmstate import LIVE, Lifecycle, VmState

if TYPE_CHECKING:
    from pyti.image import Image

log = logging.getLogger(__name__)

DEFAULT_QEMU = "qemu-system-x86_64"
SOCKET_TIMEOUT = 10.0  # QEMU start -> its sockets exist (host side only)
DRAIN_TIMEOUT = 2.0  # after QEMU exits, for the last console bytes
SESSION_GRACE = 0.3  # after Goodbye, for the guest to power off before QEMU is quit
CANCEL_GRACE = 1.0  # on cancellation: SIGTERM (QEMU's clean quit), then SIGKILL
QEMU_LOG_BYTES = 16 * 1024
READ_SIZE = 65536


_ENDING = frozenset({VmState.STOPPING, VmState.STOPPED})


class End(enum.Enum):
    """How a VM ended; exactly one per run."""

    NORMAL = "normal"  # the guest powered off by itself
    PANIC = "panic"  # guest kernel panic (GUEST_PANICKED, or the kernel said so on the console)
    OOM = "oom"  # out of memory in the guest (the OOM killer ran, then the guest died or hung)
    GUEST_RESET = "guest-reset"  # the guest rebooted or triple-faulted, without a panic message
    BOOT_FAILED = "boot-failed"  # the guest stopped by itself before the agent said Hello
    BOOT_TIMEOUT = "boot-timeout"  # no Hello within the boot deadline
    SILENCE = "agent-silence"  # the agent went quiet (pyti.channel's timer)
    NO_PROGRESS = "no-progress"  # frames, but no progress (pyti.channel's timer)
    RUN_TIMEOUT = "run-timeout"  # the total time limit
    QEMU_CRASH = "qemu-crash"  # QEMU exited with an error or by a foreign signal
    CANCELLED = "cancelled"  # the host cancelled (Ctrl-C)
    STOPPED = "stopped"  # the host stopped it for another reason (e.g. a protocol error)


# Ends after which an OOM-killer line on the console is the better explanation.
_OOM_EXPLAINS = frozenset(
    {
        End.BOOT_FAILED,
        End.BOOT_TIMEOUT,
        End.SILENCE,
        End.NO_PROGRESS,
        End.RUN_TIMEOUT,
        End.GUEST_RESET,
    }
)


@dataclass(frozen=True, kw_only=True)
class MachineConfig:
    kernel: Path
    initrd: Path
    cmdline: str
    root_disk: Path
    setup_disk: Path | None = None
    accel: str = "tcg"
    memory_mb: int = 1536
    cpus: int = 1
    scratch_mb: int | None = 4096  # sparse ext4, made per VM; None = no scratch disk
    deadlines: Deadlines = field(default_factory=Deadlines)  # unscaled: scaled by `accel`
    qemu: str = DEFAULT_QEMU
    sandbox: bool | None = None  # None: use -sandbox when this QEMU supports it
    tb_size_mb: int | None = None
    extra_cmdline: str = ""
    log_path: Path | None = None  # the capped console and QEMU's output are kept here
    name: str = "vm"
    # Resume this saved VM (pyti.snapshot) instead of booting; the rest of the config must
    # be the one the snapshot was made with.
    restore: Path | None = None
    # False only for the VM a snapshot is made from: the agent's Hello then waits, blocked
    # in the kernel, for a host that connects after a restore.
    connect_port: bool = True

    @classmethod
    def from_image(cls, image: Image, **changes: Any) -> MachineConfig:
        fields: dict[str, Any] = {
            "kernel": image.kernel,
            "initrd": image.initrd,
            "cmdline": image.cmdline,
            "root_disk": image.root,
        }
        return cls(**(fields | changes))


@dataclass(frozen=True, kw_only=True)
class MachineResult:
    end: End
    detail: str
    accel: str
    returncode: int | None
    stopped_by: str  # "itself" (power-off, panic, crash), "powerdown", "quit", "sigterm", "sigkill"
    boot_seconds: float | None  # QEMU start -> mark_ready (the agent's Hello)
    wall_seconds: float
    console: str  # capped: head and tail
    qemu_output: str  # capped
    oom_lines: tuple[str, ...] = ()
    log_path: Path | None = None
    restored: bool = False  # resumed from a snapshot rather than booted

    def __bool__(self) -> bool:
        return self.end is End.NORMAL

    def summary(self) -> str:
        start = ", from a snapshot" if self.restored else ""
        return f"{self.end.value} under {self.accel}{start}: {self.detail}"

    def to_json(self) -> dict[str, object]:
        return {
            "end": self.end.value,
            "detail": self.detail,
            "accel": self.accel,
            "returncode": self.returncode,
            "stopped_by": self.stopped_by,
            "boot_seconds": self.boot_seconds,
            "wall_seconds": self.wall_seconds,
            "oom_lines": list(self.oom_lines),
            "log_path": str(self.log_path) if self.log_path else None,
            "restored": self.restored,
        }


def _ended_by_itself(
    returncode: int | None, reason: object, signalled_by_us: bool, was_ready: bool
) -> tuple[End, str]:
    """QEMU exited and nobody asked it to: what its exit status and SHUTDOWN reason say."""
    if signalled_by_us and (reason == "host-signal" or (returncode or 0) < 0):
        return End.STOPPED, "stopped by pyti"
    if returncode is not None and returncode < 0:
        return End.QEMU_CRASH, f"QEMU killed by signal {-returncode}"
    if returncode not in (None, 0):
        return End.QEMU_CRASH, f"QEMU exited with {returncode}"
    if reason == "guest-reset":
        return End.GUEST_RESET, "the guest reset without a panic message"
    if reason == "host-signal":
        return End.QEMU_CRASH, "QEMU stopped by a signal pyti did not send"
    if not was_ready:
        return End.BOOT_FAILED, "the guest powered off before the agent said Hello"
    return End.NORMAL, "the guest powered off"


def classify(
    *,
    requested: tuple[End, str] | None,
    returncode: int | None,
    shutdown: Mapping[str, Any] | None,
    guest_panicked: bool,
    verdicts: ConsoleVerdicts,
    signalled_by_us: bool,
    was_ready: bool = True,
) -> tuple[End, str]:
    """Pure: the end of a VM from what was asked and what QEMU and the console said."""
    if requested is not None and requested[0] is End.CANCELLED:
        return requested
    if guest_panicked or verdicts.panic_line:
        panic = verdicts.panic_line or "GUEST_PANICKED event"
        if verdicts.oom_lines:  # e.g. the OOM killer took PID 1: the panic is only the echo
            return End.OOM, f"{verdicts.oom_lines[0]} (then: {panic})"
        return End.PANIC, panic
    reason = (shutdown or {}).get("reason")
    if reason == "guest-panic":
        return End.PANIC, "guest panicked (pvpanic)"
    if requested is not None and requested[0] is not End.NORMAL:
        end, detail = requested
    elif requested is not None:  # the session was complete; how it powered off is secondary
        end, detail = End.NORMAL, requested[1] or "session complete"
    else:
        end, detail = _ended_by_itself(returncode, reason, signalled_by_us, was_ready)
    if verdicts.oom_lines and (end in _OOM_EXPLAINS or (requested is None and end is End.NORMAL)):
        return End.OOM, f"{verdicts.oom_lines[0]} (then: {end.value})"
    return end, detail


_sandbox_support: dict[str, bool] = {}


async def sandbox_supported(qemu: str) -> bool:
    """Whether this QEMU starts with our -sandbox option (seccomp built in and allowed)."""
    if qemu not in _sandbox_support:
        argv = [qemu, "-M", "none", "-nodefaults", "-no-user-config", "-display", "none"]
        argv += ["-sandbox", SANDBOX_OPTION, "-qmp", "stdio"]
        commands = b'{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n'
        ok = False
        with trio.move_on_after(10):
            done = await trio.run_process(argv, stdin=commands, capture_stdout=True, check=False)
            ok = done.returncode == 0
        _sandbox_support[qemu] = ok
        log.debug("QEMU %s -sandbox support: %s", qemu, ok)
    return _sandbox_support[qemu]


def vm_config(
    config: MachineConfig,
    *,
    setup_disk: Path | None,
    scratch_disk: Path | None,
    socket: Callable[[str], Path],
    sandbox: bool,
    boot_args: str = "",
    incoming_fd: int | None = None,
) -> VmConfig:
    """The QEMU-level config of `config`, given what each VM has of its own (its disks'
    paths, its sockets, the clock on the command line); pyti.snapshot keys on it too."""
    return VmConfig(
        qemu=config.qemu,
        accel=config.accel,
        memory_mb=config.memory_mb,
        cpus=config.cpus,
        kernel=config.kernel,
        initrd=config.initrd,
        cmdline=" ".join(a for a in (config.cmdline, boot_args, config.extra_cmdline) if a),
        root_disk=config.root_disk,
        setup_disk=setup_disk,
        scratch_disk=scratch_disk,
        serial_socket=socket("port"),
        console_socket=socket("console"),
        qmp_socket=socket("qmp"),
        sandbox=sandbox,
        tb_size_mb=config.tb_size_mb,
        paused=True,  # connect everything before the first guest instruction
        incoming_fd=incoming_fd,
    )


def make_scratch_disk(path: Path, size_mb: int) -> None:
    """A sparse raw file: costs nothing on the host until the guest writes to it.

    The guest's /init makes it swap behind the tmpfs that holds every write (images/init),
    so the host does not format it.
    """
    with path.open("wb") as handle:
        handle.truncate(size_mb * 1024 * 1024)


async def _open_listening(path: Path, retry: float = 5.0) -> trio.SocketStream:
    """Connect to one of QEMU's server sockets; a refusal between bind() and listen()
    (seen on busy hosts) is retried briefly."""
    deadline = trio.current_time() + retry
    while True:
        try:
            return await trio.open_unix_socket(str(path))
        except ConnectionRefusedError:
            if trio.current_time() >= deadline:
                raise
            await trio.sleep(0.01)


def _collapse(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one real error inside nested nursery groups, so callers see QemuFailed, not a group."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    errors = [exc for exc in leaves if not isinstance(exc, trio.Cancelled)]
    return errors[0] if len(errors) == 1 else group


class Machine:
    """A VM's life; `run` is the nursery task that owns QEMU."""

    def __init__(self, config: MachineConfig) -> None:
        self.config = config
        self.accel = config.accel
        self.deadlines = config.deadlines.scaled(config.accel)
        self.console = Console()
        self.result: MachineResult | None = None
        self._life = Lifecycle()
        self._log = log.getChild(config.name)
        self._port: trio.SocketStream | None = None
        self._process: OwnedProcess | None = None
        self._qmp: Qmp | None = None
        self._qemu_output = CappedLog(QEMU_LOG_BYTES, QEMU_LOG_BYTES)
        self._requested: tuple[End, str] | None = None
        self._graceful = False
        self._quick = False  # the session is complete: a short grace, then quit
        self._signalled = False
        self._stopped_by = "itself"
        self._shutdown_event: Mapping[str, Any] | None = None
        self._guest_panicked = False
        self._changed = trio.Event()
        self._exited = trio.Event()
        self._done = trio.Event()
        self._console_done = trio.Event()
        self._output_done = trio.Event()
        self._started_at: float | None = None
        self._boot_seconds: float | None = None
        self._vmdir: VmDir | None = None
        self._marker_seen = trio.Event()

    # -- what callers use ------------------------------------------------------------------

    @property
    def state(self) -> VmState:
        return self._life.state

    @property
    def port(self) -> trio.SocketStream:
        """The virtserialport "pyti.0" as a byte stream (for pyti.channel)."""
        if self._port is None:
            raise VmStateError(f"the VM's port is not connected (VM is {self.state.value})")
        return self._port

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def mark_ready(self) -> None:
        """The agent said Hello. A VM already ending ignores it (a Hello can race a deadline)."""
        if self.state in _ENDING:
            return
        self._life.require("mark ready", VmState.BOOTING)
        self._life.advance(VmState.READY)
        assert self._started_at is not None
        self._boot_seconds = trio.current_time() - self._started_at
        self._log.debug("ready after %.2f s", self._boot_seconds)
        self._poke()

    def mark_running(self) -> None:
        """Tasks were sent to the agent. A VM already ending ignores it."""
        if self.state in _ENDING:
            return
        self._life.require("start tasks on", VmState.READY)
        self._life.advance(VmState.RUNNING)

    def request_stop(self, end: End = End.STOPPED, detail: str = "") -> None:
        """End the VM; the first request wins. NORMAL first lets the guest power off itself."""
        if self._requested is None and self.state is not VmState.STOPPED:
            self._requested = (end, detail)
            self._graceful = end is End.NORMAL
            self._log.debug("stop requested: %s %s", end.value, detail)
            self._poke()

    def session_complete(self, detail: str = "session complete") -> None:
        """The agent said Goodbye: everything is received and the disks are throwaway.

        The guest gets a short grace to power off by itself, then QEMU is quit: the user
        does not wait for a slow emulated shutdown. The end is still NORMAL.
        """
        self.request_stop(End.NORMAL, detail)
        self._quick = True

    async def save_state(self, target: Path) -> None:
        """Snapshot the guest once the agent is at its snapshot point: stop the CPU, write
        the whole VM state to `target` (QEMU's migration stream), then quit QEMU.

        The guest must have been started with `connect_port=False` (see MachineConfig) and
        a console that shows `Console.MARKER`; the caller bounds the wait with a deadline.
        """
        if self.config.connect_port:
            raise VmStateError("a snapshot needs a VM whose port the host left unconnected")
        while not self._marker_seen.is_set():
            if self._exited.is_set() or self._requested is not None:
                raise QemuFailed(
                    "the VM ended before the agent's snapshot point", returncode=None, log=None
                )
            with trio.move_on_after(0.05):
                await self._marker_seen.wait()
        self._life.require("snapshot", VmState.BOOTING)
        qmp, vmdir = self._qmp, self._vmdir
        assert qmp is not None and vmdir is not None
        await qmp.execute("stop")
        path = vmdir.socket("migrate")
        listener = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        with listener:
            await listener.bind(str(path))
            listener.listen(1)
            await qmp.execute("migrate", {"uri": f"unix:{path}"})
            connection, _ = await listener.accept()
            with connection, target.open("wb") as out:
                while data := await connection.recv(1 << 20):
                    out.write(data)
        while True:  # QEMU closes the stream before it reports the migration's end
            status = await qmp.execute("query-migrate")
            state = status.get("status") if isinstance(status, dict) else None
            if state == "completed":
                break
            if state not in ("setup", "active", "device", "pre-switchover"):
                raise QemuFailed(
                    f"saving the VM state ended {state}: {status}", returncode=None, log=None
                )
            await trio.sleep(0.01)
        self.request_stop(End.STOPPED, "snapshot saved")
        self._quick = True

    async def shutdown(self, end: End = End.NORMAL, detail: str = "") -> MachineResult:
        self.request_stop(end, detail)
        return await self.wait()

    async def wait(self) -> MachineResult:
        await self._done.wait()
        assert self.result is not None
        return self.result

    # -- the nursery task ------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Machine] = trio.TASK_STATUS_IGNORED
    ) -> MachineResult:
        self._life.require("start", VmState.IDLE)
        self._life.advance(VmState.BOOTING)
        self._started_at = trio.current_time()
        vmdir: VmDir | None = None
        try:
            vmdir = await trio.to_thread.run_sync(VmDir.create)
            self._vmdir = vmdir
            incoming = self._open_snapshot()
            argv = await self._argv(vmdir, incoming)
            self._log.debug("argv: %s", argv)
            read_end, write_end = os.pipe()
            try:
                inherited = [] if incoming is None else [incoming]
                # No transparent huge pages: QEMU asks for them on guest RAM, and a guest
                # resumed from a snapshot writes its pages scattered over the RAM, each
                # 4 KiB write then costing a whole 2 MiB page. Measured with -m 512M: RSS at
                # READY 153 -> 125 MB resumed, no change booted cold; `pyti run iniconfig`
                # 7.0-8.2 s with THP, 7.2-8.0 s without.
                self._process = await spawn(
                    argv,
                    stdout=write_end,
                    stderr=write_end,
                    pass_fds=inherited,
                    huge_pages=False,
                )
            finally:
                os.close(write_end)
                if incoming is not None:
                    os.close(incoming)
            output = trio.lowlevel.FdStream(read_end)
            async with output, trio.open_nursery() as nursery:
                nursery.start_soon(self._pump_output, output)
                nursery.start_soon(self._watch_process)
                await self._connect_and_supervise(vmdir, nursery, task_status)
                nursery.cancel_scope.cancel()
        except trio.Cancelled:
            self._requested = (End.CANCELLED, "the host cancelled the run")
            raise
        except BaseExceptionGroup as group:
            collapsed = _collapse(group)
            if isinstance(collapsed, trio.Cancelled) or _only_cancelled(group):
                self._requested = (End.CANCELLED, "the host cancelled the run")
            raise collapsed from None
        finally:
            with trio.CancelScope(shield=True):
                await self._cleanup(vmdir)
        assert self.result is not None
        return self.result

    def _open_snapshot(self) -> int | None:
        if self.config.restore is None:
            return None
        try:
            return os.open(self.config.restore, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise QemuFailed(f"cannot open the snapshot: {exc}", returncode=None, log=None) from exc

    async def _argv(self, vmdir: VmDir, incoming: int | None = None) -> list[str]:
        config = self.config
        scratch = None
        if config.scratch_mb is not None:
            scratch = vmdir.path / "scratch.ext4"
            make_scratch_disk(scratch, config.scratch_mb)
        sandbox = config.sandbox
        if sandbox is None:
            sandbox = await sandbox_supported(config.qemu)
        # /init sets the clock from pyti.time (the RTC alone is the host's local time).
        vm = vm_config(
            config,
            setup_disk=config.setup_disk,
            scratch_disk=scratch,
            socket=vmdir.socket,
            sandbox=sandbox,
            boot_args=f"pyti.time={int(time.time())}",
            incoming_fd=incoming,
        )
        return build_argv(vm)

    async def _connect_and_supervise(
        self, vmdir: VmDir, nursery: trio.Nursery, task_status: trio.TaskStatus[Machine]
    ) -> None:
        await self._wait_for_sockets(vmdir)
        started = False
        try:
            async with (
                open_qmp(vmdir.socket("qmp"), name=self.config.name) as qmp,
                trio.open_nursery() as qmp_tasks,  # ends before the QMP loop closes
            ):
                self._qmp = qmp
                console = await _open_listening(vmdir.socket("console"))
                if self.config.connect_port:
                    self._port = await _open_listening(vmdir.socket("port"))
                nursery.start_soon(self._pump_console, console)
                qmp_tasks.start_soon(self._pump_events, qmp)
                if self.config.restore is not None:
                    await self._wait_for_snapshot(qmp)
                await qmp.execute("cont")
                task_status.started(self)
                started = True
                await self._supervise()
                with trio.move_on_after(DRAIN_TIMEOUT):
                    await self._console_done.wait()
                qmp_tasks.cancel_scope.cancel()
        except (Exception, BaseExceptionGroup) as exc:
            # QEMU that dies at startup (a bad disk, say) first refuses QMP: report why it died.
            if started or _has_cancelled(exc):
                raise
            raise await self._startup_failure(exc) from exc

    async def _wait_for_snapshot(self, qmp: Qmp) -> None:
        """Wait until QEMU has loaded the snapshot. (A `cont` during the load would not do:
        QEMU restores the saved run state, paused, over its autostart flag.) A snapshot that
        cannot be loaded ends QEMU, which fails the query."""
        with trio.fail_after(self.deadlines.boot):
            while True:
                status = await qmp.execute("query-status")
                if not isinstance(status, dict) or status.get("status") != "inmigrate":
                    return
                await trio.sleep(0.005)

    async def _wait_for_sockets(self, vmdir: VmDir) -> None:
        sockets = [vmdir.socket(name) for name in ("qmp", "console", "port")]
        with trio.move_on_after(SOCKET_TIMEOUT):
            while not all(path.exists() for path in sockets):
                if self._exited.is_set():
                    break
                await trio.sleep(0.005)
            else:
                return
        raise await self._startup_failure(f"its sockets did not appear in {SOCKET_TIMEOUT:g} s")

    async def _startup_failure(self, cause: object) -> QemuFailed:
        """The error for a QEMU that failed before the guest ran; QEMU's own words if it died."""
        with trio.move_on_after(DRAIN_TIMEOUT):
            await self._exited.wait()
        if self._exited.is_set():
            with trio.move_on_after(DRAIN_TIMEOUT):
                await self._output_done.wait()
            why = self._qemu_output_text().strip()[-2000:] or f"no output ({cause})"
        else:
            why = str(cause)
        self._requested = (End.QEMU_CRASH, f"QEMU did not start: {why}")
        return QemuFailed(
            f"QEMU did not start: {why}",
            returncode=self._process.returncode if self._process else None,
            log=self.config.log_path,
        )

    async def _supervise(self) -> None:
        """Wait until QEMU exits, a deadline passes, or a stop is requested; then stop it."""
        assert self._started_at is not None
        boot_deadline = self._started_at + self.deadlines.boot
        total_deadline = self._started_at + self.deadlines.total
        while not self._exited.is_set() and self._requested is None:
            if self._changed.is_set():
                self._changed = trio.Event()
            now = trio.current_time()
            if self.state is VmState.BOOTING and now >= boot_deadline:
                self.request_stop(End.BOOT_TIMEOUT, f"no Hello within {self.deadlines.boot:g} s")
                break
            if now >= total_deadline:
                self.request_stop(End.RUN_TIMEOUT, f"over {self.deadlines.total:g} s in all")
                break
            deadline = total_deadline
            if self.state is VmState.BOOTING:
                deadline = min(boot_deadline, total_deadline)
            with trio.move_on_at(deadline):
                await self._changed.wait()
        if self.state in LIVE:
            self._life.advance(VmState.STOPPING)
        if not self._exited.is_set():
            await self._stop_qemu()

    async def _stop_qemu(self) -> None:
        """Soft, then hard: wait for power-off, system_powerdown, quit, SIGKILL."""
        requested = self._requested
        hard = requested is not None and requested[0] in (End.PANIC, End.CANCELLED)
        grace = SESSION_GRACE if self._quick else self.deadlines.poweroff
        if self._graceful and await self._exits_within(grace):
            return
        if not hard and not self._quick:
            self._stopped_by = "powerdown"
            await self._qmp_quietly("system_powerdown")
            if await self._exits_within(self.deadlines.soft_stop):
                return
        self._stopped_by = "quit"
        self._signalled = True
        await self._qmp_quietly("quit")
        if await self._exits_within(self.deadlines.quit):
            return
        self._stopped_by = "sigkill"
        assert self._process is not None
        self._process.kill()
        await self._exited.wait()

    async def _exits_within(self, seconds: float) -> bool:
        with trio.move_on_after(seconds):
            await self._exited.wait()
        return self._exited.is_set()

    async def _qmp_quietly(self, command: str) -> None:
        if self._qmp is None:
            return
        with trio.move_on_after(2.0):
            try:
                await self._qmp.execute(command)
            except QemuFailed as exc:  # QEMU may already be going away
                self._log.debug("%s: %s", command, exc)

    # -- background tasks ------------------------------------------------------------------

    def _poke(self) -> None:
        self._changed.set()

    async def _watch_process(self) -> None:
        assert self._process is not None
        returncode = await self._process.wait()
        self._log.debug("QEMU exited with %s", returncode)
        self._exited.set()
        self._poke()

    async def _pump_output(self, stream: trio.lowlevel.FdStream) -> None:
        try:
            while data := await stream.receive_some(READ_SIZE):
                self._qemu_output.write(bytes(data))
        finally:
            self._output_done.set()

    async def _pump_console(self, stream: trio.SocketStream) -> None:
        try:
            async with stream:
                while data := await stream.receive_some(READ_SIZE):
                    self.console.feed(data)
                    if self.console.verdicts.panic_line:
                        self.request_stop(End.PANIC, self.console.verdicts.panic_line)
                    if self.console.verdicts.marker_seen:
                        self._marker_seen.set()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._log.debug("console: %r", exc)
        finally:
            self.console.finish()
            self._console_done.set()

    async def _pump_events(self, qmp: Qmp) -> None:
        try:
            while True:
                event = await qmp.next_event()
                name = event.get("event")
                self._log.debug("QMP event %s %s", name, event.get("data"))
                if name == "SHUTDOWN":
                    self._shutdown_event = event.get("data") or {}
                elif name == "GUEST_PANICKED":
                    self._guest_panicked = True
                    self.request_stop(End.PANIC, "GUEST_PANICKED event")
        except (Exception, asyncio.CancelledError) as exc:  # the connection ends with QEMU
            self._log.debug("QMP events ended: %r", exc)

    # -- the end ---------------------------------------------------------------------------

    async def _cleanup(self, vmdir: VmDir | None) -> None:
        """Idempotent; runs shielded. Reaps QEMU, closes everything, removes the VM dir."""
        if self._done.is_set():
            return
        process = self._process
        if process is not None and process.returncode is None:
            self._signalled = True
            self._stopped_by = "sigterm"
            process.send_signal(15)  # QEMU treats SIGTERM as a clean quit
            with trio.move_on_after(CANCEL_GRACE):
                await process.wait()
            if process.returncode is None:
                self._stopped_by = "sigkill"
            await process.aclose()
        if self._port is not None:
            with contextlib.suppress(Exception):
                await self._port.aclose()
        if self.state in LIVE:
            self._life.advance(VmState.STOPPING)
        if self.state is not VmState.STOPPED:
            self._life.advance(VmState.STOPPED)
        self.result = self._make_result(process)
        self._write_log()
        if vmdir is not None:
            await trio.to_thread.run_sync(vmdir.close)
        self._log.info("%s", self.result.summary())
        self._done.set()

    def _make_result(self, process: OwnedProcess | None) -> MachineResult:
        returncode = process.returncode if process else None
        end, detail = classify(
            requested=self._requested,
            returncode=returncode,
            shutdown=self._shutdown_event,
            guest_panicked=self._guest_panicked,
            verdicts=self.console.verdicts,
            signalled_by_us=self._signalled,
            was_ready=self._boot_seconds is not None,
        )
        output = self._qemu_output_text()
        if end is End.QEMU_CRASH:
            lines = output.strip().splitlines()[-5:]
            detail = f"{detail}: {' | '.join(lines) if lines else 'no output'}"
        assert self._started_at is not None
        return MachineResult(
            end=end,
            detail=detail,
            accel=self.accel,
            returncode=returncode,
            stopped_by=self._stopped_by,
            boot_seconds=self._boot_seconds,
            wall_seconds=trio.current_time() - self._started_at,
            console=self.console.text(),
            qemu_output=output,
            oom_lines=tuple(self.console.verdicts.oom_lines),
            log_path=self.config.log_path,
            restored=self.config.restore is not None,
        )

    def _qemu_output_text(self) -> str:
        return self._qemu_output.getvalue().decode("utf-8", errors="replace")

    def _write_log(self) -> None:
        if self.config.log_path is None or self.result is None:
            return
        try:
            self.config.log_path.parent.mkdir(parents=True, exist_ok=True)
            resumed = f"# resumed from {self.config.restore}\n" if self.config.restore else ""
            self.config.log_path.write_text(
                f"# {self.result.summary()}\n{resumed}"
                f"## guest console (capped)\n{self.result.console}\n"
                f"## QEMU output (capped)\n{self.result.qemu_output}\n",
                errors="replace",
            )
        except OSError as exc:
            self._log.warning("cannot write VM log %s: %s", self.config.log_path, exc)


def _has_cancelled(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(trio.Cancelled) is not None
    return isinstance(exc, trio.Cancelled)


def _only_cancelled(group: BaseExceptionGroup[BaseException]) -> bool:
    matched, rest = group.split(trio.Cancelled)
    return matched is not None and rest is None


@contextlib.asynccontextmanager
async def open_machine(config: MachineConfig) -> AsyncIterator[Machine]:
    """A started Machine; on leaving, a normal end (the guest may power off) or a stop."""
    machine = Machine(config)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(machine.run)
            try:
                yield machine
            except BaseException as exc:
                if not isinstance(exc, trio.Cancelled):
                    machine.request_stop(End.STOPPED, f"host error: {exc!r}")
                raise
            machine.request_stop(End.NORMAL)
    except BaseExceptionGroup as group:
        raise _collapse(group) from None


__all__ = [
    "End",
    "Machine",
    "MachineConfig",
    "MachineResult",
    "classify",
    "open_machine",
]
