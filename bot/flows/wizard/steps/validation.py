"""Step 9 — validation: every answer checked on the servers, the repository made real, a real test backup.

What the submit does, in order (each line of the result names the wizard step to go back to when it fails):

1. settings that need no server: source config, repository name/encryption/compression, retention (as borg prune
   would judge it), schedule (and the first runs, from ``bot.backup.schedule.next_runs`` when the runs layer is
   there — imported lazily, the preview is simply left out without it);
2. the server (exists, host key confirmed) and the pool (usable for this source, free space measured now against
   the projected size — see :mod:`bot.flows.wizard.steps.pool`);
3. the repository on the pool, for real: :func:`bot.flows.wizard.create.ensure_remote_repository` (``borg init``
   or adopting, key export, append-only push key). It is kept in ``data["setup"]`` (secrets sealed) so the review
   step only writes rows, and written to the session at once (a failing test backup must not lose it);
4. the plan: facts probed on the source (databases, login, …) and the jobs the source type plans
   (:mod:`bot.backup.plan`); the snapshot method asked whether it can freeze each path;
5. the engine's test backup (:func:`bot.backup.testbackup.run_test_backup`): connect, open the repository, push one
   sample per path and each dump's output, read one item back byte-identical, remove every test archive.

The result is stored as ``data["validation"] = {ok, steps: [{name, ok, detail, step}], at, fingerprint,
next_runs}``; ``fingerprint`` covers the answers it checked, so pressing Next again after a pass with unchanged
answers does not rerun the test backup. A failed check offers a button per step to fix: ``act("go_to", step)``
sets ``data["_goto"] = step`` (for a controller that can jump; see the note the button returns) — today the
person goes back with ← Back, and the note says where to stop.

Progress: when ``services.extra["on_progress"]`` is a callable, it is called with ``(session_id, text)`` after each
check and each test-backup step (the Slack layer may update the "working…" view with it).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from bot.access import Refused
from bot.backup import plan as planning
from bot.backup import snapshots, sources
from bot.backup.plan import PlanProblem
from bot.backup.repository import NAME
from bot.backup.testbackup import run_test_backup
from bot.borg import create as borg_create
from bot.borg.init import ENCRYPTIONS
from bot.flows.wizard import create as creating
from bot.flows.wizard.create import discard_setup
from bot.flows.wizard.steps.base import BaseStep, Button, Errors, StepView, WizardContext
from bot.flows.wizard.steps.pool import assess
from bot.flows.wizard.store import keep_data
from bot.probes.base import ProbeError
from bot.services import approvals, editing, gate
from bot.services.answers import approval_fingerprint, fingerprint
from bot.transport.base import TransportError
from storage.tenancy import Tenant

STEP_TITLES = {
    "server": "Server",
    "type": "Backup type",
    "source": "Source",
    "snapshot": "Snapshot",
    "pool": "Storage pool",
    "repository": "Repository",
    "retention": "Retention",
    "schedule": "Schedule",
}
GOTO_KEY = "_goto"


# The one table from a failure's kind (borg's, from its exit code or --log-json msgid, see
# bot.borg.runner.BORG_ERRORS; or the transport's) to the wizard step whose answer fixes it. A repository that
# differs from what the client saw before (security, exit 61-64) is the repository's business, never the source's.
KIND_STEPS: dict[str, str] = {
    "security": "repository", "repo_missing": "repository", "repo_exists": "repository",
    "passphrase": "repository", "not_allowed": "repository", "integrity": "repository",
    "archive_exists": "repository", "archive_missing": "repository", "lock": "repository", "phantom": "repository",
    "disk_full": "pool", "permission": "pool", "unreachable": "pool",
    "source": "source", "hook_failed": "source", "command_timeout": "source", "command": "source", "paths": "source",
    "snapshot": "snapshot",
}  # fmt: skip
# Kinds that name the machine the failing command ran on: the source server, or the pool.
SIDE_KINDS = frozenset({"borg_missing", "host_unreachable", "connect_timeout", "auth_failed", "host_key_changed",
                        "host_key_unpinned", "transport"})  # fmt: skip
POOL_SIDE_STEPS = ("open the repository on the pool", "clean up")


def step_for(test_step: str, detail: str, kind: str | None = None) -> str:
    """Given a failed test-backup step, its detail and its failure kind, return the wizard step to go back to:
    :data:`KIND_STEPS` when the kind says it, the side the command ran on for :data:`SIDE_KINDS`, else the step's
    own place, else what the message says (a borg without a specific exit code)."""
    if test_step == "connect to the source":
        return "server"
    if kind in KIND_STEPS:
        return KIND_STEPS[kind]
    if kind in SIDE_KINDS:
        return "pool" if test_step in POOL_SIDE_STEPS else "server"
    if test_step in POOL_SIDE_STEPS:
        return "repository"
    if test_step.startswith("read "):
        return "source"
    text = detail.lower()
    if "no space" in text or "quota" in text or "out of space" in text:
        return "pool"
    if any(w in text for w in ("passphrase", "restrict-to-path", "not allowed", "repository does not exist",
                               "repository access aborted", "previously located")):  # fmt: skip
        return "repository"
    if any(w in text for w in ("connection", "host key", "ssh", "unreachable", "could not resolve")):
        return "pool"
    return "source"


class _Checks:
    def __init__(self, ctx: WizardContext) -> None:
        self.items: list[dict[str, Any]] = []
        self.ctx = ctx
        progress = ctx.services.extra.get("on_progress") if getattr(ctx.services, "extra", None) else None
        self.progress: Callable[..., Any] | None = progress if callable(progress) else None

    async def add(self, name: str, ok: bool, detail: str, step: str) -> bool:
        self.items.append({"name": name, "ok": ok, "detail": detail.strip()[:500], "step": step})
        if self.progress is not None:
            result = self.progress(self.ctx.session_id, f"{'✓' if ok else '✗'} {name}")
            if inspect.isawaitable(result):
                await result
        return ok

    @property
    def ok(self) -> bool:
        return all(item["ok"] for item in self.items)

    def failed_steps(self) -> list[str]:
        return list(dict.fromkeys(i["step"] for i in self.items if not i["ok"]))


def _schedule_problem(schedule: Any) -> str | None:
    if not isinstance(schedule, Mapping):
        return "No schedule was chosen."
    if not schedule.get("days"):
        return "The schedule has no days."
    if not schedule.get("at") and not schedule.get("window"):
        return "The schedule has neither a time nor a backup window."
    return None


async def _settings(checks: _Checks, data: Mapping[str, Any]) -> list[str]:
    """Checks that need no server. Returns the preview of the next runs (ISO strings)."""
    backup_type = data.get("backup_type")
    problems = sources.validate(backup_type, data.get("source") or {}) if backup_type else ["No backup type chosen."]
    await checks.add("source settings", not problems, " ".join(problems) or describe(data), "source")
    repository = data.get("repository") or {}
    wrong = []
    if not NAME.match(repository.get("name") or ""):
        wrong.append(f"the name {repository.get('name')!r} is not valid")
    if (repository.get("encryption") or "repokey-blake2") not in ENCRYPTIONS:
        wrong.append(f"unknown encryption {repository.get('encryption')!r}")
    try:
        borg_create.compression(repository.get("compression") or "lz4")
    except ValueError as exc:
        wrong.append(str(exc))
    if repository.get("mode") == "existing" and not repository.get("passphrase_token"):
        wrong.append("the passphrase of the existing repository is missing")
    await checks.add(
        "repository settings",
        not wrong,
        "; ".join(wrong)
        or f"{repository.get('name')}, {repository.get('encryption')}, {repository.get('compression')}",
        "repository",
    )
    problem = planning.check_retention(data.get("retention"))
    await checks.add(
        "retention", problem is None, problem or creating.describe_retention(data.get("retention")), "retention"
    )
    schedule = data.get("schedule")
    problem = _schedule_problem(schedule)
    runs = planning.next_runs_preview(schedule) if problem is None else None
    if isinstance(runs, str):
        problem = runs
    detail = creating.describe_schedule(schedule)
    if isinstance(runs, list) and runs:
        detail += f"; first runs: {planning.format_runs(runs[:3], (schedule or {}).get('timezone'))}"
    await checks.add("schedule", problem is None, problem or detail, "schedule")
    return [r.isoformat() for r in runs] if isinstance(runs, list) else []


def describe(data: Mapping[str, Any]) -> str:
    return creating.describe_source(data.get("backup_type"), data.get("source"))


async def validate(ctx: WizardContext) -> dict[str, Any]:
    """Run every check (see the module docstring); stores and returns ``data["validation"]``."""
    data = ctx.data
    checks = _Checks(ctx)
    tenant = Tenant(ctx.team_id)
    next_runs = await _settings(checks, data)
    try:  # every answer within the actor's roles, before anything runs on a server
        await gate.check_answers(await ctx.actor(), data)
    except Refused as exc:
        await checks.add("permissions", False, exc.sentence, "server")
        return await _store(ctx, checks, next_runs)
    if data.get("edit"):
        try:
            if not await _edit_needs_servers(ctx, checks):
                return await _store(ctx, checks, next_runs)
        except Refused as exc:
            await checks.add("change of the chain", False, exc.sentence, "repository")
            return await _store(ctx, checks, next_runs)
    if await waits_for_approval(ctx):
        return await _deferred(ctx, checks, next_runs)
    server = pool = None
    try:
        server = await planning.load_server(tenant, data.get("server_id"))
        await checks.add(
            "server",
            True,
            f"{server.name} ({server.host}), host key {server.host_key_fingerprint or ''}".strip(),
            "server",
        )
    except PlanProblem as exc:
        await checks.add("server", False, exc.message, exc.step)
    if server is not None:
        try:
            pool = await planning.load_pool(tenant, data.get("pool_id"), server)
            await planning.pool_space(pool, ctx.services)
            state = await assess(pool, data, server, fresh=True)
            await checks.add("storage pool", state.verdict != "too_small", f"{pool.name}: {state.sentence}", "pool")
        except PlanProblem as exc:
            pool = None
            await checks.add("storage pool", False, exc.message, exc.step)
    if server is None or pool is None or not checks.ok:
        return await _store(ctx, checks, next_runs)
    try:
        setup = await creating.ensure_remote_repository(ctx)
    except PlanProblem as exc:
        await checks.add("repository on the pool", False, exc.message, exc.step)
        return await _store(ctx, checks, next_runs)
    what = "created" if setup.get("created") else "adopted"
    await checks.add(
        "repository on the pool", True, f"{what} {setup['path']}; push key installed (append-only)", "repository"
    )
    try:
        inputs = await planning.inputs_from_data(tenant, data, planning.reveal(setup["passphrase_token"]) or "")
        built = await planning.build_plan(inputs, ctx.services)
        jobs = "; ".join(job.description or job.suffix for job in built.jobs)
        await checks.add("plan", True, f"{len(built.jobs)} archive(s) per run: {jobs}", "source")
        if inputs.snapshot_method != "none":
            await _snapshot(checks, built, inputs.snapshot_method)
    except PlanProblem as exc:
        await checks.add("plan", False, exc.message, exc.step)
        return await _store(ctx, checks, next_runs)
    if not checks.ok:
        return await _store(ctx, checks, next_runs)

    pending: list[asyncio.Future[Any]] = []

    def on_step(step: Any) -> None:
        if checks.progress is not None:
            result = checks.progress(ctx.session_id, f"{'✓' if step.ok else '✗'} test backup: {step.name}")
            if inspect.isawaitable(result):
                pending.append(asyncio.ensure_future(result))

    started = datetime.now(UTC)
    own = setup.get("chain_repository_id") is not None  # an edit testing into the chain's live repository
    report = await run_test_backup(built.plan, time_limit=ctx.services.test_backup_limit, on_step=on_step,
                                   compact=not own)  # fmt: skip
    await asyncio.gather(*pending, return_exceptions=True)
    if own:
        await editing.record_test_backup(await ctx.actor(), data["edit"]["chain_id"], started, report.ok)
    for step in report.steps:
        checks.items.append(
            {
                "name": f"test backup: {step.name}",
                "ok": step.ok,
                "detail": step.detail.strip()[:500],
                "step": step_for(step.name, step.detail, step.kind),
            }
        )
    return await _store(ctx, checks, next_runs)


async def _edit_needs_servers(ctx: WizardContext, checks: _Checks) -> bool:
    """An edit: whether its changes need the servers (the source, the pool or the repository changed: the real test
    backup runs) — else the settings checks are all. Raises Refused for a change of where the archives live that
    is not allowed (:func:`bot.services.editing.check_relocation`)."""
    edit = ctx.data["edit"]
    changes = editing.difference(edit.get("before") or {}, editing.settings_of(ctx.data))
    if not editing.relocates(changes):
        await _own_setup(ctx)
    if not editing.needs_test_backup(changes):
        await checks.add("source, pool and repository", True, "unchanged: no server needs to be asked and no test "
                         "backup is needed", "source")  # fmt: skip
        return False
    await editing.check_relocation(await ctx.actor(), ctx.data)
    return True


async def _own_setup(ctx: WizardContext) -> None:
    """An edit that keeps the chain's repository uses it as it is: a new repository set up by an earlier pass (the
    person changed the pool or name, then changed it back) is undone, and the chain's own put back."""
    own, setup = ctx.data["edit"].get("setup"), ctx.data.get("setup")
    if not own or setup == own:
        return
    if setup:
        left = await discard_setup(ctx, setup)
        if left:
            creating.log.warning("wizard %s: could not remove %s", ctx.session_id, "; ".join(left))
    ctx.data["setup"] = dict(own)
    await keep_data(ctx)


