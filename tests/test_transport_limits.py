"""A fair, bounded SSH pool and bounded output, against real sshd (legitimate servers) and hostile SSH servers.

The hostile servers (tests/harness/replay_sshd.py, asyncssh's server side) accept the bot under any login name and
never finish a command, which is what a member's own server can do. The legitimate ones are real OpenSSH.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncssh
import pytest

from bot.probes.base import ProbeContext
from bot.transport import LocalTransport, PoolBusy, SSHPool, SSHTarget, probe_output
from bot.transport.capture import MIB
from tests.harness.replay_sshd import ReplayServers, replay_servers

ROOT = Path(__file__).resolve().parent.parent


def legit_target(host, workspace: str | None = None) -> SSHTarget:
    return SSHTarget(host.host, host.port, host.user, host.host_public_key, workspace)


def hostile_targets(servers: ReplayServers, logins: int, workspace: str, ports: int = 1) -> list[SSHTarget]:
    return [SSHTarget(servers.host, servers.ports[i % ports], f"intruder{i}", servers.host_key, workspace)
            for i in range(logins)]  # fmt: skip


def loop_time() -> float:
    return asyncio.get_running_loop().time()


async def until(condition: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    """Wait for ``condition`` (a state the test drives towards, not a timing): fail with ``what`` if never reached."""
    for _ in range(int(limit / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached: {what}")


async def hold(pool: SSHPool, targets: list[SSHTarget]) -> list[asyncio.Task]:
    """Start a never-ending command on each hostile target (each login needs its own connection)."""
    return [asyncio.ensure_future(pool.transport(t).run(["sleep", "infinity"])) for t in targets]


async def stop(tasks: list[asyncio.Task]) -> list[BaseException | object]:
    for task in tasks:
        task.cancel()
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_hostile_logins_on_one_server_leave_the_pool_to_others(make_sshd) -> None:
    """70 login names on one hostile server hold at most its server share; a legitimate server's command, in another
    workspace and in the hostile member's own, starts while all those slots are held and 66 logins still wait."""
    legit = make_sshd("legit")
    pool = SSHPool([asyncssh.read_private_key(legit.client_key_path)], max_connections=64, slot_wait=120)
    try:
        async with replay_servers(1) as hostile:
            tasks = await hold(pool, hostile_targets(hostile, 70, "T-HOSTILE"))
            share = pool.limits.server_share
            await until(lambda: hostile.running == share, f"{share} hostile commands running")
            started = loop_time()
            other = await pool.transport(legit_target(legit, "T-LEGIT")).run(["hostname"], timeout=30)
            own = await pool.transport(legit_target(legit, "T-HOSTILE")).run(["hostname"], timeout=30)
            took = loop_time() - started  # printed for the closing note, never asserted
            assert other.ok and own.ok and other.out.strip() == "legit"
            # It did not wait for them: every hostile slot is still held, the other logins still wait.
            assert hostile.running == share and sum(not t.done() for t in tasks) == 70
            assert pool.held()[("T-HOSTILE", hostile.host, hostile.ports[0])] == share
            assert len(hostile.logins) == share  # more login names did not enlarge the share
            print(f"\nhostile: 70 logins, {share} connections held, 66 waiting; two legitimate commands (new "
                  f"connections, two workspaces) took {took * 1000:.0f} ms meanwhile")
            await stop(tasks)
    finally:
        await pool.close()


async def test_a_full_share_fails_with_a_sentence_after_the_bounded_wait(make_sshd) -> None:
    legit = make_sshd("bounded")
    pool = SSHPool([asyncssh.read_private_key(legit.client_key_path)], server_share=2, slot_wait=0.5)
    try:
        async with replay_servers(1) as hostile:
            tasks = await hold(pool, hostile_targets(hostile, 3, "T-HOSTILE"))
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED, timeout=60)
            error = next(iter(done)).exception()
            assert isinstance(error, PoolBusy) and error.transient
            assert "per-server share" in str(error) and "more login names on one server do not add slots" in str(error)
            assert hostile.running == 2
            await stop(tasks)
    finally:
        await pool.close()


