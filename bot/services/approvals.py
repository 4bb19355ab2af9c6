"""Approvals: who must have a new chain approved, and the hand-off to whoever posts the request.

The rules live in the workspace's settings (``Workspace.settings["approvals"]``), all keys optional::

    {"required": true,               # every creator needs approval …
     "exempt": ["U0ADMIN"],          # … except these users
     "required_for": ["U0INTERN"],   # these users need approval even when "required" is false
     "approvers": ["U0LEAD"],        # who may decide (read by the runs layer; not used here)
     "channel": "C0APPROVALS"}       # where the request is posted (default: where the wizard was started)

No settings (or no Workspace row) means no approval. A chain that needs approval is saved ``pending_approval``
and :func:`request_approval` creates the pending :class:`~storage.models.Approval` row and publishes an
``approval_requested`` :class:`~bot.alerts.Alert`; the Slack layer subscribes and posts the request with its
Approve/Reject buttons. :func:`decide` is the decision, for every surface: who may decide (:func:`may_decide`),
exactly one decision wins (compare-and-set on ``Approval.status``), the chain moves and the audit log is written
in the same transaction. Nothing here knows Slack.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.access import Actor, Forbidden, NotFound, Refused
from bot.access.actor import GROUP_ID, USER_ID
from bot.access.audit import record
from bot.access.authz import mention
from bot.alerts import Alert, AlertBus
from bot.mrkdwn import esc
from bot.runs.nudge import schedule_changed
from storage.models import Approval, ApprovalStatus, BackupChain, ChainStatus, Workspace
from storage.orm import in_transaction
from storage.tenancy import Tenant

SETTINGS_KEY = "approvals"
ALERT_KIND = "approval_requested"


async def _settings(workspace: Workspace | Tenant | str) -> dict[str, Any]:
    if isinstance(workspace, Workspace):
        row: Workspace | None = workspace
    else:
        team_id = workspace.team_id if isinstance(workspace, Tenant) else Tenant(workspace).team_id
        row = await Workspace.get_or_none(team_id=team_id)
    rules = (row.settings or {}).get(SETTINGS_KEY) if row is not None else None
    return rules if isinstance(rules, dict) else {}


CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,20}$")
ADMINS = "admins"


class RulesError(ValueError):
    """A rule value that is not a Slack id of the right kind; the message says which and what was expected."""


def _ids(values: Sequence[str], *, what: str, groups: bool = False) -> list[str]:
    found: list[str] = []
    for raw in values:
        value = raw.strip()
        ok = USER_ID.match(value) or (groups and (GROUP_ID.match(value) or value == ADMINS))
        if not ok:
            expected = "user ids (U…/W…), user group ids (S…) or the word admins" if groups else "user ids (U…/W…)"
            raise RulesError(f"{value!r} is not valid in {what}: expected Slack {expected}.")
        if value not in found:
            found.append(value)
    return found


def changed_rules(rules: dict[str, Any], *, required: bool | None = None, exempt: Sequence[str] | None = None,
                  required_for: Sequence[str] | None = None, approvers: Sequence[str] | None = None,
                  channel: str | None = None) -> dict[str, Any]:  # fmt: skip
    """``rules`` with the given keys replaced (None leaves a key as it is; an empty list or "" clears it), every
    id validated, so a typo cannot silently lock everyone out or let everyone in."""
    new = dict(rules)
    if required is not None:
        new["required"] = required
    for key, values, groups in (("exempt", exempt, False), ("required_for", required_for, False),
                                ("approvers", approvers, True)):  # fmt: skip
        if values is not None:
            new[key] = _ids(values, what=key, groups=groups)
    if channel is not None:
        if channel and not CHANNEL_ID.match(channel.strip()):
            raise RulesError(f"{channel!r} is not a Slack channel id (C…, G… or D…).")
        new["channel"] = channel.strip() or None
    return {k: v for k, v in new.items() if v not in (None, [])}


async def save_rules(team_id: str, rules: dict[str, Any]) -> None:
    row, _ = await Workspace.get_or_create(team_id=Tenant(team_id).team_id)
    row.settings = {**(row.settings or {}), SETTINGS_KEY: rules}
    await row.save(update_fields=["settings", "updated_at"])


async def rules_of(team_id: str) -> dict[str, Any]:
    return dict(await _settings(team_id))


async def requires_approval(workspace: Workspace | Tenant | str, user_id: str) -> bool:
    """Must a chain created by ``user_id`` be approved first? (``workspace``: the row, a Tenant or a team id.)"""
    rules = await _settings(workspace)
    if user_id in (rules.get("exempt") or ()):
        return False
    return bool(rules.get("required")) or user_id in (rules.get("required_for") or ())


async def approval_channel(workspace: Workspace | Tenant | str) -> str | None:
    channel = (await _settings(workspace)).get("channel")
    return channel if isinstance(channel, str) and channel else None


async def create_approval(chain: BackupChain, actor: Actor, *, channel_id: str | None = None) -> Approval:
    """The pending Approval row (and its audit line) for ``chain`` requested by ``actor``; safe inside a
    transaction."""
    channel = await approval_channel(chain.team_id) or channel_id
    approval = await Tenant(chain.team_id).create(
        Approval, chain=chain, requested_by=actor.user_id, status=ApprovalStatus.PENDING, channel_id=channel
    )
    await record(actor, "approval.request", "chain", chain.id, approval_id=approval.id, channel=channel)
    return approval


async def announce(approval: Approval, chain: BackupChain, alerts: AlertBus | None) -> None:
    """Publish the request for the runs layer to post (after the rows are committed)."""
    if alerts is None:
        return
    await alerts.publish(
        Alert(
            team_id=chain.team_id,
            kind=ALERT_KIND,
            message=f"<@{approval.requested_by}> asks for approval of the backup chain {chain.name}.",
            details={
                "approval_id": approval.id,
                "chain_id": chain.id,
                "chain": chain.name,
                "requested_by": approval.requested_by,
                "channel_id": approval.channel_id,
            },
        )
    )


async def request_for_answers(actor: Actor, session_id: str, fingerprint: str, summary: str, *,
                              channel_id: str | None, alerts: AlertBus | None,
                              what: str = "a new backup chain") -> Approval:  # fmt: skip
    """Ask for approval of a wizard's answers *before* anything is set up on a server: the approver sees
    ``summary``; once approved, the requester's validation (repository, push key, test backup) runs for exactly
    these answers (``fingerprint``). A request for the same answers that is still pending is reused. ``what`` names
    the request in the alert (a new chain, or a change of one: ``/backup edit``)."""
    existing = await actor.tenant.query(Approval).filter(session_id=session_id, fingerprint=fingerprint,
                                                         status=ApprovalStatus.PENDING).first()  # fmt: skip
    if existing is not None:
        return existing
    channel = await approval_channel(actor.team_id) or channel_id
    approval = await actor.tenant.create(Approval, chain=None, session_id=session_id, fingerprint=fingerprint,
                                         summary=summary[:2900], requested_by=actor.user_id,
                                         status=ApprovalStatus.PENDING, channel_id=channel)  # fmt: skip
    await record(actor, "approval.request", "wizard", session_id, approval_id=approval.id, channel=channel)
    if alerts is not None:
        await alerts.publish(Alert(team_id=actor.team_id, kind=ALERT_KIND,
                                   message=f"<@{actor.user_id}> asks for approval of {what}.",
                                   details={"approval_id": approval.id, "requested_by": actor.user_id,
                                            "channel_id": channel}))  # fmt: skip
    return approval


async def approved_for(team_id: str, session_id: str, fingerprint: str) -> Approval | None:
    """The approval that lets a wizard's answers (exactly these) be validated and created, if any."""
    return await Tenant(team_id).query(Approval).filter(session_id=session_id, fingerprint=fingerprint,
                                                        status=ApprovalStatus.APPROVED).first()  # fmt: skip


