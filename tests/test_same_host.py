"""One machine is enough: source and pool on the same host — the same login, two logins, or this machine as a
``local`` pool with this machine (over loopback sshd) as the source — from the wizard's validation through scheduled
runs, with real sshd and borg.

Why this needs its own tests: borg keeps per-client state (the security dir: where it last saw a repository id, its
key type and manifest time; the cache) under the login's home. On one host with one login, the bot's pool-side
access (the repository by path: init, list, prune) and the source's push (the same repository over ``ssh://``) were
one state seen under two locations: borg refused with exit 62 and the wizard blamed the Source step. Every borg call
now runs with a state dir of its own per host, login and repository URL (:meth:`bot.borg.repo.Repo.command`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from bot.backup.plan import pool_borg
from bot.borg import create as borg_create
from bot.borg import list as borg_list
from bot.borg.repo import STATE_ROOT, Repo, state_key
from bot.borg.runner import outcome_of
from bot.flows.wizard import create as creating
from bot.flows.wizard.services import WizardServices
from bot.flows.wizard.steps.validation import KIND_STEPS, ValidationStep, step_for
from bot.runs.execute import Executor
from bot.runs.queue import RunSpec, SqlQueue
from bot.runs.scheduler import Scheduler
from bot.runs.worker import Worker
from bot.transport import LocalTransport, SSHPool
from bot.transport.base import CommandResult
from storage.models import BackupChain, PoolKind, Repository, Run, RunKind, RunStatus, StoragePool
from tests.harness.ssh import target_of
from tests.test_wizard_step_pool_repo import DIRECTORY, TEAM, World, server_row
from tests.test_wizard_validation_create import ANSWERS

ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@dataclass
class Setup:
    world: World
    pool_repo: Any  # a function (path) → Transport the test reads the repository with (the pool's login)


def _files(host: Any) -> Path:
    www = host.workdir / "www"
    www.mkdir()
    (www / "index.html").write_text("<h1>one machine</h1>\n")
    (www / "notes.txt").write_text("same host\n")
    return www


def _services(host: Any) -> WizardServices:
    return WizardServices(pool=SSHPool([asyncssh.read_private_key(host.client_key_path)]), directory=DIRECTORY)


def _borg_for_nonroot(host: Any) -> None:
    """The venv's interpreter lives under /root (mode 700 on this machine kind): a non-root login runs the same borg
    through the system Python 3.11 and the venv's packages."""
    import borg

    site = Path(borg.__file__).parent.parent
    wrapper = host.workdir / "bin" / "borg"
    wrapper.unlink()
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={site} exec /usr/bin/python3.11 -m borg "$@"\n')
    wrapper.chmod(0o755)
    if host.ssh("borg --version", check=False).returncode != 0:
        pytest.fail("borg does not run for the non-root login through the system python3.11")


async def same_login(make_sshd: Any) -> World:
    """One sshd, one root login: the server is its own pool."""
    host = make_sshd("onebox")
    server = await server_row(host, "onebox")
    pool = await StoragePool.create(team_id=TEAM, name="onebox-disk", server=server,
                                    base_path=str(host.workdir / "repos"))  # fmt: skip
    return World(host, host, _services(host), server, server, pool, _files(host))


async def two_logins(make_sshd: Any) -> World:
    """One address, two logins: root (the source) and a non-root pool login owning the pool directory."""
    src = make_sshd("twologins")
    pool_host = make_sshd("twologins-pool", address=src.host, nonroot=True, client_key=src.client_key_path)
    _borg_for_nonroot(pool_host)
    server = await server_row(src, "twologins")
    pool_server = await server_row(pool_host, "twologins-borg")
    pool = await StoragePool.create(team_id=TEAM, name="twologins-disk", server=pool_server,
                                    base_path=str(pool_host.home / "repos"))  # fmt: skip
    assert server.host == pool_server.host and server.username != pool_server.username
    return World(src, pool_host, _services(src), server, pool_server, pool, _files(src))


async def local_pool(make_sshd: Any, tmp_path: Path) -> World:
    """This machine as the pool (``local``: the bot's own host), this machine over loopback sshd as the source."""
    host = make_sshd("thismachine")
    server = await server_row(host, "thismachine")
    pool = await StoragePool.create(team_id=TEAM, name="this-machine", kind=PoolKind.LOCAL,
                                    base_path=str(tmp_path / "pool"))  # fmt: skip
    return World(host, None, _services(host), server, server, pool, _files(host))


