"""The chain runner: hooks → snapshot → one ``borg create`` per job on the source → proof → prune + compact.

"No phantom success": a job succeeds only when borg exits 0 (1 = warning) **and** the archive is then listed
in the repository by the bot's own access on the pool. Each job is isolated (a failed dump does not stop the
other jobs), ``after`` commands of a job always run, and retention is applied only to jobs whose backup just
succeeded: a chain that cannot back up never loses its old archives to pruning.

A repository with its own prune schedule is maintained by :func:`prune_repository` (a ``prune`` run) instead:
the plan then says ``prune=False`` and backups leave pruning alone. Both paths prune through
:func:`apply_retention`, one archive group (``{prefix}-{suffix}-*``) at a time, so each database keeps its own
history either way.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from bot.backup import retention as retention_math
from bot.backup.hooks import PostCommandsFailed
from bot.backup.integrity import Guard, Permit, Recorded
from bot.backup.jobs import ArchiveJob, archive_glob, archive_name
from bot.borg import compact, create, delete, prune
from bot.borg import list as borg_list
from bot.borg.create import ArchiveStats, CreateOptions
from bot.borg.repo import Repo
from bot.borg.runner import KINDS, BorgError
from bot.transport.base import Transport, TransportError

Status = Literal["ok", "warning", "failed"]
PathMapper = Callable[[str], str]  # original path → the path borg must read (a snapshot view)
SnapshotFactory = Callable[[Sequence[str]], AbstractAsyncContextManager[Any]]  # yields a SnapshotView-like mapper
HooksFactory = Callable[[], AbstractAsyncContextManager[Any]]
ProgressHandler = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ChainPlan:
    prefix: str  # archive name prefix, e.g. the repository name
    jobs: Sequence[ArchiveJob]
    source: Transport  # where borg runs (the source server)
    repo_at_source: Repo  # how the source reaches the repository (push)
    pool: Transport  # the bot's own access to the pool
    repo_at_pool: Repo
    compression: str = "lz4"
    retention: Mapping[str, int | str] | None = None
    sudo: bool = False  # run privileged jobs through sudo (non-root login with passwordless sudo)
    snapshot: SnapshotFactory | None = None
    hooks: HooksFactory | None = None
    before_run: Callable[[], Awaitable[list[str]]] | None = None  # e.g. remove a crashed run's snapshots
    borg: str = "borg"  # borg on the source
    pool_borg: str = "borg"
    timeout: float | None = None  # per job
    lock_wait: int = 60  # seconds borg waits for the repository lock before giving up (kind "lock")
    prune: bool = True  # prune + compact per ``retention`` after backing up (False: the repository's prune schedule)
    guard: Guard | None = None  # the record of verified archives (bot.backup.integrity); None: borg prune decides


@dataclass
class JobOutcome:
    suffix: str
    archive: str
    status: Status
    stats: ArchiveStats | None = None
    kind: str | None = None
    reason: str = ""
    hint: str = ""
    pruned: list[str] = field(default_factory=list)
    archive_id: str | None = None  # borg's id of the archive, as the bot's pool access listed it (the proof)
    archive_time: datetime | None = None  # its start time (UTC)


@dataclass
class ChainResult:
    status: Status
    jobs: list[JobOutcome]
    started_at: datetime
    finished_at: datetime
    freed_bytes: int | None = None
    kind: str | None = None  # of the first failure
    reason: str = ""
    hint: str = ""
    maintenance_error: str | None = None  # prune/compact problems (the backups themselves stand)
    maintenance_refused: str | None = None  # the integrity check found a difference: nothing was pruned or compacted
    notes: list[str] = field(default_factory=list)  # e.g. leftovers of a crashed run that were removed

    @property
    def duration(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


def _failure(error: BaseException) -> tuple[str, str, str]:
    """(kind, reason, hint) for anything a job can die of (borg, SSH, a hook, a snapshot)."""
    if isinstance(error, BorgError):
        return error.kind, str(error), error.hint
    if isinstance(error, TransportError):
        hint = KINDS["unreachable"][1] if error.transient else ""
        return error.kind, str(error), hint
    kind = getattr(error, "kind", None) or "error"
    return kind, str(error) or type(error).__name__, getattr(error, "hint", "") or KINDS["error"][1]


async def _commands(plan: ChainPlan, job: ArchiveJob, commands: Sequence[Sequence[str]], what: str) -> None:
    for argv in commands:
        result = await plan.source.run(argv, sudo=job.privileged and plan.sudo, timeout=300)
        if not result.ok:
            raise TransportError(f"The {what} command of {job.suffix} failed: {result.describe_failure()}.",
                                 kind="hook_failed", transient=False)  # fmt: skip


def _create_args(
    plan: ChainPlan, job: ArchiveJob, name: str, mapper: PathMapper, progress: bool, moment: datetime | None
) -> tuple:
    # Through a snapshot view, borg matches patterns against the snapshot paths: rewrite them, and hide the
    # view's own directories.
    rewrite = getattr(mapper, "rewrite_pattern", None)
    excludes = tuple(x for p in job.excludes for x in rewrite(p)) if rewrite else job.excludes
    excludes += tuple(getattr(mapper, "excludes", ()))
    options = CreateOptions(
        compression=plan.compression, excludes=excludes, one_file_system=job.one_file_system,
        exclude_caches=job.exclude_caches, progress=progress,
        timestamp=moment.isoformat(timespec="seconds") if moment else None,
    )  # fmt: skip
    if job.kind == "command":
        return create.command_argv(plan.repo_at_source, name, job.stdin_name, job.command, options)
    return create.paths_argv(plan.repo_at_source, name, [mapper(p) for p in job.paths], options)


async def run_job(
    plan: ChainPlan,
    job: ArchiveJob,
    name: str,
    mapper: PathMapper,
    on_progress: ProgressHandler | None,
    moment: datetime | None,
) -> JobOutcome:
    outcome = JobOutcome(suffix=job.suffix, archive=name, status="failed")

    def forward(event: dict[str, Any]) -> None:
        if on_progress is not None:
            on_progress({**event, "job": job.suffix, "archive": name})

    try:
        try:
            await _commands(plan, job, job.before, "before")
            # The dump's credentials ride along in borg's (stdin-fed) environment, inherited by the dump.
            repo = plan.repo_at_source.with_secrets(job.secret_env)
            result, stats = await create.run(
                plan.source, repo, _create_args(plan, job, name, mapper, on_progress is not None, moment),
                on_event=forward, borg=plan.borg, timeout=plan.timeout, sudo=job.privileged and plan.sudo,
                lock_wait=plan.lock_wait,
            )  # fmt: skip
        finally:
            await _commands(plan, job, job.after, "after")
        proof = await _prove(plan, name)
    except (BorgError, TransportError) as error:
        outcome.kind, outcome.reason, outcome.hint = _failure(error)
        return outcome
    outcome.archive_id, outcome.archive_time = proof.id, proof.time
    outcome.status = "warning" if result.outcome == "warning" else "ok"
    outcome.stats, outcome.reason = stats, result.reason
    return outcome


async def _prove(plan: ChainPlan, name: str) -> borg_list.ArchiveEntry:
    """The archive must be listed by the pool-side view of the repository, or the job did not succeed; returns
    its listing (name, borg's archive id, UTC time): what the bot records as verified."""
    listed = await borg_list.archives(plan.pool, plan.repo_at_pool, glob=name, borg=plan.pool_borg,
                                      lock_wait=plan.lock_wait, utc=True)  # fmt: skip
    found = next((a for a in listed if a.name == name), None)
    if found is None:
        raise TransportError(
            f"borg reported success but archive {name} is not in the repository; treating the backup as failed.",
            kind="phantom", transient=True,
        )  # fmt: skip
    return found


async def apply_retention(
    pool: Transport, repo: Repo, prefix: str, suffixes: Sequence[str], retention: Mapping[str, int | str], *,
    borg: str = "borg", pruned: dict[str, list[str]] | None = None, kept: dict[str, int] | None = None,
) -> int | None:  # fmt: skip
    """Prune each archive group ``{prefix}-{suffix}-*`` per ``retention``, then compact when anything went.

    Returns the bytes compact freed (None when nothing was pruned or borg did not say). ``pruned`` / ``kept`` are
    filled group by group as borg answers, so a caller that catches a failure half-way still knows what is gone.
    A policy without a count rule (``keep_within`` alone) could remove every archive of a group whose backups
    stopped; such a group is dry-run first and left alone when nothing would be kept.
    """
    pruned = {} if pruned is None else pruned
    kept = {} if kept is None else kept
    counted = any(value not in (None, 0, "") for key, value in retention.items() if key != "keep_within")
    for suffix in suffixes:
        glob = archive_glob(prefix, suffix)
        if not counted:
            trial = await prune.run(pool, repo, retention, glob=glob, dry_run=True, borg=borg)
            if trial and not any(line.keep for line in trial):
                kept[suffix], pruned[suffix] = len(trial), []
                continue
        lines = await prune.run(pool, repo, retention, glob=glob, borg=borg)
        pruned[suffix] = [line.name for line in lines if not line.keep]
        kept[suffix] = sum(1 for line in lines if line.keep)
    if any(pruned.values()):
        return await compact.run(pool, repo, borg=borg)
    return None


def _group_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(prefix)}-(?P<suffix>[a-z0-9][a-z0-9._+-]*)-\d{{8}}T\d{{6}}$")


