"""History the bot can vouch for: the repository's archive list and push transactions against the bot's record.

A source's push key is append-only (``borg serve --append-only``), but append-only only stops *compaction* on
that connection: through it, ``borg create`` can add archives named like the chain's (dated to steer the bot's
retention into deleting the real ones) and ``borg delete`` can hide archives (a new manifest without them, the
old segments still on disk). Only a trusted client's ``borg compact`` frees those segments and makes the change
permanent. So before any maintenance with unrestricted access (prune, delete, compact) the bot checks:

* the archive list (name + borg's archive id) against the archives it recorded as verified at the end of runs it
  supervised: an *unknown*, *missing* or *changed* archive means no maintenance (:func:`compare`);
* borg's transaction log of the append-only repository (``<repo>/transactions``, one line per transaction
  committed through an append-only connection, written by the pool's ``borg serve``, not by the client): every
  push transaction since the last one the bot vouched for must fall inside a run the bot supervised
  (:func:`foreign_transactions`); otherwise someone pushed outside the bot's runs, and nothing is compacted.

Retention then decides only over recorded archives (the bot's own math, :mod:`bot.backup.retention`) and the bot
deletes exactly the archives it chose. The storage side (the record, the state, the alert) is a :class:`Guard`
given by the run executor (:mod:`bot.runs.integrity`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bot.borg.list import ArchiveEntry
from bot.borg.repo import Repo
from bot.transport.base import Transport

TRANSACTIONS_LIMIT = 256 * 1024  # bytes of the transaction log read (its tail): ~4,000 transactions
_TRANSACTION = re.compile(r"^transaction (\d+), UTC time (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)\s*$")
SLACK = timedelta(seconds=30)  # clock difference tolerated between the pool and the bot when matching run windows
_SHOWN = 10  # archives named per kind of difference in a sentence


@dataclass(frozen=True)
class Recorded:
    """An archive in the bot's record: what it listed after a run it supervised."""

    name: str
    archive_id: str
    time: datetime | None = None


@dataclass(frozen=True)
class Transaction:
    """One line of borg's append-only transaction log: its id (a segment number) and the pool's UTC time."""

    id: int
    at: datetime


@dataclass
class TransactionLog:
    entries: list[Transaction]
    truncated: bool = False  # the file was longer than what was read (its oldest lines are unknown)

    def after(self, transaction_id: int | None) -> list[Transaction]:
        return [t for t in self.entries if transaction_id is None or t.id > transaction_id]

    @property
    def last(self) -> int | None:
        return self.entries[-1].id if self.entries else None


