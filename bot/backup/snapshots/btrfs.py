"""Btrfs: read-only snapshots of the subvolumes holding the paths, kept in a per-run directory on the same
filesystem. No mount is needed: a snapshot is a directory tree.

Layout, for a run ``r7`` and a subvolume ``S`` whose filesystem is mounted at ``T``::

    T/.backup-bot-r7/                 mode 0700, one per mount point involved
    T/.backup-bot-r7/1/<S>            read-only snapshot of S (plain directories above it, from mkdir -p)
    T/.backup-bot-r7/2/<S2>           another subvolume: its own tree, since it cannot live inside snapshot 1

and ``/srv/www/html`` (inside ``S = /srv/www``) is given to borg as ``T/.backup-bot-r7/1/./srv/www/html``.
The directory lives at the mount point because that is the one place known to be on the same filesystem and
writable whatever the subvolume layout (``btrfs subvolume snapshot`` needs source and destination on one
filesystem; different mounts of it are fine). When ``S`` is the mounted subvolume itself, its snapshot also
contains the (then nearly empty) ``.backup-bot-r7`` directory: the view excludes it.

A path reached through a symlink (``/srv/link/x`` with ``/srv/link -> /data``) is archived under the name it was
given, as borg would without a snapshot: the snapshot of ``/data`` is placed at ``…/1/srv/link``. A path that
*is* a symlink, or resolves below its subvolume through one, is refused (say the real path instead).

Several subvolumes are snapshotted one after the other: Btrfs has no atomic multi-subvolume snapshot.
Nested subvolumes are not part of a snapshot (they appear as empty directories); the probe's warning is passed on.
"""

from __future__ import annotations

import posixpath
from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from bot.backup.snapshots.base import (
    PREFIX,
    CleanupFailed,
    Ledger,
    Leftover,
    SnapshotRefused,
    SnapshotView,
    Undo,
    check_request,
    create,
    describe_leftovers,
    explain,
    inside,
    leftover_run,
    lifecycle,
    list_entries,
    list_mounts,
    mkdir_private,
    mkdir_tree,
    require_privileges,
    slashdot,
    snapshot_name,
)
from bot.probes import disk, snapshot_btrfs, snapshots
from bot.probes.base import Absent, ProbeContext, ProbeError
from bot.probes.snapshots import Method, MethodVerdict

SUBVOLUME_GONE = ("No such file or directory",)


@dataclass
class _Group:
    """One subvolume to snapshot, and the paths it serves."""

    subvolume: str  # real path of the subvolume root (source of the snapshot)
    named: str  # the same directory as the paths name it (differs when a symlink leads there)
    target: str  # mount point of its filesystem: where the run directory goes
    paths: list[str] = field(default_factory=list)


def run_dir(target: str, run_id: str) -> str:
    return posixpath.join(target, "." + snapshot_name(run_id))


def named_subvolume(path: str, location: snapshot_btrfs.SubvolumeLocation) -> str:
    """The subvolume root as ``path`` names it: ``path`` minus the part below the subvolume (see module doc)."""
    below = posixpath.relpath(location.resolved, location.subvolume)
    if below == ".":
        return path
    if path.endswith("/" + below):
        return path[: len(path) - len(below) - 1] or "/"
    raise SnapshotRefused(
        f"{path} leads through a symlink to {location.resolved}; a snapshot could not keep its name. Give the "
        f"real path ({location.resolved}) instead. Nothing was created."
    )


