"""An admin's decision on a repository that differs from the bot's record of verified archives.

When maintenance finds archives it never verified, verified archives gone, an archive replaced under its name, or
pushes outside the bot's runs (:mod:`bot.runs.integrity`), the repository is ``needs_review``: no prune, no
compact, backups continue. Only an admin decides, and every decision is audited:

* :func:`accept` — the change is legitimate (e.g. someone ran ``borg create`` by hand): the unknown archives are
  recorded (so retention may decide over them), missing ones are recorded as removed, a replaced one's record
  takes the new id, the foreign transactions are vouched for; maintenance resumes.
* :func:`quarantine` — keep everything: nothing is ever pruned or compacted (what the push key hid stays on disk,
  recoverable with borg's documented rollback of the append-only transactions) until :func:`release`.
* :func:`release` — a quarantined repository goes back to review (not to OK: its difference still needs a
  decision), or to OK when it had none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.access import Actor, NotFound, Refused, authz
from bot.access.audit import record
from bot.mrkdwn import esc
from storage.models import Integrity, Repository, VerifiedArchive


@dataclass(frozen=True)
class Decided:
    changed: bool
    sentence: str
    repository_id: int
    state: Integrity


async def _repository(actor: Actor, repository_id: object, doing: str) -> Repository:
    """The actor's workspace's repository, once the actor is an admin (a refusal is audited and raised)."""
    if not actor.is_admin:
        await record(actor, f"integrity.{doing}", "repository", repository_id, outcome="denied")
        await authz.require_admin(actor, f"{doing} a repository's archive history")
    text = str(repository_id or "")
    repository = await actor.tenant.get_or_none(Repository, id=int(text)) if text.isdigit() else None
    if repository is None:
        raise NotFound("That repository no longer exists in this workspace.")
    return repository


async def _apply(actor: Actor, repository: Repository, difference: dict[str, Any]) -> dict[str, int]:
    """Make the record agree with the difference an admin accepted; returns the counts applied."""
    now = datetime.now(UTC)
    for item in difference.get("unknown") or []:
        await VerifiedArchive.get_or_create(
            repository_id=repository.id, archive_id=str(item["id"])[:64],
            defaults={"team_id": actor.team_id, "name": str(item["name"])[:255],
                      "archive_time": datetime.fromisoformat(item["time"]) if item.get("time") else None},
        )  # fmt: skip
    missing = [str(item["id"]) for item in difference.get("missing") or []]
    if missing:
        await VerifiedArchive.filter(repository_id=repository.id, archive_id__in=missing,
                                     removed_at__isnull=True).update(removed_at=now)  # fmt: skip
    for item in difference.get("changed") or []:
        await VerifiedArchive.filter(repository_id=repository.id, archive_id=str(item["recorded_id"]),
                                     removed_at__isnull=True).update(removed_at=now)  # fmt: skip
        await VerifiedArchive.get_or_create(repository_id=repository.id, archive_id=str(item["listed_id"])[:64],
                                            defaults={"team_id": actor.team_id, "name": str(item["name"])[:255]})
    counts = difference.get("counts") or {}
    return {key: int(counts.get(key) or 0) for key in ("unknown", "missing", "changed", "foreign_transactions")}


async def accept(actor: Actor, repository_id: object) -> Decided:
    """Given an admin and a repository under review, accept the difference found: the record takes it over and
    maintenance resumes. Refused for a repository that is not under review (quarantine must be released first)."""
    repository = await _repository(actor, repository_id, "accept")
    name = esc(repository.name)
    if repository.integrity != Integrity.NEEDS_REVIEW:
        await record(actor, "integrity.accept", "repository", repository.id, outcome="not_applicable",
                     state=str(repository.integrity))  # fmt: skip
        return Decided(False, _state_sentence(repository), repository.id, Integrity(repository.integrity))
    detail = dict(repository.integrity_detail or {})
    difference = detail.pop("difference", None) or {}
    counts = await _apply(actor, repository, difference)
    foreign = [int(t["id"]) for t in difference.get("foreign_transactions") or []]
    if foreign:
        detail["vouched_transaction"] = max([*foreign, int(detail.get("vouched_transaction") or 0)])
    detail.update(accepted_by=actor.user_id, accepted_at=datetime.now(UTC).isoformat())
    changed = await actor.tenant.query(Repository).filter(id=repository.id, integrity=Integrity.NEEDS_REVIEW).update(
        integrity=Integrity.OK, integrity_detail=detail)
    if not changed:
        raise Refused("Someone decided on this repository at the same moment; look at `/backup status` again.")
    await record(actor, "integrity.accept", "repository", repository.id, outcome="done", **counts,
                 before={"integrity": Integrity.NEEDS_REVIEW.value},
                 after={"integrity": Integrity.OK.value})  # fmt: skip
    return Decided(True, f":white_check_mark: The change to *{name}* is accepted: the bot's record now includes it "
                         "and pruning resumes at the next maintenance.", repository.id, Integrity.OK)  # fmt: skip


async def quarantine(actor: Actor, repository_id: object) -> Decided:
    """Given an admin and a repository, keep everything in it: no prune or compact until :func:`release`."""
    repository = await _repository(actor, repository_id, "quarantine")
    name = esc(repository.name)
    before = Integrity(repository.integrity)
    if before == Integrity.QUARANTINED:
        await record(actor, "integrity.quarantine", "repository", repository.id, outcome="not_applicable")
        return Decided(False, _state_sentence(repository), repository.id, before)
    detail = {**(repository.integrity_detail or {}), "quarantined_by": actor.user_id,
              "quarantined_at": datetime.now(UTC).isoformat(), "before_quarantine": before.value}  # fmt: skip
    await actor.tenant.query(Repository).filter(id=repository.id).update(integrity=Integrity.QUARANTINED,
                                                                        integrity_detail=detail)  # fmt: skip
    await record(actor, "integrity.quarantine", "repository", repository.id, outcome="done",
                 before={"integrity": before.value}, after={"integrity": Integrity.QUARANTINED.value})  # fmt: skip
    sentence = (f":lock: *{name}* is quarantined: every archive is kept, nothing is pruned or compacted (backups "
                "continue) until an admin releases it.")
    return Decided(True, sentence, repository.id, Integrity.QUARANTINED)


async def release(actor: Actor, repository_id: object) -> Decided:
    """Given an admin and a quarantined repository, end the quarantine: back to review when a difference is still
    undecided, else to OK."""
    repository = await _repository(actor, repository_id, "release")
    if repository.integrity != Integrity.QUARANTINED:
        await record(actor, "integrity.release", "repository", repository.id, outcome="not_applicable")
        return Decided(False, _state_sentence(repository), repository.id, Integrity(repository.integrity))
    detail = dict(repository.integrity_detail or {})
    after = Integrity.NEEDS_REVIEW if detail.get("difference") else Integrity.OK
    detail.update(released_by=actor.user_id, released_at=datetime.now(UTC).isoformat())
    await actor.tenant.query(Repository).filter(id=repository.id).update(integrity=after, integrity_detail=detail)
    await record(actor, "integrity.release", "repository", repository.id, outcome="done",
                 before={"integrity": Integrity.QUARANTINED.value}, after={"integrity": after.value})  # fmt: skip
    what = "back under review: accept the change to resume pruning" if after == Integrity.NEEDS_REVIEW else \
        "released: pruning resumes at the next maintenance"  # fmt: skip
    return Decided(True, f"*{esc(repository.name)}* is {what}.", repository.id, after)


def _state_sentence(repository: Repository) -> str:
    state = Integrity(repository.integrity)
    name = esc(repository.name)
    return {
        Integrity.OK: f"*{name}* agrees with the bot's record; there is nothing to decide.",
        Integrity.NEEDS_REVIEW: f"*{name}* is under review; accept the change or quarantine it.",
        Integrity.QUARANTINED: f"*{name}* is quarantined; release it first.",
    }[state]


def state_line(repository: Repository) -> str | None:
    """One line for ``/backup status`` and the App Home when the repository is not OK (None when it is)."""
    state = Integrity(repository.integrity)
    if state == Integrity.OK:
        return None
    if state == Integrity.QUARANTINED:
        return f":lock: {esc(repository.name)}: quarantined — everything kept, no prune or compact"
    name = esc(repository.name)
    return f":warning: {name}: differs from the bot's record — no prune or compact until an admin decides"
