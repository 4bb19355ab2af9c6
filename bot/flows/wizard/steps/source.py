"""Step 3 — source: what to back up, one form per backup type, prefilled from what the server's probe found.

The forms live in ``source_files`` (files, system), ``source_db`` (MySQL/MariaDB, PostgreSQL, MongoDB) and
``source_docker``. Views read only the database and the cached capabilities (they are rendered inside Slack's
3-second acknowledgement); submitting checks on the server (paths measured, logins tested, mounts listed),
validates with the sources' own ``validate()`` and stores ``source`` as exactly the SourceConfig the engine
plans from. After an accepted submit the snapshot options of the source's paths are detected right away, so
step 4 can show them without waiting for the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from bot.access import Refused
from bot.flows.wizard.steps import snapshot, source_db, source_docker, source_files
from bot.flows.wizard.steps.base import BaseStep, Errors, StepView, WizardContext
from bot.flows.wizard.steps.source_common import SOURCE_KEYS, capabilities_of, current_server, forget
from bot.services import gate
from bot.services.answers import SNAPSHOT_TYPES

HEADINGS = {
    "files": "*Which files and folders?*",
    "system": "*The whole system* — what to include besides `/`",
    "mysql": "*Which MySQL/MariaDB databases, and how does the bot log in?*",
    "postgresql": "*Which PostgreSQL databases, and how does the bot log in?*",
    "mongodb": "*Which MongoDB databases, and how does the bot log in?*",
    "docker": "*Which Docker volumes and database containers?*",
}
VIEWS: dict[str, Any] = {
    "files": source_files.files_view, "system": source_files.system_view, "docker": source_docker.view,
    "mysql": source_db.view, "postgresql": source_db.view, "mongodb": source_db.view,
}  # fmt: skip
SUBMITS: dict[str, Any] = {
    "files": source_files.files_submit, "system": source_files.system_submit, "docker": source_docker.submit,
    "mysql": source_db.submit, "postgresql": source_db.submit, "mongodb": source_db.submit,
}  # fmt: skip
FIRST_FIELD = {"files": "paths", "system": "extra_filesystems", "docker": "volumes", "mysql": "databases",
               "postgresql": "databases", "mongodb": "databases"}  # where a refusal is shown inline
DETECT_LIMIT = 60.0  # seconds for the snapshot detection after an accepted source


class SourceStep(BaseStep):
    def __init__(self) -> None:
        super().__init__(name="source", title="Source", slow=True)

    async def view(self, ctx: WizardContext) -> StepView:
        kind = ctx.data.get("backup_type")
        server = await current_server(ctx)
        if kind not in VIEWS or server is None:
            return StepView(heading="Choose the server and the backup type first (go back).")
        part = await VIEWS[kind](ctx, server, capabilities_of(server))
        return StepView(heading=HEADINGS[kind], fields=part.fields, notes=part.notes, buttons=part.buttons)

    async def submit(self, ctx: WizardContext, values: Mapping[str, Any]) -> Errors:
        kind = ctx.data.get("backup_type")
        server = await current_server(ctx)
        if kind not in SUBMITS or server is None:
            return {"source": "Choose the server and the backup type first (go back)."}
        actor = await ctx.actor()
        try:
            await gate.check_kind(actor, server, kind)  # before the form's checks reach the server
        except Refused as exc:
            return {FIRST_FIELD.get(kind, "source"): exc.sentence}
        caps = capabilities_of(server)
        before = ctx.data.get("source")
        errors = await SUBMITS[kind](ctx, server, caps, values)
        if errors:
            return errors
        try:
            await gate.check_source(actor, server, kind, ctx.data.get("source") or {})
        except Refused as exc:
            return {FIRST_FIELD.get(kind, "source"): exc.sentence}
        if kind not in ("mysql", "postgresql", "mongodb"):
            forget(ctx.data, ("credential_id", "atomicity", "_source_found"))
        if kind != "system":
            ctx.data.pop("_source_mounts", None)
        if kind in SNAPSHOT_TYPES:
            try:
                await asyncio.wait_for(snapshot.refresh(ctx, server, caps), DETECT_LIMIT)
            except TimeoutError:
                ctx.data.pop("_snapshot_methods", None)  # step 4 offers to detect again
        if before is not None and before != ctx.data.get("source"):
            ctx.data.pop("snapshot", None)  # chosen for other paths: ask again
        return {}

    async def act(self, ctx: WizardContext, action: str, value: str) -> str | None:
        server = await current_server(ctx)
        if server is None or ctx.data.get("backup_type") not in ("mysql", "postgresql", "mongodb"):
            return None
        try:
            await gate.check_server(await ctx.actor(), server)
        except Refused as exc:
            return f":no_entry: {exc.sentence}"
        return await source_db.act(ctx, server, capabilities_of(server), action, value)


__all__ = ["SOURCE_KEYS", "SourceStep"]
