"""Btrfs: which subvolume holds a path, and which nested subvolumes a snapshot of it would leave out.

On Btrfs the root directory of every subvolume has inode number 256 (BTRFS_FIRST_FREE_OBJECTID), and every
subvolume is its own tree. So:
  * a path *is* a subvolume when ``stat -c %i`` says 256 (only meaningful once findmnt said "btrfs": on ext4,
    inode 256 is an ordinary file);
  * the subvolume *containing* a path is its nearest ancestor (or itself) with inode 256 — the walk always ends
    at the mount point at the latest, since a btrfs mount shows the root of a subvolume. The walk is a fixed
    script that receives the path as "$1"; it needs no privileges.

A snapshot does not descend into nested subvolumes (they appear as empty directories in it, inode 2), so the
wizard must know which subvolumes live under the path. ``btrfs subvolume list -o <subvolume>`` lists exactly
the subvolumes directly below the given one (``-a`` would list the whole filesystem and mark paths outside it
with "<FS_TREE>/", which is more to filter for the same answer). It needs root. Its paths are relative to the
filesystem's top level, also when a subvolume is mounted by itself (mount -o subvol=…), so they are mapped to
real paths through the mount's fsroot (the "[/…]" suffix of findmnt's SOURCE).
"""

from __future__ import annotations

import posixpath
import re

from bot.probes.base import Absent, Model, ProbeContext, ProbeError
from bot.probes.disk import require_absolute

SUBVOLUME_INODE = 256

# $1 = the path. Prints "@resolved <realpath>" NUL-terminated, then one inode per directory level from the path
# upwards, stopping at the first subvolume root; "@missing" if the path does not exist.
WALK_SCRIPT = r"""
p=$(readlink -f -- "$1" && echo x) && p=${p%??}
if [ -z "$p" ] || { [ ! -e "$p" ] && [ ! -L "$p" ]; }; then printf '@missing\0'; exit 0; fi
printf '@resolved %s\0' "$p"
while :; do
  ino=$(stat -c %i -- "$p") || exit 4
  printf '%s\0' "$ino"
  if [ "$ino" = 256 ] || [ "$p" = / ]; then break; fi
  p=$(dirname -- "$p" && echo x) && p=${p%??}
done
"""
_LIST_LINE = re.compile(r"^ID (\d+) gen (\d+) (?:cgen \d+ )?top level (\d+) (?:otime \S+ \S+ )?path (.*)$")


class SubvolumeLocation(Model):
    """Where a path sits among subvolumes."""

    path: str  # as asked
    resolved: str  # after symlinks (readlink -f)
    subvolume: str  # root directory of the subvolume that contains it
    is_subvolume: bool  # the path itself is that root


class Subvolume(Model):
    id: int
    top_level: int  # id of the parent subvolume
    path: str  # relative to the filesystem's top level, as btrfs prints it


class BtrfsDecision(Model):
    available: bool
    reason: str
    location: SubvolumeLocation | None = None
    nested: tuple[str, ...] = ()  # subvolumes below the path: not included in a snapshot of its subvolume
    warnings: tuple[str, ...] = ()


def walk_argv(path: str) -> tuple[str, ...]:
    return ("sh", "-c", WALK_SCRIPT, "sh", path)


def parse_walk(text: str, path: str) -> SubvolumeLocation:
    """Parse :data:`WALK_SCRIPT` output; the n-th inode belongs to the n-th ancestor of the resolved path."""
    chunks = [c for c in text.split("\0") if c]
    if chunks == ["@missing"]:
        raise ProbeError(f"{path!r} does not exist on this server. Check the spelling (paths are case-sensitive).")
    if not chunks or not chunks[0].startswith("@resolved /") or not all(c.isdigit() for c in chunks[1:]):
        raise ProbeError(f"Looking up the Btrfs subvolume of {path!r} printed something unexpected.")
    resolved = chunks[0].removeprefix("@resolved ")
    inodes = [int(c) for c in chunks[1:]]
    if not inodes or inodes[-1] != SUBVOLUME_INODE:
        raise ProbeError(f"No directory above {path!r} is a Btrfs subvolume root; is it really on Btrfs?")
    level = resolved
    for _ in inodes[1:]:
        level = posixpath.dirname(level)
    return SubvolumeLocation(path=path, resolved=resolved, subvolume=level, is_subvolume=len(inodes) == 1)


