"""The run queue: runs are rows, claimed by compare-and-set, retried with backoff, recovered after a crash.

:class:`RunQueue` is the interface the worker, the scheduler and Slack buttons use; :class:`SqlQueue` is the
embedded default on the app's own database (SQLite, PostgreSQL or MariaDB), for one bot process.
:class:`bot.runs.procrastinate_queue.ProcrastinateQueue` implements the same protocol on procrastinate for worker
processes on several machines; both keep :class:`~storage.models.Run` rows as the record (reports, App Home and
``/metrics`` read them), and share the row bookkeeping of :class:`RowQueue` below.

The embedded queue claims like this, on every engine:

* candidates are ``queued`` rows whose ``next_attempt_at`` is due, highest ``priority`` first, then oldest due;
* per candidate, one transaction takes a row lock on the run's *repository* row (``SELECT … FOR UPDATE``; SQLite
  has a single writer, which serialises the same way), checks that no run with the same ``lock_key`` is
  ``running`` (a locking read, so it sees what a competitor just committed), and moves the row with a
  conditional ``UPDATE … WHERE id = ? AND status = 'queued'``. Two workers therefore never claim one row, and
  never hold two running rows of one repository.

Failures: :func:`is_transient` derives retry-ability from the error kind (borg's ``KINDS``, the transport's
kinds). Transient failures go back to ``queued`` with an exponential backoff until ``max_attempts``; permanent
ones fail at once. A run left ``running`` by a crash is marked ``interrupted`` (never successful) and a new
queued run retries it. A result for a run that is no longer ``running`` (it was interrupted meanwhile) is not
stored: an interrupted run never turns successful.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from bot.backup.record import record
from bot.backup.runner import ChainResult
from bot.borg.runner import KINDS
from storage.models import Repository, Run, RunKind, RunStatus
from storage.orm import F, in_transaction

log = logging.getLogger(__name__)

# Transport kinds (bot.transport.base): connection problems are transient, identity problems are not.
TRANSPORT_KINDS: dict[str, bool] = {
    "host_unreachable": True,
    "connect_timeout": True,
    "command_timeout": True,
    "transport": True,
    "phantom": True,  # borg said ok but the archive is not listed: retry
    "interrupted": True,  # the bot stopped or died while the run ran
    "auth_failed": False,
    "host_key_changed": False,
    "host_key_unpinned": False,
    "hook_failed": False,
    "plan": False,  # the chain's plan could not be built (a setting must change)
    "window_missed": False,
}
FINAL = (RunStatus.SUCCEEDED, RunStatus.WARNING, RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.SKIPPED,
         RunStatus.CANCELLED)  # fmt: skip


def is_transient(kind: str | None) -> bool:
    """Whether a failure of ``kind`` is worth retrying (unknown kinds are not: a person must look)."""
    if kind is None:
        return False
    if kind in KINDS:
        return KINDS[kind][0]
    return TRANSPORT_KINDS.get(kind, False)


def lock_key_for(repository_id: int | None) -> str | None:
    return None if repository_id is None else f"repo:{repository_id}"


def _repository_of(lock_key: str | None) -> int | None:
    if lock_key and lock_key.startswith("repo:") and lock_key[5:].isdigit():
        return int(lock_key[5:])
    return None


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class RunSpec:
    """What to run. ``scheduled_for`` + ``chain_id`` + ``kind`` is the idempotency key of scheduled runs."""

    team_id: str
    kind: RunKind = RunKind.BACKUP
    chain_id: int | None = None
    repository_id: int | None = None
    priority: int = 5
    scheduled_for: datetime | None = None  # due instant (default: now)
    window_ends_at: datetime | None = None  # not started by then → skipped
    requested_by: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"verify_data": True} for a check
    status: RunStatus = RunStatus.QUEUED  # SKIPPED to record a slot that must not run (with ``error``)
    error: str | None = None
    error_kind: str | None = None
    attempts: int = 0  # a retry carries the attempts of the run it resumes
    retry_of: int | None = None  # … and names it
    spec: Mapping[str, Any] | None = None  # what a restore or drill does (Run.spec); a retry carries it


@dataclass
class RunOutcome:
    """A non-backup run's result (a check): what :meth:`RunQueue.complete` stores."""

    status: str  # "ok" | "warning" | "failed"
    kind: str | None = None
    reason: str = ""
    hint: str = ""
    stats: dict[str, Any] | None = None
    log: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@runtime_checkable