async def test_a_workspace_cannot_take_the_whole_pool(make_sshd) -> None:
    """Workspace A's servers (3 addresses, 2 logins each) get its share (3 of 4); workspace B still connects."""
    legit = make_sshd("workspace-b")
    pool = SSHPool([asyncssh.read_private_key(legit.client_key_path)], max_connections=4, slot_wait=0.5)
    assert pool.limits.workspace_share == 3
    try:
        async with replay_servers(3) as hostile:
            tasks = await hold(pool, hostile_targets(hostile, 6, "T-A", ports=3))
            await until(lambda: hostile.running == 3 and sum(t.done() for t in tasks) == 3, "A at its share")
            errors = [t.exception() for t in tasks if t.done()]
            assert all(isinstance(e, PoolBusy) and "share of the bot's pool" in str(e) for e in errors), errors
            result = await pool.transport(legit_target(legit, "T-B")).run(["hostname"], timeout=30)
            assert result.ok and result.out.strip() == "workspace-b"
            await stop(tasks)
    finally:
        await pool.close()


async def test_the_pool_cap_is_a_bounded_wait_and_idle_connections_make_room(make_sshd) -> None:
    one = make_sshd("cap-one")
    two = make_sshd("cap-two", client_key=one.client_key_path)
    pool = SSHPool([asyncssh.read_private_key(one.client_key_path)], max_connections=1, slot_wait=0.5)
    try:
        assert (await pool.transport(legit_target(one)).run(["hostname"])).out.strip() == "cap-one"
        # The only slot is idle: the next server's connection closes it rather than waiting.
        assert (await pool.transport(legit_target(two)).run(["hostname"])).out.strip() == "cap-two"
        assert list(pool.held()) == [(None, two.host, two.port)]
        busy = asyncio.ensure_future(pool.transport(legit_target(two)).run(["sleep", "30"]))
        await until(lambda: any(e.users for e in pool._entries.values()), "the slot in use")
        with pytest.raises(PoolBusy, match="all 1 SSH connections of the bot"):
            await pool.transport(legit_target(one)).run(["hostname"])
        await stop([busy])
    finally:
        await pool.close()


async def test_idle_connections_are_closed(make_sshd) -> None:
    host = make_sshd("idle")
    pool = SSHPool([asyncssh.read_private_key(host.client_key_path)], idle_timeout=0.3)
    try:
        transport = pool.transport(legit_target(host))
        assert (await transport.run(["true"])).ok
        entry = next(iter(pool._entries.values()))
        await until(lambda: not pool._entries and entry.conn.is_closed(), "the idle connection closed")
        assert pool.held() == {}
        assert (await transport.run(["true"])).ok  # and a new one opens when needed
    finally:
        await pool.close()


