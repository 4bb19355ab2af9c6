"""/metrics computed from seeded chains and runs, and healthchecks-style pings against a local server."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp import web

from bot import monitoring
from bot.slack.app import http_app
from storage.models import BackupChain, ChainStatus, Repository, Run, RunKind, RunStatus, StoragePool, Workspace
from storage.tenancy import Tenant

T1, T2 = "T0001", "T0002"
LOOPBACK = monitoring.parse_networks(["127.0.0.0/8"])  # the local test server: allow-listed as an admin would
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> tuple[dict[tuple[str, frozenset], float], dict[str, str]]:
    """Samples keyed by (name, labels) and each family's TYPE; fails on any line outside the format."""
    samples: dict[tuple[str, frozenset], float] = {}
    types: dict[str, str] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            continue
        if line.startswith("# HELP ") or not line:
            continue
        match = SAMPLE.match(line)
        assert match, line
        name, labels, value = match.groups()
        pairs = frozenset(
            (k, v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\"))
            for k, v in LABEL.findall(labels or "")
        )
        key = (name, pairs)
        assert key not in samples, f"duplicate sample {line}"
        samples[key] = float(value)
    return samples, types


def key(name: str, **labels: str) -> tuple[str, frozenset]:
    return name, frozenset(labels.items())


async def _chain(team: str, name: str, status: ChainStatus = ChainStatus.ACTIVE) -> BackupChain:
    tenant = Tenant(team)
    pool = await tenant.create(StoragePool, name=f"p-{name}", kind="local", base_path="/srv/secret-host-path")
    repo = await tenant.create(Repository, pool=pool, name=name, path="/srv/secret-host-path/r", passphrase="pw")
    return await tenant.create(BackupChain, name=name, repository=repo, status=status)


async def _run(chain: BackupChain, status: RunStatus, end: datetime | None, seconds: float = 0, **extra) -> Run:
    return await Tenant(chain.team_id).create(
        Run,
        chain=chain,
        repository_id=chain.repository_id,
        kind=extra.pop("kind", RunKind.BACKUP),
        status=status,
        started_at=end - timedelta(seconds=seconds) if end else None,
        finished_at=end,
        **extra,
    )


async def scrape(url: str, team: str = T1) -> tuple[int, str]:
    """GET /metrics as Prometheus would, with the workspace's API token."""
    from bot.api.tokens import create_token

    headers = {"Authorization": f"Bearer {await create_token(team)}"}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        if response.status == 200:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return response.status, await response.text()


@pytest.fixture
async def metrics_url(sqlite_db: str) -> AsyncIterator[str]:
    runner = web.AppRunner(http_app(None))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/metrics"
    finally:
        await runner.cleanup()


async def test_metrics_reflect_chains_and_runs(metrics_url: str) -> None:
    day = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    web_chain = await _chain(T1, 'web "front"')
    db = await _chain(T1, "db", ChainStatus.PAUSED)
    other = await _chain(T2, "web")  # same name, other workspace: separate series
    await _run(web_chain, RunStatus.SUCCEEDED, day, 60, stats={"original_size": 1000, "deduplicated_size": 10})
    await _run(
        web_chain,
        RunStatus.WARNING,
        day + timedelta(days=1),
        90,
        stats={"original_size": 2000, "deduplicated_size": 20},
    )
    await _run(web_chain, RunStatus.FAILED, day + timedelta(days=2), 5.5, error="unreachable")
    await _run(web_chain, RunStatus.QUEUED, None)
    ahead = datetime.now(UTC) + timedelta(seconds=30)  # queued ahead of its slot, or backing off: not waiting yet
    await _run(web_chain, RunStatus.QUEUED, None, next_attempt_at=ahead, scheduled_for=ahead)
    await _run(web_chain, RunStatus.SUCCEEDED, day, 30, kind=RunKind.PRUNE)
    await _run(other, RunStatus.QUEUED, None)
    await _run(other, RunStatus.QUEUED, None)
    await _run(other, RunStatus.RUNNING, None)

    status, text = await scrape(metrics_url)
    assert status == 200
    assert "secret-host-path" not in text
    samples, types = parse(text)
    w = {"team": T1, "chain": 'web "front"'}
    last_ok = (day + timedelta(days=1)).timestamp()
    assert samples[key("backupbot_chain_last_success_timestamp_seconds", **w)] == last_ok
    assert samples[key("backupbot_chain_last_run_duration_seconds", **w)] == 5.5  # the failed run was last
    assert samples[key("backupbot_chain_last_archive_original_bytes", **w)] == 2000
    assert samples[key("backupbot_chain_last_archive_deduplicated_bytes", **w)] == 20
    assert samples[key("backupbot_chain_runs_total", **w, kind="backup", status="succeeded")] == 1
    assert samples[key("backupbot_chain_runs_total", **w, kind="backup", status="warning")] == 1
    assert samples[key("backupbot_chain_runs_total", **w, kind="backup", status="failed")] == 1
    assert samples[key("backupbot_chain_runs_total", **w, kind="prune", status="succeeded")] == 1
    assert samples[key("backupbot_chain_up", **w)] == 1
    assert samples[key("backupbot_chain_up", team=T1, chain="db")] == 0
    assert not any(f'team="{T2}"' in name for name in samples)  # another workspace's chains are not shown
    assert key("backupbot_chain_last_success_timestamp_seconds", team=T1, chain=db.name) not in samples
    assert samples[key("backupbot_queue_depth", team=T1)] == 1
    other_samples, _ = parse((await scrape(metrics_url, T2))[1])
    assert other_samples[key("backupbot_chain_up", team=T2, chain="web")] == 1
    assert key("backupbot_chain_last_success_timestamp_seconds", team=T2, chain="web") not in other_samples
    assert other_samples[key("backupbot_queue_depth", team=T2)] == 2
    assert not any(f'team="{T1}"' in name for name in other_samples)
    assert types["backupbot_chain_runs"] == "counter"
    assert types["backupbot_queue_depth"] == "gauge"


async def test_metrics_of_an_empty_workspace(metrics_url: str) -> None:
    samples, types = parse((await scrape(metrics_url))[1])
    assert samples == {key("backupbot_queue_depth", team=T1): 0} and "backupbot_chain_up" in types


@pytest.mark.parametrize("header", [None, "Bearer bwapi_not-a-token", "Basic dXNlcjpwYXNz"])
async def test_metrics_need_a_workspace_token(metrics_url: str, header: str | None) -> None:
    await _chain(T1, "web")
    headers = {"Authorization": header} if header else {}
    async with aiohttp.ClientSession() as session, session.get(metrics_url, headers=headers) as response:
        assert response.status == 401
        text = await response.text()
    assert "backup-bot api-token" in text and "backupbot_chain_up" not in text


# --------------------------------------------------------------------------------------------- pings


@pytest.fixture
async def ping_server() -> AsyncIterator[tuple[str, list[str]]]:
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.path)
        if "broken" in request.path:
            return web.Response(status=500)
        if "slow" in request.path:
            await asyncio.sleep(1.5)
        return web.Response(text="OK")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", seen
    finally:
        await runner.cleanup()


