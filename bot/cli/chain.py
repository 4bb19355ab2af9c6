"""``backup-bot chain delete|archives --team T…``: retire a chain or list its archives from the bot's host.

* ``delete NAME`` — retires the chain: no more runs, its repository and archives kept (still restorable), its name
  free for a new chain;
* ``delete NAME --repository --confirm NAME`` — deletes its repository too: the push key's line leaves the pool's
  authorized_keys, the key leaves the source, the repository directory leaves the pool, then the rows. Every
  archive of the chain is lost for good, so the chain's name must be given again with ``--confirm``;
* ``archives NAME [--page N] [--json]`` — its archives, newest first, ten a page: name, time (UTC), original and
  deduplicated size.

The person at the bot host's shell acts as an admin; every change is audited as ``cli``.
"""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

from rich.console import Console

from bot.access import Actor
from bot.backup.plan import human
from bot.cli.util import command, operator_session
from bot.services import archives, retire

console = Console(highlight=False)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "chain", __doc__, help="retire a chain (or delete its repository too), list its archives")
    actions = parser.add_subparsers(dest="chain_command", required=True, metavar="ACTION")
    delete = actions.add_parser("delete", help="retire a chain; with --repository delete its repository too")
    _common(delete)
    delete.add_argument("--repository", action="store_true", help="delete the repository and its archives too")
    delete.add_argument("--confirm", metavar="NAME", default="", help="the chain's name again (with --repository)")
    listing = actions.add_parser("archives", help="list a chain's archives, newest first")
    _common(listing)
    listing.add_argument("--page", type=int, default=1, metavar="N", help="the page (ten archives a page)")
    listing.add_argument("--json", action="store_true", help="print a JSON object")
    parser.set_defaults(handler=handle)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--team", required=True, metavar="T…", help="the Slack team id of the workspace (T…)")
    parser.add_argument("name", metavar="NAME", help="the chain's name, as /backup list shows it")
    parser.set_defaults(handler=handle)


def _plain(text: str) -> str:
    return text.replace("*", "").replace("`", "").replace(":wastebasket: ", "").replace(":warning: ", "")


def _print_page(page: archives.ArchivePage, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"chain": page.chain_name, "retired": page.retired, "repository": page.repository,
                          "total": page.total, "page": page.page, "pages": page.pages,
                          "archives": [{"name": r.name, "time": r.time.isoformat(), "original_size": r.original_size,
                                        "deduplicated_size": r.deduplicated_size} for r in page.rows]}))  # fmt: skip
        return
    console.print(f"{page.chain_name}: {page.total} archive(s) in {page.repository}, page {page.page} of "
                  f"{page.pages}, newest first", markup=False)  # fmt: skip
    for i, row in enumerate(page.rows, start=page.start + 1):
        console.print(f"{i:>4}  {row.name}  {row.time:%Y-%m-%d %H:%M} UTC  {human(row.original_size)} original  "
                      f"{human(row.deduplicated_size)} deduplicated", markup=False)  # fmt: skip


async def _act(actor: Actor, args: argparse.Namespace, services: SimpleNamespace) -> int:
    from bot.cli import UsageError

    if args.chain_command == "archives":
        _print_page(await archives.page_of(actor, args.name, services=services, page=args.page), args.json)
        return 0
    if not args.repository:
        if args.confirm:
            raise UsageError("--confirm goes with --repository (retiring alone keeps the repository).")
        console.print(_plain((await retire.retire(actor, args.name)).sentence), markup=False)
        return 0
    done = await retire.delete_repository(actor, args.name, args.confirm, services=services)
    console.print(_plain(done.sentence), markup=False)
    return 0 if done.complete else 1


async def handle(args: argparse.Namespace) -> int:
    async with operator_session(args) as (actor, services):
        return await _act(actor, args, services)
