"""``backup-bot retention preview``: which archives ``borg prune`` would keep, computed without borg.

The wizard's preview and an operator deciding on a policy ask the same question, so both use this command.
It needs no database and no settings (``--env-file`` is ignored), only JSON lines ``{"name": …, "time": …}``;
it prints one JSON line per archive, newest first, exactly as ``borg prune --dry-run --list`` 1.4.5 would
decide with ``TZ`` set to the zone given here (see :mod:`bot.backup.retention`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, tzinfo
from typing import TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.backup.retention import Archive, Decision, Policy, decide, validate
from bot.cli.util import command

COUNT_OPTIONS = (
    "last",
    "secondly",
    "minutely",
    "hourly",
    "daily",
    "weekly",
    "monthly",
    "yearly",
    "13weekly",
    "3monthly",
)

_COUNT_HELP = {
    "last": "keep the N newest archives (borg: the same as --keep-secondly)",
    "daily": "keep the newest archive of each of the N most recent days with archives (likewise for the others)",
    "13weekly": "quarters of 13 ISO weeks",
    "3monthly": "calendar quarters",
}

_PREVIEW_EPILOG = """\
Input: one JSON object per line, {"name": "web-2024-05-01", "time": "2024-05-01T03:00:00+02:00"}.
A time without an offset is wall-clock time in --tz; in the repeated hour when clocks go back it means
the first (summer-time) occurrence, and a time inside the skipped hour of spring is refused.
Output: {"name": ..., "keep": true|false, "rule": "daily"|..., "rank": N|null} per archive, newest first.
Rules are named as borg prints them: "secondly" for --keep-last, "quarterly_13weekly", "daily[oldest]" when
a rule that could not fill its count keeps the oldest archive, "checkpoint" for a still-needed checkpoint.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "retention", __doc__, help="preview what a retention policy keeps (borg prune semantics)")
    actions = parser.add_subparsers(dest="retention_action", required=True, metavar="ACTION")
    preview = actions.add_parser(
        "preview",
        help="decide keep/prune for a list of archives, like `borg prune --dry-run --list`",
        epilog=_PREVIEW_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    preview.add_argument("--keep-within", metavar="INTERVAL", help="keep everything newer than this, e.g. 2d, 12H")
    for option in COUNT_OPTIONS:
        preview.add_argument(f"--keep-{option}", type=int, default=0, metavar="N", help=_COUNT_HELP.get(option))
    preview.add_argument("--tz", metavar="ZONE", help="IANA time zone for the periods (default: this machine's)")
    preview.add_argument("--archives", required=True, metavar="FILE|-", help="JSON lines file, or - for stdin")
    preview.set_defaults(handler=handle_preview, env_file_may_be_missing=True)


def handle_preview(args: argparse.Namespace) -> int:
    policy = _policy(args)
    zone = _zone(args.tz)
    archives = _read_archives(args.archives, zone)
    if not archives:
        where = "standard input" if args.archives == "-" else args.archives
        raise _usage(f'No archives in {where}: give one JSON object per line, e.g. {{"name": "web-2024-05-01", '
                     '"time": "2024-05-01T03:00:00+02:00"} (borg list --json gives the names and times).')  # fmt: skip
    try:
        decisions = decide(archives, policy, zone)
    except ValueError as exc:
        raise _usage(str(exc)) from None
    except OverflowError:
        raise _usage(f"An archive time is so close to year 1 or 9999 that it cannot be placed in {zone}: "
                     "check the input's times.") from None  # fmt: skip
    _write(decisions, sys.stdout)
    return 0


def _usage(message: str) -> Exception:
    """``bot.cli.UsageError`` (imported here: ``bot.cli`` imports this module before it defines the class)."""
    from bot.cli import UsageError

    return UsageError(message)


def _policy(args: argparse.Namespace) -> Policy:
    """The policy from the options, refused with the validator's sentence when it is nonsense."""
    counts = {f"keep_{option}": getattr(args, f"keep_{option}") for option in COUNT_OPTIONS}
    policy = Policy(keep_within=args.keep_within, **counts)
    try:
        validate(policy)
    except ValueError as exc:
        raise _usage(str(exc)) from None
    return policy


def _zone(name: str | None) -> tzinfo:
    """The zone named by --tz, or the machine's own zone (what borg's localtime() would use)."""
    if name is None:
        return _machine_zone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise _usage(f"Unknown time zone {name!r}: give an IANA name such as Europe/Paris or UTC.") from None


def _machine_zone() -> tzinfo:
    """$TZ when it names a zone, else /etc/localtime, else UTC — the same sources glibc's localtime() reads."""
    name = os.environ.get("TZ", "").removeprefix(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise _usage(f"TZ={name!r} is not a time zone this machine knows; pass --tz ZONE.") from None
    try:
        with open("/etc/localtime", "rb") as fh:
            return ZoneInfo.from_file(fh, key="localtime")
    except (OSError, ValueError):
        return UTC


def _read_archives(source: str, zone: tzinfo) -> list[Archive]:
    """Every non-blank line of FILE (or stdin for "-") as an Archive; the first bad line stops with its number."""
    try:
        if source == "-":
            return list(_parse_lines(sys.stdin, zone))
        with open(source, encoding="utf-8") as fh:
            return list(_parse_lines(fh, zone))
    except OSError as exc:
        raise _usage(f"Cannot read {source}: {exc.strerror or exc}.") from None
    except UnicodeDecodeError:
        raise _usage(f"Cannot read {source}: it is not UTF-8 text.") from None


def _parse_lines(lines: Iterable[str], zone: tzinfo) -> Iterator[Archive]:
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield _parse_line(line, number, zone)


def _parse_line(line: str, number: int, zone: tzinfo) -> Archive:
    """One ``{"name": …, "time": …}`` line, with the line number in every complaint."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _usage(f"Line {number} is not valid JSON ({exc.msg}).") from None
    if not isinstance(record, dict) or not isinstance(record.get("name"), str) or not record["name"]:
        raise _usage(f'Line {number} needs a JSON object with a non-empty "name" string and a "time".')
    text = record.get("time")
    try:
        moment = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        moment = None
    if moment is None:
        raise _usage(f"Line {number}: time {text!r} is not an ISO-8601 date and time, e.g. 2024-05-01T03:00:00Z.")
    return Archive(record["name"], _aware(moment, zone, number))


def _aware(moment: datetime, zone: tzinfo, number: int) -> datetime:
    """An offset-less time read as wall-clock time in ``zone``; a time the clocks skipped is refused."""
    if moment.utcoffset() is not None:
        return moment
    aware = moment.replace(tzinfo=zone)
    try:
        round_trip = aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    except OverflowError:
        raise _usage(f"Line {number}: {moment.isoformat()} in {zone} falls outside years 1–9999 in UTC; give the "
                     "time with its UTC offset.") from None  # fmt: skip
    if round_trip != moment:
        raise _usage(
            f"Line {number}: {moment.isoformat()} does not exist in {zone} (the clocks skip it); "
            "give the time with its UTC offset."
        )
    return aware


def _write(decisions: Iterable[Decision], out: TextIO) -> None:
    for decision in decisions:
        record = {"name": decision.name, "keep": decision.keep, "rule": decision.rule, "rank": decision.rank}
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
    out.flush()
