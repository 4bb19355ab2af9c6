"""Executing a ``DRILL`` run: restore the newest archive of each of the chain's archive groups into a scratch place
on the drill server, verify it as a restore is verified, time it, and clean up — the proof that the backups can be
restored, on a schedule (``chain.schedule["drill"]``, planned by :mod:`bot.runs.scheduler`).

The drill server comes from the run's options (``server_id``; absent: the pool's host, which reads the repository
by path with the bot's own access; a ``local`` pool: the bot's host). It must be able to read the repository: the
pool's host or one of the chain's source servers (with the push key) — the same rule as restores
(:func:`bot.runs.restoring.reach`).

Per archive group (``<repository>-<suffix>-<stamp>``): an archive holding database dumps is loaded, dump by dump,
into throwaway databases (:mod:`bot.backup.restore_db`: the restore tool's success, rows per table counted);
any other archive is extracted below the scratch directory (:func:`bot.backup.restore.restore_paths`: files, bytes,
links against the listing, sample checksums against borg's). Everything is removed afterwards by
:class:`bot.backup.drill.Scratch` — on success, failure and cancellation — and the result says what was removed.
A drill never writes outside its scratch directory and its throwaway databases.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from bot.backup import drill as scratch
from bot.backup import plan as planning
from bot.backup import restore as files
from bot.backup import restore_db
from bot.backup.restore_db import DumpRef
from bot.backup.runner import _group_pattern
from bot.borg import list as borg_list
from bot.borg.runner import KINDS, BorgError
from bot.runs.queue import RunOutcome
from bot.runs.restoring import Reach, RestoreSpec, credential_for, reach
from bot.transport.base import TransportError
from storage.models import BackupChain, PoolKind, Repository, Run, RunKind, RunStatus

DRILL_HINT = "Fix the cause, then the next drill proves it; `/backup restore` restores by hand meanwhile."


class _Failed(Exception):
    def __init__(self, kind: str, reason: str, hint: str = "") -> None:
        super().__init__(reason)
        self.kind, self.reason, self.hint = kind, reason, hint


async def newest_archives(chain: BackupChain, where: Reach) -> list[tuple[str, str]]:
    """Given a chain and its pool side, return ``(group, archive)``: the newest archive of each archive group of the
    chain's repository (its backups' archives); a repository without grouped archives gives its newest archive."""
    repository = await Repository.get(id=chain.repository_id)  # type: ignore[attr-defined]
    transport, repo, borg = where.pool_side
    listed = sorted(await borg_list.archives(transport, repo, borg=borg, utc=True), key=lambda a: a.time)
    if not listed:
        raise _Failed("drill_empty", f"The repository of {chain.name} holds no archive yet: there is nothing to "
                      "restore.", "Run a backup first (`/backup run`); the next drill restores it.")  # fmt: skip
    pattern = _group_pattern(repository.name)
    newest: dict[str, str] = {}
    for archive in listed:
        if (match := pattern.match(archive.name)) is not None:
            newest[match["suffix"]] = archive.name
    return sorted(newest.items()) or [("archive", listed[-1].name)]


async def drill_target(chain: BackupChain, server_id: int | None, place: str) -> RestoreSpec:
    """The restore description :func:`reach` needs for the drill server (``via`` pool or source)."""
    repository = await Repository.filter(id=chain.repository_id).select_related("pool__server").get()  # type: ignore[attr-defined]
    pool = repository.pool
    pool_host = pool.server if pool.kind == PoolKind.SSH else None
    if server_id is None or (pool_host is not None and pool_host.id == server_id):
        name = pool_host.name if pool_host is not None else "the bot's host"
        return RestoreSpec(what="files", archive="", via="pool", target=place,
                           server_id=pool_host.id if pool_host else None, server_name=name)  # fmt: skip
    return RestoreSpec(what="files", archive="", via="source", target=place, server_id=server_id)


async def _restore_files(where: Reach, archive: str, place: str, token: str) -> dict[str, Any]:
    items = await files.listing(*where.pool_side[:2], archive, borg=where.pool_side[2])
    done = await files.restore_paths(where.target, where.repo, archive, place, [], sudo=where.sudo, borg=where.borg,
                                     token=token, items=items, archive_side=where.pool_side)  # fmt: skip
    verified = done.verified.as_dict() if done.verified else {"files": done.files}
    return {"archive": archive, "files": verified, "bytes": int(verified.get("bytes") or 0)}


async def _restore_dump(chain: BackupChain, target: RestoreSpec, where: Reach, archive: str, dump: scratch.Dump,
                        space: scratch.Scratch, size: int) -> dict[str, Any]:  # fmt: skip
    spec = target.model_copy(update={"what": "database", "engine": dump.engine})
    login = await credential_for(chain, spec)
    name = space.database(dump.engine, login, client=spec.client)
    ref = DumpRef(archive, dump.path, dump.source_database)
    common = {"borg": where.borg, "sudo": where.sudo, "token": f"d{space.run_id}"}
    if dump.engine == "postgresql":
        done = await restore_db.restore_postgresql(where.target, where.repo, ref, name, login, no_owner=True, **common)
    else:
        done = await restore_db.restore_mysql(where.target, where.repo, ref, name, login, client=spec.client, **common)
    return {"archive": archive, "database": done.as_dict(), "bytes": size}


async def _restore_all(chain: BackupChain, target: RestoreSpec, where: Reach, space: scratch.Scratch,
                       archives: list[tuple[str, str]]) -> list[dict[str, Any]]:  # fmt: skip
    """Every chosen archive into the scratch place (files) or throwaway databases (dumps), verified."""
    results = []
    for group, archive in archives:
        items = await files.listing(*where.pool_side[:2], archive, borg=where.pool_side[2])
        dumps = scratch.dumps_in(items)
        sizes = {str(i.get("path")): int(i.get("size") or 0) for i in items}
        needed = sum(sizes.get(d.path, 0) for d in dumps) if dumps else files.expected_of(items, []).bytes
        problem = await files.space_problem(where.target, space.directory, needed, target.server_name)
        if problem:
            raise _Failed("drill_space", problem, "Free space there, or run the drill on another server: "
                          f"`/backup drill {chain.name} weekly on <server>`.")  # fmt: skip
        if not dumps:
            results.append(await _restore_files(where, archive, space.files_place(group), f"d{space.run_id}"))
        for dump in dumps:
            results.append(await _restore_dump(chain, target, where, archive, dump, space, sizes.get(dump.path, 0)))
    return results


async def _drill(run: Run, chain: BackupChain, services: Any, root: str,
                 seen: dict[str, Any]) -> tuple[dict[str, Any], str | None]:  # fmt: skip
    """The drill itself; returns its result and, when the cleanup left something, the sentence saying what
    (``seen["space"]``: the scratch place, for a failure's report of its cleanup)."""
    options = (run.stats or {}).get("options") or {}
    server_id = options.get("server_id")
    place = scratch.place_for(root, run.id)
    target = await drill_target(chain, int(server_id) if server_id else None, place)
    where = await reach(chain, target, services)
    if not target.server_name:
        target = target.model_copy(update={"server_name": where.server.name if where.server else "the bot's host"})
    problem = await files.borg_problem(where.target, where.borg, target.server_name)
    if problem:
        raise _Failed("drill_borg", problem)
    archives = await newest_archives(chain, where)
    async with scratch.Scratch(where.target, root, run.id, sudo=where.sudo) as space:
        seen["space"] = space
        began = time.monotonic()
        try:
            restored = await _restore_all(chain, target, where, space, archives)
        finally:
            seconds = time.monotonic() - began
    cleanup = space.cleanup or scratch.Cleanup(left=[place])
    result = {"server": target.server_name, "archives": [a for _, a in archives], "seconds": round(seconds, 3),
              "bytes": sum(r["bytes"] for r in restored), "restored": restored,
              "cleanup": cleanup.as_dict()}  # fmt: skip
    left = None if cleanup.ok else f"The drill's scratch data could not all be removed: {'; '.join(cleanup.left)}."
    return result, left


async def execute_drill(run: Run, services: Any, *, root: str = scratch.DRILL_ROOT) -> RunOutcome:
    """Run one drill (see the module docstring); the outcome's stats hold ``drill`` (archives, server, measured
    restore time and size, what was checked, what the cleanup removed), also kept in ``run.spec``."""
    started = datetime.now(UTC)
    chain = await BackupChain.get_or_none(id=run.chain_id) if run.chain_id else None  # type: ignore[attr-defined]
    if chain is None:
        return RunOutcome(status="failed", kind="plan", reason="The drill's chain no longer exists.")
    seen: dict[str, Any] = {}
    try:
        result, left = await _drill(run, chain, services, root, seen)
    except _Failed as failed:
        return _failure(failed.kind, failed.reason, failed.hint or DRILL_HINT, started, seen)
    except (scratch.DrillProblem, planning.PlanProblem) as problem:
        return _failure("plan", str(problem), "Choose another drill server: `/backup drill <chain> weekly on "
                        "<server>` (its pool's host or one of its source servers).", started, seen)  # fmt: skip
    except (files.RestoreRefused, restore_db.RestoreRefused) as refused:
        return _failure("restore_refused", str(refused), DRILL_HINT, started, seen)
    except files.RestoreFailed as failed:
        return _failure("restore_verify", str(failed), "The archive did not restore as listed: run `/backup check "
                        "<chain> daily 05:00 verify` and look at the repository.", started, seen)  # fmt: skip
    except restore_db.RestoreFailed as failed:
        return _failure(failed.kind or "restore_failed", str(failed), failed.hint or DRILL_HINT, started, seen)
    except BorgError as error:
        return _failure(error.kind, str(error), error.hint, started, seen)
    except TransportError as error:
        hint = KINDS["unreachable"][1] if error.transient else DRILL_HINT
        return _failure(error.kind, str(error), hint, started, seen)
    await Run.filter(id=run.id).update(spec={"drill": result})
    run.spec = {"drill": result}
    stats = {"drill": result, "duration": result["seconds"]}
    if left:
        return RunOutcome(status="warning", kind="drill_cleanup", reason=left, stats=stats, started_at=started,
                          finished_at=datetime.now(UTC), log=left,
                          hint="Remove what is named by hand; nothing else was touched.")  # fmt: skip
    return RunOutcome(status="ok", stats=stats, started_at=started, finished_at=datetime.now(UTC),
                      log=f"drill: {len(result['restored'])} restore(s) in {result['seconds']:.1f} s, cleaned up")


def _failure(kind: str, reason: str, hint: str, started: datetime, seen: dict[str, Any]) -> RunOutcome:
    """A failed drill: its cause and hint, and what its cleanup removed (or left, said in the reason)."""
    space = seen.get("space")
    cleanup = space.cleanup if space is not None else None
    if cleanup is not None and not cleanup.ok:
        reason = f"{reason} Its scratch data could not all be removed: {'; '.join(cleanup.left)}."
    drill = {"ok": False, **({"cleanup": cleanup.as_dict()} if cleanup is not None else {})}
    return RunOutcome(status="failed", kind=kind, reason=reason, hint=hint, started_at=started,
                      finished_at=datetime.now(UTC), stats={"drill": drill}, log=reason)  # fmt: skip


async def last_drill(chain_id: int) -> Run | None:
    """The chain's latest finished drill (for ``/backup drill`` and reports)."""
    finished = (RunStatus.SUCCEEDED, RunStatus.WARNING, RunStatus.FAILED, RunStatus.INTERRUPTED)
    return await Run.filter(chain_id=chain_id, kind=RunKind.DRILL, status__in=finished).order_by("-id").first()


__all__ = ["execute_drill", "last_drill", "newest_archives"]
