"""ZFS: a snapshot of each dataset holding the paths, mounted read-only.

For run ``r7`` and datasets ``tank/www`` (mounted at ``/srv/www``) and ``tank/db`` (at ``/var/lib/db``)::

    zfs snapshot tank/www@backup-bot-r7 tank/db@backup-bot-r7     one command per pool: atomic, same instant
    mkdir -m 0700 /run/backup-bot-r7 ; mkdir -p /run/backup-bot-r7/1/srv/www
    mount -t zfs -o ro tank/www@backup-bot-r7 /run/backup-bot-r7/1/srv/www              (and 2/var/lib/db)

and ``/srv/www/html`` goes to borg as ``/run/backup-bot-r7/1/./srv/www/html``. Cleanup: ``umount``, then
``zfs destroy <dataset>@backup-bot-r7``, checked with ``zfs list`` (OpenZFS has reported success for a destroy
that did not happen, issues #1007 and #1210), then ``rmdir``.

Why mount instead of reading ``<mountpoint>/.zfs/snapshot/<name>/``: borg's ``/./`` needs the snapshot to appear
at ``<root>/<mount point>``, which the ``.zfs`` directory cannot offer (it sits *inside* the dataset, and a
symlink as the recursion root would be archived as a symlink). The ``.zfs`` automounts also have a record of
failing where an explicit mount works (datasets mounted from the initramfs, renamed datasets, ``legacy``
mountpoints: OpenZFS #9461, #13787, #16843), expire after ``zfs_expire_snapshot`` seconds, and do not depend on
``snapdir`` (``hidden`` only hides the directory from listings). An explicit ``mount -t zfs`` of a snapshot is
what ``mount.zfs(8)`` documents. Caveat (OpenZFS #9958): a snapshot mounted this way cannot also be reached
through ``.zfs/snapshot`` at the same time; the name is new and this run's own, so nothing else uses it.

Child datasets mounted below a path are not part of its dataset's snapshot (they appear as empty directories);
the view warns about them. List them as paths of their own to include them.
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
    explain,
    inside,
    lifecycle,
    mkdir_private,
    mkdir_tree,
    remove_run_dirs,
    require_privileges,
    run_id_of,
    slashdot,
    snapshot_name,
    step,
    unmount_leftovers,
)
from bot.probes import disk, snapshot_zfs, snapshots
from bot.probes.base import Absent, ProbeContext, ProbeError
from bot.probes.disk import MountInfo
from bot.probes.snapshot_zfs import Dataset
from bot.probes.snapshots import Method, MethodVerdict

GONE = ("could not find any snapshots to destroy", "dataset does not exist")
NOT_MOUNTED = ("not mounted",)
SNAPSHOT_LIST = ("zfs", "list", "-H", "-o", "name", "-t", "snapshot")


@dataclass
class _Group:
    dataset: Dataset
    mount: MountInfo
    paths: list[str] = field(default_factory=list)

    @property
    def pool(self) -> str:
        return self.dataset.name.split("/", 1)[0]


def children_below(path: str, dataset: Dataset, datasets: Sequence[Dataset]) -> list[str]:
    """Mounted child datasets whose mount point lies below ``path``: not in ``dataset``'s snapshot. (pure)"""
    found = []
    for child in datasets:
        where = child.mount_path
        if child.name.startswith(dataset.name + "/") and child.mounted is not False and where:
            if where.startswith(path.rstrip("/") + "/"):
                found.append(f"{child.name} at {where}")
    return found


def group_paths(mounts: Sequence[MountInfo], datasets: Sequence[Dataset]) -> tuple[list[_Group], list[str]]:
    """One group per dataset (the probe decides which dataset holds each path), and warnings. (pure)"""
    groups: dict[str, _Group] = {}
    warnings: list[str] = []
    for mount in mounts:
        decision = snapshot_zfs.decide(mount.path, tuple(datasets), fstype=mount.fstype, source=mount.source)
        if decision.dataset is None or not decision.available:
            raise SnapshotRefused(
                f"{mount.path} cannot be snapshotted with ZFS: {decision.reason} Nothing was created."
            )
        group = groups.setdefault(decision.dataset.name, _Group(decision.dataset, mount))
        group.paths.append(mount.path)
        children = children_below(mount.path, decision.dataset, datasets)
        if children:
            warnings.append(
                f"The snapshot of {decision.dataset.name} does not include the child datasets "
                f"{', '.join(children)}; they would be backed up as empty directories unless listed as paths too."
            )
    return list(groups.values()), warnings


