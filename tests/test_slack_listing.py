"""`/backup list`, `/backup status <chain>`, `/backup templates`: content, Slack's limits, workspace scoping."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.config import load_settings
from bot.slack import commands, listing
from bot.slack.app import build_app, serve_http
from bot.slack.blocks import help_blocks
from bot.slack.emulator import DEFAULT_BOT_TOKEN, SlackDriver, SlackEmulator
from bot.slack.emulator.limits import check_message_blocks
from storage.crypto import generate_key
from storage.models import (
    BackupChain,
    BackupSource,
    BackupTemplate,
    Repository,
    Run,
    Server,
    StoragePool,
)
from storage.tenancy import Tenant

NOW = datetime(2026, 5, 3, 12, tzinfo=UTC)  # Sunday
MWF = {"days": ["mon", "wed", "fri"], "at": "02:00", "window": None, "timezone": "Europe/Paris", "priority": 5}
A, B = Tenant("T0001"), Tenant("T0002")
SECRET = "listing-signing-secret"


def text_of(answer: listing.Answer) -> str:
    return json.dumps(answer.to_dicts(), ensure_ascii=False)


def sections(answer: listing.Answer) -> list[str]:
    return [b["text"]["text"] for b in answer.to_dicts() if b["type"] == "section"]


def within_limits(answer: listing.Answer) -> None:
    blocks = answer.to_dicts()
    assert check_message_blocks(blocks) == []
    assert len(blocks) <= 50


async def make_chain(tenant: Tenant, name: str, *, status: str = "active", schedule: dict | None = None,
                     suffix: str = "") -> BackupChain:  # fmt: skip
    server = await tenant.create(Server, name=f"srv-{name}", host=f"10.0.0.{len(name)}")
    pool = await tenant.create(StoragePool, name=f"pool-{name}", base_path="/srv/borg", tier="fast",
                               available_bytes=5 * 1024**3)  # fmt: skip
    repo = await tenant.create(Repository, pool=pool, name=f"repo-{name}{suffix}", path=f"/srv/borg/{name}",
                               passphrase="pw", retention={"preset": "7d/4w/6m/1y", "keep_daily": 7, "keep_weekly": 4,
                                                           "keep_monthly": 6, "keep_yearly": 1})  # fmt: skip
    chain = await tenant.create(BackupChain, name=name, repository=repo, status=status,
                                schedule=MWF if schedule is None else schedule, timezone="UTC")  # fmt: skip
    source = await tenant.create(BackupSource, server=server, name=f"{name}-etc", type="files",
                                 config={"paths": ["/etc"]})  # fmt: skip
    await chain.sources.add(source)
    return chain


async def add_run(tenant: Tenant, chain: BackupChain, status: str, hours_ago: int, **extra) -> Run:
    when = NOW - timedelta(hours=hours_ago)
    return await tenant.create(Run, chain=chain, repository_id=chain.repository_id, kind="backup", status=status,
                               started_at=when, finished_at=when + timedelta(minutes=4), **extra)  # fmt: skip


@pytest.fixture
async def rows(sqlite_db: str) -> dict[str, BackupChain]:
    web = await make_chain(A, "web-files")
    paused = await make_chain(A, "db-nightly", status="paused")
    other = await make_chain(B, "secret-chain")
    for i in range(6):
        await add_run(A, web, "succeeded", 200 - i * 24, archive_name=f"web-files-{i}")
    await add_run(A, web, "failed", 30, error="Connection refused by 10.0.0.9\nTraceback: ...")
    await add_run(A, web, "queued", 0)  # not run yet: not the "last run"
    await add_run(B, web, "succeeded", 1, archive_name="leak")  # a row of workspace B pointing at A's chain
    await add_run(B, other, "succeeded", 2, archive_name="secret-archive")
    await A.create(BackupTemplate, name="nightly-files", backup_type="files", description="Nightly /etc and /srv",
                   retention_policy={"keep_daily": 14}, schedule={"days": ["mon", "tue", "wed", "thu", "fri"],
                                                                  "at": "01:00"})  # fmt: skip
    await A.create(BackupTemplate, name="pg", backup_type="postgresql", description="<!channel> & co")
    await B.create(BackupTemplate, name="secret-template", backup_type="mysql")
    return {"web": web, "paused": paused, "other": other}


async def test_list_shows_this_workspaces_chains_with_last_and_next_run(rows) -> None:
    answer = await listing.list_answer(A, now=NOW)
    within_limits(answer)
    body = text_of(answer)
    assert "secret-chain" not in body and "leak" not in body
    db, web = sections(answer)  # sorted by name
    assert web.splitlines() == [
        "*web-files* · :large_green_circle: active",
        "Schedule: Mon, Wed, Fri at 02:00 in Europe/Paris",
        "Last run: :x: failed · Sat 2 May 2026, 08:04 CEST (UTC+02:00)",
        "      _Connection refused by 10.0.0.9_",
        "Next run: Mon 4 May 2026, 02:00 CEST (UTC+02:00)",
    ]
    assert db.splitlines()[0] == "*db-nightly* · :double_vertical_bar: paused"
    assert db.splitlines()[-1] == "Next run: — (not scheduled while the chain is paused)"
    assert "Last run: never ran" in db
    assert answer.text == "2 backup chain(s)"
    other = await listing.list_answer(B, now=NOW)
    assert "secret-chain" in text_of(other) and "web-files" not in text_of(other)


async def test_status_of_one_chain(rows) -> None:
    answer = await listing.status_answer(A, "web-files", now=NOW)
    within_limits(answer)
    blocks = answer.to_dicts()
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Backup chain web-files", "emoji": True},
    }
    overview, repo, sources, runs, upcoming = sections(answer)
    assert overview.splitlines() == [
        "*Status:* :large_green_circle: active",
        "*Schedule:* Mon, Wed, Fri at 02:00 in Europe/Paris · priority 5",
    ]
    assert repo.splitlines() == [
        "*Repository:* repo-web-files · `/srv/borg/web-files` · repokey-blake2, compression lz4 · size not measured "
        "yet",
        "*Pool:* pool-web-files (fast) · 5.0 GiB free · 1 repository, not measured yet",
        "*Retention:* 7 daily, 4 weekly, 6 monthly, 1 yearly",
        "*Prune + compact:* after each successful backup (`/backup prune`)",
        "*Integrity check:* no scheduled integrity check (`/backup check`)",
        "*Archive history:* matches the bot's record of verified archives",
    ]
    assert sources.splitlines() == ["*Sources:*", "• web-files-etc — Files & folders on srv-web-files (10.0.0.9)"]
    lines = runs.splitlines()
    assert lines[0] == "*Last 5 runs*"
    assert lines[1].startswith(":clock3: backup queued")
    assert lines[2] == ":x: backup failed · Sat 2 May 2026, 08:04 CEST (UTC+02:00)"
    assert lines[3] == "      _Connection refused by 10.0.0.9_"
    assert [line.split("`")[1] for line in lines[4:]] == ["web-files-5", "web-files-4", "web-files-3"]
    assert "leak" not in runs and "web-files-2" not in runs  # B's row; older than the last five
    assert upcoming.splitlines() == [
        "*Next 5 runs*",
        "• Mon 4 May 2026, 02:00 CEST (UTC+02:00)",
        "• Wed 6 May 2026, 02:00 CEST (UTC+02:00)",
        "• Fri 8 May 2026, 02:00 CEST (UTC+02:00)",
        "• Mon 11 May 2026, 02:00 CEST (UTC+02:00)",
        "• Wed 13 May 2026, 02:00 CEST (UTC+02:00)",
    ]
    assert "Backup chain web-files" in text_of(await listing.status_answer(A, "  WEB-FILES ", now=NOW))
    paused = await listing.status_answer(A, "db-nightly", now=NOW)
    assert "None: not scheduled while the chain is paused." in text_of(paused)
    assert "No runs yet." in text_of(paused)


async def test_status_never_shows_another_workspaces_chain(rows) -> None:
    answer = await listing.status_answer(A, "secret-chain", now=NOW)
    within_limits(answer)
    assert sections(answer) == [
        "I can't find a backup chain named `secret-chain` in this workspace. `/backup list` shows the chains you have."
    ]
    assert "find a backup chain named `web-files`" in text_of(await listing.status_answer(B, "web-files"))
    assert "Which chain?" in text_of(await listing.status_answer(A, "  "))
    assert "`&lt;b&gt;`" in text_of(await listing.status_answer(A, "<b>"))


async def test_templates_of_this_workspace(rows) -> None:
    answer = await listing.templates_answer(A)
    within_limits(answer)
    body = text_of(answer)
    assert "secret-template" not in body
    nightly, pg = sections(answer)
    assert nightly.splitlines() == [
        "*nightly-files* · Files & folders",
        "Nightly /etc and /srv",
        "keeps 14 daily · Mon–Fri at 01:00 in your time zone",
        "Use with `/backup new from:nightly-files` or the button",
    ]
    assert pg.splitlines()[:2] == ["*pg* · PostgreSQL", "&lt;!channel&gt; &amp; co"]
    assert "secret-template" in text_of(await listing.templates_answer(B))
    empty = await listing.templates_answer(Tenant("T0003"))
    assert "no templates in this workspace yet" in text_of(empty)
    assert "no backup chains in this workspace yet" in text_of(await listing.list_answer(Tenant("T0003")))


async def test_many_chains_stay_within_the_message_limit(sqlite_db: str) -> None:
    for i in range(60):
        await make_chain(A, f"c{i:02d}", schedule={} if i % 2 else MWF)
    answer = await listing.list_answer(A, now=NOW)
    within_limits(answer)
    assert "…and 20 more" in text_of(answer)
    assert "Schedule: no schedule" in text_of(answer) and "— (no valid schedule)" in text_of(answer)


async def test_dispatch_word_and_help() -> None:
    with pytest.raises(ValueError):
        await listing.answer(A, "new")
    ready = json.dumps([b.to_dict() for b in help_blocks()][2])
    assert all(f"`{usage}`" in ready for usage in ("/backup list", "/backup status <chain>", "/backup templates"))
    assert check_message_blocks(commands.answer_for("list")) == []


# --------------------------------------------------------------------------------------------- through Slack


@pytest.fixture
async def driver(rows, tmp_path: Path) -> AsyncIterator[SlackDriver]:
    async with SlackEmulator() as emulator:
        settings = load_settings(tmp_path / "none.env", SLACK_BOT_TOKEN=DEFAULT_BOT_TOKEN, SLACK_SIGNING_SECRET=SECRET,
                                 SLACK_API_URL=emulator.api_url, BACKUPBOT_SECRET_KEYS=generate_key())  # fmt: skip
        runner = await serve_http(build_app(settings), "127.0.0.1", 0)
        host, port = runner.addresses[0][:2]
        slack = SlackDriver.over_http(emulator, f"http://{host}:{port}/slack/events", SECRET)
        try:
            yield slack
        finally:
            await slack.aclose()
            await runner.cleanup()


async def test_slash_commands_answer_ephemerally_for_the_callers_workspace(driver: SlackDriver) -> None:
    listed = await driver.slash_command("/backup", "list")
    assert listed.status == 200 and listed.json["response_type"] == "ephemeral"
    assert check_message_blocks(listed.json["blocks"]) == []
    body = json.dumps(listed.json["blocks"])
    assert "web-files" in body and "db-nightly" in body and "secret-chain" not in body
    status = await driver.slash_command("/backup", "status   web-files")
    assert "Backup chain web-files" in json.dumps(status.json["blocks"])
    missing = await driver.slash_command("/backup", "status secret-chain")
    assert "can't find a backup chain named `secret-chain`" in json.dumps(missing.json["blocks"])
    templates = await driver.slash_command("/backup", "Templates")
    assert "/backup new from:nightly-files" in json.dumps(templates.json["blocks"])


async def test_ping_url_is_set_shown_and_removed_from_slack(driver: SlackDriver, rows) -> None:
    """`/backup ping`: the URL is stored, shown by host only (its path is the check's secret), audited, removable;
    someone who may not act on the chain changes nothing; bad URLs are refused."""
    from bot.monitoring import ping_url_of
    from storage.models import AuditLog

    web = rows["web"]
    driver.emulator.add_user("U0NOBODY", name="nina")

    async def ping(text: str, user: str | None = None) -> str:
        answered = await driver.slash_command("/backup", f"ping {text}", user=user)
        assert answered.status == 200 and answered.json["response_type"] == "ephemeral"
        assert check_message_blocks(answered.json["blocks"]) == []
        return json.dumps(answered.json["blocks"])

    assert "has no ping URL" in await ping("web-files")
    denied = await ping("web-files https://hc-ping.com/uuid-secret", user="U0NOBODY")
    assert "not allowed" in denied and await ping_url_of(A.team_id, web.id) is None
    assert "http:// or https://" in await ping("web-files ftp://example.com/x")
    said = await ping("web-files <https://hc-ping.com/uuid-secret>")  # as Slack escapes links
    assert "now pings `hc-ping.com`" in said and "uuid-secret" not in said
    assert await ping_url_of(A.team_id, web.id) == "https://hc-ping.com/uuid-secret"
    shown = await ping("web-files")
    assert "hc-ping.com" in shown and "uuid-secret" not in shown
    assert "can't find a backup chain" in await ping("secret-chain https://x.example/y")  # another workspace's
    assert "no longer pings" in await ping("web-files off")
    assert await ping_url_of(A.team_id, web.id) is None
    audit = await AuditLog.filter(action="chain.ping_url").order_by("id").values_list("details", flat=True)
    assert audit == [  # the URL's path (the check's secret) is never in the log; a refusal is logged too
        {"via": "slack", "outcome": "denied"},
        {"via": "slack", "host": "hc-ping.com", "before": {"host": None}, "after": {"host": "hc-ping.com"}},
        {"via": "slack", "removed": True, "before": {"host": "hc-ping.com"}, "after": {"host": None}},
    ]


async def test_template_button_opens_the_wizard_prefilled(rows, tmp_path: Path) -> None:
    """`/backup templates` → "Start wizard" opens the real wizard with the template's answers in the session."""
    from bot.flows.wizard.controller import WizardController
    from bot.flows.wizard.registry import build_steps
    from storage.models import WizardSession

    async with SlackEmulator() as emulator:
        settings = load_settings(tmp_path / "none.env", SLACK_BOT_TOKEN=DEFAULT_BOT_TOKEN, SLACK_SIGNING_SECRET=SECRET,
                                 SLACK_API_URL=emulator.api_url, BACKUPBOT_SECRET_KEYS=generate_key())  # fmt: skip
        app = build_app(settings, wizard=WizardController(build_steps, services=None))
        runner = await serve_http(app, "127.0.0.1", 0)
        host, port = runner.addresses[0][:2]
        slack = SlackDriver.over_http(emulator, f"http://{host}:{port}/slack/events", SECRET)
        try:
            listed = await slack.slash_command("/backup", "templates")
            buttons = [b["accessory"] for b in listed.json["blocks"] if b.get("accessory")]
            assert [b["action_id"] for b in buttons] == [listing.TEMPLATE_START] * 2
            nightly = await BackupTemplate.get(name="nightly-files")
            await slack.click(listing.TEMPLATE_START, value=str(nightly.id))
            view = await slack.wait_for_view()
            assert "server" in json.dumps(view).lower()  # step 1 of the real wizard
            session = await WizardSession.get(user_id=slack.user)
            assert session.data["template_id"] == nightly.id
            assert session.data["backup_type"] == "files"
            assert session.data["retention"]["keep_daily"] == 14
        finally:
            await slack.aclose()
            await runner.cleanup()


async def test_check_and_prune_schedules_are_set_from_slack(driver: SlackDriver, rows) -> None:
    """`/backup check` and `/backup prune`: shown, set (validated, audited, permission-checked), cleared, told to
    the scheduler at once, and visible in `/backup status`."""
    from bot.runs import nudge
    from storage.models import AuditLog

    web = rows["web"]
    driver.emulator.add_user("U0NOBODY", name="nina")
    told: list[tuple[int | None, int | None]] = []

    async def refresh(chain_id, *, repository_id=None) -> None:
        told.append((chain_id, repository_id))

    async def say(text: str, user: str | None = None) -> str:
        answered = await driver.slash_command("/backup", text, user=user)
        assert answered.status == 200 and check_message_blocks(answered.json["blocks"]) == []
        return json.dumps(answered.json["blocks"])

    unregister = nudge.on_schedule_change(refresh)
    try:
        assert "no scheduled integrity check" in await say("check web-files")
        assert "not allowed" in await say("check web-files sun 04:30", user="U0NOBODY")
        assert "Unknown day 'someday'" in await say("check web-files someday 04:30")
        assert "is not a time" in await say("check web-files sun 4h30")
        said = await say("check web-files sun,wed 04:30 verify")
        assert "Wed, Sun at 04:30 in UTC (repository + archives + all data (verify-data))" in said
        stored = (await BackupChain.get(id=web.id)).schedule
        assert stored["check"] == {"days": ["wed", "sun"], "at": "04:30", "verify_data": True}
        assert stored["days"] == MWF["days"] and stored["at"] == "02:00"  # the backup schedule is untouched
        assert "pruned after each successful backup" in await say("prune web-files")
        assert "pruned and compacted Sat at 03:00 in UTC" in await say("prune web-files sat 03:00")
        repository = await Repository.get(id=web.repository_id)
        assert repository.prune_schedule == {"days": ["sat"], "at": "03:00", "timezone": "UTC"}
        status = await say("status web-files")
        assert "Prune + compact:* Sat at 03:00 in UTC" in status and "Integrity check:* Wed, Sun at 04:30" in status
        assert "after each successful backup" in await say("prune web-files after-backup")
        assert (await Repository.get(id=web.repository_id)).prune_schedule is None
        assert "no scheduled integrity check any more" in await say("check web-files off")
        assert "check" not in (await BackupChain.get(id=web.id)).schedule
    finally:
        unregister()
    assert told == [(web.id, None), (None, web.repository_id), (None, web.repository_id), (web.id, None)]
    actions = await AuditLog.filter(actor="U0001").order_by("id").values_list("action", flat=True)
    assert actions == ["chain.check_schedule", "repository.prune_schedule", "repository.prune_schedule",
                       "chain.check_schedule"]  # fmt: skip
