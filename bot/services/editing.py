"""Changing a chain (``/backup edit``): its settings as wizard answers, and applying changed answers.

:func:`prefill` turns a chain's rows into the wizard's answers (:class:`~bot.services.answers.SessionData`): server,
type, source, login, snapshot, pool, the existing repository (its passphrase and keys only as sealed tokens), retention,
schedule, report channel and success notices — plus ``edit`` (which chain, its settings as opened) and ``setup``
(the chain's repository as validation would have set it up, marked as the chain's own so nothing ever discards it).

:func:`apply` decides, for every surface: the actor may operate the chain (its creator, its servers' operators,
admins), every new answer is within their roles (:func:`bot.services.gate.check_answers`), nobody changed the chain
since the wizard was opened, an approval is asked for when the workspace requires one (the chain keeps its old
settings until an approver approved exactly these answers), then the chain, its source and its repository are
written in one transaction with one ``chain.edit`` audit row holding the difference (before/after), and the
scheduler is told at once.

Server, backup type, pool and repository (name, encryption) decide where the archives live. They may change only
while the chain has no archives, and then only to a *new* repository name (a different path on the pool and a
different push-key directory on the source, so setting it up never touches the access the chain uses until the
change is applied). The chain's Repository row is then pointed at the new repository in place (its history kept);
a chain with archives keeps them where they are — create another chain instead (`/backup new`), or retire it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.access import Actor, Refused
from bot.access.audit import record
from bot.alerts import AlertBus
from bot.backup import plan as planning
from bot.backup import sources
from bot.backup.repository import KEY_DIR
from bot.mrkdwn import esc
from bot.runs.nudge import schedule_changed
from bot.services import approvals, gate
from bot.services.answers import approval_fingerprint, fingerprint
from bot.services.chains import operated_chain
from bot.services.creation import (
    CreateError,
    chain_name,
    chain_schedule,
    priority_of,
    repository_settings,
    repository_values,
)
from storage.models import (
    Approval,
    BackupChain,
    BackupSource,
    ChainStatus,
    Integrity,
    Repository,
    Run,
    RunKind,
    RunStatus,
    VerifiedArchive,
)
from storage.orm import IntegrityError, in_transaction
from storage.tenancy import Tenant

ACTION = "chain.edit"
RELOCATING = ("server_id", "backup_type", "pool_id", "repository")
"""Settings that decide where the archives live: changed only while the chain has none, to a new repository."""
TESTED = ("server_id", "backup_type", "source", "credential_id", "snapshot", "pool_id", "repository")
"""Settings whose change needs validation's real test backup (the others are checked without a server)."""


@dataclass(frozen=True)
class Current:
    """A chain as stored: the chain, its one source and its repository (with its pool)."""

    chain: BackupChain
    source: BackupSource
    repository: Repository


@dataclass(frozen=True)
class Edited:
    """The outcome of :func:`apply`: the difference (``{setting: {"before", "after"}}``), the approval asked for
    when one is needed (nothing changed yet), and one sentence for the person."""

    chain: BackupChain
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    approval: Approval | None = None
    sentence: str = ""

    @property
    def pending(self) -> bool:
        return self.approval is not None


# -- the chain as answers ------------------------------------------------------------------------------------------


async def current_of(tenant: Tenant, chain: BackupChain) -> Current:
    """Given a chain, return its rows; refused when it is not one the wizard can edit (retired, several sources)."""
    if chain.status == ChainStatus.RETIRED:
        raise Refused(f"{chain.name} is retired: its settings cannot be changed (its archives stay restorable with "
                      "`/backup restore`).")  # fmt: skip
    sources = await tenant.query(BackupSource).filter(chains__id=chain.id).order_by("id")
    if len(sources) != 1:
        raise Refused(f"{chain.name} has {len(sources)} sources; the wizard edits chains with exactly one source.")
    repository = await tenant.query(Repository).filter(id=chain.repository_id).select_related("pool").get()  # type: ignore[attr-defined]
    return Current(chain, sources[0], repository)


def answers_of(current: Current) -> dict[str, Any]:
    """Given a chain's rows, return the wizard answers that describe them (secrets as sealed tokens only)."""
    chain, source, repository = current.chain, current.source, current.repository
    schedule = chain.schedule or {}
    passphrase = repository.passphrase.token if repository.passphrase else None
    return {
        "server_id": source.server_id,  # type: ignore[attr-defined]
        "backup_type": source.type.value,
        "source": _source_config(source),
        "credential_id": source.credential_id,  # type: ignore[attr-defined]
        "snapshot": {"method": repository.snapshot_method.value},
        "pool_id": repository.pool_id,  # type: ignore[attr-defined]
        "repository": {"mode": "existing", "name": repository.name, "encryption": repository.encryption,
                       "compression": repository.compression, "passphrase_token": passphrase},
        "retention": {"preset": "custom", **(repository.retention or {})},
        "schedule": {"days": list(schedule.get("days") or []), "at": schedule.get("at"),
                     "window": schedule.get("window"), "timezone": schedule.get("timezone") or chain.timezone,
                     "priority": chain.priority},
        "chain_name": chain.name,
        "notify": {"channel": chain.notify_channel, "success": chain.notify_success},
    }


