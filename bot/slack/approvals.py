"""Approvals by button: the request message, Approve / Reject (with a reason modal), and who may decide.

On ``approval_requested`` (published by :mod:`bot.services.approvals`) :class:`ApprovalPoster` queues the request in
the approvers' channel (``settings["approvals"]["channel"]``, else the channel stored on the Approval row, else
the chain's notify channel) through the outbox; once delivered, :func:`remember_message` stores the message's
channel and ts on the Approval row.

Who may decide, and the decision itself (exactly one wins, the chain moves, the audit row), belong to the service
layer (:func:`bot.services.approvals.decide`); a refusal is an ephemeral to the presser. After a decision the
request message is updated to show who decided (buttons removed) and the requester is told in a DM
(``conversations.open`` + ``chat.postMessage``), both through the outbox so a Slack outage delays but never loses
them.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
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

from bot.access import Refused
from bot.alerts import Alert
from bot.backup import schedule as sched
from bot.runs.outbox import DM, UPDATE, Outbox
from bot.services import approvals
from bot.services.approvals import ALERT_KIND, decision_line, rules_of
from bot.slack.actors import actor_of
from bot.slack.listing import _repository_text, _sources_text, chain_schedule
from storage.models import Approval, ApprovalStatus, BackupChain, OutboxMessage
from storage.tenancy import Tenant

log = logging.getLogger(__name__)

APPROVE = "approval_approve"
REJECT = "approval_reject"
REJECT_VIEW = "approval_reject_reason"
ACTIONS_BLOCK = "approval_actions"
REASON_BLOCK = "reason"
REASON_INPUT = "reason_input"


def _esc(text: Any) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


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
        rules = await rules_of(alert.team_id)
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
    """Approve / Reject buttons and the reason modal; the service layer decides (:func:`approvals.decide`), and
    decisions are announced through ``outbox``."""
    poster = ApprovalPoster(outbox)

    def _tell(respond: AsyncRespond, text: str):
        return respond(text=text, response_type="ephemeral", replace_original=False)

    @app.action(APPROVE)
    async def on_approve(
        ack: AsyncAck, body: dict, client: AsyncWebClient, context: AsyncBoltContext, respond: AsyncRespond
    ) -> None:
        await ack()
        actor = await actor_of(context, client, body["user"]["id"])
        try:
            decided = await approvals.decide(actor, body["actions"][0].get("value"), approve=True)
        except Refused as exc:
            await _tell(respond, exc.sentence)
            return
        await poster.announce_decision(decided.approval)

    @app.action(REJECT)
    async def on_reject(
        ack: AsyncAck, body: dict, client: AsyncWebClient, context: AsyncBoltContext, respond: AsyncRespond
    ) -> None:
        await ack()
        actor = await actor_of(context, client, body["user"]["id"])
        try:
            approval = await approvals.pending_for(actor, body["actions"][0].get("value"))
        except Refused as exc:
            await _tell(respond, exc.sentence)
            return
        chain = await actor.tenant.get(BackupChain, id=approval.chain_id)  # type: ignore[attr-defined]
        await client.views_open(trigger_id=body["trigger_id"], view=reject_view(approval, chain))

    @app.view(REJECT_VIEW)
    async def on_reject_reason(
        ack: AsyncAck, body: dict, view: dict, client: AsyncWebClient, context: AsyncBoltContext
    ) -> None:
        reason = ((view["state"]["values"].get(REASON_BLOCK) or {}).get(REASON_INPUT) or {}).get("value") or ""
        if not reason.strip():
            await ack(response_action="errors", errors={REASON_BLOCK: "Say why, so the requester can fix it."})
            return
        actor = await actor_of(context, client, body["user"]["id"])
        try:
            decided = await approvals.decide(actor, view.get("private_metadata"), approve=False, reason=reason)
        except Refused as exc:
            await ack(response_action="errors", errors={REASON_BLOCK: exc.sentence[:2000]})
            return
        await ack()
        await poster.announce_decision(decided.approval)
