"""``borg list``: the archives of a repository (the proof that a backup exists), or one archive's items."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from bot.borg.repo import Repo
from bot.borg.runner import run_borg
from bot.transport.base import Transport


@dataclass(frozen=True)
class ArchiveEntry:
    name: str
    id: str
    time: datetime  # borg's "time" field: naive local time as borg prints it, or aware UTC with ``utc=True``


async def archives(transport: Transport, repo: Repo, *, glob: str | None = None, utc: bool = False,
                   **kwargs) -> list[ArchiveEntry]:  # fmt: skip
    """The archives (optionally only those matching ``glob``). ``utc``: borg runs with ``TZ=UTC`` and the times come
    back timezone-aware, so they can be compared with times the bot recorded whatever the pool's zone is."""
    args = ["list", "--json", *(["--glob-archives", glob] if glob else []), repo.url]
    result = await run_borg(transport, args, repo, env={"TZ": "UTC"} if utc else None, **kwargs)
    found = []
    for a in result.json()["archives"]:
        moment = datetime.fromisoformat(a["time"])
        found.append(ArchiveEntry(name=a["name"], id=a["id"], time=moment.replace(tzinfo=UTC) if utc else moment))
    return found


async def items(transport: Transport, repo: Repo, archive: str, **kwargs) -> list[dict]:
    """Every item of ``archive`` (path, type, size, mode, …) from ``--json-lines``."""
    result = await run_borg(transport, ["list", "--json-lines", repo.archive(archive)], repo, **kwargs)
    return result.json_lines()
