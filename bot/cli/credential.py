"""``backup-bot credential add|list|remove --team T…``: database logins stored on the bot's host, outside Slack.

The way to give the bot a database password without typing it into Slack (which keeps what is typed in its forms):

* ``add --server NAME --type mysql|postgresql|mongodb --user U [--host H] [--port P] [--password-stdin]`` — asks
  for the password without echo (or reads one line from standard input with ``--password-stdin``), tests the login
  from the server exactly as the wizard does, and stores it encrypted only when it works; the wizard then offers it
  as a saved login. A password is never accepted as an argument: command lines are visible to every user of the
  host and kept in shell history;
* ``list [--server NAME] [--json]`` — the stored logins (never a password): id, server, type, user@host:port, last
  test, how many backup sources use each;
* ``remove ID`` — refused while a backup source uses the login.

The person at the bot host's shell acts as an admin; every change is audited as ``cli``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console

from bot.access import Actor, Refused
from bot.cli.util import bot_ssh_pool, command, load_for_command
from bot.config import Settings
from bot.services import credentials
from bot.transport.base import TransportError
from storage import db
from storage.tenancy import Tenant

console = Console(highlight=False)
MAX_PASSWORD = 4096


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "credential", __doc__, help="add, list or remove database logins without typing "
                     "passwords into Slack")  # fmt: skip
    actions = parser.add_subparsers(dest="credential_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="test a database login from its server and store it encrypted")
    _team(add)
    add.add_argument("--server", required=True, metavar="NAME", help="the server (its name in the bot) the "
                     "database is reached from")  # fmt: skip
    add.add_argument("--type", required=True, choices=credentials.ENGINES, dest="engine", help="the database")
    add.add_argument("--user", required=True, metavar="U", help="the database user for backups")
    add.add_argument("--host", default="localhost", metavar="H", help="the database's address as seen from the "
                     "server (default localhost)")  # fmt: skip
    add.add_argument("--port", metavar="P", help="its port (default 3306, 5432 or 27017)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input (one "
                     "line) instead of asking for it without echo")  # fmt: skip
    add.add_argument("--password", help=argparse.SUPPRESS)  # refused with a sentence, never echoed
    listing = actions.add_parser("list", help="list the stored database logins (never their passwords)")
    _team(listing)
    listing.add_argument("--server", metavar="NAME", help="only this server's logins")
    listing.add_argument("--json", action="store_true", help="print a JSON list of objects")
    remove = actions.add_parser("remove", help="remove a stored login no backup source uses")
    _team(remove)
    remove.add_argument("credential_id", metavar="ID", help="the login's id, as list shows it")
    parser.set_defaults(handler=handle)


def _team(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--team", required=True, metavar="T…", help="the Slack team id of the workspace (T…)")
    parser.set_defaults(handler=handle)


def read_password(from_stdin: bool) -> SecretStr:
    """The password: one line of standard input, or typed at a prompt without echo (a terminal is needed)."""
    from bot.cli import UsageError

    if from_stdin:
        line = sys.stdin.readline(MAX_PASSWORD + 1)
        if len(line.rstrip("\r\n")) > MAX_PASSWORD:
            raise UsageError(f"The password on standard input is longer than {MAX_PASSWORD} characters.")
        return SecretStr(line.rstrip("\r\n"))
    if not sys.stdin.isatty():
        raise UsageError("No terminal to ask for the password without echo: give --password-stdin and send the "
                         "password on standard input (for example from a file with `< file`).")  # fmt: skip
    return SecretStr(getpass.getpass("Database password (not shown): "))


def _print_list(views: list[credentials.LoginView], as_json: bool) -> None:
    if as_json:
        print(json.dumps([{"id": v.id, "server": v.server, "type": v.engine, "login": v.login,
                           "test_status": v.test_status, "sources": v.sources,
                           "last_test_at": v.last_test_at.isoformat() if v.last_test_at else None}
                          for v in views]))  # fmt: skip
        return
    if not views:
        console.print("No stored database logins. Add one with `backup-bot credential add --team T… --server NAME "
                      "--type mysql --user U`.", markup=False)  # fmt: skip
    for v in views:
        tested = v.last_test_at.strftime("%Y-%m-%d %H:%M UTC") if v.last_test_at else "never"
        console.print(f"{v.id}  {v.server}  {v.engine}  {v.login}  last test {v.test_status} ({tested})  used by "
                      f"{v.sources} source(s)", markup=False)  # fmt: skip


async def _add(actor: Actor, settings: Settings, args: argparse.Namespace, password: SecretStr) -> int:
    new = credentials.NewLogin(server=args.server, engine=args.engine, user=args.user, password=password,
                               host=args.host, port=args.port)  # fmt: skip
    async with bot_ssh_pool(settings) as pool:
        row, result = await credentials.add_tested(actor, new, pool=pool)
    seen = ", ".join(result.databases[:10]) + (" …" if len(result.databases) > 10 else "")
    console.print(f"Stored login {row.id}: {row.username}@{row.host}:{row.port} ({args.engine}) on {args.server}, "
                  f"encrypted; it logged in from the server and sees {len(result.databases)} databases "
                  f"({seen or 'none'}). The wizard offers it as a saved login.", markup=False)  # fmt: skip
    return 0


async def _act(actor: Actor, settings: Settings, args: argparse.Namespace) -> int:
    action = args.credential_command
    if action == "list":
        _print_list(await credentials.list_logins(actor, args.server), args.json)
        return 0
    if action == "remove":
        await credentials.remove_login(actor, args.credential_id)
        console.print(f"Removed stored login {args.credential_id}.", markup=False)
        return 0
    return await _add(actor, settings, args, read_password(args.password_stdin))


async def handle(args: argparse.Namespace) -> int:
    from bot.cli import UsageError

    if getattr(args, "password", None) is not None:
        raise UsageError("A password is never given on the command line (every user of this host can read command "
                         "lines, and shells keep them): leave --password out and type it at the prompt, or use "
                         "--password-stdin.")  # fmt: skip
    actor = Actor.operator(Tenant(args.team).team_id)
    settings = load_for_command(Path(args.env_file))
    async with db.database(settings.resolved_database_url):
        try:
            return await _act(actor, settings, args)
        except Refused as exc:
            raise UsageError(exc.sentence) from None
        except TransportError as exc:
            raise UsageError(f"{exc} Nothing was stored.") from None