def choose_removals(records: Sequence[Recorded], retention: Mapping[str, int | str], *,
                    now: datetime | None = None) -> tuple[list[str], int]:  # fmt: skip
    """Given the recorded archives of one group and the policy, return (the names retention removes, how many it
    keeps), by the bot's own copy of borg's prune rules in UTC. A policy without a count rule (``keep_within``
    alone) would empty a group whose backups stopped: such a group is left alone. Archives without a recorded
    time are never candidates."""
    policy = retention_math.Policy(**{key: value for key, value in retention.items() if value not in (None, 0, "")})
    timed = [retention_math.Archive(r.name, r.time) for r in records if r.time is not None]
    decisions = retention_math.decide(timed, policy, UTC, now=now)
    keep = [d for d in decisions if d.keep]
    counted = any(value not in (None, 0, "") for key, value in retention.items() if key != "keep_within")
    if not counted and not keep:
        return [], len(decisions)
    return [d.name for d in decisions if not d.keep], len(keep) + (len(records) - len(timed))


async def retain_recorded(
    pool: Transport, repo: Repo, prefix: str, suffixes: Sequence[str] | None, retention: Mapping[str, int | str],
    guard: Guard, permit: Permit, *, borg: str = "borg", pruned: dict[str, list[str]] | None = None,
    kept: dict[str, int] | None = None,
) -> int | None:  # fmt: skip
    """Retention over the *recorded* archives only (``permit.recorded``, grouped ``{prefix}-{suffix}-*``; only
    ``suffixes`` when given): the archives it removes are deleted by exact name (``borg delete``), the record
    updated, then compacted. Archives the bot never verified are never candidates, so archives added through a
    push key cannot steer which real ones go. Returns the bytes compact freed (None: nothing removed)."""
    pruned = {} if pruned is None else pruned
    kept = {} if kept is None else kept
    pattern = _group_pattern(prefix)
    groups: dict[str, list[Recorded]] = {}
    for record in permit.recorded:
        if (match := pattern.match(record.name)) and (suffixes is None or match["suffix"] in suffixes):
            groups.setdefault(match["suffix"], []).append(record)
    for suffix in sorted(groups):
        names, kept[suffix] = choose_removals(groups[suffix], retention)
        if names:
            await delete.archives(pool, repo, names, borg=borg)
            await guard.removed(names)
        pruned[suffix] = names
    if not any(pruned.values()):
        return None
    freed = await compact.run(pool, repo, borg=borg)
    await guard.compacted(permit)
    return freed


