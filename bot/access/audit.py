"""Writing the audit log: who did what, when, to what, and for changes what it was before and after."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.access.actor import Actor
from storage.models import AuditLog


async def record(actor: Actor, action: str, object_type: str, object_id: object = None, *,
                 before: Mapping[str, Any] | None = None, after: Mapping[str, Any] | None = None,
                 **details: Any) -> AuditLog:  # fmt: skip
    """Write one audit row for ``actor`` (the surface it came through is kept as ``via``). Never pass a secret."""
    extra: dict[str, Any] = {"via": actor.via, **details}
    if before is not None:
        extra["before"] = dict(before)
    if after is not None:
        extra["after"] = dict(after)
    return await actor.tenant.create(AuditLog, actor=actor.user_id[:32], action=action[:64],
                                     object_type=object_type[:32],
                                     object_id=None if object_id is None else str(object_id)[:64],
                                     details=extra)  # fmt: skip
