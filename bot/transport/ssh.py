"""SSH transport over asyncssh: pinned host keys, reused connections, a pool shared fairly and bounded.

Why a pool: probing a server runs a dozen commands and a chain run several more; one TCP+SSH handshake
per server and login (reused while alive, re-opened when it drops) keeps that fast. What bounds it
(:class:`PoolLimits`): a cap on open connections; a share per workspace and per server address (whatever
the login names) so no one member or server takes all; idle connections closed after a while, or at once
when a waiter needs the slot; a bounded wait for a slot that ends in a sentence; a cap on concurrent
channels per connection below OpenSSH's default ``MaxSessions`` of 10; a cap on the output kept per
command (:mod:`bot.transport.capture`). Keepalives detect a dead peer; every wait has a timeout;
cancelling a run closes its channel and asks the server to kill the process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import asyncssh

from bot.transport.base import (
    AuthenticationFailed,
    CommandResult,
    CommandTimeout,
    ConnectTimeout,
    HostKeyChanged,
    HostKeyNotPinned,
    HostUnreachable,
    LineHandler,
    PoolBusy,
    RemoteProcess,
    TransportError,
    announce_started,
)
from bot.transport.capture import (
    DEFAULT_OUTPUT_LIMIT,
    DEFAULT_PROBE_OUTPUT_LIMIT,
    OutputExceeded,
    collect,
    pick_limit,
    stopped_result,
)
from bot.transport.command import PID_MARKER, shell_command
from bot.transport.hostkeys import fetch_host_key, fingerprint, parse_key

log = logging.getLogger(__name__)
CHANNELS_PER_CONNECTION = 8
REMOTE_GRACE = 5.0  # seconds the remote `timeout` backstop waits beyond the bot's own timeout
SMALL_OUTPUT = 64 * 1024  # what the pool's own helper commands (`timeout --version`, `kill`) may print


@dataclass(frozen=True)
class SSHTarget:
    """Where to connect and which host key to accept. ``host_key`` is the pinned OpenSSH key line.

    ``workspace`` is whose share of the pool the connection counts against (the Slack team id of the server's
    row); None for the bot's own connections outside any workspace, which only the server and global caps bound.
    """

    host: str
    port: int = 22
    username: str = "root"
    host_key: str | None = None
    workspace: str | None = None

    @property
    def label(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"

    @property
    def server(self) -> ServerKey:
        """The share a connection counts against, whatever its login name: the workspace's use of one address."""
        return (self.workspace, self.host.lower(), self.port)


ServerKey = tuple[str | None, str, int]
AlertHandler = Callable[[TransportError], None]


