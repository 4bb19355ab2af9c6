"""Step 5 — storage pool: the workspace's pools with free space measured now, tier, and the projected repository
size against that free space (a warning when tight, a refusal when clearly too small).

Projected size, and why these factors
-------------------------------------
From the source size estimate ``S`` of step 3 (``data["size_estimate"]``: bytes, or the disk probe's
``SizeEstimate`` as a dict with ``total_bytes``):

* the first archive stores ``S × c``. ``c`` = 1.0 for files, system and Docker volumes: bulk data (media, packages,
  archives, VM images) is mostly compressed already, so lz4/zstd gain little, and assuming a gain that does not
  come would fill the pool. ``c`` = 0.5 for database dumps: SQL text and uncompressed ``pg_dump -Fc --compress=0``
  output shrink 2–5× under lz4/zstd; 0.5 is the conservative end. ``compression: none`` means ``c`` = 1.
* every further archive kept by the retention adds only what changed (deduplication): ``r × S × c`` with a churn
  ``r`` of 2 % for files (typical daily change of file servers is 1–3 %) and 10 % for dumps (a dump re-serialises
  the database, so changed rows shift chunk boundaries and defeat part of the deduplication).
* the number of archives kept ``N`` comes from the retention answer when there is one (a template may bring it),
  else from the default preset 7 daily + 4 weekly + 6 monthly + 1 yearly = 18.

``projected = S × c × (1 + r × (N − 1))``. The pool is refused when even the first archive (``S × c``) does not
fit in its free space (clearly too small), and it gets a warning when the free space is below 1.25 × projected
(borg needs working room: a compaction rewrites segments before it frees the old ones) or when the projected
growth would push the pool past its alert threshold.

A pool needs a server with a confirmed host key, or be ``local`` (a directory on the bot's own host), which only
a source on the bot's own host can use. Free space is measured with the disk probe on the pool's server (the
nearest existing directory of the base path, which may not exist before the first repository) and written back
to the pool row; the view waits at most :data:`VIEW_BUDGET` seconds for all pools together (the person is
waiting for the modal) and shows the last stored value for pools that did not answer in time; the submit measures
the chosen pool again, with a longer limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.access import Refused, authz
from bot.backup import plan as planning
from bot.backup.plan import PlanProblem, human
from bot.flows.wizard.steps.base import BaseStep, Errors, Field, Option, StepView, WizardContext
from bot.services.answers import DATABASE_TYPES
from storage.models import PoolKind, Repository, Server, StoragePool
from storage.tenancy import Tenant

VIEW_BUDGET = 2.5  # seconds for measuring all pools while the view is built
SUBMIT_TIMEOUT = 20.0
DEFAULT_ARCHIVES = 18  # 7 daily + 4 weekly + 6 monthly + 1 yearly
HEADROOM = 1.25
FILE_CHURN, DUMP_CHURN = 0.02, 0.10
DUMP_COMPRESSION = 0.5
MAX_RADIO = 10  # Slack's limit for radio buttons; more pools use a select menu


def size_estimate(data: Mapping[str, Any]) -> int | None:
    """The source size step 3 stored (``size_estimate``: bytes or a SizeEstimate dict), if any."""
    value = data.get("size_estimate")
    if isinstance(value, Mapping):
        value = value.get("total_bytes")
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else None


def archives_kept(retention: Mapping[str, Any] | None) -> int:
    """How many archives a retention answer keeps at most (``keep_within`` counted as one per day)."""
    if not retention:
        return DEFAULT_ARCHIVES
    total = sum(v for k, v in retention.items() if k.startswith("keep_") and isinstance(v, int) and v > 0)
    within = retention.get("keep_within")
    if isinstance(within, str) and within[:-1].isdigit():
        total += int(within[:-1]) * {"H": 1 / 24, "d": 1, "w": 7, "m": 31, "y": 365}.get(within[-1], 1)
    return max(1, round(total)) if total else DEFAULT_ARCHIVES


@dataclass(frozen=True)
class Projection:
    source_bytes: int
    first_bytes: int  # the first archive
    projected_bytes: int  # after the retention has filled up
    archives: int


def projection(data: Mapping[str, Any]) -> Projection | None:
    size = size_estimate(data)
    if size is None:
        return None
    dump = data.get("backup_type") in DATABASE_TYPES
    compression = (data.get("repository") or {}).get("compression") or "lz4"
    factor = 1.0 if compression == "none" or not dump else DUMP_COMPRESSION
    churn = DUMP_CHURN if dump else FILE_CHURN
    archives = archives_kept(data.get("retention"))
    first = round(size * factor)
    return Projection(size, first, round(first * (1 + churn * (archives - 1))), archives)


@dataclass(frozen=True)
class PoolState:
    pool: StoragePool
    free: int | None  # what a repository may still use (free space, or what the quota leaves)
    checked_at: datetime | None
    fresh: bool  # measured now
    problem: str | None  # the pool cannot be used (host key, local pool for another host, unreachable)
    verdict: str  # "ok" | "tight" | "too_small" | "unknown"
    sentence: str


async def _quota_left(pool: StoragePool) -> int | None:
    if pool.quota_bytes is None:
        return None
    used = sum(r.size_bytes or 0 for r in await Repository.filter(pool_id=pool.id, team_id=pool.team_id))
    return max(0, pool.quota_bytes - used)


async def assess(
    pool: StoragePool, data: Mapping[str, Any], source: Server | None, *, fresh: bool, error: str | None = None
) -> PoolState:
    """The verdict for one pool given its (just measured or stored) free space."""
    problem = planning.pool_problem(pool, source) or error
    free = pool.available_bytes
    quota = await _quota_left(pool)
    if quota is not None:
        free = quota if free is None else min(free, quota)
    checked = pool.available_checked_at
    when = "now" if fresh else (f"at {checked:%Y-%m-%d %H:%M} UTC" if checked else "never")
    plan = projection(data)
    if problem:
        return PoolState(pool, free, checked, fresh, problem, "unknown", problem)
    if free is None:
        return PoolState(pool, None, checked, fresh, None, "unknown", "free space unknown (never measured)")
    if plan is None:
        return PoolState(
            pool,
            free,
            checked,
            fresh,
            None,
            "unknown",
            f"{human(free)} free (measured {when}); no size estimate of the source to compare",
        )
    need = f"projected {human(plan.projected_bytes)} for {plan.archives} archives (first {human(plan.first_bytes)})"
    if free < plan.first_bytes:
        return PoolState(
            pool,
            free,
            checked,
            fresh,
            None,
            "too_small",
            f"too small: {human(free)} free (measured {when}) but the first backup alone needs about "
            f"{human(plan.first_bytes)} ({need})",
        )
    over_threshold = False
    if pool.capacity_bytes and pool.available_bytes is not None:
        used_after = pool.capacity_bytes - pool.available_bytes + plan.projected_bytes
        over_threshold = used_after * 100 > pool.capacity_bytes * pool.alert_threshold_pct
    if free < plan.projected_bytes * HEADROOM or over_threshold:
        why = (
            f"the pool would pass its {pool.alert_threshold_pct} % alert threshold"
            if over_threshold and free >= plan.projected_bytes * HEADROOM
            else "less than 25 % room left over the projection"
        )
        return PoolState(
            pool, free, checked, fresh, None, "tight", f"tight: {human(free)} free (measured {when}), {need}; {why}"
        )
    return PoolState(pool, free, checked, fresh, None, "ok", f"{human(free)} free (measured {when}), {need}")


async def _measure(pool: StoragePool, services: Any, timeout: float) -> str | None:
    try:
        await planning.pool_space(pool, services, timeout=timeout)
    except PlanProblem as exc:
        return exc.message
    return None


class PoolStep(BaseStep):
    def __init__(self) -> None:
        super().__init__(name="pool", title="Storage pool", slow=True)  # the submit measures the pool over SSH

    async def _source(self, ctx: WizardContext) -> Server | None:
        server_id = ctx.data.get("server_id")
        return await Tenant(ctx.team_id).get_or_none(Server, id=server_id) if isinstance(server_id, int) else None

    async def states(self, ctx: WizardContext, *, budget: float = VIEW_BUDGET) -> list[PoolState]:
        """Every pool of the workspace, measured now where it answers within ``budget`` seconds."""
        tenant = Tenant(ctx.team_id)
        query = tenant.query(StoragePool).select_related("server").order_by("name")
        usable_ids = await authz.usable_pool_ids(await ctx.actor())
        if usable_ids is not None:  # not an admin: the pools granted to them only
            query = query.filter(id__in=sorted(usable_ids))
        pools = await query
        source = await self._source(ctx)
        usable = [p for p in pools if planning.pool_problem(p, source) is None]
        tasks = {p.id: asyncio.ensure_future(_measure(p, ctx.services, budget)) for p in usable}
        if tasks:
            await asyncio.wait(tasks.values(), timeout=budget)
        states = []
        for pool in pools:
            task = tasks.get(pool.id)
            fresh, error = False, None
            if task is not None and task.done() and not task.cancelled():
                error = task.result()
                fresh = error is None
            elif task is not None:
                task.cancel()
            # An unreachable pool keeps its stored figure but is reported; only the submit refuses it.
            state = await assess(pool, ctx.data, source, fresh=fresh)
            if error and state.problem is None:
                state = PoolState(
                    pool,
                    state.free,
                    state.checked_at,
                    False,
                    None,
                    state.verdict,
                    f"not reachable now ({error}); last known: {state.sentence}",
                )
            states.append(state)
        return states

    async def view(self, ctx: WizardContext) -> StepView:
        states = await self.states(ctx)
        if not states:
            actor = await ctx.actor()
            none = ("There is no storage pool in this workspace yet: an admin has to add one (a directory on a server "
                    "the bot reaches over SSH) before a backup can be set up." if actor.is_admin else
                    "No storage pool is granted to you yet: an admin has to grant you one — "
                    f"{await authz.who_can_allow(actor.team_id)}.")  # fmt: skip
            return StepView(heading="*Where should the backups be stored?*", notes=(none,))
        icon = {
            "ok": ":large_green_circle:",
            "tight": ":warning:",
            "too_small": ":no_entry:",
            "unknown": ":grey_question:",
        }
        options = []
        notes = []
        for state in states:
            pool = state.pool
            free = f"{human(state.free)} free" if state.free is not None else "free space unknown"
            label = f"{pool.name} · {pool.tier.value} · {free}"
            if state.problem:
                label = f"{pool.name} (unavailable)"
            options.append(Option(value=str(pool.id), label=label[:75], description=state.sentence[:75]))
            where = "the bot's own host" if pool.kind == PoolKind.LOCAL else (pool.server.name if pool.server else "?")
            notes.append(
                f"{icon[state.verdict] if not state.problem else ':no_entry_sign:'} *{pool.name}* "
                f"({pool.tier.value}, {where}, `{pool.base_path}`): {state.sentence}"
            )
        plan = projection(ctx.data)
        heading = "*Where should the backups be stored?*"
        if plan is not None:
            heading += (
                f"\nThe source is about {human(plan.source_bytes)}; with deduplication and {plan.archives} "
                f"archives kept the repository is projected at {human(plan.projected_bytes)}."
            )
        chosen = ctx.data.get("pool_id")
        usable = [s for s in states if not s.problem and s.verdict != "too_small"]
        if chosen is None and len(usable) == 1:
            chosen = usable[0].pool.id
        kind = "radio" if len(options) <= MAX_RADIO else "select"
        return StepView(
            heading=heading,
            fields=(
                Field(
                    "pool_id",
                    "Storage pool",
                    kind,
                    options=tuple(options),
                    initial=str(chosen) if chosen is not None else None,
                ),
            ),
            notes=planning.paragraphs(notes),
        )

    async def submit(self, ctx: WizardContext, values: Mapping[str, Any]) -> Errors:
        raw = values.get("pool_id")
        try:
            pool_id = int(raw) if raw not in (None, "") else None
        except (TypeError, ValueError):
            pool_id = None
        if pool_id is None:
            return {"pool_id": "Choose a storage pool."}
        tenant = Tenant(ctx.team_id)
        pool = await tenant.query(StoragePool).filter(id=pool_id).select_related("server").first()
        if pool is None:
            return {"pool_id": "That storage pool does not exist in this workspace."}
        try:
            await authz.require_pool(await ctx.actor(), pool)  # before it is measured
        except Refused as exc:
            return {"pool_id": exc.sentence}
        source = await self._source(ctx)
        problem = planning.pool_problem(pool, source)
        if problem:
            return {"pool_id": problem}
        error = await _measure(pool, ctx.services, SUBMIT_TIMEOUT)
        if error:
            return {"pool_id": f"{pool.name} cannot be used now: {error}"}
        state = await assess(pool, ctx.data, source, fresh=True)
        if state.verdict == "too_small":
            return {"pool_id": f"{pool.name} is {state.sentence}. Choose a larger pool or free space on it."}
        ctx.data["pool_id"] = pool.id
        return {}
