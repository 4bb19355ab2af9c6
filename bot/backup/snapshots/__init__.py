"""Snapshot drivers (Btrfs, LVM, ZFS): freeze the paths of a backup for its duration, as async context managers
that always remove what they created. See :mod:`bot.backup.snapshots.base` for the contract and the layout that
keeps archive paths equal to the original paths.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager

from bot.backup.snapshots.base import (
    CleanupFailed,
    Leftover,
    SnapshotDriver,
    SnapshotError,
    SnapshotFailed,
    SnapshotRefused,
    SnapshotView,
    snapshot_name,
)
from bot.backup.snapshots.btrfs import BtrfsDriver
from bot.backup.snapshots.lvm import LvmDriver
from bot.backup.snapshots.zfs import ZfsDriver
from bot.probes.base import ProbeContext
from bot.probes.snapshots import Method


def driver(method: Method) -> SnapshotDriver:
    """The driver for a method name as stored on a Repository (``snapshot_method``)."""
    drivers: dict[str, Callable[[], SnapshotDriver]] = {"btrfs": BtrfsDriver, "lvm": LvmDriver, "zfs": ZfsDriver}
    try:
        return drivers[method]()
    except KeyError:
        raise ValueError(f"unknown snapshot method {method!r}; expected btrfs, lvm or zfs") from None


def factory(
    snapshot_driver: SnapshotDriver, ctx: ProbeContext, run_id: str
) -> Callable[[Sequence[str]], AbstractAsyncContextManager[SnapshotView]]:
    """``paths -> async context manager of a view`` for one run; a :class:`SnapshotView` is also a callable
    original-path → borg-path mapper, so this fits the chain runner's ``SnapshotFactory``."""

    def start(paths: Sequence[str]) -> AbstractAsyncContextManager[SnapshotView]:
        return snapshot_driver.snapshot(ctx, paths, run_id)

    return start


__all__ = [
    "BtrfsDriver",
    "CleanupFailed",
    "Leftover",
    "LvmDriver",
    "SnapshotDriver",
    "SnapshotError",
    "SnapshotFailed",
    "SnapshotRefused",
    "SnapshotView",
    "ZfsDriver",
    "driver",
    "factory",
    "snapshot_name",
]
