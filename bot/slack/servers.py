"""``/backup servers``: the workspace's servers — reachability, borg version, last probe, what uses each — with
*Refresh* (admins and the server's operators) and *Remove* (admins, shown only while nothing uses the server).

Parsing and rendering only; :mod:`bot.services.servers` decides and audits, so a forged button from someone not
allowed gets the service's refusal and nothing happens (no SSH session either). The listing is an ephemeral answer;
a button is acknowledged at once (a refresh logs in over SSH and may take seconds), then the answer is replaced
through the interaction's ``response_url`` — or, where that fails, posted as a new ephemeral message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.models.blocks import ActionsBlock, Block, ButtonElement, ConfirmObject
from slack_sdk.web.async_client import AsyncWebClient

from bot.access import Actor, Forbidden, Refused
from bot.access.authz import who_can_allow
from bot.alerts import AlertBus
from bot.mrkdwn import esc
from bot.probes.capabilities import ProbeSpec
from bot.services import servers
from bot.slack.actors import actor_of
from bot.slack.listing import Answer, _context, _header, _section
from bot.slack.own_ssh import OwnSSH
from bot.transport import SSHPool
from bot.transport.base import TransportError

log = logging.getLogger(__name__)
WORDS = ("servers",)
REFRESH = "server_refresh"
REMOVE = "server_remove"
MAX_SHOWN = 22  # two blocks a server, plus the header and notes: within Slack's 50 blocks
STATUS = {
    "ok": ":large_green_circle: reachable",
    "unreachable": ":red_circle: unreachable",
    "host_key_changed": ":rotating_light: host key changed",
    "unconfirmed": ":grey_question: host key not confirmed",
    "new": ":grey_question: host key not confirmed",
}


def _when(moment: datetime | None) -> str:
    """A time as Slack shows it in each reader's own time zone (with a UTC fallback)."""
    if moment is None:
        return "never"
    fallback = moment.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def _names(items: tuple[str, ...], none: str) -> str:
    shown = ", ".join(esc(n) for n in items[:8])
    return (shown + (f" and {len(items) - 8} more" if len(items) > 8 else "")) if items else none


def _describe(view: servers.ServerView) -> str:
    """One server as a section's mrkdwn text."""
    status = STATUS.get(view.status, view.status)
    if view.status == "ok" and view.probed_at is None:
        status = ":white_circle: key confirmed, not probed yet"
    lines = [f"*{esc(view.name)}* `{esc(view.address)}` — {status}"]
    if view.problem and view.status != "ok":
        lines.append(f"> {esc(view.problem[:300])}")
    borg = f"borg {esc(view.borg_version)}" if view.borg_version else "borg: unknown"
    if view.borg_summary and view.borg_version is None:
        borg = f"borg: {esc(view.borg_summary[:200])}"
    lines.append(f"{borg} · last probe: {_when(view.probed_at)} · key: `{esc(view.key)}`")
    lines.append(f"Chains: {_names(view.chains, 'none')}" + (f" · Pools: {_names(view.pools, '')}"
                                                                if view.pools else ""))  # fmt: skip
    return "\n".join(lines)


def _buttons(view: servers.ServerView) -> ActionsBlock | None:
    elements = []
    if view.may_refresh:
        elements.append(ButtonElement(text="Refresh", action_id=REFRESH, value=str(view.id)))
    if view.may_remove:
        confirm = ConfirmObject(title="Remove this server?", confirm="Remove", deny="Keep",
                                text=f"{view.name} ({view.address}) and its stored database logins are removed "
                                     "from the bot. Nothing on the server itself changes.")  # fmt: skip
        elements.append(ButtonElement(text="Remove", action_id=REMOVE, value=str(view.id), style="danger",
                                      confirm=confirm))  # fmt: skip
    return ActionsBlock(block_id=f"server_{view.id}", elements=elements) if elements else None


async def listing(actor: Actor, note: str | None = None) -> Answer:
    """Given an actor, return the ``/backup servers`` answer: the servers they may see, with the buttons they may
    press (``note``: what just happened, shown first)."""
    views = await servers.list_servers(actor)
    blocks: list[Block] = [_header("Servers")]
    if note:
        blocks.append(_section(note))
    for view in views[:MAX_SHOWN]:
        blocks.append(_section(_describe(view)))
        buttons = _buttons(view)
        if buttons is not None:
            blocks.append(buttons)
    if len(views) > MAX_SHOWN:
        blocks.append(_context(f"{len(views) - MAX_SHOWN} more not shown: `backup-bot server list` lists all."))
    if not views:
        blocks.append(_section(await _nothing(actor)))
    elif actor.is_admin:
        blocks.append(_context("Add a server in `/backup new` (its host key is confirmed there) or with "
                               "`backup-bot server add`. *Remove* shows only for servers no chain or pool uses."))
    text = f"{note} " if note else ""
    return Answer(f"{text}Servers: {', '.join(v.name for v in views[:MAX_SHOWN]) or 'none'}"[:3000], blocks)


