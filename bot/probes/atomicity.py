"""Can a database source be backed up atomically, and how? (the seed's ``canDoAtomicBackup``)

A pure function of what the database probes found plus one fact about the data directory: the snapshot
method that can snapshot its path (``"lvm"``, ``"zfs"``, ``"btrfs"``, or None), as the snapshot probe
reports it. The answer carries a sentence for the person, because "not atomic" alone would not tell them
what to change.

The seed said ``atomic = supportsTransactions or snapshotCapable`` with ``method = transaction or
snapshot``; that is right only per engine. The rules:

- MySQL/MariaDB, every table transactional (InnoDB …): ``mysqldump --single-transaction`` reads one
  consistent snapshot without blocking writers.
- MySQL/MariaDB with MyISAM/Aria/MEMORY/CSV/ARCHIVE … tables: ``--single-transaction`` does not cover them.
  Atomic only through a filesystem snapshot of the data directory (taken under a brief
  ``FLUSH TABLES WITH READ LOCK``); otherwise not atomic, since the alternative is a global read lock held
  for the whole dump, which stops every write meanwhile.
- PostgreSQL: ``pg_dump`` always dumps a database inside one repeatable-read transaction, so each database
  is consistent; databases are not consistent *with each other*, and globals (roles, tablespaces) come from
  ``pg_dumpall --globals-only`` separately.
- MongoDB replica-set member: ``mongodump --oplog`` gives a point-in-time dump (method ``transaction``,
  option ``--oplog``). Standalone or a ``mongos`` router: not atomic unless the data directory can be
  snapshotted (standalone only; a sharded cluster needs every shard at once).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from bot.probes.base import Model
from bot.probes.mongodb import MongoInfo
from bot.probes.mysql import MySQLInfo, NonTransactionalTable, tables_by_engine
from bot.probes.postgresql import PgInfo

Method = Literal["transaction", "snapshot", "none"]


class Verdict(Model):
    atomic: bool
    method: Method
    reason: str
    dump_options: tuple[str, ...] = ()


def verdict(
    facts: MySQLInfo | PgInfo | MongoInfo, snapshot: str | None = None, *, databases: Iterable[str] | None = None
) -> Verdict:
    """The verdict for one database source; ``databases`` limits a MySQL source to the ones it dumps."""
    if isinstance(facts, MySQLInfo):
        return mysql_verdict(facts, snapshot, databases=databases)
    if isinstance(facts, PgInfo):
        return postgresql_verdict(facts, snapshot)
    return mongodb_verdict(facts, snapshot)


SNAPSHOT_NAMES = {"lvm": "LVM", "zfs": "ZFS", "btrfs": "Btrfs"}


def _snapshot_phrase(snapshot: str, path: str | None) -> str:
    where = f"the data directory {path}" if path else "the data directory"
    return f"a {SNAPSHOT_NAMES.get(snapshot, snapshot)} snapshot of {where}"


def mysql_verdict(info: MySQLInfo, snapshot: str | None, *, databases: Iterable[str] | None = None) -> Verdict:
    """All-transactional → ``--single-transaction``; otherwise a snapshot, or not atomic (see module doc)."""
    server = info.server
    if server is None:
        return Verdict(
            atomic=False,
            method="none",
            reason="The tables could not be inspected because the bot "
            "could not log in to MySQL/MariaDB; enter a working login first.",
        )
    wanted = set(databases) if databases is not None else None
    tables = [t for t in server.non_transactional if wanted is None or t.database in wanted]
    if not tables:
        return Verdict(
            atomic=True,
            method="transaction",
            dump_options=("--single-transaction",),
            reason="Every table uses a transactional engine (InnoDB), so mysqldump "
            "--single-transaction reads one consistent snapshot without blocking writes.",
        )
    found = _describe_tables(tables)
    if snapshot:
        return Verdict(
            atomic=True,
            method="snapshot",
            reason=f"{found} --single-transaction cannot make those consistent, so the backup uses "
            f"{_snapshot_phrase(snapshot, server.datadir)}, taken while tables are briefly locked "
            "(FLUSH TABLES WITH READ LOCK for a moment, not for the whole backup).",
        )
    return Verdict(
        atomic=False,
        method="none",
        dump_options=("--single-transaction",),
        reason=f"{found} --single-transaction cannot make those consistent, and the data directory "
        f"{server.datadir} is not on LVM, ZFS or Btrfs, so it cannot be snapshotted. A consistent dump "
        "would need a global read lock for the whole dump, which stops all writes meanwhile; convert "
        "the tables to InnoDB, or move the data directory to a volume that can be snapshotted.",
    )


def _describe_tables(tables: list[NonTransactionalTable]) -> str:
    engines = ", ".join(f"{engine} ({count})" for engine, count in sorted(tables_by_engine(tables).items()))
    names = sorted({t.database for t in tables})
    listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    plural = "s" if len(tables) != 1 else ""
    return f"{len(tables)} table{plural} in {listed} use{'' if plural else 's'} non-transactional engines: {engines}."


def postgresql_verdict(info: PgInfo, snapshot: str | None = None) -> Verdict:
    """pg_dump is always consistent per database; the snapshot capability does not change that."""
    del snapshot  # a snapshot is not needed: pg_dump's own transaction is consistent
    return Verdict(
        atomic=True,
        method="transaction",
        dump_options=("--format=custom",),
        reason="pg_dump reads each database inside one repeatable-read transaction, so every database "
        "is dumped consistently without blocking writes. Different databases are dumped one after the "
        "other (not consistent with each other), and roles and tablespaces come from "
        "pg_dumpall --globals-only, taken separately.",
    )


def mongodb_verdict(info: MongoInfo, snapshot: str | None = None) -> Verdict:
    """Replica set → ``--oplog``; standalone → snapshot or not atomic; sharded → not atomic."""
    if info.topology == "replica_set":
        return Verdict(
            atomic=True,
            method="transaction",
            dump_options=("--oplog",),
            reason=f"This server is a member of the replica set {info.replica_set}, so mongodump "
            "--oplog records the writes made during the dump and the restore replays them: the backup "
            "is a consistent point in time.",
        )
    if info.topology == "sharded":
        return Verdict(
            atomic=False,
            method="none",
            reason="This is a mongos router of a sharded cluster: mongodump --oplog does not work "
            "through it, and a consistent backup needs every shard at once. Back up each shard's "
            "replica set instead.",
        )
    if info.topology == "standalone" and snapshot:
        return Verdict(
            atomic=True,
            method="snapshot",
            reason=f"A standalone server has no oplog for --oplog, so the backup uses "
            f"{_snapshot_phrase(snapshot, None)} (with journaling on, a snapshot is consistent).",
        )
    if info.topology == "standalone":
        why = "A standalone server has no oplog, so mongodump cannot take a point-in-time dump,"
    else:
        why = "The bot could not tell whether this server is a replica-set member, so --oplog cannot be relied on,"
    return Verdict(
        atomic=False,
        method="none",
        reason=f"{why} and the data directory cannot be snapshotted: writes during the dump can leave "
        "collections inconsistent with each other. Convert it to a single-member replica set (then "
        "--oplog works), or put the data directory on LVM, ZFS or Btrfs.",
    )
