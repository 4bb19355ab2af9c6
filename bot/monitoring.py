"""Monitoring: Prometheus ``/metrics`` computed from the database at scrape time, and healthchecks-style pings.

Metrics
-------
``GET /metrics`` answers in the Prometheus text exposition format 0.0.4, to a scraper that sends a workspace API
token (``Authorization: Bearer …``, from ``backup-bot api-token``; Prometheus: ``authorization: {credentials: …}``)
and only about that token's workspace: chain names and outcomes are one workspace's business, not the network's.
The text is written here rather than
with ``prometheus-client``: every value is read from the database at scrape time (the bot may run as several
processes, and the queue's rows are the truth), so the client library's in-process registry would only be a
custom collector around the same queries — one more dependency for ~40 lines of escaping and formatting.

Per chain (labels ``team`` = Slack team id, ``chain`` = chain name; never hosts, paths or secrets):

* ``backupbot_chain_last_success_timestamp_seconds`` — when the last successful (or warning) backup finished
* ``backupbot_chain_last_run_duration_seconds`` — duration of the last finished backup run, whatever its outcome
* ``backupbot_chain_last_archive_original_bytes`` / ``…_deduplicated_bytes`` — of the last successful backup
* ``backupbot_chain_runs_total{…, kind, status}`` — finished runs by kind and outcome (counted from Run rows)
* ``backupbot_chain_up`` — 1 while the chain is active, 0 otherwise (paused, pending, …)

Per workspace: ``backupbot_queue_depth{team}`` — queued runs that are due (waiting for a worker; not runs queued
ahead of their slot or backing off before a retry). A fixed handful of grouped queries per scrape,
whatever the number of chains.

Per storage pool (labels ``team``, ``pool`` = the pool's name), the numbers of :mod:`bot.backup.capacity`:

* ``backupbot_pool_free_bytes`` / ``backupbot_pool_total_bytes`` — the pool file system's free and total space at
  its last measurement (after runs and hourly; absent until measured)
* ``backupbot_pool_used_bytes`` — the sum of its repositories' deduplicated sizes (borg's ``unique_csize``)
* ``backupbot_pool_quota_bytes`` — its quota (absent when it has none)
* ``backupbot_pool_measured_timestamp_seconds`` — when its free space was last measured
* ``backupbot_repository_size_bytes{team, pool, repository}`` — each measured repository's deduplicated size

Pings
-----
An optional healthchecks.io-style URL per chain, kept in ``Workspace.settings["ping_urls"][str(chain_id)]``
(the models belong to another part of the bot; :func:`set_ping_url` writes it). :func:`ping` sends
``GET url/start`` when a run starts, ``GET url`` on success and ``GET url/fail`` on failure, with a short
timeout; it never raises — a failing ping is logged (host only: the URL's path is the check's secret) and never
fails a backup. The runner calls :func:`ping_chain` at those three moments.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp

from storage.models import BackupChain, ChainStatus, Repository, Run, RunKind, RunStatus, StoragePool, Workspace
from storage.orm import Count, Max, Q

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PING_TIMEOUT = 5.0
PING_URLS_KEY = "ping_urls"
SUCCESS = (RunStatus.SUCCEEDED, RunStatus.WARNING)
FINISHED = (*SUCCESS, RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.SKIPPED, RunStatus.CANCELLED)
Event = Literal["start", "success", "fail"]


# --------------------------------------------------------------------------------------------- exposition


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value != value:  # NaN
        return "NaN"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name, self.kind, self.help = name, kind, help_text
        self.samples: list[tuple[dict[str, Any], float]] = []

    def add(self, value: float, **labels: Any) -> None:
        self.samples.append((labels, value))

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        sample_name = f"{self.name}_total" if self.kind == "counter" else self.name
        for labels, value in self.samples:
            text = ",".join(f'{key}="{_label(val)}"' for key, val in labels.items())
            yield f"{sample_name}{{{text}}} {_number(value)}" if text else f"{sample_name} {_number(value)}"


def _ts(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


async def _latest_runs(team_id: str, statuses: tuple[RunStatus, ...]) -> dict[int, Run]:
    """Per chain, the backup run with the highest id among ``statuses`` (ids grow with creation)."""
    latest = (
        await Run.filter(team_id=team_id, kind=RunKind.BACKUP, status__in=statuses, chain_id__isnull=False)
        .annotate(last_id=Max("id"))
        .group_by("chain_id")
        .values("chain_id", "last_id")
    )
    ids = [row["last_id"] for row in latest if row["last_id"] is not None]
    if not ids:
        return {}
    rows = await Run.filter(id__in=ids).only("id", "chain_id", "started_at", "finished_at", "stats")
    return {run.chain_id: run for run in rows}


async def render_metrics(team_id: str) -> str:
    """The workspace's whole exposition, from the database, now."""
    chains = await BackupChain.filter(team_id=team_id).values("id", "team_id", "name", "status")
    by_id = {c["id"]: c for c in chains}

    def labels(chain_id: int) -> dict[str, str]:
        chain = by_id[chain_id]
        return {"team": chain["team_id"], "chain": chain["name"]}

    up = _Family("backupbot_chain_up", "gauge", "1 while the chain is active (scheduled), else 0.")
    last_success = _Family(
        "backupbot_chain_last_success_timestamp_seconds", "gauge", "Unix time the last successful backup finished."
    )
    duration = _Family(
        "backupbot_chain_last_run_duration_seconds", "gauge", "Duration of the last finished backup run."
    )
    original = _Family(
        "backupbot_chain_last_archive_original_bytes", "gauge", "Original size of the last successful backup."
    )
    dedup = _Family(
        "backupbot_chain_last_archive_deduplicated_bytes",
        "gauge",
        "Deduplicated size (new data) of the last successful backup.",
    )
    outcomes = _Family("backupbot_chain_runs", "counter", "Finished runs of the chain by kind and outcome.")
    queue = _Family("backupbot_queue_depth", "gauge", "Queued runs that are due, waiting for a worker.")

    for chain in chains:
        up.add(1 if chain["status"] == ChainStatus.ACTIVE else 0, **labels(chain["id"]))

    for chain_id, run in (await _latest_runs(team_id, SUCCESS)).items():
        if chain_id not in by_id:
            continue
        if run.finished_at is not None:
            last_success.add(_ts(run.finished_at), **labels(chain_id))
        stats = run.stats if isinstance(run.stats, dict) else {}
        if isinstance(stats.get("original_size"), int | float):
            original.add(stats["original_size"], **labels(chain_id))
        if isinstance(stats.get("deduplicated_size"), int | float):
            dedup.add(stats["deduplicated_size"], **labels(chain_id))

    for chain_id, run in (await _latest_runs(team_id, FINISHED)).items():
        if chain_id in by_id and run.started_at is not None and run.finished_at is not None:
            duration.add(max(0.0, (run.finished_at - run.started_at).total_seconds()), **labels(chain_id))

    counts = (
        await Run.filter(team_id=team_id, chain_id__isnull=False, status__in=FINISHED)
        .annotate(count=Count("id"))
        .group_by("chain_id", "kind", "status")
        .values("chain_id", "kind", "status", "count")
    )
    for row in sorted(counts, key=lambda r: (r["chain_id"], str(r["kind"]), str(r["status"]))):
        if row["chain_id"] in by_id:
            kind, status = getattr(row["kind"], "value", row["kind"]), getattr(row["status"], "value", row["status"])
            outcomes.add(row["count"], **labels(row["chain_id"]), kind=kind, status=status)

    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=datetime.now(UTC))
    queue.add(await Run.filter(due, team_id=team_id, status=RunStatus.QUEUED).count(), team=team_id)

    families = (up, last_success, duration, original, dedup, outcomes, queue, *await _pool_families(team_id))
    return "\n".join(line for family in families for line in family.render()) + "\n"


