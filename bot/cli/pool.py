"""``backup-bot pool add|list|edit|remove --team T…``: the workspace's storage pools from the command line.

Scriptable: ``pool list --json`` prints a list of objects (name, host — null for this machine —, path, free_bytes,
total_bytes, quota_bytes, used_bytes, tier, …); bad input is one sentence on stderr and exit status 2. The person at
the bot host's shell acts as an admin (they hold the keys and the database); every change is audited as ``cli``.
Adding a pool checks it for real first (:func:`bot.services.pools.add_pool`): borg 1.4, a writable directory, free
space; a pool on another host needs the fingerprint of its host key, obtained from that host itself.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from bot.access import Actor, Refused
from bot.backup.plan import human
from bot.cli.util import load_for_command
from bot.config import Settings
from bot.services import pools
from storage import db
from storage.crypto import install_keyring
from storage.tenancy import Tenant

console = Console(highlight=False)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``backup-bot pool`` and its subcommands."""
    parser = sub.add_parser("pool", help="list, add, change or remove a workspace's storage pools",
                            description="The storage pools where repositories live.")  # fmt: skip
    actions = parser.add_subparsers(dest="pool_command", required=True, metavar="ACTION")
    _add_add(actions)
    listing = actions.add_parser("list", help="list the pools with free space, quota used, tier and repositories")
    _team(listing)
    listing.add_argument("--tier", choices=pools.TIERS, help="only the pools of this tier")
    listing.add_argument("--json", action="store_true", help="print a JSON list of objects instead of a table")
    listing.set_defaults(handler=handle)
    edit = actions.add_parser("edit", help="change a pool's name, quota, tier or alert threshold")
    _team(edit)
    edit.add_argument("name", metavar="NAME", help="the pool to change")
    edit.add_argument("--rename", metavar="NEW", help="a new name")
    edit.add_argument("--quota", metavar="SIZE", help="a new quota (500G, 2T …), or none to remove it")
    edit.add_argument("--tier", choices=pools.TIERS, help="a new performance tier")
    edit.add_argument("--alert-at", metavar="PCT", help="a new alert threshold, percent full (1–100)")
    edit.set_defaults(handler=handle)
    remove = actions.add_parser("remove", help="remove a pool that holds no repository (its files stay on disk)")
    _team(remove)
    remove.add_argument("name", metavar="NAME", help="the pool to remove")
    remove.set_defaults(handler=handle)