async def _maintain(plan: ChainPlan, outcomes: Sequence[JobOutcome], result: ChainResult) -> None:
    if not plan.retention or not plan.prune:
        return
    done = [o for o in outcomes if o.status != "failed"]
    pruned: dict[str, list[str]] = {}
    try:
        if plan.guard is None:
            result.freed_bytes = await apply_retention(plan.pool, plan.repo_at_pool, plan.prefix,
                                                       [o.suffix for o in done], plan.retention, borg=plan.pool_borg,
                                                       pruned=pruned)  # fmt: skip
        else:
            permit = await plan.guard.permit(plan.pool, plan.repo_at_pool, plan.pool_borg)
            if not permit.allowed:
                result.maintenance_refused = permit.reason
                return
            result.freed_bytes = await retain_recorded(plan.pool, plan.repo_at_pool, plan.prefix,
                                                       [o.suffix for o in done], plan.retention, plan.guard, permit,
                                                       borg=plan.pool_borg, pruned=pruned)  # fmt: skip
    except (BorgError, TransportError, OSError) as error:
        result.maintenance_error = _failure(error)[1]
    for outcome in done:
        outcome.pruned = pruned.get(outcome.suffix, [])


async def _record(guard: Guard, outcomes: Sequence[JobOutcome], result: ChainResult) -> None:
    """Record the archives this run proved (before maintenance compares the repository with the record)."""
    proven = [borg_list.ArchiveEntry(o.archive, o.archive_id, o.archive_time or result.started_at)
              for o in outcomes if o.status != "failed" and o.archive_id]  # fmt: skip
    if proven:
        await guard.record(proven)