def reader(world: World) -> Any:
    """The pool's own view of the repository, as the bot opens it (LocalTransport for a local pool)."""
    if world.pool.kind == PoolKind.LOCAL:
        return LocalTransport()
    return world.services.pool.transport(target_of(world.pool_host))


@pytest.fixture
def bot_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The bot's own HOME (its borg state for a local pool) in the test's directory, not the machine's /root."""
    home = tmp_path / "bot-home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    return home


def wizard_answers(world: World, name: str, retention: dict[str, Any]) -> dict[str, Any]:
    repository = {"mode": "new", "name": name, "encryption": "repokey-blake2", "compression": "lz4"}
    return {**ANSWERS, "retention": retention, "pool_id": world.pool.id, "repository": repository}


async def validate_and_create(world: World, name: str, retention: dict[str, Any]) -> BackupChain:
    """The wizard's Validation step (the real test backup) must pass; then the chain is created."""
    ctx = world.ctx(**wizard_answers(world, name, retention))
    errors = await ValidationStep().submit(ctx, {})
    failed = [s for s in ctx.data["validation"]["steps"] if not s["ok"]]
    assert errors == {} and not failed, (errors, failed)
    names = [s["name"] for s in ctx.data["validation"]["steps"]]
    assert "test backup: back up files" in names and "test backup: restore files" in names
    await creating.create_chain(ctx, name=name)
    return await BackupChain.get(id=ctx.data["chain_id"])


async def final(run_id: int) -> bool:
    return (await Run.get(id=run_id)).status not in (RunStatus.QUEUED, RunStatus.RUNNING)


