"""Turning schedules into queued runs when they are due, from memory, at the due instant.

What is scheduled: every *active* chain's backups (``chain.schedule``), checks (``chain.schedule["check"]``, a
schedule mapping plus optional ``verify_data`` / ``scope``) and restore drills (``chain.schedule["drill"]``: days
and time, ``every`` weekly or monthly — the first of those days in each month — and the drill ``server_id``), and
the ``prune`` runs of every repository that has a
``prune_schedule`` and at least one active chain (a repository whose chains are all paused is left alone). Paused,
pending, draft and rejected chains are never scheduled. The slot math is ``bot.backup.schedule``'s, the same as the
wizard's preview.

Why in memory: walking 10,000 chains every minute (slots, one existence query and one insert per slot) cannot
dispatch a busy minute within a second. The scheduler reads the active rows once (only the columns it needs),
keeps one heap of ``(next due instant, plan)`` and sleeps until the earliest instant; then it queues every due
slot with one bulk :meth:`RunQueue.enqueue_many` per ``batch`` and pushes each plan's next slot.

**Queued ahead, woken on time.** A slot is queued ``lead`` seconds before it is due: its row waits with
``next_attempt_at`` = the slot (the queue claims nothing earlier), so inserting thousands of rows never delays
them, and at the due instant the scheduler only wakes the worker (``on_enqueued``). A chain that is paused or
edited while such a row waits gets it withdrawn (deleted: it was never due, never claimed, never seen).

Missed slots: at start-up every slot since ``now - lookback`` (not before the row was created) is queued, so slots
missed while the bot was down still run (a slot whose window has ended is then skipped and reported by the worker).
Idempotent: chain + kind + ``scheduled_for`` is the queue's key (repository + ``scheduled_for`` for prunes, checked
here), so a slot is never queued twice however often it is looked at.

Changes: :meth:`Scheduler.refresh` re-reads one chain or repository at once (callers: the wizard, Pause/Resume,
approvals, edits); a periodic :meth:`Scheduler.resync` (every ``resync`` seconds) re-reads every active row and
re-plans only those whose fingerprint (schedule, zone, priority, dependency, repository) changed, so a change
nobody announced is noticed within minutes. A plan that appears (created, approved, resumed) gets the slots since
the scheduler last looked, so none falls between two looks; a plan that changed starts from now.

Dependencies: a chain with ``depends_on`` runs a slot only after its dependency's run for that slot (its latest
backup run scheduled at or before the slot) succeeded (or warned). While that run is queued or running the slot
waits, re-examined every ``every`` seconds (all waiting slots in one query); when it failed, was skipped,
cancelled or interrupted for good, the slot is recorded ``skipped`` with the reason and reported. If the dependency
is not active and has no run, or no run came within ``lookback``, the slot is skipped too.

Hourly maintenance: callables in ``hourly`` (e.g. ``Notifier.post_stale``) run at start and every ``hour`` seconds,
in their own task so a slow one never delays a dispatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.alerts import AlertBus
from bot.backup import schedule as sched
from bot.runs import nudge
from bot.runs.execute import announce
from bot.runs.queue import RunQueue, RunSpec
from storage.models import BackupChain, ChainStatus, Repository, Run, RunKind, RunStatus

log = logging.getLogger(__name__)

OK = (RunStatus.SUCCEEDED, RunStatus.WARNING)
PENDING = (RunStatus.QUEUED, RunStatus.RUNNING)
CHAIN_FIELDS = ("id", "team_id", "repository_id", "schedule", "timezone", "priority", "depends_on_id", "created_at")
REPOSITORY_FIELDS = ("id", "team_id", "prune_schedule", "created_at")
CHUNK = 500  # ids per IN (…) list

Owner = tuple[str, int]  # ("chain", id) or ("repository", id): one row
Key = tuple[str, int, str]  # owner + run kind: one plan
Hourly = Callable[[], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Plan:
    """One schedule the scheduler follows: a chain's backups or checks, or a repository's prunes."""

    kind: RunKind
    team_id: str
    spec: sched.Spec
    priority: int
    repository_id: int
    floor: datetime  # no slot before the row existed
    chain_id: int | None = None
    depends_on: int | None = None
    options: Mapping[str, Any] | None = None
    monthly: bool = False  # only the first slot of each month (the first of its weekdays): monthly drills

    @property
    def key(self) -> Key:
        if self.chain_id is None:
            return ("repository", self.repository_id, self.kind.value)
        return ("chain", self.chain_id, self.kind.value)

    def run_spec(self, slot: sched.Slot, **extra: Any) -> RunSpec:
        return RunSpec(self.team_id, kind=self.kind, chain_id=self.chain_id, repository_id=self.repository_id,
                       priority=self.priority, scheduled_for=slot.start.astimezone(UTC), window_ends_at=slot.end,
                       options=dict(self.options or {}), **extra)  # fmt: skip


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _fingerprint(row: Mapping[str, Any]) -> int:
    """What decides a row's plans (every loaded column but the creation time), hashed: a row whose fingerprint is
    unchanged is not re-planned. ``repr`` keeps the stored JSON's key order, which only changes with the value."""
    return hash(repr([value for name, value in row.items() if name != "created_at"]))


