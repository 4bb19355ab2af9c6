"""Executing a ``RESTORE`` run: what :attr:`Run.spec` says, on the queue like a backup (the repository's lock,
retries of transient failures, crash recovery), and a result that says what was restored and how it was checked.

:class:`RestoreSpec` is the typed form of ``Run.spec``, written by :mod:`bot.services.restores` after every check
a person's request must pass, and read here. ``via`` says how the target server reads the repository:

* ``source`` — the chain's source server, with the push key the chain installed there (borg over SSH to the pool;
  the key's ``borg serve --append-only`` allows reading);
* ``pool`` — the pool's own host with the bot's access (a ``local`` pool: the bot's host), the repository by path.

The archive's listing always comes from the bot's own pool access (the proof is not the restoring side's word).
Files: :func:`bot.backup.restore.restore_paths` (target marked while incomplete, counted, checksummed). Databases:
:mod:`bot.backup.restore_db` (a new database, marked while incomplete, rows per table counted).

A retry (a transient failure, or the retry queued after a crash) carries the same spec and ``token``: a target left
marked by this restore is resumed into (files) or dropped and made again (databases); any other content is refused.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from bot.alerts import Alert, AlertBus
from bot.backup import plan as planning
from bot.backup import restore as files
from bot.backup import restore_db
from bot.backup.restore_db import DumpRef
from bot.borg import list as borg_list
from bot.borg.repo import Repo
from bot.borg.runner import KINDS, BorgError
from bot.runs.queue import RunOutcome
from bot.transport.base import Transport, TransportError
from storage.models import BackupChain, PoolKind, Repository, Run, Server

Via = Literal["source", "pool"]


class RestoreSpec(BaseModel):
    """What a restore run does (``Run.spec``); ``result`` is added once it finished."""

    what: Literal["files", "database"]
    archive: str
    via: Via
    server_id: int | None = None  # the target server (None: the bot's own host, for a local pool)
    target: str  # a directory (files) or a database name
    paths: list[str] = Field(default_factory=list)  # archive paths (files; empty: everything)
    engine: Literal["postgresql", "mysql", "mongodb"] | None = None
    dump: str | None = None  # the dump's file name inside the archive
    globals_archive: str | None = None  # PostgreSQL: the archive whose globals.sql's missing roles are created first
    source_database: str | None = None
    client: str = "mariadb"
    credential_id: int | None = None
    overwrite: bool = False  # an admin confirmed writing over existing data by typing the target's name
    token: str = Field(default_factory=lambda: "r" + secrets.token_hex(8))
    server_name: str = ""
    result: dict[str, Any] | None = None

    def described(self) -> str:
        """One line: what goes where (for reports and audit)."""
        if self.what == "database":
            roles = " (and the server's roles)" if self.globals_archive else ""
            return f"database {self.source_database} → {self.target} on {self.server_name}{roles}"
        what = ", ".join(self.paths[:3]) + (" …" if len(self.paths) > 3 else "") if self.paths else "everything"
        return f"{what} → {self.server_name}:{self.target}"


class Reach:
    """How the target server runs the restore: its transport, the repository as it reaches it, its borg, sudo;
    and the bot's pool side (listing)."""

    def __init__(self, target: Transport, repo: Repo, borg: str, sudo: bool, pool_side: tuple[Transport, Repo, str],
                 server: Server | None) -> None:  # fmt: skip
        self.target, self.repo, self.borg, self.sudo, self.pool_side, self.server = (
            target, repo, borg, sudo, pool_side, server)  # fmt: skip


