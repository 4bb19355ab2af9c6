"""LVM: a classic (copy-on-write) snapshot of each logical volume holding the paths, mounted read-only.

Per logical volume ``vg/lv`` whose filesystem is mounted at ``T``, for run ``r7``::

    lvcreate --snapshot --name backup-bot-r7-1 --size <bytes>b vg/lv
    mkdir -m 0700 /run/backup-bot-r7 ; mkdir -p /run/backup-bot-r7/1<T>
    mount -o ro[,nouuid] -t <fstype> /dev/vg/backup-bot-r7-1 /run/backup-bot-r7/1<T>

and ``/var/www`` (on the LV mounted at ``/var``) goes to borg as ``/run/backup-bot-r7/1/./var/www``. Cleanup is
``umount``, ``lvremove -f``, ``rmdir``, in that order, also after any failure.

Why these choices:
  * Size: the probe's suggestion (20 % of the LV, within the VG's free space, whole extents; see
    :mod:`bot.probes.snapshot_lvm`). Several LVs of one VG share its free space, so each next one is sized
    against what the previous ones left, and refused when that drops below the probe's minimum.
  * The snapshot stays writable (no ``--permission r``): ext4 replays its journal and XFS its log when a
    snapshot of a mounted filesystem is mounted, even read-only, and both refuse a dirty read-only device.
    The *mount* is read-only. XFS refuses a second filesystem with the same UUID, hence ``nouuid``.
  * Thin LVs get a thin snapshot (no size) with ``--setactivationskip n``: thin snapshots are otherwise
    created with the activation-skip flag and stay inactive, so there would be no device to mount.
  * Btrfs on LVM is refused: a block-level copy of a mounted Btrfs has the same filesystem UUID and Btrfs
    mistakes the two devices for one filesystem. (Use the Btrfs driver.)
  * A path on a mount that shows only a directory of the LV's filesystem (a bind mount, fsroot not "/") is
    refused: the snapshot's root would not be the mount's root.
"""

from __future__ import annotations

import posixpath
from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from bot.backup.snapshots.base import (
    CleanupFailed,
    Ledger,
    SnapshotRefused,
    SnapshotView,
    Undo,
    check_request,
    create,
    describe_leftovers,
    inside,
    lifecycle,
    mkdir_private,
    mkdir_tree,
    remove_run_dirs,
    require_privileges,
    run_id_of,
    slashdot,
    snapshot_name,
    unmount_leftovers,
)
from bot.probes import disk, snapshot_lvm, snapshots
from bot.probes.base import Absent, ProbeContext, ProbeError
from bot.probes.disk import MountInfo
from bot.probes.snapshot_lvm import LogicalVolume, LvmReport
from bot.probes.snapshots import Method, MethodVerdict

NOT_FOUND = ("Failed to find logical volume",)
NOT_MOUNTED = ("not mounted",)
MOUNT_OPTIONS = {"xfs": "ro,nouuid"}  # every other filesystem: "ro"


@dataclass
class _Group:
    """One LV to snapshot, the mount it is seen through, its snapshot size and the paths it serves."""

    lv: LogicalVolume
    mount: MountInfo
    size_bytes: int | None  # None: a thin snapshot
    paths: list[str] = field(default_factory=list)


def lv_snapshot_name(run_id: str, number: int) -> str:
    """``backup-bot-<run>-<n>``: one name per LV in a run (LV names are unique per VG only)."""
    return f"{snapshot_name(run_id)}-{number}"


def run_of_lv(name: str) -> str | None:
    """The run id in ``backup-bot-<run>-<n>`` (run ids may contain '-'; the number never does)."""
    head, sep, number = name.rpartition("-")
    return run_id_of(head) if sep and number.isdigit() else None


def lvcreate_argv(group: _Group, name: str) -> tuple[str, ...]:
    """The exact ``lvcreate`` for one LV (see the module docstring for size and thin handling)."""
    if group.size_bytes is None:
        return ("lvcreate", "--snapshot", "--setactivationskip", "n", "--name", name, f"{group.lv.vg}/{group.lv.name}")
    size = f"{group.size_bytes}b"
    return ("lvcreate", "--snapshot", "--name", name, "--size", size, f"{group.lv.vg}/{group.lv.name}")


def mount_argv(group: _Group, device: str, where: str) -> tuple[str, ...]:
    options = MOUNT_OPTIONS.get(group.mount.fstype, "ro")
    return ("mount", "-o", options, "-t", group.mount.fstype, device, where)


def allocate(report: LvmReport, mounts: Sequence[MountInfo]) -> list[_Group]:
    """One group per LV, each sized by the probe's rule against the VG space the earlier ones left. (pure)"""
    groups: dict[str, _Group] = {}
    for mount in mounts:
        lv = snapshot_lvm.lv_for_source(mount.source, report.lvs)
        known = groups.get(lv.path) if lv else None
        if known is None:
            decision = snapshot_lvm.decide(mount.source, report)
            if decision.lv is None or not decision.available:
                raise SnapshotRefused(
                    f"{mount.path} cannot be snapshotted with LVM: {decision.reason} Nothing was created."
                )
            size = None if decision.lv.is_thin else decision.suggested_size_bytes
            groups[decision.lv.path] = known = _Group(decision.lv, mount, size)
            report = _spend(report, decision.lv.vg, size or 0)
        elif known.mount.target != mount.target:
            raise SnapshotRefused(
                f"{known.lv.vg}/{known.lv.name} is mounted at both {known.mount.target} and {mount.target}; "
                "give all paths through one of them. Nothing was created."
            )
        known.paths.append(mount.path)
    return list(groups.values())