async def _snapshot(checks: _Checks, built: planning.BuiltPlan, method: str) -> None:
    driver = snapshots.driver(method)  # type: ignore[arg-type]
    paths = [p for job in built.jobs if job.kind == "paths" for p in job.paths]
    if not paths:
        await checks.add(
            "snapshot",
            False,
            f"{method} snapshots apply to paths; this source has none: choose no snapshot.",
            "snapshot",
        )
        return
    for path in paths:
        try:
            verdict = await driver.applies(built.ctx, path)
        except (ProbeError, TransportError) as exc:
            await checks.add(f"snapshot of {path}", False, str(exc), "snapshot")
            continue
        await checks.add(f"snapshot of {path}", verdict.available, verdict.reason, "snapshot")


async def waits_for_approval(ctx: WizardContext) -> bool:
    """Whether this person's answers need an approver before anything is set up on a server (and these exact
    answers were not approved yet)."""
    if not await approvals.requires_approval(ctx.team_id, ctx.user_id):
        return False
    return await approvals.approved_for(ctx.team_id, ctx.session_id, approval_fingerprint(ctx.data)) is None


async def _deferred(ctx: WizardContext, checks: _Checks, next_runs: list[str]) -> dict[str, Any]:
    """Validation before approval: what the database can tell (server, pool); no server is contacted."""
    tenant = Tenant(ctx.team_id)
    try:
        server = await planning.load_server(tenant, ctx.data.get("server_id"))
        await checks.add("server", True, f"{server.name} ({server.host})", "server")
        pool = await planning.load_pool(tenant, ctx.data.get("pool_id"), server)
        await checks.add("storage pool", True, pool.name, "pool")
    except PlanProblem as exc:
        await checks.add(exc.step, False, exc.message, exc.step)
        return await _store(ctx, checks, next_runs)
    await checks.add("repository and test backup", True, "after approval: the repository, its push key and a test "
                     "backup are made only once an approver approved these answers", "repository")  # fmt: skip
    return await _store(ctx, checks, next_runs, deferred=True)


