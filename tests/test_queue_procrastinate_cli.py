"""Scale-out from the operator's side, as real processes: the settings that choose the queue backend and their
one-sentence errors, ``backup-bot migrate`` creating procrastinate's tables (idempotent), ``backup-bot worker``
refusing to start until it can work, and ``backup-bot run`` + ``backup-bot worker`` on one PostgreSQL database: the
worker executes a real backup — real borg over real sshd — of a run inserted as a bare row (like Slack's "Run
now"), and the bot process posts the worker's report to Slack (the emulator).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.borg import list as borg_list
from bot.borg.repo import Repo
from bot.config import ConfigError, load_settings
from bot.slack.emulator import DEFAULT_BOT_TOKEN, SlackEmulator
from bot.slack.emulator.server import DEFAULT_CHANNEL
from storage import db
from storage.crypto import Keyring
from storage.models import (
    BotIdentity,
    ChainStatus,
    OutboxMessage,
    OutboxStatus,
    Repository,
    Run,
    RunKind,
    RunStatus,
)
from tests.test_cli import BIN, ENV_VARS, assert_clean_failure, cli
from tests.test_slack_app import SECRET, _free_port

QUEUE_VARS = ("BACKUPBOT_QUEUE", "BACKUPBOT_RUN_CONCURRENCY", "BACKUPBOT_WORKER_STALLED_SECONDS")


def env_for(url: str | None, keyring: Keyring | None = None, **extra: str) -> dict[str, str]:
    env = {"BACKUPBOT_QUEUE": "procrastinate", **extra}
    if url:
        env["DATABASE_URL"] = url
    if keyring is not None:
        env["BACKUPBOT_SECRET_KEYS"] = ",".join(keyring.keys)
    return env


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*ENV_VARS, *QUEUE_VARS):
        monkeypatch.delenv(name, raising=False)


def test_settings_choose_the_backend_and_refuse_what_cannot_work(tmp_path: Path) -> None:
    assert load_settings(None).queue_backend == "embedded"
    assert load_settings(None, BACKUPBOT_QUEUE="Procrastinate", DATABASE_URL="postgres://u@h/db").queue_backend == (
        "procrastinate"
    )
    cases = [
        ({"BACKUPBOT_QUEUE": "procrastinate"}, "BACKUPBOT_QUEUE is procrastinate, which needs PostgreSQL, but "
         "DATABASE_URL is unset (SQLite)"),
        ({"BACKUPBOT_QUEUE": "procrastinate", "DATABASE_URL": "mysql://root:@h:3306/db"}, "DATABASE_URL is mysql://"),
        ({"BACKUPBOT_QUEUE": "celery"}, "BACKUPBOT_QUEUE must be embedded"),
        ({"BACKUPBOT_RUN_CONCURRENCY": "0"}, "BACKUPBOT_RUN_CONCURRENCY is 0, so the bot would execute no runs"),
    ]  # fmt: skip
    for overrides, fragment in cases:
        with pytest.raises(ConfigError) as caught:
            load_settings(None, **overrides)
        assert fragment in str(caught.value) and "\n" not in str(caught.value)
    allowed = load_settings(None, BACKUPBOT_QUEUE="procrastinate", DATABASE_URL="postgres://u@h/db",
                            BACKUPBOT_RUN_CONCURRENCY="0")  # fmt: skip
    assert allowed.run_concurrency == 0  # the bot schedules, worker processes execute
    result = cli(tmp_path, "migrate", env={"BACKUPBOT_QUEUE": "procrastinate"})
    assert_clean_failure(result, "needs PostgreSQL", "BACKUPBOT_QUEUE=embedded")


def test_worker_refuses_the_embedded_queue_and_a_database_not_migrated(tmp_path: Path, postgres_db, keyring) -> None:
    embedded = cli(tmp_path, "worker", env={"BACKUPBOT_SECRET_KEYS": ",".join(keyring.keys)})
    assert_clean_failure(embedded, "needs BACKUPBOT_QUEUE=procrastinate", "`backup-bot run` executes the runs")
    fresh = cli(tmp_path, "worker", env=env_for(postgres_db.url, keyring))
    assert_clean_failure(fresh, "run `backup-bot migrate` once")
    bad = cli(tmp_path, "worker", "--concurrency", "0", env=env_for(postgres_db.url, keyring))
    assert_clean_failure(bad, "--concurrency '0' is not a whole number from 1 to 64")


def test_migrate_creates_procrastinates_tables_once_then_worker_needs_the_bots_key(
    tmp_path: Path, postgres_db, keyring
) -> None:
    env = env_for(postgres_db.url, keyring)
    first = cli(tmp_path, "migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "procrastinate's tables created" in first.stdout
    again = cli(tmp_path, "migrate", env=env)
    assert again.returncode == 0 and "procrastinate's tables are in place" in again.stdout
    assert postgres_db.sql("SELECT count(*) FROM procrastinate_jobs").strip() == "0"
    no_key = cli(tmp_path, "worker", env=env)
    assert_clean_failure(no_key, "no bot SSH key yet", "backup-bot init")


# ----------------------------------------------------------------------------------- a real backup by a worker


@pytest.fixture
async def pg_world(postgres_db, keyring, make_sshd: Any) -> AsyncIterator[Any]:
    from tests.test_wizard_step_pool_repo import build_world

    async with db.database(postgres_db.url):
        world = await build_world(make_sshd, "q")
        key = Path(world.src.client_key_path)
        await BotIdentity.create(name="default", key_type="ssh-ed25519", public_key=Path(f"{key}.pub").read_text(),
                                 private_key=key.read_text())  # fmt: skip
        try:
            yield world
        finally:
            await world.services.pool.close()


async def _until(predicate, within: float) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.2)


@pytest.fixture
async def slack() -> AsyncIterator[SlackEmulator]:
    async with SlackEmulator() as emulator:
        yield emulator


async def _start(*argv: str, env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    base = {k: v for k, v in os.environ.items() if k not in (*ENV_VARS, *QUEUE_VARS)}
    pipe = asyncio.subprocess.PIPE
    return await asyncio.create_subprocess_exec(str(BIN), *argv, cwd=cwd, env={**base, **env}, stdout=pipe,
                                                stderr=pipe)  # fmt: skip


async def _healthy(port: int, process: asyncio.subprocess.Process, within: float = 60) -> None:
    """Until the bot process answers /healthz (or fail with what it printed when it exited)."""
    deadline = asyncio.get_running_loop().time() + within
    async with aiohttp.ClientSession() as session:
        while asyncio.get_running_loop().time() < deadline and process.returncode is None:
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    pytest.fail(f"the bot did not start: {await _stop(process)}")


async def _stop(process: asyncio.subprocess.Process) -> str:
    """SIGTERM, then what it wrote on stderr; a process that does not stop within 30 s is killed (and fails)."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, err = await asyncio.wait_for(process.communicate(), 30)
    except TimeoutError:
        process.kill()
        _, err = await process.communicate()
    return err.decode()


