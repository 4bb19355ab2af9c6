"""Stopping what an interrupted run left running on a server (bot.runs.orphans), over real sshd: a recorded command
that still runs is stopped; a pid now running something else, a process that ended, and an unknown server are left
alone. The whole path (record at start, crash, stop on restart) is in tests/test_run_crash.py."""

from __future__ import annotations

import asyncio

from bot.runs import orphans
from bot.transport.base import REMOTE_STARTED
from storage.models import Run, RunKind
from tests.test_run_worker import world  # noqa: F401 - the fixture
from tests.test_wizard_step_pool_repo import TEAM


def _entry(server, pid: int, argv: tuple[str, ...]) -> dict:
    return {"host": server.host, "port": server.port, "user": server.username, "pid": pid, "argv": list(argv),
            "sudo": False}  # fmt: skip


async def test_only_the_recorded_command_still_running_is_stopped(world) -> None:  # noqa: F811
    # The sshd hosts are this machine: a server's process is ours to start and watch.
    mine = await asyncio.create_subprocess_exec("sleep", "301")
    other = await asyncio.create_subprocess_exec("sleep", "302")
    ended = await asyncio.create_subprocess_exec("true")
    await ended.wait()
    try:
        run = await Run.create(team_id=TEAM, kind=RunKind.BACKUP, remote=[
            _entry(world.server, mine.pid, ("sleep", "301")),
            _entry(world.server, other.pid, ("sleep", "999")),  # pid reused by something else
            _entry(world.server, ended.pid, ("true",)),
            {**_entry(world.server, other.pid, ("sleep", "302")), "port": 1},  # no such server
        ])  # fmt: skip
        done = await orphans.stop_left_running(await Run.get(id=run.id), world.services)
        assert await asyncio.wait_for(mine.wait(), 10) == -15  # SIGTERM
        assert other.returncode is None
        assert len(done) == 1 and f"pid {mine.pid}" in done[0] and "stopped `sleep`" in done[0]
    finally:
        for process in (mine, other):
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_commands_started_within_recording_are_stored_on_the_run(world) -> None:  # noqa: F811
    run = await Run.create(team_id=TEAM, kind=RunKind.BACKUP)
    transport = orphans.source_transport(world.server, world.services)
    with orphans.recording(run):
        assert REMOTE_STARTED.get() is not None
        result = await transport.run(["sh", "-c", "echo $$ started"], timeout=30)
        await asyncio.create_task(transport.run(["true"], timeout=30))  # tasks started inside are recorded too
    await transport.run(["echo", "outside"], timeout=30)
    assert REMOTE_STARTED.get() is None and result.ok
    stored = (await Run.get(id=run.id)).remote
    assert [e["argv"] for e in stored] == [["sh", "-c", "echo $$ started"], ["true"]]
    assert all(e["host"] == world.server.host and e["port"] == world.server.port and e["pid"] > 1 for e in stored)
