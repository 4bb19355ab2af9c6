"""Creating what the wizard set up: the remote repository first, then all rows in one database transaction.

Order, and why:

1. **The remote repository** (:func:`ensure_remote_repository`): ``borg init`` (or adopting an existing one), the
   key export, the append-only push key on the pool and the push key on the source — all or nothing, by
   :func:`bot.backup.repository.set_up`. The validation step does this (its test backup needs the repository);
   what it produced is kept in the session data under ``setup``, every secret sealed::

       setup: {pool_id, name, mode, encryption, path, created: bool, base_path,
               passphrase_token, key_export_token | None, client_key_private_token | None,
               client_key_public | None, key_file | None, known_hosts_file | None, at}

   so the review step only writes rows. When the answers change afterwards (another pool or name), the old setup
   is undone (:func:`discard_setup`: push keys removed; a repository this wizard created — it only ever held the
   test archives, which the test backup removed — is deleted) and a new one made.
2. **Rows**, in one transaction: Repository (passphrase, key export and push key encrypted at rest), BackupSource,
   BackupChain (+ its source link), the template when asked, the Approval when the workspace requires one, the
   queued Run for "run now", and AuditLog lines. Any failure rolls all of them back; the remote repository stays
   (the next attempt reuses it) and the error says so.
3. After the commit, an approval request is announced on the alert bus (never for a rolled-back chain).
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.access import Refused
from bot.backup import plan as planning
from bot.backup.plan import PlanProblem, human, reveal
from bot.backup.repository import (
    NAME,
    RepositorySetup,
    RepositorySetupError,
    RepoSpec,
    repository_name,
    set_up,
    tear_down_access,
)
from bot.backup.retention import Policy, policy_summary
from bot.backup.schedule import summary as schedule_summary
from bot.borg import init as borg_init
from bot.borg import key as borg_key
from bot.borg import list as borg_list
from bot.borg.repo import Repo
from bot.borg.runner import BorgError
from bot.flows.wizard import access
from bot.flows.wizard.steps.base import WizardContext
from bot.flows.wizard.store import keep_data
from bot.flows.wizard.templates import TemplateError, save_template
from bot.runs import nudge
from bot.runs.maintenance import DEFAULT_CHECK
from bot.runs.queue import RunSpec, insert_rows
from bot.services import approvals
from bot.transport.base import Transport, TransportError
from storage.crypto import Secret
from storage.models import (
    Approval,
    AuditLog,
    BackupChain,
    BackupSource,
    BackupTemplate,
    BackupType,
    ChainStatus,
    PoolKind,
    Repository,
    Run,
    RunKind,
    Server,
    SnapshotMethod,
    StoragePool,
    WizardSession,
)
from storage.orm import BaseORMException, IntegrityError, in_transaction
from storage.tenancy import Tenant

SETUP_KEY = "setup"
log = logging.getLogger(__name__)
PRIORITIES = {"low": 2, "normal": 5, "high": 8}


class CreateError(Exception):
    """Creating failed; nothing was written to the database. ``field`` is the review field to show it on."""

    def __init__(self, message: str, field: str = "name") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


# --- descriptions (review summary, done screen) ------------------------------------------------------------------


def source_label(backup_type: str | None, source: Mapping[str, Any] | None) -> str:
    """The ``name`` part of the repository naming convention ``{server}-{type}-{name}``."""
    source = source or {}
    if backup_type == "files":
        paths = source.get("paths") or []
        first = str(paths[0]).rstrip("/").rsplit("/", 1)[-1] if paths else ""
        return first or "root"
    if backup_type in ("mysql", "postgresql", "mongodb"):
        databases = list(source.get("databases") or [])
        return databases[0] if len(databases) == 1 else ("all" if not databases else f"{len(databases)}-databases")
    if backup_type == "docker":
        volumes = list(source.get("volumes") or [])
        dbs = [d.get("container") for d in source.get("databases") or [] if isinstance(d, Mapping)]
        return (volumes or dbs or ["docker"])[0] or "docker"
    return ""


def proposed_name(server_name: str, backup_type: str | None, source: Mapping[str, Any] | None) -> str:
    """The conventional repository name (``{server}-{type}-{name}``), or "" when it cannot be made."""
    try:
        return repository_name(server_name, backup_type or "", source_label(backup_type, source))[:100].rstrip("-.")
    except RepositorySetupError:
        return ""


def describe_source(backup_type: str | None, source: Mapping[str, Any] | None) -> str:
    source = source or {}
    if backup_type == "files":
        paths = ", ".join(f"`{p}`" for p in source.get("paths") or [])
        excludes = len(source.get("excludes") or [])
        return f"files {paths}" + (f" ({excludes} exclude pattern(s))" if excludes else "")
    if backup_type == "system":
        extra = source.get("extra_filesystems") or []
        return "the full system (`/`)" + (f" plus {', '.join(extra)}" if extra else "")
    if backup_type in ("mysql", "postgresql", "mongodb"):
        databases = source.get("databases") or []
        label = {"mysql": "MySQL/MariaDB", "postgresql": "PostgreSQL", "mongodb": "MongoDB"}[backup_type]
        return f"{label}: " + (", ".join(f"`{d}`" for d in databases) if databases else "every database")
    if backup_type == "docker":
        volumes = source.get("volumes") or []
        dbs = [d.get("container") for d in source.get("databases") or [] if isinstance(d, Mapping)]
        parts = ([f"volumes {', '.join(volumes)}"] if volumes else []) + (
            [f"databases in {', '.join(dbs)}"] if dbs else []
        )
        return "Docker: " + ("; ".join(parts) or "nothing chosen")
    return str(backup_type)


def describe_retention(retention: Mapping[str, Any] | None) -> str:
    if not retention:
        return "not chosen"
    try:
        text = policy_summary(Policy(**{k: v for k, v in retention.items() if k in planning.POLICY_FIELDS}))
    except (TypeError, ValueError):
        text = "invalid"
    preset = retention.get("preset")
    return f"{text} (preset {preset})" if preset and preset != "custom" else text


def describe_schedule(schedule: Mapping[str, Any] | None) -> str:
    if not schedule:
        return "not chosen"
    return schedule_summary(schedule)


def priority_of(schedule: Mapping[str, Any] | None) -> int:
    value = (schedule or {}).get("priority", 5)
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return max(1, min(10, value))
    if isinstance(value, str) and value.strip().isdigit():
        return max(1, min(10, int(value.strip())))
    return PRIORITIES.get(str(value).lower(), 5)


# --- the remote repository ---------------------------------------------------------------------------------------


def setup_matches(data: Mapping[str, Any]) -> bool:
    """Does the stored ``setup`` belong to the current pool/repository answers?"""
    setup = data.get(SETUP_KEY)
    repository = data.get("repository") or {}
    if not isinstance(setup, Mapping):
        return False
    same = all(
        setup.get(key) == value
        for key, value in (
            ("pool_id", data.get("pool_id")),
            ("server_id", data.get("server_id")),
            ("name", repository.get("name")),
            ("mode", repository.get("mode")),
        )
    )
    if same and repository.get("mode") == "existing":
        same = setup.get("passphrase_token") == repository.get("passphrase_token")
    if same and repository.get("mode") == "new":
        same = setup.get("encryption") == (repository.get("encryption") or borg_init.DEFAULT_ENCRYPTION)
    return same


async def _set_up_local(transport: Transport, spec: RepoSpec, borg: str) -> RepositorySetup:
    """A repository in a ``local`` pool: init (or verify) and export the key; no push keys (same host)."""
    created = False
    try:
        if spec.existing_passphrase is not None:
            repo = Repo(url=spec.path, passphrase=spec.existing_passphrase)
            await borg_list.archives(transport, repo, borg=borg)
            passphrase = spec.existing_passphrase
        else:
            if (await transport.run(["test", "-e", spec.path])).ok:
                raise RepositorySetupError(f"{spec.path} already exists on the pool: choose another repository name.")
            passphrase = secrets.token_urlsafe(32)
            repo = Repo(url=spec.path, passphrase=passphrase)
            created = True
            await borg_init.run(transport, repo, spec.encryption, borg=borg)
        try:
            exported: str | None = await borg_key.export(transport, repo, borg=borg)
        except (BorgError, ValueError):
            exported = None
    except (BorgError, TransportError) as exc:
        if created:
            await transport.run(["rm", "-rf", "--", spec.path])
        hint = f" {exc.hint}" if isinstance(exc, BorgError) else ""
        raise RepositorySetupError(f"Setting up repository {spec.name} failed: {exc}{hint}") from exc
    return RepositorySetup(
        path=spec.path,
        passphrase=passphrase,
        key_export=exported,
        client_key_private="",
        client_key_public="",
        key_file="",
        known_hosts_file="",
        created=created,
    )


async def ensure_remote_repository(ctx: WizardContext) -> dict[str, Any]:
    """Create (or adopt) the repository on the pool and wire the source's push access, unless the session's
    ``setup`` already did it for these answers. Stores and returns ``data["setup"]``; raises PlanProblem."""
    data = ctx.data
    if setup_matches(data):
        return data[SETUP_KEY]
    tenant = Tenant(ctx.team_id)
    server = await planning.load_server(tenant, data.get("server_id"))
    pool = await planning.load_pool(tenant, data.get("pool_id"), server)
    repository = data.get("repository") or {}
    name, mode = repository.get("name") or "", repository.get("mode") or "new"
    if not NAME.match(name):
        raise PlanProblem("repository", f"{name!r} is not a valid repository name.")
    if data.get(SETUP_KEY):
        left = await discard_setup(ctx, data[SETUP_KEY])
        if left:
            log.warning("wizard %s: could not remove %s", ctx.session_id, "; ".join(left))
        data.pop(SETUP_KEY, None)
    passphrase = reveal(repository.get("passphrase_token")) if mode == "existing" else None
    if mode == "existing" and not passphrase:
        raise PlanProblem("repository", "The passphrase of the existing repository is missing: enter it again.")
    encryption = repository.get("encryption") or borg_init.DEFAULT_ENCRYPTION
    spec = RepoSpec(name=name, base_path=pool.base_path, encryption=encryption, existing_passphrase=passphrase)
    try:
        if pool.kind == PoolKind.LOCAL:
            result = await _set_up_local(planning.pool_transport(pool, ctx.services), spec, ctx.services.borg)
        else:
            result = await set_up(
                planning.source_transport(server, ctx.services), planning.pool_access(pool, ctx.services), spec
            )
    except RepositorySetupError as exc:
        raise PlanProblem("repository", str(exc)) from exc
    setup = {
        "server_id": server.id,
        "pool_id": pool.id,
        "name": name,
        "mode": mode,
        "encryption": encryption,
        "path": result.path,
        "base_path": pool.base_path,
        "created": result.created,
        "passphrase_token": Secret.seal(result.passphrase).token if mode == "new" else repository["passphrase_token"],
        "key_export_token": Secret.seal(result.key_export).token if result.key_export else None,
        "client_key_private_token": Secret.seal(result.client_key_private).token if result.client_key_private else None,
        "client_key_public": result.client_key_public or None,
        "key_file": result.key_file or None,
        "known_hosts_file": result.known_hosts_file or None,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    data[SETUP_KEY] = setup
    await keep_data(ctx)  # the repository exists now: its secrets must survive this step failing
    return setup


async def discard_setup(ctx: WizardContext, setup: Mapping[str, Any]) -> list[str]:
    """Undo a setup whose answers were changed: remove the push keys, and the repository when this wizard created
    it and no stored repository points at it. Best effort; returns what could not be removed."""
    tenant = Tenant(ctx.team_id)
    left: list[str] = []
    pool = await tenant.query(StoragePool).filter(id=setup.get("pool_id")).select_related("server").first()
    if pool is None:
        return [f"the repository {setup.get('path')} (its pool is gone)"]
    spec = RepoSpec(name=str(setup.get("name")), base_path=str(setup.get("base_path") or pool.base_path))
    transport = planning.pool_transport(pool, ctx.services)
    try:
        if pool.kind != PoolKind.LOCAL and setup.get("key_file"):
            server = await tenant.get_or_none(Server, id=setup.get("server_id"))
            if server is not None:
                await tear_down_access(
                    planning.source_transport(server, ctx.services), planning.pool_access(pool, ctx.services), spec
                )
        in_use = await tenant.query(Repository).filter(pool_id=pool.id, path=spec.path).exists()
        if setup.get("created") and not in_use:
            removed = await transport.run(["rm", "-rf", "--", spec.path])
            if not removed.ok:
                left.append(f"the repository {spec.path}: {removed.describe_failure()}")
    except TransportError as exc:
        left.append(f"the setup of {spec.path}: {exc}")
    return left


async def remote_exists(pool: StoragePool, path: str, services: Any) -> bool:
    """Is there a borg repository at ``path`` on the pool (its ``config`` file)?"""
    result = await planning.pool_transport(pool, services).run(["test", "-f", f"{path.rstrip('/')}/config"], timeout=30)
    return result.ok


# --- rows ---------------------------------------------------------------------------------------------------------


@dataclass
class Created:
    chain: BackupChain
    repository: Repository
    source: BackupSource
    template: BackupTemplate | None
    approval: Approval | None
    run: Run | None
    next_runs: list[datetime] | None

    @property
    def pending(self) -> bool:
        return self.chain.status == ChainStatus.PENDING_APPROVAL


async def session_channel(ctx: WizardContext) -> str | None:
    """The channel the wizard was started from (where reports go)."""
    try:
        key = uuid.UUID(str(ctx.session_id))
    except ValueError:
        return None
    row = await WizardSession.get_or_none(id=key, team_id=ctx.team_id)
    return row.channel_id if row else None


async def check_chain_name(tenant: Tenant, name: Any) -> str:
    text = (name or "").strip() if isinstance(name, str) else ""
    if not text or len(text) > 100 or any(c in text for c in "\n\r\t\x00"):
        raise CreateError("Give the chain a name: one line of at most 100 characters.", "name")
    if await tenant.query(BackupChain).filter(name=text).exists():
        raise CreateError(f"A backup chain named {text!r} already exists in this workspace: choose another name.")
    return text


async def create_chain(ctx: WizardContext, *, name: str, save_as: str | None = None, run_now: bool = False) -> Created:
    """Create the chain the session describes (see the module docstring); sets ``data["chain_id"]`` and
    ``data["_result"]``. The session's answers are checked against the actor's roles first, whoever calls. Raises
    :class:`CreateError` (nothing written, nothing set up) or PlanProblem (an answer must change)."""
    tenant = Tenant(ctx.team_id)
    data = ctx.data
    name = (name or "").strip()
    try:  # whoever calls this (the review step, an approval, a future API): the actor's roles decide first
        await access.check_answers(await ctx.actor(), data)
    except Refused as exc:
        raise CreateError(f"{exc.sentence} Nothing was created.", "name") from None
    setup = await ensure_remote_repository(ctx)
    server = await planning.load_server(tenant, data.get("server_id"))
    pool = await planning.load_pool(tenant, data.get("pool_id"), server)
    await _require_remote(ctx, pool, setup)
    credential = await planning.credential_row(tenant, server, data.get("credential_id"))
    repository_answer = data.get("repository") or {}
    schedule = dict(data.get("schedule") or {})
    timezone = schedule.get("timezone") or ctx.user_tz or "UTC"
    chain_schedule = {k: schedule[k] for k in ("days", "at", "window") if schedule.get(k) is not None}
    chain_schedule["timezone"] = timezone
    chain_schedule["check"] = dict(DEFAULT_CHECK)  # weekly borg check; `/backup check` changes it
    approved = await approvals.approved_for(ctx.team_id, ctx.session_id, (data.get("validation") or {}).get(
        "fingerprint") or "")  # these answers were approved before validation ran: the chain is active at once
    pending = approved is None and await approvals.requires_approval(ctx.team_id, ctx.user_id)
    channel = await session_channel(ctx)
    template_id = data.get("template_id")
    if template_id is not None and not await tenant.query(BackupTemplate).filter(id=template_id).exists():
        template_id = None
    user = ctx.user_id
    try:
        async with in_transaction():
            repository = await tenant.create(
                Repository,
                pool=pool,
                name=setup["name"],
                path=setup["path"],
                encryption=repository_answer.get("encryption") or setup["encryption"],
                compression=repository_answer.get("compression") or "lz4",
                passphrase=reveal(setup["passphrase_token"]),
                key_export=reveal(setup.get("key_export_token")),
                client_key_public=setup.get("client_key_public"),
                client_key_private=reveal(setup.get("client_key_private_token")),
                retention=planning.retention_policy(data.get("retention")) or {},
                snapshot_method=SnapshotMethod((data.get("snapshot") or {}).get("method") or "none"),
            )
            source = await tenant.create(
                BackupSource,
                server=server,
                name=setup["name"],
                type=BackupType(data["backup_type"]),
                config=dict(data.get("source") or {}),
                credential=credential,
            )
            template = await save_template(tenant, save_as, data, user) if save_as else None
            chain = await tenant.create(
                BackupChain,
                name=name,
                repository=repository,
                schedule=chain_schedule,
                timezone=timezone,
                priority=priority_of(schedule),
                status=ChainStatus.PENDING_APPROVAL if pending else ChainStatus.ACTIVE,
                notify_channel=channel,
                created_by=user,
                template_id=template.id if template else template_id,
            )
            await chain.sources.add(source)
            approval = await approvals.create_approval(chain, user, channel_id=channel) if pending else None
            if approved is not None:
                await tenant.query(Approval).filter(id=approved.id).update(chain_id=chain.id)
            run = None
            if run_now and not pending:
                [run] = await insert_rows([RunSpec(team_id=ctx.team_id, kind=RunKind.BACKUP, chain_id=chain.id,
                                                   repository_id=repository.id, priority=chain.priority,
                                                   requested_by=user)])  # fmt: skip
            audit = _audit_rows(setup, pool, server, data, repository, source, chain, run)
            for action, kind, object_id, details in audit:
                await AuditLog.create(
                    team_id=ctx.team_id,
                    actor=user,
                    action=action,
                    object_type=kind,
                    object_id=str(object_id),
                    details=details,
                )
    except TemplateError as exc:
        raise CreateError(f"{exc} Nothing was created.", "template_name") from exc
    except IntegrityError as exc:
        raise CreateError(_integrity_sentence(exc, name) + _kept(setup), "name") from exc
    except BaseORMException as exc:
        raise CreateError(
            f"The database refused the new rows ({type(exc).__name__}: {exc}); nothing was saved." + _kept(setup),
            "name",
        ) from exc
    if approval is not None:
        await approvals.announce(approval, chain, ctx.services.alerts)
    else:
        await nudge.schedule_changed(chain.id)  # committed: its first slot is planned now, not at the next resync
    if run is not None:
        nudge.nudge()
    runs = planning.next_runs_preview(schedule)
    created = Created(chain, repository, source, template, approval, run, runs if isinstance(runs, list) else None)
    data["chain_id"] = chain.id
    data["_result"] = result_text(created, data, pool.name)
    return created


async def _require_remote(ctx: WizardContext, pool: Any, setup: Mapping[str, Any]) -> None:
    """The repository validation created must still be on the pool (rows are written only for a real one)."""
    try:
        if not await remote_exists(pool, setup["path"], ctx.services):
            ctx.data.pop(SETUP_KEY, None)
            await keep_data(ctx)
            raise CreateError(
                f"The repository {setup['path']} is no longer on the pool; run the validation again to create it.",
                "name",
            )
    except TransportError as exc:
        raise CreateError(f"The pool could not be reached to check the repository: {exc}", "name") from exc


AuditRow = tuple[str, str, int, dict[str, Any]]


def _audit_rows(setup: Mapping[str, Any], pool: Any, server: Any, data: Mapping[str, Any], repository: Repository,
                source: BackupSource, chain: BackupChain, run: Run | None) -> list[AuditRow]:  # fmt: skip
    """(action, object type, id, details) of everything one creation wrote, for the AuditLog."""
    audit: list[AuditRow] = [
        (
            "repository.create" if setup.get("created") else "repository.adopt",
            "repository",
            repository.id,
            {"name": repository.name, "path": repository.path, "pool": pool.name},
        ),
        ("source.create", "source", source.id, {"server": server.name, "type": data["backup_type"]}),
        (
            "chain.create",
            "chain",
            chain.id,
            {
                "name": chain.name,
                "status": chain.status.value,
                "schedule": chain.schedule,
                "template_id": chain.template_id,
            },
        ),  # type: ignore[attr-defined]
    ]
    if run is not None:
        audit.append(("run.request", "run", run.id, {"kind": "backup", "reason": "run now from the wizard"}))
    return audit


def _kept(setup: Mapping[str, Any]) -> str:
    return f" The repository {setup.get('path')} on the pool is kept, so trying again reuses it."


def _integrity_sentence(exc: Exception, name: str) -> str:
    text = str(exc).lower()
    if "backup_chain" in text or "chain" in text:
        return (
            f"A backup chain named {name!r} already exists in this workspace (nothing was saved): choose another name."
        )
    if "repository" in text:
        return (
            "A repository with this name is already registered on this pool (nothing was saved): go back to the "
            "Repository step and choose another name."
        )
    return f"The database refused the new rows ({exc}); nothing was saved."


def result_text(created: Created, data: Mapping[str, Any], pool_name: str) -> str:
    """The done screen: what was created, the next runs, whether a backup was queued."""
    chain, repository = created.chain, created.repository
    status = "waiting for approval" if created.pending else "active"
    lines = [
        f":white_check_mark: *Backup chain `{chain.name}` created* ({status}).",
        f"• Repository `{repository.name}` on pool *{pool_name}* (`{repository.path}`), "
        f"{repository.encryption}, compression {repository.compression}",
        f"• Source: {describe_source(data.get('backup_type'), data.get('source'))}",
        f"• Retention: {describe_retention(data.get('retention'))}",
        f"• Schedule: {describe_schedule(data.get('schedule'))}",
    ]
    if created.next_runs:
        lines.append(f"• Next runs: {planning.format_runs(created.next_runs, chain.timezone)}")
    if created.template is not None:
        lines.append(f"• Saved as template *{created.template.name}* (`/backup new from:{created.template.name}`)")
    if created.pending:
        lines.append(
            ":hourglass_flowing_sand: This workspace requires approval: an approver has been asked. "
            "No backup runs until the chain is approved."
        )
    elif created.run is not None:
        lines.append(":arrow_forward: A backup was queued to run now; you will be told how it went.")
    else:
        lines.append("No backup was started now; the first one runs at the next scheduled time.")
    return "\n".join(lines)


__all__ = [
    "SETUP_KEY",
    "CreateError",
    "Created",
    "check_chain_name",
    "create_chain",
    "describe_retention",
    "describe_schedule",
    "describe_source",
    "discard_setup",
    "ensure_remote_repository",
    "human",
    "proposed_name",
    "remote_exists",
    "result_text",
    "setup_matches",
    "source_label",
]