def _source_config(source: BackupSource) -> dict[str, Any]:
    """The source's stored config in the wizard's shape (every field, defaults filled in); as stored when it does
    not parse (validation then names the problem at the Source step)."""
    try:
        return sources.load_config(source.type.value, source.config or {}).model_dump(mode="json")
    except (sources.PlanError, sources.UnknownSourceType):
        return dict(source.config or {})


def setup_of(current: Current, answers: Mapping[str, Any]) -> dict[str, Any]:
    """The chain's repository in the shape validation leaves in ``setup`` (so the wizard sees it as set up for these
    answers), marked ``chain_repository_id``: it is the chain's own and is never discarded by the wizard."""
    repository, pool = current.repository, current.repository.pool

    def token(secret: Any) -> str | None:
        return secret.token if secret else None

    return {
        "server_id": answers["server_id"], "pool_id": pool.id, "name": repository.name, "mode": "existing",
        "encryption": repository.encryption, "path": repository.path, "base_path": pool.base_path, "created": False,
        "passphrase_token": answers["repository"]["passphrase_token"],
        "key_export_token": token(repository.key_export),
        "client_key_private_token": token(repository.client_key_private),
        "client_key_public": repository.client_key_public, "key_file": f"{KEY_DIR}/{repository.name}/id_ed25519",
        "known_hosts_file": f"{KEY_DIR}/{repository.name}/known_hosts",
        "at": datetime.now(UTC).isoformat(timespec="seconds"), "chain_repository_id": repository.id,
    }  # fmt: skip


def settings_of(answers: Mapping[str, Any]) -> dict[str, Any]:
    """Given wizard answers, return what they set on a chain, normalised so two answers that mean the same compare
    equal (the retention preset's label, a schedule key left out)."""
    repository = answers.get("repository") or {}
    schedule = answers.get("schedule") or {}
    notify = answers.get("notify") or {}
    return {
        "name": answers.get("chain_name"),
        "server_id": answers.get("server_id"),
        "backup_type": answers.get("backup_type"),
        "source": dict(answers.get("source") or {}),
        "credential_id": answers.get("credential_id"),
        "snapshot": (answers.get("snapshot") or {}).get("method") or "none",
        "pool_id": answers.get("pool_id"),
        "repository": {"name": repository.get("name"), "encryption": repository.get("encryption")},
        "compression": repository.get("compression") or "lz4",
        "retention": planning.retention_policy(answers.get("retention")) or {},
        "schedule": {key: schedule.get(key) for key in ("days", "at", "window", "timezone")},
        "priority": priority_of(schedule),
        "notify_channel": notify.get("channel") or None,
        "notify_success": bool(notify.get("success", True)),
    }


