"""The App Home tab."""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.blocks import home_help_view, home_view
from storage.models import BackupChain, Server, StoragePool
from storage.tenancy import Tenant


async def publish_home(client: AsyncWebClient, tenant: Tenant, user_id: str) -> None:
    view = home_view(
        servers=await tenant.query(Server).count(),
        pools=await tenant.query(StoragePool).count(),
        chains=await tenant.query(BackupChain).count(),
    )
    await client.views_publish(user_id=user_id, view=view.to_dict())


async def publish_help(client: AsyncWebClient, user_id: str) -> None:
    await client.views_publish(user_id=user_id, view=home_help_view().to_dict())