async def reach(chain: BackupChain, spec: RestoreSpec, services: Any) -> Reach:
    """Given a chain and a restore spec, return how its target server reaches the repository (see module doc)."""
    repository = await Repository.filter(id=chain.repository_id).select_related("pool__server").get()  # type: ignore[attr-defined]
    pool = repository.pool
    pool_side = planning.repository_at_pool(repository, services)
    at_pool = pool_side[1]
    if spec.via == "pool":
        server = pool.server if pool.kind == PoolKind.SSH else None
        return Reach(pool_side[0], at_pool, pool_side[2], False, pool_side, server)
    for inputs in await planning.inputs_from_chain(chain):
        if inputs.server.id == spec.server_id:
            problem = planning.server_problem(inputs.server)
            if problem:
                raise planning.PlanProblem("server", problem)
            ctx = planning.probe_context(inputs.server, services)
            at_source, _ = await planning.repos_for(inputs, ctx.transport)
            borg = planning.local_borg(services.borg) if pool.kind == PoolKind.LOCAL else services.borg
            return Reach(ctx.transport, at_source, borg, ctx.sudo, pool_side, inputs.server)
    raise planning.PlanProblem("server", "The target server is no longer a source of this chain.")


async def credential_for(chain: BackupChain, spec: RestoreSpec) -> Any:
    """The database login for the target: the chosen stored login, else the chain source's, else socket/peer."""
    from bot.backup.plan import credential_row, db_credential
    from storage.models import BackupSource, BackupType
    from storage.tenancy import Tenant

    tenant = Tenant(chain.team_id)
    server = await tenant.get_or_none(Server, id=spec.server_id) if spec.server_id else None
    if server is not None and spec.credential_id is not None:
        return db_credential(await credential_row(tenant, server, spec.credential_id))
    engine = {"postgresql": BackupType.POSTGRESQL, "mongodb": BackupType.MONGODB}.get(spec.engine or "",
                                                                                   BackupType.MYSQL)
    source = await BackupSource.filter(team_id=chain.team_id, chains__id=chain.id, type=engine,
                                       server_id=spec.server_id).first()  # fmt: skip
    if source is not None and source.credential_id is not None and server is not None:  # type: ignore[attr-defined]
        return db_credential(await credential_row(tenant, server, source.credential_id))  # type: ignore[attr-defined]
    from bot.probes.dbcheck import DbCredential

    return DbCredential(engine=spec.engine or "postgresql", auth_method="socket")


async def _run_files(spec: RestoreSpec, where: Reach) -> dict[str, Any]:
    items = await files.listing(*where.pool_side[:2], spec.archive, borg=where.pool_side[2])
    done = await files.restore_paths(where.target, where.repo, spec.archive, spec.target, spec.paths,
                                     allow_non_empty=spec.overwrite, sudo=where.sudo, borg=where.borg,
                                     token=spec.token, items=items, archive_side=where.pool_side)  # fmt: skip
    return {"files": done.verified.as_dict() if done.verified else {"files": done.files}}


async def _run_database(chain: BackupChain, spec: RestoreSpec, where: Reach) -> dict[str, Any]:
    login = await credential_for(chain, spec)
    dump = DumpRef(spec.archive, spec.dump, spec.source_database)
    common = {"overwrite": spec.overwrite, "borg": where.borg, "sudo": where.sudo, "token": spec.token}
    if spec.engine == "mongodb":
        done = await restore_db.restore_mongodb(where.target, where.repo, dump, spec.target, login, borg=where.borg,
                                                sudo=where.sudo)  # fmt: skip
        return {"database": done.as_dict()}
    if spec.engine == "postgresql":
        roles = None
        if spec.globals_archive:  # roles first: the dump's objects are owned by them
            roles = await restore_db.restore_pg_globals(where.target, where.repo, spec.globals_archive, login,
                                                        borg=where.borg, sudo=where.sudo)  # fmt: skip
        done = await restore_db.restore_postgresql(where.target, where.repo, dump, spec.target, login, **common)
        return {"database": done.as_dict(), **({"roles": roles.as_dict()} if roles is not None else {})}
    done = await restore_db.restore_mysql(where.target, where.repo, dump, spec.target, login, client=spec.client,
                                          **common)  # fmt: skip
    return {"database": done.as_dict()}


