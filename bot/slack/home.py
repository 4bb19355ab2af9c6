"""The App Home tab: the workspace's backup chains, and the Run now / Pause / Resume buttons on them.

Everything is read and written through the workspace's :class:`~storage.tenancy.Tenant`: a chain id of another
workspace in a button value is "not found", like a missing one. Last runs and next runs are summarised with the
helpers of ``/backup list`` (:mod:`bot.slack.listing`), so both surfaces say the same.

The buttons call the service layer (:mod:`bot.services.runs`, :mod:`bot.services.chains`), which decides who may
press them (the chain's creator, the operators of its servers, admins), acts and audits. A refusal is shown as a
notice on the re-published home tab (the home tab cannot show an ephemeral message) and nothing changes.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from slack_sdk.web.async_client import AsyncWebClient

from bot.access import Actor, Directory, NotFound, Refused, authz, resolve_actor
from bot.backup import schedule as sched
from bot.services import chains as chain_ops
from bot.services import restores, runs
from bot.slack import listing
from bot.slack.actors import SlackDirectory
from bot.slack.blocks import home_help_view
from bot.slack.home_blocks import PAGE_SIZE, PAUSE, RUN_NOW, ChainRow, home_chains_view
from storage.models import (
    BackupChain,
    ChainStatus,
    Integrity,
    Repository,
    Run,
    RunKind,
    RunStatus,
    Server,
    StoragePool,
)
from storage.tenancy import Tenant

log = logging.getLogger(__name__)

SUCCESS = (RunStatus.SUCCEEDED, RunStatus.WARNING)
RUNNABLE = runs.RUNNABLE


# --------------------------------------------------------------------------------------------- reading


async def _last_success(tenant: Tenant, chain: BackupChain) -> Run | None:
    return (
        await tenant.query(Run)
        .filter(chain_id=chain.id, kind=RunKind.BACKUP, status__in=SUCCESS, finished_at__isnull=False)
        .order_by("-finished_at", "-id")
        .first()
    )


async def _may(actor: Actor | None, chain: BackupChain) -> tuple[bool, bool]:
    """Given the viewer and a chain, return whether they may edit it and restore from it (the buttons shown): the
    service layer decides again on the click; showing only usable buttons spares people a refusal."""
    if actor is None:
        return False, False
    edit = chain.status != ChainStatus.RETIRED and await authz.may_operate(actor, chain)
    return edit, await restores.may_restore(actor, chain)


async def chain_rows(tenant: Tenant, chains: list[BackupChain], now: datetime,
                     actor: Actor | None = None) -> list[ChainRow]:  # fmt: skip
    """What the home tab shows for ``chains`` (one page: a few cheap queries per chain); ``actor``: the viewer, whose
    rights decide the Edit and Restore… buttons (none without a viewer)."""
    repositories = {
        r.id: r for r in await tenant.query(Repository).filter(id__in=[c.repository_id for c in chains])
    }
    pools = {p.id: p for p in await tenant.query(StoragePool).filter(id__in=[r.pool_id for r in repositories.values()])}
    summaries = {ident: await listing.pool_summary(pool) for ident, pool in pools.items()}
    rows = []
    for chain in chains:
        schedule = listing.chain_schedule(chain)
        zone = listing._zone(schedule, chain.timezone)
        last = await listing._last_run(tenant, chain)
        success = await _last_success(tenant, chain)
        upcoming, why = listing.next_runs_of(chain, 1, now)
        repository = repositories.get(chain.repository_id)
        pool = pools.get(repository.pool_id) if repository is not None else None
        can_edit, can_restore = await _may(actor, chain)
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
                size=listing._size(repository.size_bytes) if repository and repository.size_bytes is not None
                else "unknown",
                pool=f"{listing._esc(pool.name)} · {summaries[pool.id]}" if pool is not None else "",
                history=listing.history_state(repository)
                if repository is not None and repository.integrity != Integrity.OK else "",
                can_run=chain.status in RUNNABLE,
                can_pause=chain.status == ChainStatus.ACTIVE,
                can_resume=chain.status == ChainStatus.PAUSED,
                can_edit=can_edit,
                can_restore=can_restore,
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
    directory: Directory | None = None,
    actor: Actor | None = None,
) -> None:
    """Publish ``user_id``'s home tab: the workspace's chains that are not retired, ``page`` of them, with an
    optional notice; the Edit and Restore… buttons only where ``user_id`` may use them."""
    moment = now or datetime.now(UTC)
    viewer = actor or await resolve_actor(directory or SlackDirectory(client), tenant.team_id, user_id)
    live = tenant.query(BackupChain).exclude(status=ChainStatus.RETIRED)
    total = await live.count()
    page = max(0, min(page, (total - 1) // PAGE_SIZE if total else 0))
    chains = await live.order_by("name", "id").offset(page * PAGE_SIZE).limit(PAGE_SIZE)
    view = home_chains_view(
        await chain_rows(tenant, list(chains), moment, viewer),
        total=total,
        retired=await tenant.query(BackupChain).filter(status=ChainStatus.RETIRED).count(),
        page=page,
        servers=await tenant.query(Server).count(),
        pools=await tenant.query(StoragePool).count(),
        notice=notice,
    )
    await client.views_publish(user_id=user_id, view=view.to_dict())


async def publish_help(client: AsyncWebClient, user_id: str) -> None:
    await client.views_publish(user_id=user_id, view=home_help_view().to_dict())


# --------------------------------------------------------------------------------------------- buttons


async def chain_action(
    client: AsyncWebClient,
    tenant: Tenant,
    user_id: str,
    action_id: str,
    value: str,
    *,
    page: int = 0,
    now: datetime | None = None,
    directory: Directory | None = None,
) -> str:
    """Handle a home-tab chain button through the service layer, re-publish the presser's home with the outcome,
    and return it."""
    actor = await resolve_actor(directory or SlackDirectory(client), tenant.team_id, user_id)
    try:
        if action_id == RUN_NOW:
            notice = (await runs.run_now(actor, value)).sentence
        else:
            notice = (await chain_ops.set_paused(actor, value, paused=action_id == PAUSE)).sentence
    except NotFound as exc:
        notice = f":warning: {exc.sentence}"
    except Refused as exc:
        notice = f":no_entry: {exc.sentence}"
    await publish_home(client, tenant, user_id, page=page, notice=notice, now=now, actor=actor)
    return notice