class ZfsDriver:
    """ZFS snapshots mounted below ``mount_base`` (see :class:`~bot.backup.snapshots.lvm.LvmDriver` for why
    ``/run``)."""

    name: Method = "zfs"

    def __init__(self, *, mount_base: str = "/run") -> None:
        self.mount_base = posixpath.normpath(mount_base)

    async def applies(self, ctx: ProbeContext, path: str) -> MethodVerdict:
        return await snapshots.zfs_verdict(ctx, await disk.mount_info(ctx, path))

    def snapshot(
        self, ctx: ProbeContext, paths: Sequence[str], run_id: str
    ) -> AbstractAsyncContextManager[SnapshotView]:
        wanted = check_request(ctx, "ZFS", paths, run_id)
        return lifecycle(ctx, "ZFS", lambda ledger: self._create(ctx, wanted, run_id, ledger))

    async def _plan(self, ctx: ProbeContext, paths: Sequence[str]) -> tuple[list[_Group], list[str]]:
        try:
            mounts = [await disk.mount_info(ctx, path) for path in paths]
            for mount in mounts:
                if mount.fstype != "zfs":
                    raise SnapshotRefused(
                        f"{mount.path} is on {mount.fstype} (mounted at {mount.target}), not on ZFS. "
                        "Nothing was created."
                    )
            datasets = await snapshot_zfs.probe(ctx)
        except Absent:
            raise SnapshotRefused("The `zfs` command is not installed on this server. Nothing was created.") from None
        except ProbeError as exc:
            raise SnapshotRefused(f"{exc} Nothing was created.") from None
        return group_paths(mounts, datasets)

    async def _create(self, ctx: ProbeContext, paths: Sequence[str], run_id: str, ledger: Ledger) -> SnapshotView:
        groups, warnings = await self._plan(ctx, paths)
        name = snapshot_name(run_id)
        base = posixpath.join(self.mount_base, name)
        await mkdir_private(ctx, ledger, base)
        for pool in dict.fromkeys(g.pool for g in groups):
            await _snapshot_pool(ctx, ledger, [g.dataset.name + "@" + name for g in groups if g.pool == pool])
        view: dict[str, str] = {}
        for number, group in enumerate(groups, start=1):
            root = f"{base}/{number}"
            where = inside(root, group.mount.target)
            await mkdir_tree(ctx, ledger, base, where)
            snap = f"{group.dataset.name}@{name}"
            undo = Undo(f"the mount of {snap} at {where}", ("umount", "--", where), gone=NOT_MOUNTED)
            argv = ("mount", "-t", "zfs", "-o", "ro", snap, where)
            await create(ctx, ledger, argv, f"Mounting the ZFS snapshot {snap} read-only", undo)
            view.update({p: slashdot(root, p) for p in group.paths})
        return SnapshotView(
            method="zfs",
            run_id=run_id,
            paths=tuple((p, view[p]) for p in paths),
            created=ledger.created,
            warnings=tuple(warnings),
        )

    async def cleanup_leftovers(self, ctx: ProbeContext, active_run_ids: Collection[str]) -> list[str]:
        """Unmount ``<mount_base>/backup-bot-<run>/…``, destroy ``<dataset>@backup-bot-<run>`` snapshots and remove
        the mount directories, for every run not in ``active_run_ids``."""
        require_privileges(ctx, "ZFS")
        removed, left = await unmount_leftovers(ctx, self.mount_base, active_run_ids)
        ledger = Ledger(ctx)
        for snap in await _our_snapshots(ctx):
            run_id = run_id_of(snap.split("@", 1)[1])
            if run_id is not None and run_id not in set(active_run_ids):
                ledger.add(_destroy(snap))
        for gone, stuck in (await ledger.release(), await remove_run_dirs(ctx, self.mount_base, active_run_ids)):
            removed += gone
            left += stuck
        if left:
            raise CleanupFailed(f"Removing leftovers of earlier runs failed. {describe_leftovers(left)}", left, removed)
        return removed


def _destroy(snap: str) -> Undo:
    return Undo(f"the ZFS snapshot {snap}", ("zfs", "destroy", snap), gone=GONE, verify=(*SNAPSHOT_LIST, snap))


async def _snapshot_pool(ctx: ProbeContext, ledger: Ledger, snaps: list[str]) -> None:
    """``zfs snapshot`` of several datasets of one pool in one command: all taken at the same instant, or none."""
    for snap in snaps:
        ledger.add(_destroy(snap))
    await step(
        ctx, ("zfs", "snapshot", *snaps), f"Creating the ZFS snapshot{'s' * (len(snaps) > 1)} {', '.join(snaps)}"
    )


async def _our_snapshots(ctx: ProbeContext) -> list[str]:
    """Every ``<dataset>@backup-bot-*`` snapshot; [] when zfs is not installed."""
    result = await ctx.run(SNAPSHOT_LIST, what="zfs list", privileged=True, check=False)
    if result.exit_status == 127:
        return []
    if not result.ok:
        raise CleanupFailed(f"Listing ZFS snapshots failed: {explain(result)}.")
    return [line for line in result.out.splitlines() if "@backup-bot-" in line]
