"""The App Home tab: the workspace's backup chains, and the Run now / Pause / Resume buttons on them.

Everything is read and written through the workspace's :class:`~storage.tenancy.Tenant`: a chain id of another
workspace in a button value is "not found", like a missing one. Last runs and next runs are summarised with the
helpers of ``/backup list`` (:mod:`bot.slack.listing`), so both surfaces say the same.

Who may press a chain's buttons: the chain's creator, the workspace's approvers
(``Workspace.settings["approvals"]["approvers"]``, Slack user ids) and Slack workspace admins/owners
(``users.info``). Anyone else gets the home tab re-published with a notice (the home tab cannot show an
ephemeral message) and nothing changes. Every button press — done, refused or moot — writes an AuditLog row and
re-publishes the presser's home tab.

"Run now" only inserts a queued high-priority backup :class:`~storage.models.Run` (lock_key ``repo:<repository id>``);
the run queue picks it up. Pause/Resume are compare-and-set on the chain's status, so two people clicking at once
cannot resume a chain twice or pause a chain that was meanwhile rejected.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient
from tortoise.transactions import in_transaction

from bot.runs import schedule as sched
from bot.runs.nudge import nudge, schedule_changed
from bot.slack import listing
from bot.slack.approvals import may_operate
from bot.slack.blocks import home_help_view
from bot.slack.home_blocks import PAGE_SIZE, PAUSE, RESUME, RUN_NOW, ChainRow, home_chains_view
from storage.models import (
    AuditLog,
    BackupChain,
    ChainStatus,
    Repository,
    Run,
    RunKind,
    RunStatus,
    Server,
    StoragePool,
)
from storage.tenancy import Tenant

log = logging.getLogger(__name__)

RUN_NOW_PRIORITY = max(sched.PRIORITY_RANGE)  # "Run now" goes before scheduled runs
RUNNABLE = (ChainStatus.ACTIVE, ChainStatus.PAUSED)  # a manual run of a paused chain is allowed
SUCCESS = (RunStatus.SUCCEEDED, RunStatus.WARNING)


def repository_lock_key(repository_id: int) -> str:
    """The queue's per-repository lock key — the same string as ``bot.runs.queue.lock_key_for`` (not imported:
    the queue is another part's module). A different spelling would let two runs hit one repository at once."""
    return f"repo:{repository_id}"


ACTION_NAMES = {RUN_NOW: "chain.run_now", PAUSE: "chain.pause", RESUME: "chain.resume"}


# --------------------------------------------------------------------------------------------- reading


async def _last_success(tenant: Tenant, chain: BackupChain) -> Run | None:
    return (
        await tenant.query(Run)
        .filter(chain_id=chain.id, kind=RunKind.BACKUP, status__in=SUCCESS, finished_at__isnull=False)
        .order_by("-finished_at", "-id")
        .first()
    )


async def chain_rows(tenant: Tenant, chains: list[BackupChain], now: datetime) -> list[ChainRow]:
    """What the home tab shows for ``chains`` (one page: a few cheap queries per chain)."""
    sizes = {
        r["id"]: r["size_bytes"]
        for r in await tenant.query(Repository)
        .filter(id__in=[c.repository_id for c in chains])
        .values("id", "size_bytes")
    }
    rows = []
    for chain in chains:
        schedule = listing.chain_schedule(chain)
        zone = listing._zone(schedule, chain.timezone)
        last = await listing._last_run(tenant, chain)
        success = await _last_success(tenant, chain)
        upcoming, why = listing.next_runs_of(chain, 1, now)
        size = sizes.get(chain.repository_id)
        rows.append(
            ChainRow(
                id=chain.id,
                name=listing._esc(chain.name),
                status=chain.status.value,
                status_icon=listing.CHAIN_ICONS.get(chain.status, ""),
                last_run="never ran" if last is None else listing._run_line(last, zone, with_kind=False),
                last_success=listing._when(success.finished_at, zone) if success else "never",
                next_run=listing._when(upcoming[0], zone) if upcoming else f"— ({why})",
                schedule=listing._esc(sched.summary(schedule)),
                size=listing._size(size) if size is not None else "unknown",
                can_run=chain.status in RUNNABLE,
                can_pause=chain.status == ChainStatus.ACTIVE,
                can_resume=chain.status == ChainStatus.PAUSED,
            )
        )
    return rows


