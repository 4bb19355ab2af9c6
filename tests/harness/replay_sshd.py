"""SSH servers that answer from a recording (asyncssh server side): many in one process, using no CPU per command.

Two uses:

- **replay** (bench/capabilities_50.py): each listener answers a command with the stdout, stderr and exit status
  recorded for that exact command string from a real server, after a fixed delay (``asyncio.sleep``: no CPU).
  ``timeout --version`` answers "not GNU", so the bot sends commands unsupervised, exactly as recorded.
- **hostile** (tests/test_transport_limits.py): a server that accepts any login name with any key and never
  finishes a command, as a member's own server might, to hold the bot's connections.

In-process: ``async with replay_servers(count, answers) as servers``. As a process (one for all listeners):
``python -m tests.harness.replay_sshd ANSWERS.json --count 50 --delay 0.2`` prints one JSON line
``{"host_key": …, "ports": […]}`` and serves until its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

TIMEOUT_PROBE = "timeout --version"
Handler = Callable[[asyncssh.SSHServerProcess], Awaitable[None]]


@dataclass(frozen=True)
class Answer:
    stdout: bytes
    stderr: bytes
    exit_status: int

    def to_json(self) -> dict[str, object]:
        return {"stdout": base64.b64encode(self.stdout).decode(), "stderr": base64.b64encode(self.stderr).decode(),
                "exit_status": self.exit_status}  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Answer:
        return cls(base64.b64decode(str(data["stdout"])), base64.b64decode(str(data["stderr"])),
                   int(str(data["exit_status"])))  # fmt: skip


def save_answers(path: Path, answers: Mapping[str, Answer]) -> None:
    path.write_text(json.dumps({command: answer.to_json() for command, answer in answers.items()}))


def load_answers(path: Path) -> dict[str, Answer]:
    return {command: Answer.from_json(data) for command, data in json.loads(path.read_text()).items()}


class _AnyLogin(asyncssh.SSHServer):
    """Every user name, every key: a member's server may be configured to let the bot in as anyone."""

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return True


@dataclass
class ReplayServers:
    """Listeners on ``host`` (one port each) sharing one host key; ``logins`` counts the user names seen."""

    host: str
    host_key: str
    ports: list[int] = field(default_factory=list)
    logins: set[str] = field(default_factory=set)
    commands: int = 0
    running: int = 0  # commands started and not finished (a hostile server's hang here)


def _handler(servers: ReplayServers, answers: Mapping[str, Answer] | None, delay: float) -> Handler:
    """``answers`` None: hang on every command (hostile); otherwise reply from the recording after ``delay``."""

    async def handle(process: asyncssh.SSHServerProcess) -> None:
        command = process.command or ""
        servers.commands += 1
        servers.logins.add(process.get_extra_info("username"))
        servers.running += 1
        try:
            if command == TIMEOUT_PROBE:
                answer = Answer(b"", b"timeout: not GNU coreutils\n", 1)
            elif answers is None:
                await process.channel.wait_closed()  # hold the channel (and the bot's connection) until closed
                return
            else:
                await asyncio.sleep(delay)
                name = command.split(" ", 1)[0]
                answer = answers.get(command) or Answer(b"", f"sh: 1: {name}: not found\n".encode(), 127)
            process.stdout.write(answer.stdout)
            process.stderr.write(answer.stderr)
            process.exit(answer.exit_status)
        finally:
            servers.running -= 1

    return handle


@contextlib.asynccontextmanager
async def replay_servers(
    count: int, answers: Mapping[str, Answer] | None = None, *, delay: float = 0.2, host: str = "127.0.0.1"
) -> AsyncIterator[ReplayServers]:
    """``count`` listeners in this process; ``answers`` None makes them hostile (see the module docstring)."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    servers = ReplayServers(host, key.export_public_key().decode().strip())
    handle = _handler(servers, answers, delay)
    acceptors = []
    try:
        for _ in range(count):
            acceptor = await asyncssh.listen(host, 0, server_factory=_AnyLogin, server_host_keys=[key],
                                             process_factory=handle, encoding=None)  # fmt: skip
            acceptors.append(acceptor)
            servers.ports.append(acceptor.get_port())
        yield servers
    finally:
        for acceptor in acceptors:
            acceptor.close()
        for acceptor in acceptors:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(acceptor.wait_closed(), 5)


async def _serve(answers_path: Path, count: int, delay: float, host: str) -> None:
    async with replay_servers(count, load_answers(answers_path), delay=delay, host=host) as servers:
        print(json.dumps({"host_key": servers.host_key, "ports": servers.ports}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes it


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="SSH servers answering from a recording")
    parser.add_argument("answers", type=Path)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    asyncio.run(_serve(args.answers, args.count, args.delay, args.host))
