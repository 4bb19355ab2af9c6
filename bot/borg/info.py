"""``borg info``: repository totals (the repository's real size, for pool accounting) and one archive's stats.

``borg info --json REPO`` answers from the repository's chunk index: ``cache.stats.unique_csize`` is what the
repository occupies on the pool (deduplicated and compressed, the number quotas count), ``total_size`` /
``total_csize`` what all archives would take without deduplication. It does not count archives, so
:func:`measure` adds one ``borg list --json`` (manifest only, cheap). :func:`parse` is pure and bounded: the pool
sends at most :data:`MAX_JSON` bytes of JSON, and anything that is not borg's shape raises :class:`InfoError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from bot.borg import list as borg_list
from bot.borg.repo import Repo
from bot.borg.runner import run_borg
from bot.transport.base import Transport

MAX_JSON = 1_000_000  # borg info of a repository is < 2 kB; more is not borg's answer


class InfoError(ValueError):
    """``borg info --json`` printed something that is not a repository's totals."""


@dataclass(frozen=True)
class RepoInfo:
    """A repository's totals as borg reports them (bytes)."""

    unique_csize: int  # what the repository really occupies (deduplicated, compressed): its size for quotas
    unique_size: int  # deduplicated, uncompressed
    total_size: int  # sum of the original sizes of all archives
    total_csize: int  # the same, compressed (no deduplication)
    total_chunks: int
    unique_chunks: int
    encryption: str
    archives: int | None = None  # from ``borg list``; None when not counted


RepoTotals = RepoInfo  # the wizard's older name for the same totals


def argv(repo: Repo) -> tuple[str, ...]:
    """Given a repository, return borg's arguments for its totals (``run_borg`` adds the common options)."""
    return ("info", "--json", repo.url)


def _count(stats: dict[str, Any], key: str) -> int:
    value = stats.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InfoError(f"borg info gave {value!r} as {key}, not a number of bytes or chunks.")
    return value


def parse(stdout: bytes | str, *, archives: int | None = None) -> RepoInfo:
    """Given ``borg info --json REPO``'s stdout, return the typed totals; raise :class:`InfoError` for anything
    else (so a wrong number is never stored as a repository's size)."""
    if len(stdout) > MAX_JSON:
        raise InfoError(f"borg info printed {len(stdout)} bytes, more than a repository's totals ever take.")
    try:
        data = json.loads(stdout)
        stats = data["cache"]["stats"]
        mode = data["encryption"]["mode"]
    except (ValueError, KeyError, TypeError):
        text = stdout.decode("utf-8", "replace") if isinstance(stdout, bytes) else stdout
        raise InfoError(
            f"borg info printed something that is not its JSON (starts with {text.strip()[:60]!r})."
        ) from None
    if not isinstance(stats, dict) or not isinstance(mode, str):
        raise InfoError("borg info's JSON has no repository statistics.")
    return RepoInfo(
        unique_csize=_count(stats, "unique_csize"), unique_size=_count(stats, "unique_size"),
        total_size=_count(stats, "total_size"), total_csize=_count(stats, "total_csize"),
        total_chunks=_count(stats, "total_chunks"), unique_chunks=_count(stats, "total_unique_chunks"),
        encryption=mode, archives=archives,
    )  # fmt: skip


async def repository(transport: Transport, repo: Repo, **kwargs) -> RepoInfo:
    """Given the bot's access to a repository, return its totals (one ``borg info``; archives not counted)."""
    return parse((await run_borg(transport, argv(repo), repo, **kwargs)).stdout)


async def measure(transport: Transport, repo: Repo, **kwargs) -> RepoInfo:
    """Given the bot's access to a repository, return its totals with its archive count (``borg info`` + ``borg
    list``): what the run layer stores after a backup, prune or compact."""
    totals = await repository(transport, repo, **kwargs)
    count = len(await borg_list.archives(transport, repo, **kwargs))
    return replace(totals, archives=count)


async def archive(transport: Transport, repo: Repo, name: str, **kwargs) -> dict:
    data = (await run_borg(transport, ["info", "--json", repo.archive(name)], repo, **kwargs)).json()
    return data["archives"][0]
