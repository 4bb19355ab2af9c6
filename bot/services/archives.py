"""The archives of a chain's repository (``/backup archives <chain>``): name, time, original and deduplicated size,
newest first, a page at a time.

Read on the pool side with the bot's own access, as the run layer opens a repository (the pool's transport, the
repository by path with its passphrase, the pool-side borg, its own borg state): ``borg list --json`` for the
names and times of all archives (the manifest only: cheap), then ``borg info --json`` for the sizes of the archives
on the page — one ``--last N`` call for the first pages, one call per archive deeper down (so a page never costs
more than :data:`MAX_LAST` archives' statistics). Everything borg prints is bounded and checked; an archive whose
statistics cannot be read is listed with its size unknown rather than failing the page.

Who may: whoever may operate the chain (its creator, the operators of its servers, admins) — retired chains too,
whose archives stay restorable.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.access import Actor, Forbidden, Refused, authz
from bot.access.audit import record
from bot.backup import plan as planning
from bot.borg import info as borg_info
from bot.borg import list as borg_list
from bot.borg.repo import InvalidName, Repo
from bot.borg.runner import BorgError, run_borg
from bot.services.retire import find_chain
from bot.transport.base import Transport, TransportError
from storage.models import BackupChain, ChainStatus, Repository

PER_PAGE = 10
MAX_PER_PAGE = 25
MAX_ARCHIVES = 20_000  # more is not a chain's repository: refuse rather than page through it
MAX_LAST = 50  # archives whose statistics one `borg info --last N` may compute; deeper pages ask per archive
MAX_JSON = 4_000_000
LOCK_WAIT = 5  # a running backup holds the repository: say so quickly instead of waiting for it
TIMEOUT = 120.0


@dataclass(frozen=True)
class ArchiveRow:
    """One archive: its name, start time (UTC), original size and deduplicated size (None when unknown)."""

    name: str
    time: datetime
    original_size: int | None = None
    deduplicated_size: int | None = None


@dataclass(frozen=True)
class ArchivePage:
    """One page of a chain's archives, newest first (``page`` counts from 1, ``pages`` ≥ 1)."""

    chain_id: int
    chain_name: str
    retired: bool
    repository: str
    total: int
    page: int
    pages: int
    rows: tuple[ArchiveRow, ...]
    start: int = 0  # how many newer archives come before this page


@dataclass(frozen=True)
class Access:
    """The bot's own access to a repository: the pool's transport, the Repo by path, the pool-side borg."""

    transport: Transport
    repo: Repo
    borg: str


async def access_of(repository_id: int, services: Any) -> tuple[Repository, Access]:
    """Given a repository id and the bot's services, return the row and the bot's pool-side access to it."""
    repository = await Repository.filter(id=repository_id).select_related("pool__server").get()
    return repository, Access(*planning.repository_at_pool(repository, services))


