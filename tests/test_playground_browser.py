"""The playground in a real browser: `backup-bot playground` as a process, Debian's chromium driven by Playwright
through labels and roles only (what a screen reader sees), the real bot, sshd, borg and SQLite behind it.

One playground process serves the module's tests in order (the first world is set up once, like a newcomer would):
a files chain of a directory on this machine from `/backup new` to the success report and borg's archive; a member's
chain approved by the approver switched in, whose failure alert offers Retry now; server-made text with HTML in it
shown as text; the page carrying on after the playground restarts.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright, expect

from tests.harness.common import free_port

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip
BOT = str(Path(sys.executable).parent / "backup-bot")
BORG = str(Path(sys.executable).parent / "borg")
IMG = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>alert(2)</script>"
SLOW = 120_000  # ms: a step that runs borg or a backup


@dataclass
class Playground:
    home: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "BACKUPBOT_", "DATABASE_URL"))}
        log = (self.home / "playground.log").open("ab")
        self.process = subprocess.Popen([BOT, "--env-file", str(self.home / ".env"), "playground", "--port",
                                         str(self.port)], cwd=self.home, env=env, stdout=log, stderr=log)  # fmt: skip
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            try:
                with urllib.request.urlopen(self.url, timeout=2):  # noqa: S310 - our own loopback page
                    return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"the playground did not answer within 90 s:\n{self.log()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log(self) -> str:
        path = self.home / "playground.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@pytest.fixture(scope="module")
def playground(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Playground]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)")
    Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    pg = Playground(tmp_path_factory.mktemp("playground"), free_port())
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture
async def page(playground: Playground, tmp_path: Path) -> AsyncIterator[Page]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = await browser.new_page()
        page.dialogs = []  # type: ignore[attr-defined]
        page.on("dialog", lambda d: (page.dialogs.append(d.message), asyncio.ensure_future(d.dismiss())))  # type: ignore[attr-defined]
        await page.goto(playground.url)
        await expect(page.get_by_role("status")).to_have_text("connected")
        try:
            yield page
        finally:
            await page.screenshot(path=str(tmp_path / "last.png"), full_page=True)  # what the page showed at the end
            await browser.close()


class Wizard:
    """Walks the wizard's modal with the page's controls and times each click until the modal changed."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.dialog = page.get_by_role("dialog", name="Backup wizard")
        self.timings: list[float] = []

    async def start(self) -> None:
        await self.page.get_by_role("button", name="#general").click()
        await self.page.get_by_label("Message #general").fill("/backup new")
        await self.page.get_by_role("button", name="Send").click()
        await expect(self.dialog).to_be_visible()

    async def press(self, name: str, until: str, timeout: float = SLOW) -> None:
        started = time.monotonic()
        await self.dialog.get_by_role("button", name=name, exact=True).click()
        await expect(self.dialog).to_contain_text(until, timeout=timeout)
        self.timings.append(time.monotonic() - started)

    async def pick(self, label: str, option: str) -> None:
        select = self.dialog.get_by_label(label, exact=True)
        value = await select.get_by_role("option", name=re.compile(re.escape(option))).first.get_attribute("value")
        await select.select_option(value=value)

    async def files_chain(self, path: Path, name: str) -> None:
        await self.start()
        await self.dialog.get_by_label("Search Existing server").fill("this")
        await expect(self.dialog.get_by_label("Existing server", exact=True)).to_contain_text("this-machine")
        await self.pick("Existing server", "this-machine")
        await self.press("Next", "Backup type")
        await self.dialog.get_by_role("radio", name=re.compile("Files")).check()
        await self.press("Next", "Source")
        await self.dialog.get_by_label("Paths to back up (one per line)").fill(str(path))
        await self.press("Next", "Snapshot")
        await self.dialog.get_by_role("radio", name=re.compile("No snapshot")).check()
        await self.press("Next", "Storage pool")
        await self.dialog.get_by_role("radio", name=re.compile("playground-pool")).check()
        await self.press("Next", "Repository")
        await self.dialog.get_by_label("Name", exact=True).fill(name)
        await self.press("Next", "Retention")
        await self.dialog.get_by_role("radio", name=re.compile("recommended")).check()
        await self.press("Next", "Schedule")
        await self.press("Next", "Validation")
        await self.press("Run the test backup", "Chain name")  # the review (after the test backup, or before approval)
        await self.dialog.get_by_label("Chain name").fill(name)

    def p95(self) -> str:
        if len(self.timings) < 2:
            return "n/a"
        return f"{statistics.quantiles(self.timings, n=20)[-1] * 1000:.0f} ms over {len(self.timings)} clicks"


