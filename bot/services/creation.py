"""Creating a backup chain: every row in one database transaction, after the actor's roles allowed every answer.

The remote side — the repository on the pool, the push keys — is set up before, by the wizard's validation (its
test backup needs it; :mod:`bot.flows.wizard.create`), and handed over as :attr:`NewChain.setup` with every secret
sealed. This writes the rows: Repository (passphrase, key export and push key encrypted at rest), BackupSource,
BackupChain (+ its source link), the template when asked, the Approval when the workspace requires one, the queued
Run for "run now", and the audit lines. Any failure rolls all of them back; the remote repository stays (the next
attempt reuses it) and the error says so. After the commit an approval request is announced (never for a
rolled-back chain) and the scheduler is told.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.access import Actor, Refused
from bot.access.audit import record
from bot.alerts import AlertBus
from bot.backup import plan as planning
from bot.backup.plan import reveal
from bot.runs import nudge
from bot.runs.maintenance import DEFAULT_CHECK
from bot.runs.queue import RunSpec, insert_rows
from bot.services import approvals, gate
from bot.services.templates import TemplateError, save_template
from storage.models import (
    Approval,
    BackupChain,
    BackupSource,
    BackupTemplate,
    BackupType,
    ChainStatus,
    Repository,
    Run,
    RunKind,
    SnapshotMethod,
)
from storage.orm import BaseORMException, IntegrityError, in_transaction
from storage.tenancy import Tenant

PRIORITIES = {"low": 2, "normal": 5, "high": 8}


class CreateError(Exception):
    """Creating failed; nothing was written to the database. ``field`` is the review field to show it on."""

    def __init__(self, message: str, field: str = "name") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True)
class NewChain:
    """What a chain is made of: the answers (the wizard's :class:`~bot.services.answers.SessionData` shape), the
    repository the validation set up (``setup``, secrets sealed), and where its reports go."""

    name: str
    answers: Mapping[str, Any]
    setup: Mapping[str, Any]
    session_id: str | None = None
    channel_id: str | None = None
    timezone: str = "UTC"
    save_as: str | None = None
    run_now: bool = False


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


def priority_of(schedule: Mapping[str, Any] | None) -> int:
    """Given the schedule answer's priority (a number 1–10, or low/normal/high), return the chain's 1–10."""
    value = (schedule or {}).get("priority", 5)
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return max(1, min(10, value))
    if isinstance(value, str) and value.strip().isdigit():
        return max(1, min(10, int(value.strip())))
    return PRIORITIES.get(str(value).lower(), 5)


def chain_name(name: Any) -> str:
    """Given a proposed chain name, return it trimmed, or raise CreateError when it is not one short line."""
    text = (name or "").strip() if isinstance(name, str) else ""
    if not text or len(text) > 100 or any(c in text for c in "\n\r\t\x00"):
        raise CreateError("Give the chain a name: one line of at most 100 characters.", "name")
    return text


async def check_chain_name(tenant: Tenant, name: Any) -> str:
    """Given a proposed chain name, return it trimmed, or raise CreateError (not one line, or taken)."""
    text = chain_name(name)
    if await tenant.query(BackupChain).filter(name=text).exists():
        raise CreateError(f"A backup chain named {text!r} already exists in this workspace: choose another name.")
    return text


def chain_schedule(schedule: Mapping[str, Any] | None, timezone: str,
                   current: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Given the schedule answer, return what the chain keeps: days, time, window, time zone, and the settings made
    elsewhere — its ``borg check`` and restore drill schedules (``current``: the chain's schedule now, whose other
    settings an edit keeps; a new chain gets the weekly check)."""
    answer = dict(schedule or {})
    when = ("days", "at", "window", "timezone")
    kept: dict[str, Any] = {k: v for k, v in (current or {}).items() if k not in when}  # `/backup check|drill`
    kept.update({k: answer[k] for k in ("days", "at", "window") if answer.get(k) is not None})
    kept["timezone"] = answer.get("timezone") or timezone
    if current is None:  # a new chain; an edit keeps the chain's check as it is, off included (no "check" key)
        kept["check"] = dict(DEFAULT_CHECK)
    return kept


def repository_values(answers: Mapping[str, Any], setup: Mapping[str, Any]) -> dict[str, Any]:
    """Given the answers and the repository validation set up (secrets sealed), return the Repository columns they
    decide: where it is, its secrets (unsealed for the encrypted columns), compression, retention and snapshot.
    Shared by creating a chain and by an edit that moves a chain to a new repository."""
    answer = answers.get("repository") or {}
    return {
        "name": setup["name"], "path": setup["path"],
        "encryption": answer.get("encryption") or setup["encryption"],
        "passphrase": reveal(setup["passphrase_token"]), "key_export": reveal(setup.get("key_export_token")),
        "client_key_public": setup.get("client_key_public"),
        "client_key_private": reveal(setup.get("client_key_private_token")),
        **repository_settings(answers),
    }  # fmt: skip


def repository_settings(answers: Mapping[str, Any]) -> dict[str, Any]:
    """Given the answers, return the Repository columns any of them may change in place: compression, retention
    and the snapshot method."""
    return {
        "compression": (answers.get("repository") or {}).get("compression") or "lz4",
        "retention": planning.retention_policy(answers.get("retention")) or {},
        "snapshot_method": SnapshotMethod((answers.get("snapshot") or {}).get("method") or "none"),
    }


def source_values(answers: Mapping[str, Any]) -> dict[str, Any]:
    """Given the answers, return the BackupSource columns they decide (besides its server and login rows)."""
    return {"type": BackupType(answers["backup_type"]), "config": dict(answers.get("source") or {})}


async def create_chain(actor: Actor, new: NewChain, *, alerts: AlertBus | None = None) -> Created:
    """Given the actor and a :class:`NewChain`, write the chain (module docstring) and return what was created.

    The answers are checked against the actor's roles first, whoever calls. Raises :class:`CreateError` (nothing
    written) or :class:`~bot.backup.plan.PlanProblem` (an answer must change)."""
    tenant, answers, setup = actor.tenant, new.answers, new.setup
    try:
        await gate.check_answers(actor, answers)
    except Refused as exc:
        raise CreateError(f"{exc.sentence} Nothing was created.", "name") from None
    name = chain_name(new.name)  # taken names: the unique index decides, inside the transaction (races too)
    server = await planning.load_server(tenant, answers.get("server_id"))
    pool = await planning.load_pool(tenant, answers.get("pool_id"), server)
    credential = await planning.credential_row(tenant, server, answers.get("credential_id"))
    fingerprint = (answers.get("validation") or {}).get("fingerprint") or ""
    approved = await approvals.approved_for(actor.team_id, new.session_id, fingerprint) if new.session_id else None
    pending = approved is None and await approvals.requires_approval(actor.team_id, actor.user_id)
    template_id = answers.get("template_id")
    if template_id is not None and not await tenant.query(BackupTemplate).filter(id=template_id).exists():
        template_id = None
    schedule = chain_schedule(answers.get("schedule"), new.timezone)
    try:
        async with in_transaction():
            repository = await tenant.create(Repository, pool=pool, **repository_values(answers, setup))
            source = await tenant.create(BackupSource, server=server, name=setup["name"], credential=credential,
                                         **source_values(answers))  # fmt: skip
            template = await save_template(actor, new.save_as, answers) if new.save_as else None
            chain = await tenant.create(
                BackupChain, name=name, repository=repository, schedule=schedule, timezone=schedule["timezone"],
                priority=priority_of(answers.get("schedule")),
                status=ChainStatus.PENDING_APPROVAL if pending else ChainStatus.ACTIVE,
                notify_channel=new.channel_id, created_by=actor.user_id,
                template_id=template.id if template else template_id,
            )  # fmt: skip
            await chain.sources.add(source)
            approval = await approvals.create_approval(chain, actor, channel_id=new.channel_id) if pending else None
            if approved is not None:
                await tenant.query(Approval).filter(id=approved.id).update(chain_id=chain.id)
            run = None
            if new.run_now and not pending:
                [run] = await insert_rows([RunSpec(team_id=actor.team_id, kind=RunKind.BACKUP, chain_id=chain.id,
                                                   repository_id=repository.id, priority=chain.priority,
                                                   requested_by=actor.user_id)])  # fmt: skip
            await _audit(actor, setup, pool.name, server.name, answers, repository, source, chain, run)
    except TemplateError as exc:
        raise CreateError(f"{exc} Nothing was created.", "template_name") from exc
    except IntegrityError as exc:
        raise CreateError(_integrity_sentence(exc, name) + kept_sentence(setup), "name") from exc
    except BaseORMException as exc:
        raise CreateError(f"The database refused the new rows ({type(exc).__name__}: {exc}); nothing was saved."
                          + kept_sentence(setup), "name") from exc  # fmt: skip
    if approval is not None:
        await approvals.announce(approval, chain, alerts)
    else:
        await nudge.schedule_changed(chain.id)  # committed: its first slot is planned now, not at the next resync
    if run is not None:
        nudge.nudge()
    runs = planning.next_runs_preview(answers.get("schedule"))
    return Created(chain, repository, source, template, approval, run, runs if isinstance(runs, list) else None)


async def _audit(actor: Actor, setup: Mapping[str, Any], pool: str, server: str, answers: Mapping[str, Any],
                 repository: Repository, source: BackupSource, chain: BackupChain, run: Run | None) -> None:
    """The audit lines of everything one creation wrote (inside its transaction: rolled back with it)."""
    action = "repository.create" if setup.get("created") else "repository.adopt"
    await record(actor, action, "repository", repository.id, name=repository.name, path=repository.path, pool=pool)
    await record(actor, "source.create", "source", source.id, server=server, type=answers["backup_type"])
    await record(actor, "chain.create", "chain", chain.id, name=chain.name, status=chain.status.value,
                 schedule=chain.schedule, template_id=chain.template_id)  # type: ignore[attr-defined]  # fmt: skip
    if run is not None:
        await record(actor, "run.request", "run", run.id, kind="backup", reason="run now from the wizard")


def kept_sentence(setup: Mapping[str, Any]) -> str:
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