@dataclass
class Difference:
    """What differs between the repository and the record; empty (``clean``) when they agree."""

    unknown: list[ArchiveEntry] = field(default_factory=list)  # listed, never recorded
    missing: list[Recorded] = field(default_factory=list)  # recorded, no longer listed
    changed: list[tuple[Recorded, ArchiveEntry]] = field(default_factory=list)  # same name, another archive id
    foreign: list[Transaction] = field(default_factory=list)  # pushes outside any run the bot supervised
    unreadable: str | None = None  # the transaction log could not be read completely

    @property
    def clean(self) -> bool:
        return not (self.unknown or self.missing or self.changed or self.foreign or self.unreadable)

    def sentences(self) -> list[str]:
        """One sentence per kind of difference, naming up to ten archives each (for the alert and the audit)."""
        out: list[str] = []
        if self.unknown:
            names = _names(a.name for a in self.unknown)
            out.append(f"{len(self.unknown)} archive(s) the bot never verified: {names}.")
        if self.missing:
            out.append(f"{len(self.missing)} verified archive(s) no longer listed: "
                       f"{_names(r.name for r in self.missing)}.")  # fmt: skip
        if self.changed:
            out.append(f"{len(self.changed)} archive(s) replaced by another with the same name: "
                       f"{_names(r.name for r, _ in self.changed)}.")  # fmt: skip
        if self.foreign:
            first = self.foreign[0]
            out.append(f"{len(self.foreign)} push transaction(s) outside any backup run of the bot (first: "
                       f"transaction {first.id} at {first.at:%Y-%m-%d %H:%M:%S} UTC).")  # fmt: skip
        if self.unreadable:
            out.append(self.unreadable)
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (names and ids only) for ``Repository.integrity_detail`` and the alert."""
        return {
            "unknown": [{"name": a.name, "id": a.id, "time": a.time.isoformat()} for a in self.unknown[:200]],
            "missing": [{"name": r.name, "id": r.archive_id} for r in self.missing[:200]],
            "changed": [{"name": r.name, "recorded_id": r.archive_id, "listed_id": a.id}
                        for r, a in self.changed[:200]],
            "foreign_transactions": [{"id": t.id, "at": t.at.isoformat()} for t in self.foreign[:200]],
            "unreadable": self.unreadable,
            "counts": {"unknown": len(self.unknown), "missing": len(self.missing), "changed": len(self.changed),
                       "foreign_transactions": len(self.foreign)},
        }  # fmt: skip


def _names(names: Any) -> str:
    items = list(names)
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def compare(listed: Sequence[ArchiveEntry], recorded: Sequence[Recorded]) -> Difference:
    """Given the repository's archives and the bot's record, return what differs: archives listed but never
    recorded (by id), recorded but no longer listed, and names now carried by another archive id."""
    by_id = {r.archive_id: r for r in recorded}
    by_name = {r.name: r for r in recorded}
    listed_ids = {a.id for a in listed}
    difference = Difference()
    for archive in listed:
        if archive.id in by_id:
            continue
        if archive.name in by_name:
            difference.changed.append((by_name[archive.name], archive))
        else:
            difference.unknown.append(archive)
    replaced = {r.archive_id for r, _ in difference.changed}
    difference.missing = [r for r in recorded if r.archive_id not in listed_ids and r.archive_id not in replaced]
    return difference


# -- the transaction log ---------------------------------------------------------------------------------------


def parse_transactions(text: str) -> list[Transaction]:
    """borg's ``transactions`` lines → transactions, in file order (unparseable lines, e.g. a cut first line of a
    tail, are left out)."""
    found = []
    for line in text.splitlines():
        if match := _TRANSACTION.match(line):
            found.append(Transaction(int(match[1]), datetime.fromisoformat(match[2]).replace(tzinfo=UTC)))
    return found


async def read_transactions(pool: Transport, repo: Repo) -> TransactionLog:
    """Given the bot's pool access and the repository by path, return its append-only transaction log (the last
    :data:`TRANSACTIONS_LIMIT` bytes; a repository never pushed to through an append-only key has no file)."""
    path = repo.url.rstrip("/") + "/transactions"
    script = 'f="$1"; [ -f "$f" ] || exit 0; wc -c < "$f"; tail -c "$2" -- "$f"'
    result = await pool.run(["sh", "-c", script, "sh", path, str(TRANSACTIONS_LIMIT)], timeout=60)
    if not result.ok:
        raise OSError(f"Reading {path} on the pool failed: {result.describe_failure()}.")
    size_line, _, body = result.out.partition("\n")
    if not size_line.strip():
        return TransactionLog([])
    return TransactionLog(parse_transactions(body), truncated=int(size_line.strip()) > TRANSACTIONS_LIMIT)


def foreign_transactions(transactions: Sequence[Transaction], windows: Sequence[tuple[datetime, datetime]],
                         ) -> list[Transaction]:  # fmt: skip
    """Given push transactions and the windows (start, end) of the runs the bot supervised, return those that fall
    in no window (with :data:`SLACK` either side for the pool's clock)."""
    return [t for t in transactions if not any(start - SLACK <= t.at <= end + SLACK for start, end in windows)]


# -- what the runner asks before maintenance ---------------------------------------------------------------------


@dataclass
class Permit:
    """The guard's answer: ``allowed`` maintenance over ``recorded`` (retention's only candidates), and the last
    push transaction vouched for (stored once compaction succeeded). ``reason`` says why not, when not."""

    allowed: bool
    recorded: list[Recorded] = field(default_factory=list)
    reason: str = ""
    vouched_transaction: int | None = None


class Guard(Protocol):
    """The record keeper a run gives the runner (:mod:`bot.runs.integrity` keeps it in the database)."""

    async def record(self, proven: Sequence[ArchiveEntry]) -> None:
        """Archives the run just created and proved (listed by the bot's pool access)."""

    async def permit(self, pool: Transport, repo: Repo, borg: str) -> Permit:
        """Compare the repository with the record; on a difference: no maintenance, the state and an alert."""

    async def removed(self, names: Sequence[str]) -> None:
        """Archives the bot itself deleted by retention."""

    async def compacted(self, permit: Permit) -> None:
        """Compaction succeeded after ``permit``: the push transactions up to its mark are vouched for."""