class BtrfsDriver:
    """Snapshots for paths on Btrfs (see the module docstring). ``search_under`` limits which Btrfs mount
    points :meth:`cleanup_leftovers` looks at ("/" = all of them)."""

    name: Method = "btrfs"

    def __init__(self, *, search_under: str = "/") -> None:
        self.search_under = posixpath.normpath(search_under)

    async def applies(self, ctx: ProbeContext, path: str) -> MethodVerdict:
        return await snapshots.btrfs_verdict(ctx, await disk.mount_info(ctx, path))

    def snapshot(
        self, ctx: ProbeContext, paths: Sequence[str], run_id: str
    ) -> AbstractAsyncContextManager[SnapshotView]:
        wanted = check_request(ctx, "Btrfs", paths, run_id)
        return lifecycle(ctx, "Btrfs", lambda ledger: self._create(ctx, wanted, run_id, ledger))

    async def _plan(self, ctx: ProbeContext, paths: Sequence[str]) -> tuple[list[_Group], list[str]]:
        """Which subvolumes to snapshot (probes only; nothing is created here)."""
        groups: dict[str, _Group] = {}
        warnings: list[str] = []
        for path in paths:
            mount, verdict, location = await _inspect(ctx, path)
            named = named_subvolume(path, location)
            group = groups.setdefault(location.subvolume, _Group(location.subvolume, named, mount.target))
            if named != group.named:
                raise SnapshotRefused(
                    f"{path} and {group.paths[0]} reach the subvolume {group.subvolume} under "
                    "different names; give both by the same name. Nothing was created."
                )
            group.paths.append(path)
            warnings += [w for w in verdict.warnings if w not in warnings]
        return list(groups.values()), warnings

    async def _create(self, ctx: ProbeContext, paths: Sequence[str], run_id: str, ledger: Ledger) -> SnapshotView:
        groups, warnings = await self._plan(ctx, paths)
        view: dict[str, str] = {}
        excludes: list[str] = []
        directories: set[str] = set()
        for number, group in enumerate(groups, start=1):
            directory = run_dir(group.target, run_id)
            if directory not in directories:
                await mkdir_private(ctx, ledger, directory)
                directories.add(directory)
            root = f"{directory}/{number}"
            dest = inside(root, group.named)
            await mkdir_tree(ctx, ledger, directory, posixpath.dirname(dest))
            undo = Undo(
                f"the Btrfs snapshot {dest} (of {group.subvolume})",
                ("btrfs", "subvolume", "delete", "--", dest),
                gone=SUBVOLUME_GONE,
            )
            argv = ("btrfs", "subvolume", "snapshot", "-r", "--", group.subvolume, dest)
            await create(ctx, ledger, argv, f"Creating a read-only Btrfs snapshot of {group.subvolume}", undo)
            if group.subvolume == posixpath.normpath(group.target):  # the run directory is inside this snapshot
                excludes.append("pp:" + inside(dest, "/" + posixpath.basename(directory)))
            view.update({p: slashdot(root, p) for p in group.paths})
        return SnapshotView(
            method="btrfs",
            run_id=run_id,
            paths=tuple((p, view[p]) for p in paths),
            excludes=tuple(excludes),
            created=ledger.created,
            warnings=tuple(warnings),
        )

    async def cleanup_leftovers(self, ctx: ProbeContext, active_run_ids: Collection[str]) -> list[str]:
        """Find ``<mount point>/.backup-bot-<run>`` directories of runs not in ``active_run_ids`` on every Btrfs
        mount (below ``search_under``) and delete the snapshots in them, then the directories."""
        require_privileges(ctx, "Btrfs")
        removed: list[str] = []
        left: list[Leftover] = []
        targets = sorted({t for t, _ in await list_mounts(ctx, "btrfs") if _under(t, self.search_under)})
        for target in targets:
            for directory in await list_entries(ctx, target, "." + PREFIX + "*"):
                if leftover_run(posixpath.basename(directory)[1:], active_run_ids):
                    gone, stuck = await _remove_run_dir(ctx, directory)
                    removed += gone
                    left += stuck
        if left:
            raise CleanupFailed(f"Removing leftovers of earlier runs failed. {describe_leftovers(left)}", left, removed)
        return removed


async def _inspect(
    ctx: ProbeContext, path: str
) -> tuple[disk.MountInfo, MethodVerdict, snapshot_btrfs.SubvolumeLocation]:
    """The probes' facts for one path, or a refusal that says why it cannot be snapshotted with Btrfs."""
    refusal = f"{path} cannot be snapshotted with Btrfs:"
    try:
        mount = await disk.mount_info(ctx, path)
        verdict = await snapshots.btrfs_verdict(ctx, mount)
        if not verdict.available:
            raise SnapshotRefused(f"{refusal} {verdict.reason} Nothing was created.")
        location = await snapshot_btrfs.locate(ctx, path)
    except Absent as exc:
        raise SnapshotRefused(f"{refusal} `{exc}` is not installed on this server. Nothing was created.") from None
    except ProbeError as exc:
        raise SnapshotRefused(f"{refusal} {exc} Nothing was created.") from None
    _check_below_mount(path, location.subvolume, mount.target)
    return mount, verdict, location


def _under(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top + "/")


def _check_below_mount(path: str, subvolume: str, target: str) -> None:
    """The subvolume must lie inside the mount the path is on (it does not for a bind mount of a directory)."""
    if not _under(posixpath.normpath(subvolume), posixpath.normpath(target)):
        raise SnapshotRefused(
            f"{path} is on a mount at {target} that shows a directory inside the Btrfs subvolume {subvolume}; the "
            f"snapshot cannot be placed there. Back up the path under {subvolume} instead. Nothing was created."
        )


async def _remove_run_dir(ctx: ProbeContext, directory: str) -> tuple[list[str], list[Leftover]]:
    """Delete every snapshot in a leftover run directory (subvolume roots are inode 256 on Btrfs; ``-prune``
    keeps ``find`` out of them), then the empty directories, then the directory itself."""
    result = await ctx.run(
        ("find", directory, "-mindepth", "1", "-inum", "256", "-prune", "-print0"),
        what="find",
        privileged=True,
        check=False,
    )
    ledger = Ledger(ctx)
    ledger.add(Undo(f"the directory {directory}", ("rmdir", "--", directory), gone=SUBVOLUME_GONE))
    empty = ("find", directory, "-mindepth", "1", "-depth", "-type", "d", "-empty", "-delete")
    ledger.add(Undo(f"the empty directories below {directory}", empty, gone=SUBVOLUME_GONE, listed=False))
    for snapshot in (p for p in result.out.split("\0") if p) if result.ok else ():
        delete = ("btrfs", "subvolume", "delete", "--", snapshot)
        ledger.add(Undo(f"the Btrfs snapshot {snapshot}", delete, gone=SUBVOLUME_GONE))
    removed, left = await ledger.release()
    if not result.ok:
        listing = Leftover(f"the snapshots in {directory}", explain(result), f"btrfs subvolume list -o {directory}")
        left.insert(0, listing)
    return removed, left