def parse_subvolume_list(text: str) -> tuple[Subvolume, ...]:
    """Parse ``btrfs subvolume list`` lines ("ID 257 gen 7 top level 256 path data/nested")."""
    subvolumes = []
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _LIST_LINE.match(line)
        if match is None:
            raise ProbeError(f"`btrfs subvolume list` printed a line the bot cannot read ({line[:80]!r}).")
        ident, _, top, rel = match.groups()
        subvolumes.append(Subvolume(id=int(ident), top_level=int(top), path=rel.removeprefix("<FS_TREE>/")))
    return tuple(subvolumes)


def absolute_path(rel: str, *, target: str, fsroot: str) -> str | None:
    """Where a top-level-relative subvolume path appears, given the mount's target and fsroot; None if hidden."""
    root = fsroot.strip("/")
    if root and rel != root and not rel.startswith(root + "/"):
        return None  # outside the mounted subvolume: not visible through this mount
    inner = rel[len(root):].lstrip("/") if root else rel
    return posixpath.join(target, inner) if inner else target


def nested_under(path: str, subvolumes: tuple[Subvolume, ...], *, target: str, fsroot: str) -> tuple[str, ...]:
    """The listed subvolumes that lie strictly below ``path`` (real paths)."""
    base = posixpath.normpath(path)
    found = []
    for sub in subvolumes:
        where = absolute_path(sub.path, target=target, fsroot=fsroot or "/")
        if where and where != base and (base == "/" or where.startswith(base + "/")):
            found.append(where)
    return tuple(found)


def decide(location: SubvolumeLocation, nested: tuple[str, ...] | None) -> BtrfsDecision:
    """The verdict for a path on Btrfs; ``nested`` None means the nested subvolumes could not be listed."""
    what = "is a subvolume" if location.is_subvolume else f"is inside the subvolume {location.subvolume}"
    warnings: list[str] = []
    if nested:
        warnings.append(
            "A snapshot does not include the nested subvolumes " + ", ".join(nested) + "; they would be backed up "
            "as empty directories unless each gets its own snapshot."
        )
    elif nested is None:
        warnings.append("Nested subvolumes could not be checked (listing them needs root).")
    return BtrfsDecision(
        available=True,
        reason=f"{location.path} {what}; a read-only snapshot of {location.subvolume} is instant and needs no reserved "
        "space.",
        location=location,
        nested=nested or (),
        warnings=tuple(warnings),
    )


async def locate(ctx: ProbeContext, path: str) -> SubvolumeLocation:
    """The subvolume containing ``path`` (no privileges needed)."""
    require_absolute(path)
    result = await ctx.run(walk_argv(path), what="Looking up the Btrfs subvolume", check=False)
    if result.exit_status == 127:
        raise Absent("stat")
    if not result.ok:
        detail = result.err.strip().splitlines()[-1:] or [f"status {result.exit_status}"]
        raise ProbeError(f"Could not inspect {path!r} on Btrfs: {detail[0][:200]}.")
    return parse_walk(result.out, path)


async def list_below(ctx: ProbeContext, subvolume: str) -> tuple[Subvolume, ...]:
    """Subvolumes directly below ``subvolume`` (root needed); Absent without btrfs-progs."""
    if not ctx.privileged:
        raise ProbeError("Listing Btrfs subvolumes needs root; the login user has neither root nor passwordless sudo.")
    argv = ("btrfs", "subvolume", "list", "-o", subvolume)
    result = await ctx.run(argv, what="btrfs subvolume list", privileged=True, check=False)
    if result.exit_status == 127:
        raise Absent("btrfs")
    if not result.ok:
        detail = " ".join(result.err.split())[:200]
        if "not permitted" in detail or "Permission denied" in detail or "password is required" in detail:
            raise ProbeError(f"Listing Btrfs subvolumes needs root: {detail}")
        raise ProbeError(f"`btrfs subvolume list` failed: {detail or result.exit_status}")
    return parse_subvolume_list(result.out)
