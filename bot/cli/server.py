"""``backup-bot server list|add|remove --team T…``: the workspace's servers from the command line.

The person at the bot host's shell acts as an admin (they hold the keys and the database); every change is audited
as ``cli``. Scriptable:

* ``server list [--json]`` — JSON: a list of objects with ``name``, ``address`` (user@host:port), ``host``,
  ``port``, ``user``, ``fingerprint`` (null: key not confirmed), ``status``, ``reachable`` (null: never probed),
  ``problem``, ``borg_version``, ``last_probe`` (ISO 8601 or null), ``chains`` and ``pools`` (names);
* ``server add --name N --host H [--port P] [--user U] --fingerprint SHA256:…`` — reads the key the server presents
  and pins it when it is the one given: exit 0, "added". Without ``--fingerprint`` it prints the fingerprint the
  server presents and how to check it on the server itself, stores nothing, and exits 1 ("not added": run it again
  with the fingerprint once it is verified). A wrong fingerprint is refused: nothing stored, exit 2;
* ``server remove NAME`` — refused (exit 2, naming them) while chains or pools use the server.

Bad input is one sentence on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from bot.access import Actor, Refused
from bot.alerts import AlertBus
from bot.cli.util import load_for_command
from bot.services import servers
from bot.transport.base import TransportError
from storage import db
from storage.tenancy import Tenant

console = Console(highlight=False)
NOT_ADDED = 1  # `server add` without --fingerprint: the key was shown, nothing was stored


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``backup-bot server`` and its subcommands."""
    parser = sub.add_parser("server", help="list, add or remove a workspace's servers",
                            description="The servers the bot backs up from (and pool hosts).")  # fmt: skip
    actions = parser.add_subparsers(dest="server_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list the servers with reachability, borg version, last probe, "
                                              "the chains and pools using each")  # fmt: skip
    _team(listing)
    listing.add_argument("--json", action="store_true", help="print a JSON list of objects instead of a table")
    listing.set_defaults(handler=handle)
    add = actions.add_parser(
        "add", help="add a server, pinning its host key against the fingerprint you give",
        description="Add a server. With --fingerprint the key the server presents is pinned when it matches (exit "
                    "0); without it the command prints that key's fingerprint, stores nothing and exits 1.",
    )  # fmt: skip
    _team(add)
    add.add_argument("--name", required=True, metavar="NAME", help="the server's name in the bot")
    add.add_argument("--host", required=True, metavar="HOST", help="its host name or IP address")
    add.add_argument("--port", default="22", metavar="P", help="its SSH port (default 22)")
    add.add_argument("--user", default="root", metavar="U", help="the login the bot uses: root, or a user with "
                     "passwordless sudo (default root)")  # fmt: skip
    add.add_argument("--fingerprint", metavar="SHA256:…", help="the host key's fingerprint, obtained from the server "
                     "itself (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub); without it nothing is added")
    add.add_argument("--json", action="store_true", help="print the outcome as a JSON object")
    add.set_defaults(handler=handle)
    remove = actions.add_parser("remove", help="remove a server no chain or pool uses (with its stored database "
                                               "logins); nothing on the server changes")  # fmt: skip
    _team(remove)
    remove.add_argument("name", metavar="NAME", help="the server to remove")
    remove.set_defaults(handler=handle)


def _team(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--team", required=True, metavar="T…", help="the Slack team id of the workspace (T…)")


def _print_list(views: list[servers.ServerView], as_json: bool) -> None:
    if as_json:
        print(json.dumps([v.to_json() for v in views]))
        return
    if not views:
        console.print("No servers. Add one with `backup-bot server add` or in Slack with `/backup new`.")
    for v in views:
        reach = {True: "reachable", False: "unreachable", None: "not probed"}[v.reachable]
        probed = v.probed_at.strftime("%Y-%m-%d %H:%M UTC") if v.probed_at else "never"
        console.print(f"{v.name}  {v.address}  {v.status} ({reach})  borg {v.borg_version or 'unknown'}  "
                      f"last probe {probed}", markup=False)  # fmt: skip
        console.print(f"  key {v.key}; chains: {', '.join(v.chains) or 'none'}; pools: {', '.join(v.pools) or 'none'}",
                      markup=False)  # fmt: skip
        if v.problem and v.status != "ok":
            console.print(f"  {v.problem}", markup=False)


def _print_added(outcome: servers.Added, new: servers.NewServer, as_json: bool) -> int:
    key = outcome.presented
    if as_json:
        print(json.dumps({"added": outcome.added, "name": new.name, "fingerprint": key.fingerprint,
                          "key_type": key.key_type}))  # fmt: skip
    elif outcome.added:
        console.print(f"Added {new.name} ({new.username}@{new.host}:{new.port}) with the host key {key.fingerprint} "
                      "pinned. Next: put the bot's public key in the login's ~/.ssh/authorized_keys (`backup-bot "
                      "init` prints it), then probe the server with Refresh in `/backup servers`.", markup=False)
    else:
        console.print(f"{new.host}:{new.port} presents the {key.key_type} host key {key.fingerprint}. Nothing was "
                      "added. Verify it on the server itself (its console, or its administrator): "
                      "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` there must print the same SHA256 value. "
                      "Then run this command again with --fingerprint " + key.fingerprint + ".", markup=False)
    return 0 if outcome.added else NOT_ADDED


def _announcements() -> AlertBus:
    """Admin notices (a pinned key) queued in the outbox, delivered to Slack by the running bot."""
    from bot.runs.outbox import Outbox, TransientDeliveryError
    from bot.slack.notices import AdminNoticePoster

    async def not_from_here(method: str, params: dict) -> dict:
        raise TransientDeliveryError("the CLI only queues; `backup-bot run` delivers")

    bus = AlertBus()
    bus.subscribe(AdminNoticePoster(Outbox(not_from_here)).on_alert)
    return bus


async def _act(actor: Actor, args: argparse.Namespace) -> int:
    if args.server_command == "list":
        _print_list(await servers.list_servers(actor), args.json)
        return 0
    if args.server_command == "remove":
        gone = await servers.remove(actor, args.name)
        console.print(f"Removed {gone.name} ({gone.username}@{gone.host}:{gone.port}) and its stored database "
                      "logins. Nothing on the server itself was changed.", markup=False)  # fmt: skip
        return 0
    new = servers.NewServer(name=args.name, host=args.host, port=args.port, username=args.user)
    outcome = await servers.add(actor, new, args.fingerprint, alerts=_announcements())
    return _print_added(outcome, servers.checked(new), args.json)


async def handle(args: argparse.Namespace) -> int:
    from bot.cli import UsageError

    actor = Actor.operator(Tenant(args.team).team_id)
    settings = load_for_command(Path(args.env_file))
    async with db.database(settings.resolved_database_url):
        try:
            return await _act(actor, args)
        except Refused as exc:
            raise UsageError(exc.sentence) from None
        except TransportError as exc:
            raise UsageError(f"{exc} Nothing was added.") from None
