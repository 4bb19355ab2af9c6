"""A real Btrfs filesystem on a loop device, for the snapshot driver's real lifecycle tests.

Why: this kernel has no device-mapper (no LVM snapshots) and no ZFS, but Btrfs works on a loop file
(TESTING.md), so the snapshot lifecycle (create → mount → cleanup, and cleanup after a failure) is tested for real
on Btrfs. Session scope: one 300 MiB image for the whole run; tests create uniquely named subvolumes in it
(:meth:`BtrfsMount.unique`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.common import (
    attach_loop,
    detach_loop,
    make_workdir,
    reap_stale,
    require_root,
    require_tool,
    run,
    unmount_all_under,
)

IMAGE_SIZE = "300M"


@dataclass(frozen=True)
class BtrfsMount:
    """A mounted Btrfs filesystem. Behaves as its mount path: ``os.fspath(m)``, ``m / "data"``, ``str(m)``."""

    path: Path  # mount point
    device: str  # the loop device, e.g. /dev/loop3
    image: Path  # the backing image file

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __truediv__(self, other: str | os.PathLike[str]) -> Path:
        return self.path / other

    def __str__(self) -> str:
        return os.fspath(self.path)

    def unique(self, prefix: str = "t") -> Path:
        """A not-yet-existing path directly below the mount, unique in this session."""
        return self.path / f"{prefix}-{os.urandom(4).hex()}"


def _kernel_has_btrfs() -> str | None:
    """None if the kernel can mount btrfs, else the exact reason."""

    def listed() -> bool:
        with open("/proc/filesystems") as fh:
            return any(line.split()[-1] == "btrfs" for line in fh if line.strip())

    if listed():
        return None
    modprobe = shutil.which("modprobe")
    if modprobe is None:
        return "kernel lacks btrfs: not in /proc/filesystems and no `modprobe` to load it"
    proc = run([modprobe, "btrfs"], check=False)
    if listed():
        return None
    return (
        f"kernel lacks btrfs: not in /proc/filesystems; `modprobe btrfs` exit {proc.returncode}: {proc.stderr.strip()}"
    )


@pytest.fixture(scope="session")
def btrfs_mount() -> Iterator[BtrfsMount]:
    """A 300 MiB loop-file Btrfs mounted in a temp dir for the session. Teardown unmounts (lazily if busy),
    detaches the loop device and deletes the image, also after a failure."""
    require_root("btrfs_mount (loop device + mount)")
    mkfs = require_tool("mkfs.btrfs", "btrfs-progs")
    require_tool("btrfs", "btrfs-progs")
    reason = _kernel_has_btrfs()
    if reason:
        pytest.skip(reason)
    reap_stale()
    workdir = make_workdir("btrfs")
    device: str | None = None
    errors: list[str] = []
    try:
        image = workdir / "btrfs.img"
        mount = workdir / "mnt"
        mount.mkdir()
        run(["truncate", "-s", IMAGE_SIZE, image])
        run([mkfs, "-q", image])
        device = attach_loop(image)
        proc = run(["mount", "-t", "btrfs", device, mount], check=False)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount btrfs from {device}: {proc.stderr.strip()}")
        yield BtrfsMount(path=mount, device=device, image=image)
    finally:
        errors += unmount_all_under(workdir)
        if device is not None:
            err = detach_loop(device)
            if err:
                errors.append(err)
        if not errors:
            shutil.rmtree(workdir, ignore_errors=True)
    if errors:
        raise RuntimeError(f"btrfs teardown left {workdir}: {errors}")
