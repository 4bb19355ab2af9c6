"""Benchmark: a new user's first verified backup, from an empty data directory (issue 11's goal: ≤ 2 minutes of
machine time, ≤ 12 clicks).

    .venv/bin/python bench/first_backup.py [--keep]

What runs, each as the product runs it (needs root: a loopback sshd is started, as in the tests):
  1. ``backup-bot init`` into an empty temporary data directory (a subprocess, as the README's first command does);
  2. ``backup-bot pool add --local``: a pool on this machine, under the temporary directory (real checks: borg, the
     directory writable, free space);
  3. this machine as the server: an OpenSSH sshd on a loopback address (the tests' harness), with the bot's public key
     (printed by ``init``) in root's authorized_keys there — what an admin does on a real server;
  4. ``backup-bot run`` in HTTP mode (a subprocess) against the project's Slack emulator (in this process): a person
     plays ``/backup new`` with the emulator's driver — signed requests, as Slack sends them — taking every default
     the wizard offers: add the server (address, port, login, name; the admin pastes the fingerprint that sshd's own
     host key has), files, one directory, no snapshot, the pool, the repository, retention, schedule, validation (a
     real test backup), review with *Run a backup now*;
  5. until the success report is in the channel, then the archive is listed by borg on the pool and its files are
     checked against the source (``borg extract --dry-run`` would prove readability; the bench extracts and compares).

Printed: wall time per phase and in all (the one-time borg build is not part of it: the venv exists), clicks (submits
and button presses) and inputs (fields typed or chosen). Figures are in the closing note of issue 11.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.slack.emulator import DEFAULT_BOT_TOKEN, DEFAULT_CHANNEL, SlackDriver, SlackEmulator
from tests.harness.sshd import SshdFactory

VENV = Path(sys.executable).parent
CLI = str(VENV / "backup-bot")
SECRET = "bench-signing-secret"
TEAM = "T0001"


class Person:
    """Plays the wizard through the emulator and counts what a person does."""

    def __init__(self, driver: SlackDriver) -> None:
        self.driver, self.clicks, self.inputs = driver, 0, 0

    def text(self) -> str:
        view = self.driver.current_view() or {}
        return str(view.get("blocks"))

    async def settle(self, until: str, within: float = 120) -> None:
        """Wait until the modal shows ``until`` (slow steps answer "working…" first and update the view later)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            view = self.driver.current_view() or {}
            if view.get("callback_id") == "wizard" and until in str(view.get("blocks")):
                return
            await asyncio.sleep(0.1)
        raise SystemExit(f"the wizard did not show {until!r}; it shows: {self.text()[:1500]}")

    async def fill(self, **values: Any) -> None:
        for block_id, value in values.items():
            self.inputs += 1
            await self.driver.set_value("v", value, block_id=block_id)

    async def next(self, until: str, **values: Any) -> None:
        await self.fill(**values)
        self.clicks += 1
        await self.driver.submit()
        if self.driver.last_errors:
            raise SystemExit(f"the step refused the answers: {self.driver.last_errors}")
        await self.settle(until)

    async def click(self, action: str, until: str, value: str | None = None) -> None:
        self.clicks += 1
        await self.driver.click(action, value=value)
        await self.settle(until)


