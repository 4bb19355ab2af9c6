"""Full system: ``/`` with the standard exclusions, one file system by default.

Excluded, and why:

- ``/proc``, ``/sys``, ``/dev``, ``/run``: kernel and runtime views, not data; ``/tmp``, ``/var/tmp``: scratch;
  ``/mnt``, ``/media``: other people's mounts; ``/var/cache``: package and application caches. Written as
  ``fm:/proc/`` (trailing slash): borg keeps the directory itself and drops its content, so a restored system
  still has its mount points.
- ``lost+found`` anywhere (fsck's debris), swap files (``/swapfile``, ``/swap.img`` and what ``/proc/swaps``
  lists in the facts): huge, useless, and reading them is slow.
- the storage pool's path when the pool lives on this server (else each backup would contain the previous
  ones), and borg's own cache dirs (``/root/.cache/borg`` and those of the facts), which borg rebuilds.
- caches, as for the files source (``--exclude-caches`` and ``~/.cache`` …) unless turned off.

One file system (``--one-file-system``) is on by default: mount points of other file systems below ``/`` are
skipped (``borg help create``: a directory whose device differs from its parent's). :func:`other_filesystems`
lists the real ones among them (from the disk facts) so the wizard can offer to add them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import field_validator, model_validator

from bot.backup.jobs import ArchiveJob
from bot.backup.sources.base import Facts, SourceConfig, parse_config
from bot.backup.sources.files import cache_excludes, check_not_nested, check_pattern, normal_path
from bot.probes.disk import MountInfo

SKIPPED_DIRS = ("/proc", "/sys", "/dev", "/run", "/tmp", "/mnt", "/media", "/var/tmp", "/var/cache")  # noqa: S108
STANDARD_EXCLUDES = (
    *(f"fm:{d}/" for d in SKIPPED_DIRS),  # keep the directory, drop its content
    "sh:**/lost+found",
    "pf:/swapfile",
    "pf:/swap.img",
)
BORG_CACHE_DIRS = ("/root/.cache/borg",)
# Kernel, runtime and image file systems: never data a person means to back up.
PSEUDO_FSTYPES = frozenset(
    {"proc", "sysfs", "devtmpfs", "devpts", "tmpfs", "ramfs", "cgroup", "cgroup2", "pstore", "bpf", "securityfs",
     "debugfs", "tracefs", "configfs", "fusectl", "mqueue", "hugetlbfs", "autofs", "binfmt_misc", "nsfs", "overlay",
     "squashfs", "efivarfs", "rpc_pipefs", "nfsd", "selinuxfs", "fuse.lxcfs", "fuse.gvfsd-fuse", "fuse.portal",
     "fuse.snapfuse", "iso9660", "shm", "devfs"}
)  # fmt: skip


class SystemConfig(SourceConfig):
    """What the wizard stores for a full-system source. ``extra_filesystems``: mount points of other file
    systems to include although ``one_file_system`` is on (from :func:`other_filesystems`)."""

    one_file_system: bool = True
    extra_filesystems: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    exclude_caches: bool = True

    @field_validator("extra_filesystems")
    @classmethod
    def _extra(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        paths = tuple(normal_path(p) for p in value)
        if "/" in paths:
            raise ValueError("/ is always backed up; list only other mount points")
        return check_not_nested(paths)

    @field_validator("excludes")
    @classmethod
    def _excludes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_pattern(p) for p in value)

    @model_validator(mode="after")
    def _extra_needs_one_fs(self) -> SystemConfig:
        if self.extra_filesystems and not self.one_file_system:
            raise ValueError(
                "extra_filesystems only makes sense with one_file_system on: without it, every file system "
                "below / is already included"
            )
        return self


class SystemFacts(Facts):
    """What the plan needs to know about the server: its mounts (the disk probe's model), swap files
    (``/proc/swaps``), storage-pool paths that live on this server, and borg cache dirs in use there."""

    mounts: tuple[MountInfo, ...] = ()
    swap_files: tuple[str, ...] = ()
    local_pool_paths: tuple[str, ...] = ()
    borg_cache_dirs: tuple[str, ...] = ()


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def system_excludes(config: SystemConfig, facts: SystemFacts) -> tuple[str, ...]:
    """Every exclude pattern of the plan, in a stable order (standard, swap, pool, borg caches, caches, own)."""
    found = [*STANDARD_EXCLUDES]
    found += [f"pf:{p}" for p in facts.swap_files if f"pf:{p}" not in found]
    found += [f"pp:{p}" for p in facts.local_pool_paths]
    found += [f"pp:{p}" for p in dict.fromkeys((*BORG_CACHE_DIRS, *facts.borg_cache_dirs))]
    found += [*cache_excludes(config.exclude_caches), *config.excludes]
    return tuple(dict.fromkeys(found))


def other_filesystems(facts: SystemFacts) -> list[MountInfo]:
    """Real file systems mounted below ``/`` that ``--one-file-system`` leaves out: not pseudo file systems,
    not under an excluded directory, not the pool itself. Sorted by mount point."""
    skipped = (*SKIPPED_DIRS, *facts.local_pool_paths)
    found = {
        m.target: m
        for m in facts.mounts
        if m.target != "/" and m.fstype not in PSEUDO_FSTYPES and not _under(m.target, skipped)
    }
    return [found[t] for t in sorted(found)]


class SystemSource:
    """The whole system as one archive."""

    type = "system"
    config_model = SystemConfig

    def plan(self, config: SystemConfig, facts: SystemFacts) -> list[ArchiveJob]:
        extra = f" plus {', '.join(config.extra_filesystems)}" if config.extra_filesystems else ""
        return [
            ArchiveJob(
                suffix="system",
                kind="paths",
                paths=("/", *config.extra_filesystems),
                excludes=system_excludes(config, facts),
                one_file_system=config.one_file_system,
                exclude_caches=config.exclude_caches,
                description=f"Full system (/){extra}",
            )
        ]

    def validate(self, config: Mapping[str, Any] | SystemConfig) -> list[str]:
        return parse_config(SystemConfig, config)[1]
