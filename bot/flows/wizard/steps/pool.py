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

Every option shows its tier, and the tier buttons narrow the list to one tier. A pool over its quota (or that the
first archive would push over it) is refused with the numbers (:func:`bot.backup.capacity.quota_refusal`).
Admins can add a pool without leaving the wizard: *Add a pool* shows its fields (on a fresh install with no pool
they are shown at once), and *Add pool* — or Next with the fields filled in and no pool chosen — adds it through
:func:`bot.services.pools.add_pool` (the same real checks as ``/backup pools``); the new pool is then selected.
A member without a pool is told who can add or grant one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.access import Refused, authz
from bot.backup import capacity
from bot.backup import plan as planning
from bot.backup.plan import PlanProblem, human
from bot.flows.wizard.steps.base import BaseStep, Button, Errors, Field, Option, StepView, WizardContext
from bot.services import pools as pool_service
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
NEW = ("new_name", "new_where", "new_host", "new_port", "new_user", "new_fingerprint", "new_path", "new_quota",
       "new_tier", "new_alert_at")  # the inline *Add a pool* fields
DRAFT, OPEN, ADDED, TIER = "pool_draft", "pool_add_open", "pool_added_id", "pool_tier"  # keys in the session data


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
    over = capacity.quota_refusal(pool, await capacity.usage(pool), plan.first_bytes if plan else 0)
    if over:
        return PoolState(pool, free, checked, fresh, None, "too_small", over)
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
        actor = await ctx.actor()
        states = await self.states(ctx)
        tiers = sorted({s.pool.tier.value for s in states})
        tier = ctx.data.get(TIER) if ctx.data.get(TIER) in tiers else None
        shown = [s for s in states if tier is None or s.pool.tier.value == tier]
        adding = actor.is_admin and (not states or bool(ctx.data.get(OPEN)))
        if not states and not actor.is_admin:
            none = ("No storage pool is granted to you yet: only admins add pools and grant them — "
                    f"{await authz.who_can_allow(actor.team_id)}.")  # fmt: skip
            return StepView(heading="*Where should the backups be stored?*", notes=(none,))
        fields: list[Field] = []
        notes: list[str] = []
        if shown:
            fields.append(self._choice(ctx, shown, optional=adding))
            notes.extend(_note(state) for state in shown)
        elif states:
            notes.append(f"No pool of the {tier} tier: choose another tier.")
        heading = "*Where should the backups be stored?*"
        plan = projection(ctx.data)
        if plan is not None:
            heading += (
                f"\nThe source is about {human(plan.source_bytes)}; with deduplication and {plan.archives} "
                f"archives kept the repository is projected at {human(plan.projected_bytes)}."
            )
        buttons = [Button(f"tier_{t}", f"{t} only" if t != tier else f"{t} (shown)", value=t) for t in tiers]
        buttons = [*buttons, Button("tier_all", "all tiers", value="all")] if len(tiers) > 1 else []
        if adding:
            notes.append(_add_note(bool(states)))
            fields.extend(_new_fields(ctx.data.get(DRAFT) or {}))
            buttons.append(Button("add_pool", "Add pool", "primary"))
        elif actor.is_admin:
            buttons.append(Button("open_add", "Add a pool"))
        return StepView(heading=heading, fields=tuple(fields), notes=planning.paragraphs(notes), buttons=tuple(buttons))

    def _choice(self, ctx: WizardContext, shown: list[PoolState], *, optional: bool) -> Field:
        """The pools as options (tier and free space on each); the only usable one, or a just added one, chosen."""
        options = []
        for state in shown:
            pool = state.pool
            free = f"{human(state.free)} free" if state.free is not None else "free space unknown"
            label = f"{pool.name} (unavailable)" if state.problem else f"{pool.name} · {pool.tier.value} · {free}"
            options.append(Option(value=str(pool.id), label=label[:75], description=state.sentence[:75]))
        chosen = ctx.data.get("pool_id") or ctx.data.get(ADDED)
        usable = [s for s in shown if not s.problem and s.verdict != "too_small"]
        if chosen is None and len(usable) == 1:
            chosen = usable[0].pool.id
        if chosen is not None and str(chosen) not in {o.value for o in options}:
            chosen = None
        kind = "radio" if len(options) <= MAX_RADIO else "select"
        return Field("pool_id", "Storage pool", kind, options=tuple(options),
                     initial=str(chosen) if chosen is not None else None, optional=optional)  # fmt: skip

    async def act(self, ctx: WizardContext, action: str, value: str) -> str | None:
        if action.startswith("tier_"):  # one action id per button: Slack wants them unique within a block
            wanted = action.removeprefix("tier_")
            ctx.data[TIER] = wanted if wanted in pool_service.TIERS else None
            return None
        if action == "open_add":
            actor = await ctx.actor()
            try:
                await authz.require_admin(actor, "add storage pools")
            except Refused as exc:
                return f":no_entry: {exc.sentence}"
            ctx.data[OPEN] = True
            return "Fill in the new pool below and press *Add pool*."
        if action == "add_pool":
            problem, added = await self._add(ctx, ctx.form)
            return f":x: {problem}" if problem else f":white_check_mark: {added} — it is selected above; press Next."
        return None

    async def _add(self, ctx: WizardContext, form: Mapping[str, Any]) -> tuple[str | None, str]:
        """Add the pool typed in the inline fields; returns (the refusal, "") or (None, what was added)."""
        draft = {k: str(form.get(k) or "").strip() for k in NEW if form.get(k) not in (None, "")}
        ctx.data[DRAFT] = draft
        ssh = draft.get("new_where") == "ssh"
        services = ctx.services
        try:
            new = pool_service.NewPool(
                name=draft.get("new_name", ""), path=draft.get("new_path", ""),
                host=(draft.get("new_host") or "") if ssh else None, port=draft.get("new_port") or 22,  # type: ignore[arg-type]
                user=draft.get("new_user") or "root", fingerprint=draft.get("new_fingerprint", "") if ssh else "",
                quota_bytes=pool_service.parse_size(draft.get("new_quota")), tier=draft.get("new_tier") or "standard",
                alert_at=draft.get("new_alert_at") or pool_service.DEFAULT_ALERT)  # type: ignore[arg-type]  # fmt: skip
            if ssh and not new.host:
                raise Refused("Give the SSH host of the new pool, or choose This machine.")
            tools = pool_service.PoolTools(ssh=services.pool, borg=getattr(services, "borg", "borg"),
                                           alerts=getattr(services, "alerts", None))  # fmt: skip
            view = await pool_service.add_pool(await ctx.actor(), new, tools)
        except Refused as exc:
            return exc.sentence, ""
        for key in (DRAFT, OPEN, TIER):
            ctx.data.pop(key, None)
        ctx.data[ADDED] = view.id
        return None, f"Pool {view.name} added on {view.where} ({human(view.free_bytes)} free)"

    async def submit(self, ctx: WizardContext, values: Mapping[str, Any]) -> Errors:
        raw = values.get("pool_id")
        try:
            pool_id = int(raw) if raw not in (None, "") else None
        except (TypeError, ValueError):
            pool_id = None
        if pool_id is None and any(values.get(k) for k in ("new_name", "new_path")):
            problem, _ = await self._add(ctx, values)  # Next with the new pool's fields filled in: add it, use it
            if problem:
                return {_field_of(problem): problem}
            pool_id = ctx.data.get(ADDED)
        if pool_id is None:
            if "pool_id" in values or "new_name" not in values:
                return {"pool_id": "Choose a storage pool."}
            return {"new_name": "Add a pool first: give it a name and a directory, then press Next."}
        return await self._use(ctx, pool_id)

    async def _use(self, ctx: WizardContext, pool_id: int) -> Errors:
        """Accept ``pool_id`` once the actor may use it, it answers, it is under its quota and large enough."""
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
        plan = projection(ctx.data)
        refusal = capacity.quota_refusal(pool, await capacity.usage(pool), plan.first_bytes if plan else 0)
        if refusal:
            return {"pool_id": refusal}
        state = await assess(pool, ctx.data, source, fresh=True)
        if state.verdict == "too_small":
            return {"pool_id": f"{pool.name} is {state.sentence}. Choose a larger pool or free space on it."}
        ctx.data["pool_id"] = pool.id
        for key in (DRAFT, OPEN, ADDED, TIER):
            ctx.data.pop(key, None)
        return {}


