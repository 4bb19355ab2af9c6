"""``borg key export``: the repokey, kept (encrypted) by the bot so a restore never depends on the pool alone."""

from __future__ import annotations

from bot.borg.repo import Repo
from bot.borg.runner import run_borg
from bot.transport.base import Transport


async def export(transport: Transport, repo: Repo, *, paper: bool = False, **kwargs) -> str:
    """The key export text (``BORG_KEY …``), read from stdout; nothing is written on the server."""
    args = ["key", "export", *(["--paper"] if paper else []), repo.url]
    result = await run_borg(transport, args, repo, **kwargs)
    text = result.stdout.decode("utf-8")
    if "BORG" not in text and not paper:
        raise ValueError("borg key export printed no key; this repository may be unencrypted")
    return text