@dataclass
class PruneResult:
    """A repository's scheduled prune: per archive group what went and how many stay, and the space freed.
    ``refused``: the integrity check found a difference, nothing was touched."""

    status: Status | Literal["refused"]
    started_at: datetime
    finished_at: datetime
    pruned: dict[str, list[str]] = field(default_factory=dict)  # suffix → archives removed
    kept: dict[str, int] = field(default_factory=dict)  # suffix → archives kept
    freed_bytes: int | None = None
    kind: str | None = None
    reason: str = ""
    hint: str = ""

    def stats(self) -> dict[str, Any]:
        """The run's stats in the shape of a backup's (``jobs[].pruned``, ``freed_bytes``), so one prune report
        reads both."""
        jobs = [{"job": suffix, "status": "ok", "pruned": names, "kept": self.kept.get(suffix, 0)}
                for suffix, names in self.pruned.items()]  # fmt: skip
        return {
            "jobs": jobs, "archives_pruned": sum(len(names) for names in self.pruned.values()),
            "freed_bytes": self.freed_bytes, "duration": (self.finished_at - self.started_at).total_seconds(),
        }  # fmt: skip


def archive_groups(prefix: str, names: Sequence[str]) -> list[str]:
    """The job suffixes of ``names`` that follow ``{prefix}-{suffix}-{stamp}`` (others, e.g. checkpoints or archives
    made by hand, belong to no group and are never pruned)."""
    pattern = _group_pattern(prefix)
    return sorted({m["suffix"] for name in names if (m := pattern.match(name))})


