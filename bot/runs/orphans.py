"""What a run left running on servers when the process executing it died, and stopping it.

Closing an SSH connection does not stop a remote command, so when the bot (or a worker) is killed in the middle of
a backup, ``borg create`` on the source goes on alone: it may still commit the interrupted attempt's archive and
holds the repository's lock against the retry. Every command a run starts under the remote supervisor announces
its pid (:mod:`bot.transport.command`); :func:`recording` stores each one on the Run row as it starts, and when a
run is found interrupted after a crash, :func:`stop_left_running` stops what is still running — only a process
whose command line still ends with the recorded arguments (an archive name is unique to its attempt), so a pid
reused by anything else is left alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

from bot.backup.plan import source_transport
from bot.transport.base import REMOTE_STARTED, RemoteProcess, TransportError
from storage.models import Run, Server

log = logging.getLogger(__name__)
KEEP = 20  # the newest commands a run remembers (a chain's jobs, hooks and maintenance)


@contextlib.contextmanager
def recording(run: Run) -> Iterator[None]:
    """While the block runs (and in tasks it starts), remote commands are recorded on ``run`` as they start."""

    async def started(process: RemoteProcess) -> None:
        run.remote = [*(run.remote or []), dataclasses.asdict(process)][-KEEP:]  # type: ignore[attr-defined]
        await Run.filter(id=run.id).update(remote=run.remote)  # type: ignore[attr-defined]

    token = REMOTE_STARTED.set(started)
    try:
        yield
    finally:
        REMOTE_STARTED.reset(token)


async def stop_left_running(run: Run, services: Any) -> list[str]:
    """Stop the recorded commands of ``run`` that still run; what was done, a sentence per command."""
    done: list[str] = []
    for entry in run.remote or []:  # type: ignore[attr-defined]
        try:
            outcome = await _stop(run, RemoteProcess(**{**entry, "argv": tuple(entry["argv"])}), services)
        except (TransportError, TypeError, KeyError) as exc:
            outcome = f"could not check a command of run {run.id}: {exc}"
        if outcome:
            log.warning("%s", outcome)
            done.append(outcome)
    return done


async def _stop(run: Run, process: RemoteProcess, services: Any) -> str | None:
    server = await Server.get_or_none(team_id=run.team_id, host=process.host, port=process.port,
                                      username=process.user)  # fmt: skip
    if server is None:
        return None
    transport = source_transport(server, services)
    found = await transport.run(["cat", f"/proc/{process.pid}/cmdline"], timeout=30)
    if not found.ok:
        return None  # gone: it ended on its own
    running = found.stdout.split(b"\0")
    if running and running[-1] == b"":
        running.pop()
    wanted = [arg.encode() for arg in process.argv]
    if not wanted or running[-len(wanted) :] != wanted:
        return None  # the pid now belongs to something else
    stopped = await transport.run(["kill", "-TERM", str(process.pid)], sudo=process.sudo, timeout=30)
    where = f"{process.user}@{process.host}:{process.port}"
    if stopped.ok:
        return f"run {run.id}: stopped `{process.argv[0]}` (pid {process.pid}) left running on {where}"
    return f"run {run.id}: could not stop pid {process.pid} on {where}: {stopped.err or stopped.exit_status}"
