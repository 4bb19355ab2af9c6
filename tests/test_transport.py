"""SSH and local transports against real sshd instances on loopback."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from pathlib import Path

import asyncssh
import pytest

from bot.transport import (
    AuthenticationFailed,
    CommandTimeout,
    ConnectTimeout,
    HostKeyChanged,
    HostKeyNotPinned,
    HostUnreachable,
    LocalTransport,
    SSHPool,
    SSHTarget,
)
from bot.transport.bootstrap import install_command, install_with_password
from bot.transport.command import UnsafeArgument, shell_command
from bot.transport.hostkeys import fetch_host_key

NASTY = [
    "with space",
    "quote ' single",
    'quote " double',
    "semi; touch CANARY",
    "$(touch CANARY)",
    "`touch CANARY`",
    "new\nline; touch CANARY",
    "back\\slash",
    "glob * ?",
    "-n",
    "",
    "ünïcødé",
]


def target_for(host, *, host_key: str | None = "pinned") -> SSHTarget:
    key = host.host_public_key if host_key == "pinned" else host_key
    return SSHTarget(host=host.host, port=host.port, username=host.user, host_key=key)


async def test_fetch_host_key_matches_ssh_keygen(make_sshd) -> None:
    host = make_sshd("keys")
    info = await fetch_host_key(host.host, host.port)
    assert info.fingerprint == host.host_key_fingerprint
    assert info.key_line == host.host_public_key.split()[0] + " " + host.host_public_key.split()[1]


async def test_runs_commands_and_reuses_one_connection(make_sshd, pool_for) -> None:
    host = make_sshd("reuse")
    pool = pool_for(host)
    transport = pool.transport(target_for(host))
    results = await asyncio.gather(*(transport.run(["sh", "-c", "echo $BW_TEST_HOST"]) for _ in range(20)))
    assert {r.out.strip() for r in results} == {"reuse"}
    assert all(r.ok for r in results)
    assert len(pool._entries) == 1


async def test_several_servers_are_distinct(make_sshd, pool_for) -> None:
    a, b = make_sshd("alpha"), make_sshd("beta")
    pool_a, pool_b = pool_for(a), pool_for(b)
    out_a = await pool_a.transport(target_for(a)).run(["hostname"])
    out_b = await pool_b.transport(target_for(b)).run(["hostname"])
    assert (out_a.out.strip(), out_b.out.strip()) == ("alpha", "beta")


async def test_exit_status_and_stderr_are_results_not_errors(make_sshd, pool_for) -> None:
    host = make_sshd("status")
    result = await pool_for(host).transport(target_for(host)).run(["sh", "-c", "echo oops >&2; exit 3"])
    assert (result.exit_status, result.err.strip(), result.ok) == (3, "oops", False)
    assert "exited with status 3: oops" in result.describe_failure()


async def test_arguments_reach_the_program_literally(make_sshd, pool_for, tmp_path: Path) -> None:
    host = make_sshd("quoting")
    transport = pool_for(host).transport(target_for(host))
    canary = tmp_path / "CANARY"
    result = await transport.run(["sh", "-c", 'cd "$1" && shift && printf "%s\\0" "$@"', "sh", str(tmp_path), *NASTY])
    assert result.ok, result.err
    assert result.stdout.split(b"\0")[:-1] == [n.encode() for n in NASTY]
    assert not canary.exists()
    # The same through env= (visible on the remote command line, so only for non-secrets).
    result = await transport.run(["sh", "-c", 'printf "%s" "$X"'], env={"X": NASTY[4]})
    assert result.out == NASTY[4] and not canary.exists()


def test_unsafe_arguments_are_refused() -> None:
    for argv in ("echo hi", [], ["echo", "a\x00b"], ["A=B", "x"]):
        with pytest.raises(UnsafeArgument):
            shell_command(argv)  # type: ignore[arg-type]
    with pytest.raises(UnsafeArgument) as info:
        shell_command(["true"], secret_env={"PW": "line1\nline2-SECRET"})
    assert "SECRET" not in str(info.value)
    with pytest.raises(UnsafeArgument):
        shell_command(["true"], env={"BAD NAME": "x"})


async def test_secret_env_is_not_on_any_command_line(make_sshd, pool_for) -> None:
    host = make_sshd("secrets")
    transport = pool_for(host).transport(target_for(host))
    secret = "p@ss w0rd 'with' $(quotes)"
    command, preamble = shell_command(["borg", "list"], secret_env={"BORG_PASSPHRASE": secret})
    assert secret not in command and secret.encode() in preamble
    # Inside: the program sees it; `ps` (every process's argv on that host) does not.
    result = await transport.run(
        ["sh", "-c", 'printf "%s" "$BORG_PASSPHRASE" > "$HOME/.seen"; ps -eo args; cat'],
        secret_env={"BORG_PASSPHRASE": secret},
        stdin=b"payload after the secret",
    )
    assert result.ok, result.err
    assert secret not in result.out
    assert result.out.endswith("payload after the secret")
    seen = await transport.run(["sh", "-c", 'cat "$HOME/.seen"; rm -f "$HOME/.seen"'])
    assert seen.out == secret


async def test_unpinned_and_changed_host_keys_are_refused(make_sshd, pool_for) -> None:
    host = make_sshd("pinning")
    alerts = []
    pool = pool_for(host, on_alert=alerts.append)
    with pytest.raises(HostKeyNotPinned):
        await pool.transport(target_for(host, host_key=None)).run(["true"])
    old_key, old_fp = host.host_public_key, host.host_key_fingerprint
    host.restart(new_host_key=True)
    with pytest.raises(HostKeyChanged) as info:
        await pool.transport(target_for(host, host_key=old_key)).run(["true"])
    message = str(info.value)
    assert old_fp in message and host.host_key_fingerprint in message and old_fp != host.host_key_fingerprint
    assert [a.kind for a in alerts] == ["host_key_changed"]
    assert alerts[0].details["presented"] == host.host_key_fingerprint
    # The new key, once confirmed and pinned, works.
    assert (await pool.transport(target_for(host)).run(["true"])).ok


async def test_refused_key_wrong_port_and_unknown_host(make_sshd, pool_for) -> None:
    host = make_sshd("auth", authorize_client=False)
    with pytest.raises(AuthenticationFailed, match="refused the bot's SSH key"):
        await pool_for(host).transport(target_for(host)).run(["true"])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    wrong_port = SSHTarget(host.host, free_port, host.user, host.host_public_key)
    with pytest.raises(HostUnreachable, match="refused: no SSH server listens there"):
        await pool_for(host).transport(wrong_port).run(["true"])
    unknown = SSHTarget("no-such-host.invalid", 22, "root", host.host_public_key)
    with pytest.raises(HostUnreachable, match="cannot be resolved"):
        await pool_for(host).transport(unknown).run(["true"])
    with pytest.raises(HostUnreachable, match="refused"):
        await fetch_host_key(host.host, free_port)


async def test_silent_server_times_out(make_sshd, pool_for) -> None:
    host = make_sshd("silent")

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ConnectTimeout, match="did not complete an SSH login"):
            await (
                pool_for(host, connect_timeout=0.5)
                .transport(SSHTarget("127.0.0.1", port, "root", host.host_public_key))
                .run(["true"])
            )
        with pytest.raises(ConnectTimeout):
            await fetch_host_key("127.0.0.1", port, timeout=0.5)
    finally:
        server.close()


def _remote_processes(marker: str) -> str:
    return subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True).stdout


async def test_hanging_command_times_out_and_is_killed(make_sshd, pool_for) -> None:
    host = make_sshd("hang")
    transport = pool_for(host).transport(target_for(host))
    marker = "sleep 987"
    with pytest.raises(CommandTimeout, match=r"did not finish within 0\.5 s"):
        await transport.run(["sh", "-c", marker], timeout=0.5)
    for _ in range(50):
        if marker not in _remote_processes("987"):
            break
        await asyncio.sleep(0.1)
    assert marker not in _remote_processes("987")
    assert (await transport.run(["true"])).ok  # the connection is still usable


async def test_cancelling_a_run_stops_the_remote_process(make_sshd, pool_for) -> None:
    host = make_sshd("cancel")
    transport = pool_for(host).transport(target_for(host))
    task = asyncio.create_task(transport.run(["sh", "-c", "sleep 876"]))
    for _ in range(50):
        if "sleep 876" in _remote_processes("876"):
            break
        await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(150):  # the kill goes over a second channel: allow for a loaded machine
        if "sleep 876" not in _remote_processes("876"):
            break
        await asyncio.sleep(0.1)
    assert "sleep 876" not in _remote_processes("876")


async def test_a_cancel_while_the_server_starts_the_command_still_stops_it(make_sshd, pool_for) -> None:
    """Cancel after the server started the command but before its "started" reply was read.

    CI once caught this: the server ran the command while the bot still waited in ``create_process``, so the bot
    had no process to stop and the command ran on. The test makes that moment certain: it lets the event loop
    turn once at a time and, between turns, blocks (reading nothing) until the server shows the command; the
    cancel then arrives with the server's reply still unread.
    """
    host = make_sshd("cancel-start")
    transport = pool_for(host).transport(target_for(host))
    assert (await transport.run(["true"])).ok  # the connection is open: only the channel is left to start
    task = asyncio.create_task(transport.run(["sh", "-c", "sleep 5431"]))
    started = False
    while not started and not task.done():
        await asyncio.sleep(0)  # one turn: the bot sends what it has to send
        deadline = time.monotonic() + 0.05
        while not started and time.monotonic() < deadline:  # blocks the loop: no reply is read meanwhile
            started = "sleep 5431" in _remote_processes("5431")
    assert started and not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(150):
        if "sleep 5431" not in _remote_processes("5431"):
            break
        await asyncio.sleep(0.1)
    assert "sleep 5431" not in _remote_processes("5431")


async def test_dropped_connection_is_reopened(make_sshd, pool_for) -> None:
    host = make_sshd("drop")
    pool = pool_for(host)
    transport = pool.transport(target_for(host))
    assert (await transport.run(["true"])).ok
    next(iter(pool._entries.values())).conn.abort()
    await asyncio.sleep(0.1)
    assert (await transport.run(["echo", "again"])).out.strip() == "again"


async def test_password_bootstrap_installs_the_key_once(make_sshd, tmp_path: Path) -> None:
    host = make_sshd("boot", nonroot=True, password_auth=True, authorize_client=False)
    bot_key = asyncssh.generate_private_key("ssh-ed25519", comment="backup-wizard-bot")
    public = bot_key.export_public_key().decode().strip()
    target = target_for(host)
    with pytest.raises(AuthenticationFailed, match="refused the password"):
        await install_with_password(target, "wrong-password", public)
    for _ in range(2):
        await install_with_password(target, host.password, public)
    pool = SSHPool([bot_key])
    try:
        result = await pool.transport(target).run(
            ["sh", "-c", 'grep -c backup-wizard-bot "$HOME/.ssh/authorized_keys"']
        )
        assert result.out.strip() == "1"
    finally:
        await pool.close()


def test_install_command_is_idempotent(tmp_path: Path) -> None:
    public = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDummyKeyForTheTest backup-wizard-bot"
    for _ in range(2):
        subprocess.run(
            ["sh", "-c", install_command(public)], env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}, check=True
        )
    keys = tmp_path / ".ssh" / "authorized_keys"
    assert keys.read_text() == public + "\n"
    assert oct(keys.stat().st_mode & 0o777) == "0o600"


async def test_local_transport(tmp_path: Path) -> None:
    local = LocalTransport()
    result = await local.run(["sh", "-c", 'printf "%s|%s" "$1" "$SECRET"', "sh", NASTY[3]], secret_env={"SECRET": "s"})
    assert result.out == f"{NASTY[3]}|s"
    assert (await local.run(["definitely-not-a-program-xyz"])).exit_status == 127
    with pytest.raises(CommandTimeout):
        await local.run(["sleep", "5"], timeout=0.2)
    killed = await local.run(["sh", "-c", "kill -TERM $$"])
    assert (killed.exit_status, killed.signal) == (None, "SIGTERM")


async def test_stderr_lines_arrive_while_the_command_runs(make_sshd, pool_for, tmp_path: Path) -> None:
    """The command waits for a file that only the line handler creates: without streaming it would time out."""
    host = make_sshd("stream")
    script = 'echo "first" >&2; while [ ! -e "$1" ]; do sleep 0.05; done; echo "second" >&2; echo out'
    for index, transport in enumerate((pool_for(host).transport(target_for(host)), LocalTransport())):
        flag = tmp_path / f"go-{index}"
        lines: list[str] = []

        def handle(line: str, flag: Path = flag, lines: list[str] = lines) -> None:
            lines.append(line)
            flag.touch()

        result = await transport.run(["sh", "-c", script, "sh", str(flag)], timeout=20, on_stderr=handle)
        assert result.ok and result.out == "out\n"
        assert [line for line in lines if not line.startswith("backup-bot-pid=")] == ["first", "second"]
        assert result.err.endswith("first\nsecond\n")
