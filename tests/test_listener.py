"""A listener that stays up (issue 13, item 4): 2,000 idle connections that send nothing, from a separate process
and many client addresses, against the bot's HTTP listener in a process held to a soft limit of 1,024 file
descriptors (the limit the original flood exhausted). ``/healthz`` still answers, and the process still opens SSH
and PostgreSQL connections. Also: the header-read deadline, the per-client cap, Socket Mode's loopback default, the
unit's LimitNOFILE.
"""

from __future__ import annotations

import asyncio
import configparser
import json
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import asyncssh
import pytest
from aiohttp import web

from bot.config import load_settings
from bot.slack.app import serve_http
from bot.slack.listener import ListenerLimits, open_fds

ROOT = Path(__file__).resolve().parent.parent
FLOOD = 2000

# A flood of idle connections from 127.0.0.2 … 127.0.0.41 (50 each) that send nothing and hold what they get.
FLOODER = r"""
import asyncio, json, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
port, total, sources = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

async def one(i):
    try:
        return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port,
                                      local_addr=(f"127.0.0.{2 + i % sources}", 0)), 5)
    except Exception:
        return None

async def main():
    held = [c for c in await asyncio.gather(*(one(i) for i in range(total))) if c]
    print(json.dumps({"connected": len(held)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await asyncio.sleep(0)
    alive = 0
    for reader, writer in held:
        try:
            data = await asyncio.wait_for(reader.read(1), 0.001)
            alive += 0 if data == b"" else 1
        except asyncio.TimeoutError:
            alive += 1
        except OSError:
            pass
    print(json.dumps({"alive": alive}), flush=True)

asyncio.run(main())
"""


def _flood(port: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", FLOODER, str(port), str(FLOOD), "40"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip


@pytest.fixture
def low_fd_limit() -> Iterator[int]:
    """This process at the common default soft limit of 1,024 descriptors for the test, as the bot was."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        yield min(1024, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
async def listener(low_fd_limit: int) -> AsyncIterator[tuple[web.AppRunner, int]]:
    runner = await serve_http(None, "127.0.0.1", 0, limits=ListenerLimits())  # the defaults the bot runs with
    try:
        yield runner, runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def _healthz(port: int) -> tuple[int, float]:
    start = time.monotonic()
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as response:
        await response.read()
        return response.status, time.monotonic() - start


async def test_two_thousand_idle_connections_leave_healthz_ssh_and_the_database_working(
    listener, sshd_host, postgres_db, tmp_path: Path
) -> None:
    runner, port = listener
    flooder = _flood(port)
    try:
        connected = json.loads(await asyncio.to_thread(flooder.stdout.readline))["connected"]
        await asyncio.sleep(0.5)  # let the listener accept what the kernel queued
        admission = runner.admission
        status, latency = await _healthz(port)
        assert status == 200
        async with asyncssh.connect(sshd_host.host, sshd_host.port, username=sshd_host.user,
                                    client_keys=[str(sshd_host.client_key_path)],
                                    known_hosts=str(sshd_host.known_hosts_path), agent_path=None,
                                    config=[]) as ssh:  # fmt: skip
            assert (await ssh.run("echo ok", check=True)).stdout == "ok\n"
        conn = await asyncpg.connect(host=postgres_db.host, port=postgres_db.port, user=postgres_db.user,
                                     password=postgres_db.password, database=postgres_db.name)  # fmt: skip
        try:
            assert await conn.fetchval("select 1") == 1
        finally:
            await conn.close()
        (tmp_path / "still-writable").write_text("a file still opens")
        held = admission.total
        assert held <= ListenerLimits().max_connections + 1
        assert admission.refused + admission.evicted > 0
        flooder.stdin.write("\n")
        flooder.stdin.flush()
        alive = json.loads(await asyncio.to_thread(flooder.stdout.readline))["alive"]
        print(f"\nidle flood: {FLOOD} attempted, {connected} connected at TCP level (some only in the kernel's queue), "
              f"{held} held by the listener, {alive} not yet closed at the flooder, {admission.refused} refused, "
              f"{admission.evicted} idle closed; "
              f"/healthz {status} in {latency * 1000:.1f} ms; open descriptors {open_fds()}")  # fmt: skip
    finally:
        flooder.kill()
        flooder.wait()


async def test_a_connection_that_sends_no_request_head_is_closed_at_the_deadline(low_fd_limit: int) -> None:
    runner = await serve_http(None, "127.0.0.1", 0, limits=ListenerLimits(header_timeout=0.5))
    try:
        port = runner.addresses[0][1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finishes the head
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, nothing answered
        await asyncio.sleep(0.1)
        assert runner.admission.total == 0
        writer.close()
    finally:
        await runner.cleanup()


async def test_one_client_cannot_take_more_than_its_share(low_fd_limit: int) -> None:
    runner = await serve_http(None, "127.0.0.1", 0, limits=ListenerLimits(max_per_client=5))
    try:
        port = runner.addresses[0][1]
        mine = [await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.9", 0)) for _ in range(8)]
        await asyncio.sleep(0.2)
        assert runner.admission.total == 5 and runner.admission.refused == 3
        assert (await _healthz(port))[0] == 200  # another address is unaffected
        for _, writer in mine:
            writer.close()
    finally:
        await runner.cleanup()


def test_socket_mode_listens_on_loopback_by_default(tmp_path: Path) -> None:
    socket_mode = load_settings(tmp_path / "none.env", SLACK_APP_TOKEN="xapp-1-x")
    http_mode = load_settings(tmp_path / "none.env")
    chosen = load_settings(tmp_path / "none.env", SLACK_APP_TOKEN="xapp-1-x", BACKUPBOT_HTTP_HOST="0.0.0.0")
    assert (socket_mode.listen_host, http_mode.listen_host, chosen.listen_host) == ("127.0.0.1", "0.0.0.0", "0.0.0.0")


def test_the_unit_raises_the_descriptor_limit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string((ROOT / "manifests" / "backup-bot.service").read_text())
    assert int(unit["Service"]["LimitNOFILE"]) >= 8192
