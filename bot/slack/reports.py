"""Reports in channels, the Slack side: Block Kit for :class:`~bot.runs.notify.Report`, the outbox's sender, the
Retry now / Pause chain buttons, and :func:`install` that wires alerts → notifier/approvals → outbox.

Blocks are built with ``slack_sdk.models`` so ``to_dict()`` enforces Slack's limits. The buttons carry the chain
id; the service layer decides who may press them (the chain's creator, the operators of its servers, admins).
Retry now queues a ``backup`` run (the highest priority, due now) unless one is already queued or running; Pause
chain moves an active chain to ``paused``. Both are audited and the alert message is updated to say who did what
(its buttons removed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.access import Refused
from bot.alerts import Alert, AlertBus
from bot.mrkdwn import esc as _esc
from bot.runs.accounting import POOL_ALERT
from bot.runs.integrity import INTEGRITY_ALERT
from bot.runs.notify import Notifier, Report
from bot.runs.outbox import DM, Outbox, PermanentDeliveryError, TransientDeliveryError
from bot.services import chains, integrity, runs
from bot.services.roles import admin_recipients
from bot.slack.actors import actor_of
from bot.slack.notices import AdminNoticePoster
from bot.slack.restore import RESTORE_OPEN
from storage.models import BackupChain, ChainStatus

log = logging.getLogger(__name__)

RETRY = "report_retry_now"
PAUSE = "report_pause_chain"
ACCEPT_CHANGE = "integrity_accept"
QUARANTINE = "integrity_quarantine"
ACTIONS_BLOCK = "report_actions"
MAX_TEXT = 2900


def _section(text: str) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"))


def report_blocks(report: Report) -> list[Block]:
    """The message for one report: header, cause, error, hint, facts, details, buttons."""
    blocks: list[Block] = [HeaderBlock(text=report.title[:150])]
    if report.cause:
        blocks.append(_section(f"*Cause:* {_esc(report.cause)}"))
    if report.error:
        blocks.append(_section(f"*Error:*\n```{_esc(report.error)[:2800]}```"))
    if report.hint:
        blocks.append(_section(f"*What to do:* {report.hint}"))
    if report.facts:
        fields = [MarkdownTextObject(text=f"*{label}*\n{_esc(value)}") for label, value in report.facts[:10]]
        blocks.append(SectionBlock(fields=fields))
    if report.details:
        blocks.append(_section("\n".join(f"• {_esc(line)}" for line in report.details)))
    value = str(report.chain_id)
    buttons: list[ButtonElement] = []
    if report.actions:
        buttons += [ButtonElement(text="Retry now", action_id=RETRY, value=value, style="primary"),
                    ButtonElement(text="Pause chain", action_id=PAUSE, value=value, style="danger")]  # fmt: skip
    if report.restore:  # opens the restore flow at this chain's archives (bot.slack.restore)
        buttons.append(ButtonElement(text="Restore…", action_id=RESTORE_OPEN, value=value))
    if buttons:
        blocks.append(ActionsBlock(block_id=ACTIONS_BLOCK, elements=buttons))
    context = f"Chain *{_esc(report.chain_name)}*" + (f" · run #{report.run_id}" if report.run_id else "")
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=context)]))
    return blocks


def render(report: Report) -> dict[str, Any]:
    """chat.postMessage params (text fallback + blocks as dicts) for ``report``."""
    return {"text": report.text[:3000], "blocks": [b.to_dict() for b in report_blocks(report)]}


# -- delivery ------------------------------------------------------------------------------------------------

PERMANENT_ERRORS = frozenset(
    {
        "channel_not_found", "not_in_channel", "is_archived", "invalid_blocks", "invalid_blocks_format",
        "msg_too_long", "no_text", "message_not_found", "cant_update_message", "user_not_found",
        "users_list_not_supplied", "invalid_auth", "account_inactive", "token_revoked", "restricted_action",
        "not_allowed_token_type", "missing_scope",
    }
)  # fmt: skip


@dataclass
class SlackSender:
    """The outbox's :class:`~bot.runs.outbox.Sender` over an ``AsyncWebClient`` (its retry handlers run first)."""

    client: AsyncWebClient

    async def __call__(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self.client.api_call(method, json=params)
        except SlackApiError as exc:
            status = exc.response.status_code
            code = exc.response.get("error") if isinstance(exc.response.data, dict) else None
            if status == 429 or status >= 500 or code not in PERMANENT_ERRORS:
                raise TransientDeliveryError(f"{method}: HTTP {status} {code or ''}".strip()) from exc
            raise PermanentDeliveryError(f"{method}: {code}") from exc
        except (SlackClientError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise TransientDeliveryError(f"{method}: {type(exc).__name__}: {exc}") from exc
        return dict(response.data) if isinstance(response.data, dict) else {}


def slack_sender(client: AsyncWebClient) -> SlackSender:
    return SlackSender(client)


# -- a pool crossing its threshold --------------------------------------------------------------------------------


def pool_alert_payload(alert: Alert) -> dict[str, Any]:
    """The message for a :data:`~bot.runs.accounting.POOL_ALERT`: the sentence (escaped) and where to act."""
    text = f":warning: {_esc(alert.message)}"
    hint = "`/backup pools` shows every pool's free space, quota and threshold; `/backup prune` frees space now."
    blocks = [_section(text), ContextBlock(elements=[MarkdownTextObject(text=hint)])]
    return {"text": text[:MAX_TEXT], "blocks": [b.to_dict() for b in blocks]}


async def pool_channels(team_id: str, pool_id: object) -> list[str]:
    """The report channels of the chains whose repositories live in the pool (each once, oldest chain first)."""
    rows = await BackupChain.filter(team_id=team_id, repository__pool_id=pool_id, notify_channel__isnull=False,
                                    status__in=[ChainStatus.ACTIVE, ChainStatus.PAUSED]).order_by("id")  # fmt: skip
    return list(dict.fromkeys(c.notify_channel for c in rows if c.notify_channel))


class PoolAlertPoster:
    """Posts a pool's threshold alert once: to the admins' channel when one is set, else to the channels of the
    chains using the pool (the people whose backups will fail), else as a DM to each admin named in the roles."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def on_alert(self, alert: Alert) -> None:
        if alert.kind != POOL_ALERT:
            return
        payload = pool_alert_payload(alert)
        channel, users = await admin_recipients(alert.team_id)
        targets = [channel] if channel else await pool_channels(alert.team_id, alert.details.get("pool_id"))
        for target in targets:
            await self.outbox.enqueue(alert.team_id, target, payload, ref="report:pool_threshold")
        if not targets:
            for user in users:
                await self.outbox.enqueue(alert.team_id, user, payload, method=DM, ref="report:pool_threshold")


# -- a repository that differs from the bot's record ---------------------------------------------------------------


def integrity_alert_payload(alert: Alert) -> dict[str, Any]:
    """The message for an :data:`~bot.runs.integrity.INTEGRITY_ALERT`: what differs, what it means, and the admin's
    two choices (accept the change, or quarantine: keep everything and stop pruning)."""
    details = alert.details
    text = f":rotating_light: {_esc(alert.message)}"
    found = "\n".join(f"• {_esc(line)}" for line in details.get("sentences") or [])
    meaning = ("Archives added, removed or replaced behind the bot's back (for example through a source's push key) "
               "are never pruned or compacted by the bot: backups continue, maintenance waits. *Accept the change* "
               "if it was done on purpose; *Quarantine* keeps every archive and stops pruning until released.")
    value = str(details.get("repository_id") or "")
    buttons = ActionsBlock(block_id=ACTIONS_BLOCK, elements=[
        ButtonElement(text="Accept the change", action_id=ACCEPT_CHANGE, value=value),
        ButtonElement(text="Quarantine", action_id=QUARANTINE, value=value, style="danger"),
    ])  # fmt: skip
    blocks = [_section(text), *([_section(found)] if found else []),
              ContextBlock(elements=[MarkdownTextObject(text=meaning)]), buttons]  # fmt: skip
    return {"text": text[:MAX_TEXT], "blocks": [b.to_dict() for b in blocks]}


class IntegrityAlertPoster:
    """Posts a repository's integrity alert once: to the admins' channel when one is set, else to the channels of
    its chains, else as a DM to each admin (only admins can decide; the buttons refuse anyone else)."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def on_alert(self, alert: Alert) -> None:
        if alert.kind != INTEGRITY_ALERT:
            return
        payload = integrity_alert_payload(alert)
        channel, users = await admin_recipients(alert.team_id)
        targets = [channel] if channel else list(alert.details.get("notify_channels") or [])
        for target in targets:
            await self.outbox.enqueue(alert.team_id, target, payload, ref="report:integrity")
        if not targets:
            for user in users:
                await self.outbox.enqueue(alert.team_id, user, payload, method=DM, ref="report:integrity")


@dataclass
class Reporting:
    """Everything :func:`install` started: stop it with :meth:`aclose`."""

    outbox: Outbox
    notifier: Notifier
    unsubscribe: list[Any]

    async def aclose(self) -> None:
        for undo in self.unsubscribe:
            undo()
        await self.outbox.stop()


async def install(bus: AlertBus, client: AsyncWebClient, *, outbox: Outbox | None = None) -> Reporting:
    """Subscribe the notifier, the approval poster, the admin notices and the pool alerts to ``bus`` and start
    delivering the outbox."""
    from bot.slack import approvals

    outbox = outbox or Outbox(slack_sender(client))
    notifier = Notifier(outbox, render)
    poster = approvals.ApprovalPoster(outbox)
    outbox.hooks["approval"] = approvals.remember_message
    notices = AdminNoticePoster(outbox)
    pools = PoolAlertPoster(outbox)
    held = IntegrityAlertPoster(outbox)
    unsubscribe = [notifier.subscribe(bus), bus.subscribe(poster.on_alert), bus.subscribe(notices.on_alert),
                   bus.subscribe(pools.on_alert), bus.subscribe(held.on_alert)]  # fmt: skip
    outbox.start()
    return Reporting(outbox, notifier, unsubscribe)


# -- buttons -------------------------------------------------------------------------------------------------


def _done_blocks(message: dict[str, Any], note: str) -> list[dict[str, Any]]:
    kept = [b for b in message.get("blocks") or [] if b.get("block_id") != ACTIONS_BLOCK]
    return [*kept, ContextBlock(elements=[MarkdownTextObject(text=note)]).to_dict()]


def register(app: AsyncApp) -> None:
    """Listeners for the report buttons: the service layer decides (:mod:`bot.services.runs`,
    :mod:`bot.services.chains`); a refusal is an ephemeral to the presser, the message is left as it was."""

    async def _refused(respond: AsyncRespond, exc: Refused) -> None:
        await respond(text=exc.sentence, response_type="ephemeral", replace_original=False)

    async def _mark(client: AsyncWebClient, body: dict, note: str) -> None:
        message, channel = body.get("message") or {}, (body.get("channel") or {}).get("id")
        if not channel or not message.get("ts"):
            return
        try:
            await client.chat_update(
                channel=channel, ts=message["ts"], text=message.get("text") or note, blocks=_done_blocks(message, note)
            )
        except SlackApiError as exc:
            log.warning("could not update the report message: %s", exc.response.get("error"))

    @app.action(RETRY)
    async def on_retry(
        ack: AsyncAck, body: dict, client: AsyncWebClient, context: AsyncBoltContext, respond: AsyncRespond
    ) -> None:
        await ack()
        user = body["user"]["id"]
        try:
            queued = await runs.run_now(await actor_of(context, client, user), body["actions"][0].get("value"),
                                        reason="retry")  # fmt: skip
        except Refused as exc:
            await _refused(respond, exc)
            return
        verb = "queued" if queued.created else f"not needed: a backup is already {queued.status}"
        await _mark(client, body, f"🔁 Retry {verb} by <@{user}> (run #{queued.run_id})")

    @app.action(PAUSE)
    async def on_pause(
        ack: AsyncAck, body: dict, client: AsyncWebClient, context: AsyncBoltContext, respond: AsyncRespond
    ) -> None:
        await ack()
        user = body["user"]["id"]
        try:
            changed = await chains.set_paused(await actor_of(context, client, user), body["actions"][0].get("value"),
                                              paused=True)  # fmt: skip
        except Refused as exc:
            await _refused(respond, exc)
            return
        if changed.changed:
            await _mark(client, body, changed.sentence.replace(" is paused", f" paused by <@{user}>", 1))
        else:
            await respond(text=changed.sentence, response_type="ephemeral", replace_original=False)

    async def _decide(body: dict, client: AsyncWebClient, context: AsyncBoltContext, respond: AsyncRespond,
                      decide: Any, verb: str) -> None:  # fmt: skip
        user = body["user"]["id"]
        try:
            decided = await decide(await actor_of(context, client, user), body["actions"][0].get("value"))
        except Refused as exc:
            await _refused(respond, exc)
            return
        if decided.changed:
            await _mark(client, body, f"{decided.sentence} ({verb} by <@{user}>)")
        else:
            await respond(text=decided.sentence, response_type="ephemeral", replace_original=False)

    @app.action(ACCEPT_CHANGE)
    async def on_accept(
        ack: AsyncAck, body: dict, client: AsyncWebClient, context: AsyncBoltContext, respond: AsyncRespond
    ) -> None:
        await ack()
        await _decide(body, client, context, respond, integrity.accept, "accepted")

    @app.action(QUARANTINE)
    async def on_quarantine(
        ack: AsyncAck, body: dict, client: AsyncWebClient, context: AsyncBoltContext, respond: AsyncRespond
    ) -> None:
        await ack()
        await _decide(body, client, context, respond, integrity.quarantine, "quarantined")
