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
from bot.flows.wizard.approved import continue_after_approval
from bot.flows.wizard.controller import WizardController
from bot.mrkdwn import esc as _esc
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


async def subject_of(approval: Approval) -> tuple[str, list[Block]]:
    """(what is to be approved, in a few words of mrkdwn; the blocks that describe it): a chain, or a wizard's
    answers."""
    if approval.chain_id is None:  # type: ignore[attr-defined]
        change = (approval.summary or "").startswith("*Change of ")  # an edit's answers (services.editing)
        what = "a change of a backup chain" if change else "a new backup chain"
        after = ("the changed steps are validated and the chain's new settings applied" if change else
                 "the repository and a test backup are made and the chain is created")  # fmt: skip
        text = "\n".join([f"*Requested by:* <@{approval.requested_by}>", approval.summary or "",
                          f"_Nothing is set up on a server before approval: then {after}._"])  # fmt: skip
        return what, [HeaderBlock(text=f"Approval needed: {what}"),
                      SectionBlock(text=MarkdownTextObject(text=text[:2900]))]  # fmt: skip
    chain = await BackupChain.get(team_id=approval.team_id, id=approval.chain_id)  # type: ignore[attr-defined]
    return f"backup chain *{_esc(chain.name)}*", await summary_blocks(chain, approval.requested_by)


async def request_blocks(approval: Approval) -> list[dict[str, Any]]:
    _, blocks = await subject_of(approval)
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


async def decided_blocks(approval: Approval) -> list[dict[str, Any]]:
    _, blocks = await subject_of(approval)
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=decision_line(approval)[:2900])]))
    return [b.to_dict() for b in blocks]


def reject_view(approval: Approval, subject: str) -> View:
    return View(
        type="modal",
        callback_id=REJECT_VIEW,
        private_metadata=str(approval.id),
        title="Reject backup chain",
        submit="Reject",
        close="Cancel",
        blocks=[
            SectionBlock(text=MarkdownTextObject(text=f"Reject {subject}? The requester is told why.")),
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
        chain = await BackupChain.get_or_none(team_id=alert.team_id, id=approval.chain_id)  # type: ignore[attr-defined]
        rules = await rules_of(alert.team_id)
        channel = rules.get("channel") or approval.channel_id or (chain.notify_channel if chain else None)
        if not channel:
            log.error("approval %s has no channel to be posted in", approval.id)
            return
        subject, _ = await subject_of(approval)
        payload = {"text": f"Approval needed: {subject}", "blocks": await request_blocks(approval)}
        await self.outbox.enqueue(alert.team_id, channel, payload, ref=f"approval:{approval.id}")

    async def announce_decision(self, approval: Approval) -> None:
        """Queue the message update (who decided) and the requester's DM."""
        subject, _ = await subject_of(approval)
        line = decision_line(approval)
        channel, ts = await self.where_posted(approval)
        if channel and ts:
            payload = {"ts": ts, "text": f"{subject}: {line}", "blocks": await decided_blocks(approval)}
            await self.outbox.enqueue(approval.team_id, channel, payload, method=UPDATE)
        verdict = "approved" if approval.status == ApprovalStatus.APPROVED else "rejected"
        text = f"Your {subject} was {verdict} by <@{approval.decided_by}>."
        if approval.status == ApprovalStatus.REJECTED and approval.reason:
            text += f"\n*Reason:* {_esc(approval.reason)}"
        elif approval.status == ApprovalStatus.APPROVED and approval.chain_id is not None:  # type: ignore[attr-defined]
            text += " It is active now and runs on its schedule."
        elif approval.status == ApprovalStatus.APPROVED:
            text += " The bot now creates the repository and runs the test backup; you are told how it went."
        await self.outbox.enqueue(approval.team_id, approval.requested_by, {"text": text}, method=DM)

    async def where_posted(self, approval: Approval) -> tuple[str | None, str | None]:
        """(channel, ts) of the request message; it may still wait in the outbox, then it is found there."""
        channel, ts = approval.channel_id, approval.message_ts
        if not ts:
            sent = await OutboxMessage.filter(ref=f"approval:{approval.id}").order_by("-id").first()
            channel = (sent.sent_channel or sent.channel) if sent else channel
            ts = sent.sent_ts if sent else None
        return channel, ts

    async def tell_outcome(self, approval: Approval, text: str) -> None:
        """What happened after an approval of answers: to the requester (DM) and in the request's thread."""
        await self.outbox.enqueue(approval.team_id, approval.requested_by, {"text": text}, method=DM)
        channel, ts = await self.where_posted(approval)
        if channel:
            await self.outbox.enqueue(approval.team_id, channel, {"text": text, **({"thread_ts": ts} if ts else {})})


async def remember_message(row: OutboxMessage) -> None:
    """Outbox hook: store where the request message went on its Approval row."""
    approval_id = int(row.ref.split(":", 1)[1]) if row.ref else 0
    await Approval.filter(team_id=row.team_id, id=approval_id).update(
        channel_id=row.sent_channel or row.channel, message_ts=row.sent_ts
    )


# -- listeners ---------------------------------------------------------------------------------------------------


def register(app: AsyncApp, outbox: Outbox, wizard: WizardController | None = None) -> None:
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
        if decided.chain is None and decided.approval.session_id is not None and wizard is not None:
            await _after_approval(wizard, poster, actor.tenant, decided.approval)

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
        subject, _ = await subject_of(approval)
        await client.views_open(trigger_id=body["trigger_id"], view=reject_view(approval, subject))

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


async def _after_approval(wizard: WizardController, poster: ApprovalPoster, tenant: Tenant, approval: Approval) -> None:
    """Validate and create what was approved, then tell the requester and the approval's thread."""
    try:
        outcome = await continue_after_approval(wizard, tenant, str(approval.session_id))
        text = outcome.sentence
    except Exception as exc:  # the requester must hear of it; the wizard stays as it was
        log.error("validation after approval %s failed: %s", approval.id, type(exc).__name__)
        log.debug("validation after approval detail", exc_info=exc)
        text = (f":x: The approved answers could not be validated ({type(exc).__name__}); nothing was created. "
                "`/backup resume` reopens the wizard.")  # fmt: skip
    await poster.tell_outcome(approval, text)