async def _pool_families(team_id: str) -> tuple[_Family, ...]:
    """Given a workspace, return its pools' gauges (two queries, whatever the number of pools)."""
    free = _Family("backupbot_pool_free_bytes", "gauge", "Free space of the pool's file system, last measured.")
    total = _Family("backupbot_pool_total_bytes", "gauge", "Size of the pool's file system, last measured.")
    used = _Family("backupbot_pool_used_bytes", "gauge", "Sum of the pool's repositories' deduplicated sizes.")
    quota = _Family("backupbot_pool_quota_bytes", "gauge", "The pool's quota for its repositories.")
    measured = _Family("backupbot_pool_measured_timestamp_seconds", "gauge", "Unix time the pool was last measured.")
    sizes = _Family("backupbot_repository_size_bytes", "gauge", "Deduplicated size of the repository (borg info).")
    pools = await StoragePool.filter(team_id=team_id).order_by("name").values(
        "id", "name", "available_bytes", "capacity_bytes", "quota_bytes", "available_checked_at"
    )
    names = {p["id"]: p["name"] for p in pools}
    repositories = await Repository.filter(team_id=team_id).order_by("name").values("pool_id", "name", "size_bytes")
    totals: dict[int, int] = dict.fromkeys(names, 0)
    for repo in repositories:
        if repo["pool_id"] in names and repo["size_bytes"] is not None:
            totals[repo["pool_id"]] += int(repo["size_bytes"])
            sizes.add(repo["size_bytes"], team=team_id, pool=names[repo["pool_id"]], repository=repo["name"])
    for pool in pools:
        labels = {"team": team_id, "pool": pool["name"]}
        used.add(totals[pool["id"]], **labels)
        for family, value in ((free, pool["available_bytes"]), (total, pool["capacity_bytes"]),
                              (quota, pool["quota_bytes"]), (measured, _ts(pool["available_checked_at"]))):  # fmt: skip
            if value is not None:
                family.add(value, **labels)
    return free, total, used, quota, measured, sizes


