"""``backup-bot api-token create|list|revoke --team T…``: tokens for the HTTP API of one workspace.

* ``create [--user U…] [--scope read|write] [--expires 90d|never] [--label TEXT]`` — prints the token once (only
  its hash is stored). It acts as the Slack user given with ``--user``, with that user's roles; without ``--user``
  it reads ``/metrics`` only. ``read`` (the default) reads and never changes state or contacts a server; ``write``
  also refreshes capabilities and tests logins. Tokens expire after 90 days unless ``--expires`` says otherwise;
* ``list [--json]`` — every token of the workspace: id, state (active, expired, revoked), scope, user, label,
  creation, expiry, last use (to the minute);
* ``revoke ID`` — the token stops working at once (401 with a sentence).

The older form ``api-token --team T… [--user U…]`` still creates a token with its old meaning (a user's token acts
with full write scope, no expiry) and prints the new form to use instead. Every change is audited as ``cli``.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

from rich.console import Console

from bot.access import Actor, Refused
from bot.cli.util import command, load_for_command
from bot.services import tokens
from storage import db
from storage.models import TokenScope
from storage.tenancy import Tenant

console = Console(highlight=False)
err = Console(stderr=True, highlight=False)
HIDDEN = argparse.SUPPRESS  # options repeated on an action keep what was given before it


def _team(parser: argparse.ArgumentParser, default: object = HIDDEN) -> None:
    parser.add_argument("--team", metavar="T…", default=default, help="the Slack team id (T…) of the workspace")


def _create_options(parser: argparse.ArgumentParser, default: object = HIDDEN) -> None:
    parser.add_argument("--user", metavar="U…", default=default, help="the Slack user the token acts as (their "
                        "roles apply); without it the token reads /metrics only")  # fmt: skip
    parser.add_argument("--scope", choices=("read", "write"), default=default, help="read (default): reads only, "
                        "never changes state or contacts a server; write: also refreshes and tests logins")
    parser.add_argument("--expires", metavar="90d", default=default, help="lifetime: a number with h, d, w or y, "
                        "or never (default 90d)")  # fmt: skip
    parser.add_argument("--label", metavar="TEXT", default=default, help="what the token is for (shown by list)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "api-token", __doc__, help="create, list or revoke tokens for the HTTP API of one Slack "
                     "workspace")  # fmt: skip
    _team(parser, None)
    _create_options(parser, None)
    actions = parser.add_subparsers(dest="token_command", metavar="ACTION")
    create = actions.add_parser("create", help="create a token (printed once)")
    _team(create)
    _create_options(create)
    listing = actions.add_parser("list", help="list the workspace's tokens with their state and last use")
    _team(listing)
    listing.add_argument("--json", action="store_true", help="print a JSON list of objects")
    revoke = actions.add_parser("revoke", help="revoke a token now (its id from list)")
    _team(revoke)
    revoke.add_argument("token_id", metavar="ID", help="the token's id, as list shows it")
    parser.set_defaults(handler=handle, token_command=None, json=False)


def _when(value: datetime | None, empty: str) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else empty


def _print_list(views: list[tokens.TokenView], as_json: bool) -> None:
    if as_json:
        print(json.dumps([{"id": v.id, "state": v.state(), "scope": v.scope, "user": v.user_id, "label": v.label,
                           "created_by": v.created_by, "created_at": v.created_at.isoformat(),
                           "expires_at": v.expires_at.isoformat() if v.expires_at else None,
                           "revoked_at": v.revoked_at.isoformat() if v.revoked_at else None,
                           "last_used_at": v.last_used_at.isoformat() if v.last_used_at else None}
                          for v in views]))  # fmt: skip
        return
    if not views:
        console.print("No API tokens. Create one with `backup-bot api-token create --team T… --user U…`.")
    for v in views:
        console.print(f"{v.id}  {v.state()}  {v.scope}  {v.user_id or '(no user: /metrics only)'}  "
                      f"{v.label or '-'}", markup=False)  # fmt: skip
        console.print(f"  created {_when(v.created_at, '?')} by {v.created_by or '?'}; expires "
                      f"{_when(v.expires_at, 'never')}; last used {_when(v.last_used_at, 'never')}"
                      + (f"; revoked {_when(v.revoked_at, '')}" if v.revoked_at else ""), markup=False)


async def _create(actor: Actor, args: argparse.Namespace, legacy: bool) -> int:
    if legacy:  # the old form keeps its old meaning: a user's token had full power and no expiry
        scope = TokenScope.WRITE if args.user else TokenScope.READ
        lifetime = None
    else:
        scope = TokenScope(args.scope or "read")
        lifetime = tokens.parse_expiry(args.expires or "90d")
    new = await tokens.create(actor, args.user, scope=scope, lifetime=lifetime, label=args.label or "")
    who = f"acting as {args.user}" if args.user else "without a user: it reads /metrics only"
    expiry = _when(new.view.expires_at, "never")
    console.print(f"API token {new.view.id} for {actor.team_id}, {who}, scope {scope.value}, expires {expiry} "
                  "(shown once; only its hash is stored):", markup=False)  # fmt: skip
    print(new.secret, flush=True)
    console.print("Use it as `Authorization: Bearer <token>` on /api/backup-wizard/… and /metrics in HTTP mode; "
                  f"revoke it with `backup-bot api-token revoke --team {actor.team_id} {new.view.id}`.", markup=False)
    if legacy:
        user = f" --user {args.user}" if args.user else ""
        err.print(f"Note: `api-token --team …` is the old form; use `backup-bot api-token create --team "
                  f"{actor.team_id}{user} --scope {scope.value} --expires 90d` (read and 90 days are the defaults "
                  "there; this one has no expiry).", markup=False, soft_wrap=True)  # fmt: skip
    return 0


async def _act(actor: Actor, args: argparse.Namespace) -> int:
    action = args.token_command
    if action == "list":
        _print_list(await tokens.list_tokens(actor), args.json)
        return 0
    if action == "revoke":
        view = await tokens.revoke(actor, args.token_id)
        console.print(f"Revoked API token {view.id} ({view.scope}, {view.user_id or 'no user'}"
                      f"{', ' + view.label if view.label else ''}): it no longer works.", markup=False)  # fmt: skip
        return 0
    old_form = action is None and args.scope is None and args.expires is None and args.label is None
    return await _create(actor, args, legacy=old_form)


async def handle(args: argparse.Namespace) -> int:
    from bot.cli import UsageError

    if not args.team:
        raise UsageError("Give the workspace with --team T… (for example `backup-bot api-token list --team T0123`).")
    actor = Actor.operator(Tenant(args.team).team_id)  # validates the id
    settings = load_for_command(Path(args.env_file))
    async with db.database(settings.resolved_database_url):
        await tokens.migrate_legacy()
        try:
            return await _act(actor, args)
        except Refused as exc:
            raise UsageError(exc.sentence) from None
