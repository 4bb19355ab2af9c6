"""The workspace's allow-list for outbound URLs (ping URLs): networks an admin lets the bot reach from its own host.

By default the bot refuses to send requests to loopback, link-local (cloud metadata), private and other non-global
addresses (:func:`bot.monitoring.vet`). An admin who really runs a healthchecks server on the internal network
allow-lists its network here; the list lives in ``Workspace.settings["outbound_allow"]`` as CIDR strings.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.access import Actor, Refused, authz
from bot.access.audit import record
from bot.monitoring import OUTBOUND_ALLOW_KEY, parse_networks
from storage.models import Workspace

MAX_ENTRIES = 50


async def allowed_networks(actor: Actor) -> list[str]:
    """Given an actor of the workspace, return its allow-listed networks (as stored)."""
    row = await Workspace.get_or_none(team_id=actor.team_id)
    values = (row.settings or {}).get(OUTBOUND_ALLOW_KEY) if row is not None else None
    return [str(v) for v in values] if isinstance(values, list) else []


async def set_allowed(actor: Actor, networks: Sequence[str]) -> list[str]:
    """Given an admin and networks ("10.0.0.0/8", "192.168.1.20"), replace the workspace's allow-list (empty: none
    allowed); returns the normalised list. Refused for non-admins and for anything that is not a network."""
    await authz.require_admin(actor, "change which internal addresses the bot may send requests to")
    if len(networks) > MAX_ENTRIES:
        raise Refused(f"At most {MAX_ENTRIES} networks can be allowed; give a wider network instead.")
    try:
        normal = [str(net) for net in parse_networks(networks)]
    except ValueError as exc:
        raise Refused(f"{exc} Nothing was changed.") from None
    normal = list(dict.fromkeys(normal))
    row, _ = await Workspace.get_or_create(team_id=actor.team_id)
    before = (row.settings or {}).get(OUTBOUND_ALLOW_KEY) or []
    row.settings = {**(row.settings or {}), OUTBOUND_ALLOW_KEY: normal}
    await row.save(update_fields=["settings", "updated_at"])
    await record(actor, "workspace.outbound_allow", "workspace", actor.team_id, before={"networks": before},
                 after={"networks": normal})  # fmt: skip
    return normal
