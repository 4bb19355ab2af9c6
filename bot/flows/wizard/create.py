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
2. **Rows**: the service layer's :func:`bot.services.creation.create_chain` writes them in one transaction (and
   checks the actor's roles again, whoever calls); the remote repository stays when that fails.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Mapping
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
from bot.flows.wizard.steps.base import WizardContext
from bot.flows.wizard.store import keep_data
from bot.services import creation, gate
from bot.services.creation import Created, CreateError, check_chain_name
from bot.transport.base import Transport, TransportError
from storage.crypto import Secret
from storage.models import PoolKind, Repository, Server, StoragePool, WizardSession
from storage.tenancy import Tenant

SETUP_KEY = "setup"
log = logging.getLogger(__name__)
PRIORITIES = {"low": 2, "normal": 5, "high": 8}


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
            repo = Repo(url=spec.path, passphrase=spec.existing_passphrase,
                        unencrypted=borg_init.is_unencrypted(spec.encryption))  # fmt: skip
            await borg_list.archives(transport, repo, borg=borg)
            passphrase = spec.existing_passphrase
        else:
            if (await transport.run(["test", "-e", spec.path])).ok:
                raise RepositorySetupError(f"{spec.path} already exists on the pool: choose another repository name.")
            passphrase = secrets.token_urlsafe(32)
            repo = Repo(url=spec.path, passphrase=passphrase, unencrypted=borg_init.is_unencrypted(spec.encryption))
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
            result = await _set_up_local(planning.pool_transport(pool, ctx.services), spec,
                                         planning.pool_borg(pool, ctx.services))  # fmt: skip
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
    it and no stored repository points at it. Best effort; returns what could not be removed. A chain's own
    repository (an edit's prefilled ``setup``, marked ``chain_repository_id``) is never touched: the chain uses it."""
    if setup.get("chain_repository_id") is not None:
        return []
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


# --- rows (the service layer writes them) --------------------------------------------------------------------


async def session_channel(ctx: WizardContext) -> str | None:
    """The channel the wizard was started from (where reports go)."""
    try:
        key = uuid.UUID(str(ctx.session_id))
    except ValueError:
        return None
    row = await WizardSession.get_or_none(id=key, team_id=ctx.team_id)
    return row.channel_id if row else None


async def create_chain(ctx: WizardContext, *, name: str, save_as: str | None = None, run_now: bool = False) -> Created:
    """Create the chain the session describes: the roles checked, the repository set up (or the one validation made
    checked), then :func:`bot.services.creation.create_chain` writes the rows. Sets ``data["chain_id"]`` and
    ``data["_result"]``. Raises :class:`CreateError` (nothing written) or PlanProblem (an answer must change)."""
    actor = await ctx.actor()
    try:  # before the repository is set up on the pool (the service checks again before writing)
        await gate.check_answers(actor, ctx.data)
    except Refused as exc:
        raise CreateError(f"{exc.sentence} Nothing was created.", "name") from None
    setup = await ensure_remote_repository(ctx)
    pool = await planning.load_pool(Tenant(ctx.team_id), ctx.data.get("pool_id"))
    await _require_remote(ctx, pool, setup)
    new = creation.NewChain(name=name, answers=ctx.data, setup=setup, session_id=ctx.session_id,
                            channel_id=await session_channel(ctx), timezone=ctx.user_tz or "UTC", save_as=save_as,
                            run_now=run_now)  # fmt: skip
    created = await creation.create_chain(actor, new, alerts=ctx.services.alerts)
    ctx.data["chain_id"] = created.chain.id
    ctx.data["_result"] = result_text(created, ctx.data, pool.name)
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
