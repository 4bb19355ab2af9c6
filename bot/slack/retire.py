"""``/backup delete <chain>``: retire a chain (its repository kept, archives still restorable), or — admins only,
confirmed by typing the chain's name in a modal — delete its repository too. ``/backup delete template:<name>``
removes a template nothing uses.

The answer explains both choices and offers *Retire* (with Slack's confirmation dialog) and, to admins, *Delete the
repository too…*, which opens the modal. The modal's submission is checked at once (a wrong name is an inline
error), then the deletion runs while the modal says "Deleting…", and the modal shows what was removed.

Parsing and rendering only; :mod:`bot.services.retire` decides and audits: a forged button from someone not allowed
gets the service's refusal and nothing changes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.models.blocks import ActionsBlock, Block, ButtonElement, ConfirmObject
from slack_sdk.web.async_client import AsyncWebClient

from bot.access import Actor, Refused, authz
from bot.mrkdwn import esc
from bot.services import retire, templates
from bot.slack.actors import actor_of
from bot.slack.archives import ACCESS, refusal
from bot.slack.listing import Answer, _context, _section
from storage.models import BackupChain, ChainStatus, Repository

log = logging.getLogger(__name__)
RETIRE, DELETE_REPO = "chain_retire", "chain_delete_repository"
DELETE_VIEW = "chain_delete_repository_modal"
TYPED = "typed"
USAGE = ("Name the chain: `/backup delete <chain>` (`/backup list` shows them), or `/backup delete template:<name>` "
         "for a template.")  # fmt: skip
_background: set[asyncio.Task] = set()


def _explain(chain: BackupChain, repository: Repository) -> str:
    name, repo = esc(chain.name), esc(repository.name)
    if chain.status == ChainStatus.RETIRED:
        return (f"*{name}* is retired: it does not run, and its repository {repo} is kept, so its archives can "
                "still be listed and restored. An admin can delete the repository too — its archives are then lost "
                "for good.")  # fmt: skip
    return (f"*Delete {name}?*\n• *Retire* stops it for good (no more runs; queued ones are cancelled) and keeps its "
            f"repository {repo}: its archives stay listed (`/backup archives`) and restorable, and its name is free "
            "for a new chain.\n• *Delete the repository too* (admins only) also deletes the repository on the pool "
            "and the source's push key: every archive of the chain is lost for good.")  # fmt: skip


def _buttons(actor: Actor, chain: BackupChain) -> ActionsBlock | None:
    elements = []
    if chain.status != ChainStatus.RETIRED:
        confirm = ConfirmObject(title="Retire this chain?", text=f"{chain.name[:150]} stops for good; its repository "
                                "and archives are kept.", confirm="Retire", deny="Keep it", style="danger")  # fmt: skip
        elements.append(ButtonElement(text="Retire", action_id=RETIRE, value=str(chain.id), style="danger",
                                      confirm=confirm))  # fmt: skip
    if actor.is_admin:
        elements.append(ButtonElement(text="Delete the repository too…", action_id=DELETE_REPO, value=str(chain.id)))
    return ActionsBlock(block_id=f"chain_delete_{chain.id}", elements=elements) if elements else None


async def _template_answer(actor: Actor, name: str) -> Answer:
    try:
        removed = await templates.remove_template(actor, name)
    except Refused as exc:
        return refusal(exc)
    text = f":wastebasket: The template *{esc(removed.name)}* is removed; chains made from it are not changed."
    return Answer(text[:3000], [_section(text)])


async def delete_answer(actor: Actor, rest: str) -> Answer:
    """The answer to ``/backup delete <chain>`` (or ``template:<name>``)."""
    text = (rest or "").strip()
    if not text:
        return refusal(Refused(USAGE))
    if text.lower().startswith("template:") and not await actor.tenant.query(BackupChain).filter(name=text).exists():
        return await _template_answer(actor, text.split(":", 1)[1])
    try:
        chain = await retire.operable(actor, text, "chain.retire")
    except Refused as exc:
        return refusal(exc)
    repository = await actor.tenant.get(Repository, id=chain.repository_id)  # type: ignore[attr-defined]
    blocks: list[Block] = [_section(_explain(chain, repository))]
    buttons = _buttons(actor, chain)
    if buttons is not None:
        blocks.append(buttons)
    elif chain.status == ChainStatus.RETIRED:
        blocks.append(_context(f"Only admins delete repositories — {await authz.who_can_allow(actor.team_id)}."))
    return Answer(f"Delete {chain.name}?"[:3000], blocks)


ANSWERS: dict[str, Callable[[Actor, str], Awaitable[Answer]]] = {"delete": delete_answer}


# -- the confirmation modal -------------------------------------------------------------------------------------


def _modal(callback: str, title: str, blocks: list[dict[str, Any]], meta: Mapping[str, Any] | None = None,
           submit: str | None = None) -> dict[str, Any]:  # fmt: skip
    view: dict[str, Any] = {"type": "modal", "callback_id": callback, "title": {"type": "plain_text", "text": title},
                            "close": {"type": "plain_text", "text": "Close" if submit is None else "Cancel"},
                            "blocks": blocks, "private_metadata": json.dumps(dict(meta or {}))}  # fmt: skip
    if submit is not None:
        view["submit"] = {"type": "plain_text", "text": submit}
    return view


def _note(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}}


def delete_view(chain: BackupChain, repository: Repository) -> dict[str, Any]:
    """The modal asking an admin to type the chain's name before its repository is deleted."""
    name = retire.original_name(chain.name)
    warning = (f":warning: This deletes the repository *{esc(repository.name)}* (`{esc(repository.path)}`) on its "
               f"pool with every archive of *{esc(name)}*, removes the source's push key, and retires the chain. "
               "It cannot be undone.")  # fmt: skip
    field = {"type": "input", "block_id": TYPED, "label": {"type": "plain_text", "text": "Type the chain's name"},
             "hint": {"type": "plain_text", "text": f"Exactly: {name}"[:2000]},
             "element": {"type": "plain_text_input", "action_id": "v"}}  # fmt: skip
    return _modal(DELETE_VIEW, "Delete repository", [_note(warning), field], {"chain": chain.id}, "Delete")


