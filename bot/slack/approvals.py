"""Approvals by button: the request message, Approve / Reject (with a reason modal), and who may decide.

On ``approval_requested`` (published by :mod:`bot.flows.approvals`) :class:`ApprovalPoster` queues the request in
the approvers' channel (``settings["approvals"]["channel"]``, else the channel stored on the Approval row, else
the chain's notify channel) through the outbox; once delivered, :func:`remember_message` stores the message's
channel and ts on the Approval row.

Who may decide (:func:`may_decide`), from ``settings["approvals"]["approvers"]``: Slack user ids (``U…``/``W…``),
user groups (``S…``, resolved with ``usergroups.users.list``) and the word ``"admins"`` (workspace admins and
owners, by ``users.info``). With no approvers configured, workspace admins decide. Anyone else gets an ephemeral
"not allowed".

Exactly one decision wins: :func:`decide` is a compare-and-set (``UPDATE approval SET status=… WHERE id=… AND
status='pending'``); the click that updates 0 rows lost and is told who decided first. The winner, in the same
transaction, moves the chain ``pending_approval`` → ``active`` (approve) or ``rejected`` and writes the AuditLog;
then the request message is updated to show who decided (buttons removed) and the requester is told in a DM
(``conversations.open`` + ``chat.postMessage``), both through the outbox so a Slack outage delays but never loses
them.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    PlainTextInputElement,
    SectionBlock,
)
from slack_sdk.models.views import View
from slack_sdk.web.async_client import AsyncWebClient
from tortoise.transactions import in_transaction

from bot.alerts import Alert
from bot.flows.approvals import ALERT_KIND, SETTINGS_KEY
from bot.runs import schedule as sched
from bot.runs.nudge import schedule_changed
from bot.runs.outbox import DM, UPDATE, Outbox
from bot.slack.listing import _repository_text, _sources_text, chain_schedule
from storage.models import Approval, ApprovalStatus, AuditLog, BackupChain, ChainStatus, OutboxMessage, Workspace
from storage.tenancy import Tenant

log = logging.getLogger(__name__)

APPROVE = "approval_approve"
REJECT = "approval_reject"
REJECT_VIEW = "approval_reject_reason"
ACTIONS_BLOCK = "approval_actions"
REASON_BLOCK = "reason"
REASON_INPUT = "reason_input"
ADMINS = "admins"


def _esc(text: Any) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# -- who may decide --------------------------------------------------------------------------------------------


async def _rules(team_id: str) -> dict[str, Any]:
    row = await Workspace.get_or_none(team_id=team_id)
    rules = (row.settings or {}).get(SETTINGS_KEY) if row is not None else None
    return rules if isinstance(rules, dict) else {}


async def _is_admin(client: AsyncWebClient, team_id: str, user_id: str) -> bool:
    """A Slack admin or owner of this workspace (``users.info``; any failure to ask is a no)."""
    try:
        user: dict[str, Any] = (await client.users_info(user=user_id)).get("user") or {}
    except (SlackApiError, SlackClientError, OSError) as exc:
        log.warning("users.info failed while checking admin rights: %s", type(exc).__name__)
        return False
    if user.get("team_id") not in (None, team_id):  # an admin of another workspace is not one here
        return False
    return bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))


async def may_decide(client: AsyncWebClient, team_id: str, user_id: str) -> bool:
    """Is ``user_id`` an approver of ``team_id`` (listed, in a listed user group, or an admin when allowed)?"""
    approvers = [a for a in (await _rules(team_id)).get("approvers") or [] if isinstance(a, str)]
    if user_id in approvers:
        return True
    for group in (a for a in approvers if a.startswith("S")):
        try:
            members = (await client.usergroups_users_list(usergroup=group))["users"]
        except SlackApiError as exc:
            log.warning("cannot read user group %s: %s", group, exc.response.get("error"))
            continue
        if user_id in members:
            return True
    if not approvers or ADMINS in approvers:
        return await _is_admin(client, team_id, user_id)
    return False


async def may_operate(client: AsyncWebClient, team_id: str, user_id: str, chain: BackupChain) -> bool:
    """May ``user_id`` run, retry, pause, resume or reconfigure ``chain`` (from an alert, the App Home or
    ``/backup ping|check|prune``): its creator, an approver (listed, or in a listed user group), or a Slack admin of
    this workspace. The one rule for every surface."""
    if user_id and user_id == chain.created_by:
        return True
    return await may_decide(client, team_id, user_id) or await _is_admin(client, team_id, user_id)


# -- the decision (compare-and-set) --------------------------------------------------------------------------


async def decide(
    team_id: str, approval_id: int, user_id: str, *, approve: bool, reason: str | None = None
) -> Approval | None:
    """Decide a pending approval; the decided row, or None if it was not pending any more (someone else won)."""
    status = ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED
    async with in_transaction():
        won = await Approval.filter(team_id=team_id, id=approval_id, status=ApprovalStatus.PENDING).update(
            status=status, decided_by=user_id, decided_at=dt.datetime.now(dt.UTC), reason=reason
        )
        if won != 1:
            return None
        approval = await Approval.get(team_id=team_id, id=approval_id)
        await BackupChain.filter(team_id=team_id, id=approval.chain_id, status=ChainStatus.PENDING_APPROVAL).update(
            status=ChainStatus.ACTIVE if approve else ChainStatus.REJECTED
        )
        await AuditLog.create(
            team_id=team_id,
            actor=user_id,
            action="approval.approve" if approve else "approval.reject",
            object_type="chain",
            object_id=str(approval.chain_id),
            details={"approval_id": approval.id, "reason": reason, "requested_by": approval.requested_by},
        )
    if approve:
        await schedule_changed(approval.chain_id)  # type: ignore[attr-defined]  # active now: plan its slots
    return approval


# -- messages ---------------------------------------------------------------------------------------------------


async def summary_blocks(chain: BackupChain, requested_by: str) -> list[Block]:
    tenant = Tenant(chain.team_id)
    lines = [
        f"*Requested by:* <@{requested_by}>",
        await _repository_text(tenant, chain),
        await _sources_text(tenant, chain),
        f"*Schedule:* {_esc(sched.summary(chain_schedule(chain)))} · priority {chain.priority}",
        f"*Reports to:* {f'<#{chain.notify_channel}>' if chain.notify_channel else 'nowhere'}",
    ]
    text = "\n".join(lines)
    return [
        HeaderBlock(text=f"Approval needed: {chain.name}"[:150]),
        SectionBlock(text=MarkdownTextObject(text=text[:2900])),
    ]


async def request_blocks(chain: BackupChain, approval: Approval) -> list[dict[str, Any]]:
    blocks = await summary_blocks(chain, approval.requested_by)
    value = str(approval.id)
    blocks.append(
        ActionsBlock(
            block_id=ACTIONS_BLOCK,
            elements=[
                ButtonElement(text="Approve", action_id=APPROVE, value=value, style="primary"),
                ButtonElement(text="Reject", action_id=REJECT, value=value, style="danger"),
            ],
        )
    )
    return [b.to_dict() for b in blocks]


def decision_line(approval: Approval) -> str:
    if approval.status == ApprovalStatus.APPROVED:
        return f"✅ Approved by <@{approval.decided_by}>"
    if approval.status == ApprovalStatus.REJECTED:
        reason = f": {_esc(approval.reason)}" if approval.reason else ""
        return f"❌ Rejected by <@{approval.decided_by}>{reason}"
    return "Pending"


async def decided_blocks(chain: BackupChain, approval: Approval) -> list[dict[str, Any]]:
    blocks = await summary_blocks(chain, approval.requested_by)
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=decision_line(approval)[:2900])]))
    return [b.to_dict() for b in blocks]


def reject_view(approval: Approval, chain: BackupChain) -> View:
    return View(
        type="modal",
        callback_id=REJECT_VIEW,
        private_metadata=str(approval.id),
        title="Reject backup chain",
        submit="Reject",
        close="Cancel",
        blocks=[
            SectionBlock(text=MarkdownTextObject(text=f"Reject *{_esc(chain.name)}*? The requester is told why.")),
            InputBlock(
                block_id=REASON_BLOCK,
                label="Reason",
                element=PlainTextInputElement(action_id=REASON_INPUT, multiline=True, max_length=1000),
            ),
        ],
    )


class ApprovalPoster:
    """Posts ``approval_requested`` alerts as request messages through the outbox."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def on_alert(self, alert: Alert) -> None:
        if alert.kind != ALERT_KIND:
            return
        approval = await Approval.get_or_none(team_id=alert.team_id, id=alert.details.get("approval_id"))
        if approval is None or approval.status != ApprovalStatus.PENDING:
            return
        chain = await BackupChain.get(team_id=alert.team_id, id=approval.chain_id)
        rules = await _rules(alert.team_id)
        channel = rules.get("channel") or approval.channel_id or chain.notify_channel
        if not channel:
            log.error("approval %s has no channel to be posted in", approval.id)
            return
        payload = {
            "text": f"Approval needed: backup chain {chain.name}",
            "blocks": await request_blocks(chain, approval),
        }
        await self.outbox.enqueue(alert.team_id, channel, payload, ref=f"approval:{approval.id}")

    async def announce_decision(self, approval: Approval) -> None:
        """Queue the message update (who decided) and the requester's DM."""
        chain = await BackupChain.get(team_id=approval.team_id, id=approval.chain_id)
        line = decision_line(approval)
        channel, ts = approval.channel_id, approval.message_ts
        if not ts:  # the request itself may still wait in the outbox: find where it went
            sent = await OutboxMessage.filter(ref=f"approval:{approval.id}").order_by("-id").first()
            channel = (sent.sent_channel or sent.channel) if sent else channel
            ts = sent.sent_ts if sent else None
        if channel and ts:
            payload = {"ts": ts, "text": f"{chain.name}: {line}", "blocks": await decided_blocks(chain, approval)}
            await self.outbox.enqueue(approval.team_id, channel, payload, method=UPDATE)
        verdict = "approved" if approval.status == ApprovalStatus.APPROVED else "rejected"
        text = f"Your backup chain *{_esc(chain.name)}* was {verdict} by <@{approval.decided_by}>."
        if approval.status == ApprovalStatus.REJECTED and approval.reason:
            text += f"\n*Reason:* {_esc(approval.reason)}"
        elif approval.status == ApprovalStatus.APPROVED:
            text += " It is active now and runs on its schedule."
        await self.outbox.enqueue(approval.team_id, approval.requested_by, {"text": text}, method=DM)


