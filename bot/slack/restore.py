"""``/backup restore [chain]`` and the *Restore…* buttons: a short modal flow, resumable, validated per step.

chain → archive (external select, newest first, time and size; typing a date searches) → what (everything, chosen
paths browsed level by level with search and paging, or a database dump) → where (a server that can read the
repository, a new directory or database name; over existing data only for an admin who types the target's name) →
summary → a ``RESTORE`` run on the queue; progress and the checked result come in the chain's thread.

The flow's answers are kept after every step by :mod:`bot.services.restores` (``save_draft``), so a closed modal
reopens where it was (``/backup restore`` again, or any *Restore…* button of the same chain). Parsing and rendering
only: the service decides, checks and audits.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.access import Actor, Refused
from bot.mrkdwn import esc
from bot.services import restores
from bot.services.restores import RestoreRequest

RESTORE_OPEN = "restore_open"  # a button anywhere: value = chain id
VIEW = "restore_step"
ARCHIVE = "restore_archive"
OPEN_DIR, ADD_PATH, UP, PAGE, SEARCH, CLEAR = ("restore_dir", "restore_add", "restore_up", "restore_page",
                                             "restore_search", "restore_clear")  # fmt: skip
STEPS = ("chain", "archive", "what", "paths", "where", "summary")
PER_PAGE = 10


def _text(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}}


def _option(label: str, value: str) -> dict[str, Any]:
    return {"text": {"type": "plain_text", "text": label[:75] or "?"}, "value": value[:150]}


def _input(block_id: str, label: str, element: dict[str, Any], *, optional: bool = False,
           hint: str | None = None) -> dict[str, Any]:  # fmt: skip
    block = {"type": "input", "block_id": block_id, "label": {"type": "plain_text", "text": label},
             "element": element, "optional": optional}  # fmt: skip
    if hint:
        block["hint"] = {"type": "plain_text", "text": hint[:150]}
    return block


def modal(step: str, blocks: list[dict[str, Any]], *, submit: str | None = "Next") -> dict[str, Any]:
    view: dict[str, Any] = {"type": "modal", "callback_id": VIEW, "private_metadata": step,
                            "title": {"type": "plain_text", "text": "Restore"},
                            "close": {"type": "plain_text", "text": "Close"}, "blocks": blocks[:100]}  # fmt: skip
    if submit:
        view["submit"] = {"type": "plain_text", "text": submit}
    return view


def _human(n: int | None) -> str:
    if not n:
        return "size unknown"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


# --- the steps' views -----------------------------------------------------------------------------------------------


async def view_for(actor: Actor, draft: dict[str, Any], services: Any) -> dict[str, Any]:
    """The modal of the draft's current step."""
    step = draft.get("step") or "chain"
    if step == "chain":
        chains = await restores.restorable_chains(actor)
        if not chains:
            return modal("chain", [_text("There is no chain you may restore from.")], submit=None)
        options = [_option(c.name + (" (retired)" if c.status.value == "retired" else ""), str(c.id)) for c in chains]
        return modal("chain", [_input("chain", "Restore from which chain?",
                                      {"type": "static_select", "action_id": "chain", "options": options[:100]})])
    head = _text(f"Restore from *{esc(draft.get('chain_name', ''))}*"
                 + (f" · archive `{esc(draft['archive'])}`" if draft.get("archive") and step != "archive" else ""))
    if step == "archive":
        element = {"type": "external_select", "action_id": ARCHIVE, "min_query_length": 0,
                   "placeholder": {"type": "plain_text", "text": "Newest first; type a date (2026-03-01) to search"}}
        return modal("archive", [head, _input("archive", "Archive", element)])
    if step == "what":
        choices = [_option("Everything in the archive", "files"), _option("Chosen files and directories", "paths"),
                   _option("A database from a dump", "database")]  # fmt: skip
        return modal("what", [head, _input("what", "What to restore", {"type": "radio_buttons", "action_id": "what",
                                                                        "options": choices})])  # fmt: skip
    if step == "paths":
        return modal("paths", [head, *await _browse_blocks(actor, draft, services)])
    if step == "where":
        return modal("where", [head, *await _where_blocks(actor, draft, services)])
    return modal("summary", [head, _text(draft.get("summary", "")),
                             _text("A *Restore* run is queued; progress and the checked result come in the chain's "
                                   "thread.")], submit="Restore")  # fmt: skip


