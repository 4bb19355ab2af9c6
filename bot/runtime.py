"""The long-lived services one bot process shares: settings, the SSH pool (with the bot's identity), alerts.

Built once after the database is connected (the identity's private key is decrypted from it) and handed to
the Slack listeners, the HTTP API and the runs layer, so they all reuse the same SSH connections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.access import Directory, NoDirectory
from bot.alerts import AlertBus
from bot.config import Settings
from bot.identity import load_private_key
from bot.transport import SSHPool


@dataclass
class Runtime:
    settings: Settings
    pool: SSHPool
    alerts: AlertBus = field(default_factory=AlertBus)
    directory: Directory = field(default_factory=NoDirectory)  # Slack's answers on admins and groups, when connected

    @classmethod
    async def create(cls, settings: Settings) -> Runtime:
        return cls(settings=settings, pool=SSHPool([await load_private_key()], **settings.ssh_pool_options()))

    async def close(self) -> None:
        await self.pool.close()
