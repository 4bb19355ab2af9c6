"""``borg delete`` of archives (never of a whole repository: the bot has no command for that)."""

from __future__ import annotations

from bot.borg.repo import Repo
from bot.borg.runner import run_borg
from bot.transport.base import Transport


async def archives(transport: Transport, repo: Repo, names: list[str], **kwargs) -> None:
    if not names:
        return
    for name in names:
        repo.archive(name)  # validates
    await run_borg(transport, ["delete", repo.url, *names], repo, **kwargs)
