"""``backup-bot schedule preview``: the next start instants of a schedule, as the scheduler will compute them.

Uses :func:`bot.backup.schedule.next_runs`, the same function as the wizard's "next 5 runs" and the scheduler.
Needs no database and no settings (``--env-file`` is ignored). Prints one ISO-8601 instant with its UTC offset per
line; a bad option is refused with one sentence and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

from bot.backup.schedule import DAYS, ScheduleError, next_runs
from bot.cli.util import command

MAX_COUNT = 1000
_OPTION = {"days": "--days", "at": "--at", "window": "--window", "timezone": "--tz", "priority": "--priority"}

_EPILOG = """\
Days are the days a run starts on. A window (start-end, e.g. 23:00-01:00) may cross midnight; the run may start
anywhere inside it, and the instant printed is the window's start. A local time skipped by a daylight-saving
change runs at the first instant after the gap; a local time that occurs twice runs once, at the first one.
--from without an offset is wall-clock time in --tz; runs strictly after it are printed (default: now).
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "schedule", __doc__, help="preview when a schedule runs (days, time or window, time zone)")
    actions = parser.add_subparsers(dest="schedule_action", required=True, metavar="ACTION")
    preview = actions.add_parser(
        "preview",
        help="print the next N start instants (ISO-8601 with offset), one per line",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    preview.add_argument("--days", default=",".join(DAYS), metavar="DAYS", help="e.g. mon,wed,fri (default: every day)")
    preview.add_argument("--at", metavar="HH:MM", help="a fixed start time, e.g. 02:00")
    preview.add_argument("--window", metavar="HH:MM-HH:MM", help="a backup window instead of --at, e.g. 01:00-05:00")
    preview.add_argument("--tz", metavar="ZONE", help="IANA time zone, e.g. Europe/Paris (required)")
    preview.add_argument("--from", dest="start", metavar="ISO-8601", help="list runs after this instant (default: now)")
    preview.add_argument("--count", default="5", metavar="N", help=f"how many runs, 1–{MAX_COUNT} (default 5)")
    preview.set_defaults(handler=handle_preview, env_file_may_be_missing=True)


def _usage(message: str) -> Exception:
    """``bot.cli.UsageError`` (imported here: ``bot.cli`` imports this module before it defines the class)."""
    from bot.cli import UsageError

    return UsageError(message)


def _count(text: str) -> int:
    value = text.strip()
    if not value.isdigit() or not 1 <= int(value) <= MAX_COUNT:
        raise _usage(f"--count {text!r} is not a whole number from 1 to {MAX_COUNT}.")
    return int(value)


def _start(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise _usage(f"--from {text!r} is not an ISO-8601 date and time, e.g. 2026-03-29T00:00:00+01:00.") from None


def schedule_from(args: argparse.Namespace) -> dict:
    """The schedule mapping (the wizard's shape) the options describe."""
    if args.tz is None:
        raise _usage("Give the time zone with --tz, e.g. --tz Europe/Paris or --tz UTC.")
    window = None
    if args.window is not None:
        parts = [part.strip() for part in args.window.replace("–", "-").split("-")]
        window = parts if len(parts) == 2 else [args.window]  # a wrong shape is reported by the validator
    days = [day.strip() for day in args.days.split(",") if day.strip()]
    return {"days": days, "at": args.at, "window": window, "timezone": args.tz, "priority": None}


def handle_preview(args: argparse.Namespace) -> int:
    schedule = schedule_from(args)
    count = _count(args.count)
    start = _start(args.start)
    try:
        runs = next_runs(schedule, count, start)
    except ScheduleError as exc:
        raise _usage(" ".join(f"{_OPTION.get(name, name)}: {text}" for name, text in exc.errors.items())) from None
    if len(runs) < count:
        after = f"after {args.start}" if args.start else "from now"
        raise _usage(f"Only {len(runs)} of the {count} runs asked for fall {after} before the calendar ends (the "
                     "year 9999): give an earlier --from or a smaller --count.")  # fmt: skip
    sys.stdout.write("".join(moment.isoformat() + "\n" for moment in runs))
    sys.stdout.flush()
    return 0