class RunQueue(Protocol):
    async def enqueue(self, spec: RunSpec) -> Run | None:
        """Queue a run; None when a run for the same chain, kind and ``scheduled_for`` already exists."""

    async def enqueue_many(self, specs: Sequence[RunSpec]) -> list[Run]:
        """Queue many runs in few statements (the scheduler at a busy minute); same idempotency as :meth:`enqueue`.
        Returns the runs created, in the order of ``specs``."""

    async def claim(self, worker_id: str, *, now: datetime | None = None) -> Run | None:
        """The next due run, moved to ``running`` (or None). Never two running runs of one ``lock_key``."""

    async def complete(self, run: Run, result: ChainResult | RunOutcome) -> Run:
        """Store the result; a failed result is handled as :meth:`fail` (retried when its kind is transient)."""

    async def fail(self, run: Run, error: str, *, kind: str | None = None, transient: bool | None = None) -> Run:
        """Retry with backoff (transient) or fail for good; ``transient`` defaults to :func:`is_transient`."""

    async def interrupt(self, run: Run, reason: str) -> Run | None:
        """Mark a running run ``interrupted`` and queue its retry (returned, or None after max attempts)."""

    async def recover_interrupted(self) -> list[tuple[Run, Run | None]]:
        """At start-up: runs a crash left ``running`` → interrupted + retry. Returns (interrupted, retry) pairs.
        The embedded queue takes every running run (it is the only process); scale-out backends only those of
        dead workers."""

    async def recover_stalled(self) -> list[tuple[Run, Run | None]]:
        """Periodically, while workers run: runs of workers that died since (interrupted + retry). The embedded
        queue has no other process to outlive, so it finds none."""

    async def skip_expired(self, *, now: datetime | None = None) -> list[Run]:
        """Queued runs whose window ended before they started → ``skipped`` with a reason."""

    async def depth(self) -> int:
        """How many runs wait (``queued``)."""

    async def open(self) -> None:
        """Connect what the backend needs beyond the app's database (no-op for the embedded queue)."""

    async def close(self) -> None:
        """Release it again; after the worker stopped, so its unfinished runs are already interrupted."""


def _slot_key(spec: RunSpec) -> tuple[str, int, str, datetime] | None:
    """The idempotency key of a scheduled run: its chain (or, for a repository's own prune/check, its repository),
    kind and slot. Runs without a slot (run now, retries) have none."""
    if spec.scheduled_for is None:
        return None
    if spec.chain_id is not None:
        return ("chain", spec.chain_id, str(RunKind(spec.kind)), _utc(spec.scheduled_for))
    if spec.repository_id is not None:
        return ("repository", spec.repository_id, str(RunKind(spec.kind)), _utc(spec.scheduled_for))
    return None


async def _existing_keys(keys: Sequence[tuple[str, int, str, datetime]]) -> set[tuple[str, int, str, datetime]]:
    """Which of ``keys`` are runs already (a few range queries, whatever the number of keys)."""
    taken: set[tuple[str, int, str, datetime]] = set()
    for owner, column in (("chain", "chain_id"), ("repository", "repository_id")):
        mine = [k for k in keys if k[0] == owner]
        if not mine:
            continue
        ids = sorted({k[1] for k in mine})
        moments = sorted({k[3] for k in mine})
        for start in range(0, len(ids), 500):
            query = Run.filter(**{f"{column}__in": ids[start:start + 500]},
                               scheduled_for__gte=moments[0], scheduled_for__lte=moments[-1])  # fmt: skip
            if owner == "repository":
                query = query.filter(chain_id=None)
            found = await query.values_list(column, "kind", "scheduled_for")
            taken.update((owner, ident, str(kind), _utc(moment)) for ident, kind, moment in found)
    return taken


