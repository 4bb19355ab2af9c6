"""ZFS: datasets and their mountpoints, and which dataset holds a given path.

Command (works unprivileged on Linux: /dev/zfs is world-accessible for reads)::

    zfs list -H -p -o name,mountpoint,used,avail,type,mounted -t filesystem

``-H`` gives tab-separated lines without a header, ``-p`` exact byte counts. ``mounted`` is asked for on top
of the obvious columns because several datasets often share a mountpoint: Ubuntu's ZFS-on-root install has
``rpool``, ``rpool/ROOT/ubuntu_*`` and ``rpool/USERDATA`` all at "/", and only the one actually mounted (the
others are ``canmount=off``) holds the files.

Which dataset holds a path:
  1. When findmnt says the path's filesystem is ``zfs``, its SOURCE *is* the dataset name — authoritative, and
     the only way to place datasets with ``mountpoint=legacy`` (mounted through /etc/fstab).
  2. Otherwise (no mount facts): the longest mountpoint that is the path or a parent of it, among datasets that
     are mounted; ``legacy``, ``none`` and ``-`` mountpoints never match.
"""

from __future__ import annotations

import posixpath

from bot.probes.base import Absent, Model, ProbeContext, ProbeError

ARGV = ("zfs", "list", "-H", "-p", "-o", "name,mountpoint,used,avail,type,mounted", "-t", "filesystem")
_NO_MOUNTPOINT = {"legacy", "none", "-"}


class Dataset(Model):
    name: str
    mountpoint: str  # as zfs prints it: a path, or "legacy" / "none" / "-"
    used_bytes: int
    avail_bytes: int
    mounted: bool | None  # None when zfs printed "-"

    @property
    def mount_path(self) -> str | None:
        """The directory it mounts on by itself, or None for legacy/none."""
        return None if self.mountpoint in _NO_MOUNTPOINT else self.mountpoint


class ZfsDecision(Model):
    available: bool
    reason: str
    dataset: Dataset | None = None


def parse_zfs_list(text: str) -> tuple[Dataset, ...]:
    """Parse the tab-separated output of :data:`ARGV`; a line with other columns raises ProbeError."""
    datasets = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 6 or not fields[2].isdigit() or not fields[3].isdigit():
            raise ProbeError(
                f"`zfs list` printed a line the bot cannot read ({line[:80]!r}); expected 6 tab-separated columns "
                "(name, mountpoint, used, avail, type, mounted)."
            )
        name, mountpoint, used, avail, kind, mounted = fields
        if kind != "filesystem":
            continue
        datasets.append(
            Dataset(
                name=name,
                mountpoint=mountpoint,
                used_bytes=int(used),
                avail_bytes=int(avail),
                mounted={"yes": True, "no": False}.get(mounted),
            )
        )
    return tuple(datasets)


def _is_under(path: str, directory: str) -> bool:
    path, directory = posixpath.normpath(path), posixpath.normpath(directory)
    return directory == "/" or path == directory or path.startswith(directory + "/")


def dataset_by_prefix(path: str, datasets: tuple[Dataset, ...]) -> Dataset | None:
    """The mounted dataset with the longest mountpoint containing ``path`` (see module docstring, rule 2)."""
    candidates = [
        d for d in datasets if d.mount_path and d.mounted is not False and _is_under(path, d.mount_path)
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda d: (len(posixpath.normpath(d.mount_path or "")), d.name.count("/")))


def dataset_for_path(
    path: str, datasets: tuple[Dataset, ...], *, fstype: str | None = None, source: str | None = None
) -> Dataset | None:
    """The dataset holding ``path``: findmnt's SOURCE when the filesystem is zfs, else the mountpoint prefix."""
    if fstype == "zfs" and source:
        return next((d for d in datasets if d.name == source), None)
    if fstype is not None:
        return None  # the path is on another filesystem, whatever the mountpoints say
    return dataset_by_prefix(path, datasets)


def decide(path: str, datasets: tuple[Dataset, ...], *, fstype: str | None, source: str | None) -> ZfsDecision:
    """Can the path be snapshotted with ZFS? (pure)"""
    dataset = dataset_for_path(path, datasets, fstype=fstype, source=source)
    if dataset is None:
        if fstype == "zfs":
            return ZfsDecision(available=False, reason=f"{path} is on ZFS, but `zfs list` does not show {source}.")
        return ZfsDecision(available=False, reason=f"{path} is not on a ZFS dataset.")
    where = "mounted through /etc/fstab" if dataset.mountpoint == "legacy" else f"mounted at {dataset.mountpoint}"
    return ZfsDecision(
        available=True,
        reason=f"{path} is in the ZFS dataset {dataset.name} ({where}); ZFS snapshots are instant and need no "
        "reserved space.",
        dataset=dataset,
    )


async def probe(ctx: ProbeContext) -> tuple[Dataset, ...]:
    """All ZFS filesystems; Absent without zfs, ProbeError when zfs cannot list (e.g. no kernel module)."""
    result = await ctx.run(ARGV, what="zfs list", check=False)
    if result.exit_status == 127:
        raise Absent("zfs")
    if not result.ok:
        detail = " ".join(result.err.split())[:200] or f"status {result.exit_status}"
        raise ProbeError(f"`zfs list` failed: {detail}")
    return parse_zfs_list(result.out)