@dataclass(frozen=True)
class PoolLimits:
    """How much of the bot one server, one workspace and all together may hold, and for how long.

    ``max_connections``: open SSH connections in all (file descriptors and memory of the bot).
    ``workspace_share``: connections one workspace may hold (default three quarters of the cap), so one workspace
    never takes all. ``server_share``: connections to one address for one workspace, whatever the login names
    (each login needs its own connection): a server answering to many user names cannot take more.
    ``idle_timeout``: seconds an unused connection stays open. ``slot_wait``: seconds a new connection waits for
    a free slot before the command fails with a sentence (idle connections are closed to make room first).
    ``output_limit`` / ``probe_output_limit``: bytes of stdout and of stderr kept per command (see capture).
    """

    max_connections: int = 128
    workspace_share: int | None = None
    server_share: int = 4
    idle_timeout: float = 120.0
    slot_wait: float = 30.0
    output_limit: int = DEFAULT_OUTPUT_LIMIT
    probe_output_limit: int = DEFAULT_PROBE_OUTPUT_LIMIT

    def __post_init__(self) -> None:
        share = self.workspace_share if self.workspace_share is not None else max(1, self.max_connections * 3 // 4)
        object.__setattr__(self, "workspace_share", share)
        for name in ("max_connections", "workspace_share", "server_share", "output_limit", "probe_output_limit"):
            if getattr(self, name) < 1:
                raise ValueError(f"the SSH pool's {name} must be at least 1, not {getattr(self, name)}")
        if self.idle_timeout <= 0 or self.slot_wait < 0:
            raise ValueError("the SSH pool's idle_timeout must be positive and its slot_wait not negative")


class _Entry:
    """A live connection, the semaphore bounding its concurrent channels, and how many commands use it."""

    def __init__(self, conn: asyncssh.SSHClientConnection, target: SSHTarget) -> None:
        self.conn = conn
        self.target = target
        self.channels = asyncio.Semaphore(CHANNELS_PER_CONNECTION)
        self.gnu_timeout: bool | None = None  # does the server have GNU `timeout`? (asked once)
        self.users = 0  # commands running or waiting for a channel: while > 0 it is never closed as idle
        self.idle_since = time.monotonic()
        self.idle_timer: asyncio.TimerHandle | None = None

    async def has_gnu_timeout(self, limit: float) -> bool:
        """Whether the server has GNU ``timeout``; asked once per connection (a slow answer is not cached)."""
        if self.gnu_timeout is None:
            try:
                status, out = await _run_small(self.conn, "timeout --version", limit)
            except TimeoutError:
                return False  # a busy server: run this command unsupervised, ask again next time
            self.gnu_timeout = status == 0 and b"GNU coreutils" in out
        return self.gnu_timeout


class SSHPool:
    """Connections to many servers with one client identity (the bot's key), shared fairly (see PoolLimits)."""

    def __init__(
        self,
        client_keys: Sequence[asyncssh.SSHKey],
        *,
        connect_timeout: float = 15.0,
        keepalive_interval: float = 30.0,
        keepalive_count_max: int = 3,
        max_connections: int = 128,
        workspace_share: int | None = None,
        server_share: int = 4,
        idle_timeout: float = 120.0,
        slot_wait: float = 30.0,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        probe_output_limit: int = DEFAULT_PROBE_OUTPUT_LIMIT,
        on_alert: AlertHandler | None = None,
    ) -> None:
        self._client_keys = list(client_keys)
        self._connect_timeout = connect_timeout
        self._keepalive = (keepalive_interval, keepalive_count_max)
        self.limits = PoolLimits(max_connections, workspace_share, server_share, idle_timeout, slot_wait,
                                 output_limit, probe_output_limit)  # fmt: skip
        self._entries: dict[SSHTarget, _Entry] = {}
        self._locks: dict[SSHTarget, tuple[asyncio.Lock, int]] = {}  # per target: the lock and its users
        self._slots = _Slots(self.limits)
        self._on_alert = on_alert

    def transport(self, target: SSHTarget) -> SSHTransport:
        return SSHTransport(self, target)

    def held(self) -> dict[ServerKey, int]:
        """Connection slots held (open or opening) per server share: for gauges and tests."""
        return dict(self._slots.per_server)

    async def _entry(self, target: SSHTarget) -> _Entry:
        """Given a target, return its live connection, marked in use (the caller must :meth:`_release` it)."""
        entry = self._entries.get(target)
        if entry is None or entry.conn.is_closed():
            entry = await self._open(target)
        entry.users += 1
        if entry.idle_timer is not None:
            entry.idle_timer.cancel()
            entry.idle_timer = None
        return entry

    async def _open(self, target: SSHTarget) -> _Entry:
        """Open the target's connection once a slot is free (waiting at most ``slot_wait``), or reuse one that
        another task opened meanwhile."""
        deadline = asyncio.get_running_loop().time() + self.limits.slot_wait
        lock, users = self._locks.get(target) or (asyncio.Lock(), 0)
        self._locks[target] = (lock, users + 1)  # counted, so the lock is dropped only when nobody holds or awaits it
        try:
            try:
                async with asyncio.timeout_at(deadline):  # not wait_for: in 3.11 it can swallow a cancel (gh-86296)
                    await lock.acquire()
            except TimeoutError:
                raise self._slots.busy(target, "the same login") from None
            try:
                return await self._open_locked(target, deadline)
            finally:
                lock.release()
        finally:
            lock, users = self._locks[target]
            if users > 1:
                self._locks[target] = (lock, users - 1)
            else:
                del self._locks[target]

    async def _open_locked(self, target: SSHTarget, deadline: float) -> _Entry:
        entry = self._entries.get(target)
        if entry is not None and not entry.conn.is_closed():
            return entry
        if entry is not None:
            self._forget(entry)
        await self._slots.acquire(target, deadline, self._evict_idle)
        try:
            conn = await self._connect(target)
        except BaseException:
            self._slots.release(target)
            raise
        entry = self._entries[target] = _Entry(conn, target)
        return entry

    def _release(self, entry: _Entry) -> None:
        """A command is done with ``entry``: once nobody uses it, it may be closed as idle (now, for a waiter that
        needs its slot, or after ``idle_timeout``)."""
        entry.users -= 1
        if entry.users > 0 or self._entries.get(entry.target) is not entry:
            return
        entry.idle_since = time.monotonic()
        loop = asyncio.get_running_loop()
        entry.idle_timer = loop.call_later(self.limits.idle_timeout, self._close_if_idle, entry)
        self._slots.changed()

    def _close_if_idle(self, entry: _Entry) -> None:
        if entry.users == 0 and self._entries.get(entry.target) is entry:
            log.debug("closing idle SSH connection to %s", entry.target.label)
            self._forget(entry, close=True)

    def _evict_idle(self, scope: Callable[[SSHTarget], bool]) -> bool:
        """Close the least recently used idle connection within ``scope``; False when every one is in use."""
        idle = [e for e in self._entries.values() if e.users == 0 and scope(e.target)]
        if not idle:
            return False
        self._forget(min(idle, key=lambda e: e.idle_since), close=True)
        return True

    async def _gnu_timeout(self, entry: _Entry) -> bool:
        try:
            return await entry.has_gnu_timeout(self._connect_timeout * 4)
        except (asyncssh.Error, OSError) as exc:
            self._forget(entry)
            raise HostUnreachable(f"Lost the SSH connection to {entry.target.label}: {_reason(exc)}.") from None

    def _forget(self, entry: _Entry, *, close: bool = False) -> None:
        """Drop ``entry`` from the pool (it broke, or idles) and free its slot; only if it is still the current one."""
        if entry.idle_timer is not None:
            entry.idle_timer.cancel()
            entry.idle_timer = None
        if self._entries.get(entry.target) is entry:
            del self._entries[entry.target]
            self._slots.release(entry.target)
        if close:
            entry.conn.close()

    async def _connect(self, target: SSHTarget) -> asyncssh.SSHClientConnection:
        if not target.host_key:
            raise HostKeyNotPinned(
                f"{target.host}:{target.port} has no pinned host key yet. Fetch its fingerprint, have a person "
                "confirm it, and pin it before connecting."
            )
        pinned = parse_key(target.host_key)
        try:
            return await asyncio.wait_for(
                asyncssh.connect(
                    target.host,
                    target.port,
                    username=target.username,
                    client_keys=self._client_keys,
                    known_hosts=([pinned], [], []),
                    config=[],
                    agent_path=None,
                    password=None,
                    kbdint_auth=False,
                    keepalive_interval=self._keepalive[0],
                    keepalive_count_max=self._keepalive[1],
                    connect_timeout=self._connect_timeout,
                    login_timeout=self._connect_timeout,
                ),
                self._connect_timeout + 5,
            )
        except asyncssh.HostKeyNotVerifiable:
            raise await self._host_key_changed(target) from None
        except asyncssh.PermissionDenied:
            raise AuthenticationFailed(
                f"{target.label} refused the bot's SSH key. Install the bot's public key in "
                f"~{target.username}/.ssh/authorized_keys on {target.host} (the wizard shows a one-line command), "
                "or check that the user name is right."
            ) from None
        except (TimeoutError, asyncssh.misc.ConnectionLost) as exc:
            if isinstance(exc, TimeoutError):
                raise ConnectTimeout(
                    f"{target.host}:{target.port} did not complete an SSH login within {self._connect_timeout:g} s. "
                    "Check the address, the port and any firewall in between."
                ) from None
            raise HostUnreachable(f"{target.host}:{target.port} closed the connection during login.") from None
        except socket.gaierror:
            raise HostUnreachable(
                f"The host name {target.host!r} cannot be resolved. Check its spelling or DNS."
            ) from None
        except ConnectionRefusedError:
            raise HostUnreachable(
                f"Connection to {target.host}:{target.port} was refused: no SSH server listens there. Check the "
                "port and that sshd is running."
            ) from None
        except (OSError, asyncssh.Error) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__
            raise HostUnreachable(f"Cannot connect to {target.host}:{target.port}: {reason}.") from None

    async def _host_key_changed(self, target: SSHTarget) -> TransportError:
        assert target.host_key is not None
        try:
            presented = (await fetch_host_key(target.host, target.port, timeout=self._connect_timeout)).fingerprint
        except TransportError:
            presented = "(could not be read)"
        error = HostKeyChanged(target.host, target.port, fingerprint(target.host_key), presented)
        log.warning("host key mismatch for %s:%s", target.host, target.port)
        if self._on_alert is not None:
            try:
                self._on_alert(error)
            except Exception:
                log.exception("host key alert handler failed")
        return error

    async def run(
        self,
        target: SSHTarget,
        argv: Sequence[str],
        *,
        stdin: bytes | None,
        env: Mapping[str, str] | None,
        secret_env: Mapping[str, str] | None,
        timeout: float | None,
        sudo: bool,
        on_stderr: LineHandler | None = None,
    ) -> CommandResult:
        limit = pick_limit(self.limits.output_limit, self.limits.probe_output_limit)  # before any await
        entry = await self._entry(target)
        try:
            async with entry.channels:
                return await self._run_on(entry, argv, stdin, env, secret_env, timeout, sudo, on_stderr, limit)
        finally:
            self._release(entry)

    async def _run_on(
        self,
        entry: _Entry,
        argv: Sequence[str],
        stdin: bytes | None,
        env: Mapping[str, str] | None,
        secret_env: Mapping[str, str] | None,
        timeout: float | None,
        sudo: bool,
        on_stderr: LineHandler | None,
        limit: int,
    ) -> CommandResult:
        target = entry.target
        supervised = await self._gnu_timeout(entry)
        elevated = sudo and target.username != "root"  # root needs no sudo (a minimal server may lack it)
        command, preamble = shell_command(
            argv,
            env=env,
            secret_env=secret_env,
            sudo=elevated,
            # The remote limit is a backstop a little after ours, so the bot's own timer decides and
            # reports (a remote `timeout` firing first would look like exit status 124 instead).
            group_timeout=(timeout + REMOTE_GRACE if timeout else 0) if supervised else None,
        )
        data = preamble + (stdin or b"")
        started = time.monotonic()
        # The server starts the command before it answers; a cancel while the answer is on its way would
        # leave the bot without a process to stop. So the opening runs on, shielded, and is ended if cancelled.
        opening = asyncio.ensure_future(entry.conn.create_process(command, encoding=None, stdin=asyncssh.PIPE))
        try:
            process = await asyncio.shield(opening)
        except asyncio.CancelledError:
            await asyncio.shield(_abandon(opening, entry.conn, supervised=supervised, sudo=elevated))
            raise
        except (asyncssh.ChannelOpenError, asyncssh.DisconnectError, OSError) as exc:
            self._forget(entry)
            raise HostUnreachable(f"Lost the SSH connection to {target.label}: {_reason(exc)}.") from None
        pid: int | None = None
        try:
            if supervised:
                pid = await _read_pid(process, self._connect_timeout)
                if pid is not None:  # a run records it, to stop it after a crash (bot.runs.orphans)
                    await announce_started(
                        RemoteProcess(target.host, target.port, target.username, pid, tuple(argv), elevated)
                    )
            return await self._wait(process, tuple(argv), data, timeout, started, entry, on_stderr, limit)
        finally:
            await asyncio.shield(_end(process, entry.conn, pid, supervised=supervised, sudo=elevated))

    async def _wait(
        self,
        process: asyncssh.SSHClientProcess,
        argv: tuple[str, ...],
        data: bytes,
        timeout: float | None,
        started: float,
        entry: _Entry,
        on_stderr: LineHandler | None,
        limit: int,
    ) -> CommandResult:
        target = entry.target
        try:
            if data:
                process.stdin.write(data)
            process.stdin.write_eof()
            out, err, overflow = await asyncio.wait_for(_collect(process, on_stderr, limit), timeout)
        except TimeoutError:
            raise CommandTimeout(
                f"`{argv[0]}` did not finish within {timeout:g} s on {target.host} and was stopped."
            ) from None
        except (asyncssh.DisconnectError, asyncssh.ConnectionLost, BrokenPipeError, ConnectionError) as exc:
            self._forget(entry)
            raise HostUnreachable(
                f"The SSH connection to {target.label} dropped while `{argv[0]}` ran: {_reason(exc)}."
            ) from None
        if overflow is not None:  # the caller's `finally` stops the command and closes its channel
            return stopped_result(argv, out, err, overflow, time.monotonic() - started)
        signal_name = process.exit_signal[0] if process.exit_signal else None
        if process.exit_status is None and signal_name is None:
            self._forget(entry)
            raise HostUnreachable(f"The SSH connection to {target.label} closed before `{argv[0]}` finished.")
        return CommandResult(
            argv=argv,
            exit_status=None if signal_name else process.exit_status,
            stdout=out,
            stderr=err,
            signal=signal_name,
            duration=time.monotonic() - started,
        )

    async def close(self) -> None:
        entries = list(self._entries.values())
        for entry in entries:
            self._forget(entry, close=True)
        for entry in entries:
            with contextlib.suppress(Exception):
                await entry.conn.wait_closed()


class _Slots:
    """Connection slots, counted overall, per workspace and per server share, and waited for until a deadline."""

    def __init__(self, limits: PoolLimits) -> None:
        self.limits = limits
        self.total = 0
        self.per_workspace: Counter[str] = Counter()
        self.per_server: Counter[ServerKey] = Counter()
        self._changed = asyncio.Event()

    def full(self, target: SSHTarget) -> tuple[str, Callable[[SSHTarget], bool]] | None:
        """Given a target, return the share that has no room for it (its name, and which connections closing
        would make room), or None when it may open a connection now."""
        if self.per_server[target.server] >= self.limits.server_share:
            return "server", lambda other: other.server == target.server
        workspace = target.workspace
        if workspace is not None and self.per_workspace[workspace] >= (self.limits.workspace_share or 0):
            return "workspace", lambda other: other.workspace == workspace
        if self.total >= self.limits.max_connections:
            return "pool", lambda other: True
        return None

    async def acquire(self, target: SSHTarget, deadline: float, evict: Callable[[Callable[..., bool]], bool]) -> None:
        """Take a slot for ``target``: closing idle connections to make room, else waiting until ``deadline``."""
        while (full := self.full(target)) is not None:
            if evict(full[1]):
                continue
            event = self._changed
            try:
                async with asyncio.timeout_at(deadline):
                    await event.wait()
            except TimeoutError:
                raise self.busy(target, full[0]) from None
        self.total += 1
        self.per_server[target.server] += 1
        if target.workspace is not None:
            self.per_workspace[target.workspace] += 1

    def release(self, target: SSHTarget) -> None:
        self.total -= 1
        for counter, key in ((self.per_server, target.server), (self.per_workspace, target.workspace)):
            if key in counter:
                counter[key] -= 1
                if counter[key] <= 0:
                    del counter[key]
        self.changed()

    def changed(self) -> None:
        """Wake every waiter: a slot was freed or a connection went idle (and may be closed for a waiter)."""
        self._changed.set()
        self._changed = asyncio.Event()

    def busy(self, target: SSHTarget, share: str) -> PoolBusy:
        """The sentence for a connection that found no slot within ``slot_wait``: which share is full, the fix."""
        wait, where = self.limits.slot_wait, f"{target.host}:{target.port}"
        if share == "server":
            held = f"{self.limits.server_share} SSH connection(s) to {where} for this workspace (its per-server share)"
            fix = "Wait for the commands running there to finish; more login names on one server do not add slots"
        elif share == "workspace":
            held = f"{self.limits.workspace_share} SSH connections for this workspace (its share of the bot's pool)"
            fix = ("Try again when this workspace's running backups and checks finish, or raise "
                   "BACKUPBOT_SSH_WORKSPACE_SHARE")
        elif share == "pool":
            held = f"all {self.limits.max_connections} SSH connections of the bot"
            fix = "Try again later, or raise BACKUPBOT_SSH_MAX_CONNECTIONS"
        else:
            return PoolBusy(f"The SSH connection to {target.label} was still being opened by another command after "
                            f"{wait:g} s. Check that {where} answers promptly and try again.")  # fmt: skip
        return PoolBusy(f"The bot already uses {held}, all busy, and none became free within {wait:g} s, so the "
                        f"connection to {target.label} was not opened. {fix}.")  # fmt: skip


async def _collect(
    process: asyncssh.SSHClientProcess, on_stderr: LineHandler | None, limit: int
) -> tuple[bytes, bytes, OutputExceeded | None]:
    """stdout and stderr until the channel closes (each within ``limit``), passing stderr lines on as they arrive."""
    out, err, overflow = await collect(process.stdout, process.stderr, on_stderr, limit)
    if overflow is None:
        await process.wait_closed()  # the exit status arrives before the channel closes, not always before EOF
    return out, err, overflow


async def _run_small(conn: asyncssh.SSHClientConnection, command: str, limit: float) -> tuple[int | None, bytes]:
    """Run one of the pool's own short commands on a second channel: (exit status, stdout within 64 KiB)."""
    process = await asyncio.wait_for(conn.create_process(command, encoding=None), limit)
    try:
        out, _, _ = await asyncio.wait_for(collect(process.stdout, process.stderr, None, SMALL_OUTPUT), limit)
        await asyncio.wait_for(process.wait_closed(), limit)
        return process.exit_status, out
    finally:
        process.close()


async def _read_pid(process: asyncssh.SSHClientProcess, limit: float) -> int | None:
    """The pid the command announced on its first stderr line (see ``shell_command``)."""
    line = await asyncio.wait_for(process.stderr.readline(), limit)
    text = line.decode("ascii", errors="replace").strip() if isinstance(line, bytes) else str(line).strip()
    value = text.removeprefix(PID_MARKER)
    return int(value) if text.startswith(PID_MARKER) and value.isdigit() else None


async def _end(
    process: asyncssh.SSHClientProcess,
    conn: asyncssh.SSHClientConnection,
    pid: int | None,
    *,
    supervised: bool,
    sudo: bool,
) -> None:
    """Stop a command the bot no longer waits for (cancelled, timed out, failed) and close its channel.

    Nothing to do when it has ended. Without the pid (a cancel came before its line was read) it is read now.
    """
    if process.exit_status is not None or process.exit_signal is not None:
        return
    if supervised and pid is None:
        with contextlib.suppress(Exception):
            pid = await _read_pid(process, 5)
    if pid is not None and not conn.is_closed():
        argv = (["sudo", "-n", "--"] if sudo else []) + ["kill", "-TERM", str(pid)]
        with contextlib.suppress(Exception):  # on a second channel: the first one is the command's
            await _run_small(conn, shlex.join(argv), 10)
    process.close()


async def _abandon(
    opening: asyncio.Future[asyncssh.SSHClientProcess],
    conn: asyncssh.SSHClientConnection,
    *,
    supervised: bool,
    sudo: bool,
) -> None:
    """A run cancelled while its channel opened: let the opening finish, then end whatever it started."""
    try:
        process = await asyncio.wait_for(opening, 10)
    except Exception:
        return  # the channel never opened (or took too long to say so): nothing of ours runs
    await _end(process, conn, None, supervised=supervised, sudo=sudo)


def _reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__


class SSHTransport:
    """A :class:`~bot.transport.base.Transport` bound to one server through a shared pool."""

    def __init__(self, pool: SSHPool, target: SSHTarget) -> None:
        self.pool = pool
        self.target = target
        self.name = target.label

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        secret_env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        sudo: bool = False,
        on_stderr: LineHandler | None = None,
    ) -> CommandResult:
        return await self.pool.run(
            self.target,
            argv,
            stdin=stdin,
            env=env,
            secret_env=secret_env,
            timeout=timeout,
            sudo=sudo,
            on_stderr=on_stderr,
        )

    async def close(self) -> None:
        """The pool owns connections; closing one server's view of it is a no-op."""
        return None