async def _nothing(actor: Actor) -> str:
    if actor.is_admin:
        return "No server yet. Add one in `/backup new` or with `backup-bot server add --team … --name … --host …`."
    return f"No server is granted to you. To use one, {await who_can_allow(actor.team_id)}."


async def servers_answer(actor: Actor, rest: str) -> Answer:
    """The answer to ``/backup servers``."""
    return await listing(actor)


ANSWERS = {"servers": servers_answer}


# -- buttons ------------------------------------------------------------------------------------------------------


@dataclass
class Probing:
    """What a refresh needs: the SSH pool holding the bot's key, the alert bus, the probe table."""

    pool: SSHPool
    alerts: AlertBus | None = None
    specs: list[ProbeSpec] | None = None


class _ProbingSource:
    """The bot's shared services when the app was given them; else its own pool with the bot's key, made at the
    first refresh (so ``register(app)`` alone works)."""

    def __init__(self, given: Any) -> None:
        self.given = given
        self.own = OwnSSH()

    async def get(self) -> Probing:
        if self.given is not None:
            return Probing(self.given.pool, getattr(self.given, "alerts", None), getattr(self.given, "specs", None))
        return Probing(await self.own.get())


async def _answer(respond: AsyncRespond, answer: Answer) -> None:
    """Replace the listing the button was in; where Slack (or its emulator) cannot, post the answer anew."""
    replaced = await respond(text=answer.text, blocks=answer.to_dicts(), replace_original=True)
    if getattr(replaced, "status_code", 200) != 200:
        await respond(text=answer.text, blocks=answer.to_dicts(), response_type="ephemeral",
                      replace_original=False)  # fmt: skip


async def _refused(respond: AsyncRespond, exc: Refused) -> None:
    mark = ":no_entry:" if isinstance(exc, Forbidden) else ":warning:"
    await respond(text=f"{mark} {exc.sentence}", response_type="ephemeral", replace_original=False)


def _server_id(body: dict) -> int | None:
    value = str((body.get("actions") or [{}])[0].get("value") or "")
    return int(value) if value.isdigit() and len(value) < 12 else None


async def _refresh(actor: Actor, server_id: int, respond: AsyncRespond, probing: _ProbingSource) -> None:
    """Check first (no SSH for anyone not allowed), say it is probing, probe, then show the listing again."""
    view = await servers.view_of(actor, server_id)
    await respond(text=f":hourglass_flowing_sand: Probing {view.name} ({view.address})…", response_type="ephemeral",
                  replace_original=False)  # fmt: skip
    services = await probing.get()
    try:
        done = await servers.refresh(actor, server_id, pool=services.pool, alerts=services.alerts,
                                     specs=services.specs)  # fmt: skip
    except TransportError as exc:  # a refresh records failures as the status; this is what escaped it
        raise Refused(f"{view.name} could not be probed: {exc}") from None
    mark = ":rotating_light:" if done.key_changed else (":white_check_mark:" if done.view.status == "ok" else ":x:")
    await _answer(respond, await listing(actor, f"{mark} {esc(done.sentence)}"))


def register(app: AsyncApp, services: Any = None) -> None:
    """Register *Refresh* and *Remove*. ``services``: the bot's shared SSH pool, alerts and probe table (an object
    with ``pool``, ``alerts``, ``specs`` such as the wizard's services); without it a refresh uses a pool of its own
    with the bot's key."""
    probing = _ProbingSource(services)

    @app.action(REFRESH)
    async def on_refresh(ack: AsyncAck, body: dict, client: AsyncWebClient, context: AsyncBoltContext,
                         respond: AsyncRespond) -> None:  # fmt: skip
        await ack()
        actor = await actor_of(context, client, body["user"]["id"])
        server_id = _server_id(body)
        try:
            if server_id is None:
                raise Refused("That button names no server; open `/backup servers` again.")
            await _refresh(actor, server_id, respond, probing)
        except Refused as exc:
            await _refused(respond, exc)

    @app.action(REMOVE)
    async def on_remove(ack: AsyncAck, body: dict, client: AsyncWebClient, context: AsyncBoltContext,
                        respond: AsyncRespond) -> None:  # fmt: skip
        await ack()
        actor = await actor_of(context, client, body["user"]["id"])
        server_id = _server_id(body)
        try:
            if server_id is None:
                raise Refused("That button names no server; open `/backup servers` again.")
            gone = await servers.remove(actor, server_id)
        except Refused as exc:
            await _refused(respond, exc)
            return
        note = f":wastebasket: Removed {esc(gone.name)} ({esc(gone.username)}@{esc(gone.host)}:{gone.port}) and its " \
               "stored database logins."
        await _answer(respond, await listing(actor, note))
