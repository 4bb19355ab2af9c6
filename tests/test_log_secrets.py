"""No secret in any log at any level (issue 13, item 5): the wizard at DEBUG, over HTTP and over Socket Mode, with
every kind of secret typed where the wizard asks for one — a one-time SSH password (real password login, key
installed), a database password (a real MariaDB login, checked from the server), a repository passphrase (tried
with real borg) — and the whole log, every library at DEBUG, scanned for each of them.
"""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from bot.cli.logs import THIRD_PARTY, RateLimit, setup_logging
from bot.config import load_settings
from bot.flows.wizard.controller import WizardController
from bot.flows.wizard.registry import build_steps
from bot.flows.wizard.services import WizardServices
from bot.slack.app import build_app, serve_http, start_socket_mode
from bot.slack.emulator import DEFAULT_APP_TOKEN, DEFAULT_BOT_TOKEN, SlackDriver, SlackEmulator
from bot.transport import SSHPool
from storage.crypto import generate_key
from storage.models import PoolKind, Server, ServerStatus, StoragePool
from storage.redact import scrub_values
from storage.tenancy import Tenant

SIGNING = "log-secrets-signing"
BORG = str(Path(__import__("sys").executable).parent / "borg")


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    """The bot's own log set-up at DEBUG, into a buffer; the previous logging restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, {n: logging.getLogger(n).level for n in THIRD_PARTY})
    buffer = io.StringIO()
    setup_logging("DEBUG", stream=buffer)
    try:
        yield buffer
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)


class Person:
    def __init__(self, driver: SlackDriver) -> None:
        self.driver = driver

    def text(self) -> str:
        return str((self.driver.current_view() or {}).get("blocks"))

    async def settle(self, until: str, within: float = 40) -> None:
        for _ in range(int(within * 10)):
            view = self.driver.current_view()
            if view and view.get("callback_id") == "wizard" and until in str(view["blocks"]):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the wizard did not show {until!r}; it shows: {self.text()[:1500]}")

    async def fill(self, **values: Any) -> None:
        for block_id, value in values.items():
            await self.driver.set_value("v", value, block_id=block_id)

    async def next(self, until: str, **values: Any) -> None:
        await self.fill(**values)
        await self.driver.submit()
        assert not self.driver.last_errors, self.driver.last_errors
        await self.settle(until)


async def _one_time_password(person: Person, source: Any) -> None:
    """Step 1 on a server that refuses the bot's key: the one-time SSH password installs it (a real login)."""
    await person.driver.slash_command("/backup", "new")
    await person.settle("Step 1")
    await person.next(source.host_key_fingerprint, host=source.host, port=str(source.port), username=source.user,
                      name="pw-1")  # fmt: skip
    await person.fill(fingerprint=source.host_key_fingerprint)
    await person.driver.click("wizard_act:confirm_fingerprint", value=source.host_key_fingerprint)
    await person.settle("one-time key install")
    await person.next("Step 2", password=source.password)  # logs in with the password, installs the bot's key


