"""``backup-bot migrate``: bring the database schema up to date (idempotent; also done at every start)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from bot.config import load_settings
from storage import db

console = Console(highlight=False)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("migrate", help="apply pending database migrations")
    parser.set_defaults(handler=handle)


async def handle(args: argparse.Namespace) -> int:
    settings = load_settings(Path(args.env_file))
    url = settings.resolved_database_url
    if url.startswith("sqlite://"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    with console.status(f"Applying migrations to {db.describe(url)} …"):
        async with db.database(url):
            pass
    console.print(f"Database schema is up to date ({db.describe(url)}).")
    return 0
