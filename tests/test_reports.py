"""Reports in channels through the Slack emulator, and the set-up shared with tests/test_approvals.py.

The app runs over HTTP, the emulator on a fixed port (so it can be stopped and started again: an outage), the
outbox delivers in the background, and each test gets a chain with its pool and repository."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.alerts import Alert, AlertBus
from bot.config import load_settings
from bot.runs.notify import Notifier, hint_for
from bot.runs.outbox import Outbox
from bot.slack.app import build_app, build_client, serve_http
from bot.slack.emulator import DEFAULT_BOT_TOKEN, DEFAULT_BOT_USER, SlackDriver, SlackEmulator
from bot.slack.reports import PAUSE, RETRY, Reporting, install, render, slack_sender
from storage.crypto import generate_key
from storage.models import (
    AuditLog,
    BackupChain,
    ChainStatus,
    Repository,
    Role,
    RoleGrant,
    Run,
    RunKind,
    RunStatus,
    StoragePool,
    Workspace,
)
from storage.tenancy import Tenant

SECRET = "test-signing-secret"
TEAM = "T0001"
APPROVALS = "C0APPR"
REPORTS = "C0REP"
PEOPLE = ("U0LEAD", "U0OPS", "U0BOB", "U0REQ")


@dataclass
class Env:
    slack: SlackEmulator
    driver: SlackDriver
    bus: AlertBus
    reporting: Reporting

    @property
    def outbox(self) -> Outbox:
        return self.reporting.outbox


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def text_of(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks") or [], ensure_ascii=False) + message.get("text", "")


def buttons(message: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(label, action_id, value) of every button in the message."""
    return [
        (el["text"]["text"], el["action_id"], el.get("value", ""))
        for block in message.get("blocks") or []
        if block["type"] == "actions"
        for el in block["elements"]
    ]


async def start_env(tmp_path: Path, approvals: dict[str, Any] | None = None, *, wizard: Any = None,
                    bus: AlertBus | None = None) -> AsyncIterator[Env]:  # fmt: skip
    slack = SlackEmulator(port=free_port())
    await slack.start()
    for user in PEOPLE:
        slack.add_user(user)
    members = [DEFAULT_BOT_USER, "U0001", *PEOPLE]
    slack.add_channel(APPROVALS, "approvals", members=members)
    slack.add_channel(REPORTS, "backups", members=members)
    slack.add_usergroup("S0OPS", "ops", users=["U0OPS"])
    await Workspace.create(team_id=TEAM, settings={"approvals": approvals or {}})
    settings = load_settings(
        tmp_path / "none.env",
        SLACK_BOT_TOKEN=DEFAULT_BOT_TOKEN,
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_API_URL=slack.api_url,
        BACKUPBOT_SECRET_KEYS=generate_key(),
    )
    client = build_client(settings)
    bus = bus or AlertBus()
    outbox = Outbox(slack_sender(client), base_delay=0.2, max_delay=0.5, poll_interval=0.1)
    reporting = await install(bus, client, outbox=outbox)
    app = build_app(settings, client=client, outbox=outbox, wizard=wizard)
    runner = await serve_http(app, "127.0.0.1", 0)
    host, port = runner.addresses[0][:2]
    driver = SlackDriver.over_http(slack, f"http://{host}:{port}/slack/events", SECRET)
    try:
        yield Env(slack, driver, bus, reporting)
    finally:
        await driver.aclose()
        await runner.cleanup()
        await reporting.aclose()
        await slack.stop()


async def make_chain(
    name: str = "nightly",
    *,
    status: ChainStatus = ChainStatus.ACTIVE,
    created_by: str = "U0REQ",
    notify_success: bool = True,
    schedule: dict[str, Any] | None = None,
) -> BackupChain:
    tenant = Tenant(TEAM)
    pool = await tenant.query(StoragePool).get_or_none(name="pool1") or await tenant.create(
        StoragePool, name="pool1", kind="local", base_path="/srv/borg"
    )
    repo = await tenant.create(Repository, pool=pool, name=f"{name}-repo", path=f"/srv/borg/{name}", passphrase="pw")
    return await tenant.create(
        BackupChain,
        name=name,
        repository=repo,
        schedule=schedule or {"days": ["mon", "wed", "fri"], "at": "02:00"},
        timezone="Europe/Paris",
        status=status,
        notify_channel=REPORTS,
        notify_success=notify_success,
        created_by=created_by,
    )