async def _without_existing(specs: Sequence[RunSpec]) -> list[RunSpec]:
    """Drop specs whose slot (see :func:`_slot_key`) is already a run, or repeated within ``specs``."""
    keys = [key for key in map(_slot_key, specs) if key is not None]
    taken = await _existing_keys(keys) if keys else set()
    fresh = []
    for spec in specs:
        key = _slot_key(spec)
        if key is not None:
            if key in taken:
                continue
            taken.add(key)
        fresh.append(spec)
    return fresh


async def _repositories_of(specs: Sequence[RunSpec]) -> dict[int, int]:
    """chain id → repository id, for specs that name a chain but not its repository (one query)."""
    from storage.models import BackupChain

    wanted = sorted({s.chain_id for s in specs if s.repository_id is None and s.chain_id is not None})
    found: dict[int, int] = {}
    for start in range(0, len(wanted), 500):
        rows = await BackupChain.filter(id__in=wanted[start:start + 500]).values_list("id", "repository_id")
        found.update(dict(rows))
    return found


def _row(spec: RunSpec, repositories: Mapping[int, int], now: datetime) -> Run:
    """The one place a Run row is built: every run (scheduled, run now, retry, the wizard's first run) is complete
    here — due time, repository lock key — so no queue has to repair rows later."""
    scheduled = _utc(spec.scheduled_for)
    repository_id = spec.repository_id
    if repository_id is None and spec.chain_id is not None:
        repository_id = repositories.get(spec.chain_id)
    final = spec.status != RunStatus.QUEUED
    stats: dict[str, Any] = {"options": dict(spec.options)} if spec.options else {}
    if spec.retry_of is not None:
        stats["retry_of"] = spec.retry_of
    return Run(
        team_id=spec.team_id, chain_id=spec.chain_id, repository_id=repository_id, kind=spec.kind,
        status=spec.status, priority=spec.priority, attempts=spec.attempts,
        next_attempt_at=None if final else (scheduled or now), lock_key=lock_key_for(repository_id),
        scheduled_for=scheduled or now, window_ends_at=_utc(spec.window_ends_at), requested_by=spec.requested_by,
        stats=stats or None, error=spec.error, error_kind=spec.error_kind, finished_at=now if final else None,
        created_at=now, spec=dict(spec.spec) if spec.spec is not None else None,
    )  # fmt: skip


async def insert_rows(specs: Sequence[RunSpec]) -> list[Run]:
    """Store ``specs`` as Run rows (idempotent per chain + kind + ``scheduled_for``); the rows created, in order."""
    fresh = await _without_existing(specs)
    if not fresh:
        return []
    repositories = await _repositories_of(fresh)
    now = datetime.now(UTC)
    rows = [_row(spec, repositories, now) for spec in fresh]
    async with in_transaction() as conn:
        if len(rows) == 1:
            await rows[0].save(using_db=conn)
        else:
            last = await Run.all().using_db(conn).order_by("-id").limit(1).values_list("id", flat=True)
            await Run.bulk_create(rows, batch_size=500, using_db=conn)
            if any(row.id is None for row in rows):
                # Engines that do not return bulk-inserted keys: read them back in insertion order.
                ids = await (Run.filter(id__gt=last[0] if last else 0).using_db(conn).order_by("id")
                             .values_list("id", flat=True))  # fmt: skip
                for row, ident in zip(rows, ids[-len(rows):], strict=True):
                    row.id = ident
    return rows


async def store_result(run: Run, result: ChainResult | RunOutcome) -> tuple[str, str | None, str, str]:
    """Write ``result`` onto the run's row; returns (status, kind, reason, hint) so the caller can retry a failure."""
    if isinstance(result, ChainResult):
        await record(run, result)
        return result.status, result.kind, result.reason, result.hint
    status = result.status
    run.status = {"ok": RunStatus.SUCCEEDED, "warning": RunStatus.WARNING}.get(status, RunStatus.FAILED)
    run.started_at = result.started_at or run.started_at
    run.finished_at = result.finished_at or datetime.now(UTC)
    options = (run.stats or {}).get("options")
    run.stats = {**(result.stats or {}), **({"options": options} if options else {})}
    run.error = None if status != "failed" else f"{result.reason} {result.hint}".strip()
    run.error_kind = result.kind
    run.log_excerpt = result.log
    await run.save()
    return status, result.kind, result.reason, result.hint


