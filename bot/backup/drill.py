"""Restore drills: the scratch place a drill restores into, and its cleanup, whatever happens.

A drill proves that the newest archive of a chain can be restored, without touching anyone's data:

* files go below a dedicated directory, :data:`DRILL_ROOT` ``/<run id>`` on the drill server (never a path a
  person chose, never the source's live directories); the run id is an integer, so the place cannot escape it;
* database dumps go into throwaway databases named :data:`DB_PREFIX` ``<run id>_<n>_<random>`` — recognisable by
  anyone who lists the server's databases, and never the name of the database the dump came from.

:class:`Scratch` is an async context manager that records every place it hands out and removes them all on exit
— after success, after a failure, and after a cancellation (the cleanup itself is shielded from a second
cancellation) — then looks again and says what, if anything, is still there (:class:`Cleanup`).
"""

from __future__ import annotations

import asyncio
import posixpath
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from bot.backup import restore_db
from bot.backup.sources import mysql as mysql_source
from bot.backup.sources import postgresql as pg_source
from bot.backup.sources.base import database_of
from bot.probes import mysql as my_probe
from bot.probes import postgresql as pg_probe
from bot.probes.base import ProbeContext, ProbeError
from bot.probes.dbcheck import DbCredential
from bot.transport.base import Transport, TransportError

DRILL_ROOT = "/var/tmp/backup-bot-drill"  # noqa: S108 — made 0700, owned by the bot's login, no symlink (prepare)
DB_PREFIX = "backup_bot_drill_"
DUMP_ENGINES = {".pgdump": "postgresql", ".sql": "mysql"}
GLOBALS = "globals.sql"
_SAFE_ROOT = re.compile(r"^/[A-Za-z0-9._/-]+$")