async def _browse_blocks(actor: Actor, draft: dict[str, Any], services: Any) -> list[dict[str, Any]]:
    level = await restores.browse(actor, int(draft["chain_id"]), draft["archive"], draft.get("dir", ""),
                                  services=services, search=draft.get("search", ""), page=int(draft.get("page", 1)),
                                  per_page=PER_PAGE)  # fmt: skip
    blocks: list[dict[str, Any]] = [
        {"type": "input", "block_id": "search", "dispatch_action": True, "optional": True,
         "label": {"type": "plain_text", "text": "Search names below this directory"},
         "element": {"type": "plain_text_input", "action_id": SEARCH, "initial_value": draft.get("search", "")}},
        _text(f"*/{esc(level.directory)}* — {level.total} item(s), page {level.page} of {level.pages}"),
    ]  # fmt: skip
    for entry in level.entries:
        icon = ":file_folder:" if entry.type == "d" else (":link:" if entry.type == "l" else ":page_facing_up:")
        button = ({"type": "button", "action_id": OPEN_DIR, "text": {"type": "plain_text", "text": "Open"},
                   "value": entry.path[:2000]} if entry.type == "d" else
                  {"type": "button", "action_id": ADD_PATH, "text": {"type": "plain_text", "text": "Add"},
                   "value": entry.path[:2000]})  # fmt: skip
        size = f" · {_human(entry.size)}" if entry.type == "-" else ""
        blocks.append({**_text(f"{icon} `{esc(entry.name)}`{size}"), "accessory": button})
    nav: list[dict[str, Any]] = []
    if level.directory:
        nav += [{"type": "button", "action_id": ADD_PATH, "value": level.directory,
                 "text": {"type": "plain_text", "text": "Add this directory"}},
                {"type": "button", "action_id": UP, "text": {"type": "plain_text", "text": "Up"}, "value": "up"}]
    for label, page in (("Previous", level.page - 1), ("Next", level.page + 1)):
        if 1 <= page <= level.pages and page != level.page:
            nav.append({"type": "button", "action_id": PAGE, "text": {"type": "plain_text", "text": label},
                        "value": str(page)})  # fmt: skip
    if nav:
        blocks.append({"type": "actions", "block_id": "browse_nav", "elements": nav})
    chosen = draft.get("paths") or []
    shown = ", ".join(f"`/{esc(p)}`" for p in chosen[:20]) or "nothing yet (Add files or directories)"
    blocks.append(_text(f"*Chosen:* {shown}"))
    if chosen:
        blocks.append({"type": "actions", "block_id": "browse_clear", "elements": [
            {"type": "button", "action_id": CLEAR, "text": {"type": "plain_text", "text": "Clear"}, "value": "x"}]})
    return blocks


async def _where_blocks(actor: Actor, draft: dict[str, Any], services: Any) -> list[dict[str, Any]]:
    chain = await restores.restorable(actor, int(draft["chain_id"]))
    servers = await restores.target_servers(actor, chain)
    options = [_option(t.name, t.name) for t in servers]
    if not options:
        return [_text("You may not use any server this chain can be restored to.")]
    blocks = [_input("server", "Restore on", {"type": "static_select", "action_id": "server", "options": options,
                                              "initial_option": options[0]})]  # fmt: skip
    if draft.get("what") == "database":
        dumps = restores.dumps_of(await restores.listing(chain, draft["archive"], services))
        if not dumps:
            return [_text("This archive holds no database dump: go back and restore files.")]
        dbs = [_option(name, name) for name in sorted(dumps)]
        blocks.append(_input("database", "Database", {"type": "static_select", "action_id": "database",
                                                      "options": dbs[:100], "initial_option": dbs[0]}))
        blocks.append(_input("target", "New database name", {"type": "plain_text_input", "action_id": "target"},
                             hint="A database that does not exist yet; the bot creates it."))
        if actor.is_admin and any(engine == "postgresql" for _, engine in dumps.values()):
            blocks.append(_input("roles", "Roles (admins)", {"type": "checkboxes", "action_id": "roles", "options": [
                _option("Restore the server's roles too", "yes")]}, optional=True,
                hint="Creates the roles of the same backup that the server lacks; existing roles stay as they are."))
    else:
        blocks.append(_input("target", "New directory", {"type": "plain_text_input", "action_id": "target"},
                             hint="Absolute, empty or new, e.g. /var/restore/2026-03-01; archive paths go below."))
    if actor.is_admin:
        blocks.append(_input("overwrite", "Over existing data (admins)", {"type": "checkboxes", "action_id":
                             "overwrite", "options": [_option("Restore over what is there", "yes")]}, optional=True))
        blocks.append(_input("confirm", "Type the target's name to confirm", {"type": "plain_text_input",
                                                                              "action_id": "confirm"}, optional=True))
    return blocks