async def test_output_past_the_limit_stops_the_command_and_says_so(make_sshd) -> None:
    host = make_sshd("flood")
    pool = SSHPool([asyncssh.read_private_key(host.client_key_path)], output_limit=MIB, probe_output_limit=MIB // 4)
    try:
        transport = pool.transport(legit_target(host))
        fits = await transport.run(["head", "-c", str(MIB), "/dev/zero"])
        assert fits.ok and len(fits.stdout) == MIB and fits.overflow is None
        marker = "flood-marker-7361"
        flood = await transport.run(["sh", "-c", f"yes {marker}"], timeout=60)
        assert not flood.ok and len(flood.stdout) == MIB and flood.stdout.startswith(marker.encode())
        assert "printed more than 1 MiB on stdout" in flood.describe_failure()
        assert flood.err.rstrip().endswith("and was stopped.")
        on_stderr = await transport.run(["sh", "-c", "head -c 3000000 /dev/zero >&2"], timeout=60)
        assert on_stderr.overflow is not None and "on stderr" in on_stderr.overflow
        with probe_output():
            probe = await transport.run(["head", "-c", str(MIB), "/dev/zero"])
        assert probe.overflow is not None and len(probe.stdout) == MIB // 4
        check = ["sh", "-c", f"pgrep -f 'yes {marker[:-1]}[{marker[-1]}]' || true"]  # [x]: not this sh itself
        await until_async(lambda: transport.run(check), lambda r: r.out.strip() == "", "the flooding command stopped")
    finally:
        await pool.close()


async def until_async(run: Callable[[], Awaitable], good: Callable, what: str) -> None:
    for _ in range(100):
        if good(await run()):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never reached: {what}")


async def test_streamed_stderr_is_not_a_reason_to_stop_but_is_kept_bounded(make_sshd) -> None:
    """A long borg run's progress lines all reach the handler; only the last ``output_limit`` bytes are kept."""
    host = make_sshd("progress")
    pool = SSHPool([asyncssh.read_private_key(host.client_key_path)], output_limit=64 * 1024)
    script = 'i=0; while [ $i -lt 5000 ]; do echo "progress line $i of a long run......" >&2; i=$((i+1)); done; echo ok'
    lines: list[str] = []
    try:
        result = await pool.transport(legit_target(host)).run(["sh", "-c", script], timeout=60, on_stderr=lines.append)
        assert result.ok and result.out == "ok\n"
        assert [line for line in lines if line.startswith("progress")] == [
            f"progress line {i} of a long run......" for i in range(5000)
        ]
        assert len(result.stderr) <= 64 * 1024 and result.err.endswith("progress line 4999 of a long run......\n")
    finally:
        await pool.close()


async def test_local_commands_have_the_same_limits(tmp_path: Path) -> None:
    local = LocalTransport(output_limit=MIB, probe_output_limit=MIB // 4)
    fits = await local.run(["head", "-c", str(MIB), "/dev/zero"])
    assert fits.ok and len(fits.stdout) == MIB
    flood = await local.run(["yes"], timeout=30)
    assert flood.overflow is not None and "printed more than 1 MiB on stdout" in flood.overflow
    ctx = ProbeContext(local)
    probe = await ctx.run(["head", "-c", str(MIB), "/dev/zero"], what="a probe", check=False)
    assert probe.overflow is not None and len(probe.stdout) == MIB // 4
    fed = await local.run(["cat"], stdin=b"x" * 300_000)
    assert fed.ok and fed.stdout == b"x" * 300_000


BOT_SIDE = """
import asyncio, json, sys
import asyncssh
from bot.probes.base import ProbeContext
from bot.transport import SSHPool, SSHTarget

def kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

async def main(host, port, user, host_key, key_path):
    pool = SSHPool([asyncssh.read_private_key(key_path)])
    ctx = ProbeContext(pool.transport(SSHTarget(host, port, user, host_key)))
    await ctx.run(["true"], what="warm-up")
    before = kib("VmRSS")
    result = await ctx.run(["head", "-c", str(400 * 1024 * 1024), "/dev/zero"], what="a flooding probe", check=False)
    print(json.dumps({"before_kib": before, "peak_kib": kib("VmHWM"), "kept": len(result.stdout),
                      "overflow": result.overflow}))
    await pool.close()

asyncio.run(main(*sys.argv[1:]))
"""


def test_a_server_printing_400_mib_to_a_probe_grows_the_bot_by_less_than_50_mib(make_sshd) -> None:
    """The bot runs in its own process so its resident memory (peak, /proc's VmHWM) is its alone."""
    host = make_sshd("400mib")
    args = [host.host, str(host.port), host.user, host.host_public_key, str(host.client_key_path)]
    done = subprocess.run([sys.executable, "-c", BOT_SIDE, *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    growth_mib = (figures["peak_kib"] - figures["before_kib"]) / 1024
    print(f"\n400 MiB printed to a probe: bot RSS {figures['before_kib'] / 1024:.0f} MiB before, peak "
          f"{figures['peak_kib'] / 1024:.0f} MiB (+{growth_mib:.1f} MiB); {figures['overflow']}")  # fmt: skip
    assert figures["overflow"] and "printed more than 4 MiB on stdout" in figures["overflow"]
    assert figures["kept"] == 4 * MIB
    assert growth_mib < 50
