"""``backup-bot api-token --team T…``: create a token for the HTTP API of one workspace (shown once)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from bot.api.tokens import create_token
from bot.cli.util import load_for_command
from storage import db
from storage.tenancy import Tenant

console = Console(highlight=False)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("api-token", help="create a token for the HTTP API of one Slack workspace")
    parser.add_argument("--team", required=True, help="the Slack team id (T…) the token may act for")
    parser.set_defaults(handler=handle)


async def handle(args: argparse.Namespace) -> int:
    team_id = Tenant(args.team).team_id  # validates the id
    settings = load_for_command(Path(args.env_file))
    async with db.database(settings.resolved_database_url):
        token = await create_token(team_id)
    console.print(f"API token for {team_id} (shown once; only its hash is stored):")
    console.print(token, soft_wrap=True)
    console.print("Use it as `Authorization: Bearer <token>` on /api/backup-wizard/… in HTTP mode.")
    return 0