async def request_approval(
    chain: BackupChain, actor: Actor, *, alerts: AlertBus | None = None, channel_id: str | None = None
) -> Approval:
    """Create the pending Approval row for ``chain`` and publish ``approval_requested`` on ``alerts``.

    The wizard creates the row inside its create transaction (:func:`create_approval`) and announces it after the
    commit (:func:`announce`), so no one is asked to approve a chain that was rolled back.
    """
    approval = await create_approval(chain, actor, channel_id=channel_id)
    await announce(approval, chain, alerts)
    return approval


# -- deciding ----------------------------------------------------------------------------------------------------


async def may_decide(actor: Actor) -> bool:
    """Given an actor, return whether they are an approver of their workspace: listed in ``approvers`` by user id
    or user group (the actor's groups are resolved), or an admin when ``admins`` is listed or nobody is."""
    approvers = [a for a in (await _settings(actor.team_id)).get("approvers") or [] if isinstance(a, str)]
    if actor.user_id in approvers or actor.groups.intersection(approvers):
        return True
    return (not approvers or ADMINS in approvers) and actor.is_admin


def decision_line(approval: Approval) -> str:
    """One line saying who decided (mrkdwn), or "Pending"."""
    if approval.status == ApprovalStatus.APPROVED:
        return f"✅ Approved by <@{approval.decided_by}>"
    if approval.status == ApprovalStatus.REJECTED:
        return f"❌ Rejected by <@{approval.decided_by}>" + (f": {esc(approval.reason)}" if approval.reason else "")
    return "Pending"


