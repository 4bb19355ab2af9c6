"""Step 10 — review & create: a summary of every answer, "Save as template", "Run a backup now", Create.

Create (:func:`bot.flows.wizard.create.create_chain`) writes Repository + BackupSource + BackupChain (+ template,
approval, queued run, audit lines) in one database transaction, after the repository exists on the pool (the
validation step made it). A failure rolls back every row and is shown here; nothing is half-created. When the
workspace requires approval for this person the chain is saved ``pending_approval`` and the approvals layer is
asked to post the request. The done screen shows ``data["_result"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bot.access import Refused
from bot.backup import plan as planning
from bot.backup.plan import PlanProblem
from bot.flows.wizard import create as creating
from bot.flows.wizard import editing as editing_flow
from bot.flows.wizard.steps.base import BaseStep, Button, Errors, Field, Option, StepView, WizardContext
from bot.flows.wizard.steps.validation import GOTO_KEY, STEP_TITLES, fingerprint
from bot.mrkdwn import esc
from bot.services import approvals, gate
from bot.services.answers import SNAPSHOT_TYPES
from bot.services.templates import TemplateError, check_name
from storage.models import BackupChain, BackupTemplate, Server, StoragePool
from storage.tenancy import Tenant

SAVE_TEMPLATE, RUN_NOW = "save_template", "run_now"
CHANGE = "change"  # a button per step: action ids must differ within a block, so "change:<step>"
CHANGEABLE = ("server", "type", "source", "snapshot", "pool", "repository", "retention", "schedule")
SNAPSHOT_WORDS = {
    "none": "none — files that change during the backup may be captured inconsistently",
    "btrfs": "Btrfs snapshot",
    "lvm": "LVM snapshot",
    "zfs": "ZFS snapshot",
}


class ReviewStep(BaseStep):
    def __init__(self) -> None:
        super().__init__(name="review", title="Review & create", slow=True)

    async def _summary(self, ctx: WizardContext) -> list[str]:
        data = ctx.data
        tenant = Tenant(ctx.team_id)
        server = (
            await tenant.get_or_none(Server, id=data.get("server_id"))
            if isinstance(data.get("server_id"), int)
            else None
        )
        pool = (
            await tenant.query(StoragePool).filter(id=data.get("pool_id")).first()
            if isinstance(data.get("pool_id"), int)
            else None
        )
        repository = data.get("repository") or {}
        setup = data.get(creating.SETUP_KEY) or {}
        snapshot = (data.get("snapshot") or {}).get("method") or "none"
        path = setup.get("path") or (planning.repo_path(pool, repository.get("name", "")) if pool else "?")
        lines = [
            f"*Server:* {server.name + ' (' + server.host + ')' if server else 'missing'}",
            f"*Backup:* {creating.describe_source(data.get('backup_type'), data.get('source'))}",
            f"*Snapshot:* {SNAPSHOT_WORDS.get(snapshot, snapshot)}",
            f"*Storage pool:* {pool.name + ' (' + pool.tier.value + ')' if pool else 'missing'}",
            f"*Repository:* `{repository.get('name', '?')}` at `{path}` — "
            f"{'existing' if repository.get('mode') == 'existing' else 'new'}, "
            f"{repository.get('encryption') or 'repokey-blake2'}, compression {repository.get('compression') or 'lz4'}",
            f"*Retention:* {creating.describe_retention(data.get('retention'))}",
            f"*Schedule:* {creating.describe_schedule(data.get('schedule'))}",
        ]
        validation = data.get("validation") or {}
        runs = validation.get("next_runs") or []
        if runs:
            tz = (data.get("schedule") or {}).get("timezone")
            lines.append("*Next runs:* " + planning.format_runs([datetime.fromisoformat(r) for r in runs], tz))
        if validation.get("ok") and validation.get("fingerprint") == fingerprint(data) and validation.get("deferred"):
            lines.append(":hourglass: *Checked what can be checked before approval*; the repository and the test "
                         "backup are made once it is approved.")  # fmt: skip
        elif validation.get("ok") and validation.get("fingerprint") == fingerprint(data):
            lines.append(
                f":white_check_mark: *Validation passed* ({validation.get('at')}): test backup restored "
                "identical data and was removed again."
            )
        else:
            lines.append(":warning: *Validation has not passed with these answers*: go back to Validation.")
        return lines

    async def _edit_view(self, ctx: WizardContext) -> StepView:
        """Edit mode: the summary, what changes, a Change button per step, the name and the report settings."""
        lines = await editing_flow.difference_lines(ctx)
        changes = ("*Changes:*\n" + "\n".join(lines)) if lines else (
            "*No changes yet.* Use a *Change* button below (every answer is kept), or change the name and report "
            "settings here.")
        notify = ctx.data.get("notify") or {}
        steps = [s for s in CHANGEABLE if s != "snapshot" or ctx.data.get("backup_type") in SNAPSHOT_TYPES]
        return StepView(
            heading=f"*Change {esc(str(ctx.data['edit']['chain_name']))}* — its settings now; *Apply changes* "
                    "writes what you changed.",
            fields=(
                Field("name", "Chain name", "text", initial=ctx.data.get("chain_name"), hint="Unique in this "
                      "workspace."),
                Field("notify_channel", "Report channel", "conversation", optional=True,
                      initial=notify.get("channel"), hint="Where the chain's reports go. Empty: no channel reports."),
                Field("notices", "Notices", "checkboxes", optional=True,
                      initial=["success"] if notify.get("success", True) else [],
                      options=(Option("success", "Report successful backups too", "failures are always "
                                      "reported"),)),
            ),
            notes=(changes, "\n".join(await self._summary(ctx))),
            buttons=tuple(Button(f"{CHANGE}:{s}", f"Change: {STEP_TITLES[s]}", value=s) for s in steps),
            submit_label="Apply changes",
        )  # fmt: skip

    async def act(self, ctx: WizardContext, action: str, value: str) -> str | None:
        """Edit mode's *Change* buttons: back to that step (the controller jumps; every answer is kept)."""
        if action != f"{CHANGE}:{value}" or value not in STEP_TITLES or not ctx.data.get("edit"):
            return None
        ctx.data[GOTO_KEY] = value
        return f"Change *{STEP_TITLES[value]}*, then press Next through the steps after it back to the review."

    async def view(self, ctx: WizardContext) -> StepView:
        if ctx.data.get("edit"):
            return await self._edit_view(ctx)
        notes = ["\n".join(await self._summary(ctx))]
        if (ctx.data.get("validation") or {}).get("deferred"):
            notes.append(
                ":lock: This workspace requires approval: *Create* sends these answers to an approver. Nothing is set "
                "up on a server before it is approved; then the repository and the test backup are made and the "
                "chain is created, and you are told."
            )
        name = ctx.data.get("chain_name") or (ctx.data.get("repository") or {}).get("name")
        chosen = [o for o in (SAVE_TEMPLATE, RUN_NOW) if ctx.data.get(f"_{o}")]
        return StepView(
            heading="*Review & create* — check the summary; *Create* sets everything up.",
            fields=(
                Field("name", "Chain name", "text", initial=name, hint="Unique in this workspace."),
                Field(
                    "options",
                    "Options",
                    "checkboxes",
                    optional=True,
                    initial=chosen,
                    options=(
                        Option(SAVE_TEMPLATE, "Save as template", "reuse these answers with /backup new from:<name>"),
                        Option(RUN_NOW, "Run a backup now", "queue the first backup at once"),
                    ),
                ),
                Field(
                    "template_name",
                    "Template name",
                    "text",
                    optional=True,
                    hint="Only with “Save as template”. No server, pool or secret is saved in it.",
                ),
            ),
            notes=tuple(notes),
            submit_label="Create",
        )

    async def _ask_approval(self, ctx: WizardContext) -> Errors:
        """Answers that need an approver first: post them for approval and finish; nothing exists yet on a server
        or in the chain list. Once approved, :func:`bot.flows.wizard.approved.continue_after_approval` validates
        and creates the chain for the requester."""
        summary = "\n".join([f"*Chain:* {ctx.data['chain_name']}", *await self._summary(ctx)][:-1])
        approval = await approvals.request_for_answers(
            await ctx.actor(), ctx.session_id, fingerprint(ctx.data), summary,
            channel_id=await creating.session_channel(ctx), alerts=ctx.services.alerts)  # fmt: skip
        ctx.data["approval_id"] = approval.id
        ctx.data["_result"] = (
            f":hourglass: *{ctx.data['chain_name']}* is waiting for approval. Nothing was set up on any server yet: "
            "once an approver approves, the bot creates the repository, runs the test backup and creates the chain, "
            "and tells you here in a DM (and in the approval's thread)."
        )
        return {}

    async def submit(self, ctx: WizardContext, values: Mapping[str, Any]) -> Errors:
        if ctx.data.get("edit"):
            return await self._apply(ctx, values)
        tenant = Tenant(ctx.team_id)
        data = ctx.data
        if data.get("chain_id") and await tenant.query(BackupChain).filter(id=data["chain_id"]).exists():
            return {}  # already created (a double click): finish
        try:  # the rows are written with the actor's answers: checked once more against their roles
            await gate.check_answers(await ctx.actor(), data)
        except Refused as exc:
            return {"name": exc.sentence}
        validation = data.get("validation") or {}
        if not (validation.get("ok") and validation.get("fingerprint") == fingerprint(data)):
            return {"name": "Validation has not passed with these answers: go back to the Validation step and run it."}
        options = values.get("options") or []
        save = SAVE_TEMPLATE in options
        run_now = RUN_NOW in options
        data[f"_{SAVE_TEMPLATE}"], data[f"_{RUN_NOW}"] = save, run_now
        try:
            name = await creating.check_chain_name(tenant, values.get("name"))
        except creating.CreateError as exc:
            return {exc.field: exc.message}
        data["chain_name"] = name
        template_name = None
        if save:
            try:
                template_name = check_name(values.get("template_name"))
            except TemplateError as exc:
                return {"template_name": str(exc)}
            if await tenant.query(BackupTemplate).filter(name=template_name).exists():
                return {"template_name": f"A template named {template_name!r} already exists: choose another name."}
        data["_template_name"] = template_name
        if validation.get("deferred"):
            return await self._ask_approval(ctx)
        try:
            await creating.create_chain(ctx, name=name, save_as=template_name, run_now=run_now)
        except creating.CreateError as exc:
            return {exc.field: exc.message}
        except PlanProblem as exc:
            return {"name": f"{exc.message} Go back to the {STEP_TITLES.get(exc.step, exc.step)} step."}
        return {}

    async def _apply(self, ctx: WizardContext, values: Mapping[str, Any]) -> Errors:
        """Edit mode's *Apply changes*: validation must have passed for these answers; the service decides the rest."""
        validation = ctx.data.get("validation") or {}
        if not (validation.get("ok") and validation.get("fingerprint") == fingerprint(ctx.data)):
            return {"name": "Validation has not passed with these answers: go back to the Validation step and run it."}
        return await editing_flow.apply_edit(ctx, values, (await self._summary(ctx))[:-1])
