"""A real crash: the worker runs in a child process (``python -m tests.test_run_crash``) on the same SQLite file,
is killed with SIGKILL in the middle of a slow backup over real sshd, and is started again. The killed run must be
``interrupted`` (never reported successful), a retry must be queued and succeed, and the repository must pass
``borg check``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from bot.backup.jobs import ArchiveJob
from bot.borg import check as borg_check
from bot.borg import list as borg_list
from bot.borg.repo import Repo
from bot.borg.runner import BorgError, run_borg
from storage.models import Repository, Run, RunStatus
from tests.test_run_worker import world  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------- the child


def _slow(plan, run):
    job = ArchiveJob(suffix="slow", kind="command", command=("sh", "-c", "echo x; sleep 30"), stdin_name="x.txt")
    return replace(plan, jobs=[job])


async def _child(args: argparse.Namespace) -> None:
    import asyncssh

    from bot.alerts import AlertBus
    from bot.flows.wizard.services import WizardServices
    from bot.runs.execute import Executor
    from bot.runs.queue import SqlQueue
    from bot.runs.worker import Worker
    from bot.transport import SSHPool
    from storage import db
    from storage.crypto import Keyring, install_keyring

    install_keyring(Keyring(os.environ["CRASH_TEST_KEYS"]))
    await db.connect(args.db, migrate=False)
    alerts = AlertBus()
    log = Path(args.alerts)

    def write(alert) -> None:
        with log.open("a") as fh:
            fh.write(json.dumps({"kind": alert.kind, "run_id": alert.details["run_id"]}) + "\n")

    alerts.subscribe(write)
    services = WizardServices(pool=SSHPool([asyncssh.read_private_key(args.key)]), alerts=alerts)
    queue = SqlQueue()
    executor = Executor(queue, services, alerts=alerts, plan_hook=_slow if args.slow else None)
    worker = Worker(queue, executor, alerts=alerts, concurrency=1, poll=0.2, grace=5)
    await worker.start()
    print("worker started", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await worker.stop()
    await services.pool.close()
    await db.close()


# --------------------------------------------------------------------------------------------- the test


def _start(db_url: str, key: Path, alerts: Path, keys: list[str], *, slow: bool) -> subprocess.Popen:
    argv = [sys.executable, "-m", "tests.test_run_crash", "--db", db_url, "--key", str(key), "--alerts", str(alerts)]
    env = {**os.environ, "CRASH_TEST_KEYS": ",".join(keys)}
    with (alerts.parent / "child.log").open("a") as log:
        child = subprocess.Popen([*argv, *(["--slow"] if slow else [])], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                 stderr=log, text=True)  # fmt: skip
    assert child.stdout is not None and "worker started" in child.stdout.readline()
    return child


async def _until(predicate, within: float) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.2)


def _alerts(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_kill_during_a_run_then_restart(world, keyring, tmp_path) -> None:  # noqa: F811
    from bot.runs.queue import RunSpec, SqlQueue
    from tests.test_run_worker import make_chain
    from tests.test_wizard_step_pool_repo import TEAM

    chain = await make_chain(world)
    db_url = f"sqlite://{tmp_path / 'bot.sqlite3'}"
    alerts = tmp_path / "alerts.jsonl"
    run = await SqlQueue().enqueue(RunSpec(TEAM, chain_id=chain.id))

    child = _start(db_url, world.src.client_key_path, alerts, keyring.keys, slow=True)
    try:
        await _until(lambda: Run.filter(id=run.id, status=RunStatus.RUNNING).exists(), 30)
        await asyncio.sleep(3)  # borg create is reading the slow command's output on the source
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    crashed = await Run.get(id=run.id)
    assert crashed.status == RunStatus.RUNNING  # as the crash left it
    assert _alerts(alerts) == []
    # What it had started on the source was recorded as it started: the slow job's borg create.
    orphan = next(e for e in crashed.remote if any("-slow-" in arg for arg in e["argv"]))
    slow_archive = next(arg.split("::", 1)[1] for arg in orphan["argv"] if "::" in arg)
    assert _running(slow_archive)  # the crash left it running on the source

    child = _start(db_url, world.src.client_key_path, alerts, keyring.keys, slow=False)
    try:
        await _until(lambda: Run.filter(chain_id=chain.id, status=RunStatus.SUCCEEDED).exists(), 90)
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()
    killed = await Run.get(id=run.id)
    assert killed.status == RunStatus.INTERRUPTED and killed.error_kind == "interrupted"
    retry = await Run.get(chain_id=chain.id, status=RunStatus.SUCCEEDED)
    assert retry.id != run.id and retry.stats["nfiles"] == 2 and retry.attempts == 2  # attempts count across retries
    assert retry.scheduled_for == killed.scheduled_for
    reported = _alerts(alerts)
    assert {"kind": "run_interrupted", "run_id": run.id} in reported
    assert {"kind": "run_succeeded", "run_id": retry.id} in reported
    assert not any(a["kind"] == "run_succeeded" and a["run_id"] == run.id for a in reported)

    # The repository is intact: the killed attempt's archive is not there (or only as a checkpoint), the retry's
    # is, and `borg check` passes (breaking a stale lock first if the killed borg left one — the bot does not).
    repository = await Repository.get(id=chain.repository_id)
    at_pool = Repo(url=repository.path, passphrase=repository.passphrase.reveal())
    transport = world.pool_transport()
    try:
        report = await borg_check.run(transport, at_pool, lock_wait=5)
    except BorgError as error:
        assert error.kind == "lock", error
        await run_borg(transport, ("break-lock", at_pool.url), at_pool)
        report = await borg_check.run(transport, at_pool, lock_wait=5)
    assert report.ok, report.problems
    names = [a.name for a in await borg_list.archives(transport, at_pool)]
    # The restarted worker stopped the borg create the crash left running on the source (the recorded pid, whose
    # command line still ended with the recorded arguments): it never committed the interrupted attempt's archive
    # (borg may keep a checkpoint of it), and the retry did not have to wait for its lock.
    assert not _running(slow_archive)
    assert retry.archive_name in names and slow_archive not in names
    assert all(".checkpoint" in n for n in set(names) - {retry.archive_name})


def _running(marker: str) -> bool:
    """Is a process whose command line contains ``marker`` running here (the test's sshd hosts are this machine)?"""
    found = subprocess.run(["pgrep", "-f", "--", marker], capture_output=True, text=True)
    return found.returncode == 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--alerts", required=True)
    parser.add_argument("--slow", action="store_true")
    asyncio.run(_child(parser.parse_args()))
