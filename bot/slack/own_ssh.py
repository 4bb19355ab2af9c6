"""The bot's own SSH pool for Slack listeners registered without the app's shared services.

``build_app`` hands its listeners the wizard's services (one pool for the whole process); an app built without a
wizard (tests, a bare listener) still has to reach servers. Such listeners share this one pool, made at first use
with the bot's key and the default limits — one per registration (the bot's key is read from the database the app
serves), instead of each module keeping a copy of this code, or a pool per click that nobody closes.
"""

from __future__ import annotations

import asyncio

from bot.access import Refused
from bot.identity import load_private_key
from bot.transport import SSHPool
from storage.orm import DoesNotExist


class OwnSSH:
    """One SSH pool with the bot's key, made on the first :meth:`get` (concurrent callers share it)."""

    def __init__(self) -> None:
        self.pool: SSHPool | None = None
        self.lock = asyncio.Lock()

    async def get(self) -> SSHPool:
        """Given nothing, return the pool; a refusal naming ``init`` when the bot has no SSH key yet."""
        async with self.lock:
            if self.pool is None:
                try:
                    key = await load_private_key()
                except DoesNotExist:
                    raise Refused("The bot has no SSH identity yet: run `backup-bot init` on its host.") from None
                self.pool = SSHPool([key])
            return self.pool