def failure_text(reason: str, hint: str) -> str:
    return f"{reason} {hint}".strip() or "failed"


async def create_retry(run: Run, now: datetime) -> Run:
    """The queued run that resumes an interrupted one: same chain, slot, priority and options, attempts carried."""
    options = (run.stats or {}).get("options") or {}
    spec = RunSpec(team_id=run.team_id, kind=run.kind, chain_id=run.chain_id,  # type: ignore[attr-defined]
                   repository_id=run.repository_id, priority=run.priority,  # type: ignore[attr-defined]
                   scheduled_for=run.scheduled_for, window_ends_at=run.window_ends_at, requested_by=run.requested_by,
                   options=options, attempts=run.attempts, retry_of=run.id,
                   spec={k: v for k, v in run.spec.items() if k != "result"} if run.spec else None)  # fmt: skip
    retry = _row(spec, {}, now)
    retry.next_attempt_at = now  # due at once, though its slot stays the original one
    await retry.save()
    return retry


def window_reason(run: Run) -> str:
    ends = run.window_ends_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"Not started inside its window (it ended {ends}); skipped rather than run outside it."


CRASH_REASON = ("The bot stopped while this run was in progress (crash or kill); it is retried and was not "
                "reported successful.")  # fmt: skip


async def _still_running(run: Run) -> bool:
    """A result for a run that is no longer ``running`` (interrupted meanwhile) must not overwrite its outcome."""
    running = await Run.filter(id=run.id, status=RunStatus.RUNNING).exists()
    if not running:
        log.warning("run %s is no longer running (interrupted meanwhile); its late result is not stored", run.id)
    return running


class RowQueue:
    """What every backend does the same way on the Run rows: inserting them, the retry policy, windows, depth."""

    def __init__(self, *, max_attempts: int = 4, backoff: float = 60.0, backoff_cap: float = 3600.0,
                 batch: int = 50) -> None:  # fmt: skip
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        self.batch = batch

    def delay(self, attempts: int) -> timedelta:
        """Backoff before attempt ``attempts + 1``: backoff × 2^(attempts−1), capped."""
        return timedelta(seconds=min(self.backoff * 2 ** max(attempts - 1, 0), self.backoff_cap))

    def retry_at(self, run: Run, transient: bool, now: datetime) -> datetime | None:
        """When a failed attempt runs again, or None when it fails for good (permanent, or out of attempts)."""
        return now + self.delay(run.attempts) if transient and run.attempts < self.max_attempts else None

    async def enqueue(self, spec: RunSpec) -> Run | None:
        created = await self.enqueue_many([spec])
        return created[0] if created else None

    async def enqueue_many(self, specs: Sequence[RunSpec]) -> list[Run]:
        return await insert_rows(specs)

    async def skip_expired(self, *, now: datetime | None = None) -> list[Run]:
        now = _utc(now) or datetime.now(UTC)
        skipped = []
        for run in await Run.filter(status=RunStatus.QUEUED, window_ends_at__lte=now).order_by("id"):
            reason = window_reason(run)
            changed = await Run.filter(id=run.id, status=RunStatus.QUEUED).update(
                status=RunStatus.SKIPPED, finished_at=now, error=reason, error_kind="window_missed"
            )
            if changed:
                run.status, run.finished_at, run.error, run.error_kind = RunStatus.SKIPPED, now, reason, "window_missed"
                skipped.append(run)
        return skipped

    async def recover_stalled(self) -> list[tuple[Run, Run | None]]:
        return []

    async def depth(self) -> int:
        return await Run.filter(status=RunStatus.QUEUED).count()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None