async def _add_created_at(rows: Mapping[Owner, dict[str, Any]]) -> None:
    """Fill ``created_at`` into rows about to be planned (a plan has no slot before its row existed)."""
    for kind, model in (("chain", BackupChain), ("repository", Repository)):
        ids = sorted(owner[1] for owner, row in rows.items() if owner[0] == kind and "created_at" not in row)
        for chunk in _chunks(ids, CHUNK):
            for ident, created in await model.filter(id__in=chunk).values_list("id", "created_at"):
                rows[(kind, ident)]["created_at"] = created


def _parsed(raw: Any, owner: Owner, what: str, **row: Any) -> sched.Spec | None:
    try:
        return sched.stored(raw, **row)
    except sched.ScheduleError as exc:
        log.warning("%s %s has an unusable %s schedule: %s", owner[0], owner[1], what, exc)
        return None


def chain_plans(row: Mapping[str, Any]) -> list[Plan]:
    """The backup and check plans of one active chain's row (``CHAIN_FIELDS``)."""
    owner: Owner = ("chain", row["id"])
    schedule = row["schedule"] if isinstance(row["schedule"], Mapping) else {}
    zone = {"timezone": row["timezone"], "priority": row["priority"]}
    common = {"team_id": row["team_id"], "priority": row["priority"] or sched.DEFAULT_PRIORITY,
              "repository_id": row["repository_id"], "chain_id": row["id"],
              "floor": _utc(row["created_at"]) - timedelta(seconds=1)}  # fmt: skip
    plans = []
    if (backup := _parsed(schedule, owner, "backup", **zone)) is not None:
        plans.append(Plan(RunKind.BACKUP, spec=backup, depends_on=row["depends_on_id"], **common))
    check = schedule.get("check")
    if (spec := _parsed(check, owner, "check", **zone)) is not None:
        options = {k: check[k] for k in ("verify_data", "scope") if k in check}
        plans.append(Plan(RunKind.CHECK, spec=spec, options=options or None, **common))
    drill = schedule.get("drill")
    if (spec := _parsed(drill, owner, "drill", **zone)) is not None:
        server = {"server_id": drill["server_id"]} if drill.get("server_id") else None
        plans.append(Plan(RunKind.DRILL, spec=spec, options=server, monthly=drill.get("every") == "monthly",
                          **common))  # fmt: skip
    return plans


def repository_plans(row: Mapping[str, Any]) -> list[Plan]:
    """The prune plan of a repository with a ``prune_schedule`` (``REPOSITORY_FIELDS``)."""
    raw = row["prune_schedule"]
    spec = _parsed(raw, ("repository", row["id"]), "prune")
    if spec is None:
        return []
    return [Plan(RunKind.PRUNE, team_id=row["team_id"], spec=spec, priority=spec.priority, repository_id=row["id"],
                 floor=_utc(row["created_at"]) - timedelta(seconds=1))]  # fmt: skip


