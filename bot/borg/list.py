"""``borg list``: the archives of a repository (the proof that a backup exists), or one archive's items."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.borg.repo import Repo
from bot.borg.runner import run_borg
from bot.transport.base import Transport


@dataclass(frozen=True)
class ArchiveEntry:
    name: str
    id: str
    time: datetime  # borg's local-time "time" field, naive as borg prints it


async def archives(transport: Transport, repo: Repo, *, glob: str | None = None, **kwargs) -> list[ArchiveEntry]:
    args = ["list", "--json", *(["--glob-archives", glob] if glob else []), repo.url]
    result = await run_borg(transport, args, repo, **kwargs)
    return [
        ArchiveEntry(name=a["name"], id=a["id"], time=datetime.fromisoformat(a["time"]))
        for a in result.json()["archives"]
    ]


async def items(transport: Transport, repo: Repo, archive: str, **kwargs) -> list[dict]:
    """Every item of ``archive`` (path, type, size, mode, …) from ``--json-lines``."""
    result = await run_borg(transport, ["list", "--json-lines", repo.archive(archive)], repo, **kwargs)
    return result.json_lines()
