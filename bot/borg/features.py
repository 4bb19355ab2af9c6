"""The one table of borg versions → features the bot relies on.

The bot supports borg 1.4 (see ``bot.probes.borg``); the table says what an older or newer borg found on a
server lacks, so callers can refuse with a reason instead of failing with an unknown option.
"""

from __future__ import annotations

Version = tuple[int, int, int]

FEATURES: dict[str, tuple[Version, str]] = {
    "json": ((1, 1, 0), "--json / --log-json machine-readable output"),
    "compact": ((1, 2, 0), "`borg compact` (freeing space after prune happens only there since 1.2)"),
    "content_from_command": ((1, 2, 0), "`borg create --content-from-command` (streaming database dumps)"),
    "slashdot": ((1, 4, 0), "stripping the path prefix up to /./ (snapshot paths archived as the originals)"),
    "modern_exit_codes": ((1, 4, 0), "specific exit codes with BORG_EXIT_CODES=modern"),
    "keep_13weekly_3monthly": ((1, 4, 0), "`borg prune --keep-13weekly/--keep-3monthly`"),
}


def parse_version(text: str) -> Version:
    """``"1.4.5"`` or ``"borg 1.4.5"`` → ``(1, 4, 5)`` (suffixes like ``b1`` are ignored)."""
    number = text.split()[-1]
    parts: list[int] = []
    for piece in number.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit()) or "0"
        parts.append(int(digits))
    while len(parts) < 3:
        parts.append(0)
    return (parts[0], parts[1], parts[2])


def supports(version: Version, feature: str) -> bool:
    return version >= FEATURES[feature][0]


def missing(version: Version, needed: tuple[str, ...]) -> list[str]:
    """Descriptions of the ``needed`` features that ``version`` lacks (empty when all are there)."""
    return [
        f"{FEATURES[f][1]} needs borg {'.'.join(map(str, FEATURES[f][0]))}" for f in needed if not supports(version, f)
    ]