def difference(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Given two :func:`settings_of`, return the settings that differ with their values before and after."""
    return {key: {"before": before.get(key), "after": after.get(key)} for key in after if before.get(key) != after[key]}


def needs_test_backup(changes: Mapping[str, Any]) -> bool:
    """Whether a change reaches the source, the pool or the repository (validation then runs a real test backup)."""
    return any(key in changes for key in TESTED)


def relocates(changes: Mapping[str, Any]) -> bool:
    return any(key in changes for key in RELOCATING)


async def has_archives(tenant: Tenant, repository_id: int) -> bool:
    """Whether the repository holds archives as far as the bot knows: an archive it recorded and did not remove, or
    a backup run that made one (a repository from before the record)."""
    live = VerifiedArchive.filter(team_id=tenant.team_id, repository_id=repository_id, removed_at__isnull=True)
    if await live.exists():
        return True
    return await tenant.query(Run).filter(repository_id=repository_id, kind=RunKind.BACKUP,
                                          status__in=[RunStatus.SUCCEEDED, RunStatus.WARNING]).exists()  # fmt: skip


async def prefill(actor: Actor, chain_id: object) -> dict[str, Any]:
    """Given an actor and a chain, return the wizard answers of an edit session for it, once the actor is allowed to
    operate the chain (a refusal is audited and raised before anything else is read)."""
    chain = await operated_chain(actor, chain_id, ACTION)
    current = await current_of(actor.tenant, chain)
    answers = answers_of(current)
    answers["setup"] = setup_of(current, answers)
    answers["edit"] = {"chain_id": chain.id, "chain_name": chain.name, "repository_id": current.repository.id,
                       "before": settings_of(answers), "setup": answers["setup"],
                       "has_archives": await has_archives(actor.tenant, current.repository.id)}  # fmt: skip
    answers["validation"] = {"ok": True, "fingerprint": fingerprint(answers), "next_runs": [], "deferred": False,
                             "at": datetime.now(UTC).isoformat(timespec="seconds"),
                             "steps": [{"name": "current settings", "ok": True, "step": "review",
                                        "detail": f"{chain.name} runs with these settings now"}]}  # fmt: skip
    return answers


# -- checking and applying ----------------------------------------------------------------------------------------


async def check_relocation(actor: Actor, answers: Mapping[str, Any]) -> None:
    """Refuse new answers that move a chain's archives: allowed only while it has none, and only to a repository of
    another name (a new path, a new push key). Called by validation before it sets anything up, and by apply."""
    edit = answers.get("edit") or {}
    before, after = edit.get("before") or {}, settings_of(answers)
    changes = difference(before, after)
    if not relocates(changes):
        return
    what = ", ".join(k.replace("_id", "").replace("_", " ") for k in RELOCATING if k in changes)
    name = esc(str(edit.get("chain_name") or "this chain"))
    if await has_archives(actor.tenant, int(edit.get("repository_id") or 0)):
        raise Refused(f"{name} has archives in its repository, so its {what} stay as they are (the archives live "
                      "there). Change the other settings here; for another server, pool or repository create a new "
                      "chain with `/backup new`, and retire this one with `/backup delete` when it is no longer "
                      "needed.")  # fmt: skip
    if (after["repository"] or {}).get("name") == (before.get("repository") or {}).get("name"):
        raise Refused(f"Changing the {what} of {name} needs a new repository: give it another name at the "
                      "Repository step (the current one stays in use until the change is applied).")  # fmt: skip


async def apply(actor: Actor, chain_id: object, answers: Mapping[str, Any], *, session_id: str | None = None,
                summary: str = "", channel_id: str | None = None,
                alerts: AlertBus | None = None) -> Edited:  # fmt: skip
    """Given an actor, a chain and the edit session's answers, change the chain (module docstring) and return what
    changed. Raises :class:`~bot.access.Refused` (or Forbidden / NotFound) with nothing changed."""
    chain = await operated_chain(actor, chain_id, ACTION)
    edit = answers.get("edit") or {}
    if edit.get("chain_id") != chain.id:
        raise Refused("These answers belong to another chain; open `/backup edit` again.")
    try:
        await gate.check_answers(actor, answers)
    except Refused as exc:
        await record(actor, ACTION, "chain", chain.id, outcome="denied", reason=exc.sentence[:300])
        raise Refused(f"{exc.sentence} Nothing was changed.") from None
    current = await current_of(actor.tenant, chain)
    before = settings_of(answers_of(current))
    if before != edit.get("before"):
        raise Refused(f"{esc(chain.name)} was changed by someone else since you opened it; nothing was changed. "
                      f"Open `/backup edit {chain.name}` again to start from its settings now.")  # fmt: skip
    changes = difference(before, settings_of(answers))
    if not changes:
        return Edited(chain, {}, None, f"Nothing to change: *{esc(chain.name)}* already has these settings.")
    await check_relocation(actor, answers)
    setup = _new_setup(answers) if relocates(changes) else None
    key = approval_fingerprint(answers)
    approved = await approvals.approved_for(actor.team_id, session_id, key) if session_id else None
    if approved is None and await approvals.requires_approval(actor.team_id, actor.user_id):
        return await _ask(actor, chain, changes, session_id, key, summary, channel_id, alerts)
    try:
        async with in_transaction():
            await _write(actor, current, answers, setup)
            await record(actor, ACTION, "chain", chain.id, outcome="done", name=chain.name,
                         approval_id=approved.id if approved else None,
                         before={k: v["before"] for k, v in changes.items()},
                         after={k: v["after"] for k, v in changes.items()})  # fmt: skip
    except IntegrityError:
        raise Refused(f"A backup chain named {esc(str(answers.get('chain_name')))!r} already exists in this "
                      "workspace (nothing was changed): choose another name.") from None  # fmt: skip
    await schedule_changed(chain.id)  # committed: the new slots are planned now, not at the next resync
    fresh = await actor.tenant.get(BackupChain, id=chain.id)
    return Edited(fresh, changes, None, f":white_check_mark: *{esc(fresh.name)}* was changed "
                                        f"({', '.join(changes)}).")  # fmt: skip


def _new_setup(answers: Mapping[str, Any]) -> Mapping[str, Any]:
    """The new repository validation set up for these answers (refused when it is not there)."""
    setup = answers.get("setup") or {}
    repository = answers.get("repository") or {}
    if (setup.get("chain_repository_id") is not None or setup.get("pool_id") != answers.get("pool_id")
            or setup.get("name") != repository.get("name") or setup.get("server_id") != answers.get("server_id")):
        raise Refused("The new repository is not set up yet: run the validation again (it creates it and runs a "
                      "test backup); nothing was changed.")  # fmt: skip
    return setup


async def _ask(actor: Actor, chain: BackupChain, changes: Mapping[str, Any], session_id: str | None, key: str,
               summary: str, channel_id: str | None, alerts: AlertBus | None) -> Edited:  # fmt: skip
    """The workspace requires approval: ask for it; the chain keeps its settings until it is approved."""
    if session_id is None:
        raise Refused("Changes to chains need an approver's approval in this workspace: make them with "
                      f"`/backup edit {chain.name}` in Slack.")  # fmt: skip
    text = summary or "\n".join(f"*{k}:* {v['before']} → {v['after']}" for k, v in changes.items())
    approval = await approvals.request_for_answers(actor, session_id, key, f"*Change of {esc(chain.name)}*\n{text}",
                                                   channel_id=channel_id or chain.notify_channel, alerts=alerts,
                                                   what=f"a change of the backup chain {chain.name}")  # fmt: skip
    await record(actor, ACTION, "chain", chain.id, outcome="approval_requested", approval_id=approval.id,
                 before={k: v["before"] for k, v in changes.items()},
                 after={k: v["after"] for k, v in changes.items()})  # fmt: skip
    return Edited(chain, dict(changes), approval,
                  f":hourglass: The change of *{esc(chain.name)}* waits for an approver; the chain keeps its current "
                  "settings until it is approved.")  # fmt: skip


async def _write(actor: Actor, current: Current, answers: Mapping[str, Any], setup: Mapping[str, Any] | None) -> None:
    """The rows of one edit (inside its transaction): repository, source, chain."""
    tenant, chain, repository = actor.tenant, current.chain, current.repository
    if setup is not None:  # a new repository for a chain without archives: the row follows it (history kept)
        await tenant.query(Repository).filter(id=repository.id).update(
            pool_id=answers["pool_id"], **repository_values(answers, setup), integrity=Integrity.OK,
            integrity_detail=None, size_bytes=None, size_checked_at=None, last_prune_at=None)  # fmt: skip
        await VerifiedArchive.filter(team_id=tenant.team_id, repository_id=repository.id).delete()
    else:
        await tenant.query(Repository).filter(id=repository.id).update(**repository_settings(answers))
    server = await planning.load_server(tenant, answers.get("server_id"))
    credential = await planning.credential_row(tenant, server, answers.get("credential_id"))
    await tenant.query(BackupSource).filter(id=current.source.id).update(
        server_id=server.id, credential_id=credential.id if credential else None,
        type=answers["backup_type"], config=dict(answers.get("source") or {}))  # fmt: skip
    schedule = chain_schedule(answers.get("schedule"), chain.timezone, current=chain.schedule)
    notify = answers.get("notify") or {}
    try:
        name = chain_name(answers.get("chain_name"))
    except CreateError as exc:
        raise Refused(f"{exc.message} Nothing was changed.") from None
    await tenant.query(BackupChain).filter(id=chain.id).update(
        name=name, schedule=schedule, timezone=schedule["timezone"], priority=priority_of(answers.get("schedule")),
        notify_channel=notify.get("channel") or None, notify_success=bool(notify.get("success", True)))  # fmt: skip


async def record_test_backup(actor: Actor, chain_id: int, started: datetime, ok: bool) -> None:
    """An edit's test backup pushed to the chain's own repository: recorded as a TEST run of the chain, so the
    integrity check counts its push transaction as the bot's own (one it supervised), not a foreign one."""
    chain = await operated_chain(actor, chain_id, ACTION)
    await actor.tenant.create(Run, chain=chain, repository_id=chain.repository_id, kind=RunKind.TEST,  # type: ignore[attr-defined]
                              status=RunStatus.SUCCEEDED if ok else RunStatus.FAILED, started_at=started,
                              finished_at=datetime.now(UTC), requested_by=actor.user_id,
                              spec={"why": "test backup of a chain edit"})  # fmt: skip