def _team(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--team", required=True, metavar="T…", help="the Slack team id of the workspace (T…)")


def _add_add(actions: argparse._SubParsersAction) -> None:
    add = actions.add_parser("add", help="add a pool after checking borg, the directory and the free space",
                             description="Add a storage pool: a directory on this machine (--local) or on a host "
                                         "reached over SSH with the bot's key (--host).")  # fmt: skip
    _team(add)
    add.add_argument("--name", required=True, help="the pool's name in the bot")
    where = add.add_mutually_exclusive_group(required=True)
    where.add_argument("--local", action="store_true", help="the directory is on this machine (the bot's host)")
    where.add_argument("--host", metavar="HOST", help="the pool's host name or IP address (reached over SSH)")
    add.add_argument("--port", type=int, default=22, metavar="P", help="with --host: the SSH port (default 22)")
    add.add_argument("--user", metavar="U", help="with --host: the login user (root, or one owning the directory)")
    add.add_argument("--fingerprint", metavar="SHA256:…", help="with --host: the host key fingerprint, obtained "
                     "from the host itself (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub)")  # fmt: skip
    add.add_argument("--path", required=True, metavar="PATH", help="the absolute directory (created if missing)")
    add.add_argument("--quota", metavar="SIZE", help="at most this much for the pool's repositories (500G, 2T …)")
    add.add_argument("--tier", default="standard", choices=pools.TIERS, help="performance tier (default standard)")
    add.add_argument("--alert-at", default=str(pools.DEFAULT_ALERT), metavar="PCT",
                     help="warn when the pool is this many percent full (default 85)")  # fmt: skip
    add.add_argument("--borg", default="borg", metavar="CMD", help="the borg command on the pool's host "
                     "(default borg, found on the login's PATH)")  # fmt: skip
    add.set_defaults(handler=handle)


def _new_pool(args: argparse.Namespace) -> pools.NewPool:
    from bot.cli import UsageError

    if args.host is not None and not args.user:
        raise UsageError("Give --user with --host: the login the bot uses on the pool's host (e.g. root).")
    if args.host is not None and not args.fingerprint:
        raise UsageError("Give --fingerprint with --host: the SHA256:… fingerprint of the host's key, obtained from "
                         "the host itself (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub).")  # fmt: skip
    if args.local and (args.user or args.fingerprint or args.port != 22):
        raise UsageError("--user, --port and --fingerprint are for --host; a --local pool is on this machine.")
    return pools.NewPool(name=args.name, path=args.path, host=args.host, port=args.port, user=args.user or "root",
                         fingerprint=args.fingerprint or "", quota_bytes=pools.parse_size(args.quota),
                         tier=args.tier, alert_at=args.alert_at)  # fmt: skip


async def _tools(settings: Settings, args: argparse.Namespace) -> pools.PoolTools:
    """The bot's SSH identity (for --host) and the borg command to check."""
    from bot.identity import load_private_key
    from bot.transport import SSHPool

    if getattr(args, "host", None) is None:
        return pools.PoolTools(ssh=None, borg=args.borg)
    from bot.cli import UsageError

    install_keyring(settings.keyring())
    try:
        key = await load_private_key()
    except Exception:
        raise UsageError("The bot has no SSH identity yet: run `backup-bot init` first.") from None
    return pools.PoolTools(ssh=SSHPool([key]), borg=args.borg)


def _edit(args: argparse.Namespace) -> pools.PoolEdit:
    change = pools.PoolEdit(
        name=args.rename if args.rename is not None else pools.KEEP,
        quota_bytes=pools.parse_size(args.quota) if args.quota is not None else pools.KEEP,
        tier=args.tier if args.tier is not None else pools.KEEP,
        alert_at=args.alert_at if args.alert_at is not None else pools.KEEP,
    )
    if change == pools.PoolEdit():
        raise Refused("Say what to change: --rename, --quota, --tier or --alert-at.")
    return change


async def _act(actor: Actor, settings: Settings, args: argparse.Namespace) -> str | None:
    """Run the subcommand; returns the line to print for a change, None for a listing."""
    if args.pool_command == "add":
        new = _new_pool(args)
        tools = await _tools(settings, args)
        try:
            view = await pools.add_pool(actor, new, tools)
        finally:
            if tools.ssh is not None:
                await tools.ssh.close()
        return f"Added pool {view.name} on {view.where} at {view.path}: {human(view.free_bytes)} free of " \
               f"{human(view.total_bytes)}."  # fmt: skip
    if args.pool_command == "edit":
        view = await pools.edit_pool(actor, args.name, _edit(args))
        return f"Pool {view.name}: {_numbers(view)}."
    if args.pool_command == "remove":
        await pools.remove_pool(actor, args.name)
        return f"Removed pool {args.name} (its files on disk are left as they are)."
    return None


def _numbers(view: pools.PoolView) -> str:
    quota = f"{human(view.used_bytes)} of {human(view.quota_bytes)} quota" if view.quota_bytes else \
        f"{human(view.used_bytes)} used, no quota"  # fmt: skip
    return f"{view.tier}, {human(view.free_bytes)} free of {human(view.total_bytes)}, {quota}, alert at " \
           f"{view.alert_threshold_pct} %"  # fmt: skip


def _print(views: list[pools.PoolView], team: str) -> None:
    if not views:
        console.print(f"{team} has no storage pool yet: add one with `backup-bot pool add --team {team} --name "
                      "NAME --local --path /srv/borg` (or --host … --user … --fingerprint …).")  # fmt: skip
        return
    for view in views:
        when = f"measured {view.measured_at:%Y-%m-%d %H:%M} UTC" if view.measured_at else "never measured"
        repos = ", ".join(view.repositories) or "no repositories"
        console.print(f"{view.name}  {view.where}  {view.path}  {_numbers(view)}; {repos}; {when}")


async def handle(args: argparse.Namespace) -> int:
    """``backup-bot pool …``: refusals become one sentence (exit 2), nothing changed."""
    from bot.cli import UsageError

    actor = Actor.operator(Tenant(args.team).team_id)
    settings = load_for_command(Path(args.env_file))
    async with db.database(settings.resolved_database_url):
        try:
            done = await _act(actor, settings, args)
            views = await pools.list_pools(actor, tier=getattr(args, "tier", None)) if done is None else []
        except Refused as exc:
            raise UsageError(f"{exc.sentence}" + ("" if "nothing" in exc.sentence.lower() else
                                                  " Nothing was changed.")) from None  # fmt: skip
    if done is not None:
        console.print(done)
    elif args.json:
        print(json.dumps([v.as_json() for v in views]))
    else:
        _print(views, actor.team_id)
    return 0