async def wait_for(predicate: Any, within: float = 90.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def scheduled_runs_succeed(world: World, chain: BackupChain) -> list[str]:
    """The scheduler queues the chain's due slot, the worker runs it; a second run follows. Both succeed, their
    archives are listed by the pool, and retention (keep_last 1) pruned the first one after the second."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    schedule = {**chain.schedule, "days": ALL_DAYS, "at": (now - timedelta(hours=1)).strftime("%H:%M"),
                "timezone": "UTC", "window": None}  # fmt: skip
    await BackupChain.filter(id=chain.id).update(schedule=schedule, created_at=now - timedelta(days=2))
    queue = SqlQueue()
    worker = Worker(queue, Executor(queue, world.services), poll=0.2)
    await worker.start()
    archives: list[str] = []
    try:
        scheduler = Scheduler(queue, on_enqueued=worker.wake)
        created = [r for r in await scheduler.tick() if r.kind == RunKind.BACKUP and r.chain_id == chain.id]
        assert len(created) == 1, created
        second = None
        for run in (created[0], None):
            if run is None:  # the second run: the state the first one left must work again
                run = second = await queue.enqueue(RunSpec(TEAM, chain_id=chain.id, requested_by="U1"))
                worker.wake()
            await wait_for(lambda run=run: final(run.id))
            stored = await Run.get(id=run.id)
            assert stored.status == RunStatus.SUCCEEDED, (stored.error_kind, stored.error)
            archives.append(stored.archive_name)
        assert second is not None
    finally:
        await worker.stop(grace=5)
    repository = await Repository.get(id=chain.repository_id)
    at_pool = Repo(url=repository.path, passphrase=repository.passphrase.reveal())
    listed = [
        a.name for a in await borg_list.archives(reader(world), at_pool, borg=pool_borg(world.pool, world.services))
    ]
    assert listed == [archives[1]], (listed, archives)  # keep_last 1: the first archive was pruned after the second
    stats = (await Run.get(id=second.id)).stats
    assert stats["jobs"][0]["pruned"] == [archives[0]], stats
    return archives


KEEP_ONE = {"preset": "custom", "keep_last": 1}


async def test_same_host_same_login_from_validation_through_scheduled_runs(sqlite_db: str, make_sshd: Any) -> None:
    world = await same_login(make_sshd)
    try:
        chain = await validate_and_create(world, "onebox-files-www", KEEP_ONE)
        await scheduled_runs_succeed(world, chain)
        # Two clients on one login, each with its own state: the pool side by path, the source by ssh://.
        repository = await Repository.get(id=chain.repository_id)
        root = world.src.home / STATE_ROOT
        keys = sorted(p.name for p in root.iterdir())
        assert state_key(repository.path) in keys and len(keys) == 2, keys
        assert all((root / k / "security").is_dir() and (root / k / "cache").is_dir() for k in keys)
        assert oct(root.stat().st_mode & 0o777) == "0o700" and all(
            oct((root / k).stat().st_mode & 0o777) == "0o700" for k in keys)  # fmt: skip
    finally:
        await world.services.pool.close()


async def test_same_host_two_logins_from_validation_through_scheduled_runs(sqlite_db: str, make_sshd: Any) -> None:
    world = await two_logins(make_sshd)
    try:
        chain = await validate_and_create(world, "twologins-files-www", KEEP_ONE)
        await scheduled_runs_succeed(world, chain)
        assert (world.pool_host.home / STATE_ROOT).is_dir() and (world.src.home / STATE_ROOT).is_dir()
    finally:
        await world.services.pool.close()


async def test_this_machine_as_local_pool_from_validation_through_scheduled_runs(
    sqlite_db: str, make_sshd: Any, tmp_path: Path, bot_home: Path
) -> None:
    world = await local_pool(make_sshd, tmp_path)
    try:
        chain = await validate_and_create(world, "thismachine-files-www", KEEP_ONE)
        await scheduled_runs_succeed(world, chain)
        repository = await Repository.get(id=chain.repository_id)
        assert (bot_home / STATE_ROOT / state_key(repository.path) / "security").is_dir()  # the bot's own state
        assert (world.src.home / STATE_ROOT / state_key(repository.path) / "security").is_dir()  # the source's
    finally:
        await world.services.pool.close()


async def test_a_repository_that_really_changed_fails_naming_the_repository_step(
    sqlite_db: str, make_sshd: Any
) -> None:
    """A genuinely wrong setup still fails: after validation, the repository at the path is replaced by another one
    with the same id (a copy from before): borg's replay check (exit 64) refuses, and the wizard names Repository."""
    world = await same_login(make_sshd)
    try:
        ctx = world.ctx(**wizard_answers(world, "onebox-files-www", KEEP_ONE))
        step = ValidationStep()
        assert await step.submit(ctx, {}) == {}
        path = Path(ctx.data["setup"]["path"])
        old = path.with_name(path.name + ".old")
        world.src.ssh(f"cp -a {path} {old}")  # the repository as the clients saw it now
        repo = Repo(url=str(path), passphrase=creating.reveal(ctx.data["setup"]["passphrase_token"]))
        archive = f"onebox-files-www-extra-{datetime.now(UTC):%Y%m%dT%H%M%S}"
        for _ in range(2):  # clients see a newer manifest …
            await borg_create.run(reader(world), repo, ("create", repo.archive(archive), str(world.www)))
            archive += "x"
        world.src.ssh(f"rm -rf {path} && mv {old} {path}")  # … then the old repository comes back (a replay)
        ctx.data["validation"] = None
        errors = await step.submit(ctx, {})
        failed = [s for s in ctx.data["validation"]["steps"] if not s["ok"]]
        assert failed and failed[0]["step"] == "repository", failed
        assert "exit code 64" in failed[0]["detail"] or "exit code 61" in failed[0]["detail"], failed
        assert "Repository step" in errors["validation"] and "Source step" not in errors["validation"]
        view = await step.view(ctx)
        assert ("go_to", "repository") in [(b.action, b.value) for b in view.buttons]
        assert ("go_to", "source") not in [(b.action, b.value) for b in view.buttons]
    finally:
        await world.services.pool.close()


def test_exit_62_and_repository_side_errors_name_the_repository_or_pool_step_never_source() -> None:
    """The one table: borg's failure kinds (from the exit code, or the --log-json msgid when the code is generic)
    to wizard steps."""

    def kind_of(code: int, msgid: str = "") -> str | None:
        line = f'{{"type": "log_message", "levelname": "ERROR", "msgid": "{msgid}", "message": "x"}}'
        return outcome_of(CommandResult(("borg",), code, b"", (line + "\n").encode(), None, 0.0)).kind

    assert kind_of(62) == "security" and kind_of(2, "Cache.RepositoryAccessAborted") == "security"
    assert kind_of(2, "Repository.DoesNotExist") == "repo_missing" and kind_of(2, "PassphraseWrong") == "passphrase"
    assert kind_of(2, "Repository.StorageQuotaExceeded") == "disk_full" and kind_of(2, "Whatever") == "error"
    for code, step in ((62, "repository"), (64, "repository"), (13, "repository"), (52, "repository"),
                       (83, "repository"), (14, "pool"), (21, "pool"), (80, "pool")):  # fmt: skip
        assert step_for("back up files", "borg failed", kind_of(code)) == step, code
    assert step_for("back up files", "", "borg_missing") == "server"
    assert step_for("open the repository on the pool", "", "borg_missing") == "pool"
    assert step_for("back up files", "", "source") == "source" and KIND_STEPS["security"] == "repository"
    # Without a kind, borg's own words still point away from Source.
    assert step_for("back up files", "borg failed (exit code 2): Repository access aborted.") == "repository"


async def test_same_host_chain_end_to_end_from_the_wizard_to_the_report_in_its_channel(
    sqlite_db: str, make_sshd: Any, tmp_path: Path
) -> None:
    """A person plays the wizard in Slack (the emulator) for a server that is also its own pool (one login); the
    chain's scheduled run backs up, and the success report arrives in the channel the wizard was started from."""
    from bot.alerts import AlertBus
    from bot.flows.wizard.controller import WizardController
    from bot.flows.wizard.registry import build_steps
    from bot.slack.emulator import DEFAULT_CHANNEL
    from tests.test_reports import start_env, text_of
    from tests.test_wizard_acceptance import BORG, Person, finish

    host = make_sshd("e2ebox")
    server = await server_row(host, "e2ebox")
    await StoragePool.create(team_id=TEAM, name="Same box", server=server, base_path=str(host.workdir / "repos"))
    data = _files(host)
    services = WizardServices(pool=SSHPool([asyncssh.read_private_key(host.client_key_path)]),
                              bot_public_key=host.client_public_key, borg=BORG)  # fmt: skip
    bus = AlertBus()
    try:
        async for env in start_env(tmp_path, wizard=WizardController(build_steps, services), bus=bus):
            person = Person(env.driver, env.slack)
            await person.driver.slash_command("/backup", "new")
            await person.driver.wait_for_view(callback_id="wizard")
            await person.settle("Step 1")
            await person.next("Step 2", host=host.host, port=str(host.port), username="root", name="e2ebox")
            await person.next("Step 3", backup_type="files")
            await person.next("Snapshot", paths=str(data))
            await finish(person)  # … Validation (the real test backup on the same host) passes, Review, created
            chain = await BackupChain.get(team_id=TEAM)
            assert chain.notify_channel == DEFAULT_CHANNEL
            repository = await Repository.get(id=chain.repository_id).prefetch_related("pool")
            assert repository.pool.server_id == server.id == (await chain.sources.all())[0].server_id

            now = datetime.now(UTC).replace(second=0, microsecond=0)
            schedule = {**chain.schedule, "days": ALL_DAYS, "at": (now - timedelta(hours=1)).strftime("%H:%M"),
                        "timezone": "UTC", "window": None}  # fmt: skip
            await BackupChain.filter(id=chain.id).update(schedule=schedule, created_at=now - timedelta(days=2))
            queue = SqlQueue()
            worker = Worker(queue, Executor(queue, services, alerts=bus), alerts=bus, poll=0.2)
            await worker.start()
            try:
                scheduler = Scheduler(queue, alerts=bus, on_enqueued=worker.wake)
                [due] = [r for r in await scheduler.tick() if r.kind == RunKind.BACKUP]
                await wait_for(lambda due=due: final(due.id))
                stored = await Run.get(id=due.id)
                assert stored.status == RunStatus.SUCCEEDED, (stored.error_kind, stored.error)
            finally:
                await worker.stop(grace=5)
            at_pool = Repo(url=repository.path, passphrase=repository.passphrase.reveal())
            listed = [a.name for a in await borg_list.archives(reader_of(services, host), at_pool)]
            assert listed == [stored.archive_name]
            await env.outbox.wait_delivered()
            reports = [text_of(m) for m in env.slack.messages(DEFAULT_CHANNEL)]
            assert any(f"Backup of {chain.name} succeeded" in r for r in reports), reports
    finally:
        await services.pool.close()


def reader_of(services: WizardServices, host: Any) -> Any:
    return services.pool.transport(target_of(host))