def _first_after(plan: Plan, moment: datetime) -> sched.Slot:
    """The plan's first slot after ``moment`` (a monthly plan: the first in a month's first seven days)."""
    slots = sched.iter_slots(plan.spec, moment)
    if not plan.monthly:
        return next(slots)
    return next(slot for slot in slots if slot.start.day <= 7)


def _due(slot: sched.Slot) -> float:
    return slot.start.timestamp()


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _key_of(run: Run) -> Key:
    if run.chain_id is None:  # type: ignore[attr-defined]
        return ("repository", run.repository_id, RunKind(run.kind).value)  # type: ignore[attr-defined]
    return ("chain", run.chain_id, RunKind(run.kind).value)  # type: ignore[attr-defined]


class Scheduler:
    """The schedules of the active rows in memory (see the module docstring); one per bot process.

    ``lead``: seconds a slot is queued before it is due (0 queues at the due instant); ``resync``: seconds between
    full re-reads; ``batch``: runs per ``enqueue_many``; ``hourly`` / ``hour``: maintenance callables and their
    period; ``every``: how often waiting dependents are looked at again, and the longest sleep."""

    def __init__(self, queue: RunQueue, *, alerts: AlertBus | None = None, lookback: timedelta = timedelta(hours=24),
                 every: float = 60.0, on_enqueued: Callable[[], Any] | None = None, lead: float = 10.0,
                 resync: float = 300.0, batch: int = 1000, hourly: Sequence[Hourly] = (),
                 hour: float = 3600.0) -> None:  # fmt: skip
        self.queue = queue
        self.alerts = alerts
        self.lookback = lookback
        self.every = every  # re-examination of waiting dependents, and the longest sleep
        self.on_enqueued = on_enqueued  # e.g. Worker.wake: called when queued runs are due
        self.lead = lead
        self.resync_every = resync
        self.batch = batch
        self.hourly = tuple(hourly)
        self.hour = hour
        self._fingerprints: dict[Owner, int] = {}
        self._owned: dict[Owner, tuple[Key, ...]] = {}
        self._plans: dict[Key, Plan] = {}
        self._next: dict[Key, tuple[int, sched.Slot]] = {}  # each plan's next slot (and its heap entry's number)
        self._heap: list[tuple[float, int, Key]] = []  # (due instant, entry number, plan); stale entries skipped
        self._seq = itertools.count()
        self._waiting: dict[Key, dict[float, sched.Slot]] = {}  # dependents' slots waiting for their dependency
        self._staged: dict[Key, float] = {}  # the due instant of a plan's run queued ahead of time
        self._wakes: list[float] = []  # due instants of runs queued ahead: wake the worker then
        self._backlog: list[tuple[Key, sched.Slot]] = []  # slots whose enqueue failed: tried again
        self._chain_repository: dict[int, int] = {}  # active chain → repository (a repository prunes if it has one)
        self._synced_at: datetime | None = None
        self._settled_at = 0.0
        self._retry_at = 0.0
        self._resync_took = 0.0
        self._kick = asyncio.Event()

    # ------------------------------------------------------------------------------------------- loading

    @property
    def plans(self) -> int:
        """How many schedules are followed (for logs and the benchmark)."""
        return len(self._plans)

    async def resync(self, now: datetime | None = None) -> None:
        """Re-read every active chain and every repository with a prune schedule; re-plan only what changed.

        Creation times are read only for rows not planned yet (parsing 10,000 timestamps every few minutes would
        cost more than everything else a resync does)."""
        began = time.perf_counter()
        now = _utc(now or datetime.now(UTC))
        chains = await BackupChain.filter(status=ChainStatus.ACTIVE).values(*CHAIN_FIELDS[:-1])
        repositories = await Repository.filter(prune_schedule__isnull=False).values(*REPOSITORY_FIELDS[:-1])
        self._chain_repository = {row["id"]: row["repository_id"] for row in chains}
        used = set(self._chain_repository.values())
        wanted: dict[Owner, dict[str, Any]] = {("chain", row["id"]): row for row in chains}
        wanted.update({("repository", row["id"]): row for row in repositories if row["id"] in used})
        withdraw: list[Key] = []
        for owner in [owner for owner in self._fingerprints if owner not in wanted]:
            withdraw.extend(self._drop(owner, now))
        changed = {owner: row for owner, row in wanted.items() if self._fingerprints.get(owner) != _fingerprint(row)}
        await _add_created_at(changed)
        for owner, row in changed.items():
            withdraw.extend(self._apply(owner, row, now))
        self._synced_at = now
        await self._withdraw(withdraw, now)
        self._compact()
        self._resync_took = time.perf_counter() - began

    async def refresh(self, chain_id: int | None = None, *, repository_id: int | None = None,
                      now: datetime | None = None) -> None:  # fmt: skip
        """Re-read one chain (and its repository's prune plan) or one repository now; everything without an id.

        Cheap (one or two single-row queries): call it after creating, approving, pausing, resuming or editing a
        chain, or editing a repository's prune schedule. A running :meth:`run_forever` re-plans its sleep at once.
        """
        now = _utc(now or datetime.now(UTC))
        if self._synced_at is None or (chain_id is None and repository_id is None):
            await self.resync(now)
        else:
            withdraw: list[Key] = []
            repositories = {repository_id} if repository_id is not None else set()
            if chain_id is not None:
                repositories.add(self._chain_repository.pop(chain_id, None))
                rows = await BackupChain.filter(id=chain_id, status=ChainStatus.ACTIVE).values(*CHAIN_FIELDS)
                for row in rows:
                    self._chain_repository[chain_id] = row["repository_id"]
                    repositories.add(row["repository_id"])
                    withdraw.extend(self._apply(("chain", chain_id), row, now))
                if not rows:
                    withdraw.extend(self._drop(("chain", chain_id), now))
            for ident in repositories - {None}:
                withdraw.extend(await self._refresh_repository(ident, now))  # type: ignore[arg-type]
            await self._withdraw(withdraw, now)
        self._kick.set()

    async def _refresh_repository(self, repository_id: int, now: datetime) -> list[Key]:
        owner: Owner = ("repository", repository_id)
        rows = []
        if repository_id in self._chain_repository.values():
            rows = await Repository.filter(id=repository_id, prune_schedule__isnull=False).values(*REPOSITORY_FIELDS)
        if not rows:
            return self._drop(owner, now)
        return self._apply(owner, rows[0], now)

    def _apply(self, owner: Owner, row: Mapping[str, Any], now: datetime) -> list[Key]:
        """(Re-)plan ``owner`` unless its fingerprint is unchanged; returns plans whose queued-ahead run must go."""
        fingerprint = _fingerprint(row)
        if self._fingerprints.get(owner) == fingerprint:
            return []
        changed = owner in self._fingerprints
        withdraw = self._drop(owner, now) if changed else []
        if changed:
            since = now  # the old plan's slots were handled; the new plan's past slots never existed
        else:
            since = max(now - self.lookback, self._synced_at or now - self.lookback)
        plans = chain_plans(row) if owner[0] == "chain" else repository_plans(row)
        self._fingerprints[owner] = fingerprint
        self._owned[owner] = tuple(plan.key for plan in plans)
        for plan in plans:
            self._plans[plan.key] = plan
            self._push(plan.key, _first_after(plan, max(since, plan.floor)))
        return withdraw

    def _drop(self, owner: Owner, now: datetime) -> list[Key]:
        """Forget ``owner``'s plans; returns those with a run queued ahead that is not due yet."""
        self._fingerprints.pop(owner, None)
        withdraw = []
        for key in self._owned.pop(owner, ()):
            self._plans.pop(key, None)
            self._next.pop(key, None)
            self._waiting.pop(key, None)
            if self._staged.pop(key, 0.0) > now.timestamp():
                withdraw.append(key)
        return withdraw

    async def _withdraw(self, keys: Sequence[Key], now: datetime) -> None:
        """Delete runs queued ahead for plans that changed or stopped: never due, never claimed, never reported."""
        staged = Run.filter(status=RunStatus.QUEUED, attempts=0, requested_by=None, scheduled_for__gt=now)
        chains = sorted({key[1] for key in keys if key[0] == "chain"})
        repositories = sorted({key[1] for key in keys if key[0] == "repository"})
        for chunk in _chunks(chains, CHUNK):
            await staged.filter(chain_id__in=chunk).delete()
        for chunk in _chunks(repositories, CHUNK):
            await staged.filter(chain_id__isnull=True, kind=RunKind.PRUNE, repository_id__in=chunk).delete()

    def _push(self, key: Key, slot: sched.Slot) -> None:
        number = next(self._seq)
        self._next[key] = (number, slot)
        heapq.heappush(self._heap, (_due(slot), number, key))

    def _live(self, entry: tuple[float, int, Key]) -> bool:
        current = self._next.get(entry[2])
        return current is not None and current[0] == entry[1]

    def _compact(self) -> None:
        """Drop stale heap entries once they outnumber the live ones (many re-plans between two due instants)."""
        if len(self._heap) > 2 * len(self._next) + 1000:
            self._heap = [entry for entry in self._heap if self._live(entry)]
            heapq.heapify(self._heap)

    # ---------------------------------------------------------------------------------------- dispatching

    def _pop_due(self, horizon: float) -> list[tuple[Plan, sched.Slot]]:
        """Every live slot due by ``horizon`` (epoch seconds); each plan's next slot is pushed as it goes."""
        due = []
        while self._heap and self._heap[0][0] <= horizon:
            entry = heapq.heappop(self._heap)
            if not self._live(entry):
                continue
            key = entry[2]
            slot = self._next[key][1]
            plan = self._plans[key]
            due.append((plan, slot))
            self._push(key, _first_after(plan, slot.start))
        return due

    async def tick(self, now: datetime | None = None) -> list[Run]:
        """Queue every slot due by ``now`` + ``lead`` and decide waiting dependents; returns the runs created
        (queued or skipped). Loads the active rows on first use."""
        now = _utc(now or datetime.now(UTC))
        if self._synced_at is None:
            await self.resync(now)
        self._wake_due(now.timestamp())
        ready: list[tuple[Plan, RunSpec]] = []
        due = self._pop_due(now.timestamp() + self.lead)
        if self._backlog and now.timestamp() >= self._retry_at:
            backlog, self._backlog = self._backlog, []
            due.extend((self._plans[key], slot) for key, slot in backlog if key in self._plans)
        for plan, slot in due:
            if plan.kind == RunKind.BACKUP and plan.depends_on is not None:
                self._waiting.setdefault(plan.key, {})[_due(slot)] = slot
            else:
                ready.append((plan, plan.run_spec(slot)))
        created = await self._enqueue(ready, now)
        created.extend(await self._settle(now))
        return created

    async def _enqueue(self, ready: Sequence[tuple[Plan, RunSpec]], now: datetime) -> list[Run]:
        """Bulk-queue ``ready`` in batches, each followed by :meth:`_queued` (so a due batch wakes the worker at once,
        not after the last batch)."""
        ready = await self._without_queued_prunes(ready)
        planned = {plan.key: plan for plan, _ in ready}
        created: list[Run] = []
        for chunk in _chunks(ready, self.batch):
            try:
                made = await self.queue.enqueue_many([spec for _, spec in chunk])
            except Exception:
                log.exception("queueing %d scheduled runs failed; trying them again in %g s", len(chunk), self.every)
                self._backlog.extend((plan.key, self._slot_of(spec)) for plan, spec in chunk)
                self._retry_at = now.timestamp() + self.every
                continue
            created.extend(made)
            await self._queued(made, planned, now)
        return created

    async def _queued(self, made: Sequence[Run], planned: Mapping[Key, Plan], now: datetime) -> None:
        """Announce skipped slots, wake the worker for due runs, note the runs queued ahead (withdrawing those whose
        plan a :meth:`refresh` dropped or changed while they were being inserted)."""
        due_now = False
        orphans = []
        for run in made:
            moment = _utc(run.scheduled_for).timestamp()
            key = _key_of(run)
            if run.status == RunStatus.SKIPPED:
                await announce(self.alerts, run)
            elif moment <= now.timestamp():
                due_now = True
            elif self._plans.get(key) is not planned.get(key):
                orphans.append(key)
            else:
                self._staged[key] = moment
                heapq.heappush(self._wakes, moment)
        await self._withdraw(orphans, now)
        if due_now and self.on_enqueued is not None:
            self.on_enqueued()

    @staticmethod
    def _slot_of(spec: RunSpec) -> sched.Slot:
        assert spec.scheduled_for is not None
        return sched.Slot(spec.scheduled_for, spec.window_ends_at)

    async def _without_queued_prunes(self, ready: Sequence[tuple[Plan, RunSpec]]) -> list[tuple[Plan, RunSpec]]:
        """Prune slots already queued (the queue keys idempotency on chains; prunes belong to a repository)."""
        prunes = [spec for _, spec in ready if spec.chain_id is None]
        if not prunes:
            return list(ready)
        moments = [spec.scheduled_for for spec in prunes]
        repositories = sorted({spec.repository_id for spec in prunes})
        rows = await Run.filter(kind=RunKind.PRUNE, chain_id__isnull=True, repository_id__in=repositories,
                                scheduled_for__gte=min(moments), scheduled_for__lte=max(moments))\
            .values_list("repository_id", "scheduled_for")  # type: ignore[type-var]  # fmt: skip
        taken = {(ident, _utc(moment)) for ident, moment in rows}
        return [(plan, spec) for plan, spec in ready
                if spec.chain_id is not None or (spec.repository_id, spec.scheduled_for) not in taken]  # fmt: skip

    def _wake_due(self, now: float) -> None:
        """Wake the worker when runs queued ahead of time have become due."""
        woke = False
        while self._wakes and self._wakes[0] <= now:
            heapq.heappop(self._wakes)
            woke = True
        if woke and self.on_enqueued is not None:
            self.on_enqueued()

    # --------------------------------------------------------------------------------------- dependencies

    async def _settle(self, now: datetime) -> list[Run]:
        """Decide waiting dependents; a skip can decide a dependent's dependent, so look again (a few times)."""
        created: list[Run] = []
        for _ in range(4):
            if not self._waiting:
                break
            self._settled_at = now.timestamp()
            ready = await self._decide(now)
            if not ready:
                break
            created.extend(await self._enqueue(ready, now))
        return created

    async def _decide(self, now: datetime) -> list[tuple[Plan, RunSpec]]:
        waiting = [(self._plans[key], slot) for key, slots in self._waiting.items() for slot in slots.values()]
        parents = sorted({plan.depends_on for plan, _ in waiting if plan.depends_on is not None})
        starts = [_utc(slot.start) for _, slot in waiting]
        runs: dict[int, list[dict[str, Any]]] = {}
        names: dict[int, dict[str, Any]] = {}
        for chunk in _chunks(parents, CHUNK):
            for row in await Run.filter(chain_id__in=chunk, kind=RunKind.BACKUP, scheduled_for__lte=max(starts),
                                        scheduled_for__gt=min(starts) - self.lookback)\
                    .values("id", "chain_id", "scheduled_for", "status", "error"):  # fmt: skip
                runs.setdefault(row["chain_id"], []).append(row)
            for row in await BackupChain.filter(id__in=chunk).values("id", "name", "status"):
                names[row["id"]] = row
        ready = []
        for plan, slot in waiting:
            verdict = self._verdict(plan, _utc(slot.start), runs, names, now)
            if verdict is None:
                continue  # wait for the dependency's run
            del self._waiting[plan.key][_due(slot)]
            if not self._waiting[plan.key]:
                del self._waiting[plan.key]
            spec = plan.run_spec(slot)
            if verdict is not True:
                spec = replace(spec, status=RunStatus.SKIPPED, error=verdict, error_kind="dependency")
            ready.append((plan, spec))
        return ready

    def _verdict(self, plan: Plan, start: datetime, runs: Mapping[int, list[dict[str, Any]]],
                 chains: Mapping[int, dict[str, Any]], now: datetime) -> bool | str | None:  # fmt: skip
        """True: go; None: wait; a string: skip, with this reason."""
        parent = chains.get(plan.depends_on)  # type: ignore[arg-type]
        if parent is None:
            return True  # the dependency was deleted
        candidates = [r for r in runs.get(parent["id"], ())
                      if start - self.lookback < _utc(r["scheduled_for"]) <= start]  # fmt: skip
        run = max(candidates, key=lambda r: (_utc(r["scheduled_for"]), r["id"]), default=None)
        name = parent["name"]
        if run is None:
            if parent["status"] != ChainStatus.ACTIVE:
                status = ChainStatus(parent["status"]).value
                return f"It runs after {name}, which is {status} and did not run for this slot."
            if now - start > self.lookback:
                return f"It runs after {name}, which did not run for this slot within {self.lookback}."
            return None
        status = RunStatus(run["status"])
        if status in PENDING:
            return None
        if status in OK:
            return True
        why = f": {run['error']}" if run["error"] else ""
        return f"It runs after {name}, whose run #{run['id']} for this slot ended {status.value}{why}"

    # -------------------------------------------------------------------------------------------- the loop

    def _next_moment(self, now: float) -> float:
        """The epoch second of the next thing to do: queue a slot, wake the worker, re-examine, resync."""
        while self._heap and not self._live(self._heap[0]):
            heapq.heappop(self._heap)
        moments = [now + self.every]
        if self._heap:
            moments.append(self._heap[0][0] - self.lead)
        if self._wakes:
            moments.append(self._wakes[0])
        if self._waiting:
            moments.append(self._settled_at + self.every)
        if self._backlog:
            moments.append(self._retry_at)
        if self._synced_at is not None:
            moments.append(self._synced_at.timestamp() + self.resync_every)
        return min(moments)

    def _resync_due(self, now: float) -> bool:
        """A periodic resync is due, and nothing is about to be queued or woken (it would wait behind the resync)."""
        if self._synced_at is None:
            return True
        overdue = now - self._synced_at.timestamp()
        if overdue < self.resync_every:
            return False
        soon = [self._heap[0][0] - self.lead] if self._heap else []
        soon += self._wakes[:1]
        quiet = all(moment - now > max(2.0, 3 * self._resync_took) for moment in soon)
        return quiet or overdue > 2 * self.resync_every

    async def _maintain(self) -> None:
        for job in self.hourly:
            try:
                await job()
            except Exception:
                log.exception("hourly maintenance %s failed", getattr(job, "__qualname__", job))

    async def _pause(self, stop: asyncio.Event, delay: float) -> None:
        kick = asyncio.ensure_future(self._kick.wait())
        halt = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({kick, halt}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (kick, halt):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def run_forever(self, stop: asyncio.Event | None = None) -> None:
        """Load, then sleep until the next due instant (or a :meth:`refresh`), queue, repeat; until ``stop``."""
        stop = stop or asyncio.Event()
        maintenance: asyncio.Task | None = None
        next_hour = time.time()
        unregister = nudge.on_schedule_change(self.refresh)  # Slack's pause/resume/approve/create tell us at once
        try:
            while not stop.is_set():
                self._kick.clear()
                now = time.time()
                self._wake_due(now)
                try:
                    if self._resync_due(now):
                        await self.resync()
                    await self.tick()
                except Exception:
                    log.exception("the scheduler's tick failed")
                if self.hourly and time.time() >= next_hour and (maintenance is None or maintenance.done()):
                    maintenance = asyncio.create_task(self._maintain(), name="hourly-maintenance")
                    next_hour = time.time() + self.hour
                now = time.time()
                moments = [self._next_moment(now)] + ([next_hour] if self.hourly else [])
                await self._pause(stop, max(0.0, min(moments) - now))
        finally:
            unregister()
            if maintenance is not None and not maintenance.done():
                maintenance.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await maintenance
