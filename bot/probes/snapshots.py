"""Which snapshot method can freeze a given path for the length of a backup: Btrfs, ZFS or LVM.

The wizard's snapshot step shows every method with "available" or "not available" and the reason, and one
recommendation. Native filesystem snapshots come first (Btrfs or ZFS, when the path is on them: instant, no
space to reserve, no block-device juggling); LVM comes next (needs free space in the volume group for the
blocks that change meanwhile). With none, the backup reads live files, and the wizard says what that means.

The path's filesystem (findmnt/df, see :mod:`bot.probes.disk`) decides which tools are even asked: a path on
ext4 on /dev/vda1 runs no btrfs, zfs or lvs command at all. A missing tool (no btrfs-progs, no zfs, no lvm2)
or missing privileges make that method unavailable with a reason; they are never a failed probe. Only a path
that cannot be inspected at all (it does not exist, it is unreachable) raises ProbeError.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from bot.probes import disk, snapshot_btrfs, snapshot_lvm, snapshot_zfs
from bot.probes.base import Absent, Model, ProbeContext, ProbeError
from bot.probes.disk import MountInfo

Method = Literal["btrfs", "zfs", "lvm"]
PREFERENCE: tuple[Method, ...] = ("btrfs", "zfs", "lvm")
NO_SNAPSHOT = "without a snapshot, files changing during the backup may be captured inconsistently"
_LABELS = {"btrfs": "Btrfs", "zfs": "ZFS", "lvm": "LVM"}


class MethodVerdict(Model):
    method: Method
    available: bool
    reason: str
    target: str | None = None  # Btrfs subvolume root, ZFS dataset or LV device path that would be snapshotted
    suggested_size_bytes: int | None = None  # LVM: the snapshot's size (see snapshot_lvm for the rule)
    free_bytes: int | None = None  # LVM: free space in the volume group
    warnings: tuple[str, ...] = ()


class SnapshotMethods(Model):
    path: str
    mount: MountInfo
    methods: tuple[MethodVerdict, ...]  # one per method, in PREFERENCE order
    recommended: Method | None
    summary: str

    def get(self, method: Method) -> MethodVerdict:
        return next(m for m in self.methods if m.method == method)


def _no(method: Method, reason: str) -> MethodVerdict:
    return MethodVerdict(method=method, available=False, reason=reason)


def _not_on(method: Method, mount: MountInfo) -> MethodVerdict:
    return _no(method, f"{mount.path} is on {mount.fstype} (mounted at {mount.target}), not on {_LABELS[method]}.")


def _root_needed(method: Method, what: str) -> MethodVerdict:
    return _no(
        method,
        f"{what}, but creating a {_LABELS[method]} snapshot needs root and the login user is neither root nor allowed "
        "passwordless sudo; connect as root or allow passwordless sudo.",
    )


async def btrfs_verdict(ctx: ProbeContext, mount: MountInfo) -> MethodVerdict:
    """Btrfs: the containing subvolume (stat walk), then the nested subvolumes a snapshot would miss."""
    if mount.fstype != "btrfs":
        return _not_on("btrfs", mount)
    try:
        location = await snapshot_btrfs.locate(ctx, mount.path)
    except (ProbeError, Absent) as exc:
        return _no("btrfs", str(exc) if isinstance(exc, ProbeError) else f"`{exc}` is missing on this server.")
    if not ctx.privileged:
        return _root_needed("btrfs", f"{mount.path} is in the Btrfs subvolume {location.subvolume}")
    try:
        below = await snapshot_btrfs.list_below(ctx, location.subvolume)
        nested = snapshot_btrfs.nested_under(location.resolved, below, target=mount.target, fsroot=mount.fsroot)
    except Absent:
        return _no("btrfs", "btrfs-progs is not installed (no `btrfs` command), and snapshots are made with it.")
    except ProbeError:
        nested = None
    decision = snapshot_btrfs.decide(location, nested)
    return MethodVerdict(
        method="btrfs",
        available=decision.available,
        reason=decision.reason,
        target=location.subvolume,
        warnings=decision.warnings,
    )


async def zfs_verdict(ctx: ProbeContext, mount: MountInfo) -> MethodVerdict:
    """ZFS: the dataset named by findmnt's SOURCE, confirmed by ``zfs list``."""
    if mount.fstype != "zfs":
        return _not_on("zfs", mount)
    try:
        datasets = await snapshot_zfs.probe(ctx)
    except Absent:
        return _no("zfs", f"{mount.path} is on ZFS, but the `zfs` command is not installed (zfsutils).")
    except ProbeError as exc:
        return _no("zfs", str(exc))
    decision = snapshot_zfs.decide(mount.path, datasets, fstype=mount.fstype, source=mount.source)
    if decision.available and not ctx.privileged:
        return _root_needed("zfs", f"{mount.path} is in the ZFS dataset {mount.source}")
    target = decision.dataset.name if decision.dataset else None
    return MethodVerdict(method="zfs", available=decision.available, reason=decision.reason, target=target)


async def lvm_verdict(ctx: ProbeContext, mount: MountInfo) -> MethodVerdict:
    """LVM: the LV behind findmnt's SOURCE and its volume group's free space."""
    if not snapshot_lvm.may_be_lv(mount.source):
        return _no("lvm", f"{mount.path} is on {mount.source}, which is not an LVM logical volume.")
    try:
        report = await snapshot_lvm.probe(ctx)
    except Absent:
        return _no("lvm", f"{mount.path} is on {mount.source}, but lvm2 is not installed (no `lvs`).")
    except ProbeError as exc:
        return _no("lvm", str(exc))
    decision = snapshot_lvm.decide(mount.source, report)
    return MethodVerdict(
        method="lvm",
        available=decision.available,
        reason=decision.reason,
        target=decision.lv.path if decision.lv else None,
        suggested_size_bytes=decision.suggested_size_bytes,
        free_bytes=decision.vg.free_bytes if decision.vg else None,
    )


def combine(mount: MountInfo, verdicts: tuple[MethodVerdict, ...]) -> SnapshotMethods:
    """Order the verdicts, pick the recommendation (native fs first, then LVM) and say what it means. (pure)"""
    by_method = {v.method: v for v in verdicts}
    ordered = tuple(by_method[m] for m in PREFERENCE if m in by_method)
    chosen = next((v for v in ordered if v.available), None)
    if chosen is None:
        summary = f"No snapshot method can cover {mount.path}: {NO_SNAPSHOT}."
    else:
        summary = f"Recommended: {_LABELS[chosen.method]} snapshot of {chosen.target}. {chosen.reason}"
    return SnapshotMethods(
        path=mount.path,
        mount=mount,
        methods=ordered,
        recommended=chosen.method if chosen else None,
        summary=summary,
    )


async def methods_for_path(ctx: ProbeContext, path: str) -> SnapshotMethods:
    """Every snapshot method for ``path``; raises ProbeError only when the path itself cannot be inspected."""
    mount = await disk.mount_info(ctx, path)
    verdicts = await asyncio.gather(btrfs_verdict(ctx, mount), zfs_verdict(ctx, mount), lvm_verdict(ctx, mount))
    return combine(mount, tuple(verdicts))


async def probe(ctx: ProbeContext, path: str) -> SnapshotMethods:
    return await methods_for_path(ctx, path)