# --- submissions --------------------------------------------------------------------------------------------------


def _values(view: dict[str, Any]) -> dict[str, Any]:
    """block id → the entered value (option value, text, or list of checked values)."""
    out: dict[str, Any] = {}
    for block_id, actions in (view.get("state") or {}).get("values", {}).items():
        for item in actions.values():
            if item.get("selected_option"):
                out[block_id] = item["selected_option"]["value"]
            elif "selected_options" in item:
                out[block_id] = [o["value"] for o in item["selected_options"] or []]
            elif item.get("value") is not None:
                out[block_id] = item["value"]
    return out


def request_of(draft: dict[str, Any]) -> RestoreRequest:
    what = "database" if draft.get("what") == "database" else "files"
    return RestoreRequest(chain=int(draft["chain_id"]), archive=draft["archive"], target=draft.get("target", ""),
                          what=what, paths=tuple("/" + p for p in draft.get("paths") or []),  # type: ignore[arg-type]
                          server=draft.get("server"), database=draft.get("database"),
                          overwrite=bool(draft.get("overwrite")), confirm=draft.get("confirm", ""),
                          globals=bool(draft.get("roles")))  # fmt: skip


async def advance(actor: Actor, draft: dict[str, Any], values: dict[str, Any], services: Any) -> dict[str, str]:
    """Take the current step's values into ``draft`` and move on; the errors to show (block id → sentence)."""
    step = draft.get("step") or "chain"
    try:
        if step == "chain":
            chain = await restores.restorable(actor, int(values.get("chain") or 0))
            draft.update(chain_id=chain.id, chain_name=chain.name, step="archive")
        elif step == "archive":
            draft.update(archive=values.get("archive"), step="what", dir="", page=1, search="", paths=[])
        elif step == "what":
            draft.update(what=values.get("what") or "files")
            draft["step"] = "paths" if draft["what"] == "paths" else "where"
        elif step == "paths":
            if not draft.get("paths"):
                return {"search": "Add at least one file or directory."}
            draft["step"] = "where"
        elif step == "where":
            draft.update(server=values.get("server"), target=(values.get("target") or "").strip(),
                         database=values.get("database"), overwrite=bool(values.get("overwrite")),
                         confirm=values.get("confirm") or "", roles=bool(values.get("roles")))  # fmt: skip
            chain, spec = await restores.prepare(actor, request_of(draft), services=services)
            draft.update(step="summary", summary=f"*Restore* {esc(spec.described())} from `{esc(spec.archive)}`"
                         + (" — *over existing data*" if spec.overwrite else "") + ".")  # fmt: skip
    except Refused as refused:
        return {_block_of(step, refused.sentence): refused.sentence[:150]}
    return {}


def _block_of(step: str, sentence: str) -> str:
    if step == "where":
        if "roles" in sentence.lower():
            return "roles"
        return "confirm" if "to confirm" in sentence or "Only admins" in sentence else "target"
    return {"chain": "chain", "archive": "archive", "what": "what", "paths": "search"}.get(step, "target")


# --- opening --------------------------------------------------------------------------------------------------------


async def open_flow(actor: Actor, client: AsyncWebClient, trigger_id: str, services: Any,
                    chain_ref: int | str | None) -> str | None:  # fmt: skip
    """Open the flow (resuming the actor's draft when it is for the same chain, or no chain was named); returns a
    refusal sentence instead when the chain cannot be restored by this actor."""
    draft = await restores.load_draft(actor) or {}
    if chain_ref not in (None, ""):
        try:
            chain = await restores.restorable(actor, chain_ref)  # type: ignore[arg-type]
        except Refused as refused:
            return refused.sentence
        if draft.get("chain_id") != chain.id:
            draft = {"chain_id": chain.id, "chain_name": chain.name, "step": "archive"}
    draft.setdefault("step", "chain")
    await restores.save_draft(actor, draft)
    try:
        view = await view_for(actor, draft, services)
    except Refused as refused:
        return refused.sentence
    await client.views_open(trigger_id=trigger_id, view=view)
    return None


async def open_from_command(controller: Any, client: AsyncWebClient, context: AsyncBoltContext,
                            command: dict) -> None:  # fmt: skip
    """``/backup restore [chain]`` (a WIZARD_WORDS entry of :mod:`bot.slack.commands`: it needs the trigger)."""
    from bot.slack.actors import actor_of

    words = (command.get("text") or "").split(maxsplit=1)
    actor = await actor_of(context, client, command["user_id"])
    services = getattr(controller, "services", None)
    named = words[1].strip() if len(words) > 1 else None
    refusal = await open_flow(actor, client, command["trigger_id"], services, named)
    if refusal:
        await client.chat_postEphemeral(channel=command["channel_id"], user=command["user_id"], text=refusal)