def _texts(messages: list[dict[str, Any]]) -> str:
    return json.dumps(messages)


async def test_a_worker_process_runs_a_real_backup_and_the_bot_posts_its_report(
    pg_world: Any, postgres_db, keyring, slack: SlackEmulator, tmp_path: Path
) -> None:
    """``backup-bot run`` (executing nothing itself) and ``backup-bot worker``, as real processes on one PostgreSQL
    database: a run inserted as a bare row — as Slack's Run now does — is adopted and executed by the worker (real
    borg over real sshd), and its success report, written by the worker, is posted by the bot process."""
    from tests.test_run_worker import make_chain

    world = pg_world
    chain = await make_chain(world)
    chain.notify_channel = DEFAULT_CHANNEL
    chain.status = ChainStatus.PAUSED  # the bot's scheduler queues nothing of its own for it
    await chain.save()
    port = _free_port()
    env = env_for(postgres_db.url, keyring, BACKUPBOT_DATA_DIR=str(tmp_path / "data"), BACKUPBOT_RUN_CONCURRENCY="0")
    bot_env = {**env, "SLACK_BOT_TOKEN": DEFAULT_BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET,
               "SLACK_API_URL": slack.api_url, "BACKUPBOT_HTTP_HOST": "127.0.0.1", "BACKUPBOT_HTTP_PORT": str(port)}
    bot = await _start("run", env=bot_env, cwd=tmp_path)
    worker = None
    try:
        await _healthy(port, bot)
        worker = await _start("worker", "--concurrency", "1", "--grace", "5", env=env, cwd=tmp_path)
        assert worker.stdout is not None
        first = (await asyncio.wait_for(worker.stdout.readline(), 60)).decode()
        assert first.startswith("Worker "), first
        run = await Run.create(team_id=chain.team_id, chain=chain, kind=RunKind.BACKUP, status=RunStatus.QUEUED,
                               repository_id=chain.repository_id, priority=10, requested_by="U1")  # type: ignore[attr-defined]

        async def final() -> bool:
            return (await Run.get(id=run.id)).status not in (RunStatus.QUEUED, RunStatus.RUNNING)

        await _until(final, 90)
        stored = await Run.get(id=run.id)
        assert stored.status == RunStatus.SUCCEEDED, stored.error
        assert stored.worker_id.endswith(f":{worker.pid}") and stored.job_id is not None and stored.attempts == 1
        repository = await Repository.get(id=chain.repository_id)  # type: ignore[attr-defined]
        at_pool = Repo(url=repository.path, passphrase=repository.passphrase.reveal())
        assert [a.name for a in await borg_list.archives(world.pool_transport(), at_pool)] == [stored.archive_name]

        async def posted() -> bool:
            return "Backup of web1-www succeeded" in _texts(slack.messages(DEFAULT_CHANNEL))

        await _until(posted, 30)  # the bot's outbox drain delivers what the worker wrote
        [message] = await OutboxMessage.filter(channel=DEFAULT_CHANNEL, ref="report:success")
        assert message.status == OutboxStatus.SENT
    finally:
        errors = [await _stop(worker)] if worker is not None else []
        errors.append(await _stop(bot))
    assert worker.returncode == 0 and bot.returncode == 0, errors
    assert all("Traceback" not in err for err in errors), errors


async def test_doctor_checks_procrastinates_tables_and_live_workers(tmp_path: Path, postgres_db, keyring) -> None:
    from bot.cli.doctor import Problem, _run_queue
    from bot.runs.procrastinate_queue import ProcrastinateQueue

    settings = load_settings(None, **env_for(postgres_db.url, keyring))
    with pytest.raises(Problem, match="tables are missing: run `backup-bot migrate`"):
        await _run_queue(settings)
    assert cli(tmp_path, "migrate", env=env_for(postgres_db.url, keyring)).returncode == 0
    assert "0 worker process(es) alive; `backup-bot run` executes up to 2" in await _run_queue(settings)
    only_workers = load_settings(None, **env_for(postgres_db.url, keyring, BACKUPBOT_RUN_CONCURRENCY="0"))
    with pytest.raises(Problem, match="no `backup-bot worker` is alive"):
        await _run_queue(only_workers)
    worker = ProcrastinateQueue(postgres_db.url)
    await worker.open()  # registers and heartbeats like a `backup-bot worker`
    try:
        assert "1 worker process(es) alive" in await _run_queue(only_workers)
    finally:
        await worker.close()
    assert "embedded" in await _run_queue(load_settings(None))
