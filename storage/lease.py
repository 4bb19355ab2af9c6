"""One process at a time: a named lease in the database, renewed by its holder, taken over when it runs out.

Why: ``backup-bot run`` schedules runs, delivers the outbox to Slack and, with the embedded queue, treats every run
it finds ``running`` at start-up as left by a crash and stops what that run left on servers. A second
``backup-bot run`` on the same database (an overlapping deploy, a manual start beside the service) would post every
report twice and stop the first one's live backups. Holding this lease, the second one waits instead, and takes over
when the first stops (at once: a clean stop releases the lease) or dies (when its lease runs out, or at once when it
ran on this machine and its process is gone).

How: compare-and-set UPDATEs and an INSERT made exclusive by the primary key, the same on SQLite, PostgreSQL and
MariaDB. Expiry compares the holder's and the taker's own clocks, so machines sharing a database must keep time
(NTP); a lease lasts a minute by default, far above ordinary clock skew.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tortoise.exceptions import IntegrityError

from storage.models import Lease

log = logging.getLogger(__name__)
RUN_LEASE = "backup-bot run"  # held by the one `backup-bot run` per database


@functools.cache
def _machine() -> str:
    """This boot of this machine, and this pid namespace: where a holder's pid means the same process as ours."""
    parts = []
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12] if len(parts) == 2 else "unknown"


@dataclass(frozen=True)
class Holder:
    """A process that holds (or wants) a lease; ``token`` tells two holders in one process apart."""

    host: str
    pid: int
    machine: str
    token: str = field(default_factory=lambda: secrets.token_hex(4))

    @classmethod
    def this_process(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(), _machine())

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        host, _, rest = text.partition(":")
        pid, _, rest = rest.partition(":")
        machine, _, token = rest.partition(":")
        return cls(host, int(pid), machine, token) if pid.isdigit() and token else None

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.machine}:{self.token}"

    def is_gone(self) -> bool:
        """Whether this holder was a process of this machine (and pid namespace) that no longer exists. A pid that
        was reused counts as alive: the lease is then taken over only when it runs out, which is safe."""
        if self.machine == "unknown" or self.machine != _machine():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


async def acquire(name: str, holder: Holder, ttl: float, *, now: datetime | None = None) -> Lease:
    """Renew ``name`` for ``holder``, or take it when it is free, has run out or its holder is gone.

    Returns the lease as it stands afterwards: ``lease.holder == str(holder)`` when ``holder`` holds it.
    """
    now = now or datetime.now(UTC)
    mine, until = str(holder), now + timedelta(seconds=ttl)
    for _ in range(3):  # again when the holder released it between our steps
        if await Lease.filter(name=name, holder=mine).update(expires_at=until):
            return await Lease.get(name=name)
        if await Lease.filter(name=name, expires_at__lte=now).update(holder=mine, acquired_at=now, expires_at=until):
            return await Lease.get(name=name)
        current = await Lease.get_or_none(name=name)
        if current is None:
            with contextlib.suppress(IntegrityError):  # another process inserted it first: it holds the lease
                await Lease.create(name=name, holder=mine, acquired_at=now, expires_at=until)
        else:
            previous = Holder.parse(current.holder)
            if previous is not None and previous.is_gone():
                taken = dict(holder=mine, acquired_at=now, expires_at=until)
                await Lease.filter(name=name, holder=current.holder).update(**taken)
        settled = await Lease.get_or_none(name=name)
        if settled is not None:
            return settled
    raise RuntimeError(f"the {name!r} lease was released and taken again three times while this process asked")


async def release(name: str, holder: Holder) -> bool:
    """Give ``name`` up (only if ``holder`` still holds it), so that a waiting process takes over at once."""
    return bool(await Lease.filter(name=name, holder=str(holder)).delete())


@dataclass
class Held:
    """A lease this process holds; ``lost`` is set when it can no longer be sure it does."""

    name: str
    holder: Holder
    ttl: float
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""

    async def keep(self) -> None:
        """Renew every third of the lease; give up (set ``lost``) when another process holds it, or when renewals
        failed for as long as the lease lasts (the database unreachable: another process may have taken it)."""
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                lease = await acquire(self.name, self.holder, self.ttl)
            except Exception as exc:
                log.warning("renewing the %r lease failed: %s", self.name, exc)
                if loop.time() - renewed < self.ttl:
                    continue
                self.reason = f"it could not be renewed for {self.ttl:g} s (the database did not answer)"
            else:
                if lease.holder == str(self.holder):
                    renewed = loop.time()
                    continue
                self.reason = f"{describe(lease)} holds it now"
            log.error("lost the %r lease: %s", self.name, self.reason)
            self.lost.set()
            return


def describe(lease: Lease) -> str:
    """``host X (pid N)``: who holds ``lease``, for a person."""
    holder = Holder.parse(lease.holder)
    return f"host {holder.host} (pid {holder.pid})" if holder else repr(lease.holder)


@contextlib.asynccontextmanager
async def held(
    name: str,
    *,
    ttl: float,
    stop: asyncio.Event,
    waiting: Callable[[Lease], None] | None = None,
    holder: Holder | None = None,
) -> AsyncIterator[Held | None]:
    """Wait until this process holds ``name``, keep it renewed while the block runs, release it after.

    Yields None when ``stop`` is set while waiting. ``waiting`` is told once, with the other holder's lease, when
    this process has to wait. Checks every two seconds (at most), so a released lease is taken over at once.
    """
    holder = holder or Holder.this_process()
    told = False
    while True:
        try:
            lease = await acquire(name, holder, ttl)
        except Exception as exc:  # a busy or briefly unreachable database: ask again at the next check
            log.warning("asking for the %r lease failed: %s", name, exc)
        else:
            if lease.holder == str(holder):
                break
            if not told and waiting is not None:
                waiting(lease)
                told = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), min(2.0, ttl / 3))
        if stop.is_set():
            yield None
            return
    if told:
        log.info("took over the %r lease", name)
    current = Held(name, holder, ttl)
    keeper = asyncio.create_task(current.keep(), name=f"lease-{name}")
    try:
        yield current
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        try:
            await release(name, holder)
        except Exception as exc:  # it runs out on its own
            log.warning("releasing the %r lease failed (it runs out within %g s): %s", name, ttl, exc)