ICONS = {"ok": ":large_green_circle:", "tight": ":warning:", "too_small": ":no_entry:", "unknown": ":grey_question:"}


def _note(state: PoolState) -> str:
    pool = state.pool
    where = "the bot's own host" if pool.kind == PoolKind.LOCAL else (pool.server.name if pool.server else "?")
    icon = ICONS[state.verdict] if not state.problem else ":no_entry_sign:"
    return f"{icon} *{pool.name}* ({pool.tier.value}, {where}, `{pool.base_path}`): {state.sentence}"


def _add_note(others: bool) -> str:
    lead = "*Add a pool*" if others else "*There is no storage pool yet: add the first one here.*"
    return (f"{lead} A directory on this machine (the bot's host) or on a host the bot reaches over SSH with its key "
            "(then give the host key fingerprint you got from the host itself: `ssh-keygen -lf "
            "/etc/ssh/ssh_host_ed25519_key.pub`). The bot checks borg 1.4, that the directory can be written and its "
            "free space before it stores anything. Press *Add pool*, or Next to add it and go on.")  # fmt: skip


def _new_fields(draft: Mapping[str, Any]) -> list[Field]:
    where = (Option("local", "This machine (the bot's own host)"), Option("ssh", "A host over SSH (below)"))
    tiers = tuple(Option(t, t) for t in pool_service.TIERS)
    d = dict(draft)
    return [
        Field("new_name", "New pool: name", "text", initial=d.get("new_name"), optional=True, placeholder="main"),
        Field("new_where", "New pool: where", "radio", options=where, initial=d.get("new_where") or "local",
              optional=True),
        Field("new_host", "SSH host", "text", initial=d.get("new_host"), optional=True,
              placeholder="vault.example.com"),
        Field("new_port", "SSH port", "number", initial=d.get("new_port") or "22", optional=True),
        Field("new_user", "Login user", "text", initial=d.get("new_user") or "root", optional=True),
        Field("new_fingerprint", "Host key fingerprint (from the host itself)", "text",
              initial=d.get("new_fingerprint"), optional=True, placeholder="SHA256:…"),
        Field("new_path", "Directory", "text", initial=d.get("new_path"), optional=True, placeholder="/srv/borg",
              hint="Created if missing; the login must be able to write in it."),
        Field("new_quota", "Quota", "text", initial=d.get("new_quota"), optional=True,
              placeholder="500G, 2T … (empty: none)"),
        Field("new_tier", "Tier", "select", options=tiers, initial=d.get("new_tier") or "standard", optional=True),
        Field("new_alert_at", "Alert when this full (%)", "number", initial=d.get("new_alert_at") or "85",
              optional=True),
    ]  # fmt: skip


def _field_of(sentence: str) -> str:
    """The inline field a refusal of *Add pool* is about (errors are shown under it)."""
    text = sentence.lower()
    for words, name in ((("fingerprint", "host key"), "new_fingerprint"), (("size", "quota"), "new_quota"),
                        (("threshold",), "new_alert_at"), (("tier",), "new_tier"), (("port",), "new_port"),
                        (("user name",), "new_user"), (("borg", "cannot use", "reached"), "new_host"),
                        (("directory", "writable", "create", "free space"), "new_path"), (("name",), "new_name"),
                        (("only admins",), "new_name")):  # fmt: skip
        if any(w in text for w in words):
            return name
    return "new_path"
