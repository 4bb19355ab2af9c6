"""Restore drills (``/backup drill <chain> weekly|monthly|off [on <server>]``): when a chain's newest archives are
restored into a scratch place, verified, timed and removed (:mod:`bot.runs.drilling`), and on which server.

Who may set it: those who may operate the chain (its creator, the operators of its servers, admins). The drill
server must be able to read the repository — the pool's host (the default: it reads the repository by path with
the bot's own access) or one of the chain's source servers — and a named server must be one the actor may use.
The setting lives in ``chain.schedule["drill"]`` (as ``"check"`` does): ``every`` weekly or monthly (the first
of its days in each month), ``days``, ``at`` (the chain's time zone) and ``server_id`` (None: the pool's host).
Every change is audited (``chain.drill_schedule`` with before and after) and tells the scheduler at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from bot.access import Actor, NotFound, Refused, authz
from bot.access.audit import record
from bot.backup import schedule as sched
from bot.mrkdwn import esc
from bot.runs.drilling import last_drill
from bot.runs.notify import human_bytes, human_duration
from bot.runs.nudge import schedule_changed
from bot.services import restores
from bot.services.chains import operated_chain
from storage.models import BackupChain, ChainStatus, PoolKind, Repository, Run, RunStatus, Server

Every = Literal["weekly", "monthly", "off"]
DEFAULT_DAYS, DEFAULT_AT = ("sun",), "06:00"  # after the default weekly check (Sunday 05:00)


@dataclass(frozen=True)
class Drilled:
    """The outcome of a change: the chain, its drill setting now (None: off) and the sentence that says so."""

    chain: BackupChain
    drill: dict[str, Any] | None
    sentence: str


async def _pool_host(chain: BackupChain) -> Server | None:
    repository = await Repository.filter(id=chain.repository_id).select_related("pool__server").get()  # type: ignore[attr-defined]
    return repository.pool.server if repository.pool.kind == PoolKind.SSH else None


async def drill_server(actor: Actor, chain: BackupChain, name: str | None) -> Server | None:
    """Given a server name (None: the pool's host), return the drill server, once it can read the chain's repository
    and the actor may use it; None means the bot's own pool access (the pool's host, or the bot's host)."""
    if not name:
        return None
    choices = await restores.target_servers(actor, chain)
    for choice in choices:
        if choice.name == name:
            return choice.server
    server = await actor.tenant.query(Server).filter(name=name).first()
    if server is None:
        raise NotFound(f"There is no server named {name[:100]!r} in this workspace. Nothing was changed.")
    await authz.require_server(actor, server)
    usable = ", ".join(c.name for c in choices) or "none you may use"
    raise Refused(f"{server.name} cannot read the repository of {chain.name}: drill on its pool's host or one of its "
                  f"source servers ({usable}). Nothing was changed.")  # fmt: skip


async def set_drill(actor: Actor, chain_ref: int | str, every: Every, server: str | None = None, *,
                    days: tuple[str, ...] = DEFAULT_DAYS, at: str = DEFAULT_AT) -> Drilled:  # fmt: skip
    """Given an actor, a chain (id or name), weekly / monthly / off and a drill server name, store the chain's drill
    schedule (see the module docstring), audit it and refresh the scheduler."""
    found = await restores.find_chain(actor, chain_ref)
    chain = await operated_chain(actor, found.id, "chain.drill_schedule")
    if chain.status == ChainStatus.RETIRED:
        raise Refused(f"{chain.name} is retired: it has no schedule. Restore from it with `/backup restore`.")
    if every not in ("weekly", "monthly", "off"):
        raise Refused(f"Say weekly, monthly or off, not {str(every)[:20]!r}. Nothing was changed.")
    drill: dict[str, Any] | None = None
    if every != "off":
        target = await drill_server(actor, chain, server)
        errors = sched.validate_schedule({"days": list(days), "at": at, "timezone": chain.timezone or "UTC"})
        if errors:
            raise Refused(" ".join(errors.values()) + " Nothing was changed.")
        drill = {"every": every, "days": list(days), "at": at, "server_id": target.id if target else None}
    previous = (chain.schedule or {}).get("drill")
    schedule = {k: v for k, v in (chain.schedule or {}).items() if k != "drill"}
    if drill is not None:
        schedule["drill"] = drill
    await actor.tenant.query(BackupChain).filter(id=chain.id).update(schedule=schedule)
    chain.schedule = schedule
    await record(actor, "chain.drill_schedule", "chain", chain.id, before={"drill": previous},
                 after={"drill": drill})  # fmt: skip
    await schedule_changed(chain.id)
    name = f"*{esc(chain.name)}*"
    if drill is None:
        return Drilled(chain, None, f"{name} has no restore drill any more.")
    return Drilled(chain, drill, f":white_check_mark: {name} is restore-drilled {esc(await summary(chain))}: its "
                   "newest archives are restored into a scratch place, checked, timed and removed; the result comes "
                   "in its thread.")  # fmt: skip


async def summary(chain: BackupChain) -> str:
    """``weekly, Sunday at 06:00 (Europe/Berlin), on vault`` — or ``no restore drill``."""
    drill = (chain.schedule or {}).get("drill") if isinstance(chain.schedule, dict) else None
    if not isinstance(drill, dict) or not drill.get("days"):
        return "no restore drill"
    when = sched.summary({"timezone": chain.timezone or "UTC", **{k: drill.get(k) for k in ("days", "at")}})
    if drill.get("every") == "monthly":
        when = f"monthly, the first {when}"
    else:
        when = f"weekly, {when}"
    server = await Server.get_or_none(id=drill["server_id"]) if drill.get("server_id") else await _pool_host(chain)
    return f"{when}, on {server.name if server else 'the bot’s host'}"


async def describe(actor: Actor, chain_ref: int | str) -> tuple[BackupChain, str, Run | None]:
    """The chain's drill setting and its last drill (anyone who can see the chain may look)."""
    chain = await restores.find_chain(actor, chain_ref)
    return chain, await summary(chain), await last_drill(chain.id)


def last_result(run: Run | None) -> str:
    """One line about the last drill: when, how it ended, time and size, or why it failed."""
    if run is None:
        return "No drill has run yet."
    when = (run.finished_at or run.created_at).strftime("%Y-%m-%d %H:%M UTC")
    drill = (run.stats or {}).get("drill") or {}
    if run.status in (RunStatus.SUCCEEDED, RunStatus.WARNING) and drill.get("seconds") is not None:
        return (f"Last drill {when}: restored {human_bytes(drill.get('bytes'))} in "
                f"{human_duration(drill.get('seconds'))}, checked and cleaned up.")  # fmt: skip
    return f"Last drill {when}: {RunStatus(run.status).value} — {(run.error or 'no reason recorded')[:300]}"


__all__ = ["Drilled", "describe", "drill_server", "last_result", "set_drill", "summary"]