def done_view(text: str) -> dict[str, Any]:
    return _modal(DELETE_VIEW + "_done", "Delete repository", [_note(text)])


def typed_of(view: Mapping[str, Any]) -> str:
    values = (view.get("state") or {}).get("values") or {}
    return str(((values.get(TYPED) or {}).get("v") or {}).get("value") or "").strip()


def chain_of_view(view: Mapping[str, Any]) -> int | None:
    try:
        chain = json.loads(view.get("private_metadata") or "{}").get("chain")
    except ValueError:
        return None
    return chain if isinstance(chain, int) else None


async def _run_delete(client: AsyncWebClient, actor: Actor, chain_id: int, typed: str, view_id: str) -> None:
    """The slow half: the deletion on the servers, then the result in the modal."""
    try:
        done = await retire.delete_repository(actor, chain_id, typed, services=await ACCESS.get())
        text = done.sentence
    except Refused as exc:
        text = f":no_entry: {esc(exc.sentence)}"
    except Exception:
        log.exception("deleting a repository failed")
        text = ":warning: Something went wrong on the bot's side; look at `/backup delete` again."
    await client.views_update(view_id=view_id, view=done_view(text))


def _spawn(coro: Awaitable[None]) -> None:
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


def _chain_id(action: Mapping[str, Any]) -> int:
    text = str(action.get("value") or "")
    if not text.isdigit():
        raise Refused("That backup chain no longer exists in this workspace.")
    return int(text)


def register(app: AsyncApp, services: Any = None) -> None:
    """Register *Retire*, *Delete the repository too…* and its modal; ``services`` lends the bot's SSH pool."""
    if services is not None:
        ACCESS.given = services

    async def refuse(respond: AsyncRespond, exc: Refused) -> None:
        answer = refusal(exc)
        await respond(text=answer.text, blocks=answer.to_dicts(), response_type="ephemeral", replace_original=False)

    @app.action(RETIRE)
    async def on_retire(ack: AsyncAck, body: dict, action: dict, client: AsyncWebClient, context: AsyncBoltContext,
                        respond: AsyncRespond) -> None:  # fmt: skip
        await ack()
        actor = await actor_of(context, client, body["user"]["id"])
        try:
            done = await retire.retire(actor, _chain_id(action))
        except Refused as exc:
            await refuse(respond, exc)
            return
        await respond(text=done.sentence[:3000], blocks=[_section(done.sentence).to_dict()], replace_original=True)

    @app.action(DELETE_REPO)
    async def on_delete(ack: AsyncAck, body: dict, action: dict, client: AsyncWebClient, context: AsyncBoltContext,
                        respond: AsyncRespond) -> None:  # fmt: skip
        await ack()
        actor = await actor_of(context, client, body["user"]["id"])
        try:
            await authz.require_admin(actor, "delete a chain's repository")
            chain = await retire.find_chain(actor, _chain_id(action))
        except Refused as exc:
            await refuse(respond, exc)
            return
        repository = await actor.tenant.get(Repository, id=chain.repository_id)  # type: ignore[attr-defined]
        await client.views_open(trigger_id=body["trigger_id"], view=delete_view(chain, repository))

    @app.view(DELETE_VIEW)
    async def on_submit(ack: AsyncAck, body: dict, view: dict, client: AsyncWebClient,
                        context: AsyncBoltContext) -> None:  # fmt: skip
        actor = await actor_of(context, client, body["user"]["id"])
        chain_id, typed = chain_of_view(view), typed_of(view)
        try:
            if chain_id is None:
                raise Refused("That backup chain no longer exists in this workspace.")
            await retire.check_delete(actor, chain_id, typed)
        except Refused as exc:
            await ack(response_action="errors", errors={TYPED: exc.sentence[:150]})
            return
        await ack(response_action="update", view=done_view(":hourglass_flowing_sand: Deleting: the push key, then "
                                                           "the repository on its pool…"))  # fmt: skip
        _spawn(_run_delete(client, actor, chain_id, typed, view["id"]))
