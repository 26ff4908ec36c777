"""Saved VMs: boot a guest once per machine shape, then resume it for every run.

Under TCG a cold boot to the agent's Hello costs ~2.8 s (kernel, /init, the interpreter, the
agent's imports) and most of QEMU's memory at that point (the kernel ELF is mapped and copied,
the translation buffer filled). A VM resumed from a saved state skips all of it: QEMU reads
~80 MB of guest memory and the agent, blocked before Hello, continues (docs/lifecycle.md).

How it stays correct:

- The snapshot's VM is booted with exactly the argv a run uses (same image, memory, CPUs,
  scratch size, setup disk size), so the restored devices match; the key below is a hash of
  that argv with the per-VM paths taken out, the image files and the QEMU binary.
- It is saved at the agent's snapshot point, before Hello, with the port left unconnected:
  nothing of a run has happened yet. The setup disk behind the device is the run's own (the
  agent mounts it only after Start); the scratch disk is a fresh sparse file of the same size.
- What must differ per run comes in Start: the wall clock and fresh entropy, which the agent
  forces into the kernel's CRNG (guest_agent/pyti_agent/system.py).
- A snapshot that fails to load (a QEMU upgrade the key missed, a truncated file) is deleted
  and the run boots cold; a shape whose snapshot cannot be made is remembered and not tried
  again until the key changes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import trio

from pyti import paths
from pyti.accel import qemu_identity
from pyti.machine import End, Machine, MachineConfig, sandbox_supported, vm_config
from pyti.protocol import Start
from pyti.qemu_argv import build_argv

log = logging.getLogger(__name__)

# Bump when what the agent or /init does before the snapshot point changes in a way the
# image hash does not show (it normally does: the agent and /init are in the initrd).
FORMAT = 1
SUFFIX = ".state"
UNUSED_DAYS = 14


ENTROPY_BYTES = 64


def fresh_start(run_id: str, tasks: Sequence[str], test_args: Sequence[str] = ()) -> Start:
    """The Start for a guest that may be resumed from a snapshot: with the host's clock and
    fresh entropy for its CRNG (without them, every resumed guest would draw the same bytes).
    Every host that starts a guest's tasks sends this one."""
    return Start(
        run_id=run_id,
        tasks=tuple(tasks),
        test_args=tuple(test_args),
        clock=time.time(),
        entropy=os.urandom(ENTROPY_BYTES),
    )


def _identity(path: Path | None) -> str:
    if path is None:
        return "-"
    stat = path.stat()
    return f"{path}:{stat.st_size}:{int(stat.st_mtime)}"


def key(config: MachineConfig) -> str:
    """What a snapshot depends on: the argv's shape, the image files, the QEMU binary."""
    # The argv with what differs per VM replaced by what must not: the disks' sizes.
    placeholder = Path("/vm")
    setup = config.setup_disk
    shape = vm_config(
        config,
        setup_disk=placeholder / f"setup-{setup.stat().st_size}" if setup else None,
        scratch_disk=placeholder / f"scratch-{config.scratch_mb}" if config.scratch_mb else None,
        socket=lambda name: placeholder / name,
        sandbox=bool(config.sandbox),
    )
    material = {
        "format": FORMAT,
        "argv": build_argv(shape),
        "files": [_identity(p) for p in (config.kernel, config.initrd, config.root_disk)],
        "qemu": qemu_identity(config.qemu),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]


def path_for(config: MachineConfig) -> Path:
    return paths.snapshots_dir() / f"{key(config)}{SUFFIX}"


# Kernel arguments a snapshot may carry: tracing only. Any other addition (a script in
# place of the agent, a guest made to misbehave) never reaches the snapshot point.
_SNAPSHOT_SAFE_ARGS = frozenset({"pyti.trace"})


def usable(config: MachineConfig) -> bool:
    """Whether a run with `config` may be resumed from a snapshot at all."""
    extra = set(config.extra_cmdline.split())
    return config.restore is None and config.connect_port and extra <= _SNAPSHOT_SAFE_ARGS