class SqlQueue(RowQueue):
    """The embedded queue on the app's database (one bot process; see the module docstring)."""

    # --------------------------------------------------------------------------------------------- claim

    async def claim(self, worker_id: str, *, now: datetime | None = None) -> Run | None:
        now = _utc(now) or datetime.now(UTC)
        busy = set(await Run.filter(status=RunStatus.RUNNING).exclude(lock_key=None).values_list("lock_key", flat=True))
        candidates = (
            await Run.filter(status=RunStatus.QUEUED, next_attempt_at__lte=now)
            .order_by("-priority", "next_attempt_at", "id")
            .limit(self.batch)
        )
        for run in candidates:
            if run.window_ends_at is not None and run.window_ends_at <= now:
                continue  # skip_expired() reports it
            if run.lock_key is not None and run.lock_key in busy:
                continue
            if await self._take(run, now, worker_id):
                log.info("worker %s claimed run %s (%s)", worker_id, run.id, run.lock_key)
                return await Run.get(id=run.id)
            if run.lock_key is not None:
                busy.add(run.lock_key)  # lost to a competitor, or the repository became busy
        return None

    async def _take(self, run: Run, now: datetime, worker_id: str) -> bool:
        async with in_transaction() as conn:
            repository_id = _repository_of(run.lock_key)
            if repository_id is not None:
                # The per-repository mutex: competitors for this repository wait here until we commit.
                await Repository.filter(id=repository_id).using_db(conn).select_for_update().values_list("id")
            if run.lock_key is not None:
                running = await (
                    Run.filter(lock_key=run.lock_key, status=RunStatus.RUNNING)
                    .using_db(conn).select_for_update().values_list("id", flat=True)
                )  # fmt: skip
                if running:
                    return False
            taken = (
                await Run.filter(id=run.id, status=RunStatus.QUEUED)
                .using_db(conn)
                .update(status=RunStatus.RUNNING, started_at=now, finished_at=None, attempts=F("attempts") + 1,
                        worker_id=worker_id)
            )
            return taken == 1

    # ---------------------------------------------------------------------------------------- outcomes

    async def complete(self, run: Run, result: ChainResult | RunOutcome) -> Run:
        if not await _still_running(run):
            return await Run.get(id=run.id)
        status, kind, reason, hint = await store_result(run, result)
        if status == "failed":
            return await self._failed(run, failure_text(reason, hint), kind, None)
        return run

    async def fail(self, run: Run, error: str, *, kind: str | None = None, transient: bool | None = None) -> Run:
        if not await _still_running(run):
            return await Run.get(id=run.id)
        return await self._failed(run, error, kind, transient)

    async def _failed(self, run: Run, error: str, kind: str | None, transient: bool | None) -> Run:
        transient = is_transient(kind) if transient is None else transient
        now = datetime.now(UTC)
        run.error, run.error_kind = error, kind
        run.finished_at = now
        retry = self.retry_at(run, transient, now)
        run.status = RunStatus.QUEUED if retry else RunStatus.FAILED
        run.next_attempt_at = retry or run.next_attempt_at
        await Run.filter(id=run.id).update(
            status=run.status, error=error, error_kind=kind, finished_at=now, next_attempt_at=run.next_attempt_at
        )
        return run

    async def interrupt(self, run: Run, reason: str) -> Run | None:
        now = datetime.now(UTC)
        changed = await Run.filter(id=run.id, status=RunStatus.RUNNING).update(
            status=RunStatus.INTERRUPTED, finished_at=now, error=reason, error_kind="interrupted"
        )
        if not changed:
            return None
        run.status, run.finished_at, run.error, run.error_kind = RunStatus.INTERRUPTED, now, reason, "interrupted"
        if run.attempts >= self.max_attempts:
            return None
        return await create_retry(run, now)

    async def recover_interrupted(self) -> list[tuple[Run, Run | None]]:
        found = []
        for run in await Run.filter(status=RunStatus.RUNNING).order_by("id"):
            found.append((run, await self.interrupt(run, CRASH_REASON)))
        return found
