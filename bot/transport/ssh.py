"""SSH transport over asyncssh: pinned host keys, one reused connection per server, bounded concurrency.

Why a pool: probing a server runs a dozen commands and a chain run several more; one TCP+SSH handshake
per server (reused while alive, re-opened when it drops) keeps that fast. Two bounds protect both sides:
a global cap on open connections, and a cap on concurrent channels per connection below OpenSSH's
default ``MaxSessions`` of 10. Keepalives detect a dead peer; every wait has a timeout; cancelling a run
closes its channel and asks the server to kill the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import socket
import time
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
    RemoteProcess,
    TransportError,
    announce_started,
    read_lines,
)
from bot.transport.command import PID_MARKER, shell_command
from bot.transport.hostkeys import fetch_host_key, fingerprint, parse_key

log = logging.getLogger(__name__)
CHANNELS_PER_CONNECTION = 8
REMOTE_GRACE = 5.0  # seconds the remote `timeout` backstop waits beyond the bot's own timeout


@dataclass(frozen=True)
class SSHTarget:
    """Where to connect and which host key to accept. ``host_key`` is the pinned OpenSSH key line."""

    host: str
    port: int = 22
    username: str = "root"
    host_key: str | None = None

    @property
    def label(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"


AlertHandler = Callable[[TransportError], None]


class _Entry:
    """A live connection and the semaphore bounding its concurrent channels."""

    def __init__(self, conn: asyncssh.SSHClientConnection) -> None:
        self.conn = conn
        self.channels = asyncio.Semaphore(CHANNELS_PER_CONNECTION)
        self.gnu_timeout: bool | None = None  # does the server have GNU `timeout`? (asked once)

    async def has_gnu_timeout(self, limit: float) -> bool:
        """Whether the server has GNU ``timeout``; asked once per connection (a slow answer is not cached)."""
        if self.gnu_timeout is None:
            try:
                probe = await self.conn.run("timeout --version", check=False, timeout=limit)
            except asyncssh.TimeoutError:
                return False  # a busy server: run this command unsupervised, ask again next time
            self.gnu_timeout = probe.exit_status == 0 and "GNU coreutils" in str(probe.stdout)
        return self.gnu_timeout


class SSHPool:
    """Connections to many servers with one client identity (the bot's key)."""

    def __init__(
        self,
        client_keys: Sequence[asyncssh.SSHKey],
        *,
        connect_timeout: float = 15.0,
        keepalive_interval: float = 30.0,
        keepalive_count_max: int = 3,
        max_connections: int = 64,
        on_alert: AlertHandler | None = None,
    ) -> None:
        self._client_keys = list(client_keys)
        self._connect_timeout = connect_timeout
        self._keepalive = (keepalive_interval, keepalive_count_max)
        self._slots = asyncio.Semaphore(max_connections)
        self._entries: dict[SSHTarget, _Entry] = {}
        self._locks: dict[SSHTarget, asyncio.Lock] = {}
        self._on_alert = on_alert

    def transport(self, target: SSHTarget) -> SSHTransport:
        return SSHTransport(self, target)

    async def _entry(self, target: SSHTarget) -> _Entry:
        entry = self._entries.get(target)
        if entry is not None and not entry.conn.is_closed():
            return entry
        async with self._locks.setdefault(target, asyncio.Lock()):
            entry = self._entries.get(target)
            if entry is not None and not entry.conn.is_closed():
                return entry
            if entry is not None:
                self._forget(target)
            await self._slots.acquire()
            try:
                conn = await self._connect(target)
            except BaseException:
                self._slots.release()
                raise
            entry = self._entries[target] = _Entry(conn)
            return entry

    async def _gnu_timeout(self, entry: _Entry, target: SSHTarget) -> bool:
        try:
            return await entry.has_gnu_timeout(self._connect_timeout * 4)
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            self._forget(target)
            raise HostUnreachable(f"Lost the SSH connection to {target.label}: {_reason(exc)}.") from None

    def _forget(self, target: SSHTarget) -> None:
        if self._entries.pop(target, None) is not None:
            self._slots.release()

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
        entry = await self._entry(target)
        async with entry.channels:
            supervised = await self._gnu_timeout(entry, target)
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
                self._forget(target)
                raise HostUnreachable(f"Lost the SSH connection to {target.label}: {_reason(exc)}.") from None
            pid: int | None = None
            try:
                if supervised:
                    pid = await _read_pid(process, self._connect_timeout)
                    if pid is not None:  # a run records it, to stop it after a crash (bot.runs.orphans)
                        await announce_started(
                            RemoteProcess(target.host, target.port, target.username, pid, tuple(argv), elevated)
                        )
                return await self._wait(process, tuple(argv), data, timeout, started, target, on_stderr)
            finally:
                await asyncio.shield(_end(process, entry.conn, pid, supervised=supervised, sudo=elevated))

    async def _wait(
        self,
        process: asyncssh.SSHClientProcess,
        argv: tuple[str, ...],
        data: bytes,
        timeout: float | None,
        started: float,
        target: SSHTarget,
        on_stderr: LineHandler | None,
    ) -> CommandResult:
        try:
            if data:
                process.stdin.write(data)
            process.stdin.write_eof()
            out, err = await asyncio.wait_for(_collect(process, on_stderr), timeout)
        except TimeoutError:
            raise CommandTimeout(
                f"`{argv[0]}` did not finish within {timeout:g} s on {target.host} and was stopped."
            ) from None
        except (asyncssh.DisconnectError, asyncssh.ConnectionLost, BrokenPipeError, ConnectionError) as exc:
            self._forget(target)
            raise HostUnreachable(
                f"The SSH connection to {target.label} dropped while `{argv[0]}` ran: {_reason(exc)}."
            ) from None
        signal_name = process.exit_signal[0] if process.exit_signal else None
        if process.exit_status is None and signal_name is None:
            self._forget(target)
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
        entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            entry.conn.close()
            self._slots.release()
        for entry in entries:
            with contextlib.suppress(Exception):
                await entry.conn.wait_closed()


async def _collect(process: asyncssh.SSHClientProcess, on_stderr: LineHandler | None) -> tuple[bytes, bytes]:
    """All of stdout and stderr until the channel closes, passing stderr lines on as they arrive."""
    out, err = await asyncio.gather(process.stdout.read(), read_lines(process.stderr, on_stderr))
    await process.wait_closed()  # the exit status arrives before the channel closes, not always before EOF
    return out, err


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
            await asyncio.wait_for(conn.run(shlex.join(argv), check=False), 10)
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
