"""Restore core for files: list archives, extract chosen paths into a target directory on a chosen server.

Safety first: a restore never writes over live data by accident. The target must be an absolute directory
other than ``/``, empty or new (``allow_non_empty`` to add into an existing one); archive paths are
recreated *below* it (``/etc/nginx`` → ``<target>/etc/nginx``). Database dumps are restored by
:mod:`bot.backup.restore_db`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.borg import extract
from bot.borg import list as borg_list
from bot.borg.list import ArchiveEntry
from bot.borg.repo import Repo
from bot.transport.base import Transport


class RestoreRefused(Exception):
    """The restore would be unsafe or cannot start; the message says why and what to choose instead."""


@dataclass(frozen=True)
class RestoreResult:
    archive: str
    target_dir: str
    files: int


async def archives(pool: Transport, repo: Repo, *, prefix: str | None = None, borg: str = "borg") -> list[ArchiveEntry]:
    """The repository's archives (newest last), optionally only those of one chain prefix."""
    return await borg_list.archives(pool, repo, glob=f"{prefix}-*" if prefix else None, borg=borg)


async def _check_target(transport: Transport, target_dir: str, allow_non_empty: bool, sudo: bool) -> None:
    if not target_dir.startswith("/") or target_dir.rstrip("/") == "":
        raise RestoreRefused("Restore into a new directory such as /var/restore/2026-03-01, never into / itself.")
    if ".." in target_dir.split("/"):
        raise RestoreRefused("The restore directory may not contain '..'.")
    probe = await transport.run(["sh", "-c", '[ ! -e "$1" ] || [ -z "$(ls -A -- "$1")" ]', "sh", target_dir],
                                sudo=sudo)  # fmt: skip
    if not probe.ok and not allow_non_empty:
        raise RestoreRefused(f"{target_dir} already exists and is not empty; choose a new directory.")


async def restore_paths(
    transport: Transport, repo: Repo, archive: str, target_dir: str, paths: Sequence[str] = (), *,
    allow_non_empty: bool = False, sudo: bool = False, borg: str = "borg",
) -> RestoreResult:  # fmt: skip
    """Extract ``paths`` (all when empty) of ``archive`` below ``target_dir`` on the server of ``transport``."""
    await _check_target(transport, target_dir, allow_non_empty, sudo)
    relative = [p.lstrip("/") for p in paths]
    await extract.run(transport, repo, archive, target_dir, relative, borg=borg, sudo=sudo)
    counted = await transport.run(["sh", "-c", 'find "$1" -type f | wc -l', "sh", target_dir], sudo=sudo)
    return RestoreResult(archive=archive, target_dir=target_dir, files=int(counted.out.strip() or 0))