@dataclass(frozen=True)
class Decided:
    approval: Approval
    chain: BackupChain | None  # None: an approval of a wizard's answers (the chain is created after it)


async def pending_for(actor: Actor, approval_id: object) -> Approval:
    """The pending approval ``approval_id`` that ``actor`` may decide, or a refusal saying why not."""
    text = str(approval_id or "")
    approval = await actor.tenant.get_or_none(Approval, id=int(text)) if text.isdigit() else None
    if approval is None:
        raise NotFound("This approval request no longer exists.")
    if not await may_decide(actor):
        approvers = [mention(a) for a in (await _settings(actor.team_id)).get("approvers") or [] if a != ADMINS]
        who = ", ".join(approvers) if approvers else "the workspace's admins"
        raise Forbidden(f"You are not allowed to decide this approval: only the workspace's approvers can ({who}).")
    if approval.status != ApprovalStatus.PENDING:
        raise Refused(f"Already decided — {decision_line(approval)}.")
    return approval


async def decide(actor: Actor, approval_id: object, *, approve: bool, reason: str | None = None) -> Decided:
    """Given an approver and a pending approval, approve or reject it; exactly one decision wins.

    In one transaction: the approval (compare-and-set on ``pending``), the chain (``pending_approval`` → ``active``
    or ``rejected``) and the audit row. A click that lost is refused with who decided first."""
    approval = await pending_for(actor, approval_id)
    status = ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED
    reason = (reason or "").strip()[:1000] or None
    async with in_transaction():
        won = await actor.tenant.query(Approval).filter(id=approval.id, status=ApprovalStatus.PENDING).update(
            status=status, decided_by=actor.user_id, decided_at=dt.datetime.now(dt.UTC), reason=reason
        )
        current = await actor.tenant.get(Approval, id=approval.id)
        if won != 1:
            raise Refused(f"Too late — {decision_line(current)}.")
        chain_id = current.chain_id  # type: ignore[attr-defined]
        if chain_id is not None:
            await actor.tenant.query(BackupChain).filter(id=chain_id, status=ChainStatus.PENDING_APPROVAL).update(
                status=ChainStatus.ACTIVE if approve else ChainStatus.REJECTED
            )
        target = ("chain", chain_id) if chain_id is not None else ("wizard", current.session_id)
        await record(actor, "approval.approve" if approve else "approval.reject", *target,
                     approval_id=current.id, reason=reason, requested_by=current.requested_by)  # fmt: skip
    chain = await actor.tenant.get(BackupChain, id=chain_id) if chain_id is not None else None
    if approve and chain is not None:
        await schedule_changed(chain.id)  # active now: plan its slots
    return Decided(current, chain)
