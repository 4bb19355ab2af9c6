"""``backup-bot restore --team T… CHAIN ARCHIVE …``: restore from a chain's archive, for scripted recovery.

* files: ``--to /new/dir [--path /etc/nginx …] [--server NAME]`` — everything, or the given paths, below a new
  directory on the chain's source server (default) or its pool's host;
* a database: ``--database SHOP --as shop_restored [--server NAME]`` — the dump of SHOP into a new database;
* over existing data: ``--overwrite --confirm <the target again>``;
* a PostgreSQL database with the server's roles of the same backup (``--globals``): roles the server lacks are
  created, existing ones reported and left as they are.

The same checks as in Slack (:mod:`bot.services.restores`), each refusal one sentence, nothing written; then a
``RESTORE`` run is queued for the bot's worker (``backup-bot run`` or ``worker``). ``--wait`` waits for its result
(exit 0 restored and checked, 1 failed or interrupted) and prints it (``--json``: one JSON object). The person at the
bot host's shell acts as an admin; the request is audited as ``cli``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from types import SimpleNamespace

from rich.console import Console

from bot.access import Actor
from bot.cli.util import command, operator_session
from bot.runs.queue import FINAL
from bot.services import restores
from bot.services.restores import RestoreRequest
from storage.models import Run, RunStatus

console = Console(highlight=False)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "restore", __doc__, help="restore files or a database from a chain's archive, checked")
    parser.add_argument("--team", required=True, metavar="T…", help="the Slack team id of the workspace (T…)")
    parser.add_argument("chain", metavar="CHAIN", help="the chain's name (retired chains too)")
    parser.add_argument("archive", metavar="ARCHIVE", help="the archive's name (`backup-bot chain archives CHAIN`)")
    parser.add_argument("--to", metavar="DIR", help="a new directory for the files")
    parser.add_argument("--path", action="append", default=[], metavar="PATH", help="an archive path (repeatable)")
    parser.add_argument("--database", metavar="NAME", help="the dumped database to restore")
    parser.add_argument("--as", dest="as_name", metavar="NEW", help="the new database's name")
    parser.add_argument("--server", metavar="NAME", help="where to restore (default: the chain's source server)")
    parser.add_argument("--overwrite", action="store_true", help="restore over existing data (needs --confirm)")
    parser.add_argument("--confirm", metavar="TARGET", default="", help="the target again, with --overwrite")
    parser.add_argument("--globals", action="store_true",
                        help="PostgreSQL: also create the server's roles from the same backup (admins)")
    parser.add_argument("--wait", action="store_true", help="wait for the result (exit 1 unless restored)")
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    parser.set_defaults(handler=handle)


def request_of(args: argparse.Namespace) -> RestoreRequest:
    """The service's request from the command line; a missing or contradictory target is a usage error."""
    from bot.cli import UsageError

    if bool(args.to) == bool(args.as_name):
        raise UsageError("Give either --to DIR (files) or --database NAME --as NEW (a database).")
    if args.globals and not args.as_name:
        raise UsageError("--globals goes with a database restore: --database NAME --as NEW --globals.")
    if args.as_name:
        return RestoreRequest(chain=args.chain, archive=args.archive, target=args.as_name, what="database",
                              server=args.server, database=args.database, overwrite=args.overwrite,
                              confirm=args.confirm, globals=args.globals)  # fmt: skip
    return RestoreRequest(chain=args.chain, archive=args.archive, target=args.to, paths=tuple(args.path),
                          server=args.server, overwrite=args.overwrite, confirm=args.confirm)  # fmt: skip


async def wait_for_result(run_id: int, poll: float = 1.0) -> Run:
    """The run once it reached a final state (``interrupted`` counts: it is never a success)."""
    while True:
        run = await Run.get(id=run_id)
        if run.status in FINAL:
            return run
        await asyncio.sleep(poll)


def summary(run: Run) -> dict[str, object]:
    return {"run_id": run.id, "status": run.status.value, "error": run.error,
            "result": (run.spec or {}).get("result")}  # fmt: skip


async def act(actor: Actor, args: argparse.Namespace, services: SimpleNamespace) -> int:
    asked = await restores.request_restore(actor, request_of(args), services=services)
    if not args.wait:
        out = {"run_id": asked.run_id, "status": "queued", "what": asked.spec.described()}
        print(json.dumps(out)) if args.json else console.print(f"Restore queued as run {asked.run_id}: "
                                                               f"{asked.spec.described()}", markup=False)
        return 0
    run = await wait_for_result(asked.run_id)
    if args.json:
        print(json.dumps(summary(run)))
    else:
        console.print(f"Run {run.id} {run.status.value}: {run.error or json.dumps((run.spec or {}).get('result'))}",
                      markup=False)  # fmt: skip
    return 0 if run.status == RunStatus.SUCCEEDED else 1


async def handle(args: argparse.Namespace) -> int:
    async with operator_session(args) as (actor, services):
        return await act(actor, args, services)
