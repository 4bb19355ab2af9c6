"""``borg compact``: actually free the space of pruned/deleted archives (borg ≥ 1.2 frees nothing before)."""

from __future__ import annotations

import re

from bot.borg.repo import Repo
from bot.borg.runner import run_borg
from bot.transport.base import Transport

_FREED = re.compile(r"freed\s+(?:about\s+)?([\d.]+)\s*([kMGTP]?B)", re.IGNORECASE)
_UNITS = {"B": 1, "kB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15}


async def run(transport: Transport, repo: Repo, *, threshold: int = 10, **kwargs) -> int | None:
    """Compact; returns the bytes borg says it freed (None when it did not say)."""
    result = await run_borg(transport, ["compact", "--verbose", "--threshold", str(threshold), repo.url], repo,
                            **kwargs)  # fmt: skip
    for message in reversed(result.messages):
        if match := _FREED.search(message.get("message", "")):
            unit = next((u for u in _UNITS if u.lower() == match[2].lower()), "B")
            return int(float(match[1]) * _UNITS[unit])
    return None