def cli(env_file: Path, *args: str, env: dict[str, str]) -> str:
    """Run ``backup-bot`` as the operator would; stop the bench with its output when it fails."""
    done = subprocess.run([CLI, "--env-file", str(env_file), *args], env=env, capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"backup-bot {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_http(port: int, bot: subprocess.Popen[bytes], within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if bot.poll() is not None:
            raise SystemExit(f"backup-bot run exited with {bot.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.2)
    raise SystemExit("backup-bot run did not listen within a minute")


async def play(person: Person, host: Any, data: Path) -> None:
    """``/backup new`` with every default the wizard offers, Run now ticked at review."""
    await person.driver.slash_command("/backup", "new")
    await person.driver.wait_for_view(callback_id="wizard")
    await person.settle("Step 1")
    await person.next(host.host_key_fingerprint, host=host.host, port=str(host.port), username="root",
                      name="this-machine")  # fmt: skip
    await person.fill(fingerprint=host.host_key_fingerprint)  # pasted from the server's console, out of band
    await person.click("wizard_act:confirm_fingerprint", "pinned", value=host.host_key_fingerprint)
    await person.next("Step 2")
    await person.next("Step 3", backup_type="files")
    await person.next("Snapshot", paths=str(data))
    await person.next("Storage pool")
    await person.next("Repository", **unchosen(person, "pool_id"))
    await person.next("Retention")
    await person.next("Schedule")
    await person.next("Validation")
    await person.next("Review")
    await person.next("created", options=["run_now"])


def unchosen(person: Person, block_id: str) -> dict[str, str]:
    """The first option of a select that has no preselected one (a person picks it), else nothing to do."""
    for block in (person.driver.current_view() or {}).get("blocks", []):
        element = block.get("element") or {}
        if block.get("block_id") == block_id and element.get("options") and not element.get("initial_option"):
            return {block_id: element["options"][0]["value"]}
    return {}


async def wait_report(slack: SlackEmulator, within: float = 300) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for message in slack.messages(DEFAULT_CHANNEL):
            text = str(message.get("text") or "") + str(message.get("blocks") or "")
            if "succeeded" in text and "Backup of" in text:
                return text
            if "failed" in text and "Backup of" in text:
                raise SystemExit(f"the first backup failed: {text[:1500]}")
        await asyncio.sleep(0.25)
    raise SystemExit("no backup report within 5 minutes")


def verify(env: dict[str, str], env_file: Path, data: Path, work: Path) -> str:
    """List the chain's archive on the pool with borg and compare its files with the source directory."""
    script = (
        "import asyncio, json, sys\n"
        "from bot.config import load_settings\n"
        "from storage import db\n"
        "from storage.crypto import install_keyring\n"
        "from storage.models import Repository\n"
        "async def main():\n"
        f"    settings = load_settings({str(env_file)!r})\n"
        "    install_keyring(settings.keyring())\n"
        "    async with db.database(settings.resolved_database_url, migrate=False):\n"
        "        repo = await Repository.get()\n"
        "        print(json.dumps({'path': repo.path, 'passphrase': repo.passphrase.reveal()}))\n"
        "asyncio.run(main())\n"
    )
    found = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False)
    if found.returncode != 0:
        raise SystemExit(f"reading the repository from the bot's database failed:\n{found.stderr[-3000:]}")
    repo = __import__("json").loads(found.stdout.strip().splitlines()[-1])
    borg_env = {**env, "BORG_PASSPHRASE": repo["passphrase"], "BORG_BASE_DIR": str(work / "verify-borg")}
    names = subprocess.run([str(VENV / "borg"), "list", "--short", repo["path"]], env=borg_env, capture_output=True,
                           text=True, check=True).stdout.split()  # fmt: skip
    if len(names) != 1:
        raise SystemExit(f"expected one archive on the pool, found {names}")
    target = work / "extracted"
    target.mkdir()
    subprocess.run([str(VENV / "borg"), "extract", f"{repo['path']}::{names[0]}"], cwd=target, env=borg_env,
                   check=True, capture_output=True)  # fmt: skip
    copy = target / str(data).lstrip("/")
    for item in data.rglob("*"):
        if item.is_file() and (copy / item.relative_to(data)).read_bytes() != item.read_bytes():
            raise SystemExit(f"{item} differs in the archive")
    return names[0]


async def main(keep: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="first-backup-"))
    env = {**os.environ, "BACKUPBOT_LOG_LEVEL": "WARNING"}
    env.pop("SLACK_APP_TOKEN", None)
    env_file, data_dir = work / ".env", work / "data"
    data = work / "www"
    data.mkdir()
    for n in range(20):
        (data / f"page-{n}.html").write_text(f"<h1>page {n}</h1>\n" * 50)
    sshd = SshdFactory()
    times: dict[str, float] = {}
    started = time.monotonic()
    bot: subprocess.Popen[bytes] | None = None
    try:
        phase = time.monotonic()
        printed = cli(env_file, "init", "--data-dir", str(data_dir), env=env)
        public_key = re.search(r"^(ssh-ed25519 \S+.*)$", printed, re.M)
        if public_key is None:
            raise SystemExit(f"init printed no public key:\n{printed}")
        times["init"] = time.monotonic() - phase
        phase = time.monotonic()
        cli(env_file, "pool", "add", "--team", TEAM, "--name", "this machine", "--local", "--path",
            str(work / "pool"), env=env)  # fmt: skip
        times["pool add"] = time.monotonic() - phase
        host = sshd("firstbox", authorize_client=False)
        host.authorize(public_key.group(1).strip())
        async with SlackEmulator() as slack:
            port = free_port()
            run_env = {**env, "SLACK_BOT_TOKEN": DEFAULT_BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET,
                       "SLACK_API_URL": slack.api_url, "BACKUPBOT_HTTP_HOST": "127.0.0.1",
                       "BACKUPBOT_HTTP_PORT": str(port)}  # fmt: skip
            phase = time.monotonic()
            bot = subprocess.Popen([CLI, "--env-file", str(env_file), "run"], env=run_env)  # noqa: ASYNC220
            await wait_http(port, bot)
            times["bot start"] = time.monotonic() - phase
            driver = SlackDriver.over_http(slack, f"http://127.0.0.1:{port}/slack/events", SECRET)
            person = Person(driver)
            try:
                phase = time.monotonic()
                await play(person, host, data)
                times["wizard"] = time.monotonic() - phase
                phase = time.monotonic()
                await wait_report(slack)
                times["first backup"] = time.monotonic() - phase
            finally:
                await driver.aclose()
        phase = time.monotonic()
        archive = verify(env, env_file, data, work)
        times["verify"] = time.monotonic() - phase
        total = time.monotonic() - started
        for name, seconds in times.items():
            print(f"{name:>13}: {seconds:6.1f} s")
        print(f"{'total':>13}: {total:6.1f} s (goal ≤ 120 s)   archive {archive}")
        print(f"{'person':>13}: {person.clicks} clicks (goal ≤ 12), {person.inputs} inputs")
    finally:
        if bot is not None and bot.poll() is None:
            bot.terminate()
            bot.wait(timeout=30)
        sshd.close()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (data, pool, logs)")
    asyncio.run(main(parser.parse_args().keep))
