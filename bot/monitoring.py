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

Per chain, its last finished restore drill (``/backup drill``; absent until one ran):
``backupbot_chain_last_drill_success`` (1 passed, 0 failed), ``backupbot_chain_last_drill_timestamp_seconds`` and
``backupbot_chain_last_drill_duration_seconds`` (the measured restore time).

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

Outbound URLs (:func:`vet`): the bot fetches these from its own host, so a URL must not reach what only the bot's
host can reach. http(s) only, no user:password part; the host is resolved and *every* address must be global
(loopback, link-local — cloud metadata at 169.254.169.254 —, private, shared/CGNAT, multicast, reserved and
unspecified addresses are refused) unless it lies in a network an admin allow-listed
(``Workspace.settings["outbound_allow"]``, :mod:`bot.services.outbound`). The check runs when the URL is set and
again at every request, and the request connects to the addresses just checked (a pinned resolver), so a DNS
answer that changes in between cannot redirect it. Redirects are followed only to the same scheme, host and port
(at most :data:`MAX_REDIRECTS`); connect and total timeouts are short.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import SplitResult, urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver

from storage.models import BackupChain, ChainStatus, Repository, Run, RunKind, RunStatus, StoragePool, Workspace
from storage.orm import Count, Max, Q

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PING_TIMEOUT = 5.0
CONNECT_TIMEOUT = 3.0
RESOLVE_TIMEOUT = 3.0
MAX_REDIRECTS = 3
PING_URLS_KEY = "ping_urls"
OUTBOUND_ALLOW_KEY = "outbound_allow"  # networks (CIDR) an admin allowed outbound URLs to reach
SUCCESS = (RunStatus.SUCCEEDED, RunStatus.WARNING)
FINISHED = (*SUCCESS, RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.SKIPPED, RunStatus.CANCELLED)
DRILLED = (*SUCCESS, RunStatus.FAILED, RunStatus.INTERRUPTED)  # a skipped or cancelled drill proved nothing either way
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


async def _latest_runs(team_id: str, statuses: tuple[RunStatus, ...],
                       kind: RunKind = RunKind.BACKUP) -> dict[int, Run]:  # fmt: skip
    """Per chain, the run of ``kind`` (a backup) with the highest id among ``statuses`` (ids grow with creation)."""
    latest = (
        await Run.filter(team_id=team_id, kind=kind, status__in=statuses, chain_id__isnull=False)
        .annotate(last_id=Max("id"))
        .group_by("chain_id")
        .values("chain_id", "last_id")
    )
    ids = [row["last_id"] for row in latest if row["last_id"] is not None]
    if not ids:
        return {}
    rows = await Run.filter(id__in=ids).only("id", "chain_id", "status", "started_at", "finished_at", "stats")
    return {run.chain_id: run for run in rows}


async def render_metrics(team_id: str) -> str:
    """The workspace's whole exposition, from the database, now."""
    chains = await BackupChain.filter(team_id=team_id).exclude(status=ChainStatus.RETIRED).values(
        "id", "team_id", "name", "status")  # a retired chain runs no more: its age would alert forever
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

    families = (up, last_success, duration, original, dedup, outcomes, queue,
                *await _drill_families(team_id, by_id), *await _pool_families(team_id))  # fmt: skip
    return "\n".join(line for family in families for line in family.render()) + "\n"


async def _drill_families(team_id: str, chains: dict[int, dict[str, Any]]) -> tuple[_Family, ...]:
    """Given a workspace and its (not retired) chains, return the gauges of each chain's last finished restore drill:
    whether it passed, when it finished, and the measured restore time (one grouped query and one fetch)."""
    success = _Family("backupbot_chain_last_drill_success", "gauge",
                      "1 when the last restore drill of the chain passed, 0 when it failed.")  # fmt: skip
    moment = _Family("backupbot_chain_last_drill_timestamp_seconds", "gauge",
                     "Unix time the last restore drill finished.")  # fmt: skip
    took = _Family("backupbot_chain_last_drill_duration_seconds", "gauge",
                   "Measured restore time of the last restore drill (the whole run's when it failed).")  # fmt: skip
    for chain_id, run in (await _latest_runs(team_id, DRILLED, RunKind.DRILL)).items():
        chain = chains.get(chain_id)
        if chain is None or run.finished_at is None:
            continue
        labels = {"team": chain["team_id"], "chain": chain["name"]}
        success.add(1 if run.status in SUCCESS else 0, **labels)
        moment.add(_ts(run.finished_at), **labels)
        drill = (run.stats or {}).get("drill") if isinstance(run.stats, dict) else None
        seconds = drill.get("seconds") if isinstance(drill, dict) else None
        if not isinstance(seconds, int | float) and run.started_at is not None:
            seconds = max(0.0, (run.finished_at - run.started_at).total_seconds())
        if isinstance(seconds, int | float):
            took.add(seconds, **labels)
    return success, moment, took


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
    try:
        url_shape(url)
    except OutboundRefused:
        return False
    return True