# --------------------------------------------------------------------------------------------- pings


def ping_target(url: str, event: Event) -> str:
    """healthchecks.io's convention: ``url/start``, ``url`` (success), ``url/fail``."""
    base = url.rstrip("/")
    return {"start": f"{base}/start", "success": base, "fail": f"{base}/fail"}[event]


def _valid_url(url: Any) -> bool:
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


async def ping(
    url: str | None,
    event: Event,
    *,
    timeout: float = PING_TIMEOUT,
    session: aiohttp.ClientSession | None = None,
) -> bool:
    """Send one ping; True when the server answered 2xx. Never raises (except cancellation)."""
    if not url:
        return False
    if event not in ("start", "success", "fail") or not _valid_url(url):
        log.warning("ping skipped: bad event %r or URL", event)
        return False
    target = ping_target(url, event)
    host = urlsplit(url).hostname or "?"
    try:
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        if session is None:
            async with aiohttp.ClientSession(timeout=client_timeout) as own:
                return await _get(own, target, host, event, client_timeout)
        return await _get(session, target, host, event, client_timeout)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a ping must never fail a backup
        log.warning("ping %s to %s failed: %s", event, host, type(exc).__name__)
        return False


async def _get(
    session: aiohttp.ClientSession, target: str, host: str, event: str, timeout: aiohttp.ClientTimeout
) -> bool:
    async with session.get(target, timeout=timeout, allow_redirects=True) as response:
        await response.read()
        if response.status >= 300:
            log.warning("ping %s to %s answered HTTP %s", event, host, response.status)
            return False
        return True


async def ping_url_of(team_id: str, chain_id: int) -> str | None:
    """The chain's ping URL from ``Workspace.settings["ping_urls"]``, or None."""
    row = await Workspace.get_or_none(team_id=team_id)
    urls = (row.settings or {}).get(PING_URLS_KEY) if row is not None else None
    url = urls.get(str(chain_id)) if isinstance(urls, dict) else None
    return url if _valid_url(url) else None


async def set_ping_url(team_id: str, chain_id: int, url: str | None) -> None:
    """Set (or with None, remove) a chain's ping URL; only http(s) URLs are accepted."""
    if url is not None and not _valid_url(url):
        raise ValueError("A ping URL must be an http:// or https:// URL.")
    row, _ = await Workspace.get_or_create(team_id=team_id)
    settings = dict(row.settings or {})
    urls = dict(settings.get(PING_URLS_KEY) or {})
    if url is None:
        urls.pop(str(chain_id), None)
    else:
        urls[str(chain_id)] = url
    settings[PING_URLS_KEY] = urls
    row.settings = settings
    await row.save(update_fields=["settings", "updated_at"])


async def ping_chain(chain: BackupChain, event: Event, *, timeout: float = PING_TIMEOUT) -> bool:
    """Ping the chain's URL, if it has one, for ``event``. Never raises."""
    try:
        url = await ping_url_of(chain.team_id, chain.id)
    except Exception as exc:
        log.warning("ping URL lookup failed: %s", type(exc).__name__)
        return False
    return await ping(url, event, timeout=timeout) if url else False