async def publish_home(
    client: AsyncWebClient,
    tenant: Tenant,
    user_id: str,
    *,
    page: int = 0,
    notice: str | None = None,
    now: datetime | None = None,
) -> None:
    """Publish ``user_id``'s home tab: the workspace's chains, ``page`` of them, with an optional notice."""
    moment = now or datetime.now(UTC)
    total = await tenant.query(BackupChain).count()
    page = max(0, min(page, (total - 1) // PAGE_SIZE if total else 0))
    chains = await tenant.query(BackupChain).order_by("name", "id").offset(page * PAGE_SIZE).limit(PAGE_SIZE)
    view = home_chains_view(
        await chain_rows(tenant, list(chains), moment),
        total=total,
        page=page,
        servers=await tenant.query(Server).count(),
        pools=await tenant.query(StoragePool).count(),
        notice=notice,
    )
    await client.views_publish(user_id=user_id, view=view.to_dict())


async def publish_help(client: AsyncWebClient, user_id: str) -> None:
    await client.views_publish(user_id=user_id, view=home_help_view().to_dict())


# --------------------------------------------------------------------------------------------- buttons


async def _audit(tenant: Tenant, user_id: str, action: str, chain_id: str, **details: Any) -> None:
    await tenant.create(
        AuditLog,
        actor=user_id,
        action=action,
        object_type="chain",
        object_id=chain_id,
        details={"via": "app_home", **details},
    )


async def _run_now(tenant: Tenant, chain: BackupChain, user_id: str, now: datetime) -> str:
    if chain.status not in RUNNABLE:
        await _audit(tenant, user_id, "chain.run_now", str(chain.id), outcome="not_runnable")
        return f"*{listing._esc(chain.name)}* is {chain.status.value.replace('_', ' ')}; it cannot run now."
    async with in_transaction():
        pending = (
            await tenant.query(Run)
            .filter(chain_id=chain.id, kind=RunKind.BACKUP, status__in=(RunStatus.QUEUED, RunStatus.RUNNING))
            .first()
        )
        if pending is not None:
            await _audit(tenant, user_id, "chain.run_now", str(chain.id), outcome="already_pending", run_id=pending.id)
            return f"*{listing._esc(chain.name)}* already has a backup {pending.status.value}; nothing was added."
        run = await tenant.create(
            Run,
            chain_id=chain.id,
            repository_id=chain.repository_id,
            kind=RunKind.BACKUP,
            status=RunStatus.QUEUED,
            priority=RUN_NOW_PRIORITY,
            requested_by=user_id,
            lock_key=repository_lock_key(chain.repository_id),
            scheduled_for=now,
            next_attempt_at=now,
        )
        await _audit(tenant, user_id, "chain.run_now", str(chain.id), outcome="queued", run_id=run.id)
    nudge()  # committed: the worker may start it now
    return f":clock3: A backup of *{listing._esc(chain.name)}* is queued; it starts as soon as the repository is free."


async def _set_status(tenant: Tenant, chain: BackupChain, user_id: str, action_id: str, now: datetime) -> str:
    before, after = (
        (ChainStatus.ACTIVE, ChainStatus.PAUSED) if action_id == PAUSE else (ChainStatus.PAUSED, ChainStatus.ACTIVE)
    )
    changed = await tenant.query(BackupChain).filter(id=chain.id, status=before).update(status=after, updated_at=now)
    name = listing._esc(chain.name)
    verb = "paused" if action_id == PAUSE else "resumed"
    if not changed:
        current = await tenant.get_or_none(BackupChain, id=chain.id)
        state = current.status.value.replace("_", " ") if current else "gone"
        await _audit(tenant, user_id, ACTION_NAMES[action_id], str(chain.id), outcome="not_applicable", status=state)
        return f"*{name}* is {state}; it was not {verb}."
    await _audit(tenant, user_id, ACTION_NAMES[action_id], str(chain.id), outcome="done", before=before, after=after)
    await schedule_changed(chain.id)  # a paused chain's run queued ahead of its slot is withdrawn at once
    if action_id == PAUSE:
        return f":double_vertical_bar: *{name}* is paused: no scheduled runs until someone resumes it."
    return f":large_green_circle: *{name}* is active again."


async def chain_action(
    client: AsyncWebClient,
    tenant: Tenant,
    user_id: str,
    action_id: str,
    value: str,
    *,
    page: int = 0,
    now: datetime | None = None,
) -> str:
    """Handle a home-tab chain button, re-publish the presser's home with the outcome, and return it."""
    moment = now or datetime.now(UTC)
    chain = await tenant.get_or_none(BackupChain, id=int(value)) if value.isdigit() else None
    if chain is None:
        await _audit(tenant, user_id, ACTION_NAMES[action_id], value[:64], outcome="not_found")
        notice = ":warning: That backup chain no longer exists in this workspace."
    elif not await may_operate(client, tenant.team_id, user_id, chain):
        await _audit(tenant, user_id, ACTION_NAMES[action_id], str(chain.id), outcome="denied")
        notice = (
            f":no_entry: You are not allowed to change *{listing._esc(chain.name)}*: only its creator, the "
            "workspace's approvers and Slack admins may. Nothing was changed."
        )
    elif action_id == RUN_NOW:
        notice = await _run_now(tenant, chain, user_id, moment)
    else:
        notice = await _set_status(tenant, chain, user_id, action_id, moment)
    await publish_home(client, tenant, user_id, page=page, notice=notice, now=moment)
    return notice
