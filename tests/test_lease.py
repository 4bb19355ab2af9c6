"""The database lease that keeps a second ``backup-bot run`` from doing the first one's duties, on all three engines."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta

from storage import lease
from storage.lease import Holder
from storage.models import Lease

NAME = lease.RUN_LEASE
T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _other_machine(pid: int = 4242) -> Holder:
    return Holder("elsewhere", pid, "0123456789ab", "cafe0001")


async def test_one_holder_at_a_time_until_its_lease_runs_out(database: str) -> None:
    a, b = _other_machine(), Holder.this_process()
    assert (await lease.acquire(NAME, a, 60, now=T0)).holder == str(a)
    taken = await lease.acquire(NAME, b, 60, now=T0 + timedelta(seconds=10))
    assert taken.holder == str(a)  # held: b waits
    renewed = await lease.acquire(NAME, a, 60, now=T0 + timedelta(seconds=20))
    assert renewed.holder == str(a) and renewed.expires_at == T0 + timedelta(seconds=80)
    assert (await lease.acquire(NAME, b, 60, now=T0 + timedelta(seconds=79))).holder == str(a)
    after = await lease.acquire(NAME, b, 60, now=T0 + timedelta(seconds=81))  # a stopped renewing
    assert after.holder == str(b) and after.acquired_at == T0 + timedelta(seconds=81)
    assert (await lease.acquire(NAME, a, 60, now=T0 + timedelta(seconds=82))).holder == str(b)  # a learns it lost it
    assert not await lease.release(NAME, a)  # not a's to give up
    assert await lease.release(NAME, b)
    assert (await lease.acquire(NAME, a, 60, now=T0 + timedelta(seconds=83))).holder == str(a)  # free: taken at once


async def test_only_one_of_many_takes_over_a_lease_that_ran_out(database: str) -> None:
    await lease.acquire(NAME, _other_machine(), 60, now=T0)
    takers = [Holder("taker", n, "0123456789ab") for n in range(8)]
    later = T0 + timedelta(minutes=5)
    results = await asyncio.gather(*(lease.acquire(NAME, t, 60, now=later) for t in takers))
    winners = {r.holder for r in results}
    assert len(winners) == 1 and winners <= {str(t) for t in takers}
    assert await Lease.all().count() == 1


async def test_a_free_name_is_inserted_by_exactly_one_of_many(database: str) -> None:
    takers = [Holder("taker", n, "0123456789ab") for n in range(8)]
    results = await asyncio.gather(*(lease.acquire(NAME, t, 60, now=T0) for t in takers))
    assert len({r.holder for r in results}) == 1


async def test_a_dead_holder_on_this_machine_is_replaced_at_once(sqlite_db: str) -> None:
    child = await asyncio.create_subprocess_exec("true")
    await child.wait()  # its pid now names no process
    me = Holder.this_process()
    dead = Holder(me.host, child.pid, me.machine)
    await lease.acquire(NAME, dead, 60, now=T0)
    assert (await lease.acquire(NAME, me, 60, now=T0 + timedelta(seconds=1))).holder == str(me)

    await lease.release(NAME, me)
    alive = Holder(me.host, os.getppid(), me.machine)  # a live process of this machine: wait for its lease
    await lease.acquire(NAME, alive, 60, now=T0)
    assert (await lease.acquire(NAME, me, 60, now=T0 + timedelta(seconds=1))).holder == str(alive)

    await Lease.all().delete()
    remote = Holder("elsewhere", child.pid, "ba9876543210")  # the same dead pid, but on another machine
    await lease.acquire(NAME, remote, 60, now=T0)
    assert (await lease.acquire(NAME, me, 60, now=T0 + timedelta(seconds=1))).holder == str(remote)


def test_holder_names_round_trip() -> None:
    me = Holder.this_process()
    assert Holder.parse(str(me)) == me
    assert Holder.parse("garbage") is None
    assert me.machine != "unknown"  # Linux: boot id and pid namespace are readable
    assert not me.is_gone()


async def test_held_waits_for_the_holder_and_takes_over_when_it_stops(sqlite_db: str) -> None:
    first, second = Holder.this_process(), Holder.this_process()
    stop = asyncio.Event()
    seen: list[str] = []
    told = asyncio.Event()
    holding = {"first": asyncio.Event(), "second": asyncio.Event()}
    done = {"first": asyncio.Event(), "second": asyncio.Event()}

    def waiting(row: Lease) -> None:
        seen.append(row.holder)
        told.set()

    async def hold(holder: Holder, label: str) -> None:
        async with lease.held(NAME, ttl=30, stop=stop, holder=holder, waiting=waiting) as h:
            assert h is not None
            holding[label].set()
            await done[label].wait()

    task_first = asyncio.create_task(hold(first, "first"))
    await asyncio.wait_for(holding["first"].wait(), 5)
    task_second = asyncio.create_task(hold(second, "second"))
    await asyncio.wait_for(told.wait(), 5)
    await asyncio.sleep(0.5)
    assert seen == [str(first)] and not holding["second"].is_set()  # told once who holds it, and waiting
    done["first"].set()
    await task_first
    await asyncio.wait_for(holding["second"].wait(), 5)  # a released lease is taken over at once
    assert (await Lease.get(name=NAME)).holder == str(second)
    done["second"].set()
    await task_second
    assert await Lease.all().count() == 0  # released on the way out


async def test_held_gives_up_when_waiting_is_stopped(sqlite_db: str) -> None:
    await lease.acquire(NAME, _other_machine(), 600)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    async with lease.held(NAME, ttl=600, stop=stop) as h:
        assert h is None
    assert (await Lease.get(name=NAME)).holder == str(_other_machine())


async def test_held_notices_that_another_process_took_the_lease(sqlite_db: str) -> None:
    async with lease.held(NAME, ttl=0.6, stop=asyncio.Event()) as h:
        assert h is not None and not h.lost.is_set()
        await asyncio.sleep(0.5)
        assert not h.lost.is_set()  # renewed in time
        await Lease.filter(name=NAME).update(holder=str(_other_machine()))
        await asyncio.wait_for(h.lost.wait(), 2)
        assert "host elsewhere (pid 4242) holds it now" in h.reason
    assert (await Lease.get(name=NAME)).holder == str(_other_machine())  # not released: it was not ours

