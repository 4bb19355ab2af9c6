"""Restoring files through the service and the queue, over real sshd with real borg: a whole archive and a single
path (special names, modes, symbolic and hard links) into a new directory on the source, verified (count, bytes,
checksums of a sample); the refusals, each a sentence before anything is written; a restore whose bot dies half-way
leaves a marked partial target, is reported interrupted (never success), and its retry resumes into it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.access import Actor, Forbidden, Refused
from bot.alerts import AlertBus
from bot.backup import restore as files
from bot.runs.execute import Executor
from bot.runs.queue import RunSpec, SqlQueue
from bot.runs.worker import Worker
from bot.services import restores
from bot.services.restores import RestoreRequest
from storage.models import BackupChain, Role, RoleGrant, Run, RunKind, RunStatus, Server
from storage.tenancy import Tenant
from tests.harness.ssh import target_of
from tests.test_run_worker import make_chain, wait_for
from tests.test_wizard_step_pool_repo import TEAM, World, build_world

ADMIN = "U1"


@pytest.fixture
async def world(sqlite_db: str, make_sshd: Any) -> AsyncIterator[World]:
    w = await build_world(make_sshd, "rs")
    yield w
    await w.services.pool.close()


def populate(www: Path) -> None:
    """Names and kinds a restore must bring back exactly."""
    (www / "-dash").write_text("starts with a dash\n")
    (www / "new\nline").write_text("a line break in the name\n")
    (www / "sp ace ünï $(x)").write_text("spaces, unicode, shell syntax\n")
    secret = www / "private.key"
    secret.write_text("0640\n")
    secret.chmod(0o640)
    tool = www / "run.sh"
    tool.write_text("#!/bin/sh\necho ok\n")
    tool.chmod(0o755)
    (www / "link-to-index").symlink_to("index.html")
    os.link(www / "index.html", www / "img" / "hard-index.html")
    (www / "empty").mkdir()
    (www / "big.bin").write_bytes(os.urandom(300_000))


def actor(user: str = ADMIN, *, admin: bool = True) -> Actor:
    return Actor(team_id=TEAM, user_id=user, is_admin=admin, via="test")


async def backed_up(world: World) -> tuple[BackupChain, str]:
    """A files chain of ``world.www`` with one verified archive (its name returned)."""
    populate(world.www)
    chain = await make_chain(world)
    queue = SqlQueue()
    run = await queue.enqueue(RunSpec(TEAM, chain_id=chain.id))
    claimed = await queue.claim("t")
    assert claimed is not None and claimed.id == run.id
    done = await Executor(queue, world.services)(claimed)
    assert done.status == RunStatus.SUCCEEDED, done.error
    return chain, done.archive_name


async def execute_next(world: World, alerts: AlertBus | None = None) -> Run:
    queue = SqlQueue()
    claimed = await queue.claim("t")
    assert claimed is not None and claimed.kind == RunKind.RESTORE
    return await Executor(queue, world.services, alerts=alerts)(claimed)


def tree(root: Path) -> dict[str, tuple]:
    """Every entry below ``root``: kind, mode, content or link target (the marker left out)."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.name == files.MARKER:
            continue
        info = path.lstat()
        rel = str(path.relative_to(root))
        if stat.S_ISLNK(info.st_mode):
            found[rel] = ("l", os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            found[rel] = ("d", stat.S_IMODE(info.st_mode))
        else:
            found[rel] = ("f", stat.S_IMODE(info.st_mode), path.read_bytes(), info.st_nlink)
    return found


async def test_whole_archive_and_one_path_restored_into_new_directories_and_verified(world: World) -> None:
    chain, archive = await backed_up(world)
    target = world.src.workdir / "restored-all"
    asked = await restores.request_restore(actor(), RestoreRequest(chain=chain.name, archive=archive,
                                                                   target=str(target), server="web1"),
                                           services=world.services)  # fmt: skip
    assert asked.spec.via == "source" and asked.spec.what == "files" and "queued" in asked.sentence
    run = await Run.get(id=asked.run_id)
    assert run.kind == RunKind.RESTORE and run.status == RunStatus.QUEUED
    assert run.lock_key == f"repo:{chain.repository_id}"  # the repository's lock, as backups
    assert not target.exists()  # nothing written before the queue runs it
    done = await execute_next(world)
    assert done.status == RunStatus.SUCCEEDED, done.error
    restored = target / str(world.www).lstrip("/")
    assert tree(restored) == tree(world.www)
    assert not (target / files.MARKER).exists()
    checked = done.stats["restore"]["files"]
    expected_files = sum(1 for p in world.www.rglob("*") if p.is_file() and not p.is_symlink())
    assert checked["ok"] and checked["files"] == checked["expected_files"] == expected_files
    assert checked["bytes"] == checked["expected_bytes"] and checked["links"] == 1
    assert checked["sampled"] >= 3 and checked["checksums_ok"] == checked["sampled"]
    stored = await Run.get(id=done.id)
    assert stored.spec["result"]["files"]["ok"] is True

    one = world.src.workdir / "restored-one"
    wanted = str(world.www / "new\nline")
    asked = await restores.request_restore(actor(), RestoreRequest(chain=chain.id, archive=archive, target=str(one),
                                                                   paths=(wanted,)), services=world.services)
    done = await execute_next(world)
    assert done.status == RunStatus.SUCCEEDED, done.error
    only = one / wanted.lstrip("/")
    assert only.read_text() == "a line break in the name\n"
    assert [p for p in one.rglob("*") if p.is_file()] == [only]
    assert done.stats["restore"]["files"]["files"] == 1


async def test_refusals_are_sentences_before_anything_is_written(world: World) -> None:
    chain, archive = await backed_up(world)
    services = world.services

    async def refused(request: RestoreRequest, who: Actor | None = None) -> str:
        with pytest.raises(Refused) as caught:
            await restores.request_restore(who or actor(), request, services=services)
        return caught.value.sentence

    assert "never into / itself" in await refused(RestoreRequest(chain.name, archive, "/"))
    assert "absolute" in await refused(RestoreRequest(chain.name, archive, "restore-here"))
    busy = world.src.workdir / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("live data")
    assert "not empty" in await refused(RestoreRequest(chain.name, archive, str(busy)))
    assert "not in the repository" in await refused(RestoreRequest(chain.name, archive + "x", str(busy / "n")))
    assert "not in the archive" in await refused(RestoreRequest(chain.name, archive, str(busy / "n"),
                                                                paths=("/no/such/path",)))
    # Over live data only when an admin types the target's name.
    assert "type its name" in await refused(RestoreRequest(chain.name, archive, str(busy), overwrite=True))
    await Tenant(TEAM).create(RoleGrant, role=Role.OPERATOR, subject="U2", server=world.server)
    assert "Only admins" in await refused(RestoreRequest(chain.name, archive, str(busy), overwrite=True,
                                                         confirm=str(busy)), actor("U2", admin=False))
    # A repository being pruned.
    prune = await SqlQueue().enqueue(RunSpec(TEAM, kind=RunKind.PRUNE, repository_id=chain.repository_id))
    assert "being pruned" in await refused(RestoreRequest(chain.name, archive, str(busy / "n")))
    await Run.filter(id=prune.id).delete()
    # A server that is not a source of the chain nor its pool's host cannot read the repository.
    await Server.create(team_id=TEAM, name="elsewhere", host="192.0.2.9")
    assert "cannot read the repository" in await refused(RestoreRequest(chain.name, archive, "/tmp/x",
                                                                        server="elsewhere"))
    # No borg on the target server.
    (world.src.workdir / "bin" / "borg").unlink()
    assert "has no working borg" in await refused(RestoreRequest(chain.name, archive, str(busy / "n")))
    # Not enough space: the check on a real host, with more than any disk has.
    transport = services.pool.transport(target_of(world.src))
    problem = await files.space_problem(transport, str(busy / "n"), 2**60, "web1")
    assert problem and "free" in problem and "needs" in problem
    assert await files.space_problem(transport, str(busy / "n"), 1000, "web1") is None
    assert (busy / "keep.txt").read_text() == "live data" and sorted(p.name for p in busy.iterdir()) == ["keep.txt"]
    assert await Run.filter(kind=RunKind.RESTORE).count() == 0


async def test_who_may_restore_admins_and_operators_of_the_chains_server(world: World) -> None:
    chain, archive = await backed_up(world)
    request = RestoreRequest(chain.name, archive, str(world.src.workdir / "by-operator"))
    outsider = actor("U7", admin=False)
    with pytest.raises(Forbidden, match="not allowed to restore"):
        await restores.prepare(outsider, request, services=world.services)
    await Tenant(TEAM).create(RoleGrant, role=Role.OPERATOR, subject="U7", server=world.server,
                              paths=[str(world.src.workdir / "by-operator")])  # fmt: skip
    operator = actor("U7", admin=False)
    _, spec = await restores.prepare(operator, request, services=world.services)
    assert spec.server_id == world.server.id
    with pytest.raises(Forbidden, match="outside what you may"):
        await restores.prepare(operator, dataclasses.replace(request, target=str(world.src.workdir / "other")),
                               services=world.services)  # fmt: skip
    assert [c.name for c in await restores.restorable_chains(operator)] == [chain.name]


async def test_a_restore_cut_by_a_crash_is_marked_partial_reported_interrupted_and_resumed(world: World,
                                                                                         tmp_path: Path) -> None:
    chain, archive = await backed_up(world)
    slow = tmp_path / "slow-borg"
    slow.write_text('#!/bin/sh\ncase " $* " in *" extract "*) sleep 4;; esac\nexec borg "$@"\n')
    slow.chmod(0o755)
    world.services = dataclasses.replace(world.services, borg=str(slow))
    target = world.src.workdir / "restored-crash"
    asked = await restores.request_restore(actor(), RestoreRequest(chain.name, archive, str(target)),
                                           services=world.services)  # fmt: skip
    queue = SqlQueue()
    claimed = await queue.claim("dying")
    task = asyncio.create_task(Executor(queue, world.services)(claimed))
    await wait_for(lambda: asyncio.sleep(0, (target / files.MARKER).exists()), within=30)
    task.cancel()  # the process dies: nothing stores a result, the row stays running
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert (await Run.get(id=asked.run_id)).status == RunStatus.RUNNING
    marker = (target / files.MARKER).read_text()
    assert marker.startswith(asked.spec.token) and "Incomplete restore" in marker

    alerts, seen = AlertBus(), []
    alerts.subscribe(seen.append)
    worker = Worker(queue, Executor(queue, world.services, alerts=alerts), alerts=alerts, poll=0.2)
    await worker.start()  # the restarted bot: recovers the run, reports it, runs the retry
    try:
        await wait_for(lambda: Run.filter(kind=RunKind.RESTORE, status=RunStatus.SUCCEEDED).exists(), within=90)
    finally:
        await worker.stop()
    crashed = await Run.get(id=asked.run_id)
    assert crashed.status == RunStatus.INTERRUPTED
    kinds = [(a.kind, a.details["run_id"]) for a in seen if a.kind.startswith("run_")]
    assert kinds[0] == ("run_interrupted", crashed.id) and ("run_succeeded", crashed.id) not in kinds
    retry = await Run.get(kind=RunKind.RESTORE, status=RunStatus.SUCCEEDED)
    assert retry.spec["token"] == asked.spec.token and retry.id > crashed.id
    assert not (target / files.MARKER).exists()
    assert tree(target / str(world.www).lstrip("/")) == tree(world.www)


async def test_the_cli_restores_and_waits_for_the_checked_result(world: World, capsys: pytest.CaptureFixture) -> None:
    import argparse
    import json

    from bot.cli import restore as cli_restore

    chain, archive = await backed_up(world)
    parser = argparse.ArgumentParser()
    cli_restore.add_parser(parser.add_subparsers())
    target = world.src.workdir / "by-cli"
    args = parser.parse_args(["restore", "--team", TEAM, chain.name, archive, "--to", str(target), "--path",
                              str(world.www / "img"), "--wait", "--json"])  # fmt: skip
    queue = SqlQueue()
    worker = Worker(queue, Executor(queue, world.services), poll=0.2)
    await worker.start()
    try:
        code = await cli_restore.act(Actor.operator(TEAM), args, world.services)
    finally:
        await worker.stop()
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and out["status"] == "succeeded" and out["result"]["files"]["ok"]
    assert (target / str(world.www).lstrip("/") / "img" / "logo.svg").read_text() == "<svg/>\n"
    bad = parser.parse_args(["restore", "--team", TEAM, chain.name, archive, "--to", "/"])
    with pytest.raises(Refused, match="never into /"):
        await cli_restore.act(Actor.operator(TEAM), bad, world.services)
