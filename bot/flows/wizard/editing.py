"""``/backup edit``: the wizard over an existing chain — opened at its review step, applied by the service layer.

:func:`open_edit` asks :func:`bot.services.editing.prefill` for the chain's answers (the actor's right to operate
the chain is checked there, before anything is read) and starts a session at the review step. Every step stays
reachable: the review offers a *Change* button per step (a jump back, every answer kept), and coming forward again
passes the validation step, which checks only what changed (a real test backup when the source, the pool or the
repository changed; settings only otherwise — see :mod:`bot.flows.wizard.steps.validation`).

The review shows the difference against the chain as it was opened, the chain's name, its report channel and
whether successes are reported, and *Apply changes* hands the answers to :func:`bot.services.editing.apply`
(:func:`apply_edit`), which decides: roles, approval, one transaction, the audit row with the difference, the
scheduler told.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bot.access import Actor, Refused
from bot.access.authz import named
from bot.backup.retention import Policy
from bot.flows.wizard import create as creating
from bot.flows.wizard.controller import Screen, WizardController
from bot.flows.wizard.steps.base import Errors, WizardContext
from bot.flows.wizard.steps.retention import preset_for
from bot.mrkdwn import esc
from bot.services import editing
from bot.services.answers import fingerprint
from storage.models import BackupChain, Server, StoragePool
from storage.tenancy import Tenant

CHANNEL = re.compile(r"^(?:<#)?(?P<id>[CG][A-Z0-9]{2,20})(?:\|[^>]*)?>?$")
CHANNEL_LINK = re.compile(r"/archives/(?P<id>[CG][A-Z0-9]{2,20})(?:[/?#]|$)")
LABELS = {
    "name": "Name", "server_id": "Server", "backup_type": "Backup type", "source": "Source",
    "credential_id": "Database login", "snapshot": "Snapshot", "pool_id": "Storage pool", "repository": "Repository",
    "compression": "Compression", "retention": "Retention", "schedule": "Schedule", "priority": "Priority",
    "notify_channel": "Report channel", "notify_success": "Success notices",
}  # fmt: skip


async def chain_named(actor: Actor, text: str) -> BackupChain:
    """The chain ``text`` names (its name, or its id as a number) in the actor's workspace; NotFound otherwise."""
    words = (text or "").strip()
    if words.isdigit():
        found = await actor.tenant.get_or_none(BackupChain, id=int(words))
        if found is not None:
            return found
    return await named(actor, BackupChain, words, "backup chain")


async def open_edit(controller: WizardController, actor: Actor, chain: str | int, channel_id: str | None, *,
                    user_tz: str = "UTC") -> Screen:  # fmt: skip
    """Given an actor and a chain (name or id), start an edit session at its review step and return the screen.
    Raises Refused / Forbidden / NotFound (audited when it is a matter of rights) before any session exists."""
    row = await chain_named(actor, str(chain)) if not isinstance(chain, int) else None
    answers = await editing.prefill(actor, row.id if row is not None else chain)
    retention = {k: v for k, v in (answers.get("retention") or {}).items() if k != "preset"}
    try:
        answers["retention"] = {"preset": preset_for(Policy(**retention)), **retention}
    except (TypeError, ValueError):
        pass  # a policy the presets do not know stays "custom"
    answers["validation"]["fingerprint"] = fingerprint(answers)
    answers["edit"]["before"] = editing.settings_of(answers)
    return await controller.start(actor.tenant, actor.user_id, channel_id, user_tz=user_tz, prefill=answers,
                                  at="review")  # fmt: skip


def channel_id(value: Any) -> str | None:
    """Given what was typed or chosen as the report channel (an id, a ``<#C…|name>`` mention, a channel link),
    return its id; None for nothing; raise ValueError for anything else."""
    text = str(value or "").strip()
    if not text:
        return None
    found = CHANNEL.match(text) or CHANNEL_LINK.search(text)
    if found is None:
        raise ValueError("Give a channel: its link (Copy link in Slack), a mention like #backups chosen from the "
                         "list, or its id (C…); leave it empty for no channel reports.")  # fmt: skip
    return found.group("id")


async def difference_lines(ctx: WizardContext) -> list[str]:
    """The review's list of what changes, in words (before → after)."""
    edit = ctx.data.get("edit") or {}
    changes = editing.difference(edit.get("before") or {}, editing.settings_of(ctx.data))
    return [f"• *{LABELS.get(key, key)}:* {await _word(ctx, key, change['before'])} → "
            f"{await _word(ctx, key, change['after'])}" for key, change in changes.items()]  # fmt: skip


async def _word(ctx: WizardContext, key: str, value: Any) -> str:
    """One setting's value as a person reads it."""
    tenant = Tenant(ctx.team_id)
    if key == "server_id":
        server = await tenant.get_or_none(Server, id=value) if isinstance(value, int) else None
        return esc(server.name) if server else "none"
    if key == "pool_id":
        pool = await tenant.get_or_none(StoragePool, id=value) if isinstance(value, int) else None
        return esc(pool.name) if pool else "none"
    if key == "source":
        return creating.describe_source(ctx.data.get("backup_type"), value)
    if key == "retention":
        return creating.describe_retention(value)
    if key == "schedule":
        return creating.describe_schedule(value)
    if key == "repository":
        return f"`{esc(str((value or {}).get('name')))}` ({esc(str((value or {}).get('encryption')))})"
    if key == "notify_channel":
        return f"<#{value}>" if value else "no channel"
    if key == "notify_success":
        return "reported" if value else "not reported"
    return f"`{esc(str(value))}`" if value not in (None, "") else "none"


async def apply_edit(ctx: WizardContext, values: Mapping[str, Any], summary: list[str]) -> Errors:
    """The review's *Apply changes*: the name and report settings from the form, then the service layer decides
    (:func:`bot.services.editing.apply`). Sets ``data["_result"]`` for the done screen; errors by field."""
    data = ctx.data
    try:
        channel = channel_id(values.get("notify_channel"))
    except ValueError as exc:
        return {"notify_channel": str(exc)}
    data["chain_name"] = (values.get("name") or "").strip() or data.get("chain_name")
    data["notify"] = {"channel": channel, "success": "success" in (values.get("notices") or [])}
    return await applied(ctx, summary)


async def applied(ctx: WizardContext, summary: list[str]) -> Errors:
    """Hand the session's answers to :func:`bot.services.editing.apply` (also once an approver approved them);
    sets ``data["_result"]``, or returns the refusal on the name field."""
    data = ctx.data
    lines = await difference_lines(ctx)
    before_setup = (data.get("edit") or {}).get("setup")
    try:
        edited = await editing.apply(await ctx.actor(), data["edit"]["chain_id"], data, session_id=ctx.session_id,
                                     summary="\n".join(lines or summary)[:2500],
                                     channel_id=await creating.session_channel(ctx),
                                     alerts=ctx.services.alerts)  # fmt: skip
    except Refused as exc:
        return {"name": exc.sentence}
    if edited.pending:
        data["approval_id"] = edited.approval.id if edited.approval else None
        data["_result"] = edited.sentence + "\n" + "\n".join(lines)
        return {}
    left: list[str] = []
    if edited.changes and editing.relocates(edited.changes) and before_setup:  # the old push access goes
        left = await creating.discard_setup(ctx, {k: v for k, v in before_setup.items() if k != "chain_repository_id"})
    text = [edited.sentence, *lines] if edited.changes else [edited.sentence]
    if left:
        text.append("Could not remove the old repository's push access: " + "; ".join(left))
    data["_result"] = "\n".join(text)[:2900]
    return {}
