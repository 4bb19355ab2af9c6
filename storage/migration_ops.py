"""Migration operations of our own, for what Tortoise's would do wrong.

Tortoise's ``AlterField`` on SQLite rebuilds the whole table (SQLite cannot alter a column) and the rebuilt table
loses every index and ``unique_together`` constraint of the old one. A change of a ``CharEnumField``'s enum (a new
value) changes nothing in the database — the column stays VARCHAR of the same length, the values are checked by the
application — so it is recorded in the migration state only (:class:`StateOnlyAlterField`), and no table is rebuilt.
:func:`restore_sqlite_indexes` puts back, idempotently, the indexes earlier rebuilds lost.
"""

from __future__ import annotations

from typing import Any

from tortoise.migrations import operations as ops

# (table, index name as Tortoise generates it, columns, unique): what migrations 0007 and 0010 (before it was made
# state-only) lost on SQLite. Unique pairs are table constraints in a CREATE TABLE; rebuilt here as unique indexes.
LOST_ON_SQLITE: tuple[tuple[str, str, tuple[str, ...], bool], ...] = (
    ("approval", "idx_approval_team_id_de248e", ("team_id",), False),
    ("approval", "idx_approval_session_d4ae8b", ("session_id",), False),
    ("backup_chain", "idx_backup_chai_team_id_5a982e", ("team_id",), False),
    ("backup_chain", "uid_backup_chain_team_id_name", ("team_id", "name"), True),
    ("backup_source", "idx_backup_sour_team_id_fc59df", ("team_id",), False),
    ("backup_templates", "idx_backup_temp_team_id_0b6f41", ("team_id",), False),
    ("backup_templates", "uid_backup_templates_team_id_name", ("team_id", "name"), True),
    ("run", "idx_run_team_id_99a4ee", ("team_id",), False),
    ("run", "idx_run_status_9dea96", ("status",), False),
    ("run", "idx_run_next_at_93e312", ("next_attempt_at",), False),
    ("run", "idx_run_lock_ke_d266d7", ("lock_key",), False),
    ("run", "idx_run_job_id_366dc5", ("job_id",), False),
)


class StateOnlyAlterField(ops.AlterField):
    """An ``AlterField`` that changes the migration state only: for changes with no effect on the database."""

    async def database_forward(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def database_backward(self, *args: Any, **kwargs: Any) -> None:
        return None


async def _indexed(client: Any, table: str, columns: tuple[str, ...], unique: bool) -> bool:
    """Given a SQLite table, return whether an index (unique when asked) covers exactly ``columns``."""
    _, indexes = await client.execute_query(f'PRAGMA index_list("{table}")')
    for index in indexes:
        if unique and not index["unique"]:
            continue
        _, info = await client.execute_query(f'PRAGMA index_info("{index["name"]}")')
        if tuple(row["name"] for row in sorted(info, key=lambda r: r["seqno"])) == columns:
            return True
    return False


async def restore_sqlite_indexes(apps: Any, schema_editor: Any) -> None:
    """Create the indexes of :data:`LOST_ON_SQLITE` that a SQLite database lacks (other engines lost none)."""
    client = schema_editor.client
    if client.capabilities.dialect != "sqlite":
        return
    for table, name, columns, unique in LOST_ON_SQLITE:
        if await _indexed(client, table, columns, unique):
            continue
        kind = "UNIQUE INDEX" if unique else "INDEX"
        cols = ", ".join(f'"{c}"' for c in columns)
        await client.execute_script(f'CREATE {kind} IF NOT EXISTS "{name}" ON "{table}" ({cols})')