async def set_up_this_machine(page: Page) -> None:
    offer = page.get_by_role("button", name="Set up this machine")
    if await offer.count():
        await offer.click()
    await expect(page.get_by_role("region", name="This machine")).to_contain_text("is the server", timeout=SLOW)


async def switch_to(page: Page, person: str) -> None:
    await page.get_by_label("Acting as").select_option(label=person)
    await expect(page.get_by_role("status")).to_have_text("connected")


async def run_now_from_home(page: Page, chain: str) -> None:
    await page.get_by_role("button", name="Backup Wizard: Home").click()
    home = page.get_by_role("main")
    await expect(home).to_contain_text(chain)
    await home.get_by_role("button", name="Run now").first.click()
    await page.get_by_role("button", name="#general").click()


def borg(playground: Playground, repo: Path, *args: str) -> list[str]:
    """``borg list`` of a repository (or archive), with its passphrase read from the bot's database."""
    code = ("import asyncio,sys;from bot.config import load_settings;from storage import db;"
            "from storage.crypto import install_keyring;from storage.models import Repository\n"
            "async def main():\n s=load_settings(sys.argv[1]);install_keyring(s.keyring())\n"
            " async with db.database(s.resolved_database_url, migrate=False):\n"
            "  print((await Repository.get(path=sys.argv[2])).passphrase.reveal())\nasyncio.run(main())")  # fmt: skip
    secret = subprocess.run([sys.executable, "-c", code, str(playground.home / ".env"), str(repo)], cwd=playground.home,
                            capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    env = {**os.environ, "BORG_PASSPHRASE": secret, "BORG_BASE_DIR": str(playground.home / "borg-base")}
    target = f"{repo}::{args[0]}" if args else str(repo)
    out = subprocess.run([BORG, "list", "--short", target], env=env, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


# -- the walk ------------------------------------------------------------------------------------------------------


async def test_a_files_chain_of_this_machine_from_backup_new_to_the_success_report(playground, page, tmp_path) -> None:
    await set_up_this_machine(page)
    data = playground.home / "www"
    data.mkdir()
    (data / "index.html").write_text("<h1>hello</h1>")
    (data / IMG).write_text("a file whose name is HTML")
    wizard = Wizard(page)
    await wizard.files_chain(data, "www-files")
    await wizard.press("Create", "created")
    await wizard.dialog.get_by_role("button", name="Close").click()
    await expect(wizard.dialog).to_have_count(0)
    await run_now_from_home(page, "www-files")
    report = page.get_by_role("log")
    await expect(report.get_by_role("heading", name=re.compile("Backup of www-files succeeded"))).to_be_visible(
        timeout=SLOW)
    repo = (playground.home / "data" / "playground" / "pool" / "www-files").resolve()
    names = borg(playground, repo)
    assert len(names) == 1, names  # the run's archive (the test backup's was removed)
    assert any(line.endswith(f"www/{IMG}") for line in borg(playground, repo, names[0]))
    print(f"click → updated modal, p95: {wizard.p95()}")
    assert page.dialogs == []  # type: ignore[attr-defined]


async def test_a_members_chain_needs_the_approver_and_its_failure_offers_retry(playground, page) -> None:
    await set_up_this_machine(page)
    data = playground.home / SCRIPT.replace("/", "_")
    data.mkdir()
    (data / "notes.txt").write_text("soon gone")
    await switch_to(page, "Mo Member (plain member)")
    wizard = Wizard(page)
    await wizard.files_chain(data, "members-files")
    await wizard.dialog.get_by_role("button", name="Create", exact=True).click()
    feed = page.get_by_role("log")
    await expect(feed.get_by_role("button", name="Approve")).to_be_visible(timeout=SLOW)  # the request, in #general
    # The wizard's last screen says it waits for approval (it may arrive after the request does): close it.
    await expect(wizard.dialog).to_contain_text("waiting for approval", timeout=SLOW)
    await wizard.dialog.get_by_role("button", name="Close").click()
    await expect(page.get_by_role("dialog")).to_have_count(0)
    await switch_to(page, "Abe Approver (approves new chains)")
    await expect(page.get_by_role("dialog")).to_have_count(0)  # the approver has no modal open
    await feed.get_by_role("button", name="Approve").last.click()
    await expect(feed).to_contain_text("approved", timeout=SLOW)
    await expect(feed).to_contain_text(f"{SCRIPT.replace('/', '_')}")  # the source's path, HTML and all, as text
    shutil.rmtree(playground.home / "data" / "playground" / "pool" / "members-files")  # the repository is gone
    await switch_to(page, "You (workspace admin)")
    await run_now_from_home(page, "members-files")
    alert = feed.get_by_role("article").filter(has_text="members-files").filter(
        has=page.get_by_role("button", name="Retry now")).last
    await expect(alert).to_be_visible(timeout=SLOW)
    before = await feed.get_by_role("article").count()
    await alert.get_by_role("button", name="Retry now").click()
    await expect(feed.get_by_role("article")).not_to_have_count(before, timeout=SLOW)
    assert await page.locator("script:not([src]), img[src=x]").count() == 0
    assert page.dialogs == []  # type: ignore[attr-defined]


async def test_server_text_with_html_is_shown_as_text(playground, page) -> None:
    await page.get_by_label("Message #general").fill("/backup status www-files")
    await page.get_by_role("button", name="Send").click()
    feed = page.get_by_role("log")
    await expect(feed).to_contain_text("www-files")
    await page.get_by_label("Message #general").fill(f"/backup {SCRIPT} {IMG}")
    await page.get_by_role("button", name="Send").click()
    await page.wait_for_timeout(1000)
    assert await page.locator("img[src=x], script:not([src])").count() == 0
    assert page.dialogs == []  # type: ignore[attr-defined]


async def test_the_page_carries_on_after_the_playground_restarts(playground, page) -> None:
    await page.get_by_label("Message #general").fill("/backup new")
    await page.get_by_role("button", name="Send").click()
    dialog = page.get_by_role("dialog", name="Backup wizard")
    await expect(dialog).to_be_visible()
    await dialog.get_by_label("New server: host name or IP address").fill("db1.example.com")
    await dialog.get_by_label("New server: host name or IP address").blur()
    await page.wait_for_timeout(500)
    playground.stop()
    await expect(page.get_by_role("status")).to_contain_text("reconnecting")
    playground.start()
    await expect(page.get_by_role("status")).to_have_text("connected", timeout=30_000)
    await expect(dialog).to_be_visible()  # the modal as it was, with what was typed
    await expect(dialog.get_by_label("New server: host name or IP address")).to_have_value("db1.example.com")
    await dialog.get_by_role("button", name="Close").click()
    await expect(dialog).to_have_count(0)
    await page.get_by_label("Message #general").fill("/backup list")
    await page.get_by_role("button", name="Send").click()
    await expect(page.get_by_role("log")).to_contain_text("www-files")  # the bot answers after its restart
