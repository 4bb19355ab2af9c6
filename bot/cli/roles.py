"""``backup-bot roles --team T…``: show or change who is an admin and who operates which server or pool.

The person at the bot host's shell acts as an admin (they hold the keys and the database); every change is audited
as ``cli``. Ids are validated: a typo is one sentence, never a silent lock-out or a grant to the wrong person.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from bot.access import Actor, Refused
from bot.cli.util import command, load_for_command
from bot.services import roles
from storage import db
from storage.tenancy import Tenant

console = Console(highlight=False)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "roles", __doc__, help="show or change a workspace's admins and operators")
    parser.add_argument("--team", required=True, help="the Slack team id (T…)")
    change = parser.add_mutually_exclusive_group()
    change.add_argument("--admin", metavar="U…|S…", help="give the admin role to a user or user group")
    change.add_argument("--operator", metavar="U…|S…|everyone", help="make a user, group or everyone an operator "
                        "of --server or --pool")  # fmt: skip
    change.add_argument("--revoke", metavar="ID", help="remove the grant with this number (see the listing)")
    change.add_argument("--admin-channel", metavar="C…|off", help="where admins are told of host key pins")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--server", metavar="NAME", help="with --operator: the server")
    target.add_argument("--pool", metavar="NAME", help="with --operator: the storage pool")
    parser.add_argument("--paths", metavar="/a,/b", default="", help="with --server: allowed path prefixes")
    parser.add_argument("--databases", metavar="x,y", default="", help="with --server: allowed database names")
    parser.add_argument("--json", action="store_true", help="print the grants as JSON")
    parser.set_defaults(handler=handle)


def _list(value: str) -> list[str]:
    return [v for v in (x.strip() for x in value.split(",")) if v]


async def _change(actor: Actor, args: argparse.Namespace) -> str | None:
    if args.admin:
        return f"Granted #{(await roles.grant_admin(actor, args.admin)).id}: admin."
    if args.operator:
        grant = await roles.grant_operator(actor, args.operator, server=args.server, pool=args.pool,
                                           paths=_list(args.paths), databases=_list(args.databases))  # fmt: skip
        return f"Granted #{grant.id}: operator of {grant.target} ({grant.limits})."
    if args.revoke:
        grant = await roles.revoke(actor, args.revoke)
        return f"Revoked #{grant.id}: {grant.role} {grant.subject} ({grant.target})."
    if args.admin_channel:
        off = args.admin_channel.lower() in ("off", "none", "")
        channel = await roles.set_admin_channel(actor, None if off else args.admin_channel)
        return f"Admin notices go to {channel or 'a DM to each admin user'}."
    return None


async def handle(args: argparse.Namespace) -> int:
    from bot.cli import UsageError

    actor = Actor.operator(Tenant(args.team).team_id)
    settings = load_for_command(Path(args.env_file))
    async with db.database(settings.resolved_database_url):
        try:
            done = await _change(actor, args)
        except Refused as exc:
            raise UsageError(f"{exc.sentence} Nothing was changed.") from None
        found = await roles.show(actor)
    if done:
        console.print(done)
    if args.json:
        print(json.dumps({"grants": [asdict(g) for g in found.grants], "admin_channel": found.admin_channel}))
        return 0
    console.print(f"Roles of {actor.team_id} (Slack admins and owners are admins too):")
    for grant in found.grants:
        what = "admin" if grant.role == "admin" else f"operator of {grant.target} ({grant.limits})"
        console.print(f"  #{grant.id}  {grant.subject}  {what}")
    if not found.grants:
        console.print("  no grants: only Slack admins and owners can add servers and pools, and nobody else uses any")
    console.print(f"  admin notices: {found.admin_channel or 'a DM to each admin user'}")
    return 0