async def _archive_listed(where: Reach, archive: str) -> bool:
    transport, repo, borg = where.pool_side
    return any(a.name == archive for a in await borg_list.archives(transport, repo, borg=borg))


def _failed(kind: str, reason: str, hint: str, started: datetime, spec: RestoreSpec) -> RunOutcome:
    if spec.what == "files" and kind not in ("restore_refused", "archive_missing", "plan"):
        hint = (f"{hint} {spec.target} may hold a partial restore, marked by its {files.MARKER} file; a retry "
                "resumes into it, or remove it.").strip()
    return RunOutcome(status="failed", kind=kind, reason=reason, hint=hint, started_at=started,
                      stats={"restore": {"spec": spec.described()}}, log=reason)  # fmt: skip


async def execute_restore(run: Run, services: Any, alerts: AlertBus | None = None,
                          on_result: Callable[[dict[str, Any]], None] | None = None) -> RunOutcome:  # fmt: skip
    """Run the restore ``run.spec`` describes; the outcome's stats hold ``restore`` (what, and how it was checked)."""
    started = datetime.now(UTC)
    try:
        spec = RestoreSpec.model_validate(run.spec or {})
    except ValueError as exc:
        return RunOutcome(status="failed", kind="plan", reason=f"The restore's description is not valid: {exc}")
    chain = await BackupChain.get_or_none(id=run.chain_id) if run.chain_id else None  # type: ignore[attr-defined]
    if chain is None:
        return _failed("plan", "The restore's chain no longer exists.", "", started, spec)
    await _started(alerts, run, chain, spec)
    try:
        where = await reach(chain, spec, services)
        if not await _archive_listed(where, spec.archive):
            return _failed("archive_missing", f"The archive {spec.archive} is no longer in the repository (pruned or "
                           "deleted since the restore was requested).", "Choose a newer archive.", started, spec)
        result = await (_run_files(spec, where) if spec.what == "files" else _run_database(chain, spec, where))
    except planning.PlanProblem as problem:
        return _failed("plan", str(problem), "", started, spec)
    except (files.RestoreRefused, restore_db.RestoreRefused) as refused:
        return _failed("restore_refused", str(refused), "Nothing was written.", started, spec)
    except files.RestoreFailed as failed:
        return _failed("restore_verify", str(failed), "Look at the files, then remove the directory.", started, spec)
    except restore_db.RestoreFailed as failed:
        return _failed(failed.kind or "restore_failed", str(failed), failed.hint, started, spec)
    except BorgError as error:
        return _failed(error.kind, str(error), error.hint, started, spec)
    except TransportError as error:
        return _failed(error.kind, str(error), KINDS["unreachable"][1] if error.transient else "", started, spec)
    checked = {"spec": spec.described(), **result}
    run.spec = {**spec.model_dump(), "result": checked}  # the row is saved with the outcome (store_result)
    await Run.filter(id=run.id).update(spec=run.spec)
    if on_result is not None:
        on_result(checked)
    return RunOutcome(status="ok", stats={"restore": checked}, started_at=started, finished_at=datetime.now(UTC),
                      log=f"restored {spec.described()}")  # fmt: skip


async def _started(alerts: AlertBus | None, run: Run, chain: BackupChain, spec: RestoreSpec) -> None:
    """Progress in the chain's thread: the restore began (what, from which archive, where)."""
    if alerts is None:
        return
    details = {"run_id": run.id, "chain_id": chain.id, "chain_name": chain.name, "run_kind": "restore",
               "archive": spec.archive, "what": spec.described(), "attempts": run.attempts}  # fmt: skip
    await alerts.publish(Alert(team_id=run.team_id, kind="restore_started",
                               message=f"Restore of {chain.name} started: {spec.described()}", details=details))


__all__ = ["RestoreSpec", "execute_restore", "reach"]
