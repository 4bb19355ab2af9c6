"""``borg prune``: delete archives the retention policy does not keep (per archive-name prefix).

``--list`` reports every archive's fate; with ``--log-json`` those lines arrive as log messages, parsed
here into :class:`PruneLine` so the prune report can say what was removed. Freeing space is ``compact``'s job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from bot.borg.repo import Repo
from bot.borg.runner import BorgResult, run_borg
from bot.transport.base import Transport

RULES = ("within", "last", "secondly", "minutely", "hourly", "daily", "weekly", "monthly", "yearly",
         "13weekly", "3monthly")  # fmt: skip
_KEEP = re.compile(r"^Keeping archive \(rule: (?P<rule>[\w\[\] ]+?) #(?P<rank>\d+)\):\s+(?P<name>\S+)")
_KEEP_CHECKPOINT = re.compile(r"^Keeping checkpoint archive:\s+(?P<name>\S+)")
_PRUNE = re.compile(r"^(?:Would prune|Pruning archive \(\d+/\d+\)):\s+(?P<name>\S+)")


@dataclass(frozen=True)
class PruneLine:
    name: str
    keep: bool
    rule: str | None
    rank: int | None


def policy_args(policy: Mapping[str, int | str]) -> list[str]:
    """``{"keep_daily": 7, "keep_within": "2d"}`` → ``["--keep-daily", "7", "--keep-within", "2d"]``."""
    args: list[str] = []
    for key, value in policy.items():
        rule = key.removeprefix("keep_")
        if rule not in RULES:
            raise ValueError(f"Unknown retention rule {key!r}.")
        if value in (None, 0, ""):
            continue
        args.extend([f"--keep-{rule.replace('_', '-')}", str(value)])
    if not args:
        raise ValueError("A retention policy must keep something; borg refuses to prune without rules.")
    return args


def argv(repo: Repo, policy: Mapping[str, int | str], *, glob: str | None = None, dry_run: bool = False) -> tuple:
    flags = ["prune", "--list", *(["--dry-run"] if dry_run else []), *(["--glob-archives", glob] if glob else [])]
    return (*flags, *policy_args(policy), repo.url)


def parse_lines(result: BorgResult) -> list[PruneLine]:
    lines = []
    for message in result.messages:
        text = message.get("message", "")
        if match := _KEEP.match(text):
            rule = match["rule"].replace("rule: ", "").strip()
            lines.append(PruneLine(match["name"], True, rule, int(match["rank"])))
        elif match := _KEEP_CHECKPOINT.match(text):
            lines.append(PruneLine(match["name"], True, "checkpoint", None))
        elif match := _PRUNE.match(text):
            lines.append(PruneLine(match["name"], False, None, None))
    return lines


async def run(
    transport: Transport, repo: Repo, policy: Mapping[str, int | str], *, glob: str | None = None,
    dry_run: bool = False, **kwargs,
) -> list[PruneLine]:  # fmt: skip
    return parse_lines(await run_borg(transport, argv(repo, policy, glob=glob, dry_run=dry_run), repo, **kwargs))
