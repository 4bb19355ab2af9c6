"""``backup-bot api-token --team T… --user U…``: create a token for the HTTP API of one workspace (shown once).

The token acts as the Slack user given with ``--user``, with that user's roles (admins: grants or, while the bot
is connected to Slack, Slack's own admins). Without ``--user`` it can read ``/metrics`` only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from bot.access.actor import USER_ID
from bot.api.tokens import create_token
from bot.cli.util import command, load_for_command
from storage import db
from storage.tenancy import Tenant

console = Console(highlight=False)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "api-token", __doc__, help="create a token for the HTTP API of one Slack workspace")
    parser.add_argument("--team", required=True, help="the Slack team id (T…) the token may act for")
    parser.add_argument("--user", metavar="U…", help="the Slack user the token acts as (their roles apply); without "
                        "it the token reads /metrics only")  # fmt: skip
    parser.set_defaults(handler=handle)


async def handle(args: argparse.Namespace) -> int:
    from bot.cli import UsageError

    team_id = Tenant(args.team).team_id  # validates the id
    if args.user is not None and not USER_ID.match(args.user):
        raise UsageError(f"{args.user!r} is not a Slack user id (U… or W…).")
    settings = load_for_command(Path(args.env_file))
    async with db.database(settings.resolved_database_url):
        token = await create_token(team_id, args.user)
    who = f"acting as {args.user}" if args.user else "without a user: it reads /metrics only"
    console.print(f"API token for {team_id}, {who} (shown once; only its hash is stored):")
    console.print(token, soft_wrap=True)
    console.print("Use it as `Authorization: Bearer <token>` on /api/backup-wizard/… in HTTP mode.")
    return 0
