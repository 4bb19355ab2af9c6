"""Acceptance: a person plays the whole wizard through the Slack emulator, against real sshd hosts, real borg,
the machine's PostgreSQL and MariaDB — and ends with a real chain, repository and schedule.

The driver sends signed requests exactly as Slack would; the bot runs its real app, steps, probes and engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from bot.config import load_settings
from bot.flows.wizard.controller import WizardController
from bot.flows.wizard.registry import build_steps
from bot.flows.wizard.services import WizardServices
from bot.slack.app import build_app, serve_http
from bot.slack.emulator import DEFAULT_BOT_TOKEN, SlackDriver, SlackEmulator
from bot.transport import SSHPool
from storage.crypto import generate_key
from storage.models import BackupChain, ChainStatus, PoolKind, Repository, Server, ServerStatus, StoragePool
from storage.tenancy import Tenant

SECRET = "acceptance-secret"
BORG = str(Path(__import__("sys").executable).parent / "borg")


class Person:
    """Drives the wizard modal and counts what a person does (submits and clicks)."""

    def __init__(self, driver: SlackDriver, slack: SlackEmulator) -> None:
        self.driver, self.slack, self.actions = driver, slack, 0

    def view(self) -> dict[str, Any]:
        return self.driver.current_view()

    def text(self) -> str:
        return str(self.view()["blocks"])

    async def settle(self, until: str | None = None, within: float = 40) -> None:
        """Wait until the working view is replaced (slow steps) and, if given, ``until`` is on screen."""
        for _ in range(int(within * 10)):
            view = self.view()
            if view and view.get("callback_id") == "wizard" and (until is None or until in str(view["blocks"])):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the wizard did not show {until!r}; it shows: {self.text()[:2000]}")

    async def fill(self, **values: Any) -> None:
        for block_id, value in values.items():
            await self.driver.set_value("v", value, block_id=block_id)

    async def next(self, until: str, **values: Any) -> None:
        await self.fill(**values)
        self.actions += 1
        await self.driver.submit()
        assert not self.driver.last_errors, self.driver.last_errors
        await self.settle(until)

    async def click(self, action: str, until: str | None = None, value: str | None = None) -> None:
        self.actions += 1
        await self.driver.click(action, value=value)
        await asyncio.sleep(0.2)
        await self.settle(until)


@pytest.fixture
async def world(sqlite_db, make_sshd, tmp_path) -> AsyncIterator[tuple[Person, Any, Any, Any]]:
    source = make_sshd("accsrc")
    pool_host = make_sshd("accpool", client_key=source.client_key_path)
    tenant = Tenant("T0001")
    pool_server = await tenant.create(
        Server,
        name="pool-1",
        host=pool_host.host,
        port=pool_host.port,
        username="root",
        host_key=pool_host.host_public_key,
        host_key_fingerprint=pool_host.host_key_fingerprint,
        status=ServerStatus.OK,
    )
    await tenant.create(StoragePool, name="Main pool", kind=PoolKind.SSH, server=pool_server,
                        base_path=str(pool_host.workdir / "repos"))  # fmt: skip
    pool = SSHPool([asyncssh.read_private_key(source.client_key_path)])
    services = WizardServices(pool=pool, bot_public_key=source.client_public_key, borg=BORG)
    async with SlackEmulator() as slack:
        settings = load_settings(tmp_path / "none.env", SLACK_BOT_TOKEN=DEFAULT_BOT_TOKEN, SLACK_SIGNING_SECRET=SECRET,
                                 SLACK_API_URL=slack.api_url, BACKUPBOT_SECRET_KEYS=generate_key())  # fmt: skip
        app = build_app(settings, wizard=WizardController(build_steps, services))
        runner = await serve_http(app, "127.0.0.1", 0)
        host, port = runner.addresses[0][:2]
        driver = SlackDriver.over_http(slack, f"http://{host}:{port}/slack/events", SECRET)
        try:
            yield Person(driver, slack), source, pool_host, tenant
        finally:
            await driver.aclose()
            await runner.cleanup()
            await pool.close()


async def add_server(person: Person, source) -> None:
    asked = len(person.slack.calls_to("users.info"))
    await person.driver.slash_command("/backup", "new")
    await person.driver.wait_for_view(callback_id="wizard")
    await person.settle("Step 1")
    # The time zone and the admin check of the first screen share one users.info (the directory remembers it).
    assert len(person.slack.calls_to("users.info")) == asked + 1
    await person.next(source.host_key_fingerprint, host=source.host, port=str(source.port), username="root",
                      name="web-1")  # fmt: skip
    await person.fill(fingerprint=source.host_key_fingerprint)  # the admin pastes what the server itself shows
    await person.click("wizard_act:confirm_fingerprint", until="Step 1", value=source.host_key_fingerprint)
    person.actions += 1
    await person.driver.submit()
    await person.settle("Step 2")


async def finish(person: Person, *, expect_snapshot: bool = True) -> None:
    if expect_snapshot:
        await person.next("Storage pool", method="none")
    pools = [o for b in person.view()["blocks"] if b.get("block_id") == "pool_id"
             for o in b["element"].get("options", [])]  # fmt: skip
    await person.next("Repository", **({"pool_id": pools[0]["value"]} if pools else {}))
    await person.next("Retention")
    await person.next("Schedule", preset="7d/4w/6m/1y")
    await person.next("Validation", days=["mon", "wed", "fri"], timing="at", at="02:00")
    await person.next("Review")
    await person.next("created")


async def test_files_chain_from_nothing_to_a_real_repository(world) -> None:
    person, source, _pool_host, tenant = world
    data = source.workdir / "www"
    data.mkdir()
    (data / "index.html").write_text("<h1>hello</h1>")
    await add_server(person, source)
    await person.next("Step 3", backup_type="files")
    await person.next("Snapshot", paths=str(data))
    await finish(person)
    chain = await tenant.query(BackupChain).get()
    repo = await Repository.get(id=chain.repository_id)
    assert chain.status == ChainStatus.ACTIVE
    assert chain.schedule["days"] == ["mon", "wed", "fri"] and chain.schedule["at"] == "02:00"
    assert (Path(repo.path) / "config").exists()  # the repository is real, on the pool
    assert repo.passphrase.reveal()
    print(f"files path with defaults: {person.actions} submits/clicks")
    assert person.actions <= 12


@pytest.mark.parametrize("engine", ["postgresql", "mysql"])
async def test_database_chain(world, engine, postgres_db, mariadb_db) -> None:
    person, source, _pool_host, tenant = world
    database = postgres_db.name if engine == "postgresql" else mariadb_db.name
    await add_server(person, source)
    await person.next("Step 3", backup_type=engine)
    await person.next("Snapshot", databases=[f"db:{database}"])
    await finish(person)
    chain = await tenant.query(BackupChain).get().prefetch_related("sources")
    source_row = (await chain.sources.all())[0]
    assert source_row.type == engine and database in source_row.config["databases"]


async def test_restart_at_step_six_loses_nothing(world, tmp_path) -> None:
    person, source, _pool_host, tenant = world
    data = source.workdir / "etc"
    data.mkdir()
    (data / "hosts").write_text("127.0.0.1 localhost\n")
    await add_server(person, source)
    await person.next("Step 3", backup_type="files")
    await person.next("Snapshot", paths=str(data))
    await person.next("Storage pool", method="none")
    pools = [o for b in person.view()["blocks"] if b.get("block_id") == "pool_id"
             for o in b["element"].get("options", [])]  # fmt: skip
    await person.next("Repository", **({"pool_id": pools[0]["value"]} if pools else {}))
    # The bot restarts: a new app and controller on the same database; the modal in Slack stays as it was.
    services = WizardServices(pool=SSHPool([asyncssh.read_private_key(source.client_key_path)]), borg=BORG)
    settings = load_settings(tmp_path / "none2.env", SLACK_BOT_TOKEN=DEFAULT_BOT_TOKEN, SLACK_SIGNING_SECRET=SECRET,
                             SLACK_API_URL=person.slack.api_url, BACKUPBOT_SECRET_KEYS=generate_key())  # fmt: skip
    runner = await serve_http(build_app(settings, wizard=WizardController(build_steps, services)), "127.0.0.1", 0)
    host, port = runner.addresses[0][:2]
    person.driver = SlackDriver.over_http(person.slack, f"http://{host}:{port}/slack/events", SECRET)
    try:
        await person.next("Retention")
        await person.next("Schedule", preset="7d/4w/6m/1y")
        await person.next("Validation", days=["mon", "wed", "fri"], timing="at", at="02:00")
        await person.next("Review")
        await person.next("created")
        assert await tenant.query(BackupChain).count() == 1
    finally:
        await runner.cleanup()
        await services.pool.close()


async def test_bad_input_is_refused_inline_on_the_step(world) -> None:
    person, source, _, _ = world
    await person.driver.slash_command("/backup", "new")
    await person.driver.wait_for_view(callback_id="wizard")
    await person.fill(host="db1; touch /tmp/x", port="22", username="root", name="bad")
    await person.driver.submit()  # a slow step: the error comes back in the updated view
    await person.settle("Step 1")
    assert "DNS name" in person.text()
    await person.fill(host=source.host, port=str(source.port))
    await person.driver.submit()
    await person.settle(source.host_key_fingerprint)
    await person.fill(fingerprint=source.host_key_fingerprint)  # the admin pastes what the server itself shows
    await person.click("wizard_act:confirm_fingerprint", until="Step 1", value=source.host_key_fingerprint)
    await person.driver.submit()
    await person.settle("Step 2")
    await person.fill(backup_type="mongodb")  # no MongoDB on this server: refused with the reason
    await person.driver.submit()
    assert "not available" in person.driver.last_errors["backup_type"]
    await person.next("Step 3", backup_type="files")
    await person.fill(paths="relative/path")
    await person.driver.submit()
    await person.settle("Step 3")
    assert "absolute" in person.text().lower()
