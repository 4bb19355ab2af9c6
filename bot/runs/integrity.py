"""The bot's record of verified archives, kept in the database: the :class:`~bot.backup.integrity.Guard` a run
gives the runner.

* ``record``: each archive a supervised run created and then listed from the bot's pool access (name, borg's
  archive id, UTC time, the run) becomes a :class:`~storage.models.VerifiedArchive`.
* ``permit``: before prune / delete / compact, the repository's archive list and its append-only transaction log
  are compared with the record (:mod:`bot.backup.integrity`). A difference means no maintenance: the repository
  becomes ``needs_review`` (``Repository.integrity``; the difference in ``integrity_detail``), the audit says so,
  and an :data:`INTEGRITY_ALERT` carries the difference to Slack, where an admin accepts or quarantines
  (:mod:`bot.services.integrity`). A repository under review or quarantined gets no maintenance at all; backups
  keep running (they only append).
* Adoption (repositories from before the record existed, and every new one at its first maintenance): archives
  whose names the bot's own run history shows as backed up by a chain of this repository are recorded (their id
  as listed now); any other archive stays unknown, so it needs an admin's accept before retention may touch
  anything. The transaction log's current end is taken as vouched for. Both are audited (``integrity.baseline``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.alerts import Alert, AlertBus
from bot.backup.integrity import (
    Difference,
    Permit,
    Recorded,
    TransactionLog,
    compare,
    foreign_transactions,
    read_transactions,
)
from bot.borg import list as borg_list
from bot.borg.list import ArchiveEntry
from bot.borg.repo import Repo
from bot.transport.base import Transport
from storage.models import (
    AuditLog,
    BackupChain,
    Integrity,
    Repository,
    Run,
    RunKind,
    RunStatus,
    VerifiedArchive,
)

log = logging.getLogger(__name__)

INTEGRITY_ALERT = "integrity_review"  # an Alert kind: a repository differs from the record (bot.slack.reports posts it)
HELD = {
    Integrity.NEEDS_REVIEW: "{name} differs from the bot's record and waits for an admin's decision: no prune or "
                            "compact until then (backups continue).",
    Integrity.QUARANTINED: "{name} is quarantined by an admin: everything is kept and nothing is pruned or compacted "
                           "until an admin releases it.",
}  # fmt: skip
_STALE_RUN = timedelta(hours=12)  # a run left without an end (a crash) is taken to have lasted at most this


async def recorded_archives(repository_id: int) -> list[Recorded]:
    """Given a repository, return its recorded archives that the bot has not removed itself."""
    rows = await VerifiedArchive.filter(repository_id=repository_id, removed_at__isnull=True).order_by("id")
    return [Recorded(r.name, r.archive_id, r.archive_time) for r in rows]


async def remember(team_id: str, repository_id: int, entries: Sequence[ArchiveEntry], run_id: int | None) -> int:
    """Record ``entries`` as verified (once per archive id); returns how many were new."""
    created = 0
    for entry in entries:
        _, made = await VerifiedArchive.get_or_create(
            repository_id=repository_id, archive_id=entry.id,
            defaults={"team_id": team_id, "name": entry.name, "archive_time": entry.time, "run_id": run_id},
        )  # fmt: skip
        created += int(made)
    return created


async def system_audit(team_id: str, action: str, repository_id: int, **details: Any) -> None:
    """An audit row written by the bot itself (actor ``system``)."""
    await AuditLog.create(team_id=team_id, actor="system", action=action, object_type="repository",
                          object_id=str(repository_id), details=details)  # fmt: skip


async def _history_names(repository_id: int) -> set[str]:
    """Archive names the bot's own successful runs of this repository's chains created (stats ``jobs[].archive``)."""
    chain_ids = await BackupChain.filter(repository_id=repository_id).values_list("id", flat=True)
    done = [RunStatus.SUCCEEDED, RunStatus.WARNING]
    stats = await Run.filter(chain_id__in=list(chain_ids), kind__in=[RunKind.BACKUP, RunKind.TEST],
                             status__in=done).values_list("stats", flat=True)  # fmt: skip
    names: set[str] = set()
    for item in stats:
        for job in (item or {}).get("jobs") or []:
            if isinstance(job, dict) and job.get("status") != "failed" and isinstance(job.get("archive"), str):
                names.add(job["archive"])
    return names


async def _windows(repository_id: int, since: datetime) -> list[tuple[datetime, datetime]]:
    """The (start, end) of the backup runs of this repository's chains that may have pushed since ``since``."""
    chain_ids = list(await BackupChain.filter(repository_id=repository_id).values_list("id", flat=True))
    runs = await Run.filter(chain_id__in=chain_ids, kind__in=[RunKind.BACKUP, RunKind.TEST],
                            started_at__isnull=False, started_at__gte=since - _STALE_RUN * 2)  # fmt: skip
    now = datetime.now(UTC)
    windows = []
    for run in runs:
        end = run.finished_at or (now if run.status == RunStatus.RUNNING else run.started_at + _STALE_RUN)
        windows.append((run.started_at, end))
    return windows


