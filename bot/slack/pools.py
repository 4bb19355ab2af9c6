"""``/backup pools``: the workspace's storage pools, with *Add pool* / *Edit* / *Remove* for admins.

* ``/backup pools`` lists each pool the user may see (admins: all; others: the ones granted to them): its host or
  "this machine", path, free/total space, quota used, tier, repositories and when it was measured;
  ``/backup pools fast`` shows one tier.
* *Add pool* opens a modal; its values are checked at once (inline errors, ``response_action=errors``), then the
  pool is checked for real on its host (borg 1.4, a writable directory, free space) while the modal says
  "Checking…", and the modal shows the pool added, or the form again with the sentence that says what to fix.
* *Edit* changes name, quota, tier and alert threshold (inline errors); *Remove* asks for confirmation first, and
  is refused while repositories use the pool.

Parsing and rendering only; :mod:`bot.services.pools` decides and audits. A button is only a request: a member
pressing a forged admin button gets the service layer's refusal and nothing changes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    MarkdownTextObject,
    SectionBlock,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.access import Actor, Refused, authz
from bot.backup.plan import human
from bot.mrkdwn import esc
from bot.services import pools
from bot.slack.actors import actor_of
from bot.slack.listing import Answer
from bot.slack.own_ssh import OwnSSH

log = logging.getLogger(__name__)

ADD, EDIT, REMOVE = "pools_add", "pools_edit", "pools_remove"
ADD_VIEW, EDIT_VIEW = "pools_add_modal", "pools_edit_modal"
MAX_SHOWN = 20  # pools listed in one answer (two blocks each; Slack allows 50 per message)
ACK_SETTLE = 1.0  # seconds: Slack must have applied the "Checking…" ack before the result's views.update lands
_background: set[asyncio.Task] = set()


# -- the listing ------------------------------------------------------------------------------------------------


def numbers(view: pools.PoolView) -> str:
    """Given a pool, return "12.0 GiB free of 100.0 GiB · 3.0 GiB of 50.0 GiB quota (6 %)"."""
    space = f"{human(view.free_bytes)} free of {human(view.total_bytes)}" if view.free_bytes is not None \
        else "free space not measured yet"  # fmt: skip
    if view.quota_bytes:
        share = 100 * view.used_bytes / view.quota_bytes
        quota = f"{human(view.used_bytes)} of {human(view.quota_bytes)} quota ({share:.0f} %)"
    else:
        quota = f"{human(view.used_bytes)} used, no quota"
    return f"{space} · {quota}"


def _pool_text(view: pools.PoolView) -> str:
    when = f"measured {view.measured_at:%Y-%m-%d %H:%M} UTC" if view.measured_at else "never measured"
    repos = ", ".join(esc(r) for r in view.repositories[:15]) or "_none_"
    if len(view.repositories) > 15:
        repos += f" and {len(view.repositories) - 15} more"
    alert = f" :warning: above its {view.alert_threshold_pct} % threshold" if view.alert_active else ""
    error = f"\n:x: last measurement failed: {esc(view.measure_error[:200])}" if view.measure_error else ""
    return (f"*{esc(view.name)}* · {view.tier} · {esc(view.where)} `{esc(view.path)}`{alert}\n{numbers(view)}; "
            f"alert at {view.alert_threshold_pct} %\nRepositories: {repos} · _{when}_{error}")[:2900]  # fmt: skip


def _buttons(view: pools.PoolView) -> ActionsBlock:
    confirm = ConfirmObject(title="Remove this pool?", text=f"Remove {view.name[:100]} from the bot? Its files "
                            "on disk stay as they are.", confirm="Remove", deny="Keep it", style="danger")  # fmt: skip
    return ActionsBlock(block_id=f"pools_actions_{view.id}", elements=[
        ButtonElement(text="Edit", action_id=EDIT, value=str(view.id)),
        ButtonElement(text="Remove", action_id=REMOVE, value=str(view.id), style="danger", confirm=confirm),
    ])  # fmt: skip


async def pools_answer(actor: Actor, rest: str) -> Answer:
    """The answer to ``/backup pools [tier]``."""
    tier = rest.strip().lower() or None
    try:
        views = await pools.list_pools(actor, tier=tier)
    except Refused as exc:
        return _answer(f"{exc.sentence} `/backup pools` lists every pool, `/backup pools fast` one tier.")
    blocks: list[Block] = []
    head = f"*Storage pools{f' ({tier})' if tier else ''}*" if actor.is_admin else "*Storage pools you may use*"
    blocks.append(SectionBlock(text=MarkdownTextObject(text=head)))
    for view in views[:MAX_SHOWN]:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=_pool_text(view))))
        if actor.is_admin:
            blocks.append(_buttons(view))
    if len(views) > MAX_SHOWN:
        blocks.append(_context(f"{len(views) - MAX_SHOWN} more not shown: `backup-bot pool list` lists all."))
    if not views:
        blocks.append(_context(await _none_text(actor)))
    if actor.is_admin:
        blocks.append(ActionsBlock(block_id="pools_admin", elements=[
            ButtonElement(text="Add pool", action_id=ADD, value="add", style="primary")]))  # fmt: skip
    text = "Storage pools: " + (", ".join(v.name for v in views[:MAX_SHOWN]) or "none")
    return Answer(text[:3000], blocks)


async def _none_text(actor: Actor) -> str:
    if actor.is_admin:
        return ("No storage pool yet: press *Add pool* for a directory on this machine or on a host the bot reaches "
                "over SSH.")  # fmt: skip
    who = await authz.who_can_allow(actor.team_id)
    return f"No storage pool is granted to you yet: only admins add pools and grant them — {who}."


def _context(text: str) -> ContextBlock:
    return ContextBlock(elements=[MarkdownTextObject(text=text[:2900])])


def _answer(text: str) -> Answer:
    return Answer(text[:3000], [SectionBlock(text=MarkdownTextObject(text=text[:2900]))])


ANSWERS: dict[str, Callable[[Actor, str], Awaitable[Answer]]] = {"pools": pools_answer}


# -- modals -----------------------------------------------------------------------------------------------------


def _text_input(block: str, label: str, initial: Any = None, *, optional: bool = True, hint: str = "",
                placeholder: str = "") -> dict[str, Any]:  # fmt: skip
    element: dict[str, Any] = {"type": "plain_text_input", "action_id": "v"}
    if initial not in (None, ""):
        element["initial_value"] = str(initial)[:3000]
    if placeholder:
        element["placeholder"] = {"type": "plain_text", "text": placeholder[:150]}
    block_dict: dict[str, Any] = {"type": "input", "block_id": block, "optional": optional, "element": element,
                                  "label": {"type": "plain_text", "text": label[:2000]}}  # fmt: skip
    if hint:
        block_dict["hint"] = {"type": "plain_text", "text": hint[:2000]}
    return block_dict


def _tier_input(initial: str) -> dict[str, Any]:
    options = [{"text": {"type": "plain_text", "text": t}, "value": t} for t in pools.TIERS]
    chosen = next((o for o in options if o["value"] == initial), options[1])
    return {"type": "input", "block_id": "tier", "label": {"type": "plain_text", "text": "Tier"},
            "element": {"type": "static_select", "action_id": "v", "options": options, "initial_option": chosen}}


def _where_input(initial: str) -> dict[str, Any]:
    options = [{"text": {"type": "plain_text", "text": "This machine (the bot's own host)"}, "value": "local"},
               {"text": {"type": "plain_text", "text": "A host over SSH (below)"}, "value": "ssh"}]  # fmt: skip
    chosen = options[1] if initial == "ssh" else options[0]
    return {"type": "input", "block_id": "where", "label": {"type": "plain_text", "text": "Where"},
            "element": {"type": "radio_buttons", "action_id": "v", "options": options, "initial_option": chosen}}


def _modal(callback: str, title: str, blocks: list[dict[str, Any]], *, submit: str | None = None,
           meta: str = "") -> dict[str, Any]:  # fmt: skip
    view: dict[str, Any] = {"type": "modal", "callback_id": callback, "title": {"type": "plain_text", "text": title},
                            "close": {"type": "plain_text", "text": "Close"}, "blocks": blocks,
                            "private_metadata": meta}  # fmt: skip
    if submit:
        view["submit"] = {"type": "plain_text", "text": submit}
    return view


def _note(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}}


def add_view(values: Mapping[str, Any] | None = None, problem: str | None = None) -> dict[str, Any]:
    """The *Add pool* modal, with the values typed so far and the sentence of a failed check at the top."""
    v = dict(values or {})
    blocks = [_note(f":x: {esc(problem)}")] if problem else []
    blocks += [
        _text_input("name", "Name", v.get("name"), optional=False, placeholder="main"),
        _where_input(str(v.get("where") or "local")),
        _text_input("host", "SSH host", v.get("host"), placeholder="vault.example.com",
                    hint="Only for a host over SSH; the bot logs in with its own key."),
        _text_input("port", "SSH port", v.get("port") or "22"),
        _text_input("user", "Login user", v.get("user") or "root"),
        _text_input("fingerprint", "Host key fingerprint", v.get("fingerprint"), placeholder="SHA256:…",
                    hint="From the host itself: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub (not needed for a "
                         "server whose key is already confirmed)."),
        _text_input("path", "Directory", v.get("path"), optional=False, placeholder="/srv/borg",
                    hint="Created if missing; the login must be able to write in it."),
        _text_input("quota", "Quota", v.get("quota"), placeholder="500G, 2T … (empty: none)"),
        _tier_input(str(v.get("tier") or "standard")),
        _text_input("alert_at", "Alert when this full (%)", v.get("alert_at") or str(pools.DEFAULT_ALERT)),
    ]  # fmt: skip
    return _modal(ADD_VIEW, "Add a storage pool", blocks, submit="Add pool")


def edit_view(view: pools.PoolView) -> dict[str, Any]:
    """The *Edit* modal of one pool (its address and directory are fixed: a new place is a new pool)."""
    blocks = [
        _note(f"*{esc(view.name)}* on {esc(view.where)} `{esc(view.path)}`: {numbers(view)}."),
        _text_input("name", "Name", view.name, optional=False),
        _text_input("quota", "Quota", human_size(view.quota_bytes), placeholder="500G, 2T … (empty: none)"),
        _tier_input(view.tier),
        _text_input("alert_at", "Alert when this full (%)", str(view.alert_threshold_pct), optional=False),
    ]
    return _modal(EDIT_VIEW, "Edit storage pool", blocks, submit="Save", meta=json.dumps({"pool": view.id}))


def human_size(n: int | None) -> str:
    """A size as :func:`bot.services.pools.parse_size` reads it back exactly (``2T``, ``500G``, bytes)."""
    if not n:
        return ""
    for unit, power in (("P", 5), ("T", 4), ("G", 3), ("M", 2), ("K", 1)):
        if n % 1024**power == 0:
            return f"{n // 1024**power}{unit}"
    return str(n)


def done_view(title: str, text: str) -> dict[str, Any]:
    return _modal(ADD_VIEW + "_done", title, [_note(text)])


def values_of(view: Mapping[str, Any]) -> dict[str, str]:
    """``{block id: typed or chosen value}`` of a submitted pools modal."""
    found: dict[str, str] = {}
    for block_id, actions in ((view.get("state") or {}).get("values") or {}).items():
        element = actions.get("v") or {}
        option = element.get("selected_option")
        found[block_id] = str((option or {}).get("value") if option else element.get("value") or "").strip()
    return found


def new_pool(values: Mapping[str, str]) -> tuple[pools.NewPool | None, dict[str, str]]:
    """Given the *Add pool* form, return the pool to add, or errors keyed by the form's blocks."""
    ssh = values.get("where") == "ssh"
    errors: dict[str, str] = {}
    if ssh and not values.get("host"):
        errors["host"] = "Give the host's name or address, or choose This machine."
    checks = (("name", lambda: pools.validated(pools.NewPool(name=values.get("name", ""), path="/x"))),
              ("path", lambda: pools.validated(pools.NewPool(name="x", path=values.get("path", "")))),
              ("quota", lambda: pools.parse_size(values.get("quota"))),
              ("alert_at", lambda: pools.validated(pools.NewPool(name="x", path="/x",
                                                                 alert_at=values.get("alert_at") or "85"))))
    for block, check in checks:  # fmt: skip
        try:
            check()
        except Refused as exc:
            errors[block] = exc.sentence
    if errors:
        return None, errors
    new = pools.NewPool(name=values.get("name", ""), path=values.get("path", ""),
                        host=values.get("host") if ssh else None, port=values.get("port") or 22,  # type: ignore[arg-type]
                        user=values.get("user") or "root", fingerprint=values.get("fingerprint", "") if ssh else "",
                        quota_bytes=pools.parse_size(values.get("quota")), tier=values.get("tier") or "standard",
                        alert_at=values.get("alert_at") or pools.DEFAULT_ALERT)  # type: ignore[arg-type]  # fmt: skip
    try:
        return pools.validated(new), {}
    except Refused as exc:
        field = "port" if "port" in exc.sentence else "user" if "user name" in exc.sentence else "host"
        return None, {field if ssh else "name": exc.sentence}


