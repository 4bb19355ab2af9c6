"""The restore flow driven through the Slack emulator over signed HTTP: ``/backup restore <chain>`` → archive
(external select, newest first) → what → where → summary → a RESTORE run on the queue → progress and the checked
result in the chain's thread, with a *Restore…* button on the success report that reopens the flow; a refusal at
the "where" step is an inline error and nothing is queued; a closed flow reopens where it was."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.flows.wizard.controller import WizardController
from bot.flows.wizard.registry import build_steps
from bot.runs.execute import Executor
from bot.runs.queue import SqlQueue
from bot.runs.worker import Worker
from bot.slack import app as app_module
from bot.slack import commands
from bot.slack import restore as restore_slack
from storage.models import BackupChain, Role, RoleGrant, Run, RunKind, RunStatus
from storage.tenancy import Tenant
from tests.test_reports import REPORTS, TEAM, Env, buttons, start_env, text_of, wait_for
from tests.test_restore import backed_up, tree
from tests.test_wizard_step_pool_repo import World, build_world

USER = "U0OPS"


@pytest.fixture
async def world(sqlite_db: str, make_sshd: Any) -> AsyncIterator[World]:
    w = await build_world(make_sshd, "rsl")
    yield w
    await w.services.pool.close()


@pytest.fixture
async def env(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    # What the lead wires in bot/slack: `/backup restore` opens the flow, and app.py registers its listeners.
    monkeypatch.setitem(commands.WIZARD_WORDS, "restore", restore_slack.open_from_command)
    original = app_module.servers.register

    def both(app: Any, shared: Any) -> None:
        original(app, shared)
        restore_slack.register(app, shared)

    monkeypatch.setattr(app_module.servers, "register", both)
    controller = WizardController(build_steps, world.services)
    async for e in start_env(tmp_path, wizard=controller, bus=world.services.alerts):
        yield e


def modal_text(env: Env) -> str:
    view = env.driver.current_view(USER)
    return text_of({"blocks": view["blocks"]}) if view else ""


async def test_restore_from_the_slash_command_to_the_checked_report_in_the_chains_thread(world: World,
                                                                                        env: Env) -> None:
    chain, archive = await backed_up(world)
    await BackupChain.filter(id=chain.id).update(notify_channel=REPORTS, notify_success=False)
    await Tenant(TEAM).create(RoleGrant, role=Role.OPERATOR, subject=USER, server=world.server)
    driver = env.driver

    await driver.slash_command("/backup", f"restore {chain.name}", user=USER, channel=REPORTS)
    await driver.wait_for_view(USER, callback_id=restore_slack.VIEW)
    options = await driver.options(restore_slack.ARCHIVE, "", user=USER)
    assert [o["value"] for o in options] == [archive] and " UTC · " in options[0]["text"]["text"]
    assert await driver.options(restore_slack.ARCHIVE, "1999-01-01", user=USER) == []  # search by date
    await driver.set_value(restore_slack.ARCHIVE, archive, user=USER)
    await driver.submit(USER)
    await driver.set_value("what", "paths", user=USER)
    await driver.submit(USER)

    # Browse level by level down to the www directory, add one file.
    parts = str(world.www).strip("/").split("/")
    for depth in range(len(parts)):
        await driver.click(restore_slack.OPEN_DIR, value="/".join(parts[:depth + 1]), user=USER)
        await driver.wait_for_view(USER)
    assert "index.html" in modal_text(env) and "img" in modal_text(env)
    await driver.click(restore_slack.ADD_PATH, value="/".join(parts) + "/index.html", user=USER)
    await driver.wait_for_view(USER)
    assert "Chosen:* `/" in modal_text(env)
    await driver.submit(USER)

    # Where: a non-empty directory is refused inline, before anything is written.
    busy = world.src.workdir / "busy"
    busy.mkdir()
    (busy / "live.txt").write_text("live")
    await driver.set_value("target", str(busy), user=USER)
    refused = await driver.submit(USER)
    assert "not empty" in str(refused.body)
    assert await Run.filter(kind=RunKind.RESTORE).count() == 0

    # Closed and reopened: the flow resumes at the same step.
    await driver.close(USER)
    await driver.slash_command("/backup", "restore", user=USER, channel=REPORTS)
    await driver.wait_for_view(USER, callback_id=restore_slack.VIEW)
    assert "New directory" in modal_text(env)

    target = world.src.workdir / "from-slack"
    await driver.set_value("target", str(target), user=USER)
    await driver.submit(USER)
    assert "index.html" in modal_text(env) and str(target) in modal_text(env)
    await driver.submit(USER)  # Restore
    assert "queued" in modal_text(env)
    run = await Run.get(kind=RunKind.RESTORE)
    assert run.requested_by == USER and run.status == RunStatus.QUEUED

    queue = SqlQueue()
    worker = Worker(queue, Executor(queue, world.services, alerts=world.services.alerts),
                    alerts=world.services.alerts, poll=0.2)  # fmt: skip
    await worker.start()
    try:
        await wait_for(lambda: len(env.slack.messages(REPORTS)) >= 2, within=60)
    finally:
        await worker.stop()
    started, done = env.slack.messages(REPORTS)[:2]
    assert "Restore from web1-www started" in text_of(started)
    assert "done and checked" in text_of(done) and done["thread_ts"] == started["ts"]
    assert "1 of 1 listed" in text_of(done) and "sampled files match" in text_of(done)
    assert (target / str(world.www).lstrip("/") / "index.html").read_text() == "<h1>hello</h1>\n"
    assert tree(busy) == {"live.txt": tree(busy)["live.txt"]}
    # The report's Restore… button reopens the flow for this chain (a fresh one: the last was finished).
    assert ("Restore…", restore_slack.RESTORE_OPEN, str(chain.id)) in buttons(done)
    await driver.close(USER)
    await driver.click(restore_slack.RESTORE_OPEN, user=USER, channel=REPORTS, ts=done["ts"])
    await driver.wait_for_view(USER, callback_id=restore_slack.VIEW)
    assert "Archive" in modal_text(env)