async def test_ping_events_follow_healthchecks_urls(ping_server: tuple[str, list[str]]) -> None:
    base, seen = ping_server
    url = f"{base}/ping/0f1e-uuid"
    assert await monitoring.ping(url, "start", allow=LOOPBACK) is True
    assert await monitoring.ping(url, "success", allow=LOOPBACK) is True
    assert await monitoring.ping(url + "/", "fail", allow=LOOPBACK) is True
    assert seen == ["/ping/0f1e-uuid/start", "/ping/0f1e-uuid", "/ping/0f1e-uuid/fail"]


async def test_failing_pings_never_raise(ping_server: tuple[str, list[str]], caplog: pytest.LogCaptureFixture) -> None:
    base, _ = ping_server
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/ping/x"
    assert await monitoring.ping(dead, "start", allow=LOOPBACK) is False
    assert await monitoring.ping(f"{base}/broken", "fail", allow=LOOPBACK) is False
    started = time.monotonic()
    assert await monitoring.ping(f"{base}/slow", "success", timeout=0.3, allow=LOOPBACK) is False
    assert time.monotonic() - started < 2
    assert await monitoring.ping("not a url", "start") is False
    assert await monitoring.ping(None, "start") is False
    assert "uuid" not in caplog.text and "/ping/x" not in caplog.text  # only the host is logged


async def test_ping_chain_uses_the_workspace_setting(sqlite_db: str, ping_server: tuple[str, list[str]]) -> None:
    base, seen = ping_server
    chain = await _chain(T1, "web")
    assert await monitoring.ping_chain(chain, "start") is False  # no URL: nothing sent
    await monitoring.set_ping_url(T1, chain.id, f"{base}/hc/web")
    assert await monitoring.ping_chain(chain, "start") is False  # loopback: refused until allow-listed
    row = await Workspace.get(team_id=T1)
    await Workspace.filter(id=row.id).update(settings={**row.settings, monitoring.OUTBOUND_ALLOW_KEY: ["127.0.0.1"]})
    assert await monitoring.ping_url_of(T2, chain.id) is None
    assert await monitoring.ping_chain(chain, "start") is True
    assert await monitoring.ping_chain(chain, "success") is True
    assert seen == ["/hc/web/start", "/hc/web"]
    with pytest.raises(ValueError):
        await monitoring.set_ping_url(T1, chain.id, "file:///etc/passwd")
    await monitoring.set_ping_url(T1, chain.id, None)
    assert await monitoring.ping_chain(chain, "fail") is False
