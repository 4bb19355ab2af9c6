"""``backup-bot migrate``: bring the database schema up to date (idempotent; also done at every start of ``run``).

With ``BACKUPBOT_QUEUE=procrastinate`` it also creates procrastinate's tables in the same database when they are
missing. ``backup-bot worker`` never migrates (several workers starting at once would race): run this first.

Reads DATABASE_URL (default: SQLite in BACKUPBOT_DATA_DIR, created when missing) and BACKUPBOT_QUEUE from the
settings (--env-file, default .env, and the environment); it has no options of its own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from bot.cli.util import command, ensure_writable_dir, load_for_command
from bot.config import ConfigError, Settings
from storage import db
from storage.errors import DatabaseUnavailable, StorageError

console = Console(highlight=False)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "migrate", __doc__, help="apply pending database migrations")
    parser.set_defaults(handler=handle)


async def handle(args: argparse.Namespace) -> int:
    settings = load_for_command(Path(args.env_file))
    url = settings.resolved_database_url
    if db.sqlite_file(url) is not None and settings.database_url is None:
        ensure_writable_dir(settings.data_dir, "BACKUPBOT_DATA_DIR")
    with console.status(f"Applying migrations to {db.describe(url)} …"):
        async with db.database(url):
            pass
        created = await queue_schema(settings)
    console.print(f"Database schema is up to date ({db.describe(url)}).")
    if settings.queue_backend == "procrastinate":
        console.print("procrastinate's tables " + ("created." if created else "are in place."))
    return 0


async def queue_schema(settings: Settings) -> bool:
    """The run queue backend's own tables (procrastinate's); one sentence when the database refuses."""
    from bot.runs.backends import apply_schema

    try:
        return await apply_schema(settings)
    except (StorageError, ConfigError):
        raise
    except Exception as exc:
        raise DatabaseUnavailable(
            f"Cannot create procrastinate's tables in {db.describe(settings.resolved_database_url)} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Check that the user may "
            "create tables and functions in that database, then run `backup-bot migrate` again."
        ) from exc