class DrillProblem(Exception):
    """A drill cannot run as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Dump:
    """A database dump inside an archive: its file name, engine and the database it was taken from."""

    path: str
    engine: str
    source_database: str


def dumps_in(items: Sequence[Mapping[str, Any]]) -> list[Dump]:
    """Given an archive's listing, return its database dumps (PostgreSQL ``.pgdump``, MySQL ``.sql``; the roles
    file ``globals.sql`` is not a database: a drill never loads roles into the drill server)."""
    found = []
    for item in items:
        path = str(item.get("path", ""))
        if item.get("type") != "-" or posixpath.basename(path) == GLOBALS:
            continue
        for extension, engine in DUMP_ENGINES.items():
            if path.endswith(extension):
                found.append(Dump(path, engine, database_of(path)))
    return found


def place_for(root: str, run_id: int) -> str:
    """Given the drill root and a run id, return the run's scratch directory; refuse a root that is not a plain
    absolute path (it is removed recursively later)."""
    clean = posixpath.normpath(str(root or ""))
    if not _SAFE_ROOT.match(clean) or clean == "/" or ".." in str(root).split("/"):
        raise DrillProblem(f"The drill directory {str(root)[:200]!r} must be a plain absolute path such as "
                           f"{DRILL_ROOT}.")  # fmt: skip
    if not isinstance(run_id, int) or run_id <= 0:
        raise DrillProblem("A drill's scratch place needs the run's id.")
    return f"{clean}/{run_id}"


def database_name(run_id: int, index: int) -> str:
    """A throwaway database name: the prefix, the run, the dump's number and a random tail (two bots sharing a
    database server never collide)."""
    return f"{DB_PREFIX}{run_id}_{index}_{secrets.token_hex(3)}"


@dataclass
class Cleanup:
    """What the cleanup removed and what is still there (``ok``: nothing left)."""

    removed: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.left

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "removed": list(self.removed), "left": list(self.left)}


@dataclass
class _Database:
    name: str
    engine: str
    login: Any
    client: str = "mariadb"


class Scratch:
    """The scratch place of one drill on one server (see the module docstring); use ``async with``."""

    def __init__(self, transport: Transport, root: str, run_id: int, *, sudo: bool = False) -> None:
        self.transport, self.sudo, self.run_id = transport, sudo, run_id
        self.directory = place_for(root, run_id)
        self.databases: list[_Database] = []
        self.cleanup: Cleanup | None = None

    def files_place(self, label: str) -> str:
        """A new directory below the scratch place for one archive's files (``label``: the archive group)."""
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", label)[:80] or "files"
        return f"{self.directory}/{safe}"

    def database(self, engine: str, login: DbCredential, *, client: str = "mariadb") -> str:
        """A new throwaway database name for ``engine``, dropped with the scratch place."""
        name = database_name(self.run_id, len(self.databases) + 1)
        self.databases.append(_Database(name, engine, login, client))
        return name

    async def __aenter__(self) -> Scratch:
        await self.prepare()
        return self

    async def prepare(self) -> None:
        """Make the drill root (mode 0700) and refuse one that is a symbolic link or belongs to someone else: it
        lives in a world-writable directory, and what is below it is removed recursively."""
        root = posixpath.dirname(self.directory)
        script = ('[ -L "$1" ] && { echo "is a symbolic link"; exit 3; }; mkdir -p -m 0700 -- "$1" || exit 4; '
                  '[ -d "$1" ] && [ ! -L "$1" ] && [ -O "$1" ] || { echo "is not a directory of this login"; exit 3; }')
        result = await self.transport.run(["sh", "-c", script, "sh", root], sudo=self.sudo, timeout=60)
        if not result.ok:
            why = result.out.strip() or result.describe_failure(200)
            raise DrillProblem(f"The drill directory {root} cannot be used: {why}; remove it or choose another drill "
                               "server.")  # fmt: skip

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:  # fmt: skip
        task = asyncio.ensure_future(self.clean())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task  # cancelled again while cleaning: finish the cleanup, then let the cancellation go on
            raise

    async def clean(self) -> Cleanup:
        """Remove the scratch directory and drop the throwaway databases, then look again; never raises."""
        done = Cleanup()
        try:
            await self.transport.run(["rm", "-rf", "--", self.directory], sudo=self.sudo, timeout=3600)
            probe = await self.transport.run(["sh", "-c", '[ -e "$1" ] && echo left || echo gone', "sh",
                                              self.directory], sudo=self.sudo, timeout=60)  # fmt: skip
            (done.left if "left" in probe.out else done.removed).append(self.directory)
        except TransportError as exc:
            done.left.append(f"{self.directory} ({exc})")
        for database in self.databases:
            gone = await self._drop(database)
            (done.removed if gone is True else done.left).append(
                f"database {database.name}" + ("" if gone is True else f" ({gone})"))  # fmt: skip
        self.cleanup = done
        return done

    async def _drop(self, database: _Database) -> bool | str:
        """Drop one throwaway database; True when it is gone afterwards, else why not."""
        if not database.name.startswith(DB_PREFIX):
            return "not a drill database"  # never drop anything else
        ctx = ProbeContext(self.transport, sudo=self.sudo, privileged=True)
        try:
            if database.engine == "postgresql":
                login = pg_source.credential_of(database.login)
                quoted = restore_db.pg_ident(database.name)
                await pg_probe.run_sql(ctx, login, f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)", timeout=120)
            else:
                login = mysql_source.credential_of(database.login)
                quoted = restore_db.my_ident(database.name)
                await my_probe.run_sql(ctx, database.client, login, f"DROP DATABASE IF EXISTS {quoted}", timeout=120)
            exists = await restore_db.database_exists(self.transport, database.engine, database.login, database.name,
                                                      client=database.client, sudo=self.sudo)  # fmt: skip
        except (ProbeError, TransportError, restore_db.RestoreFailed) as exc:
            return str(exc)[:300]
        return True if not exists else "still listed after DROP DATABASE"


__all__ = ["DB_PREFIX", "DRILL_ROOT", "Cleanup", "DrillProblem", "Dump", "Scratch", "database_name", "dumps_in",
           "place_for"]  # fmt: skip