@dataclass
class RecordGuard:
    """The guard of one run on one repository (``run_id`` None: a maintenance run that creates nothing)."""

    team_id: str
    repository_id: int
    run_id: int | None = None
    alerts: AlertBus | None = None

    async def record(self, proven: Sequence[ArchiveEntry]) -> None:
        await remember(self.team_id, self.repository_id, proven, self.run_id)

    async def removed(self, names: Sequence[str]) -> None:
        await VerifiedArchive.filter(repository_id=self.repository_id, name__in=list(names),
                                     removed_at__isnull=True).update(removed_at=datetime.now(UTC))  # fmt: skip

    async def compacted(self, permit: Permit) -> None:
        repository = await Repository.get(id=self.repository_id)
        detail = dict(repository.integrity_detail or {})
        detail["compacted_at"] = datetime.now(UTC).isoformat()
        repository.integrity_detail = detail
        await repository.save(update_fields=["integrity_detail"])

    async def permit(self, pool: Transport, repo: Repo, borg: str) -> Permit:
        repository = await Repository.get(id=self.repository_id)
        if repository.integrity != Integrity.OK:
            return Permit(False, reason=HELD[Integrity(repository.integrity)].format(name=repository.name))
        listed = await borg_list.archives(pool, repo, utc=True, borg=borg)
        detail = dict(repository.integrity_detail or {})
        if not detail.get("baseline_at"):
            await self._adopt(repository, listed, detail)
        recorded = await recorded_archives(self.repository_id)
        difference = compare(listed, recorded)
        vouched = await self._transactions(pool, repo, detail, difference)
        if not difference.clean:
            await self._flag(repository, difference, detail)
            said = " ".join(difference.sentences())
            return Permit(False, reason=f"{repository.name} differs from the bot's record: {said} Nothing was pruned "
                                        "or compacted.")  # fmt: skip
        detail["vouched_transaction"] = vouched
        detail["checked_at"] = datetime.now(UTC).isoformat()
        repository.integrity_detail = detail
        await repository.save(update_fields=["integrity_detail"])
        return Permit(True, recorded=recorded, vouched_transaction=vouched)

    async def _transactions(self, pool: Transport, repo: Repo, detail: dict[str, Any],
                            difference: Difference) -> int | None:  # fmt: skip
        """Fill ``difference.foreign`` / ``unreadable`` from the transaction log; return its last id."""
        vouched = detail.get("vouched_transaction")
        try:
            transactions: TransactionLog = await read_transactions(pool, repo)
        except OSError as error:
            difference.unreadable = f"The repository's transaction log could not be read: {error}"
            return vouched
        if "vouched_transaction" not in detail:  # adoption: the log as it is now
            return transactions.last
        since = transactions.after(vouched)
        if transactions.truncated and vouched is not None and all(t.id > vouched for t in transactions.entries):
            difference.unreadable = ("More push transactions happened since the last check than the bot reads at "
                                     "once; it cannot tell whether all came from its own runs.")  # fmt: skip
        if since:
            difference.foreign = foreign_transactions(since, await _windows(self.repository_id, since[0].at))
        return transactions.last if transactions.last is not None else vouched

    async def _adopt(self, repository: Repository, listed: Sequence[ArchiveEntry], detail: dict[str, Any]) -> None:
        """First maintenance under the record: record listed archives the run history vouches for (by name)."""
        known = {r.archive_id for r in await recorded_archives(self.repository_id)}
        history = await _history_names(self.repository_id)
        adopted = [a for a in listed if a.id not in known and a.name in history]
        await remember(self.team_id, self.repository_id, adopted, None)
        left = len([a for a in listed if a.id not in known and a.name not in history])
        detail["baseline_at"] = datetime.now(UTC).isoformat()
        repository.integrity_detail = detail
        await repository.save(update_fields=["integrity_detail"])
        await system_audit(self.team_id, "integrity.baseline", self.repository_id, repository=repository.name,
                           adopted=len(adopted), recorded_before=len(known), not_in_history=left)  # fmt: skip

    async def _flag(self, repository: Repository, difference: Difference, detail: dict[str, Any]) -> None:
        """Mark the repository as needing review, audit it and publish the alert with the difference."""
        detail.update(difference=difference.to_dict(), found_at=datetime.now(UTC).isoformat(), found_by_run=self.run_id)
        repository.integrity, repository.integrity_detail = Integrity.NEEDS_REVIEW, detail
        await repository.save(update_fields=["integrity", "integrity_detail"])
        sentences = difference.sentences()
        await system_audit(self.team_id, "integrity.needs_review", self.repository_id, repository=repository.name,
                           difference=" ".join(sentences)[:2000], run_id=self.run_id)  # fmt: skip
        log.warning("repository %s differs from the record: %s", repository.id, " ".join(sentences)[:500])
        if self.alerts is None:
            return
        chains = await BackupChain.filter(repository_id=repository.id).order_by("id")
        await self.alerts.publish(Alert(
            team_id=self.team_id, kind=INTEGRITY_ALERT,
            message=f"{repository.name} differs from the bot's record of verified archives: no prune or compact "
                    "until an admin decides.",
            details={"repository_id": repository.id, "repository_name": repository.name, "sentences": sentences,
                     "difference": difference.to_dict(), "run_id": self.run_id,
                     "chain_ids": [c.id for c in chains],
                     "notify_channels": list(dict.fromkeys(c.notify_channel for c in chains if c.notify_channel))},
        ))  # fmt: skip