def _spend(report: LvmReport, vg_name: str, size: int) -> LvmReport:
    """The report with ``size`` bytes less free space in ``vg_name`` (for the next LV's size decision)."""
    vgs = tuple(
        v.model_copy(update={"free_bytes": v.free_bytes - size}) if v.name == vg_name else v for v in report.vgs
    )
    return report.model_copy(update={"vgs": vgs})


def _refuse_mount(mount: MountInfo) -> None:
    if mount.fstype == "btrfs":
        raise SnapshotRefused(
            f"{mount.path} is on Btrfs on an LVM volume; an LVM snapshot of a mounted Btrfs would carry the same "
            "filesystem UUID and confuse Btrfs. Use the Btrfs snapshot method. Nothing was created."
        )
    if mount.fsroot not in ("/", ""):
        raise SnapshotRefused(
            f"{mount.path} is on a mount at {mount.target} that shows only {mount.fsroot} of {mount.source}; back up "
            "the path through the volume's main mount point instead. Nothing was created."
        )


class LvmDriver:
    """LVM snapshots, mounted below ``mount_base`` (``/run``: root-only and emptied at boot, so no stale mount
    directory survives a reboot; the snapshot LVs themselves do, and :meth:`cleanup_leftovers` removes them)."""

    name: Method = "lvm"

    def __init__(self, *, mount_base: str = "/run") -> None:
        self.mount_base = posixpath.normpath(mount_base)

    async def applies(self, ctx: ProbeContext, path: str) -> MethodVerdict:
        return await snapshots.lvm_verdict(ctx, await disk.mount_info(ctx, path))

    def snapshot(
        self, ctx: ProbeContext, paths: Sequence[str], run_id: str
    ) -> AbstractAsyncContextManager[SnapshotView]:
        wanted = check_request(ctx, "LVM", paths, run_id)
        return lifecycle(ctx, "LVM", lambda ledger: self._create(ctx, wanted, run_id, ledger))

    async def _plan(self, ctx: ProbeContext, paths: Sequence[str]) -> list[_Group]:
        try:
            mounts = [await disk.mount_info(ctx, path) for path in paths]
            for mount in mounts:
                _refuse_mount(mount)
                if not snapshot_lvm.may_be_lv(mount.source):
                    raise SnapshotRefused(
                        f"{mount.path} is on {mount.source}, which is not an LVM logical volume. Nothing was created."
                    )
            report = await snapshot_lvm.probe(ctx)
        except Absent:
            raise SnapshotRefused("lvm2 is not installed on this server (no `lvs`). Nothing was created.") from None
        except ProbeError as exc:
            raise SnapshotRefused(f"{exc} Nothing was created.") from None
        return allocate(report, mounts)

    async def _create(self, ctx: ProbeContext, paths: Sequence[str], run_id: str, ledger: Ledger) -> SnapshotView:
        groups = await self._plan(ctx, paths)
        base = posixpath.join(self.mount_base, snapshot_name(run_id))
        await mkdir_private(ctx, ledger, base)
        view: dict[str, str] = {}
        for number, group in enumerate(groups, start=1):
            name = lv_snapshot_name(run_id, number)
            lv = f"{group.lv.vg}/{group.lv.name}"
            undo = Undo(
                f"the LVM snapshot {group.lv.vg}/{name}", ("lvremove", "-f", f"{group.lv.vg}/{name}"), gone=NOT_FOUND
            )
            await create(ctx, ledger, lvcreate_argv(group, name), f"Creating the LVM snapshot of {lv}", undo)
            root = f"{base}/{number}"
            where = inside(root, group.mount.target)
            await mkdir_tree(ctx, ledger, base, where)
            device = f"/dev/{group.lv.vg}/{name}"
            undo = Undo(f"the mount of {device} at {where}", ("umount", "--", where), gone=NOT_MOUNTED)
            await create(
                ctx, ledger, mount_argv(group, device, where), f"Mounting the snapshot of {lv} read-only", undo
            )
            view.update({p: slashdot(root, p) for p in group.paths})
        return SnapshotView(
            method="lvm", run_id=run_id, paths=tuple((p, view[p]) for p in paths), created=ledger.created
        )

    async def cleanup_leftovers(self, ctx: ProbeContext, active_run_ids: Collection[str]) -> list[str]:
        """Unmount ``<mount_base>/backup-bot-<run>/…`` mounts, remove ``backup-bot-<run>-<n>`` snapshot LVs and
        the mount directories, for every run not in ``active_run_ids``."""
        require_privileges(ctx, "LVM")
        removed, left = await unmount_leftovers(ctx, self.mount_base, active_run_ids)
        try:
            report = await snapshot_lvm.probe(ctx)
        except Absent:
            report = LvmReport(lvs=(), vgs=())
        ledger = Ledger(ctx)
        for lv in report.lvs:
            run_id = run_of_lv(lv.name)
            if lv.is_snapshot and run_id is not None and run_id not in set(active_run_ids):
                ledger.add(
                    Undo(
                        f"the LVM snapshot {lv.vg}/{lv.name}", ("lvremove", "-f", f"{lv.vg}/{lv.name}"), gone=NOT_FOUND
                    )
                )
        for gone, stuck in (await ledger.release(), await remove_run_dirs(ctx, self.mount_base, active_run_ids)):
            removed += gone
            left += stuck
        if left:
            raise CleanupFailed(f"Removing leftovers of earlier runs failed. {describe_leftovers(left)}", left, removed)
        return removed
