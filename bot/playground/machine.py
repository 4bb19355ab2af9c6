"""The first world: this machine as a server, reached like any other, and a pool in the data directory.

A source is always reached over SSH with the bot's key and a pinned host key (:mod:`bot.backup.plan`), so "this
machine" is an OpenSSH server the playground runs on loopback only (127.0.0.1, a port kept in the data
directory), with its own host key, the bot's public key as the only authorized key, logins only as the user
running the playground, and a private ``HOME`` under the data directory (what the bot writes into ``~`` stays
there). Nothing is set up before a person accepts the offer on the page; then the server is added and its key
pinned through :func:`bot.services.servers.add`, the pool is added through :func:`bot.services.pools.add_pool`
(its checks run for real), the plain member gets operator grants on both, and approval rules say that the
member's chains need the approver: everything as an admin would do it in Slack, audited as the accepting person.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from bot.access import Refused, resolve_actor
from bot.playground.running import RunningBot
from bot.playground.workspace import APPROVER, MEMBER
from bot.services import approvals, pools, roles, servers
from bot.slack.emulator import DEFAULT_TEAM
from bot.transport.base import TransportError
from bot.transport.hostkeys import fingerprint

SSHD = "/usr/sbin/sshd"
SERVER_NAME = "this-machine"
POOL_NAME = "playground-pool"
STD_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"


def borg_command() -> str:
    """The borg next to this Python (the venv's) when there is one, else ``borg`` on the PATH."""
    beside = Path(sys.executable).parent / "borg"
    return str(beside) if beside.exists() else "borg"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Machine:
    """The loopback sshd and the first world's rows."""

    def __init__(self, data_dir: Path, bot: RunningBot) -> None:
        self.dir = (data_dir / "playground" / "machine").resolve()
        self.pool_dir = (data_dir / "playground" / "pool").resolve()
        self.bot = bot
        self.process: asyncio.subprocess.Process | None = None
        self.problem: str | None = None

    @property
    def _marker(self) -> Path:
        return self.dir / "machine.json"

    def _saved(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self._marker.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return {}

    def describe(self) -> dict[str, Any]:
        """What the page says about this machine: offered, or set up (and how it is reached)."""
        saved = self._saved()
        return {
            "accepted": bool(saved.get("accepted")),
            "server": SERVER_NAME,
            "pool": POOL_NAME,
            "address": f"{saved.get('user', getpass.getuser())}@127.0.0.1:{saved.get('port', '?')}",
            "pool_dir": str(self.pool_dir),
            "running": self.process is not None and self.process.returncode is None,
            "problem": self.problem,
        }

    async def resume(self) -> None:
        """After a restart: start the loopback sshd again when the offer was accepted before."""
        saved = self._saved()
        if saved.get("accepted"):
            try:
                await self._start(int(saved["port"]))
            except (OSError, RuntimeError) as exc:
                self.problem = f"The loopback SSH server for this machine did not start: {exc}"

    async def offer(self, user: str) -> dict[str, Any]:
        """The person accepted: set up the server, the pool, the member's grants and the approval rules."""
        if self._saved().get("accepted"):
            return {"ok": True, "note": "This machine is set up already."}
        actor = await resolve_actor(self.bot.runtime.directory, DEFAULT_TEAM, user)
        if not actor.is_admin:
            return {"ok": False, "error": "Only a workspace admin sets up servers: switch to You or Admin."}
        try:
            port = free_port()
            key_line = await self._start(port)
            await self._world(actor, port, key_line)
        except (Refused, TransportError, OSError, RuntimeError) as exc:
            self.problem = str(exc)
            return {"ok": False, "error": str(exc)}
        self._marker.write_text(json.dumps({"accepted": True, "port": port, "user": getpass.getuser()}))
        self.problem = None
        return {"ok": True}

    async def _world(self, actor: Any, port: int, key_line: str) -> None:
        new = servers.NewServer(name=SERVER_NAME, host="127.0.0.1", port=port, username=getpass.getuser())
        alerts = self.bot.runtime.alerts
        await servers.add(actor, new, fingerprint(key_line), alerts=alerts)
        tools = pools.PoolTools(ssh=self.bot.runtime.pool, borg=borg_command(), alerts=alerts)
        await pools.add_pool(actor, pools.NewPool(name=POOL_NAME, path=str(self.pool_dir)), tools)
        await roles.grant_operator(actor, MEMBER.id, server=SERVER_NAME)
        await roles.grant_operator(actor, MEMBER.id, pool=POOL_NAME)
        rules = approvals.changed_rules(await approvals.rules_of(DEFAULT_TEAM), required_for=[MEMBER.id],
                                        approvers=[APPROVER.id])  # fmt: skip
        await approvals.save_rules(DEFAULT_TEAM, rules)

    async def _start(self, port: int) -> str:
        """Start sshd on 127.0.0.1:``port`` for this user with the bot's key; return its host key line."""
        host_key = self.dir / "ssh_host_ed25519_key"
        if not host_key.exists():
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            await _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "playground", "-f", str(host_key)])
        config = await asyncio.to_thread(_prepare, self.dir, port, host_key, self.bot.public_key)
        log = str(self.dir / "sshd.log")
        self.process = await asyncio.create_subprocess_exec(SSHD, "-D", "-f", str(config), "-E", log,
                                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                            stderr=subprocess.DEVNULL)  # fmt: skip
        await _wait_listening(port, self.process)
        return " ".join(host_key.with_suffix(".pub").read_text().split()[:2])

    async def close(self) -> None:
        """Stop the loopback sshd (the rows stay: the next start brings it back on the same port)."""
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()


def _prepare(workdir: Path, port: int, host_key: Path, public_key: str) -> Path:
    """Write the authorized key, the private HOME and sshd_config; return the config's path."""
    home = workdir / "home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True, mode=0o700)
    keys = workdir / "authorized_keys"
    keys.write_text(public_key.strip() + "\n")
    os.chmod(keys, 0o600)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # sshd's privilege separation dir
    config = workdir / "sshd_config"
    config.write_text(_config(port, host_key, keys, home, workdir))
    return config


def _config(port: int, host_key: Path, keys: Path, home: Path, workdir: Path) -> str:
    """sshd_config of the loopback server: key logins of this user only, a private HOME, the venv's borg."""
    path = f"{Path(sys.executable).parent}:{STD_PATH}"
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        "AddressFamily inet",
        f"HostKey {host_key}",
        f"PidFile {workdir / 'sshd.pid'}",
        f"AuthorizedKeysFile {keys}",
        f"AllowUsers {getpass.getuser()}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "StrictModes no",
        "UsePAM no",
        "UseDNS no",
        "PrintMotd no",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "MaxStartups 50:30:100",
        "MaxSessions 50",
        f"SetEnv PATH={path} HOME={home}",
    ]
    return "\n".join(lines) + "\n"


async def _run(argv: list[str]) -> None:
    if shutil.which(argv[0]) is None:
        raise RuntimeError(f"{argv[0]} is not installed (Debian: apt-get install openssh-server openssh-client).")
    process = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _out, err = await process.communicate()
    if process.returncode:
        raise RuntimeError(f"{argv[0]} failed: {err.decode(errors='replace')[:300]}")


async def _wait_listening(port: int, process: asyncio.subprocess.Process, within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"sshd exited with status {process.returncode}; see its log in the data directory.")
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return
    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within {within:g} s.")
