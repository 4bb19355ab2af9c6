"""Notices for admins (host key pinned or re-pinned): posted to the admins' channel, or DMed to each admin user
named in the roles (and to the admin who acted, so someone is always told), through the outbox."""

from __future__ import annotations

from bot.alerts import Alert
from bot.runs.outbox import DM, Outbox
from bot.services.roles import admin_recipients
from bot.services.servers import ADMIN_NOTICE


class AdminNoticePoster:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def on_alert(self, alert: Alert) -> None:
        if alert.kind != ADMIN_NOTICE:
            return
        channel, users = await admin_recipients(alert.team_id)
        payload = {"text": alert.message}
        if channel:
            await self.outbox.enqueue(alert.team_id, channel, payload)
            return
        actor = alert.details.get("actor")
        for user in dict.fromkeys([*users, *([actor] if isinstance(actor, str) else [])]):
            await self.outbox.enqueue(alert.team_id, user, payload, method=DM)
