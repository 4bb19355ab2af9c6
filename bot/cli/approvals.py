"""``backup-bot approvals --team T…``: show or change who needs approval for new chains and who decides.

Without change options it prints the workspace's rules. Lists are comma-separated Slack ids; an empty value
(``--approvers ""``) clears a list. Approvers may include user groups (S…) and the word ``admins``; with no
approvers listed, workspace admins decide.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from bot.cli.util import command, load_for_command
from bot.services.approvals import RulesError, changed_rules, rules_of, save_rules
from storage import db
from storage.tenancy import Tenant

console = Console(highlight=False)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "approvals", __doc__, help="show or change a workspace's approval rules for new chains")
    parser.add_argument("--team", required=True, help="the Slack team id (T…)")
    need = parser.add_mutually_exclusive_group()
    need.add_argument("--require", dest="required", action="store_true", default=None,
                      help="every creator needs approval (except --exempt users)")  # fmt: skip
    need.add_argument("--no-require", dest="required", action="store_false",
                      help="nobody needs approval (except --required-for users)")  # fmt: skip
    parser.add_argument("--exempt", metavar="U1,U2", help="users who never need approval")
    parser.add_argument("--required-for", metavar="U1,U2", help="users who always need approval")
    parser.add_argument("--approvers", metavar="U1,S2,admins", help="who may approve: users, user groups, admins")
    parser.add_argument("--channel", metavar="C…", help="where requests are posted (default: the wizard's channel)")
    parser.set_defaults(handler=handle)


def _list(value: str | None) -> list[str] | None:
    return None if value is None else [v for v in (x.strip() for x in value.split(",")) if v]


async def handle(args: argparse.Namespace) -> int:
    from bot.cli import UsageError

    team_id = Tenant(args.team).team_id
    settings = load_for_command(Path(args.env_file))
    async with db.database(settings.resolved_database_url):
        rules = await rules_of(team_id)
        changes = {"required": args.required, "exempt": _list(args.exempt), "required_for": _list(args.required_for),
                   "approvers": _list(args.approvers), "channel": args.channel}  # fmt: skip
        if any(value is not None for value in changes.values()):
            try:
                rules = changed_rules(rules, **changes)
            except RulesError as exc:
                raise UsageError(f"{exc} Nothing was changed.") from None
            await save_rules(team_id, rules)
            console.print(f"Approval rules of {team_id} saved.")
    _show(team_id, rules)
    return 0


def _show(team_id: str, rules: dict) -> None:
    everyone = bool(rules.get("required"))
    console.print(f"Approval rules of {team_id}:")
    console.print(f"  new chains need approval: {'yes, from everyone' if everyone else 'no'}"
                  + (f" except {', '.join(rules['exempt'])}" if everyone and rules.get("exempt") else ""))  # fmt: skip
    if rules.get("required_for"):
        console.print(f"  always need approval: {', '.join(rules['required_for'])}")
    console.print(f"  approvers: {', '.join(rules.get('approvers') or []) or 'workspace admins'}")
    console.print(f"  requests posted to: {rules.get('channel') or 'the channel the wizard was started from'}")
