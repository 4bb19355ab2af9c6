"""Operating a chain: pause, resume, and its settings (ping URL, check schedule, prune schedule).

Each checks first that the actor may operate the chain (its creator, the operators of its servers, admins), then
changes it by compare-and-set where two people may click at once, audits the change with its before and after,
and tells the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bot.access import Actor, Refused, authz
from bot.access.audit import record
from bot.monitoring import OutboundRefused, ping_url_of, set_ping_url, url_shape, vet, workspace_allow
from bot.mrkdwn import esc
from bot.runs.nudge import schedule_changed
from storage.models import BackupChain, ChainStatus, Repository


@dataclass(frozen=True)
class Changed:
    """The outcome of a change: whether anything changed, and the sentence that says so."""

    changed: bool
    sentence: str


async def operated_chain(actor: Actor, chain_id: object, action: str) -> BackupChain:
    """The chain ``chain_id`` of the actor's workspace, once the actor is allowed to operate it (a refusal is
    audited and raised)."""
    chain = await authz.chain_of(actor, chain_id)
    if not await authz.may_operate(actor, chain):
        await record(actor, action, "chain", chain.id, outcome="denied")
        await authz.require_operate(actor, chain)
    return chain


async def set_paused(actor: Actor, chain_id: object, paused: bool) -> Changed:
    """Given an actor and a chain, pause it (active → paused) or resume it (paused → active), compare-and-set."""
    action = "chain.pause" if paused else "chain.resume"
    chain = await operated_chain(actor, chain_id, action)
    before, after = (ChainStatus.ACTIVE, ChainStatus.PAUSED) if paused else (ChainStatus.PAUSED, ChainStatus.ACTIVE)
    changed = await actor.tenant.query(BackupChain).filter(id=chain.id, status=before).update(status=after)
    name, verb = esc(chain.name), "paused" if paused else "resumed"
    if not changed:
        current = await actor.tenant.get_or_none(BackupChain, id=chain.id)
        state = current.status.value.replace("_", " ") if current else "gone"
        await record(actor, action, "chain", chain.id, outcome="not_applicable", status=state)
        return Changed(False, f"*{name}* is {state}; it was not {verb}.")
    await record(actor, action, "chain", chain.id, outcome="done", before={"status": before.value},
                 after={"status": after.value})  # fmt: skip
    await schedule_changed(chain.id)  # a paused chain's run queued ahead of its slot is withdrawn at once
    if paused:
        return Changed(True, f":double_vertical_bar: *{name}* is paused: no scheduled runs until someone resumes it.")
    return Changed(True, f":large_green_circle: *{name}* is active again.")


def url_host(url: str | None) -> str | None:
    """The host of a ping URL: all that is ever shown or logged of it (its path is the check's secret)."""
    return None if url is None else urlsplit(url).hostname or "?"


async def set_ping(actor: Actor, chain_id: object, url: str | None) -> BackupChain:
    """Set (or with None, remove) a chain's healthchecks-style ping URL; the audit names hosts only (the URL's
    path is the check's secret). A URL reaching a loopback, link-local, private or metadata address is refused
    unless an admin allow-listed its network (:mod:`bot.services.outbound`)."""
    chain = await operated_chain(actor, chain_id, "chain.ping_url")
    before = await ping_url_of(actor.team_id, chain.id)
    try:
        if url is not None:
            url_shape(url)
    except ValueError as exc:
        raise Refused(f"{exc} Nothing was changed.") from None
    try:
        if url is not None:  # where it points now (checked again at every request: DNS may change)
            await vet(url, await workspace_allow(actor.team_id), unresolved_ok=True)
    except OutboundRefused as exc:
        await record(actor, "chain.ping_url", "chain", chain.id, outcome="refused", host=url_host(url))
        raise Refused(f"{exc} Nothing was changed.") from None
    await set_ping_url(actor.team_id, chain.id, url)
    await record(actor, "chain.ping_url", "chain", chain.id, before={"host": url_host(before)},
                 after={"host": url_host(url)}, **({"removed": True} if url is None else {"host": url_host(url)}))
    return chain


async def set_check(actor: Actor, chain_id: object, check: dict[str, Any] | None) -> BackupChain:
    """Replace (or with None, remove) the chain's ``borg check`` schedule."""
    chain = await operated_chain(actor, chain_id, "chain.check_schedule")
    previous = (chain.schedule or {}).get("check")
    schedule = {k: v for k, v in (chain.schedule or {}).items() if k != "check"}
    if check is not None:
        schedule["check"] = check
    await actor.tenant.query(BackupChain).filter(id=chain.id).update(schedule=schedule)
    chain.schedule = schedule
    await record(actor, "chain.check_schedule", "chain", chain.id, check=check, before={"check": previous},
                 after={"check": check})  # fmt: skip
    await schedule_changed(chain.id)
    return chain


async def set_prune(actor: Actor, chain_id: object, prune: dict[str, Any] | None) -> tuple[BackupChain, Repository]:
    """Prune the chain's repository on a schedule (in the chain's time zone) or, with None, after each backup."""
    chain = await operated_chain(actor, chain_id, "repository.prune_schedule")
    repository = await actor.tenant.get(Repository, id=chain.repository_id)  # type: ignore[attr-defined]
    value = None if prune is None else {**prune, "timezone": chain.timezone}
    previous = repository.prune_schedule
    await actor.tenant.query(Repository).filter(id=repository.id).update(prune_schedule=value)
    repository.prune_schedule = value
    await record(actor, "repository.prune_schedule", "repository", repository.id, prune_schedule=value,
                 chain_id=chain.id, before={"prune_schedule": previous}, after={"prune_schedule": value})
    await schedule_changed(repository_id=repository.id)
    return chain, repository