async def remember_message(row: OutboxMessage) -> None:
    """Outbox hook: store where the request message went on its Approval row."""
    approval_id = int(row.ref.split(":", 1)[1]) if row.ref else 0
    await Approval.filter(team_id=row.team_id, id=approval_id).update(
        channel_id=row.sent_channel or row.channel, message_ts=row.sent_ts
    )


# -- listeners ---------------------------------------------------------------------------------------------------


def register(app: AsyncApp, outbox: Outbox) -> None:
    """Approve / Reject buttons and the reason modal; decisions are announced through ``outbox``."""
    poster = ApprovalPoster(outbox)

    async def _load(tenant: Tenant, value: Any) -> Approval | None:
        text = str(value or "")
        return await tenant.get_or_none(Approval, id=int(text)) if text.isdigit() else None

    async def _refuse_or_load(
        body: dict, context: AsyncBoltContext, client: AsyncWebClient, respond: AsyncRespond
    ) -> Approval | None:
        tenant: Tenant = context["tenant"]
        user = body["user"]["id"]
        approval = await _load(tenant, body["actions"][0].get("value"))
        if approval is None:
            await respond(text="This approval request no longer exists.", response_type="ephemeral",
                          replace_original=False)  # fmt: skip
            return None
        if not await may_decide(client, tenant.team_id, user):
            await respond(
                text="You are not allowed to decide this approval: only the workspace's approvers can.",
                response_type="ephemeral",
                replace_original=False,
            )
            return None
        if approval.status != ApprovalStatus.PENDING:
            await respond(text=f"Already decided — {decision_line(approval)}.", response_type="ephemeral",
                          replace_original=False)  # fmt: skip
            return None
        return approval

    @app.action(APPROVE)
    async def on_approve(
        ack: AsyncAck, body: dict, client: AsyncWebClient, context: AsyncBoltContext, respond: AsyncRespond
    ) -> None:
        await ack()
        approval = await _refuse_or_load(body, context, client, respond)
        if approval is None:
            return
        decided = await decide(approval.team_id, approval.id, body["user"]["id"], approve=True)
        if decided is None:
            current = await Approval.get(team_id=approval.team_id, id=approval.id)
            await respond(text=f"Too late — {decision_line(current)}.", response_type="ephemeral",
                          replace_original=False)  # fmt: skip
            return
        await poster.announce_decision(decided)

    @app.action(REJECT)
    async def on_reject(
        ack: AsyncAck, body: dict, client: AsyncWebClient, context: AsyncBoltContext, respond: AsyncRespond
    ) -> None:
        await ack()
        approval = await _refuse_or_load(body, context, client, respond)
        if approval is None:
            return
        chain = await BackupChain.get(team_id=approval.team_id, id=approval.chain_id)
        await client.views_open(trigger_id=body["trigger_id"], view=reject_view(approval, chain))

    @app.view(REJECT_VIEW)
    async def on_reject_reason(
        ack: AsyncAck, body: dict, view: dict, client: AsyncWebClient, context: AsyncBoltContext
    ) -> None:
        tenant: Tenant = context["tenant"]
        user = body["user"]["id"]
        reason = ((view["state"]["values"].get(REASON_BLOCK) or {}).get(REASON_INPUT) or {}).get("value") or ""
        reason = reason.strip()
        if not reason:
            await ack(response_action="errors", errors={REASON_BLOCK: "Say why, so the requester can fix it."})
            return
        approval = await _load(tenant, view.get("private_metadata"))
        if approval is None or not await may_decide(client, tenant.team_id, user):
            await ack(response_action="errors", errors={REASON_BLOCK: "You are not allowed to decide this approval."})
            return
        decided = await decide(tenant.team_id, approval.id, user, approve=False, reason=reason)
        if decided is None:
            current = await Approval.get(team_id=tenant.team_id, id=approval.id)
            await ack(response_action="errors", errors={REASON_BLOCK: f"Already decided: {decision_line(current)}"})
            return
        await ack()
        await poster.announce_decision(decided)
