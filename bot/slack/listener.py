"""The HTTP listener that stays up: no client can hold it, or the process's file descriptors, hostage.

aiohttp's defaults let a connection that sends nothing stay an hour, and accept connections until the process runs
out of file descriptors — after which every socket and file the bot opens fails (SSH, the database, logs). Here each
connection passes :class:`Admission` first:

* **Caps**: at most ``max_connections`` open at once, and ``max_per_client`` from one address. Over the overall cap,
  the oldest connection that has not sent a complete request yet is closed to make room (an idle flood cannot lock
  out ``/healthz`` or Slack); if every connection is busy, the new one is refused. Over a client's own cap, the new
  one is refused.
* **File-descriptor headroom**: a new connection is refused (closed at once) while the process has fewer than
  ``fd_reserve`` descriptors left below its soft limit, so the bot's own SSH, database and file use never starve.
* **Deadlines**: a connection must deliver a complete request head within ``header_timeout`` seconds, and an idle
  kept-alive connection is closed after ``keepalive_timeout`` (aiohttp's own timer, which also closes a connection
  stuck half-way through a later request).

Refusals and evictions are counted and logged at most once a minute (:class:`Admission.note`), never per connection.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from bot.config import Settings

log = logging.getLogger(__name__)
FD_DIR = "/proc/self/fd"
NOTE_EVERY = 60.0


@dataclass(frozen=True)
class ListenerLimits:
    """What one listener tolerates (BACKUPBOT_HTTP_* settings)."""

    max_connections: int = 512
    max_per_client: int = 64
    header_timeout: float = 10.0
    keepalive_timeout: float = 15.0
    fd_reserve: int = 256


def limits_of(settings: Settings) -> ListenerLimits:
    """The listener limits the settings choose."""
    return ListenerLimits(max_connections=settings.http_max_connections, max_per_client=settings.http_max_per_client,
                          header_timeout=settings.http_header_timeout, fd_reserve=settings.fd_reserve,
                          keepalive_timeout=settings.http_keepalive_timeout)  # fmt: skip


def open_fds() -> int | None:
    """How many file descriptors this process has open (None where the system does not say)."""
    try:
        return len(os.listdir(FD_DIR))
    except OSError:
        return None


def fd_soft_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process's soft file-descriptor limit to its hard limit (the unit sets LimitNOFILE); returns the
    (soft, hard) pair now in force. Why: the default soft limit of 1024 is what an idle-connection flood exhausted."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft, hard


@dataclass
class Admission:
    """The listener's book of open connections (see the module docstring)."""

    limits: ListenerLimits
    fresh: dict[GuardedHandler, float] = field(default_factory=dict)  # connections with no complete request yet
    per_client: Counter[str] = field(default_factory=Counter)
    total: int = 0
    refused: int = 0
    evicted: int = 0
    _noted: float = 0.0

    def admit(self, handler: GuardedHandler, client: str) -> bool:
        """Given a new connection from ``client``, True if it may stay (after evicting one if needed)."""
        if self.per_client[client] >= self.limits.max_per_client or not self._fd_headroom():
            return self._refuse()
        if self.total >= self.limits.max_connections and not self._evict_oldest_fresh():
            return self._refuse()
        self.total += 1
        self.per_client[client] += 1
        self.fresh[handler] = time.monotonic()
        return True

    def _fd_headroom(self) -> bool:
        used = open_fds()
        return used is None or fd_soft_limit() - used > self.limits.fd_reserve

    def _evict_oldest_fresh(self) -> bool:
        if not self.fresh:
            return False
        oldest = next(iter(self.fresh))
        self.fresh.pop(oldest)
        oldest.force_close()  # its connection_lost releases its place
        self.evicted += 1
        self.note()
        return True

    def _refuse(self) -> bool:
        self.refused += 1
        self.note()
        return False

    def started(self, handler: GuardedHandler) -> None:
        """The connection delivered a complete request: no longer a candidate for eviction or the header deadline."""
        self.fresh.pop(handler, None)

    def release(self, handler: GuardedHandler, client: str) -> None:
        self.fresh.pop(handler, None)
        self.total -= 1
        self.per_client[client] -= 1
        if self.per_client[client] <= 0:
            del self.per_client[client]

    def note(self) -> None:
        """One warning a minute at most, with the counts so far (a flood must not become a flood of log lines)."""
        now = time.monotonic()
        if now - self._noted >= NOTE_EVERY:
            self._noted = now
            log.warning("HTTP listener under pressure: %d connection(s) open, %d refused and %d idle one(s) closed "
                        "so far (caps: %d overall, %d per client)", self.total, self.refused, self.evicted,
                        self.limits.max_connections, self.limits.max_per_client)  # fmt: skip


class GuardedHandler(RequestHandler):
    """aiohttp's connection handler, admitted by :class:`Admission` and held to the header deadline."""

    def __init__(self, manager: web.Server, *, admission: Admission, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._admission = admission
        self._client = ""
        self._admitted = False
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._client = str(peer[0]) if isinstance(peer, tuple) and peer else "local"
        if not self._admission.admit(self, self._client):
            transport.abort()  # closed at once: no descriptor lingers for a refused connection
            return
        self._admitted = True
        super().connection_made(transport)
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._admission.limits.header_timeout, self._header_deadline)

    def _header_deadline(self) -> None:
        self._deadline = None
        if self._request_count == 0:
            self.force_close()

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        super().data_received(data)
        if self._request_count and self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
            self._admission.started(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        if self._deadline is not None:
            self._deadline.cancel()
        self._admission.release(self, self._client)
        super().connection_lost(exc)


class GuardedServer(web.Server):
    """aiohttp's server whose connections are :class:`GuardedHandler` s sharing one :class:`Admission`."""

    admission: Admission

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, loop=self._loop, admission=self.admission, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` whose server admits connections under ``limits``."""

    def __init__(self, app: web.Application, limits: ListenerLimits, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=limits.keepalive_timeout, **kwargs)
        self.admission = Admission(limits)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = GuardedServer  # the same server, making guarded handlers
        server.admission = self.admission  # type: ignore[attr-defined]
        return server