# --------------------------------------------------------------------------------------------- outbound URLs

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class OutboundRefused(ValueError):
    """An outbound URL the bot will not fetch; the message says why and what to do."""


def url_shape(url: str) -> SplitResult:
    """Given a URL, return its parts when it is an http(s) URL with a host, no user:password and a valid port;
    raise :class:`OutboundRefused` otherwise."""
    if len(url) > 2000 or any(c.isspace() for c in url):
        raise OutboundRefused("A ping URL must be one http:// or https:// URL without spaces, at most 2000 characters.")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OutboundRefused("A ping URL must be an http:// or https:// URL.")
    if parts.username is not None or parts.password is not None:
        raise OutboundRefused("A ping URL must not carry a user name or password (user:password@host).")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise OutboundRefused("The ping URL's port is not a number between 1 and 65535.") from None
    return parts


def parse_networks(values: Iterable[Any]) -> list[Network]:
    """Given allow-list entries ("10.0.0.0/8", "127.0.0.1"), return the networks; ValueError names a bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise ValueError(f"{str(value)[:60]!r} is not an IP address or network (e.g. 10.0.0.0/8).") from None
    return networks


def _refusal(address: Address) -> str | None:
    """Why the bot will not connect to ``address`` (None when it is a global unicast address)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (cloud metadata services live there)"
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return "not a unicast address"
    if not address.is_global:
        return "a private or internal address"
    return None


async def resolve(host: str, port: int) -> list[Address]:
    """Every address ``host`` resolves to (an IP literal is itself); OutboundRefused when it does not resolve."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT)
    except (OSError, TimeoutError):
        raise OutboundRefused(f"{host} does not resolve; check the ping URL's host name.") from None
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos))


@dataclass(frozen=True)
class Vetted:
    """A URL that passed :func:`vet`, with the addresses it may be fetched from."""

    url: str
    host: str
    port: int
    addresses: tuple[Address, ...]


async def vet(url: str, allow: Sequence[Network] = (), *, unresolved_ok: bool = False) -> Vetted:
    """Given a URL and the workspace's allow-listed networks, return it with its checked addresses; raise
    :class:`OutboundRefused` when any address it resolves to is loopback, link-local, private or otherwise not
    global and not allow-listed (checking every address: one bad answer among good ones is still refused).
    ``unresolved_ok`` (when a URL is set): a host name that does not resolve now passes with no addresses — nothing
    can be fetched from it, and every request checks again."""
    parts = url_shape(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = await resolve(host, port)
    except OutboundRefused:
        if unresolved_ok:
            return Vetted(url, host, port, ())
        raise
    for address in addresses:
        why = _refusal(address)
        if why and not any(address.version == net.version and address in net for net in allow):
            raise OutboundRefused(
                f"{host} resolves to {address}, {why}: the bot does not send requests there from its own host. "
                "If that is intended, an admin can allow that network (backup-bot outbound allow, or the "
                "outbound allow-list service)."
            )
    return Vetted(url, host, port, tuple(addresses))


class _PinnedResolver(AbstractResolver):
    """aiohttp resolver that answers only the vetted host, with the vetted addresses."""

    def __init__(self, vetted: Vetted) -> None:
        self.vetted = vetted

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict[str, Any]]:
        if host.lower().rstrip(".") != self.vetted.host.lower().rstrip("."):
            raise OSError(f"{host} was not checked")
        return [{"hostname": host, "host": str(a), "port": port, "proto": 0, "flags": socket.AI_NUMERICHOST,
                 "family": socket.AF_INET if a.version == 4 else socket.AF_INET6} for a in self.vetted.addresses]

    async def close(self) -> None:
        return None


async def workspace_allow(team_id: str) -> list[Network]:
    """The networks the workspace's admins allowed outbound URLs to reach (bad entries are ignored)."""
    row = await Workspace.get_or_none(team_id=team_id)
    values = (row.settings or {}).get(OUTBOUND_ALLOW_KEY) if row is not None else None
    networks = []
    for value in values if isinstance(values, list) else []:
        try:
            networks.extend(parse_networks([value]))
        except ValueError:
            continue
    return networks