def invalidate(snapshot: Path, why: str) -> None:
    """Delete a snapshot that failed to load; the next run makes a new one."""
    log.warning("snapshot %s is unusable (%s): deleted; this run boots cold", snapshot.name, why)
    snapshot.unlink(missing_ok=True)


def _needs(config: MachineConfig) -> list[str]:
    return [str(path) for path in (config.kernel, config.initrd, config.root_disk)]


def _sidecar(target: Path) -> Path:
    return target.with_suffix(".json")


def prune() -> int:
    """Delete the snapshots (and notes) of images that no longer exist; how many went.

    Every image rebuild (a new agent, say) changes the key, so old snapshots would pile up
    at ~75 MB each; so does a new pyti that changes QEMU's argv. Snapshots not used for
    UNUSED_DAYS go too.
    """
    removed = 0
    for sidecar in paths.snapshots_dir().glob("*.json"):
        try:
            needs = json.loads(sidecar.read_text())["needs"]
        except (OSError, ValueError, KeyError, TypeError):
            needs = ["/nonexistent"]  # unreadable: treat as stale
        state = sidecar.with_suffix(SUFFIX)
        with contextlib.suppress(OSError):
            if time.time() - state.stat().st_mtime > UNUSED_DAYS * 86400:
                needs = ["/nonexistent"]  # a shape nobody runs any more (another CPU, say)
        if all(Path(path).exists() for path in needs):
            continue
        for suffix in (SUFFIX, ".failed", ".lock", ".json"):
            sidecar.with_suffix(suffix).unlink(missing_ok=True)
        removed += 1
    for state in paths.snapshots_dir().glob(f"*{SUFFIX}"):
        if not _sidecar(state).exists():  # saved without a note: cannot tell what it needs
            state.unlink(missing_ok=True)
            removed += 1
    return removed


@contextlib.contextmanager
def _try_lock(target: Path) -> Iterator[bool]:
    """An exclusive, non-blocking lock on `target`.lock: False if another pyti holds it."""
    lock_path = target.with_suffix(".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


async def ensure(config: MachineConfig) -> Path | None:
    """The snapshot for `config`'s shape, made now if missing; None to boot cold.

    Never raises for a snapshot that cannot be made: the run boots cold instead. While
    another pyti is making the same snapshot, this run boots cold rather than wait.
    """
    if not usable(config):
        return None
    if config.sandbox is None:  # resolved as Machine resolves it, so the key matches
        config = dataclasses.replace(config, sandbox=await sandbox_supported(config.qemu))
    target = path_for(config)
    if target.is_file():
        with contextlib.suppress(OSError):
            os.utime(target)  # last used: see prune()
        return target
    failed = target.with_suffix(".failed")
    if failed.exists():
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    with _try_lock(target) as locked:
        if not locked:
            return None
        if target.is_file():  # made by another pyti while we looked
            return target
        prune()
        _sidecar(target).write_text(json.dumps({"needs": _needs(config)}))
        try:
            await _make(config, target)
        except (Exception, trio.TooSlowError) as exc:
            log.warning("cannot make a VM snapshot (boots stay cold for this shape): %s", exc)
            failed.write_text(f"{exc}\n")
            return None
    return target


async def _make(config: MachineConfig, target: Path) -> None:
    """Boot `config` to the agent's snapshot point and save the VM to `target`."""
    maker = dataclasses.replace(config, connect_port=False, log_path=None, name="snapshot")
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        machine = Machine(maker)
        async with trio.open_nursery() as nursery:
            await nursery.start(machine.run)
            with trio.fail_after(machine.deadlines.boot):
                await machine.save_state(partial)
        result = machine.result
        assert result is not None
        if result.end is not End.STOPPED:
            raise RuntimeError(f"the snapshot's VM ended {result.summary()}")
        partial.chmod(0o600)
        os.replace(partial, target)
        log.info("saved a VM snapshot: %s (%d MB)", target.name, target.stat().st_size >> 20)
    finally:
        partial.unlink(missing_ok=True)