def register(app: AsyncApp, services: Any = None) -> None:
    """The *Restore…* buttons, the flow's modal, its browsing buttons and the archive picker's options."""
    from bot.slack.actors import actor_of

    @app.action(RESTORE_OPEN)
    async def restore_button(ack: AsyncAck, body: dict, client: AsyncWebClient, context: AsyncBoltContext) -> None:
        await ack()
        actor = await actor_of(context, client, body["user"]["id"])
        value = str(body["actions"][0].get("value") or "")
        refusal = await open_flow(actor, client, body["trigger_id"], services, int(value) if value.isdigit() else None)
        if refusal:
            channel = (body.get("channel") or {}).get("id")
            if channel:
                await client.chat_postEphemeral(channel=channel, user=actor.user_id, text=refusal)
            else:  # a click on the App Home: no channel to answer in, so a DM
                await client.chat_postMessage(channel=actor.user_id, text=refusal)

    @app.options(ARCHIVE)
    async def archive_options(ack: AsyncAck, body: dict, client: AsyncWebClient, context: AsyncBoltContext) -> None:
        actor = await actor_of(context, client, body["user"]["id"])
        draft = await restores.load_draft(actor) or {}
        try:
            chain = await restores.restorable(actor, int(draft.get("chain_id") or 0))
            found = await restores.archive_names(actor, chain, services)
        except Refused:
            await ack(options=[])
            return
        query = str(body.get("value") or "").strip().lower()
        matching = [a for a in found if not query or query in a.name.lower() or query in a.time.isoformat()][:100]
        sizes = await restores.archive_sizes(chain, [a.name for a in matching])
        await ack(options=[_option(f"{a.time:%Y-%m-%d %H:%M} UTC · {_human(sizes.get(a.name))} · {a.name}", a.name)
                           for a in matching])  # fmt: skip

    @app.view(VIEW)
    async def submitted(ack: AsyncAck, body: dict, view: dict, client: AsyncWebClient,
                        context: AsyncBoltContext) -> None:  # fmt: skip
        actor = await actor_of(context, client, body["user"]["id"])
        draft = await restores.load_draft(actor) or {}
        if draft.get("step") == "summary":
            try:
                asked = await restores.request_restore(actor, request_of(draft), services=services)
            except Refused as refused:  # something changed since the summary: say so, go back to "where"
                draft["step"] = "where"
                await restores.save_draft(actor, draft)
                await ack(response_action="update", view=modal("where", [_text(f":no_entry: {esc(refused.sentence)}"),
                          *await _where_blocks(actor, draft, services)]))  # fmt: skip
                return
            await restores.clear_draft(actor)
            await ack(response_action="update", view=modal("queued", [_text(asked.sentence)], submit=None))
            return
        errors = await advance(actor, draft, _values(view), services)
        if errors:
            await ack(response_action="errors", errors=errors)
            return
        await restores.save_draft(actor, draft)
        await ack(response_action="update", view=await view_for(actor, draft, services))

    async def browse_action(body: dict, client: AsyncWebClient, context: AsyncBoltContext, change: dict) -> None:
        actor = await actor_of(context, client, body["user"]["id"])
        draft = await restores.load_draft(actor) or {}
        draft.update(change(draft) if callable(change) else change)  # type: ignore[operator]
        await restores.save_draft(actor, draft)
        await client.views_update(view_id=body["view"]["id"], view=await view_for(actor, draft, services))

    def handler(action_id: str, change: Any) -> None:
        @app.action(action_id)
        async def clicked(ack: AsyncAck, body: dict, client: AsyncWebClient, context: AsyncBoltContext) -> None:
            await ack()
            value = body["actions"][0].get("value") or ""
            await browse_action(body, client, context, lambda d: change(d, value))

    handler(OPEN_DIR, lambda d, v: {"dir": v, "page": 1, "search": ""})
    handler(UP, lambda d, v: {"dir": "/".join(str(d.get("dir", "")).split("/")[:-1]), "page": 1, "search": ""})
    handler(PAGE, lambda d, v: {"page": int(v) if str(v).isdigit() else 1})
    handler(SEARCH, lambda d, v: {"search": str(v)[:100], "page": 1})
    handler(ADD_PATH, lambda d, v: {"paths": list(dict.fromkeys([*(d.get("paths") or []), str(v).strip("/")]))})
    handler(CLEAR, lambda d, v: {"paths": []})