def _same_origin(a: str, b: str) -> bool:
    first, second = urlsplit(a), urlsplit(b)
    return (first.scheme, (first.hostname or "").lower(), first.port) == (
        second.scheme, (second.hostname or "").lower(), second.port)  # fmt: skip


async def ping(
    url: str | None,
    event: Event,
    *,
    timeout: float = PING_TIMEOUT,
    allow: Sequence[Network] = (),
) -> bool:
    """Send one ping (checked by :func:`vet` against ``allow`` first, connecting only to the checked addresses);
    True when the server answered 2xx. Never raises (except cancellation)."""
    if not url:
        return False
    if event not in ("start", "success", "fail") or not _valid_url(url):
        log.warning("ping skipped: bad event %r or URL", event)
        return False
    target = ping_target(url, event)
    host = urlsplit(url).hostname or "?"
    try:
        return await _fetch(target, host, event, timeout, allow)
    except asyncio.CancelledError:
        raise
    except OutboundRefused as exc:
        log.warning("ping %s to %s refused: %s", event, host, str(exc).split(":", 1)[0])
        return False
    except Exception as exc:  # a ping must never fail a backup
        log.warning("ping %s to %s failed: %s", event, host, type(exc).__name__)
        return False


async def _fetch(target: str, host: str, event: str, timeout: float, allow: Sequence[Network]) -> bool:
    """GET ``target`` and same-origin redirects (each hop vetted again); False for any other answer."""
    client_timeout = aiohttp.ClientTimeout(total=timeout, connect=min(CONNECT_TIMEOUT, timeout))
    for _ in range(MAX_REDIRECTS + 1):
        vetted = await vet(target, allow)
        connector = aiohttp.TCPConnector(resolver=_PinnedResolver(vetted), use_dns_cache=False, limit=1)
        async with aiohttp.ClientSession(timeout=client_timeout, connector=connector) as session, \
                session.get(target, allow_redirects=False) as response:  # fmt: skip
            await response.content.read(64 * 1024)
            location = response.headers.get("Location")
            if response.status in (301, 302, 303, 307, 308) and location:
                following = urljoin(target, location)
                if not _same_origin(target, following):
                    log.warning("ping %s to %s: redirect to another host not followed", event, host)
                    return False
                target = following
                continue
            if response.status >= 300:
                log.warning("ping %s to %s answered HTTP %s", event, host, response.status)
                return False
            return True
    log.warning("ping %s to %s: more than %s redirects", event, host, MAX_REDIRECTS)
    return False


async def ping_url_of(team_id: str, chain_id: int) -> str | None:
    """The chain's ping URL from ``Workspace.settings["ping_urls"]``, or None."""
    row = await Workspace.get_or_none(team_id=team_id)
    urls = (row.settings or {}).get(PING_URLS_KEY) if row is not None else None
    url = urls.get(str(chain_id)) if isinstance(urls, dict) else None
    return url if _valid_url(url) else None


async def set_ping_url(team_id: str, chain_id: int, url: str | None) -> None:
    """Set (or with None, remove) a chain's ping URL; only http(s) URLs are accepted (the address check is the
    service's, :func:`vet`)."""
    if url is not None:
        url_shape(url)
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
        allow = await workspace_allow(chain.team_id) if url else []
    except Exception as exc:
        log.warning("ping URL lookup failed: %s", type(exc).__name__)
        return False
    return await ping(url, event, timeout=timeout, allow=allow) if url else False