async def _database_and_passphrase(person: Person, source: Any, login: Any, passphrase: str) -> None:
    """Steps 1–5 on a server with borg: a new database login with its password (checked on the server), then an
    existing repository with a passphrase (refused: there is no such repository)."""
    await person.driver.slash_command("/backup", "new")
    await person.settle("Step 1")
    await person.next(source.host_key_fingerprint, host=source.host, port=str(source.port), username="root",
                      name="db-1")  # fmt: skip
    await person.fill(fingerprint=source.host_key_fingerprint)
    await person.driver.click("wizard_act:confirm_fingerprint", value=source.host_key_fingerprint)
    await person.settle("Step 1")
    await person.driver.submit()
    await person.settle("Step 2")
    await person.next("Step 3", backup_type="mysql")
    await person.next("Snapshot", credential="new", db_user=login.user, db_password=login.password,
                      db_host=login.host, db_port=str(login.port), databases=[f"db:{login.database}"])  # fmt: skip
    await person.next("Storage pool", method="none")
    pools = [o for b in person.driver.current_view()["blocks"] if b.get("block_id") == "pool_id"
             for o in b["element"].get("options", [])]  # fmt: skip
    await person.next("Repository", **({"pool_id": pools[0]["value"]} if pools else {}))
    await person.fill(mode="existing", name="not-there-yet", passphrase=passphrase)
    await person.driver.submit()
    await person.settle("There is no borg repository at")  # refused on the step, with the typed values in Slack


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_no_typed_secret_reaches_the_debug_log(
    mode: str, debug_log: io.StringIO, sqlite_db, make_sshd, mariadb_db, mariadb_user, tmp_path: Path
) -> None:
    source = make_sshd("logsrc")  # root, borg on the path, the bot's key authorised
    pw_source = make_sshd("logpw", nonroot=True, password_auth=True, client_key=source.client_key_path,
                          authorize_client=False)  # fmt: skip
    pool_host = make_sshd("logpool", client_key=source.client_key_path)
    login = mariadb_user(mariadb_db)
    passphrase = "BW-pass-" + secrets.token_urlsafe(12)
    tenant = Tenant("T0001")
    pool_server = await tenant.create(Server, name="pool-1", host=pool_host.host, port=pool_host.port,
                                      username="root", host_key=pool_host.host_public_key,
                                      host_key_fingerprint=pool_host.host_key_fingerprint,
                                      status=ServerStatus.OK)  # fmt: skip
    await tenant.create(StoragePool, name="Main pool", kind=PoolKind.SSH, server=pool_server,
                        base_path=str(pool_host.workdir / "repos"))  # fmt: skip
    pool = SSHPool([asyncssh.read_private_key(source.client_key_path)])
    services = WizardServices(pool=pool, bot_public_key=source.client_public_key, borg=BORG)
    async with SlackEmulator() as slack:
        extra = {"SLACK_APP_TOKEN": DEFAULT_APP_TOKEN} if mode == "socket" else {"SLACK_SIGNING_SECRET": SIGNING}
        settings = load_settings(tmp_path / "none.env", SLACK_BOT_TOKEN=DEFAULT_BOT_TOKEN, SLACK_API_URL=slack.api_url,
                                 BACKUPBOT_SECRET_KEYS=generate_key(), **extra)  # fmt: skip
        app = build_app(settings, wizard=WizardController(build_steps, services))
        if mode == "socket":
            handler = await start_socket_mode(app, settings)
            await slack.socket.wait_connected()
            driver, stop = SlackDriver.over_socket_mode(slack), handler.close_async
        else:
            runner = await serve_http(app, "127.0.0.1", 0)
            host, port = runner.addresses[0][:2]
            driver, stop = SlackDriver.over_http(slack, f"http://{host}:{port}/slack/events", SIGNING), runner.cleanup
        slack.add_user("U0002", is_admin=True)  # a second admin, for a second wizard at the same time
        try:
            await _database_and_passphrase(Person(driver), source, login, passphrase)
            driver.user = "U0002"
            await _one_time_password(Person(driver), pw_source)
        finally:
            await driver.aclose()
            await stop()
            await pool.close()
    log = debug_log.getvalue()
    assert "DEBUG slack_" in log and "DEBUG asyncssh" in log  # the libraries did log at DEBUG, payloads included
    leaks = {name: log.count(value) for name, value in
             [("SSH password", pw_source.password), ("database password", login.password), ("passphrase", passphrase)]
             if value in log}  # fmt: skip
    print(f"\n{mode}: {len(log.splitlines())} log lines at DEBUG scanned; leaks: {leaks or 'none'}")
    assert leaks == {}


def test_payload_values_are_blanked_in_every_encoding() -> None:
    import json
    from urllib.parse import urlencode

    state = {"view": {"state": {"values": {"password": {"v": {"type": "plain_text_input", "value": 'Se"cr3t-1'}}}}}}
    as_json = json.dumps(state)
    for text in (as_json, repr(state), json.dumps({"payload": as_json}), urlencode({"payload": as_json}),
                 json.dumps({"outer": json.dumps({"inner": as_json})}), "{'password': 'Se\\'cr3t-1'}"):  # fmt: skip
        assert "cr3t" not in scrub_values(text), text
    assert scrub_values('{"text": "hello", "type": "button"}') == '{"text": "hello", "type": "button"}'


def test_a_flood_of_one_error_is_rate_limited() -> None:
    limit = RateLimit()
    records = [logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "socket.accept() out of system resource",
                                 None, None) for _ in range(1000)]  # fmt: skip
    passed = [r for r in records if limit.filter(r)]
    assert 1 <= len(passed) <= 10
    debug = logging.LogRecord("x", logging.DEBUG, __file__, 1, "chatter", None, None)
    assert all(limit.filter(debug) for _ in range(100))  # only warnings and errors are limited