# -- listeners ---------------------------------------------------------------------------------------------------


def _tools(services: Any) -> Callable[[], Awaitable[pools.PoolTools]]:
    """How an add reaches the pool: the running bot's services (SSH pool, borg, alerts) when given, else one SSH
    pool with the bot's identity for this registration (made at the first add)."""
    own = OwnSSH()

    async def make() -> pools.PoolTools:
        if services is not None:
            return pools.PoolTools(ssh=services.pool, borg=getattr(services, "borg", "borg"),
                                   alerts=getattr(services, "alerts", None))  # fmt: skip
        return pools.PoolTools(ssh=await own.get(), alerts=None)

    return make


async def _run_add(client: AsyncWebClient, actor: Actor, new: pools.NewPool, values: Mapping[str, str], view_id: str,
                   make_tools: Callable[[], Awaitable[pools.PoolTools]], own_pool: bool) -> None:  # fmt: skip
    """The slow half of *Add pool*: the real checks, then the result in the modal."""
    started = asyncio.get_running_loop().time()
    tools = None
    try:
        tools = await make_tools()
        view = await pools.add_pool(actor, new, tools)
        result = done_view("Pool added", f":white_check_mark: *{esc(view.name)}* added on {esc(view.where)} "
                           f"`{esc(view.path)}`: {numbers(view)}; tier {view.tier}, alert at "
                           f"{view.alert_threshold_pct} %. `/backup pools` lists it.")  # fmt: skip
    except Refused as exc:
        result = add_view(values, exc.sentence)
    except Exception:
        log.exception("adding a pool failed")
        result = add_view(values, "Something went wrong on the bot's side; nothing was stored. Try again.")
    finally:
        if own_pool and tools is not None and tools.ssh is not None:
            await tools.ssh.close()
    await asyncio.sleep(max(0.0, ACK_SETTLE - (asyncio.get_running_loop().time() - started)))
    await client.views_update(view_id=view_id, view=result)


