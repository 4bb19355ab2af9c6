"""``backup-bot audit --team T…``: read a workspace's audit log, newest first, one page at a time.

The operator at the host's shell acts as an admin (:meth:`~bot.access.Actor.operator`), so every entry of the
workspace is readable; ``--chain``, ``--server``, ``--user`` and ``--since`` narrow it. One line per entry (time in
UTC, actor, action, object, what changed), or with ``--json`` one JSON object per line for scripts (the paging line
then goes to stderr, so stdout stays pure JSON lines).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.access import Actor, Refused
from bot.cli.util import command, load_for_command
from bot.services import audit
from storage import db
from storage.tenancy import Tenant

SPAN = re.compile(r"^(\d{1,6})([mhdw])$")
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "audit", __doc__, help="read a workspace's audit log (who did what, when), newest first")
    parser.add_argument("--team", required=True, help="the Slack team id (T…)")
    parser.add_argument(
        "--since",
        metavar="ISO-8601|7d|24h",
        help="only entries from this time on (a UTC time or date, or a span back from now)",
    )
    parser.add_argument("--chain", metavar="NAME", help="entries about this chain, its repository and its runs")
    parser.add_argument("--server", metavar="NAME", help="entries about this server and its chains")
    parser.add_argument("--user", metavar="U…", help="entries of what this user (or cli, system) did")
    parser.add_argument("--page", type=int, default=1, metavar="N", help="page N (1 is the newest; default 1)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(handler=handle)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """Given ``7d``, ``24h``, ``30m``, ``2w`` or an ISO-8601 time or date (UTC unless it says otherwise), return the
    instant; a :class:`ValueError` says what was expected."""
    value = text.strip()
    span = SPAN.match(value.lower())
    if span:
        return (now or datetime.now(UTC)) - timedelta(**{UNITS[span.group(2)]: int(span.group(1))})
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--since {value[:40]!r} is neither an ISO-8601 time (2026-05-01 or 2026-05-01T12:00Z) "
                         "nor a span back from now like 30m, 24h, 7d or 2w.") from None  # fmt: skip
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def line_of(entry: audit.Entry) -> str:
    """``2026-05-03 12:00:00Z  U0001  chain.pause  chain 3 (web-files)  status: active→paused  [done]``."""
    parts = [entry.when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ"), entry.actor, entry.action, entry.target]
    if entry.change:
        parts.append(entry.change)
    if entry.outcome:
        parts.append(f"[{entry.outcome}]")
    return "  ".join(" ".join(str(p).split()) for p in parts)  # one line, whatever the stored text holds


async def handle(args: argparse.Namespace) -> int:
    from bot.cli import UsageError

    team_id = Tenant(args.team).team_id
    try:
        since = parse_since(args.since) if args.since is not None else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.page < 1:
        raise UsageError(f"--page {args.page}: pages are counted from 1 (the newest entries).")
    settings = load_for_command(Path(args.env_file))
    async with db.database(settings.resolved_database_url):
        try:
            found = await audit.entries(Actor.operator(team_id), chain=args.chain, server=args.server,
                                        user=args.user, since=since, page=args.page - 1)  # fmt: skip
        except Refused as exc:
            raise UsageError(exc.sentence) from None
    for entry in found.entries:
        print(json.dumps(entry.as_dict(), ensure_ascii=False, default=str) if args.json else line_of(entry))
    if found.entries:
        footer = f"page {found.page + 1} of {found.pages} ({found.counted})"
        footer += f"; --page {found.page + 2} for older ones" if found.has_next else ""
    elif found.total == 0:
        footer = "no entries"
    else:
        footer = f"no page {found.page + 1}: {found.counted} on {found.pages} page{'s' if found.pages > 1 else ''}"
    print(footer, file=sys.stderr if args.json else sys.stdout)
    return 0