def _size(stats: Any, key: str) -> int | None:
    value = stats.get(key) if isinstance(stats, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def parse_info(stdout: bytes | str) -> dict[str, tuple[int | None, int | None]]:
    """Given ``borg info --json`` of archives, return {name: (original size, deduplicated size)}; raise
    :class:`borg_info.InfoError` for anything that is not borg's shape or too large."""
    if len(stdout) > MAX_JSON:
        raise borg_info.InfoError(f"borg info printed {len(stdout)} bytes, more than the statistics of a page.")
    try:
        found = json.loads(stdout)["archives"]
    except (ValueError, KeyError, TypeError):
        raise borg_info.InfoError("borg info printed something that is not its JSON.") from None
    if not isinstance(found, list):
        raise borg_info.InfoError("borg info's JSON has no archive list.")
    sizes: dict[str, tuple[int | None, int | None]] = {}
    for item in found:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            stats = item.get("stats")
            sizes[item["name"]] = (_size(stats, "original_size"), _size(stats, "deduplicated_size"))
    return sizes


async def _sizes_last(access: Access, count: int) -> dict[str, tuple[int | None, int | None]]:
    """The statistics of the ``count`` newest archives, in one borg call."""
    args = ["info", "--json", "--sort-by", "timestamp", "--last", str(count), access.repo.url]
    result = await run_borg(access.transport, args, access.repo, borg=access.borg, lock_wait=LOCK_WAIT,
                            timeout=TIMEOUT, env={"TZ": "UTC"})  # fmt: skip
    return parse_info(result.stdout)


async def _sizes_each(access: Access, names: list[str]) -> dict[str, tuple[int | None, int | None]]:
    """The statistics of the named archives, one borg call each (names borg could misread are skipped)."""
    sizes: dict[str, tuple[int | None, int | None]] = {}
    for name in names:
        try:
            args = ["info", "--json", access.repo.archive(name)]
        except InvalidName:
            continue
        result = await run_borg(access.transport, args, access.repo, borg=access.borg, lock_wait=LOCK_WAIT,
                                timeout=TIMEOUT)  # fmt: skip
        sizes.update(parse_info(result.stdout))
    return sizes


def _window(total: int, page: int, per_page: int) -> tuple[int, int, int]:
    """Given the number of archives, a requested page and the page size, return (page, pages, start index):
    a page past the end shows the last one, below 1 the first."""
    pages = max(1, math.ceil(total / per_page))
    page = min(max(1, page), pages)
    return page, pages, (page - 1) * per_page


async def _read(access: Access, page: int, per_page: int) -> tuple[int, int, int, int, list[ArchiveRow]]:
    """The archives of one page, newest first, with their sizes: (total, page, pages, start, rows)."""
    listed = await borg_list.archives(access.transport, access.repo, utc=True, borg=access.borg,
                                      lock_wait=LOCK_WAIT, timeout=TIMEOUT)  # fmt: skip
    if len(listed) > MAX_ARCHIVES:
        raise Refused(f"The repository has {len(listed)} archives, more than the {MAX_ARCHIVES} the bot lists.")
    listed.sort(key=lambda a: (a.time, a.name), reverse=True)
    page, pages, start = _window(len(listed), page, per_page)
    chosen = listed[start:start + per_page]
    end = start + len(chosen)
    try:
        if end <= MAX_LAST:
            sizes = await _sizes_last(access, end) if chosen else {}
        else:
            sizes = await _sizes_each(access, [a.name for a in chosen])
    except borg_info.InfoError:
        sizes = {}
    rows = [ArchiveRow(a.name, a.time.astimezone(UTC), *sizes.get(a.name, (None, None))) for a in chosen]
    return len(listed), page, pages, start, rows


def _failure(chain: BackupChain, repository: Repository, exc: Exception) -> Refused:
    if isinstance(exc, BorgError) and exc.kind == "lock":
        return Refused(f"The repository of {chain.name} is busy (a run holds its lock): list its archives again "
                       "when the run ends.")  # fmt: skip
    hint = f" {exc.hint}" if isinstance(exc, BorgError) and exc.hint else ""
    return Refused(f"The archives of {chain.name} could not be listed from {repository.pool.name}: {exc}.{hint}")


async def page_of(actor: Actor, ref: int | str, *, services: Any, page: int = 1,
                  per_page: int = PER_PAGE) -> ArchivePage:  # fmt: skip
    """Given an actor who may operate the chain ``ref`` (id or name), return one page of its archives, newest
    first; a refusal (not allowed, the pool unreachable, the repository busy) is one sentence."""
    chain = await find_chain(actor, ref)
    if not await authz.may_operate(actor, chain):
        await record(actor, "chain.archives", "chain", chain.id, outcome="denied")
        raise Forbidden(f"You are not allowed to see the archives of {chain.name}: only its creator, the operators "
                        f"of its server and admins may — {await authz.who_can_allow(actor.team_id)}.")  # fmt: skip
    per_page = min(max(1, per_page), MAX_PER_PAGE)
    repository, access = await access_of(chain.repository_id, services)  # type: ignore[attr-defined]
    try:
        total, page, pages, start, rows = await _read(access, page, per_page)
    except (BorgError, TransportError) as exc:
        raise _failure(chain, repository, exc) from None
    return ArchivePage(chain.id, chain.name, chain.status == ChainStatus.RETIRED, repository.name, total, page, pages,
                       tuple(rows), start)  # fmt: skip


__all__ = ["PER_PAGE", "ArchivePage", "ArchiveRow", "access_of", "page_of", "parse_info"]