def _spawn(coro: Awaitable[None]) -> None:
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


def register(app: AsyncApp, services: Any = None) -> None:
    """Register the buttons and modals of ``/backup pools``; ``services`` (the wizard's) lends its SSH pool."""
    make_tools = _tools(services)

    async def refuse(respond: AsyncRespond, sentence: str) -> None:
        await respond(text=f":no_entry: {sentence} Nothing was changed.", response_type="ephemeral",
                      replace_original=False)  # fmt: skip

    @app.action(ADD)
    async def on_add(ack: AsyncAck, body: dict, client: AsyncWebClient, context: AsyncBoltContext,
                     respond: AsyncRespond) -> None:  # fmt: skip
        await ack()
        actor = await actor_of(context, client, body["user"]["id"])
        try:
            await authz.require_admin(actor, "add storage pools")
        except Refused as exc:
            await refuse(respond, exc.sentence)
            return
        await client.views_open(trigger_id=body["trigger_id"], view=add_view())

    @app.view(ADD_VIEW)
    async def on_add_submit(ack: AsyncAck, body: dict, view: dict, client: AsyncWebClient,
                            context: AsyncBoltContext) -> None:  # fmt: skip
        values = values_of(view)
        new, errors = new_pool(values)
        if new is None:
            await ack(response_action="errors", errors={k: v[:150] for k, v in errors.items()})
            return
        actor = await actor_of(context, client, body["user"]["id"])
        where = "this machine" if new.host is None else f"{new.user}@{new.host}:{new.port}"
        await ack(response_action="update", view=done_view("Checking…", f":hourglass_flowing_sand: Checking "
                  f"{esc(where)}: borg, the directory `{esc(new.path)}` and its free space…"))  # fmt: skip
        _spawn(_run_add(client, actor, new, values, view["id"], make_tools, services is None))

    @app.action(EDIT)
    async def on_edit(ack: AsyncAck, body: dict, action: dict, client: AsyncWebClient, context: AsyncBoltContext,
                      respond: AsyncRespond) -> None:  # fmt: skip
        await ack()
        actor = await actor_of(context, client, body["user"]["id"])
        try:
            await authz.require_admin(actor, "change storage pools")
            view = await _pool_of(actor, action.get("value"))
        except Refused as exc:
            await refuse(respond, exc.sentence)
            return
        await client.views_open(trigger_id=body["trigger_id"], view=edit_view(view))

    @app.view(EDIT_VIEW)
    async def on_edit_submit(ack: AsyncAck, body: dict, view: dict, client: AsyncWebClient,
                             context: AsyncBoltContext) -> None:  # fmt: skip
        values = values_of(view)
        actor = await actor_of(context, client, body["user"]["id"])
        try:
            pool_id = json.loads(view.get("private_metadata") or "{}").get("pool")
            current = await _pool_of(actor, pool_id)
            quota = pools.parse_size(values.get("quota"))
        except Refused as exc:
            await ack(response_action="errors", errors={"quota" if "size" in exc.sentence else "name":
                                                        exc.sentence[:150]})  # fmt: skip
            return
        change = pools.PoolEdit(name=values.get("name", ""), quota_bytes=quota, tier=values.get("tier") or "standard",
                                alert_at=values.get("alert_at", ""))  # fmt: skip
        try:
            changed = await pools.edit_pool(actor, current.name, change)
        except Refused as exc:
            block = "alert_at" if "threshold" in exc.sentence else "tier" if "tier" in exc.sentence else "name"
            await ack(response_action="errors", errors={block: exc.sentence[:150]})
            return
        await ack(response_action="update", view=done_view("Pool saved", f":white_check_mark: *{esc(changed.name)}*: "
                  f"{numbers(changed)}; tier {changed.tier}, alert at {changed.alert_threshold_pct} %."))  # fmt: skip

    @app.action(REMOVE)
    async def on_remove(ack: AsyncAck, body: dict, action: dict, client: AsyncWebClient, context: AsyncBoltContext,
                        respond: AsyncRespond) -> None:  # fmt: skip
        await ack()
        actor = await actor_of(context, client, body["user"]["id"])
        try:
            await authz.require_admin(actor, "remove storage pools")
            view = await _pool_of(actor, action.get("value"))
            await pools.remove_pool(actor, view.name)
        except Refused as exc:
            await refuse(respond, exc.sentence)
            return
        listing = await pools_answer(actor, "")
        removed = _section(f":wastebasket: Removed *{esc(view.name)}* (its files on disk stay as they are).")
        await respond(text=f"Removed {view.name}.", blocks=[removed, *listing.to_dicts()], replace_original=True)


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}}


async def _pool_of(actor: Actor, value: object) -> pools.PoolView:
    """The pool a button names (by id), among those the actor may see."""
    text = str(value or "")
    for view in await pools.list_pools(actor):
        if str(view.id) == text:
            return view
    raise Refused("That storage pool no longer exists in this workspace: `/backup pools` lists the current ones.")
