"""``borg info``: repository totals (sizes for reports and pool planning) and one archive's stats."""

from __future__ import annotations

from dataclasses import dataclass

from bot.borg.repo import Repo
from bot.borg.runner import run_borg
from bot.transport.base import Transport


@dataclass(frozen=True)
class RepoTotals:
    total_size: int  # sum of original sizes of all archives
    total_csize: int
    unique_csize: int  # what the repository really occupies (deduplicated, compressed)
    encryption: str


async def repository(transport: Transport, repo: Repo, **kwargs) -> RepoTotals:
    data = (await run_borg(transport, ["info", "--json", repo.url], repo, **kwargs)).json()
    stats = data["cache"]["stats"]
    return RepoTotals(stats["total_size"], stats["total_csize"], stats["unique_csize"], data["encryption"]["mode"])


async def archive(transport: Transport, repo: Repo, name: str, **kwargs) -> dict:
    data = (await run_borg(transport, ["info", "--json", repo.archive(name)], repo, **kwargs)).json()
    return data["archives"][0]