async def _store(ctx: WizardContext, checks: _Checks, next_runs: list[str], *,
                 deferred: bool = False) -> dict[str, Any]:  # fmt: skip
    result = {
        "ok": checks.ok,
        "steps": checks.items,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "fingerprint": fingerprint(ctx.data),
        "next_runs": next_runs,
        "deferred": deferred,  # passed what can be checked before approval; the rest runs once approved
    }
    ctx.data["validation"] = result
    await keep_data(ctx)
    return result


def _passed_note(data: Mapping[str, Any], result: Mapping[str, Any]) -> str:
    """The first line of a passed validation: what happens on the next step."""
    if result.get("deferred"):
        return (":hourglass: *Ready to ask for approval.* Nothing was set up on a server: once an approver approves on "
                "the next step, the bot " + ("validates the change and applies it" if data.get("edit") else
                                             "creates the repository and runs the test backup") + ", and tells you.")
    if data.get("edit"):
        return (":white_check_mark: *Everything works.* Nothing about the chain changes until you apply the changes "
                "on the next step.")  # fmt: skip
    return (":white_check_mark: *Everything works.* The repository exists on the pool; nothing is scheduled until you "
            "create the chain on the next step.")  # fmt: skip


def _is_unchanged_edit(data: Mapping[str, Any]) -> bool:
    """An edit whose answers are still the chain's settings (its prefilled pass stands)."""
    edit = data.get("edit") or {}
    previous = data.get("validation") or {}
    return (editing.settings_of(data) == edit.get("before") and previous.get("ok")
            and previous.get("fingerprint") == fingerprint(data))  # fmt: skip