async def prune_repository(pool: Transport, repo: Repo, prefix: str, retention: Mapping[str, int | str], *,
                           borg: str = "borg", lock_wait: int = 60,
                           guard: Guard | None = None) -> PruneResult:  # fmt: skip
    """Apply ``retention`` to every archive group of the repository, then compact; never raises for a borg or
    SSH failure (the result says what happened, with what was already pruned before it). With a ``guard`` the
    repository is first compared with the record (a difference: nothing pruned, ``status`` "refused") and
    retention decides over recorded archives only."""
    result = PruneResult(status="failed", started_at=datetime.now(UTC), finished_at=datetime.now(UTC))
    if guard is not None:
        return await _prune_guarded(pool, repo, prefix, retention, guard, result, borg=borg)
    try:
        names = [a.name for a in await borg_list.archives(pool, repo, glob=f"{prefix}-*", borg=borg,
                                                             lock_wait=lock_wait)]  # fmt: skip
        result.freed_bytes = await apply_retention(pool, repo, prefix, archive_groups(prefix, names), retention,
                                                   borg=borg, pruned=result.pruned, kept=result.kept)  # fmt: skip
        result.status = "ok"
    except (BorgError, TransportError) as error:
        result.kind, result.reason, result.hint = _failure(error)
    result.finished_at = datetime.now(UTC)
    return result


async def _prune_guarded(pool: Transport, repo: Repo, prefix: str, retention: Mapping[str, int | str],
                         guard: Guard, result: PruneResult, *, borg: str) -> PruneResult:  # fmt: skip
    try:
        permit = await guard.permit(pool, repo, borg)
        if not permit.allowed:
            result.status, result.kind, result.reason = "refused", "integrity_review", permit.reason
            result.hint = "An admin decides in the alert: accept the change, or quarantine the repository."
        else:
            result.freed_bytes = await retain_recorded(pool, repo, prefix, None, retention, guard, permit, borg=borg,
                                                       pruned=result.pruned, kept=result.kept)  # fmt: skip
            result.status = "ok"
    except (BorgError, TransportError, OSError) as error:
        result.kind, result.reason, result.hint = _failure(error)
    result.finished_at = datetime.now(UTC)
    return result


@contextlib.asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield None


@contextlib.asynccontextmanager
async def _identity(_: Sequence[str]) -> AsyncIterator[PathMapper]:
    yield lambda path: path


async def run_chain(plan: ChainPlan, *, now: datetime | None = None,
                    on_progress: ProgressHandler | None = None) -> ChainResult:  # fmt: skip
    """Run every job of ``plan``; never raises for a backup failure — the result says what happened."""
    started = now or datetime.now(UTC)  # a given ``now`` also becomes the archives' time (tests, imports)
    clock = time.monotonic()
    outcomes: list[JobOutcome] = []
    result = ChainResult(status="failed", jobs=outcomes, started_at=started, finished_at=started)
    paths = [p for job in plan.jobs if job.kind == "paths" for p in job.paths]
    post_failed = False
    try:
        if plan.before_run is not None:
            result.notes.extend(f"removed leftover {item}" for item in await plan.before_run())
        async with (plan.hooks or _nothing)(), (plan.snapshot or _identity)(paths) as mapper:
            for job in plan.jobs:
                name = archive_name(plan.prefix, job.suffix, started)
                outcomes.append(await run_job(plan, job, name, mapper, on_progress, now))
    except PostCommandsFailed as error:  # the backups stand; the run is a warning, with the reason
        result.notes.append(str(error))
        post_failed = True
    except Exception as error:  # a pre-hook or the snapshot itself failed: no job ran (or the rest did not)
        result.kind, result.reason, result.hint = _failure(error)
    if plan.guard is not None:
        await _record(plan.guard, outcomes, result)
    await _maintain(plan, outcomes, result)
    failed = [o for o in outcomes if o.status == "failed"]
    if result.kind is None and failed:
        result.kind, result.reason, result.hint = failed[0].kind, failed[0].reason, failed[0].hint
    if result.kind is None:
        warned = post_failed or any(o.status == "warning" for o in outcomes)
        result.status = "warning" if warned else "ok"
    result.finished_at = datetime.fromtimestamp(started.timestamp() + (time.monotonic() - clock), UTC)
    return result
