"""Queueing a backup by hand: *Run now* (App Home, API, CLI) and *Retry now* (failure alerts).

Both are the same operation with the same rules: the actor must be allowed to operate the chain, the chain must be
active or paused, and a chain that already has a backup queued or running gets no second one (two buttons pressed
at once, a retry during a running backup). The row itself is built by the runs layer's one builder
(:func:`bot.runs.queue.insert_rows`), like scheduled runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bot.access import Actor, Refused, authz
from bot.access.audit import record
from bot.backup import schedule as sched
from bot.mrkdwn import esc
from bot.runs.nudge import nudge
from bot.runs.queue import RunSpec, insert_rows
from storage.models import ChainStatus, Run, RunKind, RunStatus
from storage.orm import in_transaction

MANUAL_PRIORITY = max(sched.PRIORITY_RANGE)  # a person is waiting: before scheduled runs
RUNNABLE = (ChainStatus.ACTIVE, ChainStatus.PAUSED)  # a manual run of a paused chain is allowed
Reason = Literal["run_now", "retry"]
ACTIONS: dict[str, str] = {"run_now": "chain.run_now", "retry": "run.retry_now"}


@dataclass(frozen=True)
class Queued:
    """What a manual run request did: the run it queued (``created``) or found waiting or running already."""

    run_id: int
    created: bool
    status: str
    sentence: str


async def run_now(actor: Actor, chain_id: object, *, reason: Reason = "run_now") -> Queued:
    """Given an actor and a chain id, queue a high-priority backup of that chain now, or say why not.

    Raises :class:`Refused` (nothing changed) for a chain of another workspace, an actor who may not operate it,
    or a chain that is neither active nor paused; every outcome is audited."""
    chain = await authz.chain_of(actor, chain_id)
    action = ACTIONS[reason]
    if not await authz.may_operate(actor, chain):
        await record(actor, action, "chain", chain.id, outcome="denied")
        await authz.require_operate(actor, chain)
    name = esc(chain.name)
    if chain.status not in RUNNABLE:
        await record(actor, action, "chain", chain.id, outcome="not_runnable", status=chain.status.value)
        raise Refused(f"*{name}* is {chain.status.value.replace('_', ' ')}; it cannot run now.")
    async with in_transaction():
        pending = await actor.tenant.query(Run).filter(
            chain_id=chain.id, kind=RunKind.BACKUP, status__in=(RunStatus.QUEUED, RunStatus.RUNNING)
        ).order_by("id").first()  # fmt: skip
        if pending is not None:
            await record(actor, action, "chain", chain.id, outcome="already_pending", run_id=pending.id)
            return Queued(pending.id, False, pending.status.value,
                          f"*{name}* already has a backup {pending.status.value}; nothing was added.")  # fmt: skip
        [run] = await insert_rows([RunSpec(team_id=actor.team_id, kind=RunKind.BACKUP, chain_id=chain.id,
                                           repository_id=chain.repository_id,  # type: ignore[attr-defined]
                                           priority=MANUAL_PRIORITY, requested_by=actor.user_id)])  # fmt: skip
        await record(actor, action, "chain", chain.id, outcome="queued", run_id=run.id)
    nudge()  # committed: the worker may start it now
    return Queued(run.id, True, run.status.value,
                  f":clock3: A backup of *{name}* is queued; it starts as soon as the repository is free.")  # fmt: skip