class ValidationStep(BaseStep):
    def __init__(self) -> None:
        super().__init__(name="validation", title="Validation", slow=True)

    async def on_cancel(self, ctx: WizardContext) -> list[str]:
        """A cancelled or expired wizard must not leave the repository and keys it created for the test."""
        setup = ctx.data.get("setup")
        if not setup or ctx.data.get("chain_id"):
            return []
        return await discard_setup(ctx, setup)

    async def view(self, ctx: WizardContext) -> StepView:
        result = ctx.data.get("validation")
        current = isinstance(result, Mapping) and result.get("fingerprint") == fingerprint(ctx.data)
        heading = (
            "*Validation* — the bot checks every answer on the servers, creates the repository on the pool "
            "and runs a small real test backup (one sample file per path, each dump), then removes it."
        )
        if not current:
            note = "Press *Run the test backup* to start; it takes up to a minute."
            if isinstance(result, Mapping):
                note = "Answers changed since the last validation: run it again. " + note
            return StepView(heading=heading, notes=(note,), submit_label="Run the test backup")
        lines = [f"{':white_check_mark:' if i['ok'] else ':x:'} *{i['name']}* — {i['detail']}" for i in result["steps"]]
        notes = list(planning.paragraphs(lines))
        runs = result.get("next_runs") or []
        if runs:
            tz = (ctx.data.get("schedule") or {}).get("timezone")
            notes.append("*First runs:* " + planning.format_runs([datetime.fromisoformat(r) for r in runs], tz))
        buttons: tuple[Button, ...] = ()
        if not result["ok"]:
            failed = list(dict.fromkeys(i["step"] for i in result["steps"] if not i["ok"]))
            notes.append(
                "Fix "
                + " and ".join(f"*{STEP_TITLES.get(s, s)}*" for s in failed)
                + " (← Back keeps every answer), then run the validation again."
            )
            buttons = tuple(Button("go_to", f"Fix: {STEP_TITLES.get(s, s)}", value=s) for s in failed[:5])
            return StepView(heading=heading, notes=tuple(notes), buttons=buttons, submit_label="Run again")
        notes.insert(0, _passed_note(ctx.data, result))
        return StepView(heading=heading, notes=tuple(notes), submit_label="Next")

    async def submit(self, ctx: WizardContext, values: Mapping[str, Any]) -> Errors:
        if ctx.data.get("edit") and _is_unchanged_edit(ctx.data):
            return {}  # an edit's current settings: nothing to validate
        try:  # also when an earlier pass is re-used: a grant may have been withdrawn since
            await gate.check_answers(await ctx.actor(), ctx.data)
        except Refused as exc:
            return {"validation": exc.sentence}
        previous = ctx.data.get("validation")
        if (
            isinstance(previous, Mapping)
            and previous.get("ok")
            and previous.get("fingerprint") == fingerprint(ctx.data)
            and (creating.setup_matches(ctx.data) or (previous.get("deferred") and await waits_for_approval(ctx)))
        ):
            return {}
        result = await validate(ctx)
        if result["ok"]:
            return {}
        failed = [i for i in result["steps"] if not i["ok"]]
        first = failed[0]
        more = f" ({len(failed) - 1} more below)" if len(failed) > 1 else ""
        return {
            "validation": f"{first['name']}: {first['detail']}"[:240]
            + more
            + f" — fix it in the {STEP_TITLES.get(first['step'], first['step'])} step."
        }

    async def act(self, ctx: WizardContext, action: str, value: str) -> str | None:
        if action != "go_to" or value not in STEP_TITLES:
            return None
        ctx.data[GOTO_KEY] = value
        return (
            f"Go back to *{STEP_TITLES[value]}*: press ← Back until you are there (every answer is kept), fix it, "
            "and come forward again; the validation runs again with the new answers."
        )