# -- tests ---------------------------------------------------------------------------------------------------------

GiB = 1024**3


@pytest.fixture
async def env(sqlite_db: str, tmp_path: Path) -> AsyncIterator[Env]:
    async for e in start_env(tmp_path, {"approvers": ["U0LEAD"]}):
        yield e


async def wait_for(predicate, within: float = 8.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def failed_run(chain: BackupChain, kind: str = "host_unreachable", error: str = "") -> Run:
    return await Run.create(
        team_id=TEAM, chain=chain, repository_id=chain.repository_id, kind=RunKind.BACKUP, status=RunStatus.FAILED,
        error=error or "ssh: connect to host db1.example port 22: Connection refused", error_kind=kind, attempts=3,
    )  # fmt: skip


async def publish(env: Env, kind: str, chain: BackupChain, run: Run | None, **details: Any) -> None:
    info = {"chain_id": chain.id, "chain": chain.name, "run_id": run.id if run else None, **details}
    await env.bus.publish(Alert(TEAM, kind, f"{kind} for {chain.name}", info))
    await env.outbox.wait_delivered()


SUCCESS_STATS = {
    "jobs": [
        {"job": "files", "archive": "nightly-files-2026-01-05", "status": "ok", "kind": None, "reason": "",
         "stats": None, "pruned": ["nightly-files-2025-12-01", "nightly-files-2025-12-02"]},
        {"job": "db", "archive": "nightly-db-2026-01-05", "status": "ok", "kind": None, "reason": "",
         "stats": None, "pruned": ["nightly-db-2025-12-01"]},
    ],
    "original_size": 10 * GiB, "compressed_size": 5 * GiB, "deduplicated_size": 512 * 1024**2, "nfiles": 12345,
    "duration": 754.2, "freed_bytes": 3 * GiB, "maintenance_error": None,
}  # fmt: skip


async def test_success_summary_and_prune_report_in_the_days_thread(env: Env) -> None:
    chain = await make_chain()
    run = await Run.create(
        team_id=TEAM, chain=chain, kind=RunKind.BACKUP, status=RunStatus.SUCCEEDED, stats=SUCCESS_STATS,
        archive_name="nightly-files-2026-01-05, nightly-db-2026-01-05",
    )  # fmt: skip
    await publish(env, "run_succeeded", chain, run)
    summary, prune = env.slack.messages(REPORTS)
    body = text_of(summary)
    assert "✅ Backup of nightly succeeded" in body and "nightly-files-2026-01-05, nightly-db-2026-01-05" in body
    for label, value in [("Original size", "10.0 GiB"), ("Compressed", "5.0 GiB"), ("Deduplicated", "512.0 MiB"),
                         ("Dedup ratio", "20.0×"), ("Duration", "12 min 34 s"), ("Files", "12,345")]:  # fmt: skip
        assert f"*{label}*\\n{value}" in body, label
    assert buttons(summary) == [("Restore…", "restore_open", str(chain.id))] and "thread_ts" not in summary
    pbody = text_of(prune)
    assert "🧹 Prune of nightly" in pbody and "*Archives pruned*\\n3" in pbody and "*Space freed*\\n3.0 GiB" in pbody
    assert "nightly-files-2025-12-01" in pbody and "nightly-db-2025-12-01" in pbody
    assert prune["thread_ts"] == summary["ts"]


async def test_no_success_summary_when_the_chain_does_not_want_it(env: Env) -> None:
    chain = await make_chain(notify_success=False)
    run = await Run.create(team_id=TEAM, chain=chain, kind=RunKind.BACKUP, status=RunStatus.SUCCEEDED, stats={})
    await publish(env, "run_succeeded", chain, run)
    assert env.slack.messages(REPORTS) == []
    await publish(env, "run_failed", chain, await failed_run(chain))
    assert len(env.slack.messages(REPORTS)) == 1  # failures always


async def test_failure_alert_with_cause_hint_and_buttons_retry_and_pause(env: Env) -> None:
    chain = await make_chain()
    await publish(env, "run_failed", chain, await failed_run(chain))
    (alert,) = env.slack.messages(REPORTS)
    body = text_of(alert)
    assert "🚨 Backup of nightly failed" in body
    assert "The server could not be reached over SSH." in body and "SSH port is open" in body
    assert "Connection refused" in body and "*Failure*\\nhost_unreachable" in body
    assert buttons(alert) == [("Retry now", RETRY, str(chain.id)), ("Pause chain", PAUSE, str(chain.id)),
                              ("Restore…", "restore_open", str(chain.id))]  # fmt: skip

    await env.driver.click(RETRY, user="U0BOB", channel=REPORTS, ts=alert["ts"])  # not creator/approver/admin
    await wait_for(lambda: env.slack.ephemerals(user="U0BOB"))
    assert "not allowed" in env.slack.ephemerals(user="U0BOB")[0]["text"]
    assert await Run.filter(status=RunStatus.QUEUED).count() == 0

    await env.driver.click(RETRY, user="U0REQ", channel=REPORTS, ts=alert["ts"])  # the chain's creator
    await wait_for(lambda: not buttons(env.slack.messages(REPORTS)[0]))
    (queued,) = await Run.filter(status=RunStatus.QUEUED)
    assert (queued.kind, queued.priority, queued.chain_id, queued.requested_by) == (
        RunKind.BACKUP,
        10,
        chain.id,
        "U0REQ",
    )
    assert f"Retry queued by <@U0REQ> (run #{queued.id})" in text_of(env.slack.messages(REPORTS)[0])

    # a second failure the same day replies in the thread, broadcast to the channel, with its own buttons
    await publish(env, "run_failed", chain, await failed_run(chain, "auth_failed", "Permission denied (publickey)"))
    second = env.slack.messages(REPORTS)[1]
    assert second["thread_ts"] == alert["ts"]
    assert env.slack.calls_to("chat.postMessage")[-1].params["reply_broadcast"] is True
    assert "SSH authentication was refused." in text_of(second)
    await Tenant(TEAM).create(RoleGrant, role=Role.ADMIN, subject="U0LEAD", granted_by="U0001")  # admin by grant
    await env.driver.click(PAUSE, user="U0LEAD", channel=REPORTS, ts=second["ts"])
    await wait_for(lambda: not buttons(env.slack.messages(REPORTS)[1]))
    await chain.refresh_from_db()
    assert chain.status == ChainStatus.PAUSED
    assert "paused by <@U0LEAD>" in text_of(env.slack.messages(REPORTS)[1])
    rows = await AuditLog.filter(object_id=str(chain.id)).order_by("id")
    assert [(r.actor, r.action, r.details.get("outcome")) for r in rows] == [
        ("U0BOB", "run.retry_now", "denied"), ("U0REQ", "run.retry_now", "queued"), ("U0LEAD", "chain.pause", "done")
    ]


@pytest.mark.parametrize(
    ("kind", "cause", "hint"),
    [
        ("host_unreachable", "could not be reached", "SSH port"),
        ("auth_failed", "authentication was refused", "authorized_keys"),
        ("disk_full", "out of space", "Free space"),
        ("lock", "locked by another borg", "stale lock"),
        ("source", "dump", "credentials"),
        ("borg_missing", "not installed", "Install borg"),
        ("host_key_changed", "host key changed", "fingerprint"),
        ("integrity", "inconsistency", "check"),
    ],
)
def test_failure_kinds_map_to_cause_and_hint(kind: str, cause: str, hint: str) -> None:
    got_cause, got_hint = hint_for(kind)
    assert cause in got_cause and hint in got_hint


async def test_check_failure_and_skipped_and_interrupted(env: Env) -> None:
    chain = await make_chain()
    check = await Run.create(team_id=TEAM, chain=chain, kind=RunKind.CHECK, status=RunStatus.FAILED,
                             error="Index object count mismatch", error_kind="integrity")  # fmt: skip
    await publish(env, "run_failed", chain, check)
    await publish(env, "run_skipped", chain, None, reason="not started before the window closed at 05:00")
    await publish(env, "run_interrupted", chain, None)
    check_msg, skipped, interrupted = env.slack.messages(REPORTS)
    assert "🚨 Repository check of nightly failed" in text_of(check_msg)
    assert "Index object count mismatch" in text_of(check_msg) and "run a repository check" in text_of(check_msg)
    assert "skipped" in text_of(skipped) and "window closed at 05:00" in text_of(skipped)
    assert "interrupted" in text_of(interrupted) and "never counted a success" in text_of(interrupted)


async def test_stale_alert_is_posted_once(env: Env) -> None:
    now = dt.datetime(2026, 1, 20, 12, tzinfo=dt.UTC)
    stale = await make_chain("stale")
    fresh = await make_chain("fresh")
    for chain, age in ((stale, 10), (fresh, 1)):
        await Run.create(team_id=TEAM, chain=chain, kind=RunKind.BACKUP, status=RunStatus.SUCCEEDED,
                         finished_at=now - dt.timedelta(days=age))  # fmt: skip
    notifier = Notifier(env.outbox, render, clock=lambda: now)
    assert await notifier.post_stale(factor=2) == [stale.id]  # mon/wed/fri: 3 days apart, 2× = 6 days
    assert await notifier.post_stale(factor=2) == []
    await env.outbox.wait_delivered()
    (message,) = env.slack.messages(REPORTS)
    body = text_of(message)
    assert "stale has not backed up successfully" in body and "2026-01-10 12:00 UTC" in body
    assert buttons(message) == [("Retry now", RETRY, str(stale.id)), ("Pause chain", PAUSE, str(stale.id))]
    # a new success ends the episode; going stale again alerts again
    await Run.create(team_id=TEAM, chain=stale, kind=RunKind.BACKUP, status=RunStatus.SUCCEEDED,
                     finished_at=now - dt.timedelta(days=8))  # fmt: skip
    assert await notifier.post_stale(factor=2) == [stale.id]


async def test_slack_429_and_5xx_are_retried_by_the_client(env: Env) -> None:
    chain = await make_chain()
    env.slack.inject("chat.postMessage", status=429, retry_after=1)
    env.slack.inject("chat.postMessage", status=503, retry_after=None)
    await publish(env, "run_failed", chain, await failed_run(chain))
    statuses = [c.status for c in env.slack.calls_to("chat.postMessage")]
    assert statuses == [429, 503, 200]
    assert len(env.slack.messages(REPORTS)) == 1


async def test_outage_queues_messages_and_delivers_them_in_order(env: Env) -> None:
    chain = await make_chain()
    await env.slack.stop()  # Slack is down: connection refused
    for kind in ("host_unreachable", "disk_full", "lock"):
        await env.bus.publish(
            Alert(TEAM, "run_failed", "x", {"chain_id": chain.id, "run_id": (await failed_run(chain, kind)).id})
        )
    await wait_for(lambda: _attempted(), within=15)
    assert await env.outbox.pending() == 3
    await env.slack.start()  # same port: Slack is back
    await env.outbox.wait_delivered(within=15)
    first, second, third = env.slack.messages(REPORTS)
    assert "could not be reached" in text_of(first)
    assert "out of space" in text_of(second) and second["thread_ts"] == first["ts"]
    assert "locked by another borg" in text_of(third) and third["thread_ts"] == first["ts"]


async def _attempted() -> bool:
    from storage.models import OutboxMessage

    return await OutboxMessage.filter(attempts__gte=1).exists()
